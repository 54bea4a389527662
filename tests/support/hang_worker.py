"""A worker that leaves one request unanswered (tests/upgrade.rs: the
replay state goes across an upgrade).

It listens on $HOST:$PORT and answers every request with
`worker=<id> pid=<pid>` (worker_answer.py), except the first `GET /hang`
that worker HANG_WORKER gets while the file HANG_MARKER does not exist:
that one it creates the marker for and never answers, holding the
connection. So a replacement of that worker (after a kill) answers
everything.

`GET /held` (a request in flight across an upgrade, with
`workers.stateless`): the worker creates HOLD_MARKER, answers once the
file HOLD_RELEASE exists, keeps the connection alive (Content-Length, no
`Connection: close`) and reads the next request on it.
"""

import os
import time

from worker_answer import ANSWER, listen_and_serve, read_head  # beside this file

HANGS = os.environ.get("CORRAL_WORKER_ID") == os.environ.get("HANG_WORKER", "0")
MARKER = os.environ.get("HANG_MARKER", "")


HELD_BODY = b"held and answered\n"
HELD_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(HELD_BODY), HELD_BODY)


def hold():
    """Marks a held request as arrived, and waits for its release."""
    open(os.environ["HOLD_MARKER"], "w").close()
    while not os.path.exists(os.environ["HOLD_RELEASE"]):
        time.sleep(0.02)


def serve(conn):
    with conn:
        try:
            while True:
                head = read_head(conn)
                if b"\r\n\r\n" not in head:
                    return
                if head.startswith(b"GET /hang ") and HANGS and MARKER and not os.path.exists(MARKER):
                    open(MARKER, "w").close()
                    while True:
                        time.sleep(3600)
                if not head.startswith(b"GET /held "):
                    conn.sendall(ANSWER)
                    return
                hold()
                conn.sendall(HELD_ANSWER)
        except OSError:
            pass


def main():
    listen_and_serve(serve)


if __name__ == "__main__":
    main()
