#!/usr/bin/env python3
"""Healthy for its first three requests (readiness and two checks), then
answers 500."""
import os, http.server
class H(http.server.BaseHTTPRequestHandler):
    served = 0
    def do_GET(self):
        H.served += 1
        self.send_response(200 if H.served <= 3 else 500)
        self.send_header('Content-Length', '0')
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
