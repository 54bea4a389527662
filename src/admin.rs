//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`, `/status`,
//! `/sticky`, and `POST /workers/restart`.
//!
//! GET endpoints are open so Prometheus and probes need no credentials.
//! Mutations (POST, DELETE) need `Authorization: Bearer <token>` when
//! `admin.token_file` is set; without a token they are allowed only when the
//! admin port is bound to loopback.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::control::Request as ControlRequest;
use crate::dispatch::{Placement, Tried};
use crate::shared::Shared;

type Reply = Response<Full<Bytes>>;

/// A refusal already written as a reply (boxed: replies are large).
type Refusal = Box<Reply>;

/// Serves the admin port until the process exits.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    control: mpsc::Sender<ControlRequest>,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let control = control.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let reply = route(&shared, &control, request);
                async move { Ok::<_, Infallible>(reply) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(
    shared: &Shared,
    control: &mpsc::Sender<ControlRequest>,
    request: Request<Incoming>,
) -> Reply {
    let path = request.uri().path();
    let method = request.method();
    match (method, path) {
        (&Method::GET, "/metrics") => {
            shared
                .metrics
                .sticky_entries
                .set(shared.dispatcher.sticky.len() as i64);
            with_type(
                Response::new(Full::new(Bytes::from(shared.metrics.render()))),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if shared.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if shared.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "no backend is up\n")
            }
        }
        (&Method::GET, "/status") => json_reply(StatusCode::OK, status(shared)),
        (&Method::POST, "/workers/restart") => {
            if let Err(denied) = authorize(shared, &request) {
                return *denied;
            }
            match control.try_send(ControlRequest::RollingRestart) {
                Ok(()) => json_reply(StatusCode::ACCEPTED, json!({"rolling_restart": "started"})),
                Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "busy; try again\n"),
            }
        }
        (&Method::GET, "/sticky") => sticky_lookup(shared, &request),
        (&Method::DELETE, "/sticky") => {
            if let Err(denied) = authorize(shared, &request) {
                return *denied;
            }
            sticky_forget(shared, &request)
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/status" | "/workers/restart" | "/sticky") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The `/status` document.
fn status(shared: &Shared) -> serde_json::Value {
    let config = shared.config.load();
    let pool = shared.pool.load();
    let backends: Vec<_> = pool
        .backends
        .iter()
        .map(|b| {
            let instance = b.instance();
            json!({
                "name": b.label,
                "address": instance.addr.to_string(),
                "state": b.state().as_str(),
                "pid": instance.pid,
                "restarts": b.restarts(),
                "active_connections": b.active(),
            })
        })
        .collect();
    json!({
        "strategy": config.strategy.as_str(),
        "sticky_entries": shared.dispatcher.sticky.len(),
        "draining": shared.is_draining(),
        "backends": backends,
    })
}

/// `GET /sticky?ip=ADDR`: where that client goes now, and why.
fn sticky_lookup(shared: &Shared, request: &Request<Incoming>) -> Reply {
    let ip = match ip_param(request) {
        Ok(ip) => ip,
        Err(reply) => return *reply,
    };
    let key = shared.dispatcher.client_key(ip);
    let pool = shared.pool.load();
    match shared.dispatcher.sticky_pick(&pool, key, &Tried::default()) {
        Some((index, placement)) => json_reply(
            StatusCode::OK,
            json!({
                "ip": ip.to_string(),
                "backend": pool.backends[index].label,
                "by": match placement {
                    Placement::Entry => "entry",
                    Placement::Ring => "placement",
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
    let key = shared.dispatcher.client_key(ip);
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

fn ip_param(request: &Request<Incoming>) -> Result<IpAddr, Refusal> {
    let query = request.uri().query().unwrap_or("");
    let value = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "ip")
        .map(|(_, v)| v.into_owned());
    match value.as_deref().map(str::parse::<IpAddr>) {
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
    let config = shared.config.load();
    match &config.admin.token {
        Some(token) => {
            let given = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
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
            "admin.token_file is not set and the admin port is not on loopback\n",
        ))),
    }
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
