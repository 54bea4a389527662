# A worker that accepts from the socket corral hands it (fd 3) the simplest
# way: a blocking accept in a loop, as many servers do on a thread of their
# own. It answers `GET` with `worker=<id> pid=<pid>` and closes.
#
# On SIGTERM it says `stopping after SIGTERM`, waits a moment (so a
# graceful stop of corral has done whatever it does to the socket) and
# exits 0. Any error from accept is printed as `accept failed: ...`, which
# a test looks for in corral's log (tests/fd_mode.rs).
import os
import signal
import socket
import sys
import threading
import time

from worker_answer import serve  # beside this file

listener = socket.socket(fileno=3)
listener.setblocking(True)


def accept_loop():
    while True:
        try:
            conn, _ = listener.accept()
        except OSError as error:
            print("accept failed: %s" % error, flush=True)
            time.sleep(0.1)
            continue
        serve(conn)


def stop(*_):
    print("stopping after SIGTERM", flush=True)
    time.sleep(0.5)
    sys.stdout.flush()
    os._exit(0)


signal.signal(signal.SIGTERM, stop)
threading.Thread(target=accept_loop, daemon=True).start()
while True:
    time.sleep(3600)
