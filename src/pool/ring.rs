//! Consistent-hash placement of clients on backends.
//!
//! Each backend is placed on the ring as [`VNODES`] virtual nodes, hashed
//! from the backend's label key and the replica number with hashring's
//! fixed-key SipHasher, so every corral process with the same backends builds
//! the same ring. A lookup walks forward from the client's point, so when a
//! backend is down only its own clients move, each to the next backend on
//! the ring. (The hashring crate's own `get_with_replicas` clones the whole
//! ring per call, so the walk is done here over a sorted vector; hashring
//! supplies the hasher.)

use std::hash::BuildHasher;

/// Virtual nodes per backend: enough to keep 4 backends within a few percent
/// of an even share (a unit test checks ±10% over 10,000 clients).
pub(crate) const VNODES: u32 = 400;

/// A ring built over every configured backend, up or not.
pub struct Ring {
    /// (point on the ring, backend index), sorted by point.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring; `keys[i]` is backend `i`'s label key.
    pub(crate) fn new(keys: &[u64]) -> Ring {
        let mut points: Vec<(u64, u32)> = keys
            .iter()
            .enumerate()
            .flat_map(|(index, key)| {
                (0..VNODES).map(move |replica| {
                    let point = hashring::DefaultHashBuilder.hash_one((key, replica));
                    (point, index as u32)
                })
            })
            .collect();
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        Ring { points }
    }

    /// The fixed-key hash of a client key; where its walk starts.
    #[inline]
    pub fn point_of(client: u128) -> u64 {
        hashring::DefaultHashBuilder.hash_one(client)
    }

    /// Backend indexes in ring order from `point`, once round the ring (an
    /// index may repeat; callers skip what they have seen).
    pub(crate) fn walk(&self, point: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|p| p.0 < point);
        let (wrapped, from_start) = self.points.split_at(start.min(self.points.len()));
        from_start
            .iter()
            .chain(wrapped.iter())
            .map(|&(_, index)| index as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::label_key;

    fn ring(n: usize) -> Ring {
        let keys: Vec<u64> = (0..n).map(|i| label_key(&format!("worker-{i}"))).collect();
        Ring::new(&keys)
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed
    }

    #[test]
    fn spread_is_within_ten_percent_of_the_mean() {
        let ring = ring(4);
        let mut counts = [0usize; 4];
        let mut seed = 42;
        for _ in 0..10_000 {
            let ip = (lcg(&mut seed) >> 32) as u32;
            let key = u128::from(ip) | (0xffff << 32);
            counts[ring.walk(Ring::point_of(key)).next().unwrap()] += 1;
        }
        for c in counts {
            assert!((2250..=2750).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn same_backends_same_placement() {
        let (a, b) = (ring(5), ring(5));
        for client in 0..1000u128 {
            let p = Ring::point_of(client);
            assert_eq!(a.walk(p).next(), b.walk(p).next());
        }
    }

    #[test]
    fn walk_visits_every_backend() {
        let ring = ring(3);
        let mut seen: Vec<usize> = ring.walk(Ring::point_of(7)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, vec![0, 1, 2]);
    }

    #[test]
    fn only_the_missing_backends_clients_move() {
        let full = ring(4);
        for client in 0..2000u128 {
            let p = Ring::point_of(client);
            let first = full.walk(p).next().unwrap();
            // With backend 3 down, the walk skips it; nobody else moves.
            let skipped = full.walk(p).find(|&i| i != 3).unwrap();
            if first != 3 {
                assert_eq!(first, skipped);
            }
        }
    }
}
