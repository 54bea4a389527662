//! The per-client table (`[clients]`): how many connections each client
//! holds open now, how fast it opens new ones, and how many of its
//! connections were refused. It owns the admission of a client at the
//! front end (after `allow`/`deny`, which need no table): past
//! `max_connections` or `max_rate` a connection is refused before any
//! backend is chosen, so a refused client makes no sticky entry.
//!
//! A client is its address masked by `clients.ipv4_prefix` and
//! `ipv6_prefix`. Counts are exact across proxy threads: an entry is only
//! changed under its shard's lock (each map below is a [`DashMap`] cut
//! into [`SHARDS`] shards). The table is bounded: past `max_tracked` entries the sweeper
//! forgets the clients least recently seen that hold no connection, down
//! to 95% of the bound.
//!
//! An entry is 16 bytes beside the smallest key that holds the client, in
//! one of three maps: IPv4 clients under a 4-byte key (a map slot of 20
//! bytes), IPv6 clients under 8 bytes while `ipv6_prefix` is at most 64
//! (the default; a 24-byte slot), and under 16 bytes past it (32). With a
//! control byte a slot and the hash table's slack, an IPv4 client takes 24
//! to 49 bytes (49 at a million, see `benches/clients_scale.rs`).
//!
//! The new-connection rate is HAProxy's sliding window: the count of the
//! current period plus the previous period's, weighted by how much of it
//! still lies within one period of now. Only admitted connections count,
//! so a client that keeps knocking is served at the rate and no faster, and
//! one that stops is served again within a period.

use std::collections::BinaryHeap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::config::ClientsConfig;
use crate::dispatch::sticky::client_key;

/// Shards of the map: a sweep locks one at a time.
const SHARDS: usize = 256;

/// Time in the table: tenths of a second since the table was made (a u32
/// lasts 13 years).
type Tick = u32;
const TICKS_PER_SECOND: u64 = 10;

/// A client: its masked address, in the map that fits it. IPv6 keys
/// past a /64 are two words (8-byte alignment keeps their map slot at 32
/// bytes, where a `u128` would pad it to 48).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
enum Key {
    V4(u32),
    /// The top 64 bits of an address masked to `ipv6_prefix` <= 64.
    V6(u64),
    /// An address masked to `ipv6_prefix` > 64.
    Wide([u64; 2]),
}

impl Key {
    fn of(ip: IpAddr, config: &ClientsConfig) -> Key {
        let v4 = match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
        };
        let bits = client_key(
            ip,
            u32::from(config.ipv4_prefix),
            u32::from(config.ipv6_prefix),
        );
        if v4 {
            Key::V4(bits as u32)
        } else if config.ipv6_prefix <= 64 {
            Key::V6((bits >> 64) as u64)
        } else {
            Key::Wide([(bits >> 64) as u64, bits as u64])
        }
    }
}

/// One client, in 16 bytes.
#[derive(Debug, Default)]
struct Entry {
    connections: u32,
    /// When it last tried to connect (admitted or not).
    last_seen: Tick,
    /// Start of the current rate period, in ticks modulo 2^16: the window
    /// is rolled on every attempt, so it is never far behind `last_seen`.
    window: u16,
    /// Connections admitted in the current period and the one before
    /// (`max_rate` counts are at most 65,535 a period).
    current: u16,
    previous: u16,
    /// Connections refused by the limits (it stops counting at 65,535).
    rejected: u16,
}

/// One client's entry as `corral upgrade` carries it to the next image:
/// its times as ages at the export, since each image's table has a clock
/// of its own. Its open connections are not here: each one taken over
/// counts itself again ([`ClientTable::readmit`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct CarriedClient {
    key: Key,
    /// Ticks since it last tried to connect.
    seen_ago: Tick,
    /// Ticks since its rate period began (modulo 2^16, as the window).
    window_ago: u16,
    current: u16,
    previous: u16,
    rejected: u16,
}

/// The longest rate period in ticks (an hour).
const MAX_PERIOD: Tick = 3600 * TICKS_PER_SECOND as Tick;

impl Entry {
    /// A client first seen at `now`.
    fn new(now: Tick) -> Entry {
        Entry {
            last_seen: now,
            window: now as u16,
            ..Entry::default()
        }
    }

    /// Moves the rate window up to `now` for periods of `period` ticks;
    /// call before `last_seen` is set to `now`.
    fn roll(&mut self, now: Tick, period: Tick) {
        let idle = now.wrapping_sub(self.last_seen);
        // Idle past two periods, or so long that the 16-bit window could
        // have wrapped: nothing counts any more.
        if idle >= 2 * period || idle + period >= 1 << 16 {
            self.previous = 0;
            self.current = 0;
            self.window = now as u16;
            return;
        }
        let elapsed = Tick::from((now as u16).wrapping_sub(self.window));
        if elapsed >= period {
            self.previous = if elapsed < 2 * period {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.window = (now - elapsed % period) as u16;
        }
    }

    /// New connections in the last `period` ticks (sliding estimate), in
    /// thousandths.
    fn rate_milli(&self, now: Tick, period: Tick) -> u64 {
        let elapsed = Tick::from((now as u16).wrapping_sub(self.window));
        let elapsed = u64::from(elapsed.min(period));
        let period = u64::from(period.max(1));
        u64::from(self.previous) * 1000 * (period - elapsed) / period
            + u64::from(self.current) * 1000
    }
}

/// Why a client's connection was refused: the `reason` label of
/// `corral_connections_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Outside `allow`, or inside `deny`.
    Denied,
    /// It holds `max_connections` already.
    Connections,
    /// It opened `max_rate` connections within the period.
    Rate,
}

/// One row of `GET /clients`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Row {
    /// The masked address, with its prefix when it is not a whole address.
    pub(crate) client: String,
    pub(crate) connections: u32,
    /// New connections per second, over the last `max_rate` period (one
    /// second when there is no rate limit).
    pub(crate) rate: f64,
    pub(crate) rejected: u16,
}

/// The table; one per process, shared by every proxy thread.
pub struct ClientTable {
    /// One map per kind of [`Key`], the entries the same.
    v4: DashMap<u32, Entry>,
    v6: DashMap<u64, Entry>,
    wide: DashMap<[u64; 2], Entry>,
    /// Entries, kept by inserts and made exact by every sweep
    /// (`DashMap::len` locks every shard). The bound they are held to,
    /// `max_tracked`, is the snapshot's, passed to each call.
    approximate_len: AtomicUsize,
    /// Woken when an insert takes the table past `max_tracked`.
    pub(crate) over_limit: Notify,
    started: Instant,
    /// Refusals since the last summary, by reason (denied, connections,
    /// rate), for the periodic log line.
    since_summary: [AtomicU64; 3],
}

/// An admitted connection's place in the table: dropping it gives the
/// connection back.
pub struct Admitted<'a> {
    table: &'a ClientTable,
    key: Key,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        fn release<K: Hash + Eq>(map: &DashMap<K, Entry>, key: &K) {
            if let Some(mut entry) = map.get_mut(key) {
                entry.connections = entry.connections.saturating_sub(1);
            }
        }
        match &self.key {
            Key::V4(key) => release(&self.table.v4, key),
            Key::V6(key) => release(&self.table.v6, key),
            Key::Wide(key) => release(&self.table.wide, key),
        }
    }
}

/// Counts an attempt by the client `key` of `map` at `now`, and admits it
/// or says why not; also says whether the client is new to the table.
fn attempt<K: Hash + Eq>(
    map: &DashMap<K, Entry>,
    key: K,
    now: Tick,
    period: Tick,
    config: &ClientsConfig,
) -> (Result<(), Refused>, bool) {
    let mut inserted = false;
    let mut entry = map.entry(key).or_insert_with(|| {
        inserted = true;
        Entry::new(now)
    });
    entry.roll(now, period);
    entry.last_seen = now;
    let rate_full = config
        .max_rate
        .is_some_and(|rate| entry.rate_milli(now, period) + 1000 > u64::from(rate.count) * 1000);
    let verdict = if config.max_connections != 0 && entry.connections >= config.max_connections {
        entry.rejected = entry.rejected.saturating_add(1);
        Err(Refused::Connections)
    } else if rate_full {
        entry.rejected = entry.rejected.saturating_add(1);
        Err(Refused::Rate)
    } else {
        entry.connections += 1;
        entry.current = entry.current.saturating_add(1);
        Ok(())
    };
    (verdict, inserted)
}

impl Default for ClientTable {
    fn default() -> ClientTable {
        ClientTable::new()
    }
}

impl ClientTable {
    /// An empty table; its limits come with each call, from the config in
    /// force, so one table outlives reloads.
    pub fn new() -> ClientTable {
        ClientTable {
            v4: DashMap::with_capacity_and_shard_amount(0, SHARDS),
            v6: DashMap::with_capacity_and_shard_amount(0, SHARDS),
            wide: DashMap::with_capacity_and_shard_amount(0, SHARDS),
            approximate_len: AtomicUsize::new(0),
            over_limit: Notify::new(),
            started: Instant::now(),
            since_summary: Default::default(),
        }
    }

    /// Every client's entry, for `corral upgrade`.
    pub(crate) fn export(&self) -> Vec<CarriedClient> {
        let now = self.now();
        let mut carried = Vec::with_capacity(self.len());
        self.each(|key, entry| {
            carried.push(CarriedClient {
                key,
                seen_ago: now.wrapping_sub(entry.last_seen),
                window_ago: (now as u16).wrapping_sub(entry.window),
                current: entry.current,
                previous: entry.previous,
                rejected: entry.rejected,
            })
        });
        carried
    }

    /// The entries an earlier image exported (`corral upgrade`), with no
    /// connection counted yet. Their rate windows go on where they were;
    /// an age older than this table is taken as this table's age.
    pub(crate) fn import(&self, carried: &[CarriedClient]) {
        let now = self.now();
        for client in carried {
            let entry = Entry {
                connections: 0,
                last_seen: now.saturating_sub(client.seen_ago),
                window: (now as u16).wrapping_sub(client.window_ago),
                current: client.current,
                previous: client.previous,
                rejected: client.rejected,
            };
            let inserted = match client.key {
                Key::V4(k) => self.v4.insert(k, entry).is_none(),
                Key::V6(k) => self.v6.insert(k, entry).is_none(),
                Key::Wide(k) => self.wide.insert(k, entry).is_none(),
            };
            if inserted {
                self.approximate_len.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts a connection an earlier image admitted and handed over
    /// (`corral upgrade`): no limit applies and no rate is counted, it
    /// was admitted once already.
    pub(crate) fn readmit(&self, ip: IpAddr, config: &ClientsConfig) -> Admitted<'_> {
        fn count<K: Hash + Eq>(map: &DashMap<K, Entry>, key: K, now: Tick) -> bool {
            let mut inserted = false;
            let mut entry = map.entry(key).or_insert_with(|| {
                inserted = true;
                Entry::new(now)
            });
            entry.connections += 1;
            inserted
        }
        let key = Key::of(ip, config);
        let now = self.now();
        let inserted = match key {
            Key::V4(k) => count(&self.v4, k, now),
            Key::V6(k) => count(&self.v6, k, now),
            Key::Wide(k) => count(&self.wide, k, now),
        };
        if inserted {
            self.approximate_len.fetch_add(1, Ordering::Relaxed);
        }
        Admitted { table: self, key }
    }

    /// A new snapshot's `[clients]` is in force: when its `max_tracked` is
    /// below what the table holds, the sweeper is woken now rather than at
    /// the next new client. Nothing is stored (the limits are read from
    /// the snapshot each call is given).
    pub(crate) fn bound_changed(&self, config: &ClientsConfig) {
        if self.approximate_len.load(Ordering::Relaxed) > config.max_tracked {
            self.over_limit.notify_one();
        }
    }

    fn now(&self) -> Tick {
        (self.started.elapsed().as_millis() as u64 / (1000 / TICKS_PER_SECOND)) as Tick
    }

    /// Admits a new connection from `ip` under `config`, or says why not.
    /// The connection counts as the client's until the guard is dropped.
    pub fn admit(&self, ip: IpAddr, config: &ClientsConfig) -> Result<Admitted<'_>, Refused> {
        if !config.admits(ip) {
            self.note(Refused::Denied);
            return Err(Refused::Denied);
        }
        let key = Key::of(ip, config);
        let now = self.now();
        let period = rate_period(config);
        let (verdict, inserted) = match key {
            Key::V4(k) => attempt(&self.v4, k, now, period, config),
            Key::V6(k) => attempt(&self.v6, k, now, period, config),
            Key::Wide(k) => attempt(&self.wide, k, now, period, config),
        };
        if inserted {
            let len = self.approximate_len.fetch_add(1, Ordering::Relaxed) + 1;
            if len > config.max_tracked {
                self.over_limit.notify_one();
            }
        }
        match verdict {
            Ok(()) => Ok(Admitted { table: self, key }),
            Err(refused) => {
                self.note(refused);
                Err(refused)
            }
        }
    }

    fn note(&self, refused: Refused) {
        let index = match refused {
            Refused::Denied => 0,
            Refused::Connections => 1,
            Refused::Rate => 2,
        };
        self.since_summary[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals since the last call (denied, connections, rate): for one
    /// summary line instead of a line per refused connection.
    pub(crate) fn take_summary(&self) -> [u64; 3] {
        self.since_summary
            .each_ref()
            .map(|n| n.swap(0, Ordering::Relaxed))
    }

    /// Clients in the table.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len() + self.wide.len()
    }

    /// No client in the table (the companion of [`ClientTable::len`]).
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty() && self.wide.is_empty()
    }

    /// Calls `f` with every client, one shard locked at a time.
    fn each(&self, mut f: impl FnMut(Key, &Entry)) {
        for entry in self.v4.iter() {
            f(Key::V4(*entry.key()), entry.value());
        }
        for entry in self.v6.iter() {
            f(Key::V6(*entry.key()), entry.value());
        }
        for entry in self.wide.iter() {
            f(Key::Wide(*entry.key()), entry.value());
        }
    }

    /// Keeps the clients for which `keep` says so.
    fn retain(&self, keep: impl Fn(&Entry) -> bool) {
        self.v4.retain(|_, entry| keep(entry));
        self.v6.retain(|_, entry| keep(entry));
        self.wide.retain(|_, entry| keep(entry));
    }

    /// Past `config.max_tracked`, forgets the clients least recently seen
    /// that hold no connection, down to 95% of it. Two passes, no copy of
    /// the table: one finds the age that cuts enough, one removes what is
    /// older.
    pub(crate) fn sweep(&self, config: &ClientsConfig) {
        let limit = config.max_tracked;
        let len = self.len();
        self.approximate_len.store(len, Ordering::Relaxed);
        if len <= limit {
            return;
        }
        let excess = len - limit * 95 / 100;
        let now = self.now();
        // Ages in ticks, in buckets that double: enough to pick a cut.
        let mut buckets = [0usize; 34];
        let bucket = |age: u32| (32 - age.leading_zeros()) as usize;
        self.each(|_, entry| {
            if entry.connections == 0 {
                buckets[bucket(now.wrapping_sub(entry.last_seen))] += 1;
            }
        });
        // The oldest buckets first, until enough are cut.
        let mut cut = 0;
        let mut oldest_kept = buckets.len();
        for (i, count) in buckets.iter().enumerate().rev() {
            if cut >= excess {
                break;
            }
            cut += count;
            oldest_kept = i;
        }
        self.retain(|entry| {
            entry.connections > 0 || bucket(now.wrapping_sub(entry.last_seen)) < oldest_kept
        });
        self.approximate_len.store(self.len(), Ordering::Relaxed);
    }

    /// The `top` clients holding the most connections now (then the
    /// fastest), as `GET /clients` shows them.
    pub(crate) fn top(&self, top: usize, config: &ClientsConfig) -> Vec<Row> {
        let now = self.now();
        let period = rate_period(config);
        let mut best: BinaryHeap<std::cmp::Reverse<(u32, u64, u16, Key)>> = BinaryHeap::new();
        self.each(|key, entry| {
            let item = std::cmp::Reverse((
                entry.connections,
                entry.rate_milli(now, period),
                entry.rejected,
                key,
            ));
            if best.len() < top {
                best.push(item);
            } else if best.peek().is_some_and(|least| item < *least) {
                best.pop();
                best.push(item);
            }
        });
        let seconds = f64::from(period) / TICKS_PER_SECOND as f64;
        let mut rows: Vec<_> = best.into_iter().map(|r| r.0).collect();
        rows.sort_by(|a, b| b.cmp(a));
        rows.into_iter()
            .map(|(connections, rate, rejected, key)| Row {
                client: show(key, config),
                connections,
                rate: (rate as f64 / 1000.0 / seconds * 100.0).round() / 100.0,
                rejected,
            })
            .collect()
    }
}

/// Keeps the table within `max_tracked` (woken when an insert passes it)
/// and logs one summary line a minute of the connections refused, never
/// one per connection.
/// `table` finds the table inside `owner` (which the blocking sweep keeps
/// alive), and `config` the config in force, whose `[clients]` each sweep
/// reads.
pub(crate) async fn sweep<T: Send + Sync + 'static>(
    owner: std::sync::Arc<T>,
    table: fn(&T) -> &ClientTable,
    config: fn(&T) -> std::sync::Arc<crate::config::Config>,
) {
    use std::time::Duration;
    const SUMMARY: Duration = Duration::from_secs(60);
    let mut summary = tokio::time::interval(SUMMARY);
    summary.tick().await;
    loop {
        tokio::select! {
            _ = table(&owner).over_limit.notified() => {
                let sweeping = std::sync::Arc::clone(&owner);
                let _ = tokio::task::spawn_blocking(move || {
                    table(&sweeping).sweep(&config(&sweeping).clients);
                })
                .await;
                // At most ten sweeps a second, however fast clients come.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ = summary.tick() => {
                let [denied, connections, rate] = table(&owner).take_summary();
                if denied + connections + rate > 0 {
                    tracing::info!(
                        denied,
                        client_connections = connections,
                        client_rate = rate,
                        "[clients] refused connections in the last minute"
                    );
                }
            }
        }
    }
}

/// The rate period in ticks: `max_rate`'s, or one second.
fn rate_period(config: &ClientsConfig) -> Tick {
    let seconds = config.max_rate.map_or(1, |rate| rate.per.as_secs().max(1));
    ((seconds * TICKS_PER_SECOND) as Tick).min(MAX_PERIOD)
}

/// A key as an address, with the prefix when the address is masked.
fn show(key: Key, config: &ClientsConfig) -> String {
    let bits = match key {
        Key::V4(bits) => {
            let ip = Ipv4Addr::from(bits);
            return match config.ipv4_prefix {
                32 => ip.to_string(),
                prefix => format!("{ip}/{prefix}"),
            };
        }
        Key::V6(top) => u128::from(top) << 64,
        Key::Wide([top, bottom]) => (u128::from(top) << 64) | u128::from(bottom),
    };
    let ip = Ipv6Addr::from(bits);
    match config.ipv6_prefix {
        128 => ip.to_string(),
        prefix => format!("{ip}/{prefix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;
    use std::time::Duration;

    fn config() -> ClientsConfig {
        ClientsConfig {
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            max_connections: 0,
            max_rate: None,
            allow: Vec::new(),
            deny: Vec::new(),
            max_tracked: 1000,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn connections_past_the_limit_are_refused_and_given_back() {
        let table = ClientTable::new();
        let limited = ClientsConfig {
            max_connections: 2,
            ..config()
        };
        let a = table.admit(ip("10.0.0.1"), &limited).unwrap();
        let _b = table.admit(ip("10.0.0.1"), &limited).unwrap();
        assert_eq!(
            table.admit(ip("10.0.0.1"), &limited).err(),
            Some(Refused::Connections)
        );
        assert!(table.admit(ip("10.0.0.2"), &limited).is_ok());
        drop(a);
        let _c = table.admit(ip("10.0.0.1"), &limited).unwrap();
        let rows = table.top(10, &limited);
        assert_eq!(rows[0].client, "10.0.0.1");
        assert_eq!((rows[0].connections, rows[0].rejected), (2, 1));
    }

    #[test]
    fn an_exported_table_goes_on_where_it_was_and_readmits_its_connections() {
        let limited = ClientsConfig {
            max_rate: Some(Rate {
                count: 4,
                per: Duration::from_secs(60),
            }),
            max_connections: 2,
            ..config()
        };
        let old = ClientTable::new();
        for _ in 0..3 {
            drop(old.admit(ip("10.0.0.1"), &limited).unwrap());
        }
        let held = old.admit(ip("10.0.0.1"), &limited).unwrap();
        assert_eq!(
            old.admit(ip("10.0.0.1"), &limited).err(),
            Some(Refused::Rate)
        );
        let carried = old.export();
        drop(held);
        let new = ClientTable::new();
        new.import(&carried);
        // The connection handed over counts again, and no rate with it.
        let _held = new.readmit(ip("10.0.0.1"), &limited);
        let rows = new.top(10, &limited);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].connections, rows[0].rejected), (1, 1));
        // The rate period goes on: a fifth connection is still too many.
        assert_eq!(
            new.admit(ip("10.0.0.1"), &limited).err(),
            Some(Refused::Rate)
        );
        // A client the old table never saw is new here.
        assert!(new.admit(ip("10.0.0.2"), &limited).is_ok());
    }

    #[test]
    fn a_rate_refuses_past_the_count_within_the_period() {
        let table = ClientTable::new();
        let limited = ClientsConfig {
            max_rate: Some(Rate {
                count: 3,
                per: Duration::from_secs(60),
            }),
            ..config()
        };
        for _ in 0..3 {
            drop(table.admit(ip("10.0.0.1"), &limited).unwrap());
        }
        assert_eq!(
            table.admit(ip("10.0.0.1"), &limited).err(),
            Some(Refused::Rate)
        );
    }

    #[test]
    fn the_window_slides() {
        let mut entry = Entry {
            current: 10,
            ..Entry::default()
        };
        entry.roll(15, 10);
        assert_eq!((entry.previous, entry.current, entry.window), (10, 0, 10));
        assert_eq!(entry.rate_milli(15, 10), 5000);
        entry.last_seen = 15;
        entry.roll(40, 10);
        assert_eq!((entry.previous, entry.current), (0, 0));
        // Across the 16-bit wrap of the window.
        let mut entry = Entry {
            last_seen: 65_530,
            window: 65_530,
            current: 4,
            ..Entry::default()
        };
        entry.roll(65_545, 10);
        assert_eq!((entry.previous, entry.current), (4, 0));
        assert_eq!(entry.window, 4);
        assert_eq!(entry.rate_milli(65_545, 10), 2000);
    }

    #[test]
    fn deny_wins_over_allow_and_prefixes_group_clients() {
        let mut listed = config();
        listed.allow = vec!["10.0.0.0/8".parse().unwrap()];
        listed.deny = vec!["10.0.0.7/32".parse().unwrap()];
        listed.ipv4_prefix = 24;
        let table = ClientTable::new();
        assert_eq!(
            table.admit(ip("10.0.0.7"), &listed).err(),
            Some(Refused::Denied)
        );
        assert_eq!(
            table.admit(ip("192.0.2.1"), &listed).err(),
            Some(Refused::Denied)
        );
        let _a = table.admit(ip("10.0.0.8"), &listed).unwrap();
        let _b = table.admit(ip("::ffff:10.0.0.9"), &listed).unwrap();
        let rows = table.top(10, &listed);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].client, "10.0.0.0/24");
        assert_eq!(rows[0].connections, 2);
    }

    #[test]
    fn the_table_forgets_idle_clients_past_its_bound() {
        let bounded = ClientsConfig {
            max_tracked: 100,
            ..config()
        };
        let table = ClientTable::new();
        let held = table.admit(ip("10.1.0.0"), &bounded).unwrap();
        for i in 1..300u32 {
            drop(table.admit(IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i)), &bounded));
        }
        table.sweep(&bounded);
        assert!(table.len() <= 100, "{} entries", table.len());
        assert!(table
            .top(1, &bounded)
            .first()
            .is_some_and(|r| r.client == "10.1.0.0" && r.connections == 1));
        drop(held);
    }

    /// The bound a sweep keeps is the one it is given (a reload's), never
    /// one the table kept from before; a lower bound wakes the sweeper.
    #[test]
    fn a_new_bound_holds_at_the_next_sweep() {
        let wide = ClientsConfig {
            max_tracked: 1000,
            ..config()
        };
        let narrow = ClientsConfig {
            max_tracked: 20,
            ..config()
        };
        let table = ClientTable::new();
        for i in 0..100u32 {
            drop(table.admit(IpAddr::V4(Ipv4Addr::from(0x0a02_0000 + i)), &wide));
        }
        table.sweep(&wide);
        assert_eq!(table.len(), 100);
        let woken = table.over_limit.notified();
        tokio::pin!(woken);
        assert!(
            futures_ready(woken.as_mut()).is_none(),
            "nothing woke it yet"
        );
        table.bound_changed(&wide);
        assert!(
            futures_ready(woken.as_mut()).is_none(),
            "the bound did not drop"
        );
        table.bound_changed(&narrow);
        assert!(
            futures_ready(woken.as_mut()).is_some(),
            "a lower bound wakes the sweeper"
        );
        table.sweep(&narrow);
        assert!(table.len() <= 20, "{} entries", table.len());
    }

    /// Polls `future` once.
    fn futures_ready<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        match future.poll(&mut context) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn an_entry_is_small() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        assert_eq!(std::mem::size_of::<(u32, Entry)>(), 20);
        assert_eq!(std::mem::size_of::<(u64, Entry)>(), 24);
        assert_eq!(std::mem::size_of::<([u64; 2], Entry)>(), 32);
    }

    #[test]
    fn ipv4_and_ipv6_clients_are_kept_apart_at_every_prefix() {
        // 0:ffff:a00:1::/64 would be 10.0.0.1's key if both shared a word.
        for ipv6_prefix in [48, 64, 65, 96, 128] {
            let prefixed = ClientsConfig {
                ipv6_prefix,
                max_connections: 1,
                ..config()
            };
            let table = ClientTable::new();
            let _v4 = table.admit(ip("10.0.0.1"), &prefixed).unwrap();
            let _v6 = table.admit(ip("0:ffff:a00:1::"), &prefixed).unwrap();
            let _low = table.admit(ip("::a00:1"), &prefixed).unwrap();
            assert_eq!(table.len(), 3, "/{ipv6_prefix}");
            let _long = table.admit(ip("2001:db8::1"), &prefixed).unwrap();
            let other = table.admit(ip("2001:db8::2"), &prefixed);
            assert_eq!(other.is_ok(), ipv6_prefix == 128, "/{ipv6_prefix}");
            let rows = table.top(10, &prefixed);
            let shown = match ipv6_prefix {
                128 => "2001:db8::1".to_string(),
                prefix => format!("2001:db8::/{prefix}"),
            };
            assert!(rows.iter().any(|r| r.client == "10.0.0.1"), "{rows:?}");
            assert!(rows.iter().any(|r| r.client == shown), "{rows:?}");
            if ipv6_prefix == 64 {
                assert!(
                    rows.iter().any(|r| r.client == "0:ffff:a00:1::/64"),
                    "{rows:?}"
                );
            }
            drop(other);
            drop(_long);
            assert_eq!(
                table
                    .top(10, &prefixed)
                    .iter()
                    .map(|r| r.connections)
                    .sum::<u32>(),
                3
            );
        }
    }
}
