#!/usr/bin/env python3
"""Accepts from fd 3 one connection at a time and answers every request as the demo worker does (`worker=<id> pid=<pid>`). On SIGTERM it finishes the connection it has, accepts no more (clients still queued in the socket are left to the other processes holding it) and exits 0."""
import select, signal, socket

from worker_answer import serve  # beside this file

listener = socket.socket(fileno=3)
listener.setblocking(False)
stopping = False

def stop(*_):
    global stopping
    stopping = True

signal.signal(signal.SIGTERM, stop)

while not stopping:
    ready, _, _ = select.select([listener], [], [], 0.2)
    if not ready or stopping:
        continue
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        # Another process holding the socket took the client first.
        continue
    serve(conn)
