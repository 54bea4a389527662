#!/usr/bin/env python3
"""Writes a 3 MB line, then one with an escape sequence and a NUL, then a
marker line, and accepts on $PORT."""
import os, sys, socket
sys.stdout.write('x' * 3000000 + '\n')
sys.stdout.write('\x1b[31mbinary\x00junk\n')
print('after the flood', flush=True)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(8)
while True: s.accept()[0].close()
