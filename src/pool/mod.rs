//! Every backend corral can send a client to. The set of backends is an
//! immutable [`Pool`], published together with the config it was built
//! from as one [`Snapshot`]: a connection that loads the snapshot sees a
//! config and a pool that belong together, even during a reload. Each
//! [`Backend`] inside changes state only through the named transitions of
//! its state machine (in [`backend`]), so the hot path takes no lock.
//! Each instance behind a backend says how it is reached ([`Reach`]: its
//! own address, or a handed worker's way through the front end); how a
//! new worker slot is reached before its first process is ready, the
//! front end says ([`ReachOf`]).

pub(crate) mod backend;
pub mod ring;

use std::net::SocketAddr;
use std::sync::Arc;

pub(crate) use crate::reach::{Reach, ViaFront};
pub(crate) use backend::{
    ActiveGuard, BackendState, CarriedHealth, DownReason, HealthChange, Instance,
};
pub use backend::{Backend, Kind};

use crate::config::{Config, SendProxy, WorkersConfig};
use crate::metrics::Metrics;
use ring::Ring;

/// One immutable set of backends, the ring placed over them, and what the
/// config that built it says about each (read from here, never copied
/// into the backends, which the previous pool may share).
pub struct Pool {
    /// The backends, workers first; a backend's index here is what
    /// dispatch returns and what the ring and `send_proxy` are indexed by.
    pub backends: Vec<Arc<Backend>>,
    pub(crate) ring: Ring,
    /// `send_proxy[i]`: the PROXY header backend `i` is sent.
    send_proxy: Vec<SendProxy>,
}

impl Pool {
    /// A pool of `backends` that are sent no PROXY header.
    pub fn new(backends: Vec<Arc<Backend>>) -> Pool {
        let plain = vec![SendProxy::None; backends.len()];
        Pool::with_send_proxy(backends, plain)
    }

    fn with_send_proxy(backends: Vec<Arc<Backend>>, send_proxy: Vec<SendProxy>) -> Pool {
        let keys: Vec<u64> = backends.iter().map(|b| b.key).collect();
        Pool {
            ring: Ring::new(&keys),
            backends,
            send_proxy,
        }
    }

    /// The PROXY header backend `index` wants in front of each connection.
    #[inline]
    pub(crate) fn send_proxy(&self, index: usize) -> SendProxy {
        self.send_proxy
            .get(index)
            .copied()
            .unwrap_or(SendProxy::None)
    }

    /// The pool for `config`, keeping every backend of `previous` that is
    /// still configured (same label, and for static backends the same
    /// address), so their state, counters and open connections carry over a
    /// reload. A new worker slot `id` is reached by `reach_of(id)` (the
    /// front end's mode says how) until its first process is ready.
    pub(crate) fn assemble(
        config: &Config,
        metrics: &Metrics,
        previous: Option<&Pool>,
        reach_of: &ReachOf<'_>,
    ) -> Pool {
        let keep = |label: &str, addr: Option<SocketAddr>| {
            previous?
                .by_label(label)
                .filter(|b| addr.is_none_or(|a| b.instance().reach.own() == Some(a)))
                .cloned()
        };
        let mut backends = Vec::new();
        let mut send_proxy = Vec::new();
        if let Some(workers) = &config.workers {
            for id in 0..workers.count {
                let label = crate::labels::worker_label(id);
                let backend = keep(&label, None).unwrap_or_else(|| {
                    Backend::reached_by(label, Kind::Worker(id), reach_of(id, workers), metrics)
                });
                send_proxy.push(workers.send_proxy);
                backends.push(backend);
            }
        }
        for b in &config.backends {
            let backend = keep(&b.name, Some(b.address))
                .unwrap_or_else(|| Backend::new(b.name.clone(), Kind::Static, b.address, metrics));
            send_proxy.push(b.send_proxy);
            backends.push(backend);
        }
        Pool::with_send_proxy(backends, send_proxy)
    }

    /// The index of the backend whose label hashes to `key`.
    #[inline]
    pub(crate) fn index_of(&self, key: u64) -> Option<usize> {
        self.backends.iter().position(|b| b.key == key)
    }

    pub(crate) fn by_label(&self, label: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.label == label)
    }

    pub(crate) fn any_up(&self) -> bool {
        self.backends.iter().any(|b| b.is_up())
    }

    /// The backends that are corral's worker processes (not
    /// `[[backends]]`), in slot order.
    pub(crate) fn worker_backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.backends
            .iter()
            .filter(|b| matches!(b.kind, Kind::Worker(_)))
    }
}

/// How worker slot `id` of `workers` is reached before its first process
/// is ready ([`crate::front::Front::worker_reach`]).
pub(crate) type ReachOf<'a> = dyn Fn(usize, &WorkersConfig) -> Reach + 'a;

/// The config in force and the pool built from it, published together.
pub(crate) struct Snapshot {
    pub(crate) config: Arc<Config>,
    pub(crate) pool: Pool,
}

impl Snapshot {
    /// The first snapshot, at start.
    pub(crate) fn first(config: Config, metrics: &Metrics, reach_of: &ReachOf<'_>) -> Snapshot {
        let pool = Pool::assemble(&config, metrics, None, reach_of);
        Snapshot {
            config: Arc::new(config),
            pool,
        }
    }

    /// The snapshot a reload to `config` publishes: backends still
    /// configured carry over from this one.
    pub(crate) fn next(
        &self,
        config: Arc<Config>,
        metrics: &Metrics,
        reach_of: &ReachOf<'_>,
    ) -> Snapshot {
        let pool = Pool::assemble(&config, metrics, Some(&self.pool), reach_of);
        Snapshot { config, pool }
    }
}
