//! `[workers]`: the processes corral runs: their command (or the one given
//! after `--`), count, address and ports, environment, directory, timings,
//! and what corral watches about them. Also whether the kernel can exec the
//! command at all (argument limits) and whether its program exists.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::defaults;
use super::error::Problems;
use super::raw::{ListenMode, RawWorkers, SendProxy};
use super::types::WorkersConfig;
use super::values::{cpus, duration, int, optional_duration, parse_size, send_proxy};

/// The workers' settings with every default, running `command`.
pub fn default_workers(command: Vec<String>) -> WorkersConfig {
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
        listen: ListenMode::Proxied,
        max_memory: None,
        metrics_path: None,
        stateless: defaults::WORKERS_STATELESS,
        notify: defaults::WORKERS_NOTIFY,
        watchdog: None,
    }
}

/// Validates `[workers]`, written at `span`; `given` is the command given
/// after `--` on the command line, which replaces the file's.
pub fn validate(
    mut w: RawWorkers,
    span: Range<usize>,
    given: Option<&[String]>,
    p: &mut Problems,
) -> Option<WorkersConfig> {
    let command_span = w.command.as_ref().map_or(span.clone(), |c| c.span());
    let command = command(w.command.take(), span, given, p);
    let count = count(w.count.take(), p);
    let host = host(w.host.take(), p);
    let auto_ports = w.port_base.is_none();
    let port_base = int(
        w.port_base.take(),
        "workers.port_base",
        1,
        65535,
        defaults::WORKERS_PORT_BASE,
        p,
    ) as u16;
    let cwd = PathBuf::from(w.cwd.take().unwrap_or_else(|| ".".to_string()));
    if !cwd.is_dir() {
        p.general(
            Some("workers.cwd"),
            format!(
                "`{}` is not a directory (relative paths start where corral is started)",
                cwd.display()
            ),
        );
    }
    if let Some(command) = &command {
        can_exec(command, &cwd, &w.env, command_span, p);
    }
    let mut config = default_workers(command?);
    config.count = count;
    config.host = host?;
    config.port_base = port_base;
    config.auto_ports = auto_ports;
    config.env = std::mem::take(&mut w.env);
    config.cwd = cwd;
    timings(&mut config, &mut w, p);
    watched(&mut config, w, p);
    Some(config)
}

/// `workers.command`, or the one given after `--`.
fn command(
    written: Option<Spanned<Vec<String>>>,
    section: Range<usize>,
    given: Option<&[String]>,
    p: &mut Problems,
) -> Option<Vec<String>> {
    match written {
        // `--` on the command line replaces the file's command.
        _ if given.is_some() => given.map(<[String]>::to_vec),
        Some(c) if c.get_ref().is_empty() || c.get_ref()[0].is_empty() => {
            p.at(c.span(), "workers.command", "must name a program");
            None
        }
        Some(c) => Some(c.into_inner()),
        None => {
            p.at(
                section,
                "workers.command",
                "[workers] has no command: add one, such as command = [\"python3\", \"app.py\"], or give the program after `--`: corral check FILE -- PROGRAM ARGS (and corral run -c FILE -- PROGRAM ARGS)",
            );
            None
        }
    }
}

/// `workers.count`: a number from 1 to the maximum, or `"auto"`.
fn count(value: Option<Spanned<toml::Value>>, p: &mut Problems) -> usize {
    let Some(c) = value else {
        return defaults::WORKERS_COUNT;
    };
    match c.get_ref() {
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
    }
}

/// `workers.host`: an IP address.
fn host(value: Option<Spanned<String>>, p: &mut Problems) -> Option<IpAddr> {
    let Some(h) = value else {
        return Some(defaults::WORKERS_HOST);
    };
    match h.get_ref().parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            p.at(
                h.span(),
                "workers.host",
                format!("`{}` is not an IP address", h.get_ref()),
            );
            None
        }
    }
}

/// Is the program there, and do the command and environment fit the
/// kernel's limits for exec?
fn can_exec(
    command: &[String],
    cwd: &Path,
    env: &BTreeMap<String, String>,
    span: Range<usize>,
    p: &mut Problems,
) {
    if let Err(why) = runnable(&command[0], cwd) {
        p.at(span.clone(), "workers.command", why);
    }
    if let Err((key, why)) = within_exec_limits(command, env) {
        match key {
            "workers.command" => p.at(span, key, why),
            _ => p.general(Some(key), why),
        }
    }
}

/// The durations of starting, stopping and restarting workers.
fn timings(config: &mut WorkersConfig, w: &mut RawWorkers, p: &mut Problems) {
    let mut take = |value: &mut Option<Spanned<String>>, key: &str, default: Duration| {
        duration(value.take(), key, default, p)
    };
    config.ready_timeout = take(
        &mut w.ready_timeout,
        "workers.ready_timeout",
        config.ready_timeout,
    );
    config.stop_timeout = take(
        &mut w.stop_timeout,
        "workers.stop_timeout",
        config.stop_timeout,
    );
    config.restart_delay = take(
        &mut w.restart_delay,
        "workers.restart_delay",
        config.restart_delay,
    );
    config.restart_delay_max = take(
        &mut w.restart_delay_max,
        "workers.restart_delay_max",
        config.restart_delay_max,
    );
    config.min_uptime = take(&mut w.min_uptime, "workers.min_uptime", config.min_uptime);
    config.unhealthy_restart = w
        .unhealthy_restart
        .take()
        .map(|d| duration(Some(d), "workers.unhealthy_restart", Duration::ZERO, p));
}

/// How workers get clients and what corral watches about them: PROXY
/// header, listen mode, memory, metrics, statelessness, notify, watchdog.
fn watched(config: &mut WorkersConfig, w: RawWorkers, p: &mut Problems) {
    config.send_proxy = send_proxy(w.send_proxy);
    config.listen = w.listen.map(Spanned::into_inner).unwrap_or_default();
    config.max_memory = w.max_memory.and_then(|m| max_memory(m, p));
    config.stateless = w
        .stateless
        .map_or(defaults::WORKERS_STATELESS, Spanned::into_inner);
    config.notify = w
        .notify
        .as_ref()
        .map_or(defaults::WORKERS_NOTIFY, |n| *n.get_ref());
    let notify = config.notify;
    config.watchdog = w
        .watchdog
        .filter(|d| !d.get_ref().trim().is_empty())
        .and_then(|d| {
            let span = d.span();
            let watchdog = optional_duration(Some(d), "workers.watchdog", Duration::ZERO, p)?;
            if !notify {
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
}

/// `workers.max_memory`: `""` is no limit, else a size above zero.
fn max_memory(m: Spanned<String>, p: &mut Problems) -> Option<u64> {
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
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Room kept for what corral adds to a worker's exec: the shim's own
/// arguments, `PORT`, `HOST`, `CORRAL_WORKER_*`, `LISTEN_*`, and a longer
/// program path.
const EXEC_MARGIN: usize = 8 * 1024;

/// Can the kernel exec `command` with `env` added to corral's own
/// environment? Each string must be shorter than `MAX_ARG_STRLEN`, and
/// every string with its pointer must fit in `sysconf(ARG_MAX)` (a quarter
/// of the stack limit). Else every spawn would fail with `E2BIG`
/// ("Argument list too long"): refused, naming the key to shorten.
pub fn within_exec_limits(
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
