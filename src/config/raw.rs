//! The config file exactly as written: serde structs that mirror the TOML,
//! reject unknown keys (a backstop: [`super::shape`] reports them first,
//! against [`super::keys`]), and keep the source span of every value that
//! still needs checking, so that validation can point at the line that is
//! wrong.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file. Every section is optional; absent sections take defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) listener: RawListener,
    #[serde(default)]
    pub(crate) admin: RawAdmin,
    #[serde(default)]
    pub(crate) balance: RawBalance,
    #[serde(default)]
    pub(crate) sticky: RawSticky,
    #[serde(default)]
    pub(crate) clients: RawClients,
    /// Not `Spanned`: a section written with dotted keys
    /// (`workers.command = [...]`) has no span of its own; its place comes
    /// from [`super::shape`].
    pub(crate) workers: Option<RawWorkers>,
    #[serde(default)]
    pub(crate) backends: Vec<Spanned<RawBackend>>,
    #[serde(default)]
    pub(crate) health: RawHealth,
    #[serde(default)]
    pub(crate) timeouts: RawTimeouts,
    #[serde(default)]
    pub(crate) log: RawLog,
    #[serde(default)]
    pub(crate) runtime: RawRuntime,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    /// A string or a list of strings; checked in validation.
    pub(crate) bind: Option<Spanned<toml::Value>>,
    pub(crate) backlog: Option<Spanned<i64>>,
    pub(crate) max_connections: Option<Spanned<i64>>,
    pub(crate) proxy_protocol: Option<Spanned<ProxyProtocolMode>>,
    pub(crate) proxy_protocol_from: Option<Spanned<Vec<String>>>,
}

/// Which PROXY protocol header the front end accepts from an upstream balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ProxyProtocolMode {
    #[default]
    None,
    V1,
    V2,
    Any,
}

/// Which PROXY protocol header corral sends to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub(crate) enum SendProxy {
    #[default]
    None = 0,
    V1 = 1,
    V2 = 2,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) bind: Option<Spanned<String>>,
    pub(crate) token_file: Option<Spanned<String>>,
}

pub use crate::strategy::StrategyKind;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBalance {
    pub(crate) strategy: Option<StrategyKind>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSticky {
    pub(crate) ttl: Option<Spanned<String>>,
    pub(crate) max_entries: Option<Spanned<i64>>,
    pub(crate) ipv4_prefix: Option<Spanned<i64>>,
    pub(crate) ipv6_prefix: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClients {
    pub(crate) ipv4_prefix: Option<Spanned<i64>>,
    pub(crate) ipv6_prefix: Option<Spanned<i64>>,
    pub(crate) max_connections: Option<Spanned<i64>>,
    pub(crate) max_rate: Option<Spanned<String>>,
    pub(crate) allow: Option<Spanned<Vec<String>>>,
    pub(crate) deny: Option<Spanned<Vec<String>>>,
    pub(crate) max_tracked: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkers {
    pub(crate) command: Option<Spanned<Vec<String>>>,
    /// A number or "auto"; checked in validation.
    pub(crate) count: Option<Spanned<toml::Value>>,
    pub(crate) host: Option<Spanned<String>>,
    pub(crate) port_base: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: Option<String>,
    pub(crate) ready_timeout: Option<Spanned<String>>,
    pub(crate) stop_timeout: Option<Spanned<String>>,
    pub(crate) restart_delay: Option<Spanned<String>>,
    pub(crate) restart_delay_max: Option<Spanned<String>>,
    pub(crate) min_uptime: Option<Spanned<String>>,
    pub(crate) unhealthy_restart: Option<Spanned<String>>,
    pub(crate) send_proxy: Option<Spanned<SendProxy>>,
    pub(crate) listen: Option<Spanned<ListenMode>>,
    pub(crate) max_memory: Option<Spanned<String>>,
    pub(crate) metrics_path: Option<Spanned<String>>,
    pub(crate) stateless: Option<Spanned<bool>>,
    pub(crate) notify: Option<Spanned<bool>>,
    pub(crate) watchdog: Option<Spanned<String>>,
}

/// How workers get their clients (`workers.listen`): the front end's
/// mode ([`crate::front`]). The code calls the modes proxied and handed;
/// the config spells them `port` and `fd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
pub enum ListenMode {
    /// `port`: each worker listens on its own port; corral proxies.
    #[default]
    #[serde(rename = "port")]
    Proxied,
    /// `fd`: corral hands each worker a listening socket on the front end.
    #[serde(rename = "fd")]
    Handed,
}

impl ListenMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ListenMode::Proxied => "port",
            ListenMode::Handed => "fd",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) address: Option<Spanned<String>>,
    pub(crate) send_proxy: Option<Spanned<SendProxy>>,
}

/// What an active health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HealthKind {
    #[default]
    Tcp,
    Http,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub(crate) kind: Option<HealthKind>,
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) interval: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) rise: Option<Spanned<i64>>,
    pub(crate) fall: Option<Spanned<i64>>,
    pub(crate) observe: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub(crate) connect: Option<Spanned<String>>,
    pub(crate) first_byte: Option<Spanned<String>>,
    pub(crate) idle: Option<Spanned<String>>,
    pub(crate) drain: Option<Spanned<String>>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub(crate) format: Option<LogFormat>,
    pub(crate) level: Option<Spanned<String>>,
    pub(crate) connections: Option<bool>,
    pub(crate) file: Option<Spanned<String>>,
    pub(crate) max_size: Option<Spanned<String>>,
    pub(crate) keep: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntime {
    pub(crate) threads: Option<Spanned<i64>>,
    pub(crate) splice: Option<bool>,
    pub(crate) user: Option<Spanned<String>>,
    pub(crate) group: Option<Spanned<String>>,
}
