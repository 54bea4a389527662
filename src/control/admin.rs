//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`, `/status`,
//! `/sticky`, `/clients`, `/logs` (answered by [`super::logs`]), the
//! dashboard at `/`, and the mutations `POST /reload`,
//! `POST /workers/restart` and `POST /workers/scale?count=N`, which it
//! hands to the control loop, those on one backend by name
//! (`/workers/restart|disable|enable?name=NAME`, see [`operator`]),
//! `POST /workers/signal` and `DELETE /sticky`. [`route`] picks the
//! endpoint by method: `read` for GET, [`Change`] for POST.
//!
//! GET endpoints are open so Prometheus and probes need no credentials.
//! Mutations (POST, DELETE) need `Authorization: Bearer <token>` when
//! `admin.token_file` is set; without a token they are allowed only when the
//! admin port is bound to loopback.
//!
//! A web page in a browser cannot drive it: a mutation whose `Origin` is
//! not the admin address's own gets 403 (token or not), and on a loopback
//! bind a `Host` that is neither an IP address nor `localhost` gets 403
//! (DNS rebinding). See [`screen`].
//!
//! The port bounds what it is sent: a request head must arrive within
//! [`HEADER_READ_TIMEOUT`] and fit in [`MAX_HEAD`] (else 431), and at most
//! [`MAX_CONNECTIONS`] connections are served at once (more wait in the
//! backlog). It runs on the control-plane thread, never on a proxy thread,
//! so nothing sent here slows the front end.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::operator::{self, Action};
use super::{dashboard, Request as ControlRequest, Restart};
use crate::dispatch::{PlacedBy, Tried};
use crate::metrics::scrape;
use crate::pool::Snapshot;
use crate::pool::{BackendState, DownReason, Kind};
use crate::sampler::Sample;
use crate::shared::Shared;

/// How long a client may take to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// The largest request head the admin port reads; a larger one gets 431.
pub const MAX_HEAD: usize = 64 * 1024;

type Reply = Response<Full<Bytes>>;

/// A refusal already written as a reply (boxed: replies are large).
type Refusal = Box<Reply>;

/// Serves the admin port until the process exits.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    control: mpsc::Sender<ControlRequest>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let control = control.clone();
        let connection = Connection(stream.as_raw_fd());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let shared = Arc::clone(&shared);
                let control = control.clone();
                request.extensions_mut().insert(connection);
                async move {
                    let reply = match screen(&shared, &request) {
                        Some(refused) => refused.map(BodyExt::boxed),
                        // A streamed body (follow): its own module.
                        None if request.uri().path() == "/logs" => {
                            super::logs::answer(&shared, &request)
                        }
                        None => route(&shared, &control, request).await.map(BodyExt::boxed),
                    };
                    Ok::<_, Infallible>(reply)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// The admin connection a request came on, by descriptor: `POST /upgrade`
/// hands it to the next image, which answers on it.
#[derive(Debug, Clone, Copy)]
struct Connection(std::os::fd::RawFd);

/// Every path the admin port answers on some method: another method on
/// one of them gets 405, any other path 404. (`/logs` is answered before
/// routing.)
const PATHS: &[&str] = &[
    "/",
    "/metrics",
    "/healthz",
    "/readyz",
    "/status",
    "/workers/restart",
    "/workers/scale",
    "/workers/signal",
    "/reload",
    "/upgrade",
    "/sticky",
    "/clients",
    "/workers/disable",
    "/workers/enable",
];

/// Answers one screened request: GETs are open, mutations need
/// [`authorize`].
async fn route(
    shared: &Arc<Shared>,
    control: &mpsc::Sender<ControlRequest>,
    request: Request<Incoming>,
) -> Reply {
    let path = request.uri().path();
    let answered = match *request.method() {
        Method::GET => read(shared, &request).await,
        Method::POST => match Change::of(&request) {
            Some(change) => Some(match authorize(shared, &request) {
                Ok(()) => change.apply(shared, control, &request).await,
                Err(denied) => *denied,
            }),
            None => None,
        },
        Method::DELETE if path == "/sticky" => Some(match authorize(shared, &request) {
            Ok(()) => sticky_forget(shared, &request),
            Err(denied) => *denied,
        }),
        _ => None,
    };
    answered.unwrap_or_else(|| {
        if PATHS.contains(&path) {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        } else {
            text(StatusCode::NOT_FOUND, "not found\n")
        }
    })
}

/// The GET endpoints; `None` for a path with no GET.
async fn read(shared: &Arc<Shared>, request: &Request<Incoming>) -> Option<Reply> {
    Some(match request.uri().path() {
        "/metrics" => metrics(shared).await,
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readiness(shared),
        "/status" => json_reply(StatusCode::OK, status(shared).await),
        "/" | "/index.html" => with_type(
            Response::new(Full::new(Bytes::from_static(dashboard::PAGE.as_bytes()))),
            "text/html; charset=utf-8",
        ),
        "/sticky" => sticky_lookup(shared, request),
        "/clients" => clients(shared, request),
        _ => return None,
    })
}

/// `/readyz`: 200 while a backend is up, else 503 saying why.
fn readiness(shared: &Shared) -> Reply {
    if shared.is_ready() {
        text(StatusCode::OK, "ready\n")
    } else if shared.is_draining() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "no backend is up\n")
    }
}

/// The POST endpoints.
enum Change {
    /// `/workers/{restart,disable,enable}?name=NAME`: one backend.
    OneBackend,
    /// `/workers/restart` without a name: every worker in turn.
    RollingRestart,
    Reload,
    Scale,
    Signal,
    /// `/upgrade`: corral's own program, replaced in the same process.
    Upgrade,
}

impl Change {
    fn of(request: &Request<Incoming>) -> Option<Change> {
        let path = request.uri().path();
        Some(match path {
            "/workers/restart" | "/workers/disable" | "/workers/enable"
                if path != "/workers/restart" || query_param(request, "name").is_some() =>
            {
                Change::OneBackend
            }
            "/workers/restart" => Change::RollingRestart,
            "/reload" => Change::Reload,
            "/upgrade" => Change::Upgrade,
            "/workers/scale" => Change::Scale,
            "/workers/signal" => Change::Signal,
            _ => return None,
        })
    }

    /// Carries out an authorized change (most through the control loop).
    async fn apply(
        self,
        shared: &Arc<Shared>,
        control: &mpsc::Sender<ControlRequest>,
        request: &Request<Incoming>,
    ) -> Reply {
        match self {
            Change::OneBackend => {
                let path = request.uri().path();
                let action = Action::of_path(path).unwrap_or(Action::Restart);
                let name = query_param(request, "name");
                let (status, body) = operator::one(shared, control, action, name).await;
                json_reply(status, body)
            }
            Change::RollingRestart => rolling_restart(control).await,
            Change::Reload => reload(control).await,
            Change::Scale => match count_param(request) {
                Ok(count) => scale(control, count).await,
                Err(reply) => *reply,
            },
            Change::Signal => signal_workers(shared, request),
            Change::Upgrade => upgrade(control, request).await,
        }
    }
}

/// `POST /workers/restart`: a rolling restart of every worker.
async fn rolling_restart(control: &mpsc::Sender<ControlRequest>) -> Reply {
    let (started, answer) = oneshot::channel();
    match ask(control, ControlRequest::RollingRestart { started }, answer).await {
        Some(Restart::Started) => {
            json_reply(StatusCode::ACCEPTED, json!({"rolling_restart": "started"}))
        }
        Some(Restart::Merged) => {
            json_reply(StatusCode::ACCEPTED, json!({"rolling_restart": "merged"}))
        }
        Some(Restart::NoWorkers) => json_reply(
            StatusCode::CONFLICT,
            json!({"rolling_restart": "refused", "error": "there are no workers to restart"}),
        ),
        None => stopping(),
    }
}

/// `POST /reload`: the config file again.
async fn reload(control: &mpsc::Sender<ControlRequest>) -> Reply {
    let (done, answer) = oneshot::channel();
    match ask(control, ControlRequest::Reload { done }, answer).await {
        Some(Ok(report)) => json_reply(
            StatusCode::OK,
            json!({"reload": "applied", "report": report, "lines": report.lines()}),
        ),
        Some(Err(why)) => json_reply(
            StatusCode::BAD_REQUEST,
            json!({"reload": "refused", "error": why.to_string()}),
        ),
        None => stopping(),
    }
}

/// `POST /upgrade`: answered here only when refused (409); once the new
/// program serves, it answers on this request's connection itself.
async fn upgrade(control: &mpsc::Sender<ControlRequest>, request: &Request<Incoming>) -> Reply {
    let answer_to = request.extensions().get::<Connection>().map(|c| c.0);
    let (done, answer) = oneshot::channel();
    match ask(control, ControlRequest::Upgrade { answer_to, done }, answer).await {
        Some(refusal) => json_reply(
            StatusCode::CONFLICT,
            json!({"upgraded": false, "error": refusal.to_string()}),
        ),
        None => stopping(),
    }
}

/// `POST /workers/scale?count=N`.
async fn scale(control: &mpsc::Sender<ControlRequest>, count: usize) -> Reply {
    let (done, answer) = oneshot::channel();
    match ask(control, ControlRequest::Scale { count, done }, answer).await {
        Some(Ok(file)) => json_reply(
            StatusCode::ACCEPTED,
            json!({"scale": count, "config_file": file.map(|f| f.display().to_string())}),
        ),
        Some(Err(why)) => json_reply(
            StatusCode::BAD_REQUEST,
            json!({"scale": "refused", "error": why.to_string()}),
        ),
        None => stopping(),
    }
}

/// Sends a request to the control loop and waits for its answer; `None`
/// when corral is stopping (the loop is gone).
async fn ask<T>(
    control: &mpsc::Sender<ControlRequest>,
    request: ControlRequest,
    answer: oneshot::Receiver<T>,
) -> Option<T> {
    control.send(request).await.ok()?;
    answer.await.ok()
}

fn stopping() -> Reply {
    text(StatusCode::SERVICE_UNAVAILABLE, "corral is stopping\n")
}

/// `/metrics`: corral's own registry, then what the workers' processes cost.
async fn metrics(shared: &Arc<Shared>) -> Reply {
    shared
        .metrics
        .sticky_entries
        .set(shared.dispatcher.sticky.len() as i64);
    let dropped = crate::logging::dropped_lines();
    let counted = shared.metrics.log_lines_dropped.get();
    if dropped > counted {
        shared.metrics.log_lines_dropped.inc_by(dropped - counted);
    }
    let snapshot = shared.snapshot();
    let table = processes(shared, &snapshot).await;
    let usage: Vec<_> = snapshot
        .pool
        .worker_backends()
        .filter_map(|b| {
            let root = b.instance().tree()?;
            Some((b.label.clone(), table.tree(root)?))
        })
        .collect();
    let queues = shared.front.queue_lengths(&snapshot.pool);
    let unknown = shared.front.unknown_metrics();
    let (mut body, names) = shared.metrics.render(&usage, unknown, queues.as_deref());
    if let Some(path) = snapshot
        .config
        .workers
        .as_ref()
        .and_then(|w| w.metrics_path.as_deref())
    {
        let targets = snapshot
            .pool
            .backends
            .iter()
            .filter(|b| b.is_up())
            .filter_map(|b| match b.kind {
                Kind::Worker(id) => {
                    let instance = b.instance();
                    Some(scrape::Target {
                        label: b.label.clone(),
                        id,
                        reach: instance.reach,
                    })
                }
                Kind::Static => None,
            })
            .collect();
        let counted = Arc::clone(shared);
        let merged = shared
            .worker_metrics
            .fetch(targets, path, names, move |merged| {
                for (label, why) in &merged.failed {
                    counted.metrics.worker_scrape_failed(label);
                    tracing::debug!(backend = %label, %why, "worker metrics skipped");
                }
                for (label, skipped) in &merged.skipped {
                    counted.metrics.worker_series_skipped(label, *skipped);
                }
            })
            .await;
        body.extend_from_slice(merged.text.as_bytes());
    }
    with_type(
        Response::new(Full::new(Bytes::from(body))),
        "text/plain; version=0.0.4; charset=utf-8",
    )
}

/// The sampler's last pass over `/proc`, or the next one when a worker's
/// process started after it (so a new worker is never shown without its
/// CPU and memory). Read, never made, here: the admin port runs on the
/// control thread.
async fn processes(shared: &Shared, snapshot: &Snapshot) -> Arc<Sample> {
    let newest = snapshot
        .pool
        .worker_backends()
        .map(|b| b.instance())
        .filter(|i| i.tree().is_some())
        .map(|i| i.started)
        .max();
    match newest {
        Some(started) => shared.sampler.taken_after(started).await,
        None => shared.sampler.latest(),
    }
}

/// The `/status` document. Everything but the CPU and memory figures is
/// read first, at once; those come from the sampler (which may take a
/// pass), so the states shown are those of one moment.
async fn status(shared: &Shared) -> serde_json::Value {
    let snapshot = shared.snapshot();
    let backends: Vec<_> = snapshot
        .pool
        .backends
        .iter()
        .map(|b| {
            let instance = b.instance();
            let entry = status_entry(shared, b, &instance);
            (instance, entry)
        })
        .collect();
    let mut document = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "front_end": snapshot.config.listener.binds.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "admin": snapshot.config.admin.bind.to_string(),
        "token_required": snapshot.config.admin.token.is_some(),
        "strategy": snapshot.config.strategy.as_str(),
        "mode": shared.front.mode().as_str(),
        "sticky_entries": shared.front.sees_connections().then(|| shared.dispatcher.sticky.len()),
        "draining": shared.is_draining(),
        "backends": [],
        "intruders": shared.front.intruders(),
    });
    let table = processes(shared, &snapshot).await;
    let entries = backends
        .into_iter()
        .map(|(instance, mut entry)| {
            if entry.get("cpu_seconds").is_some() {
                let usage = instance.tree().and_then(|root| table.tree(root));
                entry["cpu_seconds"] = json!(usage.map(|u| u.cpu_seconds));
                entry["memory_bytes"] = json!(usage.map(|u| u.memory_bytes));
            }
            entry
        })
        .collect();
    document["backends"] = serde_json::Value::Array(entries);
    document
}

/// One backend's `/status` entry; a worker's `cpu_seconds` and
/// `memory_bytes` are left `null` for the caller to fill.
fn status_entry(
    shared: &Shared,
    b: &crate::pool::Backend,
    instance: &crate::pool::Instance,
) -> serde_json::Value {
    let state = b.state();
    let mut entry = json!({
        "name": b.label,
        "address": instance.reach.to_string(),
        "state": state.as_str(),
        "reason": b.reason().map(|r| r.as_str()),
        "pid": instance.pid,
        "restarts": b.restarts(),
        "active_connections": b.active(),
    });
    shared.front.add_status(b, &mut entry);
    if matches!(b.kind, Kind::Worker(_)) {
        // A crashed or stopped worker has no uptime, only a last pid (a
        // disabled one shows `disabled` though its process is down).
        let running = !matches!(state, BackendState::Stopped)
            && !matches!(b.reason(), Some(DownReason::Crashed | DownReason::NotReady));
        entry["uptime_seconds"] = json!(instance
            .pid
            .filter(|_| running)
            .map(|_| instance.started.elapsed().as_secs_f64()));
        entry["cpu_seconds"] = serde_json::Value::Null;
        entry["memory_bytes"] = serde_json::Value::Null;
        entry["status"] = json!(b.status_text().as_deref());
    }
    entry
}

/// Signals corral passes on to workers: not KILL or STOP (corral stops
/// and kills workers itself: `corral restart`, `corral scale`).
const PASSED_ON: [&str; 13] = [
    "HUP", "INT", "QUIT", "ABRT", "USR1", "USR2", "ALRM", "TERM", "CONT", "WINCH", "TTIN", "TTOU",
    "PROF",
];

/// `POST /workers/signal?name=NAME|all&signal=SIG`: the signal to the
/// named worker's process group (or every worker's), as pm2's
/// `sendSignal`; 202 with whom it reached.
fn signal_workers(shared: &Shared, request: &Request<Incoming>) -> Reply {
    let bad = |why: String| {
        json_reply(
            StatusCode::BAD_REQUEST,
            json!({"signal": "refused", "error": why}),
        )
    };
    let Some(name) = query_param(request, "name") else {
        return bad("missing ?name=NAME (a worker, such as worker-0, or all)".into());
    };
    let Some(given) = query_param(request, "signal") else {
        return bad("missing &signal=SIG (such as USR1 or HUP)".into());
    };
    let short = given.trim().to_ascii_uppercase();
    let short = short.strip_prefix("SIG").unwrap_or(&short).to_string();
    if !PASSED_ON.contains(&short.as_str()) {
        return bad(format!(
            "corral does not pass on {given}: give one of {} (KILL and STOP are corral's own: use corral restart, corral scale)",
            PASSED_ON.join(", ")
        ));
    }
    let signal: nix::sys::signal::Signal = match format!("SIG{short}").parse() {
        Ok(signal) => signal,
        Err(_) => return bad(format!("{given} is not a signal of this system")),
    };
    let snapshot = shared.snapshot();
    let targets: Vec<_> = snapshot
        .pool
        .worker_backends()
        .filter(|b| name == "all" || b.label == name)
        .collect();
    if targets.is_empty() {
        return json_reply(
            StatusCode::NOT_FOUND,
            json!({"signal": "refused", "error": format!("no worker named {name:?}: name one from corral status (worker-0, worker-1, ...) or all")}),
        );
    }
    let mut reached = Vec::new();
    for backend in targets {
        let Some(pid) = backend
            .instance()
            .pid
            .filter(|_| backend.state() != BackendState::Stopped)
        else {
            continue;
        };
        let group = nix::unistd::Pid::from_raw(pid as i32);
        if nix::sys::signal::killpg(group, signal).is_ok() {
            reached.push(backend.label.clone());
        }
    }
    tracing::info!(signal = %signal, workers = ?reached, "admin request: signal");
    json_reply(
        StatusCode::ACCEPTED,
        json!({"signal": signal.as_str(), "workers": reached}),
    )
}

/// `?count=N` of `POST /workers/scale`.
fn count_param(request: &Request<Incoming>) -> Result<usize, Refusal> {
    match query_param(request, "count")
        .as_deref()
        .map(str::parse::<usize>)
    {
        Some(Ok(count)) if count >= 1 => Ok(count),
        Some(_) => Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "count must be a whole number of at least 1\n",
        ))),
        None => Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "missing ?count=N\n",
        ))),
    }
}

/// The most rows `GET /clients` gives.
const MAX_TOP: usize = 10_000;

/// `GET /clients?top=N` (default 10): the clients holding the most
/// connections now, from the per-client table.
fn clients(shared: &Shared, request: &Request<Incoming>) -> Reply {
    let top = match query_param(request, "top")
        .as_deref()
        .map(str::parse::<usize>)
    {
        None => 10,
        Some(Ok(n)) if (1..=MAX_TOP).contains(&n) => n,
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "top must be a whole number from 1 to 10000\n",
            )
        }
    };
    let config = shared.config();
    let rows = shared.clients.top(top, &config.clients);
    json_reply(StatusCode::OK, json!({ "clients": rows }))
}

/// `GET /sticky?ip=ADDR`: where that client goes now, and why.
fn sticky_lookup(shared: &Shared, request: &Request<Incoming>) -> Reply {
    let ip = match ip_param(request) {
        Ok(ip) => ip,
        Err(reply) => return *reply,
    };
    let snapshot = shared.snapshot();
    let sticky = &snapshot.config.sticky;
    let key = crate::dispatch::sticky::key_of(ip, sticky);
    let pool = &snapshot.pool;
    match shared
        .dispatcher
        .sticky_pick(sticky, pool, key, &Tried::default())
    {
        Some((index, placement)) => json_reply(
            StatusCode::OK,
            json!({
                "ip": ip.to_string(),
                "backend": pool.backends[index].label,
                "by": match placement {
                    PlacedBy::Entry => "entry",
                    PlacedBy::Ring => "placement",
                },
            }),
        ),
        None => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ip": ip.to_string(), "backend": null, "by": null}),
        ),
    }
}

/// `DELETE /sticky?ip=ADDR`: forgets that client's entry.
fn sticky_forget(shared: &Shared, request: &Request<Incoming>) -> Reply {
    let ip = match ip_param(request) {
        Ok(ip) => ip,
        Err(reply) => return *reply,
    };
    let key = crate::dispatch::sticky::key_of(ip, &shared.config().sticky);
    if shared.dispatcher.sticky.forget(key) {
        json_reply(
            StatusCode::OK,
            json!({"ip": ip.to_string(), "forgotten": true}),
        )
    } else {
        json_reply(
            StatusCode::NOT_FOUND,
            json!({"ip": ip.to_string(), "forgotten": false}),
        )
    }
}

/// The value of `?name=` in the request's query, decoded.
fn query_param(request: &Request<Incoming>, name: &str) -> Option<String> {
    let query = request.uri().query().unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn ip_param(request: &Request<Incoming>) -> Result<IpAddr, Refusal> {
    match query_param(request, "ip")
        .as_deref()
        .map(str::parse::<IpAddr>)
    {
        Some(Ok(ip)) => Ok(ip),
        Some(Err(_)) => Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "ip is not an IP address\n",
        ))),
        None => Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "missing ?ip=ADDR\n",
        ))),
    }
}

/// The token rule for mutations.
fn authorize(shared: &Shared, request: &Request<Incoming>) -> Result<(), Refusal> {
    let config = shared.config();
    match &config.admin.token {
        Some(token) => {
            let given = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                // Exactly the token: a trailing space is another token.
                .map(|(_, token)| token);
            match given {
                Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
                _ => Err(Box::new(with_header(
                    text(StatusCode::UNAUTHORIZED, "a bearer token is required\n"),
                    "www-authenticate",
                    "Bearer",
                ))),
            }
        }
        None if is_loopback(config.admin.bind) => Ok(()),
        None => Err(Box::new(text(
            StatusCode::FORBIDDEN,
            "admin.token_file is not set and the admin port is not on loopback, so it takes no command. \
             Write a secret to a file (e.g. `openssl rand -hex 32 > /etc/corral/token`), \
             set `token_file = \"/etc/corral/token\"` under [admin] in corral's config, reload or restart corral, \
             and run the command with `-c FILE` (it sends the token from that file); \
             or set admin.bind to a loopback address such as 127.0.0.1:9090\n",
        ))),
    }
}

/// What every request passes before it is routed: a head within
/// [`MAX_HEAD`] (431), a `Host` that a DNS-rebinding page cannot send when
/// the admin port is on loopback (403), and, for a mutation, no `Origin`
/// but the admin address's own (403): a web page in a browser cannot
/// drive the admin port, token or not.
fn screen<B>(shared: &Shared, request: &Request<B>) -> Option<Refusal> {
    if head_size(request) > MAX_HEAD {
        return Some(Box::new(text(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request head is larger than 64 KiB\n",
        )));
    }
    let bind = shared.config().admin.bind;
    let host = request
        .headers()
        .get(HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}"));
    if is_loopback(bind) && host.is_some_and(|h| !is_literal_or_localhost(h)) {
        return Some(Box::new(text(
            StatusCode::FORBIDDEN,
            "the admin port is on loopback and answers only requests for an IP address or localhost (Host)\n",
        )));
    }
    let mutation = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if mutation {
        for origin in request.headers().get_all(ORIGIN) {
            let same = origin.to_str().is_ok_and(|o| is_own_origin(bind, host, o));
            if !same {
                return Some(Box::new(text(
                    StatusCode::FORBIDDEN,
                    "a request from a web page of another origin cannot change corral (Origin)\n",
                )));
            }
        }
    }
    None
}

/// The size of a request head as it came: request line, header lines and
/// the blank line. hyper bounds its read buffer, but a head that arrives in
/// large reads can pass that bound; this one is exact.
fn head_size<B>(request: &Request<B>) -> usize {
    let line = request.method().as_str().len() + 1 + request.uri().to_string().len() + 1 + 8 + 2;
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + headers + 2
}

/// Splits `host[:port]` (with `[v6]` brackets) into host and port text.
fn split_host(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

/// A `Host` a browser sends only for a page served from an IP address or
/// from localhost: never one whose name an attacker's DNS controls.
fn is_literal_or_localhost(host: &str) -> bool {
    let (name, port) = split_host(host.trim());
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    port_ok && (name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok())
}

/// Is `origin` the admin address's own: `http://<admin.bind>`, or on a
/// loopback bind `http://localhost:<port>`, `http://127.0.0.1:<port>` and
/// `http://[::1]:<port>`; on an unspecified bind (`0.0.0.0`), the IP
/// address the request was sent to (`Host`). `null` never is.
fn is_own_origin(bind: SocketAddr, host: Option<&str>, origin: &str) -> bool {
    let Some(authority) = origin
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &origin[7..])
    else {
        return false;
    };
    let (name, port) = split_host(authority);
    if port.and_then(|p| p.parse::<u16>().ok()) != Some(bind.port()) {
        return false;
    }
    let ip = name.parse::<IpAddr>().ok();
    if ip == Some(bind.ip()) {
        return true;
    }
    if is_loopback(bind) {
        return name.eq_ignore_ascii_case("localhost") || ip.is_some_and(|ip| ip.is_loopback());
    }
    if bind.ip().is_unspecified() {
        let sent_to = host
            .map(split_host)
            .and_then(|(h, _)| h.parse::<IpAddr>().ok());
        return ip.is_some() && ip == sent_to;
    }
    false
}

fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *reply.status_mut() = status;
    with_type(reply, "text/plain; charset=utf-8")
}

fn json_reply(status: StatusCode, value: serde_json::Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(value.to_string())));
    *reply.status_mut() = status;
    with_type(reply, "application/json")
}

fn with_type(reply: Reply, content_type: &'static str) -> Reply {
    with_header(reply, CONTENT_TYPE.as_str(), content_type)
}

fn with_header(mut reply: Reply, name: &'static str, value: &'static str) -> Reply {
    reply
        .headers_mut()
        .insert(name, HeaderValue::from_static(value));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn hosts_a_rebinding_page_can_send_are_refused() {
        for ok in [
            "127.0.0.1:9090",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9090",
            "10.1.2.3",
        ] {
            assert!(is_literal_or_localhost(ok), "{ok}");
        }
        for bad in [
            "evil.example:9090",
            "evil.example",
            "localhost.evil:9090",
            "127.0.0.1:x",
            "",
        ] {
            assert!(!is_literal_or_localhost(bad), "{bad}");
        }
    }

    #[test]
    fn only_the_admin_address_is_its_own_origin() {
        let b = bind("127.0.0.1:9090");
        for ok in [
            "http://127.0.0.1:9090",
            "http://localhost:9090",
            "HTTP://[::1]:9090",
        ] {
            assert!(is_own_origin(b, None, ok), "{ok}");
        }
        for bad in [
            "null",
            "http://evil.example:9090",
            "http://127.0.0.1:9091",
            "https://127.0.0.1:9090",
            "http://127.0.0.1",
            "",
        ] {
            assert!(!is_own_origin(b, None, bad), "{bad}");
        }
        let any = bind("0.0.0.0:9090");
        assert!(is_own_origin(
            any,
            Some("10.0.0.5:9090"),
            "http://10.0.0.5:9090"
        ));
        assert!(!is_own_origin(
            any,
            Some("10.0.0.5:9090"),
            "http://10.0.0.6:9090"
        ));
        let public = bind("10.0.0.5:9090");
        assert!(is_own_origin(public, None, "http://10.0.0.5:9090"));
        assert!(!is_own_origin(public, None, "http://localhost:9090"));
    }
}
