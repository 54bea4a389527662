//! A running corral and what it exposes: /status, /metrics, its log.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{eventually, http, require, send_signal, try_http, Config, Signal, CORRAL};

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

    /// Runs `corral run ARGS` with no config file (a one-liner: flags
    /// only), in a fresh directory; `front` and `admin` are the addresses
    /// the flags give (or corral's defaults).
    pub fn run_args(args: &[&str], front: SocketAddr, admin: SocketAddr) -> Corral {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("corral.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(CORRAL);
        command
            .arg("run")
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = spawn_retrying_busy(&mut command);
        let corral = Corral {
            child: Some(child),
            front,
            admin,
            config_path: dir.path().join("no-config-file"),
            dir,
            log_path,
        };
        corral.wait_admin();
        corral
    }

    fn launch(binary: &Path, config: &Config, customize: impl FnOnce(&mut Command)) -> Corral {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("corral.toml");
        config.write(&config_path);
        let log_path = dir.path().join("corral.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        customize(&mut command);
        let child = spawn_retrying_busy(&mut command);
        let corral = Corral {
            child: Some(child),
            front: config.front,
            admin: config.admin,
            dir,
            config_path,
            log_path,
        };
        corral.wait_admin();
        corral
    }

    fn wait_admin(&self) {
        let answers = eventually(Duration::from_secs(20), || {
            matches!(try_http(self.admin, "GET", "/healthz"), Ok((200, _)))
        });
        assert!(
            answers,
            "corral's admin port never answered; log:\n{}",
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

/// The value of `series` (a metric name with its labels, as /metrics writes
/// them) in a Prometheus text exposition, or None when there is no such sample.
pub fn try_metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// As [`try_metric_value`], but a missing sample (a typo, a wrong label) is
/// an error: it panics and lists the samples of that metric that do exist.
pub fn metric_value(text: &str, series: &str) -> f64 {
    try_metric_value(text, series).unwrap_or_else(|| {
        let name = series.split('{').next().unwrap_or(series);
        let existing: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .collect();
        if existing.is_empty() {
            panic!("no series {series} in /metrics: there is no metric {name} at all")
        }
        panic!(
            "no series {series} in /metrics; the {name} series are:\n  {}",
            existing.join("\n  ")
        )
    })
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
