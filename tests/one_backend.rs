//! The operator's commands on one backend, end to end against real corral
//! processes: `corral restart NAME` (only that worker replaced, under load,
//! no request failing), an unknown name, `corral disable` / `enable` (no
//! new connection reaches a disabled backend, worker or static; its
//! process keeps running; it stays disabled across its own restart and a
//! reload), the client errors that say what to do next, and the
//! dashboard's restart button clicked in a real headless Chromium.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// `count` demo workers, round-robin, quick health checks.
fn demo(count: usize) -> Config {
    Config::new()
        .strategy("round-robin")
        .demo_workers(count)
        .set("health.interval", "200ms")
}

/// `corral ARGS... --admin ADDR`, which must exit 0; its output.
fn ok(corral: &Corral, args: &[&str]) -> String {
    let admin = corral.admin.to_string();
    let mut all = args.to_vec();
    all.extend(["--admin", admin.as_str()]);
    let (code, text) = corral_cmd(&all);
    assert_eq!(code, Some(0), "corral {}: {text}", all.join(" "));
    text
}

/// name -> (state, pid) of every backend in /status.
fn states(corral: &Corral) -> Vec<(String, String, Option<u64>)> {
    corral.status()["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["state"].as_str().unwrap().to_string(),
                b["pid"].as_u64(),
            )
        })
        .collect()
}

fn state_of(corral: &Corral, name: &str) -> String {
    states(corral)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in /status"))
        .1
}

fn pid_of(corral: &Corral, name: &str) -> u32 {
    states(corral)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .and_then(|(_, _, pid)| pid)
        .unwrap_or_else(|| panic!("no pid for {name}: {}", corral.status())) as u32
}

/// Who answered `n` requests, one connection each.
fn answered_by(corral: &Corral, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            let body = get_from(corral.front, None)
                .unwrap_or_else(|e| panic!("request failed: {e}; log:\n{}", corral.log()));
            worker_of(&body)
        })
        .collect()
}

/// One keep-alive request on `stream`; the body of the answer.
fn keep_alive_get(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: corral\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

#[test]
fn restart_of_one_worker_replaces_only_its_pid_under_load_and_no_request_fails() {
    let corral = Corral::start(&demo(3));
    corral.wait_up(3);
    let before: Vec<u32> = (0..3)
        .map(|i| pid_of(&corral, &format!("worker-{i}")))
        .collect();
    let load = Load::start(corral.front, 4);
    assert!(load.serves_more(50), "the load never got going");

    let said = ok(&corral, &["restart", "worker-1"]);
    assert!(said.contains("restarting worker-1"), "{said}");
    let replaced = eventually(Duration::from_secs(30), || {
        let now = states(&corral);
        now.iter().all(|(_, state, _)| state == "up")
            && now
                .iter()
                .any(|(n, _, p)| n == "worker-1" && *p != Some(before[1] as u64))
    });
    assert!(
        replaced,
        "worker-1 was never replaced: {}\nlog:\n{}",
        corral.status(),
        corral.log()
    );
    assert_gone(
        [before[1]],
        Duration::from_secs(20),
        "worker-1's old process",
    );
    assert!(load.serves_more(50), "the load stopped after the restart");
    let (served, failed, errors) = load.finish();
    assert_eq!(
        failed, 0,
        "{failed} of {served} requests failed: {errors:?}"
    );
    assert_eq!(
        pid_of(&corral, "worker-0"),
        before[0],
        "worker-0 was touched"
    );
    assert_eq!(
        pid_of(&corral, "worker-2"),
        before[2],
        "worker-2 was touched"
    );
    assert_ne!(pid_of(&corral, "worker-1"), before[1]);
    // The new worker-1 takes clients.
    assert!(
        eventually(Duration::from_secs(10), || answered_by(&corral, 6)
            .contains("worker=1")),
        "the new worker-1 gets no clients"
    );
}

#[test]
fn an_unknown_name_is_refused_naming_it_and_the_names_there_are() {
    let app = Backend::start(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\napp"));
    let corral = Corral::start(&demo(2).backend("app", app.addr));
    corral.wait_up(3);
    let admin = corral.admin.to_string();
    let (code, text) = corral_cmd(&["restart", "worker-9", "--admin", &admin]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("\"worker-9\"") && text.contains("worker-0, worker-1"),
        "{text}"
    );
    for verb in ["disable", "enable"] {
        let (code, text) = corral_cmd(&[verb, "nope", "--admin", &admin]);
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains("\"nope\"") && text.contains("worker-0, worker-1, app"),
            "{verb}: {text}"
        );
    }
    let (status, body) = http(corral.admin, "POST", "/workers/restart?name=worker-9");
    assert_eq!(status, 404, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["known"], serde_json::json!(["worker-0", "worker-1"]));
    // A static backend has no process of corral's to restart.
    let (code, text) = corral_cmd(&["restart", "app", "--admin", &admin]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("static backend") && text.contains("corral disable app"),
        "{text}"
    );
    let (status, body) = http(corral.admin, "POST", "/workers/disable");
    assert_eq!(status, 400, "{body}");
    // Nothing changed.
    assert!(states(&corral).iter().all(|(_, state, _)| state == "up"));
}

#[test]
fn a_disabled_worker_gets_no_new_connection_keeps_its_process_and_comes_back() {
    let corral = Corral::start(&demo(2));
    corral.wait_up(2);
    let pid = pid_of(&corral, "worker-1");
    // A kept-alive connection to worker-1, open before the disable.
    let mut kept = None;
    for _ in 0..10 {
        let mut stream = TcpStream::connect(corral.front).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        if worker_of(&keep_alive_get(&mut stream)) == "worker=1" {
            kept = Some(stream);
            break;
        }
    }
    let mut kept = kept.expect("no connection reached worker-1 in 10 tries");

    let said = ok(&corral, &["disable", "worker-1"]);
    assert!(said.contains("worker-1 disabled"), "{said}");
    assert_eq!(state_of(&corral, "worker-1"), "disabled");
    let metrics = corral.metrics();
    assert_eq!(
        metric_value(&metrics, "corral_backend_up{backend=\"worker-1\"}"),
        0.0
    );
    assert_eq!(
        metric_value(&metrics, "corral_backend_disabled{backend=\"worker-1\"}"),
        1.0
    );
    let table = ok(&corral, &["status"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("worker-1") && l.contains("disabled")),
        "{table}"
    );
    let by = answered_by(&corral, 20);
    assert_eq!(
        by,
        BTreeSet::from(["worker=0".to_string()]),
        "disabled worker-1 got clients"
    );
    assert_eq!(pid_of(&corral, "worker-1"), pid, "its process was replaced");
    assert!(alive(pid), "its process stopped");
    // The connection open before goes on with it.
    assert_eq!(worker_of(&keep_alive_get(&mut kept)), "worker=1");
    drop(kept);

    // A second disable says so; the state does not change.
    let again = ok(&corral, &["disable", "worker-1"]);
    assert!(again.contains("already"), "{again}");

    // Its slot's rolling restart: the replacement is disabled too.
    ok(&corral, &["restart", "worker-1"]);
    assert!(
        eventually(Duration::from_secs(30), || pid_of(&corral, "worker-1")
            != pid),
        "worker-1 never replaced: {}",
        corral.status()
    );
    assert_gone([pid], Duration::from_secs(20), "worker-1's old process");
    let replacement = pid_of(&corral, "worker-1");
    assert_eq!(state_of(&corral, "worker-1"), "disabled");
    // And a reload keeps it disabled.
    ok(&corral, &["reload"]);
    assert_eq!(state_of(&corral, "worker-1"), "disabled");
    let by = answered_by(&corral, 20);
    assert_eq!(
        by,
        BTreeSet::from(["worker=0".to_string()]),
        "after restart and reload"
    );

    let said = ok(&corral, &["enable", "worker-1"]);
    assert!(said.contains("worker-1 enabled"), "{said}");
    assert!(
        eventually(Duration::from_secs(10), || state_of(&corral, "worker-1")
            == "up"),
        "{}",
        corral.status()
    );
    assert_eq!(
        corral.metric("corral_backend_disabled{backend=\"worker-1\"}"),
        0.0
    );
    assert!(
        eventually(Duration::from_secs(10), || answered_by(&corral, 6)
            .contains("worker=1")),
        "worker-1 never came back into rotation"
    );
    assert_eq!(pid_of(&corral, "worker-1"), replacement);
}

#[test]
fn a_disabled_static_backend_and_a_sticky_clients_worker_get_no_new_connection() {
    let app = Backend::start(reply(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nworker=app",
    ));
    let corral = Corral::start(&demo(2).strategy("sticky").backend("app", app.addr));
    corral.wait_up(3);
    // Each of a few client addresses has its backend (placed by hashing).
    let clients: Vec<std::net::IpAddr> = (2..12)
        .map(|i| format!("127.0.0.{i}").parse().unwrap())
        .collect();
    let placed: Vec<String> = clients
        .iter()
        .map(|&ip| worker_of(&get_from(corral.front, Some(ip)).unwrap()))
        .collect();
    let victim = placed[0].clone();
    let victim_name = match victim.strip_prefix("worker=") {
        Some("app") => "app".to_string(),
        Some(id) => format!("worker-{id}"),
        None => panic!("{victim}"),
    };
    ok(&corral, &["disable", &victim_name]);
    assert_eq!(state_of(&corral, &victim_name), "disabled");
    for (ip, before) in clients.iter().zip(&placed) {
        let now = worker_of(&get_from(corral.front, Some(*ip)).unwrap());
        assert_ne!(
            now, victim,
            "client {ip} still reached disabled {victim_name}"
        );
        if *before != victim {
            assert_eq!(
                &now, before,
                "client {ip} moved although its backend is in rotation"
            );
        }
    }
    // The static backend in particular.
    ok(&corral, &["enable", &victim_name]);
    ok(&corral, &["disable", "app"]);
    assert_eq!(state_of(&corral, "app"), "disabled");
    for ip in &clients {
        let now = worker_of(&get_from(corral.front, Some(*ip)).unwrap());
        assert_ne!(now, "worker=app", "client {ip} reached disabled app");
    }
    ok(&corral, &["enable", "app"]);
    assert!(
        eventually(Duration::from_secs(10), || state_of(&corral, "app") == "up"),
        "{}",
        corral.status()
    );
}

#[test]
fn client_errors_say_what_to_do_next() {
    // Nobody there.
    let nobody = format!("127.0.0.1:{}", free_port());
    let (code, text) = corral_cmd(&["restart", "--admin", &nobody]);
    assert_eq!(code, Some(1), "{text}");
    for hint in [
        "cannot reach",
        "may not be running",
        "--admin ADDR",
        "-c FILE",
    ] {
        assert!(text.contains(hint), "no {hint:?} in: {text}");
    }

    // An admin port on every interface without a token takes no command,
    // and says what to write.
    let port = free_port();
    let open = demo(1).set("admin.bind", format!("0.0.0.0:{port}"));
    let mut open = open;
    open.admin = format!("127.0.0.1:{port}").parse().unwrap();
    let corral = Corral::start(&open);
    corral.wait_up(1);
    let (code, text) = corral_cmd(&["restart", "--admin", &corral.admin.to_string()]);
    assert_eq!(code, Some(1), "{text}");
    for hint in ["token_file = ", "[admin]", "-c FILE", "127.0.0.1"] {
        assert!(text.contains(hint), "no {hint:?} in: {text}");
    }
    drop(corral);

    // A token is wanted and not given: where to give it.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let guarded = demo(1).set("admin.token_file", token.as_path());
    let corral = Corral::start(&guarded);
    corral.wait_up(1);
    let (code, text) = corral_cmd(&["disable", "worker-0", "--admin", &corral.admin.to_string()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("-c FILE"), "{text}");
    let config = corral.config_path.display().to_string();
    let (code, text) = corral_cmd(&["disable", "worker-0", "-c", &config]);
    assert_eq!(code, Some(0), "with the file's token: {text}");

    // scale tells how long the count holds: until the file is reloaded.
    let (code, text) = corral_cmd(&["scale", "2", "-c", &config]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("until the next reload of") && text.contains(&config),
        "{text}"
    );
    // `auto` is documented.
    let (_, help) = corral_cmd(&["help", "scale"]);
    assert!(help.contains("auto"), "{help}");
}

#[test]
fn the_dashboard_restart_button_replaces_that_worker_only() {
    let corral = Corral::start(&demo(3));
    corral.wait_up(3);
    let before: Vec<u32> = (0..3)
        .map(|i| pid_of(&corral, &format!("worker-{i}")))
        .collect();
    let load = Load::start(corral.front, 2);
    let url = format!("http://{}/", corral.admin);
    let chromium = Chromium::open(&url);
    let button = "tr[data-backend=\"worker-1\"] button[data-action=\"restart\"]";
    let printed = chromium.drive(&[
        &format!("wait:document.querySelector('{button}')"),
        // Two refreshes apart, the rates have moved under the load.
        "wait:/[1-9]/.test(document.getElementById('t-rate').textContent)",
        &format!("click:{button}"),
        "wait:document.getElementById('said').textContent",
        "print:document.getElementById('said').textContent",
        "print:document.getElementById('version').textContent",
    ]);
    assert!(printed.contains("restart worker-1: asked"), "{printed}");
    assert!(printed.contains(env!("CARGO_PKG_VERSION")), "{printed}");
    assert!(
        eventually(Duration::from_secs(30), || pid_of(&corral, "worker-1")
            != before[1]
            && corral.backends_in("up") == 3),
        "the click did not restart worker-1: {}\nlog:\n{}",
        corral.status(),
        corral.log()
    );
    assert_eq!(pid_of(&corral, "worker-0"), before[0]);
    assert_eq!(pid_of(&corral, "worker-2"), before[2]);
    // The page shows the new pid.
    let new_pid = pid_of(&corral, "worker-1").to_string();
    chromium.drive(&[&format!(
        "wait:document.querySelector('tr[data-backend=\"worker-1\"] td.pid').textContent === '{new_pid}'"
    )]);
    let (_, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}");
}

#[test]
fn with_a_token_the_dashboard_asks_for_it_and_its_buttons_send_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let corral = Corral::start(&demo(2).set("admin.token_file", token.as_path()));
    corral.wait_up(2);
    let chromium = Chromium::open(&format!("http://{}/", corral.admin));
    let button = "tr[data-backend=\"worker-0\"] button[data-action=\"disable\"]";
    let printed = chromium.drive(&[
        // The page knows a token is wanted and offers the field.
        "wait:!document.getElementById('tokenbox').classList.contains('hidden')",
        &format!("wait:document.querySelector('{button}')"),
        "type:#token=wrong",
        &format!("click:{button}"),
        "wait:document.getElementById('said').textContent.includes('401')",
        "print:document.getElementById('said').textContent",
    ]);
    assert!(printed.contains("token"), "{printed}");
    assert_eq!(state_of(&corral, "worker-0"), "up");
    chromium.drive(&[
        "wait:(document.getElementById('token').value = '', true)",
        "type:#token=s3cret-token",
        &format!("click:{button}"),
        "wait:document.querySelector('tr[data-backend=\"worker-0\"] td.state').textContent === 'disabled'",
        // Kept for this tab only.
        "wait:sessionStorage.getItem('corral-admin-token') === 's3cret-token'",
    ]);
    assert_eq!(state_of(&corral, "worker-0"), "disabled");
}
