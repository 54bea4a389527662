//! `corral demo-worker`: a small HTTP/1.1 backend for trying corral out. It
//! answers every request with `worker=<CORRAL_WORKER_ID> pid=<pid>`;
//! keep-alive works. It listens on `$HOST:$PORT`, or accepts from fd 3 when
//! handed a listening socket the systemd way (`LISTEN_FDS`, `LISTEN_PID`).
//! On SIGTERM it stops accepting and finishes the requests it has.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The first socket systemd-style socket activation hands over.
const LISTEN_FDS_START: i32 = 3;

/// How long a connection that has asked nothing yet is given, after
/// SIGTERM, to send its first request.
const FIRST_REQUEST: Duration = Duration::from_secs(2);

/// How long open connections may take to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(10);

/// Runs the demo worker until SIGTERM (then drains) or SIGKILL.
pub fn run() -> anyhow::Result<()> {
    let id = std::env::var("CORRAL_WORKER_ID").unwrap_or_else(|_| "-".to_string());
    let body = Bytes::from(format!("worker={id} pid={}\n", std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let (listener, from) = listener().await?;
        println!("demo worker {id} accepting on {from}");
        let open = TaskTracker::new();
        let stopping = CancellationToken::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = terminate.recv() => break,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let body = body.clone();
            let stopping = stopping.clone();
            open.spawn(async move {
                let asked = Arc::new(AtomicBool::new(false));
                let service = hyper::service::service_fn({
                    let asked = Arc::clone(&asked);
                    move |_request| {
                        asked.store(true, Ordering::Release);
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                    }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    _ = stopping.cancelled() => {
                        // A client accepted just before SIGTERM may not have
                        // sent its request yet (or hyper has not read it):
                        // closing now would drop it unanswered. Give it
                        // FIRST_REQUEST to ask, then finish the request in
                        // flight and close.
                        if !asked.load(Ordering::Acquire) {
                            let first = async {
                                while !asked.load(Ordering::Acquire) {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                            };
                            tokio::select! {
                                _ = connection.as_mut() => return,
                                _ = tokio::time::timeout(FIRST_REQUEST, first) => {}
                            }
                        }
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
        }
        drop(listener);
        println!("demo worker {id}: SIGTERM, finishing open requests");
        stopping.cancel();
        open.close();
        let _ = tokio::time::timeout(GRACE, open.wait()).await;
        Ok(())
    })
}

/// The handed socket (fd 3, when `LISTEN_FDS` says so and `LISTEN_PID`, if
/// set, is this process), or a new one on `$HOST:$PORT`.
async fn listener() -> anyhow::Result<(TcpListener, String)> {
    let handed = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n >= 1);
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_none_or(|pid| pid == std::process::id());
    if handed && for_us {
        use std::os::fd::FromRawFd;
        // SAFETY: LISTEN_FDS says fd 3 is a socket handed to this process
        // (systemd's protocol); nothing else in this process owns it.
        let socket = unsafe { std::net::TcpListener::from_raw_fd(LISTEN_FDS_START) };
        socket
            .set_nonblocking(true)
            .context("fd 3 (LISTEN_FDS) is not a socket")?;
        let from = socket
            .local_addr()
            .map_or("fd 3".to_string(), |a| format!("fd 3 ({a})"));
        let listener =
            TcpListener::from_std(socket).context("fd 3 (LISTEN_FDS) is not a listening socket")?;
        return Ok((listener, from));
    }
    let port: u16 = std::env::var("PORT")
        .context("PORT is not set (and no socket was handed over with LISTEN_FDS); corral sets it for its workers")?
        .parse()
        .context("PORT is not a port number")?;
    let host: IpAddr = std::env::var("HOST")
        .unwrap_or_else(|_| "127.0.0.1".to_string())
        .parse()
        .context("HOST is not an IP address")?;
    let addr = SocketAddr::new(host, port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    Ok((listener, addr.to_string()))
}
