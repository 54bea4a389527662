//! Where a process of a worker slot takes its clients from: the worker
//! side of the front end's mode ([`crate::front`]). A proxied worker gets a
//! port of its own, claimed in the [`PortBook`] (the other of its slot's
//! pair while a rolling restart runs both) and given back when the process
//! stops; a handed worker gets its slot's socket of the front end as fd 3
//! and no port. What follows from the seat (the worker's environment, how
//! it is reached and probed, the errors of a start that fails, the watch
//! for a handed worker listening elsewhere) is asked of it here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;

use super::{Slot, SlotError};
use crate::config::WorkersConfig;
use crate::front::Handed;
use crate::pool::Reach;
use crate::steering::intruders;
use crate::supervisor::ports::PortBook;

/// A process's seat.
pub(super) enum Seat {
    /// Proxied: a port of its own (held in the port book).
    Port(SocketAddr),
    /// Handed: the slot's socket of the front end.
    Socket(HandedSeat),
}

/// The slot socket a handed worker accepts from.
pub(super) struct HandedSeat {
    socket: Arc<Socket>,
    /// The socket's inode, to tell it from listeners of the worker's own.
    inode: Option<u64>,
    /// The bound front-end address (its port is the worker's `{port}`).
    front: SocketAddr,
    /// How the worker is reached through the front end.
    reach: Reach,
}

/// Handed mode: a starting worker's tree, and the inode of the socket it was
/// handed (what it must accept from; any other listener is a stray).
#[derive(Clone, Copy)]
pub(super) struct StrayWatch {
    pub shim: u32,
    pub inode: u64,
}

impl Slot {
    /// A seat for a new process of this slot, as the front end's mode has
    /// it. `avoid` is a port not to take (the one the running process
    /// holds, in a rolling restart).
    pub(super) fn take_seat(
        &self,
        workers: &WorkersConfig,
        avoid: Option<u16>,
    ) -> Result<Seat, SlotError> {
        match self.shared.front.handed() {
            Some(handed) => self.handed_seat(handed),
            None => self
                .claim_port(workers, avoid)
                .map(|port| Seat::Port(SocketAddr::new(workers.host, port))),
        }
    }

    fn handed_seat(&self, handed: &Handed) -> Result<Seat, SlotError> {
        let socket = handed.socket_for(self.id).ok_or(SlotError::NoSocket)?;
        Ok(Seat::Socket(HandedSeat {
            inode: intruders::inode_of(&*socket),
            socket,
            front: handed.addr(),
            reach: handed.worker_reach(self.id),
        }))
    }

    /// The first free port of the slot's pair (the other one first when
    /// `avoid` is the first), or another free one when corral picks the
    /// ports.
    fn claim_port(&self, workers: &WorkersConfig, avoid: Option<u16>) -> Result<u16, SlotError> {
        let primary = workers.port(self.id, false);
        let alternate = workers.port(self.id, true);
        let candidates = if avoid == Some(primary) {
            [alternate, primary]
        } else {
            [primary, alternate]
        };
        match self.ports.claim(workers.host, candidates) {
            Some(port) => Ok(port),
            None if workers.auto_ports => self.claim_elsewhere(workers, primary, alternate),
            None => Err(SlotError::PortsInUse {
                primary,
                alternate,
                slot: self.id,
            }),
        }
    }

    /// Picked ports another program took since the pick: this slot moves
    /// to another free port (the others keep theirs).
    fn claim_elsewhere(
        &self,
        workers: &WorkersConfig,
        primary: u16,
        alternate: u16,
    ) -> Result<u16, SlotError> {
        let avoid = crate::supervisor::ports::front_ports(&self.shared.config());
        let port = self
            .ports
            .claim_elsewhere(workers.host, &avoid)
            .ok_or(SlotError::NoFreePort { primary, alternate })?;
        tracing::warn!(
            worker = self.id,
            port,
            "ports {primary} and {alternate}, picked by corral for this worker, were taken by another program since; it moves to port {port}"
        );
        Ok(port)
    }
}

impl Seat {
    /// The port the process holds, if it has one of its own.
    pub fn port(&self) -> Option<u16> {
        match self {
            Seat::Port(addr) => Some(addr.port()),
            Seat::Socket(_) => None,
        }
    }

    /// Gives back the port the process held (a process that stopped).
    pub fn release(&self, ports: &PortBook) {
        if let Some(port) = self.port() {
            ports.release(port);
        }
    }

    /// The worker's `{port}`: its own, or the front end's.
    pub fn spec_port(&self) -> u16 {
        match self {
            Seat::Port(addr) => addr.port(),
            Seat::Socket(seat) => seat.front.port(),
        }
    }

    /// The socket handed to the worker as fd 3, if any (then it gets no
    /// `PORT` or `HOST`).
    pub fn socket(&self) -> Option<Arc<Socket>> {
        match self {
            Seat::Port(_) => None,
            Seat::Socket(seat) => Some(Arc::clone(&seat.socket)),
        }
    }

    /// How corral reaches the process (and probes it).
    pub fn reach(&self) -> Reach {
        match self {
            Seat::Port(addr) => Reach::Own(*addr),
            Seat::Socket(seat) => seat.reach,
        }
    }

    /// Logs that process `pid` of slot `id` started.
    pub fn announce(&self, id: usize, pid: u32) {
        match self {
            Seat::Port(addr) => {
                tracing::info!(worker = id, pid, port = addr.port(), "worker started")
            }
            Seat::Socket(seat) => {
                tracing::info!(worker = id, pid, front = %seat.front, "worker started with the front end's socket as fd 3")
            }
        }
    }

    /// The error of a process that accepted nothing within `timeout`.
    pub fn not_ready(&self, timeout: Duration) -> SlotError {
        match self {
            Seat::Port(addr) => SlotError::NotReady {
                addr: *addr,
                timeout,
            },
            Seat::Socket(_) => SlotError::HandedNotTaken { timeout },
        }
    }

    /// The error of a process that exited before it was ready.
    pub fn exited(&self) -> fn(String) -> SlotError {
        match self {
            Seat::Port(_) => SlotError::ExitedEarly,
            Seat::Socket(_) => SlotError::HandedExitedEarly,
        }
    }

    /// What to watch for listeners of the starting process's own (tree
    /// `shim`): a handed worker must accept from its socket.
    pub fn stray_watch(&self, shim: u32) -> Option<StrayWatch> {
        match self {
            Seat::Port(_) => None,
            Seat::Socket(seat) => seat.inode.map(|inode| StrayWatch { shim, inode }),
        }
    }
}
