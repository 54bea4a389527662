//! The one config builder: every test writes its corral.toml through
//! [`Config`], key by key, so no test formats TOML by hand.
//!
//! ```ignore
//! let config = Config::new()
//!     .strategy("round-robin")
//!     .demo_workers(3)
//!     .set("health.interval", "200ms")
//!     .backend("app", addr);
//! ```

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;

use super::{free_port, free_port_range, support};

/// A value as TOML writes it: strings quoted, numbers and booleans bare,
/// lists of strings as arrays; [`Raw`] for anything else (inline tables).
pub trait Toml {
    fn toml(&self) -> String;
}

/// A value written to the file exactly as given, e.g. `Raw("{ A = \"b\" }")`.
pub struct Raw<'a>(pub &'a str);

impl Toml for Raw<'_> {
    fn toml(&self) -> String {
        self.0.to_string()
    }
}

/// A TOML basic string: backslash, quote and control characters escaped
/// (TOML takes no raw control character in a string).
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Toml for &str {
    fn toml(&self) -> String {
        quoted(self)
    }
}

impl Toml for String {
    fn toml(&self) -> String {
        quoted(self)
    }
}

impl Toml for SocketAddr {
    fn toml(&self) -> String {
        quoted(&self.to_string())
    }
}

impl Toml for &Path {
    fn toml(&self) -> String {
        quoted(&self.display().to_string())
    }
}

impl Toml for bool {
    fn toml(&self) -> String {
        self.to_string()
    }
}

macro_rules! bare_numbers {
    ($($t:ty),*) => {$(
        impl Toml for $t {
            fn toml(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
bare_numbers!(i32, i64, u16, u32, u64, usize);

impl Toml for &[&str] {
    fn toml(&self) -> String {
        let items: Vec<String> = self.iter().map(|s| quoted(s)).collect();
        format!("[{}]", items.join(", "))
    }
}

impl<const N: usize> Toml for &[&str; N] {
    fn toml(&self) -> String {
        (&self[..]).toml()
    }
}

/// A corral config file. [`Config::new`] picks free loopback addresses for
/// the front end (`listener.bind`) and the admin port (`admin.bind`); every
/// other key is the test's, set with [`Config::set`] or a shorthand.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where clients connect (unless a test changes `listener.bind`).
    pub front: SocketAddr,
    /// Where the admin endpoints answer.
    pub admin: SocketAddr,
    /// `[section]` → `key = value` lines, in the order first set.
    sections: Vec<(String, Vec<(String, String)>)>,
    /// One `[[backends]]` table each.
    backends: Vec<Vec<(String, String)>>,
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Config {
    /// Front end and admin on fresh loopback ports, nothing else.
    pub fn new() -> Config {
        let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Config {
            front,
            admin,
            sections: Vec::new(),
            backends: Vec::new(),
        }
        .set("listener.bind", front)
        .set("admin.bind", admin)
    }

    /// Sets `section.key` (e.g. `"health.interval"`) to `value`, replacing
    /// any earlier value of that key.
    pub fn set(mut self, key: &str, value: impl Toml) -> Config {
        let (section, name) = key
            .split_once('.')
            .unwrap_or_else(|| panic!("{key:?} is not section.key"));
        let value = value.toml();
        let index = match self.sections.iter().position(|(s, _)| s == section) {
            Some(index) => index,
            None => {
                self.sections.push((section.to_string(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let keys = &mut self.sections[index].1;
        match keys.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => entry.1 = value,
            None => keys.push((name.to_string(), value)),
        }
        self
    }

    /// Leaves `section.key` out of the file (corral's default applies).
    pub fn unset(mut self, key: &str) -> Config {
        let (section, name) = key.split_once('.').unwrap();
        for (s, keys) in &mut self.sections {
            if s == section {
                keys.retain(|(k, _)| k != name);
            }
        }
        self
    }

    /// Puts the front end on `front` (a privileged port, an address in use).
    pub fn bind(mut self, front: SocketAddr) -> Config {
        self.front = front;
        self.set("listener.bind", front)
    }

    /// `balance.strategy`.
    pub fn strategy(self, name: &str) -> Config {
        self.set("balance.strategy", name)
    }

    /// `log.connections`: one log line per closed connection. Tests that
    /// read those lines turn it on themselves rather than trust a default.
    pub fn connection_logs(self, on: bool) -> Config {
        self.set("log.connections", on)
    }

    /// `count` workers running `command`, on a fresh range of ports (room
    /// for every slot and its replacement in a rolling restart).
    pub fn workers(self, command: &[&str], count: usize) -> Config {
        self.set("workers.command", command)
            .set("workers.count", count)
            .set("workers.port_base", free_port_range(2 * count as u16))
    }

    /// `count` copies of `corral demo-worker` (HTTP: `worker=<id> pid=<pid>`).
    pub fn demo_workers(self, count: usize) -> Config {
        self.workers(&["corral", "demo-worker"], count)
    }

    /// `count` copies of tests/support/echo.py (a TCP echo with half-close).
    pub fn echo_workers(self, count: usize) -> Config {
        self.workers(&["python3", &support("echo.py")], count)
    }

    /// A `[[backends]]` entry.
    pub fn backend(self, name: &str, address: impl Display) -> Config {
        self.backend_sending_proxy(name, address, None)
    }

    /// A `[[backends]]` entry with `send_proxy` ("v1" or "v2") when given.
    pub fn backend_sending_proxy(
        mut self,
        name: &str,
        address: impl Display,
        send_proxy: Option<&str>,
    ) -> Config {
        let mut entry = vec![
            ("name".to_string(), name.toml()),
            ("address".to_string(), address.to_string().toml()),
        ];
        if let Some(version) = send_proxy {
            entry.push(("send_proxy".to_string(), version.toml()));
        }
        self.backends.push(entry);
        self
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for (section, keys) in &self.sections {
            text.push_str(&format!("[{section}]\n"));
            for (key, value) in keys {
                text.push_str(&format!("{key} = {value}\n"));
            }
            text.push('\n');
        }
        for entry in &self.backends {
            text.push_str("[[backends]]\n");
            for (key, value) in entry {
                text.push_str(&format!("{key} = {value}\n"));
            }
            text.push('\n');
        }
        text
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.text()).unwrap();
    }
}
