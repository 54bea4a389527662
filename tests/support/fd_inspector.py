#!/usr/bin/env python3
"""Serves `GET` on fd 3 (accepting from it, as a socket-activated server does) and answers with what it was given: what fd 3 is, and its environment."""
import os, socket, stat

from worker_answer import json_answer, read_head  # beside this file

listener = socket.socket(fileno=3)

def facts():
    st = os.fstat(3)
    host, port = listener.getsockname()[:2]
    return {
        "pid": os.getpid(),
        "fd3_is_socket": stat.S_ISSOCK(st.st_mode),
        "family": int(listener.family),
        "type": int(listener.type),
        "sockname": [host, port],
        "accepting": listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
        "env": {k: os.environ.get(k) for k in [
            "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
            "CORRAL_WORKER_ID", "CORRAL_WORKER_COUNT", "PORT", "HOST"]},
    }

while True:
    conn, _ = listener.accept()
    try:
        if b"\r\n\r\n" in read_head(conn):
            conn.sendall(json_answer(facts()))
    except OSError:
        pass
    finally:
        conn.close()
