//! The workers' notify socket (`workers.notify`): systemd's notify
//! protocol, spoken between each worker and corral.
//!
//! [`NotifyHub`] owns one datagram socket in a directory of its own (mode
//! 0700, so no other user can reach it), given to every worker as
//! `NOTIFY_SOCKET`. Every datagram carries its sender's credentials
//! (`SO_PASSCRED`), and the sender's pid says whose it is: a message is a
//! worker's if it comes from the worker or any process of its tree (the
//! tree hangs from the worker's shim). The hub's thread reads the
//! datagrams, parses them (`READY=1`, `STATUS=…`, `STOPPING=1`,
//! `WATCHDOG=1`, `WATCHDOG=trigger`, `EXTEND_TIMEOUT_USEC=…`), and hands
//! [`Notice`]s to the slot that [registered](NotifyHub::register) that
//! tree. A datagram from anyone else, or one that says nothing it knows,
//! is ignored and counted (`corral_worker_notify_ignored_total`).
//!
//! The thread does the `/proc` reads a sender's ancestry takes, so no
//! async thread ever does.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use prometheus::IntCounter;
use tokio::sync::mpsc;

/// Longest `STATUS=` text kept; the rest is cut.
pub const MAX_STATUS: usize = 256;

/// Notices queued per worker; past it the oldest news is lost (a worker
/// spamming its socket cannot grow corral).
const QUEUED_PER_WORKER: usize = 64;

/// Ancestors looked at to find a sender's worker.
const MAX_DEPTH: usize = 32;

/// What a worker said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `READY=1`: start-up is done.
    Ready,
    /// `STATUS=…`: what it is doing (cut, control characters escaped).
    Status(String),
    /// `STOPPING=1`: it is shutting down.
    Stopping,
    /// `WATCHDOG=1`: it is alive.
    Watchdog,
    /// `WATCHDOG=trigger`: it asks to be treated as hung.
    WatchdogTrigger,
    /// `EXTEND_TIMEOUT_USEC=…`: its start-up needs this much longer.
    ExtendTimeout(Duration),
    /// Another well-formed line of the protocol (`RELOADING=1`,
    /// `MAINPID=…`, …): understood, and nothing for corral to do.
    Other,
}

/// The registered worker trees: shim pid to the slot's queue.
struct Trees {
    queues: HashMap<u32, mpsc::Sender<Notice>>,
    /// Senders already traced to a tree (pid to shim pid).
    known: HashMap<u32, u32>,
    /// Messages no registered tree claimed yet, with the sender's
    /// ancestry: a worker may speak before its slot has registered its
    /// tree (the slot learns the shim's pid only once it runs).
    unclaimed: std::collections::VecDeque<Unclaimed>,
}

struct Unclaimed {
    at: std::time::Instant,
    ancestry: Vec<u32>,
    notices: Vec<Notice>,
}

/// How long, and how many, unclaimed messages are kept.
const UNCLAIMED_FOR: Duration = Duration::from_secs(5);
const MAX_UNCLAIMED: usize = 256;

struct HubState {
    trees: Mutex<Trees>,
    ignored: IntCounter,
}

impl HubState {
    fn trees(&self) -> MutexGuard<'_, Trees> {
        self.trees.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The notify socket and the thread that reads it.
pub struct NotifyHub {
    dir: PathBuf,
    path: PathBuf,
    /// The socket's descriptor (the thread owns the socket for the life
    /// of the process): what `corral upgrade` hands over.
    fd: RawFd,
    state: Arc<HubState>,
}

/// The notify socket as `corral upgrade` hands it over: the workers keep
/// its path in `NOTIFY_SOCKET`, so the next image reads the same socket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HandedHub {
    pub fd: RawFd,
    pub dir: PathBuf,
    pub path: PathBuf,
}

/// A worker tree's notices, for as long as the registration lives.
pub struct Registration {
    pub notices: mpsc::Receiver<Notice>,
    shim: u32,
    state: Arc<HubState>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut trees = self.state.trees();
        trees.queues.remove(&self.shim);
        let shim = self.shim;
        trees.known.retain(|_, root| *root != shim);
    }
}

impl NotifyHub {
    /// Binds the socket in a fresh private directory (under
    /// `$XDG_RUNTIME_DIR`, else the temporary directory) and starts the
    /// thread that reads it.
    pub fn start(ignored: IntCounter) -> io::Result<NotifyHub> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!("corral-{}-{nanos:08x}", std::process::id()));
        remove_stale(&base);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path)?;
        setsockopt(&socket, sockopt::PassCred, &true).map_err(io::Error::from)?;
        NotifyHub::serve(socket, dir, path, ignored)
    }

    /// Reads the socket an earlier image of corral bound (`corral
    /// upgrade`; `fd` is this image's own duplicate of it).
    pub fn adopt(fd: OwnedFd, handed: &HandedHub, ignored: IntCounter) -> io::Result<NotifyHub> {
        let socket = UnixDatagram::from(fd);
        socket.set_nonblocking(false)?;
        NotifyHub::serve(socket, handed.dir.clone(), handed.path.clone(), ignored)
    }

    /// What `corral upgrade` hands over.
    pub fn handed(&self) -> HandedHub {
        HandedHub {
            fd: self.fd,
            dir: self.dir.clone(),
            path: self.path.clone(),
        }
    }

    /// Starts the thread that reads `socket`.
    fn serve(
        socket: UnixDatagram,
        dir: PathBuf,
        path: PathBuf,
        ignored: IntCounter,
    ) -> io::Result<NotifyHub> {
        let fd = socket.as_raw_fd();
        let state = Arc::new(HubState {
            trees: Mutex::new(Trees {
                queues: HashMap::new(),
                known: HashMap::new(),
                unclaimed: std::collections::VecDeque::new(),
            }),
            ignored,
        });
        let reader = Arc::clone(&state);
        std::thread::Builder::new()
            .name("corral-notify".into())
            .spawn(move || read_forever(&socket, &reader))?;
        Ok(NotifyHub {
            dir,
            path,
            fd,
            state,
        })
    }

    /// The socket's path: each worker's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// From now on, messages from the tree under `shim` are queued here.
    pub fn register(&self, shim: u32) -> Registration {
        let (tell, notices) = mpsc::channel(QUEUED_PER_WORKER);
        let mut trees = self.state.trees();
        // What the tree said before this registration, in order.
        let mut kept = std::collections::VecDeque::new();
        for message in trees.unclaimed.drain(..) {
            if message.ancestry.contains(&shim) {
                for notice in message.notices {
                    let _ = tell.try_send(notice);
                }
            } else {
                kept.push_back(message);
            }
        }
        trees.unclaimed = kept;
        trees.queues.insert(shim, tell);
        drop(trees);
        Registration {
            notices,
            shim,
            state: Arc::clone(&self.state),
        }
    }
}

/// The hub, started the first time a worker with `workers.notify` needs
/// it (at start, or after a reload turned `notify` on).
pub struct Notifier {
    hub: std::sync::OnceLock<Option<NotifyHub>>,
    ignored: IntCounter,
}

impl Notifier {
    pub fn new(ignored: IntCounter) -> Notifier {
        Notifier {
            hub: std::sync::OnceLock::new(),
            ignored,
        }
    }

    /// The hub an earlier image handed over (`corral upgrade`), before any
    /// slot asks for one. False if a hub was already there.
    pub fn adopt(&self, hub: NotifyHub) -> bool {
        self.hub.set(Some(hub)).is_ok()
    }

    /// What `corral upgrade` hands over: the hub, if it was started.
    pub fn handed(&self) -> Option<HandedHub> {
        self.hub.get()?.as_ref().map(NotifyHub::handed)
    }

    /// The hub, started now if it was not; `None` (logged once) if its
    /// socket could not be made.
    pub fn hub(&self) -> Option<&NotifyHub> {
        self.hub
            .get_or_init(|| match NotifyHub::start(self.ignored.clone()) {
                Ok(hub) => {
                    tracing::info!(socket = %hub.path().display(), "workers' notify socket ready");
                    Some(hub)
                }
                Err(error) => {
                    tracing::error!(%error, "cannot create the workers' notify socket (workers.notify): no worker can become ready");
                    None
                }
            })
            .as_ref()
    }
}

impl Drop for NotifyHub {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes what corrals killed before they could clean up left in `base`
/// (`corral-<pid>-…` directories whose process is gone).
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("corral-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let gone = !Path::new(&format!("/proc/{pid}")).exists();
        let ours = entry.path().join("notify").exists();
        if gone && ours {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The hub's thread: one datagram at a time, for the life of the process.
fn read_forever(socket: &UnixDatagram, state: &HubState) {
    let mut buffer = vec![0u8; 4096];
    loop {
        let mut space = nix::cmsg_space!(libc::ucred);
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let (length, sender, truncated) = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => {
                let sender = message.cmsgs().ok().and_then(|mut all| {
                    all.find_map(|c| match c {
                        ControlMessageOwned::ScmCredentials(who) => Some(who.pid() as u32),
                        _ => None,
                    })
                });
                let truncated = message.flags.contains(MsgFlags::MSG_TRUNC);
                (message.bytes, sender, truncated)
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => {
                tracing::warn!(%error, "reading the workers' notify socket failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let notices = if truncated {
            Vec::new()
        } else {
            parse(&buffer[..length])
        };
        let Some(sender) = sender.filter(|_| !notices.is_empty()) else {
            state.ignored.inc();
            continue;
        };
        match owner(state, sender) {
            Ok(queue) => {
                for notice in notices {
                    // A full queue: the slot is behind; the news is lost.
                    let _ = queue.try_send(notice);
                }
            }
            Err(ancestry) => keep_unclaimed(state, ancestry, notices),
        }
    }
}

/// Keeps a message nobody claimed for a while, in case its tree is about
/// to be registered; what ages out unclaimed was from a stranger.
fn keep_unclaimed(state: &HubState, ancestry: Vec<u32>, notices: Vec<Notice>) {
    let mut trees = state.trees();
    let now = std::time::Instant::now();
    while trees
        .unclaimed
        .front()
        .is_some_and(|m| now.duration_since(m.at) > UNCLAIMED_FOR)
        || trees.unclaimed.len() >= MAX_UNCLAIMED
    {
        trees.unclaimed.pop_front();
        state.ignored.inc();
    }
    // Every worker tree hangs from corral: anything else is a stranger.
    if !ancestry.contains(&std::process::id()) {
        state.ignored.inc();
        return;
    }
    trees.unclaimed.push_back(Unclaimed {
        at: now,
        ancestry,
        notices,
    });
}

/// The queue of the worker tree `pid` belongs to, or, when no registered
/// tree holds it, the sender's ancestry (`pid` and its ancestors).
fn owner(state: &HubState, pid: u32) -> Result<mpsc::Sender<Notice>, Vec<u32>> {
    {
        let trees = state.trees();
        let root = trees.known.get(&pid).copied().unwrap_or(pid);
        if let Some(queue) = trees.queues.get(&root) {
            return Ok(queue.clone());
        }
    }
    // Walk up the sender's ancestry (outside the lock: it reads /proc).
    let mut ancestry = vec![pid];
    let mut current = pid;
    while ancestry.len() < MAX_DEPTH {
        let Some(parent) = crate::sampler::proc::parent_of(current).filter(|&p| p > 1) else {
            break;
        };
        let mut trees = state.trees();
        if let Some(queue) = trees.queues.get(&parent).cloned() {
            trees.known.insert(pid, parent);
            return Ok(queue);
        }
        drop(trees);
        ancestry.push(parent);
        current = parent;
    }
    Err(ancestry)
}

/// The notices in one datagram: newline-separated `KEY=VALUE` lines;
/// unknown keys are skipped, as systemd does.
pub fn parse(datagram: &[u8]) -> Vec<Notice> {
    let Ok(text) = std::str::from_utf8(datagram) else {
        return Vec::new();
    };
    text.split('\n')
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            match (key, value) {
                ("READY", "1") => Some(Notice::Ready),
                ("STOPPING", "1") => Some(Notice::Stopping),
                ("WATCHDOG", "1") => Some(Notice::Watchdog),
                ("WATCHDOG", "trigger") => Some(Notice::WatchdogTrigger),
                ("STATUS", text) => Some(Notice::Status(printable(text))),
                ("EXTEND_TIMEOUT_USEC", usec) => usec
                    .trim()
                    .parse()
                    .ok()
                    .map(|usec| Notice::ExtendTimeout(Duration::from_micros(usec))),
                (key, _)
                    if !key.is_empty()
                        && key.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') =>
                {
                    Some(Notice::Other)
                }
                _ => None,
            }
        })
        .collect()
}

/// A status text safe to show anywhere: at most [`MAX_STATUS`] bytes,
/// control and bidirectional-override characters escaped.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_STATUS));
    for c in text.chars() {
        let piece: String = if c.is_control() || is_bidi_control(c) {
            c.escape_unicode().to_string()
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > MAX_STATUS {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// Characters that reorder or break the text around them on a terminal.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_lines_are_read() {
        assert_eq!(
            parse(b"READY=1\nSTATUS=warming caches\nMAINPID=1\n"),
            vec![
                Notice::Ready,
                Notice::Status("warming caches".into()),
                Notice::Other
            ]
        );
        assert_eq!(
            parse(b"WATCHDOG=1"),
            vec![Notice::Watchdog],
            "no trailing newline"
        );
        assert_eq!(parse(b"WATCHDOG=trigger"), vec![Notice::WatchdogTrigger]);
        assert_eq!(
            parse(b"EXTEND_TIMEOUT_USEC=5000000"),
            vec![Notice::ExtendTimeout(Duration::from_secs(5))]
        );
        assert_eq!(
            parse(b"READY=0"),
            vec![Notice::Other],
            "well-formed, no use"
        );
        assert_eq!(parse(b"nonsense\nlower=1\n=1"), vec![]);
        assert_eq!(parse(&[0xff, 0xfe]), vec![]);
    }

    #[test]
    fn status_text_is_bounded_and_escaped() {
        let Notice::Status(text) = &parse(b"STATUS=a\x1b[2J\xe2\x80\xaeb")[0] else {
            panic!("no status");
        };
        assert_eq!(text, "a\\u{1b}[2J\\u{202e}b");
        let long = format!("STATUS={}", "x".repeat(1000));
        let Notice::Status(text) = &parse(long.as_bytes())[0] else {
            panic!("no status");
        };
        assert!(text.len() <= MAX_STATUS + '…'.len_utf8());
    }

    #[tokio::test]
    async fn a_message_reaches_the_tree_it_came_from_and_others_are_counted() {
        let ignored = IntCounter::new("ignored", "test").unwrap();
        let hub = NotifyHub::start(ignored.clone()).unwrap();
        // This test process stands for a worker's shim; a child it starts
        // (a grandchild would do too) sends the message.
        let mut registration = hub.register(std::process::id());
        // The sender stays alive until its message is heard: the hub
        // traces a sender through /proc, and one already gone and reaped
        // (on a loaded machine the hub's thread may come late) is no one's.
        let mut sender = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'READY=1\\nSTATUS=up', sys.argv[1]); time.sleep(30)",
            ])
            .arg(hub.path())
            .spawn()
            .unwrap();
        let first =
            tokio::time::timeout(Duration::from_secs(20), registration.notices.recv()).await;
        let _ = sender.kill();
        let _ = sender.wait();
        assert_eq!(first.unwrap(), Some(Notice::Ready));
        assert_eq!(
            registration.notices.recv().await,
            Some(Notice::Status("up".into()))
        );
        drop(registration);
        // A tree registered after it spoke still hears what it said.
        let mut sender = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'STOPPING=1', sys.argv[1]); time.sleep(30)",
            ])
            .arg(hub.path())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let mut late = hub.register(std::process::id());
        let heard = tokio::time::timeout(Duration::from_secs(20), late.notices.recv()).await;
        let _ = sender.kill();
        let _ = sender.wait();
        assert_eq!(heard.unwrap(), Some(Notice::Stopping));
        drop(late);
        // Something that is no message at all: ignored and counted.
        let sent = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'HELLO', sys.argv[1])",
            ])
            .arg(hub.path())
            .status()
            .unwrap();
        assert!(sent.success());
        for _ in 0..100 {
            if ignored.get() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(ignored.get(), 1);
    }
}
