//! The validated configuration: typed values with their defaults applied,
//! every cross-key rule checked, and every error tied to the file, line,
//! column and key that caused it. This module reads a file in three passes
//! and owns nothing else:
//!
//! 1. [`shape`]: TOML syntax, and which sections and keys the file names,
//!    against the one table of keys, [`keys`] (which also gives each key
//!    its reload class);
//! 2. [`raw`]: the values' types, read by serde into structs that mirror
//!    the file;
//! 3. one validation per section, each in its own module: [`listener`],
//!    [`admin`], [`sticky`], [`clients`], [`workers`], [`backends`],
//!    [`health`], [`timeouts`], [`log`], [`runtime`] (`[balance]` is one
//!    enum, read here), then [`cross`], the rules between sections.
//!
//! Around them: [`types`] (the validated config), [`values`] (integers,
//! durations, sizes, addresses, networks), [`defaults`], [`error`] (problems
//! with their places, in line order), [`files`] (reading a file safely),
//! [`overrides`] (command-line flags on top of a file) and [`warnings`]
//! (what is allowed but likely to hurt).

mod admin;
mod backends;
mod clients;
mod cross;
pub mod defaults;
mod error;
mod files;
mod health;
pub(crate) mod keys;
mod listener;
mod log;
mod overrides;
mod raw;
mod runtime;
mod shape;
mod sticky;
mod timeouts;
mod types;
mod values;
mod warnings;
mod workers;

use std::path::Path;

pub use error::ConfigError;
pub(crate) use files::read_file;
pub(crate) use raw::{HealthKind, LogFormat, ProxyProtocolMode, SendProxy};
pub use raw::{ListenMode, StrategyKind};
pub use types::*;
pub use values::parse_addr;
pub(crate) use warnings::ephemeral_ports;

use error::Problems;
use raw::RawConfig;

/// Most type errors one file reports.
const MAX_PROBLEMS: usize = 50;

/// The configuration corral runs with when started without `-c`: the
/// built-in demo backend, two workers, round-robin.
pub(crate) const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.toml");

impl Config {
    /// Reads and validates `path` for a run whose command line gives the
    /// worker command (`-- PROGRAM ARGS`): `[workers]` may then leave
    /// `command` out.
    pub fn load_with(path: &Path, command: Option<&[String]>) -> Result<Config, ConfigError> {
        let text = read_file(path).map_err(|why| ConfigError::whole_file(path, why))?;
        let mut config = Config::parse_with(&text, path, command)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED_DEFAULT, Path::new("<embedded default>"))
            .expect("the embedded default config is valid (checked by a unit test)")
    }

    /// Validates config text; `path` is only used to name the file in errors.
    ///
    /// Every independent problem is reported in one go, like `haproxy -c`,
    /// in the order of the file's lines: a wrong section or key, or a value
    /// of the wrong type, is recorded and blanked out, and the file is read
    /// again, so one mistake does not hide another, nor cause a second one.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, None)
    }

    /// [`Config::parse`], with the worker command given on the command line.
    fn parse_with(
        text: &str,
        path: &Path,
        command: Option<&[String]>,
    ) -> Result<Config, ConfigError> {
        let mut problems = Problems::new(text);
        let raw = shape::check(text, &mut problems)
            .and_then(|readable| read_types(readable, &mut problems));
        let config = raw.and_then(|raw| validate(raw, command, &mut problems));
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(problems.into_error(path)),
        }
    }
}

/// Reads the values' types. A value of the wrong type is recorded and its
/// line blanked, and the text read again, up to [`MAX_PROBLEMS`] times.
fn read_types(mut readable: String, p: &mut Problems) -> Option<RawConfig> {
    let mut type_errors = Vec::new();
    let raw = loop {
        match toml::from_str(&readable) {
            Ok(raw) => break Some(raw),
            Err(e) => {
                let problem = error::from_toml(p, &e);
                let blanked = error::blank_line(&mut readable, problem.line);
                type_errors.push(problem);
                if !blanked || type_errors.len() >= MAX_PROBLEMS {
                    break None;
                }
            }
        }
    };
    p.extend(type_errors);
    raw
}

/// Validates every section, then the rules between them.
fn validate(raw: RawConfig, command: Option<&[String]>, p: &mut Problems) -> Option<Config> {
    let listener = listener::validate(raw.listener, p);
    let clients = clients::validate(raw.clients, p);
    let admin = admin::validate(raw.admin, p);
    let sticky = sticky::validate(raw.sticky, p);
    let workers_at = p.place_of("workers").unwrap_or(0..0);
    let workers = raw
        .workers
        .and_then(|w| workers::validate(w, workers_at, command, p));
    let backends = backends::validate(raw.backends, p);
    if workers.is_none() && backends.is_empty() && p.is_empty() {
        p.general(
            None,
            "nothing to balance: set [workers] command or add a [[backends]] entry",
        );
    }
    let config = Config {
        source: None,
        listener,
        admin,
        strategy: raw.balance.strategy.unwrap_or_default(),
        sticky,
        clients,
        workers,
        backends,
        health: health::validate(raw.health, p),
        timeouts: timeouts::validate(raw.timeouts, p),
        log: log::validate(raw.log, p),
        runtime: runtime::validate(raw.runtime, p),
    };
    cross::cross_check(&config, p);
    Some(config)
}

#[cfg(test)]
mod tests;
