#!/usr/bin/env python3
"""Says one line on stdout and one on stderr, then accepts on $PORT."""
import os, socket, sys
print('hello on stdout', flush=True)
print('hello on stderr', file=sys.stderr, flush=True)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(8)
while True: s.accept()[0].close()
