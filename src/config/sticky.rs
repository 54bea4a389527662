//! `[sticky]`: the client table of the sticky strategy.

use super::defaults;
use super::error::Problems;
use super::raw::RawSticky;
use super::types::StickyConfig;
use super::values::{duration, int};

/// Validates `[sticky]`.
pub fn validate(raw: RawSticky, p: &mut Problems) -> StickyConfig {
    StickyConfig {
        ttl: duration(raw.ttl, "sticky.ttl", defaults::STICKY_TTL, p),
        max_entries: int(
            raw.max_entries,
            "sticky.max_entries",
            1,
            i64::MAX,
            defaults::STICKY_MAX_ENTRIES,
            p,
        ) as usize,
        ipv4_prefix: int(
            raw.ipv4_prefix,
            "sticky.ipv4_prefix",
            0,
            32,
            defaults::STICKY_IPV4_PREFIX,
            p,
        ) as u8,
        ipv6_prefix: int(
            raw.ipv6_prefix,
            "sticky.ipv6_prefix",
            0,
            128,
            defaults::STICKY_IPV6_PREFIX,
            p,
        ) as u8,
    }
}
