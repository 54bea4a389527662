//! The workers' output end to end: `corral logs` (the last lines of one
//! worker or of all, `-f` following new ones, an unknown name), a reader
//! of `GET /logs?follow=1` that does not read, and `log.file` (rotated by
//! size, reopened on SIGHUP after an external rename). The workers are
//! tests/support/chatty_worker.py.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const PATIENCE: Duration = Duration::from_secs(30);

/// `count` chatty workers that print `burst` start lines of `width` bytes.
fn chatty(count: usize, burst: usize, width: usize) -> Config {
    Config::new().strategy("round-robin").workers(
        &[
            python(),
            &support("chatty_worker.py"),
            &burst.to_string(),
            &width.to_string(),
        ],
        count,
    )
}

/// `corral logs ARGS... --admin ADDR`: exit code, stdout, stderr.
fn logs(corral: &Corral, args: &[&str]) -> (Option<i32>, String, String) {
    let admin = corral.admin.to_string();
    let out = Command::new(CORRAL)
        .arg("logs")
        .args(args)
        .args(["--admin", &admin])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_last_lines_of_one_worker_or_of_all() {
    let corral = Corral::start(&chatty(2, 5, 0));
    corral.wait_up(2);
    let want = [
        "worker-0 | start 0 000003",
        "worker-0 | start 0 000004",
        "worker-0 | ready 0",
    ];
    let mut last = (None, String::new(), String::new());
    let shown = eventually(PATIENCE, || {
        last = logs(&corral, &["--lines", "3", "worker-0"]);
        last.0 == Some(0) && last.1.lines().collect::<Vec<_>>() == want
    });
    assert!(shown, "corral logs --lines 3 worker-0: {last:?}");

    // Without a name: every worker's lines, each line whole and tagged.
    let (code, all, err) = logs(&corral, &[]);
    assert_eq!(code, Some(0), "{err}");
    for ready in ["worker-0 | ready 0", "worker-1 | ready 1"] {
        assert!(
            all.lines().any(|l| l == ready),
            "{ready:?} missing in:\n{all}"
        );
    }
    assert_eq!(
        all.lines().count(),
        12,
        "5 start lines and ready, twice:\n{all}"
    );

    // The default is 50 lines; the admin endpoint answers the same text.
    let (status, body) = http(corral.admin, "GET", "/logs?name=worker-1&lines=2");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "worker-1 | start 1 000004\nworker-1 | ready 1\n");
}

#[test]
fn an_unknown_name_is_an_error_naming_it() {
    let corral = Corral::start(&chatty(1, 0, 0).backend("app", "127.0.0.1:9"));
    corral.wait_up(1);
    let (code, out, err) = logs(&corral, &["worker-7"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("no worker named worker-7"), "{err}");
    let (status, body) = http(corral.admin, "GET", "/logs?name=nobody");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nobody"), "{body}");
    let (status, body) = http(corral.admin, "GET", "/logs?name=app");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("app is a static backend"), "{body}");
    let (status, body) = http(corral.admin, "GET", "/logs?lines=many");
    assert_eq!(status, 400, "{body}");
}

/// The lines a child writes to stdout, as they come.
/// `corral logs -f --lines 0 ARGS... --admin ADDR`: its lines as they
/// come, and the process (killed when dropped).
fn follow(corral: &Corral, args: &[&str]) -> (mpsc::Receiver<String>, Killed) {
    let admin = corral.admin.to_string();
    let mut child = Command::new(CORRAL)
        .args(["logs", "-f", "--lines", "0"])
        .args(args)
        .args(["--admin", &admin])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    (lines, Killed(child))
}

fn lines_of(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn follow_shows_new_lines_of_that_worker_only() {
    let corral = Corral::start(&chatty(2, 0, 0));
    corral.wait_up(2);
    let (lines, _follower) = follow(&corral, &["worker-1"]);

    // Requests flow while it follows; it shows worker-1's as they come.
    let mut to_worker_1 = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut shown = Vec::new();
    let mut n = 0;
    let caught_up = eventually(PATIENCE, || {
        n += 1;
        let path = format!("/follow-{n}");
        if let Ok((200, body)) = try_http(corral.front, "GET", &path) {
            if body.starts_with("worker=1 ") {
                to_worker_1.insert(path);
            }
        }
        while let Ok(line) = lines.try_recv() {
            if let Some(path) = line.strip_prefix("worker-1 | request 1 ") {
                seen.insert(path.split_once(' ').map_or("", |(_, p)| p).to_string());
            }
            shown.push(line);
        }
        to_worker_1.len() >= 5 && to_worker_1.is_subset(&seen)
    });
    assert!(
        caught_up,
        "worker-1 served {to_worker_1:?}; the follower showed:\n{}",
        shown.join("\n")
    );
    for line in &shown {
        assert!(
            line.starts_with("worker-1 | ") || line.starts_with("worker-1 ! "),
            "a line that is not worker-1's: {line:?}"
        );
    }
    assert_eq!(seen, to_worker_1, "only what worker-1 served, each once");
}

#[test]
fn a_follower_that_does_not_read_holds_up_no_one() {
    let corral = Corral::start(&chatty(2, 10_000, 100));
    corral.wait_up(2);
    // A follower with a tiny receive window that never reads.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&corral.admin.into()).unwrap();
    let mut stuck: TcpStream = socket.into();
    let head = format!(
        "GET /logs?follow=1&lines=0 HTTP/1.1\r\nHost: {}\r\n\r\n",
        corral.admin
    );
    stuck.write_all(head.as_bytes()).unwrap();
    // It follows once its answer has begun.
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = Vec::new();
    let mut chunk = [0u8; 256];
    while !String::from_utf8_lossy(&text).contains("\r\n\r\n") {
        let n = stuck.read(&mut chunk).expect("the follower's answer");
        assert!(n > 0, "the admin port closed the follower");
        text.extend_from_slice(&chunk[..n]);
    }
    assert!(
        text.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&text)
    );

    // Another follower, which reads.
    let (lines, _follower) = follow(&corral, &[]);

    // A flood of output: the new workers of a rolling restart print
    // 10,000 start lines each.
    corral.signal(Signal::SIGUSR2);
    corral.wait_log("rolling restart finished", PATIENCE);

    // Clients are served, and the reading follower sees new lines.
    let marker = "/after-the-flood";
    let reached = eventually(PATIENCE, || {
        let _ = try_http(corral.front, "GET", marker);
        while let Ok(line) = lines.try_recv() {
            if line.ends_with(marker) {
                return true;
            }
        }
        false
    });
    assert!(
        reached,
        "the reading follower never saw a request after the flood"
    );

    // The stuck follower, read at last, was told what it skipped.
    let notice = "lines skipped here: this reader fell behind";
    let mut chunk = vec![0u8; 65536];
    while !String::from_utf8_lossy(&text).contains(notice) {
        match stuck.read(&mut chunk) {
            Ok(n) if n > 0 => text.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains(notice),
        "no skip notice in {} bytes",
        text.len()
    );
}

/// The log files in `dir`, by name.
fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("corral.log"))
        .collect()
}

#[test]
fn the_log_file_is_rotated_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("corral.log");
    let width = 100;
    let config = chatty(2, 3000, width)
        .set("log.file", path.as_path())
        .set("log.max_size", "64KiB")
        .set("log.keep", 2);
    let corral = Corral::start(&config);
    corral.wait_up(2);
    // Once a request's line is in the files, the start lines before it are.
    // The workers' start lines may still be on their way when the first
    // request is logged and rotate its line out (keep = 2), so each try asks
    // again until the chatter is over.
    let rotated = eventually(PATIENCE, || {
        let (status, _) = http(corral.front, "GET", "/rotated");
        assert_eq!(status, 200);
        let names = files(dir.path());
        let all: String = names
            .iter()
            .map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap_or_default())
            .collect();
        names.contains("corral.log.2") && all.contains(" /rotated")
    });
    assert!(rotated, "files: {:?}", files(dir.path()));
    let names = files(dir.path());
    let want: BTreeSet<String> = ["corral.log", "corral.log.1", "corral.log.2"]
        .map(String::from)
        .into();
    assert_eq!(names, want, "keep = 2: no corral.log.3");
    for name in &names {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(text.len() <= 64 * 1024, "{name} has {} bytes", text.len());
        assert!(text.ends_with('\n'), "{name} ends inside a line");
        for line in text.lines() {
            assert!(line.starts_with("20"), "{name}: not a whole line: {line:?}");
            let Some((_, rest)) = line.split_once(" | start ") else {
                continue;
            };
            let message = rest.split(" worker=").next().unwrap_or("");
            assert_eq!(
                message.len() + "start ".len(),
                width,
                "{name}: cut line {line:?}"
            );
            assert!(message.ends_with('x'), "{name}: cut line {line:?}");
        }
    }
}

#[test]
fn sighup_reopens_the_file_after_an_external_rename() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corral.log");
    let config = chatty(1, 0, 0).set("log.file", path.as_path());
    let corral = Corral::start(&config);
    corral.wait_up(1);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        eventually(PATIENCE, || read(&path).contains("worker-0 | ready 0")),
        "{}",
        read(&path)
    );

    // logrotate's `create` mode: rename, then SIGHUP.
    let old = dir.path().join("corral.log-20260101");
    std::fs::rename(&path, &old).unwrap();
    corral.signal(Signal::SIGHUP);
    assert!(
        eventually(PATIENCE, || path.exists()),
        "no new corral.log after SIGHUP; log:\n{}",
        corral.log()
    );
    let (status, _) = http(corral.front, "GET", "/after-sighup");
    assert_eq!(status, 200);
    assert!(
        eventually(PATIENCE, || read(&path)
            .contains("request 0 1 /after-sighup")),
        "the new file:\n{}",
        read(&path)
    );
    let before = read(&old);
    assert!(before.contains("worker-0 | ready 0"), "{before}");
    assert!(!before.contains("/after-sighup"), "{before}");
}
