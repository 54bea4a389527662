//! `[health]`: the active checks (and whether passive ones take a backend
//! down).

use super::defaults;
use super::error::Problems;
use super::raw::RawHealth;
use super::types::HealthConfig;
use super::values::{duration, int};

/// Validates `[health]`.
pub fn validate(raw: RawHealth, p: &mut Problems) -> HealthConfig {
    HealthConfig {
        kind: raw.kind.unwrap_or_default(),
        path: match raw.path {
            Some(path) if !path.get_ref().starts_with('/') => {
                p.at(path.span(), "health.path", "must start with `/`");
                String::new()
            }
            Some(path) => path.into_inner(),
            None => defaults::HEALTH_PATH.to_string(),
        },
        interval: duration(
            raw.interval,
            "health.interval",
            defaults::HEALTH_INTERVAL,
            p,
        ),
        timeout: duration(raw.timeout, "health.timeout", defaults::HEALTH_TIMEOUT, p),
        rise: int(raw.rise, "health.rise", 1, 1000, defaults::HEALTH_RISE, p) as u32,
        fall: int(raw.fall, "health.fall", 1, 1000, defaults::HEALTH_FALL, p) as u32,
        observe: raw.observe.unwrap_or(defaults::HEALTH_OBSERVE),
    }
}
