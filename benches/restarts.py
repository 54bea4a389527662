#!/usr/bin/env python3
"""Keep-alive clients through rolling restarts, and uvicorn in fd mode against port mode.

Two scenarios, each run on its own or both in one invocation. Everything
listens on 127.0.0.1 only, on fixed ports (fronts 18110-18115, admin ports
19230-19234, workers 19240-19275). Helpers (processes, wrk, printing) are
benches/compare.py's.

Restarts scenario (--scenario restarts). WORKERS (default 3) copies of
benches/node/app.js (graceful: server.close() on SIGTERM) under wrk -t2 -cN
keep-alive load, through RESTARTS (default 5) rolling restarts, one after the
other, in one run of each row. One wrk run around each restart (a second of load
before it, the restart, a second after it has finished), so that its failures
are counted restart by restart. Rows:
  corral-stateless  corral, port mode, workers.stateless = true; restart with
                    POST /workers/restart, finished when every pid in /status
                    changed and the old processes are gone
  corral            the same without workers.stateless
  node-cluster      Node's cluster module replacing its workers the usual way
                    (benches/node/cluster_restart.js): on SIGUSR2 it forks a new
                    worker, waits for its 'listening', then worker.disconnect()s
                    the old one, one at a time
A failed request is a socket error (connect, read, write, timeout) or a non-2xx
answer, as wrk counts them.

uvicorn scenario (--scenario uvicorn). 2 uvicorn workers of
tests/support/asgi_app.py under corral, wrk -t1 -cN keep-alive for SECONDS:
  uvicorn-port       workers.listen = "port": `uvicorn asgi_app:app --port {port}`
  uvicorn-fd         workers.listen = "fd": `uvicorn asgi_app:app --fd 3`, the
                     socket handed by corral (the kernel steers, corral is off
                     the byte path)
  uvicorn-fd-before  the same with the --corral-before binary
Both with --no-access-log (a log line per request would measure the log).

Needs (Debian): apt-get install wrk nodejs python3-pip; python3 -m pip install uvicorn

Usage:
  benches/restarts.py --corral target/release/corral                   # both scenarios
  benches/restarts.py --corral target/release/corral --scenario restarts --restarts 5 --workers 3
  benches/restarts.py --corral target/release/corral --scenario uvicorn --seconds 5 \\
      [--corral-before /tmp/corral-old]
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the harness beside this file)
from compare import HOST, NODE_DIR, Failure, Processes, Table, corral_config, start_corral, toml_str  # noqa: E402

SUPPORT = os.path.join(os.path.dirname(compare.HERE), "tests", "support")

RESTART_ROWS = {  # row: (front end, corral admin, port_base)
    "corral-stateless": (18110, 19230, 19240),
    "corral": (18111, 19231, 19250),
    "node-cluster": (18112, None, None),
}
UVICORN_ROWS = {
    "uvicorn-port": (18113, 19232, 19260),
    "uvicorn-fd": (18114, 19233, None),
    "uvicorn-fd-before": (18115, 19234, None),
}


# ---------------------------------------------------------------- corral's admin port

def admin_json(admin, path):
    with urllib.request.urlopen(f"http://{HOST}:{admin}{path}", timeout=5) as r:
        return json.loads(r.read())


def admin_post(admin, path):
    request = urllib.request.Request(f"http://{HOST}:{admin}{path}", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=5) as r:
        return r.status


def worker_pids(admin):
    """{name: (pid, state)} of the workers in /status."""
    status = admin_json(admin, "/status")
    return {b["name"]: (b.get("pid"), b.get("state")) for b in status["backends"]
            if b["name"].startswith("worker-")}


def wait(check, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise Failure(f"{what}: not within {seconds} s")


def corral_restart(admin, count):
    """POST /workers/restart; returns once every worker is a new process, up, and the old ones are gone."""
    before = {pid for pid, _ in worker_pids(admin).values()}
    if admin_post(admin, "/workers/restart") != 202:
        raise Failure("POST /workers/restart was not accepted")

    def done():
        now = worker_pids(admin)
        return (len(now) == count and all(s == "up" and p not in before for p, s in now.values())
                and all(compare.start_time(p) is None for p in before if p))
    wait(done, 90, "the rolling restart")


def cluster_restart(primary, log_path):
    """SIGUSR2 to the cluster primary; returns once it printed one more `restart finished`."""
    def finished():
        try:
            with open(log_path) as f:
                return f.read().count("restart finished")
        except OSError:
            return 0
    before = finished()
    os.kill(primary, signal.SIGUSR2)
    wait(lambda: finished() > before, 90, "node-cluster's rolling restart")


# ---------------------------------------------------------------- wrk around one event

def wrk_around(port, connections, threads, event, workdir):
    """wrk keep-alive load: 1 s, event(), 1 s, then SIGINT (wrk prints its summary). Parsed figures."""
    out_path = os.path.join(workdir, f"wrk-{port}.out")
    with open(out_path, "w") as out:
        p = subprocess.Popen(["wrk", f"-t{threads}", f"-c{connections}", "-d600s", "--timeout", "10s",
                              f"http://{HOST}:{port}/"], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(1)
        event()
        time.sleep(1)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    with open(out_path) as f:
        text = f.read()
    r = {"requests": 0, "seconds": 0.0, "connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m|h)\b", text)
    if m:
        r["requests"] = int(m.group(1))
        r["seconds"] = float(m.group(2)) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m.group(3)]
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r.update(connect=int(m.group(1)), read=int(m.group(2)), write=int(m.group(3)), timeout=int(m.group(4)))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    if not r["requests"]:
        raise Failure(f"wrk served nothing on port {port}:\n{text}")
    r["failed"] = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["non2xx"]
    return r


# ---------------------------------------------------------------- scenarios

def restarts_scenario(a, d, procs):
    app, cluster = os.path.join(NODE_DIR, "app.js"), os.path.join(NODE_DIR, "cluster_restart.js")
    names = [n for n in RESTART_ROWS if not a.only or n in a.only]
    print(f"restarts: {a.restarts} rolling restarts of {a.workers} workers of benches/node/app.js, "
          f"wrk -t2 -c{a.connections} keep-alive, one wrk run around each restart; failed requests "
          f"(socket errors + non-2xx) per restart")
    columns = [(f"r{i + 1}", 6, (lambda i: lambda r: r["runs"][i]["failed"])(i), "d") for i in range(a.restarts)]
    columns += [("total", 7, lambda r: r["failed"], "d"), ("requests", 10, lambda r: r["requests"], "d"),
                ("req/s", 8, lambda r: r["requests"] / r["seconds"] if r["seconds"] else 0, ".0f"),
                ("seconds", 9, lambda r: r["seconds"], ".1f")]
    table = Table(columns, first=18)
    table.header()
    rows = {}
    for n in names:
        front, admin, port_base = RESTART_ROWS[n]
        if n == "node-cluster":
            primary = procs.start(n, ["node", cluster], front,
                                  env={"PORT": str(front), "WORKERS": str(a.workers)})
            log_path = os.path.join(d, f"{n}.log")
            restart = lambda: cluster_restart(primary.pid, log_path)  # noqa: E731
        else:
            stateless = "stateless = true" if n == "corral-stateless" else ""
            config = corral_config(f"{d}/{n}.toml", front, admin, a.threads, f"""
[workers]
command = ["node", {toml_str(app)}]
count = {a.workers}
port_base = {port_base}
stop_timeout = "10s"
{stateless}
""")
            start_corral(procs, n, a.corral, config, front)
            restart = (lambda admin: lambda: corral_restart(admin, a.workers))(admin)
        if not compare.wait_serving(front, a.workers):
            raise Failure(f"{n} does not answer GET / from {a.workers} workers on port {front}:\n{procs.log(n)}")
        compare.warm_up(front, a.warmup, a.connections)
        runs = [wrk_around(front, a.connections, 2, restart, d) for _ in range(a.restarts)]
        rows[n] = {"runs": runs, "failed": sum(r["failed"] for r in runs),
                   "requests": sum(r["requests"] for r in runs), "seconds": sum(r["seconds"] for r in runs)}
        table.row(n, rows[n])
        for i, r in enumerate(runs):
            kinds = {k: r[k] for k in ("connect", "read", "write", "timeout", "non2xx") if r[k]}
            if kinds:
                print(f"  {n} restart {i + 1}: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
        procs.stop()
    return rows


def uvicorn_scenario(a, d, procs):
    if not shutil.which("uvicorn"):
        raise Failure("uvicorn is not installed: python3 -m pip install uvicorn")
    names = [n for n in UVICORN_ROWS if (not a.only or n in a.only)
             and (n != "uvicorn-fd-before" or a.corral_before)]
    print(f"\nuvicorn: 2 workers of tests/support/asgi_app.py, wrk -t1 -c{a.connections} keep-alive, "
          f"{a.seconds} s after {a.warmup} s of warm-up; times in ms, cpu in us/request of the whole tree")
    table = Table([
        ("ka req/s", 11, lambda r: r["rps"], ".0f"),
        ("ka p99", 9, lambda r: r["p99_ms"], ".2f"),
        ("cpu ka", 9, lambda r: r["cpu_us_per_req"], ".1f"),
    ], first=18)
    table.header()
    rows = {}
    for n in names:
        front, admin, port_base = UVICORN_ROWS[n]
        binary = a.corral_before if n == "uvicorn-fd-before" else a.corral
        if n == "uvicorn-port":
            workers = f"""command = ["uvicorn", "asgi_app:app", "--port", "{{port}}", "--no-access-log"]
port_base = {port_base}"""
        else:
            workers = """command = ["uvicorn", "asgi_app:app", "--fd", "3", "--no-access-log"]
listen = "fd\""""
        config = corral_config(f"{d}/{n}.toml", front, admin, a.threads, f"""
[workers]
{workers}
count = 2
cwd = {toml_str(SUPPORT)}
stop_timeout = "5s"
""")
        pid = start_corral(procs, n, binary, config, front).pid
        if not compare.wait_serving(front, 2):
            raise Failure(f"{n} does not answer GET / from 2 workers on port {front}:\n{procs.log(n)}")
        compare.warm_up(front, a.warmup, a.connections)
        rows[n] = compare.wrk(front, a.seconds, a.connections, False, [pid])
        table.row(n, rows[n])
        if rows[n]["errors"]:
            print(f"note: {n}: {rows[n]['errors']}")
        procs.stop()
    if "uvicorn-port" in rows:
        for n in ("uvicorn-fd", "uvicorn-fd-before"):
            if n in rows:
                print(f"{n} / uvicorn-port req/s: {compare.fmt(compare.ratio(rows[n]['rps'], rows['uvicorn-port']['rps']), '.2f')}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the top of benches/restarts.py and benches/README.md.")
    ap.add_argument("--corral", required=True, help="the corral binary (e.g. target/release/corral)")
    ap.add_argument("--corral-before", metavar="PATH", help="a second corral binary: adds uvicorn-fd-before")
    ap.add_argument("--scenario", choices=["restarts", "uvicorn", "all"], default="all")
    ap.add_argument("--restarts", type=int, default=5, help="rolling restarts per row (default 5)")
    ap.add_argument("--workers", type=int, default=3, help="workers in the restarts scenario (default 3)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="corral's proxy threads (default 1)")
    ap.add_argument("--seconds", type=int, default=5, help="each wrk run of the uvicorn scenario (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load first (default 1)")
    ap.add_argument("--only", help="comma-separated rows: " + ",".join(list(RESTART_ROWS) + list(UVICORN_ROWS)))
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
    a.only = a.only.split(",") if a.only else None
    for tool in ("wrk", "node"):
        if not shutil.which(tool):
            ap.error(f"{tool} is not installed: {compare.INSTALL}")
    signal.signal(signal.SIGTERM, compare.interrupted)
    signal.signal(signal.SIGHUP, compare.interrupted)

    compare.machine_line(a.corral)
    d = tempfile.mkdtemp(prefix="corral-bench-restarts-")
    procs = Processes(d)
    failed = False
    results = {}
    try:
        if a.scenario in ("restarts", "all"):
            results["restarts"] = restarts_scenario(a, d, procs)
        if a.scenario in ("uvicorn", "all"):
            results["uvicorn"] = uvicorn_scenario(a, d, procs)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(compare.no_nan(results), f, indent=1)
    except Failure as e:
        failed = True
        print(f"restarts.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("restarts.py: interrupted; stopping everything it started", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop()
        if a.keep or failed:
            print(f"work directory (configs, logs): {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
