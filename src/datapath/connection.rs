//! One client connection, from accept to close, in steps ([`serve`]):
//! the front door (a trusted PROXY peer, its header, the `[clients]`
//! limits), then until the connection is over ([`relay`]): connect to a
//! backend (moving on to the next one if that fails), send it what must
//! precede the pump and pump bytes ([`pump_once`]), account for that
//! backend connection, and decide ([`after_pump`]) whether the request is
//! replayed on another backend, a stateless connection carries on, or the
//! connection closes. Every connection past the front door ends in
//! [`finish`]: its duration and its log line, with the [`CloseReason`]
//! and the side that closed it.
//!
//! A client relayed to a fixed address ([`serve_relayed`]: in `fd` mode,
//! one corral took off the queue of a worker slot out of rotation) takes
//! the same steps but the first two: connect (within `timeouts.connect`),
//! pump (idle and first-byte timeouts, the drain's cut), close reason,
//! metrics and the log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::WaitForCancellationFuture;
use tokio_util::task::TaskTracker;

use super::http1::Exchange;
use super::parked::{ConnectionState, Resumed};
use super::proxy_protocol::{self, HeaderRead};
use super::pump::{self, Side, Stop};
use crate::clients::Admitted;
use crate::config::{Config, ProxyProtocolMode, SendProxy};
use crate::dispatch::{sticky, Tried};
use crate::health;
use crate::pool::{ActiveGuard, Backend, Instance, Snapshot};
use crate::shared::Shared;
use crate::steering::Relay;

/// Why a connection ended: the log's `end` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Eof,
    IdleTimeout,
    /// The backend answered nothing within `timeouts.first_byte`.
    FirstByteTimeout,
    Reset,
    /// The drain ended with the connection still open.
    Cut,
    /// The backend hung up before answering and the request could not be
    /// replayed.
    BackendClosed,
    /// Every backend that was up refused, timed out or hung up.
    ConnectFailed,
    /// No backend was up.
    NoBackend,
    /// No valid PROXY header from the client.
    ProxyProtocol,
    /// corral was out of file descriptors or memory for the backend socket.
    Resources,
    /// `corral upgrade`: the connection was handed to the next image of
    /// corral, open (its log line there says how it ended).
    HandedOver,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Eof => "eof",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::FirstByteTimeout => "first_byte_timeout",
            CloseReason::Reset => "reset",
            CloseReason::Cut => "cut",
            CloseReason::BackendClosed => "backend_closed",
            CloseReason::ConnectFailed => "connect_failed",
            CloseReason::NoBackend => "no_backend",
            CloseReason::ProxyProtocol => "proxy_protocol",
            CloseReason::Resources => "resources",
            CloseReason::HandedOver => "handed_over",
        }
    }
}

/// How a connection closed: why, and which side closed it (the log's
/// `end` and `closed_by` fields).
#[derive(Debug, Clone, Copy)]
pub struct Close {
    pub reason: CloseReason,
    pub by: Side,
}

impl Close {
    fn by_corral(reason: CloseReason) -> Close {
        Close {
            reason,
            by: Side::Corral,
        }
    }
}

/// What is known about the client once its PROXY header (if any) is read.
struct Client {
    stream: TcpStream,
    /// The client's address (from its PROXY header behind a balancer).
    addr: SocketAddr,
    /// The address it connected to, from its PROXY header, or ours.
    local: Option<SocketAddr>,
    /// Client bytes the next backend must be sent before the pump: those
    /// that came with the PROXY header, or a request being replayed.
    pending: Vec<u8>,
    /// The client has half-closed (its request is complete).
    done_sending: bool,
}

impl Client {
    /// Who the client is and the address it connected to, as a parked
    /// connection keeps them.
    fn id(&self) -> (SocketAddr, Option<SocketAddr>) {
        (self.addr, self.local)
    }

    /// A client that is who its socket says.
    fn new(stream: TcpStream, peer: SocketAddr) -> Client {
        Client {
            stream,
            addr: peer,
            local: None,
            pending: Vec::new(),
            done_sending: false,
        }
    }
}

/// Serves one accepted client until it closes or corral cuts it.
///
/// A client turned away at the front door (an untrusted PROXY peer, a
/// `[clients]` refusal) is counted, not logged. Every other connection
/// ends through [`finish`], once.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    // One snapshot at a time: config and pool belong together. A stateless
    // connection takes a fresh one each time it moves to another backend.
    let mut snapshot = shared.snapshot();
    if !trusted(&shared, &snapshot, peer) {
        return;
    }
    // One statement, so the future holds the client once (not also the
    // `Result` it came in).
    let mut client = match match snapshot.config.listener.proxy_protocol {
        ProxyProtocolMode::None => Ok(Client::new(stream, peer)),
        // Boxed: reading a header takes a large future, and inline it would
        // grow every connection's future, PROXY protocol or not.
        mode => Box::pin(read_proxy_header(&shared, mode, stream, peer, Vec::new())).await,
    } {
        Ok(client) => client,
        Err(close) => {
            finish(&snapshot.config, peer, &Trail::default(), started, close);
            return;
        }
    };
    let Some(_admitted) = admit(&shared, &snapshot, &client) else {
        return;
    };
    let mut trail = Trail {
        bytes: (client.pending.len() as u64, 0),
        last: None,
    };
    // Inline, not through relay_to_the_end: a nested future here would
    // grow every open connection's future by about 110 bytes.
    let mut exchange = stateless_view(&snapshot, &client);
    let close = relay(
        &shared,
        &mut snapshot,
        &mut client,
        exchange.as_deref_mut(),
        &mut trail,
    )
    .await;
    finish(&snapshot.config, client.addr, &trail, started, close);
}

/// The front door: allow/deny and the per-client limits, before any
/// backend is chosen (so a refused client makes no sticky entry).
/// Refusals are counted, never logged one by one.
fn admit<'s>(shared: &'s Shared, snapshot: &Snapshot, client: &Client) -> Option<Admitted<'s>> {
    match shared
        .clients
        .admit(client.addr.ip(), &snapshot.config.clients)
    {
        Ok(admitted) => Some(admitted),
        Err(refused) => {
            shared.metrics.rejected.of(refused).inc();
            None
        }
    }
}

/// Steps 2 to 5 for a client taken over from an earlier image (what
/// [`serve`] does inline): relay it, with the stateless view when
/// `workers.stateless` (`carried`: the one the connection had), until the
/// connection is over, then log its close.
async fn relay_to_the_end(
    shared: &Shared,
    snapshot: &mut Arc<Snapshot>,
    client: &mut Client,
    trail: &mut Trail,
    started: Instant,
    carried: Option<Box<Exchange>>,
) {
    let mut exchange = carried.or_else(|| stateless_view(snapshot, client));
    let close = relay(shared, snapshot, client, exchange.as_deref_mut(), trail).await;
    finish(&snapshot.config, client.addr, trail, started, close);
}

/// `workers.stateless`: the HTTP/1.x view that lets the connection move
/// between backends, fed what the client sent so far. Boxed: other
/// connections carry one pointer.
fn stateless_view(snapshot: &Snapshot, client: &Client) -> Option<Box<Exchange>> {
    snapshot.config.workers.as_ref().filter(|w| w.stateless)?;
    let mut exchange = Box::new(Exchange::new());
    exchange.client_sent(&client.pending);
    Some(exchange)
}

/// Step 0: with PROXY headers on, only the listed balancers may say who
/// the client is: anyone else is closed (and counted) before a byte of
/// its header is read.
fn trusted(shared: &Shared, snapshot: &Snapshot, peer: SocketAddr) -> bool {
    let listener = &snapshot.config.listener;
    if listener.proxy_protocol != ProxyProtocolMode::None && !listener.trusts(peer.ip()) {
        shared.metrics.rejected.untrusted_proxy.inc();
        return false;
    }
    true
}

/// What a connection went through, for its close: the bytes from the
/// client (read once, however often replayed) and to it, and the last
/// backend it was sent to.
#[derive(Default)]
struct Trail {
    bytes: (u64, u64),
    last: Option<Arc<Backend>>,
}

/// Steps 2 to 4, until the connection is over: connect to a backend,
/// pump, and then replay on another backend, carry on with the next
/// request, or close.
async fn relay(
    shared: &Shared,
    snapshot: &mut Arc<Snapshot>,
    client: &mut Client,
    mut exchange: Option<&mut Exchange>,
    trail: &mut Trail,
) -> Close {
    let client_key = sticky::key_of(client.addr.ip(), &snapshot.config.sticky);
    let mut tried = Tried::default();
    loop {
        let attempt = match connect(shared, snapshot, client_key, &mut tried).await {
            Ok(attempt) => attempt,
            Err(reason) => return Close::by_corral(reason),
        };
        let index = attempt.index;
        let backend = Arc::clone(&attempt.guard.backend);
        let instance = Arc::clone(&attempt.guard.instance);
        trail.last = Some(Arc::clone(&backend));
        let pumped = pump_once(shared, snapshot, client, exchange.as_deref_mut(), attempt).await;
        let Some(pumped) = pumped else {
            tried.push(index);
            continue;
        };
        account(shared, client, &backend, &pumped);
        trail.bytes.0 += pumped.from_client;
        trail.bytes.1 += pumped.from_backend;
        let exchange = exchange.as_deref();
        match after_pump(
            shared, snapshot, client, exchange, &backend, &instance, pumped,
        )
        .await
        {
            Then::Replay => tried.push(index),
            Then::CarryOn(carry) => {
                match carry {
                    Carry::NextRequest => tried = Tried::default(),
                    Carry::Replay => tried.push(index),
                }
                *snapshot = shared.snapshot();
            }
            Then::Close(close) => return close,
        }
    }
}

/// One backend connection: what must precede the pump, then the pump.
/// `None` when the backend could not be sent what precedes it.
async fn pump_once(
    shared: &Shared,
    snapshot: &Snapshot,
    client: &mut Client,
    mut exchange: Option<&mut Exchange>,
    attempt: Attempt,
) -> Option<pump::Pumped> {
    let Attempt {
        mut upstream,
        guard,
        index,
    } = attempt;
    let config = &snapshot.config;
    let send_proxy = snapshot.pool.send_proxy(index);
    if !introduce(client, &mut upstream, send_proxy, config).await {
        return None;
    }
    let (backend, instance) = (&guard.backend, &guard.instance);
    // A stateless connection stays while its backend is in rotation.
    let stay = || backend.is_up() && !instance.is_retired();
    let mut pumped = pump::pump(
        &mut client.stream,
        &mut upstream,
        pump::Options {
            idle: config.timeouts.idle,
            first_byte: config.timeouts.first_byte,
            replayable: exchange.is_none(),
            splice: config.runtime.splice,
            already_sent: !client.pending.is_empty(),
            meters: Some((&backend.metrics.bytes_received, &backend.metrics.bytes_sent)),
            cut: shared.cut_signal(),
            park: shared.parking.signal(),
            unsent: pump::Unsent::default(),
            stateless: exchange.as_deref_mut().map(|exchange| pump::Stateless {
                exchange,
                stay: &stay,
                leave: shared.stop_signal(),
            }),
        },
    )
    .await;
    if let Stop::Parked(unsent) = &mut pumped.stop {
        let bytes = (pumped.from_client, pumped.from_backend);
        let state = ConnectionState::new(
            client.id(),
            backend.key,
            bytes,
            std::mem::take(&mut **unsent),
        );
        park_pumped(shared, &client.stream, &upstream, state, exchange);
    }
    drop((guard, upstream));
    Some(pumped)
}

/// What a connection does once a backend connection ended.
enum Then {
    /// The backend hung up unanswered: the request goes to another one.
    Replay,
    /// Stateless: the backend connection ended between exchanges and the
    /// connection goes on, with a fresh snapshot.
    CarryOn(Carry),
    /// The connection is over.
    Close(Close),
}

/// Step 3: after the pump, replay the request, carry on, or close.
async fn after_pump(
    shared: &Shared,
    snapshot: &Snapshot,
    client: &mut Client,
    exchange: Option<&Exchange>,
    backend: &Backend,
    instance: &Arc<Instance>,
    pumped: pump::Pumped,
) -> Then {
    match pumped.stop {
        Stop::BackendGaveUp {
            replay,
            client_done,
        } => {
            if !replay_allowed(shared, client, &replay, instance).await {
                return Then::Close(Close {
                    reason: CloseReason::BackendClosed,
                    by: Side::Backend,
                });
            }
            tracing::warn!(
                backend = %backend.label,
                client = %client.addr,
                bytes = client.pending.len() + replay.len(),
                "backend closed before answering; replaying the request on another backend"
            );
            client.pending.extend_from_slice(&replay);
            client.done_sending = client_done;
            Then::Replay
        }
        Stop::Detached { client_done } => {
            let Some(exchange) = exchange else {
                return Then::Close(Close::by_corral(CloseReason::BackendClosed));
            };
            match carry_on(shared, client, exchange, instance, client_done).await {
                Ok(carry) => Then::CarryOn(carry),
                Err(close) => Then::Close(close),
            }
        }
        stop => Then::Close(close_of(
            shared, snapshot, backend, instance, stop, pumped.by,
        )),
    }
}

/// The one end of every connection past the front door: the duration on
/// the last backend's histogram, and the log line.
fn finish(config: &Config, client: SocketAddr, trail: &Trail, started: Instant, close: Close) {
    // A connection handed to the next image is timed there, once.
    if let Some(backend) = trail
        .last
        .as_ref()
        .filter(|_| close.reason != CloseReason::HandedOver)
    {
        backend
            .metrics
            .connection_duration
            .observe(started.elapsed().as_secs_f64());
    }
    let label = trail.last.as_ref().map_or("", |b| b.label.as_str());
    log_closed(config, client, label, trail.bytes, started, close, None);
}

/// How a stateless connection goes on once its backend connection ended
/// between exchanges.
enum Carry {
    /// Nothing was unanswered: the client's next request goes to a backend
    /// in rotation.
    NextRequest,
    /// The backend left requests unanswered, and they are sent again.
    Replay,
}

/// Step 3, stateless: the backend connection ended with the connection
/// between exchanges. With nothing unanswered, wait for the client's next
/// bytes (or close it cleanly if corral is stopping). Unanswered requests
/// are sent to another backend when that is safe: the worker was stopped
/// by corral or died (it closed them unread), or every one of them is
/// idempotent (RFC 9110 9.2.2, what HTTP clients themselves retry). Else
/// the connection ends as the backend ended it.
async fn carry_on(
    shared: &Shared,
    client: &mut Client,
    exchange: &Exchange,
    instance: &Instance,
    client_done: bool,
) -> Result<Carry, Close> {
    let unanswered = exchange.movable().unwrap_or_default();
    if unanswered.is_empty() {
        if shared.is_draining() {
            // corral's graceful stop, between two requests: a clean close.
            return Err(Close::by_corral(CloseReason::Eof));
        }
        next_request(client, shared).await?;
        client.pending.clear();
        client.done_sending = false;
        return Ok(Carry::NextRequest);
    }
    let safe = exchange.unanswered_idempotent()
        || instance.is_retired()
        || worker_exiting(shared, instance).await;
    if !safe {
        return Err(Close {
            reason: CloseReason::BackendClosed,
            by: Side::Backend,
        });
    }
    tracing::debug!(
        client = %client.addr,
        bytes = unanswered.len(),
        "backend closed with requests unanswered; sending them to another backend"
    );
    client.pending = unanswered.to_vec();
    client.done_sending = client_done;
    Ok(Carry::Replay)
}

/// Waits, holding no backend connection, until the client sends its next
/// bytes (left in the socket for the next backend), for at most
/// `timeouts.idle`. An upgrade meanwhile parks the client's socket.
async fn next_request(client: &Client, shared: &Shared) -> Result<(), Close> {
    let idle = shared.config().timeouts.idle;
    let stream = &client.stream;
    let mut first = [0u8; 1];
    tokio::select! {
        // corral's graceful stop: between two requests, a clean close. An
        // upgrade stops the accepting too, once the parking has begun: the
        // client's socket is parked instead. (One wait for both keeps every
        // connection's future smaller.)
        _ = shared.accepting_stopped() => {
            if !shared.parking.signal().is_fired() {
                return Err(Close::by_corral(CloseReason::Eof));
            }
            let state = ConnectionState::new(client.id(), 0, (0, 0), pump::Unsent::default());
            park(shared, stream, None, state);
            Err(Close::by_corral(CloseReason::HandedOver))
        }
        _ = shared.connections_cut() => Err(Close::by_corral(CloseReason::Cut)),
        peeked = tokio::time::timeout(idle, stream.peek(&mut first)) => match peeked {
            Err(_) => {
                shared.metrics.errors.timeout.inc();
                Err(Close::by_corral(CloseReason::IdleTimeout))
            }
            Ok(Ok(0)) => Err(Close { reason: CloseReason::Eof, by: Side::Client }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Close { reason: CloseReason::Reset, by: Side::Client }),
        },
    }
}

/// Step 1: behind another balancer, the client is whoever its PROXY header
/// says, read after `so_far` (bytes of it an earlier image read). The
/// close when the header is missing or bad (counted and logged), or when
/// an upgrade parked the client before it was complete.
async fn read_proxy_header(
    shared: &Shared,
    mode: ProxyProtocolMode,
    stream: TcpStream,
    peer: SocketAddr,
    so_far: Vec<u8>,
) -> Result<Client, Close> {
    let mut client = Client::new(stream, peer);
    let park_signal = shared.parking.signal();
    match proxy_protocol::read_header(&mut client.stream, mode, so_far, park_signal).await {
        Ok(HeaderRead::Complete(addresses, early)) => {
            // Application bytes that came with the header go to the backend first.
            client.pending = early;
            if let Some((source, destination)) = addresses {
                client.addr = source;
                client.local = Some(destination);
            }
            Ok(client)
        }
        Ok(HeaderRead::Parked(so_far)) => {
            park(
                shared,
                &client.stream,
                None,
                ConnectionState::before_header(peer, so_far),
            );
            Err(Close::by_corral(CloseReason::HandedOver))
        }
        Err(why) => {
            shared.metrics.errors.proxy_protocol.inc();
            tracing::warn!(%peer, error = %why, "closing a client without a valid PROXY header");
            Err(Close {
                reason: CloseReason::ProxyProtocol,
                by: Side::Client,
            })
        }
    }
}

/// A backend connection being set up.
struct Attempt {
    upstream: TcpStream,
    guard: ActiveGuard,
    index: usize,
}

/// Step 2: connects to the chosen backend, trying each up backend at most
/// once (those in `tried` are skipped and failures are added to it).
async fn connect(
    shared: &Shared,
    snapshot: &Snapshot,
    client_key: u128,
    tried: &mut Tried,
) -> Result<Attempt, CloseReason> {
    let config = &snapshot.config;
    let pool = &snapshot.pool;
    let first_try = tried.is_empty();
    loop {
        let Some(index) =
            shared
                .dispatcher
                .pick(config.strategy, &config.sticky, pool, client_key, tried)
        else {
            if first_try && tried.is_empty() {
                shared.metrics.errors.no_backend.inc();
                return Err(CloseReason::NoBackend);
            }
            return Err(CloseReason::ConnectFailed);
        };
        let backend = &pool.backends[index];
        let instance = backend.instance();
        let attempt = Instant::now();
        match tokio::time::timeout(config.timeouts.connect, instance.reach.connect()).await {
            Ok(Ok(upstream)) => {
                backend
                    .metrics
                    .connect_duration
                    .observe(attempt.elapsed().as_secs_f64());
                let _ = upstream.set_nodelay(true);
                shared.dispatcher.placed(
                    config.strategy,
                    &config.sticky,
                    pool,
                    client_key,
                    index,
                    &shared.metrics,
                );
                return Ok(Attempt {
                    upstream,
                    guard: backend.open(instance),
                    index,
                });
            }
            Ok(Err(error)) if health::is_local_shortage(&error) => {
                // corral's shortage, not the backend's: it stays in rotation.
                shared.metrics.errors.resources.inc();
                tracing::warn!(%error, "no socket for a backend connection: corral is short of resources");
                return Err(CloseReason::Resources);
            }
            Ok(Err(error)) => {
                shared.metrics.errors.connect_failed.inc();
                tracing::warn!(backend = %backend.label, addr = %instance.reach, %error, "connect failed; trying another backend");
            }
            Err(_) => {
                shared.metrics.errors.timeout.inc();
                tracing::warn!(backend = %backend.label, addr = %instance.reach, timeout = ?config.timeouts.connect, "connect timed out; trying another backend");
            }
        }
        health::connect_failed(pool, backend, &instance);
        tried.push(index);
    }
}

/// Sends a fresh backend what must precede the pump: its PROXY header and
/// the client bytes it has not seen. False if that failed (within
/// `timeouts.connect`).
async fn introduce(
    client: &mut Client,
    upstream: &mut TcpStream,
    send_proxy: SendProxy,
    config: &Config,
) -> bool {
    if matches!(send_proxy, SendProxy::None) && client.pending.is_empty() && !client.done_sending {
        // The usual case: nothing precedes the pump, and no timer is set.
        return true;
    }
    let header = match send_proxy {
        SendProxy::None => Vec::new(),
        version => {
            let stream = &client.stream;
            // Our own address; should the kernel not tell it, the header
            // names no destination (the unspecified address).
            let unknown = SocketAddr::new(
                match client.addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
                },
                0,
            );
            let destination = *client
                .local
                .get_or_insert_with(|| stream.local_addr().unwrap_or(unknown));
            proxy_protocol::encode(version, client.addr, destination)
        }
    };
    let pending = &client.pending;
    let done_sending = client.done_sending;
    let sent = async {
        for bytes in [header.as_slice(), pending.as_slice()] {
            if !bytes.is_empty() && upstream.write_all(bytes).await.is_err() {
                return false;
            }
        }
        if done_sending {
            let _ = socket2::SockRef::from(&*upstream).shutdown(std::net::Shutdown::Write);
        }
        true
    };
    tokio::time::timeout(config.timeouts.connect, sent)
        .await
        .unwrap_or(false)
}

/// Step 3: a backend hung up before answering. Replaying is safe when it
/// never got a byte, or when it is a worker that died (it cannot have
/// finished the request and the client is owed an answer). A live backend
/// that closed on purpose may have acted on the request: no second run.
async fn replay_allowed(
    shared: &Shared,
    client: &Client,
    replay: &[u8],
    instance: &Instance,
) -> bool {
    let nothing_sent = client.pending.is_empty() && replay.is_empty();
    let within_limit = client.pending.len() + replay.len() <= pump::REPLAY_LIMIT;
    within_limit && (nothing_sent || worker_exiting(shared, instance).await)
}

/// Is `instance` a worker process that is gone or exiting now (after its
/// connection ended)? The sampler's thread looks, in a pass started after
/// this asks: this thread touches no file.
async fn worker_exiting(shared: &Shared, instance: &Instance) -> bool {
    match instance.pid {
        Some(pid) => shared
            .sampler
            .taken_after(Instant::now())
            .await
            .is_exiting(pid),
        None => false,
    }
}

/// Step 4: the metrics of one backend connection, however it ended.
fn account(shared: &Shared, client: &Client, backend: &Backend, outcome: &pump::Pumped) {
    // The pump counted bytes as they moved; what this backend was handed
    // before the pump (bytes after a PROXY header, a replay) counts too.
    backend
        .metrics
        .bytes_received
        .inc_by(client.pending.len() as u64);
    if outcome.spliced {
        shared.metrics.spliced.inc();
    }
    if outcome.from_backend > 0 {
        backend.answered();
    }
}

/// Step 5: how a pumped connection closed, with the passive check of a
/// first-byte timeout.
fn close_of(
    shared: &Shared,
    snapshot: &Snapshot,
    backend: &Backend,
    instance: &Arc<Instance>,
    end: Stop,
    by: Side,
) -> Close {
    if end == Stop::FirstByteTimeout {
        let config = &snapshot.config;
        if let Some(limit) = config.timeouts.first_byte {
            health::first_byte_timed_out(&snapshot.pool, backend, instance, &config.health, limit);
        }
    }
    Close {
        reason: close_reason(shared, end),
        by,
    }
}

/// The close reason of a pump's end, with its timeouts counted.
fn close_reason(shared: &Shared, end: Stop) -> CloseReason {
    match end {
        Stop::Eof => CloseReason::Eof,
        Stop::IdleTimeout => {
            shared.metrics.errors.timeout.inc();
            CloseReason::IdleTimeout
        }
        Stop::FirstByteTimeout => {
            shared.metrics.errors.timeout.inc();
            CloseReason::FirstByteTimeout
        }
        Stop::Reset => CloseReason::Reset,
        Stop::Cut => CloseReason::Cut,
        Stop::Parked(_) => CloseReason::HandedOver,
        Stop::BackendGaveUp { .. } | Stop::Detached { .. } => CloseReason::BackendClosed,
    }
}

/// The connection's log line; a relayed one says why it was relayed.
fn log_closed(
    config: &Config,
    client: SocketAddr,
    backend: &str,
    (bytes_in, bytes_out): (u64, u64),
    started: Instant,
    closed: Close,
    relayed: Option<&str>,
) {
    if config.log.connections {
        // `relayed` is left out of the line when there is none.
        tracing::info!(
            target: "corral::connection",
            %client,
            backend,
            bytes_in,
            bytes_out,
            duration_ms = started.elapsed().as_millis() as u64,
            end = closed.reason.as_str(),
            closed_by = closed.by.as_str(),
            relayed,
            "connection closed"
        );
    }
}

/// Serves a connection an earlier image of corral parked (`corral
/// upgrade`): its two sockets are pumped on from where they were, to the
/// same backend (a client parked before its PROXY header or between two
/// stateless requests has no backend yet), and it ends like any other (or
/// parks again).
pub async fn resume(shared: Arc<Shared>, resumed: Resumed) {
    let started = Instant::now();
    let snapshot = shared.snapshot();
    let Resumed {
        mut state,
        client,
        backend,
    } = resumed;
    let (Ok(stream), Ok(upstream)) = (stream_of(client), backend.map(stream_of).transpose()) else {
        tracing::warn!(client = %state.client_addr, "upgrade: cannot take over a parked connection's sockets; it is closed");
        return;
    };
    if let Some(relay) = state.relay.take() {
        match upstream {
            Some(upstream) => {
                resume_relayed(&shared, stream, upstream, state, relay, started).await
            }
            None => {
                tracing::warn!(client = %state.client_addr, "upgrade: a parked relayed client came without its backend's socket; it is closed")
            }
        }
        return;
    }
    if let Some(so_far) = state.proxy_header.take() {
        resume_before_header(
            &shared,
            snapshot,
            stream,
            state.client_addr,
            so_far,
            started,
        )
        .await;
        return;
    }
    let mut client = Client::new(stream, state.client_addr);
    client.local = state.client_local;
    // Counted in the per-client table again (its entries came with the
    // handover, without their connections); admitted once already, so no
    // limit applies.
    let _admitted = shared
        .clients
        .readmit(client.addr.ip(), &snapshot.config.clients);
    match upstream {
        Some(upstream) => resume_pumped(&shared, snapshot, client, upstream, state, started).await,
        None => resume_between_requests(&shared, snapshot, client, state, started).await,
    }
}

/// A connection parked with its backend: pumped on to the same backend,
/// the bytes read and not written first (a stateless one with its HTTP/1.x
/// view), then replayed, carried on or closed as in [`relay`].
async fn resume_pumped(
    shared: &Shared,
    mut snapshot: Arc<Snapshot>,
    mut client: Client,
    mut upstream: TcpStream,
    mut state: ConnectionState,
    started: Instant,
) {
    let Some(backend) = snapshot
        .pool
        .backends
        .iter()
        .find(|b| b.key == state.backend_key)
        .cloned()
    else {
        tracing::warn!(client = %state.client_addr, "upgrade: a parked connection's backend is gone; it is closed");
        return;
    };
    let guard = backend.open(backend.instance());
    let instance = Arc::clone(&guard.instance);
    let mut exchange = state.exchange.take();
    let config = &snapshot.config;
    let stay = || backend.is_up() && !instance.is_retired();
    let mut options = pump::Options::whole(
        &config.timeouts,
        config.runtime.splice,
        Some((&backend.metrics.bytes_received, &backend.metrics.bytes_sent)),
        shared.cut_signal(),
        shared.parking.signal(),
    );
    options.already_sent = state.awaiting_answer();
    options.unsent = state.take_unsent();
    options.stateless = exchange.as_deref_mut().map(|exchange| pump::Stateless {
        exchange,
        stay: &stay,
        leave: shared.stop_signal(),
    });
    let mut pumped = pump::pump(&mut client.stream, &mut upstream, options).await;
    account(shared, &client, &backend, &pumped);
    let mut trail = Trail {
        bytes: (
            state.bytes.0 + pumped.from_client,
            state.bytes.1 + pumped.from_backend,
        ),
        last: Some(Arc::clone(&backend)),
    };
    if let Stop::Parked(unsent) = &mut pumped.stop {
        let again = ConnectionState::new(
            client.id(),
            backend.key,
            trail.bytes,
            std::mem::take(&mut **unsent),
        );
        park_pumped(
            shared,
            &client.stream,
            &upstream,
            again,
            exchange.as_deref_mut(),
        );
    }
    let then = after_pump(
        shared,
        &snapshot,
        &mut client,
        exchange.as_deref(),
        &backend,
        &instance,
        pumped,
    )
    .await;
    drop((guard, upstream));
    match then {
        Then::Close(close) => finish(&snapshot.config, client.addr, &trail, started, close),
        Then::Replay | Then::CarryOn(_) => {
            if matches!(then, Then::CarryOn(_)) {
                snapshot = shared.snapshot();
            }
            relay_to_the_end(
                shared,
                &mut snapshot,
                &mut client,
                &mut trail,
                started,
                exchange,
            )
            .await;
        }
    }
}

/// A client parked before its PROXY header was complete (it has no
/// backend yet): the rest of the header is read, then it is served as in
/// [`serve`].
async fn resume_before_header(
    shared: &Shared,
    mut snapshot: Arc<Snapshot>,
    stream: TcpStream,
    peer: SocketAddr,
    so_far: Vec<u8>,
    started: Instant,
) {
    let mode = snapshot.config.listener.proxy_protocol;
    let mut client = match read_proxy_header(shared, mode, stream, peer, so_far).await {
        Ok(client) => client,
        Err(close) => {
            finish(&snapshot.config, peer, &Trail::default(), started, close);
            return;
        }
    };
    let Some(_admitted) = admit(shared, &snapshot, &client) else {
        return;
    };
    let mut trail = Trail {
        bytes: (client.pending.len() as u64, 0),
        last: None,
    };
    relay_to_the_end(
        shared,
        &mut snapshot,
        &mut client,
        &mut trail,
        started,
        None,
    )
    .await;
}

/// A stateless connection parked between two requests: the end of the
/// last answer is written, and the client's next request goes to whichever
/// backend is picked then, as in [`serve`].
async fn resume_between_requests(
    shared: &Shared,
    mut snapshot: Arc<Snapshot>,
    mut client: Client,
    mut state: ConnectionState,
    started: Instant,
) {
    let unsent = state.take_unsent();
    let mut trail = Trail {
        bytes: state.bytes,
        last: None,
    };
    let idle = snapshot.config.timeouts.idle;
    let written = tokio::time::timeout(idle, client.stream.write_all(&unsent.to_client)).await;
    if !matches!(written, Ok(Ok(()))) {
        let close = Close {
            reason: CloseReason::Reset,
            by: Side::Client,
        };
        finish(&snapshot.config, client.addr, &trail, started, close);
        return;
    }
    client.pending = unsent.to_backend;
    if client.pending.is_empty() {
        if let Err(close) = next_request(&client, shared).await {
            finish(&snapshot.config, client.addr, &trail, started, close);
            return;
        }
    }
    relay_to_the_end(
        shared,
        &mut snapshot,
        &mut client,
        &mut trail,
        started,
        None,
    )
    .await;
}

/// Leaves a parked connection's sockets for the next image; one that
/// cannot be kept (no descriptor left) is closed.
fn park(shared: &Shared, client: &TcpStream, backend: Option<&TcpStream>, state: ConnectionState) {
    let client_addr = state.client_addr;
    if let Err(error) = shared.parking.park(client, backend, state) {
        tracing::warn!(client = %client_addr, %error, "upgrade: cannot park the connection; it is closed");
    }
}

/// Leaves a pumped connection's sockets for the next image. A stateless
/// one (`exchange`) between two requests parks without its backend: the
/// next request goes to whichever backend is picked. With a request in
/// flight, it parks with its backend and its HTTP/1.x view, to move on
/// once that request is answered.
fn park_pumped(
    shared: &Shared,
    client: &TcpStream,
    upstream: &TcpStream,
    state: ConnectionState,
    exchange: Option<&mut Exchange>,
) {
    match exchange {
        Some(exchange) if exchange.is_idle() => park(shared, client, None, state),
        Some(exchange) => {
            let view = Box::new(std::mem::take(exchange));
            park(
                shared,
                client,
                Some(upstream),
                state.with_exchange(Some(view)),
            );
        }
        None => park(shared, client, Some(upstream), state),
    }
}

/// A tokio stream on a socket taken over from an earlier image.
fn stream_of(fd: std::os::fd::OwnedFd) -> std::io::Result<TcpStream> {
    let stream = std::net::TcpStream::from(fd);
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

/// Serves a client through `relay.target` until either side closes, a
/// timeout, or corral cuts it; counted, and logged as any connection.
pub async fn serve_relayed(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, relay: Relay) {
    let started = Instant::now();
    let config = shared.config();
    let _ = stream.set_nodelay(true);
    let connecting = tokio::time::timeout(config.timeouts.connect, connect_from(&relay));
    let (closed, bytes) = match connecting.await {
        Ok(Ok(upstream)) => {
            pump_relayed(&shared, &config, stream, upstream, peer, &relay, None).await
        }
        Ok(Err(error)) => {
            let reason = if health::is_local_shortage(&error) {
                shared.metrics.errors.resources.inc();
                CloseReason::Resources
            } else {
                shared.metrics.errors.connect_failed.inc();
                CloseReason::ConnectFailed
            };
            tracing::warn!(%error, target = %relay.target, "cannot relay a client: {}", relay.why);
            (Close::by_corral(reason), (0, 0))
        }
        Err(_) => {
            shared.metrics.errors.timeout.inc();
            tracing::warn!(target = %relay.target, timeout = ?config.timeouts.connect, "relaying a client timed out connecting: {}", relay.why);
            (Close::by_corral(CloseReason::ConnectFailed), (0, 0))
        }
    };
    let backend = relay.backend.as_deref().unwrap_or("");
    log_closed(
        &config,
        peer,
        backend,
        bytes,
        started,
        closed,
        Some(&relay.why),
    );
}

/// A relayed client an earlier image parked (`corral upgrade`): pumped on
/// to the same address, the bytes read and not written first.
async fn resume_relayed(
    shared: &Shared,
    stream: TcpStream,
    upstream: TcpStream,
    state: ConnectionState,
    relay: Relay,
    started: Instant,
) {
    let config = shared.config();
    let peer = state.client_addr;
    let (closed, bytes) =
        pump_relayed(shared, &config, stream, upstream, peer, &relay, Some(state)).await;
    let backend = relay.backend.as_deref().unwrap_or("");
    log_closed(
        &config,
        peer,
        backend,
        bytes,
        started,
        closed,
        Some(&relay.why),
    );
}

/// The pump of a relayed client (`carried`: where an earlier image's pump
/// had got); an upgrade meanwhile parks it with its relay.
async fn pump_relayed(
    shared: &Shared,
    config: &Config,
    mut stream: TcpStream,
    mut upstream: TcpStream,
    peer: SocketAddr,
    relay: &Relay,
    carried: Option<ConnectionState>,
) -> (Close, (u64, u64)) {
    let mut options = pump::Options::whole(
        &config.timeouts,
        config.runtime.splice,
        None,
        shared.cut_signal(),
        shared.parking.signal(),
    );
    let mut before = (0, 0);
    if let Some(mut state) = carried {
        options.unsent = state.take_unsent();
        before = state.bytes;
    }
    let mut outcome = pump::pump(&mut stream, &mut upstream, options).await;
    if outcome.spliced {
        shared.metrics.spliced.inc();
    }
    let bytes = (
        before.0 + outcome.from_client,
        before.1 + outcome.from_backend,
    );
    if let Stop::Parked(unsent) = &mut outcome.stop {
        let state = ConnectionState::new((peer, None), 0, bytes, std::mem::take(&mut **unsent));
        park(
            shared,
            &stream,
            Some(&upstream),
            state.with_relay(relay.clone()),
        );
    }
    let closed = Close {
        reason: close_reason(shared, outcome.stop),
        by: outcome.by,
    };
    (closed, bytes)
}

/// A connection to `relay.target` from `relay.from`.
async fn connect_from(relay: &Relay) -> std::io::Result<TcpStream> {
    let socket = match relay.target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(from) = relay.from {
        socket.bind(SocketAddr::new(from.into(), 0))?;
    }
    let upstream = socket.connect(relay.target).await?;
    let _ = upstream.set_nodelay(true);
    Ok(upstream)
}

/// The front end's side of fd mode's rescues: steering takes clients off a
/// slot out of rotation and hands them here, to be served as any proxied
/// connection. (Implemented here, not in `shared`, so that `shared` does
/// not import the data path.)
impl crate::steering::Host for Shared {
    fn snapshot(&self) -> Arc<Snapshot> {
        Shared::snapshot(self)
    }

    fn accepting_stopped(&self) -> WaitForCancellationFuture<'_> {
        Shared::accepting_stopped(self)
    }

    fn connections(&self) -> &TaskTracker {
        Shared::connections(self)
    }

    fn sampler(&self) -> &crate::sampler::Sampler {
        &self.sampler
    }

    fn count_rescued(&self) {
        self.metrics.rescued.inc();
    }

    fn serve_rescued(
        self: Arc<Self>,
        client: TcpStream,
        peer: SocketAddr,
        relay: Relay,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(serve_relayed(self, client, peer, relay))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::net::{TcpListener, TcpStream};

    use super::pump;
    use crate::shared::Shared;

    /// Every open connection is one of these futures, held for its whole
    /// life: their size is most of an idle connection's memory (about
    /// 1.5 KiB of the 2.5 to 3 KiB `benches/compare.py --idle` measures).
    /// A change that grows them past these bounds should say why. (The
    /// pump's went from 640 to 704: its two signal watches keep the waker
    /// they registered, 32 bytes, and save four shared locks a poll.)
    #[tokio::test]
    async fn a_connections_futures_stay_small() {
        let shared: Arc<Shared> =
            Shared::for_test("[[backends]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pair = || async {
            let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
            (a.unwrap(), b.unwrap().0)
        };
        let (client, _far) = pair().await;
        let serving = super::serve(Arc::clone(&shared), client, addr);
        assert!(
            std::mem::size_of_val(&serving) <= 1536,
            "serve: {} bytes",
            std::mem::size_of_val(&serving)
        );
        let (mut a, mut b) = pair().await;
        let cut = crate::signal::Signal::default();
        let timeouts = shared.config().timeouts.clone();
        let options = pump::Options::whole(&timeouts, false, None, &cut, &cut);
        let pumping = pump::pump(&mut a, &mut b, options);
        assert!(
            std::mem::size_of_val(&pumping) <= 704,
            "pump: {} bytes",
            std::mem::size_of_val(&pumping)
        );
    }
}
