"""An fd-mode worker that reports TCP_NODELAY (tests/real_software.rs).

Accepts from fd 3 (the socket corral hands it, LISTEN_FDS=1) and answers every
HTTP request with JSON: whether TCP_NODELAY is set on fd 3 itself and on the
connection it accepted (getsockopt, nothing set by this program).
"""

import os
import socket

from worker_answer import json_answer, read_head  # beside this file

listener = socket.socket(fileno=3)
listener_nodelay = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

while True:
    conn, _ = listener.accept()
    try:
        if b"\r\n\r\n" in read_head(conn):
            facts = {
                "pid": os.getpid(),
                "worker": os.environ.get("CORRAL_WORKER_ID"),
                "fd3_nodelay": bool(listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)),
                "fd3_nodelay_at_start": bool(listener_nodelay),
                "accepted_nodelay": bool(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)),
            }
            conn.sendall(json_answer(facts))
    except OSError:
        pass
    finally:
        conn.close()
