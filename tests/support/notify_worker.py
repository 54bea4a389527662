# A worker that speaks systemd's notify protocol (workers.notify), with ten
# lines of socket code as the docs show: tests/notify.rs.
#
# It listens at once (on $PORT, or accepts from fd 3 when handed a socket)
# and answers every GET with `worker=<id> pid=<pid>`, but it sends
# STATUS=warming caches first and READY=1 only after READY_DELAY seconds
# (0 by default; READY_DELAY_ID=<id> limits the delay to that worker).
# NEVER_READY=1: it never sends READY=1.
#
# With WATCHDOG_USEC, it sends WATCHDOG=1 three times per interval until
# the file WATCHDOG_STOP_FILE holds its own pid.
#
# On SIGUSR1 it prints `got SIGUSR1 pid=<pid>`. On SIGTERM it stops taking
# clients, answers those it took, says STOPPING=1 and exits 0.
import os
import select
import signal
import socket
import sys
import threading
import time

from worker_answer import serve  # beside this file

worker_id = os.environ["CORRAL_WORKER_ID"]
pid = os.getpid()


def notify(message):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), path)


if os.environ.get("LISTEN_FDS") == "1":
    listener = socket.socket(fileno=3)
else:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])))
    listener.listen(128)
listener.setblocking(False)


def accept_loop():
    """Until SIGTERM: takes clients, each served on a thread of its own."""
    serving = []
    while not stopping.is_set():
        ready, _, _ = select.select([listener], [], [], 0.1)
        if not ready or stopping.is_set():
            continue
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            continue  # another process holding the socket took it first
        except OSError:
            time.sleep(0.05)
            continue
        conn.setblocking(True)
        thread = threading.Thread(target=serve, args=(conn,))
        thread.start()
        serving = [t for t in serving if t.is_alive()] + [thread]
    # A graceful stop: every client taken is answered before the exit.
    for thread in serving:
        thread.join()


def watchdog():
    usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    if not usec or os.environ.get("WATCHDOG_PID") != str(pid):
        return
    stop_file = os.environ.get("WATCHDOG_STOP_FILE", "")
    while True:
        try:
            with open(stop_file) as f:
                if f.read().strip() == str(pid):
                    print("watchdog pings stopped pid=%d" % pid, flush=True)
                    return
        except OSError:
            pass
        notify("WATCHDOG=1")
        time.sleep(usec / 3e6)


signal.signal(signal.SIGUSR1, lambda *_: print("got SIGUSR1 pid=%d" % pid, flush=True))
stopping = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopping.set())
print("listening pid=%d notify=%s" % (pid, os.environ.get("NOTIFY_SOCKET", "")), flush=True)
threading.Thread(target=watchdog, daemon=True).start()
notify("STATUS=warming caches")
delay = float(os.environ.get("READY_DELAY", "0"))
only = os.environ.get("READY_DELAY_ID")
if only is not None and only != worker_id:
    delay = 0


def announce():
    time.sleep(delay)
    if os.environ.get("NEVER_READY") != "1":
        notify("READY=1\nSTATUS=serving")


threading.Thread(target=announce, daemon=True).start()
accept_loop()
notify("STOPPING=1")
