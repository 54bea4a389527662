//! Unit tests of reading and validating whole config files.

use std::collections::BTreeMap;
use std::time::Duration;

use super::workers::{within_exec_limits, MAX_ARG_STRLEN};
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
    assert_eq!(c.log.file, None, "\"\": no log file");
    assert_eq!(c.log.max_size, defaults::LOG_MAX_SIZE);
    assert_eq!(c.log.keep as i64, defaults::LOG_KEEP);
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
    let err =
        parse("[[backends]]\nname = \"app\\u001b[2J\"\naddress = \"127.0.0.1:3\"\n").unwrap_err();
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

#[test]
fn dotted_keys_and_inline_tables_read_as_sections_do() {
    let sections = parse(
        "[workers]\ncommand = [\"sh\"]\ncount = 3\n[health]\ninterval = \"3s\"\n[[backends]]\nname = \"a\"\naddress = \"127.0.0.1:3\"\n",
    )
    .unwrap();
    let dotted = parse(
        "workers.command = [\"sh\"]\nworkers.count = 3\nhealth = { interval = \"3s\" }\nbackends = [{ name = \"a\", address = \"127.0.0.1:3\" }]\n",
    )
    .unwrap();
    assert_eq!(dotted.workers, sections.workers);
    assert_eq!(dotted.health, sections.health);
    assert_eq!(dotted.backends, sections.backends);
}

#[test]
fn the_log_file_keys_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.log");
    let c = parse(&format!(
        "[workers]\ncommand = [\"sh\"]\n[log]\nfile = {:?}\nmax_size = \"1MiB\"\nkeep = 2\n",
        file.display().to_string()
    ))
    .unwrap();
    assert_eq!(c.log.file.as_deref(), Some(file.as_path()));
    assert_eq!((c.log.max_size, c.log.keep), (1024 * 1024, 2));
    let err = parse(
        "[workers]\ncommand = [\"sh\"]\n[log]\nfile = \"/no/such/dir/corral.log\"\nmax_size = \"1KiB\"\nkeep = 0\n",
    )
    .unwrap_err();
    let keys: Vec<_> = err
        .problems
        .iter()
        .map(|p| p.key.clone().unwrap())
        .collect();
    assert_eq!(keys, ["log.file", "log.max_size", "log.keep"], "{err}");
    assert!(err.problems[0].message.contains("/no/such/dir"), "{err}");
}

#[test]
fn warnings_name_env_keys_corral_sets_and_an_open_admin_port() {
    let c = parse(
        "[workers]\ncommand = [\"sh\"]\nenv = { PORT = \"1\", LISTEN_FDS = \"2\", GREETING = \"3\" }\n[admin]\nbind = \"0.0.0.0:9999\"\n",
    )
    .unwrap();
    let warnings = c.warnings().join("\n");
    assert!(warnings.contains("corral sets PORT"), "{warnings}");
    assert!(warnings.contains("corral sets LISTEN_FDS"), "{warnings}");
    assert!(!warnings.contains("GREETING"), "{warnings}");
    assert!(warnings.contains("token_file = "), "{warnings}");
}
