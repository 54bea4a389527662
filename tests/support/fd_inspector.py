#!/usr/bin/env python3
"""Serves `GET` on fd 3 (accepting from it, as a socket-activated server does) and answers with what it was given: what fd 3 is, and its environment."""
import json, os, socket, stat

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
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        if b"\r\n\r\n" in data:
            body = json.dumps(facts()).encode()
            head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
            conn.sendall(head.encode() + body)
    except OSError:
        pass
    finally:
        conn.close()
