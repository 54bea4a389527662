//! Clients queued on a slot that was steered around (its worker crashed
//! for good, stalled, or fails its checks): corral accepts them from the
//! slot's socket itself and relays each through the front end, where the
//! program now places it on a worker in rotation (with `sticky`, on the
//! worker the client's own address maps to: the relay connects from that
//! worker's probe address).
//!
//! The slot's socket is one open file shared with the slot's processes, so
//! corral never changes its flags (a worker may rely on blocking accepts,
//! or have made it non-blocking itself). It accepts on a blocking thread
//! instead, one job per slot, while `poll` says a client waits. If a worker
//! takes that client first, the job's `accept` blocks: [`Rescues::tend`]
//! then wakes it with a connection from the slot's probe address, which
//! the job recognises as a probe and closes.
//!
//! A rescued client is served as any proxied one is
//! (`datapath::connection::serve_relayed`, through [`Host::serve_rescued`]): connect and idle timeouts, the drain's
//! cut, its close reason in the log line (`relayed`), the error counters,
//! and `corral_rescued_connections_total`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::labels::worker_label;

use super::program::{self, Rule};
use super::Host;
use super::Steering;

/// A client to serve through a fixed address rather than a backend the
/// dispatcher picks. `corral upgrade` carries it with the parked client.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Relay {
    /// Where to connect.
    pub target: SocketAddr,
    /// The source address to connect from (it decides where the kernel
    /// places the connection); corral's own when `None`.
    pub from: Option<Ipv4Addr>,
    /// What the log line says of the client's way here (`relayed`).
    pub why: String,
    /// The `backend` of the log line, when it is known.
    pub backend: Option<String>,
}

/// A job still running after this long may be blocked in `accept`.
const STUCK_AFTER: Duration = Duration::from_millis(100);

/// The rescue jobs, at most one per slot.
#[derive(Default)]
pub struct Rescues {
    jobs: HashMap<usize, Job>,
    total: Arc<AtomicU64>,
}

struct Job {
    task: JoinHandle<()>,
    started: Instant,
}

impl Rescues {
    /// Serves elsewhere every client waiting on `slot`'s socket, placing
    /// them by `rule` over `serving` (the slots in rotation).
    pub fn take_queued<H: Host>(
        &mut self,
        host: &Arc<H>,
        steering: &Arc<Steering>,
        slot: usize,
        rule: &Rule,
        serving: &[usize],
    ) {
        if self.jobs.contains_key(&slot) || steering.queue_length(slot).unwrap_or(0) == 0 {
            return;
        }
        let Some(socket) = steering.socket(slot) else {
            return;
        };
        let runtime = tokio::runtime::Handle::current();
        let host = Arc::clone(host);
        let target = steering.target();
        let place = Placement {
            rule: rule.clone(),
            serving: serving.to_vec(),
        };
        let total = Arc::clone(&self.total);
        let task = tokio::task::spawn_blocking(move || {
            let mut served = 0u64;
            while readable(socket.as_raw_fd()) {
                let (client, peer) = match socket.accept() {
                    Ok((client, peer)) => (client, peer.as_socket()),
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let Some(peer) = peer.filter(|p| !is_probe(*p)) else {
                    continue; // corral's own probe (or a wake-up): close it
                };
                served += 1;
                host.count_rescued();
                let placed = place.slot_for(peer);
                let relay = Relay {
                    target,
                    from: placed.map(program::probe_source),
                    why: format!("rescued from {}, out of rotation", worker_label(slot)),
                    backend: placed.map(worker_label),
                };
                let client: std::net::TcpStream = client.into();
                if client.set_nonblocking(true).is_err() {
                    continue;
                }
                let host = Arc::clone(&host);
                host.connections().clone().spawn_on(
                    async move {
                        if let Ok(client) = TcpStream::from_std(client) {
                            host.serve_rescued(client, peer, relay).await;
                        }
                    },
                    &runtime,
                );
            }
            if served > 0 {
                let total = total.fetch_add(served, Ordering::Relaxed) + served;
                tracing::info!(
                    worker = slot,
                    clients = served,
                    rescued_total = total,
                    "clients queued on a worker out of rotation are served by another"
                );
            }
        });
        self.jobs.insert(
            slot,
            Job {
                task,
                started: Instant::now(),
            },
        );
    }

    /// Forgets finished jobs, and wakes those that may be blocked in
    /// `accept` with a connection from their slot's probe address.
    pub fn tend(&mut self, steering: &Steering) {
        self.jobs.retain(|_, job| !job.task.is_finished());
        for (&slot, job) in &self.jobs {
            if job.started.elapsed() >= STUCK_AFTER {
                tokio::spawn(wake(steering.target(), program::probe_source(slot)));
            }
        }
    }
}

/// How rescued clients are placed.
struct Placement {
    rule: Rule,
    serving: Vec<usize>,
}

impl Placement {
    /// The slot to relay `client` to (from that slot's probe address):
    /// with `sticky`, the one its own address maps to; else none, and the
    /// client is relayed from corral's own address and spread.
    fn slot_for(&self, client: SocketAddr) -> Option<usize> {
        match (&self.rule, client.ip()) {
            (Rule::Sticky { prefix }, IpAddr::V4(ip)) if !self.serving.is_empty() => {
                Some(program::sticky_slot(ip, *prefix, &self.serving))
            }
            _ => None,
        }
    }
}

/// Does a client wait in the accept queue of listening socket `fd`?
fn readable(fd: i32) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, a descriptor this process holds, no waiting.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & libc::POLLIN != 0
}

/// corral's own probe connections come from 127.254.0.0/16.
fn is_probe(peer: SocketAddr) -> bool {
    matches!(peer.ip(), IpAddr::V4(ip) if program::is_probe_source(ip))
}

/// A connection to the front end from `from`, closed at once.
async fn wake(front: SocketAddr, from: Ipv4Addr) {
    if let Ok(socket) = TcpSocket::new_v4() {
        if socket.bind(SocketAddr::new(from.into(), 0)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.connect(front)).await;
        }
    }
}
