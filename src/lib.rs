//! corral: a Layer-4 TCP load balancer whose master process also spawns and
//! supervises the application's worker processes.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, raw then validated, errors with line and key.
//! - [`listener`]: front-end sockets and the accept loop with its limit.
//! - [`privileges`]: dropping root after binding.
//! - [`proxy`]: one client connection: pick, connect with retry, pump, account.
//! - [`proxy_protocol`]: PROXY protocol v1/v2 headers, read and written.
//! - [`pump`]: moving bytes both ways with half-close and an idle timeout.
//! - [`splice`]: splice(2) through a pipe for bulk transfers.
//! - [`dispatch`]: round-robin, least-connections, sticky table and ring.
//! - [`pool`]: every backend's state and counters, swapped on reload.
//! - [`supervisor`]: worker slots: spawn, readiness, backoff, rolling restart.
//! - [`health`]: active checks with rise/fall, and the passive check.
//! - [`admin`]: the admin HTTP server.
//! - [`metrics`]: every metric, defined and registered in one place.
//! - [`notify`]: systemd readiness notifications.
//! - [`control`]: signals and reload.
//! - [`demo_worker`]: the built-in demo backend.

pub mod admin;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo_worker;
pub mod dispatch;
pub mod health;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pool;
pub mod privileges;
pub mod proxy;
pub mod proxy_protocol;
pub mod pump;
pub mod shared;
pub mod splice;
pub mod supervisor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use config::Config;
use control::Source;
use pool::{Kind, Pool};
use shared::Shared;
use supervisor::spawn::Spawner;
use supervisor::Supervisor;

/// A failure that stops corral at run time (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("cannot bind the {what} to {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: std::io::Error,
    },
}

/// Runs corral until a graceful stop completes.
pub fn run(config: Config, source: Source) -> Result<(), Fatal> {
    logging::init(&config.log);
    // The control plane (admin, health checks, supervisor, signals) runs on
    // this thread; the proxy threads have runtimes of their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Fatal::Io {
            context: "cannot start the runtime",
            source,
        })?;
    runtime.block_on(serve(config, source))
}

async fn serve(config: Config, source: Source) -> Result<(), Fatal> {
    // Bind everything first: if an address is taken nothing is started.
    let front = listener::bind_all(
        &config.listener.binds,
        config.listener.backlog,
        config.runtime.threads,
    )
    .map_err(|(addr, source)| Fatal::Bind {
        what: "front end",
        addr,
        source,
    })?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin.bind)
        .await
        .map_err(|source| Fatal::Bind {
            what: "admin port",
            addr: config.admin.bind,
            source,
        })?;
    let signals = control::Signals::install().map_err(|source| Fatal::Io {
        context: "cannot install signal handlers",
        source,
    })?;
    if let Some(who) = config
        .runtime
        .drop_to
        .as_ref()
        .filter(|_| nix::unistd::geteuid().is_root())
    {
        privileges::drop_to(who).map_err(|source| Fatal::Io {
            context: "cannot drop privileges",
            source,
        })?;
        tracing::info!(uid = ?who.uid, gid = who.gid, "dropped privileges");
    }
    let spawner = Spawner::start().map_err(|source| Fatal::Io {
        context: "cannot start the worker spawner thread",
        source,
    })?;

    let shared = Shared::new(config.clone());
    shared.pool.store(Arc::new(Pool::assemble(
        &config,
        &shared.metrics,
        &shared.pool.load(),
    )));
    shared.set_bound();
    tracing::info!(
        front_end = ?config.listener.binds,
        admin = %config.admin.bind,
        strategy = config.strategy.as_str(),
        version = env!("CARGO_PKG_VERSION"),
        "corral started"
    );

    let (control_tx, control_rx) = mpsc::channel(8);
    tokio::spawn(admin::serve(
        Arc::clone(&shared),
        admin_listener,
        control_tx,
    ));
    tokio::spawn(health::run(Arc::clone(&shared)));
    tokio::spawn(sweep_sticky(Arc::clone(&shared)));

    let supervisor = Supervisor::new(Arc::clone(&shared), spawner);
    if let Some(workers) = &config.workers {
        let pool = shared.pool.load_full();
        let backends: Vec<_> = pool
            .backends
            .iter()
            .filter(|b| matches!(b.kind, Kind::Worker(_)))
            .cloned()
            .collect();
        supervisor
            .start_slots(&Arc::new(workers.clone()), &backends)
            .await;
        // Hold the first clients in the backlog until the workers are ready
        // (or ready_timeout passes), rather than turning them away, or
        // placing sticky clients on whichever worker happened to boot first.
        let _ = tokio::time::timeout(workers.ready_timeout, async {
            while backends.iter().any(|b| !b.is_up()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    let proxies_stop = CancellationToken::new();
    let proxies =
        listener::start_threads(&shared, front, proxies_stop.clone()).map_err(|source| {
            Fatal::Io {
                context: "cannot start the proxy threads",
                source,
            }
        })?;

    notify::ready();
    control::run(
        Arc::clone(&shared),
        Arc::clone(&supervisor),
        source,
        signals,
        control_rx,
    )
    .await;
    drain(&shared).await;
    proxies_stop.cancel();
    supervisor.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || {
        for proxy in proxies {
            let _ = proxy.join();
        }
    })
    .await;
    tracing::info!("corral stopped");
    Ok(())
}

/// The graceful stop: no new clients, `/readyz` 503, open connections get
/// up to `timeouts.drain` (a second SIGTERM or SIGINT cuts them at once).
async fn drain(shared: &Arc<Shared>) {
    notify::stopping();
    shared.set_draining();
    shared.stop_accepting.cancel();
    shared.connections.close();
    let limit = shared.config.load().timeouts.drain;
    let open = shared.connections.len();
    if open > 0 {
        tracing::info!(open, limit = ?limit, "draining open connections");
    }
    let second_signal = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(limit, shared.connections.wait()) => {}
        _ = second_signal => tracing::warn!("second stop signal: closing open connections now"),
    }
    if !shared.connections.is_empty() {
        tracing::warn!(
            open = shared.connections.len(),
            "closing connections still open"
        );
        shared.cut_connections.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), shared.connections.wait()).await;
    }
}

/// Expires sticky entries and enforces `max_entries`, off the proxy threads.
async fn sweep_sticky(shared: Arc<Shared>) {
    loop {
        let ttl = shared.config.load().sticky.ttl;
        let period = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shared.dispatcher.sticky.over_limit.notified() => {}
        }
        let table = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || table.dispatcher.sticky.sweep()).await;
        shared
            .metrics
            .sticky_entries
            .set(shared.dispatcher.sticky.len() as i64);
        // At most ten passes a second, however fast new clients arrive.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
