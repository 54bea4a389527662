//! corral in front of software nobody here wrote, end to end (issue 17):
//!
//! - redis-server workers: clients blocked in `BLPOP` wait as long as they
//!   like, with the defaults, and take no worker down; with
//!   `timeouts.first_byte` and `health.observe`, a black hole goes down and
//!   healthy workers stay up, and when every backend is quiet at least half
//!   of them stay in rotation;
//! - a Node `http` app under `wrk` keep-alive load: with `workers.stateless`,
//!   rolling restarts, a scale 3 → 1, a `max_memory` replacement and a worker
//!   that exits by itself cost no request (without it, what remains is
//!   printed);
//! - fd mode: uvicorn and gunicorn exactly as docs/fd-mode.md runs them,
//!   `TCP_NODELAY` on the handed socket, and a graceful stop that leaves
//!   uvicorn's `accept` alone;
//! - socket.io 4 with its Redis adapter, sticky, port and fd mode, polling
//!   then websocket, through a rolling restart;
//! - with `stateless`, an upgraded connection (`101`) and an HTTP/2
//!   connection end with their worker and are never handed to another.
//!
//! The peers are installed by `scripts/test` (apt, pip, npm); run directly, a
//! test whose peer is missing fails with the command that installs it. The
//! apps and clients are files in tests/support/.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------
// Peers: are they there?

/// Fails unless `python3` can import `module` (and, when given, `tool` is
/// on the PATH), naming the pip command that installs it.
fn require_pip(module: &str, tool: Option<&str>) {
    let imports = Command::new(python())
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let on_path = tool.is_none_or(|tool| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    assert!(
        imports && on_path,
        "the Python package {module} is missing: python3 -m pip install {module} \
         (or --break-system-packages on Debian's own python3; scripts/test installs it)"
    );
}

/// Fails unless node and the npm packages of tests/support/node are there.
fn require_node_packages() {
    require("node", "nodejs");
    for package in [
        "socket.io",
        "socket.io-client",
        "@socket.io/redis-adapter",
        "redis",
    ] {
        let manifest = Path::new(&support("node"))
            .join("node_modules")
            .join(package)
            .join("package.json");
        assert!(
            manifest.exists(),
            "the npm package {package} is missing: cd tests/support/node && npm ci \
             (apt-get install -y npm first if npm is missing; scripts/test does both)"
        );
    }
}

fn require_redis() {
    require("redis-server", "redis-server");
}

// ---------------------------------------------------------------------------
// Helpers

/// Exactly `count` workers, all up, none of them one of `old`?
fn all_up_and_none_of(corral: &Corral, count: usize, old: &[u32]) -> bool {
    let workers = corral.workers();
    workers.len() == count
        && workers.iter().all(|w| {
            w["state"] == "up"
                && w["pid"]
                    .as_u64()
                    .is_some_and(|p| !old.contains(&(p as u32)))
        })
}

/// Waits until exactly `count` workers are up, none of them one of `old`,
/// and every process of `old` has exited; panics with /status and the log.
fn wait_replaced(corral: &Corral, count: usize, old: &[u32], what: &str) {
    let ok = eventually(Duration::from_secs(45), || {
        all_up_and_none_of(corral, count, old)
    });
    assert!(
        ok,
        "{what}: never {count} workers up without any of {old:?}: {}\nlog:\n{}",
        corral.status(),
        corral.log()
    );
    assert_gone(old.iter().copied(), Duration::from_secs(30), what);
}

/// Starts a rolling restart through the admin port (as `corral restart`).
fn rolling_restart(corral: &Corral) {
    let (code, body) = http(corral.admin, "POST", "/workers/restart");
    assert_eq!(code, 202, "POST /workers/restart: {body}");
}

/// Is there a line in corral's log that contains `text`?
fn log_lines_with(corral: &Corral, text: &str) -> Vec<String> {
    corral
        .log()
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_string)
        .collect()
}

/// A line-reading child process (a Node or Python client) whose stdout
/// lines arrive on a channel; killed when dropped.
struct Client {
    child: Killed,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Client {
    fn spawn(command: &mut Command) -> Client {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Client {
            child: Killed(child),
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line that `pick` accepts; panics with what came instead.
    fn line_where(&mut self, limit: Duration, pick: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pick(&line) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no expected line from the client within {limit:?}; it wrote {:?} (exit: {:?})",
                    self.seen,
                    self.child.0.try_wait()
                ),
            }
        }
    }

    fn say(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
    }
}

// ---------------------------------------------------------------------------
// RESP (redis) over a raw socket

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// The length of the first complete RESP value in `buf`, if it is complete.
fn resp_complete(buf: &[u8]) -> Option<usize> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..line_end]).ok()?;
    let after = line_end + 2;
    match buf.first()? {
        b'+' | b'-' | b':' => Some(after),
        b'$' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' => {
            let n: i64 = line.parse().ok()?;
            let mut at = after;
            for _ in 0..n.max(0) {
                at += resp_complete(&buf[at..])?;
            }
            Some(at)
        }
        _ => None,
    }
}

/// Reads one RESP reply (with whatever read timeout the stream has).
fn read_reply(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(n) = resp_complete(&buf) {
            return Ok(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&buf)),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One command on a new connection to `addr`; its reply.
fn redis_command(addr: SocketAddr, args: &[&str], wait: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(wait))?;
    stream.write_all(&resp(args))?;
    read_reply(&mut stream)
}

const REDIS_WORKER: [&str; 7] = [
    "redis-server",
    "--port",
    "{port}",
    "--save",
    "",
    "--appendonly",
    "no",
];

/// A redis-server of the test's own on a free loopback port.
fn redis_server() -> (Killed, u16) {
    require_redis();
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let answers = eventually(Duration::from_secs(10), || {
        redis_command(addr, &["PING"], Duration::from_secs(1)).is_ok_and(|r| r == "+PONG\r\n")
    });
    assert!(answers, "redis-server on {port} never answered PING");
    (Killed(child), port)
}

/// A listener that accepts every connection and never answers (it reads
/// what it is sent, until the peer closes).
fn black_hole() -> Backend<()> {
    Backend::start(|stream| {
        let mut buf = [0u8; 4096];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    })
}

// ---------------------------------------------------------------------------
// redis-server: quiet clients and passive checks

/// With the defaults, six clients blocked in `BLPOP q 0` through corral wait
/// 70 s (past the old 60 s first-byte timeout) without being cut and without
/// taking either redis-server worker down; PINGs meanwhile are answered; an
/// `LPUSH` on each worker's own port then answers every blocked client.
#[test]
fn blocked_redis_clients_are_kept_and_take_no_worker_down() {
    require_redis();
    let corral = Corral::start(&Config::new().workers(&REDIS_WORKER, 2));
    corral.wait_up(2);
    let mut blocked: Vec<TcpStream> = (0..6)
        .map(|i| {
            let mut s = TcpStream::connect(corral.front)
                .unwrap_or_else(|e| panic!("blocked client {i}: {e}"));
            s.write_all(&resp(&["BLPOP", "q", "0"])).unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let mut polls = 0;
    while started.elapsed() < Duration::from_secs(70) {
        let status = corral.status();
        let workers = corral.workers();
        assert_eq!(workers.len(), 2, "{status}");
        for w in &workers {
            let name = w["name"].as_str().unwrap();
            assert_eq!(
                w["state"],
                "up",
                "{name} left rotation after {:?} with BLPOP clients waiting: {status}\nlog:\n{}",
                started.elapsed(),
                corral.log()
            );
            let up = corral.metric(&format!("corral_backend_up{{backend=\"{name}\"}}"));
            assert_eq!(
                up,
                1.0,
                "corral_backend_up of {name} after {:?}",
                started.elapsed()
            );
        }
        let pong = redis_command(corral.front, &["PING"], Duration::from_secs(5));
        assert!(
            matches!(&pong, Ok(r) if r == "+PONG\r\n"),
            "PING through corral after {:?}: {pong:?}\nlog:\n{}",
            started.elapsed(),
            corral.log()
        );
        polls += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(polls >= 50, "only {polls} polls in 70 s");
    // Still open, nothing received.
    for (i, client) in blocked.iter_mut().enumerate() {
        client.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 64];
        match client.read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!(
                "blocked client {i} after 70 s: {other:?} (cut or answered)\nlog:\n{}",
                corral.log()
            ),
        }
        client.set_nonblocking(false).unwrap();
    }
    // Each worker's own port: six elements each, enough for every client.
    for w in corral.workers() {
        let addr: SocketAddr = w["address"].as_str().unwrap().parse().unwrap();
        let reply = redis_command(
            addr,
            &["LPUSH", "q", "x", "x", "x", "x", "x", "x"],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("LPUSH on {addr}: {e}"));
        assert!(reply.starts_with(':'), "LPUSH on {addr}: {reply:?}");
    }
    for (i, client) in blocked.iter_mut().enumerate() {
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reply = read_reply(client).unwrap_or_else(|e| panic!("blocked client {i}: {e}"));
        assert_eq!(reply, "*2\r\n$1\r\nq\r\n$1\r\nx\r\n", "blocked client {i}");
    }
}

/// PINGs through corral from `clients` threads at once; the replies (or errors).
fn ping_round(front: SocketAddr, clients: usize, wait: Duration) -> Vec<std::io::Result<String>> {
    let threads: Vec<_> = (0..clients)
        .map(|_| std::thread::spawn(move || redis_command(front, &["PING"], wait)))
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// `timeouts.first_byte = "1s"`, `health.observe`, `fall = 2`: a black hole
/// beside two healthy redis-server workers goes down; the workers never do,
/// and once the hole is down every PING is answered.
#[test]
fn with_observe_a_black_hole_goes_down_and_healthy_redis_workers_stay_up() {
    require_redis();
    let hole = black_hole();
    let config = Config::new()
        .strategy("round-robin")
        .workers(&REDIS_WORKER, 2)
        .backend("hole", hole.addr)
        .set("timeouts.first_byte", "1s")
        .set("health.observe", true)
        .set("health.fall", 2);
    let corral = Corral::start(&config);
    corral.wait_up(3);
    let started = Instant::now();
    let mut hole_down = false;
    let mut answered = 0;
    let mut timed_out = 0;
    while started.elapsed() < Duration::from_secs(30) && !hole_down {
        for reply in ping_round(corral.front, 6, Duration::from_secs(4)) {
            match reply {
                Ok(r) if r == "+PONG\r\n" => answered += 1,
                _ => timed_out += 1,
            }
        }
        for w in corral.workers() {
            assert_eq!(
                w["state"],
                "up",
                "a healthy redis-server worker left rotation: {}\nlog:\n{}",
                corral.status(),
                corral.log()
            );
        }
        hole_down = corral.backend("hole")["state"] == "down";
    }
    assert!(
        hole_down,
        "the black hole never went down in 30 s ({answered} PINGs answered, {timed_out} not): {}\nlog:\n{}",
        corral.status(),
        corral.log()
    );
    assert!(
        timed_out >= 2,
        "only {timed_out} clients met the black hole"
    );
    assert_eq!(
        corral.metric("corral_backend_up{backend=\"hole\"}"),
        0.0,
        "{}",
        corral.metrics()
    );
    // Out of rotation: every client is served (before health checks bring
    // the hole back, which they may: it accepts connections).
    for reply in ping_round(corral.front, 6, Duration::from_secs(4)) {
        let reply = reply.unwrap_or_else(|e| panic!("PING with the hole down: {e}"));
        assert_eq!(reply, "+PONG\r\n");
    }
    for w in corral.workers() {
        assert_eq!(w["state"], "up", "{}", corral.status());
    }
}

/// Every backend quiet (four black holes), `first_byte = "1s"`, `observe`:
/// many timeouts take some down, but never more than half of them.
#[test]
fn with_observe_and_every_backend_quiet_at_least_half_stay_up() {
    let holes: Vec<Backend<()>> = (0..4).map(|_| black_hole()).collect();
    let mut config = Config::new()
        .strategy("round-robin")
        .set("timeouts.first_byte", "1s")
        .set("health.observe", true)
        .set("health.fall", 2);
    for (i, hole) in holes.iter().enumerate() {
        config = config.backend(&format!("hole-{i}"), hole.addr);
    }
    let corral = Corral::start(&config);
    corral.wait_up(4);
    let started = Instant::now();
    let mut fewest_up = 4;
    let mut most_down = 0;
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(12) {
        for reply in ping_round(corral.front, 8, Duration::from_secs(4)) {
            assert!(reply.is_err(), "a black hole answered: {reply:?}");
        }
        rounds += 1;
        fewest_up = fewest_up.min(corral.backends_in("up"));
        most_down = most_down.max(corral.backends_in("down"));
        assert!(
            fewest_up >= 2,
            "{fewest_up} of 4 backends up after {:?} of timeouts: {}\nlog:\n{}",
            started.elapsed(),
            corral.status(),
            corral.log()
        );
    }
    let timeouts = corral.metric("corral_connection_errors_total{reason=\"timeout\"}");
    eprintln!(
        "every backend quiet: {rounds} rounds of 8 clients, {timeouts} timeouts, \
         at least {fewest_up} of 4 up throughout, at most {most_down} down"
    );
    assert!(timeouts >= 16.0, "only {timeouts} timeouts counted");
    assert!(
        most_down >= 1,
        "observe took no black hole down after {timeouts} timeouts: {}",
        corral.status()
    );
}

// ---------------------------------------------------------------------------
// A Node http app under wrk keep-alive load

/// What wrk reported for one run.
#[derive(Debug, Default, Clone)]
struct WrkResult {
    requests: u64,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    non_2xx: u64,
    text: String,
}

impl WrkResult {
    fn socket_errors(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }

    fn parse(text: &str) -> WrkResult {
        let mut result = WrkResult {
            text: text.to_string(),
            ..WrkResult::default()
        };
        let number = |s: &str| -> u64 { s.trim().trim_end_matches(',').parse().unwrap_or(0) };
        for line in text.lines().map(str::trim) {
            if line.contains(" requests in ") {
                result.requests = number(line.split_whitespace().next().unwrap_or("0"));
            } else if let Some(rest) = line.strip_prefix("Socket errors:") {
                // "connect A, read B, write C, timeout D"
                for part in rest.split(',') {
                    let mut words = part.split_whitespace();
                    let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let n = number(n);
                    match kind {
                        "connect" => result.connect = n,
                        "read" => result.read = n,
                        "write" => result.write = n,
                        "timeout" => result.timeout = n,
                        _ => {}
                    }
                }
            } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
                result.non_2xx = number(rest);
            }
        }
        result
    }
}

impl std::fmt::Display for WrkResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, socket errors: connect {}, read {}, write {}, timeout {}; non-2xx {}",
            self.requests, self.connect, self.read, self.write, self.timeout, self.non_2xx
        )
    }
}

/// `wrk -t2 -c64` keep-alive against `front` until stopped.
struct Wrk {
    child: Killed,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Wrk {
    fn start(front: SocketAddr) -> Wrk {
        require("wrk", "wrk");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("wrk.out");
        let file = std::fs::File::create(&out).unwrap();
        let child = Command::new("wrk")
            .args(["-t2", "-c64", "-d300s", "--timeout", "10s"])
            .arg(format!("http://{front}/"))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("wrk starts");
        Wrk {
            child: Killed(child),
            out,
            _dir: dir,
        }
    }

    /// Stops wrk (SIGINT: it prints its summary) and parses what it printed.
    fn stop(mut self) -> WrkResult {
        send_signal(self.child.0.id(), Signal::SIGINT);
        let child = &mut self.child.0;
        let exited = eventually(Duration::from_secs(20), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        assert!(exited, "wrk did not stop on SIGINT: {text}");
        let result = WrkResult::parse(&text);
        assert!(
            result.requests > 0,
            "wrk printed no summary or served nothing: {text}"
        );
        result
    }
}

/// One wrk run around `event`: load for a second first, `event` (which
/// waits until what it started is over), load for a second more.
fn under_load(front: SocketAddr, event: impl FnOnce()) -> WrkResult {
    let wrk = Wrk::start(front);
    std::thread::sleep(Duration::from_secs(1));
    event();
    std::thread::sleep(Duration::from_secs(1));
    wrk.stop()
}

/// The two wrk tests take both cores: never at the same time.
static WRK_ALONE: Mutex<()> = Mutex::new(());

/// 3 workers of tests/support/node_http_app.js, port mode, and under keep-alive
/// load one after the other: slot 2's first process exits by itself after
/// 3000 requests, 3 rolling restarts, a `max_memory` replacement (worker 0
/// told to hold 300 MiB, above 200 MiB) and a scale 3 → 1. One wrk run per
/// event; returns (event, what wrk saw).
fn node_app_through_everything(stateless: bool) -> Vec<(String, WrkResult)> {
    require("node", "nodejs");
    let _alone = WRK_ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let marks = tempfile::tempdir().unwrap();
    let env = format!(
        "{{ EXIT_AFTER_REQUESTS = \"3000\", EXIT_ONLY_ID = \"2\", MARK_DIR = \"{}\", \
         ALLOCATE_ON_SIGUSR2 = \"300\" }}",
        marks.path().display()
    );
    let mut config = Config::new()
        .strategy("round-robin")
        .workers(&["node", &support("node_http_app.js")], 3)
        .set("workers.env", Raw(&env))
        .set("workers.max_memory", "200MiB")
        .set("timeouts.drain", "2s");
    if stateless {
        config = config.set("workers.stateless", true);
    }
    let corral = Corral::start(&config);
    let none: [u32; 0] = [];
    assert!(
        eventually(Duration::from_secs(20), || all_up_and_none_of(
            &corral, 3, &none
        )),
        "3 node workers never up: {}\n{}",
        corral.status(),
        corral.log()
    );
    let mut results = Vec::new();

    let first_of_2 = corral.try_pid_of(2).unwrap();
    let run = under_load(corral.front, || {
        let exited = eventually(Duration::from_secs(30), || {
            corral.try_pid_of(2).is_some_and(|p| p != first_of_2)
                && all_up_and_none_of(&corral, 3, &[first_of_2])
        });
        assert!(
            exited,
            "worker 2 never exited by itself and came back: {}\n{}",
            corral.status(),
            corral.log()
        );
        assert_gone(
            [first_of_2],
            Duration::from_secs(10),
            "the self-exited worker",
        );
    });
    results.push(("worker exits by itself".to_string(), run));

    for round in 1..=3 {
        let run = under_load(corral.front, || {
            let before = corral.worker_pids();
            rolling_restart(&corral);
            wait_replaced(&corral, 3, &before, &format!("rolling restart {round}"));
        });
        results.push((format!("rolling restart {round}"), run));
    }

    let run = under_load(corral.front, || {
        let hog = corral.try_pid_of(0).unwrap();
        send_signal(hog, Signal::SIGUSR2);
        let replaced = eventually(Duration::from_secs(30), || {
            corral.try_pid_of(0).is_some_and(|p| p != hog) && all_up_and_none_of(&corral, 3, &[hog])
        });
        assert!(
            replaced,
            "worker 0 above max_memory was not replaced: {}\n{}",
            corral.status(),
            corral.log()
        );
        assert_gone(
            [hog],
            Duration::from_secs(20),
            "the worker above max_memory",
        );
    });
    results.push(("max_memory replacement".to_string(), run));

    let run = under_load(corral.front, || {
        let before = corral.worker_pids();
        let (code, body) = http(corral.admin, "POST", "/workers/scale?count=1");
        assert_eq!(code, 202, "{body}");
        let retired: Vec<u32> = [1, 2]
            .iter()
            .filter_map(|&slot| {
                let name = format!("worker-{slot}");
                corral
                    .workers()
                    .iter()
                    .find(|w| w["name"] == name.as_str())
                    .and_then(|w| w["pid"].as_u64())
                    .map(|p| p as u32)
            })
            .collect();
        let kept: Vec<u32> = before
            .iter()
            .copied()
            .filter(|p| !retired.contains(p))
            .collect();
        let scaled = eventually(Duration::from_secs(30), || {
            let w = corral.workers();
            w.len() == 1 && w[0]["state"] == "up"
        });
        assert!(
            scaled,
            "scale 3 -> 1 never settled: {}\n{}",
            corral.status(),
            corral.log()
        );
        assert_gone(
            retired.iter().copied(),
            Duration::from_secs(30),
            "a scaled-away worker",
        );
        let _ = kept;
    });
    results.push(("scale 3 -> 1".to_string(), run));
    results
}

/// With `workers.stateless`, a kept-alive client sees no error: wrk reports
/// no socket error and no failed status across everything that replaces or
/// removes a worker.
#[test]
fn stateless_node_keep_alive_clients_see_no_error_through_restarts_scale_in_max_memory_and_self_exit(
) {
    let results = node_app_through_everything(true);
    let mut failures = Vec::new();
    for (event, run) in &results {
        eprintln!("stateless, {event}: {run}");
        if run.socket_errors() > 0 || run.non_2xx > 0 {
            failures.push(format!("{event}: {run}\n{}", run.text));
        }
        assert!(
            run.requests >= 500,
            "{event}: too little load to tell: {run}"
        );
    }
    assert!(
        failures.is_empty(),
        "keep-alive requests failed with workers.stateless:\n{}",
        failures.join("\n")
    );
}

/// The same run without `stateless`: what a kept-alive client still sees
/// (the comparison docs/workers.md quotes). It only has to complete.
#[test]
fn without_stateless_the_same_node_run_shows_what_remains() {
    let results = node_app_through_everything(false);
    for (event, run) in &results {
        eprintln!(
            "without stateless, {event}: {} failed reads, {} other socket errors, {} non-2xx, of {} requests",
            run.read,
            run.connect + run.write + run.timeout,
            run.non_2xx,
            run.requests
        );
    }
    assert_eq!(results.len(), 6);
}

// ---------------------------------------------------------------------------
// fd mode: uvicorn and gunicorn as the docs write them, TCP_NODELAY

/// `count` workers running `command` in fd mode, round-robin, started in
/// tests/support (where the apps are).
fn fd_workers(command: &[&str], count: usize) -> Config {
    Config::new()
        .strategy("round-robin")
        .set("workers.command", command)
        .set("workers.count", count)
        .set("workers.listen", "fd")
        .set("workers.cwd", support("").as_str())
}

/// One `GET /` on a new connection; the body of a 200.
fn get_body(front: SocketAddr, source: Option<IpAddr>) -> Result<String, String> {
    let attempt = || -> std::io::Result<(u16, String)> {
        let mut stream = connect_from(front, source)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        exchange(&mut stream, front, "GET", "/", &[])
    };
    match attempt() {
        Ok((200, body)) => Ok(body),
        Ok((code, body)) => Err(format!("status {code}: {body}")),
        Err(e) => Err(e.to_string()),
    }
}

/// An fd-mode corral running 2 workers of `command`, both up.
fn fd_pair(command: &[&str], what: &str) -> Corral {
    let corral = Corral::start(&fd_workers(command, 2));
    let none: [u32; 0] = [];
    assert!(
        eventually(Duration::from_secs(30), || all_up_and_none_of(
            &corral, 2, &none
        )),
        "{what} workers never up in fd mode: {}\n{}",
        corral.status(),
        corral.log()
    );
    corral
}

/// `GET /` through `corral` until both workers answered and at least
/// `at_least` requests were made; `check` judges each body and names the
/// worker it came from. A slot enters the kernel's program a tick after it
/// is up, hence the repeats.
fn from_both_workers(corral: &Corral, at_least: usize, mut check: impl FnMut(&str) -> String) {
    let mut slots = BTreeSet::new();
    let mut requests = 0;
    let both = eventually(Duration::from_secs(10), || {
        requests += 1;
        let body = get_body(corral.front, None)
            .unwrap_or_else(|e| panic!("request {requests}: {e}\n{}", corral.log()));
        slots.insert(check(&body));
        slots.len() == 2 && requests >= at_least
    });
    assert!(
        both,
        "{requests} connections did not reach both workers: {slots:?}"
    );
}

/// Both workers of an fd-mode corral running `command` answer `GET /` with
/// a body naming `server`.
fn serves_in_fd_mode(command: &[&str], server: &str) {
    let corral = fd_pair(command, server);
    from_both_workers(&corral, 20, |body| {
        assert!(body.contains(&format!("server={server}")), "{body:?}");
        worker_of(body)
    });
}

/// `command = ["uvicorn", "app:app", "--fd", "3"]`, as docs/fd-mode.md.
#[test]
fn uvicorn_with_fd_3_serves_in_fd_mode() {
    require_pip("uvicorn", Some("uvicorn"));
    serves_in_fd_mode(&["uvicorn", "asgi_app:app", "--fd", "3"], "uvicorn");
}

/// `command = ["gunicorn", "app:app"]`, as docs/fd-mode.md: gunicorn takes
/// `LISTEN_FDS` itself.
#[test]
fn gunicorn_serves_in_fd_mode() {
    require_pip("gunicorn", Some("gunicorn"));
    serves_in_fd_mode(&["gunicorn", "wsgi_app:app"], "gunicorn");
}

/// A graceful stop in fd mode does not make uvicorn's `accept` fail under
/// it (the shared socket is not shut down while workers still accept): no
/// `OSError: [Errno 22] Invalid argument` and no traceback in the log, and
/// corral exits 0.
#[test]
fn a_graceful_stop_in_fd_mode_leaves_uvicorns_accept_alone() {
    require_pip("uvicorn", Some("uvicorn"));
    let mut corral = Corral::start(&fd_workers(&["uvicorn", "asgi_app:app", "--fd", "3"], 2));
    let none: [u32; 0] = [];
    assert!(
        eventually(Duration::from_secs(30), || all_up_and_none_of(
            &corral, 2, &none
        )),
        "{}\n{}",
        corral.status(),
        corral.log()
    );
    let load = Load::start(corral.front, 4);
    assert!(
        load.serves_more(200),
        "no load through uvicorn: {}",
        corral.log()
    );
    corral.signal(Signal::SIGTERM);
    let code = corral.wait_exit(Duration::from_secs(60));
    let _ = load.finish();
    let log = corral.log();
    assert_eq!(code, Some(0), "{log}");
    for bad in ["Errno 22", "Invalid argument", "Traceback"] {
        assert!(
            !log.contains(bad),
            "uvicorn's accept failed under a graceful stop ({bad}):\n{log}"
        );
    }
}

/// The socket a worker is handed, and every connection it accepts from it,
/// carry `TCP_NODELAY` (the worker sets nothing itself).
#[test]
fn fd_mode_sockets_and_accepted_connections_have_tcp_nodelay() {
    let corral = fd_pair(&[python(), &support("nodelay_worker.py")], "nodelay");
    from_both_workers(&corral, 1, |body| {
        let facts: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(
            facts["fd3_nodelay"], true,
            "fd 3 without TCP_NODELAY: {facts}"
        );
        assert_eq!(
            facts["accepted_nodelay"], true,
            "an accepted connection without TCP_NODELAY: {facts}"
        );
        facts["worker"].to_string()
    });
}

// ---------------------------------------------------------------------------
// socket.io 4 with the Redis adapter, sticky

/// 16 socket.io clients (each from its own address) on 4 sticky workers,
/// polling then websocket; a rolling restart once all are upgraded. No
/// handshake error, no "Session ID unknown", every client back on the worker
/// slot it started on, and a broadcast through redis reaches every client.
fn socketio_through_a_rolling_restart(fd: bool) {
    require_node_packages();
    let (_redis, redis_port) = redis_server();
    let app = support("socketio_app.js");
    let env = format!("{{ REDIS_PORT = \"{redis_port}\" }}");
    let config = if fd {
        Config::new()
            .set("workers.command", &["node", app.as_str()])
            .set("workers.count", 4)
            .set("workers.listen", "fd")
    } else {
        Config::new().workers(&["node", &app], 4)
    };
    let config = config
        .strategy("sticky")
        .set("workers.env", Raw(&env))
        .set("timeouts.drain", "5s");
    let corral = Corral::start(&config);
    let none: [u32; 0] = [];
    assert!(
        eventually(Duration::from_secs(30), || all_up_and_none_of(
            &corral, 4, &none
        )),
        "socket.io workers never up: {}\n{}",
        corral.status(),
        corral.log()
    );
    let clients = 16;
    let mut client = Client::spawn(
        Command::new("node")
            .arg(support("socketio_client.js"))
            .arg(format!("http://{}", corral.front))
            .arg(clients.to_string()),
    );
    client.line_where(Duration::from_secs(30), |l| l == "ready");
    std::thread::sleep(Duration::from_secs(1));
    let before = corral.worker_pids();
    rolling_restart(&corral);
    wait_replaced(&corral, 4, &before, "the rolling restart");
    std::thread::sleep(Duration::from_secs(2));
    client.say("finish");
    let line = client.line_where(Duration::from_secs(40), |l| l.starts_with('{'));
    let report: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let mode = if fd { "fd" } else { "port" };
    eprintln!("socket.io, {mode} mode: {report}");
    let log = corral.log();
    assert_eq!(
        report["connect_errors"],
        serde_json::json!([]),
        "handshake errors: {report}\n{log}"
    );
    assert_eq!(report["session_unknown"], 0, "{report}\n{log}");
    assert!(
        !log.contains("Session ID unknown"),
        "a worker saw an unknown session:\n{log}"
    );
    assert_eq!(report["connected"], clients, "{report}");
    assert_eq!(
        report["upgraded"], clients,
        "not all on websocket again: {report}"
    );
    let seen = report["workers_seen"].as_array().unwrap();
    assert_eq!(seen.len(), clients, "{report}");
    let mut slots = BTreeSet::new();
    for (i, workers) in seen.iter().enumerate() {
        let workers = workers.as_array().unwrap();
        assert_eq!(
            workers.len(),
            1,
            "client {i} was served by workers {workers:?} (not sticky across the restart): {report}"
        );
        slots.insert(workers[0].to_string());
    }
    assert!(
        slots.len() >= 2,
        "16 client addresses all on one worker {slots:?}: sticky does not tell them apart"
    );
    assert!(
        report["reconnections"].as_u64().unwrap_or(0) >= clients as u64,
        "the restart did not reconnect every client: {report}"
    );
    assert_eq!(
        report["shout_received"], clients,
        "a broadcast through the Redis adapter missed clients: {report}"
    );
}

#[test]
fn socketio_with_redis_adapter_sticky_port_mode_through_a_rolling_restart() {
    socketio_through_a_rolling_restart(false);
}

#[test]
fn socketio_with_redis_adapter_sticky_fd_mode_through_a_rolling_restart() {
    socketio_through_a_rolling_restart(true);
}

// ---------------------------------------------------------------------------
// stateless: connections that are not plain HTTP/1.x stay with their worker

/// How an upgraded (101) echo connection went.
#[derive(Debug)]
struct Upgraded {
    greeting: String,
    echoed: usize,
    ended: String,
}

/// Upgrades a connection through `front` (`Upgrade: echo`), then sends a
/// numbered line every 50 ms and reads each echo back, until the connection
/// ends or 60 s pass. Sends `ready` on `ready` once the first echo came.
fn upgraded_echo(front: SocketAddr, ready: std::sync::mpsc::Sender<()>) -> Upgraded {
    let mut stream = TcpStream::connect(front).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"GET /echo HTTP/1.1\r\nHost: corral\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "closed in the head: {head:?}"
        );
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head:?}");
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    let mut echoed = 0;
    let started = Instant::now();
    let ended = loop {
        if started.elapsed() > Duration::from_secs(60) {
            break "still open after 60 s".to_string();
        }
        let ping = format!("ping {echoed}\n");
        if let Err(e) = stream.write_all(ping.as_bytes()) {
            break format!("write: {e}");
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => break "eof".to_string(),
            Ok(_) if line == ping => {
                echoed += 1;
                if echoed == 1 {
                    let _ = ready.send(());
                }
            }
            Ok(_) => break format!("not the echo of {ping:?}: {line:?}"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset".to_string(),
            Err(e) => break format!("read: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Upgraded {
        greeting: greeting.trim().to_string(),
        echoed,
        ended,
    }
}

/// With `stateless = true`, a WebSocket-like upgraded connection (the worker
/// answered 101) and an HTTP/2 connection (h2c, prior knowledge) through a
/// rolling restart end when their worker closes them on SIGTERM: the
/// clients see the close (EOF, or GOAWAY then EOF), every answer on each
/// came from one worker, and no worker ever got the middle of another's
/// stream (tests/support/stream_worker.py says FOREIGN if it does).
#[test]
fn stateless_never_moves_upgraded_or_http2_connections() {
    require_pip("h2", None);
    let config = Config::new()
        .strategy("round-robin")
        .workers(&[python(), &support("stream_worker.py")], 2)
        .set("workers.stateless", true);
    let corral = Corral::start(&config);
    let none: [u32; 0] = [];
    assert!(
        eventually(Duration::from_secs(20), || all_up_and_none_of(
            &corral, 2, &none
        )),
        "{}\n{}",
        corral.status(),
        corral.log()
    );
    // A plain request works (and the worker is what we think).
    let body = get_body(corral.front, None).expect("GET / through corral");
    assert!(body.starts_with("worker="), "{body:?}");

    let (ready_tx, ready_rx) = channel();
    let front = corral.front;
    let echo = std::thread::spawn(move || upgraded_echo(front, ready_tx));
    let mut h2 = Client::spawn(
        Command::new(python())
            .arg(support("h2_client.py"))
            .arg(front.ip().to_string())
            .arg(front.port().to_string())
            .args(["60", "0.05"]),
    );
    h2.line_where(Duration::from_secs(15), |l| l == "ready");
    ready_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the upgraded connection never echoed");

    let before = corral.worker_pids();
    rolling_restart(&corral);
    wait_replaced(&corral, 2, &before, "the rolling restart");

    let echo = echo.join().unwrap();
    let line = h2.line_where(Duration::from_secs(30), |l| l.starts_with('{'));
    let h2_report: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let log = corral.log();
    eprintln!("upgraded: {echo:?}\nh2: {h2_report}");
    let foreign = log_lines_with(&corral, "FOREIGN");
    assert!(
        foreign.is_empty(),
        "a worker was handed the middle of another worker's stream:\n{}\n\nlog:\n{log}",
        foreign.join("\n")
    );
    assert!(echo.echoed >= 1, "{echo:?}");
    assert!(
        echo.ended == "eof" || echo.ended == "reset",
        "the upgraded connection did not end with its worker: {echo:?}\n{log}"
    );
    let echo_pid: u32 = echo
        .greeting
        .rsplit("pid=")
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("greeting {:?}", echo.greeting));
    assert!(
        before.contains(&echo_pid),
        "the upgraded connection was on {echo_pid}, not an old worker {before:?}"
    );
    let ended = h2_report["ended"].as_str().unwrap_or("");
    assert!(
        ended == "goaway" || ended == "eof" || ended == "reset",
        "the HTTP/2 connection did not end with its worker: {h2_report}\n{log}"
    );
    assert_eq!(
        h2_report["bodies"].as_array().map(Vec::len),
        Some(1),
        "HTTP/2 answers from more than one worker: {h2_report}"
    );
    assert_eq!(h2_report["unanswered"], 0, "{h2_report}");
    assert!(
        h2_report["responses"].as_u64().unwrap_or(0) >= 1,
        "{h2_report}"
    );
    // New connections of both kinds work on the new workers.
    let body = get_body(corral.front, None).expect("GET / after the restart");
    let pid: u32 = body.trim().rsplit("pid=").next().unwrap().parse().unwrap();
    assert!(
        !before.contains(&pid),
        "{body} from an old worker {before:?}"
    );
}
