//! What one image of corral hands the next, and how it travels: JSON in a
//! memory file (`memfd`) whose descriptor, like every descriptor named in
//! it, is left open across the exec; its number is in the environment
//! variable [`ENV`].

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::config::Config;
use crate::supervisor::spawn;

/// The environment variable that names the handover's descriptor.
pub(crate) use crate::fds::HANDOVER_ENV as ENV;

/// Everything the next image takes over. Descriptors are numbers in this
/// process, open across the exec.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Handover {
    /// [`super::FORMAT`] of the image that wrote it.
    pub(crate) format: u32,
    /// The version of the image that wrote it.
    pub(crate) from: String,
    /// When the upgrade was asked for (ms since the epoch).
    pub(crate) asked_at_ms: u64,
    /// The old program's file, open: what a rollback executes.
    pub(crate) old_program: RawFd,
    /// Set by a new image that could not adopt: why, for the old one.
    pub(crate) rolled_back: Option<String>,
    /// The config as loaded, command-line overrides and scaling included.
    pub config: Config,
    /// The front-end listening sockets, one list per proxy thread.
    pub(crate) front: Vec<Vec<RawFd>>,
    /// A handed front end's slot sockets (`workers.listen = "fd"`), in
    /// slot order: the kernel's group with its program.
    #[serde(default)]
    pub(crate) slots: Vec<RawFd>,
    /// The per-client table's entries (`[clients]`).
    #[serde(default)]
    pub(crate) clients: Vec<crate::clients::CarriedClient>,
    /// Each worker slot's restarts so far, by slot.
    #[serde(default)]
    pub(crate) restarts: Vec<(usize, u64)>,
    /// Each worker slot's restart backoff in milliseconds, by slot.
    #[serde(default)]
    pub(crate) backoffs: Vec<(usize, u64)>,
    /// When each worker slot's process came up (`clock::now_ms`), by slot.
    #[serde(default)]
    pub(crate) up_since: Vec<(usize, u64)>,
    /// Every backend's health (worker slots and `[[backends]]`), by
    /// backend key.
    #[serde(default)]
    pub(crate) health: Vec<(u64, crate::pool::CarriedHealth)>,
    /// The workers' notify socket (`workers.notify`), if it was made.
    #[serde(default)]
    pub(crate) notify: Option<crate::supervisor::notify::HandedHub>,
    /// The admin listening socket.
    pub(crate) admin: RawFd,
    /// The admin connection that asked for the upgrade: the image that
    /// serves after the exec answers it.
    pub(crate) answer_to: Option<RawFd>,
    /// The workers, their output pipes and the lifeline.
    pub(crate) spawner: spawn::Handover,
    /// Each worker slot's port (port mode).
    pub(crate) ports: Vec<(usize, u16)>,
    /// The sticky table: (client key, backend key, age in ms); the client
    /// key is a decimal string (a u128).
    pub(crate) sticky: Vec<(String, u64, u64)>,
    /// Every counter and histogram so far.
    pub(crate) counters: crate::metrics::carried::Carried,
    /// The open connections, parked with their unsent bytes.
    #[serde(default)]
    pub(crate) connections: Vec<crate::datapath::parked::ParkedConnection>,
}

impl Handover {
    /// Writes the handover to a new memory file left open across exec;
    /// returns its descriptor.
    pub(crate) fn write(&self) -> std::io::Result<OwnedFd> {
        write_json(self)
    }

    /// The handover this image was started with, if any: read from the
    /// descriptor [`ENV`] names, which is then closed.
    pub fn incoming() -> Option<Result<Handover, String>> {
        let text = std::env::var(ENV).ok()?;
        Some(read(&text))
    }
}

/// Writes `value` as JSON to a new memory file left open across exec;
/// returns its descriptor, rewound.
pub(crate) fn write_json(value: &impl serde::Serialize) -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create takes a C string and flags, returns a new fd.
    let fd = unsafe { libc::memfd_create(c"corral-handover".as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned here.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // One write: serde_json writes in small pieces, a system call each
    // straight to the file (tens of thousands with many connections).
    let text = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    file.write_all(&text)?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// The handover this image was started with as plain JSON, whatever its
/// format, if [`ENV`] names one: read through a duplicate, so the original
/// stays for a rollback (see super::adopt).
pub(crate) fn incoming_json() -> Option<Result<serde_json::Value, String>> {
    let fd_text = std::env::var(ENV).ok()?;
    Some(read_json(&fd_text))
}

fn read_json(fd_text: &str) -> Result<serde_json::Value, String> {
    let fd: RawFd = fd_text
        .parse()
        .map_err(|_| format!("{ENV}={fd_text:?} is not a descriptor number"))?;
    let mut file = std::fs::File::from(crate::fds::duplicate(fd, 3).map_err(|e| e.to_string())?);
    file.rewind()
        .map_err(|e| format!("cannot read the handover: {e}"))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("cannot read the handover (fd {}): {e}", file.as_raw_fd()))?;
    serde_json::from_str(&text).map_err(|e| format!("the handover is not JSON: {e}"))
}

fn read(fd_text: &str) -> Result<Handover, String> {
    let value = read_json(fd_text)?;
    // A test's stand-in for a handover this image cannot read (only a new
    // image: the old one reading it back after the rollback is not told).
    let told = std::env::var(super::FAIL_FOR_TEST).is_ok_and(|v| v == "read");
    if told && value["rolled_back"].is_null() {
        return Err(format!("{}=read is set", super::FAIL_FOR_TEST));
    }
    let format = value["format"].as_u64().unwrap_or(0);
    if format != u64::from(super::FORMAT) {
        return Err(format!(
            "the handover is in format {format}; this corral reads format {}",
            super::FORMAT
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("cannot read the handover: {e}"))
}
