//! Worker supervision end to end: crash restarts with backoff, readiness,
//! rolling restarts under load, graceful stop, reload, and no orphans.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// `count` workers running `command`, round-robin.
fn round_robin(command: &[&str], count: usize) -> Config {
    Config::new()
        .strategy("round-robin")
        .workers(command, count)
}

/// `count` demo workers, round-robin.
fn demo(count: usize) -> Config {
    Config::new().strategy("round-robin").demo_workers(count)
}

#[test]
fn kill_9_of_a_worker_under_load_fails_no_request() {
    let corral = Corral::start(&demo(2));
    corral.wait_up(2);
    let victim = corral.worker_pids()[0];
    let load = Load::start(corral.front, 4);
    assert!(eventually(Duration::from_secs(5), || load.served() > 200));
    send_signal(victim, Signal::SIGKILL);
    let back = eventually(Duration::from_secs(15), || {
        let s = corral.status();
        let slot = &s["backends"][0];
        slot["state"] == "up" && slot["pid"].as_u64() != Some(victim as u64)
    });
    // The clients go on being served with the new worker in rotation.
    let went_on = load.serves_more(100);
    let (served, failed, errors) = load.finish();
    assert!(back, "slot 0 never came back: {}", corral.status());
    assert!(
        went_on,
        "the clients stalled after the restart: {served} served"
    );
    eprintln!("kill -9 under load: {served} requests served, {failed} failed");
    assert_eq!(
        failed, 0,
        "{failed} of {served} requests failed: {errors:?}"
    );
    assert_eq!(corral.status()["backends"][0]["restarts"], 1);
    assert_eq!(
        corral.metric("corral_worker_restarts_total{backend=\"worker-0\"}"),
        1.0
    );
    assert!(!alive(victim));
}

#[test]
fn crash_loop_backs_off_and_corral_stays_up() {
    let corral = Corral::start(&round_robin(&["sh", "-c", "exit 3"], 1));
    // Backoff is a rate: the test has to let 6 s of crash loop go by.
    std::thread::sleep(Duration::from_secs(6));
    let restarts = corral.status()["backends"][0]["restarts"].as_u64().unwrap();
    // 100ms doubling: about 6 in 6 s; hundreds would mean no backoff.
    assert!((3..=12).contains(&restarts), "restarts in 6 s: {restarts}");
    assert_eq!(http(corral.admin, "GET", "/readyz").0, 503);
    assert_eq!(http(corral.admin, "GET", "/healthz").0, 200);
    assert!(corral.log().contains("exit code 3"), "{}", corral.log());
}

#[test]
fn a_worker_that_never_listens_is_killed_after_ready_timeout_and_retried() {
    let corral =
        Corral::start(&round_robin(&["sleep", "300"], 1).set("workers.ready_timeout", "400ms"));
    let first = eventually(Duration::from_secs(5), || !corral.worker_pids().is_empty());
    assert!(first);
    let pid = corral.worker_pids()[0];
    assert!(eventually(Duration::from_secs(10), || {
        corral.status()["backends"][0]["restarts"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    }));
    assert!(!alive(pid), "the unready worker {pid} was not killed");
    assert_ne!(corral.status()["backends"][0]["state"], "up");
    assert!(corral.log().contains("ready_timeout"), "{}", corral.log());
}

#[test]
fn sigusr2_replaces_every_worker_under_load_without_errors() {
    let corral = Corral::start(&demo(3));
    corral.wait_up(3);
    let before = corral.worker_pids();
    let load = Load::start(corral.front, 4);
    assert!(eventually(Duration::from_secs(5), || load.served() > 100));
    corral.signal(Signal::SIGUSR2);
    let replaced = eventually(Duration::from_secs(30), || {
        let now = corral.worker_pids();
        now.len() == 3 && now.iter().all(|p| !before.contains(p)) && corral.backends_in("up") == 3
    });
    // The clients go on being served by the new workers alone.
    let went_on = load.serves_more(100);
    let (served, failed, errors) = load.finish();
    assert!(
        replaced,
        "not every worker was replaced: {before:?} -> {}",
        corral.status()
    );
    assert!(
        went_on,
        "the clients stalled after the rollout: {served} served"
    );
    eprintln!("rolling restart under load: {served} requests served, {failed} failed");
    assert_eq!(
        failed, 0,
        "{failed} of {served} failed during the rollout: {errors:?}"
    );
    assert_gone(before, Duration::from_secs(10), "an old worker");
    assert_eq!(corral.status()["backends"][0]["restarts"], 0);
}

#[test]
fn admin_post_starts_a_rolling_restart() {
    let corral = Corral::start(&demo(2));
    corral.wait_up(2);
    let before = corral.worker_pids();
    assert_eq!(http(corral.admin, "POST", "/workers/restart").0, 202);
    assert!(eventually(Duration::from_secs(20), || {
        let now = corral.worker_pids();
        now.len() == 2 && now.iter().all(|p| !before.contains(p)) && corral.backends_in("up") == 2
    }));
    assert_eq!(http(corral.admin, "GET", "/workers/restart").0, 405);
}

#[test]
fn sigterm_drains_an_open_connection_then_exits_0_leaving_no_worker() {
    let mut corral = Corral::start(&Config::new().echo_workers(1).set("timeouts.drain", "20s"));
    corral.wait_up(1);
    let pids = corral.worker_pids();
    let mut stream = TcpStream::connect(corral.front).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 5];
    stream.write_all(b"hello").unwrap();
    stream.read_exact(&mut buf).unwrap();
    corral.signal(Signal::SIGTERM);
    assert!(eventually(Duration::from_secs(5), || {
        try_http(corral.admin, "GET", "/readyz").map(|r| r.0).ok() == Some(503)
    }));
    // corral says it waits for the open connection.
    corral.wait_log("draining open connections", Duration::from_secs(5));
    // The open connection still works while corral drains.
    stream.write_all(b"again").unwrap();
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"again");
    assert_eq!(
        corral.wait_exit(Duration::from_millis(500)),
        None,
        "exited before the client left"
    );
    drop(stream);
    assert_eq!(
        corral.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        corral.log()
    );
    assert_gone(
        pids,
        Duration::from_secs(5),
        "a worker that outlived corral",
    );
}

#[test]
fn sigkill_to_the_master_takes_every_worker_with_it() {
    let mut corral = Corral::start(&demo(3));
    corral.wait_up(3);
    let pids = corral.worker_pids();
    corral.signal(Signal::SIGKILL);
    corral.wait_exit(Duration::from_secs(5));
    assert_gone(pids, Duration::from_secs(5), "an orphan worker");
}

#[test]
fn sighup_scales_up_and_refuses_a_broken_file() {
    // Ports for up to five slots and their replacements.
    let config = demo(2).set("workers.port_base", free_port_range(10));
    let corral = Corral::start(&config);
    corral.wait_up(2);
    let before = corral.worker_pids();
    corral.rewrite(&config.clone().set("workers.count", 3));
    corral.signal(Signal::SIGHUP);
    corral.wait_up(3);
    let after = corral.worker_pids();
    assert_eq!(after.len(), 3);
    assert!(
        before.iter().all(|p| after.contains(p)),
        "scaling up restarted workers"
    );
    assert_eq!(
        corral.metric("corral_config_reloads_total{result=\"success\"}"),
        1.0
    );

    corral.rewrite(
        &config
            .clone()
            .set("workers.command", &["corral"])
            .set("workers.count", "many"),
    );
    corral.signal(Signal::SIGHUP);
    assert!(eventually(Duration::from_secs(5), || {
        corral.metric("corral_config_reloads_total{result=\"failure\"}") == 1.0
    }));
    assert_eq!(corral.backends_in("up"), 3);
    assert!(get_from(corral.front, None).is_ok());
    assert!(corral.log().contains("workers.count"), "{}", corral.log());

    // Scaling down retires the last slot.
    corral.rewrite(&config.clone().set("workers.count", 1));
    corral.signal(Signal::SIGHUP);
    assert!(eventually(Duration::from_secs(15), || corral.status()
        ["backends"]
        .as_array()
        .unwrap()
        .len()
        == 1));
    assert_gone(
        after[1..].to_vec(),
        Duration::from_secs(10),
        "a retired worker",
    );
}

#[test]
fn sighup_that_changes_the_command_rolls_it_out() {
    let config = Config::new().demo_workers(2);
    let corral = Corral::start(
        &config
            .clone()
            .set("workers.env", Raw("{ FLAVOUR = \"a\" }")),
    );
    corral.wait_up(2);
    let before = corral.worker_pids();
    corral.rewrite(&config.set("workers.env", Raw("{ FLAVOUR = \"b\" }")));
    corral.signal(Signal::SIGHUP);
    assert!(
        eventually(Duration::from_secs(20), || {
            let now = corral.worker_pids();
            now.len() == 2
                && now.iter().all(|p| !before.contains(p))
                && corral.backends_in("up") == 2
        }),
        "{}",
        corral.status()
    );
}

#[test]
fn a_listener_change_on_reload_is_refused() {
    let config = demo(1);
    let corral = Corral::start(&config);
    corral.wait_up(1);
    corral.rewrite(&config.set("listener.bind", format!("127.0.0.1:{}", free_port())));
    corral.signal(Signal::SIGHUP);
    corral.wait_log("listener.bind changed", Duration::from_secs(5));
    assert!(get_from(corral.front, None).is_ok());
}

#[test]
fn worker_output_reaches_the_log_tagged_even_when_it_is_huge() {
    let path = support("loud_worker.py");
    let corral = Corral::start(&round_robin(&["python3", &path], 1));
    corral.wait_up(1);
    corral.wait_log("after the flood", Duration::from_secs(10));
    let log = corral.log();
    let line = log.lines().find(|l| l.contains("after the flood")).unwrap();
    assert!(line.contains("worker=0"), "{line}");
    assert!(
        log.contains("truncated_bytes"),
        "the megabyte line was not cut"
    );
    assert!(
        log.len() < 1_000_000,
        "corral copied the whole flood: {} bytes",
        log.len()
    );
    assert_eq!(http(corral.admin, "GET", "/healthz").0, 200);
}

#[test]
fn workers_get_their_environment_and_expanded_arguments() {
    let dir = tempfile::tempdir().unwrap();
    // A worker that writes its environment and arguments, then serves.
    let script_path = support("env_worker.py");
    let base = free_port_range(4);
    let out = format!("{}/out-{{id}}.txt", dir.path().display());
    let command = ["python3", &script_path, &out, "port={port}"];
    let corral = Corral::start(
        &Config::new()
            .workers(&command, 2)
            .set("workers.port_base", base)
            .set("workers.env", Raw("{ GREETING = \"hi\" }")),
    );
    corral.wait_up(2);
    let text = std::fs::read_to_string(dir.path().join("out-1.txt")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("port={}", base + 1).as_str(),
            &(base + 1).to_string(),
            "127.0.0.1",
            "1",
            "2",
            "hi"
        ]
    );
}

#[test]
fn a_worker_that_runs_but_fails_its_checks_is_restarted_after_unhealthy_restart() {
    // Healthy for its first three requests (readiness and two checks), then 500s.
    let path = support("sickly_worker.py");
    let corral = Corral::start(
        &round_robin(&["python3", &path], 1)
            .set("workers.unhealthy_restart", "1s")
            .set("health.kind", "http")
            .set("health.path", "/")
            .set("health.interval", "200ms")
            .set("health.fall", 2),
    );
    corral.wait_up(1);
    let first = corral.worker_pids()[0];
    assert!(
        eventually(Duration::from_secs(15), || {
            let s = corral.status();
            s["backends"][0]["restarts"].as_u64().unwrap_or(0) >= 1
                && s["backends"][0]["pid"].as_u64() != Some(first as u64)
        }),
        "{}\n{}",
        corral.status(),
        corral.log()
    );
    assert_gone([first], Duration::from_secs(5), "the unhealthy worker");
    assert!(corral.log().contains("fails its health checks"));
}

#[test]
fn a_sighup_while_workers_boot_does_not_kill_corral() {
    let path = support("slow_boot_worker.py");
    let mut corral = Corral::start(&round_robin(&["python3", &path], 1));
    // The admin port answers while the worker is still booting.
    assert_eq!(corral.backends_in("up"), 0);
    corral.signal(Signal::SIGHUP);
    corral.wait_up(1);
    // The reload has been handled...
    assert!(eventually(Duration::from_secs(5), || {
        corral.metric("corral_config_reloads_total{result=\"success\"}") == 1.0
    }));
    // ...and corral still runs.
    assert_eq!(
        corral.wait_exit(Duration::from_millis(200)),
        None,
        "{}",
        corral.log()
    );
}
