//! Health checks, the metric table, connection logs, and a real Prometheus
//! (`promtool` and the server, from Debian's `prometheus` package) scraping
//! corral on loopback.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Every metric name in SPEC.md's table.
const SPEC_METRICS: &[&str] = &[
    "corral_connections_accepted_total",
    "corral_connections_total",
    "corral_connections_active",
    "corral_connection_errors_total",
    "corral_bytes_received_total",
    "corral_bytes_sent_total",
    "corral_backend_up",
    "corral_backend_connect_duration_seconds",
    "corral_health_checks_total",
    "corral_worker_restarts_total",
    "corral_sticky_entries",
    "corral_sticky_lookups_total",
];

/// One demo worker (worker-0), round-robin.
fn one_demo_worker() -> Config {
    Config::new().strategy("round-robin").demo_workers(1)
}

/// worker-0 is up, and it answers each of `requests` clients.
fn assert_worker_0_serves_alone(corral: &Corral, requests: usize) {
    assert_eq!(
        corral.metric("corral_backend_up{backend=\"worker-0\"}"),
        1.0
    );
    for _ in 0..requests {
        assert!(get_from(corral.front, None)
            .unwrap()
            .starts_with("worker=0"));
    }
}

#[test]
fn a_refusing_static_backend_is_down_and_counted() {
    let dead = format!("127.0.0.1:{}", free_port());
    let corral = Corral::start(
        &one_demo_worker()
            .set("health.interval", "200ms")
            .set("health.fall", 2)
            .backend("gone", dead),
    );
    corral.wait_up(1);
    assert!(eventually(Duration::from_secs(10), || {
        corral.metric("corral_health_checks_total{backend=\"gone\",result=\"failure\"}") >= 2.0
    }));
    let status = corral.status();
    let gone = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "gone")
        .unwrap();
    assert_eq!(gone["state"], "down", "{status}");
    assert_eq!(corral.metric("corral_backend_up{backend=\"gone\"}"), 0.0);
    assert_worker_0_serves_alone(&corral, 5);
    assert!(
        corral.metric("corral_health_checks_total{backend=\"worker-0\",result=\"success\"}") >= 1.0
    );
}

#[test]
fn http_checks_take_a_500_backend_down_and_pass_the_demo_worker() {
    let failing = Backend::http_status("500 Internal Server Error");
    let corral = Corral::start(
        &one_demo_worker()
            .set("health.kind", "http")
            .set("health.path", "/healthz")
            .set("health.interval", "200ms")
            .set("health.fall", 2)
            .set("health.rise", 2)
            .backend("broken", failing.addr),
    );
    corral.wait_up(1);
    assert!(
        eventually(Duration::from_secs(10), || {
            corral.metric("corral_backend_up{backend=\"broken\"}") == 0.0
                && corral
                    .metric("corral_health_checks_total{backend=\"worker-0\",result=\"success\"}")
                    >= 2.0
        }),
        "{}",
        corral.status()
    );
    // Only the healthy worker is used.
    assert_worker_0_serves_alone(&corral, 6);
}

#[test]
fn a_backend_that_recovers_comes_back_after_rise_checks() {
    let port = free_port();
    let corral = Corral::start(
        &Config::new()
            .set("health.interval", "150ms")
            .set("health.fall", 1)
            .set("health.rise", 2)
            .backend("flaky", format!("127.0.0.1:{port}")),
    );
    assert!(eventually(Duration::from_secs(10), || corral
        .metric("corral_backend_up{backend=\"flaky\"}")
        == 0.0));
    assert_eq!(http(corral.admin, "GET", "/readyz").0, 503);
    let _back = Backend::start_on(port, reply(b"back"));
    assert!(eventually(Duration::from_secs(10), || corral
        .metric("corral_backend_up{backend=\"flaky\"}")
        == 1.0));
    assert_eq!(http(corral.admin, "GET", "/readyz").0, 200);
}

#[test]
fn with_no_backend_up_clients_are_closed_at_once_and_readyz_is_503() {
    let dead = format!("127.0.0.1:{}", free_port());
    let corral = Corral::start(
        &Config::new()
            .set("health.interval", "100ms")
            .set("health.fall", 1)
            .backend("gone", dead),
    );
    assert!(eventually(Duration::from_secs(10), || corral
        .backends_in("down")
        == 1));
    let mut client = TcpStream::connect(corral.front).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    let closed = matches!(client.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "client not closed");
    assert!(corral.metric("corral_connection_errors_total{reason=\"no_backend\"}") >= 1.0);
    assert_eq!(http(corral.admin, "GET", "/readyz").0, 503);
    assert_eq!(http(corral.admin, "GET", "/healthz").0, 200);
    assert_eq!(http(corral.admin, "GET", "/nope").0, 404);
}

#[test]
fn metrics_pass_promtool_and_carry_every_spec_name() {
    require("promtool", "prometheus");
    let corral = Corral::start(&one_demo_worker());
    corral.wait_up(1);
    get_from(corral.front, None).unwrap();
    let text = corral.metrics();
    for name in SPEC_METRICS {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(text.contains("# TYPE corral_backend_connect_duration_seconds histogram"));
    promtool_accepts(&text);
}

#[test]
fn a_real_prometheus_scrapes_corral() {
    require("prometheus", "prometheus");
    let corral = Corral::start(&one_demo_worker());
    corral.wait_up(1);
    for _ in 0..7 {
        get_from(corral.front, None).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: corral\n    static_configs:\n      - targets: ['{}']\n",
            corral.admin
        ),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _server = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let query = |q: &str| -> Option<f64> {
        let (code, body) = try_http(web, "GET", &format!("/api/v1/query?query={q}")).ok()?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    assert!(
        eventually(Duration::from_secs(30), || query(
            "up%7Bjob%3D%22corral%22%7D"
        ) == Some(1.0)),
        "Prometheus never saw corral up"
    );
    assert!(eventually(Duration::from_secs(10), || {
        query("corral_connections_accepted_total%7Bjob%3D%22corral%22%7D") == Some(7.0)
    }));
}

#[test]
fn json_connection_logs_parse_and_carry_the_fields() {
    let corral = Corral::start(
        &one_demo_worker()
            .set("log.format", "json")
            .connection_logs(true),
    );
    corral.wait_up(1);
    get_from(corral.front, None).unwrap();
    corral.wait_log("connection closed", Duration::from_secs(5));
    let log = corral.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let entry: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["message"] == "connection closed")
        .unwrap();
    for field in [
        "client",
        "backend",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "end",
    ] {
        assert!(!entry[field].is_null(), "{field} missing from {entry}");
    }
    assert_eq!(entry["backend"], "worker-0");
    assert_eq!(entry["end"], "eof");
    assert!(entry["bytes_in"].as_u64().unwrap() > 0);
    // Worker output is JSON too, tagged with the worker id.
    let worker_line = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["stream"] == "stdout")
        .expect("a worker stdout line");
    assert_eq!(worker_line["worker"], 0);
}

#[test]
fn connection_logs_can_be_turned_off() {
    let corral = Corral::start(&one_demo_worker().connection_logs(false));
    corral.wait_up(1);
    get_from(corral.front, None).unwrap();
    // corral has finished with the connection: its duration is recorded,
    // which happens just before the connection would be logged...
    assert!(eventually(Duration::from_secs(5), || {
        corral.metric("corral_connection_duration_seconds_count{backend=\"worker-0\"}") == 1.0
    }));
    // ...and a line corral logs after that is in the log.
    corral.signal(Signal::SIGHUP);
    corral.wait_log("config reloaded", Duration::from_secs(5));
    assert!(!corral.log().contains("connection closed"));
}

#[test]
fn mutations_need_the_token_and_gets_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let corral = Corral::start(&one_demo_worker().set("admin.token_file", token.as_path()));
    corral.wait_up(1);
    let admin = corral.admin;
    assert_eq!(http(admin, "POST", "/workers/restart").0, 401);
    let restart_with = |authorization: &str| {
        let mut s = TcpStream::connect(admin).unwrap();
        let headers = [("Authorization", authorization)];
        request_on(&mut s, admin, "POST", "/workers/restart", &headers)
            .unwrap()
            .0
    };
    assert_eq!(restart_with("Bearer wrong"), 401);
    assert_eq!(restart_with("Bearer s3cret"), 202);
    assert_eq!(
        restart_with("bearer s3cret"),
        202,
        "the scheme is case-insensitive"
    );
    for path in ["/metrics", "/healthz", "/readyz", "/status"] {
        assert_eq!(http(admin, "GET", path).0, 200, "{path}");
    }
}
