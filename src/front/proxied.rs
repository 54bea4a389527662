//! The proxied front end (`workers.listen = "port"`, and every config
//! without workers): corral accepts each client on its own listeners and
//! proxies it to a backend ([`crate::datapath`] owns those sockets and the
//! byte path). Each worker listens on a port of its own, the address it
//! is reached at.

use std::net::SocketAddr;

use crate::config::{Config, WorkersConfig};
use crate::pool::Reach;

/// What the proxied front end is: the addresses its listeners bind.
pub struct Proxied {
    /// `listener.bind`, for the start-up line.
    binds: Vec<SocketAddr>,
}

impl Proxied {
    pub fn new(config: &Config) -> Proxied {
        Proxied {
            binds: config.listener.binds.clone(),
        }
    }

    /// Slot `id`'s worker listens on its first port until it is started.
    pub fn worker_reach(&self, id: usize, workers: &WorkersConfig) -> Reach {
        Reach::Own(SocketAddr::new(workers.host, workers.port(id, false)))
    }

    pub fn describe(&self) -> Vec<String> {
        self.binds.iter().map(|a| a.to_string()).collect()
    }
}
