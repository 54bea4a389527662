//! One client connection, from accept to close: choose a backend, connect
//! (moving on to the next backend if that fails), pump bytes, account for
//! them, and log how it ended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use crate::dispatch::Tried;
use crate::health;
use crate::pool::{ActiveGuard, Pool};
use crate::pump::{self, End};
use crate::shared::Shared;

/// Serves one accepted client until it closes or corral cuts it.
pub async fn serve(shared: Arc<Shared>, mut client: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let _ = client.set_nodelay(true);
    let config = shared.config.load_full();
    let pool = shared.pool.load_full();
    let client_key = shared.dispatcher.client_key(peer.ip());

    let (mut upstream, guard) = match connect(&shared, &pool, client_key, &config).await {
        Ok(connected) => connected,
        Err(end) => {
            if end == Unserved::NoBackend {
                shared.metrics.errors.no_backend.inc();
            }
            if config.log.connections {
            tracing::info!(
                target: "corral::connection",
                client = %peer,
                backend = "",
                bytes_in = 0u64,
                bytes_out = 0u64,
                duration_ms = started.elapsed().as_millis() as u64,
                    end = end.as_str(),
                    "connection closed"
                );
            }
            return;
        }
    };
    let backend = &guard.backend;

    let outcome = tokio::select! {
        outcome = pump::pump(&mut client, &mut upstream, config.timeouts.idle) => outcome,
        _ = shared.cut_connections.cancelled() => pump::Outcome {
            from_client: 0,
            from_backend: 0,
            end: End::Reset,
        },
    };
    backend.metrics.bytes_received.inc_by(outcome.from_client);
    backend.metrics.bytes_sent.inc_by(outcome.from_backend);
    backend
        .metrics
        .connection_duration
        .observe(started.elapsed().as_secs_f64());
    if outcome.end == End::IdleTimeout {
        shared.metrics.errors.timeout.inc();
    }
    if config.log.connections {
        tracing::info!(
            target: "corral::connection",
            client = %peer,
            backend = %backend.label,
            bytes_in = outcome.from_client,
            bytes_out = outcome.from_backend,
            duration_ms = started.elapsed().as_millis() as u64,
            end = outcome.end.as_str(),
            "connection closed"
        );
    }
}

/// Why a client could not be given a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unserved {
    /// No backend was up to begin with.
    NoBackend,
    /// Every backend that was up refused or timed out.
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

/// Connects to the chosen backend, trying each up backend at most once.
async fn connect(
    shared: &Shared,
    pool: &Arc<Pool>,
    client_key: u128,
    config: &crate::config::Config,
) -> Result<(TcpStream, ActiveGuard), Unserved> {
    let mut tried = Tried::default();
    let mut attempts = 0;
    loop {
        let Some(index) = shared
            .dispatcher
            .pick(config.strategy, pool, client_key, &tried)
        else {
            return Err(if attempts == 0 {
                Unserved::NoBackend
            } else {
                Unserved::ConnectFailed
            });
        };
        attempts += 1;
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
                return Ok((stream, backend.open(instance)));
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
        health::connect_failed(backend);
        tried.push(index);
    }
}
