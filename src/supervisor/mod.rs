//! The worker slots as a whole: starting them, rolling restarts one slot at
//! a time, scaling on reload, and stopping them all on shutdown. Each slot's
//! own life (spawn, readiness, backoff) is in [`slot`]; forking from one
//! long-lived thread is in [`spawn`].

mod slot;
pub mod spawn;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WorkersConfig;
use crate::pool::{Backend, State};
use crate::shared::Shared;
use slot::{Command, PortBook, Slot};
use spawn::Spawner;

struct SlotHandle {
    backend: Arc<Backend>,
    commands: mpsc::Sender<Command>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Owns every worker slot.
pub struct Supervisor {
    shared: Arc<Shared>,
    spawner: Spawner,
    ports: Arc<PortBook>,
    slots: Mutex<Vec<SlotHandle>>,
    /// Held for the length of a rolling restart: one at a time.
    rollout: Mutex<()>,
}

impl Supervisor {
    pub fn new(shared: Arc<Shared>, spawner: Spawner) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            shared,
            spawner,
            ports: Arc::new(PortBook::default()),
            slots: Mutex::new(Vec::new()),
            rollout: Mutex::new(()),
        })
    }

    /// Starts a slot task for each of `backends` (worker backends, in slot
    /// order) beyond those already running.
    pub async fn start_slots(&self, workers: &Arc<WorkersConfig>, backends: &[Arc<Backend>]) {
        let mut slots = self.slots.lock().await;
        for backend in backends.iter().skip(slots.len()) {
            let id = slots.len();
            let (commands, incoming) = mpsc::channel(4);
            let stop = CancellationToken::new();
            let slot = Slot {
                id,
                backend: Arc::clone(backend),
                spawner: self.spawner.clone(),
                shared: Arc::clone(&self.shared),
                ports: Arc::clone(&self.ports),
            };
            let task = tokio::spawn(slot.run(Arc::clone(workers), incoming, stop.clone()));
            slots.push(SlotHandle {
                backend: Arc::clone(backend),
                commands,
                stop,
                task,
            });
        }
    }

    /// The worker backends, in slot order.
    pub async fn backends(&self) -> Vec<Arc<Backend>> {
        self.slots
            .lock()
            .await
            .iter()
            .map(|s| Arc::clone(&s.backend))
            .collect()
    }

    /// Replaces every worker, one slot at a time, each new process ready
    /// before the old one is drained. Stops at the first slot whose
    /// replacement fails; that slot's old process keeps serving. Only the
    /// first `limit` slots are replaced.
    pub async fn rolling_restart(
        &self,
        workers: Arc<WorkersConfig>,
        limit: usize,
    ) -> Result<(), String> {
        // One rollout at a time; a later request (a reload's new command)
        // waits its turn rather than being dropped.
        let _rollout = self.rollout.lock().await;
        let targets: Vec<(usize, mpsc::Sender<Command>)> = self
            .slots
            .lock()
            .await
            .iter()
            .enumerate()
            .take(limit)
            .map(|(i, s)| (i, s.commands.clone()))
            .collect();
        tracing::info!(slots = targets.len(), "rolling restart started");
        for (id, commands) in targets {
            let (done, result) = oneshot::channel();
            let command = Command::Replace {
                workers: Arc::clone(&workers),
                done,
            };
            if commands.send(command).await.is_err() {
                continue; // the slot was retired meanwhile
            }
            match result.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    let message = format!("rolling restart stopped at worker {id}: {error}");
                    tracing::error!("{message}");
                    return Err(message);
                }
                Err(_) => continue,
            }
        }
        tracing::info!("rolling restart finished");
        Ok(())
    }

    /// Stops slots `count..`: they leave rotation, drain for up to
    /// `timeouts.drain`, and their processes are stopped.
    pub async fn retire_from(&self, count: usize) -> Vec<Arc<Backend>> {
        let retired: Vec<SlotHandle> = {
            let mut slots = self.slots.lock().await;
            if slots.len() <= count {
                return Vec::new();
            }
            slots.drain(count..).collect()
        };
        let drain = self.shared.config.load().timeouts.drain;
        // All retired slots drain at once: scaling down by k takes one
        // drain, not k of them.
        let mut draining = tokio::task::JoinSet::new();
        for slot in retired {
            slot.backend.set_lifecycle(State::Draining);
            draining.spawn(async move {
                let instance = slot.backend.instance();
                let _ = tokio::time::timeout(drain, async {
                    while instance.active() > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                })
                .await;
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
        backends
    }

    /// Stops every worker (SIGTERM, then SIGKILL after `stop_timeout`) and
    /// waits until all are reaped.
    pub async fn shutdown(&self) {
        let slots: Vec<SlotHandle> = self.slots.lock().await.drain(..).collect();
        for slot in &slots {
            slot.stop.cancel();
        }
        for slot in slots {
            let _ = slot.task.await;
        }
    }
}
