//! End-to-end tests of the foundation: the real binary, real workers, real
//! sockets on loopback.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

#[test]
fn round_robin_spreads_new_connections_evenly() {
    let corral = Corral::start(&Config::new().strategy("round-robin").demo_workers(3));
    corral.wait_up(3);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        let body = get_from(corral.front, None).expect("request through corral");
        *seen.entry(worker_of(&body)).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (worker, n) in &seen {
        assert_eq!(*n, 20, "{worker} got {n} of 60: {seen:?}");
    }
    assert_eq!(corral.metric("corral_connections_accepted_total"), 60.0);
    let per_backend: f64 = (0..3)
        .map(|i| {
            corral.metric(&format!(
                "corral_connections_total{{backend=\"worker-{i}\"}}"
            ))
        })
        .sum();
    assert_eq!(per_backend, 60.0);
}

#[test]
fn sixty_four_mib_echo_is_byte_identical_with_half_close() {
    let corral = Corral::start(&Config::new().strategy("round-robin").echo_workers(1));
    corral.wait_up(1);
    let mut payload = vec![0u8; 64 << 20];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for chunk in payload.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut stream = TcpStream::connect(corral.front).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        // Half-close: the echo worker sees EOF only if corral passes it on.
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut received = Vec::with_capacity(payload.len());
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.read_to_end(&mut received).unwrap();
    sender.join().unwrap();
    assert_eq!(received.len(), payload.len());
    assert!(received == payload, "echoed bytes differ");
    assert!(eventually(Duration::from_secs(5), || {
        corral.metric("corral_bytes_received_total{backend=\"worker-0\"}") == (64 << 20) as f64
    }));
    assert_eq!(
        corral.metric("corral_bytes_sent_total{backend=\"worker-0\"}"),
        (64 << 20) as f64
    );
}

fn read_all(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[test]
fn refused_static_backend_costs_the_client_nothing() {
    let alive = Backend::reply(b"alive");
    let dead = format!("127.0.0.1:{}", free_port());
    let corral = Corral::start(
        &Config::new()
            .strategy("round-robin")
            .backend("dead", dead)
            .backend("alive", alive.addr),
    );
    for _ in 0..10 {
        assert_eq!(read_all(corral.front), "alive");
    }
    assert!(corral.metric("corral_connection_errors_total{reason=\"connect_failed\"}") >= 1.0);
    assert_eq!(corral.metric("corral_backend_up{backend=\"dead\"}"), 0.0);
    assert_eq!(
        corral.metric("corral_connections_total{backend=\"alive\"}"),
        10.0
    );
}

#[test]
fn idle_timeout_closes_a_silent_connection() {
    let corral = Corral::start(&Config::new().set("timeouts.idle", "300ms").echo_workers(1));
    corral.wait_up(1);
    let mut stream = TcpStream::connect(corral.front).unwrap();
    stream.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    // Now silence: corral must close the connection (EOF), not the read timeout.
    let n = stream
        .read(&mut buf)
        .expect("closed by corral, not timed out");
    assert_eq!(n, 0);
    assert!(corral.metric("corral_connection_errors_total{reason=\"timeout\"}") >= 1.0);
    assert!(eventually(Duration::from_secs(5), || {
        corral.metric("corral_connections_active{backend=\"worker-0\"}") == 0.0
    }));
}

#[test]
fn max_connections_holds_and_queued_clients_are_served_later() {
    let corral = Corral::start(
        &Config::new()
            .set("listener.max_connections", 2)
            .echo_workers(1),
    );
    corral.wait_up(1);
    let front = corral.front;
    let echo = |stream: &mut TcpStream, text: &[u8]| -> bool {
        stream.write_all(text).unwrap();
        let mut buf = vec![0u8; text.len()];
        stream.read_exact(&mut buf).is_ok() && buf == text
    };
    let mut a = TcpStream::connect(front).unwrap();
    let mut b = TcpStream::connect(front).unwrap();
    for s in [&mut a, &mut b] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    assert!(echo(&mut a, b"a"));
    assert!(echo(&mut b, b"b"));
    // The third client is held in the backlog: connected, but not served.
    let mut c = TcpStream::connect(front).unwrap();
    c.write_all(b"c").unwrap();
    // corral has seen the third client and holds it at the limit...
    assert!(
        eventually(Duration::from_secs(10), || {
            corral.metric("corral_connection_errors_total{reason=\"limit\"}") >= 1.0
        }),
        "corral never reached its connection limit"
    );
    // ...so it is not served.
    c.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert!(
        c.read_exact(&mut buf).is_err(),
        "third client was served past the limit"
    );
    assert_eq!(
        corral.metric("corral_connections_active{backend=\"worker-0\"}"),
        2.0
    );
    // One leaves; the queued client is served.
    drop(a);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.read_exact(&mut buf)
        .expect("queued client served after a slot freed");
    assert_eq!(&buf, b"c");
    assert!(corral.metric("corral_connection_errors_total{reason=\"limit\"}") >= 1.0);
}

#[test]
fn garbage_and_resetting_clients_leave_corral_healthy() {
    let corral = Corral::start(&Config::new().strategy("round-robin").demo_workers(2));
    corral.wait_up(2);
    let front = corral.front;
    let threads: Vec<_> = (0..10)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..50 {
                    let Ok(stream) = TcpStream::connect(front) else {
                        continue;
                    };
                    let mut stream = stream;
                    let junk: Vec<u8> = (0..(i * 37 + t) % 3000)
                        .map(|b| (b * 31 + i) as u8)
                        .collect();
                    let _ = stream.write_all(&junk);
                    if i % 2 == 0 {
                        // Reset: linger 0 makes close send RST.
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    }
                    drop(stream);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every client was accepted (some may still have been in the backlog).
    assert!(
        eventually(Duration::from_secs(10), || {
            corral.metric("corral_connections_accepted_total") == 500.0
        }),
        "accepted {}",
        corral.metric("corral_connections_accepted_total")
    );
    assert!(
        eventually(Duration::from_secs(15), || {
            let s = corral.status();
            s["backends"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["active_connections"] == 0)
        }),
        "leaked active connections: {}",
        corral.status()
    );
    assert!(get_from(corral.front, None).unwrap().starts_with("worker="));
    assert_eq!(http(corral.admin, "GET", "/readyz").0, 200);
}

fn check_config(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let (code, out) = corral_cmd(&["check", "-c", path.to_str().unwrap()]);
    let (run_code, run_out) = corral_cmd(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(code, run_code, "check and run disagree: {out} / {run_out}");
    (code, out)
}

#[test]
fn bad_configs_exit_2_and_name_the_key_and_line() {
    let cases = [
        (
            "[listener]\nbind = \"127.0.0.1:1\"\nbogus = 3\n",
            "bad.toml:3:",
            "bogus",
        ),
        (
            "[workers]\ncommand = [\"x\"]\n[timeouts]\nidle = \"5 fortnights\"\n",
            "bad.toml:4:",
            "timeouts.idle",
        ),
        (
            "[workers]\ncommand = [\"x\"]\n[timeouts]\nconnect = \"5\"\n",
            "bad.toml:4:",
            "timeouts.connect",
        ),
        (
            "[listener]\nbind = \"localhost\"\n[workers]\ncommand = [\"x\"]\n",
            "bad.toml:2:",
            "listener.bind",
        ),
        (
            "[listener]\nbind = \"127.0.0.1:80\"\n",
            "bad.toml",
            "nothing to balance",
        ),
        (
            "[workers]\ncommand = [\"x\"]\ncount = 0\n",
            "bad.toml:3:",
            "workers.count",
        ),
        (
            "[balance]\nstrategy = \"random\"\n[workers]\ncommand = [\"x\"]\n",
            "bad.toml:2:",
            "strategy",
        ),
        (
            "[[backends]]\nname = \"a\"\n",
            "bad.toml:1:",
            "backends.address",
        ),
        ("not toml at all [\n", "bad.toml:1:", ""),
        (
            "[listener]\nbind = \"127.0.0.1:9101\"\n[workers]\ncommand = [\"x\"]\nport_base = 9100\n",
            "bad.toml",
            "worker port",
        ),
    ];
    for (text, place, key) in cases {
        let (code, out) = check_config(text);
        assert_eq!(code, Some(2), "{text:?} -> {out}");
        assert!(out.contains(place), "{text:?}: no {place:?} in {out}");
        assert!(out.contains(key), "{text:?}: no {key:?} in {out}");
    }
}

#[test]
fn check_prints_every_error() {
    let (code, out) = check_config(
        "[timeouts]\nconnect = \"x\"\nidle = \"y\"\n[workers]\ncommand = [\"x\"]\ncount = -1\n",
    );
    assert_eq!(code, Some(2));
    for key in ["timeouts.connect", "timeouts.idle", "workers.count"] {
        assert!(out.contains(key), "{key} missing from {out}");
    }
}

#[test]
fn front_end_address_in_use_exits_1_naming_it() {
    let taken = listen_on_free_port();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    Config::new()
        .bind(addr)
        .backend("a", "127.0.0.1:9")
        .write(&path);
    let (code, out) = corral_cmd(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&addr.to_string()), "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(corral_cmd(&["run", "--bogus"]).0, Some(2));
    assert_eq!(corral_cmd(&["run", "-i", "zero"]).0, Some(2));
    let (code, out) = corral_cmd(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn one_liner_runs_the_given_command() {
    // The file names neither the front end nor a worker count nor a usable
    // command: the flags give them.
    let config = Config::new()
        .unset("listener.bind")
        .strategy("round-robin")
        .set("workers.command", &["false"])
        .set("workers.port_base", free_port_range(6));
    let front = config.front;
    let corral = Corral::start_with(
        &config,
        &[
            "-i",
            "3",
            "--bind",
            &front.to_string(),
            "--",
            "corral",
            "demo-worker",
        ],
        &[],
    );
    corral.wait_up(3);
    assert_eq!(corral.worker_pids().len(), 3);
    let body = get_from(front, None).unwrap();
    assert!(body.starts_with("worker="), "{body}");
}

#[test]
fn a_live_backend_that_closes_without_answering_is_not_sent_the_request_twice() {
    // Reads what comes first and closes without a word, alive and well. The
    // verdict is how many bytes it read: health checks connect and leave, a
    // request has bytes.
    let first_read = |s: &mut TcpStream| s.read(&mut [0u8; 64]).unwrap_or(0);
    let backends = [Backend::start(first_read), Backend::start(first_read)];
    let requests_in = |backends: &[Backend<usize>]| {
        backends
            .iter()
            .flat_map(Backend::verdicts)
            .filter(|&n| n > 0)
            .count()
    };
    let corral = Corral::start(
        &Config::new()
            .strategy("round-robin")
            .connection_logs(true)
            .backend("a", backends[0].addr)
            .backend("b", backends[1].addr),
    );
    let mut client = TcpStream::connect(corral.front).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.write_all(b"POST /pay HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer);
    assert!(answer.is_empty());
    // The request reached a backend, and corral is done with the client.
    let mut requests = 0;
    assert!(eventually(Duration::from_secs(10), || {
        requests += requests_in(&backends);
        requests >= 1
    }));
    corral.wait_log("connection closed", Duration::from_secs(10));
    requests += requests_in(&backends);
    assert_eq!(requests, 1, "the request reached a second backend");
}
