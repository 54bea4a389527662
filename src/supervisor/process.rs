//! One started worker process, under its shim: its pids, and its exit.
//!
//! The exit is watched through a pidfd of the shim (the shim exits the way
//! the worker did), not through a child handle of the runtime, so that a
//! process started by an earlier image of corral (before `corral upgrade`)
//! is watched the same way as one started by this image.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

/// A started worker process, under its shim.
pub struct WorkerProcess {
    /// The worker's own pid (and process group).
    pub pid: u32,
    /// The shim's pid: the root of the worker's whole process tree.
    pub shim: u32,
    /// Resolves with the exit status once the process has been reaped.
    exited: oneshot::Receiver<ExitStatus>,
    /// Set once `exited` has resolved (a oneshot may be awaited only once).
    reaped: Option<Option<ExitStatus>>,
}

impl WorkerProcess {
    /// Watches the shim `shim` (a child of this process) for its exit; must
    /// run on the spawner thread's runtime, which reaps it and then calls
    /// `on_reaped`.
    pub fn watch(
        pid: u32,
        shim: u32,
        on_reaped: impl FnOnce() + Send + 'static,
    ) -> io::Result<WorkerProcess> {
        let pidfd = pidfd_open(shim)?;
        let (tell, exited) = oneshot::channel();
        // SAFETY: the AsyncFd owns the pidfd, so its fd stays open and the
        // same for the AsyncFd's whole life.
        let watched =
            unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        tokio::spawn(async move {
            let _ = watched.readable().await;
            let status = reap(&watched);
            on_reaped();
            if let Some(status) = status {
                let _ = tell.send(status);
            }
        });
        Ok(WorkerProcess {
            pid,
            shim,
            exited,
            reaped: None,
        })
    }

    /// Waits until the process has been reaped; `None` if the status was
    /// lost. Cancel-safe, and may be called again after it returned.
    pub async fn wait(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.reaped {
            return status;
        }
        let status = (&mut self.exited).await.ok();
        self.reaped = Some(status);
        status
    }

    /// Stops the process group: SIGTERM, then SIGKILL after `grace`.
    /// Returns once the process has been reaped.
    pub async fn stop(&mut self, grace: Duration) {
        self.stop_through(grace, signal_group).await;
    }

    /// SIGKILL to the process group; returns once it has been reaped.
    pub async fn kill(&mut self) {
        self.kill_through(signal_group).await;
    }

    /// [`WorkerProcess::stop`], its signals sent through `send` (given the
    /// process group and the signal): the grace and the SIGKILL deadline,
    /// apart from what delivers the signals.
    async fn stop_through(&mut self, grace: Duration, send: fn(u32, Signal)) {
        if self.reaped.is_some() {
            return;
        }
        send(self.pid, Signal::SIGTERM);
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            tracing::warn!(pid = self.pid, grace = ?grace, "worker ignored SIGTERM; sending SIGKILL");
            self.kill_through(send).await;
        }
    }

    /// [`WorkerProcess::kill`], its signal sent through `send`; waits at
    /// most [`REAP_AFTER_KILL`] for the reaper.
    async fn kill_through(&mut self, send: fn(u32, Signal)) {
        if self.reaped.is_some() {
            return;
        }
        send(self.pid, Signal::SIGKILL);
        let _ = tokio::time::timeout(REAP_AFTER_KILL, self.wait()).await;
    }
}

/// How long a stop waits for the reaper after SIGKILL (which cannot be
/// ignored; only a process stuck in the kernel outlasts it).
const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

/// Sends `signal` to the process group `pgid` (a worker's pid: it leads
/// its own group).
fn signal_group(pgid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid as i32), signal);
}

impl Drop for WorkerProcess {
    /// A process handle is never dropped while its process runs: whatever
    /// path forgot it, the worker goes with it.
    fn drop(&mut self) {
        let running = self.reaped.is_none()
            && matches!(
                self.exited.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            );
        if running {
            signal_group(self.pid, Signal::SIGKILL);
        }
    }
}

/// A pidfd for `pid` (Linux 5.3).
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Reaps the exited process behind `pidfd` (Linux 5.4) and returns its
/// status as `wait` encodes it.
fn reap(pidfd: &AsyncFd<OwnedFd>) -> Option<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    // SAFETY: siginfo_t is plain data, filled by waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let id = pidfd.get_ref().as_raw_fd() as libc::id_t;
    // SAFETY: waitid on a pidfd of our own child, writing into `info`.
    if unsafe { libc::waitid(libc::P_PIDFD, id, &mut info, libc::WEXITED) } != 0 {
        return None;
    }
    // SAFETY: after waitid with WEXITED, si_status and si_code are set.
    let (code, status) = unsafe { (info.si_code, info.si_status()) };
    let raw = match code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f,
    };
    Some(ExitStatus::from_raw(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::os::unix::process::ExitStatusExt;
    use tokio::time::Instant;

    /// Above the kernel's largest pid (`PID_MAX_LIMIT`, 2^22): should a
    /// test's fake process reach `Drop` unreaped, its SIGKILL finds no one.
    const NO_SUCH_PID: u32 = 0x7fff_0000;

    thread_local! {
        /// The signals sent, and when (on the paused clock).
        static SENT: RefCell<Vec<(Signal, Instant)>> = const { RefCell::new(Vec::new()) };
        /// What ends the fake process (its reaper's status).
        static EXIT: RefCell<Option<oneshot::Sender<ExitStatus>>> = const { RefCell::new(None) };
        /// How long after SIGTERM the fake process exits; `None`: it
        /// ignores SIGTERM.
        static OBEYS_AFTER: Cell<Option<Duration>> = const { Cell::new(None) };
    }

    /// A process that dies on SIGKILL at once, and on SIGTERM as
    /// [`OBEYS_AFTER`] says.
    fn fake(obeys_after: Option<Duration>) -> WorkerProcess {
        let (exit, exited) = oneshot::channel();
        EXIT.set(Some(exit));
        OBEYS_AFTER.set(obeys_after);
        SENT.take();
        WorkerProcess {
            pid: NO_SUCH_PID,
            shim: NO_SUCH_PID,
            exited,
            reaped: None,
        }
    }

    fn deliver(_pgid: u32, signal: Signal) {
        SENT.with_borrow_mut(|sent| sent.push((signal, Instant::now())));
        let after = match signal {
            Signal::SIGKILL => Some(Duration::ZERO),
            _ => OBEYS_AFTER.get(),
        };
        // A process that ignores the signal keeps its exit to come.
        if let Some((after, exit)) = after.and_then(|after| Some((after, EXIT.take()?))) {
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = exit.send(ExitStatus::from_raw(0));
            });
        }
    }

    fn signals_sent() -> Vec<Signal> {
        SENT.with_borrow(|sent| sent.iter().map(|(signal, _)| *signal).collect())
    }

    #[tokio::test(start_paused = true)]
    async fn sigkill_comes_once_the_grace_is_over() {
        let mut process = fake(None);
        let started = Instant::now();
        process.stop_through(Duration::from_secs(10), deliver).await;
        assert_eq!(signals_sent(), [Signal::SIGTERM, Signal::SIGKILL]);
        let killed = SENT.with_borrow(|sent| sent[1].1 - started);
        assert!(
            killed >= Duration::from_secs(10) && killed < Duration::from_secs(11),
            "SIGKILL after {killed:?}"
        );
        assert!(process.reaped.is_some(), "stop returns once reaped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_that_exits_within_the_grace_gets_no_sigkill() {
        let mut process = fake(Some(Duration::from_secs(9)));
        let started = Instant::now();
        process.stop_through(Duration::from_secs(10), deliver).await;
        assert_eq!(signals_sent(), [Signal::SIGTERM]);
        assert_eq!(started.elapsed().as_secs(), 9, "stop waited for its exit");
        assert!(process.reaped.is_some());
        // Stopping a reaped process sends nothing.
        process.stop_through(Duration::from_secs(10), deliver).await;
        assert_eq!(signals_sent(), [Signal::SIGTERM]);
    }
}
