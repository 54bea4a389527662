//! One client connection, from accept to close: choose a backend, connect
//! (moving on to the next backend if that fails), pump bytes, account for
//! them, and log how it ended. A backend that hangs up before answering a
//! single byte (a worker killed mid-request) costs the client nothing: what
//! the client sent is replayed on the next backend. With
//! `listener.proxy_protocol`, the client's PROXY header is read first and the
//! address it carries stands for the client everywhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::{Config, ProxyProtocolMode, SendProxy};
use crate::dispatch::Tried;
use crate::health;
use crate::pool::{ActiveGuard, Pool};
use crate::proxy_protocol;
use crate::pump::{self, End};
use crate::shared::Shared;

/// Serves one accepted client until it closes or corral cuts it.
pub async fn serve(shared: Arc<Shared>, mut client: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    // TCP_NODELAY is inherited from the listening socket.
    let config = shared.config.load_full();

    // Behind another balancer, the client is whoever its PROXY header says.
    // Application bytes that arrived with the header go to the backend first.
    let mut pending: Vec<u8> = Vec::new();
    let mut client_addr = peer;
    let mut local_addr = None;
    if config.listener.proxy_protocol != ProxyProtocolMode::None {
        match proxy_protocol::read_header(&mut client, config.listener.proxy_protocol).await {
            Ok((addresses, early)) => {
                if let Some((source, destination)) = addresses {
                    client_addr = source;
                    local_addr = Some(destination);
                }
                pending = early;
            }
            Err(why) => {
                shared.metrics.errors.proxy_protocol.inc();
                tracing::warn!(%peer, error = %why, "closing a client without a valid PROXY header");
                log_closed(&config, peer, "", 0, 0, started, "proxy_protocol");
                return;
            }
        }
    }

    let pool = shared.pool.load_full();
    let client_key = shared.dispatcher.client_key(client_addr.ip());
    let mut tried = Tried::default();
    let mut client_done = false;

    loop {
        let (mut upstream, guard, index) =
            match connect(&shared, &pool, client_key, &config, &mut tried).await {
                Ok(connected) => connected,
                Err(end) => {
                    if end == Unserved::NoBackend {
                        shared.metrics.errors.no_backend.inc();
                    }
                    let sent = pending.len() as u64;
                    log_closed(&config, client_addr, "", sent, 0, started, end.as_str());
                    return;
                }
            };
        let backend = Arc::clone(&guard.backend);
        let header = match backend.send_proxy() {
            SendProxy::None => Vec::new(),
            version => {
                let destination =
                    *local_addr.get_or_insert_with(|| client.local_addr().unwrap_or(peer));
                proxy_protocol::encode(version, client_addr, destination)
            }
        };
        let introduced = tokio::time::timeout(
            config.timeouts.connect,
            introduce(&mut upstream, &header, &pending, client_done),
        );
        if !introduced.await.unwrap_or(false) {
            tried.push(index);
            continue;
        }
        let outcome = tokio::select! {
            outcome = pump::pump(
                &mut client,
                &mut upstream,
                config.timeouts.idle,
                true,
                config.runtime.splice,
                Some((&backend.metrics.bytes_received, &backend.metrics.bytes_sent)),
            ) => outcome,
            _ = shared.cut_connections.cancelled() => pump::Outcome {
                from_client: 0,
                from_backend: 0,
                spliced: false,
                end: End::Reset,
            },
        };
        let instance = Arc::clone(&guard.instance);
        drop(guard);
        if let End::BackendGaveUp {
            replay,
            client_done: done,
        } = &outcome.end
        {
            // Replaying is safe when the backend never got a byte, or when
            // it is a worker that died (it cannot have finished the request
            // and the client is owed an answer). A live backend that closed
            // on purpose may have acted on the request: no second run.
            let nothing_sent = pending.is_empty() && replay.is_empty();
            let worker_died = instance
                .pid
                .is_some_and(crate::supervisor::spawn::is_exiting);
            let within_limit = pending.len() + replay.len() <= pump::REPLAY_LIMIT;
            if !(nothing_sent || worker_died) || !within_limit {
                log_closed(
                    &config,
                    client_addr,
                    &backend.label,
                    pending.len() as u64 + outcome.from_client,
                    0,
                    started,
                    outcome.end.as_str(),
                );
                return;
            }
            tracing::warn!(
                backend = %backend.label,
                client = %client_addr,
                bytes = pending.len() + replay.len(),
                "backend closed before answering; replaying the request on another backend"
            );
            pending.extend_from_slice(replay);
            client_done = *done;
            tried.push(index);
            continue;
        }
        // The pump counted bytes as they moved; what this backend was handed
        // before the pump (bytes after a PROXY header, a replay) counts too.
        backend.metrics.bytes_received.inc_by(pending.len() as u64);
        let from_client = pending.len() as u64 + outcome.from_client;
        backend
            .metrics
            .connection_duration
            .observe(started.elapsed().as_secs_f64());
        if outcome.end == End::IdleTimeout {
            shared.metrics.errors.timeout.inc();
        }
        if outcome.spliced {
            shared.metrics.spliced.inc();
        }
        log_closed(
            &config,
            client_addr,
            &backend.label,
            from_client,
            outcome.from_backend,
            started,
            outcome.end.as_str(),
        );
        return;
    }
}

/// Sends a fresh backend what must precede the pump: its PROXY header, and
/// the client's bytes it has not seen (those that came with the client's
/// PROXY header, or a request replayed from a backend that hung up). False
/// if that failed.
async fn introduce(
    upstream: &mut TcpStream,
    header: &[u8],
    pending: &[u8],
    client_done: bool,
) -> bool {
    for bytes in [header, pending] {
        if !bytes.is_empty() && upstream.write_all(bytes).await.is_err() {
            return false;
        }
    }
    if client_done {
        let _ = socket2::SockRef::from(&*upstream).shutdown(std::net::Shutdown::Write);
    }
    true
}

fn log_closed(
    config: &Config,
    client: SocketAddr,
    backend: &str,
    bytes_in: u64,
    bytes_out: u64,
    started: Instant,
    end: &str,
) {
    if config.log.connections {
        tracing::info!(
            target: "corral::connection",
            %client,
            backend,
            bytes_in,
            bytes_out,
            duration_ms = started.elapsed().as_millis() as u64,
            end,
            "connection closed"
        );
    }
}

/// Why a client could not be given a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unserved {
    /// No backend was up to begin with.
    NoBackend,
    /// Every backend that was up refused, timed out or hung up.
    ConnectFailed,
}

impl Unserved {
    fn as_str(self) -> &'static str {
        match self {
            Unserved::NoBackend => "no_backend",
            Unserved::ConnectFailed => "connect_failed",
        }
    }
}

/// Connects to the chosen backend, trying each up backend at most once
/// (those in `tried` are skipped and failures are added to it).
async fn connect(
    shared: &Shared,
    pool: &Arc<Pool>,
    client_key: u128,
    config: &Config,
    tried: &mut Tried,
) -> Result<(TcpStream, ActiveGuard, usize), Unserved> {
    let first_try = tried.is_empty();
    loop {
        let Some(index) = shared
            .dispatcher
            .pick(config.strategy, pool, client_key, tried)
        else {
            return Err(if first_try && tried.is_empty() {
                Unserved::NoBackend
            } else {
                Unserved::ConnectFailed
            });
        };
        let backend = &pool.backends[index];
        let instance = backend.instance();
        let attempt = Instant::now();
        match tokio::time::timeout(config.timeouts.connect, TcpStream::connect(instance.addr)).await
        {
            Ok(Ok(stream)) => {
                backend
                    .metrics
                    .connect_duration
                    .observe(attempt.elapsed().as_secs_f64());
                let _ = stream.set_nodelay(true);
                shared
                    .dispatcher
                    .placed(config.strategy, pool, client_key, index, &shared.metrics);
                return Ok((stream, backend.open(instance), index));
            }
            Ok(Err(error)) => {
                shared.metrics.errors.connect_failed.inc();
                tracing::warn!(backend = %backend.label, addr = %instance.addr, %error, "connect failed; trying another backend");
            }
            Err(_) => {
                shared.metrics.errors.timeout.inc();
                tracing::warn!(backend = %backend.label, addr = %instance.addr, timeout = ?config.timeouts.connect, "connect timed out; trying another backend");
            }
        }
        health::connect_failed(pool, backend, &instance);
        tried.push(index);
    }
}
