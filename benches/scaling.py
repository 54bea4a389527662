"""How the proxies' costs grow with the work: compare.py's --sweep and --scenario control.

--sweep C1,C2,...   every row measured at each concurrency (wrk -c C, keep-alive and
                    Connection: close), the rows interleaved point by point in one run;
                    one table of corral / best peer ratios, the figures in the JSON,
                    and a plot (PNG, matplotlib) next to the JSON. With --rounds N each
                    point is measured N times, the rows in a rotated order each round
                    (so that no row always runs first); each figure is the median, and
                    each ratio is paired: for each peer, corral's figure over that peer's
                    of the same round, round by round; the median of those ratios against
                    the peer corral compares worst with, and their lowest and highest.
--scenario control  corral with --workers W1,W2,... demo workers (`corral demo-worker`),
                    health checks every second, no traffic: the master's own CPU at
                    idle, its resident memory, and the latency of /status and /metrics.

Imported by compare.py (its helpers: processes, wrk, configs, printing).
"""

import json
import os
import socket
import statistics
import time

import compare
from compare import HOST, NAN, Failure, Table, fmt, ratio

# The figures of a sweep point and which way is better (True: higher).
SWEEP_FIGURES = [
    ("ka req/s", lambda r: r["keepalive"]["rps"], True),
    ("ka p99", lambda r: r["keepalive"]["p99_ms"], False),
    ("close req/s", lambda r: r["close"]["rps"], True),
    ("close p99", lambda r: r["close"]["p99_ms"], False),
    ("cpu ka", lambda r: r["keepalive"]["cpu_us_per_req"], False),
    ("cpu close", lambda r: r["close"]["cpu_us_per_req"], False),
]


def sweep(a, names, d, procs, limits):
    """The proxy scenario at each concurrency of a.sweep; {point: {row: figures}}."""
    points = compare.cap_counts("--sweep", a.sweep, limits.through_proxy(), limits)
    pids = compare.start_proxies(a, names, d, procs, max(points))
    print(f"sweep: --threads {a.threads}, {a.seconds} s per figure after {a.warmup} s of warm-up, "
          f"wrk -t1 -c<point>" + (f", each figure the median of {a.rounds} rounds" if a.rounds > 1 else "")
          + "; times in ms, cpu in us/request")
    table = Table([("clients", 9, lambda r: r["clients"], "d")] + [
        (h, 13 if "req/s" in h else 11, get, ".0f" if "req/s" in h else (".2f" if "p99" in h else ".1f"))
        for h, get, _ in SWEEP_FIGURES])
    table.header()
    curve = {}
    for point in points:
        runs = {n: [] for n in names}
        for round_ in range(a.rounds):
            for n in names[round_ % len(names):] + names[:round_ % len(names)]:
                port = compare.PROXY_PORTS[n][0]
                p = pids.get(n, [])
                compare.warm_up(port, a.warmup, point)
                runs[n].append({"keepalive": compare.wrk(port, a.seconds, point, False, p),
                                "close": compare.wrk(port, a.seconds, point, True, p)})
        curve[point] = {}
        for n in names:
            r = {"clients": point, "rounds": len(runs[n]),
                 "keepalive": median_run([x["keepalive"] for x in runs[n]]),
                 "close": median_run([x["close"] for x in runs[n]]),
                 "runs": runs[n]}
            curve[point][n] = r
            table.row(n, r)
    for point, rows in curve.items():
        for n, r in rows.items():
            for run in ("keepalive", "close"):
                if r[run]["errors"]:
                    print(f"note: {point} clients, {n} {run}: {r[run]['errors']}")
    print_curve(curve, names)
    return curve


def median_run(runs):
    """One wrk figure set out of several runs of it: each number the median
    (NaN left out), the errors of every run."""
    out = {}
    for key in ("rps", "p99_ms", "requests", "cpu_us_per_req"):
        values = [r[key] for r in runs if r[key] == r[key]]
        out[key] = statistics.median(values) if values else NAN
    out["errors"] = "; ".join(r["errors"] for r in runs if r["errors"])
    return out


def rounds_of(row):
    """A row's figures round by round, each shaped like the row itself (a row
    read back from a JSON written before rounds were kept is one round)."""
    runs = row.get("runs")
    return runs if runs else [row]


def paired_ratios(rows, n, peers, get, higher):
    """Row n against the best peer, paired round by round: for each peer, the
    rounds' ratios of n's figure over that peer's of the same round (NaN
    figures left out); then the peer n compares worst against, by the median
    of those ratios. Returns that peer's ratios (empty when no round had
    both). Taking each round's best peer first would compare n with the
    larger of two noisy figures every round, and so with more than any peer
    does."""
    mine = rounds_of(rows[n]) if n in rows else []
    worst = []
    for p in peers:
        if p not in rows:
            continue
        theirs = rounds_of(rows[p])
        ratios = [ratio(get(m), get(t)) for m, t in zip(mine, theirs)]
        ratios = [v for v in ratios if v == v]  # not NaN
        if not ratios:
            continue
        if not worst or (statistics.median(ratios) < statistics.median(worst)) == higher:
            worst = ratios
    return worst


def print_curve(curve, names):
    """One table: a line per (corral row, point), each figure over the best
    peer's; with --rounds, paired round by round (the median of the rounds'
    ratios against the peer corral compares worst with), then a second table
    of those ratios' lowest and highest."""
    peers = [p for p in compare.PEERS if p in names]
    corrals = [n for n in compare.CORRALS if n in names]
    if not peers or not corrals:
        return
    rounds = max((len(rounds_of(r)) for rows in curve.values() for r in rows.values()), default=1)
    paired = f", the median of {rounds} rounds' ratios" if rounds > 1 else ""
    print(f"\ncorral / best peer by concurrency (best of {', '.join(peers)} at the same point{paired}; "
          f"rates: higher is better, the rest: lower is better)")
    widths = [max(len(h) + 2, 11) for h, _, _ in SWEEP_FIGURES]
    heading = f"{'':14}{'clients':>9}" + "".join(f"{h:>{w}}" for (h, _, _), w in zip(SWEEP_FIGURES, widths))
    print(heading)
    spreads = []
    for n in corrals:
        for point, rows in curve.items():
            per_round = [paired_ratios(rows, n, peers, get, higher) for _, get, higher in SWEEP_FIGURES]
            values = [statistics.median(r) if r else NAN for r in per_round]
            spreads.append((n, point, per_round))
            print(f"{n:14}{point:>9}" + "".join(f"{fmt(v, '.2f'):>{w}}" for v, w in zip(values, widths)))
    if rounds > 1:
        print("\nlowest-highest of those rounds' ratios:")
        print(heading)
        for n, point, per_round in spreads:
            cells = [f"{min(r):.2f}-{max(r):.2f}" if r else "-" for r in per_round]
            print(f"{n:14}{point:>9}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    if "corral" in names and "corral-before" in names:
        print(f"\ncorral / corral-before by concurrency{paired}:")
        for point, rows in curve.items():
            values = [paired_ratios(rows, "corral", ["corral-before"], get, higher)
                      for _, get, higher in SWEEP_FIGURES]
            print(f"{'':14}{point:>9}" + "".join(
                f"{fmt(statistics.median(v) if v else NAN, '.2f'):>{w}}" for v, w in zip(values, widths)))


def plot(curve, names, png, title):
    """Request rate and CPU per request against concurrency, a line per row. Returns
    the path written, or None with a message when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: no plot: matplotlib is missing (python3 -m pip install matplotlib)")
        return None
    points = sorted(curve)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    panels = [("keepalive", "rps", "keep-alive requests/s"),
              ("close", "rps", "new connections/s (Connection: close)"),
              ("keepalive", "cpu_us_per_req", "CPU µs per keep-alive request"),
              ("close", "cpu_us_per_req", "CPU µs per new connection")]
    for ax, (run, key, label) in zip(axes.flat, panels):
        for n in names:
            ys = [curve[p][n][run][key] if n in curve[p] else NAN for p in points]
            ax.plot(points, ys, marker="o", label=n)
        ax.set_xscale("log")
        ax.set_xticks(points)
        ax.set_xticklabels([str(p) for p in points])
        ax.set_title(label, fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("concurrent clients (wrk -c)")
    axes[0][0].legend()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


# ---------------------------------------------------------------- control side

CONTROL_FRONT, CONTROL_ADMIN, CONTROL_PORT_BASE = 18120, 19280, 20000


def timed_get(port, path):
    """(milliseconds, body bytes) of one GET on a new connection to the admin port."""
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    took = (time.perf_counter() - started) * 1000
    if not data.startswith(b"HTTP/1.1 200"):
        raise Failure(f"GET {path} on the admin port answered {data[:80]!r}")
    return took, len(data.partition(b"\r\n\r\n")[2])


def own_cpu_ticks(pid):
    """utime + stime of one process, without its children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def own_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def up_count(port):
    try:
        with socket.create_connection((HOST, port), timeout=10) as s:
            s.sendall(f"GET /status HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status = json.loads(data.partition(b"\r\n\r\n")[2])
        return sum(1 for b in status.get("backends", []) if b.get("state") == "up")
    except (OSError, ValueError, Failure):
        return 0


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else NAN


def control(a, d, procs, limits):
    """corral's control side with each of a.workers demo workers; {workers: figures}."""
    print(f"control side: corral with N `corral demo-worker` workers, health checks every 1 s "
          f"(tcp), no traffic; the master's own CPU over {a.seconds * 2} s at idle, its RSS, and "
          f"{a.requests} GETs each of /status and /metrics (one at a time, new connection each)")
    table = Table([
        ("workers", 9, lambda r: r["workers"], "d"),
        ("idle cpu %", 12, lambda r: r["idle_cpu_percent"], ".2f"),
        ("rss MB", 9, lambda r: r["rss_bytes"] / 1e6, ".1f"),
        ("status p50", 12, lambda r: r["status_ms"]["p50"], ".2f"),
        ("status p99", 12, lambda r: r["status_ms"]["p99"], ".2f"),
        ("status KB", 11, lambda r: r["status_bytes"] / 1e3, ".0f"),
        ("metrics p50", 13, lambda r: r["metrics_ms"]["p50"], ".2f"),
        ("metrics p99", 13, lambda r: r["metrics_ms"]["p99"], ".2f"),
        ("metrics KB", 12, lambda r: r["metrics_bytes"] / 1e3, ".0f"),
    ])
    table.header()
    rows = {}
    for workers in a.workers:
        name = f"corral-{workers}"
        config = compare.corral_config(f"{d}/{name}.toml", CONTROL_FRONT, CONTROL_ADMIN, a.threads, f"""
[health]
interval = "1s"
[workers]
command = [{compare.toml_str(a.corral)}, "demo-worker"]
count = {workers}
port_base = {CONTROL_PORT_BASE}
stop_timeout = "2s"
""")
        pid = compare.start_corral(procs, name, a.corral, config, CONTROL_ADMIN).pid
        deadline = time.time() + 60 + workers / 2
        while up_count(CONTROL_ADMIN) < workers:
            if time.time() > deadline:
                raise Failure(f"{name}: {up_count(CONTROL_ADMIN)} of {workers} workers up after "
                              f"{60 + workers // 2} s:\n{procs.log(name)}")
            time.sleep(0.5)
        time.sleep(2)  # the start-up is over: what follows is the steady state
        tick = os.sysconf("SC_CLK_TCK")
        before, started = own_cpu_ticks(pid), time.time()
        time.sleep(a.seconds * 2)
        cpu = (own_cpu_ticks(pid) - before) / tick / (time.time() - started) * 100
        rss = own_rss(pid)
        r = {"workers": workers, "idle_cpu_percent": cpu, "rss_bytes": rss}
        for path, key in (("/status", "status"), ("/metrics", "metrics")):
            timed = [timed_get(CONTROL_ADMIN, path) for _ in range(a.requests)]
            times = [t for t, _ in timed]
            r[f"{key}_ms"] = {"p50": percentile(times, 0.5), "p99": percentile(times, 0.99),
                              "max": max(times)}
            r[f"{key}_bytes"] = timed[-1][1]
        rows[workers] = r
        table.row(name, r)
        procs.stop()  # the next count starts from nothing, on the same ports
    return rows
