//! A running corral and what it exposes: /status, /metrics, its log.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    eventually, http, metric_value, require, send_signal, try_http, try_metric_value, Config,
    Signal, CORRAL,
};

/// Where a corral started by the kit writes its output, in its directory.
const LOG_FILE: &str = "corral.log";

/// Sends `command`'s output to [`LOG_FILE`] in `dir`.
fn log_to(command: &mut Command, dir: &Path) {
    let log = std::fs::File::create(dir.join(LOG_FILE)).unwrap();
    command.stdout(log.try_clone().unwrap()).stderr(log);
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
    /// Writes `config` to a file and runs `corral run -c FILE` on it.
    pub fn start(config: &Config) -> Corral {
        Corral::launch(Path::new(CORRAL), config, |_| {})
    }

    /// As [`Corral::start`], with extra command-line arguments and environment.
    pub fn start_with(config: &Config, args: &[&str], env: &[(&str, &str)]) -> Corral {
        Corral::launch(Path::new(CORRAL), config, |command| {
            command.args(args).envs(env.iter().copied());
        })
    }

    /// As [`Corral::start`], running another copy of the corral binary.
    pub fn start_binary(binary: &Path, config: &Config) -> Corral {
        Corral::launch(binary, config, |_| {})
    }

    /// As [`Corral::start`], after `customize` has had its say on the
    /// command (arguments, standard streams, limits).
    pub fn start_customized(config: &Config, customize: impl FnOnce(&mut Command)) -> Corral {
        Corral::launch(Path::new(CORRAL), config, customize)
    }

    /// Runs `corral run ARGS...` in a fresh directory with no config file
    /// (unless the arguments name one): the one-liner form. `front` and
    /// `admin` are where the arguments put them.
    pub fn start_flags(args: &[&str], front: SocketAddr, admin: SocketAddr) -> Corral {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(CORRAL);
        command.arg("run").args(args).current_dir(dir.path());
        log_to(&mut command, dir.path());
        let config_path = dir.path().join("no-config-file");
        Corral::spawn(command, dir, config_path, front, admin)
    }

    fn launch(binary: &Path, config: &Config, customize: impl FnOnce(&mut Command)) -> Corral {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("corral.toml");
        config.write(&config_path);
        let mut command = Command::new(binary);
        command.arg("run").arg("-c").arg(&config_path);
        log_to(&mut command, dir.path());
        customize(&mut command);
        Corral::spawn(command, dir, config_path, config.front, config.admin)
    }

    /// Starts `command` and waits until the admin port answers; fails the
    /// test with the log if corral exits first.
    fn spawn(
        mut command: Command,
        dir: tempfile::TempDir,
        config_path: PathBuf,
        front: SocketAddr,
        admin: SocketAddr,
    ) -> Corral {
        let log_path = dir.path().join(LOG_FILE);
        let child = spawn_retrying_busy(&mut command);
        let mut corral = Corral {
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

    fn wait_admin(&mut self) {
        let admin = self.admin;
        let mut exited = None;
        let answers = eventually(Duration::from_secs(20), || {
            exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            exited.is_some() || matches!(try_http(admin, "GET", "/healthz"), Ok((200, _)))
        });
        assert!(
            answers && exited.is_none(),
            "corral's admin port {admin} never answered (exited: {exited:?}); log:\n{}",
            self.log()
        );
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

    /// Waits until the log contains `text`; panics with the log if it never does.
    pub fn wait_log(&self, text: &str, limit: Duration) {
        assert!(
            eventually(limit, || self.log().contains(text)),
            "{text:?} never appeared in the log:\n{}",
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
    /// or `corral_connection_errors_total{reason="connect_failed"}`. Panics,
    /// naming the series that do exist, when there is no such sample.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    /// The value of one sample in /metrics, or None while it does not exist
    /// (for a series that appears only later).
    pub fn try_metric(&self, series: &str) -> Option<f64> {
        try_metric_value(&self.metrics(), series)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `signal` to the corral master.
    pub fn signal(&self, signal: Signal) {
        send_signal(self.pid(), signal);
    }

    /// Waits for corral to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let mut code = None;
        eventually(limit, || match child.try_wait().unwrap() {
            Some(status) => {
                code = status.code();
                true
            }
            None => false,
        });
        code
    }

    /// The /status entry of the backend named `name` (`worker-1`, or a
    /// static backend's name); panics with /status when there is none.
    pub fn backend(&self, name: &str) -> serde_json::Value {
        let status = self.status();
        status["backends"]
            .as_array()
            .and_then(|all| all.iter().find(|b| b["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no {name} in /status: {status}"))
    }

    /// The /status entry of worker `slot`.
    pub fn worker(&self, slot: usize) -> serde_json::Value {
        self.backend(&format!("worker-{slot}"))
    }

    /// The pid of worker `slot`, if it has a process now.
    pub fn try_pid_of(&self, slot: usize) -> Option<u32> {
        self.worker(slot)["pid"].as_u64().map(|p| p as u32)
    }

    /// The pid of worker `slot`; panics with /status when it has none.
    pub fn pid_of(&self, slot: usize) -> u32 {
        self.try_pid_of(slot)
            .unwrap_or_else(|| panic!("worker-{slot} has no pid: {}", self.status()))
    }

    /// The /status entries of the workers (not the static backends).
    pub fn workers(&self) -> Vec<serde_json::Value> {
        self.status()["backends"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|b| b["name"].as_str().unwrap_or("").starts_with("worker-"))
            .collect()
    }

    /// Does /status hold exactly `n` backends, every one up?
    pub fn all_up(&self, n: usize) -> bool {
        let status = self.status();
        let backends = status["backends"].as_array().cloned().unwrap_or_default();
        backends.len() == n && backends.iter().all(|b| b["state"] == "up")
    }

    /// Waits until /status holds exactly `n` backends, every one up.
    pub fn wait_all_up(&self, n: usize) {
        let ok = eventually(Duration::from_secs(20), || self.all_up(n));
        assert!(
            ok,
            "{n} backends never were all up: {}\nlog:\n{}",
            self.status(),
            self.log()
        );
    }

    /// The pids of the worker processes in /status.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers()
            .iter()
            .filter_map(|b| b["pid"].as_u64().map(|p| p as u32))
            .collect()
    }

    /// Replaces the config file (for reload tests). The new config is
    /// normally the running one with keys changed, so the addresses stay.
    pub fn rewrite(&self, config: &Config) {
        config.write(&self.config_path);
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

/// Runs `promtool check metrics` on `text` (a Prometheus text exposition);
/// fails the test on any complaint, or when promtool is missing.
pub fn promtool_accepts(text: &str) {
    require("promtool", "prometheus");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n--- the metrics:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Spawns `command`, retrying while exec says "text file busy": a binary
/// just copied (the privileges test runs a world-readable copy) stays busy
/// while any process forked meanwhile by another test thread still holds
/// the copy's write descriptor, until that child execs.
fn spawn_retrying_busy(command: &mut Command) -> Child {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(error) if error.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            spawned => return spawned.expect("corral starts"),
        }
    }
}
