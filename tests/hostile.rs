//! Staying up against a hostile world, end to end: worker trees that try to
//! outlive corral, a backend that swallows clients, a log reader that never
//! reads, a shortage of file descriptors, abuse of the admin port, a worker
//! frozen by SIGSTOP, a storm of restart requests, and a PROXY header with
//! bytes that are not text.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// The corral binary these tests run.
const BINARY: &str = CORRAL;

/// Runs `corral run` on `config` like [`Corral::start`], with no standard
/// input, after `customize` has had its say on the command (standard error,
/// limits).
fn launch(config: &Config, customize: impl FnOnce(&mut Command)) -> Corral {
    Corral::start_customized(config, |command| {
        command.stdin(Stdio::null());
        customize(command);
    })
}

fn start(config: &Config) -> Corral {
    launch(config, |_| {})
}

/// A number no other test run uses, to tag the processes a test starts.
fn unique_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:06}", (std::process::id() ^ nanos) % 1_000_000)
}

/// Every live process: (pid, parent pid, command line with spaces).
fn processes() -> Vec<(u32, u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| alive(pid))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            Some((pid, ppid, cmdline))
        })
        .collect()
}

/// Live processes whose command line contains `text`.
fn processes_with(text: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, _, cmdline)| cmdline.contains(text))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Every live descendant of `root`.
fn descendants(root: u32) -> Vec<u32> {
    let table = processes();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            table
                .iter()
                .filter(|(_, ppid, _)| *ppid == parent)
                .map(|(pid, _, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Kills, when dropped, every process whose command line holds the tag: a
/// failed test leaves no orphan behind.
struct KillTagged(String);

impl Drop for KillTagged {
    fn drop(&mut self) {
        for pid in processes_with(&self.0) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// One request through the front end; true if a demo worker or a stock
/// backend answered it with 200.
fn served_http(front: SocketAddr) -> bool {
    get_from(front, None).is_ok()
}

#[test]
fn after_sigkill_of_corral_no_process_of_any_worker_tree_survives() {
    require("python3", "python3");
    require("setsid", "util-linux");
    let tag = unique_tag();
    let (detached, plain) = (format!("sleep 1001{tag}"), format!("sleep 1002{tag}"));
    // Each worker leaves a child in a session of its own and one in its
    // group, then becomes the echo server.
    let script = format!(
        "setsid {detached} & {plain} & exec python3 {}",
        support("echo.py")
    );
    let config = Config::new()
        .strategy("round-robin")
        .workers(&["sh", "-c", &script], 2);
    let _cleanup = KillTagged(tag.clone());
    let mut corral = start(&config);
    corral.wait_up(2);
    let sleepers = |corral_pid: Option<u32>| -> Vec<u32> {
        let mut pids = processes_with(&detached);
        pids.extend(processes_with(&plain));
        if let Some(pid) = corral_pid {
            pids.extend(descendants(pid));
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    };
    assert!(
        eventually(Duration::from_secs(10), || {
            processes_with(&detached).len() >= 2 && processes_with(&plain).len() >= 2
        }),
        "the workers' sleepers never showed up: {:?}",
        processes()
            .iter()
            .filter(|p| p.2.contains(&tag))
            .collect::<Vec<_>>()
    );
    let tree = sleepers(Some(corral.pid()));
    let workers = corral.worker_pids();
    assert_eq!(workers.len(), 2);
    assert!(
        workers.iter().all(|w| tree.contains(w)),
        "workers {workers:?} are not below corral: {tree:?}"
    );

    corral.signal(Signal::SIGKILL);
    corral.wait_exit(Duration::from_secs(5));
    assert_gone(
        tree.clone(),
        Duration::from_secs(5),
        "a process of a worker's tree outlived corral",
    );
    assert!(
        sleepers(None).is_empty(),
        "sleepers outlived corral: {:?}",
        sleepers(None)
    );

    // A new corral on the same config finds its ports free.
    let again = start(&config);
    again.wait_up(2);
    assert!(served_echo(again.front));
}

/// One echo round trip through the front end.
fn served_echo(front: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&front, Duration::from_secs(5)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 4];
    stream.write_all(b"ping").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

/// A backend that accepts every connection and never answers or closes it;
/// it keeps them to see what corral does with them.
struct BlackHole {
    addr: SocketAddr,
    held: Arc<Mutex<Vec<Held>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A connection the black hole holds: what it was sent, and whether the
/// other side has closed it.
struct Held {
    stream: TcpStream,
    received: usize,
    closed: bool,
}

impl BlackHole {
    fn start() -> BlackHole {
        let listener: TcpListener = listen_on_free_port();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (held, stop) = (Arc::clone(&held), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(true).unwrap();
                            held.lock().unwrap().push(Held {
                                stream,
                                received: 0,
                                closed: false,
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        BlackHole {
            addr,
            held,
            stop,
            thread: Some(thread),
        }
    }

    /// (connections that were sent bytes, of which closed by the peer).
    fn clients(&self) -> (usize, usize) {
        let mut held = self.held.lock().unwrap();
        let mut buf = [0u8; 4096];
        for h in held.iter_mut().filter(|h| !h.closed) {
            loop {
                match h.stream.read(&mut buf) {
                    Ok(0) => {
                        h.closed = true;
                        break;
                    }
                    Ok(n) => h.received += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        h.closed = true;
                        break;
                    }
                }
            }
        }
        let sent: Vec<&Held> = held.iter().filter(|h| h.received > 0).collect();
        (sent.len(), sent.iter().filter(|h| h.closed).count())
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let joined = thread.join();
            // Its panic fails the test, unless the test is failing already.
            if !std::thread::panicking() {
                joined.expect("the black hole's accept thread panicked");
            }
        }
    }
}

#[test]
fn a_black_hole_backend_costs_first_byte_then_is_down_for_timeouts() {
    let hole = BlackHole::start();
    let config = Config::new()
        .strategy("round-robin")
        .demo_workers(1)
        .backend("hole", hole.addr)
        .set("timeouts.first_byte", "1s")
        .set("health.observe", true)
        .set("listener.max_connections", 20)
        .set("health.fall", 2)
        // The hole passes TCP checks: keep it out once it is down.
        .set("health.rise", 1000)
        .connection_logs(true);
    let corral = start(&config);
    corral.wait_up(2);
    let front = corral.front;

    // Clients that wait half a second for an answer, then give up and close.
    let impatient = move |count: usize| -> (usize, usize) {
        let (mut answered, mut gave_up) = (0, 0);
        for _ in 0..count {
            let mut s = TcpStream::connect_timeout(&front, Duration::from_secs(5)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(n) if n > 0 => answered += 1,
                _ => gave_up += 1,
            }
        }
        (answered, gave_up)
    };
    let threads: Vec<_> = (0..5)
        .map(|_| std::thread::spawn(move || impatient(8)))
        .collect();
    let (answered, gave_up) = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    eprintln!("impatient clients: {answered} answered, {gave_up} gave up");
    assert!(gave_up >= 2, "no client sat on the black hole");

    // corral closed every backend connection that carried a client.
    let mut seen = (0, 0);
    let all_closed = eventually(Duration::from_secs(15), || {
        seen = hole.clients();
        seen.0 > 0 && seen.0 == seen.1
    });
    assert!(
        all_closed,
        "corral still holds {} of {} connections to the black hole\n{}",
        seen.0 - seen.1,
        seen.0,
        corral.log()
    );
    assert!(
        corral.metric("corral_connection_errors_total{reason=\"timeout\"}") >= 2.0,
        "{}",
        corral.metrics()
    );
    let status = corral.backend("hole");
    assert_eq!(status["state"], "down", "{status}\n{}", corral.log());
    assert_eq!(status["reason"], "timeouts", "{status}");
    assert!(
        corral
            .log()
            .contains("backend is down: it accepted clients and answered nothing"),
        "{}",
        corral.log()
    );

    // New clients all go to the healthy worker.
    for i in 0..10 {
        let body = get_from(front, None)
            .unwrap_or_else(|e| panic!("client {i} not served: {e}\n{}", corral.log()));
        assert_eq!(worker_of(&body), "worker=0", "{body}");
    }
}

#[test]
fn a_log_reader_that_never_reads_slows_no_client() {
    // Workers that print 200,000 lines before they listen, and one log
    // line per connection: far more than the 64 KiB a pipe holds. (Lines
    // come mostly from the workers, so the test needs a few thousand
    // connections, not tens of thousands that would fill the ephemeral
    // port range with TIME_WAIT for the tests after it.)
    let chatty = "yes 'a chatty worker line' | head -n 200000; exec \"$0\" demo-worker";
    let config = Config::new()
        .strategy("round-robin")
        .workers(&["sh", "-c", chatty, CORRAL], 2)
        .connection_logs(true);
    // corral's standard error is a pipe nobody reads; the read end stays
    // open inside the Child as long as the Corral lives.
    let corral = launch(&config, |command| {
        command.stderr(Stdio::piped());
    });
    // A corral blocked on its log never sees its workers get ready.
    corral.wait_up(2);
    let dropped = || {
        corral
            .try_metric("corral_log_lines_dropped_total")
            .unwrap_or(0.0)
    };
    assert!(
        eventually(Duration::from_secs(30), || dropped() > 0.0),
        "no log line was dropped"
    );
    // Clients on new connections, one log line each; a client stops at its
    // first failure (against a blocked corral there is no use piling up more).
    let load = Load::start_until_error(corral.front, 4);
    let went_on = eventually(Duration::from_secs(60), || {
        load.served() >= 3000 || load.all_stopped()
    });
    let (served, _, errors) = load.finish();
    eprintln!(
        "{served} requests served, {} failed, {} log lines dropped",
        errors.len(),
        dropped()
    );
    assert!(
        errors.is_empty(),
        "{} requests failed after {served} served: {:?}",
        errors.len(),
        errors
    );
    assert!(
        went_on && served >= 3000,
        "clients stalled behind the log: {served} served"
    );
    assert!(corral.child.as_ref().unwrap().stderr.is_some());
}

/// An HTTP/1.1 connection kept alive, for asking the admin port while
/// corral can accept no new connection.
struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl KeepAlive {
    fn open(addr: SocketAddr) -> KeepAlive {
        let writer = TcpStream::connect(addr).unwrap();
        writer
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        KeepAlive {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
        }
    }

    fn get(&mut self, path: &str) -> (u16, String) {
        // The admin port's own address as Host: on loopback it refuses a
        // name (DNS rebinding).
        let host = self.writer.peer_addr().unwrap();
        write!(self.writer, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
        let mut status = String::new();
        self.reader.read_line(&mut status).unwrap();
        let code = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {status:?}"));
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).unwrap();
        (code, String::from_utf8_lossy(&body).to_string())
    }
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn running_out_of_file_descriptors_is_counted_and_marks_no_backend_down() {
    const LIMIT: u64 = 128;
    let config = Config::new()
        .strategy("round-robin")
        .demo_workers(3)
        .set("health.interval", "200ms")
        .set("health.fall", 2);
    let corral = launch(&config, |command| {
        let limit = libc::rlimit {
            rlim_cur: LIMIT,
            rlim_max: LIMIT,
        };
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    });
    corral.wait_up(3);
    let mut admin = KeepAlive::open(corral.admin);
    assert_eq!(admin.get("/healthz").0, 200);
    let in_use = open_fds(corral.pid());
    eprintln!("corral uses {in_use} of {LIMIT} file descriptors");

    // Idle clients, two descriptors each inside corral, until it has none.
    let mut idle = Vec::new();
    for _ in 0..(LIMIT as usize) {
        let Ok(mut s) = TcpStream::connect_timeout(&corral.front, Duration::from_secs(2)) else {
            break;
        };
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: corral\r\n");
        idle.push(s);
    }
    let resources = "corral_connection_errors_total{reason=\"resources\"}";
    assert!(
        eventually(Duration::from_secs(10), || {
            try_metric_value(&admin.get("/metrics").1, resources).unwrap_or(0.0) > 0.0
        }),
        "no shortage was counted with {} idle clients",
        idle.len()
    );
    eprintln!(
        "{} idle clients, corral has {} fds",
        idle.len(),
        open_fds(corral.pid())
    );

    // A request now fails: corral has no descriptor for it.
    let mut s = TcpStream::connect_timeout(&corral.front, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "served during the shortage"
    );
    drop(s);

    // Health checks meet the shortage too; nothing is marked down.
    std::thread::sleep(Duration::from_secs(2));
    let (code, status) = admin.get("/status");
    assert_eq!(code, 200, "{status}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let states: Vec<&serde_json::Value> = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["state"])
        .collect();
    assert!(states.iter().all(|s| *s == "up"), "{status}");
    let metrics = admin.get("/metrics").1;
    assert!(metric_value(&metrics, resources) > 0.0, "{metrics}");
    for i in 0..3 {
        assert_eq!(
            metric_value(
                &metrics,
                &format!("corral_backend_up{{backend=\"worker-{i}\"}}")
            ),
            1.0
        );
    }

    // The shortage ends; corral serves again by itself.
    drop(idle);
    assert!(
        eventually(Duration::from_secs(20), || served_http(corral.front)),
        "corral never recovered\n{}",
        corral.log()
    );
    for _ in 0..10 {
        assert!(served_http(corral.front), "{}", corral.log());
    }
    assert_eq!(corral.backends_in("up"), 3, "{}", corral.status());
    assert!(
        !corral.log().contains("backend is down"),
        "{}",
        corral.log()
    );
}

#[test]
fn the_admin_port_bounds_slow_and_oversized_requests() {
    let backend = Backend::http_status("200 OK");
    let corral = start(&Config::new().backend("app", backend.addr));
    let admin = corral.admin;

    // One byte of a request head, then nothing: closed by the header timeout.
    let mut slow = TcpStream::connect(admin).unwrap();
    slow.write_all(b"G").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    match slow.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("a one-byte request head was never closed: {e}"),
    }

    // A request head larger than the admin port's buffer: 431. (A 200 KiB
    // head still fits: hyper's default buffer is about 400 KiB.)
    let mut big = TcpStream::connect(admin).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "GET /status HTTP/1.1\r\nHost: corral\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    // Written beside the reader: corral answers before it has it all.
    let writer = {
        let mut big = big.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = big.write_all(head.as_bytes());
        })
    };
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = big.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    writer.join().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "a 1 MiB head got {:?}",
        answer.lines().next()
    );

    // 300 idle admin connections; the front end serves as before.
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok())
        .collect();
    eprintln!("{} idle admin connections", idle.len());
    assert!(idle.len() >= 256, "only {} admin connections", idle.len());
    for i in 0..20 {
        if let Err(e) = get_from(corral.front, None) {
            panic!("request {i} failed with the admin port full: {e}");
        }
    }
    drop(idle);
    assert!(eventually(Duration::from_secs(20), || {
        matches!(try_http(admin, "GET", "/healthz"), Ok((200, _)))
    }));
}

fn loopback(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, a, b))
}

#[test]
fn a_stopped_worker_is_down_as_stalled_and_its_sticky_clients_move() {
    let config = Config::new()
        .strategy("sticky")
        .demo_workers(2)
        .set("health.interval", "500ms")
        .set("health.fall", 2);
    let corral = start(&config);
    corral.wait_up(2);
    let clients: Vec<IpAddr> = (1..=30).map(|i| loopback(5, i)).collect();
    let placed: Vec<String> = clients
        .iter()
        .map(|&c| worker_of(&get_from(corral.front, Some(c)).expect("request")))
        .collect();
    let victim = placed[0].clone();
    let slot: usize = victim.trim_start_matches("worker=").parse().unwrap();
    let name = format!("worker-{slot}");
    let pid = corral.backend(&name)["pid"].as_u64().unwrap() as u32;

    let resume = Resume(pid);
    send_signal(pid, Signal::SIGSTOP);
    let stalled = eventually(Duration::from_secs(15), || {
        let b = corral.backend(&name);
        b["state"] == "down" && b["reason"] == "stalled"
    });
    assert!(
        stalled,
        "the stopped worker is {}\n{}",
        corral.backend(&name),
        corral.log()
    );
    assert_eq!(
        corral.metric(&format!("corral_backend_up{{backend=\"{name}\"}}")),
        0.0
    );
    // Its clients are served by the other worker.
    for (i, (&client, worker)) in clients.iter().zip(&placed).enumerate() {
        let body = get_from(corral.front, Some(client))
            .unwrap_or_else(|e| panic!("client {i} ({client}) not served: {e}"));
        if *worker == victim {
            assert_ne!(
                worker_of(&body),
                victim,
                "client {i} still on the stopped worker"
            );
        }
    }

    drop(resume);
    assert!(
        eventually(Duration::from_secs(20), || corral.backend(&name)["state"]
            == "up"),
        "the resumed worker never came back: {}",
        corral.backend(&name)
    );
    assert_eq!(corral.backend(&name)["pid"], pid);
}

#[test]
fn a_storm_of_restart_requests_is_one_rolling_restart() {
    // Workers that take a second to start make the restart long enough for
    // the whole storm to arrive while it runs.
    let command = format!("sleep 1; exec {BINARY} demo-worker");
    let config = Config::new()
        .strategy("round-robin")
        .workers(&["sh", "-c", &command], 2);
    let corral = start(&config);
    corral.wait_up(2);
    let before = corral.worker_pids();
    assert_eq!(before.len(), 2);

    let answers: Vec<(u16, String)> = (0..50)
        .map(|_| http(corral.admin, "POST", "/workers/restart"))
        .collect();
    for (i, (code, body)) in answers.iter().enumerate() {
        assert_eq!(*code, 202, "request {i}: {body}");
        let expected = if i == 0 { "started" } else { "merged" };
        assert!(body.contains(expected), "request {i}: {body}");
    }
    corral.wait_log("rolling restart finished", Duration::from_secs(60));
    // Long enough for a second rollout to have begun, were one queued.
    std::thread::sleep(Duration::from_secs(3));
    let log = corral.log();
    let started = log.matches("rolling restart started").count();
    assert_eq!(started, 1, "{log}");
    for slot in 0..2 {
        let replaced = log
            .lines()
            .filter(|l| l.contains("worker replaced") && l.contains(&format!("worker={slot}")))
            .count();
        assert_eq!(replaced, 1, "slot {slot}\n{log}");
    }
    let after = corral.worker_pids();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} -> {after:?}"
    );
    assert_eq!(corral.backends_in("up"), 2);
}

#[test]
fn a_proxy_v1_unknown_header_with_bytes_that_are_not_text_is_served() {
    let backend = Backend::http_status("200 OK");
    let corral = start(
        &Config::new()
            .set("listener.proxy_protocol", "v1")
            .backend("app", backend.addr),
    );
    let mut s = TcpStream::connect(corral.front).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PROXY UNKNOWN \xff\xfe\x80 \xc3\x28 junk\r\n")
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer:?}\n{}",
        corral.log()
    );
    assert_eq!(
        corral.metric("corral_connection_errors_total{reason=\"proxy_protocol\"}"),
        0.0
    );
}
