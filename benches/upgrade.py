#!/usr/bin/env python3
"""Upgrading the balancer itself under load: `corral upgrade` against HAProxy's
seamless reload.

Each row holds HELD (default 10,000) kept-alive connections open through the
balancer (each answered once before), keeps 16 probe clients sending a request
every 5 ms on kept-alive connections of their own, and runs wrk with
`Connection: close` (new connections) for the whole window; in its middle the
balancer is upgraded or reloaded once. Then every held connection is asked once
more. Everything listens on 127.0.0.1 only, on fixed ports (fronts 18120-18121,
corral admin 19280, nginx backends 19001-19002 for HAProxy).

Rows:
  corral   corral, port mode, WORKERS (default 64) demo workers (`corral
           demo-worker`), started from a copy of --corral installed in a
           temporary directory; `corral upgrade` with --corral-to (default:
           --corral again) renamed over that copy, as a package manager does
  haproxy  HAProxy in master-worker mode (-W), TCP mode, in front of two nginx
           backends, its stats socket with `expose-fd listeners`; reloaded with
           SIGUSR2 to the master (the new worker takes the listeners over, the
           old one keeps its connections until they close)

Figures per row:
  took_ms        request to the new program serving (corral: what `corral
                 upgrade` reports; HAProxy: SIGUSR2 to a new worker in the tree)
  stall_ms       the longest gap between two answers any probe client saw
                 around the upgrade (probes answer every ~5 ms otherwise)
  failed         failed requests: wrk's socket errors and non-2xx, probes' and
                 the held connections' second request
  held_ok        held connections that answered their second request
  old_after_1s   processes of the old program still running 1 s after the
                 reload (HAProxy keeps an old worker while its connections live;
                 corral upgrades in the same process)

Envoy is not run: its documented hot restart (envoy --restart-epoch) starts a
second process that takes the listeners over shared memory and a Unix socket
while the old one drains for --drain-time-s and then exits: established
connections are not moved, so a long-lived connection is closed at the end of
the drain.

Needs (Debian): apt-get install haproxy nginx wrk

Usage:
  benches/upgrade.py --corral target/release/corral [--corral-to NEW] [--held 10000] [--workers 64]
"""

import argparse
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the harness beside this file)
from compare import BACKENDS, HOST, Failure, Processes, process_tree, wait_serving, write  # noqa: E402

ROWS = {"corral": (18120, 19280), "haproxy": (18121, None)}
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


# ---------------------------------------------------------------- clients

def answer_length(data):
    """The length of the first whole HTTP answer in data, or None if not all there."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", data[:head_end], re.I)
    size = int(m.group(1)) if m else 0
    total = head_end + 4 + size
    return total if len(data) >= total else None


class Held:
    """Many kept-alive connections, opened and asked in one select loop."""

    def __init__(self, port, count):
        self.port, self.count, self.socks = port, count, []

    def open(self):
        for _ in range(self.count):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((HOST, self.port))
            self.socks.append(s)
        # Connected once writable; each one is asked once.
        return self.ask()

    def ask(self, timeout=30.0):
        """Sends one request on every open connection; the number answered with a 200."""
        sel = selectors.DefaultSelector()
        pending = {}
        for s in self.socks:
            sel.register(s, selectors.EVENT_WRITE)
            pending[s] = b""
        ok = 0
        deadline = time.time() + timeout
        while pending and time.time() < deadline:
            for key, events in sel.select(timeout=0.5):
                s = key.fileobj
                try:
                    if events & selectors.EVENT_WRITE:
                        s.send(REQUEST)
                        sel.modify(s, selectors.EVENT_READ)
                        continue
                    chunk = s.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(s)
                    del pending[s]
                    continue
                pending[s] += chunk
                if answer_length(pending[s]) is not None:
                    ok += pending[s].startswith(b"HTTP/1.1 200")
                    sel.unregister(s)
                    del pending[s]
        sel.close()
        return ok

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []


class Probe(threading.Thread):
    """A kept-alive client asking every 5 ms; remembers when each answer came."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop, self.times, self.failed = port, threading.Event(), [], 0

    def run(self):
        s = None
        while not self.stop.is_set():
            try:
                if s is None:
                    s = socket.create_connection((HOST, self.port), timeout=5)
                s.sendall(REQUEST)
                data = b""
                while answer_length(data) is None:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise OSError("closed")
                    data += chunk
                if not data.startswith(b"HTTP/1.1 200"):
                    raise OSError("not a 200")
                self.times.append(time.monotonic())
            except OSError:
                self.failed += 1
                if s is not None:
                    s.close()
                s = None
            time.sleep(0.005)
        if s is not None:
            s.close()

    def longest_gap(self, start, end):
        inside = [t for t in self.times if start <= t <= end]
        return max((b - a for a, b in zip(inside, inside[1:])), default=float("nan"))


def wrk_close(port, seconds):
    argv = ["wrk", "-t1", "-c16", f"-d{seconds}s", "-H", "Connection: close", f"http://{HOST}:{port}/"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)


def wrk_failures(proc):
    text = proc.communicate()[0]
    failed = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        failed += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        failed += int(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    return failed, int(m.group(1)) if m else 0


# ---------------------------------------------------------------- the rows

def start_corral(a, d, procs):
    port, admin = ROWS["corral"]
    program = os.path.join(d, "bin", "corral")
    os.makedirs(os.path.dirname(program))
    shutil.copy(a.corral, program)
    config = compare.corral_config(f"{d}/corral.toml", port, admin, 2, f"""
[workers]
command = ["{program}", "demo-worker"]
count = {a.workers}
""", max_connections=a.held + 10000)
    procs.start("corral", [program, "run", "-c", config], port)
    if not wait_serving(port, min(a.workers, 8), timeout=60):
        raise Failure(f"corral does not serve:\n{procs.log('corral')}")

    def upgrade():
        shutil.copy(a.corral_to or a.corral, program + ".new")
        os.rename(program + ".new", program)
        out = subprocess.run([program, "upgrade", "--admin", f"{HOST}:{admin}"],
                             capture_output=True, text=True)
        said = (out.stdout + out.stderr).strip()
        m = re.search(r"in (\d+) ms", said)
        if out.returncode != 0 or not m:
            raise Failure(f"corral upgrade failed: {said}\n{procs.log('corral')}")
        return float(m.group(1)), 0  # the same process: no old one left

    return upgrade


def start_haproxy(a, d, procs):
    port = ROWS["haproxy"][0]
    backend = compare.proxy_configs(d, 2, a.held)[0]
    procs.start("backend", ["nginx", "-c", backend, "-p", d + "/", "-e", f"{d}/backend.err"],
                BACKENDS[1])
    cfg = write(f"{d}/haproxy.cfg", f"""
global
  maxconn {min(a.held + 1000, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200) // 2)}
  nbthread 2
  stats socket {d}/haproxy.sock mode 600 expose-fd listeners level admin
defaults
  mode tcp
  timeout connect 2s
  timeout client 120s
  timeout server 120s
frontend fe
  bind {HOST}:{port}
  default_backend be
backend be
  balance roundrobin
  server s1 {HOST}:{BACKENDS[0]}
  server s2 {HOST}:{BACKENDS[1]}
""")
    master = procs.start("haproxy", ["haproxy", "-W", "-db", "-f", cfg], port)
    if not wait_serving(port, 2):
        raise Failure(f"haproxy does not serve:\n{procs.log('haproxy')}")

    def workers():
        return set(process_tree([master.pid])) - {master.pid}

    def reload():
        old = workers()
        started = time.monotonic()
        os.kill(master.pid, signal.SIGUSR2)
        while not (workers() - old) and time.monotonic() - started < 10:
            time.sleep(0.001)
        took = (time.monotonic() - started) * 1e3
        time.sleep(1.0)
        return took, len(old & workers())

    return reload


def run_row(a, name, d, procs):
    port = ROWS[name][0]
    upgrade = (start_corral if name == "corral" else start_haproxy)(a, d, procs)
    held = Held(port, a.held)
    opened = held.open()
    probes = [Probe(port) for _ in range(16)]
    for p in probes:
        p.start()
    load = wrk_close(port, a.seconds)
    time.sleep(a.seconds / 2)
    before = time.monotonic()
    took, old_left = upgrade()
    after = time.monotonic()
    new_failed, new_requests = wrk_failures(load)
    for p in probes:
        p.stop.set()
    for p in probes:
        p.join()
    held_ok = held.ask()
    held.close()
    stall = max(p.longest_gap(before - 0.5, after + 1.0) for p in probes) * 1e3
    return {
        "took_ms": took,
        "stall_ms": stall,
        "failed": new_failed + sum(p.failed for p in probes) + (opened - held_ok),
        "new_requests": new_requests,
        "held": f"{held_ok}/{opened}",
        "old_after_1s": old_left,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corral", required=True)
    p.add_argument("--corral-to", help="the program to upgrade to (default: --corral again)")
    p.add_argument("--held", type=int, default=10000)
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--rows", default="corral,haproxy")
    a = p.parse_args()
    for tool in ["haproxy", "nginx", "wrk"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: apt-get install haproxy nginx wrk")
    # Two descriptors per held connection in the balancer, one here: raise
    # the limit for this process and what it starts (root may raise the
    # hard limit too).
    want = 4 * a.held + 20000
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if hard < want:
            print(f"the descriptor limit is {hard}, under the {want} this run wants: "
                  f"expect corral to report a shortage", file=sys.stderr)
    a.corral = os.path.abspath(a.corral)
    results = {}
    for name in a.rows.split(","):
        with tempfile.TemporaryDirectory(prefix=f"upgrade-{name}-") as d:
            procs = Processes(d)
            try:
                results[name] = run_row(a, name, d, procs)
            except Failure as error:
                print(f"{name}: {error}", file=sys.stderr)
            finally:
                procs.stop()
    print(f"\nupgrade under load: {a.held} held kept-alive connections, 16 probes every 5 ms, "
          f"wrk -c16 new connections for {a.seconds} s; corral with {a.workers} workers")
    columns = ["took_ms", "stall_ms", "failed", "new_requests", "held", "old_after_1s"]
    print(f"{'row':10}" + "".join(f"{c:>14}" for c in columns))
    for name, r in results.items():
        cells = []
        for c in columns:
            v = r[c]
            cells.append(f"{v:>14.1f}" if isinstance(v, float) else f"{v!s:>14}")
        print(f"{name:10}" + "".join(cells))


if __name__ == "__main__":
    main()
