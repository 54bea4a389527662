"""An fd-mode worker that reports TCP_NODELAY (tests/real_software.rs).

Accepts from fd 3 (the socket corral hands it, LISTEN_FDS=1) and answers every
HTTP request with JSON: whether TCP_NODELAY is set on fd 3 itself and on the
connection it accepted (getsockopt, nothing set by this program).
"""

import json
import os
import socket

listener = socket.socket(fileno=3)
listener_nodelay = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

while True:
    conn, _ = listener.accept()
    try:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        if b"\r\n\r\n" in data:
            facts = {
                "pid": os.getpid(),
                "worker": os.environ.get("CORRAL_WORKER_ID"),
                "fd3_nodelay": bool(listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)),
                "fd3_nodelay_at_start": bool(listener_nodelay),
                "accepted_nodelay": bool(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)),
            }
            body = json.dumps(facts).encode()
            head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            conn.sendall((head % len(body)).encode() + body)
    except OSError:
        pass
    finally:
        conn.close()
