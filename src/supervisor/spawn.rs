//! Starting worker processes, from one long-lived thread.
//!
//! Every worker is forked from the dedicated `corral-spawner` thread, which
//! lives as long as the process image. That thread runs a small runtime
//! that also reaps each child (a pidfd per shim, see [`super::process`])
//! and forwards the child's stdout and stderr to the log (see
//! [`super::output`]). It owns the [`Lifeline`] every shim holds, and the
//! list of the children it started: for `corral upgrade` it hands both
//! over, with the output pipes, and stops; the next image adopts them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};

use socket2::Socket;
use tokio::sync::{mpsc, oneshot};

use super::lifeline::{self, Lifeline};
use super::output::{OpenPipe, Outputs, Stream};
pub use super::process::WorkerProcess;

/// The descriptor a handed socket gets in the worker (systemd's
/// `SD_LISTEN_FDS_START`).
const HANDED_FD: libc::c_int = 3;

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

/// A worker process started by this or an earlier image, as an upgrade
/// hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Child {
    /// The worker slot it serves.
    pub worker: usize,
    /// The worker's pid.
    pub pid: u32,
    /// Its shim's pid (a child of corral).
    pub shim: u32,
}

/// What the spawner thread hands to the next image of corral: every
/// descriptor in it has close-on-exec cleared.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Handover {
    /// The lifeline's (read, write) ends.
    pub lifeline: (RawFd, RawFd),
    /// The children not yet reaped.
    pub children: Vec<Child>,
    /// The output pipes still open.
    pub pipes: Vec<OpenPipe>,
}

enum Request {
    Spawn {
        spec: WorkerSpec,
        reply: oneshot::Sender<io::Result<WorkerProcess>>,
    },
    /// Stop, and hand everything over (the process is about to exec).
    Handover {
        reply: oneshot::Sender<io::Result<Handover>>,
    },
}

/// A handle to the spawner thread; cheap to clone.
#[derive(Clone)]
pub struct Spawner {
    requests: mpsc::UnboundedSender<Request>,
    /// The thread's children, read here for [`Spawner::slots_with_two`].
    children: Arc<Mutex<HashMap<u32, Child>>>,
}

/// The spawner thread's own state.
struct Thread {
    lifeline: Lifeline,
    outputs: Outputs,
    /// The children not yet reaped, by shim pid.
    children: Arc<Mutex<HashMap<u32, Child>>>,
}

impl Spawner {
    /// Starts the spawner thread.
    pub fn start() -> io::Result<Spawner> {
        Ok(Spawner::start_with(Lifeline::new()?, None)?.0)
    }

    /// Starts the spawner thread on what an earlier image handed over, and
    /// returns the processes it adopted, each with its worker slot.
    pub fn adopt(handover: Handover) -> io::Result<(Spawner, Vec<(usize, WorkerProcess)>)> {
        let (read, write) = handover.lifeline;
        let lifeline = Lifeline::adopt(read, write)?;
        let (spawner, adopted) = Spawner::start_with(lifeline, Some(handover))?;
        Ok((spawner, adopted))
    }

    fn start_with(
        lifeline: Lifeline,
        handover: Option<Handover>,
    ) -> io::Result<(Spawner, Vec<(usize, WorkerProcess)>)> {
        let (requests, mut incoming) = mpsc::unbounded_channel::<Request>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (adopted_tx, adopted_rx) = std::sync::mpsc::channel();
        let children: Arc<Mutex<HashMap<u32, Child>>> = Arc::default();
        let thread_children = Arc::clone(&children);
        std::thread::Builder::new()
            .name("corral-spawner".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let thread = Thread {
                        lifeline,
                        outputs: Outputs::default(),
                        children: thread_children,
                    };
                    let adopted = handover.map(|h| thread.adopt(h)).unwrap_or_default();
                    let _ = adopted_tx.send(adopted);
                    while let Some(request) = incoming.recv().await {
                        match request {
                            Request::Spawn { spec, reply } => {
                                let _ = reply.send(thread.spawn(spec));
                            }
                            Request::Handover { reply } => {
                                let _ = reply.send(thread.hand_over());
                                // Nothing more may run here: no child is
                                // reaped and no pipe read until the exec.
                                loop {
                                    std::thread::park();
                                }
                            }
                        }
                    }
                    // The supervisor is gone: the process is exiting. Keep
                    // reaping until it does, so no child is left a zombie.
                    std::future::pending::<()>().await;
                });
            })?;
        let adopted = adopted_rx
            .recv()
            .map_err(|_| io::Error::other("the spawner thread ended while adopting"))?;
        Ok((Spawner { requests, children }, adopted))
    }

    /// The worker slots with more than one process alive (a replacement
    /// starting, or an old process draining, in a rolling restart).
    pub fn slots_with_two(&self) -> Vec<usize> {
        let children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        let mut slots: Vec<usize> = children.values().map(|c| c.worker).collect();
        slots.sort_unstable();
        let mut twice: Vec<usize> = slots
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        twice.dedup();
        twice
    }

    /// Starts a worker process.
    pub async fn spawn(&self, spec: WorkerSpec) -> io::Result<WorkerProcess> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Spawn { spec, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Stops the spawner thread and returns what the next image needs. After
    /// this, no child is reaped and no output read by this image.
    pub async fn hand_over(&self) -> io::Result<Handover> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Handover { reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn gone() -> io::Error {
    io::Error::other("the spawner thread is gone")
}

impl Thread {
    /// Starts the worker under its shim (see [`super::shim`]) and learns
    /// the worker's pid from the shim.
    fn spawn(&self, spec: WorkerSpec) -> io::Result<WorkerProcess> {
        let (report, reported) = std::io::pipe()?;
        let mut command = shim_command(&spec, reported);
        let handed = spec.socket.as_ref().map(|s| s.as_raw_fd());
        let lifeline = self.lifeline.read_end();
        // SAFETY: the closure runs in the child between fork and exec. It
        // makes only async-signal-safe calls (dup2, fcntl), allocates
        // nothing (an `io::Error` from a raw errno is a plain integer), and
        // touches no memory shared with other threads. std sends the errno
        // to the parent. The handed socket's fd stays open in the parent
        // (`spec` holds it) until spawn returns.
        unsafe {
            command.pre_exec(move || wire_child(handed, lifeline));
        }
        let spawned = command.spawn();
        // The shim holds the pipe's write end now; ours must go, or a shim
        // that dies before it reports would leave the read below waiting.
        drop(command);
        let mut child = spawned.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start {:?}: {e}", spec.program))
        })?;
        let shim = child.id();
        let pid = read_pid(report).ok_or_else(|| {
            io::Error::other(format!(
                "cannot start {:?}: its shim exited before starting it",
                spec.program
            ))
        })?;
        if let Some(out) = child.stdout.take() {
            self.outputs.forward(
                OwnedFd::from(out),
                OpenPipe::new(spec.id, shim, Stream::Stdout),
            );
        }
        if let Some(err) = child.stderr.take() {
            self.outputs.forward(
                OwnedFd::from(err),
                OpenPipe::new(spec.id, shim, Stream::Stderr),
            );
        }
        // The std handle is dropped unreaped: the pidfd watch reaps it.
        drop(child);
        self.watch(Child {
            worker: spec.id,
            pid,
            shim,
        })
    }

    /// Watches a child until it is reaped, listed in `children` until then.
    fn watch(&self, child: Child) -> io::Result<WorkerProcess> {
        self.lock().insert(child.shim, child);
        let children = Arc::clone(&self.children);
        WorkerProcess::watch(child.pid, child.shim, move || {
            children
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&child.shim);
        })
        .inspect_err(|_| {
            self.lock().remove(&child.shim);
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Child>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything the next image needs, close-on-exec cleared.
    fn hand_over(&self) -> io::Result<Handover> {
        // A pipe that cannot be kept is left out (its worker's output is
        // lost to the log, the worker is not).
        let pipes: Vec<OpenPipe> = self
            .outputs
            .open_pipes()
            .into_iter()
            .filter(|pipe| match lifeline::set_cloexec(pipe.fd, false) {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(worker = pipe.worker, fd = pipe.fd, %error, "upgrade: the worker's output pipe cannot be handed over");
                    false
                }
            })
            .collect();
        Ok(Handover {
            lifeline: self.lifeline.keep_across_exec()?,
            children: self.lock().values().copied().collect(),
            pipes,
        })
    }

    /// Takes over an earlier image's children and output pipes. A child
    /// that cannot be watched (reaped meanwhile) is left out: its slot
    /// starts a new process.
    fn adopt(&self, handover: Handover) -> Vec<(usize, WorkerProcess)> {
        for pipe in handover.pipes {
            // A duplicate: the original stays for a rollback, and is closed
            // once this image serves (see crate::upgrade::adopt).
            match crate::fds::duplicate(pipe.fd, 3) {
                Ok(fd) => self.outputs.forward(fd, pipe),
                Err(error) => {
                    tracing::warn!(worker = pipe.worker, %error, "cannot take over the worker's output")
                }
            }
        }
        handover
            .children
            .into_iter()
            .filter_map(|child| match self.watch(child) {
                Ok(process) => Some((child.worker, process)),
                Err(error) => {
                    tracing::warn!(worker = child.worker, pid = child.pid, %error, "cannot adopt the worker process; its slot starts another");
                    None
                }
            })
            .collect()
    }
}

/// The shim's command line, environment and pipes for `spec`.
fn shim_command(spec: &WorkerSpec, reported: std::io::PipeWriter) -> std::process::Command {
    // /proc/self/exe, not the binary's path: a corral whose binary was
    // replaced on disk (a package upgrade) still starts its shims.
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg0("corral")
        .arg("worker-shim")
        .arg("--parent")
        .arg(std::process::id().to_string())
        .args(spec.socket.is_some().then_some("--handed-socket"))
        .arg("--")
        .arg(&spec.program)
        .args(&spec.args)
        // systemd's socket and watchdog are corral's, not the workers'
        // (with workers.notify, the spec gives them corral's own).
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove(crate::fds::HANDOVER_ENV)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(reported))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if !spec.cwd.as_os_str().is_empty() {
        command.current_dir(&spec.cwd);
    }
    command
}

/// In the child between fork and exec: the handed socket at fd 3 and the
/// lifeline at fd 4, both without close-on-exec (dup2 clears it; a
/// descriptor already in place needs it cleared by hand).
fn wire_child(handed: Option<RawFd>, lifeline: RawFd) -> io::Result<()> {
    for (from, to) in handed
        .map(|fd| (fd, HANDED_FD))
        .into_iter()
        .chain([(lifeline, lifeline::SHIM_FD)])
    {
        // SAFETY: dup2/fcntl on descriptors of this (child) process.
        let moved = unsafe {
            if from == to {
                libc::fcntl(from, libc::F_SETFD, 0)
            } else {
                libc::dup2(from, to)
            }
        };
        if moved < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
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
