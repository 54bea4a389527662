//! Active health checks (TCP connect or HTTP GET) with rise/fall, and the
//! passive checks the data path reports (a refused connect, first-byte
//! timeouts). A backend that is down keeps being checked, and comes back
//! after `rise` good checks in a row.
//!
//! A worker's TCP check also asks the kernel whether the worker took the
//! check's connection off its accept queue: a stopped or deadlocked process
//! still completes handshakes (the kernel does that), so a plain connect
//! would pass. A local shortage (no file descriptor for the check's socket)
//! says nothing about the backend: such a check is skipped, not failed.
//!
//! What is probed is the instance's [`Reach`] ([`probe_reach`]): a proxied
//! worker or a static backend at its own address ([`probe`]); a handed
//! worker (`workers.listen = "fd"`), which has no address of its own,
//! through the front end ([`handed`]: from the slot's probe address, which
//! the steering program sends to that slot's socket; it passes only when a
//! process of that worker's own tree accepted it).
//!
//! Workers that are starting, draining or stopped belong to the supervisor
//! and are not checked; a worker that runs but fails its checks goes down.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

mod accept_queue;
mod handed;

use crate::config::{HealthConfig, HealthKind};
use crate::pool::{Backend, DownReason, HealthChange, Instance, Kind, Pool, Reach};
use crate::sampler::Sampler;
use crate::shared::Shared;
use handed::probe_handed;

/// Why one check failed, for the log (as HAProxy reports it).
#[derive(Debug)]
pub enum CheckFailure {
    /// The connect failed (refused, unreachable, reset).
    Connect(io::Error),
    /// No answer within `health.timeout`.
    Timeout,
    /// The HTTP answer was not a 2xx.
    Status(u16),
    /// The HTTP exchange failed.
    Http(String),
    /// The connection was completed by the kernel but the worker did not
    /// take it off its accept queue within `health.timeout`.
    NotAccepted,
    /// Handed mode: another process sharing the slot's socket (the one being
    /// replaced), or corral emptying the queue, took the check's connection.
    TakenByAnother,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckFailure::Connect(e) => write!(f, "connect failed: {e}"),
            CheckFailure::Timeout => f.write_str("timed out"),
            CheckFailure::Status(code) => write!(f, "status {code}"),
            CheckFailure::Http(e) => write!(f, "HTTP error: {e}"),
            CheckFailure::NotAccepted => f.write_str(
                "the process does not accept connections (its accept queue is not drained)",
            ),
            CheckFailure::TakenByAnother => {
                f.write_str("the check's connection was accepted by another process")
            }
        }
    }
}

/// The result of one check.
#[derive(Debug)]
pub enum Verdict {
    Passed,
    Failed(CheckFailure),
    /// corral could not run the check (out of file descriptors or memory):
    /// nothing is learnt about the backend.
    Skipped(io::Error),
}

/// Runs checks every `health.interval` over the current pool until the
/// front end stops. A round starts an interval after the previous one
/// started (not after it ended), so `fall` failures take `interval × fall`
/// even when each check waits out its `health.timeout`.
pub async fn run(shared: Arc<Shared>) {
    check_in_rounds(&shared, |backend, health, sampler| async move {
        check(&backend, &health, &sampler).await
    })
    .await;
}

/// The rounds of [`run`], each backend's check made by `check` (given the
/// backend, `[health]` and the sampler): its verdicts counted towards
/// `rise` and `fall`, a round every `health.interval` of the snapshot in
/// force, until the front end stops.
async fn check_in_rounds<C, F>(shared: &Shared, check: C)
where
    C: Fn(Arc<Backend>, HealthConfig, Sampler) -> F,
    F: Future<Output = Verdict> + Send + 'static,
{
    loop {
        let round = tokio::time::Instant::now();
        let snapshot = shared.snapshot();
        let health = snapshot.config.health.clone();
        let mut checks = JoinSet::new();
        for backend in snapshot.pool.backends.iter().filter(|b| should_check(b)) {
            let checking = check(Arc::clone(backend), health.clone(), shared.sampler.clone());
            let backend = Arc::clone(backend);
            let health = health.clone();
            let metrics_errors = shared.metrics.errors.resources.clone();
            checks.spawn(async move {
                let verdict = checking.await;
                match &verdict {
                    Verdict::Skipped(error) if is_local_shortage(error) => {
                        metrics_errors.inc();
                        tracing::warn!(backend = %backend.label, %error, "health check skipped: corral is short of resources");
                    }
                    Verdict::Skipped(error) => {
                        tracing::warn!(backend = %backend.label, %error, "health check skipped");
                    }
                    _ => {}
                }
                record(&backend, verdict, &health);
            });
        }
        tokio::select! {
            _ = async { while checks.join_next().await.is_some() {} } => {}
            _ = shared.accepting_stopped() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep_until(round + health.interval) => {}
            _ = shared.accepting_stopped() => return,
        }
    }
}

fn should_check(backend: &Backend) -> bool {
    backend.kind == Kind::Static || backend.is_running()
}

/// One check of one backend.
pub async fn check(backend: &Backend, health: &HealthConfig, sampler: &Sampler) -> Verdict {
    let instance = backend.instance();
    let worker = matches!(backend.kind, Kind::Worker(_));
    probe_reach(&instance.reach, instance.tree(), worker, health, sampler).await
}

/// One probe of an instance reached by `reach` (also a new worker's
/// readiness test), as its front-end mode has it: a connect to its own
/// address ([`probe`]; `local_worker` as there), or a connection through
/// the front end that a process of `tree` must accept ([`probe_handed`]).
pub async fn probe_reach(
    reach: &Reach,
    tree: Option<u32>,
    local_worker: bool,
    health: &HealthConfig,
    sampler: &Sampler,
) -> Verdict {
    match reach {
        Reach::Own(addr) => probe(*addr, health, local_worker).await,
        Reach::Handed(via) => probe_handed(*via, tree, health, sampler).await,
    }
}

/// One check of an address (also a new worker's readiness test).
/// `local_worker`: the address is a worker's listening socket on this
/// machine, so the kernel can say whether it accepts.
pub async fn probe(addr: SocketAddr, health: &HealthConfig, local_worker: bool) -> Verdict {
    let socket = match new_socket(addr) {
        Ok(socket) => socket,
        Err(error) => return Verdict::Skipped(error),
    };
    let stream = match tokio::time::timeout(health.timeout, socket.connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) if is_local_shortage(&error) => return Verdict::Skipped(error),
        Ok(Err(error)) => return Verdict::Failed(CheckFailure::Connect(error)),
        Err(_) => return Verdict::Failed(CheckFailure::Timeout),
    };
    match health.kind {
        HealthKind::Tcp if local_worker => accepted(&stream, addr, health.timeout).await,
        HealthKind::Tcp => Verdict::Passed,
        HealthKind::Http => {
            let host = addr.to_string();
            let exchange = http_ok(stream, &host, &health.path);
            tokio::time::timeout(health.timeout, exchange)
                .await
                .unwrap_or(Verdict::Failed(CheckFailure::Timeout))
        }
    }
}

pub(super) fn new_socket(addr: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
    if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
}

/// Errors that mean corral itself is short of something, not the backend.
pub fn is_local_shortage(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Waits until the worker has taken the check's connection off its accept
/// queue, for at most `limit`.
async fn accepted(stream: &TcpStream, worker: SocketAddr, limit: Duration) -> Verdict {
    let Ok(ours) = stream.local_addr() else {
        return Verdict::Passed;
    };
    let taken = async {
        let mut pause = Duration::from_millis(1);
        // `None`: the kernel cannot tell; the connect is the verdict.
        while accept_queue::accepted(worker, ours) == Some(false) {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    };
    match tokio::time::timeout(limit, taken).await {
        Ok(()) => Verdict::Passed,
        Err(_) => Verdict::Failed(CheckFailure::NotAccepted),
    }
}

/// GETs `path` over `stream`; passes on a 2xx answer.
pub(super) async fn http_ok(stream: TcpStream, host: &str, path: &str) -> Verdict {
    let (mut sender, connection) = match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
        TokioIo::new(stream),
    )
    .await
    {
        Ok(handshake) => handshake,
        Err(error) => return Verdict::Failed(CheckFailure::Http(error.to_string())),
    };
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "corral-health-check")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::new());
    let verdict = match request {
        Ok(request) => match sender.send_request(request).await {
            Ok(answer) if answer.status().is_success() => Verdict::Passed,
            Ok(answer) => Verdict::Failed(CheckFailure::Status(answer.status().as_u16())),
            Err(error) => Verdict::Failed(CheckFailure::Http(error.to_string())),
        },
        Err(error) => Verdict::Failed(CheckFailure::Http(error.to_string())),
    };
    driver.abort();
    verdict
}

/// Applies one verdict to the backend's state machine, and logs a change
/// with the reason the check failed.
pub fn record(backend: &Backend, verdict: Verdict, health: &HealthConfig) {
    let change = match &verdict {
        Verdict::Passed => {
            backend.metrics.health_success.inc();
            backend.check_passed(health.rise)
        }
        Verdict::Failed(CheckFailure::TakenByAnother) => {
            // Another process of the slot (the one a rolling restart is
            // replacing) or corral emptying the queue took it: nothing is
            // learnt about this worker.
            tracing::debug!(backend = %backend.label, "health check inconclusive: {}", CheckFailure::TakenByAnother);
            None
        }
        Verdict::Failed(why) => {
            backend.metrics.health_failure.inc();
            tracing::debug!(backend = %backend.label, reason = %why, "health check failed");
            match why {
                CheckFailure::NotAccepted => backend.stalled(health.fall),
                _ => backend.check_failed(health.fall),
            }
        }
        Verdict::Skipped(_) => None,
    };
    match (change, &verdict) {
        (Some(HealthChange::Up), _) => {
            tracing::info!(backend = %backend.label, checks = health.rise, "backend is up");
        }
        (Some(HealthChange::Down(reason)), Verdict::Failed(why)) => tracing::warn!(
            backend = %backend.label,
            checks = health.fall,
            reason = reason.as_str(),
            "backend is down: health check failed: {why}"
        ),
        _ => {}
    }
}

/// The passive check: the proxy could not connect to `instance`, so the
/// backend leaves rotation now instead of at the next interval. Not when the
/// instance has been replaced meanwhile (a rolling restart), and not when it
/// is the last backend up: a single refused connect (a full accept queue)
/// must not turn every client away until `rise` checks pass; its health
/// checks decide.
pub fn connect_failed(pool: &Pool, backend: &Backend, instance: &Arc<Instance>) {
    if !Arc::ptr_eq(&backend.instance(), instance) || !others_up(pool, backend) {
        return;
    }
    if backend.connect_failed() {
        tracing::warn!(backend = %backend.label, reason = DownReason::ConnectFailed.as_str(), "backend is down: connect failed");
    }
}

/// The passive check for silent backends (`health.observe`): `instance`
/// was sent a client's bytes and answered nothing within
/// `timeouts.first_byte`. `fall` such timeouts in a row take the backend
/// down, but passive checks never take out more than half of the pool
/// (Envoy's `max_ejection_percent`), and never the last backend up: when
/// every backend is quiet, the clients are waiting legitimately more likely
/// than every backend is broken.
pub fn first_byte_timed_out(
    pool: &Pool,
    backend: &Backend,
    instance: &Arc<Instance>,
    health: &HealthConfig,
    limit: Duration,
) {
    if !health.observe || !Arc::ptr_eq(&backend.instance(), instance) {
        return;
    }
    let may_take_out = || {
        let ejected = pool
            .backends
            .iter()
            .filter(|b| b.reason() == Some(DownReason::Timeouts))
            .count();
        (ejected + 1) * 2 <= pool.backends.len() && others_up(pool, backend)
    };
    if backend.first_byte_timed_out(health.fall, may_take_out) {
        tracing::warn!(
            backend = %backend.label,
            reason = DownReason::Timeouts.as_str(),
            timeouts = health.fall,
            first_byte = ?limit,
            "backend is down: it accepted clients and answered nothing (health.observe)"
        );
    }
}

fn others_up(pool: &Pool, backend: &Backend) -> bool {
    pool.backends
        .iter()
        .any(|b| !std::ptr::eq(b.as_ref(), backend) && b.is_up())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::time::{sleep_until, Instant};

    /// One static backend, checked every 2 s; `fall` 3, `rise` 2.
    fn shared() -> Arc<Shared> {
        Shared::for_test(
            "[[backends]]\nname = \"app\"\naddress = \"127.0.0.1:3000\"\n[health]\ninterval = \"2s\"\nfall = 3\nrise = 2\n",
        )
    }

    /// Rounds at 0, 2, 4, ... s (on the paused clock): the third failure in
    /// a row (at 4 s) takes the backend down, the second pass after it
    /// comes back (at 8 s) brings it back; a check made meanwhile does not.
    #[tokio::test(start_paused = true)]
    async fn fall_failures_take_it_down_and_rise_passes_bring_it_back() {
        let shared = shared();
        let backend = Arc::clone(&shared.snapshot().pool.backends[0]);
        let healthy = Arc::new(AtomicBool::new(false));
        let checks = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let rounds = tokio::spawn({
            let (shared, healthy, checks) = (shared.clone(), healthy.clone(), checks.clone());
            async move {
                check_in_rounds(&shared, move |_, _, _| {
                    checks.fetch_add(1, Ordering::SeqCst);
                    let passes = healthy.load(Ordering::SeqCst);
                    async move {
                        match passes {
                            true => Verdict::Passed,
                            false => Verdict::Failed(CheckFailure::Timeout),
                        }
                    }
                })
                .await
            }
        });
        let at = |millis: u64| start + Duration::from_millis(millis);
        sleep_until(at(3_900)).await;
        assert_eq!(checks.load(Ordering::SeqCst), 2);
        assert!(backend.is_up(), "two failures of three");
        sleep_until(at(4_100)).await;
        assert_eq!(checks.load(Ordering::SeqCst), 3);
        assert_eq!(backend.reason(), Some(DownReason::Checks));
        healthy.store(true, Ordering::SeqCst);
        sleep_until(at(6_100)).await;
        assert!(!backend.is_up(), "one pass of two");
        sleep_until(at(8_100)).await;
        assert!(backend.is_up(), "the second pass in a row");
        assert_eq!(checks.load(Ordering::SeqCst), 5);
        shared.stop_accepting();
        rounds.await.unwrap();
    }

    /// A pass between failures starts the count of `fall` over.
    #[tokio::test(start_paused = true)]
    async fn a_pass_between_failures_starts_the_fall_count_over() {
        let shared = shared();
        let backend = Arc::clone(&shared.snapshot().pool.backends[0]);
        let round = Arc::new(AtomicUsize::new(0));
        let rounds = tokio::spawn({
            let (shared, round) = (shared.clone(), round.clone());
            async move {
                check_in_rounds(&shared, move |_, _, _| {
                    // fail, fail, pass, fail, fail, fail
                    let n = round.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match n {
                            2 => Verdict::Passed,
                            _ => Verdict::Failed(CheckFailure::Timeout),
                        }
                    }
                })
                .await
            }
        });
        let start = Instant::now();
        sleep_until(start + Duration::from_millis(8_100)).await;
        assert_eq!(round.load(Ordering::SeqCst), 5);
        assert!(backend.is_up(), "only two failures in a row since the pass");
        sleep_until(start + Duration::from_millis(10_100)).await;
        assert_eq!(backend.reason(), Some(DownReason::Checks));
        shared.stop_accepting();
        rounds.await.unwrap();
    }
}
