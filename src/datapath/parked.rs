//! Connections parked for `corral upgrade`: when the upgrade asks
//! ([`Parking::begin`]), each open connection's pump stops at a quiet
//! moment (nothing read and not yet written, in either direction, and for
//! a stateless connection nothing unanswered) and its two sockets are left
//! here, open, instead of being closed. The upgrade hands them to the next
//! image, which pumps them on ([`super::connection::resume`]): bytes the
//! kernel holds in the sockets' buffers meanwhile are read there, so
//! nothing is lost and no connection is reset.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// One parked connection, as the handover carries it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ParkedConnection {
    /// The client's socket (a descriptor in the process).
    pub client: RawFd,
    /// The backend's socket.
    pub backend: RawFd,
    /// Who the client is (its PROXY header's address behind a balancer).
    pub client_addr: SocketAddr,
    /// The backend it is pumped to, by key ([`crate::pool::Backend::key`]).
    pub backend_key: u64,
    /// Bytes moved so far: (from the client, from the backend).
    pub bytes: (u64, u64),
}

/// A parked connection's sockets, owned until the handover.
struct Held {
    client: OwnedFd,
    backend: OwnedFd,
    client_addr: SocketAddr,
    backend_key: u64,
    bytes: (u64, u64),
}

/// The parking: the signal the pumps hear, and the sockets parked so far.
#[derive(Default)]
pub struct Parking {
    signal: CancellationToken,
    held: Mutex<Vec<Held>>,
}

impl Parking {
    /// The signal every pump hears: park at the next quiet moment.
    pub fn signal(&self) -> &CancellationToken {
        &self.signal
    }

    /// The upgrade begins: every open connection parks when quiet.
    pub fn begin(&self) {
        self.signal.cancel();
    }

    /// Leaves a quiet connection's sockets here (duplicates: the streams
    /// themselves are dropped by their task, and the sockets stay open).
    pub fn park(
        &self,
        client: &TcpStream,
        backend: &TcpStream,
        client_addr: SocketAddr,
        backend_key: u64,
        bytes: (u64, u64),
    ) -> std::io::Result<()> {
        let held = Held {
            client: client.as_fd().try_clone_to_owned()?,
            backend: backend.as_fd().try_clone_to_owned()?,
            client_addr,
            backend_key,
            bytes,
        };
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(held);
        Ok(())
    }

    /// Every parked connection, as the handover names it, and its sockets,
    /// owned by the caller until the exec (still close-on-exec: the
    /// caller clears that just before it).
    pub fn hand_over(&self) -> (Vec<ParkedConnection>, Vec<OwnedFd>) {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner));
        let mut fds = Vec::with_capacity(2 * held.len());
        let connections = held
            .into_iter()
            .map(|h| {
                let connection = ParkedConnection {
                    client: h.client.as_raw_fd(),
                    backend: h.backend.as_raw_fd(),
                    client_addr: h.client_addr,
                    backend_key: h.backend_key,
                    bytes: h.bytes,
                };
                fds.push(h.client);
                fds.push(h.backend);
                connection
            })
            .collect();
        (connections, fds)
    }
}

/// A parked connection taken over by this image: its sockets as
/// duplicates owned here (the handover's originals are closed once this
/// image serves).
pub struct Resumed {
    pub parked: ParkedConnection,
    pub client: OwnedFd,
    pub backend: OwnedFd,
}

impl Resumed {
    /// Takes over `parked`'s sockets.
    pub fn take(parked: &ParkedConnection) -> std::io::Result<Resumed> {
        Ok(Resumed {
            client: crate::fds::duplicate(parked.client, 3)?,
            backend: crate::fds::duplicate(parked.backend, 3)?,
            parked: parked.clone(),
        })
    }
}
