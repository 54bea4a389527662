//! The handed front end's mechanism (`workers.listen = "fd"`; the front
//! end itself is [`crate::front::Handed`], which owns the [`Steering`]):
//! the kernel places clients, corral steers it.
//!
//! [`Steering`] owns the front end's SO_REUSEPORT group: one listening
//! socket per worker slot, bound before anything starts and kept for the
//! slot's whole life (every process of slot i gets socket i as fd 3), and
//! the classic BPF program attached to the group ([`program`]). Socket i is
//! index i of the group, because sockets are only ever added at the end
//! (scale-up) and closed from the end (scale-down): closing another one
//! would move the last socket into its index.
//!
//! [`run`] decides, every [`TICK`] and at once when a worker becomes ready
//! ([`Steering::nudge`]), which slots are in rotation from the pool's
//! states, regenerates the program when that set changes, and hands
//! the clients queued on a slot that was steered around to [`rescue`].
//! [`watch_intruders`] looks for other processes listening on the front end
//! ([`intruders`]): they are logged with their pid and shown in `/status`,
//! and while one is there no slot is added (its socket would take a place
//! in the group after the intruder's).

pub mod intruders;
pub mod program;
mod rescue;
pub mod table;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tokio_util::sync::WaitForCancellationFuture;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::pool::Snapshot;
use crate::pool::{BackendState, DownReason, Kind};
use crate::strategy::HandedPlacement;
pub use program::{probe_source, Rule};
pub use rescue::Relay;

/// How often the rotation is recomputed and steered-around queues emptied.
const TICK: Duration = Duration::from_millis(50);

/// How long a crashed or starting slot stays in rotation: its clients wait
/// in its socket for the replacement. Past it they are served elsewhere.
pub const GRACE: Duration = Duration::from_secs(1);

/// What steering needs from the process around it, implemented by the
/// shared state ([`crate::shared`]): steering depends on this, not on it.
pub trait Host: Send + Sync + 'static {
    /// The config and pool in force.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// Resolves once the front end stops accepting (graceful stop).
    fn accepting_stopped(&self) -> WaitForCancellationFuture<'_>;
    /// The open connections the graceful stop waits for (rescued clients'
    /// relays join them).
    fn connections(&self) -> &TaskTracker;
    /// The last passes over `/proc` (who holds an intruder's socket).
    fn sampler(&self) -> &crate::sampler::Sampler;
    /// Counts one client taken off a slot out of rotation.
    fn count_rescued(&self);
    /// Serves a rescued client through `relay` as any proxied connection
    /// is served (timeouts, close reason, log line, metrics).
    fn serve_rescued(
        self: Arc<Self>,
        client: tokio::net::TcpStream,
        peer: SocketAddr,
        relay: rescue::Relay,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

/// The group of slot sockets on one front-end address, and its program.
pub struct Steering {
    /// The bound address (its port resolved when the config said 0).
    addr: SocketAddr,
    backlog: u32,
    group: Mutex<Group>,
    /// Other processes' listening sockets on the front end, as last seen.
    intruders: Mutex<Vec<intruders::Intruder>>,
    /// Wakes [`run`] before its next tick: a worker just became ready.
    nudged: tokio::sync::Notify,
}

struct Group {
    /// Socket i is slot i's, and index i of the kernel's group.
    sockets: Vec<Arc<Socket>>,
    /// What the attached program does.
    attached: Option<(Rule, Vec<usize>)>,
    /// The socket filter every slot socket carries (`clients.allow` and
    /// `deny`), when there is one.
    access: Option<program::Program>,
}

impl Steering {
    /// Binds `count` slot sockets on `addr` and attaches a program that
    /// places clients by `rule` over all of them. Each socket carries the
    /// access filter of `clients` (allow, deny) before it listens.
    pub fn bind(
        addr: SocketAddr,
        backlog: u32,
        count: usize,
        rule: Rule,
        clients: &crate::config::ClientsConfig,
    ) -> io::Result<Steering> {
        // Nobody else may hold the port: with SO_REUSEPORT we would join
        // another process's group silently.
        // (SO_REUSEADDR: connections of a previous run in TIME_WAIT on the
        // port do not count; a listener does.)
        let check = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        check.set_reuse_address(true)?;
        check.bind(&addr.into())?;
        let addr = check
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("the front end is not an IP address"))?;
        drop(check);
        let steering = Steering {
            addr,
            backlog,
            group: Mutex::new(Group {
                sockets: Vec::new(),
                attached: None,
                access: program::access_filter(&clients.allow, &clients.deny),
            }),
            intruders: Mutex::new(Vec::new()),
            nudged: tokio::sync::Notify::new(),
        };
        steering.grow_to(count)?;
        steering.steer(rule, (0..count).collect())?;
        Ok(steering)
    }

    /// The slot sockets an earlier image of corral bound (`corral
    /// upgrade`), in slot order: the kernel's group and its program are
    /// theirs and stay as they are; [`run`] attaches this image's program
    /// at its first tick (the same one while the rotation is the same).
    pub fn adopt(
        sockets: Vec<Socket>,
        backlog: u32,
        clients: &crate::config::ClientsConfig,
    ) -> io::Result<Steering> {
        let addr = sockets
            .first()
            .ok_or_else(|| io::Error::other("no slot socket was handed over"))?
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("the front end is not an IP address"))?;
        Ok(Steering {
            addr,
            backlog,
            group: Mutex::new(Group {
                sockets: sockets.into_iter().map(Arc::new).collect(),
                attached: None,
                access: program::access_filter(&clients.allow, &clients.deny),
            }),
            intruders: Mutex::new(Vec::new()),
            nudged: tokio::sync::Notify::new(),
        })
    }

    /// The slot sockets' descriptors, in slot order (what `corral
    /// upgrade` hands over).
    pub fn slot_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.group().sockets.iter().map(|s| s.as_raw_fd()).collect()
    }

    /// A worker just became ready: [`run`] puts it in rotation now rather
    /// than at its next tick, so a worker `/status` shows up is in the
    /// program too.
    pub fn nudge(&self) {
        self.nudged.notify_one();
    }

    /// The front-end address the slots listen on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where corral connects to reach the group (probes, rescued clients).
    pub fn target(&self) -> SocketAddr {
        if self.addr.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.addr.port())
        } else {
            self.addr
        }
    }

    /// Slot `slot`'s socket, to hand to its processes.
    pub fn socket(&self, slot: usize) -> Option<Arc<Socket>> {
        self.group().sockets.get(slot).cloned()
    }

    /// Slots that have a socket.
    pub fn slots(&self) -> usize {
        self.group().sockets.len()
    }

    /// Adds sockets for slots up to `count` (scale-up). Refused while
    /// another process listens on the front end: a new socket would join
    /// the group after the intruder's, and the program would steer the new
    /// slot's clients to the intruder.
    pub fn grow_to(&self, count: usize) -> io::Result<()> {
        let mut group = self.group();
        if group.sockets.len() < count {
            let intruders = self.intruders();
            if !intruders.is_empty() {
                let named: Vec<String> = intruders.iter().map(|i| i.to_string()).collect();
                return Err(io::Error::other(format!(
                    "another process listens on the front end ({}): no worker slot is added while it is there, or its clients would go to that process",
                    named.join(", ")
                )));
            }
        }
        while group.sockets.len() < count {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            // Accepted sockets inherit it: servers that take the socket as
            // it is (uvicorn --fd 3) answer small writes without Nagle's
            // 40 ms delay, as through the port-mode proxy.
            socket.set_tcp_nodelay(true)?;
            socket.bind(&self.addr.into())?;
            // The access filter is on before the socket listens: no
            // denied client reaches its queue.
            if let Some(access) = &group.access {
                access.attach_filter(&socket)?;
            }
            socket.listen(self.backlog as i32)?;
            group.sockets.push(Arc::new(socket));
        }
        Ok(())
    }

    /// Closes the sockets of slots `count..`, the highest first (scale-down,
    /// after their workers stopped). Clients still queued on them are lost:
    /// the caller steers around and empties them first. A socket leaves the
    /// kernel's group at once, even if a stray process still holds it.
    pub fn shrink_to(&self, count: usize) {
        let mut group = self.group();
        while group.sockets.len() > count {
            if let Some(socket) = group.sockets.pop() {
                let _ = socket.shutdown(std::net::Shutdown::Read);
            }
        }
    }

    /// Stops the front end (graceful stop): a filter on every slot socket
    /// drops new clients' SYNs, so nobody new queues for workers that are
    /// stopping, while the sockets stay listening: the clients already
    /// queued are still accepted, and the workers' own `accept` keeps
    /// working until they close it themselves. Connections the workers
    /// accepted are not touched.
    pub fn stop_listening(&self) {
        for socket in &self.group().sockets {
            if let Err(error) = program::drop_new_clients(socket.as_ref()) {
                tracing::warn!(%error, "cannot filter new clients off a slot socket; shutting it down instead");
                let _ = socket.shutdown(std::net::Shutdown::Read);
            }
        }
    }

    /// Closes the front end once every worker has stopped: each slot socket
    /// leaves the kernel's group, which also ends a rescue blocked in
    /// `accept` on it.
    pub fn close(&self) {
        for socket in &self.group().sockets {
            let _ = socket.shutdown(std::net::Shutdown::Read);
        }
    }

    /// Attaches a program that places clients by `rule` over `slots`,
    /// unless the attached one already does. True when it changed.
    pub fn steer(&self, rule: Rule, slots: Vec<usize>) -> io::Result<bool> {
        let mut group = self.group();
        let wanted = (rule, slots);
        if group.attached.as_ref() == Some(&wanted) || wanted.1.is_empty() {
            return Ok(false);
        }
        let Some(first) = group.sockets.first() else {
            return Ok(false);
        };
        program::Program::new(&wanted.0, &wanted.1).attach(first.as_ref())?;
        group.attached = Some(wanted);
        Ok(true)
    }

    /// Enforces `clients.allow` and `clients.deny` in the kernel on every
    /// slot socket, now and for slots added later (start and reload).
    pub fn set_access(&self, clients: &crate::config::ClientsConfig) -> io::Result<()> {
        let mut group = self.group();
        let access = program::access_filter(&clients.allow, &clients.deny);
        for socket in &group.sockets {
            match &access {
                Some(filter) => filter.attach_filter(socket.as_ref())?,
                None => program::detach_filter(socket.as_ref())?,
            }
        }
        group.access = access;
        Ok(())
    }

    /// Clients waiting in slot `slot`'s accept queue (TCP_INFO on a
    /// listening socket reports the queue's length as `tcpi_unacked`).
    pub fn queue_length(&self, slot: usize) -> Option<u32> {
        let socket = self.socket(slot)?;
        // SAFETY: tcp_info is plain data; getsockopt writes at most `len`
        // bytes into it.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let done = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        (done == 0).then_some(info.tcpi_unacked)
    }

    /// The inodes of corral's slot sockets.
    pub fn own_inodes(&self) -> std::collections::HashSet<u64> {
        self.group()
            .sockets
            .iter()
            .filter_map(|s| intruders::inode_of(s.as_ref()))
            .collect()
    }

    /// Other processes listening on the front end, as last seen.
    pub fn intruders(&self) -> Vec<intruders::Intruder> {
        self.intruders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn group(&self) -> MutexGuard<'_, Group> {
        self.group
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Waits long enough for [`run`] to have acted on a change of the pool
/// (steered around a slot and emptied its queue).
pub async fn settle() {
    tokio::time::sleep(TICK * 3).await;
}

/// The placement rule a config asks for.
/// An error for a strategy handed mode cannot do (validation refuses those).
pub fn rule_of(config: &Config) -> io::Result<Rule> {
    match config.strategy.handed_placement() {
        Some(HandedPlacement::ByClient) => Ok(Rule::Sticky {
            prefix: config.sticky.ipv4_prefix,
        }),
        Some(HandedPlacement::Spread) => Ok(Rule::Spread),
        None => Err(io::Error::other(format!(
            "balance.strategy = \"{}\" cannot work with workers.listen = \"fd\"",
            config.strategy
        ))),
    }
}

/// How often [`watch_intruders`] looks.
const INTRUDER_CHECK: Duration = Duration::from_secs(2);

/// Looks for other processes listening on the front end every
/// [`INTRUDER_CHECK`] until the front end stops; logs each one that comes
/// (with its pid) and goes.
pub async fn watch_intruders<H: Host>(host: Arc<H>, steering: Arc<Steering>) {
    let mut tick = tokio::time::interval(INTRUDER_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = host.accepting_stopped() => return,
        }
        let looking = Arc::clone(&steering);
        let found = tokio::task::spawn_blocking(move || {
            intruders::find(looking.addr(), &looking.own_inodes())
        })
        .await;
        let mut found = match found {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                if !failed {
                    tracing::warn!(%error, "cannot list the front end's listening sockets (sock_diag); intruders go unseen");
                    failed = true;
                }
                continue;
            }
            Err(_) => continue,
        };
        if !found.is_empty() {
            let inodes: Vec<u64> = found.iter().map(|i| i.inode).collect();
            intruders::name(&mut found, &*host.sampler().holders_of(&inodes).await);
        }
        let mut known = steering
            .intruders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for intruder in found
            .iter()
            .filter(|i| !known.iter().any(|k| k.inode == i.inode))
        {
            tracing::warn!(
                pid = intruder.pid,
                front = %steering.addr(),
                "another process listens on the front end: {intruder}; it gets no worker slot's clients, and no slot is added while it is there"
            );
        }
        for gone in known
            .iter()
            .filter(|k| !found.iter().any(|i| i.inode == k.inode))
        {
            tracing::info!(
                pid = gone.pid,
                "the other process on the front end is gone: {gone}"
            );
        }
        *known = found;
    }
}

/// What [`run`] remembers of a slot between ticks.
#[derive(Default)]
struct Watch {
    /// Its worker has been up since the slot was created.
    was_up: bool,
    /// When it was last seen leave `up`.
    down_since: Option<Instant>,
}

/// Keeps the program in line with the pool until the front end stops.
pub async fn run<H: Host>(host: Arc<H>, steering: Arc<Steering>) {
    let mut watches: HashMap<usize, Watch> = HashMap::new();
    let mut rescues = rescue::Rescues::default();
    let mut attach_error: Option<String> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = steering.nudged.notified() => {}
            _ = host.accepting_stopped() => return,
        }
        let snapshot = host.snapshot();
        let now = Instant::now();
        let mut serving = Vec::new();
        let mut any_up = false;
        let slots = steering.slots();
        let mut seen = Vec::new();
        for backend in snapshot.pool.worker_backends() {
            let Kind::Worker(slot) = backend.kind else {
                continue;
            };
            if slot >= slots {
                continue;
            }
            seen.push(slot);
            let state = backend.state();
            let watch = watches.entry(slot).or_default();
            if state == BackendState::Up {
                any_up = true;
                watch.was_up = true;
                watch.down_since = None;
            } else {
                watch.down_since.get_or_insert(now);
            }
            let down_for = watch.down_since.map(|since| now - since);
            if stays_in_rotation(state, down_for, watch.was_up) {
                serving.push(slot);
            }
        }
        // A retired slot's history must not follow a new one with its id.
        watches.retain(|slot, _| seen.contains(slot));
        if serving.is_empty() {
            // Nowhere better to send them: clients wait in the queues.
            serving = (0..slots).collect();
        }
        let rule = match rule_of(&snapshot.config) {
            Ok(rule) => rule,
            Err(error) => {
                let said = error.to_string();
                if attach_error.as_ref() != Some(&said) {
                    tracing::error!(%error, "no steering program for this strategy; the previous one stays");
                    attach_error = Some(said);
                }
                continue;
            }
        };
        match steering.steer(rule.clone(), serving.clone()) {
            Ok(true) => {
                attach_error = None;
                tracing::info!(workers = ?serving, "steering: workers in rotation");
            }
            Ok(false) => {}
            Err(error) => {
                let said = error.to_string();
                if attach_error.as_ref() != Some(&said) {
                    tracing::error!(%error, "cannot attach the steering program; the previous one stays");
                    attach_error = Some(said);
                }
            }
        }
        rescues.tend(&steering);
        if any_up {
            for slot in (0..slots).filter(|s| !serving.contains(s)) {
                rescues.take_queued(&host, &steering, slot, &rule, &serving);
            }
        }
    }
}

/// Does a slot in `state` stay in rotation? A slot whose worker is up
/// does. One whose worker was up and crashed, or is being restarted, does
/// for [`GRACE`]: its clients wait in its socket for the replacement. A new
/// slot whose first worker is still starting does not (it gets clients
/// once it is up), nor does one whose worker runs but does not take
/// connections or fails its checks, nor one that is draining or stopped.
fn stays_in_rotation(state: BackendState, down_for: Option<Duration>, was_up: bool) -> bool {
    let within_grace = was_up && down_for.is_none_or(|d| d < GRACE);
    match state {
        BackendState::Up => true,
        BackendState::Starting => within_grace,
        BackendState::Down(DownReason::Crashed | DownReason::NotReady) => within_grace,
        BackendState::Down(_) => false,
        BackendState::Draining | BackendState::Stopped | BackendState::Disabled => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crashed_slot_keeps_its_clients_for_the_grace_only() {
        let crashed = BackendState::Down(DownReason::Crashed);
        let soon = Some(Duration::from_millis(200));
        assert!(stays_in_rotation(crashed, soon, true));
        assert!(!stays_in_rotation(crashed, Some(GRACE), true));
        assert!(stays_in_rotation(BackendState::Starting, soon, true));
        assert!(!stays_in_rotation(
            BackendState::Starting,
            Some(GRACE * 2),
            true
        ));
    }

    #[test]
    fn a_new_slot_gets_clients_once_its_worker_is_up() {
        let now = Some(Duration::ZERO);
        assert!(!stays_in_rotation(BackendState::Starting, now, false));
        assert!(stays_in_rotation(BackendState::Up, None, false));
    }

    #[test]
    fn a_stalled_or_retiring_slot_leaves_at_once() {
        let now = Some(Duration::ZERO);
        let stalled = BackendState::Down(DownReason::Stalled);
        assert!(!stays_in_rotation(stalled, now, true));
        assert!(!stays_in_rotation(
            BackendState::Down(DownReason::Checks),
            now,
            true
        ));
        assert!(!stays_in_rotation(BackendState::Draining, now, true));
    }

    #[test]
    fn slots_are_the_groups_indexes_as_it_grows_and_shrinks() {
        let clients = crate::config::Config::embedded().clients;
        let steering = Steering::bind(
            "127.0.0.1:0".parse().unwrap(),
            64,
            2,
            Rule::Spread,
            &clients,
        )
        .unwrap();
        steering.grow_to(4).unwrap();
        steering.shrink_to(3);
        for slot in 0..3 {
            steering.steer(Rule::Spread, vec![slot]).unwrap();
            let client = std::net::TcpStream::connect(steering.target()).unwrap();
            let queued: Vec<u32> = (0..3).map(|s| steering.queue_length(s).unwrap()).collect();
            let mut expected = vec![0, 0, 0];
            expected[slot] = 1;
            assert_eq!(queued, expected);
            let socket = steering.socket(slot).unwrap();
            socket.accept().unwrap();
            drop(client);
        }
    }
}
