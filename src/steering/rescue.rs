//! Clients queued on a slot that was steered around (its worker crashed
//! for good, stalled, or fails its checks): corral accepts them from the
//! slot's socket itself and proxies each through the front end, where the
//! program now places it on a worker in rotation.
//!
//! The slot's socket is shared with the slot's processes (one open file),
//! so its blocking flag is theirs too: corral makes it non-blocking only
//! while it empties the queue, then puts the flag back.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use socket2::Socket;
use tokio::net::TcpStream;

use super::program::PROBE_NET;
use super::Steering;
use crate::shared::Shared;

/// At most this many clients are taken from one queue per tick.
const MAX_PER_TICK: usize = 4096;

/// Counts what was rescued, for the log.
#[derive(Default)]
pub struct Rescues {
    total: u64,
}

impl Rescues {
    /// Serves elsewhere every client waiting on `slot`'s socket. corral's
    /// own probes found there are closed (they were meant for that worker).
    pub fn take_queued(&mut self, shared: &Arc<Shared>, steering: &Steering, slot: usize) {
        if steering.queue_length(slot).unwrap_or(0) == 0 {
            return;
        }
        let Some(socket) = steering.socket(slot) else {
            return;
        };
        let clients = accept_queued(&socket);
        let mut served = 0;
        for (client, peer) in clients {
            if is_probe(peer) {
                continue;
            }
            served += 1;
            let target = steering.target();
            let cut = shared.cut_connections.clone();
            shared.connections.spawn(async move {
                tokio::select! {
                    _ = relay(client, target) => {}
                    _ = cut.cancelled() => {}
                }
            });
        }
        if served > 0 {
            self.total += served as u64;
            tracing::info!(
                worker = slot,
                clients = served,
                rescued_total = self.total,
                "clients queued on a worker out of rotation are served by another"
            );
        }
    }
}

/// Takes every connection waiting in `socket`'s accept queue now.
fn accept_queued(socket: &Socket) -> Vec<(std::net::TcpStream, SocketAddr)> {
    let fd = socket.as_raw_fd();
    // SAFETY: fcntl on a descriptor this process holds open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Vec::new();
    }
    let was_blocking = flags & libc::O_NONBLOCK == 0;
    if was_blocking {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    }
    let mut taken = Vec::new();
    while taken.len() < MAX_PER_TICK {
        match socket.accept() {
            Ok((client, peer)) => {
                if let Some(peer) = peer.as_socket() {
                    taken.push((client.into(), peer));
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if was_blocking {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    }
    taken
}

/// corral's own probe connections come from 127.254.0.0/16.
fn is_probe(peer: SocketAddr) -> bool {
    matches!(peer.ip(), IpAddr::V4(ip) if u32::from(ip) & 0xffff_0000 == PROBE_NET)
}

/// Copies bytes both ways between a rescued client and the front end.
async fn relay(client: std::net::TcpStream, target: SocketAddr) {
    if client.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut client) = TcpStream::from_std(client) else {
        return;
    };
    let mut upstream = match TcpStream::connect(target).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::warn!(%error, %target, "cannot pass a rescued client to the front end");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
