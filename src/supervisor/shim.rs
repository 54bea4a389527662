//! The worker shim: a tiny process (this binary, `corral worker-shim`)
//! between corral and each worker, so that nothing a worker starts outlives
//! corral or the worker.
//!
//! It is a *child subreaper* (`PR_SET_CHILD_SUBREAPER`): every descendant of
//! the worker that loses its parent, whatever session or group it moved to
//! (`setsid`, daemonizing), is re-parented to the shim instead of init, so
//! the shim can always find and kill the whole tree. It learns that corral
//! is gone (SIGKILL of corral included) through the [`super::lifeline`],
//! which an upgrade of corral (`execve`) keeps open, and then kills the tree;
//! when the worker exits, it kills what the worker left behind and exits
//! with the worker's status, so corral sees the worker's exit as before.
//!
//! Why a shim rather than a cgroup: cgroups need a delegated, writable
//! cgroup tree (root, or systemd's `Delegate=`), which containers and plain
//! shells often lack; a subreaper works for any user, anywhere.
//!
//! The worker gets its own process group (corral signals the worker's group
//! to stop it, never the shim), `/dev/null` as stdin, and the shim's stdout
//! and stderr (corral's pipes). The shim reports the worker's pid to corral
//! on its stdin, which corral hands it as the write end of a pipe.
//!
//! With `--handed-socket`, fd 3 is the worker slot's listening socket
//! (`workers.listen = "fd"`): the shim passes it on and, in the child after
//! fork, sets `LISTEN_FDS=1`, `LISTEN_FDNAMES=corral` and `LISTEN_PID` to the
//! child's own pid, which only the child knows and which exec keeps.
//!
//! The shim is single-threaded and blocks the signals it handles, then
//! takes them synchronously with `sigwaitinfo`: no handler runs, nothing is
//! async-signal-unsafe.

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{execvp, fork, getppid, setpgid, ForkResult, Pid};

use super::lifeline;

/// The signals the shim takes synchronously.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGIO,
    ] {
        set.add(signal);
    }
    set
}

/// Runs the shim: starts `program` with `args` and never returns.
/// `parent` is corral's pid, to detect that corral died before the shim
/// asked to be told. `handed_socket`: fd 3 is a listening socket for the
/// worker.
pub fn run(parent: u32, handed_socket: bool, program: OsString, args: Vec<OsString>) -> ! {
    let signals = handled();
    if signals.thread_block().is_err() {
        fail("cannot block signals");
    }
    // SAFETY: prctl with this option only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong);
    }
    if lifeline::arm().is_err() {
        fail("cannot arm the lifeline (fd 4)");
    }
    if lifeline::is_cut() || getppid().as_raw() as u32 != parent {
        // corral died before the lifeline was armed.
        std::process::exit(1);
    }
    let argv: Vec<CString> = std::iter::once(&program)
        .chain(args.iter())
        .map(|a| {
            CString::new(a.as_bytes()).unwrap_or_else(|_| fail("an argument holds a NUL byte"))
        })
        .collect();
    // SAFETY: this process is single-threaded (the shim starts no thread),
    // so the child may run any code until exec.
    let worker = match unsafe { fork() } {
        Err(e) => fail(&format!("cannot fork: {e}")),
        Ok(ForkResult::Child) => exec_worker(&argv, handed_socket),
        Ok(ForkResult::Parent { child }) => child,
    };
    // Both sides set the group, so neither can signal the wrong one.
    let _ = setpgid(worker, worker);
    report_pid(worker);
    let status = supervise(worker, &signals);
    kill_tree(worker);
    exit_like(status)
}

/// In the child: its own process group, death with the shim (should the
/// shim itself be killed), stdin from /dev/null, the signal mask cleared,
/// the handed socket announced, then the worker's program.
fn exec_worker(argv: &[CString], handed_socket: bool) -> ! {
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    if handed_socket {
        // This process is single-threaded (a fork of the single-threaded
        // shim): changing the environment races with nothing.
        std::env::set_var("LISTEN_FDS", "1");
        std::env::set_var("LISTEN_FDNAMES", "corral");
        std::env::set_var("LISTEN_PID", std::process::id().to_string());
    } else {
        for name in ["LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"] {
            std::env::remove_var(name);
        }
    }
    if std::env::var_os("WATCHDOG_USEC").is_some() {
        // systemd's rule: the watchdog is the main process's, not its
        // children's, and only the worker knows its own pid.
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    } else {
        std::env::remove_var("WATCHDOG_PID");
    }
    // SAFETY: prctl only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let _ = SigSet::all().thread_unblock();
    if let Ok(null) = std::fs::File::open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto fd 0 of this process; `null` stays open until then.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    let error = execvp(&argv[0], argv).unwrap_err();
    let _ = writeln!(
        std::io::stderr(),
        "corral: cannot start {:?}: {error}",
        argv[0]
    );
    // SAFETY: _exit skips atexit handlers and buffers shared with the parent.
    unsafe { libc::_exit(127) }
}

/// Writes the worker's pid to corral (our stdin is the pipe's write end),
/// then points stdin at /dev/null.
fn report_pid(worker: Pid) {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: fd 0 is the pipe corral gave the shim; this takes it over once.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(0) };
    let _ = writeln!(pipe, "{}", worker.as_raw());
    drop(pipe);
    if let Ok(null) = std::fs::File::open("/dev/null") {
        // SAFETY: dup2 onto fd 0, which was closed just above.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
}

/// Waits for the worker to exit, reaping every adopted orphan meanwhile.
/// A stop signal, or the lifeline cut (corral died), ends the wait at once.
fn supervise(worker: Pid, signals: &SigSet) -> Option<WaitStatus> {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(status) = reap(Some(worker)) {
                    return Some(status);
                }
            }
            Ok(Signal::SIGIO) if !lifeline::is_cut() => continue,
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
}

/// Reaps every child that has exited; returns `worker`'s status if it was
/// among them.
fn reap(worker: Option<Pid>) -> Option<WaitStatus> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(status) => {
                if status.pid() == worker {
                    found = Some(status);
                }
            }
        }
    }
}

/// Kills the worker's group and every descendant, until the shim has no
/// child left (killed processes' children are re-parented to the shim).
fn kill_tree(worker: Pid) {
    let _ = killpg(worker, Signal::SIGKILL);
    let me = std::process::id();
    loop {
        let children = crate::sampler::proc::children_of(me);
        for &child in &children {
            let _ = kill(Pid::from_raw(child as i32), Signal::SIGKILL);
        }
        match waitpid(None, None) {
            Ok(_) => {
                reap(None);
            }
            Err(Errno::ECHILD) if children.is_empty() => return,
            Err(Errno::ECHILD) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// Exits the way the worker did: the same code, or the same signal.
fn exit_like(status: Option<WaitStatus>) -> ! {
    match status {
        Some(WaitStatus::Exited(_, code)) => std::process::exit(code),
        Some(WaitStatus::Signaled(_, signal, _)) => {
            // SAFETY: restoring the default action of a signal in this
            // single-threaded process before raising it.
            unsafe { libc::signal(signal as libc::c_int, libc::SIG_DFL) };
            let _ = SigSet::all().thread_unblock();
            let _ = nix::sys::signal::raise(signal);
            std::process::exit(128 + signal as i32)
        }
        _ => std::process::exit(1),
    }
}

fn fail(what: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "corral worker-shim: {what}");
    std::process::exit(127)
}
