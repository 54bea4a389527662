//! The per-client table (`[clients]`) at a million clients: memory per
//! tracked client and the cost of admitting a connection. A plain `main`
//! (no criterion), run with:
//!
//! ```text
//! cargo bench --bench clients_scale
//! ```
//!
//! 1. **Memory.** Resident memory (`VmRSS` from `/proc/self/status`) before
//!    and after 1,000,000 distinct IPv4 clients each open and close one
//!    connection through a [`ClientTable`] (`max_tracked` 2,000,000, so
//!    nothing is forgotten); growth in MiB and bytes per client. Target:
//!    64 bytes per client. An IPv4 client's map slot is 20 bytes (a 4-byte
//!    key) and a control byte; at a million the 256 shards have just
//!    doubled (48% full), so this is the worst point of the curve: measured
//!    49 bytes (74.7 with the 16-byte key of every client before); 200 to
//!    290 ns per admission, with or without limits, as before, on a loaded
//!    2-CPU machine.
//! 2. **Admission.** Nanoseconds per admit-and-release of a connection by a
//!    client already in the table, with `max_connections` and `max_rate`
//!    set (not hit), and with no limits: the cost the limits add per new
//!    connection.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use corral::clients::ClientTable;
use corral::config::{ClientsConfig, Rate};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn config(limits: bool) -> ClientsConfig {
    ClientsConfig {
        ipv4_prefix: 32,
        ipv6_prefix: 64,
        max_connections: if limits { 1000 } else { 0 },
        max_rate: limits.then_some(Rate {
            count: 1_000_000_000,
            per: Duration::from_secs(1),
        }),
        allow: Vec::new(),
        deny: Vec::new(),
        max_tracked: 2_000_000,
    }
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn main() {
    const CLIENTS: u32 = 1_000_000;
    let limited = config(true);
    let before = rss_bytes();
    let table = ClientTable::new();
    for i in 0..CLIENTS {
        drop(table.admit(client(i), &limited));
    }
    let after = rss_bytes();
    let grown = after.saturating_sub(before);
    println!(
        "memory: {} clients, RSS +{:.1} MiB, {:.1} bytes per client (target 64): {}",
        table.len(),
        grown as f64 / 1024.0 / 1024.0,
        grown as f64 / f64::from(CLIENTS),
        if grown <= 64 * u64::from(CLIENTS) {
            "ok"
        } else {
            "over"
        }
    );

    const ROUNDS: u32 = 2_000_000;
    for (name, limits) in [
        ("no limits", config(false)),
        ("limits set, not hit", limited),
    ] {
        let start = Instant::now();
        for i in 0..ROUNDS {
            let admitted = table.admit(client(i % 4096), &limits);
            std::hint::black_box(&admitted);
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
        println!("admission ({name}): {ns:.0} ns per admit and release");
    }
}
