//! Worker ports (port mode): which ones corral's workers may use.
//!
//! - [`PortBook`] holds the ports of live worker processes, so that a slot
//!   never starts a process on a port another slot's process is using (the
//!   alternate ports shift when `count` changes on reload).
//! - [`settle`] picks `workers.port_base` when neither the file nor
//!   `--port-base` gave one: a block of `2 × count` ports (a port per slot,
//!   and one for its replacement in a rolling restart), every one free when
//!   tested, outside the kernel's ephemeral range (where an outgoing
//!   connection could take a worker's port) and clear of the front end and
//!   the admin port. The search starts at a random block, so two corrals
//!   started at once on one machine do not reach for the same ports.
//! - [`PortBook::claim_elsewhere`]: a picked port taken by another program
//!   since the pick is replaced by another free one, for that slot.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Mutex;

use crate::config::{self, Config, ListenMode, WorkersConfig};

/// Corral picks no port below this one: the ports below are where services
/// are usually configured (8080, 9090, 9100, ...).
const PICK_FROM: u16 = 10_000;

#[derive(Default)]
pub struct PortBook(Mutex<Vec<u16>>);

impl PortBook {
    /// Claims the first of `candidates` that no worker holds and nothing
    /// else on `host` listens on (a stranger on the port would pass the
    /// readiness check and get the slot's traffic).
    pub fn claim(&self, host: IpAddr, candidates: [u16; 2]) -> Option<u16> {
        let mut held = self.held();
        let port = candidates
            .into_iter()
            .find(|&p| !held.contains(&p) && bindable(host, p))?;
        held.push(port);
        Some(port)
    }

    /// Claims a free port from the range corral picks from (outside the
    /// ephemeral range), none of `avoid`: for a slot whose picked ports
    /// another program took since they were picked.
    pub fn claim_elsewhere(&self, host: IpAddr, avoid: &[u16]) -> Option<u16> {
        let mut held = self.held();
        let candidates: Vec<u16> = pickable().into_iter().flatten().collect();
        let start = random_index(candidates.len());
        let port = candidates[start..]
            .iter()
            .chain(&candidates[..start])
            .copied()
            .find(|p| !held.contains(p) && !avoid.contains(p) && bindable(host, *p))?;
        held.push(port);
        Some(port)
    }

    /// Holds `port` for a process already listening on it (one an earlier
    /// image of corral started).
    pub fn hold(&self, port: u16) {
        let mut held = self.held();
        if !held.contains(&port) {
            held.push(port);
        }
    }

    pub fn release(&self, port: u16) {
        self.held().retain(|&p| p != port);
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<u16>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Picks `workers.port_base` for a config that leaves it to corral (no
/// `port_base` in the file, no `--port-base`). `previous` is the config
/// running now (a reload, a scale): its pick is kept while it still
/// fits, so a reload moves no worker. Does nothing in handed mode or for a
/// `port_base` the user gave.
pub fn settle(config: &mut Config, previous: Option<&Config>) -> Result<(), String> {
    let avoid = front_ports(config);
    let Some(workers) = config
        .workers
        .as_mut()
        .filter(|w| w.auto_ports && w.listen == ListenMode::Proxied)
    else {
        return Ok(());
    };
    let kept = previous
        .and_then(|p| p.workers.as_ref())
        .filter(|before| before.auto_ports && before.listen == ListenMode::Proxied)
        .filter(|before| still_fits(before, workers, &avoid));
    if let Some(before) = kept {
        workers.port_base = before.port_base;
        return Ok(());
    }
    let len = 2 * workers.count;
    let base = pick_block(workers.host, len, &avoid).ok_or_else(|| {
        format!(
            "cannot find {len} free ports in a row for the workers (two per worker) outside the kernel's ephemeral range: set workers.port_base (or --port-base) to a free range"
        )
    })?;
    workers.port_base = base;
    tracing::info!(
        port_base = base,
        "workers.port_base not set: picked free worker ports {base}..{} (two per worker, for rolling restarts)",
        base as usize + len - 1
    );
    Ok(())
}

/// The front end's and the admin port's ports: never a worker's.
pub fn front_ports(config: &Config) -> Vec<u16> {
    config
        .listener
        .binds
        .iter()
        .chain([&config.admin.bind])
        .map(|a| a.port())
        .collect()
}

/// Can `now` keep the block `before` picked? Yes when it needs no more
/// ports, or the ports it adds are free and pickable too.
fn still_fits(before: &WorkersConfig, now: &WorkersConfig, avoid: &[u16]) -> bool {
    if before.host != now.host {
        return false;
    }
    let (start, end) = (
        before.port_base as usize + 2 * before.count,
        before.port_base as usize + 2 * now.count,
    );
    if end <= start {
        return true;
    }
    end <= 65_536
        && (start..end).all(|p| {
            let p = p as u16;
            in_pickable(p) && !avoid.contains(&p) && bindable(now.host, p)
        })
}

/// A block of `len` consecutive ports starting at a multiple of `len` from
/// the start of its range, every one pickable, none of `avoid`, each free
/// on `host` when tried. The search starts at a random block.
fn pick_block(host: IpAddr, len: usize, avoid: &[u16]) -> Option<u16> {
    let bases: Vec<u16> = pickable()
        .into_iter()
        .flat_map(|range| {
            let (low, high) = (*range.start() as usize, *range.end() as usize);
            (low..=high)
                .step_by(len.max(1))
                .filter(move |&b| b + len - 1 <= high)
                .map(|b| b as u16)
        })
        .collect();
    if bases.is_empty() {
        return None;
    }
    let start = random_index(bases.len());
    bases[start..]
        .iter()
        .chain(&bases[..start])
        .copied()
        .find(|&base| {
            (base as usize..base as usize + len).all(|p| {
                let p = p as u16;
                !avoid.contains(&p) && bindable(host, p)
            })
        })
}

/// The ranges corral picks worker ports from: [`PICK_FROM`] and up,
/// without the kernel's ephemeral range.
fn pickable() -> Vec<RangeInclusive<u16>> {
    let Some((low, high)) = config::ephemeral_ports().filter(|(low, high)| low <= high) else {
        return vec![PICK_FROM..=32_767];
    };
    let mut ranges = Vec::new();
    if low > PICK_FROM {
        ranges.push(PICK_FROM..=low - 1);
    }
    if high < u16::MAX {
        ranges.push(high.max(PICK_FROM - 1) + 1..=u16::MAX);
    }
    ranges
}

fn in_pickable(port: u16) -> bool {
    pickable().iter().any(|r| r.contains(&port))
}

/// Nothing listens on `host:port` now (binding it succeeds).
fn bindable(host: IpAddr, port: u16) -> bool {
    std::net::TcpListener::bind((host, port)).is_ok()
}

/// A random index below `n` (std's per-process random hash keys; nothing
/// here needs more than "unlikely to match another corral's").
fn random_index(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    (hasher.finish() % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_outside_the_ephemeral_range_and_free() {
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let base = pick_block(host, 6, &[]).expect("a free block");
        for port in base..base + 6 {
            assert!(in_pickable(port), "{port} is not pickable");
            assert!(port >= PICK_FROM);
            if let Some((low, high)) = config::ephemeral_ports() {
                assert!(!(low..=high).contains(&port), "{port} is ephemeral");
            }
        }
    }

    #[test]
    fn a_taken_port_is_never_picked() {
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let book = PortBook::default();
        let held = book.claim_elsewhere(host, &[]).expect("a free port");
        let taken = std::net::TcpListener::bind((host, held + 1));
        for _ in 0..50 {
            let port = book
                .claim_elsewhere(host, &[held + 2])
                .expect("a free port");
            assert_ne!(port, held, "a held port was handed out again");
            assert_ne!(port, held + 2, "an avoided port was handed out");
            if taken.is_ok() {
                assert_ne!(port, held + 1, "a port in use was handed out");
            }
            book.release(port);
        }
    }
}
