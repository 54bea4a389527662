//! The sticky table at a million clients: memory per entry, and how long a
//! sweep can hold up a concurrent lookup. A plain `main` (no criterion), run
//! with:
//!
//! ```text
//! cargo bench --bench sticky_scale
//! ```
//!
//! It measures, and prints as two small tables with a verdict per target:
//!
//! 1. **Memory.** Resident memory (`VmRSS` from `/proc/self/status`) before and
//!    after filling a [`StickyTable`] (`max_entries` 2,000,000, ttl 1 h) with
//!    1,000,000 distinct IPv4 clients; growth in MiB and bytes per entry.
//!    Target: under 128 MiB for the million.
//! 2. **Sweep stall.** With 1,000,000 entries, [`StickyTable::sweep`] runs on
//!    one thread while another does [`StickyTable::lookup`]s of random clients
//!    in a tight loop, timing each one; reported: the sweep's duration, the
//!    lookups done meanwhile, their p50, p99.9 and maximum latency. Scenarios:
//!    - `idle`: lookups with no sweep running (the noise floor of the machine);
//!    - `no-op`: a sweep with nothing to remove (the periodic steady state;
//!      three rounds);
//!    - `evict`: `max_entries` lowered to 500,000 (the limits the sweep is given), so the
//!      sweep removes the least recently used half (three rounds, each refilled
//!      to a million with new clients);
//!    - `expire`: the older half of the entries past the ttl, so the sweep's
//!      first pass removes them (three rounds likewise).
//!
//!    Target: no single lookup blocked more than 1 ms.
//!
//! The sweeping thread and the lookup thread are pinned to two different CPUs
//! (when there are two): unpinned, on a two-CPU machine the scheduler would
//! now and then queue them on the same CPU, and a lookup would wait a whole
//! timeslice (2-3 ms) behind the sweep for the CPU rather than for a lock.
//! Each latency includes one `Instant::now()` (about 20 ns). A lookup over
//! 5 µs is classified with `getrusage(RUSAGE_THREAD)`: a voluntary context
//! switch means it slept on a shard lock, an involuntary one that it was
//! preempted. The maximum still catches the lookup thread being preempted by
//! anything else on the machine; the `idle` row shows how much of that there
//! is without any sweep.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use corral::clock;
use corral::config::StickyConfig;
use corral::dispatch::sticky::{client_key, StickyTable};
use corral::labels::label_key;

const MILLION: u32 = 1_000_000;
const HALF: u32 = MILLION / 2;
/// First client address (10.0.0.0); client `n` is `BASE + n`.
const BASE: u32 = 0x0A00_0000;
const MEMORY_TARGET_MIB: f64 = 128.0;
const STALL_TARGET: Duration = Duration::from_millis(1);
const ROUNDS: usize = 3;
/// Gap between the old and the new half in the `expire` scenario; the ttl
/// is set to fall in the middle of it.
const AGE_GAP_MS: u64 = 300;

/// The limits of the fill and the lookups: nothing expires or is evicted.
const WIDE: StickyConfig = StickyConfig {
    ttl: Duration::from_secs(3600),
    max_entries: 2_000_000,
    ipv4_prefix: 32,
    ipv6_prefix: 64,
};

fn config(ttl: Duration, max_entries: usize) -> StickyConfig {
    StickyConfig {
        ttl,
        max_entries,
        ipv4_prefix: 32,
        ipv6_prefix: 64,
    }
}

fn key(n: u32) -> u128 {
    client_key(IpAddr::V4(Ipv4Addr::from(BASE.wrapping_add(n))), 32, 64)
}

/// Records clients `from..to`, spread over four backends.
fn fill(table: &StickyTable, from: u32, to: u32, backends: &[u64; 4]) {
    for n in from..to {
        table.record(key(n), backends[n as usize % 4], &WIDE);
    }
}

/// `VmRSS` of this process in bytes.
fn rss_bytes() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

/// (all CPU time of the machine, its busy part, this process's part), in
/// clock ticks, from `/proc/stat` and `/proc/self/stat`.
fn cpu_ticks() -> (u64, u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    let own = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<u64> = own
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    (total, total - idle, fields.iter().sum())
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "MISSED"
    }
}

/// Lookup latencies: 10 ns buckets up to 100 µs, then exact values.
struct Latencies {
    buckets: Vec<u64>,
    over: Vec<u64>,
    max_ns: u64,
    count: u64,
    /// Lookups during which this thread parked (slept on a shard lock).
    parked: u64,
    /// The longest of those, in ns.
    max_parked_ns: u64,
    /// Lookups over 1 ms during which it parked.
    parked_over: u64,
    /// Lookups over 1 ms during which it was only preempted (or yielded).
    descheduled_over: u64,
}

const BUCKET_NS: u64 = 10;
const BUCKETS: usize = 10_000;

impl Latencies {
    fn new() -> Latencies {
        Latencies {
            buckets: vec![0; BUCKETS],
            over: Vec::new(),
            max_ns: 0,
            count: 0,
            parked: 0,
            max_parked_ns: 0,
            parked_over: 0,
            descheduled_over: 0,
        }
    }

    #[inline]
    fn add(&mut self, ns: u64) {
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
        match self.buckets.get_mut((ns / BUCKET_NS) as usize) {
            Some(b) => *b += 1,
            None => self.over.push(ns),
        }
    }

    /// The latency at quantile `q`, in ns (bucket upper bound below 100 µs).
    fn quantile(&mut self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return (i as u64 + 1) * BUCKET_NS;
            }
        }
        self.over.sort_unstable();
        self.over[(rank - seen - 1) as usize]
    }

    /// Lookups that took longer than `limit`.
    fn over_limit(&self, limit: Duration) -> usize {
        let limit = limit.as_nanos() as u64;
        self.over.iter().filter(|&&ns| ns > limit).count()
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to `cpu`, if there is one.
fn pin(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        // SAFETY: as above; the set names one allowed CPU.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut set) };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        unsafe { libc::sched_setaffinity(0, size, &set) };
    }
}

/// Context switches of the calling thread so far: (voluntary, involuntary).
fn thread_switches() -> (i64, i64) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    (usage.ru_nvcsw, usage.ru_nivcsw)
}

/// Lookups slower than this are classified by the thread's context switches.
const CHECK_NS: u64 = 5_000;

/// Looks up random clients among `0..clients` until `stop`, timing each one
/// made while `active`. A lookup over `CHECK_NS` is classified by this
/// thread's context switches since the last check: a voluntary one means it
/// parked on a shard lock (the sweep held it: nothing else in the loop
/// sleeps), an involuntary one only that it was descheduled (or yielded while
/// spinning on the lock).
fn lookups(table: &StickyTable, clients: u32, active: &AtomicBool, stop: &AtomicBool) -> Latencies {
    let mut lat = Latencies::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut switches = thread_switches();
    while !stop.load(Ordering::Relaxed) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let k = key((seed % u64::from(clients)) as u32);
        let start = Instant::now();
        std::hint::black_box(table.lookup(std::hint::black_box(k), &WIDE));
        let ns = start.elapsed().as_nanos() as u64;
        if !active.load(Ordering::Relaxed) {
            switches = thread_switches();
            continue;
        }
        lat.add(ns);
        if ns > CHECK_NS {
            let now = thread_switches();
            let over = ns > STALL_TARGET.as_nanos() as u64;
            if now.0 > switches.0 {
                lat.parked += 1;
                lat.max_parked_ns = lat.max_parked_ns.max(ns);
                lat.parked_over += u64::from(over);
            } else if now.1 > switches.1 {
                lat.descheduled_over += u64::from(over);
            }
            switches = now;
        }
    }
    lat
}

/// One row of the stall table.
struct Stall {
    scenario: String,
    before: usize,
    after: usize,
    sweep: Option<Duration>,
    /// Times the sweeping thread was preempted during the sweep.
    sweep_preempted: i64,
    lat: Latencies,
}

/// Runs `sweep` (or, for `None`, just waits `idle`) on this thread while
/// another thread times lookups over clients `0..clients`.
/// The lookup thread is pinned to `lookup_cpu` (the caller has pinned
/// itself to another), so that the two never queue for the same CPU.
fn measure(
    scenario: &str,
    table: &StickyTable,
    clients: u32,
    sweep: Option<&dyn Fn()>,
    idle: Duration,
    lookup_cpu: Option<usize>,
) -> Stall {
    let (active, stop) = (AtomicBool::new(false), AtomicBool::new(false));
    let before = table.len();
    let (sweep_time, sweep_preempted, lat) = thread::scope(|s| {
        let looker = s.spawn(|| {
            pin(lookup_cpu);
            lookups(table, clients, &active, &stop)
        });
        // Let the lookup thread get going before the sweep starts.
        thread::sleep(Duration::from_millis(20));
        let switches = thread_switches();
        active.store(true, Ordering::Relaxed);
        let start = Instant::now();
        let time = match sweep {
            Some(sweep) => {
                sweep();
                Some(start.elapsed())
            }
            None => {
                thread::sleep(idle);
                None
            }
        };
        stop.store(true, Ordering::Relaxed);
        let preempted = thread_switches().1 - switches.1;
        (time, preempted, looker.join().expect("lookup thread"))
    });
    Stall {
        scenario: scenario.to_string(),
        before,
        after: table.len(),
        sweep: sweep_time,
        sweep_preempted,
        lat,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter means another target's.
    if std::env::args().skip(1).any(|a| !a.starts_with('-')) {
        return;
    }
    let backends: [u64; 4] = std::array::from_fn(|i| label_key(&format!("worker-{i}")));
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "sticky_scale: 1,000,000 clients, {} CPUs, loadavg {}",
        thread::available_parallelism().map_or(0, usize::from),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // 1. Memory.
    clock::now_ms(); // start the clock before measuring
    let rss_before = rss_bytes();
    let table = StickyTable::new();
    let start = Instant::now();
    fill(&table, 0, MILLION, &backends);
    let fill_time = start.elapsed();
    let rss_after = rss_bytes();
    assert_eq!(table.len(), MILLION as usize);
    let growth = rss_after.saturating_sub(rss_before) as f64;
    let growth_mib = mib(growth);
    let memory_met = growth_mib < MEMORY_TARGET_MIB;
    println!();
    println!("memory (1,000,000 entries, max_entries 2,000,000, ttl 1h)");
    println!(
        "  {:<12} {:>12} {:>12} {:>12} {:>12} {:>14}",
        "VmRSS before", "VmRSS after", "growth", "per entry", "fill", "fill per entry"
    );
    println!(
        "  {:>8.1} MiB {:>8.1} MiB {:>8.1} MiB {:>10.1} B {:>9.0} ms {:>11.0} ns",
        mib(rss_before as f64),
        mib(rss_after as f64),
        growth_mib,
        growth / f64::from(MILLION),
        fill_time.as_secs_f64() * 1e3,
        fill_time.as_secs_f64() * 1e9 / f64::from(MILLION),
    );
    println!(
        "  target < {MEMORY_TARGET_MIB} MiB for 1,000,000 entries: {}",
        verdict(memory_met)
    );

    // 2. Sweep stall. With two CPUs or more, this thread (which sweeps) and
    // the lookup thread each get one of their own.
    let cpus = allowed_cpus();
    let (sweep_cpu, lookup_cpu) = match cpus[..] {
        [a, b, ..] => (Some(a), Some(b)),
        _ => (None, None),
    };
    pin(sweep_cpu);
    let ticks_before = cpu_ticks();
    let mut rows = Vec::new();
    rows.push(measure(
        "idle (no sweep)",
        &table,
        MILLION,
        None,
        Duration::from_millis(500),
        lookup_cpu,
    ));
    for round in 1..=ROUNDS {
        rows.push(measure(
            &format!("no-op #{round}"),
            &table,
            MILLION,
            Some(&|| table.sweep(&WIDE)),
            Duration::ZERO,
            lookup_cpu,
        ));
    }

    // Evict: lower max_entries to half; refill with new clients between rounds.
    let mut next = MILLION;
    let half = config(Duration::from_secs(3600), HALF as usize);
    for round in 1..=ROUNDS {
        if round > 1 {
            fill(&table, next, next + HALF, &backends);
            next += HALF;
        }
        rows.push(measure(
            &format!("evict #{round}"),
            &table,
            next,
            Some(&|| table.sweep(&half)),
            Duration::ZERO,
            lookup_cpu,
        ));
    }
    drop(table);

    // Expire: an old half and a new half AGE_GAP_MS apart; the ttl falls
    // in the middle of the gap when the sweep runs.
    let table = StickyTable::new();
    fill(&table, 0, HALF, &backends);
    let mut next = HALF;
    for round in 1..=ROUNDS {
        thread::sleep(Duration::from_millis(AGE_GAP_MS));
        let boundary = clock::now_ms();
        fill(&table, next, next + HALF, &backends);
        next += HALF;
        let sweep = || {
            // Entries seen at or after `boundary` stay live a further half
            // gap; those before it (at least a gap older) are expired.
            let ttl = clock::now_ms() - boundary + AGE_GAP_MS / 2;
            table.sweep(&config(Duration::from_millis(ttl), 2_000_000));
        };
        rows.push(measure(
            &format!("expire #{round}"),
            &table,
            next,
            Some(&sweep),
            Duration::ZERO,
            lookup_cpu,
        ));
    }

    let ticks_after = cpu_ticks();
    let all = ticks_after.0.saturating_sub(ticks_before.0).max(1) as f64;
    let busy = ticks_after.1.saturating_sub(ticks_before.1) as f64;
    let own = ticks_after.2.saturating_sub(ticks_before.2) as f64;

    println!();
    println!("sweep stall (lookups of random clients on a second thread while the sweep runs)");
    match (sweep_cpu, lookup_cpu) {
        (Some(s), Some(l)) => {
            println!("  sweeping thread pinned to CPU {s}, lookup thread to CPU {l}")
        }
        _ => println!("  one CPU: the two threads share it"),
    }
    println!(
        "  {:<15} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>8} {:>6} {:>6} {:>8} {:>6} {:>6}",
        "scenario",
        "before",
        "after",
        "sweep",
        "lookups",
        "p50",
        "p99.9",
        "max",
        ">1ms",
        "parked",
        "max park",
        "park>1",
        "sw pre"
    );
    let (mut worst, mut worst_park, mut parked_over, mut descheduled_over) =
        (Duration::ZERO, 0, 0, 0);
    for row in &mut rows {
        if row.sweep.is_some() {
            worst = worst.max(Duration::from_nanos(row.lat.max_ns));
            worst_park = worst_park.max(row.lat.max_parked_ns);
            parked_over += row.lat.parked_over;
            descheduled_over += row.lat.descheduled_over;
        }
        let (p50, p999) = (row.lat.quantile(0.5), row.lat.quantile(0.999));
        let sweep = row.sweep.map_or("-".to_string(), |d| {
            format!("{:.1}ms", d.as_secs_f64() * 1e3)
        });
        println!(
            "  {:<15} {:>8} {:>8} {:>8} {:>8} {:>4}ns {:>5}ns {:>6.0}µs {:>6} {:>6} {:>6.0}µs {:>6} {:>6}",
            row.scenario,
            row.before,
            row.after,
            sweep,
            row.lat.count,
            p50,
            p999,
            row.lat.max_ns as f64 / 1e3,
            row.lat.over_limit(STALL_TARGET),
            row.lat.parked,
            row.lat.max_parked_ns as f64 / 1e3,
            row.lat.parked_over,
            row.sweep_preempted,
        );
    }
    println!(
        "  >1ms: lookups over 1 ms; parked: lookups that slept on a shard lock; max park: the \
         longest of those;\n  park>1: parked lookups over 1 ms; sw pre: times the sweeping \
         thread was preempted.\n  Other processes used {:.0}% of the machine's CPU meanwhile \
         (this one {:.0}%).",
        100.0 * (busy - own).max(0.0) / all,
        100.0 * own / all,
    );
    println!(
        "  target: no lookup > 1 ms during a sweep: worst {:.0} µs: {}",
        worst.as_secs_f64() * 1e6,
        verdict(worst <= STALL_TARGET)
    );
    println!(
        "  target, lock waits only: longest lookup that waited on a shard lock {:.0} µs, \
         {parked_over} over 1 ms ({descheduled_over} over 1 ms only descheduled): {}",
        worst_park as f64 / 1e3,
        verdict(parked_over == 0)
    );
}
