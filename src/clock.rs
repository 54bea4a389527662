//! A monotonic millisecond clock shared by the whole process, for timestamps
//! that live in atomics (sticky entries, connection activity).

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the first call in this process.
#[inline]
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}
