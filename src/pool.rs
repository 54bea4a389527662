//! Every backend corral can send a client to, with its state and counters:
//! one shared view that the supervisor, the health checks and reloads write
//! and that dispatch only reads. The set of backends is an immutable [`Pool`]
//! swapped atomically on reload; each [`Backend`] inside it changes state
//! through atomics, so the hot path takes no lock.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::SendProxy;
use crate::dispatch::ring::Ring;
use crate::metrics::{BackendMetrics, Metrics};

/// A backend's lifecycle, as `/status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// A worker that was spawned and does not accept connections yet.
    Starting = 0,
    /// In rotation.
    Up = 1,
    /// Crashed, not ready, or failing its health checks.
    Down = 2,
    /// Finishing its open connections before it stops; no new ones.
    Draining = 3,
    /// Stopped on purpose (shutdown or scale-down).
    Stopped = 4,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Up => "up",
            State::Down => "down",
            State::Draining => "draining",
            State::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Starting,
            1 => State::Up,
            2 => State::Down,
            3 => State::Draining,
            _ => State::Stopped,
        }
    }
}

/// What a backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Worker slot `id`, a process corral spawns.
    Worker(usize),
    /// A `[[backends]]` entry.
    Static,
}

/// One process (or static address) behind a backend. A worker slot gets a
/// new instance on every restart; connections hold the instance they were
/// opened to, so a rolling restart can wait for the old one to drain.
#[derive(Debug)]
pub struct Instance {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    active: AtomicUsize,
}

impl Instance {
    pub fn new(addr: SocketAddr, pid: Option<u32>) -> Arc<Instance> {
        Arc::new(Instance {
            addr,
            pid,
            active: AtomicUsize::new(0),
        })
    }

    /// Connections open to this very process.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// A backend: a worker slot or a static address.
pub struct Backend {
    /// `worker-<id>` or the static backend's name; the metric label.
    pub label: String,
    /// A process-independent hash of the label: the ring and the sticky table
    /// refer to backends by it, so it survives reloads.
    pub key: u64,
    pub kind: Kind,
    lifecycle: AtomicU8,
    /// False after `fall` failed checks (or a failed connect), true again
    /// after `rise` good ones.
    healthy: AtomicBool,
    current: ArcSwap<Instance>,
    restarts: AtomicU64,
    active: AtomicUsize,
    /// Consecutive health-check results in the current direction.
    pub streak: AtomicU32,
    /// When it last turned unhealthy (clock ms), 0 while healthy.
    unhealthy_since_ms: AtomicU64,
    /// Which PROXY header this backend is sent (a `SendProxy` as u8).
    send_proxy: AtomicU8,
    pub metrics: BackendMetrics,
}

impl Backend {
    pub fn new(label: String, kind: Kind, addr: SocketAddr, metrics: &Metrics) -> Arc<Backend> {
        let lifecycle = match kind {
            Kind::Worker(_) => State::Starting,
            Kind::Static => State::Up,
        };
        let backend = Backend {
            key: label_key(&label),
            metrics: metrics.backend(&label),
            label,
            kind,
            lifecycle: AtomicU8::new(lifecycle as u8),
            healthy: AtomicBool::new(true),
            current: ArcSwap::from(Instance::new(addr, None)),
            restarts: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            streak: AtomicU32::new(0),
            send_proxy: AtomicU8::new(SendProxy::None as u8),
            unhealthy_since_ms: AtomicU64::new(0),
        };
        backend.publish_up();
        Arc::new(backend)
    }

    /// The state `/status` shows: the lifecycle, or `down` when a running
    /// backend fails its checks.
    pub fn state(&self) -> State {
        let lifecycle = State::from_u8(self.lifecycle.load(Ordering::Acquire));
        if lifecycle == State::Up && !self.healthy.load(Ordering::Acquire) {
            State::Down
        } else {
            lifecycle
        }
    }

    /// The PROXY header this backend wants in front of each connection.
    pub fn send_proxy(&self) -> SendProxy {
        match self.send_proxy.load(Ordering::Relaxed) {
            1 => SendProxy::V1,
            2 => SendProxy::V2,
            _ => SendProxy::None,
        }
    }

    pub fn set_send_proxy(&self, version: SendProxy) {
        self.send_proxy.store(version as u8, Ordering::Relaxed);
    }

    /// The lifecycle alone, ignoring health checks.
    pub fn lifecycle(&self) -> State {
        State::from_u8(self.lifecycle.load(Ordering::Acquire))
    }

    /// In rotation: running, ready and passing its checks.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.lifecycle.load(Ordering::Acquire) == State::Up as u8
            && self.healthy.load(Ordering::Acquire)
    }

    pub fn set_lifecycle(&self, state: State) {
        self.lifecycle.store(state as u8, Ordering::Release);
        self.publish_up();
    }

    /// Marks the backend healthy or not; returns true if that changed it.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let changed = self.healthy.swap(healthy, Ordering::AcqRel) != healthy;
        if changed {
            let since = if healthy {
                0
            } else {
                crate::clock::now_ms().max(1)
            };
            self.unhealthy_since_ms.store(since, Ordering::Relaxed);
        }
        self.publish_up();
        changed
    }

    /// How long the backend has been failing its checks, if it is.
    pub fn unhealthy_for(&self) -> Option<std::time::Duration> {
        match self.unhealthy_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(std::time::Duration::from_millis(
                crate::clock::now_ms().saturating_sub(since),
            )),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn publish_up(&self) {
        self.metrics.up.set(i64::from(self.is_up()));
    }

    /// The instance new connections go to.
    pub fn instance(&self) -> Arc<Instance> {
        self.current.load_full()
    }

    /// Points new connections at `instance` and returns the one it replaces.
    pub fn switch_to(&self, instance: Arc<Instance>) -> Arc<Instance> {
        self.current.swap(instance)
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.metrics.restarts.inc();
    }

    /// Open client connections to this backend, all instances together.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a connection to `instance` as open until the guard drops.
    pub fn open(self: &Arc<Self>, instance: Arc<Instance>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        instance.active.fetch_add(1, Ordering::Relaxed);
        self.metrics.active.inc();
        self.metrics.connections.inc();
        ActiveGuard {
            backend: Arc::clone(self),
            instance,
        }
    }
}

/// Keeps a backend's and an instance's open-connection counts right, however
/// the connection ends.
pub struct ActiveGuard {
    pub backend: Arc<Backend>,
    pub instance: Arc<Instance>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.backend.active.fetch_sub(1, Ordering::Relaxed);
        self.instance.active.fetch_sub(1, Ordering::Relaxed);
        self.backend.metrics.active.dec();
    }
}

/// The fixed-key hash of a backend label: the same in every corral process.
pub fn label_key(label: &str) -> u64 {
    hashring::DefaultHashBuilder.hash_one(label)
}

/// One immutable set of backends and the ring placed over them.
pub struct Pool {
    pub backends: Vec<Arc<Backend>>,
    pub ring: Ring,
}

impl Pool {
    pub fn new(backends: Vec<Arc<Backend>>) -> Pool {
        let keys: Vec<u64> = backends.iter().map(|b| b.key).collect();
        Pool {
            ring: Ring::new(&keys),
            backends,
        }
    }

    /// The index of the backend whose label hashes to `key`.
    #[inline]
    pub fn index_of(&self, key: u64) -> Option<usize> {
        self.backends.iter().position(|b| b.key == key)
    }

    pub fn by_label(&self, label: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.label == label)
    }

    pub fn any_up(&self) -> bool {
        self.backends.iter().any(|b| b.is_up())
    }
}

/// The current pool, swapped whole on reload.
pub type SharedPool = ArcSwap<Pool>;

impl Pool {
    /// The pool for `config`, keeping every backend of `previous` that is
    /// still configured (same label, and for static backends the same
    /// address), so their state, counters and open connections carry over a
    /// reload.
    pub fn assemble(config: &crate::config::Config, metrics: &Metrics, previous: &Pool) -> Pool {
        let keep = |label: &str, addr: Option<SocketAddr>| {
            previous
                .by_label(label)
                .filter(|b| addr.is_none_or(|a| b.instance().addr == a))
                .cloned()
        };
        let mut backends = Vec::new();
        if let Some(workers) = &config.workers {
            for id in 0..workers.count {
                let label = crate::config::worker_label(id);
                let backend = keep(&label, None).unwrap_or_else(|| {
                    let addr = SocketAddr::new(workers.host, workers.port(id, false));
                    Backend::new(label, Kind::Worker(id), addr, metrics)
                });
                backend.set_send_proxy(workers.send_proxy);
                backends.push(backend);
            }
        }
        for b in &config.backends {
            let backend = keep(&b.name, Some(b.address))
                .unwrap_or_else(|| Backend::new(b.name.clone(), Kind::Static, b.address, metrics));
            backend.set_send_proxy(b.send_proxy);
            backends.push(backend);
        }
        Pool::new(backends)
    }
}
