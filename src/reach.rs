//! How corral reaches one backend instance (a leaf: the pool, the checks
//! and the metrics scrape read it), in the two front-end modes
//! ([`crate::front`]): a proxied worker or a static backend listens on an
//! address of its own; a handed worker has none, and is reached through
//! the front end from the source address the steering program sends to its
//! slot. The two are distinct types, so a worker's own address and the
//! front end's cannot be mistaken for one another.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

/// Where a backend instance takes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Its own listening address: a proxied worker's port, or a static
    /// backend's address.
    Own(SocketAddr),
    /// A handed worker (`workers.listen = "fd"`): reached only through the
    /// front end.
    Handed(ViaFront),
}

/// A handed worker's way in: the front end, connected to from the source
/// address whose connections the steering program places on the worker's
/// slot socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViaFront {
    /// Where corral connects to reach the front end's socket group (the
    /// front end, loopback when it listens on every address).
    pub front: SocketAddr,
    /// The source address to connect from.
    pub from: Ipv4Addr,
}

impl Reach {
    /// The instance's own listening address, when it has one.
    pub fn own(&self) -> Option<SocketAddr> {
        match self {
            Reach::Own(addr) => Some(*addr),
            Reach::Handed(_) => None,
        }
    }

    /// The address a connection to the instance goes to (`/status`'s
    /// `address`, the `Host` of a request): its own, or the front end's.
    pub fn target(&self) -> SocketAddr {
        match self {
            Reach::Own(addr) => *addr,
            Reach::Handed(via) => via.front,
        }
    }

    /// A connection to the instance.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        match self {
            Reach::Own(addr) => TcpStream::connect(*addr).await,
            Reach::Handed(via) => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(via.from.into(), 0))?;
                socket.connect(via.front).await
            }
        }
    }
}

impl fmt::Display for Reach {
    /// The address connections go to ([`Reach::target`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.target().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handed_reach_connects_to_the_front_end_from_its_source() {
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = front.local_addr().unwrap();
        let from = Ipv4Addr::new(127, 254, 0, 7);
        let reach = Reach::Handed(ViaFront { front: addr, from });
        assert_eq!(reach.own(), None);
        assert_eq!(reach.to_string(), addr.to_string());
        let (_stream, accepted) = tokio::join!(reach.connect(), front.accept());
        let (_, peer) = accepted.unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(from));
    }

    #[tokio::test]
    async fn an_own_reach_is_its_address() {
        let worker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = worker.local_addr().unwrap();
        let reach = Reach::Own(addr);
        assert_eq!(reach.own(), Some(addr));
        assert_eq!(reach.target(), addr);
        let (stream, accepted) = tokio::join!(reach.connect(), worker.accept());
        assert_eq!(
            stream.unwrap().local_addr().unwrap(),
            accepted.unwrap().1,
            "the worker accepted this very connection"
        );
    }
}
