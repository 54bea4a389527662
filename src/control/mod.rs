//! The control side: everything that changes what corral runs, as opposed
//! to the data path that runs it.
//!
//! - [`lifecycle`]: start-up, the graceful stop and the drain.
//! - [`signals`]: SIGTERM/SIGINT, SIGHUP, SIGUSR2: one set of handles,
//!   handed from start-up to the control loop to the drain.
//! - [`reload`]: reading the file again and applying what changed; scaling.
//! - [`admin`]: the admin HTTP server (and its [`dashboard`] page, and
//!   [`logs`]: `GET /logs`, the workers' output, streamed when followed).
//! - [`operator`]: restart, disable and enable of one backend by name.
//! - [`notify`]: systemd readiness notifications.
//! - [`upgrade`]: `corral upgrade`, the old image's side (the new image's
//!   is [`crate::upgrade`]).
//!
//! The control loop ([`run`]) is the one owner of reloads, scaling and
//! rolling restarts: signals and admin requests only ask it.

pub(crate) mod admin;
pub(crate) mod dashboard;
pub(crate) mod lifecycle;
pub(crate) mod logs;
pub(crate) mod notify;
pub(crate) mod operator;
pub mod reload;
pub(crate) mod signals;
pub(crate) mod upgrade;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::shared::Shared;
use crate::supervisor::Supervisor;
pub use reload::Source;
pub(crate) use reload::{ReloadError, ReloadReport};
use signals::{Asked, Signals};

/// What the admin server asks of the control loop.
#[derive(Debug)]
pub(crate) enum Request {
    /// Rolling restart of the workers (merged into one pending or running).
    RollingRestart { started: oneshot::Sender<Restart> },
    /// Replace the worker of slot `id` the rolling way; `started` hears
    /// false when there is no such slot (any more).
    RestartWorker {
        id: usize,
        started: oneshot::Sender<bool>,
    },
    /// Reload the config file, as SIGHUP does.
    Reload {
        done: oneshot::Sender<Result<ReloadReport, ReloadError>>,
    },
    /// Set the worker count until the next reload from the file;
    /// `done` hears the file corral reloads from (None: it runs without one).
    Scale {
        count: usize,
        done: oneshot::Sender<Result<Option<std::path::PathBuf>, ReloadError>>,
    },
    /// `corral upgrade`: `done` hears only a refusal (once the new program
    /// serves, it answers `answer_to`, the asking connection, itself).
    Upgrade {
        answer_to: Option<std::os::fd::RawFd>,
        done: oneshot::Sender<crate::upgrade::Refusal>,
    },
}

/// Acts on signals and admin requests until SIGTERM or SIGINT; returns the
/// signal handles then, for the drain to hear a second stop.
pub(crate) async fn run(
    shared: Arc<Shared>,
    supervisor: Arc<Supervisor>,
    source: Source,
    listeners: upgrade::Listeners,
    mut signals: Signals,
    mut requests: mpsc::Receiver<Request>,
) -> Signals {
    loop {
        tokio::select! {
            asked = signals.next() => match asked {
                Asked::Stop(name) => {
                    tracing::info!("{name}: stopping gracefully");
                    return signals;
                }
                Asked::Reload => {
                    // SIGHUP also reopens log.file (external rotation).
                    crate::logging::reopen();
                    notify::reloading();
                    if let Err(error) = reload::from_file(&shared, &supervisor, &source).await {
                        tracing::error!("reload refused, the old config stays: {error}");
                    }
                    notify::ready();
                }
                Asked::RollingRestart => {
                    tracing::info!("SIGUSR2: rolling restart");
                    let _ = rolling_restart(&shared, &supervisor);
                }
            },
            Some(request) = requests.recv() => match request {
                Request::RollingRestart { started } => {
                    tracing::info!("admin request: rolling restart");
                    let _ = started.send(rolling_restart(&shared, &supervisor));
                }
                Request::RestartWorker { id, started } => {
                    let started_now = match shared.config().workers.clone() {
                        Some(workers) => supervisor.request_restart_of(id, Arc::new(workers)).await,
                        None => false,
                    };
                    let _ = started.send(started_now);
                }
                Request::Reload { done } => {
                    tracing::info!("admin request: reload");
                    notify::reloading();
                    let result = reload::from_file(&shared, &supervisor, &source).await;
                    if let Err(error) = &result {
                        tracing::error!("reload refused, the old config stays: {error}");
                    }
                    notify::ready();
                    let _ = done.send(result);
                }
                Request::Scale { count, done } => {
                    tracing::info!(count, "admin request: scale");
                    let result = reload::scale(&shared, &supervisor, count);
                    let _ = done.send(result.map(|()| source.file.clone()));
                }
                Request::Upgrade { answer_to, done } => {
                    tracing::info!("admin request: upgrade");
                    let refusal = upgrade::upgrade(&shared, &supervisor, &source, &listeners, answer_to).await;
                    tracing::error!("upgrade refused: {refusal}");
                    shared.metrics.upgrade_refused.inc();
                    let _ = done.send(refusal);
                }
            },
        }
    }
}

/// What became of a rolling restart request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restart {
    Started,
    /// One was pending or running; this request joined it.
    Merged,
    /// There are no workers to restart.
    NoWorkers,
}

/// Starts a rolling restart with the current config, unless one is pending
/// or running already (then this request is merged into it).
fn rolling_restart(shared: &Shared, supervisor: &Arc<Supervisor>) -> Restart {
    let Some(workers) = shared.config().workers.clone() else {
        tracing::warn!("rolling restart asked for, but there are no workers");
        return Restart::NoWorkers;
    };
    if supervisor.request_rolling_restart(Arc::new(workers)) {
        Restart::Started
    } else {
        Restart::Merged
    }
}
