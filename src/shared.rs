//! The state every part of the master shares: the current config and pool,
//! the dispatcher, the metrics, and the process's lifecycle flags. One
//! `Arc<Shared>` is handed to the listener, the supervisor, the health
//! checks, the admin server and the control loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::pool::{Pool, SharedPool};

pub struct Shared {
    /// The config in force; replaced whole by a successful reload.
    pub config: ArcSwap<Config>,
    pub pool: SharedPool,
    pub dispatcher: Dispatcher,
    pub metrics: Metrics,
    /// Every proxied connection, so shutdown can wait for them to finish.
    pub connections: TaskTracker,
    /// Cancelled when the front end must stop accepting (graceful stop).
    pub stop_accepting: CancellationToken,
    /// Cancelled when open connections must be cut (drain over, or a second
    /// stop signal).
    pub cut_connections: CancellationToken,
    bound: AtomicBool,
    draining: AtomicBool,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        // The pool is filled by the caller: backends need the metrics to exist.
        Arc::new(Shared {
            dispatcher: Dispatcher::new(&config.sticky),
            config: ArcSwap::from_pointee(config),
            pool: ArcSwap::from_pointee(Pool::new(Vec::new())),
            metrics: Metrics::new(),
            connections: TaskTracker::new(),
            stop_accepting: CancellationToken::new(),
            cut_connections: CancellationToken::new(),
            bound: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }

    pub fn set_bound(&self) {
        self.bound.store(true, Ordering::Release);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// `/readyz`: bound, not draining, and at least one backend up.
    pub fn is_ready(&self) -> bool {
        self.bound.load(Ordering::Acquire) && !self.is_draining() && self.pool.load().any_up()
    }
}
