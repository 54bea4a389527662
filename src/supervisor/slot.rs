//! One worker slot: a stable id whose process corral keeps running.
//!
//! The slot task owns the process. It starts it, waits until it accepts
//! connections, puts it in rotation, restarts it with exponential backoff
//! when it dies, swaps it for a fresh process on a rolling restart (new one
//! ready first, then the old one drained and stopped), and stops it on
//! shutdown. In `fd` mode the process gets no port of its own: it is
//! handed the slot's socket of the front end ([`crate::steering`]) and is
//! ready once a process of its own tree accepts a probe steered to that
//! socket. State goes `starting` → `up` → (`draining` →) `stopped`, or
//! `down` while it is crashed and waiting for its restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::notify::{Notice, Notifier, Registration};
use super::ports::PortBook;
use super::spawn::{Spawner, WorkerProcess, WorkerSpec};
use super::strays;
use crate::config::WorkersConfig;
use crate::health::{self, Verdict};
use crate::pool::{Backend, DownReason, Instance};
use crate::sampler::Sample;
use crate::shared::Shared;
use crate::steering::intruders;
use crate::steering::{self, Steering};
use socket2::Socket;

/// The longest pause between two readiness probes of a starting worker
/// (they start at 2 ms: most workers bind within milliseconds). A process
/// that starts listening sends corral no notice, so this one wait polls.
const READY_PROBE_MAX: Duration = Duration::from_millis(50);

/// Samples (the sampler's passes, one a second) in a row above
/// `workers.max_memory` before a worker is replaced: a short spike is not
/// "staying above".
const MEMORY_SAMPLES_OVER: u32 = 2;

/// Why a worker could not be started or replaced.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error(
        "ports {primary} and {alternate} (workers.port_base + {slot} and its rolling-restart twin) are both taken, by another worker of this corral or by another program (`ss -ltnp 'sport = :{primary}'` names it). Free them, or set workers.port_base (or --port-base) to a free range, or leave it unset and corral picks free ports itself"
    )]
    PortsInUse {
        primary: u16,
        alternate: u16,
        slot: usize,
    },
    #[error("ports {primary} and {alternate}, picked by corral, were taken by another program since, and no other free port was found outside the kernel's ephemeral range: set workers.port_base (or --port-base) to a free range")]
    NoFreePort { primary: u16, alternate: u16 },
    #[error("cannot start the worker: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("not accepting connections on {addr} within ready_timeout ({timeout:?}); killed")]
    NotReady { addr: SocketAddr, timeout: Duration },
    #[error("exited before it was ready ({0})")]
    ExitedEarly(String),
    #[error("stopped while starting")]
    Stopped,
    #[error("did not accept connections from its handed socket within ready_timeout ({timeout:?}); killed. In fd mode the worker must accept from fd 3 (LISTEN_FDS), not listen on a port of its own")]
    HandedNotTaken { timeout: Duration },
    #[error("exited before it was ready ({0}). In fd mode the worker must accept from fd 3 (LISTEN_FDS), not bind the port itself")]
    HandedExitedEarly(String),
    #[error("did not accept connections from its handed socket within ready_timeout ({timeout:?}); killed: {advice}")]
    ListensElsewhere { timeout: Duration, advice: String },
    #[error("the front end has no socket for this worker (binding it failed: see the error logged before it)")]
    NoSocket,
    #[error("accepts connections but sent no READY=1 on its NOTIFY_SOCKET within ready_timeout ({timeout:?}); killed. With workers.notify = true the worker must send READY=1 once it is ready (sd_notify), or set notify = false")]
    NoReadyNotice { timeout: Duration },
    #[error("workers.notify is set but the notify socket could not be created (see the error logged before)")]
    NoNotifySocket,
}

/// Asks a running slot to do something.
pub enum Command {
    /// Replace the process with one started from `workers` (rolling restart).
    Replace {
        workers: Arc<WorkersConfig>,
        done: oneshot::Sender<Result<(), SlotError>>,
    },
}

/// What a slot task needs; moved into the task.
pub struct Slot {
    /// The slot's number: `CORRAL_WORKER_ID`, `worker-<id>`.
    pub id: usize,
    /// The slot's backend in the pool: its state machine (the slot task is
    /// its only writer) and its metrics.
    pub backend: Arc<Backend>,
    /// Starts this slot's processes.
    pub spawner: Spawner,
    /// The snapshot (each restart takes the `workers` in force from it)
    /// and the stop signals.
    pub shared: Arc<Shared>,
    /// The worker ports held, shared with the other slots.
    pub ports: Arc<PortBook>,
    /// The workers' notify socket (`workers.notify`).
    pub notifier: Arc<Notifier>,
}

/// A process that is running and in rotation, with the port it holds
/// (none in `fd` mode: it accepts from the slot's socket) and, with
/// `workers.notify`, what its tree says on the notify socket.
struct Live {
    process: WorkerProcess,
    port: Option<u16>,
    notices: Option<Registration>,
}

/// The next notice from a process, or never (no notify socket).
async fn next_notice(notices: &mut Option<Registration>) -> Notice {
    match notices {
        Some(registration) => match registration.notices.recv().await {
            Some(notice) => notice,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// A deadline far enough away to mean "never".
fn never() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

impl Slot {
    /// Runs the slot until `stop` is cancelled; the process is stopped
    /// before this returns. `first_start` hears when the first process is
    /// ready or has failed.
    pub async fn run(
        self,
        mut workers: Arc<WorkersConfig>,
        mut commands: mpsc::Receiver<Command>,
        stop: CancellationToken,
        first_start: oneshot::Sender<()>,
    ) {
        let mut first_start = Some(first_start);
        let mut backoff = Backoff::new(&workers);
        while !stop.is_cancelled() {
            // A restart uses the config in force (a reload may have changed
            // timeouts, the count or the command since this slot started).
            if let Some(current) = self.shared.config().workers.as_ref() {
                if self.id < current.count && *current != *workers {
                    workers = Arc::new(current.clone());
                }
            }
            self.backend.starting();
            let started = self.start(&workers, None, &stop).await;
            match started {
                Ok(mut live) => {
                    self.go_live(&live, &workers);
                    if let Some(tell) = first_start.take() {
                        let _ = tell.send(());
                    }
                    let up_since = Instant::now();
                    let mut hang_check = tokio::time::interval(Duration::from_secs(1));
                    let mut memory = MemoryWatch::default();
                    let watchdog = tokio::time::sleep_until(watchdog_deadline(&workers));
                    tokio::pin!(watchdog);
                    loop {
                        tokio::select! {
                            notice = next_notice(&mut live.notices) => match notice {
                                Notice::Status(text) => self.backend.set_status_text(text),
                                Notice::Stopping => {
                                    self.backend.stopping_by_itself();
                                    tracing::info!(worker = self.id, pid = live.process.pid, "worker said STOPPING=1; out of rotation");
                                }
                                Notice::Watchdog => watchdog.as_mut().reset(watchdog_deadline(&workers)),
                                Notice::WatchdogTrigger => {
                                    if !self.hung(&mut live, &workers, &stop, "worker sent WATCHDOG=trigger").await {
                                        break;
                                    }
                                    watchdog.as_mut().reset(watchdog_deadline(&workers));
                                }
                                Notice::Ready | Notice::ExtendTimeout(_) | Notice::Other => {}
                            },
                            () = &mut watchdog => {
                                let why = format!(
                                    "worker sent no WATCHDOG=1 for {:?} (workers.watchdog)",
                                    workers.watchdog.unwrap_or_default()
                                );
                                if !self.hung(&mut live, &workers, &stop, &why).await {
                                    break;
                                }
                                watchdog.as_mut().reset(watchdog_deadline(&workers));
                            }
                            _ = hang_check.tick() => {
                                if let Some(limit) = workers.max_memory {
                                    let sample = self.shared.sampler.latest();
                                    if let Some(resident) = memory.over(&sample, live.process.shim, limit) {
                                        tracing::warn!(
                                            worker = self.id,
                                            pid = live.process.pid,
                                            resident_bytes = resident,
                                            max_memory = limit,
                                            "worker uses {} of memory, above workers.max_memory ({}); replacing it",
                                            crate::units::human_bytes(resident),
                                            crate::units::human_bytes(limit),
                                        );
                                        match self.replace(&mut live, &workers, &stop).await {
                                            Ok(()) => self.backend.count_restart(),
                                            Err(error) => tracing::error!(worker = self.id, %error, "replacing the worker failed; the old one keeps serving"),
                                        }
                                        continue;
                                    }
                                }
                                let hung = workers.unhealthy_restart.zip(self.backend.unhealthy_for());
                                if let Some((limit, failing)) = hung.filter(|(limit, failing)| failing >= limit) {
                                    tracing::warn!(
                                        worker = self.id,
                                        pid = live.process.pid,
                                        failing = ?failing,
                                        unhealthy_restart = ?limit,
                                        "worker runs but fails its health checks; restarting it"
                                    );
                                    self.backend.restarting_unhealthy();
                                    self.backend.instance().retire();
                                    live.process.stop(workers.stop_timeout).await;
                                    self.release(&live);
                                    break;
                                }
                            }
                            status = live.process.wait() => {
                                self.backend.crashed();
                                // Whatever it started (npm -> node) went
                                // too: its shim killed the rest of the tree.
                                self.release(&live);
                                backoff.process_exited(up_since.elapsed(), &workers);
                                tracing::warn!(
                                    worker = self.id,
                                    pid = live.process.pid,
                                    status = %describe(status),
                                    uptime = ?up_since.elapsed(),
                                    "worker exited unexpectedly"
                                );
                                break;
                            }
                            Some(command) = commands.recv() => match command {
                                Command::Replace { workers: fresh, done } => {
                                    let result = self.replace(&mut live, &fresh, &stop).await;
                                    if result.is_ok() {
                                        workers = fresh;
                                        watchdog.as_mut().reset(watchdog_deadline(&workers));
                                    }
                                    let _ = done.send(result);
                                }
                            },
                            _ = stop.cancelled() => {
                                self.backend.stopped();
                                self.backend.instance().retire();
                                live.process.stop(workers.stop_timeout).await;
                                self.release(&live);
                                tracing::info!(worker = self.id, pid = live.process.pid, "worker stopped");
                                return;
                            }
                        }
                    }
                }
                Err(error) => {
                    if stop.is_cancelled() {
                        break;
                    }
                    match error {
                        SlotError::ListensElsewhere { .. } => self.backend.listens_elsewhere(),
                        _ => self.backend.failed_to_start(),
                    }
                    if let Some(tell) = first_start.take() {
                        let _ = tell.send(());
                    }
                    tracing::error!(worker = self.id, %error, "worker failed to start");
                }
            }
            self.backend.count_restart();
            tracing::info!(worker = self.id, delay = ?backoff.delay(), "restarting worker after backoff");
            backoff.wait(&mut workers, &mut commands, &stop).await;
        }
        self.backend.stopped();
    }

    /// A worker its watchdog calls hung: out of rotation, and replaced the
    /// rolling way (its replacement ready first). False when the
    /// replacement failed: the hung process is stopped and the slot
    /// restarts after its backoff.
    async fn hung(
        &self,
        live: &mut Live,
        workers: &Arc<WorkersConfig>,
        stop: &CancellationToken,
        why: &str,
    ) -> bool {
        tracing::warn!(
            worker = self.id,
            pid = live.process.pid,
            reason = "watchdog",
            "{why}; replacing it"
        );
        self.backend.watchdog_expired();
        match self.replace(live, workers, stop).await {
            Ok(()) => {
                self.backend.count_restart();
                true
            }
            Err(error) => {
                tracing::error!(worker = self.id, %error, "the hung worker's replacement failed; stopping it");
                live.process.stop(workers.stop_timeout).await;
                self.release(live);
                false
            }
        }
    }

    /// Puts a ready process in rotation.
    fn go_live(&self, live: &Live, workers: &WorkersConfig) {
        let instance = self.instance(&live.process, live.port, workers);
        let addr = instance.addr;
        self.backend.ready(instance);
        tracing::info!(worker = self.id, pid = live.process.pid, %addr, "worker is up");
    }

    /// What the pool knows of `process`: reached on its own `port`, or in
    /// `fd` mode through the front end from the slot's probe address.
    fn instance(
        &self,
        process: &WorkerProcess,
        port: Option<u16>,
        workers: &WorkersConfig,
    ) -> Arc<Instance> {
        match &self.shared.steering {
            Some(steering) => Instance::handed(
                steering.target(),
                steering::probe_source(self.id),
                process.pid,
                process.shim,
            ),
            // A worker of port mode always holds a port.
            None => Instance::with_tree(
                SocketAddr::new(workers.host, port.unwrap_or_default()),
                Some(process.pid),
                Some(process.shim),
            ),
        }
    }

    /// Gives back the port a process held.
    fn release(&self, live: &Live) {
        if let Some(port) = live.port {
            self.ports.release(port);
        }
    }

    /// Starts a process and waits until it accepts connections. `avoid` is a
    /// port not to use (the one the running process holds).
    async fn start(
        &self,
        workers: &WorkersConfig,
        avoid: Option<u16>,
        stop: &CancellationToken,
    ) -> Result<Live, SlotError> {
        if let Some(steering) = &self.shared.steering {
            let (process, notices) = self.start_handed(workers, steering, stop).await?;
            return Ok(Live {
                process,
                port: None,
                notices,
            });
        }
        let primary = workers.port(self.id, false);
        let alternate = workers.port(self.id, true);
        let candidates = if avoid == Some(primary) {
            [alternate, primary]
        } else {
            [primary, alternate]
        };
        let port = match self.ports.claim(workers.host, candidates) {
            Some(port) => port,
            None if workers.auto_ports => self.claim_elsewhere(workers, primary, alternate)?,
            None => {
                return Err(SlotError::PortsInUse {
                    primary,
                    alternate,
                    slot: self.id,
                })
            }
        };
        let started = self.start_on(workers, port, stop).await;
        if started.is_err() {
            self.ports.release(port);
        }
        started.map(|(process, notices)| Live {
            process,
            port: Some(port),
            notices,
        })
    }

    /// Picked ports another program took since the pick: this slot moves
    /// to another free port (the others keep theirs).
    fn claim_elsewhere(
        &self,
        workers: &WorkersConfig,
        primary: u16,
        alternate: u16,
    ) -> Result<u16, SlotError> {
        let avoid = super::ports::front_ports(&self.shared.config());
        let port = self
            .ports
            .claim_elsewhere(workers.host, &avoid)
            .ok_or(SlotError::NoFreePort { primary, alternate })?;
        tracing::warn!(
            worker = self.id,
            port,
            "ports {primary} and {alternate}, picked by corral for this worker, were taken by another program since; it moves to port {port}"
        );
        Ok(port)
    }

    /// `fd` mode: starts a process with the slot's socket as fd 3 and waits
    /// until a process of its own tree accepts a probe from that socket.
    async fn start_handed(
        &self,
        workers: &WorkersConfig,
        steering: &Steering,
        stop: &CancellationToken,
    ) -> Result<(WorkerProcess, Option<Registration>), SlotError> {
        if steering.socket(self.id).is_none() {
            // Binding it failed when the slot was created (no descriptor,
            // say): try again on each start.
            if let Err(error) = steering.grow_to(self.id + 1) {
                tracing::error!(worker = self.id, %error, "cannot bind the front end for this worker");
            }
        }
        let socket = steering.socket(self.id).ok_or(SlotError::NoSocket)?;
        let handed_inode = intruders::inode_of(&*socket);
        let front = steering.addr().port();
        let notify = self.notify_socket(workers)?;
        let spec = spec(workers, self.id, front, Some(socket), notify).map_err(SlotError::Spawn)?;
        let process = self.spawner.spawn(spec).await.map_err(SlotError::Spawn)?;
        let notices = self.listen_to(workers, &process);
        tracing::info!(worker = self.id, pid = process.pid, front = %steering.addr(), "worker started with the front end's socket as fd 3");
        let instance = self.instance(&process, None, workers);
        let (target, from) = (instance.addr, steering::probe_source(self.id));
        self.backend.show_starting(instance);
        let health = self.shared.config().health.clone();
        let shim = process.shim;
        let sampler = &self.shared.sampler;
        let probe = || health::probe_handed(target, from, Some(shim), &health, sampler);
        let not_ready = SlotError::HandedNotTaken {
            timeout: workers.ready_timeout,
        };
        let handed = handed_inode.map(|inode| Handed { shim, inode });
        let waiting = Waiting {
            workers,
            stop,
            not_ready,
            exited: SlotError::HandedExitedEarly,
            handed,
        };
        self.wait_ready(process, notices, waiting, probe).await
    }

    /// The notify socket's path for a new process, when `workers.notify`.
    fn notify_socket(
        &self,
        workers: &WorkersConfig,
    ) -> Result<Option<&std::path::Path>, SlotError> {
        if !workers.notify {
            return Ok(None);
        }
        let hub = self.notifier.hub().ok_or(SlotError::NoNotifySocket)?;
        Ok(Some(hub.path()))
    }

    /// Starts hearing what `process`'s tree says on the notify socket.
    fn listen_to(&self, workers: &WorkersConfig, process: &WorkerProcess) -> Option<Registration> {
        let hub = self.notifier.hub().filter(|_| workers.notify)?;
        Some(hub.register(process.shim))
    }

    async fn start_on(
        &self,
        workers: &WorkersConfig,
        port: u16,
        stop: &CancellationToken,
    ) -> Result<(WorkerProcess, Option<Registration>), SlotError> {
        let notify = self.notify_socket(workers)?;
        let spec = spec(workers, self.id, port, None, notify).map_err(SlotError::Spawn)?;
        let process = self.spawner.spawn(spec).await.map_err(SlotError::Spawn)?;
        let notices = self.listen_to(workers, &process);
        tracing::info!(worker = self.id, pid = process.pid, port, "worker started");
        let addr = SocketAddr::new(workers.host, port);
        // Nothing may be serving from this slot: then /status shows the
        // starting process (it gets no traffic until it is ready).
        self.backend.show_starting(Instance::with_tree(
            addr,
            Some(process.pid),
            Some(process.shim),
        ));
        let health = self.shared.config().health.clone();
        let probe = || health::probe(addr, &health, false);
        let not_ready = SlotError::NotReady {
            addr,
            timeout: workers.ready_timeout,
        };
        let waiting = Waiting {
            workers,
            stop,
            not_ready,
            exited: SlotError::ExitedEarly,
            handed: None,
        };
        self.wait_ready(process, notices, waiting, probe).await
    }

    /// A rolling restart of this slot: the new process must be ready before
    /// the old one is drained and stopped. On failure the old one keeps
    /// serving.
    async fn replace(
        &self,
        live: &mut Live,
        workers: &Arc<WorkersConfig>,
        stop: &CancellationToken,
    ) -> Result<(), SlotError> {
        let fresh = self.start(workers, live.port, stop).await?;
        let old = std::mem::replace(live, fresh);
        let old_instance = self
            .backend
            .ready(self.instance(&live.process, live.port, workers));
        old_instance.retire();
        // Stateless workers get SIGTERM at once: their own graceful close
        // ends their connections between requests, and corral carries
        // each client on to the new process. Others drain first.
        let drain = if workers.stateless {
            Duration::ZERO
        } else {
            self.shared.config().timeouts.drain
        };
        tracing::info!(
            worker = self.id,
            old_pid = old.process.pid,
            new_pid = live.process.pid,
            drain = ?drain,
            "worker replaced; draining the old process"
        );
        let mut old = old;
        // While the old process drains, a crash of the new one or a stop
        // must not wait for the drain to end.
        tokio::select! {
            _ = drain_instance(&old_instance, drain, &mut old.process) => {}
            _ = live.process.wait() => {
                self.backend.crashed();
                tracing::warn!(worker = self.id, pid = live.process.pid, "the replacement exited while the old process drained");
            }
            _ = stop.cancelled() => {}
        }
        old.process.stop(workers.stop_timeout).await;
        self.release(&old);
        Ok(())
    }
}

/// Whether a live process stays above `workers.max_memory`: each of the
/// sampler's passes counts once, however often it is read.
#[derive(Default)]
struct MemoryWatch {
    /// The last pass counted.
    generation: u64,
    /// Passes in a row above the limit.
    over: u32,
}

impl MemoryWatch {
    /// The tree's resident bytes, once [`MEMORY_SAMPLES_OVER`] passes in a
    /// row saw it above `limit` (the count starts again after).
    fn over(&mut self, sample: &Sample, root: u32, limit: u64) -> Option<u64> {
        if sample.generation == self.generation {
            return None;
        }
        self.generation = sample.generation;
        let resident = sample.tree(root).map_or(0, |u| u.memory_bytes);
        self.over = if resident > limit { self.over + 1 } else { 0 };
        if self.over < MEMORY_SAMPLES_OVER {
            return None;
        }
        self.over = 0;
        Some(resident)
    }
}

/// How a starting process is waited for, and the errors it can end with.
struct Waiting<'a> {
    workers: &'a WorkersConfig,
    stop: &'a CancellationToken,
    /// It never accepted within `ready_timeout`.
    not_ready: SlotError,
    /// It exited first (with its status).
    exited: fn(String) -> SlotError,
    /// fd mode: the tree to watch for listeners of its own, and the
    /// handed socket's inode.
    handed: Option<Handed>,
}

#[derive(Clone, Copy)]
struct Handed {
    shim: u32,
    inode: u64,
}

/// What a starting fd-mode worker was seen listening on besides fd 3, and
/// since when.
#[derive(Default)]
struct Strays {
    addrs: Vec<SocketAddr>,
    since: Option<tokio::time::Instant>,
    told: bool,
}

impl Slot {
    /// Waits until `probe` passes for a starting `process` (probes start
    /// 2 ms apart, doubling up to [`READY_PROBE_MAX`]) and, with
    /// `workers.notify`, until it sent `READY=1` (`EXTEND_TIMEOUT_USEC`
    /// extends the wait, as under systemd), for at most
    /// `workers.ready_timeout`: then the process is killed. A process that
    /// exits first fails with `exited`; a stop meanwhile stops it.
    async fn wait_ready<Probe, Checked>(
        &self,
        mut process: WorkerProcess,
        mut notices: Option<Registration>,
        waiting: Waiting<'_>,
        probe: Probe,
    ) -> Result<(WorkerProcess, Option<Registration>), SlotError>
    where
        Probe: Fn() -> Checked,
        Checked: std::future::Future<Output = Verdict>,
    {
        let Waiting {
            workers,
            stop,
            not_ready,
            exited,
            handed,
        } = waiting;
        let mut strays = Strays::default();
        let mut look = tokio::time::interval(strays::LOOK_EVERY);
        let accepting = async {
            let mut pause = Duration::from_millis(2);
            loop {
                if let Verdict::Passed = probe().await {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(READY_PROBE_MAX);
            }
        };
        tokio::pin!(accepting);
        let deadline = tokio::time::sleep(workers.ready_timeout);
        tokio::pin!(deadline);
        let mut accepts = false;
        let mut said_ready = notices.is_none();
        while !(accepts && said_ready) {
            tokio::select! {
                () = &mut accepting, if !accepts => accepts = true,
                notice = next_notice(&mut notices), if !said_ready => match notice {
                    Notice::Ready => said_ready = true,
                    Notice::ExtendTimeout(more) => {
                        let later = tokio::time::Instant::now() + more;
                        if later > deadline.deadline() {
                            deadline.as_mut().reset(later);
                        }
                    }
                    Notice::Status(text) => self.backend.set_status_text(text),
                    _ => {}
                },
                _ = look.tick(), if !accepts && handed.is_some() => {
                    if let Some(handed) = handed {
                        self.look_for_strays(handed, process.pid, &mut strays).await;
                    }
                }
                () = &mut deadline => {
                    process.kill().await;
                    return Err(if accepts {
                        SlotError::NoReadyNotice { timeout: workers.ready_timeout }
                    } else if strays.told {
                        SlotError::ListensElsewhere {
                            timeout: workers.ready_timeout,
                            advice: strays::advice(&strays.addrs),
                        }
                    } else {
                        not_ready
                    });
                }
                status = process.wait() => return Err(exited(describe(status))),
                _ = stop.cancelled() => {
                    process.stop(workers.stop_timeout).await;
                    return Err(SlotError::Stopped);
                }
            }
        }
        Ok((process, notices))
    }
}

impl Slot {
    /// fd mode: looks whether a starting worker's tree listens somewhere
    /// other than its handed socket. Once it has for [`strays::GRACE`], it
    /// is said at once in the log and the slot is marked down with the
    /// reason (it stays out of rotation; its clients go to the others).
    async fn look_for_strays(&self, handed: Handed, pid: u32, strays: &mut Strays) {
        let held = self
            .shared
            .sampler
            .sockets_of(handed.shim)
            .await
            .sockets_held(handed.shim);
        let found =
            tokio::task::spawn_blocking(move || strays::listening_elsewhere(&held, handed.inode))
                .await;
        let addrs = match found {
            Ok(Ok(addrs)) => addrs,
            _ => return, // /proc or sock_diag unreadable: the ready_timeout still applies
        };
        if addrs.is_empty() {
            *strays = Strays::default();
            return;
        }
        let since = *strays.since.get_or_insert_with(tokio::time::Instant::now);
        if strays.told && strays.addrs == addrs || since.elapsed() < strays::GRACE {
            strays.addrs = addrs;
            return;
        }
        strays.addrs = addrs;
        strays.told = true;
        self.backend.listens_elsewhere();
        tracing::error!(
            worker = self.id,
            pid,
            listens_on = %strays::list(&strays.addrs),
            reason = DownReason::ListensElsewhere.as_str(),
            "worker-{} is out of rotation: {}",
            self.id,
            strays::advice(&strays.addrs)
        );
    }
}

/// When the watchdog of a process ready now expires (never without
/// `workers.watchdog`).
fn watchdog_deadline(workers: &WorkersConfig) -> tokio::time::Instant {
    match workers.watchdog.filter(|_| workers.notify) {
        Some(limit) => tokio::time::Instant::now() + limit,
        None => never(),
    }
}

/// Waits until no connection is open to `instance`, for at most `limit`
/// (or until its process is gone).
pub async fn drain_instance(instance: &Instance, limit: Duration, process: &mut WorkerProcess) {
    tokio::select! {
        _ = tokio::time::timeout(limit, instance.drained()) => {}
        _ = process.wait() => {}
    }
}

/// The argv and environment of worker `id` on `port`; in `fd` mode, `port`
/// is the front end's and `socket` the slot's, and the worker gets no
/// `PORT` or `HOST` (it has no port of its own).
fn spec(
    workers: &WorkersConfig,
    id: usize,
    port: u16,
    socket: Option<Arc<Socket>>,
    notify: Option<&std::path::Path>,
) -> std::io::Result<WorkerSpec> {
    let expand = |arg: &String| {
        arg.replace("{port}", &port.to_string())
            .replace("{id}", &id.to_string())
    };
    let program = if workers.command[0] == "corral" {
        std::env::current_exe()?.into_os_string()
    } else {
        expand(&workers.command[0]).into()
    };
    let mut env: Vec<(String, String)> = workers
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if socket.is_none() {
        env.extend([
            ("PORT".to_string(), port.to_string()),
            ("HOST".to_string(), workers.host.to_string()),
        ]);
    }
    env.extend([
        ("CORRAL_WORKER_ID".to_string(), id.to_string()),
        ("CORRAL_WORKER_COUNT".to_string(), workers.count.to_string()),
    ]);
    if let Some(path) = notify {
        env.push(("NOTIFY_SOCKET".to_string(), path.display().to_string()));
        if let Some(limit) = workers.watchdog {
            // The shim adds WATCHDOG_PID (the worker's pid, known only
            // after its fork), as systemd does.
            env.push(("WATCHDOG_USEC".to_string(), limit.as_micros().to_string()));
        }
    }
    Ok(WorkerSpec {
        id,
        program,
        args: workers.command[1..].iter().map(expand).collect(),
        env,
        cwd: workers.cwd.clone(),
        socket,
    })
}

fn describe(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => s.to_string(),
        },
        None => "status unknown".to_string(),
    }
}
