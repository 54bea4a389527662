//! `corral demo-worker`: a small HTTP/1.1 backend for trying corral out. It
//! listens on `$HOST:$PORT` and answers every request with
//! `worker=<CORRAL_WORKER_ID> pid=<pid>`; keep-alive works.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Runs the demo worker until it is killed.
pub fn run() -> anyhow::Result<()> {
    use anyhow::Context;
    let port: u16 = std::env::var("PORT")
        .context("PORT is not set; corral sets it for its workers")?
        .parse()
        .context("PORT is not a port number")?;
    let host: IpAddr = std::env::var("HOST")
        .unwrap_or_else(|_| "127.0.0.1".to_string())
        .parse()
        .context("HOST is not an IP address")?;
    let id = std::env::var("CORRAL_WORKER_ID").unwrap_or_else(|_| "-".to_string());
    let body = Bytes::from(format!("worker={id} pid={}\n", std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(host, port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        println!("demo worker {id} listening on {addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
