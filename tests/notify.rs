//! Workers that talk back (`workers.notify`, `workers.watchdog`): systemd's
//! notify protocol per worker, and `corral signal` to one worker. Real
//! Python workers (tests/support/notify_worker.py) speak the protocol with
//! a plain datagram socket, as the docs show.

mod common;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;

/// `count` notify workers (port mode, round-robin) with `env` added.
fn notify_workers(count: usize, env: &[(&str, &str)]) -> Config {
    let worker = support("notify_worker.py");
    let mut env_table = String::from("{ ");
    for (i, (key, value)) in env.iter().enumerate() {
        if i > 0 {
            env_table.push_str(", ");
        }
        env_table.push_str(&format!("{key} = {value:?}"));
    }
    env_table.push_str(" }");
    Config::new()
        .workers(&[python(), worker.as_str()], count)
        // Room for a scale-up to 2 and every replacement.
        .set("workers.port_base", free_port_range(4))
        .set("workers.notify", true)
        .set("workers.env", Raw(&env_table))
        .set("health.interval", "200ms")
        .strategy("round-robin")
}

fn get(front: SocketAddr) -> Result<String, String> {
    get_from(front, None).map_err(|e| e.to_string())
}

#[test]
fn a_worker_gets_no_client_before_it_says_ready_though_it_accepts() {
    let config = notify_workers(1, &[("READY_DELAY", "3"), ("READY_DELAY_ID", "1")]);
    let corral = Corral::start(&config);
    corral.wait_up(1);
    let (code, body) = http(corral.admin, "POST", "/workers/scale?count=2");
    assert_eq!(code, 202, "{body}");
    // worker-1 listens at once but says READY=1 only 3 s later.
    assert!(
        eventually(Duration::from_secs(10), || corral.worker(1)["pid"]
            .as_u64()
            .is_some()),
        "worker-1 never started: {}",
        corral.status()
    );
    let address: SocketAddr = eventually_value(&corral);
    let mut direct = Err(String::new());
    let accepts = eventually(Duration::from_secs(10), || {
        direct = get(address);
        direct.is_ok()
    });
    assert!(
        accepts,
        "worker-1 does not accept on its own port before it is ready: {direct:?}"
    );
    assert_eq!(worker_of(&direct.unwrap_or_default()), "worker=1");
    // The worker sent STATUS= before it accepted; corral reads the datagram
    // on its own time, so /status may show it a moment after the answer.
    let status_shown = eventually(Duration::from_secs(2), || {
        corral.worker(1)["status"] == "warming caches"
    });
    let starting = corral.worker(1);
    assert!(status_shown, "{starting}");
    assert_eq!(starting["state"], "starting", "{starting}");
    assert_eq!(starting["status"], "warming caches", "{starting}");
    let (code, table) = corral_cmd(&["status", "--admin", &corral.admin.to_string()]);
    assert_eq!(code, Some(0), "{table}");
    assert!(
        table.contains("warming caches"),
        "corral status does not show the worker's STATUS=:\n{table}"
    );
    // Meanwhile every client goes to worker-0, and none fails.
    // An answer counts only if worker-1 was still not up after it: then
    // the client was placed while worker-1 had not said READY=1.
    let mut answers = Vec::new();
    loop {
        let answer = worker_of(&get(corral.front).expect("a client failed"));
        if corral.worker(1)["state"] == "up" {
            break;
        }
        answers.push(answer);
        assert!(answers.len() < 100_000, "worker-1 never came up");
    }
    assert!(!answers.is_empty());
    assert!(
        answers.iter().all(|w| w == "worker=0"),
        "a client reached worker-1 before its READY=1: {answers:?}"
    );
    // STATUS=serving came with READY=1; the slot reads it once it is up.
    let serving = eventually(Duration::from_secs(5), || {
        corral.worker(1)["status"] == "serving"
    });
    assert!(serving, "{}", corral.worker(1));
    let reached_1 = (0..20).any(|_| get(corral.front).is_ok_and(|b| worker_of(&b) == "worker=1"));
    assert!(reached_1, "worker-1 gets no client once it is ready");
}

/// Waits until worker-1 has an address in /status.
fn eventually_value(corral: &Corral) -> SocketAddr {
    let mut found = None;
    eventually(Duration::from_secs(10), || {
        found = corral.worker(1)["address"]
            .as_str()
            .and_then(|a| a.parse().ok());
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("worker-1 has no address: {}", corral.status()))
}

#[test]
fn a_worker_that_never_says_ready_is_killed_naming_workers_notify() {
    let config = notify_workers(1, &[("NEVER_READY", "1")]).set("workers.ready_timeout", "1s");
    let corral = Corral::start(&config);
    corral.wait_log("workers.notify", Duration::from_secs(15));
    let log = corral.log();
    assert!(
        log.lines().any(|l| l.contains("READY=1")
            && l.contains("ready_timeout")
            && l.contains("workers.notify")),
        "no line says the worker sent no READY=1:\n{log}"
    );
    assert_ne!(corral.worker(0)["state"], "up");
}

#[test]
fn a_worker_whose_watchdog_stops_is_down_for_watchdog_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let stop_file = dir.path().join("stop-watchdog");
    let stop_path = stop_file.display().to_string();
    let config = notify_workers(2, &[("WATCHDOG_STOP_FILE", stop_path.as_str())])
        .set("workers.watchdog", "1s");
    let corral = Corral::start(&config);
    corral.wait_up(2);
    // Alive workers feed their watchdogs: nothing happens for a while.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(corral.worker(0)["restarts"], 0, "{}", corral.status());
    let hung = corral.worker(0)["pid"].as_u64().unwrap();
    let other = corral.worker(1)["pid"].as_u64().unwrap();
    std::fs::write(&stop_file, hung.to_string()).unwrap();
    corral.wait_log("watchdog pings stopped", Duration::from_secs(5));
    let replaced = eventually(Duration::from_secs(10), || {
        let w = corral.worker(0);
        w["state"] == "up" && w["pid"].as_u64() != Some(hung)
    });
    assert!(replaced, "worker-0 was not replaced: {}", corral.status());
    let log = corral.log();
    assert!(
        log.lines().any(|l| l.contains("WATCHDOG=1")
            && l.contains("watchdog")
            && l.contains(&hung.to_string())),
        "no line says the watchdog expired:\n{log}"
    );
    // Counted once the hung process has been stopped.
    let counted = eventually(Duration::from_secs(10), || {
        corral.worker(0)["restarts"] == 1
    });
    assert!(counted, "the restart was not counted: {}", corral.status());
    assert_eq!(
        corral.worker(1)["pid"].as_u64(),
        Some(other),
        "the other worker was touched"
    );
    assert_eq!(
        corral.metric("corral_worker_restarts_total{backend=\"worker-0\"}"),
        1.0
    );
}

#[test]
fn a_datagram_from_an_unrelated_process_is_ignored_and_counted() {
    let config = notify_workers(1, &[]);
    let corral = Corral::start(&config);
    corral.wait_up(1);
    let line = corral
        .log()
        .lines()
        .find_map(|l| {
            let after = l.split("notify=").nth(1)?;
            after.split_whitespace().next().map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "the worker did not print its NOTIFY_SOCKET:\n{}",
                corral.log()
            )
        });
    assert!(!line.is_empty(), "the worker got no NOTIFY_SOCKET");
    let before = corral.metric("corral_worker_notify_ignored_total");
    // This test process is no descendant of corral.
    let stranger = UnixDatagram::unbound().unwrap();
    stranger
        .send_to(b"STOPPING=1\nSTATUS=owned", &line)
        .expect("the notify socket takes datagrams");
    let counted = eventually(Duration::from_secs(5), || {
        corral.metric("corral_worker_notify_ignored_total") > before
    });
    assert!(counted, "the stranger's datagram was not counted");
    let w = corral.worker(0);
    assert_eq!(w["state"], "up", "a stranger took the worker out: {w}");
    assert_ne!(w["status"], "owned", "a stranger set the status: {w}");
}

/// A rolling restart waits for each new worker's READY=1 and fails no
/// request (port mode, then fd mode).
fn rolling_restart_waits_for_ready(config: Config) {
    let corral = Corral::start(&config);
    corral.wait_up(2);
    let before = corral.worker_pids();
    let load = Load::start(corral.front, 4);
    assert!(load.serves_more(50));
    let (code, body) = http(corral.admin, "POST", "/workers/restart");
    assert_eq!(code, 202, "{body}");
    let replaced = eventually(Duration::from_secs(30), || {
        let now = corral.worker_pids();
        now.len() == 2 && now.iter().all(|p| !before.contains(p)) && corral.backends_in("up") == 2
    });
    assert!(
        replaced,
        "not every worker was replaced: {}",
        corral.status()
    );
    assert!(load.serves_more(50));
    let (served, failed, errors) = load.finish();
    assert_eq!(
        failed, 0,
        "{failed} of {served} requests failed: {errors:?}"
    );
    // Each new worker was up only after its READY=1, which comes 1 s after
    // it listens: the log shows both, in that order.
    let log = corral.log();
    assert!(
        log.matches("worker replaced").count() >= 2,
        "no replacement logged:\n{log}"
    );
}

#[test]
fn a_rolling_restart_under_load_waits_for_ready_in_port_mode() {
    rolling_restart_waits_for_ready(notify_workers(2, &[("READY_DELAY", "1")]));
}

#[test]
fn a_rolling_restart_under_load_waits_for_ready_in_fd_mode() {
    rolling_restart_waits_for_ready(
        notify_workers(2, &[("READY_DELAY", "1")]).set("workers.listen", "fd"),
    );
}

#[test]
fn corral_signal_reaches_the_named_worker_only() {
    let config = notify_workers(2, &[]);
    let corral = Corral::start(&config);
    corral.wait_up(2);
    let admin = corral.admin.to_string();
    let (code, text) = corral_cmd(&["signal", "worker-1", "USR1", "--admin", &admin]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("worker-1"), "{text}");
    let one = corral.worker(1)["pid"].as_u64().unwrap();
    let zero = corral.worker(0)["pid"].as_u64().unwrap();
    corral.wait_log(&format!("got SIGUSR1 pid={one}"), Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !corral.log().contains(&format!("got SIGUSR1 pid={zero}")),
        "worker-0 got the signal too:\n{}",
        corral.log()
    );
    let (code, text) = corral_cmd(&["signal", "all", "SIGUSR1", "--admin", &admin]);
    assert_eq!(code, Some(0), "{text}");
    corral.wait_log(&format!("got SIGUSR1 pid={zero}"), Duration::from_secs(5));

    let (code, text) = corral_cmd(&["signal", "worker-1", "KILL", "--admin", &admin]);
    assert_eq!(code, Some(1), "KILL was passed on: {text}");
    assert!(text.contains("KILL"), "{text}");
    let (code, text) = corral_cmd(&["signal", "worker-7", "USR1", "--admin", &admin]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("worker-7"),
        "the error does not name it: {text}"
    );
    assert!(alive(one as u32) && alive(zero as u32));
}

#[test]
fn check_refuses_a_watchdog_without_notify_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    notify_workers(1, &[])
        .set("workers.notify", false)
        .set("workers.watchdog", "5s")
        .write(&file);
    let (code, text) = corral_cmd(&["check", &file.display().to_string()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("workers.watchdog") && text.contains("workers.notify"),
        "{text}"
    );
}

#[test]
fn a_node_worker_with_the_sd_notify_package_is_ready_when_it_says_so() {
    require("node", "nodejs");
    let modules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/node/node_modules");
    assert!(
        modules.join("sd-notify").exists(),
        "the sd-notify npm package is missing: run scripts/test (apt-get install libsystemd-dev g++ make; cd tests/support/node && npm ci)"
    );
    let script = support("notify_worker.js");
    let modules = modules.display().to_string();
    let config = Config::new()
        .workers(&["node", script.as_str()], 2)
        .set("workers.notify", true)
        .set("workers.watchdog", "2s")
        .set(
            "workers.env",
            Raw(&format!(
                "{{ NODE_PATH = {modules:?}, READY_DELAY = \"1\" }}"
            )),
        )
        .strategy("round-robin");
    let corral = Corral::start(&config);
    corral.wait_up(2);
    for slot in 0..2 {
        let serving = eventually(Duration::from_secs(5), || {
            corral.worker(slot)["status"] == "serving"
        });
        assert!(serving, "{}", corral.worker(slot));
    }
    // The package feeds the watchdog: nobody is replaced for a while.
    std::thread::sleep(Duration::from_secs(5));
    for slot in 0..2 {
        let w = corral.worker(slot);
        assert_eq!(
            w["restarts"],
            0,
            "the watchdog fired: {w}\n{}",
            corral.log()
        );
        assert_eq!(w["state"], "up", "{w}");
    }
    let answer = get(corral.front).expect("served");
    assert!(answer.starts_with("worker="), "{answer}");
}
