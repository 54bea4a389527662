//! Reloading the config file (SIGHUP, `POST /reload`) and scaling the
//! workers (`POST /workers/scale`): build the next config, compare it with
//! the running one key by key through the reload class of each key (the one
//! table, [`crate::config::keys::KEYS`]), refuse what cannot change without
//! a restart, publish config and pool together, then retire, start or roll
//! out worker slots to match. An applied reload reports what it applied,
//! rolled out or kept for a restart, and which command-line flags hold
//! values other than the file's ([`ReloadReport`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::keys::{self, ReloadClass};
use crate::config::{Config, ConfigError, Overrides};
use crate::pool::Kind;
use crate::shared::Shared;
use crate::supervisor::{ports, Supervisor};

/// Where the config came from, so a reload reads the same file and applies
/// the same command-line overrides.
#[derive(Debug, Clone)]
pub struct Source {
    /// `-c FILE`; `None` when corral runs the embedded default (nothing to
    /// reload).
    pub file: Option<PathBuf>,
    /// The command line's values, applied again over each reload.
    pub overrides: Overrides,
}

/// Why a reload or a scale was refused; the old config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Started without `-c`: there is no file to read again.
    #[error("corral was started without -c, so there is no file to reload")]
    NoFile,
    /// The file does not validate: every problem, with file, line and key.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// The command line's values (or a scale's count) do not fit the
    /// file, or no worker ports can be placed for them.
    #[error("{0}")]
    Overrides(String),
    /// The file changes a key only a restart can change (such as
    /// `listener.bind`): which, from what to what.
    #[error("{0}")]
    NeedsRestart(String),
    /// A scale asked of a corral that supervises no workers.
    #[error("there are no workers to scale (no [workers] section and no command)")]
    NoWorkers,
    /// The blocking task that reads the file panicked or was cancelled.
    #[error("the reload task failed: {0}")]
    Task(String),
}

/// Reads and validates the file with the command-line overrides applied.
pub fn load(file: &Path, overrides: &Overrides) -> Result<Config, ReloadError> {
    Ok(load_both(file, overrides)?.1)
}

/// The file as written (with the command given after `--`, which a
/// command-less `[workers]` needs), and with every flag applied on top.
fn load_both(file: &Path, overrides: &Overrides) -> Result<(Config, Config), ReloadError> {
    let as_written = Config::load_with(file, overrides.command.as_deref())?;
    let mut config = as_written.clone();
    config
        .apply(overrides.clone())
        .map_err(ReloadError::Overrides)?;
    Ok((as_written, config))
}

/// Reloads the config file. An invalid file, or one that changes what cannot
/// change without a restart, is refused and the old config stays.
pub(crate) async fn from_file(
    shared: &Arc<Shared>,
    supervisor: &Arc<Supervisor>,
    source: &Source,
) -> Result<ReloadReport, ReloadError> {
    let result = read_and_apply(shared, supervisor, source).await;
    match &result {
        Ok(_) => shared.metrics.reload_success.inc(),
        Err(_) => shared.metrics.reload_failure.inc(),
    }
    give_back_memory();
    result
}

async fn read_and_apply(
    shared: &Arc<Shared>,
    supervisor: &Arc<Supervisor>,
    source: &Source,
) -> Result<ReloadReport, ReloadError> {
    let file = source.file.clone().ok_or(ReloadError::NoFile)?;
    // Reading the file, resolving host names and users may block: not on the
    // control-plane thread.
    let overrides = source.overrides.clone();
    let path = file.clone();
    let (mut fresh, overridden) = tokio::task::spawn_blocking(move || {
        let (as_written, fresh) = load_both(&path, &overrides)?;
        Ok::<_, ReloadError>((fresh, overridden(&path, &as_written, &overrides)))
    })
    .await
    .map_err(|e| ReloadError::Task(e.to_string()))??;
    let old = shared.config();
    // Ports corral picked itself stay while they fit the new count.
    ports::settle(&mut fresh, Some(&old)).map_err(ReloadError::Overrides)?;
    let mut report = compare(&old, &fresh)?;
    report.overridden = overridden;
    let roll = !report.rolled_out.is_empty();
    apply(shared, supervisor, Arc::new(fresh), roll);
    tracing::info!(file = %file.display(), "config reloaded");
    for line in report.lines() {
        tracing::info!("reload: {line}");
    }
    Ok(report)
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
pub(crate) fn scale(
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
    let old = shared.config();
    ports::settle(&mut fresh, Some(&old)).map_err(ReloadError::Overrides)?;
    // A scale that outgrew the picked ports moved them: the workers follow.
    let roll =
        old.workers.as_ref().map(|w| w.port_base) != fresh.workers.as_ref().map(|w| w.port_base);
    apply(shared, supervisor, Arc::new(fresh), roll);
    tracing::info!(count, "workers scaled");
    Ok(())
}

/// Publishes `fresh` with its pool, forgets the series of static backends
/// it removed, and brings the worker slots in line in the background
/// (rolling the workers out anew when `roll`: how they run has changed).
fn apply(shared: &Arc<Shared>, supervisor: &Arc<Supervisor>, fresh: Arc<Config>, roll: bool) {
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
    let supervisor = Arc::clone(supervisor);
    let shared = Arc::clone(shared);
    tokio::spawn(async move { apply_workers(&shared, &supervisor, &fresh, roll).await });
}

/// Scales the worker slots and rolls out a changed command or environment.
async fn apply_workers(shared: &Shared, supervisor: &Supervisor, fresh: &Config, roll: bool) {
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
    let running = supervisor.running_count().await;
    // New slots start on their own; nobody waits for their first start here.
    drop(supervisor.start_slots(&workers).await);
    if roll && running > 0 {
        tracing::info!("reload changed how workers run; rolling it out");
        if let Err(error) = supervisor.rolling_restart(workers, running).await {
            tracing::error!(%error, "rolling out the reloaded worker config failed");
        }
    }
}

/// What changed between `old` and `fresh`, by the reload class of each key
/// ([`crate::config::keys::KEYS`]); refused when a key that a reload may not
/// change did.
fn compare(old: &Config, fresh: &Config) -> Result<ReloadReport, ReloadError> {
    let mut report = ReloadReport::default();
    for key in keys::KEYS {
        let (before, after) = ((key.value)(old), (key.value)(fresh));
        if before == after {
            continue;
        }
        let list = match key.class {
            ReloadClass::Hot => &mut report.applied,
            ReloadClass::RollsWorkers => &mut report.rolled_out,
            ReloadClass::NeedsRestart => &mut report.needs_restart,
            ReloadClass::Refused => {
                return Err(ReloadError::NeedsRestart(refusal(key, old, fresh)))
            }
        };
        // `runtime.user` and `runtime.group` may both stand for one change.
        if !list.contains(&key.dotted()) {
            list.push(key.dotted());
        }
    }
    Ok(report)
}

/// Why a change of `key` (of class refused) refuses the reload.
fn refusal(key: &keys::Key, old: &Config, fresh: &Config) -> String {
    let mode = |c: &Config| match &c.workers {
        Some(w) => w.listen.as_str(),
        None => "no workers",
    };
    match key.dotted().as_str() {
        "listener.bind" => format!(
            "listener.bind changed ({:?} to {:?}); restart corral to move the front end",
            old.listener.binds, fresh.listener.binds
        ),
        "admin.bind" => format!(
            "admin.bind changed ({} to {}); restart corral to move the admin port",
            old.admin.bind, fresh.admin.bind
        ),
        "workers.listen" => format!(
            "workers.listen changed ({} to {}); restart corral to change how workers get their clients",
            mode(old),
            mode(fresh)
        ),
        other => format!("{other} changed; restart corral to change it"),
    }
}

/// One command-line flag of `corral run` and the key it overrides.
struct Flag {
    /// As the user writes it, `-i`; with the value given, `-i 3`.
    flag: &'static str,
    key: &'static str,
    given: fn(&Overrides) -> Option<String>,
}

/// Every flag that overrides a key of the file.
const FLAGS: &[Flag] = &[
    Flag {
        flag: "--port-base",
        key: "workers.port_base",
        given: |o| o.port_base.map(|p| p.to_string()),
    },
    Flag {
        flag: "--bind",
        key: "listener.bind",
        given: |o| o.bind.map(|a| a.to_string()),
    },
    Flag {
        flag: "-i",
        key: "workers.count",
        given: |o| o.count.map(|n| n.to_string()),
    },
    Flag {
        flag: "--admin",
        key: "admin.bind",
        given: |o| o.admin.map(|a| a.to_string()),
    },
    Flag {
        flag: "--strategy",
        key: "balance.strategy",
        given: |o| o.strategy.map(|s| s.as_str().to_string()),
    },
    Flag {
        flag: "--listen",
        key: "workers.listen",
        given: |o| o.listen.map(|l| l.as_str().to_string()),
    },
    Flag {
        flag: "--",
        key: "workers.command",
        given: |o| o.command.as_ref().map(|c| c.join(" ")),
    },
];

/// One sentence per flag that holds a value other than the file's, such as
/// `workers.count is 4 in the file but -i 3 holds; pass no -i to follow the
/// file`. A flag that fills in what the file leaves out overrides nothing.
fn overridden(file: &Path, as_written: &Config, overrides: &Overrides) -> Vec<String> {
    FLAGS
        .iter()
        .filter_map(|flag| {
            let given = (flag.given)(overrides)?;
            let written = match flag.key {
                "workers.command" => file_command(file)?,
                key => written(as_written, key)?,
            };
            if written == given {
                return None;
            }
            let (shown, drop) = match flag.flag {
                "--" => (format!("`-- {given}`"), "no `-- PROGRAM`".to_string()),
                name => (format!("{name} {given}"), format!("no {name}")),
            };
            let written = match flag.flag {
                "--" => format!("`{written}`"),
                _ => written,
            };
            Some(format!(
                "{} is {written} in the file but {shown} holds; pass {drop} to follow the file",
                flag.key
            ))
        })
        .collect()
}

/// How the file's value of `key` reads (`None`: the file gives none).
fn written(config: &Config, key: &str) -> Option<String> {
    let workers = config.workers.as_ref();
    Some(match key {
        "listener.bind" => config
            .listener
            .binds
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        "admin.bind" => config.admin.bind.to_string(),
        "balance.strategy" => config.strategy.as_str().to_string(),
        "workers.count" => workers?.count.to_string(),
        "workers.listen" => workers?.listen.as_str().to_string(),
        _ => return None,
    })
}

/// The `workers.command` the file itself gives (the validated config holds
/// the one given after `--` instead), however the file writes it.
fn file_command(file: &Path) -> Option<String> {
    let text = crate::config::read_file(file).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    let command = table.get("workers")?.get("command")?.as_array()?;
    let words: Vec<&str> = command.iter().filter_map(toml::Value::as_str).collect();
    Some(words.join(" "))
}

/// What a reload did: said in corral's log and in `POST /reload`'s answer.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ReloadReport {
    /// Changed keys applied at once.
    pub(crate) applied: Vec<String>,
    /// Changed keys rolled out by replacing the workers one at a time.
    pub(crate) rolled_out: Vec<String>,
    /// Changed keys kept, which take effect only after corral restarts.
    pub(crate) needs_restart: Vec<String>,
    /// Keys whose value in the file a command-line flag overrides.
    pub(crate) overridden: Vec<String>,
}

impl ReloadReport {
    /// One line per kind of change (none when nothing changed), then one
    /// per override.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (list, what) in [
            (&self.applied, "applied"),
            (
                &self.rolled_out,
                "applied by a rolling restart of the workers",
            ),
            (
                &self.needs_restart,
                "changed in the file, but take effect only after a restart of corral",
            ),
        ] {
            if !list.is_empty() {
                lines.push(format!("{what}: {}", list.join(", ")));
            }
        }
        if lines.is_empty() {
            lines.push("no key changed".to_string());
        }
        lines.extend(self.overridden.iter().cloned());
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[workers]\ncommand = [\"sh\", \"-c\", \"sleep 9\"]\ncount = 4\n";

    #[test]
    fn every_flag_that_holds_another_value_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("corral.toml");
        std::fs::write(&file, FILE).unwrap();
        let overrides = Overrides {
            count: Some(3),
            command: Some(vec!["sh".into(), "app.sh".into()]),
            strategy: Some(crate::config::StrategyKind::RoundRobin),
            ..Overrides::default()
        };
        let (as_written, _) = load_both(&file, &overrides).unwrap();
        let said = overridden(&file, &as_written, &overrides);
        assert_eq!(
            said,
            [
                "workers.count is 4 in the file but -i 3 holds; pass no -i to follow the file",
                "workers.command is `sh -c sleep 9` in the file but `-- sh app.sh` holds; pass no `-- PROGRAM` to follow the file",
            ],
            "--strategy holds the file's own value: nothing to say"
        );
    }

    #[test]
    fn changes_are_sorted_by_their_reload_class() {
        let old = Config::parse(FILE, Path::new("t")).unwrap();
        let fresh = Config::parse(
            &format!("{FILE}env = {{ A = \"1\" }}\n[health]\nrise = 5\n[log]\nlevel = \"debug\"\n"),
            Path::new("t"),
        )
        .unwrap();
        let report = compare(&old, &fresh).unwrap();
        assert_eq!(report.applied, ["health.rise"]);
        assert_eq!(report.rolled_out, ["workers.env"]);
        assert_eq!(report.needs_restart, ["log.level"]);
        let moved = Config::parse(
            &format!("{FILE}[admin]\nbind = \"127.0.0.1:9191\"\n"),
            Path::new("t"),
        )
        .unwrap();
        let refused = compare(&old, &moved).unwrap_err().to_string();
        assert!(refused.contains("admin.bind changed"), "{refused}");
    }
}
