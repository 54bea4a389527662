# What the Python test workers answer, written once: every request on a
# connection gets `worker=<CORRAL_WORKER_ID> pid=<pid>` and the connection
# is closed (tests/support/blocking_accept_worker.py, notify_worker.py).
import json
import os

_body = ("worker=%s pid=%d\n" % (os.environ["CORRAL_WORKER_ID"], os.getpid())).encode()
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
          % len(_body)) + _body


def read_head(conn):
    """Reads from `conn` (5 s at most a read) until a request head is in,
    or the peer closes: what arrived, a whole head when it ends with one."""
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def json_answer(facts):
    """A whole HTTP/1.1 answer carrying `facts` as JSON."""
    body = json.dumps(facts).encode()
    head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    return head.encode() + body


def serve(conn):
    """Reads one request head from `conn`, answers it and closes it."""
    try:
        if b"\r\n\r\n" not in read_head(conn):
            return
        conn.sendall(ANSWER)
    except OSError:
        pass
    finally:
        conn.close()


def listen_and_serve(handle):
    """Listens on $HOST:$PORT and calls `handle(conn)` for each connection
    on a thread of its own, for ever."""
    import socket
    import threading

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])))
    listener.listen(128)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()
