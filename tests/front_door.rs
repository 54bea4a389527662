//! The front door, end to end (issue 18): nothing a browser, a file or a
//! worker sends can turn corral against itself, and one client cannot take
//! every slot. Each test starts real processes on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;

/// One admin request with extra headers; its status code.
fn admin_status(admin: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut stream = TcpStream::connect(admin).unwrap();
    request_on(&mut stream, admin, method, path, headers)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        .0
}

/// Sends `head` whole (from another thread: corral may answer first) and
/// returns the first line of the answer.
fn answer_to_head(admin: SocketAddr, head: String) -> String {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = stream.write_all(head.as_bytes());
        })
    };
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    writer.join().unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_web_page_cannot_drive_the_admin_port_and_the_cli_still_can() {
    let backend = Backend::http_status("200 OK");
    let corral = Corral::start(&Config::new().backend("app", backend.addr));
    let admin = corral.admin;
    let port = admin.port();
    let form = ("Content-Type", "application/x-www-form-urlencoded");

    // A cross-site form POST, and one from an opaque origin: refused.
    let evil = admin_status(
        admin,
        "POST",
        "/reload",
        &[("Origin", "http://evil.example"), form],
    );
    assert_eq!(evil, 403, "a cross-site POST");
    assert_eq!(
        admin_status(admin, "POST", "/reload", &[("Origin", "null")]),
        403
    );
    let other_port = format!("http://127.0.0.1:{}", port + 1);
    assert_eq!(
        admin_status(admin, "POST", "/reload", &[("Origin", &other_port)]),
        403
    );
    // The admin address's own origin, in its loopback spellings: served.
    let own = format!("http://{admin}");
    let localhost = format!("http://localhost:{port}");
    assert_eq!(
        admin_status(admin, "POST", "/reload", &[("Origin", &own)]),
        200
    );
    assert_eq!(
        admin_status(admin, "POST", "/reload", &[("Origin", &localhost)]),
        200
    );

    // DNS rebinding: a Host that is a name other than localhost.
    let rebound = format!("evil.example:{port}");
    assert_eq!(
        admin_status(admin, "GET", "/status", &[("Host", &rebound)]),
        403
    );
    assert_eq!(
        admin_status(admin, "GET", "/metrics", &[("Host", "evil.example")]),
        403
    );
    let named = format!("localhost:{port}");
    assert_eq!(
        admin_status(admin, "GET", "/status", &[("Host", &named)]),
        200
    );

    // The CLI sends no Origin and an IP Host: it keeps working.
    let admin_arg = admin.to_string();
    let (code, out) = corral_cmd(&["reload", "--admin", &admin_arg]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = corral_cmd(&["status", "--admin", &admin_arg]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("app"), "{out}");
    // Three reloads applied: the two same-origin POSTs and the CLI's.
    assert_eq!(
        corral.metric("corral_config_reloads_total{result=\"success\"}"),
        3.0
    );

    // A head past the documented 64 KiB (70,000 bytes): 431.
    let head = format!(
        "GET /status HTTP/1.1\r\nHost: {admin}\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(70_000)
    );
    let first = answer_to_head(admin, head);
    assert!(
        first.starts_with("HTTP/1.1 431"),
        "a 70,000-byte head got {first:?}"
    );
    // Just under the cap is served.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: {admin}\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(60_000)
    );
    let first = answer_to_head(admin, head);
    assert!(
        first.starts_with("HTTP/1.1 200"),
        "a 60,000-byte head got {first:?}"
    );
}

#[test]
fn the_admin_token_is_compared_exactly_and_does_not_lift_the_origin_rule() {
    let backend = Backend::http_status("200 OK");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let corral = Corral::start(
        &Config::new()
            .backend("app", backend.addr)
            .set("admin.token_file", token_file.as_path()),
    );
    let admin = corral.admin;
    let bearer = |t: &str| format!("Bearer {t}");
    let status = |auth: &str, origin: Option<&str>| {
        let mut headers = vec![("Authorization", auth)];
        if let Some(origin) = origin {
            headers.push(("Origin", origin));
        }
        admin_status(admin, "POST", "/reload", &headers)
    };
    // (Spaces at the very end of a header line are not part of its value
    // in HTTP, so no server sees them; a space inside it is the token's.)
    assert_eq!(status(&bearer(" s3cret"), None), 401, "two spaces");
    assert_eq!(status(&bearer("s3cret x"), None), 401, "more after a space");
    assert_eq!(status(&bearer("s3cre"), None), 401);
    assert_eq!(status(&bearer("s3cret"), Some("http://evil.example")), 403);
    assert_eq!(status(&bearer("s3cret"), None), 200);
}

/// Watches a process's resident memory until dropped; [`Watchdog::peak`]
/// is the most it saw, in bytes.
struct Watchdog {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Resident memory past which a test fails: a config file must never swell
/// corral (issue 18 saw 0.4 to 1.6 GB/s from /dev/zero).
const RSS_LIMIT: u64 = 200 * 1024 * 1024;

impl Watchdog {
    fn watch(pid: u32) -> Watchdog {
        use std::sync::atomic::Ordering;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, done) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                    return;
                };
                let kib: u64 = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                seen.fetch_max(kib * 1024, Ordering::Relaxed);
                if kib * 1024 > RSS_LIMIT {
                    // Stop the swelling before the machine suffers.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        Signal::SIGKILL,
                    );
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        Watchdog { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Puts a hostile thing at `path`: "zero" (a symlink to /dev/zero),
/// "fifo" (a named pipe nobody writes) or "big" (a 2 MiB file of comments).
fn hostile_file(path: &std::path::Path, kind: &str) {
    let _ = std::fs::remove_file(path);
    match kind {
        "zero" => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        "fifo" => nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap(),
        "big" => {
            let line = "# padding padding padding padding padding padding padding\n";
            std::fs::write(path, line.repeat(2 * 1024 * 1024 / line.len() + 1)).unwrap()
        }
        _ => unreachable!(),
    }
}

/// What `corral check` and a start say about each hostile file.
const HOSTILE: [(&str, &str); 3] = [
    ("zero", "character device"),
    ("fifo", "FIFO"),
    ("big", "at most 1048576 bytes"),
];

#[test]
fn a_device_a_fifo_or_a_huge_file_is_refused_as_config_by_check_and_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, reason) in HOSTILE {
        let path = dir.path().join(format!("{kind}.toml"));
        hostile_file(&path, kind);
        let shown = path.display().to_string();
        let (code, out) = corral_cmd(&["check", &shown]);
        assert_eq!(code, Some(2), "check {kind}: {out}");
        assert!(
            out.contains(reason) && out.contains(&shown),
            "check {kind}: {out}"
        );
        let (code, out) = corral_cmd(&["run", "-c", &shown]);
        assert_eq!(code, Some(2), "run {kind}: {out}");
        assert!(out.contains(reason), "run {kind}: {out}");
    }
}

#[test]
fn a_device_a_fifo_or_a_huge_file_is_refused_on_reload_and_sigterm_stays_prompt() {
    let backend = Backend::http_status("200 OK");
    let config = Config::new().backend("app", backend.addr);
    let mut corral = Corral::start(&config);
    let watchdog = Watchdog::watch(corral.pid());
    let path = corral.config_path.clone();
    for (kind, reason) in HOSTILE {
        hostile_file(&path, kind);
        // POST /reload answers, refused with the reason.
        let mut stream = TcpStream::connect(corral.admin).unwrap();
        let (code, body) = request_on(&mut stream, corral.admin, "POST", "/reload", &[]).unwrap();
        assert_eq!(code, 400, "reload of {kind}: {body}");
        assert!(body.contains(reason), "reload of {kind}: {body}");
        // SIGHUP: refused and logged; the admin port still answers.
        let refusals = corral.log().matches("reload refused").count();
        corral.signal(Signal::SIGHUP);
        assert!(
            eventually(std::time::Duration::from_secs(10), || {
                corral.log().matches("reload refused").count() > refusals
            }),
            "SIGHUP with {kind} was never refused:\n{}",
            corral.log()
        );
        assert_eq!(http(corral.admin, "GET", "/healthz").0, 200);
        // The old config still serves.
        assert!(get_from(corral.front, None).is_ok(), "{kind}");
    }
    assert!(
        watchdog.peak() < RSS_LIMIT,
        "RSS reached {} bytes",
        watchdog.peak()
    );
    assert!(
        watchdog.peak() > 0,
        "the watchdog never read corral's memory"
    );
    // SIGTERM with a FIFO in the file's place still stops corral.
    hostile_file(&path, "fifo");
    corral.signal(Signal::SIGHUP);
    corral.signal(Signal::SIGTERM);
    let code = corral.wait_exit(std::time::Duration::from_secs(15));
    assert_eq!(
        code,
        Some(0),
        "SIGTERM after a FIFO reload:\n{}",
        corral.log()
    );
}

#[test]
fn check_refuses_a_worker_environment_the_kernel_cannot_exec() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corral.toml");
    let huge = "x".repeat(200 * 1024);
    Config::new()
        .workers(&["sh", "-c", "sleep 1000"], 1)
        .set("workers.env", Raw(&format!("{{ BIG = \"{huge}\" }}")))
        .write(&path);
    let (code, out) = corral_cmd(&["check", &path.display().to_string()]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("key `workers.env`") && out.contains("BIG"),
        "{out}"
    );
}

/// The /count of a metrics_worker.py worker: the metric fetches it served.
fn fetches_served(worker: SocketAddr) -> u64 {
    let (code, body) = http(worker, "GET", "/count");
    assert_eq!(code, 200, "{body}");
    body.trim().parse().unwrap()
}

#[test]
fn a_worker_exporting_huge_numbers_is_served_bounded_escaped_and_fetched_once() {
    let config = Config::new()
        .workers(&["python3", &support("metrics_worker.py")], 1)
        .set("workers.metrics_path", "/metrics")
        .set("workers.env", Raw("{ METRICS_DELAY = \"0.8\" }"));
    let corral = Corral::start(&config);
    corral.wait_up(1);
    let watchdog = Watchdog::watch(corral.pid());
    let worker: SocketAddr = corral.status()["backends"][0]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let text = corral.metrics();
    // 1e308 stays 1e308 (not 309 digits), and the series past the cap
    // are skipped and counted, so what is served stays near what was sent.
    assert!(
        text.contains("x{i=\"0\",worker=\"0\"} 1e308\n"),
        "{}",
        &text[..2000.min(text.len())]
    );
    assert!(
        !text.contains("100000000000000000000"),
        "a number was printed in full"
    );
    assert!(text.len() < 1024 * 1024, "/metrics is {} bytes", text.len());
    // Counted by the fetch, so shown from the next scrape on.
    let skipped = corral.metric("corral_worker_metrics_series_skipped_total{backend=\"worker-0\"}");
    assert!(skipped > 0.0, "no series counted as skipped");
    // The raw CR in a label value never reaches /metrics.
    assert!(!text.contains('\r'), "a raw CR reached /metrics");
    assert!(
        text.contains("y{v=\"ab\",worker=\"0\"} 1\n"),
        "the CR label is missing"
    );
    promtool_accepts(&text);

    // Four scrapes at once share one fetch of the (slow) worker.
    let before = fetches_served(worker);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let scrapes: Vec<_> = (0..4)
        .map(|_| {
            let (barrier, admin) = (barrier.clone(), corral.admin);
            std::thread::spawn(move || {
                barrier.wait();
                http(admin, "GET", "/metrics").1
            })
        })
        .collect();
    for scrape in scrapes {
        let text = scrape.join().unwrap();
        assert!(
            text.contains("x{i=\"1\",worker=\"0\"} 1e308"),
            "a scrape without the worker's metrics"
        );
    }
    let fetched = fetches_served(worker) - before;
    assert!(
        (1..=2).contains(&fetched),
        "4 concurrent scrapes fetched the worker {fetched} times"
    );
    assert!(
        watchdog.peak() < RSS_LIMIT,
        "RSS reached {} bytes",
        watchdog.peak()
    );
}

/// No raw escape, bidi or separator character in `out`.
fn assert_terminal_safe(out: &str, what: &str) {
    for bad in ['\u{1b}', '\u{202e}', '\u{2028}', '\u{9b}', '\u{7}'] {
        assert!(!out.contains(bad), "{what} printed {bad:?} raw: {out:?}");
    }
}

#[test]
fn client_commands_print_what_the_instance_sends_escaped() {
    let port = free_port();
    let _fake = Killed(
        std::process::Command::new("python3")
            .arg(support("fake_admin.py"))
            .arg(port.to_string())
            .spawn()
            .unwrap(),
    );
    let admin = format!("127.0.0.1:{port}");
    let addr: SocketAddr = admin.parse().unwrap();
    assert!(eventually(std::time::Duration::from_secs(10), || try_http(
        addr, "GET", "/status"
    )
    .is_ok()));
    let (code, out) = corral_cmd(&["status", "--admin", &admin]);
    assert_eq!(code, Some(0), "{out}");
    assert_terminal_safe(&out, "corral status");
    assert!(out.contains("app\\u{1b}[2J\\u{202e}evil"), "{out}");
    let (code, out) = corral_cmd(&["reload", "--admin", &admin]);
    assert_eq!(code, Some(1), "{out}");
    assert_terminal_safe(&out, "corral reload");
    assert!(out.contains("\\u{202e}"), "{out}");
}

#[test]
fn worker_output_and_backend_names_cannot_rewrite_the_terminal() {
    let config = Config::new().workers(
        &[
            "python3",
            "-c",
            "import time; print('evil \\u202e txt \\u2028 end \\x1b[2J', flush=True); time.sleep(1000)",
        ],
        1,
    );
    let corral = Corral::start(&config);
    corral.wait_log("evil ", std::time::Duration::from_secs(20));
    let log = corral.log();
    let line = log.lines().find(|l| l.contains("evil ")).unwrap();
    assert_terminal_safe(line, "a worker's log line");
    assert!(
        line.contains("evil \\u{202e} txt \\u{2028} end \\u{1b}[2J"),
        "{line}"
    );

    // `corral check` refuses a backend name with a control character.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corral.toml");
    Config::new()
        .backend("app\u{1b}[2J", "127.0.0.1:9")
        .write(&path);
    let (code, out) = corral_cmd(&["check", &path.display().to_string()]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("key `backends.name`"), "{out}");
    assert_terminal_safe(&out, "corral check");
}

/// 127.0.0.`n`: each test's clients come from loopback addresses of their own.
fn source(n: u8) -> Option<std::net::IpAddr> {
    Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n)))
}

/// Sends a line on a connection through echo workers: true if it came
/// back, false if corral closed the connection instead.
fn echoes(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    if stream.write_all(b"ping\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 5];
    matches!(stream.read_exact(&mut buf), Ok(()) if &buf == b"ping\n")
}

/// A new connection from `from` and whether it is served (echoed).
fn served_from(front: SocketAddr, from: u8) -> bool {
    match connect_from(front, source(from)) {
        Ok(mut stream) => echoes(&mut stream),
        Err(_) => false,
    }
}

#[test]
fn an_untrusted_proxy_sender_is_closed_and_a_trusted_ones_client_is_the_sticky_key() {
    let config = Config::new()
        .demo_workers(2)
        .strategy("sticky")
        .set("listener.proxy_protocol", "v1")
        .set("listener.proxy_protocol_from", &["127.0.0.3/32"]);
    let corral = Corral::start(&config);
    corral.wait_up(2);
    let front = corral.front;
    let header = |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 40000 80\r\n");
    let ask = |from: u8, client: &str| -> std::io::Result<(u16, String)> {
        let mut stream = connect_from(front, source(from))?;
        stream.write_all(header(client).as_bytes())?;
        request_on(&mut stream, front, "GET", "/", &[])
    };

    // From 127.0.0.2, not listed: closed before the header counts.
    for _ in 0..5 {
        assert!(
            ask(2, "203.0.113.9").is_err(),
            "an untrusted sender was served"
        );
    }
    assert_eq!(
        corral.metric("corral_connections_rejected_total{reason=\"untrusted_proxy\"}"),
        5.0
    );
    let (_, body) = http(corral.admin, "GET", "/sticky?ip=203.0.113.9");
    assert!(
        body.contains("\"by\":\"placement\""),
        "a spoofed client made a sticky entry: {body}"
    );

    // From 127.0.0.3, listed: its client's address is the sticky key.
    let (code, answer) = ask(3, "203.0.113.7").unwrap();
    assert_eq!(code, 200, "{answer}");
    let (_, body) = http(corral.admin, "GET", "/sticky?ip=203.0.113.7");
    let sticky: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sticky["by"], "entry", "{body}");
    let worker = sticky["backend"].as_str().unwrap().replace('-', "=");
    assert_eq!(worker_of(&answer), worker, "{answer} vs {body}");
    // The other reasons exist from the start, at 0.
    for reason in ["denied", "client_connections", "client_rate"] {
        let series = format!("corral_connections_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(corral.metric(&series), 0.0, "{series}");
    }

    // check warns when any peer may send headers on a non-loopback bind.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corral.toml");
    Config::new()
        .demo_workers(1)
        .set("listener.bind", format!("0.0.0.0:{}", free_port()))
        .set("listener.proxy_protocol", "v1")
        .write(&path);
    let (code, out) = corral_cmd(&["check", &path.display().to_string()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning") && out.contains("listener.proxy_protocol_from"),
        "{out}"
    );
}

#[test]
fn one_client_holding_many_connections_is_capped_while_another_is_served() {
    let config = Config::new()
        .echo_workers(2)
        .set("clients.max_connections", 20);
    let corral = Corral::start(&config);
    corral.wait_up(2);
    let front = corral.front;

    // 127.0.0.2 opens 200 connections and holds them: 20 are served.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let mut stream = connect_from(front, source(2)).unwrap();
        if echoes(&mut stream) {
            held.push(stream);
        } else {
            refused += 1;
        }
    }
    assert_eq!((held.len(), refused), (20, 180));
    // 127.0.0.3 is served 10 times out of 10 meanwhile.
    let served = (0..10).filter(|_| served_from(front, 3)).count();
    assert_eq!(served, 10, "the other client was served {served}/10");
    assert_eq!(
        corral.metric("corral_connections_rejected_total{reason=\"client_connections\"}"),
        180.0
    );
    // Refusals are never logged one by one.
    assert!(!corral.log().contains("127.0.0.2"), "{}", corral.log());

    // /clients and `corral clients` show who holds them.
    let (code, body) = http(corral.admin, "GET", "/clients?top=5");
    assert_eq!(code, 200, "{body}");
    let clients: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = &clients["clients"][0];
    assert_eq!(first["client"], "127.0.0.2", "{body}");
    assert_eq!(first["connections"], 20, "{body}");
    assert_eq!(first["rejected"], 180, "{body}");
    let (code, out) = corral_cmd(&[
        "clients",
        "--top",
        "3",
        "--admin",
        &corral.admin.to_string(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let line = out.lines().nth(1).unwrap_or("");
    assert!(
        line.starts_with("127.0.0.2") && line.contains(" 20 ") && line.contains("180"),
        "{out}"
    );

    // Closed connections are given back: the client is served again.
    drop(held);
    assert!(eventually(std::time::Duration::from_secs(10), || {
        served_from(front, 2)
    }));
}

#[test]
fn a_client_past_its_rate_is_refused_and_served_again_once_it_stops() {
    let config = Config::new()
        .echo_workers(1)
        .set("clients.max_rate", "10/s");
    let corral = Corral::start(&config);
    corral.wait_up(1);
    let front = corral.front;
    let served = (0..60).filter(|_| served_from(front, 4)).count();
    assert!(
        (1..60).contains(&served),
        "{served} of 60 quick connections served"
    );
    let refused = corral.metric("corral_connections_rejected_total{reason=\"client_rate\"}");
    assert_eq!(refused, (60 - served) as f64);
    // Another client is not slowed by it.
    assert!(served_from(front, 5));
    // Once it stops, it is served again.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(served_from(front, 4), "not served again after it stopped");
}

#[test]
fn deny_and_allow_change_on_reload_and_open_connections_stay() {
    let config = Config::new()
        .echo_workers(1)
        .strategy("sticky")
        .set("clients.deny", &["127.0.0.6/32"]);
    let corral = Corral::start(&config);
    corral.wait_up(1);
    let front = corral.front;
    assert!(!served_from(front, 6), "a denied client was served");
    assert!(served_from(front, 7));
    assert_eq!(
        corral.metric("corral_connections_rejected_total{reason=\"denied\"}"),
        1.0
    );
    let (_, body) = http(corral.admin, "GET", "/sticky?ip=127.0.0.6");
    assert!(
        body.contains("\"by\":\"placement\""),
        "a denied client made a sticky entry: {body}"
    );
    let mut open = connect_from(front, source(7)).unwrap();
    assert!(echoes(&mut open));

    // Reload: only 127.0.0.6 is allowed now.
    corral.rewrite(
        &config
            .clone()
            .unset("clients.deny")
            .set("clients.allow", &["127.0.0.6"]),
    );
    let (code, body) = http(corral.admin, "POST", "/reload");
    assert_eq!(code, 200, "{body}");
    assert!(served_from(front, 6), "an allowed client was refused");
    assert!(!served_from(front, 7), "a client outside allow was served");
    assert!(echoes(&mut open), "the reload closed an open connection");

    // fd mode cannot count a client's connections: check says so.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corral.toml");
    Config::new()
        .demo_workers(1)
        .set("workers.listen", "fd")
        .set("clients.max_connections", 5)
        .set("clients.max_rate", "5/s")
        .write(&path);
    let (code, out) = corral_cmd(&["check", &path.display().to_string()]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("key `clients.max_connections`"), "{out}");
    assert!(out.contains("key `clients.max_rate`"), "{out}");
}

/// Does a connection from 127.0.0.`from` get through the handshake within
/// a second? (A SYN that a socket filter drops is retried by the client's
/// kernel and never answered.)
fn handshake_from(front: SocketAddr, from: u8) -> bool {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(source(from).unwrap(), 0).into())
        .unwrap();
    socket
        .connect_timeout(&front.into(), std::time::Duration::from_secs(1))
        .is_ok()
}

#[test]
fn fd_mode_drops_denied_clients_in_the_kernel_and_follows_a_reload() {
    let config = Config::new()
        .set("workers.command", &["corral", "demo-worker"])
        .set("workers.count", 2)
        .set("workers.listen", "fd")
        .set("clients.deny", &["127.0.0.10"]);
    let corral = Corral::start(&config);
    corral.wait_up(2);
    let front = corral.front;
    assert!(
        get_from(front, source(11)).is_ok(),
        "an allowed client was not served"
    );
    assert!(
        !handshake_from(front, 10),
        "a denied client got through the kernel"
    );
    // The workers stay up (corral's probes are never filtered).
    assert_eq!(corral.backends_in("up"), 2);

    corral.rewrite(
        &config
            .clone()
            .unset("clients.deny")
            .set("clients.allow", &["127.0.0.10/32"]),
    );
    let (code, body) = http(corral.admin, "POST", "/reload");
    assert_eq!(code, 200, "{body}");
    assert!(
        get_from(front, source(10)).is_ok(),
        "an allowed client was not served"
    );
    assert!(
        !handshake_from(front, 11),
        "a client outside allow got through"
    );
    assert_eq!(corral.backends_in("up"), 2);
}

/// A listening socket of this process joined to `front`'s SO_REUSEPORT
/// group, as an intruder would (non-blocking, to count what it gets).
fn join_the_group(front: std::net::SocketAddr) -> socket2::Socket {
    let intruder =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    intruder.set_reuse_address(true).unwrap();
    intruder.set_reuse_port(true).unwrap();
    intruder.bind(&front.into()).unwrap();
    intruder.listen(1024).unwrap();
    intruder.set_nonblocking(true).unwrap();
    intruder
}

#[test]
fn a_process_joining_the_front_end_with_so_reuseport_gets_no_client() {
    let config = Config::new().demo_workers(2).set("runtime.threads", 2);
    let corral = Corral::start(&config);
    corral.wait_up(2);
    let front = corral.front;
    // Another process of the same user joins the address's group.
    let intruder = join_the_group(front);
    let served = (0..100).filter(|_| get_from(front, None).is_ok()).count();
    let mut stolen = 0;
    while intruder.accept().is_ok() {
        stolen += 1;
    }
    assert_eq!(stolen, 0, "the intruder took {stolen} clients");
    assert_eq!(served, 100);
}

#[test]
fn fd_mode_names_a_process_joining_the_front_end_and_gives_it_no_slot() {
    let config = Config::new()
        .set("workers.command", &["corral", "demo-worker"])
        .set("workers.count", 2)
        .set("workers.listen", "fd")
        .set("workers.restart_delay_max", "500ms");
    let corral = Corral::start(&config);
    corral.wait_up(2);
    let front = corral.front;
    let intruder = join_the_group(front);

    // Named with its pid in the log and in /status.
    let me = std::process::id();
    corral.wait_log(
        "another process listens on the front end",
        std::time::Duration::from_secs(10),
    );
    assert!(
        corral.log().contains(&format!("pid {me}")),
        "{}",
        corral.log()
    );
    assert_eq!(
        corral.status()["intruders"][0]["pid"],
        me,
        "{}",
        corral.status()
    );

    // A scale-up adds no slot whose clients would go to it.
    let (code, body) = http(corral.admin, "POST", "/workers/scale?count=3");
    assert_eq!(code, 202, "{body}");
    corral.wait_log(
        "no worker slot is added",
        std::time::Duration::from_secs(10),
    );
    let served = (0..30).filter(|_| get_from(front, None).is_ok()).count();
    let mut stolen = 0;
    while intruder.accept().is_ok() {
        stolen += 1;
    }
    assert_eq!((served, stolen), (30, 0));
    assert_eq!(corral.backends_in("up"), 2);

    // Once it is gone, the third slot starts.
    drop(intruder);
    corral.wait_up(3);
    assert!(corral.status()["intruders"]
        .as_array()
        .is_some_and(|a| a.is_empty()));
}
