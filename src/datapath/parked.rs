//! Connections parked for `corral upgrade`: when the upgrade asks
//! ([`Parking::begin`]), each open connection's pump stops at its next
//! poll and its two sockets are left here, open, with the bytes it had
//! read and not yet written and how far its timers had run, instead of
//! being closed. A `workers.stateless` connection between two requests
//! parks only its client's socket: its backend connection ends there, as
//! when it moves to another backend; one with a request in flight parks
//! with its backend and its HTTP/1.x view. The upgrade hands them to the
//! next image, which writes those bytes first and pumps on
//! ([`super::connection::resume`]): bytes the kernel
//! holds in the sockets' buffers meanwhile are read there, so nothing is
//! lost, nothing is sent twice, and no connection is reset.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpStream;

use super::http1::Exchange;
use super::pump::Unsent;
use crate::hex_bytes;
use crate::signal::Signal;
use crate::steering::Relay;

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
    /// Milliseconds no byte had moved: the idle timeout counts on.
    #[serde(default)]
    pub quiet_ms: u64,
    /// Milliseconds the backend had been sent bytes and answered nothing:
    /// the first-byte timeout counts on.
    #[serde(default)]
    pub awaiting_ms: Option<u64>,
    /// A `workers.stateless` connection parked with a request in flight
    /// (with its backend): its HTTP/1.x view, so that it can still move to
    /// another backend once that request is answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<Box<Exchange>>,
    /// The client's PROXY header had not all come when it parked: the
    /// bytes of it read so far (the client has no backend yet, and was
    /// not yet admitted by the per-client limits).
    #[serde(
        with = "hex_bytes::optional",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub proxy_header: Option<Vec<u8>>,
    /// fd mode: a client corral relays off a slot out of rotation, to this
    /// address rather than to a backend of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<Relay>,
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
            quiet_ms: unsent.quiet.as_millis() as u64,
            awaiting_ms: unsent.awaiting.map(|d| d.as_millis() as u64),
            exchange: None,
            proxy_header: None,
            relay: None,
        }
    }

    /// The state of a relayed client (fd mode's rescues).
    pub fn with_relay(self, relay: Relay) -> Self {
        ConnectionState {
            relay: Some(relay),
            ..self
        }
    }

    /// The state of a client parked before its PROXY header was complete
    /// (`so_far`: the bytes of it read).
    pub fn before_header(peer: SocketAddr, so_far: Vec<u8>) -> Self {
        ConnectionState {
            proxy_header: Some(so_far),
            ..ConnectionState::new((peer, None), 0, (0, 0), Unsent::default())
        }
    }

    /// The state of a stateless connection parked with a request in
    /// flight, whose HTTP/1.x view is `exchange`.
    pub fn with_exchange(self, exchange: Option<Box<Exchange>>) -> Self {
        ConnectionState { exchange, ..self }
    }

    /// The bytes the next pump writes first.
    pub fn take_unsent(&mut self) -> Unsent {
        Unsent {
            to_backend: std::mem::take(&mut self.to_backend),
            to_client: std::mem::take(&mut self.to_client),
            replay: std::mem::take(&mut self.replaying).then(|| std::mem::take(&mut self.replay)),
            quiet: Duration::from_millis(self.quiet_ms),
            awaiting: self.awaiting_ms.map(Duration::from_millis),
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
    signal: Signal,
    held: Mutex<Vec<Held>>,
}

impl Parking {
    /// The signal every pump hears: park at the next poll.
    pub fn signal(&self) -> &Signal {
        &self.signal
    }

    /// The upgrade begins: every open connection parks.
    pub fn begin(&self) {
        self.signal.fire();
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
                ..Unsent::default()
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

    /// A stateless request in flight: its HTTP/1.x view goes across and
    /// goes on where it was (the answer completes the exchange); a half
    /// PROXY header and the timers go across too.
    #[test]
    fn an_exchange_in_flight_and_a_half_header_survive_the_handover_json() {
        let mut exchange = Box::new(Exchange::new());
        exchange.client_sent(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
        exchange.backend_sent(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab");
        let unsent = Unsent {
            quiet: Duration::from_millis(1500),
            awaiting: Some(Duration::from_millis(20)),
            ..Unsent::default()
        };
        let state = ConnectionState::new(
            ("127.0.0.1:5000".parse().unwrap(), None),
            3,
            (40, 42),
            unsent,
        )
        .with_exchange(Some(exchange));
        let json = serde_json::to_string(&state).unwrap();
        let mut back: ConnectionState = serde_json::from_str(&json).unwrap();
        let mut exchange = back.exchange.take().expect("the exchange went across");
        assert!(!exchange.is_idle());
        exchange.backend_sent(b"cde");
        assert!(
            exchange.is_idle(),
            "the answer did not complete the exchange"
        );
        let unsent = back.take_unsent();
        assert_eq!(unsent.quiet, Duration::from_millis(1500));
        assert_eq!(unsent.awaiting, Some(Duration::from_millis(20)));

        let half =
            ConnectionState::before_header("10.0.0.1:7".parse().unwrap(), b"PROXY TCP4 ".to_vec());
        let json = serde_json::to_string(&half).unwrap();
        let back: ConnectionState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.proxy_header.as_deref(), Some(&b"PROXY TCP4 "[..]));
        // A connection without one says nothing of it.
        let json = serde_json::to_string(&state_without_extras()).unwrap();
        assert!(
            !json.contains("proxy_header") && !json.contains("exchange"),
            "{json}"
        );
    }

    fn state_without_extras() -> ConnectionState {
        ConnectionState::new(
            ("127.0.0.1:1".parse().unwrap(), None),
            1,
            (0, 0),
            Unsent::default(),
        )
    }

    #[test]
    fn bad_hex_is_an_error() {
        let json = r#"{"client":1,"backend":2,"client_addr":"127.0.0.1:1","backend_key":1,"bytes":[0,0],"to_backend":"abc"}"#;
        assert!(serde_json::from_str::<ParkedConnection>(json).is_err());
        let json = json.replace("\"abc\"", "\"zz\"");
        assert!(serde_json::from_str::<ParkedConnection>(&json).is_err());
    }
}
