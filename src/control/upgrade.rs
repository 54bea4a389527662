//! The old image's side of `corral upgrade`: ask the file first (a refusal
//! changes nothing), then stop taking new work, collect what every owner
//! hands over, and exec the new program. The new image's side is
//! [`crate::upgrade::adopt`].
//!
//! Open proxied connections park at their next poll, with the bytes corral
//! read and had not written yet, and are handed over open (see
//! [`crate::datapath::parked`]): those being pumped (stateless ones with
//! their HTTP/1.x view), those waiting for their next stateless request or
//! for the rest of their PROXY header, and in fd mode the clients corral
//! relays off a slot out of rotation. One still connecting to its backend
//! parks once connected; what has not parked within [`CONNECTIONS_GRACE`]
//! (a backend slow to accept) is closed.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::reload::Source;
use crate::fds::{duplicate, set_cloexec};
use crate::pool::Kind;
use crate::shared::Shared;
use crate::supervisor::notify::HandedHub;
use crate::supervisor::Supervisor;
use crate::upgrade::{exec, handover::Handover, probe, started_from, Refusal, FORMAT, VERSION};

/// How long open connections get to finish before the exec.
pub const CONNECTIONS_GRACE: Duration = Duration::from_secs(1);

/// The listening sockets this image serves on, by descriptor: what an
/// upgrade hands over while their owners keep them open.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// Per proxy thread, one socket per front-end address.
    pub front: Vec<Vec<RawFd>>,
    pub admin: RawFd,
}

impl Listeners {
    /// The descriptors of the proxy threads' sockets (none for a handed
    /// front end) and of the admin port.
    pub fn of(
        front: Option<&crate::datapath::listener::FrontEnd>,
        admin: &tokio::net::TcpListener,
    ) -> Listeners {
        let front = front
            .map(|f| {
                f.per_thread
                    .iter()
                    .map(|thread| thread.iter().map(|s| s.as_raw_fd()).collect())
                    .collect()
            })
            .unwrap_or_default();
        Listeners {
            front,
            admin: admin.as_raw_fd(),
        }
    }
}

/// Checks the file at the started path, then hands everything over and
/// executes it. Returns only with the reason it was refused; after the
/// checks pass, a failure executes the old program again (rollback), which
/// takes everything back.
pub async fn upgrade(
    shared: &Arc<Shared>,
    supervisor: &Supervisor,
    source: &Source,
    listeners: &Listeners,
    answer_to: Option<RawFd>,
) -> Refusal {
    let replacing = supervisor.slots_being_replaced();
    if !replacing.is_empty() {
        let slots: Vec<String> = replacing
            .iter()
            .map(|s| crate::labels::worker_label(*s))
            .collect();
        return Refusal(format!(
            "a rolling restart is under way ({} has two processes); upgrade once it is done",
            slots.join(", ")
        ));
    }
    match check(source).await {
        Ok(program) => hand_over(shared, supervisor, listeners, answer_to, program).await,
        Err(refusal) => refusal,
    }
}

/// The refusal: a file that is not a corral that can take over.
async fn check(source: &Source) -> Result<std::path::PathBuf, Refusal> {
    let program = started_from()?.clone();
    let file = source.file.clone();
    let command = source.overrides.command.clone();
    let asked = program.clone();
    tokio::task::spawn_blocking(move || probe::probe(&asked, file.as_deref(), command.as_deref()))
        .await
        .map_err(|e| Refusal(format!("the check of the new program failed: {e}")))??;
    Ok(program)
}

/// Past the checks. Once the handover is written, a failed exec executes
/// the old program again with it. Before that, only the loss of the
/// spawner thread or of memory for the handover can fail: the image then
/// keeps its workers but no longer accepts, it says so, and a restart of
/// corral is the way out. Every descriptor kept for the next image stays
/// close-on-exec (and is closed on such a failure) until just before the
/// exec.
async fn hand_over(
    shared: &Arc<Shared>,
    supervisor: &Supervisor,
    listeners: &Listeners,
    answer_to: Option<RawFd>,
    program: std::path::PathBuf,
) -> Refusal {
    let asked_at_ms = wall_ms();
    let old_program = match exec::open_own_program() {
        Ok(fd) => fd,
        Err(error) => {
            return Refusal(format!(
                "cannot open the running program for a rollback: {error}"
            ))
        }
    };
    super::notify::reloading();
    // The listening sockets outlive their owners from here: duplicates
    // keep them listening (clients wait in their backlogs) when the accept
    // loops end below.
    let notify = supervisor.notify_hub();
    let kept = match Kept::take(
        listeners,
        &shared.front.slot_fds(),
        notify.as_ref().map(|hub| hub.fd),
        answer_to,
    ) {
        Ok(kept) => kept,
        Err(error) => return Refusal(format!("cannot keep the listening sockets open: {error}")),
    };
    stop_taking_work(shared).await;
    let spawner = match supervisor.hand_over().await {
        Ok(spawner) => spawner,
        Err(error) => {
            tracing::error!(%error, "upgrade: the spawner could not hand its workers over");
            return Refusal(format!(
                "the spawner could not hand its workers over: {error}"
            ));
        }
    };
    let (connections, connection_fds) = shared.parking.hand_over();
    let handover = Handover {
        format: FORMAT,
        from: VERSION.to_string(),
        asked_at_ms,
        old_program: old_program.as_raw_fd(),
        rolled_back: None,
        config: (*shared.config()).clone(),
        front: kept.raw_front(),
        slots: kept.slots.iter().map(|fd| fd.as_raw_fd()).collect(),
        notify: notify.zip(kept.notify.as_ref()).map(|(hub, fd)| HandedHub {
            fd: fd.as_raw_fd(),
            ..hub
        }),
        admin: kept.admin.as_raw_fd(),
        answer_to: kept.answer_to.as_ref().map(|fd| fd.as_raw_fd()),
        spawner,
        // Proxied workers listen on a port of their own.
        ports: per_slot(shared, |b| Some(b.instance().reach.own()?.port())),
        restarts: per_slot(shared, |b| Some(b.restarts())),
        backoffs: per_slot(shared, |b| Some(b.backoff().as_millis() as u64)),
        up_since: per_slot(shared, |b| Some(b.up_since_ms())),
        health: shared
            .snapshot()
            .pool
            .backends
            .iter()
            .map(|b| (b.key, b.carried_health()))
            .collect(),
        clients: shared.clients.export(),
        sticky: shared
            .dispatcher
            .sticky
            .export()
            .into_iter()
            .map(|(client, backend, age)| (client.to_string(), backend, age))
            .collect(),
        counters: shared.metrics.export_counters(),
        connections,
    };
    let written = match handover.write() {
        Ok(fd) => fd,
        Err(error) => return Refusal(format!("cannot write the handover: {error}")),
    };
    let across: Vec<RawFd> = kept
        .all()
        .chain(connection_fds.iter().map(|fd| fd.as_raw_fd()))
        .chain([old_program.as_raw_fd()])
        .collect();
    for fd in across {
        if let Err(error) = set_cloexec(fd, false) {
            tracing::error!(fd, %error, "upgrade: a descriptor cannot be kept across the exec");
        }
    }
    tracing::info!(program = %program.display(), "upgrade: executing the new program");
    let error = exec::into(&program, written.as_raw_fd());
    tracing::error!(%error, "upgrade: cannot execute the new program; taking everything back");
    let error = exec::back(old_program.as_raw_fd(), written.as_raw_fd());
    Refusal(format!(
        "cannot execute {} ({error}), nor the old program again",
        program.display()
    ))
}

/// No new client is taken (they wait in the backlogs), and every open
/// connection parks or ends; one that cannot within [`CONNECTIONS_GRACE`]
/// is cut.
async fn stop_taking_work(shared: &Shared) {
    // Parking first: what stops with the accepting (a stateless
    // connection between requests) parks instead of closing as in a
    // graceful stop. A client accepted meanwhile parks too.
    shared.parking.begin();
    shared.stop_accepting();
    // No loop may accept after the count below: each one ends at its next
    // turn (a client it took meanwhile is a tracked connection).
    shared.accept_loops().close();
    let _ = tokio::time::timeout(CONNECTIONS_GRACE, shared.accept_loops().wait()).await;
    shared.connections().close();
    let open = shared.connections().len();
    if open > 0
        && tokio::time::timeout(CONNECTIONS_GRACE, shared.connections().wait())
            .await
            .is_err()
    {
        tracing::warn!(
            open = shared.connections().len(),
            "upgrade: closing connections that could not park within the grace (still connecting to their backend)"
        );
        shared.cut_connections();
        let _ = tokio::time::timeout(Duration::from_secs(1), shared.connections().wait()).await;
    }
}

/// A figure of each worker slot's backend (its port, its restarts, ...),
/// by slot; slots without one are left out.
fn per_slot<T>(
    shared: &Shared,
    figure: impl Fn(&crate::pool::Backend) -> Option<T>,
) -> Vec<(usize, T)> {
    shared
        .snapshot()
        .pool
        .worker_backends()
        .filter_map(|b| match b.kind {
            Kind::Worker(slot) => Some((slot, figure(b)?)),
            Kind::Static => None,
        })
        .collect()
}

/// Duplicates of the listening sockets and of the connection to answer,
/// owned until the exec (close-on-exec until just before it).
struct Kept {
    front: Vec<Vec<OwnedFd>>,
    /// A handed front end's slot sockets, in slot order.
    slots: Vec<OwnedFd>,
    /// The workers' notify socket.
    notify: Option<OwnedFd>,
    admin: OwnedFd,
    answer_to: Option<OwnedFd>,
}

impl Kept {
    fn take(
        listeners: &Listeners,
        slots: &[RawFd],
        notify: Option<RawFd>,
        answer_to: Option<RawFd>,
    ) -> std::io::Result<Kept> {
        let keep = |fd: RawFd| duplicate(fd, 3);
        Ok(Kept {
            notify: notify.map(keep).transpose()?,
            slots: slots
                .iter()
                .map(|&fd| keep(fd))
                .collect::<std::io::Result<_>>()?,
            front: listeners
                .front
                .iter()
                .map(|thread| thread.iter().map(|&fd| keep(fd)).collect())
                .collect::<std::io::Result<_>>()?,
            admin: keep(listeners.admin)?,
            answer_to: answer_to.map(keep).transpose()?,
        })
    }

    fn raw_front(&self) -> Vec<Vec<RawFd>> {
        self.front
            .iter()
            .map(|thread| thread.iter().map(|fd| fd.as_raw_fd()).collect())
            .collect()
    }

    /// Every descriptor kept.
    fn all(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.front
            .iter()
            .flatten()
            .chain(&self.slots)
            .chain(&self.notify)
            .chain([&self.admin])
            .chain(self.answer_to.as_ref())
            .map(|fd| fd.as_raw_fd())
    }
}

/// Milliseconds since the Unix epoch (the one clock both images agree on
/// for "when it was asked").
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
