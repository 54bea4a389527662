//! Every default of the config file, named once; validation reads them
//! from here. `config/example.toml` documents the same values, and a unit
//! test checks that the example, read as a config, gives them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub(crate) const LISTENER_BIND: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);
pub(crate) const LISTENER_BACKLOG: i64 = 1024;
pub(crate) const LISTENER_MAX_CONNECTIONS: i64 = 10_000;

/// `admin.bind`'s default; also where the client commands look for a
/// corral when given neither `--admin` nor `-c`.
pub const ADMIN_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

pub(crate) const STICKY_TTL: Duration = Duration::from_secs(30 * 60);
pub(crate) const STICKY_MAX_ENTRIES: i64 = 1_000_000;
pub(crate) const STICKY_IPV4_PREFIX: i64 = 32;
pub(crate) const STICKY_IPV6_PREFIX: i64 = 64;

pub(crate) const CLIENTS_IPV4_PREFIX: i64 = 32;
pub(crate) const CLIENTS_IPV6_PREFIX: i64 = 64;
/// 0: no limit.
pub(crate) const CLIENTS_MAX_CONNECTIONS: i64 = 0;
pub(crate) const CLIENTS_MAX_TRACKED: i64 = 1_000_000;

pub(crate) const WORKERS_COUNT: usize = 4;
pub(crate) const WORKERS_MAX_COUNT: i64 = 1024;
pub(crate) const WORKERS_HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
pub(crate) const WORKERS_PORT_BASE: i64 = 9100;
pub(crate) const WORKERS_READY_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const WORKERS_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const WORKERS_RESTART_DELAY: Duration = Duration::from_millis(100);
pub(crate) const WORKERS_RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
pub(crate) const WORKERS_MIN_UPTIME: Duration = Duration::from_secs(5);
/// Connections stay tied to one worker connection unless the app says it
/// keeps no state between requests.
pub(crate) const WORKERS_STATELESS: bool = false;
/// Ready when the worker accepts connections, not when it says so.
pub(crate) const WORKERS_NOTIFY: bool = false;

pub(crate) const HEALTH_PATH: &str = "/healthz";
pub(crate) const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const HEALTH_RISE: i64 = 2;
pub(crate) const HEALTH_FALL: i64 = 3;
/// Passive checks (first-byte timeouts taking a backend down) are opt-in.
pub(crate) const HEALTH_OBSERVE: bool = false;

pub(crate) const TIMEOUT_CONNECT: Duration = Duration::from_secs(2);
/// Off: a backend that has been sent bytes may stay silent as long as it
/// likes (redis `BLPOP`, long polls), as HAProxy and nginx have no default
/// server timeout for TCP either.
pub(crate) const TIMEOUT_FIRST_BYTE: Duration = Duration::ZERO;
pub(crate) const TIMEOUT_IDLE: Duration = Duration::from_secs(3600);
pub(crate) const TIMEOUT_DRAIN: Duration = Duration::from_secs(30);

pub(crate) const LOG_LEVEL: &str = "info";
pub(crate) const LOG_CONNECTIONS: bool = false;
/// `log.max_size`: the log file is rotated past this size.
pub(crate) const LOG_MAX_SIZE: u64 = 100 * 1024 * 1024;
/// `log.max_size` below this is refused (a file of a few lines).
pub(crate) const LOG_MIN_SIZE: u64 = 4 * 1024;
/// `log.keep`: rotated files kept.
pub(crate) const LOG_KEEP: i64 = 5;

/// 0: one proxy thread per CPU.
pub(crate) const RUNTIME_THREADS: i64 = 0;
pub(crate) const RUNTIME_SPLICE: bool = false;
