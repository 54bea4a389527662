//! Active health checks (TCP connect or HTTP GET) with rise/fall, and the
//! passive check: a failed connect from the proxy takes a backend out of
//! rotation at once. A backend that is down keeps being checked, and comes
//! back after `rise` good checks in a row.
//!
//! Workers that are starting, draining or stopped belong to the supervisor
//! and are not checked; a worker that runs but fails its checks goes down.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::config::{HealthConfig, HealthKind};
use crate::pool::{Backend, Instance, Kind, Pool, State};
use crate::shared::Shared;

/// Runs checks every `health.interval` over the current pool until cancelled.
pub async fn run(shared: Arc<Shared>) {
    loop {
        let config = shared.config.load_full();
        let interval = config.health.interval;
        let pool = shared.pool.load_full();
        let mut checks = JoinSet::new();
        for backend in pool.backends.iter().filter(|b| should_check(b)) {
            let backend = Arc::clone(backend);
            let health = config.health.clone();
            checks.spawn(async move {
                let passed = check(&backend, &health).await;
                record(&backend, passed, &health);
            });
        }
        tokio::select! {
            _ = async { while checks.join_next().await.is_some() {} } => {}
            _ = shared.stop_accepting.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shared.stop_accepting.cancelled() => return,
        }
    }
}

fn should_check(backend: &Backend) -> bool {
    backend.kind == Kind::Static || backend.lifecycle() == State::Up
}

/// One check of one backend; true when it passed.
pub async fn check(backend: &Backend, health: &HealthConfig) -> bool {
    probe(backend.instance().addr, health).await
}

/// One check of an address (also a new worker's readiness test).
pub async fn probe(addr: SocketAddr, health: &HealthConfig) -> bool {
    let attempt = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        match health.kind {
            HealthKind::Tcp => Some(true),
            HealthKind::Http => Some(http_ok(stream, &addr.to_string(), &health.path).await),
        }
    };
    matches!(
        tokio::time::timeout(health.timeout, attempt).await,
        Ok(Some(true))
    )
}

/// GETs `path` over `stream`; true on a 2xx answer.
async fn http_ok(stream: TcpStream, host: &str, path: &str) -> bool {
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
    else {
        return false;
    };
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "corral-health-check")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::new());
    let passed = match request {
        Ok(request) => sender
            .send_request(request)
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false),
        Err(_) => false,
    };
    driver.abort();
    passed
}

/// Applies one result with rise/fall; `streak` counts the results in a row
/// that disagree with the backend's current health.
pub fn record(backend: &Backend, passed: bool, health: &HealthConfig) {
    if passed {
        backend.metrics.health_success.inc();
    } else {
        backend.metrics.health_failure.inc();
    }
    if passed == backend.is_healthy() {
        backend.streak.store(0, Ordering::Relaxed);
        return;
    }
    let streak = backend.streak.fetch_add(1, Ordering::Relaxed) + 1;
    let needed = if passed { health.rise } else { health.fall };
    if streak >= needed {
        backend.streak.store(0, Ordering::Relaxed);
        if backend.set_healthy(passed) {
            if passed {
                tracing::info!(backend = %backend.label, checks = streak, "backend is up");
            } else {
                tracing::warn!(backend = %backend.label, checks = streak, "backend is down: health checks failed");
            }
        }
    }
}

/// The passive check: the proxy could not connect to `instance`, so the
/// backend leaves rotation now instead of at the next interval. Not when the
/// instance has been replaced meanwhile (a rolling restart), and not when it
/// is the last backend up: a single refused connect (a full accept queue)
/// must not turn every client away until `rise` checks pass; its health
/// checks decide.
pub fn connect_failed(pool: &Pool, backend: &Backend, instance: &Arc<Instance>) {
    if !Arc::ptr_eq(&backend.instance(), instance) {
        return;
    }
    let others_up = pool
        .backends
        .iter()
        .any(|b| !std::ptr::eq(b.as_ref(), backend) && b.is_up());
    if !others_up {
        return;
    }
    backend.streak.store(0, Ordering::Relaxed);
    if backend.set_healthy(false) {
        tracing::warn!(backend = %backend.label, "backend is down: connect failed");
    }
}
