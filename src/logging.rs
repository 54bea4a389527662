//! Log output: text or JSON lines on stderr, and with `log.file` also in a
//! file rotated by size, filtered by `log.level`, or by `RUST_LOG` when it
//! is set. And the workers' recent output, kept for `corral logs`.
//!
//! Each sink (stderr, the file) has its own bounded queue to its own writer
//! thread (tracing-appender's non-blocking writer, lossy): whoever reads
//! corral's stderr, or a slow disk, can fall behind or stop without ever
//! blocking a proxy thread, or the other sink. When a queue is full, lines
//! are dropped and counted (`corral_log_lines_dropped_total`), as are the
//! lines the file could not take.
//!
//! - [`rotate`]: the size-rotating file, reopened on SIGHUP ([`reopen`]).
//! - [`ring`]: the workers' last lines and the feed for `corral logs -f`
//!   ([`worker_output`]).

pub mod ring;
pub mod rotate;

use std::io::IsTerminal;
use std::sync::{LazyLock, OnceLock};

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};
use rotate::{FileErrors, RotatingFile};

/// Lines each queue holds before new ones are dropped.
pub const QUEUE_LINES: usize = 16 * 1024;

/// What logging set up: the writers' counts of dropped lines, and the
/// file's reopen switch.
struct Sinks {
    queues: Vec<ErrorCounter>,
    file: Option<FileErrors>,
}

static SINKS: OnceLock<Sinks> = OnceLock::new();

/// The workers' output kept for `corral logs`: one per process, as the log
/// itself. Written only by the worker output forwarding
/// ([`crate::supervisor::spawn`]), read by `GET /logs`.
static WORKER_OUTPUT: LazyLock<ring::Output> = LazyLock::new(ring::Output::new);

/// The workers' recent output.
pub fn worker_output() -> &'static ring::Output {
    &WORKER_OUTPUT
}

/// Keep until exit: dropping them flushes what is queued.
pub struct Guards(#[allow(dead_code)] Vec<WorkerGuard>);

/// Installs the global subscriber; call once, before anything logs. Keep
/// the guards until exit. Fails only when `log.file` cannot be opened
/// (the error names it).
pub fn init(config: &LogConfig) -> std::io::Result<Guards> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.level));
    let file = match &config.file {
        Some(path) => Some(RotatingFile::open(path, config.max_size, config.keep)?),
        None => None,
    };
    let (writer, guard) = queue(std::io::stderr(), "corral-log");
    let mut queues = vec![writer.error_counter()];
    let mut guards = vec![guard];
    let mut layers = vec![layer(
        writer,
        config.format,
        std::io::stderr().is_terminal(),
    )];
    let mut file_errors = None;
    if let Some((file, errors)) = file {
        let (writer, guard) = queue(file, "corral-log-file");
        queues.push(writer.error_counter());
        guards.push(guard);
        layers.push(layer(writer, config.format, false));
        file_errors = Some(errors);
    }
    let _ = SINKS.set(Sinks {
        queues,
        file: file_errors,
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init();
    Ok(Guards(guards))
}

/// A lossy bounded queue in front of `sink`, with its writer thread.
fn queue<W: std::io::Write + Send + 'static>(sink: W, thread: &str) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name(thread)
        .finish(sink)
}

type Boxed = Box<dyn Layer<tracing_subscriber::layer::Layered<EnvFilter, Registry>> + Send + Sync>;

/// The formatting layer for one sink.
fn layer(writer: NonBlocking, format: LogFormat, ansi: bool) -> Boxed {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(true);
    match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    }
}

/// Lines dropped so far: a sink's reader or disk fell behind, or the file
/// could not be written.
pub fn dropped_lines() -> u64 {
    SINKS.get().map_or(0, |s| {
        let queued: u64 = s.queues.iter().map(|c| c.dropped_lines() as u64).sum();
        queued + s.file.as_ref().map_or(0, FileErrors::dropped_lines)
    })
}

/// Closes and opens `log.file` again before its next line (SIGHUP: an
/// external rotation renamed it). Nothing without a file.
pub fn reopen() {
    if let Some(errors) = SINKS.get().and_then(|s| s.file.as_ref()) {
        errors.reopen();
    }
}
