//! The `corral` command line: parses arguments, loads the config, and hands
//! over to the library. Exit codes: 0 after a clean stop, 2 for a usage or
//! config error (nothing started), 1 for a fatal runtime error (and for a
//! client command whose corral is unreachable or refuses).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use corral::cli::{self, Target};
use corral::config::{self, Config, ListenMode, Overrides, StrategyKind};
use corral::control::reload;
use corral::Source;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "A Layer-4 TCP load balancer that supervises its workers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer (without -c: the embedded default with 2 demo workers).
    Run(RunArgs),
    /// Validate a config file and exit: every error, with file, line and key.
    Check {
        /// The config file (also accepted as -c FILE).
        #[arg(value_name = "FILE", required_unless_present = "config")]
        file: Option<PathBuf>,
        #[arg(
            short = 'c',
            long = "config",
            value_name = "FILE",
            conflicts_with = "file"
        )]
        config: Option<PathBuf>,
        /// The worker command, after `--`, as `corral run` would be given it
        /// (a `[workers]` section may then leave `command` out).
        #[arg(last = true, value_name = "PROGRAM ARGS")]
        command: Vec<String>,
    },
    /// Show the running corral's backends as a table.
    Status(Find),
    /// Ask the running corral for a rolling restart of its workers, or of the one named.
    ///
    /// Each replacement is ready before the process it replaces drains.
    Restart {
        /// One worker (worker-0, ...); without it, every worker in turn.
        #[arg(value_name = "NAME")]
        name: Option<String>,
        #[command(flatten)]
        find: Find,
    },
    /// Take one backend out of rotation (drained; its process keeps running).
    ///
    /// Its open connections finish and no new one comes to it (sticky
    /// clients go elsewhere); its state is `disabled` until `corral enable
    /// NAME`, across restarts of its process and reloads.
    Disable {
        /// A worker (worker-0, ...) or a [[backends]] name.
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        find: Find,
    },
    /// Put a disabled backend back in rotation.
    Enable {
        /// A worker (worker-0, ...) or a [[backends]] name.
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        find: Find,
    },
    /// Ask the running corral to reload its config file.
    Reload(Find),
    /// Replace the running corral's program with the file now at the path it
    /// was started from, in the same process: workers, connections' sockets,
    /// tables and counters are handed over.
    Upgrade(Find),
    /// (internal) The handover format this program reads, for a running
    /// corral about to upgrade to it.
    #[command(hide = true, name = "handover-format")]
    HandoverFormat,
    /// Send a signal (USR1, HUP, ...; not KILL or STOP) to one worker or all.
    Signal {
        /// A worker's name (worker-0, ...) or `all`.
        #[arg(value_name = "NAME|all")]
        name: String,
        /// The signal, such as USR1 or SIGHUP.
        #[arg(value_name = "SIGNAL")]
        signal: String,
        #[command(flatten)]
        find: Find,
    },
    /// Set the running corral's worker count: N, or `auto` (one per CPU).
    ///
    /// The count holds until the next reload from corral's file, if it has one.
    Scale {
        /// A number of workers (at least 1), or `auto` (one per CPU).
        #[arg(value_name = "N|auto", value_parser = parse_count)]
        count: usize,
        #[command(flatten)]
        find: Find,
    },
    /// Show the clients holding the most connections now.
    Clients {
        /// How many clients to show.
        #[arg(long, value_name = "N", default_value_t = 10)]
        top: usize,
        #[command(flatten)]
        find: Find,
    },
    /// Show the workers' last output lines (`worker-0 | text`); with -f, then
    /// new lines as they come.
    Logs {
        /// Keep following: print new lines as the workers write them.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the last lines to show first.
        #[arg(long, value_name = "N", default_value_t = 50)]
        lines: usize,
        /// One worker (worker-0, ...); all workers when left out.
        #[arg(value_name = "NAME")]
        name: Option<String>,
        #[command(flatten)]
        find: Find,
    },
    /// Run the built-in demo HTTP backend on $PORT.
    DemoWorker,
    /// (internal) The process between corral and one worker: starts the
    /// worker and takes its whole process tree down with it.
    #[command(hide = true)]
    WorkerShim {
        #[arg(long)]
        parent: u32,
        /// fd 3 is a listening socket handed to the worker (systemd style).
        #[arg(long)]
        handed_socket: bool,
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

/// `corral run`'s arguments: each overrides its config key.
#[derive(Args)]
struct RunArgs {
    /// The config file (TOML).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Number of workers, or "auto" for one per CPU (overrides workers.count).
    #[arg(short = 'i', long = "instances", value_name = "N", value_parser = parse_count)]
    instances: Option<usize>,
    /// Front-end address, e.g. 0.0.0.0:8080 or :8080 (overrides listener.bind).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    bind: Option<SocketAddr>,
    /// Admin address (overrides admin.bind).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    admin: Option<SocketAddr>,
    /// The dispatch strategy (overrides balance.strategy).
    #[arg(long, value_name = "NAME", value_enum)]
    strategy: Option<StrategyKind>,
    /// port or fd (overrides workers.listen).
    #[arg(long, value_name = "MODE", value_parser = parse_listen)]
    listen: Option<ListenMode>,
    /// Worker i listens on N + i, its rolling-restart twin on N + count + i
    /// (overrides workers.port_base; without either, corral picks free ports).
    #[arg(long = "port-base", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    port_base: Option<u16>,
    /// The worker command, after `--` (replaces workers.command).
    #[arg(last = true, value_name = "PROGRAM ARGS")]
    command: Vec<String>,
}

/// How a client command finds the running corral.
#[derive(Args)]
struct Find {
    /// Its admin address.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr, conflicts_with = "config")]
    admin: Option<SocketAddr>,
    /// Its config file (admin.bind and admin.token_file are read from it).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

fn parse_count(text: &str) -> Result<usize, String> {
    if text == "auto" || text == "max" {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a number or \"auto\"")),
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    config::parse_addr(text).ok_or_else(|| {
        format!("`{text}` is not an address with a port, such as 127.0.0.1:8080, :8080 or localhost:8080")
    })
}

fn parse_listen(text: &str) -> Result<ListenMode, String> {
    match text {
        "port" => Ok(ListenMode::Proxied),
        "fd" => Ok(ListenMode::Handed),
        _ => Err(format!("`{text}`: write port or fd")),
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Check {
            file,
            config,
            command,
        } => {
            let Some(path) = file.or(config) else {
                eprintln!("corral check: name the config file");
                return ExitCode::from(2);
            };
            check(&path, (!command.is_empty()).then_some(command.as_slice()))
        }
        Command::Status(find) => client(&find, cli::status),
        Command::Restart { name, find } => {
            client(&find, |target| cli::restart(target, name.as_deref()))
        }
        Command::Disable { name, find } => {
            client(&find, |target| cli::one_backend::disable(target, &name))
        }
        Command::Enable { name, find } => {
            client(&find, |target| cli::one_backend::enable(target, &name))
        }
        Command::Reload(find) => client(&find, cli::reload),
        Command::Upgrade(find) => client(&find, cli::upgrade),
        Command::HandoverFormat => {
            println!("{}", corral::upgrade::format_line());
            ExitCode::SUCCESS
        }
        Command::Scale { count, find } => client(&find, |target| cli::scale(target, count)),
        Command::Signal { name, signal, find } => {
            client(&find, |target| cli::signal(target, &name, &signal))
        }
        Command::Clients { top, find } => client(&find, |target| cli::clients(target, top)),
        Command::Logs {
            follow,
            lines,
            name,
            find,
        } => {
            let asked = cli::logs::Asked {
                name: name.as_deref(),
                lines,
                follow,
            };
            match target(&find) {
                Ok(target) => finish(cli::logs::show(&target, &asked).map(|()| None)),
                Err(code) => code,
            }
        }
        Command::WorkerShim {
            parent,
            handed_socket,
            mut command,
        } => {
            let program = command.remove(0);
            corral::supervisor::shim::run(parent, handed_socket, program, command)
        }
        Command::DemoWorker => match corral::demo_worker::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("corral demo-worker: error: {error:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// `corral run`: the config (the file, or the embedded default) with the
/// command line's overrides, then the balancer until it stops.
fn run(args: RunArgs) -> ExitCode {
    let RunArgs {
        config,
        instances,
        bind,
        admin,
        strategy,
        listen,
        port_base,
        command,
    } = args;
    let overrides = Overrides {
        count: instances,
        bind,
        admin,
        strategy,
        listen,
        port_base,
        command: (!command.is_empty()).then_some(command),
    };
    corral::upgrade::remember_program();
    let incoming = match corral::upgrade::handover::Handover::incoming() {
        None => None,
        Some(Ok(handover)) => Some(handover),
        Some(Err(why)) => {
            // Only the old program can read this handover: give it back.
            let failed = corral::upgrade::adopt::roll_back_unread(&why);
            eprintln!(
                "corral: error: cannot take over from the previous corral: {why} ({failed:?})"
            );
            return ExitCode::from(1);
        }
    };
    let loaded = match (&incoming, &config) {
        (Some(handover), _) => Ok(handover.config.clone()),
        (None, Some(file)) => reload::load(file, &overrides).map_err(|e| e.to_string()),
        (None, None) => {
            let mut embedded = Config::embedded();
            embedded.apply(overrides.clone()).map(|()| embedded)
        }
    };
    let config_value = match loaded {
        Ok(c) => c,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let source = Source {
        file: config,
        overrides,
    };
    match corral::run(config_value, source, incoming) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("corral: error: {error}");
            ExitCode::from(1)
        }
    }
}

fn check(path: &Path, command: Option<&[String]>) -> ExitCode {
    match Config::load_with(path, command) {
        Ok(config) => {
            for warning in config.warnings() {
                eprintln!("{}: warning: {warning}", path.display());
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
    }
}

/// Runs a client command against the corral that `find` names.
fn client(
    find: &Find,
    command: impl FnOnce(&Target) -> Result<String, cli::ClientError>,
) -> ExitCode {
    match target(find) {
        Ok(target) => finish(command(&target).map(Some)),
        Err(code) => code,
    }
}

/// The corral that `find` names; exit code 2 when its file is unusable.
fn target(find: &Find) -> Result<Target, ExitCode> {
    Ok(match (&find.admin, &find.config) {
        (Some(admin), _) => Target {
            admin: *admin,
            token: None,
        },
        (None, Some(file)) => match cli::target_of_file(file) {
            Ok(target) => target,
            Err(error) => {
                eprintln!("corral: error: {error}");
                return Err(ExitCode::from(2));
            }
        },
        (None, None) => Target {
            admin: config::defaults::ADMIN_BIND,
            token: None,
        },
    })
}

/// Prints a client command's outcome (its text, if it has one left to
/// print) and gives the exit code.
fn finish(outcome: Result<Option<String>, cli::ClientError>) -> ExitCode {
    match outcome {
        Ok(text) => {
            if let Some(text) = text {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("corral: error: {error}");
            ExitCode::from(1)
        }
    }
}
