//! `[timeouts]`: connect, first byte, idle and drain.

use super::defaults;
use super::error::Problems;
use super::raw::RawTimeouts;
use super::types::Timeouts;
use super::values::{duration, optional_duration};

/// Validates `[timeouts]`.
pub fn validate(raw: RawTimeouts, p: &mut Problems) -> Timeouts {
    Timeouts {
        connect: duration(
            raw.connect,
            "timeouts.connect",
            defaults::TIMEOUT_CONNECT,
            p,
        ),
        first_byte: optional_duration(
            raw.first_byte,
            "timeouts.first_byte",
            defaults::TIMEOUT_FIRST_BYTE,
            p,
        ),
        idle: duration(raw.idle, "timeouts.idle", defaults::TIMEOUT_IDLE, p),
        drain: duration(raw.drain, "timeouts.drain", defaults::TIMEOUT_DRAIN, p),
    }
}
