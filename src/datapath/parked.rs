//! Connections parked for `corral upgrade`: when the upgrade asks
//! ([`Parking::begin`]), each open connection's pump stops at its next
//! poll and its two sockets are left here, open, with the bytes it had
//! read and not yet written, instead of being closed. A `workers.stateless`
//! connection parks between two requests, and only its client's socket:
//! its backend connection ends there, as when it moves to another backend.
//! The upgrade hands them to the next image, which writes those bytes
//! first and pumps on ([`super::connection::resume`]): bytes the kernel
//! holds in the sockets' buffers meanwhile are read there, so nothing is
//! lost, nothing is sent twice, and no connection is reset.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::pump::Unsent;

/// What a parked connection is, besides its sockets.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConnectionState {
    /// Who the client is (its PROXY header's address behind a balancer).
    pub client_addr: SocketAddr,
    /// The address the client connected to, from its PROXY header.
    #[serde(default)]
    pub client_local: Option<SocketAddr>,
    /// The backend it is pumped to, by key ([`crate::pool::Backend::key`]);
    /// meaningless for a connection parked without its backend.
    pub backend_key: u64,
    /// Bytes moved with that backend: (from the client, from the backend).
    pub bytes: (u64, u64),
    /// Read from the client and not yet written to the backend.
    #[serde(with = "hex_bytes", default)]
    pub to_backend: Vec<u8>,
    /// Read from the backend and not yet written to the client.
    #[serde(with = "hex_bytes", default)]
    pub to_client: Vec<u8>,
    /// The backend had answered nothing: the client's bytes are kept for
    /// a replay on another backend (in `replay`).
    #[serde(default)]
    pub replaying: bool,
    /// Everything the client sent, while `replaying`.
    #[serde(with = "hex_bytes", default)]
    pub replay: Vec<u8>,
}

impl ConnectionState {
    /// The state of a connection that parked with `unsent` bytes.
    pub fn new(
        client: (SocketAddr, Option<SocketAddr>),
        backend_key: u64,
        bytes: (u64, u64),
        unsent: Unsent,
    ) -> Self {
        ConnectionState {
            client_addr: client.0,
            client_local: client.1,
            backend_key,
            bytes,
            to_backend: unsent.to_backend,
            to_client: unsent.to_client,
            replaying: unsent.replay.is_some(),
            replay: unsent.replay.unwrap_or_default(),
        }
    }

    /// The bytes the next pump writes first.
    pub fn take_unsent(&mut self) -> Unsent {
        Unsent {
            to_backend: std::mem::take(&mut self.to_backend),
            to_client: std::mem::take(&mut self.to_client),
            replay: std::mem::take(&mut self.replaying).then(|| std::mem::take(&mut self.replay)),
        }
    }

    /// The backend had been sent bytes and had answered nothing: the
    /// first-byte deadline still runs.
    pub fn awaiting_answer(&self) -> bool {
        self.bytes.1 == 0 && (self.bytes.0 > 0 || !self.to_backend.is_empty())
    }
}

/// One parked connection, as the handover carries it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ParkedConnection {
    /// The client's socket (a descriptor in the process).
    pub client: RawFd,
    /// The backend's socket; `None`: a stateless connection parked between
    /// two requests, whose next request goes to whichever backend is
    /// picked then.
    pub backend: Option<RawFd>,
    #[serde(flatten)]
    pub state: ConnectionState,
}

/// A parked connection's sockets, owned until the handover.
struct Held {
    client: OwnedFd,
    backend: Option<OwnedFd>,
    state: ConnectionState,
}

/// The parking: the signal the pumps hear, and the sockets parked so far.
#[derive(Default)]
pub struct Parking {
    signal: CancellationToken,
    held: Mutex<Vec<Held>>,
}

impl Parking {
    /// The signal every pump hears: park at the next poll.
    pub fn signal(&self) -> &CancellationToken {
        &self.signal
    }

    /// The upgrade begins: every open connection parks.
    pub fn begin(&self) {
        self.signal.cancel();
    }

    /// Leaves a parked connection's sockets here (duplicates: the streams
    /// themselves are dropped by their task, and the sockets stay open).
    pub fn park(
        &self,
        client: &TcpStream,
        backend: Option<&TcpStream>,
        state: ConnectionState,
    ) -> std::io::Result<()> {
        let held = Held {
            client: client.as_fd().try_clone_to_owned()?,
            backend: backend
                .map(|backend| backend.as_fd().try_clone_to_owned())
                .transpose()?,
            state,
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
                    backend: h.backend.as_ref().map(|b| b.as_raw_fd()),
                    state: h.state,
                };
                fds.push(h.client);
                fds.extend(h.backend);
                connection
            })
            .collect();
        (connections, fds)
    }
}

/// A parked connection taken over by this image: its sockets, owned here.
pub struct Resumed {
    pub state: ConnectionState,
    pub client: OwnedFd,
    /// `None`: parked between two requests, without a backend.
    pub backend: Option<OwnedFd>,
}

impl Resumed {
    /// Takes over `parked`'s sockets: the descriptors themselves, not
    /// duplicates as for the listeners. A connection is two descriptors,
    /// and an image holding duplicates of thousands of them beside the
    /// originals would need twice the descriptor limit. So they are taken
    /// last, once nothing but the start of the proxy threads can fail and
    /// roll the upgrade back, and the release of the originals
    /// ([`crate::upgrade::adopt::release`]) leaves them alone.
    pub fn take(parked: &ParkedConnection) -> std::io::Result<Resumed> {
        let own = |fd: RawFd| -> std::io::Result<OwnedFd> {
            // Also checks that the descriptor is open.
            crate::fds::set_cloexec(fd, true)?;
            // SAFETY: the handover gave this descriptor to this image, once,
            // and nothing else here owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        Ok(Resumed {
            client: own(parked.client)?,
            backend: parked.backend.map(own).transpose()?,
            state: parked.state.clone(),
        })
    }
}

/// Bytes in the handover's JSON as one hex string, not an array of
/// numbers (a third of the size, and readable).
mod hex_bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let text: String = bytes
            .iter()
            .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
            .map(char::from)
            .collect();
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let digit = |c: u8| {
            char::from(c)
                .to_digit(16)
                .map(|d| d as u8)
                .ok_or_else(|| D::Error::custom(format!("{:?} is not a hex digit", char::from(c))))
        };
        let pairs = text.as_bytes().chunks(2);
        pairs
            .map(|pair| match pair {
                [high, low] => Ok(digit(*high)? << 4 | digit(*low)?),
                _ => Err(D::Error::custom("an odd number of hex digits")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsent_bytes_survive_the_handover_json() {
        let state = ConnectionState::new(
            ("127.0.0.1:5000".parse().unwrap(), None),
            7,
            (10, 0),
            Unsent {
                to_backend: vec![0, 1, 0xab, 0xff],
                to_client: Vec::new(),
                replay: Some(b"GET /".to_vec()),
            },
        );
        let parked = ParkedConnection {
            client: 9,
            backend: Some(10),
            state,
        };
        let json = serde_json::to_string(&parked).unwrap();
        assert!(json.contains("\"to_backend\":\"0001abff\""), "{json}");
        let back: ParkedConnection = serde_json::from_str(&json).unwrap();
        assert_eq!(back.state.to_backend, vec![0, 1, 0xab, 0xff]);
        let unsent = back.state.clone().take_unsent();
        assert_eq!(unsent.replay.as_deref(), Some(&b"GET /"[..]));
        assert!(back.state.to_client.is_empty());
        assert!(back.state.awaiting_answer());
        assert_eq!((back.client, back.backend), (9, Some(10)));
    }

    #[test]
    fn bad_hex_is_an_error() {
        let json = r#"{"client":1,"backend":2,"client_addr":"127.0.0.1:1","backend_key":1,"bytes":[0,0],"to_backend":"abc"}"#;
        assert!(serde_json::from_str::<ParkedConnection>(json).is_err());
        let json = json.replace("\"abc\"", "\"zz\"");
        assert!(serde_json::from_str::<ParkedConnection>(&json).is_err());
    }
}
