#!/usr/bin/env python3
"""Serves / and a small /metrics of its own (demo_requests_total) on $PORT."""
import os, http.server
BODY = b'''# HELP demo_requests_total Requests served.
# TYPE demo_requests_total counter
demo_requests_total{path="/"} 3
'''
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = BODY if self.path == '/metrics' else b'hi\n'
        self.send_response(200 if self.path in ('/', '/metrics') else 404)
        self.send_header('Content-Type', 'text/plain; version=0.0.4')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
