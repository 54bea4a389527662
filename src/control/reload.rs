//! Reloading the config file (SIGHUP, `POST /reload`) and scaling the
//! workers (`POST /workers/scale`): build the next config, refuse what
//! cannot change without a restart, publish config and pool together, then
//! retire, start or roll out worker slots to match.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConfigError, Overrides};
use crate::pool::Kind;
use crate::shared::Shared;
use crate::supervisor::{ports, Supervisor};

/// Where the config came from, so a reload reads the same file and applies
/// the same command-line overrides.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
}

/// Why a reload or a scale was refused; the old config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("corral was started without -c, so there is no file to reload")]
    NoFile,
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("{0}")]
    Overrides(String),
    #[error("{0}")]
    NeedsRestart(String),
    #[error("there are no workers to scale (no [workers] section and no command)")]
    NoWorkers,
    #[error("the reload task failed: {0}")]
    Task(String),
}

/// Reads and validates the file with the command-line overrides applied.
pub fn load(file: &std::path::Path, overrides: &Overrides) -> Result<Config, ReloadError> {
    let mut config = Config::load_with(file, overrides.command.as_deref())?;
    config
        .apply(overrides.clone())
        .map_err(ReloadError::Overrides)?;
    Ok(config)
}

/// Reloads the config file. An invalid file, or one that changes what cannot
/// change without a restart, is refused and the old config stays.
pub async fn from_file(
    shared: &Arc<Shared>,
    supervisor: &Arc<Supervisor>,
    source: &Source,
) -> Result<(), ReloadError> {
    let result = read_and_apply(shared, supervisor, source).await;
    match &result {
        Ok(()) => shared.metrics.reload_success.inc(),
        Err(_) => shared.metrics.reload_failure.inc(),
    }
    give_back_memory();
    result
}

async fn read_and_apply(
    shared: &Arc<Shared>,
    supervisor: &Arc<Supervisor>,
    source: &Source,
) -> Result<(), ReloadError> {
    let file = source.file.clone().ok_or(ReloadError::NoFile)?;
    // Reading the file, resolving host names and users may block: not on the
    // control-plane thread.
    let overrides = source.overrides.clone();
    let path = file.clone();
    let mut fresh = tokio::task::spawn_blocking(move || load(&path, &overrides))
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))??;
    let old = shared.config();
    changeable(&old, &fresh)?;
    ports::settle(&mut fresh, Some(&old)).map_err(ReloadError::Overrides)?;
    warn_needs_restart(&old, &fresh);
    apply(shared, supervisor, Arc::new(fresh));
    tracing::info!(file = %file.display(), "config reloaded");
    Ok(())
}

/// Hands the memory a refused or replaced config took back to the system
/// (glibc keeps freed heap otherwise). A reload is rare, so the cost of
/// walking the heap once is nothing.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages; it has no
    // preconditions and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets the worker count to `count` until the next reload from the file.
pub fn scale(
    shared: &Arc<Shared>,
    supervisor: &Arc<Supervisor>,
    count: usize,
) -> Result<(), ReloadError> {
    let mut fresh = Config::clone(&shared.config());
    if fresh.workers.is_none() {
        return Err(ReloadError::NoWorkers);
    }
    fresh
        .apply(Overrides {
            count: Some(count),
            ..Overrides::default()
        })
        .map_err(ReloadError::Overrides)?;
    ports::settle(&mut fresh, Some(&shared.config())).map_err(ReloadError::Overrides)?;
    apply(shared, supervisor, Arc::new(fresh));
    tracing::info!(count, "workers scaled");
    Ok(())
}

/// Publishes `fresh` with its pool, forgets the series of static backends
/// it removed, and brings the worker slots in line in the background.
fn apply(shared: &Arc<Shared>, supervisor: &Arc<Supervisor>, fresh: Arc<Config>) {
    let previous = shared.publish(Arc::clone(&fresh));
    let current = shared.snapshot();
    for gone in previous
        .pool
        .backends
        .iter()
        .filter(|b| b.kind == Kind::Static && current.pool.by_label(&b.label).is_none())
    {
        shared.metrics.forget_backend(&gone.label);
    }
    let old = Arc::clone(&previous.config);
    let supervisor = Arc::clone(supervisor);
    let shared = Arc::clone(shared);
    tokio::spawn(async move { apply_workers(&shared, &supervisor, &old, &fresh).await });
}

/// Scales the worker slots and rolls out a changed command or environment.
async fn apply_workers(shared: &Shared, supervisor: &Supervisor, old: &Config, fresh: &Config) {
    let count = fresh.workers.as_ref().map_or(0, |w| w.count);
    for retired in supervisor.retire_from(count).await {
        // A later reload may have brought the label back.
        if shared.snapshot().pool.by_label(&retired.label).is_none() {
            shared.metrics.forget_backend(&retired.label);
        }
        tracing::info!(backend = %retired.label, "worker slot retired");
    }
    let Some(workers) = &fresh.workers else {
        return;
    };
    let workers = Arc::new(workers.clone());
    let worker_backends: Vec<_> = shared.snapshot().pool.workers().cloned().collect();
    let running = supervisor.backends().await.len();
    // New slots start on their own; nobody waits for their first start here.
    drop(supervisor.start_slots(&workers, &worker_backends).await);
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

/// What a reload may not change.
fn changeable(old: &Config, fresh: &Config) -> Result<(), ReloadError> {
    if old.listener.binds != fresh.listener.binds {
        return Err(ReloadError::NeedsRestart(format!(
            "listener.bind changed ({:?} to {:?}); restart corral to move the front end",
            old.listener.binds, fresh.listener.binds
        )));
    }
    if old.admin.bind != fresh.admin.bind {
        return Err(ReloadError::NeedsRestart(format!(
            "admin.bind changed ({} to {}); restart corral to move the admin port",
            old.admin.bind, fresh.admin.bind
        )));
    }
    let mode = |c: &Config| c.workers.as_ref().map(|w| w.listen.as_str());
    if mode(old) != mode(fresh) && (mode(old) == Some("fd") || mode(fresh) == Some("fd")) {
        return Err(ReloadError::NeedsRestart(format!(
            "workers.listen changed ({} to {}); restart corral to change how workers get their clients",
            mode(old).unwrap_or("no workers"),
            mode(fresh).unwrap_or("no workers")
        )));
    }
    if old.listener.proxy_protocol != fresh.listener.proxy_protocol {
        return Err(ReloadError::NeedsRestart(
            "listener.proxy_protocol changed; restart corral to change it".into(),
        ));
    }
    Ok(())
}

/// Logs the changes that are kept but take effect only after a restart.
fn warn_needs_restart(old: &Config, fresh: &Config) {
    for (what, same) in [
        (
            "listener.backlog",
            old.listener.backlog == fresh.listener.backlog,
        ),
        (
            "listener.max_connections",
            old.listener.max_connections == fresh.listener.max_connections,
        ),
        ("log.format", old.log.format == fresh.log.format),
        ("log.level", old.log.level == fresh.log.level),
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
}
