//! Value helpers every section uses: integers in a range, durations,
//! sizes, addresses, networks, each reporting a bad value at its place.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::error::Problems;
use super::raw::SendProxy;

pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn int(
    value: Option<Spanned<i64>>,
    key: &str,
    min: i64,
    max: i64,
    default: i64,
    p: &mut Problems,
) -> i64 {
    match value {
        None => default,
        Some(v) if *v.get_ref() < min || *v.get_ref() > max => {
            p.at(
                v.span(),
                key,
                format!("{} is out of range {min}..={max}", v.get_ref()),
            );
            default
        }
        Some(v) => v.into_inner(),
    }
}

/// A duration written with a unit, such as "250ms", "2s" or "30m"; zero is refused.
pub(crate) fn duration(
    value: Option<Spanned<String>>,
    key: &str,
    default: Duration,
    p: &mut Problems,
) -> Duration {
    let Some(v) = value else { return default };
    match humantime::parse_duration(v.get_ref().trim()) {
        Ok(d) if d.is_zero() => {
            p.at(v.span(), key, "must be longer than zero");
            default
        }
        Ok(d) => d,
        Err(e) => {
            p.at(
                v.span(),
                key,
                format!(
                    "`{}` is not a duration with a unit such as \"250ms\", \"2s\" or \"30m\": {e}",
                    v.get_ref()
                ),
            );
            default
        }
    }
}

/// A duration where `"0s"` means "never": `None`.
pub(crate) fn optional_duration(
    value: Option<Spanned<String>>,
    key: &str,
    default: Duration,
    p: &mut Problems,
) -> Option<Duration> {
    match value {
        Some(v) if humantime::parse_duration(v.get_ref().trim()).is_ok_and(|d| d.is_zero()) => None,
        None if default.is_zero() => None,
        other => Some(duration(other, key, default, p)),
    }
}

/// A size such as "512MiB", "2GB" or "1048576" (bytes).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * scale) as u64)
}

/// An address with a port: `"127.0.0.1:8080"`, `"[::]:8080"`, `":8080"`
/// (every IPv4 interface) or `"localhost:8080"`.
pub fn parse_addr(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        return port
            .parse::<u16>()
            .ok()
            .map(|port| SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .ok()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().ok()
}

/// A list of networks: `"10.0.0.0/8"`, `"2001:db8::/32"`, or a bare
/// address (`"192.0.2.7"`: that address alone).
pub(crate) fn cidrs(
    value: Option<Spanned<Vec<String>>>,
    key: &str,
    p: &mut Problems,
) -> Vec<IpNet> {
    let Some(value) = value else {
        return Vec::new();
    };
    let span = value.span();
    let mut nets = Vec::new();
    for text in value.into_inner() {
        let text = text.trim();
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => nets.push(net.trunc()),
            Err(_) => p.at(
                span.clone(),
                key,
                format!("`{text}` is not a network such as \"10.0.0.0/8\", \"2001:db8::/32\" or an address"),
            ),
        }
    }
    nets
}

pub(crate) fn socket_addr(
    value: &Spanned<String>,
    key: &str,
    p: &mut Problems,
) -> Option<SocketAddr> {
    let parsed = parse_addr(value.get_ref());
    if parsed.is_none() {
        p.at(
            value.span(),
            key,
            format!(
                "`{}` is not an address with a port, such as \"127.0.0.1:8080\", \":8080\" or \"[::]:8080\"",
                value.get_ref()
            ),
        );
    }
    parsed
}

/// A backend address: an IP and port, or a host name resolved once at load.
pub(crate) fn resolve(value: &Spanned<String>, key: &str, p: &mut Problems) -> Option<SocketAddr> {
    let text = value.get_ref().trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let resolved = text
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next());
    if resolved.is_none() {
        p.at(
            value.span(),
            key,
            format!("`{text}` is not a host:port that resolves, such as \"127.0.0.1:3000\""),
        );
    }
    resolved
}

pub(crate) fn send_proxy(value: Option<Spanned<SendProxy>>) -> SendProxy {
    value.map(Spanned::into_inner).unwrap_or_default()
}
