//! `[log]`: corral's log format, level and connection lines, and the file
//! it is also written to (with its rotation).

use std::path::PathBuf;

use toml::Spanned;

use super::defaults;
use super::error::Problems;
use super::raw::RawLog;
use super::types::LogConfig;
use super::values::{int, parse_size};

/// Validates `[log]`.
pub fn validate(raw: RawLog, p: &mut Problems) -> LogConfig {
    LogConfig {
        format: raw.format.unwrap_or_default(),
        level: match raw.level {
            Some(level) => {
                if !is_log_filter(level.get_ref()) {
                    p.at(
                        level.span(),
                        "log.level",
                        format!(
                            "`{}` is not a level: write level = \"info\" (trace, debug, info, warn, error, off) or a filter such as \"corral=debug\"",
                            level.get_ref()
                        ),
                    );
                }
                level.into_inner()
            }
            None => defaults::LOG_LEVEL.to_string(),
        },
        connections: raw.connections.unwrap_or(defaults::LOG_CONNECTIONS),
        file: raw.file.and_then(|f| file(f, p)),
        max_size: max_size(raw.max_size, p),
        keep: int(raw.keep, "log.keep", 1, 1000, defaults::LOG_KEEP, p) as u32,
    }
}

/// `log.file`: `""` is none; else a file in a directory that exists.
fn file(file: Spanned<String>, p: &mut Problems) -> Option<PathBuf> {
    if file.get_ref().is_empty() {
        return None;
    }
    let path = PathBuf::from(file.get_ref());
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.is_dir() {
        p.at(
            file.span(),
            "log.file",
            format!(
                "`{}` is a directory: name a file in it, such as file = \"{}/corral.log\"",
                path.display(),
                path.display()
            ),
        );
        return None;
    }
    if !dir.is_dir() {
        p.at(
            file.span(),
            "log.file",
            format!(
                "the directory `{}` does not exist: create it, or write file = \"\" for no log file",
                dir.display()
            ),
        );
        return None;
    }
    Some(path)
}

/// `log.max_size`: a size of at least [`defaults::LOG_MIN_SIZE`].
fn max_size(value: Option<Spanned<String>>, p: &mut Problems) -> u64 {
    let Some(value) = value else {
        return defaults::LOG_MAX_SIZE;
    };
    match parse_size(value.get_ref()) {
        Some(bytes) if bytes >= defaults::LOG_MIN_SIZE => bytes,
        Some(bytes) => {
            p.at(
                value.span(),
                "log.max_size",
                format!(
                    "`{}` is {bytes} bytes: a log file rotates at no less than 4KiB; write max_size = \"100MiB\"",
                    value.get_ref()
                ),
            );
            defaults::LOG_MAX_SIZE
        }
        None => {
            p.at(
                value.span(),
                "log.max_size",
                format!(
                    "`{}` is not a size: write max_size = \"100MiB\" (units B, KiB, MiB, GiB, KB, MB, GB)",
                    value.get_ref()
                ),
            );
            defaults::LOG_MAX_SIZE
        }
    }
}

/// A level, or a tracing filter whose every directive names a level
/// (`corral=debug,info`). A bare word that is not a level would be read as
/// a target name and silence everything.
fn is_log_filter(text: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    !text.trim().is_empty()
        && text
            .split(',')
            .all(|directive| match directive.rsplit_once('=') {
                Some((target, l)) => !target.trim().is_empty() && level(l),
                None => level(directive),
            })
        && tracing_subscriber::EnvFilter::try_new(text).is_ok()
}
