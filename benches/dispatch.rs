//! Criterion benchmarks for the dispatch hot path, with 4 and 16 backends,
//! every one of them up:
//!
//! - `round_robin/{4,16}` and `least_connections/{4,16}`: one
//!   [`Dispatcher::pick`] with nothing tried yet.
//! - `sticky_hit/*`: a sticky table pre-filled with 100,000 clients (each
//!   placed by the ring, as the proxy would), then for clients that have an
//!   entry: `pick/{4,16}` (`Dispatcher::pick` with `StrategyKind::Sticky`),
//!   `pick_and_placed/{4,16}` (the pick and then [`Dispatcher::placed`], which
//!   records the hit and counts it: what a connection costs), `lookup`
//!   ([`StickyTable::lookup`] alone), `record` ([`StickyTable::record`] on a
//!   hit, same backend), all cycling through the 100,000 clients in a
//!   scattered order, plus `lookup_same_client` (one cache-hot entry) for
//!   reference. Target: a hit under 100 ns median.
//! - `sticky_new/*`: placing a client with no entry (the table still holds
//!   100,000 others): `pick/{4,16}` (lookup miss, then the ring walk),
//!   `record_insert` (a new entry) and `pick_and_record/{4,16}` (both, the
//!   whole cost of a new client). Inserts use keys never seen before; the
//!   table is rebuilt outside the timed region whenever it reaches 200,000
//!   entries, so it stays between 100,000 and 200,000 and shard growth is
//!   included at its amortised rate. Target: under 1 µs.
//! - `client_key/*`: [`client_key`] for IPv4, IPv4-mapped IPv6 and IPv6, and
//!   [`key_of`] (which takes the prefixes from the snapshot's `[sticky]`;
//!   still named `dispatcher_*` so results compare across runs).
//! - `anatomy/*`: the parts the sticky path is made of, to see what dominates:
//!   `clock_now_ms` (read by every lookup and record), `hash_u128_randomstate`
//!   (the table's SipHash of a client key), `ring_point_of` (the ring's),
//!   and `dashmap_len_256_shards` (`DashMap::len` on a map cut into 256
//!   shards like the sticky table, which `record` calls after every insert).
//!
//! Run it (release profile; about two minutes on two cores):
//!
//! ```text
//! cargo bench --bench dispatch
//! cargo bench --bench dispatch -- sticky_hit     # one group only
//! ```

use std::hash::BuildHasher;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use corral::config::{StickyConfig, StrategyKind};
use corral::dispatch::sticky::{client_key, key_of, StickyTable};
use corral::dispatch::{Dispatcher, Tried};
use corral::metrics::Metrics;
use corral::pool::{Backend, Kind, Pool};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// Clients with an entry before each sticky measurement.
const PREFILLED: u32 = 100_000;
/// The insert benchmarks start over from a fresh table at this size.
const REFILL_AT: usize = 200_000;
/// Backend counts measured.
const SIZES: [usize; 2] = [4, 16];

/// First address of the pre-filled clients (10.0.0.0).
const PREFILLED_BASE: u32 = 0x0A00_0000;
/// First address of clients that never get an entry (100.64.0.0).
const ABSENT_BASE: u32 = 0x6440_0000;
/// Clients cycled through by the miss benchmarks.
const ABSENT_COUNT: u32 = 1 << 20;

/// The `[sticky]` every call is given (as a connection passes its
/// snapshot's).
const STICKY: StickyConfig = StickyConfig {
    ttl: Duration::from_secs(3600),
    max_entries: 2_000_000,
    ipv4_prefix: 32,
    ipv6_prefix: 64,
};

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

/// The key of IPv4 address `n` with a /32 prefix.
fn v4_key(n: u32) -> u128 {
    client_key(IpAddr::V4(Ipv4Addr::from(n)), 32, 64)
}

/// A scattered but repeatable order over `0..n`: steps of a prime stride
/// that divides neither 100,000 nor 2^20, so every index comes up once.
fn scattered(n: u32) -> impl Iterator<Item = u32> {
    let stride = 40_503u64; // prime, does not divide 100,000 or 2^20
    (0..u64::from(n)).map(move |i| ((i * stride) % u64::from(n)) as u32)
}

/// A dispatcher whose table holds `PREFILLED` clients, each placed by the
/// ring of `pool`; returns the (client, backend key) pairs in a scattered order.
fn prefilled(pool: &Pool) -> (Dispatcher, Vec<(u128, u64)>) {
    let d = Dispatcher::new();
    let tried = Tried::default();
    let mut clients = Vec::with_capacity(PREFILLED as usize);
    for i in scattered(PREFILLED) {
        let key = v4_key(PREFILLED_BASE + i);
        let index = d
            .pick(StrategyKind::Sticky, &STICKY, pool, key, &tried)
            .expect("a backend is up");
        let backend = pool.backends[index].key;
        d.sticky.record(key, backend, &STICKY);
        clients.push((key, backend));
    }
    (d, clients)
}

fn round_robin_and_least_connections(c: &mut Criterion) {
    let metrics = Metrics::new();
    for (name, strategy) in [
        ("round_robin", StrategyKind::RoundRobin),
        ("least_connections", StrategyKind::LeastConnections),
    ] {
        let mut group = c.benchmark_group(name);
        for n in SIZES {
            let pool = pool(n, &metrics);
            let d = Dispatcher::new();
            let tried = Tried::default();
            group.bench_with_input(BenchmarkId::from_parameter(n), &pool, |b, pool| {
                b.iter(|| d.pick(black_box(strategy), &STICKY, pool, black_box(0), &tried))
            });
        }
        group.finish();
    }
}

fn sticky_hit(c: &mut Criterion) {
    let metrics = Metrics::new();
    let mut group = c.benchmark_group("sticky_hit");
    let mut table_of_16 = None;
    for n in SIZES {
        let pool = pool(n, &metrics);
        let (d, clients) = prefilled(&pool);
        let tried = Tried::default();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("pick", n), |b| {
            b.iter(|| {
                i = (i + 1) % clients.len();
                let (key, _) = clients[i];
                d.pick(StrategyKind::Sticky, &STICKY, &pool, black_box(key), &tried)
            })
        });
        group.bench_function(BenchmarkId::new("pick_and_placed", n), |b| {
            b.iter(|| {
                i = (i + 1) % clients.len();
                let (key, _) = clients[i];
                let index = d
                    .pick(StrategyKind::Sticky, &STICKY, &pool, black_box(key), &tried)
                    .expect("a backend is up");
                d.placed(StrategyKind::Sticky, &STICKY, &pool, key, index, &metrics);
            })
        });
        table_of_16 = Some((d, clients));
    }
    let (d, clients) = table_of_16.expect("sizes measured");
    let table: &StickyTable = &d.sticky;
    let mut i = 0;
    group.bench_function("lookup", |b| {
        b.iter(|| {
            i = (i + 1) % clients.len();
            table.lookup(black_box(clients[i].0), &STICKY)
        })
    });
    let mut i = 0;
    group.bench_function("record", |b| {
        b.iter(|| {
            i = (i + 1) % clients.len();
            let (key, backend) = clients[i];
            table.record(black_box(key), black_box(backend), &STICKY)
        })
    });
    let (key, _) = clients[0];
    group.bench_function("lookup_same_client", |b| {
        b.iter(|| table.lookup(black_box(key), &STICKY))
    });
    group.finish();
}

/// Times `iters` calls of `step(dispatcher, pool, fresh key)` over keys never
/// used before; `d` is replaced by a freshly pre-filled dispatcher (untimed)
/// whenever its table reaches `REFILL_AT` entries.
fn time_new_clients(
    d: &mut Dispatcher,
    pool: &Pool,
    next_key: &mut u32,
    iters: u64,
    mut step: impl FnMut(&Dispatcher, &Pool, u128),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < iters {
        let room = REFILL_AT.saturating_sub(d.sticky.len());
        if room == 0 {
            *d = prefilled(pool).0;
            continue;
        }
        let chunk = (iters - done).min(room as u64);
        let start = Instant::now();
        for _ in 0..chunk {
            step(d, pool, v4_key(*next_key));
            *next_key = next_key.wrapping_add(1);
        }
        total += start.elapsed();
        done += chunk;
    }
    total
}

fn sticky_new(c: &mut Criterion) {
    let metrics = Metrics::new();
    let mut group = c.benchmark_group("sticky_new");
    let tried = Tried::default();
    // Fresh clients for the inserts: 192.0.0.0 upwards, never pre-filled.
    let mut next_key = 0xC000_0000u32;
    for n in SIZES {
        let pool = pool(n, &metrics);
        let (mut d, _) = prefilled(&pool);
        let mut i = 0u32;
        group.bench_function(BenchmarkId::new("pick", n), |b| {
            b.iter(|| {
                i = (i + 1) % ABSENT_COUNT;
                d.pick(
                    StrategyKind::Sticky,
                    &STICKY,
                    &pool,
                    black_box(v4_key(ABSENT_BASE + i)),
                    &tried,
                )
            })
        });
        group.bench_function(BenchmarkId::new("pick_and_record", n), |b| {
            b.iter_custom(|iters| {
                time_new_clients(&mut d, &pool, &mut next_key, iters, |d, pool, key| {
                    let index = d
                        .pick(StrategyKind::Sticky, &STICKY, pool, black_box(key), &tried)
                        .expect("a backend is up");
                    black_box(d.sticky.record(key, pool.backends[index].key, &STICKY));
                })
            })
        });
        if n == 4 {
            let backend = pool.backends[0].key;
            group.bench_function("record_insert", |b| {
                b.iter_custom(|iters| {
                    time_new_clients(&mut d, &pool, &mut next_key, iters, |d, _, key| {
                        black_box(d.sticky.record(black_box(key), backend, &STICKY));
                    })
                })
            });
        }
    }
    group.finish();
}

fn client_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_key");
    let v4: IpAddr = "203.0.113.77".parse().unwrap();
    let mapped: IpAddr = "::ffff:203.0.113.77".parse().unwrap();
    let v6: IpAddr = "2001:db8:85a3:1234:8a2e:370:7334:1".parse().unwrap();
    for (name, ip) in [("ipv4", v4), ("ipv4_mapped", mapped), ("ipv6", v6)] {
        group.bench_function(name, |b| {
            b.iter(|| client_key(black_box(ip), black_box(24), black_box(64)))
        });
    }
    for (name, ip) in [("dispatcher_ipv4", v4), ("dispatcher_ipv6", v6)] {
        group.bench_function(name, |b| b.iter(|| key_of(black_box(ip), &STICKY)));
    }
    group.finish();
}

fn anatomy(c: &mut Criterion) {
    let mut group = c.benchmark_group("anatomy");
    group.bench_function("clock_now_ms", |b| b.iter(corral::clock::now_ms));
    let hasher = std::collections::hash_map::RandomState::new();
    let key = v4_key(PREFILLED_BASE + 7);
    group.bench_function("hash_u128_randomstate", |b| {
        b.iter(|| hasher.hash_one(black_box(key)))
    });
    group.bench_function("ring_point_of", |b| {
        b.iter(|| corral::pool::ring::Ring::point_of(black_box(key)))
    });
    let map: dashmap::DashMap<u128, (u64, u64)> =
        dashmap::DashMap::with_capacity_and_shard_amount(0, 256);
    for i in 0..(PREFILLED + PREFILLED / 2) {
        map.insert(v4_key(PREFILLED_BASE + i), (0, 0));
    }
    group.bench_function("dashmap_len_256_shards", |b| {
        b.iter(|| black_box(&map).len())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = round_robin_and_least_connections, sticky_hit, sticky_new, client_keys, anatomy
}
criterion_main!(benches);
