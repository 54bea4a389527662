//! A real headless Chromium with its DevTools protocol open, driven by
//! tests/support/devtools.js (Node) the way a person uses a page: wait
//! for something to show, click it with the mouse, read what the page says.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, require, support, Signal};

/// A headless Chromium showing one page; its whole process group is
/// killed when dropped (Chromium starts helpers of its own).
pub struct Chromium {
    child: Child,
    dir: tempfile::TempDir,
    /// Its DevTools port.
    pub port: u16,
    pub url: String,
}

impl Chromium {
    /// Starts Chromium on `url`, with DevTools on a port it chooses.
    pub fn open(url: &str) -> Chromium {
        require("chromium", "chromium");
        require("node", "nodejs");
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        let child = Command::new("chromium")
            .args(HEADLESS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("chromium.err")).unwrap())
            .process_group(0)
            .spawn()
            .expect("chromium starts");
        let mut chromium = Chromium {
            child,
            dir,
            port: 0,
            url: url.to_string(),
        };
        // Chromium writes the port it took into the profile.
        let active = profile.join("DevToolsActivePort");
        let mut port = None;
        eventually(Duration::from_secs(60), || {
            port = std::fs::read_to_string(&active)
                .ok()
                .and_then(|t| t.lines().next()?.trim().parse().ok());
            port.is_some()
        });
        chromium.port = port.unwrap_or_else(|| {
            panic!(
                "chromium never opened its DevTools port: {}",
                chromium.errors()
            )
        });
        chromium
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromium.err")).unwrap_or_default()
    }

    /// Runs the steps of tests/support/devtools.js (`wait:EXPR`,
    /// `click:SELECTOR`, `print:EXPR`) on the page; returns what `print`
    /// steps printed, one JSON value a line. Panics with the reason when a
    /// step fails.
    pub fn drive(&self, steps: &[&str]) -> String {
        let out = Command::new("node")
            .arg("--experimental-websocket")
            .arg(support("devtools.js"))
            .arg(self.port.to_string())
            .arg(&self.url)
            .args(steps)
            .stdin(Stdio::null())
            .output()
            .expect("node runs");
        assert!(
            out.status.success(),
            "devtools.js {steps:?}: {}\n--- chromium:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.errors()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// How every test runs Chromium: headless, in a fresh profile, quiet on
/// the network but for the page.
const HEADLESS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A child in its own process group; the whole group is killed and the
/// child reaped when dropped (Chromium starts helpers of its own).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// The DOM of `url` after its scripts ran, dumped by headless Chromium.
pub fn rendered_dom(url: &str) -> String {
    require("chromium", "chromium");
    let dir = tempfile::tempdir().unwrap();
    let dom_path = dir.path().join("dom.html");
    let err_path = dir.path().join("chromium.err");
    let child = Command::new("chromium")
        .args(HEADLESS)
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .expect("chromium starts");
    let mut chromium = Group(child);
    let mut status = None;
    let finished = eventually(Duration::from_secs(90), || {
        status = chromium.0.try_wait().unwrap();
        status.is_some()
    });
    let errors = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(finished, "chromium never finished: {errors}");
    assert!(
        status.unwrap().success(),
        "chromium failed: {status:?}: {errors}"
    );
    std::fs::read_to_string(&dom_path).unwrap()
}
