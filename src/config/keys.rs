//! The one table of config keys: every key the file may hold, the section
//! it belongs to, and what a reload does when its value changes. `corral
//! check` reads it to tell a known key from an unknown or misplaced one, and
//! a reload reads it to decide what it applies, rolls out, keeps for the
//! next restart or refuses. A unit test holds it against every key that
//! `config/example.toml` and `docs/configuration.md` show, so a new key
//! cannot be left out.

use std::hash::{Hash, Hasher};

use super::Config;

/// What a reload does with a changed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadClass {
    /// Applied by the reload: new connections, the next check, the next
    /// start of a worker.
    Hot,
    /// Applied by the reload, rolled out by replacing the workers one at a
    /// time (a rolling restart).
    RollsWorkers,
    /// Kept, but takes effect only after corral itself restarts.
    NeedsRestart,
    /// A reload that changes it is refused; restart corral to change it.
    Refused,
}

/// One key of the file.
pub(crate) struct Key {
    pub(crate) section: &'static str,
    pub(crate) name: &'static str,
    pub(crate) class: ReloadClass,
    /// The value corral runs with, written out for comparing two configs
    /// (never shown: a token is only its fingerprint).
    pub(crate) value: fn(&Config) -> String,
}

impl Key {
    /// `section.name`.
    pub(crate) fn dotted(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }
}

/// The sections, in the order the docs list them. `backends` is a list of
/// tables (`[[backends]]`); every other one is one table.
pub(crate) const SECTIONS: [&str; 11] = [
    "listener", "admin", "balance", "sticky", "clients", "workers", "backends", "health",
    "timeouts", "log", "runtime",
];

macro_rules! key {
    ($section:literal, $name:literal, $class:ident, |$c:ident| $value:expr) => {
        Key {
            section: $section,
            name: $name,
            class: ReloadClass::$class,
            value: |$c: &Config| format!("{:?}", $value),
        }
    };
}

macro_rules! worker_key {
    ($name:literal, $class:ident, |$w:ident| $value:expr) => {
        key!("workers", $name, $class, |c| c
            .workers
            .as_ref()
            .map(|$w| $value))
    };
}

macro_rules! backend_key {
    ($name:literal, |$b:ident| $value:expr) => {
        key!("backends", $name, Hot, |c| c
            .backends
            .iter()
            .map(|$b| $value)
            .collect::<Vec<_>>())
    };
}

/// Every key, by section.
pub(crate) static KEYS: &[Key] = &[
    key!("listener", "bind", Refused, |c| c.listener.binds),
    key!("listener", "backlog", NeedsRestart, |c| c.listener.backlog),
    key!("listener", "max_connections", NeedsRestart, |c| c
        .listener
        .max_connections),
    key!("listener", "proxy_protocol", Refused, |c| c
        .listener
        .proxy_protocol),
    key!("listener", "proxy_protocol_from", Hot, |c| c
        .listener
        .proxy_protocol_from),
    key!("admin", "bind", Refused, |c| c.admin.bind),
    key!("admin", "token_file", Hot, |c| c
        .admin
        .token
        .as_deref()
        .map(fingerprint)),
    key!("balance", "strategy", Hot, |c| c.strategy),
    key!("sticky", "ttl", Hot, |c| c.sticky.ttl),
    key!("sticky", "max_entries", Hot, |c| c.sticky.max_entries),
    key!("sticky", "ipv4_prefix", Hot, |c| c.sticky.ipv4_prefix),
    key!("sticky", "ipv6_prefix", Hot, |c| c.sticky.ipv6_prefix),
    key!("clients", "ipv4_prefix", Hot, |c| c.clients.ipv4_prefix),
    key!("clients", "ipv6_prefix", Hot, |c| c.clients.ipv6_prefix),
    key!("clients", "max_connections", Hot, |c| c
        .clients
        .max_connections),
    key!("clients", "max_rate", Hot, |c| c.clients.max_rate),
    key!("clients", "allow", Hot, |c| c.clients.allow),
    key!("clients", "deny", Hot, |c| c.clients.deny),
    key!("clients", "max_tracked", Hot, |c| c.clients.max_tracked),
    worker_key!("command", RollsWorkers, |w| &w.command),
    worker_key!("count", Hot, |w| w.count),
    worker_key!("host", RollsWorkers, |w| w.host),
    worker_key!("port_base", RollsWorkers, |w| w.port_base),
    worker_key!("env", RollsWorkers, |w| &w.env),
    worker_key!("cwd", RollsWorkers, |w| &w.cwd),
    worker_key!("ready_timeout", Hot, |w| w.ready_timeout),
    worker_key!("stop_timeout", Hot, |w| w.stop_timeout),
    worker_key!("restart_delay", Hot, |w| w.restart_delay),
    worker_key!("restart_delay_max", Hot, |w| w.restart_delay_max),
    worker_key!("min_uptime", Hot, |w| w.min_uptime),
    worker_key!("unhealthy_restart", Hot, |w| w.unhealthy_restart),
    worker_key!("send_proxy", RollsWorkers, |w| w.send_proxy),
    // Port mode and "no workers" share the front end the same way; only a
    // change to or from handed mode moves sockets.
    key!("workers", "listen", Refused, |c| c
        .workers
        .as_ref()
        .is_some_and(|w| w.listen == super::ListenMode::Handed)),
    worker_key!("max_memory", Hot, |w| w.max_memory),
    worker_key!("metrics_path", Hot, |w| &w.metrics_path),
    worker_key!("stateless", Hot, |w| w.stateless),
    worker_key!("notify", Hot, |w| w.notify),
    worker_key!("watchdog", Hot, |w| w.watchdog),
    backend_key!("name", |b| &b.name),
    backend_key!("address", |b| b.address),
    backend_key!("send_proxy", |b| b.send_proxy),
    key!("health", "kind", Hot, |c| c.health.kind),
    key!("health", "path", Hot, |c| c.health.path),
    key!("health", "interval", Hot, |c| c.health.interval),
    key!("health", "timeout", Hot, |c| c.health.timeout),
    key!("health", "rise", Hot, |c| c.health.rise),
    key!("health", "fall", Hot, |c| c.health.fall),
    key!("health", "observe", Hot, |c| c.health.observe),
    key!("timeouts", "connect", Hot, |c| c.timeouts.connect),
    key!("timeouts", "first_byte", Hot, |c| c.timeouts.first_byte),
    key!("timeouts", "idle", Hot, |c| c.timeouts.idle),
    key!("timeouts", "drain", Hot, |c| c.timeouts.drain),
    key!("log", "format", NeedsRestart, |c| c.log.format),
    key!("log", "level", NeedsRestart, |c| c.log.level),
    key!("log", "connections", Hot, |c| c.log.connections),
    key!("log", "file", NeedsRestart, |c| c.log.file),
    key!("log", "max_size", NeedsRestart, |c| c.log.max_size),
    key!("log", "keep", NeedsRestart, |c| c.log.keep),
    key!("runtime", "threads", NeedsRestart, |c| c.runtime.threads),
    key!("runtime", "splice", Hot, |c| c.runtime.splice),
    key!("runtime", "user", NeedsRestart, |c| c
        .runtime
        .drop_to
        .as_ref()
        .map(|d| d.uid)),
    key!("runtime", "group", NeedsRestart, |c| c
        .runtime
        .drop_to
        .as_ref()
        .map(|d| d.gid)),
];

/// The key `name` of `section`, if the file may hold it.
pub(crate) fn find(section: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

/// The keys of `section`, in table order.
pub(crate) fn of_section(section: &str) -> impl Iterator<Item = &'static Key> + '_ {
    KEYS.iter().filter(move |k| k.section == section)
}

/// The sections that have a key `name`.
pub(crate) fn sections_with(name: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.name == name)
        .map(|k| k.section)
        .collect()
}

/// The candidate closest to `written`, when it is close enough to be a
/// slip of the keyboard (`worker` for `workers`, `intervall`).
pub(crate) fn closest<'a>(
    written: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(written, c), c))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A stand-in for a secret, for telling two of them apart.
fn fingerprint(secret: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    secret.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `section.key` of every key a file of TOML lines shows, `# key = ...`
    /// examples included.
    fn keys_of_example(text: &str) -> BTreeSet<String> {
        let mut section = String::new();
        let mut found = BTreeSet::new();
        for line in text.lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some(name) = line.strip_prefix('[') {
                let name = name.trim_start_matches('[');
                section = name[..name.find(']').unwrap_or(name.len())].to_string();
                continue;
            }
            let Some((key, _)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim();
            if !section.is_empty()
                && !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
            {
                found.insert(format!("{section}.{key}"));
            }
        }
        found
    }

    /// `section.key` of every row of the key tables of
    /// docs/configuration.md (under `## \`[section]\`` headings).
    fn keys_of_docs(text: &str) -> BTreeSet<String> {
        let mut section = None;
        let mut found = BTreeSet::new();
        for line in text.lines() {
            if let Some(heading) = line.strip_prefix("## ") {
                section = heading
                    .strip_prefix("`[")
                    .map(|s| s.trim_start_matches('['))
                    .and_then(|s| s.split(']').next())
                    .map(str::to_string);
                continue;
            }
            let (Some(section), Some(row)) = (&section, line.strip_prefix("| `")) else {
                continue;
            };
            if let Some((key, _)) = row.split_once('`') {
                found.insert(format!("{section}.{key}"));
            }
        }
        found
    }

    fn table() -> BTreeSet<String> {
        KEYS.iter().map(Key::dotted).collect()
    }

    #[test]
    fn every_key_of_the_example_has_a_reload_class() {
        let example = keys_of_example(include_str!("../../config/example.toml"));
        assert!(example.len() > 50, "the example was read: {example:?}");
        let missing: Vec<_> = example.difference(&table()).cloned().collect();
        assert!(missing.is_empty(), "not in config::keys::KEYS: {missing:?}");
        let undocumented: Vec<_> = table().difference(&example).cloned().collect();
        assert!(
            undocumented.is_empty(),
            "in KEYS but not in config/example.toml: {undocumented:?}"
        );
    }

    #[test]
    fn every_key_of_the_docs_has_a_reload_class() {
        let docs = keys_of_docs(include_str!("../../docs/configuration.md"));
        assert!(docs.len() > 50, "the docs were read: {docs:?}");
        let missing: Vec<_> = docs.difference(&table()).cloned().collect();
        assert!(missing.is_empty(), "not in config::keys::KEYS: {missing:?}");
        let undocumented: Vec<_> = table().difference(&docs).cloned().collect();
        assert!(
            undocumented.is_empty(),
            "in KEYS but not in docs/configuration.md: {undocumented:?}"
        );
    }

    #[test]
    fn every_key_belongs_to_a_section_once() {
        let mut seen = BTreeSet::new();
        for key in KEYS {
            assert!(SECTIONS.contains(&key.section), "{}", key.dotted());
            assert!(seen.insert(key.dotted()), "{} twice", key.dotted());
        }
    }

    #[test]
    fn slips_find_their_key_and_strangers_nothing() {
        assert_eq!(closest("worker", SECTIONS), Some("workers"));
        assert_eq!(closest("helth", SECTIONS), Some("health"));
        assert_eq!(closest("zebra", SECTIONS), None);
        let health = of_section("health").map(|k| k.name);
        assert_eq!(closest("intervall", health), Some("interval"));
    }
}
