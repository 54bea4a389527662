//! Moving bytes between a client and a backend until both sides are done.
//!
//! - Half-close is passed on: a client that shuts its write side still gets
//!   the whole response, and the reverse.
//! - `idle` with no bytes in either direction closes both sides.
//! - Buffers are taken from a per-thread pool only while data is moving, so
//!   an idle connection holds no user-space buffer.
//! - With `runtime.splice = true`, a direction that has carried
//!   [`SPLICE_AFTER`] bytes switches to splice(2) through a pipe, so bulk
//!   bytes are not copied through user space (off by default: on loopback
//!   the buffered copy measured faster).
//! - Until the backend sends its first byte, what the client sent is kept
//!   (up to [`REPLAY_LIMIT`]); if the backend closes or resets before
//!   answering at all (a worker killed mid-request), the pump returns it so
//!   the proxy can replay it on another backend and the client never notices.
//! - For `corral upgrade` a pump stops between two polls and hands back the
//!   bytes it read and has not written yet ([`Unsent`], from its buffers or
//!   splice pipes); the next image's pump writes them first.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use prometheus::IntCounter;

use super::http1::Exchange;
use super::splice::Pipe;
use crate::signal::{Signal, Watch};

/// Per-direction buffer size.
pub const BUFFER: usize = 32 * 1024;

/// Most client bytes kept for a replay; past it the connection is committed
/// to its backend.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// A direction that has carried this many bytes switches from the buffer to
/// splice(2), when splicing is on: below it, a pipe pair costs more than the
/// copies it saves.
pub const SPLICE_AFTER: u64 = 256 * 1024;

// Spliced bytes never pass through the replay buffer: a direction may only
// switch to splice after any replay has been given up.
const _: () = assert!(SPLICE_AFTER > REPLAY_LIMIT as u64);

/// Idle buffers kept per thread for reuse.
const POOLED_PER_THREAD: usize = 256;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    BUFFERS
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUFFER].into_boxed_slice())
}

fn give_back(buffer: Box<[u8]>) {
    // A buffer of another size (bytes an earlier image handed over) is not
    // pooled.
    if buffer.len() != BUFFER {
        return;
    }
    BUFFERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOLED_PER_THREAD {
            pool.push(buffer);
        }
    });
}

/// Which side ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
    /// corral itself: a timeout, a drain cut, a local shortage.
    Corral,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
            Side::Corral => "corral",
        }
    }
}

/// Why the pump stopped: the connection's end (which the caller turns
/// into its close reason), or a hand-over, where the client stays and
/// another backend takes over ([`Stop::BackendGaveUp`], [`Stop::Detached`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Both sides closed cleanly.
    Eof,
    /// Nothing moved for the idle timeout.
    IdleTimeout,
    /// The backend was sent bytes and answered nothing within
    /// `timeouts.first_byte`.
    FirstByteTimeout,
    /// A side reset the connection or another socket error happened.
    Reset,
    /// corral cut the connection (the drain ended).
    Cut,
    /// `corral upgrade`: the connection stopped between two polls, and
    /// its sockets go to the next image, open, with the bytes read and not
    /// yet written (see [`super::parked`]). Boxed: every connection's
    /// future holds a `Stop`, and only an upgrade makes this one.
    Parked(Box<Unsent>),
    /// The backend closed or reset before sending a single byte; here is
    /// everything the client had sent, and whether it had half-closed.
    BackendGaveUp { replay: Vec<u8>, client_done: bool },
    /// `workers.stateless`: the backend connection ended between two
    /// exchanges (the backend closed, or corral left a backend that is out
    /// of rotation), and the client's connection can carry on with another
    /// backend. The [`Exchange`] holds what the client sent that was never
    /// answered; `client_done`: the client had half-closed.
    Detached { client_done: bool },
}

/// Bytes a pump read and had not written yet when it parked, per
/// direction, and how far its timers had run; the next image's pump
/// writes those bytes before anything else and goes on timing from there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unsent {
    /// Read from the client, for the backend.
    pub to_backend: Vec<u8>,
    /// Read from the backend, for the client.
    pub to_client: Vec<u8>,
    /// While the backend has answered nothing: everything the client sent
    /// (`to_backend` included), kept for a replay on another backend.
    pub replay: Option<Vec<u8>>,
    /// How long no byte had moved (the idle timeout's count).
    pub quiet: Duration,
    /// How long the backend had been sent bytes and answered nothing (the
    /// first-byte timeout's count), if it was waiting.
    pub awaiting: Option<Duration>,
}

/// What a pump moved and why it stopped.
#[derive(Debug)]
pub struct Pumped {
    /// Bytes read from the client (and sent to the backend).
    pub from_client: u64,
    /// Bytes read from the backend (and sent to the client).
    pub from_backend: u64,
    /// A direction switched to splice(2).
    pub spliced: bool,
    pub stop: Stop,
    /// The side that ended it.
    pub by: Side,
}

/// One direction of the copy.
#[derive(Default)]
struct Half<'m> {
    /// Counts bytes as they are read (a Prometheus counter), so long-lived
    /// connections show their traffic while it flows.
    meter: Option<&'m IntCounter>,
    buffer: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// The reader reached EOF.
    read_done: bool,
    /// EOF was passed on as a shutdown of the writer.
    finished: bool,
    /// The error that ended this direction came from the writer.
    write_failed: bool,
    total: u64,
    /// Whether this direction may switch to splice(2).
    splice: bool,
    /// The pipe, once this direction has switched to splice(2).
    pipe: Option<Pipe>,
}

impl<'m> Half<'m> {
    /// A direction whose first bytes to write are `unsent` (read by an
    /// earlier image).
    fn new(splice: bool, meter: Option<&'m IntCounter>, unsent: Vec<u8>) -> Half<'m> {
        let end = unsent.len();
        Half {
            splice,
            meter,
            buffer: (end > 0).then(|| unsent.into_boxed_slice()),
            end,
            ..Half::default()
        }
    }

    /// The bytes read and not written yet, taken out of the buffer or the
    /// splice pipe (which is left empty).
    fn take_unsent(&mut self) -> io::Result<Vec<u8>> {
        let mut unsent = match &self.buffer {
            Some(buffer) => buffer[self.start..self.end].to_vec(),
            None => Vec::new(),
        };
        self.start = self.end;
        if let Some(pipe) = self.pipe.as_mut() {
            pipe.empty_into(&mut unsent)?;
        }
        Ok(unsent)
    }

    /// Accounts for `n` bytes just read.
    fn count(&mut self, n: usize) {
        self.total += n as u64;
        if let Some(meter) = self.meter {
            meter.inc_by(n as u64);
        }
    }

    /// This direction read its EOF and wrote out everything before it.
    #[inline]
    fn done(&self, polled: &Polled) -> bool {
        polled.is_ready() && self.read_done
    }

    fn release(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            give_back(buffer);
        }
        self.start = 0;
        self.end = 0;
        if let Some(pipe) = self.pipe.take() {
            pipe.give_back();
        }
    }

    /// The splice(2) version of [`Half::poll_copy`].
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        reader: &TcpStream,
        writer: &TcpStream,
        progress: &mut bool,
    ) -> Poll<io::Result<()>> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            if pipe.pending > 0 {
                match pipe.drain(writer) {
                    Ok(_) => {
                        *progress = true;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match writer.poll_write_ready(cx) {
                            Poll::Ready(Ok(())) => continue,
                            Poll::Ready(Err(e)) => {
                                self.write_failed = true;
                                return Poll::Ready(Err(e));
                            }
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    Err(e) => {
                        self.write_failed = true;
                        return Poll::Ready(Err(e));
                    }
                }
            }
            if self.read_done {
                return Poll::Ready(Ok(()));
            }
            match pipe.fill(reader) {
                Ok(0) => self.read_done = true,
                Ok(n) => {
                    // Fields, not self.count(): the pipe borrows self.
                    self.total += n as u64;
                    if let Some(meter) = self.meter {
                        meter.inc_by(n as u64);
                    }
                    *progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match reader.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Copies from `reader` to `writer` until EOF and everything read has
    /// been written, or an error. `seen` receives every chunk read. The EOF
    /// is passed on separately, by [`Half::finish`].
    ///
    /// tokio's `poll_read` clears the socket's readiness after a short read,
    /// which saves the `read()` that would only return EAGAIN.
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut ReadHalf<'_>,
        writer: &mut WriteHalf<'_>,
        progress: &mut bool,
        mut seen: impl FnMut(&[u8]),
    ) -> Poll<io::Result<()>> {
        loop {
            if self.pipe.is_some() {
                return self.poll_splice(cx, reader.as_ref(), writer.as_ref(), progress);
            }
            if self.start < self.end {
                let buffer = self.buffer.as_deref().unwrap_or_default();
                match Pin::new(&mut *writer).poll_write(cx, &buffer[self.start..self.end]) {
                    Poll::Ready(Ok(0)) => {
                        self.write_failed = true;
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.start += n;
                        *progress = true;
                        if self.start == self.end && self.splice && self.total >= SPLICE_AFTER {
                            self.switch_to_splice();
                        }
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        self.write_failed = true;
                        return Poll::Ready(Err(e));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.read_done {
                return Poll::Ready(Ok(()));
            }
            let mut buffer = self
                .buffer
                .take()
                .filter(|buffer| buffer.len() == BUFFER)
                .unwrap_or_else(take_buffer);
            let mut space = ReadBuf::new(&mut buffer);
            match Pin::new(&mut *reader).poll_read(cx, &mut space) {
                Poll::Ready(Ok(())) => {
                    let n = space.filled().len();
                    if n == 0 {
                        give_back(buffer);
                        self.read_done = true;
                        self.start = 0;
                        self.end = 0;
                    } else {
                        seen(&buffer[..n]);
                        self.buffer = Some(buffer);
                        self.start = 0;
                        self.end = n;
                        self.count(n);
                        *progress = true;
                    }
                }
                Poll::Ready(Err(e)) => {
                    give_back(buffer);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // Nothing to move: hold no buffer while waiting.
                    give_back(buffer);
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Half<'_> {
    /// From now on this direction moves bytes with splice(2); if no pipe can
    /// be had it stays buffered.
    fn switch_to_splice(&mut self) {
        self.splice = false;
        match Pipe::take() {
            Ok(pipe) => {
                if let Some(buffer) = self.buffer.take() {
                    give_back(buffer);
                }
                self.start = 0;
                self.end = 0;
                self.pipe = Some(pipe);
            }
            Err(error) => tracing::debug!(%error, "no pipe for splice; staying buffered"),
        }
    }

    /// Passes the reader's EOF on as a shutdown of the writer's write side.
    fn finish(&mut self, writer: &WriteHalf<'_>) {
        if !self.finished {
            self.finished = true;
            // The peer may be gone already; the other direction will tell.
            let stream: &TcpStream = writer.as_ref();
            let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Write);
        }
    }
}

/// Counters that bytes are added to as they move: from the client, from
/// the backend.
pub type Meters<'m> = Option<(&'m IntCounter, &'m IntCounter)>;

/// How [`pump`] runs one connection.
pub struct Options<'m> {
    /// With no byte in either direction this long, both sides are closed.
    pub idle: Duration,
    /// A backend that has been sent bytes and answers nothing this long
    /// (counted from the last byte sent) is given up; `None`: never.
    pub first_byte: Option<Duration>,
    /// The client's first bytes may be kept for a replay on another backend.
    pub replayable: bool,
    /// Bulk may move through splice(2).
    pub splice: bool,
    /// The backend was sent the client's bytes before the pump started (a
    /// replay, or bytes that came with a PROXY header).
    pub already_sent: bool,
    pub meters: Meters<'m>,
    /// Fired when corral cuts every open connection (the drain ended).
    pub cut: &'m Signal,
    /// Fired when an upgrade asks every connection to park: the pump ends
    /// with [`Stop::Parked`] at its next poll.
    pub park: &'m Signal,
    /// Bytes an earlier image read and did not write: written first.
    pub unsent: Unsent,
    /// `workers.stateless`: the HTTP/1.x view of the client's connection,
    /// fed every byte.
    pub stateless: Option<Stateless<'m>>,
}

impl<'m> Options<'m> {
    /// A connection pumped whole, as the config times it: no replay, no
    /// stateless view, nothing sent before and nothing unsent (a rescued
    /// connection; one taken over from an earlier image sets those two).
    pub fn whole(
        timeouts: &crate::config::Timeouts,
        splice: bool,
        meters: Meters<'m>,
        cut: &'m Signal,
        park: &'m Signal,
    ) -> Options<'m> {
        Options {
            idle: timeouts.idle,
            first_byte: timeouts.first_byte,
            replayable: false,
            splice,
            already_sent: false,
            meters,
            cut,
            park,
            unsent: Unsent::default(),
            stateless: None,
        }
    }
}

/// What a stateless connection's pump needs besides the sockets.
pub struct Stateless<'m> {
    /// The HTTP/1.x view, fed every byte.
    pub exchange: &'m mut Exchange,
    /// Whether the backend should keep the connection (false once it left
    /// rotation): if not, the pump ends with [`Stop::Detached`] before the
    /// client's next request is read.
    pub stay: &'m (dyn Fn() -> bool + Sync),
    /// Fired when corral stops: the pump ends with [`Stop::Detached`] as
    /// soon as nothing is unanswered.
    pub leave: &'m Signal,
}

/// Pumps until both directions finish, an error, a timeout, or a cut.
///
/// Not an `async fn`: the options are taken apart before the future is
/// made, so it holds their fields once and not `options` besides (every
/// open connection carries this future).
pub fn pump<'a>(
    client: &'a mut TcpStream,
    backend: &'a mut TcpStream,
    options: Options<'a>,
) -> impl Future<Output = Pumped> + 'a {
    let Options {
        idle,
        first_byte,
        replayable,
        splice,
        already_sent,
        meters,
        cut,
        park,
        unsent,
        mut stateless,
    } = options;
    // Made here, so the future holds the flow and not also what it is made
    // of (every open connection carries this future).
    let mut flow = Flow::new(splice, meters, replayable, already_sent, unsent);
    async move {
        let (client_in, client_out) = client.split();
        let (backend_in, backend_out) = backend.split();
        let mut sockets = Sockets {
            client_in,
            client_out,
            backend_in,
            backend_out,
        };
        let mut deadline = Deadline::new(idle, first_byte, &flow);
        // Watched, not polled as tokens: a token's poll takes locks shared
        // by every connection (see crate::signal).
        let mut cut_now = std::pin::pin!(Watch::new(cut));
        let mut park_now = std::pin::pin!(Watch::new(park));
        let mut parking = false;
        // Boxed, and only for stateless connections: the others' futures stay
        // as small as they were.
        let mut leave_now = stateless.as_ref().map(|s| Box::pin(Watch::new(s.leave)));
        let (stop, by) = poll_fn(|cx| {
            if cut_now.as_mut().poll_fired(cx) {
                return Poll::Ready((Stop::Cut, Side::Corral));
            }
            parking = parking || park_now.as_mut().poll_fired(cx);
            if parking {
                return Poll::Ready(match flow.take_unsent() {
                    Ok(unsent) => (Stop::Parked(Box::new(unsent)), Side::Corral),
                    Err(_) => (Stop::Cut, Side::Corral),
                });
            }
            let leaving = leave_now
                .as_mut()
                .is_some_and(|leave| leave.as_mut().poll_fired(cx));
            if let Some(s) = &stateless {
                // Between exchanges, before the client's next request is read:
                // a backend leaving rotation, or corral stopping, lets the
                // connection go.
                if flow.between_exchanges(s.exchange) && (leaving || !(s.stay)()) {
                    return Poll::Ready((Stop::Detached { client_done: false }, Side::Corral));
                }
            }
            let mut progress = false;
            let sent_before = flow.up.total;
            let (up, down) = flow.poll_both(cx, &mut sockets, &mut stateless, &mut progress);
            if let Some(s) = &stateless {
                if let Some(stop) = flow.detached(s.exchange, leaving, &down) {
                    return Poll::Ready(stop);
                }
            }
            flow.note_answer(sent_before, &mut deadline);
            if let Some(stop) = flow.ended(&up, &down) {
                return Poll::Ready(stop);
            }
            flow.pass_on_eofs(&up, &down, &sockets);
            let now = Instant::now();
            if progress {
                flow.last_activity = now;
            }
            deadline.poll(cx, &flow, now)
        })
        .await;
        flow.into_pumped(stop, by)
    }
}

/// Both sockets of a pumped connection, each split in its two directions.
struct Sockets<'s> {
    client_in: ReadHalf<'s>,
    client_out: WriteHalf<'s>,
    backend_in: ReadHalf<'s>,
    backend_out: WriteHalf<'s>,
}

/// What a pump tracks between polls, besides the sockets and the signals:
/// both directions, the client's bytes kept for a replay, and when bytes
/// last moved (for the idle and first-byte timeouts).
struct Flow<'m> {
    /// Client to backend.
    up: Half<'m>,
    /// Backend to client.
    down: Half<'m>,
    /// What the client sent, while a replay is still possible.
    replay: Option<Vec<u8>>,
    last_activity: Instant,
    /// While the backend has answered nothing: when it was last sent a byte.
    awaiting_since: Option<Instant>,
    /// The side whose EOF came first.
    first_eof: Option<Side>,
}

/// The outcome of one poll of a direction.
type Polled = Poll<io::Result<()>>;

impl<'m> Flow<'m> {
    fn new(
        splice: bool,
        meters: Meters<'m>,
        replayable: bool,
        already_sent: bool,
        unsent: Unsent,
    ) -> Flow<'m> {
        let now = Instant::now();
        // Timed on from where an earlier image's pump had got.
        let ago = |elapsed: Duration| now.checked_sub(elapsed).unwrap_or(now);
        Flow {
            up: Half::new(splice, meters.map(|m| m.0), unsent.to_backend),
            down: Half::new(splice, meters.map(|m| m.1), unsent.to_client),
            replay: unsent.replay.or_else(|| replayable.then(Vec::new)),
            last_activity: ago(unsent.quiet),
            awaiting_since: unsent.awaiting.map(ago).or(already_sent.then_some(now)),
            first_eof: None,
        }
    }

    /// What both directions read and did not write yet, and how far the
    /// timers ran: between two polls, that and the sockets are all the
    /// connection's state (an EOF already read is read again from the
    /// socket; the half-close passed on stays; the bytes kept for a replay
    /// go along; a stateless connection's HTTP/1.x view is its caller's).
    fn take_unsent(&mut self) -> io::Result<Unsent> {
        let now = Instant::now();
        Ok(Unsent {
            to_backend: self.up.take_unsent()?,
            to_client: self.down.take_unsent()?,
            replay: self.replay.take(),
            quiet: now.saturating_duration_since(self.last_activity),
            awaiting: self
                .awaiting_since
                .map(|since| now.saturating_duration_since(since)),
        })
    }

    /// A stateless connection with nothing unanswered, and the client's
    /// next request not read yet.
    #[inline]
    fn between_exchanges(&self, exchange: &Exchange) -> bool {
        exchange.is_idle() && !self.up.read_done
    }

    /// Moves what can be moved in both directions, feeding the stateless
    /// view and the replay buffer every chunk read.
    #[inline]
    fn poll_both(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets<'_>,
        stateless: &mut Option<Stateless<'m>>,
        progress: &mut bool,
    ) -> (Polled, Polled) {
        let replay = &mut self.replay;
        let up = self.up.poll_copy(
            cx,
            &mut sockets.client_in,
            &mut sockets.backend_out,
            progress,
            |chunk| {
                if let Some(s) = stateless.as_mut() {
                    s.exchange.client_sent(chunk);
                }
                if let Some(kept) = replay {
                    if kept.len() + chunk.len() <= REPLAY_LIMIT {
                        kept.extend_from_slice(chunk);
                    } else {
                        *replay = None;
                    }
                }
            },
        );
        let down = self.down.poll_copy(
            cx,
            &mut sockets.backend_in,
            &mut sockets.client_out,
            progress,
            |chunk| {
                if let Some(s) = stateless.as_mut() {
                    s.exchange.backend_sent(chunk);
                }
            },
        );
        (up, down)
    }

    /// A stateless connection whose backend connection may end here: corral
    /// is stopping and the answer went out in full, or the backend is gone
    /// at a point where another backend can take over (the client never
    /// sees the close).
    #[inline]
    fn detached(&self, exchange: &Exchange, leaving: bool, down: &Polled) -> Option<(Stop, Side)> {
        if leaving && self.between_exchanges(exchange) && down.is_pending() {
            return Some((Stop::Detached { client_done: false }, Side::Corral));
        }
        // Its close passed on in full to nobody yet, or a reset, or a
        // failed write.
        let backend_failed = matches!(down, Poll::Ready(Err(_))) && !self.down.write_failed;
        let backend_closed = self.down.read_done && down.is_ready();
        if backend_failed || self.up.write_failed || backend_closed {
            let carry_on = exchange
                .movable()
                .is_some_and(|unanswered| !unanswered.is_empty() || !self.up.read_done);
            if carry_on {
                let client_done = self.up.read_done;
                return Some((Stop::Detached { client_done }, Side::Backend));
            }
        }
        None
    }

    /// Once the backend answers, no replay and no first-byte deadline;
    /// until then, each byte sent to it restarts the first-byte clock.
    #[inline]
    fn note_answer(&mut self, sent_before: u64, deadline: &mut Deadline) {
        if self.down.total > 0 {
            self.replay = None;
            self.awaiting_since = None;
        } else if self.up.total > sent_before {
            let now = Instant::now();
            self.awaiting_since = Some(now);
            deadline.awaiting_from(now);
        }
    }

    /// How the connection ended, if it did in this poll: a backend that
    /// gave up unanswered (with the replay), a reset, or both sides done.
    #[inline]
    fn ended(&mut self, up: &Polled, down: &Polled) -> Option<(Stop, Side)> {
        let (up_half, down_half) = (&self.up, &self.down);
        if self.first_eof.is_none() {
            if up_half.read_done {
                self.first_eof = Some(Side::Client);
            } else if down_half.read_done {
                self.first_eof = Some(Side::Backend);
            }
        }
        // A backend that hung up before answering at all, while the client
        // still had its say (a clean close after the client's own half-close
        // is an answer, not a failure). Even with nothing to replay yet, the
        // client is better off on another backend than closed.
        let hung_up = matches!(down, Poll::Ready(Err(_)))
            || up_half.write_failed
            || (down_half.read_done && !up_half.read_done);
        if down_half.total == 0 && hung_up {
            let client_done = up_half.read_done;
            if let Some(replay) = self.replay.take() {
                return Some((
                    Stop::BackendGaveUp {
                        replay,
                        client_done,
                    },
                    Side::Backend,
                ));
            }
        }
        if let Poll::Ready(Err(_)) = up {
            let by = if self.up.write_failed {
                Side::Backend
            } else {
                Side::Client
            };
            return Some((Stop::Reset, by));
        }
        if let Poll::Ready(Err(_)) = down {
            let by = if self.down.write_failed {
                Side::Client
            } else {
                Side::Backend
            };
            return Some((Stop::Reset, by));
        }
        if self.up.done(up) && self.down.done(down) {
            // Both sides said all they had: closing the sockets sends the
            // last FIN, no shutdown call needed.
            return Some((Stop::Eof, self.first_eof.unwrap_or(Side::Client)));
        }
        None
    }

    /// EOFs are passed on only once a replay is ruled out: a client must
    /// not see its write side closed by a backend we are replacing.
    #[inline]
    fn pass_on_eofs(&mut self, up: &Polled, down: &Polled, sockets: &Sockets<'_>) {
        if self.up.done(up) {
            self.up.finish(&sockets.backend_out);
        }
        if self.down.done(down) {
            self.down.finish(&sockets.client_out);
        }
    }

    /// Gives the buffers back and says what moved.
    fn into_pumped(mut self, stop: Stop, by: Side) -> Pumped {
        let spliced = self.up.pipe.is_some() || self.down.pipe.is_some();
        self.up.release();
        self.down.release();
        Pumped {
            from_client: self.up.total,
            from_backend: self.down.total,
            spliced,
            stop,
            by,
        }
    }
}

/// The pump's one timer, at the earlier of the idle and the first-byte
/// deadlines. It is re-armed lazily: only when it fires is the next
/// deadline computed.
struct Deadline {
    timer: Pin<Box<Sleep>>,
    /// The timer has been polled since it was last set, so it holds this
    /// task's waker and will wake it at its deadline: before then, polling
    /// it again would only register the same waker once more.
    armed: bool,
    idle: Duration,
    first_byte: Option<Duration>,
}

impl Deadline {
    fn new(idle: Duration, first_byte: Option<Duration>, flow: &Flow<'_>) -> Deadline {
        let idle_deadline = flow.last_activity + idle;
        let first = flow
            .awaiting_since
            .zip(first_byte)
            .map_or(idle_deadline, |(since, limit)| {
                (since + limit).min(idle_deadline)
            });
        Deadline {
            timer: Box::pin(tokio::time::sleep_until(first)),
            armed: false,
            idle,
            first_byte,
        }
    }

    /// The backend was just sent a byte and has not answered: a first-byte
    /// deadline may be earlier than the timer.
    #[inline]
    fn awaiting_from(&mut self, now: Instant) {
        if let Some(limit) = self.first_byte {
            if now + limit < self.timer.deadline() {
                self.timer.as_mut().reset(now + limit);
                self.armed = false;
            }
        }
    }

    /// A timeout, if one is due; else pending with the timer set to the
    /// next deadline.
    #[inline]
    fn poll(&mut self, cx: &mut Context<'_>, flow: &Flow<'_>, now: Instant) -> Poll<(Stop, Side)> {
        if self.armed && now < self.timer.deadline() {
            return Poll::Pending;
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                self.armed = true;
                return Poll::Pending;
            }
            let now = Instant::now();
            let silent_deadline = flow
                .awaiting_since
                .zip(self.first_byte)
                .map(|(since, limit)| since + limit);
            if silent_deadline.is_some_and(|deadline| now >= deadline) {
                return Poll::Ready((Stop::FirstByteTimeout, Side::Corral));
            }
            let idle_deadline = flow.last_activity + self.idle;
            if now >= idle_deadline {
                return Poll::Ready((Stop::IdleTimeout, Side::Corral));
            }
            let next = silent_deadline.map_or(idle_deadline, |d| d.min(idle_deadline));
            self.timer.as_mut().reset(next);
            self.armed = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn options(idle: Duration, replayable: bool, splice: bool, cut: &Signal) -> Options<'_> {
        Options {
            idle,
            first_byte: None,
            replayable,
            splice,
            already_sent: false,
            meters: None,
            cut,
            // Checked after `cut`, and never cancelled alone here.
            park: cut,
            unsent: Unsent::default(),
            stateless: None,
        }
    }

    /// The byte at `offset` of a counting pattern (a byte lost, repeated
    /// or reordered shows).
    fn pattern(offset: usize) -> u8 {
        ((offset / 4) as u32).to_le_bytes()[offset % 4]
    }

    #[tokio::test]
    async fn a_parked_pump_hands_back_its_unsent_bytes_and_the_next_writes_them_first() {
        const SIZE: usize = 8 << 20;
        for splice in [false, true] {
            // The client does not read at first: corral's buffer (or pipe)
            // toward it fills, and the upgrade parks the pump then.
            let (mut far_client, mut client) = pair().await;
            let (mut backend, mut far_backend) = pair().await;
            let writer = tokio::spawn(async move {
                let data: Vec<u8> = (0..SIZE).map(pattern).collect();
                far_backend.write_all(&data).await.unwrap();
                far_backend
            });
            let (cut, park) = (Signal::default(), std::sync::Arc::new(Signal::default()));
            let parker = tokio::spawn({
                let park = std::sync::Arc::clone(&park);
                async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    park.fire();
                }
            });
            let mut first = options(Duration::from_secs(30), false, splice, &cut);
            first.park = &park;
            let pumped = pump(&mut client, &mut backend, first).await;
            parker.await.unwrap();
            let Stop::Parked(unsent) = pumped.stop else {
                panic!("splice {splice}: {:?}", pumped.stop);
            };
            assert!(
                !unsent.to_client.is_empty(),
                "splice {splice}: nothing was held back"
            );
            assert!(unsent.to_backend.is_empty());
            assert_eq!(pumped.spliced, splice);
            // The next pump (the next image's) writes them first.
            let never = Signal::default();
            let mut next = options(Duration::from_secs(30), false, splice, &never);
            next.unsent = *unsent;
            let reading = async {
                let mut got = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                while got.len() < SIZE {
                    let n = far_client.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "splice {splice}: EOF after {} bytes", got.len());
                    got.extend_from_slice(&chunk[..n]);
                }
                let wrong = got.iter().enumerate().position(|(i, b)| *b != pattern(i));
                assert_eq!(wrong, None, "splice {splice}: a byte out of place");
                drop(writer.await.unwrap());
                far_client.shutdown().await.unwrap();
            };
            let (pumped, ()) = tokio::join!(pump(&mut client, &mut backend, next), reading);
            let stop = pumped.stop;
            assert_eq!(stop, Stop::Eof, "splice {splice}");
        }
    }

    /// The timers count on across a park: a pump that carries an hour
    /// of quiet (of an hour's idle timeout) times out at once, and one
    /// parked after a quiet spell hands that spell over.
    #[tokio::test]
    async fn a_parked_pumps_timers_count_on_in_the_next() {
        let (_far_client, mut client) = pair().await;
        let (mut backend, _far_backend) = pair().await;
        let hour = Duration::from_secs(3600);
        let (cut, park) = (Signal::default(), std::sync::Arc::new(Signal::default()));
        let mut first = options(hour, false, false, &cut);
        first.park = &park;
        let parker = tokio::spawn({
            let park = std::sync::Arc::clone(&park);
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                park.fire();
            }
        });
        let pumped = pump(&mut client, &mut backend, first).await;
        parker.await.unwrap();
        let Stop::Parked(unsent) = pumped.stop else {
            panic!("{:?}", pumped.stop);
        };
        assert!(
            unsent.quiet >= Duration::from_millis(50),
            "{:?}",
            unsent.quiet
        );
        assert_eq!(unsent.awaiting, None);
        let mut next = options(hour, false, false, &cut);
        next.unsent = Unsent {
            quiet: hour,
            ..*unsent
        };
        let within = tokio::time::timeout(
            Duration::from_secs(10),
            pump(&mut client, &mut backend, next),
        );
        let pumped = within
            .await
            .expect("the carried quiet spell was not counted");
        assert_eq!(pumped.stop, Stop::IdleTimeout);
    }

    /// A client and a backend with a pump between them (replay on).
    async fn pumping(
        idle: Duration,
        splice: bool,
    ) -> (TcpStream, TcpStream, tokio::task::JoinHandle<Pumped>) {
        let (client, mut client_side) = pair().await;
        let (mut backend_side, backend) = pair().await;
        let task = tokio::spawn(async move {
            let cut = Signal::default();
            pump(
                &mut client_side,
                &mut backend_side,
                options(idle, true, splice, &cut),
            )
            .await
        });
        (client, backend, task)
    }

    #[tokio::test]
    async fn half_close_is_passed_on_and_bytes_counted() {
        let (mut client, mut backend, pumping) = pumping(Duration::from_secs(5), true).await;
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        backend.write_all(b"world!").await.unwrap();
        drop(backend);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"world!");
        let outcome = pumping.await.unwrap();
        assert_eq!((outcome.from_client, outcome.from_backend), (5, 6));
        assert_eq!((outcome.stop, outcome.by), (Stop::Eof, Side::Client));
    }

    #[tokio::test]
    async fn backend_that_hangs_up_unanswered_returns_the_replay() {
        let (mut client, mut backend, pumping) = pumping(Duration::from_secs(5), true).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut first = [0u8; 18];
        backend.read_exact(&mut first).await.unwrap();
        drop(backend);
        let outcome = pumping.await.unwrap();
        assert_eq!(
            outcome.stop,
            Stop::BackendGaveUp {
                replay: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                client_done: false
            }
        );
    }

    #[tokio::test]
    async fn bulk_switches_to_splice_and_stays_byte_identical() {
        for splice in [true, false] {
            let (mut client, mut client_side) = pair().await;
            let (mut backend_side, mut backend) = pair().await;
            let pumping = tokio::spawn(async move {
                let cut = Signal::default();
                pump(
                    &mut client_side,
                    &mut backend_side,
                    options(Duration::from_secs(5), false, splice, &cut),
                )
                .await
            });
            let payload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
            let sent = payload.clone();
            let writer = tokio::spawn(async move {
                backend.write_all(&sent).await.unwrap();
                backend.shutdown().await.unwrap();
                let mut rest = Vec::new();
                backend.read_to_end(&mut rest).await.unwrap();
                rest
            });
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert!(got == payload, "splice={splice}: bytes differ");
            client.write_all(b"bye").await.unwrap();
            client.shutdown().await.unwrap();
            assert_eq!(writer.await.unwrap(), b"bye");
            let outcome = pumping.await.unwrap();
            assert_eq!(outcome.from_backend, payload.len() as u64);
            assert_eq!(outcome.spliced, splice);
            assert_eq!(outcome.stop, Stop::Eof);
        }
    }

    #[tokio::test]
    async fn silence_ends_in_idle_timeout() {
        let (_client, mut client_side) = pair().await;
        let (mut backend_side, _backend) = pair().await;
        let cut = Signal::default();
        let outcome = pump(
            &mut client_side,
            &mut backend_side,
            options(Duration::from_millis(100), true, true, &cut),
        )
        .await;
        assert_eq!(
            (outcome.stop, outcome.by),
            (Stop::IdleTimeout, Side::Corral)
        );
    }

    #[tokio::test]
    async fn a_silent_backend_is_given_up_after_first_byte() {
        let (mut client, mut client_side) = pair().await;
        let (mut backend_side, _backend) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let cut = Signal::default();
        let mut opts = options(Duration::from_secs(30), true, false, &cut);
        opts.first_byte = Some(Duration::from_millis(100));
        let outcome = pump(&mut client_side, &mut backend_side, opts).await;
        assert_eq!(
            (outcome.stop, outcome.by),
            (Stop::FirstByteTimeout, Side::Corral)
        );
        assert_eq!(outcome.from_client, 18);
    }

    #[tokio::test]
    async fn a_cut_reports_the_bytes_that_moved() {
        let (mut client, mut client_side) = pair().await;
        let (mut backend_side, mut backend) = pair().await;
        let cut = std::sync::Arc::new(Signal::default());
        let cutter = std::sync::Arc::clone(&cut);
        let pumping = tokio::spawn(async move {
            let opts = options(Duration::from_secs(30), false, false, &cut);
            pump(&mut client_side, &mut backend_side, opts).await
        });
        client.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        backend.read_exact(&mut got).await.unwrap();
        backend.write_all(b"hi").await.unwrap();
        let mut answer = [0u8; 2];
        client.read_exact(&mut answer).await.unwrap();
        cutter.fire();
        let outcome = pumping.await.unwrap();
        assert_eq!((outcome.stop, outcome.by), (Stop::Cut, Side::Corral));
        assert_eq!((outcome.from_client, outcome.from_backend), (5, 2));
    }
}
