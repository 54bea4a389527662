#!/usr/bin/env python3
"""The first process of a slot (the marker file argv[1] does not exist yet)
grows to ~100 MiB a second after it starts; its replacement stays small.
Answers each connection with its pid."""
import os, socket, sys, threading, time
hog = []
def grow():
    time.sleep(1)
    hog.append(bytearray(b'x') * (100 * 1024 * 1024))
    print('grown', flush=True)
if not os.path.exists(sys.argv[1]):
    open(sys.argv[1], 'w').close()
    threading.Thread(target=grow, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(64)
while True:
    c = s.accept()[0]
    c.sendall(b'pid=%d\n' % os.getpid())
    c.close()
