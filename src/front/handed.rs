//! The handed front end (`workers.listen = "fd"`): corral binds one
//! listening socket per worker slot on the front-end address, hands socket
//! i to every process of slot i as fd 3, and leaves the byte path. The
//! kernel places clients on the slots by the steering program
//! ([`crate::steering`]: the socket group, the program, the rescue of
//! clients queued on a slot out of rotation, intruders).
//!
//! A handed worker has no address of its own: it is reached through the
//! front end from its slot's probe address ([`Reach::Handed`]). corral
//! does not see the clients' connections, so the per-connection figures
//! ([`UNKNOWN_METRICS`]) and the sticky table are not reported; each
//! slot's accept queue is.

use std::sync::Arc;

use socket2::Socket;

use super::FrontError;
use crate::config::{defaults, ClientsConfig, Config};
use crate::metrics::names;
use crate::pool::{Backend, Kind, Pool, Reach, ViaFront};
use crate::steering::intruders::Intruder;
use crate::steering::{self, Host, Steering};

/// What corral does not see when the kernel hands clients straight to the
/// workers: every front-end and per-backend connection figure, and the
/// sticky table (placement is computed, not stored).
pub const UNKNOWN_METRICS: &[&str] = &[
    names::CONNECTIONS_ACCEPTED,
    names::ACCEPT_ERRORS,
    names::SPLICED_CONNECTIONS,
    names::CONNECTIONS,
    names::CONNECTIONS_ACTIVE,
    names::BYTES_RECEIVED,
    names::BYTES_SENT,
    names::CONNECT_DURATION,
    names::CONNECTION_DURATION,
    names::STICKY_ENTRIES,
    names::STICKY_LOOKUPS,
];

/// The slot sockets on the front-end address, and their steering.
pub struct Handed {
    steering: Arc<Steering>,
}

/// The front-end address: validation allows exactly one in fd mode.
fn front_addr(config: &Config) -> std::net::SocketAddr {
    config
        .listener
        .binds
        .first()
        .copied()
        .unwrap_or(defaults::LISTENER_BIND)
}

impl Handed {
    /// Binds one slot socket per worker on the (only) front-end address,
    /// with the program the strategy asks for.
    pub fn bind(config: &Config) -> Result<Handed, FrontError> {
        let addr = front_addr(config);
        let count = config.workers.as_ref().map_or(0, |w| w.count);
        let rule = steering::rule_of(config).map_err(FrontError::Rule)?;
        let steering = Steering::bind(addr, config.listener.backlog, count, rule, &config.clients)
            .map_err(|source| FrontError::Bind { addr, source })?;
        Ok(Handed {
            steering: Arc::new(steering),
        })
    }

    /// The slot sockets an earlier image bound (`corral upgrade`), in slot
    /// order, with their group and program as they are.
    pub fn adopt(config: &Config, sockets: Vec<Socket>) -> Result<Handed, FrontError> {
        let addr = front_addr(config);
        let steering = Steering::adopt(sockets, config.listener.backlog, &config.clients)
            .map_err(|source| FrontError::Bind { addr, source })?;
        Ok(Handed {
            steering: Arc::new(steering),
        })
    }

    /// The slot sockets' descriptors, in slot order.
    pub fn slot_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.steering.slot_fds()
    }

    /// The bound front-end address (its port resolved).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.steering.addr()
    }

    /// Slot `id`'s worker is reached through the front end, from the
    /// source the program sends to the slot's socket.
    pub fn worker_reach(&self, id: usize) -> Reach {
        Reach::Handed(ViaFront {
            front: self.steering.target(),
            from: steering::probe_source(id),
        })
    }

    /// Slot `slot`'s socket, to hand to a process of the slot. Binding it
    /// failed when the slot was created (no descriptor, say): it is tried
    /// again on each start. `None` when it still cannot be had.
    pub fn socket_for(&self, slot: usize) -> Option<Arc<Socket>> {
        if self.steering.socket(slot).is_none() {
            if let Err(error) = self.steering.grow_to(slot + 1) {
                tracing::error!(worker = slot, %error, "cannot bind the front end for this worker");
            }
        }
        self.steering.socket(slot)
    }

    pub fn describe(&self) -> Vec<String> {
        vec![format!(
            "{} (fd mode: workers accept from handed sockets)",
            self.steering.addr()
        )]
    }

    /// Keeps the program in line with the pool (and rescues clients queued
    /// on slots out of rotation), and watches for intruders, until the
    /// front end stops.
    pub fn spawn_tasks<H: Host>(&self, host: &Arc<H>) {
        tokio::spawn(steering::run(Arc::clone(host), Arc::clone(&self.steering)));
        tokio::spawn(steering::watch_intruders(
            Arc::clone(host),
            Arc::clone(&self.steering),
        ));
    }

    /// New slots need their sockets first (they join the group at its
    /// end, so slot i stays index i). A slot without one fails to start
    /// and says why.
    pub fn add_slots(&self, count: usize) {
        if let Err(error) = self.steering.grow_to(count) {
            tracing::error!(%error, front = %self.steering.addr(), "cannot bind the front end for the new workers");
        }
    }

    pub fn worker_ready(&self) {
        self.steering.nudge();
    }

    pub fn shrink_to(&self, count: usize) {
        self.steering.shrink_to(count);
    }

    pub fn set_access(&self, clients: &ClientsConfig) {
        if let Err(error) = self.steering.set_access(clients) {
            tracing::error!(%error, "cannot apply clients.allow/deny to the front-end sockets");
        }
    }

    /// New clients are no longer queued for workers about to stop; the
    /// workers' own accept keeps working until they stop.
    pub fn stop_listening(&self) {
        self.steering.stop_listening();
    }

    pub fn close(&self) {
        self.steering.close();
    }

    pub fn intruders(&self) -> Vec<Intruder> {
        self.steering.intruders()
    }

    /// The kernel hands clients to the workers: corral does not know their
    /// connections, only what waits in each socket.
    pub fn add_status(&self, backend: &Backend, entry: &mut serde_json::Value) {
        entry["active_connections"] = serde_json::Value::Null;
        entry["accept_queue"] = serde_json::json!(match backend.kind {
            Kind::Worker(slot) => self.steering.queue_length(slot),
            Kind::Static => None,
        });
    }

    /// Each worker slot's accept-queue length, by label.
    pub fn queue_lengths(&self, pool: &Pool) -> Vec<(String, u32)> {
        pool.worker_backends()
            .filter_map(|b| match b.kind {
                Kind::Worker(slot) => Some((b.label.clone(), self.steering.queue_length(slot)?)),
                Kind::Static => None,
            })
            .collect()
    }
}

/// Waits long enough for the steering to have acted on a change of the
/// pool (steered around a slot and emptied its queue).
pub async fn settle() {
    steering::settle().await;
}
