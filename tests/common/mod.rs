//! Shared helpers for the end-to-end tests: start the real corral binary on
//! free loopback ports, talk to it over real sockets, and clean up every
//! process a test started.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
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

/// A running corral process; killed (with its workers) when dropped.
pub struct Corral {
    pub child: Option<Child>,
    pub front: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Corral {
    /// Writes `body` (without [listener]/[admin]) plus fresh front and admin
    /// addresses to a config file and starts corral on it.
    pub fn start(body: &str) -> Corral {
        let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text =
            format!("[listener]\nbind = \"{front}\"\n\n[admin]\nbind = \"{admin}\"\n\n{body}\n");
        Corral::start_with(&text, front, admin, &[])
    }

    /// Starts corral on a complete config text.
    pub fn start_with(text: &str, front: SocketAddr, admin: SocketAddr, args: &[&str]) -> Corral {
        Corral::start_env(text, front, admin, args, &[])
    }

    /// Starts another copy of the corral binary on a complete config text.
    pub fn start_binary(binary: &Path, text: &str, front: SocketAddr, admin: SocketAddr) -> Corral {
        Corral::launch(binary, text, front, admin, &[], &[])
    }

    /// Starts corral on a complete config text with extra environment.
    pub fn start_env(
        text: &str,
        front: SocketAddr,
        admin: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Corral {
        Corral::launch(Path::new(CORRAL), text, front, admin, args, env)
    }

    fn launch(
        binary: &Path,
        text: &str,
        front: SocketAddr,
        admin: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Corral {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("corral.toml");
        std::fs::write(&config_path, text).unwrap();
        let log_path = dir.path().join("corral.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(binary)
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .args(args)
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("corral starts");
        let corral = Corral {
            child: Some(child),
            front,
            admin,
            dir,
            config_path,
            log_path,
        };
        corral.wait_admin();
        corral
    }

    fn wait_admin(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = try_http(self.admin, "GET", "/healthz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("corral's admin port never answered; log:\n{}", self.log());
    }

    /// Waits until `/status` shows `n` backends up.
    pub fn wait_up(&self, n: usize) {
        let ok = eventually(Duration::from_secs(20), || self.backends_in("up") >= n);
        assert!(
            ok,
            "{n} backends never came up: {}\nlog:\n{}",
            self.status(),
            self.log()
        );
    }

    pub fn backends_in(&self, state: &str) -> usize {
        let status = self.status();
        status["backends"]
            .as_array()
            .map(|b| b.iter().filter(|b| b["state"] == state).count())
            .unwrap_or(0)
    }

    pub fn status(&self) -> serde_json::Value {
        let (code, body) = http(self.admin, "GET", "/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("/status is JSON")
    }

    pub fn metrics(&self) -> String {
        http(self.admin, "GET", "/metrics").1
    }

    /// The value of one sample in /metrics, e.g. `corral_connections_accepted_total`
    /// or `corral_connection_errors_total{reason="connect_failed"}`.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for corral to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The pids of the worker processes in /status.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.status()["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["name"].as_str().unwrap_or("").starts_with("worker-"))
            .filter_map(|b| b["pid"].as_u64().map(|p| p as u32))
            .collect()
    }

    /// Rewrites the config file (for SIGHUP tests), keeping the addresses.
    pub fn rewrite(&self, body: &str) {
        let text = format!(
            "[listener]\nbind = \"{}\"\n\n[admin]\nbind = \"{}\"\n\n{body}\n",
            self.front, self.admin
        );
        std::fs::write(&self.config_path, text).unwrap();
    }
}

impl Drop for Corral {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    try_http(addr, method, path).unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

pub fn try_http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    request_on(&mut stream, addr, method, path, &[])
}

pub fn request_on(
    stream: &mut TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// GET / through the front end from a given local address (127.0.0.x).
pub fn get_from(front: SocketAddr, source: Option<std::net::IpAddr>) -> std::io::Result<String> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&front.into(), Duration::from_secs(5))?;
    let mut stream: TcpStream = socket.into();
    let (code, body) = request_on(&mut stream, front, "GET", "/", &[])?;
    if code != 200 {
        return Err(std::io::Error::other(format!("status {code}")));
    }
    Ok(body)
}

/// The `worker=N` part of a demo worker's answer.
pub fn worker_of(body: &str) -> String {
    body.split_whitespace().next().unwrap_or("").to_string()
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
