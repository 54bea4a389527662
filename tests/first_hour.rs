//! The first hour with corral (issue 19), end to end with real processes:
//! worker ports for one-liners (picked free ones that never collide, or
//! `--port-base`), an fd-mode worker that ignores fd 3 and listens on a
//! port of its own, and a stop that waits for nothing when nothing is left
//! to do.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::*;

/// Generous: only a guard against a hang, never the measure of a test.
const HANG_GUARD: Duration = Duration::from_secs(5);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A corral running `corral run -i N --bind F --admin A EXTRA -- corral
/// demo-worker` with no config file.
fn demo_one_liner(count: usize, extra: &[&str]) -> Corral {
    let (front, admin) = (addr(free_port()), addr(free_port()));
    let (bind, admin_arg, count_arg) = (front.to_string(), admin.to_string(), count.to_string());
    let mut args = vec!["-i", &count_arg, "--bind", &bind, "--admin", &admin_arg];
    args.extend(extra);
    args.extend(["--", "corral", "demo-worker"]);
    Corral::start_flags(&args, front, admin)
}

/// The /status entry of each worker, by name.
fn worker_entries(corral: &Corral) -> Vec<serde_json::Value> {
    corral.status()["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["name"].as_str().unwrap_or("").starts_with("worker-"))
        .cloned()
        .collect()
}

fn worker_entry(corral: &Corral, name: &str) -> serde_json::Value {
    worker_entries(corral)
        .into_iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in /status: {}", corral.status()))
}

/// The worker addresses `/status` shows.
fn addresses(corral: &Corral) -> BTreeSet<SocketAddr> {
    worker_entries(corral)
        .iter()
        .map(|b| {
            b["address"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("a worker without an address: {b}"))
        })
        .collect()
}

/// The kernel's ephemeral port range.
fn ephemeral() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut parts = text.split_whitespace().map(|n| n.parse::<u16>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// The `pid=` of a demo worker's answer.
fn pid_in(body: &str) -> u32 {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in the answer {body:?}"))
}

/// The range corral logged it picked (`picked free worker ports A..B`).
fn picked_range(corral: &Corral) -> (u16, u16) {
    let log = corral.log();
    let line = log
        .lines()
        .find(|l| l.contains("picked free worker ports"))
        .unwrap_or_else(|| panic!("corral did not say which ports it picked:\n{log}"));
    let range = line
        .split("picked free worker ports ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap();
    let (low, high) = range.split_once("..").unwrap();
    (low.parse().unwrap(), high.parse().unwrap())
}

#[test]
fn two_one_liners_without_ports_both_serve_each_with_its_own_workers() {
    // Started at once: neither may reach for the ports the other picked.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| demo_one_liner(2, &[]));
        let b = s.spawn(|| demo_one_liner(2, &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    a.wait_up(2);
    b.wait_up(2);
    let (low, high) = ephemeral();
    for corral in [&a, &b] {
        let (first, last) = picked_range(corral);
        assert_eq!(last - first + 1, 4, "two ports per worker");
        for port in first..=last {
            assert!(
                !(low..=high).contains(&port),
                "picked port {port} is in the ephemeral range {low}..{high}"
            );
        }
        let shown: BTreeSet<u16> = addresses(corral).iter().map(|a| a.port()).collect();
        assert!(
            shown.iter().all(|p| (first..=last).contains(p)),
            "/status shows {shown:?}, outside the picked {first}..{last}"
        );
        // Every answer comes from one of this corral's own workers.
        let own: BTreeSet<u32> = corral.worker_pids().into_iter().collect();
        for _ in 0..10 {
            let body = get_from(corral.front, None).unwrap();
            assert!(own.contains(&pid_in(&body)), "{body} is not from {own:?}");
        }
    }
    let (ra, rb) = (picked_range(&a), picked_range(&b));
    assert!(
        ra.1 < rb.0 || rb.1 < ra.0,
        "the two corrals picked overlapping ports: {ra:?} and {rb:?}"
    );
    assert!(!a.log().contains("in use"), "{}", a.log());
    assert!(!b.log().contains("in use"), "{}", b.log());
}

#[test]
fn port_base_puts_the_workers_where_it_says_and_a_reload_keeps_it() {
    let base = free_port_range(4);
    let config = Config::new().demo_workers(2).unset("workers.port_base");
    let corral = Corral::start_with(&config, &["--port-base", &base.to_string()], &[]);
    corral.wait_up(2);
    let expected: BTreeSet<SocketAddr> = [addr(base), addr(base + 1)].into();
    assert_eq!(addresses(&corral), expected);
    let pids = corral.worker_pids();
    corral.signal(Signal::SIGHUP);
    corral.wait_log("config reloaded", Duration::from_secs(10));
    assert_eq!(addresses(&corral), expected, "the reload moved the workers");
    assert_eq!(
        corral.worker_pids(),
        pids,
        "the reload restarted the workers"
    );
}

#[test]
fn a_reload_keeps_the_ports_corral_picked() {
    let config = Config::new().demo_workers(2).unset("workers.port_base");
    let corral = Corral::start(&config);
    corral.wait_up(2);
    let (shown, pids) = (addresses(&corral), corral.worker_pids());
    corral.signal(Signal::SIGHUP);
    corral.wait_log("config reloaded", Duration::from_secs(10));
    assert_eq!(addresses(&corral), shown, "the reload moved the workers");
    assert_eq!(
        corral.worker_pids(),
        pids,
        "the reload restarted the workers"
    );
}

#[test]
fn a_picked_port_taken_meanwhile_moves_that_worker_to_another_free_port() {
    let config = Config::new()
        .demo_workers(2)
        .unset("workers.port_base")
        .set("workers.restart_delay", "2s");
    let corral = Corral::start(&config);
    corral.wait_up(2);
    let (first, _) = picked_range(&corral);
    let worker0 = worker_entry(&corral, "worker-0");
    assert_eq!(worker0["address"], addr(first).to_string());
    // Worker 0 dies; before its restart another program takes its port
    // and the port its replacement would use (first + count).
    send_signal(worker0["pid"].as_u64().unwrap() as u32, Signal::SIGKILL);
    let mut taken = Vec::new();
    for port in [first, first + 2] {
        let mut listener = None;
        assert!(
            eventually(Duration::from_secs(5), || {
                listener = TcpListener::bind(("127.0.0.1", port)).ok();
                listener.is_some()
            }),
            "port {port} never came free"
        );
        taken.extend(listener);
    }
    assert!(
        eventually(Duration::from_secs(20), || {
            let entry = worker_entry(&corral, "worker-0");
            entry["state"] == "up" && entry["address"] != addr(first).to_string()
        }),
        "worker-0 did not move: {}\n{}",
        corral.status(),
        corral.log()
    );
    corral.wait_log(
        &format!("ports {first} and {}, picked by corral", first + 2),
        Duration::from_secs(5),
    );
    let moved: SocketAddr = worker_entry(&corral, "worker-0")["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (low, high) = ephemeral();
    assert!(
        !(low..=high).contains(&moved.port()),
        "{moved} is ephemeral"
    );
    let bodies: BTreeSet<String> = (0..20)
        .map(|_| worker_of(&get_from(corral.front, None).unwrap()))
        .collect();
    assert!(bodies.contains("worker=0"), "{bodies:?}");
}

#[test]
fn a_given_port_base_in_use_is_named_with_the_key_to_change() {
    // Slot 0's port and its rolling-restart twin (base + count) are taken.
    // A corral of a test running beside this one may pick a block between
    // the check for free ports and the binds: then take another range.
    let (base, _held) = std::iter::repeat_with(|| {
        let base = free_port_range(4);
        let first = TcpListener::bind(("127.0.0.1", base)).ok()?;
        let twin = TcpListener::bind(("127.0.0.1", base + 2)).ok()?;
        Some((base, [first, twin]))
    })
    .take(50)
    .flatten()
    .next()
    .expect("no free range of 4 ports in 50 tries");
    let corral = demo_one_liner(2, &["--port-base", &base.to_string()]);
    corral.wait_up(1);
    corral.wait_log(
        &format!("ports {base} and {} (workers.port_base", base + 2),
        Duration::from_secs(10),
    );
    assert!(
        corral.log().contains("--port-base"),
        "the error does not say how to change it:\n{}",
        corral.log()
    );
    assert_ne!(worker_entry(&corral, "worker-0")["state"], "up");
    assert_eq!(
        worker_entry(&corral, "worker-1")["address"],
        addr(base + 1).to_string()
    );
}

#[test]
fn an_fd_worker_listening_on_its_own_port_is_named_and_clients_go_to_the_one_that_accepts() {
    let own_port = free_port();
    let config = Config::new()
        .set(
            "workers.command",
            [python(), &support("fd_ignoring_worker.py")].as_slice(),
        )
        .set("workers.count", 2)
        .set("workers.listen", "fd")
        .set("workers.ready_timeout", "60s")
        .set(
            "workers.env",
            Raw(&format!(
                "{{ IGNORE_ID = \"1\", OWN_PORT = \"{own_port}\" }}"
            )),
        )
        .strategy("round-robin");
    let corral = Corral::start(&config);
    // Well before ready_timeout: the log names the port and what to do,
    // and /status says why worker-1 is out.
    corral.wait_log(
        &format!("listens on 127.0.0.1:{own_port}"),
        Duration::from_secs(20),
    );
    let line = corral
        .log()
        .lines()
        .find(|l| l.contains(&format!("listens on 127.0.0.1:{own_port}")) && l.contains("worker-1"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no line names worker-1:\n{}", corral.log()));
    for advice in ["fd 3", "LISTEN_FDS", "listen = \\\"port\\\""] {
        assert!(
            line.contains(advice) || line.contains(&advice.replace('\\', "")),
            "{advice} missing: {line}"
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || {
            worker_entry(&corral, "worker-1")["reason"] == "listens_elsewhere"
        }),
        "{}",
        corral.status()
    );
    assert_eq!(worker_entry(&corral, "worker-0")["state"], "up");
    for _ in 0..30 {
        let body = get_from(corral.front, None).unwrap();
        assert_eq!(worker_of(&body), "worker=0", "{body}");
    }
}

/// SIGTERM to `corral`, which must exit 0 with every worker (and the
/// processes in `also`) gone. Every period in its config is long, so a
/// loop that slept through the stop would hold the exit past the guard.
fn stops_at_once(mut corral: Corral, also: &[u32]) {
    let mut pids = corral.worker_pids();
    pids.extend(also);
    assert!(!pids.is_empty());
    corral.signal(Signal::SIGTERM);
    let code = corral.wait_exit(HANG_GUARD);
    assert_eq!(code, Some(0), "corral did not exit 0:\n{}", corral.log());
    assert_gone(pids, Duration::from_secs(1), "a worker outlived corral");
    assert!(corral.log().contains("corral stopped"), "{}", corral.log());
}

/// Every period a loop of corral could sleep on, set far past the guard.
fn long_periods(config: Config) -> Config {
    config
        .set("health.interval", "60s")
        .set("health.timeout", "30s")
        .set("timeouts.drain", "60s")
        .set("timeouts.idle", "60s")
        .set("workers.stop_timeout", "60s")
        .set("workers.ready_timeout", "60s")
        .set("workers.restart_delay", "60s")
}

#[test]
fn an_idle_corral_exits_on_sigterm_with_nothing_left_to_wait_for() {
    let corral = Corral::start(&long_periods(Config::new().demo_workers(2)));
    corral.wait_up(2);
    // A client came and went: nothing is left to drain.
    get_from(corral.front, None).unwrap();
    stops_at_once(corral, &[]);
}

#[test]
fn an_idle_fd_mode_corral_exits_on_sigterm_with_nothing_left_to_wait_for() {
    let config = Config::new()
        .set("workers.command", ["corral", "demo-worker"].as_slice())
        .set("workers.count", 2)
        .set("workers.listen", "fd")
        .strategy("round-robin");
    let corral = Corral::start(&long_periods(config));
    corral.wait_up(2);
    get_from(corral.front, None).unwrap();
    stops_at_once(corral, &[]);
}

#[test]
fn a_stop_while_the_first_workers_start_does_not_wait_for_them() {
    // A worker that never listens: corral would wait ready_timeout (60 s).
    let config = Config::new()
        .set(
            "workers.command",
            [python(), "-c", "import time; time.sleep(600)"].as_slice(),
        )
        .set("workers.count", 1);
    let corral = Corral::start(&long_periods(config));
    corral.wait_log("worker started", Duration::from_secs(10));
    let starting = worker_entry(&corral, "worker-0")["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid for the starting worker: {}", corral.status()))
        as u32;
    stops_at_once(corral, &[starting]);
}
