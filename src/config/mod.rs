//! The validated configuration: typed values with their defaults applied,
//! every cross-key rule checked, and every error tied to the file, line,
//! column and key that caused it. `raw` mirrors the file; this module turns it
//! into something the rest of corral can trust.

pub mod defaults;
mod error;
mod raw;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

pub use error::{ConfigError, Problem};
pub use raw::{HealthKind, ListenMode, LogFormat, ProxyProtocolMode, SendProxy, StrategyKind};

use error::Problems;
use raw::{RawConfig, RawWorkers};

/// Most problems one file reports.
const MAX_PROBLEMS: usize = 50;

/// The configuration corral runs with when started without `-c`: the
/// built-in demo backend, two workers, round-robin.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.toml");

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; `None` for the embedded default.
    pub source: Option<PathBuf>,
    pub listener: ListenerConfig,
    pub admin: AdminConfig,
    pub strategy: StrategyKind,
    pub sticky: StickyConfig,
    pub clients: ClientsConfig,
    pub workers: Option<WorkersConfig>,
    pub backends: Vec<StaticBackend>,
    pub health: HealthConfig,
    pub timeouts: Timeouts,
    pub log: LogConfig,
    pub runtime: RuntimeConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub binds: Vec<SocketAddr>,
    pub backlog: u32,
    pub max_connections: usize,
    pub proxy_protocol: ProxyProtocolMode,
    /// The peers allowed to send a PROXY header; empty: any peer.
    pub proxy_protocol_from: Vec<IpNet>,
}

impl ListenerConfig {
    /// May `peer` send a PROXY header (`listener.proxy_protocol_from`)?
    pub fn trusts(&self, peer: IpAddr) -> bool {
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
#[derive(Debug, Clone, PartialEq)]
pub struct ClientsConfig {
    pub ipv4_prefix: u8,
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
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !self.deny.iter().any(|net| net.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip)))
    }
}

/// A rate such as `"20/s"`: `count` new connections per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
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

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// The bearer token POST endpoints require, read from `token_file`.
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StickyConfig {
    pub ttl: Duration,
    pub max_entries: usize,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkersConfig {
    /// argv; `{port}` and `{id}` are expanded per worker, and a program named
    /// `corral` means the running binary.
    pub command: Vec<String>,
    pub count: usize,
    pub host: IpAddr,
    pub port_base: u16,
    /// Neither the file nor `--port-base` set `port_base`: corral picks
    /// free ports at start (see `supervisor::ports`), and `port_base` holds
    /// the pick once made.
    pub auto_ports: bool,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
    pub restart_delay: Duration,
    pub restart_delay_max: Duration,
    pub min_uptime: Duration,
    /// A worker that runs but has failed its health checks this long is
    /// restarted (hung but alive); `None` leaves it out of rotation only.
    pub unhealthy_restart: Option<Duration>,
    pub send_proxy: SendProxy,
    /// How workers get their clients: their own port (corral proxies) or
    /// a handed front-end socket.
    pub listen: ListenMode,
    /// A worker whose resident memory (its whole tree) stays above this many
    /// bytes is replaced the rolling way.
    pub max_memory: Option<u64>,
    /// Each worker's own metrics, scraped from its port at this path and
    /// served in corral's `/metrics` with a `worker` label.
    pub metrics_path: Option<String>,
    /// The workers keep no state tied to a connection between requests
    /// (plain HTTP/1.x): corral may move a client's connection to another
    /// worker between requests (port mode only).
    pub stateless: bool,
    /// systemd's notify protocol: each worker gets a `NOTIFY_SOCKET` and
    /// is ready only once it sends `READY=1`.
    pub notify: bool,
    /// With `notify`: a worker that sends no `WATCHDOG=1` this long is
    /// down and replaced.
    pub watchdog: Option<Duration>,
}

impl WorkersConfig {
    /// True when processes started from `other` would run the same way
    /// (command, environment, address, directory, PROXY header); a reload
    /// that changes any of these is rolled out like a rolling restart.
    pub fn same_process(&self, other: &WorkersConfig) -> bool {
        self.command == other.command
            && self.env == other.env
            && self.host == other.host
            && self.cwd == other.cwd
            && self.port_base == other.port_base
            && self.send_proxy == other.send_proxy
    }

    /// The port worker `slot` listens on in generation `alternate` (0 or 1):
    /// replacements in a rolling restart use the other one.
    pub fn port(&self, slot: usize, alternate: bool) -> u16 {
        let offset = slot + if alternate { self.count } else { 0 };
        // Validation guarantees port_base + 2 * count - 1 fits in a u16.
        self.port_base + offset as u16
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticBackend {
    pub name: String,
    pub address: SocketAddr,
    pub send_proxy: SendProxy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub kind: HealthKind,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Passive checks: `fall` first-byte timeouts in a row take a backend
    /// down (never more than half of the backends at once).
    pub observe: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    /// `None` when `"0s"`: a silent backend is never given up.
    pub first_byte: Option<Duration>,
    pub idle: Duration,
    pub drain: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive such as `info` or `corral=debug`.
    pub level: String,
    pub connections: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Proxy threads; already resolved from 0 to the number of CPUs.
    pub threads: usize,
    /// Bulk transfers move through splice(2) (an extension to the contract,
    /// like HAProxy's `option splice-auto`). Off by default: on loopback it
    /// measured slower than the buffered copy (15 vs 19-22 Gbit/s, iperf3).
    pub splice: bool,
    /// Whom to become after binding (`runtime.user` / `runtime.group`),
    /// resolved to ids at load.
    pub drop_to: Option<Privileges>,
}

/// A user and group to run as after the sockets are bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    /// The user's name (for `initgroups`), when `runtime.user` is set.
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub gid: u32,
}

/// Command-line values that take precedence over the file (`corral run -i N
/// --bind ADDR -- PROGRAM ARGS...`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub count: Option<usize>,
    pub bind: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub strategy: Option<StrategyKind>,
    pub listen: Option<ListenMode>,
    /// `--port-base N`.
    pub port_base: Option<u16>,
    pub command: Option<Vec<String>>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, None)
    }

    /// Reads and validates `path` for a run whose command line gives the
    /// worker command (`-- PROGRAM ARGS`): `[workers]` may then leave
    /// `command` out.
    pub fn load_with(path: &Path, command: Option<&[String]>) -> Result<Config, ConfigError> {
        let text = read_file(path).map_err(|why| ConfigError::whole_file(path, why))?;
        let mut config = Config::parse_with(&text, path, command)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED_DEFAULT, Path::new("<embedded default>"))
            .expect("the embedded default config is valid (checked by a unit test)")
    }

    /// Validates config text; `path` is only used to name the file in errors.
    ///
    /// Every independent problem is reported in one go, like `haproxy -c`:
    /// a key whose value has the wrong type (or an unknown key) is recorded
    /// and blanked out, and the file is read again, so a type error in one
    /// section does not hide one in another.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, None)
    }

    /// [`Config::parse`], with the worker command given on the command line.
    fn parse_with(
        text: &str,
        path: &Path,
        command: Option<&[String]>,
    ) -> Result<Config, ConfigError> {
        let mut readable = text.to_string();
        let mut type_errors = Vec::new();
        let raw: Option<RawConfig> = loop {
            match toml::from_str(&readable) {
                Ok(raw) => break Some(raw),
                Err(e) => {
                    let problem = error::from_toml(text, &e);
                    let blanked = error::blank_line(&mut readable, problem.line);
                    type_errors.push(problem);
                    if !blanked || type_errors.len() >= MAX_PROBLEMS {
                        break None;
                    }
                }
            }
        };
        let mut problems = Problems::new(text);
        problems.extend(type_errors);
        let config = raw.and_then(|raw| validate(raw, command, &mut problems));
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(problems.into_error(path)),
        }
    }

    /// Applies command-line overrides and re-checks the cross-key rules
    /// they touch (the same ones a file is checked against).
    pub fn apply(&mut self, overrides: Overrides) -> Result<(), String> {
        if let Some(bind) = overrides.bind {
            self.listener.binds = vec![bind];
        }
        if let Some(admin) = overrides.admin {
            self.admin.bind = admin;
        }
        if let Some(strategy) = overrides.strategy {
            self.strategy = strategy;
        }
        if let Some(command) = overrides.command {
            if command.is_empty() {
                return Err("the worker command after `--` is empty".into());
            }
            match &mut self.workers {
                Some(w) => w.command = command,
                None => self.workers = Some(default_workers(command)),
            }
        }
        if let Some(listen) = overrides.listen {
            let Some(workers) = &mut self.workers else {
                return Err("--listen needs a worker command (in [workers] or after `--`)".into());
            };
            workers.listen = listen;
        }
        if let Some(count) = overrides.count {
            let Some(workers) = &mut self.workers else {
                return Err("-i needs a worker command (in [workers] or after `--`)".into());
            };
            if count == 0 || count as i64 > defaults::WORKERS_MAX_COUNT {
                return Err(format!(
                    "the worker count must be from 1 to {}",
                    defaults::WORKERS_MAX_COUNT
                ));
            }
            workers.count = count;
        }
        if let Some(base) = overrides.port_base {
            let Some(workers) = &mut self.workers else {
                return Err(
                    "--port-base needs a worker command (in [workers] or after `--`)".into(),
                );
            };
            workers.port_base = base;
            workers.auto_ports = false;
        }
        let mut problems = Problems::new("");
        cross_check(self, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems
                .into_error(Path::new("<command line>"))
                .problems
                .iter()
                .map(|p| match &p.key {
                    Some(key) => format!("key `{key}`: {}", p.message),
                    None => p.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "))
        }
    }
}

/// The largest config (or token) file corral reads.
pub const MAX_FILE: u64 = 1024 * 1024;

/// Reads a config or token file: a regular file (after symlinks) of at most
/// [`MAX_FILE`] bytes, in UTF-8. Anything else is refused with its reason,
/// never read: the file is opened with `O_NONBLOCK` (a FIFO without a
/// writer never blocks the open), its kind and size come from `fstat` of
/// the opened descriptor (not the path, which may change meanwhile), and
/// at most `MAX_FILE + 1` bytes are read (a file that grows is caught).
pub fn read_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the file: {e}"))?;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    };
    if let Some(what) = what {
        return Err(format!(
            "refused: it is {what}; a config file must be a regular file (of at most 1 MiB)"
        ));
    }
    let too_large = |size: u64| {
        format!("refused: it is {size} bytes; a config file is at most {MAX_FILE} bytes (1 MiB)")
    };
    if meta.len() > MAX_FILE {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "cannot read the file: it is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// The metric label and `/status` name of worker slot `id`.
pub fn worker_label(id: usize) -> String {
    format!("worker-{id}")
}

fn default_workers(command: Vec<String>) -> WorkersConfig {
    WorkersConfig {
        command,
        count: defaults::WORKERS_COUNT,
        host: defaults::WORKERS_HOST,
        port_base: defaults::WORKERS_PORT_BASE as u16,
        auto_ports: true,
        env: BTreeMap::new(),
        cwd: PathBuf::from("."),
        ready_timeout: defaults::WORKERS_READY_TIMEOUT,
        stop_timeout: defaults::WORKERS_STOP_TIMEOUT,
        restart_delay: defaults::WORKERS_RESTART_DELAY,
        restart_delay_max: defaults::WORKERS_RESTART_DELAY_MAX,
        min_uptime: defaults::WORKERS_MIN_UPTIME,
        unhealthy_restart: None,
        send_proxy: SendProxy::None,
        listen: ListenMode::Port,
        max_memory: None,
        metrics_path: None,
        stateless: defaults::WORKERS_STATELESS,
        notify: defaults::WORKERS_NOTIFY,
        watchdog: None,
    }
}

/// The rules that tie keys of different sections together; checked for a
/// file and again after command-line overrides.
fn cross_check(config: &Config, p: &mut Problems) {
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
            ListenMode::Port => check_worker_ports(config, w, p),
            ListenMode::Fd => check_fd_mode(config, w, p),
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
fn check_fd_mode(config: &Config, w: &WorkersConfig, p: &mut Problems) {
    const WHY: &str = "with workers.listen = \"fd\"";
    if config.strategy == StrategyKind::LeastConnections {
        p.general(
            Some("balance.strategy"),
            format!("\"least-connections\" cannot work {WHY}: corral does not see the workers' connections. Write strategy = \"round-robin\" or \"sticky\", or listen = \"port\""),
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

fn validate(raw: RawConfig, command: Option<&[String]>, p: &mut Problems) -> Option<Config> {
    let listener = ListenerConfig {
        binds: match raw.listener.bind {
            None => vec![defaults::LISTENER_BIND],
            Some(bind) => {
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
        },
        backlog: int(
            raw.listener.backlog,
            "listener.backlog",
            1,
            65535,
            defaults::LISTENER_BACKLOG,
            p,
        ) as u32,
        max_connections: int(
            raw.listener.max_connections,
            "listener.max_connections",
            1,
            10_000_000,
            defaults::LISTENER_MAX_CONNECTIONS,
            p,
        ) as usize,
        proxy_protocol: raw
            .listener
            .proxy_protocol
            .map(Spanned::into_inner)
            .unwrap_or_default(),
        proxy_protocol_from: cidrs(
            raw.listener.proxy_protocol_from,
            "listener.proxy_protocol_from",
            p,
        ),
    };

    let clients = ClientsConfig {
        ipv4_prefix: int(
            raw.clients.ipv4_prefix,
            "clients.ipv4_prefix",
            0,
            32,
            defaults::CLIENTS_IPV4_PREFIX,
            p,
        ) as u8,
        ipv6_prefix: int(
            raw.clients.ipv6_prefix,
            "clients.ipv6_prefix",
            0,
            128,
            defaults::CLIENTS_IPV6_PREFIX,
            p,
        ) as u8,
        max_connections: int(
            raw.clients.max_connections,
            "clients.max_connections",
            0,
            u32::MAX as i64,
            defaults::CLIENTS_MAX_CONNECTIONS,
            p,
        ) as u32,
        max_rate: raw
            .clients
            .max_rate
            .and_then(|r| match Rate::parse(r.get_ref()) {
                Ok(rate) => rate,
                Err(why) => {
                    p.at(r.span(), "clients.max_rate", why);
                    None
                }
            }),
        allow: cidrs(raw.clients.allow, "clients.allow", p),
        deny: cidrs(raw.clients.deny, "clients.deny", p),
        max_tracked: int(
            raw.clients.max_tracked,
            "clients.max_tracked",
            1,
            100_000_000,
            defaults::CLIENTS_MAX_TRACKED,
            p,
        ) as usize,
    };

    let admin = AdminConfig {
        bind: raw
            .admin
            .bind
            .map(|b| socket_addr(&b, "admin.bind", p))
            .unwrap_or(Some(defaults::ADMIN_BIND))
            .unwrap_or(defaults::ADMIN_BIND),
        token: raw
            .admin
            .token_file
            .filter(|f| !f.get_ref().is_empty())
            .and_then(|f| read_token(&f, p)),
    };

    let sticky = StickyConfig {
        ttl: duration(raw.sticky.ttl, "sticky.ttl", defaults::STICKY_TTL, p),
        max_entries: int(
            raw.sticky.max_entries,
            "sticky.max_entries",
            1,
            i64::MAX,
            defaults::STICKY_MAX_ENTRIES,
            p,
        ) as usize,
        ipv4_prefix: int(
            raw.sticky.ipv4_prefix,
            "sticky.ipv4_prefix",
            0,
            32,
            defaults::STICKY_IPV4_PREFIX,
            p,
        ) as u8,
        ipv6_prefix: int(
            raw.sticky.ipv6_prefix,
            "sticky.ipv6_prefix",
            0,
            128,
            defaults::STICKY_IPV6_PREFIX,
            p,
        ) as u8,
    };

    let workers = raw.workers.and_then(|w| {
        let span = w.span();
        workers(w.into_inner(), span, command, p)
    });

    let mut names = HashSet::new();
    let backends: Vec<StaticBackend> = raw
        .backends
        .into_iter()
        .filter_map(|b| {
            let span = b.span();
            let b = b.into_inner();
            let name = match b.name {
                Some(n) if n.get_ref().trim().is_empty() => {
                    p.at(n.span(), "backends.name", "must not be empty");
                    None
                }
                Some(n) if n.get_ref().chars().any(crate::terminal::is_unsafe) => {
                    p.at(
                        n.span(),
                        "backends.name",
                        format!(
                            "`{}` contains a control character: names are printable text (no escape sequences, bidi overrides or line breaks)",
                            crate::terminal::escape(n.get_ref())
                        ),
                    );
                    None
                }
                Some(n) if n.get_ref().starts_with("worker-") => {
                    p.at(
                        n.span(),
                        "backends.name",
                        "names starting with `worker-` are reserved for workers",
                    );
                    None
                }
                Some(n) if !names.insert(n.get_ref().clone()) => {
                    p.at(
                        n.span(),
                        "backends.name",
                        format!("`{}` is used by another backend", n.get_ref()),
                    );
                    None
                }
                Some(n) => Some(n.into_inner()),
                None => {
                    p.at(
                        span.clone(),
                        "backends.name",
                        "every [[backends]] entry needs a name",
                    );
                    None
                }
            };
            let address = match b.address {
                Some(a) => resolve(&a, "backends.address", p),
                None => {
                    p.at(
                        span,
                        "backends.address",
                        "every [[backends]] entry needs an address",
                    );
                    None
                }
            };
            Some(StaticBackend {
                name: name?,
                address: address?,
                send_proxy: send_proxy(b.send_proxy),
            })
        })
        .collect();

    if workers.is_none() && backends.is_empty() && p.is_empty() {
        p.general(
            None,
            "nothing to balance: set [workers] command or add a [[backends]] entry",
        );
    }

    let health = HealthConfig {
        kind: raw.health.kind.unwrap_or_default(),
        path: match raw.health.path {
            Some(path) if !path.get_ref().starts_with('/') => {
                p.at(path.span(), "health.path", "must start with `/`");
                String::new()
            }
            Some(path) => path.into_inner(),
            None => defaults::HEALTH_PATH.to_string(),
        },
        interval: duration(
            raw.health.interval,
            "health.interval",
            defaults::HEALTH_INTERVAL,
            p,
        ),
        timeout: duration(
            raw.health.timeout,
            "health.timeout",
            defaults::HEALTH_TIMEOUT,
            p,
        ),
        rise: int(
            raw.health.rise,
            "health.rise",
            1,
            1000,
            defaults::HEALTH_RISE,
            p,
        ) as u32,
        fall: int(
            raw.health.fall,
            "health.fall",
            1,
            1000,
            defaults::HEALTH_FALL,
            p,
        ) as u32,
        observe: raw.health.observe.unwrap_or(defaults::HEALTH_OBSERVE),
    };

    let timeouts = Timeouts {
        connect: duration(
            raw.timeouts.connect,
            "timeouts.connect",
            defaults::TIMEOUT_CONNECT,
            p,
        ),
        first_byte: optional_duration(
            raw.timeouts.first_byte,
            "timeouts.first_byte",
            defaults::TIMEOUT_FIRST_BYTE,
            p,
        ),
        idle: duration(
            raw.timeouts.idle,
            "timeouts.idle",
            defaults::TIMEOUT_IDLE,
            p,
        ),
        drain: duration(
            raw.timeouts.drain,
            "timeouts.drain",
            defaults::TIMEOUT_DRAIN,
            p,
        ),
    };

    let log = LogConfig {
        format: raw.log.format.unwrap_or_default(),
        level: match raw.log.level {
            Some(level) => {
                if !is_log_filter(level.get_ref()) {
                    p.at(
                        level.span(),
                        "log.level",
                        format!(
                            "`{}` is not a level: write level = \"info\" (trace, debug, info, warn, error, off) or a filter such as \"corral=debug\"",
                            level.get_ref()
                        ),
                    );
                }
                level.into_inner()
            }
            None => defaults::LOG_LEVEL.to_string(),
        },
        connections: raw.log.connections.unwrap_or(defaults::LOG_CONNECTIONS),
    };

    let threads = int(
        raw.runtime.threads,
        "runtime.threads",
        0,
        1024,
        defaults::RUNTIME_THREADS,
        p,
    ) as usize;
    let runtime = RuntimeConfig {
        threads: if threads == 0 { cpus() } else { threads },
        splice: raw.runtime.splice.unwrap_or(defaults::RUNTIME_SPLICE),
        drop_to: privileges(raw.runtime.user, raw.runtime.group, p),
    };

    let config = Config {
        source: None,
        listener,
        admin,
        strategy: raw.balance.strategy.unwrap_or_default(),
        sticky,
        clients,
        workers,
        backends,
        health,
        timeouts,
        log,
        runtime,
    };
    cross_check(&config, p);
    Some(config)
}

fn workers(
    w: RawWorkers,
    span: Range<usize>,
    given: Option<&[String]>,
    p: &mut Problems,
) -> Option<WorkersConfig> {
    let command_span = w.command.as_ref().map(|c| c.span()).or(Some(span.clone()));
    let command = match w.command {
        // `--` on the command line replaces the file's command.
        _ if given.is_some() => given.map(<[String]>::to_vec),
        Some(c) if c.get_ref().is_empty() || c.get_ref()[0].is_empty() => {
            p.at(c.span(), "workers.command", "must name a program");
            None
        }
        Some(c) => Some(c.into_inner()),
        None => {
            p.at(span, "workers.command", "[workers] needs a command");
            None
        }
    };
    let count = match w.count {
        None => defaults::WORKERS_COUNT,
        Some(c) => match c.get_ref() {
            toml::Value::Integer(n) if (1..=defaults::WORKERS_MAX_COUNT).contains(n) => *n as usize,
            toml::Value::String(w) if w == "auto" => cpus(),
            other => {
                p.at(
                    c.span(),
                    "workers.count",
                    format!("{other}: must be a number from 1 to 1024 or \"auto\""),
                );
                1
            }
        },
    };
    let host = match w.host {
        None => Some(defaults::WORKERS_HOST),
        Some(h) => match h.get_ref().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                p.at(
                    h.span(),
                    "workers.host",
                    format!("`{}` is not an IP address", h.get_ref()),
                );
                None
            }
        },
    };
    let auto_ports = w.port_base.is_none();
    let port_base = int(
        w.port_base,
        "workers.port_base",
        1,
        65535,
        defaults::WORKERS_PORT_BASE,
        p,
    ) as u16;
    let cwd = PathBuf::from(w.cwd.unwrap_or_else(|| ".".to_string()));
    if !cwd.is_dir() {
        p.general(
            Some("workers.cwd"),
            format!(
                "`{}` is not a directory (relative paths start where corral is started)",
                cwd.display()
            ),
        );
    }
    if let Some((program, span)) = command.as_ref().zip(command_span.clone()) {
        if let Err(why) = runnable(&program[0], &cwd) {
            p.at(span, "workers.command", why);
        }
    }
    if let Some(command) = &command {
        if let Err((key, why)) = within_exec_limits(command, &w.env) {
            match (key, &command_span) {
                ("workers.command", Some(span)) => p.at(span.clone(), key, why),
                _ => p.general(Some(key), why),
            }
        }
    }
    let mut config = default_workers(command?);
    config.count = count;
    config.host = host?;
    config.port_base = port_base;
    config.auto_ports = auto_ports;
    config.env = w.env;
    config.cwd = cwd;
    config.ready_timeout = duration(
        w.ready_timeout,
        "workers.ready_timeout",
        config.ready_timeout,
        p,
    );
    config.stop_timeout = duration(
        w.stop_timeout,
        "workers.stop_timeout",
        config.stop_timeout,
        p,
    );
    config.restart_delay = duration(
        w.restart_delay,
        "workers.restart_delay",
        config.restart_delay,
        p,
    );
    config.restart_delay_max = duration(
        w.restart_delay_max,
        "workers.restart_delay_max",
        config.restart_delay_max,
        p,
    );
    config.min_uptime = duration(w.min_uptime, "workers.min_uptime", config.min_uptime, p);
    config.unhealthy_restart = w
        .unhealthy_restart
        .map(|d| duration(Some(d), "workers.unhealthy_restart", Duration::ZERO, p));
    config.send_proxy = send_proxy(w.send_proxy);
    config.listen = w.listen.map(Spanned::into_inner).unwrap_or_default();
    config.max_memory = w.max_memory.and_then(|m| {
        if m.get_ref().trim().is_empty() {
            return None;
        }
        match parse_size(m.get_ref()) {
            Some(bytes) if bytes > 0 => Some(bytes),
            _ => {
                p.at(
                    m.span(),
                    "workers.max_memory",
                    format!(
                        "`{}` is not a size: write max_memory = \"512MiB\" (units B, KiB, MiB, GiB, KB, MB, GB)",
                        m.get_ref()
                    ),
                );
                None
            }
        }
    });
    config.stateless = w
        .stateless
        .map_or(defaults::WORKERS_STATELESS, Spanned::into_inner);
    config.notify = w
        .notify
        .as_ref()
        .map_or(defaults::WORKERS_NOTIFY, |n| *n.get_ref());
    config.watchdog = w
        .watchdog
        .filter(|d| !d.get_ref().trim().is_empty())
        .and_then(|d| {
        let span = d.span();
        let watchdog = optional_duration(Some(d), "workers.watchdog", Duration::ZERO, p)?;
        if !config.notify {
            p.at(
                span,
                "workers.watchdog",
                "needs workers.notify = true: the watchdog is fed with WATCHDOG=1 on the worker's NOTIFY_SOCKET",
            );
        }
        Some(watchdog)
    });
    config.metrics_path = w.metrics_path.and_then(|m| match m.get_ref().as_str() {
        "" => None,
        path if path.starts_with('/') => Some(path.to_string()),
        _ => {
            p.at(
                m.span(),
                "workers.metrics_path",
                "must start with `/`: write metrics_path = \"/metrics\"",
            );
            None
        }
    });
    Some(config)
}

/// A level, or a tracing filter whose every directive names a level
/// (`corral=debug,info`). A bare word that is not a level would be read as
/// a target name and silence everything.
fn is_log_filter(text: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    !text.trim().is_empty()
        && text
            .split(',')
            .all(|directive| match directive.rsplit_once('=') {
                Some((target, l)) => !target.trim().is_empty() && level(l),
                None => level(directive),
            })
        && tracing_subscriber::EnvFilter::try_new(text).is_ok()
}

/// Can `program` be started from `cwd`? `corral` is this binary; a name
/// with a slash is a path (relative to `cwd`); any other name is looked up
/// in `PATH`, as exec does.
fn runnable(program: &str, cwd: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if program == "corral" || program.contains('{') {
        return Ok(());
    }
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = cwd.join(program);
        return match std::fs::metadata(&path) {
            Err(_) => Err(format!("`{program}` does not exist")),
            Ok(_) if !executable(&path) => Err(format!(
                "`{program}` is not an executable file (chmod +x it, or name its interpreter: command = [\"python3\", \"{program}\"])"
            )),
            Ok(_) => Ok(()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| executable(&dir.join(program))) {
        Ok(())
    } else {
        Err(format!(
            "no program `{program}` in PATH: install it, or give its full path"
        ))
    }
}

/// The longest single argument or environment string the kernel takes
/// (`MAX_ARG_STRLEN`: 32 pages), its NUL included.
const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Room kept for what corral adds to a worker's exec: the shim's own
/// arguments, `PORT`, `HOST`, `CORRAL_WORKER_*`, `LISTEN_*`, and a longer
/// program path.
const EXEC_MARGIN: usize = 8 * 1024;

/// Can the kernel exec `command` with `env` added to corral's own
/// environment? Each string must be shorter than `MAX_ARG_STRLEN`, and
/// every string with its pointer must fit in `sysconf(ARG_MAX)` (a quarter
/// of the stack limit). Else every spawn would fail with `E2BIG`
/// ("Argument list too long"): refused, naming the key to shorten.
fn within_exec_limits(
    command: &[String],
    env: &BTreeMap<String, String>,
) -> Result<(), (&'static str, String)> {
    const POINTER: usize = std::mem::size_of::<usize>();
    if let Some(long) = command.iter().find(|a| a.len() + 1 > MAX_ARG_STRLEN) {
        return Err((
            "workers.command",
            format!(
                "an argument of {} bytes is longer than the kernel takes ({} bytes per argument)",
                long.len(),
                MAX_ARG_STRLEN - 1
            ),
        ));
    }
    if let Some((name, value)) = env
        .iter()
        .find(|(k, v)| k.len() + 1 + v.len() + 1 > MAX_ARG_STRLEN)
    {
        return Err((
            "workers.env",
            format!(
                "{name} is {} bytes long: the kernel takes at most {} bytes per variable",
                name.len() + 1 + value.len(),
                MAX_ARG_STRLEN - 1
            ),
        ));
    }
    // SAFETY: sysconf reads a limit; it has no preconditions.
    let arg_max = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    let arg_max = if arg_max > 0 {
        arg_max as usize
    } else {
        128 * 1024
    };
    let args: usize = command.iter().map(|a| a.len() + 1 + POINTER).sum();
    let given: usize = env
        .iter()
        .map(|(k, v)| k.len() + 1 + v.len() + 1 + POINTER)
        .sum();
    let inherited: usize = std::env::vars_os()
        .filter(|(k, _)| k.to_str().is_none_or(|k| !env.contains_key(k)))
        .map(|(k, v)| k.len() + 1 + v.len() + 1 + POINTER)
        .sum();
    let total = args + given + inherited + EXEC_MARGIN;
    if total > arg_max {
        let key = if given >= args {
            "workers.env"
        } else {
            "workers.command"
        };
        return Err((
            key,
            format!(
                "the worker's arguments and environment take {total} bytes ({args} for the command, {given} for workers.env, {inherited} inherited from corral's environment), past the kernel's limit of {arg_max} (ARG_MAX): every start would fail with \"Argument list too long\""
            ),
        ));
    }
    Ok(())
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_ports() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut parts = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    Some((parts.next()??, parts.next()??))
}

impl Config {
    /// What is allowed but likely to hurt: printed by `corral check`,
    /// logged at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let port_mode = self
            .workers
            .as_ref()
            .filter(|w| w.listen == ListenMode::Port && !w.auto_ports);
        if let (Some(w), Some((low, high))) = (port_mode, ephemeral_ports()) {
            let last = w.port_base as usize + 2 * w.count - 1;
            if (w.port_base as usize) <= high as usize && last >= low as usize {
                warnings.push(format!(
                    "key `workers.port_base`: worker ports {}..{} overlap the kernel's ephemeral range {low}..{high} (ip_local_port_range): an outgoing connection may take a worker's port; choose a port_base below {low}",
                    w.port_base, last
                ));
            }
        }
        let exposed = self.listener.binds.iter().find(|b| !b.ip().is_loopback());
        if let Some(bind) = exposed.filter(|_| {
            self.listener.proxy_protocol != ProxyProtocolMode::None
                && self.listener.proxy_protocol_from.is_empty()
        }) {
            warnings.push(format!(
                "key `listener.proxy_protocol_from`: PROXY headers are accepted from any peer on {bind}, so anyone who can reach it can claim any client address (and pass [clients] limits and lists as that address); list the balancers that send them, e.g. proxy_protocol_from = [\"10.0.0.0/8\"]"
            ));
        }
        warnings
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn int(
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
fn duration(
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
fn optional_duration(
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
pub fn parse_size(text: &str) -> Option<u64> {
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
fn cidrs(value: Option<Spanned<Vec<String>>>, key: &str, p: &mut Problems) -> Vec<IpNet> {
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

fn socket_addr(value: &Spanned<String>, key: &str, p: &mut Problems) -> Option<SocketAddr> {
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
fn resolve(value: &Spanned<String>, key: &str, p: &mut Problems) -> Option<SocketAddr> {
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

fn send_proxy(value: Option<Spanned<SendProxy>>) -> SendProxy {
    value.map(Spanned::into_inner).unwrap_or_default()
}

/// Resolves `runtime.user` and `runtime.group`; both need corral to start
/// as root, since only root can become someone else.
fn privileges(
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    p: &mut Problems,
) -> Option<Privileges> {
    use nix::unistd::{Group, User};
    let user = user.filter(|u| !u.get_ref().is_empty());
    let group = group.filter(|g| !g.get_ref().is_empty());
    if user.is_none() && group.is_none() {
        return None;
    }
    let found_user = match &user {
        Some(u) => match User::from_name(u.get_ref()) {
            Ok(Some(found)) => Some(found),
            _ => {
                p.at(
                    u.span(),
                    "runtime.user",
                    format!("no user `{}` on this system", u.get_ref()),
                );
                return None;
            }
        },
        None => None,
    };
    let gid = match &group {
        Some(g) => match Group::from_name(g.get_ref()) {
            Ok(Some(found)) => found.gid.as_raw(),
            _ => {
                p.at(
                    g.span(),
                    "runtime.group",
                    format!("no group `{}` on this system", g.get_ref()),
                );
                return None;
            }
        },
        None => found_user.as_ref()?.gid.as_raw(),
    };
    let wanted = Privileges {
        user: found_user.as_ref().map(|u| u.name.clone()),
        uid: found_user.map(|u| u.uid.as_raw()),
        gid,
    };
    // Only root can become someone else; a process that already is that
    // user (a reload after the drop) needs nothing.
    let already = wanted
        .uid
        .is_none_or(|uid| uid == nix::unistd::geteuid().as_raw())
        && wanted.gid == nix::unistd::getegid().as_raw();
    if !nix::unistd::geteuid().is_root() && !already {
        let (span, key) = match (&user, &group) {
            (Some(u), _) => (u.span(), "runtime.user"),
            (None, Some(g)) => (g.span(), "runtime.group"),
            (None, None) => return None,
        };
        p.at(
            span,
            key,
            "dropping privileges needs corral to be started as root",
        );
        return None;
    }
    Some(wanted)
}

fn read_token(file: &Spanned<String>, p: &mut Problems) -> Option<String> {
    let path = PathBuf::from(file.get_ref());
    match read_file(&path) {
        Ok(text) if text.trim().is_empty() => {
            p.at(
                file.span(),
                "admin.token_file",
                format!("{} is empty", path.display()),
            );
            None
        }
        Ok(text) => Some(text.trim().to_string()),
        Err(why) => {
            p.at(
                file.span(),
                "admin.token_file",
                format!("{}: {why}", path.display()),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded();
        assert_eq!(c.listener.binds, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.admin.bind, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(c.strategy, StrategyKind::RoundRobin);
        assert!(!c.log.connections);
        assert_eq!(c.workers.as_ref().map(|w| w.count), Some(2));
    }

    #[test]
    fn passive_checks_are_off_unless_asked_for() {
        let c = parse("[workers]\ncommand = [\"corral\", \"demo-worker\"]\n").unwrap();
        assert_eq!(
            c.timeouts.first_byte, None,
            "no first-byte timeout by default"
        );
        assert!(!c.health.observe);
        let c = parse(
            "[workers]\ncommand = [\"corral\", \"demo-worker\"]\n[timeouts]\nfirst_byte = \"5s\"\n[health]\nobserve = true\n",
        )
        .unwrap();
        assert_eq!(c.timeouts.first_byte, Some(Duration::from_secs(5)));
        assert!(c.health.observe);
    }

    #[test]
    fn the_example_file_shows_the_defaults() {
        let c = Config::parse(
            include_str!("../../config/example.toml"),
            Path::new("example.toml"),
        )
        .unwrap();
        let w = c.workers.as_ref().unwrap();
        assert_eq!(c.listener.backlog as i64, defaults::LISTENER_BACKLOG);
        assert_eq!(
            c.listener.max_connections as i64,
            defaults::LISTENER_MAX_CONNECTIONS
        );
        assert_eq!(c.admin.bind, defaults::ADMIN_BIND);
        assert_eq!(c.sticky.ttl, defaults::STICKY_TTL);
        assert_eq!(c.sticky.max_entries as i64, defaults::STICKY_MAX_ENTRIES);
        assert_eq!(c.sticky.ipv4_prefix as i64, defaults::STICKY_IPV4_PREFIX);
        assert_eq!(c.sticky.ipv6_prefix as i64, defaults::STICKY_IPV6_PREFIX);
        assert_eq!(
            (w.host, w.port_base as i64),
            (defaults::WORKERS_HOST, defaults::WORKERS_PORT_BASE)
        );
        assert_eq!(w.ready_timeout, defaults::WORKERS_READY_TIMEOUT);
        assert_eq!(w.stop_timeout, defaults::WORKERS_STOP_TIMEOUT);
        assert_eq!(w.restart_delay, defaults::WORKERS_RESTART_DELAY);
        assert_eq!(w.restart_delay_max, defaults::WORKERS_RESTART_DELAY_MAX);
        assert_eq!(w.min_uptime, defaults::WORKERS_MIN_UPTIME);
        assert_eq!(c.health.path, defaults::HEALTH_PATH);
        assert_eq!(c.health.interval, defaults::HEALTH_INTERVAL);
        assert_eq!(c.health.timeout, defaults::HEALTH_TIMEOUT);
        assert_eq!(c.health.rise as i64, defaults::HEALTH_RISE);
        assert_eq!(c.health.fall as i64, defaults::HEALTH_FALL);
        assert_eq!(c.timeouts.connect, defaults::TIMEOUT_CONNECT);
        assert_eq!(c.timeouts.first_byte, None, "0s: off");
        assert_eq!(defaults::TIMEOUT_FIRST_BYTE, Duration::ZERO);
        assert_eq!(c.health.observe, defaults::HEALTH_OBSERVE);
        assert_eq!(
            c.workers.as_ref().map(|w| w.stateless),
            Some(defaults::WORKERS_STATELESS)
        );
        assert_eq!(c.timeouts.idle, defaults::TIMEOUT_IDLE);
        assert_eq!(c.timeouts.drain, defaults::TIMEOUT_DRAIN);
        assert_eq!(c.log.level, defaults::LOG_LEVEL);
        assert_eq!(c.log.connections, defaults::LOG_CONNECTIONS);
        assert_eq!(c.runtime.splice, defaults::RUNTIME_SPLICE);
        assert!(c.listener.proxy_protocol_from.is_empty());
        assert_eq!(c.clients.ipv4_prefix as i64, defaults::CLIENTS_IPV4_PREFIX);
        assert_eq!(c.clients.ipv6_prefix as i64, defaults::CLIENTS_IPV6_PREFIX);
        assert_eq!(
            c.clients.max_connections as i64,
            defaults::CLIENTS_MAX_CONNECTIONS
        );
        assert_eq!(c.clients.max_rate, None);
        assert!(c.clients.allow.is_empty() && c.clients.deny.is_empty());
        assert_eq!(c.clients.max_tracked as i64, defaults::CLIENTS_MAX_TRACKED);
    }

    #[test]
    fn only_a_small_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.toml");
        std::fs::write(&small, "[admin]\n").unwrap();
        assert_eq!(read_file(&small).unwrap(), "[admin]\n");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; 2 * 1024 * 1024]).unwrap();
        assert!(read_file(&big).unwrap_err().contains("at most"));
        let zero = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read_file(&zero).unwrap_err().contains("character device"));
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(read_file(&fifo).unwrap_err().contains("FIFO"));
        assert!(read_file(dir.path()).unwrap_err().contains("directory"));
    }

    #[test]
    fn a_command_past_the_kernel_argument_limits_is_refused() {
        let command = vec!["sh".to_string()];
        let mut env = BTreeMap::new();
        env.insert("A".to_string(), "x".repeat(200 * 1024));
        let (key, why) = within_exec_limits(&command, &env).unwrap_err();
        assert_eq!(key, "workers.env");
        assert!(why.contains('A'), "{why}");
        let long = vec!["sh".to_string(), "y".repeat(MAX_ARG_STRLEN)];
        assert_eq!(
            within_exec_limits(&long, &BTreeMap::new()).unwrap_err().0,
            "workers.command"
        );
        // SAFETY: sysconf has no preconditions.
        let arg_max = unsafe { libc::sysconf(libc::_SC_ARG_MAX) } as usize;
        let many: BTreeMap<String, String> = (0..arg_max / 64)
            .map(|i| (format!("V{i}"), "z".repeat(64)))
            .collect();
        let (key, why) = within_exec_limits(&command, &many).unwrap_err();
        assert_eq!(key, "workers.env");
        assert!(why.contains("ARG_MAX"), "{why}");
        let few = BTreeMap::from([("NODE_ENV".to_string(), "production".to_string())]);
        assert!(within_exec_limits(&command, &few).is_ok());
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse("[listener]\nbind = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("test.toml:3:1"), "{text}");
        assert!(text.contains("bogus"), "{text}");
    }

    #[test]
    fn every_validation_problem_is_reported() {
        let err = parse(
            "[timeouts]\nconnect = \"2 parsecs\"\nidle = \"5\"\n[[backends]]\nname = \"a\"\naddress = \"nowhere\"\n",
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let line_of = |key: &str| {
            err.problems
                .iter()
                .find(|p| p.key.as_deref() == Some(key))
                .map(|p| p.line)
        };
        assert_eq!(line_of("timeouts.connect"), Some(2));
        assert_eq!(line_of("timeouts.idle"), Some(3));
        assert_eq!(line_of("backends.address"), Some(6));
    }

    #[test]
    fn nothing_to_balance_is_an_error() {
        let err = parse("[listener]\nbind = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.to_string().contains("nothing to balance"), "{err}");
    }

    #[test]
    fn a_backend_name_with_control_characters_is_refused() {
        let err = parse("[[backends]]\nname = \"app\\u001b[2J\"\naddress = \"127.0.0.1:3\"\n")
            .unwrap_err();
        assert_eq!(err.problems[0].key.as_deref(), Some("backends.name"));
        assert!(err.to_string().contains("\\u{1b}[2J"), "{err}");
        assert!(!err.to_string().contains('\u{1b}'), "{err}");
    }

    #[test]
    fn zero_workers_is_an_error() {
        let err = parse("[workers]\ncommand = [\"sh\"]\ncount = 0\n").unwrap_err();
        assert_eq!(err.problems[0].key.as_deref(), Some("workers.count"));
        assert_eq!(err.problems[0].line, 3);
    }

    #[test]
    fn bind_takes_a_list_and_ipv6() {
        let c = parse("[listener]\nbind = [\"127.0.0.1:1\", \"[::1]:2\"]\n[[backends]]\nname = \"a\"\naddress = \"127.0.0.1:3\"\n")
            .unwrap();
        assert_eq!(c.listener.binds.len(), 2);
        assert!(c.listener.binds[1].is_ipv6());
    }

    #[test]
    fn worker_ports_alternate() {
        let c = parse("[workers]\ncommand = [\"sh\"]\ncount = 3\nport_base = 9000\n").unwrap();
        let w = c.workers.unwrap();
        assert_eq!(w.port(1, false), 9001);
        assert_eq!(w.port(1, true), 9004);
    }

    #[test]
    fn overrides_replace_command_count_and_bind() {
        let mut c = Config::embedded();
        c.apply(Overrides {
            count: Some(3),
            bind: Some("127.0.0.1:7000".parse().unwrap()),
            command: Some(vec!["node".into(), "app.js".into()]),
            ..Overrides::default()
        })
        .unwrap();
        let w = c.workers.as_ref().unwrap();
        assert_eq!((w.count, w.command[0].as_str()), (3, "node"));
        assert_eq!(c.listener.binds[0].port(), 7000);
    }
}
