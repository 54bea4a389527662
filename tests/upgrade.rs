//! `corral upgrade`: the file at the started path replaces the running
//! program in the same process; workers, listening sockets, the sticky
//! table and the counters are handed over, and a file that cannot take
//! over is refused (or rolled back) with nothing lost.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

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

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

#[test]
fn upgrades_in_a_row_keep_the_pid_the_workers_and_the_counters_and_serve_on() {
    let bin = tempfile::tempdir().unwrap();
    let program = installed_copy(bin.path());
    let config = Config::new().strategy("round-robin").demo_workers(3);
    let corral = Corral::start_binary(&program, &config);
    corral.wait_up(3);
    let pid = corral.pid();
    let workers = corral.worker_pids();
    let load = Load::start(corral.front, 4);
    assert!(load.serves_more(50), "the load never got going");
    let mut accepted = corral.metric("corral_connections_accepted_total");
    for round in 1..=3 {
        install(&program, &std::fs::read(CORRAL).unwrap(), true);
        let (code, said) = upgrade(&corral);
        assert_eq!(code, 0, "upgrade {round}: {said}\nlog:\n{}", corral.log());
        assert!(said.contains("upgraded corral"), "{said}");
        assert!(said.contains("3 workers handed over"), "{said}");
        assert_eq!(corral.pid(), pid, "the pid stays");
        assert_eq!(exe_of(pid), program, "the new file runs");
        assert_eq!(corral.worker_pids(), workers, "no worker restarted");
        assert!(load.serves_more(50), "upgrade {round}: the load stopped");
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
    // Open connections are not handed over yet (issue 21 is open): a
    // request in flight at the exec can be reset, so failures are printed,
    // not asserted; the load must go on after each upgrade (above).
    let (served, failed, errors) = load.finish();
    assert!(served > 0);
    eprintln!(
        "requests failed across 3 upgrades: {failed} of {}: {errors:?}",
        served + failed
    );
}

#[test]
fn files_that_cannot_take_over_are_refused_and_nothing_changes() {
    let bin = tempfile::tempdir().unwrap();
    let program = installed_copy(bin.path());
    let config = Config::new().strategy("round-robin").demo_workers(2);
    let corral = Corral::start_binary(&program, &config);
    corral.wait_up(2);
    let pid = corral.pid();
    let workers = corral.worker_pids();
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
    let bin = tempfile::tempdir().unwrap();
    let program = installed_copy(bin.path());
    let real = bin.path().join("corral-real");
    std::fs::copy(CORRAL, &real).unwrap();
    let config = Config::new().strategy("round-robin").demo_workers(2);
    let corral = Corral::start_binary(&program, &config);
    corral.wait_up(2);
    let pid = corral.pid();
    let workers = corral.worker_pids();
    // A corral told to fail its adoption, through a wrapper at the path.
    let wrapper = format!(
        "#!/bin/sh\nCORRAL_TEST_FAIL_ADOPTION=1 exec {} \"$@\"\n",
        real.display()
    );
    install(&program, wrapper.as_bytes(), true);
    let load = Load::start(corral.front, 2);
    let (code, said) = upgrade(&corral);
    assert_eq!(code, 1, "{said}\nlog:\n{}", corral.log());
    assert!(said.contains("taken back"), "{said}");
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
    let (_, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}");
}
