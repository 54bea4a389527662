//! The sticky table: which backend each client (IP masked to a prefix) was
//! last sent to, and when it was last seen.
//!
//! Lookups and touches take one shard's lock for a moment; the table is cut
//! into many shards so that a sweep, which locks one shard at a time, never
//! holds up dispatch for long. Entries idle for `ttl` are treated as absent at
//! once and removed by the periodic [`StickyTable::sweep`]; past
//! `max_entries` the sweep removes the least recently used entries down to
//! 95% of the limit.
//!
//! The table owns its entries only. Its limits (`ttl`, `max_entries`, the
//! prefixes) are `[sticky]` of the snapshot in force, passed to each call
//! that needs them, so a reload changes them by publishing its snapshot:
//! there is no copy here that could disagree with it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::clock;
use crate::config::StickyConfig;

/// Shards of the map: with a million entries, about 4,000 per shard, so one
/// shard's sweep takes well under a millisecond.
const SHARDS: usize = 256;

/// A client's key: its address masked to the configured prefix, IPv4 (and
/// IPv4-mapped IPv6) in the `::ffff:0:0/96` range so the two families never
/// collide.
pub(crate) type ClientKey = u128;

/// What a connection's lookup found, for `corral_sticky_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The client had a live entry and stayed on its backend.
    Hit,
    /// A new client (or one whose entry expired).
    Miss,
    /// The client's backend was not usable; it moved and its entry followed.
    Redispatch,
}

struct Entry {
    backend: AtomicU64,
    last_seen_ms: AtomicU64,
}

/// The table; its limits come with each call, from the snapshot in force.
pub struct StickyTable {
    map: DashMap<ClientKey, Entry>,
    /// Entries, kept by inserts and forgets and made exact by every sweep:
    /// `DashMap::len` locks all 256 shards, too slow for every new client.
    approximate_len: AtomicUsize,
    /// Woken when an insert takes the table past `max_entries`.
    pub(crate) over_limit: Notify,
    /// Milliseconds on a monotonic clock: [`clock::now_ms`], or a clock a
    /// test moves by hand.
    now_ms: fn() -> u64,
}

impl Default for StickyTable {
    fn default() -> StickyTable {
        StickyTable::new()
    }
}

impl StickyTable {
    /// An empty table on the process's monotonic clock.
    pub fn new() -> StickyTable {
        StickyTable::with_clock(clock::now_ms)
    }

    /// A table that reads the time from `now_ms`.
    pub(crate) fn with_clock(now_ms: fn() -> u64) -> StickyTable {
        StickyTable {
            map: DashMap::with_capacity_and_shard_amount(0, SHARDS),
            approximate_len: AtomicUsize::new(0),
            over_limit: Notify::new(),
            now_ms,
        }
    }

    /// The backend key of the client's live entry (seen within
    /// `limits.ttl`), if it has one.
    #[inline]
    pub fn lookup(&self, key: ClientKey, limits: &StickyConfig) -> Option<u64> {
        let entry = self.map.get(&key)?;
        let now = (self.now_ms)();
        let seen = entry.last_seen_ms.load(Ordering::Relaxed);
        (now.saturating_sub(seen) < ttl_ms(limits)).then(|| entry.backend.load(Ordering::Relaxed))
    }

    /// Records that the client was just sent to `backend`; an insert that
    /// takes the table past `limits.max_entries` wakes the sweeper.
    pub fn record(&self, key: ClientKey, backend: u64, limits: &StickyConfig) -> Lookup {
        let now = (self.now_ms)();
        if let Some(entry) = self.map.get(&key) {
            let live =
                now.saturating_sub(entry.last_seen_ms.load(Ordering::Relaxed)) < ttl_ms(limits);
            let previous = entry.backend.swap(backend, Ordering::Relaxed);
            entry.last_seen_ms.store(now, Ordering::Relaxed);
            return match (live, previous == backend) {
                (true, true) => Lookup::Hit,
                (true, false) => Lookup::Redispatch,
                (false, _) => Lookup::Miss,
            };
        }
        let entry = Entry {
            backend: AtomicU64::new(backend),
            last_seen_ms: AtomicU64::new(now),
        };
        if self.map.insert(key, entry).is_none() {
            let len = self.approximate_len.fetch_add(1, Ordering::Relaxed) + 1;
            if len > limits.max_entries {
                self.over_limit.notify_one();
            }
        }
        Lookup::Miss
    }

    /// Every entry: (client, backend key, milliseconds since last seen),
    /// for the next image of corral (`corral upgrade`).
    pub(crate) fn export(&self) -> Vec<(ClientKey, u64, u64)> {
        let now = (self.now_ms)();
        self.map
            .iter()
            .map(|entry| {
                let seen = entry.last_seen_ms.load(Ordering::Relaxed);
                (
                    *entry.key(),
                    entry.backend.load(Ordering::Relaxed),
                    now.saturating_sub(seen),
                )
            })
            .collect()
    }

    /// Takes the entries the image before this one exported, with their
    /// ages (this image's clock starts anew).
    pub(crate) fn import(&self, entries: &[(ClientKey, u64, u64)]) {
        let now = (self.now_ms)();
        for &(key, backend, age) in entries {
            let entry = Entry {
                backend: AtomicU64::new(backend),
                last_seen_ms: AtomicU64::new(now.saturating_sub(age)),
            };
            if self.map.insert(key, entry).is_none() {
                self.approximate_len.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Forgets one client; true if it had an entry.
    pub(crate) fn forget(&self, key: ClientKey) -> bool {
        let removed = self.map.remove(&key).is_some();
        if removed {
            self.approximate_len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Entries now, counted exactly (every shard locked in turn: for the
    /// admin API and the benches, not for the per-connection path).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No entry in the table.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes entries idle for `limits.ttl`, then the least recently used
    /// ones past `limits.max_entries`. Locks one shard at a time.
    pub fn sweep(&self, limits: &StickyConfig) {
        self.evict(limits);
        self.approximate_len
            .store(self.map.len(), Ordering::Relaxed);
    }

    fn evict(&self, limits: &StickyConfig) {
        let now = (self.now_ms)();
        let ttl = ttl_ms(limits);
        self.map
            .retain(|_, e| now.saturating_sub(e.last_seen_ms.load(Ordering::Relaxed)) < ttl);
        let max = limits.max_entries;
        if self.map.len() <= max {
            return;
        }
        // Past the limit, go 5% below it, so that the next new clients do
        // not each set off another full eviction pass.
        let surplus = self.map.len().saturating_sub(max - max / 20);
        let mut seen: Vec<u64> = self
            .map
            .iter()
            .map(|e| e.last_seen_ms.load(Ordering::Relaxed))
            .collect();
        if surplus >= seen.len() {
            self.map.clear();
            return;
        }
        let (_, cutoff, _) = seen.select_nth_unstable(surplus - 1);
        let cutoff = *cutoff;
        // Everything older than the cutoff goes; of those seen exactly at the
        // cutoff, only as many as it takes to reach the limit.
        let older = seen.iter().filter(|&&t| t < cutoff).count();
        let mut at_cutoff_to_remove = surplus - older;
        drop(seen);
        self.map.retain(|_, e| {
            let t = e.last_seen_ms.load(Ordering::Relaxed);
            if t < cutoff {
                false
            } else if t == cutoff && at_cutoff_to_remove > 0 {
                at_cutoff_to_remove -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// `ttl` in milliseconds, the unit of the table's clock.
#[inline]
fn ttl_ms(limits: &StickyConfig) -> u64 {
    limits.ttl.as_secs() * 1000 + u64::from(limits.ttl.subsec_millis())
}

/// How often the sweeper runs under `limits`: a quarter of the ttl,
/// between a tenth of a second and five seconds.
pub(crate) fn sweep_period(limits: &StickyConfig) -> Duration {
    (limits.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// The key of a client at `ip` under the prefixes of `limits`.
#[inline]
pub fn key_of(ip: IpAddr, limits: &StickyConfig) -> ClientKey {
    client_key(ip, limits.ipv4_prefix.into(), limits.ipv6_prefix.into())
}

/// Masks `ip` to its family's prefix; IPv4-mapped IPv6 counts as IPv4.
pub fn client_key(ip: IpAddr, ipv4_prefix: u32, ipv6_prefix: u32) -> ClientKey {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let masked = if ipv4_prefix == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - ipv4_prefix.min(32)))
            };
            (0xffff_u128 << 32) | u128::from(masked)
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            if ipv6_prefix == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - ipv6_prefix.min(128)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StickyConfig;
    use std::time::Duration;

    thread_local! {
        /// The test clock: each test thread moves its own.
        static NOW_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
    }

    fn test_now() -> u64 {
        NOW_MS.with(|now| now.get())
    }

    fn advance(by: Duration) {
        NOW_MS.with(|now| now.set(now.get() + by.as_millis() as u64));
    }

    fn limits(ttl: Duration, max_entries: usize) -> StickyConfig {
        StickyConfig {
            ttl,
            max_entries,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }

    #[test]
    fn prefixes_group_clients() {
        let a = client_key("10.1.2.3".parse().unwrap(), 24, 64);
        let b = client_key("10.1.2.200".parse().unwrap(), 24, 64);
        let c = client_key("10.1.3.1".parse().unwrap(), 24, 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = client_key("::ffff:10.1.2.3".parse().unwrap(), 32, 64);
        assert_eq!(mapped, client_key("10.1.2.3".parse().unwrap(), 32, 64));
        let v6a = client_key("2001:db8::1".parse().unwrap(), 32, 64);
        let v6b = client_key("2001:db8::ffff".parse().unwrap(), 32, 64);
        assert_eq!(v6a, v6b);
    }

    #[test]
    fn record_reports_hit_miss_and_redispatch() {
        let t = StickyTable::with_clock(test_now);
        let l = limits(Duration::from_secs(60), 10);
        assert_eq!(t.record(1, 7, &l), Lookup::Miss);
        assert_eq!(t.lookup(1, &l), Some(7));
        assert_eq!(t.record(1, 7, &l), Lookup::Hit);
        assert_eq!(t.record(1, 8, &l), Lookup::Redispatch);
        assert_eq!(t.lookup(1, &l), Some(8));
        assert!(t.forget(1));
        assert_eq!(t.lookup(1, &l), None);
    }

    #[test]
    fn sweep_keeps_the_most_recent_entries_below_the_limit() {
        let t = StickyTable::with_clock(test_now);
        let l = limits(Duration::from_secs(60), 100);
        for k in 0..500u128 {
            t.record(k, 1, &l);
            advance(Duration::from_millis(if k >= 400 { 2 } else { 0 }));
        }
        t.sweep(&l);
        assert_eq!(t.len(), 95);
        // The 95 kept are the most recently seen.
        assert!((405..500u128).all(|k| t.lookup(k, &l).is_some()));
    }

    #[test]
    fn expired_entries_are_absent_and_swept() {
        let t = StickyTable::with_clock(test_now);
        let l = limits(Duration::from_millis(20), 100);
        t.record(5, 1, &l);
        advance(Duration::from_millis(19));
        assert_eq!(t.lookup(5, &l), Some(1));
        advance(Duration::from_millis(1));
        assert_eq!(t.lookup(5, &l), None);
        t.sweep(&l);
        assert!(t.is_empty());
    }

    /// A reload's limits hold from the first call given them: the table
    /// keeps no copy of the old ones to refresh.
    #[test]
    fn the_limits_given_hold_at_once() {
        let t = StickyTable::with_clock(test_now);
        let before = limits(Duration::from_secs(60), 100);
        let after = limits(Duration::from_secs(1), 10);
        for k in 0..20u128 {
            t.record(k, 1, &before);
        }
        advance(Duration::from_secs(2));
        assert_eq!(t.lookup(0, &before), Some(1));
        assert_eq!(t.lookup(0, &after), None, "the shorter ttl expires it");
        t.record(100, 1, &after);
        t.sweep(&after);
        assert_eq!(t.len(), 1, "the idle entries went under the new ttl");
        let prefixes = StickyConfig {
            ipv4_prefix: 24,
            ..after.clone()
        };
        assert_eq!(
            key_of("10.1.2.3".parse().unwrap(), &prefixes),
            key_of("10.1.2.200".parse().unwrap(), &prefixes)
        );
        assert_ne!(
            key_of("10.1.2.3".parse().unwrap(), &after),
            key_of("10.1.2.200".parse().unwrap(), &after)
        );
    }
}
