//! `GET /logs?name=NAME&lines=N&follow=1`: the workers' last lines (of
//! every worker, or of the one named), as `worker-0 | text` (`!` for
//! standard error), and with `follow` then new lines as they come, in a
//! chunked body that lasts until the client goes.
//!
//! It reads [`crate::logging::worker_output`]; what it owns is the
//! followers: at most [`MAX_FOLLOWERS`] at once, each a task that copies
//! its feed into a small channel the response body drains. A follower that
//! reads slowly holds up only itself: its task waits on its own channel
//! while the feed moves on, and it is told how many lines it skipped.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::logging::ring::{Follower, Line, Next};
use crate::shared::Shared;

/// The body of every admin reply.
pub type Body = BoxBody<Bytes, Infallible>;

/// Lines given when `lines` is not.
pub const DEFAULT_LINES: usize = 50;
/// The most lines one request may ask for.
pub const MAX_LINES_ASKED: usize = 100_000;
/// Followers served at once (each holds an admin connection).
pub const MAX_FOLLOWERS: usize = 32;
/// A follower's chunks in flight to its connection.
const CHUNKS_IN_FLIGHT: usize = 16;
/// Lines already written are sent together up to about this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;

static FOLLOWERS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(MAX_FOLLOWERS)));

/// What a `/logs` request asks for.
#[derive(Debug, PartialEq)]
struct Asked {
    /// `None`: every worker.
    worker: Option<usize>,
    lines: usize,
    follow: bool,
}

/// Answers `GET /logs`.
pub fn answer<B>(shared: &Shared, request: &Request<B>) -> Response<Body> {
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
    }
    let asked = match parse(shared, request.uri().query().unwrap_or("")) {
        Ok(asked) => asked,
        Err((status, why)) => return text(status, why),
    };
    let output = crate::logging::worker_output();
    if !asked.follow {
        return text(
            StatusCode::OK,
            rendered(&output.tail(asked.worker, asked.lines)),
        );
    }
    let Ok(permit) = Arc::clone(&FOLLOWERS).try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_FOLLOWERS} followers already; try again later, or read without follow\n"),
        );
    };
    let (tail, follower) = output.follow(asked.worker, asked.lines);
    let (chunks, feed) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::spawn(pump(rendered(&tail), follower, chunks, permit));
    let mut reply = Response::new(Feed { chunks: feed }.boxed());
    reply
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_text_type(reply)
}

/// Reads `name`, `lines` and `follow`; an error is the status and why.
fn parse(shared: &Shared, query: &str) -> Result<Asked, (StatusCode, String)> {
    let mut asked = Asked {
        worker: None,
        lines: DEFAULT_LINES,
        follow: false,
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "name" => asked.worker = worker(shared, &value)?,
            "lines" => {
                asked.lines = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= MAX_LINES_ASKED)
                    .ok_or_else(|| {
                        (
                            StatusCode::BAD_REQUEST,
                            format!("lines must be a whole number from 0 to {MAX_LINES_ASKED}\n"),
                        )
                    })?
            }
            "follow" => asked.follow = !matches!(&*value, "0" | "false" | "no"),
            _ => {}
        }
    }
    Ok(asked)
}

/// The worker slot `name` names: a worker of the running config, or one
/// whose lines are still kept (scaled in since). `""` or `all`: every one.
fn worker(shared: &Shared, name: &str) -> Result<Option<usize>, (StatusCode, String)> {
    if name.is_empty() || name == "all" {
        return Ok(None);
    }
    let shown = crate::terminal::escape(name);
    let slot = name
        .strip_prefix("worker-")
        .and_then(|id| id.parse::<usize>().ok())
        .filter(|id| format!("worker-{id}") == name);
    let snapshot = shared.snapshot();
    if let Some(id) = slot {
        let running = snapshot.pool.worker_backends().any(|b| b.label == name);
        if running || crate::logging::worker_output().has(id) {
            return Ok(Some(id));
        }
    } else if snapshot.pool.backends.iter().any(|b| b.label == name) {
        return Err((
            StatusCode::NOT_FOUND,
            format!("{shown} is a static backend ([[backends]]): corral runs no process for it and has none of its output\n"),
        ));
    }
    Err((
        StatusCode::NOT_FOUND,
        format!("no worker named {shown}: name one from corral status (worker-0, worker-1, ...), or none for all\n"),
    ))
}

fn rendered(lines: &[Arc<Line>]) -> String {
    let mut text = String::new();
    for line in lines {
        line.render(&mut text);
    }
    text
}

/// Copies a follower's lines into its connection's channel until the
/// connection goes. Waiting here (a slow reader) holds up no one else.
async fn pump(
    tail: String,
    mut follower: Follower,
    chunks: mpsc::Sender<Bytes>,
    _permit: OwnedSemaphorePermit,
) {
    if !tail.is_empty() && chunks.send(Bytes::from(tail)).await.is_err() {
        return;
    }
    loop {
        let first = tokio::select! {
            _ = chunks.closed() => return,
            next = follower.next() => next,
        };
        let mut text = String::new();
        let mut next = Some(first);
        while let Some(Next::Line { missed, line }) = next {
            if missed > 0 {
                let _ = writeln!(
                    text,
                    "corral: {missed} lines skipped here: this reader fell behind"
                );
            }
            line.render(&mut text);
            next = (text.len() < CHUNK_BYTES)
                .then(|| follower.try_next())
                .flatten();
        }
        if !text.is_empty() && chunks.send(Bytes::from(text)).await.is_err() {
            return;
        }
        if matches!(next, Some(Next::Closed)) {
            return;
        }
    }
}

/// The streamed body of a follower: the chunks its task sends.
struct Feed {
    chunks: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for Feed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut reply = Response::new(Full::new(Bytes::from(body)).boxed());
    *reply.status_mut() = status;
    with_text_type(reply)
}

fn with_text_type(mut reply: Response<Body>) -> Response<Body> {
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}
