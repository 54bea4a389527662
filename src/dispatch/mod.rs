//! Choosing a backend for a client: round-robin, least-connections, or
//! sticky by client IP. A choice skips backends that are down and those
//! already tried for this client, so a failed connect moves on to the next
//! candidate and every backend is tried at most once.

pub mod sticky;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{StickyConfig, StrategyKind};
use crate::metrics::Metrics;
use crate::pool::ring::Ring;
use crate::pool::Pool;
use sticky::{ClientKey, Lookup, StickyTable};

/// Backends already tried for one client. Allocates only on a retry.
#[derive(Debug, Default)]
pub struct Tried(Vec<usize>);

impl Tried {
    #[inline]
    pub(crate) fn contains(&self, index: usize) -> bool {
        self.0.contains(&index)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, index: usize) {
        self.0.push(index);
    }
}

/// What placed a client, when the strategy is sticky.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlacedBy {
    /// By its live table entry.
    Entry,
    /// By the ring (a new client, or its entry's backend is down).
    Ring,
}

/// The dispatch state that outlives reloads: counters and the sticky
/// table. Its settings (the strategy, `[sticky]`) are the snapshot's,
/// passed to each call.
#[derive(Default)]
pub struct Dispatcher {
    next: AtomicUsize,
    /// Which backend each sticky client is on. Kept across reloads (a
    /// client stays put when the config changes) and handed over on an
    /// upgrade; public for the benches, which fill and read it directly.
    pub sticky: StickyTable,
}

impl Dispatcher {
    /// A dispatcher with its counter at the first backend and an empty
    /// sticky table.
    pub fn new() -> Dispatcher {
        Dispatcher::default()
    }

    /// The index of the backend to try next for this client, or `None` when
    /// no untried backend is up. `sticky`: the snapshot's `[sticky]`.
    #[inline]
    pub fn pick(
        &self,
        strategy: StrategyKind,
        sticky: &StickyConfig,
        pool: &Pool,
        client: ClientKey,
        tried: &Tried,
    ) -> Option<usize> {
        match strategy {
            StrategyKind::RoundRobin => self.round_robin(pool, tried),
            StrategyKind::LeastConnections => self.least_connections(pool, tried),
            StrategyKind::Sticky => self
                .sticky_pick(sticky, pool, client, tried)
                .map(|(i, _)| i),
        }
    }

    /// Tells dispatch that the client is now connected to backend `index`;
    /// the sticky strategy records it (under the snapshot's `sticky`) and
    /// counts the lookup.
    #[inline]
    pub fn placed(
        &self,
        strategy: StrategyKind,
        sticky: &StickyConfig,
        pool: &Pool,
        client: ClientKey,
        index: usize,
        metrics: &Metrics,
    ) {
        match strategy {
            StrategyKind::RoundRobin | StrategyKind::LeastConnections => {}
            StrategyKind::Sticky => {
                match self.sticky.record(client, pool.backends[index].key, sticky) {
                    Lookup::Hit => metrics.sticky_hit.inc(),
                    Lookup::Miss => metrics.sticky_miss.inc(),
                    Lookup::Redispatch => metrics.sticky_redispatch.inc(),
                }
            }
        }
    }

    /// Where a client would go now, and why, without recording anything
    /// (for `GET /sticky`).
    pub(crate) fn sticky_pick(
        &self,
        sticky: &StickyConfig,
        pool: &Pool,
        client: ClientKey,
        tried: &Tried,
    ) -> Option<(usize, PlacedBy)> {
        let entry = self.sticky.lookup(client, sticky);
        if let Some(index) = entry.and_then(|k| pool.index_of(k)) {
            if !tried.contains(index) && pool.backends[index].is_up() {
                return Some((index, PlacedBy::Entry));
            }
        }
        pool.ring
            .walk(Ring::point_of(client))
            .find(|&i| !tried.contains(i) && pool.backends[i].is_up())
            .map(|i| (i, PlacedBy::Ring))
    }

    /// The backends that may take a client now (up, not yet tried), in
    /// rotation order from the next turn of the shared counter.
    fn rotation<'a>(&self, pool: &'a Pool, tried: &'a Tried) -> impl Iterator<Item = usize> + 'a {
        let n = pool.backends.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        (0..n)
            .map(move |step| (start + step) % n)
            .filter(move |&i| !tried.contains(i) && pool.backends[i].is_up())
    }

    fn round_robin(&self, pool: &Pool, tried: &Tried) -> Option<usize> {
        self.rotation(pool, tried).next()
    }

    /// The up backend with the fewest open connections; ties are broken
    /// round-robin so equal backends share the load.
    fn least_connections(&self, pool: &Pool, tried: &Tried) -> Option<usize> {
        self.rotation(pool, tried)
            .min_by_key(|&i| pool.backends[i].active())
    }
}

/// Expires sticky entries and enforces `max_entries`, off the proxy threads,
/// until the process exits. `table` finds the table inside `owner` (which
/// the blocking sweep keeps alive), and `config` the config in force,
/// whose `[sticky]` every pass reads again (a reload's limits apply at the
/// next pass).
pub(crate) async fn sweep_sticky<T: Send + Sync + 'static>(
    owner: std::sync::Arc<T>,
    table: fn(&T) -> &StickyTable,
    config: fn(&T) -> std::sync::Arc<crate::config::Config>,
) {
    use std::time::Duration;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(sticky::sweep_period(&config(&owner).sticky)) => {}
            _ = table(&owner).over_limit.notified() => {}
        }
        let sweeping = std::sync::Arc::clone(&owner);
        let _ = tokio::task::spawn_blocking(move || {
            table(&sweeping).sweep(&config(&sweeping).sticky);
        })
        .await;
        // At most ten passes a second, however fast new clients arrive.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Backend, Kind};
    use std::sync::Arc;
    use std::time::Duration;

    fn pool(n: usize, metrics: &Metrics) -> Pool {
        Pool::new(
            (0..n)
                .map(|i| {
                    let b = Backend::new(
                        format!("worker-{i}"),
                        Kind::Worker(i),
                        "127.0.0.1:1".parse().unwrap(),
                        metrics,
                    );
                    b.ready(b.instance());
                    b
                })
                .collect(),
        )
    }

    fn sticky() -> StickyConfig {
        StickyConfig {
            ttl: Duration::from_secs(60),
            max_entries: 1000,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }

    fn dispatcher() -> Dispatcher {
        Dispatcher::new()
    }

    #[test]
    fn round_robin_skips_down_and_tried() {
        let m = Metrics::new();
        let p = pool(3, &m);
        let d = dispatcher();
        p.backends[1].crashed();
        let picks: Vec<_> = (0..4)
            .map(|_| {
                d.pick(
                    StrategyKind::RoundRobin,
                    &sticky(),
                    &p,
                    0,
                    &Tried::default(),
                )
                .unwrap()
            })
            .collect();
        assert!(!picks.contains(&1));
        let mut tried = Tried::default();
        tried.push(0);
        tried.push(2);
        assert_eq!(
            d.pick(StrategyKind::RoundRobin, &sticky(), &p, 0, &tried),
            None
        );
    }

    #[test]
    fn least_connections_avoids_the_busy_backend() {
        let m = Metrics::new();
        let p = pool(2, &m);
        let d = dispatcher();
        let busy = Arc::clone(&p.backends[0]);
        let _guard = busy.open(busy.instance());
        for _ in 0..4 {
            assert_eq!(
                d.pick(
                    StrategyKind::LeastConnections,
                    &sticky(),
                    &p,
                    0,
                    &Tried::default()
                ),
                Some(1)
            );
        }
    }

    #[test]
    fn sticky_redispatches_and_follows() {
        let m = Metrics::new();
        let p = pool(3, &m);
        let d = dispatcher();
        let s = sticky();
        let client = sticky::key_of("10.0.0.1".parse().unwrap(), &s);
        let first = d
            .pick(StrategyKind::Sticky, &s, &p, client, &Tried::default())
            .unwrap();
        d.placed(StrategyKind::Sticky, &s, &p, client, first, &m);
        assert_eq!(m.sticky_miss.get(), 1);
        p.backends[first].crashed();
        let second = d
            .pick(StrategyKind::Sticky, &s, &p, client, &Tried::default())
            .unwrap();
        assert_ne!(first, second);
        d.placed(StrategyKind::Sticky, &s, &p, client, second, &m);
        assert_eq!(m.sticky_redispatch.get(), 1);
        // The client stays on its new backend when the old one returns.
        p.backends[first].ready(p.backends[first].instance());
        assert_eq!(
            d.pick(StrategyKind::Sticky, &s, &p, client, &Tried::default()),
            Some(second)
        );
    }
}
