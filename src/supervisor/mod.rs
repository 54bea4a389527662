//! The worker slots as a whole: starting them, rolling restarts one slot at
//! a time, scaling on reload, and stopping them all on shutdown. Each slot's
//! own life (spawn, readiness, restarts, and the delay before a restart) is
//! in [`slot`]; forking from one long-lived thread is in
//! [`spawn`] (a started process is a [`process::WorkerProcess`], its output
//! goes through [`output`], and its shim learns of corral's end through the
//! [`lifeline`]); what workers say on their notify
//! socket (`workers.notify`) is read in [`notify`]; which ports workers
//! use (and picking them when no `port_base` is given) is in [`ports`];
//! where a process takes its clients from, as the front end's mode has it
//! (a port of its own, or its slot's handed socket), is its `seat`; a
//! handed worker that listens on a port of its own is spotted by
//! [`strays`].

pub(crate) mod lifeline;
pub(crate) mod notify;
pub(crate) mod output;
pub(crate) mod ports;
pub(crate) mod process;
pub mod shim;
mod slot;
pub(crate) mod spawn;
mod strays;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WorkersConfig;
use crate::pool::Backend;
use crate::shared::Shared;
use ports::PortBook;
pub(crate) use slot::SlotError;
use slot::{Command, Slot};
use spawn::Spawner;

/// A rolling restart that stopped part-way.
#[derive(Debug, thiserror::Error)]
#[error("rolling restart stopped at worker {slot}: {source}")]
pub(crate) struct RolloutError {
    pub(crate) slot: usize,
    #[source]
    pub(crate) source: SlotError,
}

/// A slot task that runs, and how the supervisor commands it.
struct RunningSlot {
    /// The backend the task serves: the pool's own (the same `Arc` as in
    /// `pool.worker_backends()` while the slot is configured), kept here because a
    /// slot retired by a scale-down drains it after the new pool has
    /// dropped it.
    backend: Arc<Backend>,
    /// Rolling-restart commands to the task.
    commands: mpsc::Sender<Command>,
    /// Cancelled to stop the task (its process is stopped first).
    stop: CancellationToken,
    /// Awaited until the task, and so its process, is gone.
    task: JoinHandle<()>,
}

/// Owns every worker slot: the one place slot tasks are added, commanded
/// and retired, so a reload, a scale, a rolling restart and the stop never
/// race over the same slot.
pub(crate) struct Supervisor {
    /// The snapshot (whose pool says which worker backends exist), the
    /// front end (which needs a socket per slot in handed mode), metrics
    /// and stop signals: what the slots read and report to.
    shared: Arc<Shared>,
    /// Starts worker processes (through the shim): a handle to the one
    /// thread that forks, cloned into each slot.
    spawner: Spawner,
    /// Which worker ports live processes hold, so a replacement takes the
    /// other port of its slot's pair.
    ports: Arc<PortBook>,
    /// The slot tasks that run (index = slot id), and how to command and
    /// stop each: the supervisor is the only one that adds or retires them.
    /// Not a second list of workers: which worker backends exist is the
    /// snapshot's pool (`pool.worker_backends()`), the one owner, from which
    /// [`Supervisor::start_slots`] derives the tasks to add. This list
    /// holds what the pool cannot: the tasks themselves, which lag the
    /// pool while a reload's scale is applied (and slots retired by a
    /// scale-down, still draining, have left it already).
    running: Mutex<Vec<RunningSlot>>,
    /// Held for the length of a rolling restart (of all slots or of one):
    /// one at a time, so two never have slots out of rotation at once; a
    /// later one waits its turn rather than being dropped.
    rollout: Mutex<()>,
    /// A restart asked for by a signal or the admin API is pending or
    /// running: further requests merge into it.
    restart_requested: AtomicBool,
    /// The workers' notify socket (`workers.notify`), shared by every slot;
    /// its socket is opened on first need, so a config without `notify`
    /// opens none.
    notifier: Arc<notify::Notifier>,
    /// Processes an earlier image of corral started (`corral upgrade`), by
    /// slot, until their slot starts and takes its own.
    adopted: std::sync::Mutex<std::collections::HashMap<usize, slot::Handed>>,
}

impl Supervisor {
    /// A supervisor with no slot running yet; [`Supervisor::start_slots`]
    /// starts them.
    pub(crate) fn new(shared: Arc<Shared>, spawner: Spawner) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            spawner,
            ports: Arc::new(PortBook::default()),
            running: Mutex::new(Vec::new()),
            rollout: Mutex::new(()),
            restart_requested: AtomicBool::new(false),
            notifier: Arc::new(notify::Notifier::new(shared.metrics.notify_ignored.clone())),
            adopted: Default::default(),
            shared,
        })
    }

    /// Takes over processes an earlier image of corral started (`corral
    /// upgrade`): `processes` by slot, `ports` the port each holds,
    /// `health` every backend's health by key, and the workers' notify
    /// socket (`workers.notify`) if there was one. Each slot started next
    /// serves with its adopted process (not restarted) rather than
    /// starting one. A process that was not its slot's current one (a
    /// second process of the slot, which an upgrade is refused for, but
    /// one may have started meanwhile) is stopped.
    pub(crate) fn adopt(
        &self,
        processes: Vec<(usize, process::WorkerProcess)>,
        ports: &[(usize, u16)],
        health: &[(u64, crate::pool::CarriedHealth)],
        notify: Option<&notify::HandedHub>,
    ) {
        if let Some(handed) = notify {
            let hub = crate::fds::duplicate(handed.fd, 3).and_then(|fd| {
                notify::NotifyHub::adopt(fd, handed, self.shared.metrics.notify_ignored.clone())
            });
            match hub {
                Ok(hub) => {
                    self.notifier.adopt(hub);
                }
                Err(error) => {
                    tracing::error!(%error, socket = %handed.path.display(), "upgrade: cannot take the workers' notify socket over; what the workers say is not heard")
                }
            }
        }
        let snapshot = self.shared.snapshot();
        let health_of = |id: usize| {
            let backend = snapshot
                .pool
                .worker_backends()
                .find(|b| b.kind == crate::pool::Kind::Worker(id))?;
            health
                .iter()
                .find(|(key, _)| *key == backend.key)
                .map(|(_, health)| *health)
        };
        let mut by_slot: std::collections::BTreeMap<usize, Vec<process::WorkerProcess>> =
            Default::default();
        for (id, process) in processes {
            by_slot.entry(id).or_default().push(process);
        }
        let mut adopted = self.adopted.lock().unwrap_or_else(|e| e.into_inner());
        let mut extra = Vec::new();
        for (id, mut processes) in by_slot {
            // The slot's current process: the one new connections went to.
            let carried = health_of(id);
            let current = carried.and_then(|h| h.pid);
            let pick = processes
                .iter()
                .position(|p| Some(p.pid) == current)
                .unwrap_or(0);
            let process = processes.swap_remove(pick);
            extra.extend(processes);
            let port = ports.iter().find(|(slot, _)| *slot == id).map(|(_, p)| *p);
            if let Some(port) = port {
                self.ports.hold(port);
            }
            let ready = carried.is_some_and(|h| h.ready && h.pid == Some(process.pid));
            let process = slot::Adopted {
                process,
                port,
                ready,
            };
            adopted.insert(id, slot::Handed::Process(process));
        }
        // A slot handed over without a process was waiting out its
        // restart backoff.
        for backend in snapshot.pool.worker_backends() {
            if let crate::pool::Kind::Worker(id) = backend.kind {
                if health_of(id).is_some() && !adopted.contains_key(&id) {
                    adopted.insert(id, slot::Handed::InBackoff);
                }
            }
        }
        drop(adopted);
        self.stop_extra(extra);
    }

    /// Stops processes handed over that no slot serves with.
    fn stop_extra(&self, extra: Vec<process::WorkerProcess>) {
        let grace = self
            .shared
            .config()
            .workers
            .as_ref()
            .map_or(Duration::from_secs(10), |w| w.stop_timeout);
        for mut process in extra {
            tracing::warn!(
                pid = process.pid,
                "upgrade: a second process of a worker slot was handed over; it is stopped"
            );
            tokio::spawn(async move { process.stop(grace).await });
        }
    }

    /// Starts a slot task for each worker backend of the pool in force
    /// (in slot order) beyond the slots already running. Each returned
    /// receiver hears when that slot's first process is ready or has
    /// failed.
    pub(crate) async fn start_slots(
        &self,
        workers: &Arc<WorkersConfig>,
    ) -> Vec<oneshot::Receiver<()>> {
        let mut slots = self.running.lock().await;
        let snapshot = self.shared.snapshot();
        let backends: Vec<&Arc<Backend>> = snapshot.pool.worker_backends().collect();
        self.shared.front.add_slots(backends.len());
        let mut first_starts = Vec::new();
        for backend in backends.iter().skip(slots.len()) {
            let id = slots.len();
            let (commands, incoming) = mpsc::channel(4);
            let (first_start, heard) = oneshot::channel();
            first_starts.push(heard);
            let stop = CancellationToken::new();
            let slot = Slot {
                id,
                backend: Arc::clone(backend),
                spawner: self.spawner.clone(),
                shared: Arc::clone(&self.shared),
                ports: Arc::clone(&self.ports),
                notifier: Arc::clone(&self.notifier),
                adopted: self
                    .adopted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id),
            };
            let task =
                tokio::spawn(slot.run(Arc::clone(workers), incoming, stop.clone(), first_start));
            slots.push(RunningSlot {
                backend: Arc::clone(backend),
                commands,
                stop,
                task,
            });
        }
        first_starts
    }

    /// A rolling restart asked for by SIGUSR2 or `POST /workers/restart`,
    /// run in the background. While one is pending or running, further
    /// requests are merged into it. False when merged.
    pub(crate) fn request_rolling_restart(self: &Arc<Self>, workers: Arc<WorkersConfig>) -> bool {
        if self.restart_requested.swap(true, Ordering::AcqRel) {
            tracing::info!("a rolling restart is already pending or running; request merged");
            return false;
        }
        let supervisor = Arc::clone(self);
        tokio::spawn(async move {
            let result = supervisor.rolling_restart(workers, usize::MAX).await;
            supervisor.restart_requested.store(false, Ordering::Release);
            if let Err(error) = result {
                tracing::error!(%error, "rolling restart failed");
            }
        });
        true
    }

    /// Replaces the worker of slot `id` the rolling way (its replacement
    /// ready before it is drained), in the background, after any rollout
    /// under way. False when there is no such slot now.
    pub(crate) async fn request_restart_of(
        self: &Arc<Self>,
        id: usize,
        workers: Arc<WorkersConfig>,
    ) -> bool {
        if id >= self.running.lock().await.len() {
            return false;
        }
        let supervisor = Arc::clone(self);
        tokio::spawn(async move {
            let _rollout = supervisor.rollout.lock().await;
            let commands = supervisor
                .running
                .lock()
                .await
                .get(id)
                .map(|s| s.commands.clone());
            let Some(commands) = commands else {
                tracing::info!(
                    worker = id,
                    "restart not done: the worker was retired meanwhile"
                );
                return;
            };
            let (done, result) = oneshot::channel();
            if commands
                .send(Command::Replace { workers, done })
                .await
                .is_err()
            {
                return;
            }
            match result.await {
                Ok(Ok(())) => tracing::info!(worker = id, "worker restarted"),
                Ok(Err(error)) => {
                    tracing::error!(worker = id, %error, "worker restart failed; the old process keeps serving")
                }
                Err(_) => {}
            }
        });
        true
    }

    /// How many slot tasks run (retired ones not counted).
    pub(crate) async fn running_count(&self) -> usize {
        self.running.lock().await.len()
    }

    /// Replaces every worker, one slot at a time, each new process ready
    /// before the old one is drained. Stops at the first slot whose
    /// replacement fails; that slot's old process keeps serving. Only the
    /// first `limit` slots are replaced.
    pub(crate) async fn rolling_restart(
        &self,
        workers: Arc<WorkersConfig>,
        limit: usize,
    ) -> Result<(), RolloutError> {
        // One rollout at a time; a later request (a reload's new command)
        // waits its turn rather than being dropped.
        let _rollout = self.rollout.lock().await;
        let targets: Vec<(usize, mpsc::Sender<Command>)> = self
            .running
            .lock()
            .await
            .iter()
            .enumerate()
            .take(limit)
            .map(|(i, s)| (i, s.commands.clone()))
            .collect();
        let total = targets.len();
        tracing::info!(slots = total, "rolling restart started");
        let mut replaced = 0;
        // Slots that were not replaced: retired by a scale-down, or stopped.
        let mut left = Vec::new();
        for (id, commands) in targets {
            if self.shared.is_draining() {
                left.push(id);
                continue;
            }
            let (done, result) = oneshot::channel();
            let command = Command::Replace {
                workers: Arc::clone(&workers),
                done,
            };
            if commands.send(command).await.is_err() {
                left.push(id); // the slot was retired meanwhile
                continue;
            }
            match result.await {
                Ok(Ok(())) => replaced += 1,
                Ok(Err(SlotError::Stopped)) => left.push(id),
                Ok(Err(source)) => return Err(RolloutError { slot: id, source }),
                Err(_) => left.push(id),
            }
        }
        let names = || {
            left.iter()
                .map(|&id| crate::labels::worker_label(id))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if left.is_empty() {
            tracing::info!(replaced, "rolling restart finished");
        } else if self.shared.is_draining() {
            tracing::warn!(
                replaced,
                "rolling restart interrupted by the stop: {replaced} of {total} workers replaced; not replaced: {}",
                names()
            );
        } else {
            tracing::info!(
                replaced,
                "rolling restart finished: {replaced} of {total} workers replaced; the others were retired meanwhile ({})",
                names()
            );
        }
        Ok(())
    }

    /// Stops slots `count..`: they leave rotation, drain for up to
    /// `timeouts.drain`, and their processes are stopped.
    pub(crate) async fn retire_from(&self, count: usize) -> Vec<Arc<Backend>> {
        let retired: Vec<RunningSlot> = {
            let mut slots = self.running.lock().await;
            if slots.len() <= count {
                return Vec::new();
            }
            slots.drain(count..).collect()
        };
        let config = self.shared.config();
        // Stateless workers are stopped at once: their connections move to
        // the workers that stay, between requests.
        let drain = match &config.workers {
            Some(workers) if workers.stateless => std::time::Duration::ZERO,
            _ => config.timeouts.drain,
        };
        // All retired slots drain at once: scaling down by k takes one
        // drain, not k of them.
        let mut draining = tokio::task::JoinSet::new();
        for slot in retired {
            slot.backend.draining();
            draining.spawn(async move {
                let instance = slot.backend.instance();
                instance.retire();
                let _ = tokio::time::timeout(drain, instance.drained()).await;
                slot.stop.cancel();
                let _ = slot.task.await;
                slot.backend
            });
        }
        let mut backends = Vec::new();
        while let Some(done) = draining.join_next().await {
            if let Ok(backend) = done {
                backends.push(backend);
            }
        }
        // The retired slots left rotation when they started draining; let
        // the front end serve elsewhere what was still queued for them
        // before it closes their sockets. Under the slots' lock, and never
        // below the slots running now: a scale-up meanwhile keeps its own.
        self.shared.front.settle().await;
        let slots = self.running.lock().await;
        self.shared.front.shrink_to(count.max(slots.len()));
        backends
    }

    /// For `corral upgrade`: the spawner stops and hands over the workers
    /// (not stopped: the next image adopts them), their output pipes and
    /// the lifeline. No slot starts or reaps a process after this.
    /// The workers' notify socket, for `corral upgrade` (if it was made).
    pub(crate) fn notify_hub(&self) -> Option<notify::HandedHub> {
        self.notifier.handed()
    }

    /// The worker slots with more than one process (a rolling restart
    /// under way): an upgrade is refused meanwhile.
    pub(crate) fn slots_being_replaced(&self) -> Vec<usize> {
        self.spawner.slots_with_two()
    }

    pub(crate) async fn hand_over(&self) -> std::io::Result<spawn::Handover> {
        self.spawner.hand_over().await
    }

    /// Stops every worker (SIGTERM, then SIGKILL after `stop_timeout`) and
    /// waits until all are reaped.
    pub(crate) async fn shutdown(&self) {
        let slots: Vec<RunningSlot> = self.running.lock().await.drain(..).collect();
        for slot in &slots {
            slot.stop.cancel();
        }
        for slot in slots {
            let _ = slot.task.await;
        }
    }
}
