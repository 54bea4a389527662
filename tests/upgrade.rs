//! `corral upgrade`: the file at the started path replaces the running
//! program in the same process; workers, listening sockets, the sticky
//! table and the counters are handed over, and a file that cannot take
//! over is refused (or rolled back) with nothing lost.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A copy of corral at a path of the test's own, so that the test can
/// replace it as a package manager does (write aside, rename over).
fn installed_copy(dir: &Path) -> PathBuf {
    let path = dir.join("corral");
    std::fs::copy(CORRAL, &path).unwrap();
    path
}

/// Puts `contents` at `path` the way package managers do: a new file,
/// renamed over the old one.
fn install(path: &Path, contents: &[u8], executable: bool) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// `corral upgrade --admin ADDR`: (exit code, stdout + stderr).
fn upgrade(corral: &Corral) -> (i32, String) {
    let out = Command::new(CORRAL)
        .args(["upgrade", "--admin", &corral.admin.to_string()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Installs this build at `program` (renamed over it) and upgrades
/// `corral` to it; what `corral upgrade` said. `what` names the step when
/// it fails.
fn upgrade_to_this_build(corral: &Corral, program: &Path, what: &str) -> String {
    install(program, &std::fs::read(CORRAL).unwrap(), true);
    let (code, said) = upgrade(corral);
    assert_eq!(code, 0, "{what}: {said}\nlog:\n{}", corral.log());
    said
}

/// Whether every kept-alive client gets past what it had served
/// (`before`) within 10 s.
fn all_served_more(kept: &[KeptAlive], before: &[usize]) -> bool {
    eventually(Duration::from_secs(10), || {
        kept.iter().zip(before).all(|(k, b)| k.served() > *b)
    })
}

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

/// A corral with `workers` demo workers, started from a copy installed in
/// a directory of its own: (that directory, the copy's path, corral, its
/// pid, its workers' pids).
fn started_from_copy(workers: usize) -> (tempfile::TempDir, PathBuf, Corral, u32, Vec<u32>) {
    let config = Config::new().strategy("round-robin").demo_workers(workers);
    started_with(&config, workers)
}

/// [`started_from_copy`] with `config` (of `workers` workers).
fn started_with(
    config: &Config,
    workers: usize,
) -> (tempfile::TempDir, PathBuf, Corral, u32, Vec<u32>) {
    let bin = tempfile::tempdir().unwrap();
    let program = installed_copy(bin.path());
    let corral = Corral::start_binary(&program, config);
    corral.wait_up(workers);
    let (pid, pids) = (corral.pid(), corral.worker_pids());
    (bin, program, corral, pid, pids)
}

#[test]
fn upgrades_in_a_row_keep_the_pid_the_workers_and_the_counters_and_serve_on() {
    let (_bin, program, corral, pid, workers) = started_from_copy(3);
    let load = Load::start(corral.front, 4);
    let kept: Vec<KeptAlive> = (0..16).map(|_| KeptAlive::start(corral.front)).collect();
    let admin = AdminPoller::start(corral.admin);
    assert!(load.serves_more(50), "the load never got going");
    let mut accepted = corral.metric("corral_connections_accepted_total");
    for round in 1..=5 {
        let said = upgrade_to_this_build(&corral, &program, &format!("upgrade {round}"));
        assert!(said.contains("upgraded corral"), "{said}");
        assert!(said.contains("3 workers handed over"), "{said}");
        assert_eq!(corral.pid(), pid, "the pid stays");
        assert_eq!(exe_of(pid), program, "the new file runs");
        assert_eq!(corral.worker_pids(), workers, "no worker restarted");
        assert!(load.serves_more(50), "upgrade {round}: the load stopped");
        let before: Vec<usize> = kept.iter().map(KeptAlive::served).collect();
        assert!(
            all_served_more(&kept, &before),
            "upgrade {round}: a kept-alive client stopped progressing"
        );
        let now = corral.metric("corral_connections_accepted_total");
        assert!(
            now >= accepted,
            "upgrade {round}: accepted went {accepted} -> {now}"
        );
        accepted = now;
        assert_eq!(
            corral.metric("corral_upgrades_total{result=\"done\"}"),
            round as f64
        );
    }
    for client in kept {
        assert_eq!(client.finish(), None, "a kept-alive client failed");
    }
    let (served, failed, errors) = load.finish();
    assert!(served > 0);
    assert_eq!(failed, 0, "failed requests across the upgrades: {errors:?}");
    let (answered, refused) = admin.finish();
    assert!(answered > 0, "the admin poller never got an answer");
    assert_eq!(refused, Vec::<String>::new(), "admin requests refused");
}

/// A client of the admin port asking `/status` every 10 ms, on a new
/// connection each time.
struct AdminPoller {
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl AdminPoller {
    fn start(admin: std::net::SocketAddr) -> AdminPoller {
        use std::sync::atomic::Ordering;
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (answered, stop) = (answered.clone(), stop.clone());
            move || {
                let mut refused = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match try_http(admin, "GET", "/status") {
                        Ok((200, _)) => {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((code, body)) => refused.push(format!("{code}: {body}")),
                        Err(error) => refused.push(error.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                refused
            }
        });
        AdminPoller {
            answered,
            stop,
            thread,
        }
    }

    /// Stops polling: (answers, refusals and failures).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let refused = self.thread.join().unwrap();
        (
            self.answered.load(std::sync::atomic::Ordering::SeqCst),
            refused,
        )
    }
}

#[test]
fn sticky_entries_and_placements_survive_an_upgrade() {
    let config = Config::new().strategy("sticky").demo_workers(3);
    let (_bin, program, corral, _pid, _workers) = started_with(&config, 3);
    let clients: Vec<std::net::IpAddr> = (1..=40)
        .map(|n| std::net::IpAddr::from([127, 0, 7, n]))
        .collect();
    let placed: Vec<String> = clients
        .iter()
        .map(|ip| worker_of(&get_from(corral.front, Some(*ip)).unwrap()))
        .collect();
    assert_eq!(corral.metric("corral_sticky_entries"), 40.0);
    upgrade_to_this_build(&corral, &program, "upgrade");
    assert_eq!(corral.metric("corral_sticky_entries"), 40.0);
    for (ip, worker) in clients.iter().zip(&placed) {
        let (status, body) = http(corral.admin, "GET", &format!("/sticky?ip={ip}"));
        assert_eq!(status, 200, "{body}");
        let lookup: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(lookup["by"], "entry", "{ip}: the entry was lost: {body}");
        let again = worker_of(&get_from(corral.front, Some(*ip)).unwrap());
        assert_eq!(&again, worker, "{ip} moved across the upgrade");
    }
    assert_eq!(
        corral.metric("corral_sticky_lookups_total{result=\"hit\"}"),
        40.0
    );
}

#[test]
fn stateless_connections_are_handed_over_between_requests() {
    let config = Config::new()
        .strategy("round-robin")
        .demo_workers(2)
        .set("workers.stateless", true);
    let (_bin, program, corral, pid, workers) = started_with(&config, 2);
    // Busy clients (a request every 20 ms) and quiet ones that sleep through
    // each upgrade on their kept-alive connection.
    let kept: Vec<KeptAlive> = (0..8).map(|_| KeptAlive::start(corral.front)).collect();
    let mut quiet: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(corral.front).unwrap())
        .collect();
    for stream in &mut quiet {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        ask_on(stream, corral.front).unwrap();
    }
    for round in 1..=2 {
        let before: Vec<usize> = kept.iter().map(KeptAlive::served).collect();
        let said = upgrade_to_this_build(&corral, &program, &format!("upgrade {round}"));
        assert!(
            said.contains("12 open connections handed over"),
            "upgrade {round}: {said}"
        );
        assert_eq!(corral.pid(), pid);
        assert_eq!(corral.worker_pids(), workers);
        for (n, stream) in quiet.iter_mut().enumerate() {
            let asked = ask_on(stream, corral.front);
            assert!(
                asked.is_ok(),
                "upgrade {round}: quiet client {n}: {asked:?}"
            );
        }
        assert!(
            all_served_more(&kept, &before),
            "upgrade {round}: a kept-alive client stopped progressing"
        );
    }
    for client in kept {
        assert_eq!(client.finish(), None, "a kept-alive client failed");
    }
}

#[test]
fn files_that_cannot_take_over_are_refused_and_nothing_changes() {
    let (_bin, program, corral, pid, workers) = started_from_copy(2);
    let load = Load::start(corral.front, 2);
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        (
            "a script that exits 0",
            Some(b"#!/bin/sh\nexit 0\n".to_vec()),
            "not `corral VERSION handover N`",
        ),
        (
            "a script that fails",
            Some(b"#!/bin/sh\nexit 3\n".to_vec()),
            "exited with status 3",
        ),
        (
            "random bytes",
            Some(random),
            "not a program this system can run",
        ),
        ("a missing file", None, "cannot be read"),
    ];
    for (round, (what, contents, reason)) in cases.into_iter().enumerate() {
        match contents {
            Some(bytes) => install(&program, &bytes, true),
            None => {
                let _ = std::fs::remove_file(&program);
            }
        }
        let (code, said) = upgrade(&corral);
        assert_eq!(code, 1, "{what}: {said}");
        assert!(
            said.contains("upgrade refused") && said.contains(reason),
            "{what}: {said}"
        );
        assert_eq!(corral.pid(), pid, "{what}");
        assert_eq!(corral.worker_pids(), workers, "{what}");
        assert_eq!(
            corral.metric("corral_upgrades_total{result=\"refused\"}"),
            (round + 1) as f64,
            "{what}"
        );
        assert!(load.serves_more(20), "{what}: serving stopped");
    }
    let (_, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}");
}

#[test]
fn a_new_program_that_cannot_adopt_is_rolled_back_in_the_same_process() {
    rolled_back_in_the_same_process("1");
}

#[test]
fn a_new_program_that_cannot_read_the_handover_is_rolled_back_in_the_same_process() {
    rolled_back_in_the_same_process("read");
}

/// A corral told (`CORRAL_TEST_FAIL_ADOPTION=fail`) to fail its adoption
/// (`1`) or to fail reading the handover at all (`read`), through a
/// wrapper at the path: the old program takes everything back.
fn rolled_back_in_the_same_process(fail: &str) {
    let (bin, program, corral, pid, workers) = started_from_copy(2);
    let real = bin.path().join("corral-real");
    std::fs::copy(CORRAL, &real).unwrap();
    let wrapper = format!(
        "#!/bin/sh\nCORRAL_TEST_FAIL_ADOPTION={fail} exec {} \"$@\"\n",
        real.display()
    );
    install(&program, wrapper.as_bytes(), true);
    let load = Load::start(corral.front, 2);
    let kept: Vec<KeptAlive> = (0..4).map(|_| KeptAlive::start(corral.front)).collect();
    assert!(eventually(Duration::from_secs(10), || kept
        .iter()
        .all(|k| k.served() > 0)));
    let (code, said) = upgrade(&corral);
    assert_eq!(code, 1, "{said}\nlog:\n{}", corral.log());
    assert!(said.contains("taken back"), "{said}");
    let why = format!(
        "CORRAL_TEST_FAIL_ADOPTION{}",
        if fail == "read" { "=read" } else { "" }
    );
    assert!(said.contains(&format!("{why} is set")), "{said}");
    assert_eq!(corral.pid(), pid);
    assert_eq!(
        corral.worker_pids(),
        workers,
        "the workers survived the rollback"
    );
    assert_eq!(
        corral.metric("corral_upgrades_total{result=\"rolled_back\"}"),
        1.0
    );
    assert!(load.serves_more(30), "serving stopped after the rollback");
    // The kept-alive connections went to the new program and back.
    let before: Vec<usize> = kept.iter().map(KeptAlive::served).collect();
    assert!(
        all_served_more(&kept, &before),
        "a kept-alive client stopped progressing after the rollback"
    );
    for client in kept {
        assert_eq!(client.finish(), None, "a kept-alive client failed");
    }
    let (_, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}");
}

/// A client that keeps one connection and sends a request on it every
/// 20 ms; it stops at its first failure (and records it).
struct KeptAlive {
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeptAlive {
    fn start(front: std::net::SocketAddr) -> KeptAlive {
        use std::sync::atomic::Ordering;
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (served, failure, stop) = (served.clone(), failure.clone(), stop.clone());
            move || {
                let run = || -> std::io::Result<()> {
                    let mut stream = std::net::TcpStream::connect(front)?;
                    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
                    while !stop.load(Ordering::SeqCst) {
                        ask_on(&mut stream, front)?;
                        served.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Ok(())
                };
                if let Err(error) = run() {
                    *failure.lock().unwrap() = Some(error.to_string());
                }
            }
        });
        KeptAlive {
            served,
            failure,
            stop,
            thread: Some(thread),
        }
    }

    fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the client; its failure, if it had one.
    fn finish(mut self) -> Option<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.failure.lock().unwrap().take()
    }
}

/// One kept-alive request on `stream`: a 200 with its whole body.
fn ask_on(stream: &mut std::net::TcpStream, front: std::net::SocketAddr) -> std::io::Result<()> {
    use std::io::Write;
    write!(stream, "GET / HTTP/1.1\r\nHost: {front}\r\n\r\n")?;
    read_answer(stream).map(drop)
}

/// Reads one whole `200` answer (with a Content-Length) off a kept-alive
/// connection: its body.
fn read_answer(stream: &mut std::net::TcpStream) -> std::io::Result<String> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("closed before a whole answer"));
        }
        got.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = response.parse(&got) {
            if response.code != Some(200) {
                return Err(std::io::Error::other(format!("status {:?}", response.code)));
            }
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            if got.len() >= head + length {
                return Ok(String::from_utf8_lossy(&got[head..head + length]).into_owned());
            }
        }
    }
}

/// Bytes per download in [`transfers_in_flight_complete_byte_exact`].
const DOWNLOAD: u64 = 64 * 1024 * 1024;

/// The byte at `offset` of a bulk worker's download: the 32-bit
/// little-endian words 0, 1, 2, ... back to back.
fn pattern_byte(offset: u64) -> u8 {
    ((offset / 4) as u32).to_le_bytes()[(offset % 4) as usize]
}

/// A slow download of [`DOWNLOAD`] bytes from tests/support/bulk_worker.py
/// that checks every byte's place; `read` follows its progress.
fn slow_download(
    front: std::net::SocketAddr,
    read: &std::sync::atomic::AtomicU64,
) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(front).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    writeln!(stream, "download {DOWNLOAD}").map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("after {offset} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        for (i, byte) in chunk[..n].iter().enumerate() {
            let at = offset + i as u64;
            if *byte != pattern_byte(at) {
                return Err(format!("byte {at} is {byte}, not {}", pattern_byte(at)));
            }
        }
        offset += n as u64;
        read.store(offset, std::sync::atomic::Ordering::SeqCst);
        // About 16 MiB/s at most: the download spans the upgrades, and
        // corral's buffers (or splice pipes) toward it are full meanwhile.
        std::thread::sleep(Duration::from_millis(4));
    }
    if offset != DOWNLOAD {
        return Err(format!("ended after {offset} of {DOWNLOAD} bytes"));
    }
    Ok(())
}

/// An interactive echo connection: messages of varying sizes, each read
/// back whole and compared, until `stop`; then a half-close, answered by
/// the rest of the echo and a clean close.
fn echo_rounds(
    front: std::net::SocketAddr,
    rounds: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(front).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    stream.write_all(b"echo\n").map_err(|e| e.to_string())?;
    let mut round = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let size = 1 + (round * 7919) % 40_000;
        let message: Vec<u8> = (0..size).map(|i| (i as u8) ^ (round as u8)).collect();
        stream
            .write_all(&message)
            .map_err(|e| format!("round {round}: {e}"))?;
        let mut back = vec![0u8; message.len()];
        stream
            .read_exact(&mut back)
            .map_err(|e| format!("round {round}: {e}"))?;
        if back != message {
            return Err(format!("round {round}: the echo differs"));
        }
        round += 1;
        rounds.store(round, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .map_err(|e| format!("after the half-close: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last echo", rest.len()));
    }
    Ok(())
}

/// 4 slow downloads and 8 echo connections in flight across two upgrades,
/// with bytes moved through buffers or (`splice`) through splice(2) pipes:
/// every byte arrives once, in place, and no connection is reset.
fn transfers_in_flight_complete_byte_exact(splice: bool) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let bin = tempfile::tempdir().unwrap();
    let program = installed_copy(bin.path());
    let config = Config::new()
        .strategy("round-robin")
        .workers(&[python(), &support("bulk_worker.py")], 2)
        .set("runtime.splice", splice);
    let corral = Corral::start_binary(&program, &config);
    corral.wait_up(2);
    let front = corral.front;
    let stop = Arc::new(AtomicBool::new(false));
    let downloads: Vec<_> = (0..4)
        .map(|_| {
            let read = Arc::new(AtomicU64::new(0));
            let thread = std::thread::spawn({
                let read = Arc::clone(&read);
                move || slow_download(front, &read)
            });
            (read, thread)
        })
        .collect();
    let echoes: Vec<_> = (0..8)
        .map(|_| {
            let rounds = Arc::new(AtomicU64::new(0));
            let thread = std::thread::spawn({
                let (rounds, stop) = (Arc::clone(&rounds), Arc::clone(&stop));
                move || echo_rounds(front, &rounds, &stop)
            });
            (rounds, thread)
        })
        .collect();
    let under_way = eventually(Duration::from_secs(20), || {
        downloads
            .iter()
            .all(|(read, _)| read.load(Ordering::SeqCst) > 1 << 20)
            && echoes
                .iter()
                .all(|(rounds, _)| rounds.load(Ordering::SeqCst) > 3)
    });
    assert!(
        under_way,
        "the transfers never got going:\n{}",
        corral.log()
    );
    for round in 1..=2 {
        let read: Vec<u64> = downloads
            .iter()
            .map(|(read, _)| read.load(Ordering::SeqCst))
            .collect();
        let echoed: Vec<u64> = echoes
            .iter()
            .map(|(rounds, _)| rounds.load(Ordering::SeqCst))
            .collect();
        let said = upgrade_to_this_build(&corral, &program, &format!("upgrade {round}"));
        assert!(
            said.contains("12 open connections handed over"),
            "upgrade {round}: {said}"
        );
        let progressing = eventually(Duration::from_secs(10), || {
            downloads
                .iter()
                .zip(&read)
                .all(|((now, _), before)| now.load(Ordering::SeqCst) > *before)
                && echoes
                    .iter()
                    .zip(&echoed)
                    .all(|((now, _), before)| now.load(Ordering::SeqCst) > *before)
        });
        assert!(progressing, "upgrade {round}: a transfer stopped");
    }
    stop.store(true, Ordering::SeqCst);
    for (_, thread) in downloads {
        assert_eq!(thread.join().unwrap(), Ok(()), "a download");
    }
    for (_, thread) in echoes {
        assert_eq!(thread.join().unwrap(), Ok(()), "an echo connection");
    }
    if splice {
        assert!(corral.metric("corral_spliced_connections_total") > 0.0);
    }
    assert_eq!(corral.metric("corral_upgrades_total{result=\"done\"}"), 2.0);
}

#[test]
fn buffered_transfers_in_flight_complete_byte_exact_across_upgrades() {
    transfers_in_flight_complete_byte_exact(false);
}

#[test]
fn spliced_transfers_in_flight_complete_byte_exact_across_upgrades() {
    transfers_in_flight_complete_byte_exact(true);
}

#[test]
fn fd_mode_upgrades_keep_the_slot_sockets_and_the_workers_and_fail_nothing() {
    let config = Config::new()
        .strategy("round-robin")
        .set("workers.command", &["corral", "demo-worker"][..])
        .set("workers.count", 3)
        .set("workers.listen", "fd");
    let (_bin, program, corral, pid, workers) = started_with(&config, 3);
    let load = Load::start(corral.front, 4);
    let kept: Vec<KeptAlive> = (0..8).map(|_| KeptAlive::start(corral.front)).collect();
    assert!(load.serves_more(50), "the load never got going");
    for round in 1..=3 {
        let said = upgrade_to_this_build(&corral, &program, &format!("upgrade {round}"));
        assert!(said.contains("3 workers handed over"), "{said}");
        assert_eq!(corral.pid(), pid, "the pid stays");
        assert_eq!(exe_of(pid), program, "the new file runs");
        assert_eq!(corral.worker_pids(), workers, "no worker restarted");
        assert_eq!(corral.status()["mode"], "fd");
        assert!(load.serves_more(50), "upgrade {round}: the load stopped");
    }
    // Each worker still takes clients from its slot socket: the group and
    // its program went across.
    let mut reached = std::collections::BTreeSet::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            if let Ok(body) = get_from(corral.front, None) {
                reached.insert(worker_of(&body));
            }
            reached.len() == 3
        }),
        "workers reached after the upgrades: {reached:?}"
    );
    for client in kept {
        assert_eq!(client.finish(), None, "a kept-alive client failed");
    }
    let (served, failed, errors) = load.finish();
    assert!(served > 0);
    assert_eq!(failed, 0, "failed requests across the upgrades: {errors:?}");
}

#[test]
fn notify_workers_keep_being_heard_across_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let stop_file = dir.path().join("stop-watchdog");
    let config = Config::new()
        .strategy("round-robin")
        .workers(&[python(), &support("notify_worker.py")], 2)
        .set("workers.notify", true)
        .set("workers.watchdog", "1s")
        .set(
            "workers.env",
            Raw(&format!(
                "{{ WATCHDOG_STOP_FILE = {:?} }}",
                stop_file.display().to_string()
            )),
        );
    let (_bin, program, corral, pid, workers) = started_with(&config, 2);
    let said = upgrade_to_this_build(&corral, &program, "upgrade");
    assert!(said.contains("2 workers handed over"), "{said}");
    assert_eq!(corral.pid(), pid);
    // The new image hears the workers' WATCHDOG=1 on the same socket:
    // three watchdog intervals pass and nobody is taken for hung.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        corral.worker_pids(),
        workers,
        "a worker was replaced after the upgrade:\n{}",
        corral.log()
    );
    // And it still enforces the watchdog: worker-0 stops its pings.
    std::fs::write(&stop_file, workers[0].to_string()).unwrap();
    let replaced = eventually(Duration::from_secs(15), || {
        let w = corral.worker(0);
        w["state"] == "up" && w["pid"].as_u64() != Some(u64::from(workers[0]))
    });
    assert!(replaced, "worker-0 was not replaced: {}", corral.status());
    assert_eq!(corral.pid_of(1), workers[1], "the other worker was touched");
}

/// `systemctl show -p PROPERTY --value UNIT`.
fn unit_property(unit: &str, property: &str) -> String {
    let out = Command::new("systemctl")
        .args(["show", "-p", property, "--value", unit])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn under_systemd_the_main_pid_stays_and_the_unit_stays_active() {
    let systemd = std::path::Path::new("/run/systemd/system").is_dir()
        && Command::new("systemd-run")
            .arg("--version")
            .output()
            .is_ok();
    if !systemd {
        eprintln!(
            "skipped: systemd is not the init of this machine (no /run/systemd/system), \
             so no unit can be run to upgrade under it"
        );
        return;
    }
    let bin = tempfile::tempdir().unwrap();
    let program = installed_copy(bin.path());
    let config = Config::new().strategy("round-robin").demo_workers(2);
    let file = bin.path().join("corral.toml");
    config.write(&file);
    let unit = format!("corral-upgrade-test-{}", std::process::id());
    let started = Command::new("systemd-run")
        .arg(format!("--unit={unit}"))
        .args([
            "-p",
            "Type=notify",
            "-p",
            "NotifyAccess=main",
            "--collect",
            "--",
        ])
        .arg(&program)
        .args(["run", "-c"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(started.success(), "systemd-run failed");
    /// Stops the unit however the test ends.
    struct Stop(String);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("systemctl").args(["stop", &self.0]).status();
        }
    }
    let _stop = Stop(unit.clone());
    assert!(
        eventually(Duration::from_secs(30), || unit_property(
            &unit,
            "ActiveState"
        ) == "active"),
        "the unit never became active"
    );
    let admin = config.admin;
    let main_pid = unit_property(&unit, "MainPID");
    // The unit's state, read all along the upgrade.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = std::thread::spawn({
        let (unit, stop) = (unit.clone(), stop.clone());
        move || {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                seen.insert(unit_property(&unit, "ActiveState"));
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        }
    });
    install(&program, &std::fs::read(CORRAL).unwrap(), true);
    let out = Command::new(CORRAL)
        .args(["upgrade", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(
        eventually(Duration::from_secs(10), || unit_property(
            &unit,
            "ActiveState"
        ) == "active"),
        "the unit is not active after the upgrade"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    assert_eq!(
        unit_property(&unit, "MainPID"),
        main_pid,
        "systemd's main pid changed"
    );
    assert!(
        seen.iter()
            .all(|state| state == "active" || state == "reloading"),
        "the unit left active during the upgrade: {seen:?}"
    );
}

#[test]
fn restart_counts_and_the_backoff_survive_an_upgrade() {
    let config = Config::new()
        .strategy("round-robin")
        .demo_workers(2)
        .set("workers.restart_delay", "100ms")
        .set("workers.restart_delay_max", "10s")
        .set("workers.min_uptime", "60s");
    let (_bin, program, corral, _pid, _workers) = started_with(&config, 2);
    // Two crashes within min_uptime: the backoff doubles twice, to 400ms.
    for restarts in 1..=2 {
        send_signal(corral.pid_of(0), Signal::SIGKILL);
        let restarted = eventually(Duration::from_secs(20), || {
            let w = corral.worker(0);
            w["restarts"] == restarts && w["state"] == "up"
        });
        assert!(restarted, "worker-0 was not restarted: {}", corral.status());
    }
    upgrade_to_this_build(&corral, &program, "upgrade");
    assert_eq!(corral.worker(0)["restarts"], 2, "{}", corral.status());
    assert_eq!(corral.worker(1)["restarts"], 0, "{}", corral.status());
    assert_eq!(
        corral.metric("corral_worker_restarts_total{backend=\"worker-0\"}"),
        2.0
    );
    // A third crash, still within min_uptime of the process's start: the
    // new program goes on from the backoff the old one had reached.
    send_signal(corral.pid_of(0), Signal::SIGKILL);
    let delays = || -> Vec<String> {
        corral
            .log()
            .lines()
            .filter(|l| l.contains("restarting worker after backoff") && l.contains("worker=0"))
            .filter_map(|l| l.split("delay=").nth(1))
            .map(|d| d.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(20), || delays().len() == 3),
        "{:?}\n{}",
        delays(),
        corral.log()
    );
    assert_eq!(delays(), ["100ms", "200ms", "400ms"]);
}

#[test]
fn the_per_client_table_goes_across_an_upgrade() {
    let config = Config::new()
        .strategy("round-robin")
        .demo_workers(2)
        .set("clients.max_rate", "4/m");
    let (_bin, program, corral, _pid, _workers) = started_with(&config, 2);
    let client: std::net::IpAddr = [127, 0, 9, 9].into();
    // Three connections that close, and one kept open: the rate period
    // is full.
    for _ in 0..3 {
        get_from(corral.front, Some(client)).unwrap();
    }
    let mut held = connect_from(corral.front, Some(client)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    ask_on(&mut held, corral.front).unwrap();
    assert!(
        get_from(corral.front, Some(client)).is_err(),
        "the rate was not full"
    );
    upgrade_to_this_build(&corral, &program, "upgrade");
    // The new program goes on with the same period: still too many, and
    // the connection handed over is counted and served.
    assert!(
        get_from(corral.front, Some(client)).is_err(),
        "the rate period started over across the upgrade"
    );
    ask_on(&mut held, corral.front).unwrap();
    let (status, body) = http(corral.admin, "GET", "/clients");
    assert_eq!(status, 200, "{body}");
    let table: serde_json::Value = serde_json::from_str(&body).unwrap();
    let row = table["clients"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["client"] == "127.0.9.9"))
        .cloned()
        .unwrap_or_else(|| panic!("127.0.9.9 is not in {body}"));
    assert_eq!(row["connections"], 1, "{row}");
    assert_eq!(row["rejected"], 2, "{row}");
}

#[test]
fn a_request_unanswered_across_an_upgrade_is_still_replayed_when_its_worker_dies() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("hung");
    let config = Config::new()
        .strategy("round-robin")
        .workers(&[python(), &support("hang_worker.py")], 2)
        .set(
            "workers.env",
            Raw(&format!(
                "{{ HANG_WORKER = \"0\", HANG_MARKER = {:?} }}",
                marker.display().to_string()
            )),
        );
    let (_bin, program, corral, _pid, workers) = started_with(&config, 2);
    // Requests to /hang, each on a thread of its own, until one reaches
    // worker-0, which holds it.
    let front = corral.front;
    let ask = move || {
        let mut stream = std::net::TcpStream::connect(front).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        exchange(&mut stream, front, "GET", "/hang", &[])
    };
    let mut asked = Vec::new();
    while !marker.exists() {
        asked.push(std::thread::spawn(ask));
        assert!(asked.len() < 50, "worker-0 never got a /hang");
        eventually(Duration::from_secs(5), || {
            marker.exists() || asked.last().is_some_and(|t| t.is_finished())
        });
    }
    let hung = asked.pop().unwrap();
    for answered in asked {
        assert!(answered.join().unwrap().is_ok());
    }
    upgrade_to_this_build(&corral, &program, "upgrade");
    // Worker-0 dies without a byte of answer: the client's request, kept
    // by the old image and handed over, goes to worker-1.
    send_signal(workers[0], Signal::SIGKILL);
    let answer = hung.join().unwrap();
    let (status, body) =
        answer.unwrap_or_else(|e| panic!("the hung request failed: {e}\n{}", corral.log()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(worker_of(&body), "worker=1", "{body}");
    assert!(corral
        .log()
        .contains("replaying the request on another backend"));
}

#[test]
fn a_stateless_request_in_flight_is_handed_over_with_its_backend_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (marker, release) = (dir.path().join("held"), dir.path().join("release"));
    let config = Config::new()
        .strategy("round-robin")
        .workers(&[python(), &support("hang_worker.py")], 2)
        .set("workers.stateless", true)
        .set(
            "workers.env",
            Raw(&format!(
                "{{ HOLD_MARKER = {:?}, HOLD_RELEASE = {:?} }}",
                marker.display().to_string(),
                release.display().to_string()
            )),
        );
    let (_bin, program, corral, pid, workers) = started_with(&config, 2);
    let mut stream = std::net::TcpStream::connect(corral.front).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    use std::io::Write;
    write!(
        stream,
        "GET /held HTTP/1.1\r\nHost: {}\r\n\r\n",
        corral.front
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || marker.exists()),
        "the held request never reached a worker\n{}",
        corral.log()
    );
    // The request is unanswered while the upgrade runs: the connection is
    // handed over with its backend (it used to be cut after the grace).
    let said = upgrade_to_this_build(&corral, &program, "upgrade");
    assert!(said.contains("1 open connections handed over"), "{said}");
    std::fs::write(&release, b"").unwrap();
    let body = read_answer(&mut stream)
        .unwrap_or_else(|e| panic!("the held request failed: {e}\n{}", corral.log()));
    assert_eq!(body, "held and answered\n");
    // The connection carries on: its next request is answered too.
    let next = ask_on(&mut stream, corral.front);
    assert!(next.is_ok(), "the next request: {next:?}\n{}", corral.log());
    assert!(!corral.log().contains("could not park"), "{}", corral.log());
    assert_eq!((corral.pid(), corral.worker_pids()), (pid, workers));
}

#[test]
fn a_client_whose_proxy_header_is_half_read_is_handed_over_and_served() {
    let config = Config::new()
        .strategy("round-robin")
        .demo_workers(2)
        .set("listener.proxy_protocol", "v1")
        .connection_logs(true);
    let (_bin, program, corral, _pid, _workers) = started_with(&config, 2);
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(corral.front).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(b"PROXY TCP4 192.0.2.7 ").unwrap();
    // Whether or not corral has read those bytes yet, the client must be
    // handed over and its header read on from where it was.
    std::thread::sleep(Duration::from_millis(200));
    let said = upgrade_to_this_build(&corral, &program, "upgrade");
    assert!(said.contains("1 open connections handed over"), "{said}");
    write!(
        stream,
        "127.0.0.1 40000 {}\r\nGET / HTTP/1.1\r\nHost: {}\r\n\r\n",
        corral.front.port(),
        corral.front
    )
    .unwrap();
    let body = read_answer(&mut stream)
        .unwrap_or_else(|e| panic!("the client failed: {e}\n{}", corral.log()));
    assert!(body.starts_with("worker="), "{body}");
    // The address the header gave is the client's: its connection's log
    // line says so once it closes.
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || corral.log().lines().any(|l| l
            .contains("connection closed")
            && l.contains("192.0.2.7:40000"))),
        "no log line for 192.0.2.7\n{}",
        corral.log()
    );
    assert!(
        !corral.log().contains("without a valid PROXY header"),
        "{}",
        corral.log()
    );
}

#[test]
fn a_client_fd_mode_relays_off_a_stopped_worker_is_handed_over_and_served_on() {
    use std::net::{IpAddr, Ipv4Addr};
    let config = Config::new()
        .set("workers.command", &["corral", "demo-worker"][..])
        .set("workers.count", 3)
        .set("workers.listen", "fd")
        .strategy("sticky")
        .set("sticky.ipv4_prefix", 32)
        .set("health.interval", "200ms")
        .set("health.timeout", "100ms")
        .set("health.fall", 2)
        .set("health.rise", 1);
    let (_bin, program, corral, _pid, _workers) = started_with(&config, 3);
    // A source address whose clients land on worker 0.
    let source = (1..=60u8)
        .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 4, n)))
        .find(|&s| get_from(corral.front, Some(s)).is_ok_and(|body| worker_of(&body) == "worker=0"))
        .expect("no source address lands on worker 0");
    let stopped = corral.pid_of(0);
    send_signal(stopped, Signal::SIGSTOP);
    let _resume = Resume(stopped);
    // Queued on the stopped worker's socket, rescued, and relayed to
    // another worker on a kept-alive connection.
    let mut stream = connect_from(corral.front, Some(source)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let first = ask_on(&mut stream, corral.front);
    assert!(
        first.is_ok(),
        "the rescued client: {first:?}\n{}",
        corral.log()
    );
    corral.wait_log(
        "clients queued on a worker out of rotation are served by another",
        Duration::from_secs(5),
    );
    let said = upgrade_to_this_build(&corral, &program, "upgrade");
    assert!(said.contains("1 open connections handed over"), "{said}");
    // The relay went across: the same connection is answered again.
    let next = ask_on(&mut stream, corral.front);
    assert!(
        next.is_ok(),
        "after the upgrade: {next:?}\n{}",
        corral.log()
    );
}

#[test]
fn health_goes_across_an_upgrade_a_disabled_or_failing_worker_stays_out() {
    let config = Config::new()
        .strategy("round-robin")
        .demo_workers(3)
        .set("health.interval", "500ms")
        .set("health.timeout", "200ms")
        .set("health.fall", 2)
        .set("health.rise", 2);
    let (_bin, program, corral, pid, workers) = started_with(&config, 3);
    let admin = corral.admin.to_string();
    let (code, said) = corral_cmd(&["disable", "worker-1", "--admin", &admin]);
    assert_eq!(code, Some(0), "{said}");
    // Worker 2 stops answering: its checks take it out.
    let stopped = corral.pid_of(2);
    send_signal(stopped, Signal::SIGSTOP);
    let _resume = Resume(stopped);
    assert!(
        eventually(Duration::from_secs(10), || corral.worker(2)["state"]
            == "down"),
        "worker-2 never went down: {}",
        corral.status()
    );
    upgrade_to_this_build(&corral, &program, "upgrade");
    // Read at once: an image that forgot the health would show both up
    // until their next checks.
    let (one, two) = (corral.worker(1), corral.worker(2));
    assert_eq!(one["state"], "disabled", "{}", corral.status());
    assert_eq!(two["state"], "down", "{}", corral.status());
    assert_eq!(corral.worker(0)["state"], "up", "{}", corral.status());
    assert_eq!((corral.pid(), corral.worker_pids()), (pid, workers));
    // New clients all go to the one worker in rotation.
    for _ in 0..6 {
        let body = get_from(corral.front, None).expect("a request");
        assert_eq!(worker_of(&body), "worker=0", "{body}");
    }
}

/// Two demo workers, round-robin, whose processes started once the file
/// `slow` exists sleep `seconds` in their shell before they listen: (the
/// directory holding `slow`, its path, the config).
fn slow_once_marked(seconds: u32) -> (tempfile::TempDir, PathBuf, Config) {
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow");
    let script = format!(
        "if [ -e '{}' ]; then sleep {seconds}; fi; exec '{}' demo-worker",
        slow.display(),
        CORRAL
    );
    let config = Config::new()
        .strategy("round-robin")
        .workers(&["sh", "-c", &script], 2);
    (dir, slow, config)
}

#[test]
fn a_worker_still_starting_is_handed_over_and_waited_for_not_restarted() {
    let (_dir, slow, config) = slow_once_marked(2);
    let (_bin, program, corral, _pid, _workers) = started_with(&config, 2);
    // Worker 0's next process takes two seconds to listen.
    std::fs::write(&slow, b"").unwrap();
    let killed = corral.pid_of(0);
    send_signal(killed, Signal::SIGKILL);
    assert!(
        eventually(Duration::from_secs(10), || corral.worker(0)["state"]
            == "starting"
            && corral.try_pid_of(0).is_some_and(|p| p != killed)),
        "worker-0 never was starting again: {}",
        corral.status()
    );
    let starting = corral.pid_of(0);
    let restarts = corral.worker(0)["restarts"].clone();
    upgrade_to_this_build(&corral, &program, "upgrade");
    // Not put in rotation before it listens, and not started again.
    let now = corral.worker(0);
    assert_ne!(now["state"], "up", "{}\n{}", corral.status(), corral.log());
    assert!(
        eventually(Duration::from_secs(15), || corral.worker(0)["state"]
            == "up"),
        "the handed-over starting worker never came up: {}\n{}",
        corral.status(),
        corral.log()
    );
    assert_eq!(corral.pid_of(0), starting, "{}", corral.log());
    assert_eq!(corral.worker(0)["restarts"], restarts);
}

#[test]
fn an_upgrade_during_a_rolling_restart_is_refused_and_changes_nothing() {
    let (_dir, slow, config) = slow_once_marked(3);
    let (_bin, program, corral, pid, workers) = started_with(&config, 2);
    std::fs::write(&slow, b"").unwrap();
    corral.signal(Signal::SIGUSR2);
    corral.wait_log("rolling restart", Duration::from_secs(5));
    // The first replacement sleeps in its shell before it listens (its
    // command line still names the marker): two processes of worker 0
    // are alive meanwhile.
    let marker = slow.display().to_string();
    assert!(
        eventually(Duration::from_secs(5), || process_running_with(&marker)),
        "no replacement started: {}",
        corral.log()
    );
    install(&program, &std::fs::read(CORRAL).unwrap(), true);
    let (code, said) = upgrade(&corral);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("rolling restart is under way"), "{said}");
    assert_eq!(corral.pid(), pid);
    assert_eq!(
        corral.metric("corral_upgrades_total{result=\"refused\"}"),
        1.0
    );
    // The rolling restart goes on to its end.
    assert!(
        eventually(Duration::from_secs(20), || {
            let now = corral.worker_pids();
            corral.all_up(2) && now.iter().all(|p| !workers.contains(p))
        }),
        "the rolling restart did not finish: {}",
        corral.status()
    );
}

/// Whether a process whose command line contains `text` is running.
fn process_running_with(text: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(text))
    })
}

#[test]
fn a_worker_waiting_out_its_backoff_is_handed_over_and_restarted_after_it() {
    let config = Config::new()
        .strategy("round-robin")
        .demo_workers(2)
        .set("workers.restart_delay", "3s");
    let (_bin, program, corral, _pid, _workers) = started_with(&config, 2);
    let killed = corral.pid_of(0);
    send_signal(killed, Signal::SIGKILL);
    corral.wait_log("restarting worker after backoff", Duration::from_secs(5));
    upgrade_to_this_build(&corral, &program, "upgrade");
    // Still down for its crash, not started at once by the new program.
    let worker = corral.worker(0);
    assert_eq!(
        worker["state"],
        "down",
        "{}\n{}",
        corral.status(),
        corral.log()
    );
    assert_eq!(worker["reason"], "crashed", "{}", corral.status());
    assert!(
        eventually(Duration::from_secs(15), || corral.worker(0)["state"]
            == "up"),
        "worker-0 was never restarted: {}\n{}",
        corral.status(),
        corral.log()
    );
    assert_ne!(corral.pid_of(0), killed);
    assert_eq!(corral.worker(0)["restarts"], 1, "{}", corral.status());
}

#[test]
fn a_workers_half_written_output_line_is_logged_whole_after_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    // The demo worker serves in the background while the shell (the
    // worker's pid) writes half a line, and the rest once released.
    let script = format!(
        "'{}' demo-worker >/dev/null & printf 'before-upgrade '; while [ ! -e '{}' ]; do sleep 0.05; done; echo after-upgrade; wait",
        CORRAL,
        release.display()
    );
    let config = Config::new()
        .strategy("round-robin")
        .workers(&["sh", "-c", &script], 1);
    let (_bin, program, corral, _pid, _workers) = started_with(&config, 1);
    // Time for the old program to read the half line off the pipe (if it
    // has not, the new one reads it there, and the line is whole anyway).
    std::thread::sleep(Duration::from_millis(300));
    upgrade_to_this_build(&corral, &program, "upgrade");
    std::fs::write(&release, b"").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || corral
            .log()
            .contains("worker-0 | before-upgrade after-upgrade")),
        "the line was not logged whole:\n{}",
        corral.log()
    );
}
