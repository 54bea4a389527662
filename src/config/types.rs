//! The validated configuration's types: what the rest of corral reads.
//! Each section's validation (its own module) builds its part; nothing
//! here parses text.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{HealthKind, ListenMode, LogFormat, ProxyProtocolMode, SendProxy, StrategyKind};

/// A complete, validated configuration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// The file it came from; `None` for the embedded default.
    pub(crate) source: Option<PathBuf>,
    pub(crate) listener: ListenerConfig,
    pub(crate) admin: AdminConfig,
    pub(crate) strategy: StrategyKind,
    pub(crate) sticky: StickyConfig,
    pub(crate) clients: ClientsConfig,
    pub(crate) workers: Option<WorkersConfig>,
    pub(crate) backends: Vec<StaticBackend>,
    pub(crate) health: HealthConfig,
    pub(crate) timeouts: Timeouts,
    pub(crate) log: LogConfig,
    pub(crate) runtime: RuntimeConfig,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ListenerConfig {
    pub(crate) binds: Vec<SocketAddr>,
    pub(crate) backlog: u32,
    pub(crate) max_connections: usize,
    pub(crate) proxy_protocol: ProxyProtocolMode,
    /// The peers allowed to send a PROXY header; empty: any peer.
    pub(crate) proxy_protocol_from: Vec<IpNet>,
}

impl ListenerConfig {
    /// May `peer` send a PROXY header (`listener.proxy_protocol_from`)?
    pub(crate) fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.proxy_protocol_from.is_empty()
            || self
                .proxy_protocol_from
                .iter()
                .any(|net| net.contains(&peer))
    }
}

/// `[clients]`: per-client limits and access lists. A client is its
/// address masked by the prefixes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClientsConfig {
    /// IPv4 clients in one network of this prefix length count as one
    /// client (32: each address alone).
    pub ipv4_prefix: u8,
    /// The same for IPv6 (64: a typical site's one network).
    pub ipv6_prefix: u8,
    /// Open connections one client may hold; 0: no limit.
    pub max_connections: u32,
    /// New connections one client may open per period; `None`: no limit.
    pub max_rate: Option<Rate>,
    /// When not empty, only clients inside these are served.
    pub allow: Vec<IpNet>,
    /// Never served (deny wins over allow).
    pub deny: Vec<IpNet>,
    /// The most clients the table remembers.
    pub max_tracked: usize,
}

impl ClientsConfig {
    /// Is a client at `ip` let in by `allow` and `deny`?
    pub(crate) fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !self.deny.iter().any(|net| net.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip)))
    }
}

/// A rate such as `"20/s"`: `count` new connections per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rate {
    /// Connections allowed in one period.
    pub count: u32,
    /// The period (one second, minute or hour).
    pub per: Duration,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AdminConfig {
    pub(crate) bind: SocketAddr,
    /// The bearer token POST endpoints require, read from `token_file`.
    pub(crate) token: Option<String>,
}

/// `[sticky]`: how long the sticky table remembers a client, how many it
/// remembers, and what counts as one client.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StickyConfig {
    /// An entry unused this long is forgotten (the client is then placed
    /// afresh, usually on the same backend: placement is by hash).
    pub ttl: Duration,
    /// Past this many entries the sweep drops the least recently used, so
    /// the table's memory is bounded whatever the clients do.
    pub max_entries: usize,
    /// IPv4 clients in one network of this prefix length share an entry
    /// (and so a backend).
    pub ipv4_prefix: u8,
    /// The same for IPv6.
    pub ipv6_prefix: u8,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct WorkersConfig {
    /// argv; `{port}` and `{id}` are expanded per worker, and a program named
    /// `corral` means the running binary.
    pub(crate) command: Vec<String>,
    pub(crate) count: usize,
    pub(crate) host: IpAddr,
    pub(crate) port_base: u16,
    /// Neither the file nor `--port-base` set `port_base`: corral picks
    /// free ports at start (see `supervisor::ports`), and `port_base` holds
    /// the pick once made.
    pub(crate) auto_ports: bool,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: PathBuf,
    pub(crate) ready_timeout: Duration,
    pub(crate) stop_timeout: Duration,
    pub(crate) restart_delay: Duration,
    pub(crate) restart_delay_max: Duration,
    pub(crate) min_uptime: Duration,
    /// A worker that runs but has failed its health checks this long is
    /// restarted (hung but alive); `None` leaves it out of rotation only.
    pub(crate) unhealthy_restart: Option<Duration>,
    pub(crate) send_proxy: SendProxy,
    /// How workers get their clients: their own port (corral proxies) or
    /// a handed front-end socket.
    pub(crate) listen: ListenMode,
    /// A worker whose resident memory (its whole tree) stays above this many
    /// bytes is replaced the rolling way.
    pub(crate) max_memory: Option<u64>,
    /// Each worker's own metrics, scraped from its port at this path and
    /// served in corral's `/metrics` with a `worker` label.
    pub(crate) metrics_path: Option<String>,
    /// The workers keep no state tied to a connection between requests
    /// (plain HTTP/1.x): corral may move a client's connection to another
    /// worker between requests (port mode only).
    pub(crate) stateless: bool,
    /// systemd's notify protocol: each worker gets a `NOTIFY_SOCKET` and
    /// is ready only once it sends `READY=1`.
    pub(crate) notify: bool,
    /// With `notify`: a worker that sends no `WATCHDOG=1` this long is
    /// down and replaced.
    pub(crate) watchdog: Option<Duration>,
}

impl WorkersConfig {
    /// The port worker `slot` listens on in generation `alternate` (0 or 1):
    /// replacements in a rolling restart use the other one.
    pub(crate) fn port(&self, slot: usize, alternate: bool) -> u16 {
        let offset = slot + if alternate { self.count } else { 0 };
        // Validation guarantees port_base + 2 * count - 1 fits in a u16.
        self.port_base + offset as u16
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StaticBackend {
    pub(crate) name: String,
    pub(crate) address: SocketAddr,
    pub(crate) send_proxy: SendProxy,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct HealthConfig {
    pub(crate) kind: HealthKind,
    pub(crate) path: String,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
    /// Passive checks: `fall` first-byte timeouts in a row take a backend
    /// down (never more than half of the backends at once).
    pub(crate) observe: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    /// `None` when `"0s"`: a silent backend is never given up.
    pub(crate) first_byte: Option<Duration>,
    pub(crate) idle: Duration,
    pub(crate) drain: Duration,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LogConfig {
    pub(crate) format: LogFormat,
    /// A tracing filter directive such as `info` or `corral=debug`.
    pub(crate) level: String,
    pub(crate) connections: bool,
    /// Also write corral's log and the workers' output here; `None` for `""`.
    pub(crate) file: Option<PathBuf>,
    /// Rotate the file past this many bytes.
    pub(crate) max_size: u64,
    /// Rotated files kept (`corral.log.1` ... `corral.log.<keep>`).
    pub(crate) keep: u32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RuntimeConfig {
    /// Proxy threads; already resolved from 0 to the number of CPUs.
    pub(crate) threads: usize,
    /// Bulk transfers move through splice(2) (an extension to the contract,
    /// like HAProxy's `option splice-auto`). Off by default: on loopback it
    /// measured slower than the buffered copy (15 vs 19-22 Gbit/s, iperf3).
    pub(crate) splice: bool,
    /// Whom to become after binding (`runtime.user` / `runtime.group`),
    /// resolved to ids at load.
    pub(crate) drop_to: Option<Privileges>,
}

/// A user and group to run as after the sockets are bound.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Privileges {
    /// The user's name (for `initgroups`), when `runtime.user` is set.
    pub(crate) user: Option<String>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: u32,
}

/// Command-line values that take precedence over the file (`corral run -i N
/// --bind ADDR -- PROGRAM ARGS...`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `-i N`: `workers.count`.
    pub count: Option<usize>,
    /// `--bind ADDR`: `listener.bind`.
    pub bind: Option<SocketAddr>,
    /// `--admin ADDR`: `admin.bind`.
    pub admin: Option<SocketAddr>,
    /// `--strategy NAME`: `balance.strategy`.
    pub strategy: Option<StrategyKind>,
    /// `--listen port|fd`: `workers.listen`.
    pub listen: Option<ListenMode>,
    /// `--port-base N`: `workers.port_base`.
    pub port_base: Option<u16>,
    /// `-- PROGRAM ARGS`: `workers.command` (and a `[workers]` section
    /// when the file has none).
    pub command: Option<Vec<String>>,
}
