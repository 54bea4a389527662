//! The rules that tie keys of different sections together (addresses that
//! must differ, worker ports, what handed mode cannot do); checked for a file
//! and again after command-line overrides.

use std::collections::HashSet;

use super::error::Problems;
use super::raw::{ListenMode, ProxyProtocolMode, SendProxy, StrategyKind};
use super::types::{Config, WorkersConfig};

/// The rules that tie keys of different sections together; checked for a
/// file and again after command-line overrides.
pub fn cross_check(config: &Config, p: &mut Problems) {
    let mut seen = HashSet::new();
    for bind in &config.listener.binds {
        if !seen.insert(*bind) {
            p.general(
                Some("listener.bind"),
                format!("{bind} is listed twice: list each front-end address once"),
            );
        }
        if *bind == config.admin.bind
            || (bind.port() == config.admin.bind.port()
                && (bind.ip().is_unspecified() || config.admin.bind.ip().is_unspecified()))
        {
            p.general(
                Some("admin.bind"),
                format!(
                    "{} is also a front-end address (listener.bind): give the admin port a port of its own, such as \"127.0.0.1:9090\"",
                    config.admin.bind
                ),
            );
        }
    }
    if let Some(w) = &config.workers {
        match w.listen {
            ListenMode::Proxied => check_worker_ports(config, w, p),
            ListenMode::Handed => check_handed_mode(config, w, p),
        }
    }
}

/// Workers listen on `port_base..port_base + 2 × count`: inside the port
/// range, and clear of the front end and the admin port.
fn check_worker_ports(config: &Config, w: &WorkersConfig, p: &mut Problems) {
    if w.auto_ports {
        return; // picked at start, clear of both
    }
    if w.port_base as usize + 2 * w.count > 65536 {
        p.general(
            Some("workers.port_base"),
            format!(
                "workers use ports {}..{} (two per slot for rolling restarts), past 65535",
                w.port_base,
                w.port_base as usize + 2 * w.count - 1
            ),
        );
        return;
    }
    let ports = w.port_base..w.port_base + 2 * w.count as u16;
    for (key, addr) in config
        .listener
        .binds
        .iter()
        .map(|a| ("listener.bind", a))
        .chain([("admin.bind", &config.admin.bind)])
    {
        if ports.contains(&addr.port()) {
            p.general(
                Some(key),
                format!(
                    "port {} is also a worker port (workers use {}..{}, two per slot): move workers.port_base",
                    addr.port(),
                    ports.start,
                    ports.end - 1
                ),
            );
        }
    }
}

/// What `workers.listen = "fd"` cannot do: corral does not see the
/// connections (the kernel hands them to the workers), and the steering
/// program reads IPv4 headers and chooses among one group's sockets.
fn check_handed_mode(config: &Config, w: &WorkersConfig, p: &mut Problems) {
    const WHY: &str = "with workers.listen = \"fd\"";
    if config.strategy.handed_placement().is_none() {
        p.general(
            Some("balance.strategy"),
            format!("\"{}\" cannot work {WHY}: corral does not see the workers' connections. Write strategy = {}, or listen = \"port\"", config.strategy, StrategyKind::handed_choices()),
        );
    }
    if w.send_proxy != SendProxy::None {
        p.general(
            Some("workers.send_proxy"),
            format!("cannot work {WHY}: clients reach the workers directly, so corral has no connection to send a PROXY header on. Write send_proxy = \"none\" (the worker sees the client's own address), or listen = \"port\""),
        );
    }
    if config.listener.proxy_protocol != ProxyProtocolMode::None {
        p.general(
            Some("listener.proxy_protocol"),
            format!("cannot work {WHY}: corral does not read the clients' bytes, so it cannot take a PROXY header off them. Write proxy_protocol = \"none\", or workers.listen = \"port\""),
        );
    }
    if w.stateless {
        p.general(
            Some("workers.stateless"),
            format!("cannot work {WHY}: the kernel hands each client to a worker and corral never sees its bytes, so it cannot move a connection between requests. Write stateless = false, or listen = \"port\""),
        );
    }
    if config.clients.max_connections != 0 {
        p.general(
            Some("clients.max_connections"),
            format!("cannot work {WHY}: the kernel hands clients to the workers, so corral cannot count a client's connections. Write max_connections = 0, or workers.listen = \"port\""),
        );
    }
    if config.clients.allow.len() + config.clients.deny.len()
        > crate::steering::program::MAX_ACCESS_NETWORKS
    {
        p.general(
            Some("clients.allow"),
            format!(
                "{WHY} clients.allow and clients.deny are enforced in the kernel and may list at most {} networks together",
                crate::steering::program::MAX_ACCESS_NETWORKS
            ),
        );
    }
    if config.clients.max_rate.is_some() {
        p.general(
            Some("clients.max_rate"),
            format!("cannot work {WHY}: the kernel hands clients to the workers, so corral cannot count a client's new connections. Write max_rate = \"\", or workers.listen = \"port\""),
        );
    }
    if !config.backends.is_empty() {
        p.general(
            Some("backends"),
            format!("[[backends]] cannot be used {WHY}: the kernel places clients only among the workers' sockets. Run static backends from a corral of their own, or write workers.listen = \"port\""),
        );
    }
    if config.listener.binds.len() != 1 {
        p.general(
            Some("listener.bind"),
            format!(
                "{WHY} corral hands each worker one socket: give exactly one front-end address"
            ),
        );
    }
    if let Some(v6) = config.listener.binds.iter().find(|a| a.is_ipv6()) {
        p.general(
            Some("listener.bind"),
            format!("{v6} is an IPv6 address; {WHY} the front end must be IPv4 (its steering program reads IPv4 headers), such as \"0.0.0.0:{}\"", v6.port()),
        );
    }
    if w.count > crate::steering::table::MAX_SLOTS {
        p.general(
            Some("workers.count"),
            format!(
                "{} workers: at most {} {WHY}",
                w.count,
                crate::steering::table::MAX_SLOTS
            ),
        );
    }
}
