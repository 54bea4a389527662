//! A monotonic millisecond clock shared by the whole process, for timestamps
//! that live in atomics (sticky entries, connection activity).
//!
//! It reads `CLOCK_MONOTONIC` (time since boot, the clock `Instant` reads),
//! so it is one clock for every image of the process: an upgraded corral
//! (`corral upgrade`) reads the ages of what it took over on the same clock.

/// Milliseconds on the system's monotonic clock.
#[inline]
pub fn now_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(now) => now.tv_sec() as u64 * 1000 + now.tv_nsec() as u64 / 1_000_000,
        // CLOCK_MONOTONIC cannot fail on Linux; a zero would only make
        // entries look older.
        Err(_) => 0,
    }
}
