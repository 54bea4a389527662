//! Log output: text or JSON lines on stderr, filtered by `log.level`, or by
//! `RUST_LOG` when it is set.
//!
//! Lines go through a bounded queue to a writer thread (tracing-appender's
//! non-blocking writer, lossy): whoever reads corral's stderr can fall
//! behind or stop reading without ever blocking a proxy thread. When the
//! queue is full, lines are dropped and counted
//! (`corral_log_lines_dropped_total`).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines the queue holds before new ones are dropped.
pub const QUEUE_LINES: usize = 16 * 1024;

/// The writer's count of dropped lines, once logging is set up.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global subscriber; call once, before anything logs. Keep
/// the guard until exit: dropping it flushes what is queued.
pub fn init(config: &LogConfig) -> WorkerGuard {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.level));
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("corral-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(true);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    guard
}

/// Lines dropped so far because the log reader fell behind.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}
