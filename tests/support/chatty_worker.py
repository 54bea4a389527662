"""A worker that writes to its output, for the tests of `corral logs` and
of the log file (tests/logs.rs).

It listens on $HOST:$PORT. At start it prints `start <id> <n>` lines, as
many as its first argument says (0 when not given), each padded with
` x...` to the length its second argument says (0: no padding); then
`ready <id>`. So a rolling restart (new workers) prints them again. Every HTTP request is answered with `worker=<id> pid=<pid>`
and the connection closed, and leaves a line `request <id> <n> <path>`
on stdout and `served <id> <n>` on stderr.
"""

import os
import socket
import sys

from worker_answer import read_head  # beside this file

WORKER = os.environ["CORRAL_WORKER_ID"]
BURST = int(sys.argv[1]) if len(sys.argv) > 1 else 0
WIDTH = int(sys.argv[2]) if len(sys.argv) > 2 else 0
BODY = ("worker=%s pid=%d\n" % (WORKER, os.getpid())).encode()
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
          % len(BODY)) + BODY


def start_lines():
    for n in range(BURST):
        line = "start %s %06d" % (WORKER, n)
        print((line + " ").ljust(WIDTH, "x") if WIDTH else line)
    print("ready %s" % WORKER, flush=True)


def serve(listener):
    served = 0
    while True:
        conn, _ = listener.accept()
        try:
            data = read_head(conn)
            if not data:
                continue
            path = data.split(b" ")[1].decode(errors="replace") if b" " in data else "?"
            served += 1
            print("request %s %d %s" % (WORKER, served, path), flush=True)
            print("served %s %d" % (WORKER, served), file=sys.stderr, flush=True)
            conn.sendall(ANSWER)
        except OSError:
            pass
        finally:
            conn.close()


def main():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])))
    listener.listen(128)
    start_lines()
    serve(listener)


if __name__ == "__main__":
    main()
