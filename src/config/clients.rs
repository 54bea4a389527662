//! `[clients]`: per-client limits and access lists (and the `Rate` a
//! `max_rate` is written as).

use std::time::Duration;

use super::defaults;
use super::error::Problems;
use super::raw::RawClients;
use super::types::{ClientsConfig, Rate};
use super::values::{cidrs, int};

/// Validates `[clients]`.
pub fn validate(raw: RawClients, p: &mut Problems) -> ClientsConfig {
    ClientsConfig {
        ipv4_prefix: int(
            raw.ipv4_prefix,
            "clients.ipv4_prefix",
            0,
            32,
            defaults::CLIENTS_IPV4_PREFIX,
            p,
        ) as u8,
        ipv6_prefix: int(
            raw.ipv6_prefix,
            "clients.ipv6_prefix",
            0,
            128,
            defaults::CLIENTS_IPV6_PREFIX,
            p,
        ) as u8,
        max_connections: int(
            raw.max_connections,
            "clients.max_connections",
            0,
            u32::MAX as i64,
            defaults::CLIENTS_MAX_CONNECTIONS,
            p,
        ) as u32,
        max_rate: raw.max_rate.and_then(|r| match Rate::parse(r.get_ref()) {
            Ok(rate) => rate,
            Err(why) => {
                p.at(r.span(), "clients.max_rate", why);
                None
            }
        }),
        allow: cidrs(raw.allow, "clients.allow", p),
        deny: cidrs(raw.deny, "clients.deny", p),
        max_tracked: int(
            raw.max_tracked,
            "clients.max_tracked",
            1,
            100_000_000,
            defaults::CLIENTS_MAX_TRACKED,
            p,
        ) as usize,
    }
}

impl Rate {
    /// `"20/s"`, `"600/m"`, `"1000/h"`; `""` is no limit (`Ok(None)`).
    pub fn parse(text: &str) -> Result<Option<Rate>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a rate: write max_rate = \"20/s\" (per s, m or h), or \"\" for none"))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|&n| (1..=65_535).contains(&n))
            .ok_or_else(|| {
                format!(
                    "`{text}`: the count must be a whole number from 1 to 65535, as in \"20/s\""
                )
            })?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => {
                return Err(format!(
                    "`{other}` is not a period: write s, m or h, as in \"20/s\" or \"600/m\""
                ))
            }
        };
        Ok(Some(Rate { count, per }))
    }
}
