//! The front end, one type per mode of `workers.listen`, behind one enum.
//!
//! - [`Proxied`] (`workers.listen = "port"`, and every config without
//!   workers): corral accepts every client on its own sockets
//!   ([`crate::datapath`]) and proxies it to a backend; each worker listens
//!   on a port of its own.
//! - [`Handed`] (`workers.listen = "fd"`): corral hands each worker slot a
//!   listening socket of the front end and leaves the byte path; the kernel
//!   places clients on the slots ([`crate::steering`] is the mechanism).
//!
//! In the code the second mode is called *handed* (the workers are handed
//! their sockets), everywhere; `fd` is only its spelling in the config
//! file, on the command line and in what corral reports (`/status`'s
//! `mode`, log lines), which stay as [`crate::config::ListenMode`] spells
//! them.
//!
//! What differs between the modes is asked of [`Front`], never matched on
//! outside this module: where a worker instance is reached
//! ([`Front::worker_reach`]; probing follows the [`Reach`], in
//! [`crate::health`]), the status fields and metrics it can and cannot
//! know, the slot sockets' life (added, settled, closed), the drain, and
//! the background tasks (a handed front end re-steers and rescues clients
//! queued on slots out of rotation). The worker side of a mode (a port of
//! its own or the slot's socket) is the supervisor's `seat`.
//!
//! Why an enum and not a trait object: the set of modes is closed (the
//! config allows two), an exhaustive `match` in each method here turns a
//! forgotten mode into a compile error, and async and generic methods
//! (`settle`, `spawn_tasks`) need no boxing.

mod handed;
mod proxied;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

pub use handed::Handed;
pub use proxied::Proxied;

use crate::config::{ClientsConfig, Config, ListenMode, WorkersConfig};
use crate::pool::{Backend, Pool, Reach};
use crate::steering::intruders::Intruder;
use crate::steering::Host;

/// Why the front end could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    /// The strategy has no steering rule (validation refuses those).
    #[error("{0}")]
    Rule(#[source] io::Error),
    /// A handed front end's slot sockets could not be bound.
    #[error("cannot bind the front end (one socket per worker) to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The front end of the mode the config asks for.
pub enum Front {
    Proxied(Proxied),
    Handed(Handed),
}

impl Front {
    /// The front end for `config`: a handed one binds its slot sockets now
    /// (one per worker); a proxied one's listeners are the data path's
    /// ([`Front::proxies`]).
    pub fn bind(config: &Config) -> Result<Front, FrontError> {
        match config.workers.as_ref().map(|w| w.listen) {
            Some(ListenMode::Handed) => Ok(Front::Handed(Handed::bind(config)?)),
            Some(ListenMode::Proxied) | None => Ok(Front::Proxied(Proxied::new(config))),
        }
    }

    /// The front end for `config` from what an earlier image handed over
    /// (`corral upgrade`): a handed one takes `slots`, its slot sockets in
    /// slot order; a proxied one's listeners are the data path's.
    pub fn adopt(config: &Config, slots: Vec<socket2::Socket>) -> Result<Front, FrontError> {
        match config.workers.as_ref().map(|w| w.listen) {
            Some(ListenMode::Handed) => Ok(Front::Handed(Handed::adopt(config, slots)?)),
            Some(ListenMode::Proxied) | None => Ok(Front::Proxied(Proxied::new(config))),
        }
    }

    /// The slot sockets a handed front end holds, in slot order (what
    /// `corral upgrade` hands over besides the proxies' listeners); none
    /// for a proxied one.
    pub fn slot_fds(&self) -> Vec<std::os::fd::RawFd> {
        match self {
            Front::Proxied(_) => Vec::new(),
            Front::Handed(handed) => handed.slot_fds(),
        }
    }

    /// The mode, as the config spells it.
    pub fn mode(&self) -> ListenMode {
        match self {
            Front::Proxied(_) => ListenMode::Proxied,
            Front::Handed(_) => ListenMode::Handed,
        }
    }

    /// Does corral accept and proxy the clients itself (its listeners and
    /// proxy threads run)?
    pub fn proxies(&self) -> bool {
        match self {
            Front::Proxied(_) => true,
            Front::Handed(_) => false,
        }
    }

    /// The handed front end, for the worker side of that mode.
    pub fn handed(&self) -> Option<&Handed> {
        match self {
            Front::Proxied(_) => None,
            Front::Handed(handed) => Some(handed),
        }
    }

    /// How worker slot `id` is reached before its first process is ready.
    pub fn worker_reach(&self, id: usize, workers: &WorkersConfig) -> Reach {
        match self {
            Front::Proxied(proxied) => proxied.worker_reach(id, workers),
            Front::Handed(handed) => handed.worker_reach(id),
        }
    }

    /// The front-end addresses, for the start-up line.
    pub fn describe(&self) -> Vec<String> {
        match self {
            Front::Proxied(proxied) => proxied.describe(),
            Front::Handed(handed) => handed.describe(),
        }
    }

    /// Starts the front end's own background tasks.
    pub fn spawn_tasks<H: Host>(&self, host: &Arc<H>) {
        match self {
            Front::Proxied(_) => {}
            Front::Handed(handed) => handed.spawn_tasks(host),
        }
    }

    /// Slots up to `count` are about to start: a handed front end binds
    /// their sockets.
    pub fn add_slots(&self, count: usize) {
        match self {
            Front::Proxied(_) => {}
            Front::Handed(handed) => handed.add_slots(count),
        }
    }

    /// Waits until slots that left rotation have had what was queued for
    /// them served elsewhere (before [`Front::shrink_to`]).
    pub async fn settle(&self) {
        match self {
            Front::Proxied(_) => {}
            Front::Handed(_) => handed::settle().await,
        }
    }

    /// A worker process became ready (and is in the pool's rotation): a
    /// handed front end puts its slot in the steering program at once.
    pub fn worker_ready(&self) {
        match self {
            Front::Proxied(_) => {}
            Front::Handed(handed) => handed.worker_ready(),
        }
    }

    /// Slots `count..` are gone: a handed front end closes their sockets.
    pub fn shrink_to(&self, count: usize) {
        match self {
            Front::Proxied(_) => {}
            Front::Handed(handed) => handed.shrink_to(count),
        }
    }

    /// Applies a (re)loaded `[clients]` section where the front end
    /// enforces it: a handed one, in the kernel on every slot socket (the
    /// data path reads it from the snapshot).
    pub fn set_access(&self, clients: &ClientsConfig) {
        match self {
            Front::Proxied(_) => {}
            Front::Handed(handed) => handed.set_access(clients),
        }
    }

    /// The graceful stop began: no new client must be queued for workers
    /// about to stop (a proxied front end's accept loops stop on their
    /// own signal).
    pub fn stop_listening(&self) {
        match self {
            Front::Proxied(_) => {}
            Front::Handed(handed) => handed.stop_listening(),
        }
    }

    /// Every worker has stopped: the front end closes.
    pub fn close(&self) {
        match self {
            Front::Proxied(_) => {}
            Front::Handed(handed) => handed.close(),
        }
    }

    /// Does corral see each client connection (per-backend connection
    /// counts, the sticky table)? Not when the kernel hands them to the
    /// workers.
    pub fn sees_connections(&self) -> bool {
        match self {
            Front::Proxied(_) => true,
            Front::Handed(_) => false,
        }
    }

    /// Other processes listening on the front end (`/status`'s
    /// `intruders`), where the front end watches for them.
    pub fn intruders(&self) -> Option<Vec<Intruder>> {
        match self {
            Front::Proxied(_) => None,
            Front::Handed(handed) => Some(handed.intruders()),
        }
    }

    /// Adds to a backend's `/status` entry what the mode says of it.
    pub fn add_status(&self, backend: &Backend, entry: &mut serde_json::Value) {
        match self {
            Front::Proxied(_) => {}
            Front::Handed(handed) => handed.add_status(backend, entry),
        }
    }

    /// The metric families corral cannot know in this mode: left out of
    /// `/metrics` rather than shown as zeros.
    pub fn unknown_metrics(&self) -> &'static [&'static str] {
        match self {
            Front::Proxied(_) => &[],
            Front::Handed(_) => handed::UNKNOWN_METRICS,
        }
    }

    /// The clients waiting in each worker's own socket, by label, where
    /// the front end has such sockets.
    pub fn queue_lengths(&self, pool: &Pool) -> Option<Vec<(String, u32)>> {
        match self {
            Front::Proxied(_) => None,
            Front::Handed(handed) => Some(handed.queue_lengths(pool)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(listen: &str) -> Config {
        let text = format!(
            "[listener]\nbind = \"127.0.0.1:0\"\n[workers]\ncommand = [\"true\"]\ncount = 2\nport_base = 47000\nlisten = \"{listen}\"\n"
        );
        Config::parse(&text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn a_proxied_front_end_knows_every_figure_and_reaches_workers_on_their_ports() {
        let config = config("port");
        let front = Front::bind(&config).unwrap();
        assert_eq!(front.mode(), ListenMode::Proxied);
        assert!(front.proxies() && front.sees_connections());
        assert!(front.unknown_metrics().is_empty());
        assert!(front.intruders().is_none());
        let workers = config.workers.as_ref().unwrap();
        assert_eq!(
            front.worker_reach(1, workers),
            Reach::Own(SocketAddr::new(workers.host, workers.port(1, false)))
        );
    }

    #[test]
    fn a_handed_front_end_binds_a_socket_per_slot_and_reaches_workers_through_it() {
        let config = config("fd");
        let front = Front::bind(&config).unwrap();
        assert_eq!(front.mode(), ListenMode::Handed);
        assert!(!front.proxies() && !front.sees_connections());
        assert!(front
            .unknown_metrics()
            .contains(&crate::metrics::names::CONNECTIONS));
        let handed = front.handed().unwrap();
        assert!(handed.socket_for(0).is_some() && handed.socket_for(1).is_some());
        let workers = config.workers.as_ref().unwrap();
        let Reach::Handed(via) = front.worker_reach(1, workers) else {
            panic!("a handed worker has no address of its own");
        };
        assert_eq!(via.front.port(), handed.addr().port());
        assert_eq!(via.from, crate::steering::probe_source(1));
    }
}
