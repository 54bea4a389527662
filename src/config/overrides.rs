//! Command-line values that take precedence over the file (`corral run -i N
//! --bind ADDR ... -- PROGRAM ARGS`), applied to a validated config and
//! checked again by the rules between keys.

use std::path::Path;

use super::cross::cross_check;
use super::defaults;
use super::error::Problems;
use super::types::{Config, Overrides};
use super::workers::default_workers;

impl Config {
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
