//! One backend: its name, the process (or static address) new connections
//! go to (an [`Instance`], reached as its [`Reach`] says), its counters,
//! and its lifecycle and health as one state machine.
//!
//! The machine's representation is private. The supervisor, the health
//! checks and the data path ask for named transitions (`starting`,
//! `ready`, `crashed`, `check_failed`, `first_byte_timed_out`, `stalled`,
//! `draining`, `stopped`, ...); nothing else writes it. Others read the
//! [`BackendState`] it shows ([`Backend::state`]); the hot path reads one
//! atomic, [`Backend::is_up`], which every transition republishes.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::metrics::{BackendMetrics, Metrics};
use crate::reach::Reach;

/// A backend's state as the world sees it: the `state` of `/status`,
/// what steering and the operator commands read. Derived from the private
/// [`ProcessPhase`] with the health checks' verdict and the operator's
/// disable; never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendState {
    /// A worker that was spawned and does not accept connections yet.
    Starting,
    /// In rotation.
    Up,
    /// Out of rotation, for this reason.
    Down(DownReason),
    /// Finishing its open connections before it stops; no new ones.
    Draining,
    /// Stopped on purpose (shutdown or scale-down).
    Stopped,
    /// Taken out of rotation by the operator (`corral disable`); its
    /// process keeps running and its checks go on.
    Disabled,
}

impl BackendState {
    /// Why the backend is down, when it is.
    pub(crate) fn reason(self) -> Option<DownReason> {
        match self {
            BackendState::Down(reason) => Some(reason),
            BackendState::Starting
            | BackendState::Up
            | BackendState::Draining
            | BackendState::Stopped
            | BackendState::Disabled => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BackendState::Starting => "starting",
            BackendState::Up => "up",
            BackendState::Down(_) => "down",
            BackendState::Draining => "draining",
            BackendState::Stopped => "stopped",
            BackendState::Disabled => "disabled",
        }
    }
}

/// Why a backend is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DownReason {
    /// Its process exited; a restart is scheduled.
    Crashed,
    /// Its process did not start, or did not accept connections within
    /// `workers.ready_timeout`.
    NotReady,
    /// It failed `health.fall` active checks in a row.
    Checks,
    /// The proxy could not connect to it.
    ConnectFailed,
    /// It was sent clients' bytes and answered nothing within
    /// `timeouts.first_byte`, `health.fall` times in a row.
    Timeouts,
    /// Its process stopped taking connections from its accept queue.
    Stalled,
    /// It said `STOPPING=1` on its notify socket.
    Stopping,
    /// It sent no `WATCHDOG=1` within `workers.watchdog` (or asked with
    /// `WATCHDOG=trigger`); it is being replaced.
    Watchdog,
    /// A handed worker (`workers.listen = "fd"`): its process listens on a port of its own and accepts
    /// nothing from the socket it was handed.
    ListensElsewhere,
}

impl DownReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DownReason::Crashed => "crashed",
            DownReason::NotReady => "not_ready",
            DownReason::Checks => "checks",
            DownReason::ConnectFailed => "connect_failed",
            DownReason::Timeouts => "timeouts",
            DownReason::Stalled => "stalled",
            DownReason::Stopping => "stopping",
            DownReason::Watchdog => "watchdog",
            DownReason::ListensElsewhere => "listens_elsewhere",
        }
    }
}

/// What a backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Worker slot `id`, a process corral spawns.
    Worker(usize),
    /// A `[[backends]]` entry.
    Static,
}

/// One process (or static address) behind a backend. A worker slot gets a
/// new instance on every restart; connections hold the instance they were
/// opened to, so a rolling restart can wait for the old one to drain.
#[derive(Debug)]
pub struct Instance {
    /// How corral reaches it: its own address, or (a handed worker)
    /// through the front end.
    pub(crate) reach: Reach,
    pub(crate) pid: Option<u32>,
    /// The root of the process tree its CPU and memory are counted over
    /// (the worker's shim), when it differs from `pid`.
    pub(crate) tree_root: Option<u32>,
    /// When the process was started (for `uptime_seconds`).
    pub(crate) started: Instant,
    active: AtomicUsize,
    /// Woken whenever a connection to this instance closes.
    closed: tokio::sync::Notify,
    /// corral is stopping this process (replaced, scaled away, shut
    /// down): stateless connections leave it between requests, and what
    /// it leaves unanswered is sent again elsewhere.
    retired: AtomicBool,
}

impl Instance {
    /// An instance reached by `reach`, whose process (if any) is `pid` and
    /// whose process tree hangs from `tree_root`.
    pub(crate) fn new(reach: Reach, pid: Option<u32>, tree_root: Option<u32>) -> Arc<Instance> {
        Arc::new(Instance {
            reach,
            pid,
            tree_root,
            started: Instant::now(),
            active: AtomicUsize::new(0),
            closed: tokio::sync::Notify::new(),
            retired: AtomicBool::new(false),
        })
    }

    /// corral is about to stop this process.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// True once corral started stopping this process.
    #[inline]
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The pid whose tree holds everything this instance runs.
    pub(crate) fn tree(&self) -> Option<u32> {
        self.tree_root.or(self.pid)
    }

    /// Connections open to this very process.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Returns once no connection is open to this instance.
    pub(crate) async fn drained(&self) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// Where a backend's processes are in their life, and nothing else (the
/// machine's private half, written only by the named transitions):
/// [`BackendState`] is what it shows, with the health checks' verdict and
/// the operator's disable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcessPhase {
    Starting,
    Running,
    Down(DownReason),
    Draining,
    Stopped,
}

/// The private state machine behind [`Backend`].
#[derive(Debug)]
struct Machine {
    phase: ProcessPhase,
    /// While running: why it is out of rotation, and since when.
    failing: Option<(DownReason, Instant)>,
    /// Active-check results in a row that disagree with the current health.
    streak: u32,
    /// Out of rotation by the operator's word, whatever the phase: kept
    /// across the slot's restarts and replacements (they are the slot's,
    /// not the operator's), ended only by [`Backend::enable`].
    disabled: bool,
}

impl Machine {
    /// The state shown: the operator's disable wins, except over corral's
    /// own drain and stop.
    fn state(&self) -> BackendState {
        match self.phase {
            ProcessPhase::Draining | ProcessPhase::Stopped => self.state_ignoring_disable(),
            _ if self.disabled => BackendState::Disabled,
            _ => self.state_ignoring_disable(),
        }
    }

    /// The state of the process's lifecycle and health, disable aside.
    fn state_ignoring_disable(&self) -> BackendState {
        match (self.phase, self.failing) {
            (ProcessPhase::Starting, _) => BackendState::Starting,
            (ProcessPhase::Running, Some((reason, _))) => BackendState::Down(reason),
            (ProcessPhase::Running, None) => BackendState::Up,
            (ProcessPhase::Down(reason), _) => BackendState::Down(reason),
            (ProcessPhase::Draining, _) => BackendState::Draining,
            (ProcessPhase::Stopped, _) => BackendState::Stopped,
        }
    }

    /// Why the backend is down, disabled or not.
    fn reason(&self) -> Option<DownReason> {
        self.state_ignoring_disable().reason()
    }
}

/// A backend's health as `corral upgrade` hands it to the next image, so
/// that an up backend stays up, a failing one stays out until its checks
/// bring it back, and a disabled one stays disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CarriedHealth {
    /// A worker slot's process had been ready (`false`: it was still
    /// starting, and the next image waits for it as for a new one).
    pub(crate) ready: bool,
    /// The pid of the process new connections went to (a worker slot's).
    pub(crate) pid: Option<u32>,
    /// Out of rotation by its checks or the data path: why, and for how
    /// many milliseconds.
    pub(crate) failing: Option<(DownReason, u64)>,
    /// A worker slot without a process in service: why (it crashed, or
    /// never became ready, and waits out its restart backoff).
    #[serde(default)]
    pub(crate) down: Option<DownReason>,
    pub(crate) disabled: bool,
}

/// A change of health that the caller should log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthChange {
    /// Back in rotation after `rise` good checks.
    Up,
    /// Out of rotation for this reason.
    Down(DownReason),
}

/// A backend: a worker slot or a static address.
pub struct Backend {
    /// `worker-<id>` or the static backend's name; the metric label.
    pub(crate) label: String,
    /// A process-independent hash of the label: the ring and the sticky table
    /// refer to backends by it, so it survives reloads.
    pub key: u64,
    pub(crate) kind: Kind,
    machine: Mutex<Machine>,
    /// [`Machine`] in rotation, republished by every transition: the one
    /// thing the hot path reads.
    up: AtomicBool,
    current: ArcSwap<Instance>,
    restarts: AtomicU64,
    /// A worker slot's restart backoff in milliseconds, as the slot task
    /// (its one writer) last set it: what `corral upgrade` carries.
    backoff_ms: AtomicU64,
    /// When a worker slot's process came up, on [`crate::clock::now_ms`]'s
    /// clock (one clock for every image), as its slot task set it: what
    /// `corral upgrade` carries, so `workers.min_uptime` counts from then.
    up_since_ms: AtomicU64,
    active: AtomicUsize,
    /// First-byte timeouts in a row (the passive check), reset by any
    /// answer. Kept outside the machine so the hot path takes no lock.
    silent_in_a_row: AtomicU32,
    /// The last `STATUS=` text its processes sent (`workers.notify`).
    status_text: Mutex<Option<Arc<str>>>,
    pub(crate) metrics: BackendMetrics,
}

impl Backend {
    /// A backend at its own address `addr`.
    pub fn new(
        label: String,
        kind: Kind,
        addr: std::net::SocketAddr,
        metrics: &Metrics,
    ) -> Arc<Backend> {
        Backend::reached_by(label, kind, Reach::Own(addr), metrics)
    }

    /// A backend reached by `reach` until its first process is ready.
    pub(crate) fn reached_by(
        label: String,
        kind: Kind,
        reach: Reach,
        metrics: &Metrics,
    ) -> Arc<Backend> {
        let phase = match kind {
            Kind::Worker(_) => ProcessPhase::Starting,
            Kind::Static => ProcessPhase::Running,
        };
        let backend = Backend {
            key: crate::labels::label_key(&label),
            metrics: metrics.backend(&label),
            label,
            kind,
            machine: Mutex::new(Machine {
                phase,
                failing: None,
                streak: 0,
                disabled: false,
            }),
            up: AtomicBool::new(false),
            current: ArcSwap::from(Instance::new(reach, None, None)),
            restarts: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(0),
            up_since_ms: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            silent_in_a_row: AtomicU32::new(0),
            status_text: Mutex::new(None),
        };
        backend.publish(&backend.machine());
        Arc::new(backend)
    }

    fn machine(&self) -> MutexGuard<'_, Machine> {
        // The machine holds no invariant a panicking holder could break
        // half-way: every transition is a few assignments.
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, machine: &Machine) {
        let up = machine.state() == BackendState::Up;
        self.up.store(up, Ordering::Release);
        self.metrics.up.set(i64::from(up));
        self.metrics.disabled.set(i64::from(machine.disabled));
    }

    /// Runs one transition and republishes the result.
    fn transition<T>(&self, change: impl FnOnce(&mut Machine) -> T) -> T {
        let mut machine = self.machine();
        let result = change(&mut machine);
        self.publish(&machine);
        result
    }

    /// In rotation: running, ready and passing its checks.
    #[inline]
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The state `/status` shows, with the reason when it is down.
    pub(crate) fn state(&self) -> BackendState {
        self.machine().state()
    }

    /// Why the backend is down, when it is (one read of [`Backend::state`]).
    pub(crate) fn reason(&self) -> Option<DownReason> {
        self.machine().reason()
    }

    /// True while a process of this worker is running and has been ready
    /// (it may be failing its checks): the health checks' business.
    pub(crate) fn is_running(&self) -> bool {
        self.machine().phase == ProcessPhase::Running
    }

    /// How long a running backend has been out of rotation, if it is.
    pub(crate) fn unhealthy_for(&self) -> Option<Duration> {
        let machine = self.machine();
        match machine.phase {
            ProcessPhase::Running => machine.failing.map(|(_, since)| since.elapsed()),
            _ => None,
        }
    }

    // ---- transitions asked for by the supervisor ----

    /// A process is being started for a slot that serves nothing.
    pub(crate) fn starting(&self) {
        self.transition(|m| m.phase = ProcessPhase::Starting);
    }

    /// Shows a starting process in `/status` while nothing else serves
    /// (it gets no traffic until [`Backend::ready`]).
    pub(crate) fn show_starting(&self, instance: Arc<Instance>) {
        let machine = self.machine();
        if machine.phase != ProcessPhase::Running {
            self.current.store(instance);
        }
    }

    /// `instance` accepts connections: it takes the new ones from now on,
    /// with a clean health record. Returns the instance it replaces.
    pub fn ready(&self, instance: Arc<Instance>) -> Arc<Instance> {
        let previous = self.current.swap(instance);
        self.silent_in_a_row.store(0, Ordering::Relaxed);
        self.transition(|m| {
            m.phase = ProcessPhase::Running;
            m.failing = None;
            m.streak = 0;
        });
        previous
    }

    /// A process an earlier image had in rotation (`corral upgrade`)
    /// takes the new connections again, with the health record
    /// [`Backend::carry_health`] put back: a failing one stays out until
    /// its checks bring it back. Returns the instance it replaces.
    pub(crate) fn resumed(&self, instance: Arc<Instance>) -> Arc<Instance> {
        let previous = self.current.swap(instance);
        self.transition(|m| m.phase = ProcessPhase::Running);
        previous
    }

    /// Its health, for the next image.
    pub(crate) fn carried_health(&self) -> CarriedHealth {
        let machine = self.machine();
        CarriedHealth {
            ready: machine.phase == ProcessPhase::Running,
            pid: self.current.load().pid,
            failing: machine
                .failing
                .map(|(reason, since)| (reason, since.elapsed().as_millis() as u64)),
            down: match machine.phase {
                ProcessPhase::Down(reason) => Some(reason),
                _ => None,
            },
            disabled: machine.disabled,
        }
    }

    /// Puts back the health an earlier image had (`corral upgrade`): the
    /// failing record, the operator's disable, and why a worker slot
    /// without a process is down. A worker's process goes back in rotation
    /// through [`Backend::resumed`].
    pub(crate) fn carry_health(&self, carried: &CarriedHealth) {
        self.transition(|m| {
            m.failing = carried.failing.map(|(reason, ms)| {
                let now = Instant::now();
                (
                    reason,
                    now.checked_sub(Duration::from_millis(ms)).unwrap_or(now),
                )
            });
            m.streak = 0;
            m.disabled = carried.disabled;
            if let Some(reason) = carried.down {
                m.phase = ProcessPhase::Down(reason);
            }
        });
    }

    /// The process exited unexpectedly; it will be restarted.
    pub(crate) fn crashed(&self) {
        self.transition(|m| m.phase = ProcessPhase::Down(DownReason::Crashed));
    }

    /// The process did not start or never became ready.
    pub(crate) fn failed_to_start(&self) {
        self.transition(|m| m.phase = ProcessPhase::Down(DownReason::NotReady));
    }

    /// A handed worker: the starting process listens on a port of its own instead
    /// of accepting from its handed socket. Shown as the slot's reason
    /// unless an older process of the slot still serves (a rolling
    /// restart: that one stays in rotation).
    pub(crate) fn listens_elsewhere(&self) {
        self.transition(|m| {
            if m.phase != ProcessPhase::Running {
                m.phase = ProcessPhase::Down(DownReason::ListensElsewhere);
            }
        });
    }

    /// A running process is being restarted because it stayed unhealthy;
    /// the reason it was out of rotation stays visible.
    pub(crate) fn restarting_unhealthy(&self) {
        self.transition(|m| {
            let reason = m.reason().unwrap_or(DownReason::Checks);
            m.phase = ProcessPhase::Down(reason);
        });
    }

    /// Leaves rotation to finish open connections (scale-down).
    pub(crate) fn draining(&self) {
        self.transition(|m| m.phase = ProcessPhase::Draining);
    }

    /// Its process said `STOPPING=1`: out of rotation at once, until a
    /// process of the slot is ready again.
    pub(crate) fn stopping_by_itself(&self) {
        self.transition(|m| {
            if m.phase == ProcessPhase::Running {
                m.phase = ProcessPhase::Down(DownReason::Stopping);
            }
        });
    }

    /// Its watchdog expired: out of rotation while it is replaced.
    pub(crate) fn watchdog_expired(&self) {
        self.transition(|m| m.phase = ProcessPhase::Down(DownReason::Watchdog));
    }

    /// Stopped on purpose.
    pub(crate) fn stopped(&self) {
        self.transition(|m| m.phase = ProcessPhase::Stopped);
    }

    // ---- transitions asked for by the operator ----

    /// Out of rotation until [`Backend::enable`] (`corral disable`): no new
    /// connection, sticky clients included, comes to it; open ones finish.
    /// False if it was disabled already.
    pub(crate) fn disable(&self) -> bool {
        self.transition(|m| !std::mem::replace(&mut m.disabled, true))
    }

    /// Back in rotation (as far as its health allows) after
    /// [`Backend::disable`]. False if it was not disabled.
    pub(crate) fn enable(&self) -> bool {
        self.transition(|m| std::mem::replace(&mut m.disabled, false))
    }

    // ---- transitions asked for by health checks and the data path ----

    /// One active check passed; `rise` in a row bring a failing backend back.
    pub(crate) fn check_passed(&self, rise: u32) -> Option<HealthChange> {
        self.transition(|m| {
            if m.phase != ProcessPhase::Running || m.failing.is_none() {
                m.streak = 0;
                return None;
            }
            m.streak += 1;
            if m.streak < rise {
                return None;
            }
            m.streak = 0;
            m.failing = None;
            self.silent_in_a_row.store(0, Ordering::Relaxed);
            Some(HealthChange::Up)
        })
    }

    /// One active check failed; `fall` in a row take the backend out.
    pub(crate) fn check_failed(&self, fall: u32) -> Option<HealthChange> {
        self.fail(DownReason::Checks, fall)
    }

    /// Its process was seen not taking connections from its accept queue;
    /// `fall` such checks in a row take it out.
    pub(crate) fn stalled(&self, fall: u32) -> Option<HealthChange> {
        self.fail(DownReason::Stalled, fall)
    }

    fn fail(&self, reason: DownReason, fall: u32) -> Option<HealthChange> {
        self.transition(|m| {
            if m.phase != ProcessPhase::Running {
                return None;
            }
            if m.failing.is_some() {
                m.streak = 0;
                return None;
            }
            m.streak += 1;
            if m.streak < fall {
                return None;
            }
            m.streak = 0;
            m.failing = Some((reason, Instant::now()));
            Some(HealthChange::Down(reason))
        })
    }

    /// The proxy could not connect: out of rotation at once (its checks
    /// bring it back). False if it was out already.
    pub(crate) fn connect_failed(&self) -> bool {
        self.take_out(DownReason::ConnectFailed)
    }

    /// The backend answered a client: the passive check's streak ends.
    #[inline]
    pub(crate) fn answered(&self) {
        if self.silent_in_a_row.load(Ordering::Relaxed) != 0 {
            self.silent_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// The backend was sent a client's bytes and answered nothing within
    /// `timeouts.first_byte`; after `fall` in a row it leaves rotation.
    /// True when this timeout took it out.
    /// `may_take_out` is asked only once the streak is long enough (the
    /// cap on passive ejections).
    pub(crate) fn first_byte_timed_out(
        &self,
        fall: u32,
        may_take_out: impl FnOnce() -> bool,
    ) -> bool {
        let silent = self.silent_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        silent >= fall && may_take_out() && self.take_out(DownReason::Timeouts)
    }

    fn take_out(&self, reason: DownReason) -> bool {
        self.transition(|m| {
            if m.phase != ProcessPhase::Running || m.failing.is_some() {
                return false;
            }
            m.streak = 0;
            m.failing = Some((reason, Instant::now()));
            true
        })
    }

    // ---- the rest: instances, counters ----

    /// The last `STATUS=` text the worker sent.
    pub(crate) fn status_text(&self) -> Option<Arc<str>> {
        self.status_text
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Keeps the worker's latest `STATUS=` text (already bounded and
    /// escaped by the notify socket's reader).
    pub(crate) fn set_status_text(&self, text: String) {
        *self.status_text.lock().unwrap_or_else(|e| e.into_inner()) = Some(text.into());
    }

    /// The instance new connections go to.
    pub fn instance(&self) -> Arc<Instance> {
        self.current.load_full()
    }

    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The restarts an earlier image of corral counted for this slot
    /// (`corral upgrade`); the metric's series is carried on its own.
    pub(crate) fn carry_restarts(&self, restarts: u64) {
        self.restarts.store(restarts, Ordering::Relaxed);
    }

    /// The slot's restart backoff now (zero before its slot set one).
    pub(crate) fn backoff(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.backoff_ms.load(Ordering::Relaxed))
    }

    /// The slot task's backoff changed (or an earlier image's is carried
    /// over).
    pub(crate) fn set_backoff(&self, delay: std::time::Duration) {
        self.backoff_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// When the slot's process came up (zero before one did).
    pub(crate) fn up_since_ms(&self) -> u64 {
        self.up_since_ms.load(Ordering::Relaxed)
    }

    /// The slot's process came up at `ms` (or an earlier image's time is
    /// carried over).
    pub(crate) fn set_up_since_ms(&self, ms: u64) {
        self.up_since_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.metrics.restarts.inc();
    }

    /// Open client connections to this backend, all instances together.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a connection to `instance` as open until the guard drops.
    pub(crate) fn open(self: &Arc<Self>, instance: Arc<Instance>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        instance.active.fetch_add(1, Ordering::AcqRel);
        self.metrics.active.inc();
        self.metrics.connections.inc();
        ActiveGuard {
            backend: Arc::clone(self),
            instance,
        }
    }
}

/// Keeps a backend's and an instance's open-connection counts right, however
/// the connection ends.
pub(crate) struct ActiveGuard {
    pub(crate) backend: Arc<Backend>,
    pub(crate) instance: Arc<Instance>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.backend.active.fetch_sub(1, Ordering::Relaxed);
        if self.instance.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.instance.closed.notify_waiters();
        }
        self.backend.metrics.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> Arc<Backend> {
        let metrics = Metrics::new();
        Backend::new(
            "worker-0".into(),
            Kind::Worker(0),
            "127.0.0.1:1".parse().unwrap(),
            &metrics,
        )
    }

    #[test]
    fn a_worker_goes_up_only_when_ready() {
        let b = worker();
        assert_eq!(b.state(), BackendState::Starting);
        assert!(!b.is_up());
        b.ready(b.instance());
        assert!(b.is_up());
        b.crashed();
        assert_eq!(b.state(), BackendState::Down(DownReason::Crashed));
        assert!(!b.is_up());
    }

    #[test]
    fn checks_take_it_out_after_fall_and_back_after_rise() {
        let b = worker();
        b.ready(b.instance());
        assert_eq!(b.check_failed(3), None);
        assert_eq!(b.check_failed(3), None);
        assert_eq!(
            b.check_failed(3),
            Some(HealthChange::Down(DownReason::Checks))
        );
        assert_eq!(b.reason(), Some(DownReason::Checks));
        assert!(b.unhealthy_for().is_some());
        assert_eq!(b.check_passed(2), None);
        assert_eq!(b.check_passed(2), Some(HealthChange::Up));
        assert!(b.is_up());
        assert_eq!(b.reason(), None);
    }

    #[test]
    fn a_passing_check_breaks_a_failing_streak() {
        let b = worker();
        b.ready(b.instance());
        b.check_failed(2);
        b.check_passed(2);
        assert_eq!(b.check_failed(2), None);
        assert!(b.is_up());
    }

    #[test]
    fn first_byte_timeouts_in_a_row_take_it_out_and_an_answer_resets() {
        let b = worker();
        b.ready(b.instance());
        assert!(!b.first_byte_timed_out(2, || true));
        b.answered();
        assert!(!b.first_byte_timed_out(2, || true));
        assert!(!b.first_byte_timed_out(2, || false), "the cap said no");
        assert!(b.is_up());
        assert!(b.first_byte_timed_out(2, || true));
        assert_eq!(b.reason(), Some(DownReason::Timeouts));
    }

    #[test]
    fn a_disabled_backend_is_out_of_rotation_across_its_replacement() {
        let b = worker();
        b.ready(b.instance());
        assert!(b.disable());
        assert!(!b.disable(), "disabled twice");
        assert_eq!(b.state(), BackendState::Disabled);
        assert!(!b.is_up());
        assert_eq!(b.metrics.up.get(), 0);
        assert_eq!(b.metrics.disabled.get(), 1);
        // A rolling restart's replacement, a crash and a restart stay disabled.
        b.ready(b.instance());
        assert_eq!(b.state(), BackendState::Disabled);
        b.crashed();
        assert_eq!(b.state(), BackendState::Disabled);
        assert_eq!(b.reason(), Some(DownReason::Crashed));
        b.ready(b.instance());
        assert!(!b.is_up());
        assert!(b.enable());
        assert!(!b.enable(), "enabled twice");
        assert!(b.is_up());
        assert_eq!(b.state(), BackendState::Up);
        assert_eq!(b.metrics.disabled.get(), 0);
        // corral's own stop shows through a disable.
        b.disable();
        b.draining();
        assert_eq!(b.state(), BackendState::Draining);
    }

    #[test]
    fn stopped_and_draining_backends_ignore_checks() {
        let b = worker();
        b.ready(b.instance());
        b.draining();
        assert_eq!(b.check_failed(1), None);
        assert_eq!(b.state(), BackendState::Draining);
        b.stopped();
        assert_eq!(b.state(), BackendState::Stopped);
    }
}
