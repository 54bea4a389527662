# An fd-mode worker that ignores the socket corral hands it (fd 3) when its
# CORRAL_WORKER_ID is IGNORE_ID: it listens on a port of its own
# (OWN_PORT), as a server started with its usual `--port` does, and answers
# there with `ignorer`. Any other worker accepts from fd 3 as it should
# and answers `worker=<id> pid=<pid>` (worker_answer.py). tests/first_hour.rs
import os
import socket
import threading
import time

from worker_answer import serve  # beside this file

if os.environ["CORRAL_WORKER_ID"] == os.environ.get("IGNORE_ID"):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(os.environ["OWN_PORT"])))
    listener.listen()
    print("ignoring fd 3; listening on 127.0.0.1:%s" % os.environ["OWN_PORT"], flush=True)

    def answer(conn):
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nignorer\n")
        conn.close()
else:
    listener = socket.socket(fileno=3)
    listener.setblocking(True)
    answer = serve


def accept_loop():
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


threading.Thread(target=accept_loop, daemon=True).start()
while True:
    time.sleep(3600)
