//! Process-level behaviour: systemd readiness notifications and dropping
//! root after binding a privileged port.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::*;

fn uid_of(pid: u32) -> u32 {
    proc_status(pid, "Uid:")[1].parse().unwrap() // effective uid
}

/// A copy of the corral binary in a directory anyone may enter, for tests
/// that run it (or its workers) as nobody.
fn world_readable_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("corral");
    std::fs::copy(CORRAL, &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, binary)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut corral = Corral::start_with(
        &Config::new().demo_workers(1),
        &[],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let front = corral.front;
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let ready = next();
    assert!(ready.contains("READY=1"), "{ready}");
    // READY comes only once the front end serves.
    assert!(get_from(front, None).is_ok());
    corral.signal(Signal::SIGHUP);
    let reloading = next();
    assert!(reloading.contains("RELOADING=1"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(next().contains("READY=1"));
    corral.signal(Signal::SIGTERM);
    assert!(next().contains("STOPPING=1"));
    assert_eq!(corral.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn root_binds_a_privileged_port_then_runs_as_nobody_with_its_workers() {
    assert!(
        is_root(),
        "this test drops privileges and must run as root (CI does)"
    );
    let privileged = (700..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    let front: SocketAddr = format!("127.0.0.1:{privileged}").parse().unwrap();
    let config = Config::new()
        .bind(front)
        .set("runtime.user", "nobody")
        .demo_workers(2);
    // Run a copy that nobody can reach, wherever the checkout lives.
    let reachable = world_readable_copy();
    let corral = Corral::start_binary(&reachable.1, &config);
    corral.wait_up(2);
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert_eq!(uid_of(corral.pid()), nobody);
    for pid in corral.worker_pids() {
        assert_eq!(uid_of(pid), nobody, "worker {pid}");
    }
    assert!(get_from(front, None).unwrap().starts_with("worker="));
    // A reload after the drop is not refused for want of root.
    corral.signal(Signal::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || {
            corral.metric("corral_config_reloads_total{result=\"success\"}") == 1.0
        }),
        "{}",
        corral.log()
    );
}

#[test]
fn dropping_privileges_without_root_is_refused_with_the_key() {
    assert!(
        is_root(),
        "this test runs corral as nobody and must run as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("c.toml");
    // nobody cannot become daemon (becoming nobody again would be a no-op).
    std::fs::write(
        &path,
        "[runtime]\nuser = \"daemon\"\n[workers]\ncommand = [\"x\"]\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let reachable = world_readable_copy();
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&reachable.1)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("setpriv (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("runtime.user") && text.contains("root"),
        "{text}"
    );
    assert!(text.contains("c.toml:2:"), "{text}");

    let (code, text) = corral_cmd(&["check", "-c", "/dev/null"]);
    assert_eq!(code, Some(2), "{text}");
    std::fs::write(
        &path,
        "[runtime]\nuser = \"no-such-user-here\"\n[workers]\ncommand = [\"x\"]\n",
    )
    .unwrap();
    let (code, text) = corral_cmd(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(text.contains("no user `no-such-user-here`"), "{text}");
}
