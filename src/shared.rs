//! The state every part of the master shares, each piece with one owner:
//!
//! - the [`Snapshot`] (config and pool, swapped together): published only
//!   by [`Shared::publish`], which start-up and reloads call;
//! - the dispatcher (round-robin counter, sticky table): dispatch's own;
//!   its limits are the snapshot's `[sticky]`, passed with each call;
//! - the per-client table: [`crate::clients`]' own; its limits are the
//!   snapshot's `[clients]`, passed with each call;
//! - the metrics registry: written through the handles it hands out; the
//!   workers' own metrics are fetched through one shared single flight;
//! - what `/proc` says of the workers' processes: the [`Sampler`]'s own
//!   (its thread makes every pass; everyone else reads them);
//! - the front end of the mode in force ([`Front`]: proxied, or handed
//!   with its slot sockets and steering program): its own;
//! - the process's lifecycle (bound, draining, the stop and cut tokens,
//!   the open connections and the accept loops): changed only by the
//!   lifecycle in [`crate::control::lifecycle`], through the named
//!   operations here (the tokens are private: others wait on them, never
//!   cancel them);
//! - the parking of open connections for `corral upgrade`: the data
//!   path's (`datapath::parked`), begun and emptied by the upgrade.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::WaitForCancellationFuture;
use tokio_util::task::TaskTracker;

use crate::clients::ClientTable;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::front::Front;
use crate::metrics::Metrics;
use crate::pool::Snapshot;
use crate::sampler::Sampler;
use crate::signal::Signal;

/// The one value behind an `Arc` that the accept loops, the connections,
/// the supervisor, the health checks and the admin server all hold: what
/// more than one of them reads. Each field says who owns it.
pub struct Shared {
    /// The config and the pool built from it, swapped whole by a reload
    /// ([`Shared::publish`]) so a connection reads one consistent pair.
    current: ArcSwap<Snapshot>,
    /// Picks a backend per connection (port mode): the strategy's state,
    /// the sticky table among it, outlives any one snapshot.
    pub dispatcher: Dispatcher,
    /// The per-client table (`[clients]`): each client's open connections
    /// and recent rate, for the limits at the front door. Here, not in a
    /// snapshot, so a reload keeps what it counted.
    pub clients: ClientTable,
    /// Every Prometheus family corral exports; counters never go back, so
    /// they live here rather than in a snapshot.
    pub metrics: Metrics,
    /// The fetch of the workers' own metrics that concurrent `/metrics`
    /// requests share, so N scrapes at once cost the workers one fetch.
    pub worker_metrics: crate::metrics::scrape::SingleFlight,
    /// The last pass over `/proc` (CPU, memory, exiting processes, the
    /// sockets a worker's tree holds), made on the sampler's own thread.
    pub sampler: Sampler,
    /// The front end, of the mode `workers.listen` asks for: whatever
    /// differs between the modes is asked of it.
    pub front: Front,
    /// Every proxied connection (rescued clients' relays included), so the
    /// graceful stop can wait for them to finish.
    connections: TaskTracker,
    /// Every accept loop of the proxy threads, so an upgrade can wait until
    /// none accepts any more before it counts the open connections.
    accept_loops: TaskTracker,
    /// Connections parked for `corral upgrade`, and the signal that asks
    /// for it: every pump hears it, so it lives where they all can reach.
    pub parking: crate::datapath::parked::Parking,
    /// Fired when the front end must stop accepting (graceful stop), by
    /// [`Shared::stop_accepting`] only.
    stop_accepting: Signal,
    /// Fired when open connections must be cut (drain over, or a second
    /// stop signal), by [`Shared::cut_connections`] only.
    cut_connections: Signal,
    /// The front end is bound, set once by the lifecycle: `/readyz` says
    /// not ready before it, whatever the backends.
    bound: AtomicBool,
    /// A graceful stop has begun (`/readyz` answers 503), set once.
    draining: AtomicBool,
}

impl Shared {
    /// The shared state for `config` behind `front`, its pool built at
    /// once.
    pub fn new(config: Config, front: Front, sampler: Sampler) -> Arc<Shared> {
        let metrics = Metrics::new();
        let first = Snapshot::first(config, &metrics, &|id, w| front.worker_reach(id, w));
        Arc::new(Shared {
            dispatcher: Dispatcher::new(),
            clients: ClientTable::new(),
            current: ArcSwap::from_pointee(first),
            front,
            sampler,
            metrics,
            worker_metrics: Default::default(),
            connections: TaskTracker::new(),
            accept_loops: TaskTracker::new(),
            parking: Default::default(),
            stop_accepting: Signal::default(),
            cut_connections: Signal::default(),
            bound: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }

    /// The config and pool in force, as one consistent view.
    #[inline]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.current.load().config)
    }

    /// Publishes a new config with the pool built from it (a reload).
    /// Returns the snapshot it replaced. The sticky and per-client tables
    /// keep no copy of their limits (every call reads them from the
    /// snapshot it is given), so nothing is written into them here; a lower
    /// `clients.max_tracked` only wakes the client sweeper.
    pub fn publish(&self, config: Arc<Config>) -> Arc<Snapshot> {
        self.front.set_access(&config.clients);
        let reach_of = |id, workers: &_| self.front.worker_reach(id, workers);
        let next = self
            .current
            .load()
            .next(Arc::clone(&config), &self.metrics, &reach_of);
        let previous = self.current.swap(Arc::new(next));
        self.clients.bound_changed(&config.clients);
        previous
    }

    /// The graceful stop begins: the front end stops accepting.
    pub(crate) fn stop_accepting(&self) {
        self.stop_accepting.fire();
    }

    /// The drain is over (or a second stop signal came): open connections
    /// are cut.
    pub(crate) fn cut_connections(&self) {
        self.cut_connections.fire();
    }

    /// Resolves once the front end stops accepting.
    pub fn accepting_stopped(&self) -> WaitForCancellationFuture<'_> {
        self.stop_accepting.fired()
    }

    /// Resolves once open connections must be cut.
    pub fn connections_cut(&self) -> WaitForCancellationFuture<'_> {
        self.cut_connections.fired()
    }

    /// The stop-accepting signal, for code that watches it on every poll
    /// (a stateless pump). Only [`Shared::stop_accepting`] fires it.
    pub(crate) fn stop_signal(&self) -> &Signal {
        &self.stop_accepting
    }

    /// The cut signal, for code that watches it on every poll (the pump).
    /// Only [`Shared::cut_connections`] fires it.
    pub(crate) fn cut_signal(&self) -> &Signal {
        &self.cut_connections
    }

    /// The front end is bound: `/readyz` may say ready from now on.
    pub(crate) fn set_bound(&self) {
        self.bound.store(true, Ordering::Release);
    }

    /// The graceful stop has begun: `/readyz` answers 503 from now on.
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Has the graceful stop begun?
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The proxy threads' accept loops (the listeners add to it; an
    /// upgrade closes it and waits until none accepts).
    pub fn accept_loops(&self) -> &TaskTracker {
        &self.accept_loops
    }

    /// The open connections (the listeners and rescues add to it; the
    /// graceful stop closes it and waits).
    pub fn connections(&self) -> &TaskTracker {
        &self.connections
    }

    /// `/readyz`: bound, not draining, and at least one backend up.
    pub fn is_ready(&self) -> bool {
        self.bound.load(Ordering::Acquire) && !self.is_draining() && self.snapshot().pool.any_up()
    }
}

#[cfg(test)]
impl Shared {
    /// The shared state of a proxied corral running `config` (TOML), for
    /// unit tests: its sampler samples once an hour.
    pub(crate) fn for_test(config: &str) -> Arc<Shared> {
        let config = Config::parse(config, std::path::Path::new("test.toml")).unwrap();
        let sampler = Sampler::start_every(std::time::Duration::from_secs(3600)).unwrap();
        let front = Front::Proxied(crate::front::Proxied::new(&config));
        Shared::new(config, front, sampler)
    }
}
