//! `[listener]`: the front-end addresses, the backlog, the connection
//! limit and the PROXY protocol accepted from upstream balancers.

use std::net::SocketAddr;

use toml::Spanned;

use super::defaults;
use super::error::Problems;
use super::raw::RawListener;
use super::types::ListenerConfig;
use super::values::{cidrs, int, socket_addr};

/// Validates `[listener]`.
pub fn validate(raw: RawListener, p: &mut Problems) -> ListenerConfig {
    ListenerConfig {
        binds: match raw.bind {
            None => vec![defaults::LISTENER_BIND],
            Some(bind) => binds(bind, p),
        },
        backlog: int(
            raw.backlog,
            "listener.backlog",
            1,
            65535,
            defaults::LISTENER_BACKLOG,
            p,
        ) as u32,
        max_connections: int(
            raw.max_connections,
            "listener.max_connections",
            1,
            10_000_000,
            defaults::LISTENER_MAX_CONNECTIONS,
            p,
        ) as usize,
        proxy_protocol: raw
            .proxy_protocol
            .map(Spanned::into_inner)
            .unwrap_or_default(),
        proxy_protocol_from: cidrs(raw.proxy_protocol_from, "listener.proxy_protocol_from", p),
    }
}

/// `listener.bind`: one address or a list of them.
fn binds(bind: Spanned<toml::Value>, p: &mut Problems) -> Vec<SocketAddr> {
    let span = bind.span();
    let list: Vec<String> = match bind.into_inner() {
        toml::Value::String(one) => vec![one],
        toml::Value::Array(many) if many.iter().all(|v| v.is_str()) => many
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => {
            p.at(
                span.clone(),
                "listener.bind",
                "must be an address or a list of addresses",
            );
            Vec::new()
        }
    };
    if list.is_empty() {
        p.at(span.clone(), "listener.bind", "needs at least one address");
    }
    list.into_iter()
        .filter_map(|a| socket_addr(&Spanned::new(span.clone(), a), "listener.bind", p))
        .collect()
}
