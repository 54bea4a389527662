//! The probe of a handed worker (`workers.listen = "fd"`): it has no
//! address of its own, so the check connects to the front end from the
//! slot's probe address (the steering program sends that source to the
//! slot's socket) and passes only when a process of the worker's own tree
//! accepted the connection: the kernel names the accepting socket
//! ([`super::accept_queue`]), the sampler its owner.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{accept_queue, http_ok, is_local_shortage, new_socket, CheckFailure, Verdict};
use crate::config::{HealthConfig, HealthKind};
use crate::pool::ViaFront;
use crate::sampler::Sampler;

/// One check of a worker that was handed its slot's socket
/// (`workers.listen = "fd"`), also its readiness test: a connection to the
/// front end from `from` (the steering program sends it to that slot's
/// socket) must be accepted by a process of the worker's tree (`tree`;
/// another process of the slot, or corral emptying the queue, does not
/// count) within `health.timeout`, and with `health.kind = "http"`, be
/// answered with a 2xx. Whose the accepting socket is, the sampler says
/// (a pass made after the accept).
pub async fn probe_handed(
    via: ViaFront,
    tree: Option<u32>,
    health: &HealthConfig,
    sampler: &Sampler,
) -> Verdict {
    let ViaFront { front, from } = via;
    let socket = match new_socket(front) {
        Ok(socket) => socket,
        Err(error) => return Verdict::Skipped(error),
    };
    if let Err(error) = socket.bind(SocketAddr::new(IpAddr::V4(from), 0)) {
        return if is_local_shortage(&error) || error.kind() == io::ErrorKind::AddrInUse {
            Verdict::Skipped(error)
        } else {
            Verdict::Failed(CheckFailure::Connect(error))
        };
    }
    let stream = match tokio::time::timeout(health.timeout, socket.connect(front)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) if is_local_shortage(&error) => return Verdict::Skipped(error),
        Ok(Err(error)) => return Verdict::Failed(CheckFailure::Connect(error)),
        Err(_) => return Verdict::Failed(CheckFailure::Timeout),
    };
    // In handed mode the connect always succeeds (corral holds the socket), so
    // only the kernel's word that a process of the tree accepted the
    // connection passes: where it cannot be had, nothing is learnt.
    let unknown = || {
        Verdict::Skipped(io::Error::other(
            "the kernel does not say whether the check's connection was accepted (sock_diag)",
        ))
    };
    let Ok(ours) = stream.local_addr() else {
        return unknown();
    };
    let taken = async {
        let mut pause = Duration::from_millis(1);
        loop {
            match accept_queue::taken_as(front, ours) {
                Some(None) => {}
                Some(Some(inode)) => return Some(inode),
                None => return None,
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    };
    let started = tokio::time::Instant::now();
    let inode = match tokio::time::timeout(health.timeout, taken).await {
        Ok(Some(inode)) => inode,
        Ok(None) => return unknown(),
        Err(_) => return Verdict::Failed(CheckFailure::NotAccepted),
    };
    if let Some(root) = tree {
        if !sampler
            .sockets_of(root)
            .await
            .tree_holds_socket(root, inode)
        {
            return Verdict::Failed(CheckFailure::TakenByAnother);
        }
    }
    match health.kind {
        HealthKind::Tcp => Verdict::Passed,
        HealthKind::Http => {
            let left = health.timeout.saturating_sub(started.elapsed());
            let host = front.to_string();
            tokio::time::timeout(left, http_ok(stream, &host, &health.path))
                .await
                .unwrap_or(Verdict::Failed(CheckFailure::Timeout))
        }
    }
}
