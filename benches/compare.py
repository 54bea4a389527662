#!/usr/bin/env python3
"""corral beside HAProxy, nginx's stream module and a direct connection, in one run.

This is corral's side-by-side comparison harness. Everything listens on
127.0.0.1 only. Every contender is put in front of the same backends with the
same number of threads and the same accept queue (FRONT_BACKLOG), and every
figure of every row comes from the same invocation, so the ratios printed at
the end compare like with like: machine noise (other builds, frequency
scaling) mostly cancels.

Proxy scenario (the default). Backends: one nginx HTTP server listening on two
ports (19001, 19002, answering "hello from <port>") and one iperf3 server.
Rows:
  direct          wrk / iperf3 straight to the backend (the ceiling)
  haproxy         HAProxy, mode tcp, roundrobin over the two ports, nbthread N
  nginx           nginx's stream module, proxy_pass to the two ports, N workers
  corral          corral, [[backends]] for the two ports, [runtime] threads = N
  corral-before   a second corral binary (--corral-before), configured the same,
                  so that a before/after comparison comes from one run
  haproxy-stick   HAProxy with a per-client stick table (type ip size 1m,
                  track-sc0 src, reject on sc0_conn_cur / sc0_conn_rate)
  corral-limits   corral with [clients] max_connections and max_rate set; both
                  limits are far above what the benchmark's one client reaches,
                  so the rows show what tracking every client costs

Figures, for each row (measured after --warmup seconds of unmeasured load):
  ka req/s        wrk -t1 -c64 (--connections) keep-alive request rate
  ka p99          99th percentile latency of that run (wrk --latency), ms
  close req/s     the same with "Connection: close": one new client connection
                  (and one new backend connection) per request
  close p99       99th percentile latency of that run, ms
  bulk Gbit/s     iperf3 -c through the proxy to the iperf3 server (receiver)
  idle KiB/conn   growth of the proxy's resident memory (VmRSS summed over its
                  process tree) with --idle connections open and idle, divided
                  by the number opened
  cpu us/req      CPU time of the proxy's process tree (utime + stime, fields 14
                  and 15 of /proc/PID/stat, summed over the started process and
                  all its descendants) from just before to just after a wrk run,
                  divided by the requests wrk completed, in microseconds; for the
                  keep-alive and the close run. The least noisy figure on a
                  shared machine: it is what the proxy spent, not what it got.

Node scenario (--scenario node). A small Node.js app (benches/node/app.js)
served by 2 workers, four ways:
  corral          corral spawning 2 workers of app.js, workers.listen = "port"
                  (the default: each worker on its own port, corral proxies)
  corral-before   the same with the --corral-before binary
  corral-fd       corral with workers.listen = "fd": corral hands each worker a
                  listening socket on the front end and is not on the byte path.
                  Skipped, with a message, when the binary refuses that config
                  (`corral check` exits 2).
  haproxy         HAProxy (mode tcp) in front of two separately started copies
  node-cluster    Node's cluster module (benches/node/cluster.js), 2 workers
Figures: ka and close req/s with p99, and CPU per request of the whole tree
(dispatcher and app processes together: everything the machine spent).

Sweep (--sweep 64,1000,4000,10000, see scaling.py): the keep-alive and close
figures of every row at each concurrency, one table of corral / best peer ratios
per point, the figures as JSON and a plot (PNG) of rate and CPU per request
against concurrency beside it.

Control side (--scenario control --workers 64,256): corral with that many demo
workers and no traffic: the master's own CPU at idle with 1 s health checks, its
RSS, and the latency of /status and /metrics.

Descriptors: the harness raises its descriptor limit (and the hard limit when it
may) for the largest count asked for; when the hard limit is the ceiling it says
so and measures at the largest count that fits.

Ratios (printed at the end): each corral row over the best peer of the same
run, where "best" is the highest rate or the lowest latency, memory or CPU.
So a ratio above 1 is better for rates and worse for everything else. With
--corral-before, corral / corral-before as well.

Needs (Debian): apt-get install haproxy nginx libnginx-mod-stream wrk iperf3 nodejs

Usage:
  benches/compare.py --corral target/release/corral [--threads 1] [--seconds 5]
      [--corral-before OLD_BINARY] [--only direct,haproxy,nginx,corral]
      [--idle 2000 | --idle 1000,5000,max] [--connections 64] [--warmup 1] [--json FILE] [--keep]
  benches/compare.py --corral target/release/corral --sweep 64,1000,4000,10000 [--threads 2] [--rounds 3]
  benches/compare.py --corral target/release/corral --scenario control --workers 64,256
  benches/compare.py --corral target/release/corral --scenario node [...]

Every process the harness starts runs in its own session and is stopped (with
whatever it started) on the way out, on an error, Ctrl-C or SIGTERM too.
"""

import argparse
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
HOST = "127.0.0.1"
NAN = float("nan")

# Proxy scenario ports.
BACKENDS = (19001, 19002)
IPERF = 15201
# Every proxy row gets the same accept queue: HAProxy's default (its maxconn,
# capped by net.core.somaxconn) rather than corral's 1024 or nginx's 511.
# A burst of thousands of clients overflows a shorter queue, and a client
# whose handshake the kernel dropped waits out TCP retransmissions before its
# first request is served: that showed as a p99 of up to 1.3 s at 4,000
# clients for the rows with the shorter queue, a measure of the queue and
# not of the proxy.
FRONT_BACKLOG = 4096
PROXY_PORTS = {  # row: (http front end, bulk front end, corral admin, corral bulk admin)
    "direct": (19001, IPERF, None, None),
    "haproxy": (18080, 18090, None, None),
    "nginx": (18081, 18091, None, None),
    "corral": (18082, 18092, 19190, 19191),
    "corral-before": (18083, 18093, 19192, 19193),
    # The front door's cost: per-client limits set (not hit) in both.
    "haproxy-stick": (18084, 18094, None, None),
    "corral-limits": (18085, 18095, 19197, 19198),
}
PEERS = ("haproxy", "nginx")
# corral's [clients] limits and HAProxy's equivalent stick table: set high
# enough that the benchmark's one client never reaches them.
CLIENT_LIMITS = """
[clients]
max_connections = 1000000
max_rate = "65000/s"
"""
CORRALS = ("corral", "corral-before")

# Node scenario ports.
NODE_PORTS = {  # row: (front end, corral admin, first worker port)
    "node-cluster": (18100, None, None),
    "haproxy": (18101, None, None),
    "corral": (18102, 19194, 19211),
    "corral-fd": (18103, 19195, None),
    "corral-before": (18104, 19196, 19221),
}
NODE_APPS = (19111, 19112)  # the two copies HAProxy is put in front of
NODE_PEERS = ("haproxy", "node-cluster")
NODE_CORRALS = ("corral", "corral-before", "corral-fd")

INSTALL = "apt-get install haproxy nginx libnginx-mod-stream wrk iperf3 nodejs"


# ---------------------------------------------------------------- processes

def process_tree(roots):
    """The given pids and all their live descendants (from the ppid of every /proc entry)."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parent_of[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            pass
    tree, todo = [], [p for p in roots if p in parent_of]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(c for c, p in parent_of.items() if p == pid)
    return tree


def start_time(pid):
    """A live process's start time (field 22 of /proc/PID/stat), None when gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def cpu_ticks(roots):
    """utime + stime clock ticks spent so far by the process trees under roots."""
    total = 0
    for pid in process_tree(roots):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
        except (OSError, IndexError, ValueError):
            pass
    return total


def rss_bytes(roots):
    """Resident memory summed over the process trees under roots."""
    total = 0
    for pid in process_tree(roots):
        try:
            with open(f"/proc/{pid}/status") as f:
                m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
            total += int(m.group(1)) * 1024 if m else 0
        except OSError:
            pass
    return total


def port_open(port):
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def http_get(port, timeout=2.0):
    """One GET / on a new connection; the body on a 200, else None."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return body if head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200") else None


def wait_serving(port, distinct, timeout=20.0):
    """Wait until GET / through port has been answered by `distinct` different backends."""
    seen, deadline = set(), time.time() + timeout
    while time.time() < deadline:
        body = http_get(port)
        if body is not None:
            seen.add(body)
            if len(seen) >= distinct:
                return True
        else:
            time.sleep(0.05)
    return False


class Processes:
    """Starts processes in their own sessions and stops all of them (and what they started)."""

    def __init__(self, workdir):
        self.dir = workdir
        self.procs = []  # (name, Popen)

    def start(self, name, argv, port=None, env=None):
        if port and port_open(port):
            raise Failure(f"{name}: port {port} is already taken by something else; "
                          f"is an earlier run still going?")
        log_path = os.path.join(self.dir, f"{name}.log")
        with open(log_path, "w") as log:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=dict(os.environ, **(env or {})))
        self.procs.append((name, p))
        if port:
            deadline = time.time() + 15
            while not port_open(port):
                if p.poll() is not None or time.time() > deadline:
                    raise Failure(f"{name} did not open port {port} "
                                  f"(exit code {p.poll()}):\n{tail(log_path)}")
                time.sleep(0.05)
        return p

    def log(self, name):
        return tail(os.path.join(self.dir, f"{name}.log"))

    def stop(self):
        """SIGTERM every process group, newest first; SIGKILL whatever is left after 10 s."""
        # Everything started, with what it started in turn (corral's workers run in
        # process groups of their own), remembered with start times against pid reuse.
        started = {pid: start_time(pid) for pid in process_tree([p.pid for _, p in self.procs])}
        started = {pid: t for pid, t in started.items() if t is not None}
        for _, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.time() + 10
        for _, p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait()
        while time.time() < deadline and any(start_time(pid) == t for pid, t in started.items()):
            time.sleep(0.1)
        for pid, t in started.items():
            if start_time(pid) == t:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.procs = []


class Failure(Exception):
    pass


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip() or "(empty log)"
    except OSError:
        return "(no log)"


def write(path, text):
    with open(path, "w") as f:
        f.write(text.lstrip())
    return path


def toml_str(s):
    return json.dumps(s)  # a JSON string is a valid TOML basic string


# ---------------------------------------------------------------- measurements

def wrk(port, seconds, connections, close, pids):
    """One wrk run: rate, p99, requests, and CPU µs per request of the trees under pids."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", f"http://{HOST}:{port}/"]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    tick = os.sysconf("SC_CLK_TCK")
    before = cpu_ticks(pids) if pids else 0
    out = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    after = cpu_ticks(pids) if pids else 0
    text = out.stdout + out.stderr
    r = {"rps": NAN, "p99_ms": NAN, "requests": 0, "cpu_us_per_req": NAN, "errors": ""}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\b", text, re.M)
    if m:
        r["p99_ms"] = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    m = re.search(r"(\d+) requests in", text)
    if m:
        r["requests"] = int(m.group(1))
    if pids and r["requests"]:
        r["cpu_us_per_req"] = (after - before) / tick * 1e6 / r["requests"]
    problems = []
    m = re.search(r"Socket errors: (.*)", text)
    if m:
        problems.append(m.group(1).strip())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        problems.append(f"non-2xx {m.group(1)}")
    if out.returncode != 0 or not r["requests"]:
        problems.append(f"wrk exit {out.returncode}: {text.strip()[-200:]}")
    r["errors"] = ", ".join(problems)
    return r


def warm_up(port, seconds, connections):
    """An unmeasured wrk run, so that no row is measured cold (Node's JIT, caches, pools)."""
    if seconds > 0:
        subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://{HOST}:{port}/"],
                       capture_output=True, stdin=subprocess.DEVNULL)


def iperf(port, seconds):
    out = subprocess.run(["iperf3", "-c", HOST, "-p", str(port), "-t", str(seconds), "-J"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    try:
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    except (KeyError, ValueError, TypeError):
        return NAN


def idle_memory(port, pids, count):
    """Resident memory growth of the trees under pids per idle connection, and how many opened.

    The clients bind to 127.0.0.2 for their first 20,000 connections, 127.0.0.3 for the
    next, and so on: the ephemeral ports of 127.0.0.1 are left to the proxy's backend
    side, and no one address's ports are the limit."""
    base = rss_bytes(pids)
    socks = []
    try:
        for i in range(count):
            source = (f"127.0.0.{2 + i // 20000}", 0)
            try:
                socks.append(socket.create_connection((HOST, port), timeout=2, source_address=source))
            except OSError:
                break
        time.sleep(1.0 + len(socks) / 10000)  # let the proxy accept them all and open its backend side
        grown = rss_bytes(pids) - base
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5 + len(socks) / 20000)
    return (grown / len(socks) if socks else NAN), len(socks)


# ---------------------------------------------------------------- descriptors

# Descriptors kept aside for everything but the connections themselves
# (logs, /proc reads, listeners, pipes).
FD_SPARE = 512


class Limits:
    """The descriptor limit everything started here inherits, and what it allows.

    raise_to() raises the soft limit to the hard one, and the hard one too when
    the process may (root, or CAP_SYS_RESOURCE), up to fs.nr_open; when it may
    not, the hard limit is the ceiling, and note says so."""

    def __init__(self):
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.note = None

    def raise_to(self, wanted):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        inf = resource.RLIM_INFINITY
        try:
            with open("/proc/sys/fs/nr_open") as f:
                wanted = min(wanted, int(f.read()))
        except (OSError, ValueError):
            pass
        if hard == inf or hard >= wanted:
            if soft != inf and soft < wanted:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        else:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            except (ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                self.note = (f"the hard descriptor limit ({hard}) is the ceiling: {wanted} were wanted "
                             f"(raising it takes root with CAP_SYS_RESOURCE, e.g. `ulimit -Hn {wanted}` before the run)")
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return self

    def through_proxy(self):
        """Concurrent client connections a proxy can carry: two descriptors each."""
        return max(0, (self.nofile - FD_SPARE) // 2)

    def idle_ceiling(self):
        """The most idle connections one run can hold open through a proxy: the
        descriptors, and the ephemeral ports from the proxy to its two backends."""
        ports = 28232
        try:
            with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
                low, high = (int(x) for x in f.read().split())
                ports = high - low + 1
        except (OSError, ValueError):
            pass
        return min(self.through_proxy(), self.nofile - FD_SPARE, 2 * ports - 4000)


def wanted_descriptors(counts):
    """The limit that `counts` concurrent connections through a proxy need."""
    return 2 * max(counts + [0]) + 4 * FD_SPARE


def compare_wanted(a, idle):
    """The descriptor limit this run wants: the largest count it will open, or as many as
    the system allows when --idle asks for `max`."""
    if "max" in idle:
        return 1 << 20
    return wanted_descriptors(a.sweep + a.idle_counts + [a.connections])


def cap_counts(label, counts, ceiling, limits):
    """counts with each one above ceiling lowered to it, saying so."""
    capped = []
    for c in counts:
        if c > ceiling:
            why = limits.note or f"the descriptor limit {limits.nofile}"
            print(f"note: {label} {c} is more than this machine allows; measured at {ceiling} ({why})")
            c = ceiling
        if c not in capped:
            capped.append(c)
    return capped


# ---------------------------------------------------------------- printing

def fmt(value, spec):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def ratio(a, b):
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return NAN
    return a / b


class Table:
    """Fixed-width rows printed as they are measured."""

    def __init__(self, columns, first=14):
        self.columns = columns  # (header, width, getter, format spec)
        self.first = first

    def header(self):
        print(f"{'':{self.first}}" + "".join(f"{h:>{w}}" for h, w, _, _ in self.columns))

    def row(self, name, data):
        print(f"{name:{self.first}}" + "".join(f"{fmt(g(data), s):>{w}}" for _, w, g, s in self.columns),
              flush=True)


def print_ratios(title, names, rows, peers, figures):
    """corral rows over the best peer: max for rates (higher is better), min for the rest."""
    peers = [p for p in peers if p in rows]
    names = [n for n in names if n in rows]
    if not peers or not names:
        return
    print(f"\n{title} (best of {', '.join(peers)}, this run; rates: higher is better, "
          f"the rest: lower is better)")
    table = Table([(h, max(len(h) + 2, 9), None, ".2f") for h, _, _ in figures])
    table.header()
    for n in names:
        values = []
        for _, get, higher_better in figures:
            peer_values = [get(rows[p]) for p in peers]
            peer_values = [v for v in peer_values if v is not None and not math.isnan(v)]
            best = (max if higher_better else min)(peer_values) if peer_values else NAN
            values.append(ratio(get(rows[n]), best))
        print(f"{n:14}" + "".join(f"{fmt(v, '.2f'):>{max(len(h) + 2, 9)}}"
                                  for v, (h, _, _) in zip(values, figures)))
    if "corral" in rows and "corral-before" in rows:
        c, b = rows["corral"], rows["corral-before"]
        print("corral / corral-before: " + "  ".join(
            f"{h} {fmt(ratio(get(c), get(b)), '.2f')}" for h, get, _ in figures))


def print_errors(rows):
    for n, r in rows.items():
        for run in ("keepalive", "close"):
            if r.get(run, {}).get("errors"):
                print(f"note: {n} {run}: {r[run]['errors']}")


def machine_line(corral):
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            model = m.group(1).strip() if m else ""
    except OSError:
        pass
    versions = []
    for argv in (["haproxy", "-v"], ["nginx", "-v"], ["node", "--version"], [corral, "--version"]):
        if argv[0] and shutil.which(argv[0]):
            out = subprocess.run(argv, capture_output=True, text=True)
            first = (out.stdout or out.stderr).strip().splitlines()
            if first:
                versions.append(first[0].replace("nginx version: ", "").split(" - ")[0])
    print(f"machine: {os.cpu_count()} cores, {model}; load {os.getloadavg()[0]:.2f}; "
          + "; ".join(versions))


# ---------------------------------------------------------------- corral

def corral_config(path, front, admin, threads, body, max_connections=10000):
    return write(path, f"""
[listener]
bind = "{HOST}:{front}"
backlog = {FRONT_BACKLOG}
max_connections = {max_connections}
[admin]
bind = "{HOST}:{admin}"
[balance]
strategy = "round-robin"
[runtime]
threads = {threads}
[timeouts]
drain = "2s"
[log]
level = "warn"
connections = false
{body}
""")


def corral_check(binary, config):
    """(exit code, first line of what `corral check` said)."""
    out = subprocess.run([binary, "check", "-c", config], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    said = (out.stderr or out.stdout).strip().splitlines()
    return out.returncode, (said[0] if said else "")


def start_corral(procs, name, binary, config, port):
    code, said = corral_check(binary, config)
    if code != 0:
        raise Failure(f"{name}: `{binary} check -c {config}` exited {code}: {said}")
    return procs.start(name, [binary, "run", "-c", config], port)


# ---------------------------------------------------------------- proxy scenario

def proxy_configs(d, threads, scale=8000):
    """The backend's, HAProxy's and nginx's configs, sized for `scale` concurrent clients."""
    conns = max(16384, 2 * scale + 1024)
    # HAProxy wants two descriptors per maxconn and refuses to start past the limit.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    haproxy_maxconn = min(max(8000, scale + 1000), (nofile - 100) // 2)
    backend = write(f"{d}/backend.conf", f"""
worker_processes 1; daemon off; pid {d}/backend.pid; error_log {d}/backend.err warn;
worker_rlimit_nofile {conns + 1024};
events {{ worker_connections {conns}; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{ listen {HOST}:{BACKENDS[0]} backlog=4096; location / {{ return 200 "hello from {BACKENDS[0]}\\n"; }} }}
  server {{ listen {HOST}:{BACKENDS[1]} backlog=4096; location / {{ return 200 "hello from {BACKENDS[1]}\\n"; }} }}
}}""")
    def haproxy_cfg(name, frontend_extra=""):
        """HAProxy in TCP mode on row `name`'s two ports, with
        `frontend_extra` lines in both frontends."""
        http, bulk = PROXY_PORTS[name][:2]
        return write(f"{d}/{name}.cfg", f"""
global
  maxconn {haproxy_maxconn}
  nbthread {threads}
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe
  bind {HOST}:{http} backlog {FRONT_BACKLOG}{frontend_extra}
  default_backend be
backend be
  balance roundrobin
  server s1 {HOST}:{BACKENDS[0]}
  server s2 {HOST}:{BACKENDS[1]}
frontend fe_bulk
  bind {HOST}:{bulk} backlog {FRONT_BACKLOG}{frontend_extra}
  default_backend be_bulk
backend be_bulk
  server i1 {HOST}:{IPERF}
""")
    haproxy = haproxy_cfg("haproxy")
    # The per-client stick table that [clients] is compared with.
    stick = haproxy_cfg("haproxy-stick", """
  stick-table type ip size 1m expire 60s store conn_cur,conn_rate(1s)
  tcp-request connection track-sc0 src
  tcp-request connection reject if { sc0_conn_cur gt 1000000 } || { sc0_conn_rate gt 65000 }""")
    np_, nb = PROXY_PORTS["nginx"][:2]
    nginx = write(f"{d}/stream.conf", f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes {threads}; daemon off; pid {d}/stream.pid; error_log {d}/stream.err warn;
worker_rlimit_nofile {max(65536, conns + 1024)};
events {{ worker_connections {conns}; }}
stream {{
  upstream be {{ server {HOST}:{BACKENDS[0]}; server {HOST}:{BACKENDS[1]}; }}
  upstream be_bulk {{ server {HOST}:{IPERF}; }}
  server {{ listen {HOST}:{np_} backlog={FRONT_BACKLOG}; proxy_pass be; }}
  server {{ listen {HOST}:{nb} backlog={FRONT_BACKLOG}; proxy_pass be_bulk; }}
}}""")
    return backend, haproxy, nginx, stick


def corral_proxy_configs(d, name, threads, scale=8000):
    http, bulk, admin, admin_bulk = PROXY_PORTS[name]
    limits = CLIENT_LIMITS if name == "corral-limits" else ""
    main = corral_config(f"{d}/{name}.toml", http, admin, threads, f"""{limits}
[[backends]]
name = "s1"
address = "{HOST}:{BACKENDS[0]}"
[[backends]]
name = "s2"
address = "{HOST}:{BACKENDS[1]}"
""", max_connections=max(10000, scale + 1000))  # past it clients would wait in the backlog
    # corral has one front end per instance, so bulk gets an instance of its own.
    bulk_cfg = corral_config(f"{d}/{name}-bulk.toml", bulk, admin_bulk, threads, f"""{limits}
[[backends]]
name = "bulk"
address = "{HOST}:{IPERF}"
""")
    return main, bulk_cfg


def start_proxies(a, names, d, procs, scale):
    """Starts the backends and every row's proxy, sized for `scale` concurrent
    clients, and waits until each answers from both backends. The pids whose
    process trees are measured, by row."""
    for tool in ["nginx", "haproxy", "wrk", "iperf3"]:
        if not shutil.which(tool):
            raise Failure(f"{tool} is not installed: {INSTALL}")
    if "nginx" in names and not os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so"):
        raise Failure(f"nginx's stream module is missing: {INSTALL}")
    backend, haproxy, nginx, stick = proxy_configs(d, a.threads, scale)
    binaries = {"corral": a.corral, "corral-before": a.corral_before, "corral-limits": a.corral}

    procs.start("backend", ["nginx", "-c", backend, "-p", d + "/", "-e", f"{d}/backend.err"],
                BACKENDS[1])
    procs.start("iperf3", ["iperf3", "-s", "-B", HOST, "-p", str(IPERF)], IPERF)
    pids = {}
    if "haproxy" in names:
        pids["haproxy"] = [procs.start("haproxy", ["haproxy", "-db", "-f", haproxy],
                                       PROXY_PORTS["haproxy"][0]).pid]
    if "nginx" in names:
        pids["nginx"] = [procs.start("nginx", ["nginx", "-c", nginx, "-p", d + "/", "-e",
                                               f"{d}/stream.err"], PROXY_PORTS["nginx"][0]).pid]
    if "haproxy-stick" in names:
        pids["haproxy-stick"] = [procs.start("haproxy-stick", ["haproxy", "-db", "-f", stick],
                                             PROXY_PORTS["haproxy-stick"][0]).pid]
    for n in CORRALS + ("corral-limits",):
        if n in names:
            main, bulk = corral_proxy_configs(d, n, a.threads, scale)
            pids[n] = [start_corral(procs, n, binaries[n], main, PROXY_PORTS[n][0]).pid]
            start_corral(procs, n + "-bulk", binaries[n], bulk, PROXY_PORTS[n][1])
    for n in names:
        if not wait_serving(PROXY_PORTS[n][0], 1 if n == "direct" else 2):
            log = procs.log(n) if n != "direct" else procs.log("backend")
            raise Failure(f"{n} does not answer GET / from both backends on port "
                          f"{PROXY_PORTS[n][0]}:\n{log}")
    return pids


def proxy_scenario(a, names, d, procs):
    pids = start_proxies(a, names, d, procs, max([a.connections] + a.idle_counts))
    idle_text = ", ".join(str(c) for c in a.idle_counts) or "no"
    print(f"proxy scenario: --threads {a.threads}, {a.seconds} s per figure, "
          f"wrk -t1 -c{a.connections} after {a.warmup} s of warm-up, {idle_text} idle connections; "
          f"times in ms, cpu in us/request")
    table = Table([
        ("ka req/s", 11, lambda r: r["keepalive"]["rps"], ".0f"),
        ("ka p99", 9, lambda r: r["keepalive"]["p99_ms"], ".2f"),
        ("close req/s", 13, lambda r: r["close"]["rps"], ".0f"),
        ("close p99", 11, lambda r: r["close"]["p99_ms"], ".2f"),
        ("Gbit/s", 9, lambda r: r["bulk_gbps"], ".1f"),
    ] + [(f"KiB/idle@{c}", max(10, len(str(c)) + 11),
           lambda r, c=c: r["idle"].get(c, {}).get("bytes_per_conn", NAN) / 1024, ".1f")
         for c in a.idle_counts] + [
        ("cpu ka", 9, lambda r: r["keepalive"]["cpu_us_per_req"], ".1f"),
        ("cpu close", 11, lambda r: r["close"]["cpu_us_per_req"], ".1f"),
    ])
    table.header()
    rows = {}
    for n in names:
        http, bulk = PROXY_PORTS[n][:2]
        p = pids.get(n, [])
        warm_up(http, a.warmup, a.connections)
        r = {"keepalive": wrk(http, a.seconds, a.connections, False, p),
             "close": wrk(http, a.seconds, a.connections, True, p),
             "bulk_gbps": iperf(bulk, a.seconds),
             "idle": {}}
        for c in (a.idle_counts if p else []):
            per_conn, opened = idle_memory(http, p, c)
            r["idle"][c] = {"bytes_per_conn": per_conn, "opened": opened}
        first = r["idle"].get(a.idle_counts[0], {}) if a.idle_counts else {}
        r["idle_bytes_per_conn"] = first.get("bytes_per_conn", NAN)
        rows[n] = r
        table.row(n, r)
    for n, r in rows.items():
        for c, got in r["idle"].items():
            if got["opened"] < c:
                print(f"note: {n}: only {got['opened']} of {c} idle connections opened")
    print_errors(rows)

    if "direct" in rows:
        print("\nratios to a direct connection (higher is better):")
        dr = rows["direct"]
        for n in [n for n in names if n != "direct"]:
            r = rows[n]
            print(f"{n:14}keepalive {fmt(ratio(r['keepalive']['rps'], dr['keepalive']['rps']), '.2f')}"
                  f"  close {fmt(ratio(r['close']['rps'], dr['close']['rps']), '.2f')}"
                  f"  bulk {fmt(ratio(r['bulk_gbps'], dr['bulk_gbps']), '.2f')}")
    print_ratios("corral / best peer", CORRALS, rows, PEERS, [
        ("ka req/s", lambda r: r["keepalive"]["rps"], True),
        ("ka p99", lambda r: r["keepalive"]["p99_ms"], False),
        ("close req/s", lambda r: r["close"]["rps"], True),
        ("close p99", lambda r: r["close"]["p99_ms"], False),
        ("Gbit/s", lambda r: r["bulk_gbps"], True),
    ] + [(f"KiB/idle@{c}", lambda r, c=c: r["idle"].get(c, {}).get("bytes_per_conn", NAN), False)
         for c in a.idle_counts] + [
        ("cpu ka", lambda r: r["keepalive"]["cpu_us_per_req"], False),
        ("cpu close", lambda r: r["close"]["cpu_us_per_req"], False),
    ])
    for limited, plain in (("corral-limits", "corral"), ("haproxy-stick", "haproxy")):
        if limited in rows and plain in rows:
            lr, pr = rows[limited], rows[plain]
            print(f"{limited} / {plain} (client limits set, not hit): "
                  f"ka req/s {fmt(ratio(lr['keepalive']['rps'], pr['keepalive']['rps']), '.3f')}  "
                  f"close req/s {fmt(ratio(lr['close']['rps'], pr['close']['rps']), '.3f')}  "
                  f"cpu ka {fmt(ratio(lr['keepalive']['cpu_us_per_req'], pr['keepalive']['cpu_us_per_req']), '.3f')}  "
                  f"cpu close {fmt(ratio(lr['close']['cpu_us_per_req'], pr['close']['cpu_us_per_req']), '.3f')}")
    return rows


# ---------------------------------------------------------------- node scenario

def node_scenario(a, names, d, procs):
    app, cluster = os.path.join(NODE_DIR, "app.js"), os.path.join(NODE_DIR, "cluster.js")
    for tool in ["node", "wrk"] + (["haproxy"] if "haproxy" in names else []):
        if not shutil.which(tool):
            raise Failure(f"{tool} is not installed: {INSTALL}")
    binaries = {"corral": a.corral, "corral-before": a.corral_before, "corral-fd": a.corral}
    front = {n: NODE_PORTS[n][0] for n in NODE_PORTS}

    configs = {}
    for n in ("corral", "corral-before"):
        if n in names:
            _, admin, port_base = NODE_PORTS[n]
            # workers.listen is left at its default, "port": each worker listens on
            # port_base + i and corral proxies to it.
            configs[n] = corral_config(f"{d}/{n}.toml", front[n], admin, a.threads, f"""
[workers]
command = ["node", {toml_str(app)}]
count = 2
port_base = {port_base}
stop_timeout = "2s"
""")
    if "corral-fd" in names:
        configs["corral-fd"] = corral_config(f"{d}/corral-fd.toml", front["corral-fd"],
                                             NODE_PORTS["corral-fd"][1], a.threads, f"""
[workers]
command = ["node", {toml_str(app)}]
count = 2
listen = "fd"
stop_timeout = "2s"
""")
        code, said = corral_check(a.corral, configs["corral-fd"])
        if code != 0:
            why = ("refuses" if code == 2 else f"fails to check (exit {code}) on")
            print(f"corral-fd skipped: {a.corral} {why} workers.listen = \"fd\" "
                  f"(corral check: {said.split(', expected')[0][:160]})")
            names.remove("corral-fd")

    pids = {}
    if "node-cluster" in names:
        # The primary and the workers it forks: the whole tree is measured.
        pids["node-cluster"] = [procs.start("node-cluster", ["node", cluster], front["node-cluster"],
                                            env={"PORT": str(front["node-cluster"]), "WORKERS": "2"}).pid]
    if "haproxy" in names:
        hap = write(f"{d}/haproxy.cfg", f"""
global
  maxconn 8000
  nbthread {a.threads}
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe
  bind {HOST}:{front['haproxy']}
  default_backend be
backend be
  balance roundrobin
  server n1 {HOST}:{NODE_APPS[0]}
  server n2 {HOST}:{NODE_APPS[1]}
""")
        apps = [procs.start(f"app{i + 1}", ["node", app], port, env={"PORT": str(port)}).pid
                for i, port in enumerate(NODE_APPS)]
        pids["haproxy"] = [procs.start("haproxy", ["haproxy", "-db", "-f", hap], front["haproxy"]).pid] + apps
    for n in NODE_CORRALS:
        if n in names:
            pids[n] = [start_corral(procs, n, binaries[n], configs[n], front[n]).pid]
    for n in names:
        if not wait_serving(front[n], 2):
            raise Failure(f"{n} does not answer GET / from 2 workers on port {front[n]}:\n{procs.log(n)}")

    print(f"node scenario: 2 workers of benches/node/app.js, --threads {a.threads}, {a.seconds} s per "
          f"figure, wrk -t1 -c{a.connections} after {a.warmup} s of warm-up; times in ms, cpu in us/request of the whole tree")
    table = Table([
        ("ka req/s", 11, lambda r: r["keepalive"]["rps"], ".0f"),
        ("ka p99", 9, lambda r: r["keepalive"]["p99_ms"], ".2f"),
        ("close req/s", 13, lambda r: r["close"]["rps"], ".0f"),
        ("close p99", 11, lambda r: r["close"]["p99_ms"], ".2f"),
        ("cpu ka", 9, lambda r: r["keepalive"]["cpu_us_per_req"], ".1f"),
        ("cpu close", 11, lambda r: r["close"]["cpu_us_per_req"], ".1f"),
    ])
    table.header()
    rows = {}
    for n in names:
        warm_up(front[n], a.warmup, a.connections)
        rows[n] = {"keepalive": wrk(front[n], a.seconds, a.connections, False, pids[n]),
                   "close": wrk(front[n], a.seconds, a.connections, True, pids[n])}
        table.row(n, rows[n])
    print_errors(rows)
    print_ratios("corral / best peer", NODE_CORRALS, rows, NODE_PEERS, [
        ("ka req/s", lambda r: r["keepalive"]["rps"], True),
        ("ka p99", lambda r: r["keepalive"]["p99_ms"], False),
        ("close req/s", lambda r: r["close"]["rps"], True),
        ("close p99", lambda r: r["close"]["p99_ms"], False),
        ("cpu ka", lambda r: r["keepalive"]["cpu_us_per_req"], False),
        ("cpu close", lambda r: r["close"]["cpu_us_per_req"], False),
    ])
    return rows


# ---------------------------------------------------------------- main

def no_nan(value):
    """The figures with null for what was not measured (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def interrupted(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the top of benches/compare.py and benches/README.md.")
    ap.add_argument("--corral", help="the corral binary to measure (e.g. target/release/corral)")
    ap.add_argument("--corral-before", metavar="PATH",
                    help="a second corral binary (e.g. from before a change): adds a corral-before row")
    ap.add_argument("--scenario", choices=["proxy", "node", "control"], default="proxy")
    ap.add_argument("--threads", type=int, default=1, help="threads of every proxy (default 1)")
    ap.add_argument("--seconds", type=int, default=5, help="length of each wrk and iperf3 run (default 5)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="seconds of unmeasured wrk load on each row before its figures (default 1)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--idle", default="2000",
                    help="idle connections for the memory figure: a count, or counts separated by "
                         "commas, `max` for the most this machine allows; 0 skips it (default 2000)")
    ap.add_argument("--sweep", metavar="C1,C2,...",
                    help="proxy scenario: keep-alive and close figures at each of these concurrencies "
                         "(e.g. 64,1000,4000,10000), one table of ratios, a JSON and a PNG plot "
                         "(rows default to haproxy,nginx,corral; no bulk or idle figures)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="--sweep: measure every point this many times, the rows in a rotated "
                         "order each round; each figure is the median, each ratio the median of "
                         "the rounds' ratios, with their spread (one shared 2-core machine moves "
                         "single runs by 10-20%%)")
    ap.add_argument("--workers", default="64,256",
                    help="--scenario control: worker counts, separated by commas (default 64,256)")
    ap.add_argument("--requests", type=int, default=100,
                    help="--scenario control: GETs of /status and of /metrics per count (default 100)")
    ap.add_argument("--only", help="comma-separated rows; proxy: direct,haproxy,nginx,corral,corral-before,"
                                   "haproxy-stick,corral-limits; "
                                   "node: corral,corral-before,corral-fd,haproxy,node-cluster")
    ap.add_argument("--json", metavar="FILE", help="also write every figure here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs and logs)")
    a = ap.parse_args()

    for opt in ("corral", "corral_before"):
        path = getattr(a, opt)
        if path:
            path = os.path.abspath(path)
            if not os.access(path, os.X_OK):
                ap.error(f"--{opt.replace('_', '-')} {path}: not an executable file")
            setattr(a, opt, path)
    if a.scenario == "proxy":
        known = ["direct", "haproxy", "nginx", "corral", "corral-before", "haproxy-stick",
                 "corral-limits"]
    else:
        known = ["corral", "corral-before", "corral-fd", "haproxy", "node-cluster"]
    names = a.only.split(",") if a.only else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown rows for --scenario {a.scenario}: {', '.join(unknown)} (known: {', '.join(known)})")
    names = [n for n in known if n in names]  # a fixed order
    for n, path in (("corral", a.corral), ("corral-fd", a.corral), ("corral-limits", a.corral),
                    ("corral-before", a.corral_before)):
        if n in names and not path:
            if a.only:
                ap.error(f"row {n} needs --{'corral-before' if n == 'corral-before' else 'corral'}")
            names.remove(n)

    try:
        a.sweep = [int(c) for c in a.sweep.split(",")] if a.sweep else []
        a.workers = [int(c) for c in a.workers.split(",")]
        idle = [c.strip() for c in a.idle.split(",") if c.strip() not in ("", "0")]
        a.idle_counts = [int(c) for c in idle if c != "max"]
    except ValueError:
        ap.error("--sweep, --idle and --workers take whole numbers separated by commas "
                 "(--idle also takes `max`), e.g. --sweep 64,1000,4000")
    if a.sweep and a.scenario != "proxy":
        ap.error("--sweep is for the proxy scenario")
    if a.rounds < 1:
        ap.error("--rounds takes 1 or more")
    if a.rounds > 1 and not a.sweep:
        ap.error("--rounds is for --sweep")
    if a.sweep and not a.only:
        names = [n for n in names if n in ("haproxy", "nginx", "corral", "corral-before")]
    if a.sweep:
        a.idle_counts, idle = [], []
    if a.scenario == "control" and not a.corral:
        ap.error("--scenario control needs --corral")
    # Every connection through a proxy takes a descriptor here (or in wrk) and
    # two in the proxy; what this process may open, its children may too.
    limits = Limits().raise_to(compare_wanted(a, idle))
    if limits.note:
        print(f"note: {limits.note}")
    if "max" in idle:
        a.idle_counts.append(limits.idle_ceiling())
    a.idle_counts = cap_counts("--idle", sorted(set(a.idle_counts)), limits.idle_ceiling(), limits)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    machine_line(a.corral)
    d = tempfile.mkdtemp(prefix=f"corral-bench-{a.scenario}-")
    procs = Processes(d)
    failed = False
    try:
        if a.sweep or a.scenario == "control":
            import scaling  # beside this file
            if a.sweep:
                rows = scaling.sweep(a, names, d, procs, limits)
                a.json = a.json or f"sweep-threads{a.threads}.json"
            else:
                rows = scaling.control(a, d, procs, limits)
        else:
            run = proxy_scenario if a.scenario == "proxy" else node_scenario
            rows = run(a, names, d, procs)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(no_nan({"scenario": a.scenario, "threads": a.threads, "seconds": a.seconds,
                                  "sweep": a.sweep, "rounds": a.rounds, "descriptor_limit": limits.nofile,
                                  "rows": {str(k): v for k, v in rows.items()}}), f, indent=1)
            print(f"figures: {a.json}")
            if a.sweep:
                png = scaling.plot(rows, names, os.path.splitext(a.json)[0] + ".png",
                                   f"corral, HAProxy, nginx by concurrency (--threads {a.threads}, "
                                   f"{a.seconds} s per figure)")
                if png:
                    print(f"plot: {png}")
    except Failure as e:
        failed = True
        print(f"compare.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("compare.py: interrupted; stopping everything it started", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop()
        if a.keep or failed:
            print(f"work directory (configs, logs): {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
