//! Shared helpers for the end-to-end tests: start the real corral binary on
//! free loopback ports, talk to it over real sockets, and clean up every
//! process a test started.
//!
//! - [`config`]: the one config builder ([`Config`]).
//! - [`corral`]: a running corral ([`Corral`]) and its metrics.
//! - [`backends`]: the one kit of hand-rolled backends ([`Backend`]).
//! - [`http`]: HTTP/1.1 requests to the front end and the admin port.
//! - [`load`]: clients in a loop through the front end ([`Load`]).
//! - [`metrics`]: samples of a Prometheus exposition, one parser.
//! - [`chromium`]: a headless Chromium driven over DevTools ([`Chromium`]).
//!
//! This file: free ports, waiting, signals, processes.

#![allow(dead_code, unused_imports)]

pub mod backends;
pub mod chromium;
pub mod config;
pub mod corral;
pub mod http;
pub mod load;
pub mod metrics;

pub use backends::*;
pub use chromium::*;
pub use config::*;
pub use corral::*;
pub use http::*;
pub use load::*;
pub use metrics::*;
pub use nix::sys::signal::Signal;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// The next port to hand out: a per-process block below the kernel's
/// ephemeral range (32768+), so a client's outgoing connection never takes a
/// port a worker is about to bind.
fn next_ports(count: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let base = 10000 + (std::process::id() % 180) as u16 * 100;
        let _ = NEXT.compare_exchange(0, base, Ordering::Relaxed, Ordering::Relaxed);
    }
    // One atomic step per request: parallel tests never get overlapping ports.
    NEXT.fetch_add(count, Ordering::Relaxed)
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    loop {
        let port = next_ports(1);
        if bindable(port) {
            return port;
        }
    }
}

/// `count` free ports in a row (worker slots need port_base..port_base+2*count).
pub fn free_port_range(count: u16) -> u16 {
    loop {
        let base = next_ports(count);
        if (base..base + count).all(bindable) {
            return base;
        }
    }
}

/// A listener on a free loopback port from the same block as [`free_port`].
pub fn listen_on_free_port() -> TcpListener {
    loop {
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", next_ports(1))) {
            return listener;
        }
    }
}

/// True if `check` turns true within `limit`.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` to `pid` from the test process (no `kill` binary needed).
pub fn send_signal(pid: u32, signal: Signal) {
    let target = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(target, signal)
        .unwrap_or_else(|e| panic!("cannot send {signal} to {pid}: {e}"));
}

/// Is a process with this pid alive (and not a zombie)?
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        }
        Err(_) => false,
    }
}

/// Waits up to `limit` for every process in `pids` to be gone; panics
/// naming the first that is not and what it is (e.g. "an orphan worker").
pub fn assert_gone(pids: impl IntoIterator<Item = u32>, limit: Duration, what: &str) {
    for pid in pids {
        assert!(
            eventually(limit, || !alive(pid)),
            "{pid} still runs: {what}"
        );
    }
}

/// A field of `/proc/<pid>/status` (e.g. `VmRSS:` or `Uid:`), split on
/// white space after the field name.
pub fn proc_status(pid: u32, field: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// Path of a test support script.
pub fn support(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
        .display()
        .to_string()
}

/// Runs `corral` with arguments and returns (exit code, stderr + stdout).
pub fn corral_cmd(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(CORRAL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stderr).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.code(), text)
}

/// The real Python interpreter behind `python3` (not a wrapper such as a
/// pyenv shim, which would stand between corral and the worker and give
/// it a pid other than the worker's: `LISTEN_PID` and `WATCHDOG_PID` name
/// the worker's own).
pub fn python() -> &'static str {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        require("python3", "python3");
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap();
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !path.is_empty(),
            "python3 does not say where it is: {out:?}"
        );
        path
    })
}

/// Fails the test unless `tool` is on the PATH, naming the Debian package.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing: apt-get update && apt-get install -y {package}"
    );
}

/// A child process (a test peer such as Prometheus or HAProxy) that is
/// killed and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGCONT to a process when dropped, so that a worker a test stopped
/// with SIGSTOP never stays stopped, even when the test fails first.
pub struct Resume(pub u32);

impl Drop for Resume {
    fn drop(&mut self) {
        // The process may be gone already: nothing to resume then.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}
