//! Signals and reload: SIGTERM/SIGINT end the run loop (the caller drains),
//! SIGHUP reloads the config file, SIGUSR2 (or `POST /workers/restart`)
//! starts a rolling restart of the workers.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::{Config, Overrides};
use crate::pool::Pool;
use crate::shared::Shared;
use crate::supervisor::Supervisor;

/// Requests other parts of corral (the admin server) make of the control loop.
#[derive(Debug)]
pub enum Request {
    RollingRestart,
}

/// Where the config came from, so a reload reads the same file and applies
/// the same command-line overrides.
pub struct Source {
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
}

/// The signals corral acts on, installed as early as possible: until they
/// are, SIGHUP's default action would kill the process.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// Waits for signals and requests until SIGTERM or SIGINT; returns then.
pub async fn run(
    shared: Arc<Shared>,
    supervisor: Arc<Supervisor>,
    source: Source,
    signals: Signals,
    mut requests: mpsc::Receiver<Request>,
) {
    let Signals {
        mut term,
        mut int,
        mut hup,
        mut usr2,
    } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping gracefully"); return; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping gracefully"); return; }
            _ = hup.recv() => {
                crate::notify::reloading();
                reload(&shared, &supervisor, &source).await;
                crate::notify::ready();
            }
            _ = usr2.recv() => {
                tracing::info!("SIGUSR2: rolling restart");
                rolling_restart(&shared, &supervisor);
            }
            Some(Request::RollingRestart) = requests.recv() => {
                tracing::info!("admin request: rolling restart");
                rolling_restart(&shared, &supervisor);
            }
        }
    }
}

/// Starts a rolling restart in the background with the current config.
fn rolling_restart(shared: &Shared, supervisor: &Arc<Supervisor>) {
    let Some(workers) = shared.config.load().workers.clone() else {
        tracing::warn!("rolling restart asked for, but there are no workers");
        return;
    };
    let supervisor = Arc::clone(supervisor);
    tokio::spawn(async move {
        if let Err(error) = supervisor
            .rolling_restart(Arc::new(workers), usize::MAX)
            .await
        {
            tracing::error!(%error, "rolling restart failed");
        }
    });
}

/// Reloads the config file. An invalid file, or one that changes what cannot
/// change without a restart, is refused and the old config stays.
async fn reload(shared: &Arc<Shared>, supervisor: &Arc<Supervisor>, source: &Source) {
    let Some(file) = &source.file else {
        tracing::warn!("SIGHUP: started without -c, so there is no file to reload");
        return;
    };
    // Reading the file, resolving host names and users may block: not on the
    // control-plane thread.
    let (path, overrides) = (file.clone(), source.overrides.clone());
    let loaded = tokio::task::spawn_blocking(move || load(&path, &overrides))
        .await
        .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
    let fresh = match loaded {
        Ok(fresh) => fresh,
        Err(error) => {
            shared.metrics.reload_failure.inc();
            tracing::error!("reload refused, the old config stays: {error}");
            return;
        }
    };
    let old = shared.config.load_full();
    if let Err(why) = changeable(&old, &fresh) {
        shared.metrics.reload_failure.inc();
        tracing::error!("reload refused, the old config stays: {why}");
        return;
    }
    for (what, same) in [
        (
            "listener.backlog",
            old.listener.backlog == fresh.listener.backlog,
        ),
        (
            "listener.max_connections",
            old.listener.max_connections == fresh.listener.max_connections,
        ),
        ("[log] format", old.log.format == fresh.log.format),
        ("[log] level", old.log.level == fresh.log.level),
        (
            "runtime.threads",
            old.runtime.threads == fresh.runtime.threads,
        ),
        (
            "runtime.user/group",
            old.runtime.drop_to == fresh.runtime.drop_to,
        ),
    ] {
        if !same {
            tracing::warn!(
                "reload: a change of {what} takes effect only after a restart of corral"
            );
        }
    }

    let fresh = Arc::new(fresh);
    let pool = Pool::assemble(&fresh, &shared.metrics, &shared.pool.load());
    let old_pool = shared.pool.load_full();
    shared.dispatcher.sticky.configure(&fresh.sticky);
    shared.config.store(Arc::clone(&fresh));
    shared.pool.store(Arc::new(pool));
    shared.metrics.reload_success.inc();
    tracing::info!(file = %file.display(), "config reloaded");

    // Static backends no longer configured: their series go.
    let current = shared.pool.load_full();
    for gone in old_pool
        .backends
        .iter()
        .filter(|b| b.kind == crate::pool::Kind::Static && current.by_label(&b.label).is_none())
    {
        shared.metrics.forget_backend(&gone.label);
    }

    let supervisor = Arc::clone(supervisor);
    let shared = Arc::clone(shared);
    tokio::spawn(async move { apply_workers(&shared, &supervisor, &old, &fresh).await });
}

/// Scales the worker slots and rolls out a changed command or environment.
async fn apply_workers(shared: &Shared, supervisor: &Supervisor, old: &Config, fresh: &Config) {
    let count = fresh.workers.as_ref().map_or(0, |w| w.count);
    for retired in supervisor.retire_from(count).await {
        // A later reload may have brought the label back.
        if shared.pool.load().by_label(&retired.label).is_none() {
            shared.metrics.forget_backend(&retired.label);
        }
        tracing::info!(backend = %retired.label, "worker slot retired");
    }
    let Some(workers) = &fresh.workers else {
        return;
    };
    let workers = Arc::new(workers.clone());
    let pool = shared.pool.load_full();
    let worker_backends: Vec<_> = pool
        .backends
        .iter()
        .filter(|b| matches!(b.kind, crate::pool::Kind::Worker(_)))
        .cloned()
        .collect();
    let running = supervisor.backends().await.len();
    supervisor.start_slots(&workers, &worker_backends).await;
    let process_changed = old
        .workers
        .as_ref()
        .is_some_and(|before| !before.same_process(&workers));
    if process_changed && running > 0 {
        tracing::info!("reload changed how workers run; rolling it out");
        if let Err(error) = supervisor.rolling_restart(workers, running).await {
            tracing::error!(%error, "rolling out the reloaded worker config failed");
        }
    }
}

/// Reads and validates the file with the command-line overrides applied.
pub fn load(file: &std::path::Path, overrides: &Overrides) -> Result<Config, String> {
    let mut config = Config::load(file).map_err(|e| e.to_string())?;
    config.apply(overrides.clone())?;
    Ok(config)
}

/// What a reload may not change.
fn changeable(old: &Config, fresh: &Config) -> Result<(), String> {
    if old.listener.binds != fresh.listener.binds {
        return Err(format!(
            "listener.bind changed ({:?} to {:?}); restart corral to move the front end",
            old.listener.binds, fresh.listener.binds
        ));
    }
    if old.admin.bind != fresh.admin.bind {
        return Err(format!(
            "admin.bind changed ({} to {}); restart corral to move the admin port",
            old.admin.bind, fresh.admin.bind
        ));
    }
    if old.listener.proxy_protocol != fresh.listener.proxy_protocol {
        return Err("listener.proxy_protocol changed; restart corral to change it".into());
    }
    Ok(())
}
