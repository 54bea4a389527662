//! The consistent table behind sticky placement in handed mode, built the way
//! Google's Maglev builds its lookup table: each slot walks its own
//! permutation of the buckets (an offset and a skip derived from its name)
//! and the slots take turns claiming the next free bucket of their walk.
//! Every slot gets an equal share (within one bucket), the table is a pure
//! function of the set of slots (so every corral with the same config, and
//! a restarted one, builds the same), and when one slot leaves only a small
//! share of the other slots' buckets move.

use crate::labels::{label_key, worker_label};

/// Buckets in the table: a prime, so every skip walks all of them.
pub const BUCKETS: usize = 1021;

/// The most slots a table (and handed mode) serves: beyond it the program
/// that searches the table would pass the kernel's instruction limit.
pub const MAX_SLOTS: usize = 512;

/// Bucket → slot, for `slots` (not empty).
pub fn build(slots: &[usize]) -> Vec<usize> {
    const FREE: usize = usize::MAX;
    let walks: Vec<(usize, usize)> = slots
        .iter()
        .map(|&slot| {
            let label = worker_label(slot);
            let offset = label_key(&label) as usize % BUCKETS;
            let skip = label_key(&format!("{label}/skip")) as usize % (BUCKETS - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut table = vec![FREE; BUCKETS];
    let mut next = vec![0usize; slots.len()];
    let mut filled = 0;
    'fill: loop {
        for (i, &slot) in slots.iter().enumerate() {
            let (offset, skip) = walks[i];
            let mut bucket = (offset + next[i] * skip) % BUCKETS;
            while table[bucket] != FREE {
                next[i] += 1;
                bucket = (offset + next[i] * skip) % BUCKETS;
            }
            table[bucket] = slot;
            next[i] += 1;
            filled += 1;
            if filled == BUCKETS {
                break 'fill;
            }
        }
    }
    table
}

/// The table as runs of equal slots: `(first bucket, slot)`, in order.
pub fn runs(table: &[usize]) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for (bucket, &slot) in table.iter().enumerate() {
        if runs.last().is_none_or(|&(_, last)| last != slot as u32) {
            runs.push((bucket as u32, slot as u32));
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_gets_an_equal_share() {
        let table = build(&[0, 1, 2, 3, 4]);
        for slot in 0..5 {
            let share = table.iter().filter(|&&s| s == slot).count();
            assert!((204..=205).contains(&share), "slot {slot}: {share}");
        }
    }

    #[test]
    fn a_slot_leaving_moves_little_else() {
        let all = build(&[0, 1, 2, 3, 4, 5, 6, 7]);
        let fewer = build(&[0, 1, 2, 3, 5, 6, 7]);
        let moved = (0..BUCKETS)
            .filter(|&b| all[b] != 4 && all[b] != fewer[b])
            .count();
        // Maglev's bound is loose; a full reshuffle would move ~7/8.
        assert!(moved < BUCKETS / 10, "{moved} buckets of other slots moved");
    }

    #[test]
    fn the_table_is_a_function_of_the_slots() {
        assert_eq!(build(&[0, 2, 5]), build(&[0, 2, 5]));
        assert_eq!(runs(&[1, 1, 0, 0, 0, 1]), vec![(0, 1), (2, 0), (5, 1)]);
    }
}
