#!/usr/bin/env python3
"""Accepts from fd 3 one connection at a time and answers every request as the demo worker does (`worker=<id> pid=<pid>`). On SIGTERM it finishes the connection it has, accepts no more (clients still queued in the socket are left to the other processes holding it) and exits 0."""
import os, select, signal, socket

listener = socket.socket(fileno=3)
listener.setblocking(False)
stopping = False

def stop(*_):
    global stopping
    stopping = True

signal.signal(signal.SIGTERM, stop)
body = ("worker=%s pid=%d\n" % (os.environ["CORRAL_WORKER_ID"], os.getpid())).encode()
answer = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
          % len(body)) + body

def serve(conn):
    try:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        conn.sendall(answer)
    except OSError:
        pass
    finally:
        conn.close()

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
