#!/usr/bin/env python3
"""A stand-in for a running corral's admin port (argv[1]: the port) whose
answers carry terminal escape codes and bidi overrides: /status names a
backend `app\\u001b[2J` + U+202E, /clients names a client the same way, and
every POST is refused with such a reason. For `corral status` and the other
client commands, which must print all of it escaped."""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

EVIL = "app\u001b[2J\u202eevil\u2028\u009b"
STATUS = {
    "strategy": "round-robin\u001b[31m",
    "sticky_entries": 0,
    "backends": [
        {"name": EVIL, "address": "127.0.0.1:1", "state": "up\u202e", "reason": "x\u001b]0;t\u0007",
         "pid": 1, "restarts": 0, "active_connections": 0},
    ],
}
CLIENTS = {"clients": [{"client": EVIL, "connections": 1, "rate": 0.5, "rejected": 0}]}


class Handler(BaseHTTPRequestHandler):
    def answer(self, code, value):
        body = json.dumps(value).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/clients"):
            self.answer(200, CLIENTS)
        else:
            self.answer(200, STATUS)

    def do_POST(self):
        self.answer(400, {"reload": "refused", "error": "bad " + EVIL})

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
