#!/usr/bin/env python3
"""Sleeps 1.5 s before it listens on $PORT (a worker still booting)."""
import os, socket, time
time.sleep(1.5)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(8)
while True: s.accept()[0].close()
