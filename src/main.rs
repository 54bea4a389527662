//! The `corral` command line: parses arguments, loads the config, and hands
//! over to the library. Exit codes: 0 after a clean stop, 2 for a usage or
//! config error (nothing started), 1 for a fatal runtime error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corral::config::{Config, Overrides};
use corral::control::Source;

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
    Run {
        /// The config file (TOML).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Number of workers, or "auto" for one per CPU (overrides workers.count).
        #[arg(short = 'i', long = "instances", value_name = "N", value_parser = parse_count)]
        instances: Option<usize>,
        /// Front-end address (overrides listener.bind).
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
        /// The worker command, after `--` (overrides workers.command).
        #[arg(last = true, value_name = "PROGRAM ARGS")]
        command: Vec<String>,
    },
    /// Validate a config file and exit.
    Check {
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the built-in demo HTTP backend on $PORT.
    DemoWorker,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            instances,
            bind,
            command,
        } => {
            let overrides = Overrides {
                count: instances,
                bind,
                command: (!command.is_empty()).then_some(command),
            };
            let loaded = match &config {
                Some(file) => corral::control::load(file, &overrides),
                None => {
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
            match corral::run(config_value, source) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("corral: error: {error}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(2)
            }
        },
        Command::DemoWorker => match corral::demo_worker::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("corral demo-worker: error: {error:#}");
                ExitCode::from(1)
            }
        },
    }
}
