//! Starting worker processes, from one long-lived thread.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, and
//! tokio's blocking threads come and go, so every worker is forked from the
//! dedicated `corral-spawner` thread, which lives as long as the process.
//! That thread runs a small runtime that also reaps each child (tokio's
//! pidfd-based `wait`, no SIGCHLD handler of ours) and forwards the child's
//! stdout and stderr to the log, line by line, tagged with the worker id.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use socket2::Socket;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

/// The descriptor a handed socket gets in the worker (systemd's
/// `SD_LISTEN_FDS_START`).
const HANDED_FD: libc::c_int = 3;

/// Longest worker log line kept whole; the rest of a longer line is dropped
/// and the cut is marked, so a worker printing megabytes cannot hurt corral.
const MAX_LINE: usize = 16 * 1024;

/// Everything needed to start one worker process.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub id: usize,
    pub program: OsString,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// `workers.listen = "fd"`: the slot's listening socket, handed to the
    /// worker as fd 3.
    pub socket: Option<Arc<Socket>>,
}

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

struct Request {
    spec: WorkerSpec,
    reply: oneshot::Sender<io::Result<WorkerProcess>>,
}

/// A handle to the spawner thread; cheap to clone.
#[derive(Clone)]
pub struct Spawner {
    requests: mpsc::UnboundedSender<Request>,
}

impl Spawner {
    /// Starts the spawner thread.
    pub fn start() -> io::Result<Spawner> {
        let (requests, mut incoming) = mpsc::unbounded_channel::<Request>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("corral-spawner".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(request) = incoming.recv().await {
                        let _ = request.reply.send(spawn_here(request.spec));
                    }
                    // The supervisor is gone: the process is exiting. Keep
                    // reaping until it does, so no child is left a zombie.
                    std::future::pending::<()>().await;
                });
            })?;
        Ok(Spawner { requests })
    }

    /// Starts a worker process.
    pub async fn spawn(&self, spec: WorkerSpec) -> io::Result<WorkerProcess> {
        let (reply, answer) = oneshot::channel();
        let gone = || io::Error::other("the spawner thread is gone");
        self.requests
            .send(Request { spec, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Runs on the spawner thread: starts the worker under its shim (see
/// [`super::shim`]) and learns the worker's pid from the shim.
fn spawn_here(spec: WorkerSpec) -> io::Result<WorkerProcess> {
    let (report, reported) = std::io::pipe()?;
    let corral = std::process::id();
    // /proc/self/exe, not the binary's path: a corral whose binary was
    // replaced on disk (a package upgrade) still starts its shims.
    let mut command = tokio::process::Command::new("/proc/self/exe");
    command
        .arg0("corral")
        .arg("worker-shim")
        .arg("--parent")
        .arg(corral.to_string())
        .args(spec.socket.is_some().then_some("--handed-socket"))
        .arg("--")
        .arg(&spec.program)
        .args(&spec.args)
        // systemd's socket and watchdog are corral's, not the workers'
        // (with workers.notify, the spec gives them corral's own).
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(reported))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if !spec.cwd.as_os_str().is_empty() {
        command.current_dir(&spec.cwd);
    }
    let parent = corral as libc::pid_t;
    let handed = spec.socket.as_ref().map(|s| s.as_raw_fd());
    // SAFETY: the closure runs in the child between fork and exec. It makes
    // only async-signal-safe calls (prctl, getppid, dup2, fcntl), allocates
    // nothing (an `io::Error` from a raw errno is a plain integer), and
    // touches no memory shared with other threads. std sends the errno to
    // the parent. The handed socket's fd stays open in the parent (`spec`
    // holds it) until spawn returns.
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = handed {
                // fd 3, without close-on-exec (dup2 clears it; a socket
                // that already is fd 3 needs it cleared by hand).
                let moved = if fd == HANDED_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, HANDED_FD)
                };
                if moved < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The master may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    // The shim holds the pipe's write end now; ours must go, or a shim that
    // dies before it reports would leave the read below waiting.
    drop(command);
    let mut child = spawned
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {:?}: {e}", spec.program)))?;
    let shim = child
        .id()
        .ok_or_else(|| io::Error::other("the worker's shim exited at once"))?;
    let pid = read_pid(report).ok_or_else(|| {
        io::Error::other(format!(
            "cannot start {:?}: its shim exited before starting it",
            spec.program
        ))
    })?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out, spec.id, Stream::Stdout));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(err, spec.id, Stream::Stderr));
    }
    let (tell, exited) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(status) = child.wait().await {
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

/// The worker's pid, as its shim writes it: decimal digits and a newline.
fn read_pid(mut report: std::io::PipeReader) -> Option<u32> {
    use std::io::Read;
    let mut text = Vec::with_capacity(12);
    let mut byte = [0u8; 1];
    while report.read(&mut byte).ok()? == 1 && byte[0] != b'\n' && text.len() < 12 {
        text.push(byte[0]);
    }
    std::str::from_utf8(&text).ok()?.parse().ok()
}

/// Which of a worker's outputs a line came from.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Copies a worker's output to the log, one event per line.
async fn forward_lines(mut stream: impl AsyncRead + Unpin, worker: usize, name: Stream) {
    let mut chunk = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut dropped = 0usize;
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &chunk[..n] {
            if byte == b'\n' {
                emit(worker, name, &line, dropped);
                line.clear();
                dropped = 0;
            } else if line.len() < MAX_LINE {
                line.push(byte);
            } else {
                dropped += 1;
            }
        }
    }
    if !line.is_empty() || dropped > 0 {
        emit(worker, name, &line, dropped);
    }
}

/// One worker line in the log, as pm2 shows it: `worker-0 | text` for
/// stdout, `worker-0 ! text` for stderr (and the `stream` field).
fn emit(worker: usize, stream: Stream, line: &[u8], dropped: usize) {
    let lossy = String::from_utf8_lossy(line);
    // Control and bidi characters (ESC, U+202E, U+2028...) are escaped:
    // a worker's output cannot rewrite the terminal that shows the log.
    let text = crate::terminal::escape_keeping(lossy.trim_end_matches('\r'), &['\t']);
    let (name, mark) = match stream {
        Stream::Stdout => ("stdout", '|'),
        Stream::Stderr => ("stderr", '!'),
    };
    let stderr = matches!(stream, Stream::Stderr);
    crate::logging::worker_output().record(worker, stderr, &text, dropped);
    if dropped > 0 {
        tracing::info!(target: "corral::worker", worker, stream = name, truncated_bytes = dropped, "worker-{worker} {mark} {text}");
    } else {
        tracing::info!(target: "corral::worker", worker, stream = name, "worker-{worker} {mark} {text}");
    }
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
