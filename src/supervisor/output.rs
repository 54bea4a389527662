//! A worker's stdout and stderr, copied to corral's log line by line and
//! tagged with the worker id, as pm2 shows them.
//!
//! The pipes are read on the spawner thread. Each open pipe is listed in
//! [`Outputs`] until its reader ends, so that an upgrade of corral can hand
//! the pipes still open to the next image, which goes on reading them
//! where this one stopped (bytes not yet read stay in the pipe, and the
//! start of a line read and not yet logged goes with the pipe).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;

/// Longest worker log line kept whole; the rest of a longer line is dropped
/// and the cut is marked, so a worker printing megabytes cannot hurt corral.
const MAX_LINE: usize = 16 * 1024;

/// Which of a worker's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One open output pipe: whose it is, its read end in this process, and
/// the start of a line read from it and not logged yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenPipe {
    /// The worker slot the lines are tagged with.
    pub worker: usize,
    /// The shim whose process tree writes into the pipe.
    pub shim: u32,
    pub stream: Stream,
    /// The read end's descriptor in this process.
    pub fd: RawFd,
    /// Bytes of a line without its newline yet (at most [`MAX_LINE`]).
    #[serde(with = "crate::hex_bytes", default)]
    pub partial: Vec<u8>,
}

impl OpenPipe {
    /// A new process's pipe (its descriptor is set by [`Outputs::forward`]).
    pub fn new(worker: usize, shim: u32, stream: Stream) -> OpenPipe {
        OpenPipe {
            worker,
            shim,
            stream,
            fd: -1,
            partial: Vec::new(),
        }
    }
}

/// A pipe being read: what it is, and the line its reader is assembling
/// (shared with the reader, which runs on the same thread).
struct Reading {
    pipe: OpenPipe,
    line: Arc<Mutex<Vec<u8>>>,
}

/// The output pipes being read, keyed by descriptor. Every change happens
/// on the spawner thread (a reader starts or ends there), so the list read
/// there is exact.
#[derive(Clone, Default)]
pub struct Outputs {
    open: Arc<Mutex<HashMap<RawFd, Reading>>>,
}

impl Outputs {
    /// Starts copying `pipe.fd`'s lines to the log, after `pipe.partial`
    /// (the start of a line an earlier image read); must run on the
    /// spawner thread's runtime. `fd` is the descriptor to read (its
    /// number replaces `pipe.fd`).
    pub fn forward(&self, fd: OwnedFd, mut pipe: OpenPipe) {
        pipe.fd = fd.as_raw_fd();
        let reader = match pipe::Receiver::from_owned_fd(fd) {
            Ok(reader) => reader,
            Err(error) => {
                tracing::warn!(worker = pipe.worker, %error, "cannot read the worker's {:?}", pipe.stream);
                return;
            }
        };
        let (raw, worker, stream) = (pipe.fd, pipe.worker, pipe.stream);
        let line = Arc::new(Mutex::new(std::mem::take(&mut pipe.partial)));
        let reading = Reading {
            pipe,
            line: Arc::clone(&line),
        };
        self.lock().insert(raw, reading);
        let outputs = self.clone();
        tokio::spawn(async move {
            forward_lines(reader, worker, stream, &line).await;
            // The reader closed as forward_lines returned; the entry goes in
            // the same step, with no await between, so the spawner thread
            // never sees one without the other.
            outputs.lock().remove(&raw);
        });
    }

    /// The pipes open now, each with the line its reader had begun.
    pub fn open_pipes(&self) -> Vec<OpenPipe> {
        self.lock()
            .values()
            .map(|reading| OpenPipe {
                partial: reading
                    .line
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
                ..reading.pipe.clone()
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RawFd, Reading>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Copies a worker's output to the log, one event per line; `line` holds
/// the line being assembled between two reads.
async fn forward_lines(
    mut stream: impl AsyncRead + Unpin,
    worker: usize,
    name: Stream,
    line: &Mutex<Vec<u8>>,
) {
    let mut chunk = vec![0u8; 8192];
    let mut dropped = 0usize;
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut line = line.lock().unwrap_or_else(PoisonError::into_inner);
        for &byte in &chunk[..n] {
            if byte == b'\n' {
                emit(worker, name, &line, dropped);
                line.clear();
                dropped = 0;
            } else if line.len() < MAX_LINE {
                line.push(byte);
            } else {
                dropped += 1;
            }
        }
    }
    let line = line.lock().unwrap_or_else(PoisonError::into_inner);
    if !line.is_empty() || dropped > 0 {
        emit(worker, name, &line, dropped);
    }
}

/// One worker line in the log, as pm2 shows it: `worker-0 | text` for
/// stdout, `worker-0 ! text` for stderr (and the `stream` field).
fn emit(worker: usize, stream: Stream, line: &[u8], dropped: usize) {
    let lossy = String::from_utf8_lossy(line);
    // Control and bidi characters (ESC, U+202E, U+2028...) are escaped:
    // a worker's output cannot rewrite the terminal that shows the log.
    let text = crate::terminal::escape_keeping(lossy.trim_end_matches('\r'), &['\t']);
    let (name, mark) = match stream {
        Stream::Stdout => ("stdout", '|'),
        Stream::Stderr => ("stderr", '!'),
    };
    let stderr = matches!(stream, Stream::Stderr);
    crate::logging::worker_output().record(worker, stderr, &text, dropped);
    if dropped > 0 {
        tracing::info!(target: "corral::worker", worker, stream = name, truncated_bytes = dropped, "worker-{worker} {mark} {text}");
    } else {
        tracing::info!(target: "corral::worker", worker, stream = name, "worker-{worker} {mark} {text}");
    }
}
