//! One worker slot: a stable id whose process corral keeps running.
//!
//! The slot task owns the process. It starts it, waits until it accepts
//! connections, puts it in rotation, restarts it with exponential backoff
//! when it dies, swaps it for a fresh process on a rolling restart (new one
//! ready first, then the old one drained and stopped), and stops it on
//! shutdown. State goes `starting` → `up` → (`draining` →) `stopped`, or
//! `down` while it is crashed and waiting for its restart.
//!
//! Each start reads the `workers` config in force from the snapshot; a
//! running process keeps the config it was started from (its timeouts,
//! watchdog and limits) until it is replaced. Where a process takes its
//! clients from (a port of its own, or in handed mode its slot's socket of
//! the front end) is its [`seat`]; waiting until a new process is ready
//! (probes, `READY=1`, a handed worker that listens elsewhere) is in
//! [`ready`].

mod backoff;
mod ready;
mod seat;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::notify::{Notice, Notifier, Registration};
use super::ports::PortBook;
use super::spawn::{Spawner, WorkerProcess, WorkerSpec};
use crate::config::WorkersConfig;
use crate::health;
use crate::pool::{Backend, Instance};
use crate::sampler::Sample;
use crate::shared::Shared;
use backoff::Backoff;
use ready::Waiting;
use seat::Seat;

/// Samples (the sampler's passes, one a second) in a row above
/// `workers.max_memory` before a worker is replaced: a short spike is not
/// "staying above".
const MEMORY_SAMPLES_OVER: u32 = 2;

/// Why a worker could not be started or replaced.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SlotError {
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
    NotReady {
        addr: std::net::SocketAddr,
        timeout: Duration,
    },
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
pub(crate) enum Command {
    /// Replace the process with one started from `workers` (rolling restart).
    Replace {
        workers: Arc<WorkersConfig>,
        done: oneshot::Sender<Result<(), SlotError>>,
    },
}

/// What a slot task needs; moved into the task.
pub(crate) struct Slot {
    /// The slot's number: `CORRAL_WORKER_ID`, `worker-<id>`.
    pub(crate) id: usize,
    /// The slot's backend in the pool: its state machine (the slot task is
    /// its only writer) and its metrics.
    pub(crate) backend: Arc<Backend>,
    /// Starts this slot's processes: a handle to the one thread that forks
    /// (forking from a thread of the async runtime is not safe), which also
    /// reaps them and carries their output.
    pub(crate) spawner: Spawner,
    /// The snapshot (each start reads the `workers` config in force from
    /// it), the front end (which says where a process takes its clients
    /// from) and the stop signals.
    pub(crate) shared: Arc<Shared>,
    /// The worker ports held, shared with the other slots: a replacement
    /// claims the port of its pair the old process does not hold, and a
    /// stopped process's port is released here for the next one.
    pub(crate) ports: Arc<PortBook>,
    /// The workers' notify socket (`workers.notify`), one for every slot:
    /// the slot registers each process it starts to hear its `READY=1`
    /// and what it says after, and gives its path as `NOTIFY_SOCKET`.
    pub(crate) notifier: Arc<Notifier>,
    /// What an earlier image of corral handed over for this slot (`corral
    /// upgrade`): a process it serves with instead of starting one, or a
    /// restart backoff to wait out first.
    pub(crate) adopted: Option<Handed>,
}

/// A slot as an earlier image of corral handed it over.
pub(crate) enum Handed {
    /// With its process.
    Process(Adopted),
    /// Without one: it was waiting out its restart backoff.
    InBackoff,
}

/// A worker process handed over by an earlier image of corral, with the
/// port it listens on (proxied mode).
pub(crate) struct Adopted {
    /// The running process (its shim), as the old image's spawner handed
    /// it over.
    pub(crate) process: WorkerProcess,
    /// The port it listens on, so the slot's seat holds that port rather
    /// than claiming a new one; `None` in handed mode.
    pub(crate) port: Option<u16>,
    /// It had been ready (in rotation, or out by its checks): it goes on
    /// with the health record it had. `false`: it was still starting, and
    /// is waited for as a new process is.
    pub(crate) ready: bool,
}

/// A process that is running and in rotation: where it takes its clients
/// from, what its tree says on the notify socket (`workers.notify`), and
/// the `workers` config it was started from.
struct Live {
    /// The process (its shim): stopped, signalled and watched through it.
    process: WorkerProcess,
    /// Where it takes its clients from; released when it stops.
    seat: Seat,
    /// What its tree says on the notify socket; `None` without one.
    notices: Option<Registration>,
    /// The config it was started from: its timeouts, watchdog and limits
    /// hold until it is replaced, whatever a reload says meanwhile.
    workers: Arc<WorkersConfig>,
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

/// What happened to a live process, as [`Slot::serve`] waits on it.
enum Event {
    Notice(Notice),
    /// No `WATCHDOG=1` came in time.
    WatchdogExpired,
    /// The once-a-second look at its memory and health.
    Tick,
    Exited(Option<std::process::ExitStatus>),
    Command(Command),
    Stop,
}

/// What [`Slot::serve`] goes on with after an event.
enum Next {
    Serve,
    /// Go on serving, with the watchdog started again.
    RearmWatchdog,
    /// The process is gone: restart after the backoff.
    Restart,
}

/// How serving a live process ended.
enum Ended {
    /// The slot was stopped; so was the process.
    Stopped,
    /// The process is gone and the slot restarts after its backoff, with
    /// the config that process ran with and how long it had been up (from
    /// `workers.min_uptime` on, the backoff starts again from
    /// `restart_delay`).
    Gone {
        workers: Arc<WorkersConfig>,
        uptime: Duration,
    },
}

impl Slot {
    /// Runs the slot until `stop` is cancelled; the process is stopped
    /// before this returns. `first_start` hears when the first process is
    /// ready or has failed. `workers` is the config the slot was created
    /// with: a start takes the one in force from the snapshot, unless the
    /// slot is beyond its count (being retired).
    pub(crate) async fn run(
        mut self,
        workers: Arc<WorkersConfig>,
        mut commands: mpsc::Receiver<Command>,
        stop: CancellationToken,
        first_start: oneshot::Sender<()>,
    ) {
        let mut first_start = Some(first_start);
        // The config the last process was started from (or a rolling
        // restart passed since): a start falls back on it.
        let mut last = workers;
        // A worker handed over by an earlier image keeps the backoff its
        // slot had reached there.
        let carried = self.backend.backoff();
        let mut backoff = match self.adopted.is_some() && !carried.is_zero() {
            true => Backoff::carried(carried),
            false => Backoff::new(&last),
        };
        self.backend.set_backoff(backoff.delay());
        let mut adopted = match self.adopted.take() {
            Some(Handed::Process(adopted)) => Some(adopted),
            Some(Handed::InBackoff) => {
                // The next image serves meanwhile.
                tell(&mut first_start);
                self.wait_out_handed_backoff(&mut backoff, &mut last, &mut commands, &stop)
                    .await;
                None
            }
            None => None,
        };
        while !stop.is_cancelled() {
            let workers = self.workers_in_force(&last);
            // A process handed over ready keeps its health and its start
            // time; any other starts with a clean record.
            let (started, up_since, carried) = match adopted.take() {
                Some(adopted) => {
                    let ready = adopted.ready;
                    if !ready {
                        // The next image serves meanwhile, as this slot's
                        // earlier image did.
                        tell(&mut first_start);
                    }
                    let started = self.resume(adopted, Arc::clone(&workers), &stop).await;
                    let up_since = self.carried_up_since().filter(|_| ready);
                    (started, up_since, ready)
                }
                None => {
                    self.backend.starting();
                    let started = self.start(Arc::clone(&workers), None, &stop).await;
                    (started, None, false)
                }
            };
            match started {
                Ok(live) => {
                    self.go_live(&live, carried);
                    tell(&mut first_start);
                    let up_since = up_since.unwrap_or_else(Instant::now);
                    match self.serve(live, up_since, &mut commands, &stop).await {
                        Ended::Stopped => return,
                        Ended::Gone { workers, uptime } => {
                            backoff.process_exited(uptime, &workers);
                            self.backend.set_backoff(backoff.delay());
                            last = workers;
                        }
                    }
                }
                Err(error) => {
                    last = workers;
                    if stop.is_cancelled() {
                        break;
                    }
                    self.failed_to_start(error);
                    tell(&mut first_start);
                }
            }
            self.backend.count_restart();
            tracing::info!(worker = self.id, delay = ?backoff.delay(), "restarting worker after backoff");
            backoff.wait(&mut last, &mut commands, &stop).await;
            self.backend.set_backoff(backoff.delay());
        }
        self.backend.stopped();
    }

    /// A slot handed over while it waited out its restart backoff waits
    /// it out again, from the start (one backoff more at most), before its
    /// first start here.
    async fn wait_out_handed_backoff(
        &self,
        backoff: &mut Backoff,
        last: &mut Arc<WorkersConfig>,
        commands: &mut mpsc::Receiver<Command>,
        stop: &CancellationToken,
    ) {
        tracing::info!(worker = self.id, delay = ?backoff.delay(), "worker was waiting out its restart backoff in the previous corral; restarting it after the backoff");
        backoff.wait(last, commands, stop).await;
        self.backend.set_backoff(backoff.delay());
    }

    /// The `workers` config a start uses: the one in force (a reload may
    /// have changed timeouts, the count or the command since this slot
    /// started), or `last` when this slot is beyond the count in force.
    fn workers_in_force(&self, last: &Arc<WorkersConfig>) -> Arc<WorkersConfig> {
        match self.shared.config().workers.as_ref() {
            Some(current) if self.id < current.count && *current != **last => {
                Arc::new(current.clone())
            }
            _ => Arc::clone(last),
        }
    }

    /// A start failed (the slot's backoff follows).
    fn failed_to_start(&self, error: SlotError) {
        match error {
            SlotError::ListensElsewhere { .. } => self.backend.listens_elsewhere(),
            _ => self.backend.failed_to_start(),
        }
        tracing::error!(worker = self.id, %error, "worker failed to start");
    }

    /// When a process an earlier image handed over came up, as that image
    /// said (`None`: it did not say).
    fn carried_up_since(&self) -> Option<Instant> {
        let since = self.backend.up_since_ms();
        let age = crate::clock::now_ms().checked_sub(since)?;
        (since > 0)
            .then(|| Instant::now().checked_sub(Duration::from_millis(age)))
            .flatten()
    }

    /// Serves with a ready process (up since `up_since`) until it is gone
    /// or the slot stops.
    async fn serve(
        &self,
        mut live: Live,
        up_since: Instant,
        commands: &mut mpsc::Receiver<Command>,
        stop: &CancellationToken,
    ) -> Ended {
        let up_ms = crate::clock::now_ms().saturating_sub(up_since.elapsed().as_millis() as u64);
        self.backend.set_up_since_ms(up_ms);
        let mut hang_check = tokio::time::interval(Duration::from_secs(1));
        let mut memory = MemoryWatch::default();
        let watchdog = tokio::time::sleep_until(watchdog_deadline(&live.workers));
        tokio::pin!(watchdog);
        loop {
            let event = tokio::select! {
                notice = next_notice(&mut live.notices) => Event::Notice(notice),
                () = &mut watchdog => Event::WatchdogExpired,
                _ = hang_check.tick() => Event::Tick,
                status = live.process.wait() => Event::Exited(status),
                Some(command) = commands.recv() => Event::Command(command),
                _ = stop.cancelled() => Event::Stop,
            };
            let next = match event {
                Event::Notice(notice) => self.heard(notice, &mut live, stop).await,
                Event::WatchdogExpired => {
                    let why = format!(
                        "worker sent no WATCHDOG=1 for {:?} (workers.watchdog)",
                        live.workers.watchdog.unwrap_or_default()
                    );
                    self.hung(&mut live, stop, &why).await
                }
                Event::Tick => self.look_at(&mut live, &mut memory, stop).await,
                Event::Exited(status) => return self.exited(live, status, up_since),
                Event::Command(Command::Replace { workers, done }) => {
                    let result = self.replace(&mut live, workers, stop).await;
                    let next = match result {
                        Ok(()) => Next::RearmWatchdog,
                        Err(_) => Next::Serve,
                    };
                    let _ = done.send(result);
                    next
                }
                Event::Stop => {
                    self.stop(live).await;
                    return Ended::Stopped;
                }
            };
            match next {
                Next::Serve => {}
                Next::RearmWatchdog => watchdog.as_mut().reset(watchdog_deadline(&live.workers)),
                Next::Restart => {
                    return Ended::Gone {
                        workers: live.workers,
                        uptime: Duration::ZERO,
                    }
                }
            }
        }
    }

    /// What the process said on its notify socket.
    async fn heard(&self, notice: Notice, live: &mut Live, stop: &CancellationToken) -> Next {
        match notice {
            Notice::Status(text) => self.backend.set_status_text(text),
            Notice::Stopping => {
                self.backend.stopping_by_itself();
                tracing::info!(
                    worker = self.id,
                    pid = live.process.pid,
                    "worker said STOPPING=1; out of rotation"
                );
            }
            Notice::Watchdog => return Next::RearmWatchdog,
            Notice::WatchdogTrigger => {
                return self.hung(live, stop, "worker sent WATCHDOG=trigger").await
            }
            Notice::Ready | Notice::ExtendTimeout(_) | Notice::Other => {}
        }
        Next::Serve
    }

    /// The once-a-second look: a process that stays above
    /// `workers.max_memory` is replaced the rolling way; one that fails its
    /// health checks for `workers.unhealthy_restart` is stopped and
    /// restarted.
    async fn look_at(
        &self,
        live: &mut Live,
        memory: &mut MemoryWatch,
        stop: &CancellationToken,
    ) -> Next {
        if let Some(limit) = live.workers.max_memory {
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
                let workers = Arc::clone(&live.workers);
                match self.replace(live, workers, stop).await {
                    Ok(()) => self.backend.count_restart(),
                    Err(error) => {
                        tracing::error!(worker = self.id, %error, "replacing the worker failed; the old one keeps serving")
                    }
                }
                return Next::Serve;
            }
        }
        let hung = live
            .workers
            .unhealthy_restart
            .zip(self.backend.unhealthy_for());
        let Some((limit, failing)) = hung.filter(|(limit, failing)| failing >= limit) else {
            return Next::Serve;
        };
        tracing::warn!(
            worker = self.id,
            pid = live.process.pid,
            failing = ?failing,
            unhealthy_restart = ?limit,
            "worker runs but fails its health checks; restarting it"
        );
        self.backend.restarting_unhealthy();
        self.backend.instance().retire();
        live.process.stop(live.workers.stop_timeout).await;
        live.seat.release(&self.ports);
        Next::Restart
    }

    /// The process exited unexpectedly.
    fn exited(
        &self,
        live: Live,
        status: Option<std::process::ExitStatus>,
        up_since: Instant,
    ) -> Ended {
        self.backend.crashed();
        // Whatever it started (npm -> node) went too: its shim killed the
        // rest of the tree.
        live.seat.release(&self.ports);
        tracing::warn!(
            worker = self.id,
            pid = live.process.pid,
            status = %describe(status),
            uptime = ?up_since.elapsed(),
            "worker exited unexpectedly"
        );
        Ended::Gone {
            uptime: up_since.elapsed(),
            workers: live.workers,
        }
    }

    /// The slot stops: so does its process.
    async fn stop(&self, mut live: Live) {
        self.backend.stopped();
        self.backend.instance().retire();
        live.process.stop(live.workers.stop_timeout).await;
        live.seat.release(&self.ports);
        tracing::info!(worker = self.id, pid = live.process.pid, "worker stopped");
    }

    /// A worker its watchdog calls hung: out of rotation, and replaced the
    /// rolling way (its replacement ready first). When the replacement
    /// fails, the hung process is stopped and the slot restarts after its
    /// backoff.
    async fn hung(&self, live: &mut Live, stop: &CancellationToken, why: &str) -> Next {
        tracing::warn!(
            worker = self.id,
            pid = live.process.pid,
            reason = "watchdog",
            "{why}; replacing it"
        );
        self.backend.watchdog_expired();
        let workers = Arc::clone(&live.workers);
        match self.replace(live, workers, stop).await {
            Ok(()) => {
                self.backend.count_restart();
                Next::RearmWatchdog
            }
            Err(error) => {
                tracing::error!(worker = self.id, %error, "the hung worker's replacement failed; stopping it");
                live.process.stop(live.workers.stop_timeout).await;
                live.seat.release(&self.ports);
                Next::Restart
            }
        }
    }

    /// Puts a ready process in rotation: with a clean health record, or
    /// (`carried`: one an earlier image had in rotation) the one it had.
    fn go_live(&self, live: &Live, carried: bool) {
        let instance = self.instance(live);
        let reach = instance.reach;
        match carried {
            true => self.backend.resumed(instance),
            false => self.backend.ready(instance),
        };
        self.shared.front.worker_ready();
        tracing::info!(worker = self.id, pid = live.process.pid, addr = %reach, "worker is up");
    }

    /// What the pool knows of a live process: how it is reached (as its
    /// seat says) and its tree.
    fn instance(&self, live: &Live) -> Arc<Instance> {
        Instance::new(
            live.seat.reach(),
            Some(live.process.pid),
            Some(live.process.shim),
        )
    }

    /// Serves with a process an earlier image of corral started, in the
    /// seat it holds: at once if it had been ready, else once it is (as a
    /// new process is waited for).
    async fn resume(
        &self,
        adopted: Adopted,
        workers: Arc<WorkersConfig>,
        stop: &CancellationToken,
    ) -> Result<Live, SlotError> {
        let seat = match adopted.port {
            Some(port) => Seat::Port(std::net::SocketAddr::new(workers.host, port)),
            None => self.take_seat(&workers, None)?,
        };
        tracing::info!(
            worker = self.id,
            pid = adopted.process.pid,
            ready = adopted.ready,
            "worker adopted from the previous corral"
        );
        let notices = self.listen_to(&workers, &adopted.process);
        let (process, notices) = match adopted.ready {
            true => (adopted.process, notices),
            false => match self
                .wait_started(adopted.process, notices, &seat, &workers, stop)
                .await
            {
                Ok(started) => started,
                Err(error) => {
                    seat.release(&self.ports);
                    return Err(error);
                }
            },
        };
        Ok(Live {
            process,
            seat,
            notices,
            workers,
        })
    }

    /// Starts a process from `workers` and waits until it accepts
    /// connections. `avoid` is a port not to use (the one the running
    /// process holds).
    async fn start(
        &self,
        workers: Arc<WorkersConfig>,
        avoid: Option<u16>,
        stop: &CancellationToken,
    ) -> Result<Live, SlotError> {
        let seat = self.take_seat(&workers, avoid)?;
        match self.start_in(&workers, &seat, stop).await {
            Ok((process, notices)) => Ok(Live {
                process,
                seat,
                notices,
                workers,
            }),
            Err(error) => {
                seat.release(&self.ports);
                Err(error)
            }
        }
    }

    /// Starts a process in `seat` and waits until it is ready: it accepts
    /// a probe (a handed worker: one from its slot's socket, by a process
    /// of its own tree) and, with `workers.notify`, said `READY=1`.
    async fn start_in(
        &self,
        workers: &WorkersConfig,
        seat: &Seat,
        stop: &CancellationToken,
    ) -> Result<(WorkerProcess, Option<Registration>), SlotError> {
        let notify = self.notify_socket(workers)?;
        let spec = spec(workers, self.id, seat, notify).map_err(SlotError::Spawn)?;
        let process = self.spawner.spawn(spec).await.map_err(SlotError::Spawn)?;
        let notices = self.listen_to(workers, &process);
        seat.announce(self.id, process.pid);
        self.wait_started(process, notices, seat, workers, stop)
            .await
    }

    /// Waits until a started `process` in `seat` is ready (see
    /// [`Slot::wait_ready`]), shown as starting meanwhile.
    async fn wait_started(
        &self,
        process: WorkerProcess,
        notices: Option<Registration>,
        seat: &Seat,
        workers: &WorkersConfig,
        stop: &CancellationToken,
    ) -> Result<(WorkerProcess, Option<Registration>), SlotError> {
        let reach = seat.reach();
        // Nothing may be serving from this slot: then /status shows the
        // starting process (it gets no traffic until it is ready).
        self.backend
            .show_starting(Instance::new(reach, Some(process.pid), Some(process.shim)));
        let health = self.shared.config().health.clone();
        let shim = process.shim;
        let sampler = &self.shared.sampler;
        let probe = || health::probe_reach(&reach, Some(shim), false, &health, sampler);
        let waiting = Waiting {
            workers,
            stop,
            not_ready: seat.not_ready(workers.ready_timeout),
            exited: seat.exited(),
            strays: seat.stray_watch(shim),
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

    /// A rolling restart of this slot to `workers`: the new process must be
    /// ready before the old one is drained and stopped. On failure the old
    /// one keeps serving.
    async fn replace(
        &self,
        live: &mut Live,
        workers: Arc<WorkersConfig>,
        stop: &CancellationToken,
    ) -> Result<(), SlotError> {
        let fresh = self.start(workers, live.seat.port(), stop).await?;
        let mut old = std::mem::replace(live, fresh);
        let old_instance = self.backend.ready(self.instance(live));
        self.shared.front.worker_ready();
        old_instance.retire();
        // Stateless workers get SIGTERM at once: their own graceful close
        // ends their connections between requests, and corral carries
        // each client on to the new process. Others drain first (a handed
        // worker's connections are the kernel's: corral counts none on its
        // instance, so the drain ends at once and it finishes its own).
        let drain = if live.workers.stateless {
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
        old.process.stop(live.workers.stop_timeout).await;
        old.seat.release(&self.ports);
        Ok(())
    }
}

/// Tells whoever waits for the slot's first start that it is over.
fn tell(first_start: &mut Option<oneshot::Sender<()>>) {
    if let Some(tell) = first_start.take() {
        let _ = tell.send(());
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
pub(crate) async fn drain_instance(
    instance: &Instance,
    limit: Duration,
    process: &mut WorkerProcess,
) {
    tokio::select! {
        _ = tokio::time::timeout(limit, instance.drained()) => {}
        _ = process.wait() => {}
    }
}

/// The argv and environment of worker `id` in `seat`: `{port}` is its own
/// port, or a handed worker's front end's; a handed worker gets the slot's
/// socket and no `PORT` or `HOST` (it has no port of its own).
fn spec(
    workers: &WorkersConfig,
    id: usize,
    seat: &Seat,
    notify: Option<&std::path::Path>,
) -> std::io::Result<WorkerSpec> {
    let port = seat.spec_port();
    let socket = seat.socket();
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
