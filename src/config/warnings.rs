//! What a config allows but is likely to hurt: printed by `corral check`,
//! logged at start.

use super::raw::{ListenMode, ProxyProtocolMode};
use super::types::Config;

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`).
pub(crate) fn ephemeral_ports() -> Option<(u16, u16)> {
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
            .filter(|w| w.listen == ListenMode::Proxied && !w.auto_ports);
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
        warnings.extend(self.env_set_by_corral());
        warnings.extend(self.open_admin_without_token());
        warnings
    }

    /// `workers.env` keys corral sets itself for each worker: the file's
    /// value never reaches the worker.
    fn env_set_by_corral(&self) -> Vec<String> {
        let Some(w) = &self.workers else {
            return Vec::new();
        };
        w.env
            .keys()
            .filter_map(|name| {
                let what = match name.as_str() {
                    "PORT" => "its own port, port_base + its id",
                    "HOST" => "workers.host",
                    "CORRAL_WORKER_ID" => "the worker's id, 0..count-1",
                    "CORRAL_WORKER_COUNT" => "workers.count",
                    n if n.starts_with("LISTEN_") => {
                        "systemd socket activation: set with workers.listen = \"fd\", removed otherwise"
                    }
                    _ => return None,
                };
                Some(format!(
                    "key `workers.env`: corral sets {name} for every worker itself ({what}), so {name} = {:?} is never seen by a worker; remove it from env",
                    w.env[name]
                ))
            })
            .collect()
    }

    /// An admin port others can reach whose POST endpoints have no token:
    /// they answer 403 (only loopback may use them without one).
    fn open_admin_without_token(&self) -> Option<String> {
        let bind = self.admin.bind;
        (!bind.ip().is_loopback() && self.admin.token.is_none()).then(|| format!(
            "key `admin.bind`: {bind} is not a loopback address and [admin] has no token_file, so POST /reload, /workers/restart, /workers/scale and /workers/signal answer 403 (and corral reload, restart, scale and signal fail): write token_file = \"/etc/corral/admin.token\" under [admin] (a file holding a long random secret, such as the output of `openssl rand -hex 32`), or bind = \"127.0.0.1:{}\"",
            bind.port()
        ))
    }
}
