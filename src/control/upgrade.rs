//! The old image's side of `corral upgrade`: ask the file first (a refusal
//! changes nothing), then stop taking new work, collect what every owner
//! hands over, and exec the new program. The new image's side is
//! [`crate::upgrade::adopt`].
//!
//! Open proxied connections park at a quiet moment (nothing read and not
//! yet written) and are handed over open. One that is never quiet within
//! [`CONNECTIONS_GRACE`] (a transfer in full flow) is closed: bytes in
//! corral's buffers are not handed over yet.

use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::reload::Source;
use crate::config::ListenMode;
use crate::fds::set_cloexec;
use crate::pool::Kind;
use crate::shared::Shared;
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
    match check(shared, source).await {
        Ok(program) => hand_over(shared, supervisor, listeners, answer_to, program).await,
        Err(refusal) => refusal,
    }
}

/// The refusals: a mode not handed over yet, or a file that is not a corral
/// that can take over.
async fn check(shared: &Shared, source: &Source) -> Result<std::path::PathBuf, Refusal> {
    let config = shared.config();
    if let Some(workers) = &config.workers {
        if workers.listen == ListenMode::Handed {
            return Err(Refusal("workers.listen = \"fd\": this corral cannot hand its slot sockets over yet; restart it instead".into()));
        }
        if workers.notify {
            return Err(Refusal("workers.notify = true: this corral cannot hand its workers' notify socket over yet; restart it instead".into()));
        }
    }
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
/// spawner thread or of memory for the handover can fail, and the image
/// then keeps its workers but no longer accepts: it says so, and a restart
/// of corral is the way out.
async fn hand_over(
    shared: &Arc<Shared>,
    supervisor: &Supervisor,
    listeners: &Listeners,
    answer_to: Option<RawFd>,
    program: std::path::PathBuf,
) -> Refusal {
    let asked_at_ms = wall_ms();
    let old_program = match exec::open_own_program() {
        Ok(fd) => fd.into_raw_fd(),
        Err(error) => {
            return Refusal(format!(
                "cannot open the running program for a rollback: {error}"
            ))
        }
    };
    super::notify::reloading();
    // The listening sockets outlive their owners from here: duplicates
    // without close-on-exec keep them listening (clients wait in their
    // backlogs) when the accept loops end below.
    let kept = match keep_listeners(listeners, answer_to) {
        Ok(kept) => kept,
        Err(error) => return Refusal(format!("cannot keep the listening sockets open: {error}")),
    };
    shared.stop_accepting();
    // No loop may accept after the count below: each one ends at its next
    // turn (a client it took meanwhile is a tracked connection).
    shared.accept_loops().close();
    let _ = tokio::time::timeout(CONNECTIONS_GRACE, shared.accept_loops().wait()).await;
    // Every open connection parks at its next quiet moment (or ends).
    shared.parking.begin();
    shared.connections().close();
    let open = shared.connections().len();
    if open > 0
        && tokio::time::timeout(CONNECTIONS_GRACE, shared.connections().wait())
            .await
            .is_err()
    {
        tracing::warn!(
            open = shared.connections().len(),
            "upgrade: closing connections never quiet within the grace (a transfer in full flow is not handed over yet)"
        );
        shared.cut_connections();
        let _ = tokio::time::timeout(Duration::from_secs(1), shared.connections().wait()).await;
    }
    let spawner = match supervisor.hand_over().await {
        Ok(spawner) => spawner,
        Err(error) => {
            // The spawner still runs: nothing was handed over; the old
            // program takes everything back from the handover below.
            tracing::error!(%error, "upgrade: the spawner could not hand its workers over");
            return Refusal(format!(
                "the spawner could not hand its workers over: {error}"
            ));
        }
    };
    let snapshot = shared.snapshot();
    let ports = snapshot
        .pool
        .worker_backends()
        .filter_map(|b| match b.kind {
            Kind::Worker(slot) => Some((slot, b.instance().reach.own()?.port())),
            Kind::Static => None,
        })
        .collect();
    let handover = Handover {
        format: FORMAT,
        from: VERSION.to_string(),
        asked_at_ms,
        old_program,
        rolled_back: None,
        config: (*snapshot.config).clone(),
        front: kept.front,
        admin: kept.admin,
        answer_to: kept.answer_to,
        spawner,
        ports,
        sticky: shared
            .dispatcher
            .sticky
            .export()
            .into_iter()
            .map(|(client, backend, age)| (client.to_string(), backend, age))
            .collect(),
        counters: shared.metrics.export_counters(),
        connections: shared.parking.hand_over(),
    };
    let written = match handover.write() {
        Ok(fd) => fd,
        Err(error) => return Refusal(format!("cannot write the handover: {error}")),
    };
    tracing::info!(program = %program.display(), "upgrade: executing the new program");
    let error = exec::into(&program, written.as_raw_fd());
    tracing::error!(%error, "upgrade: cannot execute the new program; taking everything back");
    let error = exec::back(old_program, written.as_raw_fd());
    Refusal(format!(
        "cannot execute {} ({error}), nor the old program again",
        program.display()
    ))
}

/// Duplicates, without close-on-exec, of the listening sockets and of the
/// connection to answer.
struct Kept {
    front: Vec<Vec<RawFd>>,
    admin: RawFd,
    answer_to: Option<RawFd>,
}

fn keep_listeners(listeners: &Listeners, answer_to: Option<RawFd>) -> std::io::Result<Kept> {
    let keep = |fd: RawFd| -> std::io::Result<RawFd> {
        // SAFETY: dup makes a new descriptor, which is then owned by the
        // handover (it outlives this image).
        let copy = unsafe { libc::dup(fd) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        set_cloexec(copy, false)?;
        Ok(copy)
    };
    Ok(Kept {
        front: listeners
            .front
            .iter()
            .map(|thread| thread.iter().map(|&fd| keep(fd)).collect())
            .collect::<std::io::Result<_>>()?,
        admin: keep(listeners.admin)?,
        answer_to: answer_to.map(keep).transpose()?,
    })
}

/// Milliseconds since the Unix epoch (the one clock both images agree on
/// for "when it was asked").
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
