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
pub struct RawConfig {
    #[serde(default)]
    pub listener: RawListener,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub balance: RawBalance,
    #[serde(default)]
    pub sticky: RawSticky,
    #[serde(default)]
    pub clients: RawClients,
    /// Not `Spanned`: a section written with dotted keys
    /// (`workers.command = [...]`) has no span of its own; its place comes
    /// from [`super::shape`].
    pub workers: Option<RawWorkers>,
    #[serde(default)]
    pub backends: Vec<Spanned<RawBackend>>,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub runtime: RawRuntime,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// A string or a list of strings; checked in validation.
    pub bind: Option<Spanned<toml::Value>>,
    pub backlog: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub proxy_protocol: Option<Spanned<ProxyProtocolMode>>,
    pub proxy_protocol_from: Option<Spanned<Vec<String>>>,
}

/// Which PROXY protocol header the front end accepts from an upstream balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocolMode {
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
pub enum SendProxy {
    #[default]
    None = 0,
    V1 = 1,
    V2 = 2,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
}

pub use crate::strategy::StrategyKind;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalance {
    pub strategy: Option<StrategyKind>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    pub ttl: Option<Spanned<String>>,
    pub max_entries: Option<Spanned<i64>>,
    pub ipv4_prefix: Option<Spanned<i64>>,
    pub ipv6_prefix: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClients {
    pub ipv4_prefix: Option<Spanned<i64>>,
    pub ipv6_prefix: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_rate: Option<Spanned<String>>,
    pub allow: Option<Spanned<Vec<String>>>,
    pub deny: Option<Spanned<Vec<String>>>,
    pub max_tracked: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkers {
    pub command: Option<Spanned<Vec<String>>>,
    /// A number or "auto"; checked in validation.
    pub count: Option<Spanned<toml::Value>>,
    pub host: Option<Spanned<String>>,
    pub port_base: Option<Spanned<i64>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub ready_timeout: Option<Spanned<String>>,
    pub stop_timeout: Option<Spanned<String>>,
    pub restart_delay: Option<Spanned<String>>,
    pub restart_delay_max: Option<Spanned<String>>,
    pub min_uptime: Option<Spanned<String>>,
    pub unhealthy_restart: Option<Spanned<String>>,
    pub send_proxy: Option<Spanned<SendProxy>>,
    pub listen: Option<Spanned<ListenMode>>,
    pub max_memory: Option<Spanned<String>>,
    pub metrics_path: Option<Spanned<String>>,
    pub stateless: Option<Spanned<bool>>,
    pub notify: Option<Spanned<bool>>,
    pub watchdog: Option<Spanned<String>>,
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
    pub fn as_str(self) -> &'static str {
        match self {
            ListenMode::Proxied => "port",
            ListenMode::Handed => "fd",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub name: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub send_proxy: Option<Spanned<SendProxy>>,
}

/// What an active health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    #[default]
    Tcp,
    Http,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub kind: Option<HealthKind>,
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub observe: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<Spanned<String>>,
    pub first_byte: Option<Spanned<String>>,
    pub idle: Option<Spanned<String>>,
    pub drain: Option<Spanned<String>>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<LogFormat>,
    pub level: Option<Spanned<String>>,
    pub connections: Option<bool>,
    pub file: Option<Spanned<String>>,
    pub max_size: Option<Spanned<String>>,
    pub keep: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub threads: Option<Spanned<i64>>,
    pub splice: Option<bool>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
}
