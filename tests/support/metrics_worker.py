#!/usr/bin/env python3
"""A worker for corral's tests whose own metrics (GET /metrics) amplify if
re-printed carelessly: about 4 MB of `x{i="N"} 1e308` lines (a 309-digit
number when printed in full) and a label value with a raw carriage return.
It answers after $METRICS_DELAY seconds (to let scrapes overlap) and counts
the fetches it served: GET /count."""
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LINES = int(os.environ.get("METRICS_LINES", "190000"))
BODY = ('# TYPE y gauge\ny{v="a\rb"} 1\n'
        + "# TYPE x gauge\n"
        + "".join(f'x{{i="{i}"}} 1e308\n' for i in range(LINES))).encode()
DELAY = float(os.environ.get("METRICS_DELAY", "0"))
fetches = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        global fetches
        if self.path == "/metrics":
            with lock:
                fetches += 1
            time.sleep(DELAY)
            body = BODY
        elif self.path == "/count":
            with lock:
                body = str(fetches).encode()
        else:
            body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler).serve_forever()
