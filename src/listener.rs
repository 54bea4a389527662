//! The front end: sockets bound with the configured backlog, and an accept
//! loop that takes a connection-limit permit *before* `accept()`, so clients
//! beyond `max_connections` wait in the kernel's backlog instead of being
//! refused. The loop survives every accept error; on fd exhaustion it backs
//! off instead of spinning.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::proxy;
use crate::shared::Shared;

/// How long the accept loop pauses after EMFILE, ENFILE and the like.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds one front-end address.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // "[::]:8080" means IPv6 only; list "0.0.0.0:8080" too for both.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog as i32)?;
    TcpListener::from_std(socket.into())
}

/// Accepts clients until `shared.stop_accepting` is cancelled. `limit` is
/// shared by every listener: it is `max_connections`.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, limit: Arc<Semaphore>) {
    loop {
        let permit = match Arc::clone(&limit).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                shared.metrics.errors.limit.inc();
                tokio::select! {
                    permit = Arc::clone(&limit).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                    _ = shared.stop_accepting.cancelled() => return,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.stop_accepting.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                shared.metrics.accepted.inc();
                let task_shared = Arc::clone(&shared);
                shared.connections.spawn(async move {
                    proxy::serve(task_shared, stream, peer).await;
                    drop(permit);
                });
            }
            Err(error) if is_resource_exhaustion(&error) => {
                shared.metrics.accept_errors.inc();
                tracing::error!(%error, "accept failed: out of resources; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(error) => {
                // ECONNABORTED and friends: that client is gone; the rest are fine.
                shared.metrics.accept_errors.inc();
                tracing::debug!(%error, "accept failed");
            }
        }
    }
}

fn is_resource_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
