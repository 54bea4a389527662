//! The operator's view end to end: the `status`, `scale`, `restart`,
//! `reload` and `check` commands against a running corral, worker resources
//! in /status and /metrics, the dashboard rendered by a real headless
//! Chromium, pm2-style one-liners, the startup line, worker output in the
//! log, `workers.max_memory` and `workers.metrics_path`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// What a `corral` client command printed, and how it exited.
struct Cli {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Cli {
    /// Both streams, stderr first.
    fn text(&self) -> String {
        format!("{}{}", self.stderr, self.stdout)
    }
}

impl std::fmt::Display for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout:\n{}--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `corral ARGS...` to the end.
fn cli(args: &[&str]) -> Cli {
    let out = Command::new(CORRAL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Cli {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// `corral ARGS...`, which must exit 0.
fn cli_ok(args: &[&str]) -> Cli {
    let out = cli(args);
    assert_eq!(out.code, Some(0), "corral {}: {out}", args.join(" "));
    out
}

/// `count` demo workers, round-robin, with ports for up to `slots` slots
/// and their replacements.
fn demo(count: usize, slots: u16) -> Config {
    Config::new()
        .strategy("round-robin")
        .demo_workers(count)
        .set("workers.port_base", free_port_range(2 * slots))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The cells of a table line (separated by two or more spaces), each with
/// the column where it starts.
fn cells(line: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && !(bytes[i] == b' ' && bytes.get(i + 1).is_none_or(|b| *b == b' '))
        {
            i += 1;
        }
        out.push((start, line[start..i].to_string()));
    }
    out
}

/// The text of `<td class="pid">` in the dashboard row of `backend`.
fn dashboard_pid(dom: &str, backend: &str) -> Option<String> {
    let start = dom.find(&format!("<tr data-backend=\"{backend}\">"))?;
    let row = &dom[start..];
    let row = &row[..row.find("</tr>")?];
    let cell = row.find("<td class=\"pid\">")? + "<td class=\"pid\">".len();
    let end = row[cell..].find("</td>")?;
    Some(row[cell..cell + end].to_string())
}

#[test]
fn status_prints_an_aligned_table_found_by_admin_or_by_file() {
    let corral = Corral::start(&demo(2, 2));
    corral.wait_up(2);
    let pids = corral.worker_pids();
    assert_eq!(pids.len(), 2);
    let admin = corral.admin.to_string();
    let config = corral.config_path.display().to_string();

    for args in [
        ["status", "--admin", admin.as_str()],
        ["status", "-c", config.as_str()],
    ] {
        let out = cli_ok(&args);
        let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
        let header = cells(lines[0]);
        let names: Vec<&str> = header.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CONNS", "CPU", "MEM"],
            "corral {}: {out}",
            args.join(" ")
        );
        // A cell is aligned with its column: same start (left-aligned) or
        // same end (right-aligned) as the header's title.
        let aligned = |start: usize, text: &str, column: usize| {
            let (hs, ht) = &header[column];
            start == *hs || start + text.len() == hs + ht.len()
        };
        for (id, pid) in pids.iter().enumerate() {
            let row = lines
                .iter()
                .position(|l| l.starts_with(&format!("worker-{id} ")))
                .unwrap_or_else(|| panic!("no row for worker-{id}: {out}"));
            assert_eq!(row, 1 + id, "rows out of order: {out}");
            let row = cells(lines[row]);
            assert_eq!(row.len(), 8, "row of worker-{id}: {row:?}\n{out}");
            for (column, (start, text)) in row.iter().enumerate() {
                assert!(
                    aligned(*start, text, column),
                    "worker-{id}'s {text:?} is not under {:?}:\n{}",
                    header[column].1,
                    out.stdout
                );
            }
            assert_eq!(row[1].1, "up", "{out}");
            assert_eq!(row[2].1, pid.to_string(), "{out}");
        }
        // The totals line follows the rows, its cells under the header's.
        let total = lines[1 + pids.len()];
        assert!(
            total.starts_with("total "),
            "no totals line after the rows: {out}"
        );
        let total = cells(total);
        assert_eq!(total[1].1, "2/2 up", "{out}");
        for (start, text) in &total {
            assert!(
                (0..8).any(|c| aligned(*start, text, c)),
                "total's {text:?} is under no column:\n{}",
                out.stdout
            );
        }
    }
    // The table is the last thing printed.
    let out = cli_ok(&["status", "--admin", &admin]);
    assert!(
        out.stdout
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("total "),
        "lines after the totals line: {out}"
    );
}

#[test]
fn status_against_a_closed_port_names_the_address_and_exits_1() {
    let closed = addr(free_port()).to_string();
    let out = cli(&["status", "--admin", &closed]);
    assert_eq!(out.code, Some(1), "{out}");
    let text = out.text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {out}");
    assert!(lines[0].contains(&closed), "{out}");
}

#[test]
fn scale_up_then_down_stops_the_retired_workers() {
    let corral = Corral::start(&demo(2, 4));
    corral.wait_up(2);
    let first = corral.worker_pids();
    let admin = corral.admin.to_string();

    cli_ok(&["scale", "4", "--admin", &admin]);
    assert!(
        eventually(Duration::from_secs(20), || corral.all_up(4)),
        "never 4 workers up: {}",
        corral.status()
    );
    let four = corral.worker_pids();
    assert_eq!(four.len(), 4);
    assert_eq!(four[..2], first[..], "scaling up restarted workers");

    let config = corral.config_path.display().to_string();
    cli_ok(&["scale", "2", "-c", &config]);
    assert!(
        eventually(Duration::from_secs(20), || corral.all_up(2)),
        "never back to 2 workers: {}",
        corral.status()
    );
    assert_gone(
        four[2..].to_vec(),
        Duration::from_secs(15),
        "a worker of a retired slot",
    );
    assert_eq!(
        corral.worker_pids(),
        first,
        "scaling down restarted workers"
    );
    for _ in 0..4 {
        let body = get_from(corral.front, None).unwrap();
        assert!(
            ["worker=0", "worker=1"].contains(&worker_of(&body).as_str()),
            "{body}"
        );
    }
}

#[test]
fn restart_command_replaces_every_worker_under_load_without_errors() {
    let corral = Corral::start(&demo(2, 2));
    corral.wait_up(2);
    let before = corral.worker_pids();
    let load = Load::start(corral.front, 4);
    assert!(eventually(Duration::from_secs(10), || load.served() > 100));
    let admin = corral.admin.to_string();
    let out = cli(&["restart", "--admin", &admin]);
    let replaced = eventually(Duration::from_secs(30), || {
        let now = corral.worker_pids();
        now.len() == 2 && now.iter().all(|p| !before.contains(p)) && corral.all_up(2)
    });
    let went_on = load.serves_more(100);
    let (served, failed, errors) = load.finish();
    assert_eq!(out.code, Some(0), "corral restart: {out}");
    assert!(
        replaced,
        "not every worker was replaced: {before:?} -> {}",
        corral.status()
    );
    assert!(went_on, "the clients stalled after the restart: {served}");
    eprintln!("corral restart under load: {served} served, {failed} failed");
    assert_eq!(failed, 0, "{failed} of {served} failed: {errors:?}");
    assert_gone(before, Duration::from_secs(10), "an old worker");
}

#[test]
fn reload_applies_a_new_count_and_refuses_a_bad_file_with_its_reason() {
    let config = demo(2, 3);
    let corral = Corral::start(&config);
    corral.wait_up(2);
    let path = corral.config_path.display().to_string();
    let admin = corral.admin.to_string();

    corral.rewrite(&config.clone().set("workers.count", 3));
    cli_ok(&["reload", "-c", &path]);
    assert_eq!(
        corral.workers().len(),
        3,
        "corral reload returned before the count applied: {}",
        corral.status()
    );
    assert!(
        eventually(Duration::from_secs(20), || corral.all_up(3)),
        "{}",
        corral.status()
    );
    let three = corral.worker_pids();

    let bad = config
        .clone()
        .set("workers.count", 3)
        .set("health.interval", "soon");
    corral.rewrite(&bad);
    let line = 1 + bad
        .text()
        .lines()
        .position(|l| l.starts_with("interval = "))
        .unwrap();
    let names_it =
        |text: &str| text.contains(&format!("{path}:{line}:")) && text.contains("health.interval");

    let (code, body) = http(corral.admin, "POST", "/reload");
    assert_eq!(code, 400, "POST /reload of a bad file: {body}");
    assert!(names_it(&body), "POST /reload's reason: {body}");

    let by_admin = cli(&["reload", "--admin", &admin]);
    assert_eq!(by_admin.code, Some(1), "corral reload --admin: {by_admin}");
    assert!(
        names_it(&by_admin.text()),
        "the reason lacks {path}:{line}: and health.interval: {by_admin}"
    );

    // The old config stays.
    assert!(corral.all_up(3), "{}", corral.status());
    assert_eq!(corral.worker_pids(), three);
    assert!(get_from(corral.front, None).is_ok());

    let by_file = cli(&["reload", "-c", &path]);
    assert!(
        names_it(&by_file.text()),
        "the reason lacks {path}:{line}: and health.interval: {by_file}"
    );
    assert_eq!(
        by_file.code,
        Some(1),
        "corral reload -c FILE of a refused reload (docs/cli.md: exit 1): {by_file}"
    );
}

#[test]
fn status_and_metrics_give_each_worker_its_resources() {
    let corral = Corral::start(&demo(2, 2));
    corral.wait_up(2);
    for _ in 0..20 {
        get_from(corral.front, None).unwrap();
    }
    let positive_uptime = eventually(Duration::from_secs(10), || {
        corral
            .workers()
            .iter()
            .all(|w| w["uptime_seconds"].as_f64().unwrap_or(0.0) > 0.0)
    });
    let status = corral.status();
    assert!(positive_uptime, "{status}");
    for w in corral.workers() {
        let cpu = w["cpu_seconds"].as_f64();
        assert!(cpu.is_some_and(|c| c >= 0.0), "cpu_seconds: {w}");
        let memory = w["memory_bytes"].as_u64().unwrap_or(0);
        assert!(
            memory > 1 << 20 && memory < 4 << 30,
            "memory_bytes of a demo worker: {w}"
        );
    }

    let text = corral.metrics();
    for id in 0..2 {
        let backend = [("backend", format!("worker-{id}"))];
        let backend: Vec<(&str, &str)> = backend.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let cpu = sample(&text, "corral_worker_cpu_seconds_total", &backend);
        assert!(cpu.is_some_and(|c| c >= 0.0), "cpu of worker-{id}:\n{text}");
        let memory = sample(&text, "corral_worker_resident_memory_bytes", &backend);
        assert!(
            memory.is_some_and(|m| m > (1 << 20) as f64 && m < (4u64 << 30) as f64),
            "memory of worker-{id}: {memory:?}\n{text}"
        );
    }
    assert!(text.contains("# TYPE corral_worker_cpu_seconds_total counter"));
    assert!(text.contains("# TYPE corral_worker_resident_memory_bytes gauge"));
    promtool_accepts(&text);
}

#[test]
fn the_dashboard_rendered_by_chromium_shows_each_worker_and_its_pid() {
    let corral = Corral::start(&demo(2, 2));
    corral.wait_up(2);
    let (code, page) = http(corral.admin, "GET", "/");
    assert_eq!(code, 200);
    assert!(page.to_ascii_lowercase().contains("<html"), "{page}");
    // Self-contained: everything it loads is inline.
    for attribute in ["src=", "href="] {
        for (at, _) in page.match_indices(attribute) {
            let value = page[at + attribute.len()..].trim_start_matches(['"', '\'']);
            assert!(
                value.starts_with("data:") || value.starts_with('#'),
                "the dashboard loads something: {}",
                &page[at..(at + 80).min(page.len())]
            );
        }
    }
    assert!(!page.contains("@import"), "the dashboard imports a style");

    let dom = rendered_dom(&format!("http://{}/", corral.admin));
    let pids = corral.worker_pids();
    for (id, pid) in pids.iter().enumerate() {
        let shown = dashboard_pid(&dom, &format!("worker-{id}"));
        assert_eq!(
            shown,
            Some(pid.to_string()),
            "worker-{id}'s row in the rendered dashboard:\n{dom}"
        );
    }
}

/// Sends 30 requests through `front` and counts them by worker.
fn spread_of_30(front: SocketAddr) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..30 {
        let body = get_from(front, None).unwrap();
        *counts.entry(worker_of(&body)).or_insert(0) += 1;
    }
    counts
}

fn ten_each_of_three() -> BTreeMap<String, usize> {
    (0..3).map(|i| (format!("worker={i}"), 10)).collect()
}

/// No per-connection lines once the requests are done: log.connections
/// defaults to false.
fn assert_no_connection_lines(corral: &Corral) {
    // A last request, and the log has caught up with the status query after it.
    get_from(corral.front, None).unwrap();
    corral.status();
    std::thread::sleep(Duration::from_millis(300));
    let log = corral.log();
    assert!(
        !log.contains("connection closed"),
        "per-connection lines without log.connections:\n{log}"
    );
}

/// Runs the one-liner `corral run FLAGS... -i COUNT -- corral demo-worker`
/// (as [`Corral::start_flags`] does).
fn run_demo_one_liner(flags: &[&str], count: &str, front: SocketAddr, admin: SocketAddr) -> Corral {
    let mut args = flags.to_vec();
    args.extend(["-i", count, "--", "corral", "demo-worker"]);
    Corral::start_flags(&args, front, admin)
}

/// Writes `config` to a file in a fresh directory; returns the directory
/// (the file lives as long as it does) and the file's path.
fn config_file(config: &Config) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    config.write(&file);
    let path = file.display().to_string();
    (dir, path)
}

/// Three workers take 30 requests ten each, and log no per-connection line.
fn assert_round_robin_over_three(corral: &Corral) {
    assert_eq!(spread_of_30(corral.front), ten_each_of_three());
    assert_no_connection_lines(corral);
}

#[test]
fn the_one_liner_without_a_config_file_round_robins_over_three_workers() {
    // No file and no --port-base: corral picks free worker ports itself.
    let (front, admin) = (addr(free_port()), addr(free_port()));
    let (bind, admin_arg) = (front.to_string(), admin.to_string());
    let corral = run_demo_one_liner(&["--bind", &bind, "--admin", &admin_arg], "3", front, admin);
    corral.wait_all_up(3);
    assert_eq!(corral.status()["strategy"], "round-robin");
    assert_round_robin_over_three(&corral);
}

#[test]
fn the_one_liner_supplies_the_command_a_file_without_one_lacks() {
    let base = free_port_range(6);
    let config = Config::new()
        .set("workers.count", 1)
        .set("workers.port_base", base);
    let (_dir, file_arg) = config_file(&config);
    let port = free_port();
    let front = addr(port);
    let admin = addr(free_port());
    let (bind, admin_arg) = (format!("localhost:{port}"), admin.to_string());
    let corral = run_demo_one_liner(
        &["-c", &file_arg, "--bind", &bind, "--admin", &admin_arg],
        "3",
        front,
        admin,
    );
    corral.wait_all_up(3);
    // The flags won over the file's addresses.
    assert!(
        try_http(config.admin, "GET", "/healthz").is_err(),
        "the file's admin.bind answers too"
    );
    assert!(TcpStream::connect(config.front).is_err());
    let addresses: BTreeSet<String> = corral
        .workers()
        .iter()
        .map(|w| w["address"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    assert_eq!(addresses, expected, "the file's port_base was not used");
    assert_round_robin_over_three(&corral);
}

#[test]
fn the_one_liner_accepts_an_all_interfaces_bind() {
    let config = Config::new().set("workers.port_base", free_port_range(2));
    let (_dir, file_arg) = config_file(&config);
    let port = free_port();
    let bind = format!(":{port}");
    let corral = run_demo_one_liner(
        &["-c", &file_arg, "--bind", &bind],
        "1",
        addr(port),
        config.admin,
    );
    corral.wait_up(1);
    let body = get_from(corral.front, None).unwrap();
    assert_eq!(worker_of(&body), "worker=0", "{body}");
    corral.wait_log(&format!("0.0.0.0:{port}"), Duration::from_secs(5));
}

/// `corral check FILE` and `corral check -c FILE` on `config` both exit
/// `code` and say `says`, and say the same.
fn check_with_and_without_dash_c(dir: &Path, name: &str, config: &Config, code: i32, says: &str) {
    let file = dir.join(name);
    config.write(&file);
    let file = file.display().to_string();
    let bare = cli(&["check", &file]);
    let dashed = cli(&["check", "-c", &file]);
    for out in [&bare, &dashed] {
        assert_eq!(out.code, Some(code), "{out}");
        assert!(out.text().contains(says), "{out}");
    }
    assert_eq!(bare.text(), dashed.text());
}

#[test]
fn check_takes_the_file_with_or_without_dash_c() {
    let dir = tempfile::tempdir().unwrap();
    check_with_and_without_dash_c(dir.path(), "good.toml", &demo(2, 2), 0, "ok");
    let bad = demo(2, 2).set("health.interval", "soon");
    check_with_and_without_dash_c(dir.path(), "bad.toml", &bad, 2, "health.interval");
}

#[test]
fn the_startup_line_says_where_corral_serves_and_which_workers_run() {
    let corral = Corral::start(&demo(2, 2));
    corral.wait_up(2);
    corral.wait_log("corral serving", Duration::from_secs(10));
    let pids = corral.worker_pids();
    let log = corral.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("corral serving"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let line = lines[0];
    for part in [
        corral.front.to_string(),
        format!("http://{}", corral.admin),
        "2/2 workers up".to_string(),
        pids[0].to_string(),
        pids[1].to_string(),
    ] {
        assert!(line.contains(&part), "{part:?} not in {line:?}");
    }
}

#[test]
fn worker_stdout_and_stderr_lines_are_tagged_apart() {
    let path = support("talk_worker.py");
    let corral = Corral::start(&Config::new().workers(&["python3", &path], 1));
    corral.wait_up(1);
    corral.wait_log("worker-0 | hello on stdout", Duration::from_secs(10));
    corral.wait_log("worker-0 ! hello on stderr", Duration::from_secs(10));
    let log = corral.log();
    assert!(!log.contains("worker-0 | hello on stderr"), "{log}");
    assert!(!log.contains("worker-0 ! hello on stdout"), "{log}");
}

#[test]
fn a_worker_above_max_memory_is_replaced_and_the_new_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    // The slot's first process grows to ~100 MiB a second after it starts;
    // its replacement (the marker file exists by then) stays small.
    let path = support("hog_worker.py");
    let marker = dir.path().join("grown-once").display().to_string();
    let corral = Corral::start(
        &Config::new()
            .workers(&["python3", &path, &marker], 1)
            .set("workers.max_memory", "60MiB"),
    );
    corral.wait_up(1);
    let first = corral.worker_pids()[0];
    let replaced = eventually(Duration::from_secs(30), || {
        let w = &corral.workers()[0];
        w["state"] == "up" && w["pid"].as_u64().is_some_and(|p| p != first as u64)
    });
    let status = corral.status();
    let log = corral.log();
    assert!(log.contains("grown"), "the worker never grew:\n{log}");
    assert!(
        replaced,
        "the worker above max_memory was not replaced: {status}\n{log}"
    );
    let w = &status["backends"][0];
    assert!(
        w["restarts"].as_u64().unwrap_or(0) >= 1 || log.contains("memory"),
        "the replacement is neither counted nor logged: {status}\n{log}"
    );
    for line in log.lines().filter(|l| l.contains("max_memory")) {
        eprintln!("max_memory: {line}");
    }
    assert_gone(
        [first],
        Duration::from_secs(10),
        "the worker above max_memory",
    );
    let now = corral.worker_pids()[0];
    let mut stream = TcpStream::connect(corral.front).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert_eq!(answer.trim(), format!("pid={now}"));
}

#[test]
fn worker_metrics_are_merged_into_corrals_with_a_worker_label() {
    let path = support("small_metrics_worker.py");
    let corral = Corral::start(
        &Config::new()
            .workers(&["python3", &path], 2)
            .set("workers.metrics_path", "/metrics"),
    );
    corral.wait_up(2);
    let merged = |text: &str| {
        (0..2).all(|id| {
            let id = id.to_string();
            sample(
                text,
                "demo_requests_total",
                &[("path", "/"), ("worker", id.as_str())],
            ) == Some(3.0)
        })
    };
    let mut text = String::new();
    let found = eventually(Duration::from_secs(20), || {
        text = corral.metrics();
        merged(&text)
    });
    assert!(
        found,
        "no demo_requests_total{{path=\"/\",worker=\"0\"|\"1\"}} 3 in /metrics:\n{text}\nlog:\n{}",
        corral.log()
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("# TYPE demo_requests_total "))
            .count(),
        1,
        "{text}"
    );
    promtool_accepts(&text);
}

/// `corral demo-worker` handed a listening socket as fd 3 (`LISTEN_FDS=1`,
/// systemd's way) accepts from it without `PORT`, and on SIGTERM stops
/// accepting and exits cleanly.
#[test]
fn the_demo_worker_accepts_a_handed_socket_and_stops_on_sigterm() {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut command = Command::new(CORRAL);
    command
        .arg("demo-worker")
        .env_remove("PORT")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "corral")
        .env("CORRAL_WORKER_ID", "7")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec, only dup2 and fcntl (async-signal-safe)
    // on an fd this test owns. dup2 onto itself would keep close-on-exec.
    unsafe {
        command.pre_exec(move || {
            let done = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut worker = Killed(command.spawn().unwrap());
    drop(listener);
    for _ in 0..3 {
        let (code, body) = http(addr, "GET", "/");
        assert_eq!(code, 200, "{body}");
        assert!(
            body.starts_with(&format!("worker=7 pid={}", worker.0.id())),
            "{body}"
        );
    }
    send_signal(worker.0.id(), nix::sys::signal::Signal::SIGTERM);
    let mut status = None;
    assert!(
        eventually(Duration::from_secs(15), || {
            status = worker.0.try_wait().ok().flatten();
            status.is_some()
        }),
        "the worker did not exit after SIGTERM"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
}
