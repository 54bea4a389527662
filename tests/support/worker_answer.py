# What the Python test workers answer, written once: every request on a
# connection gets `worker=<CORRAL_WORKER_ID> pid=<pid>` and the connection
# is closed (tests/support/blocking_accept_worker.py, notify_worker.py).
import os

_body = ("worker=%s pid=%d\n" % (os.environ["CORRAL_WORKER_ID"], os.getpid())).encode()
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
          % len(_body)) + _body


def serve(conn):
    """Reads one request head from `conn`, answers it and closes it."""
    try:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        conn.sendall(ANSWER)
    except OSError:
        pass
    finally:
        conn.close()
