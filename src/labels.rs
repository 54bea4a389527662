//! The names backends go by, and the key every corral process derives from
//! a name. A leaf: the config, the pool, dispatch and steering all name
//! backends the same way without reaching into each other.

use std::hash::BuildHasher;

/// Worker slot `id`'s label: its backend name and metric label.
pub(crate) fn worker_label(id: usize) -> String {
    format!("worker-{id}")
}

/// The fixed-key hash of a backend label: the same in every corral process,
/// so the ring, the sticky table and the steering table survive restarts.
pub fn label_key(label: &str) -> u64 {
    hashring::DefaultHashBuilder.hash_one(label)
}
