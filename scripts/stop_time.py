#!/usr/bin/env python3
"""Times SIGTERM -> exit of a corral one-liner (issue 19, "prompt stop").

    python3 scripts/stop_time.py target/release/corral [ROUNDS]

Two cases, ROUNDS each (default 5): an idle corral with two demo workers
(after 20 requests through it and 1 s of quiet), and a stop while the
first worker is still starting (a worker that never listens; ready_timeout
left at its 10 s default). Prints each time and the median per case.
"""
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(binary, command):
    front, admin = free_port(), free_port()
    args = [binary, "run", "-i", "2", "--bind", f"127.0.0.1:{front}",
            "--admin", f"127.0.0.1:{admin}", "--", *command]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, front, admin


def idle(binary):
    proc, front, admin = start(binary, ["corral", "demo-worker"])
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=1).read()
            if body.count(b'"state":"up"') >= 2:
                break
        except OSError:
            pass
        time.sleep(0.05)
    for _ in range(20):
        urllib.request.urlopen(f"http://127.0.0.1:{front}/", timeout=2).read()
    time.sleep(1)
    return proc


def starting(binary):
    proc, _, _ = start(binary, ["python3", "-c", "import time; time.sleep(600)"])
    time.sleep(1)
    return proc


def main():
    binary = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    for name, case in [("idle", idle), ("while starting", starting)]:
        times = []
        for _ in range(rounds):
            proc = case(binary)
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            times.append((time.monotonic() - began) * 1000)
            print(f"{name}: exit {proc.returncode} after {times[-1]:.0f} ms", flush=True)
        print(f"{name}: median {sorted(times)[len(times) // 2]:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
