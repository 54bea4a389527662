//! The new image's side of `corral upgrade`: take what the old image handed
//! over, serve, and answer the request that asked for it.
//!
//! Every descriptor named in the handover is *duplicated*, never taken: the
//! originals stay open, without close-on-exec, until this image serves
//! ([`release`] then closes them). So a failure while adopting leaves the
//! handover whole, and [`roll_back`] executes the old program with it: the
//! old program takes everything back, in the same process.

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use socket2::Socket;

use super::handover::{Handover, ENV};
use super::{exec, FAIL_FOR_TEST, VERSION};
use crate::datapath::listener::FrontEnd;
use crate::pool::Kind;
use crate::shared::Shared;

/// A duplicate of `fd` (close-on-exec), owned by the caller.
pub(crate) fn take(fd: RawFd) -> std::io::Result<OwnedFd> {
    crate::fds::duplicate(fd, 3)
}

/// Whether this image may adopt at all: a test can tell it not to (only a
/// new image, never the old one taking everything back).
pub(crate) fn refuse_for_test(handover: &Handover) -> Result<(), String> {
    if handover.rolled_back.is_none() && std::env::var_os(FAIL_FOR_TEST).is_some() {
        return Err(format!("{FAIL_FOR_TEST} is set"));
    }
    Ok(())
}

/// The proxy threads' front-end sockets.
pub(crate) fn front_end(handover: &Handover) -> std::io::Result<FrontEnd> {
    let per_thread = handover
        .front
        .iter()
        .map(|thread| {
            thread
                .iter()
                .map(|&fd| take(fd).map(Socket::from))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(FrontEnd { per_thread })
}

/// A handed front end's slot sockets, in slot order.
pub(crate) fn slot_sockets(handover: &Handover) -> std::io::Result<Vec<Socket>> {
    handover
        .slots
        .iter()
        .map(|&fd| take(fd).map(Socket::from))
        .collect()
}

/// The admin port's listening socket.
pub(crate) fn admin_listener(handover: &Handover) -> std::io::Result<tokio::net::TcpListener> {
    let listener = TcpListener::from(take(handover.admin)?);
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// The sticky table's entries and the counters, into `shared`.
pub(crate) fn state(shared: &Shared, handover: &Handover) {
    let entries: Vec<(u128, u64, u64)> = handover
        .sticky
        .iter()
        .filter_map(|(client, backend, age)| Some((client.parse().ok()?, *backend, *age)))
        .collect();
    shared.dispatcher.sticky.import(&entries);
    shared.metrics.carry_over(handover.counters.clone());
    shared.clients.import(&handover.clients);
    for backend in &shared.snapshot().pool.backends {
        if let Some((_, health)) = handover.health.iter().find(|(key, _)| *key == backend.key) {
            backend.carry_health(health);
        }
    }
    for backend in shared.snapshot().pool.worker_backends() {
        if let Kind::Worker(slot) = backend.kind {
            if let Some((_, restarts)) = handover.restarts.iter().find(|(s, _)| *s == slot) {
                backend.carry_restarts(*restarts);
            }
            if let Some((_, ms)) = handover.backoffs.iter().find(|(s, _)| *s == slot) {
                backend.set_backoff(std::time::Duration::from_millis(*ms));
            }
            if let Some((_, ms)) = handover.up_since.iter().find(|(s, _)| *s == slot) {
                backend.set_up_since_ms(*ms);
            }
        }
    }
}

/// What the upgrade did, for the answer and the log.
pub(crate) struct Done {
    pub(crate) milliseconds: u64,
    pub(crate) workers: usize,
    pub(crate) connections: usize,
}

/// Answers the request that asked for the upgrade (200 and what was done;
/// or, after a rollback, 409 and why), then closes that connection.
pub(crate) fn answer(handover: &Handover, done: &Done) {
    let Some(fd) = handover.answer_to else {
        return;
    };
    let (status, body) = match &handover.rolled_back {
        None => (
            "200 OK",
            serde_json::json!({
                "upgraded": true,
                "from": handover.from,
                "to": VERSION,
                "milliseconds": done.milliseconds,
                "workers": done.workers,
                "connections": done.connections,
            }),
        ),
        Some(why) => (
            "409 Conflict",
            serde_json::json!({
                "upgraded": false,
                "error": format!("the new program could not take over, and everything was taken back: {why}"),
            }),
        ),
    };
    let body = body.to_string();
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    match take(fd) {
        Ok(socket) => {
            let mut stream = std::net::TcpStream::from(socket);
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_write_timeout(Some(std::time::Duration::from_secs(1)));
            let _ = stream.write_all(reply.as_bytes());
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        Err(error) => tracing::warn!(%error, "cannot answer the upgrade request"),
    }
}

/// Once this image serves: closes the handover's original descriptors
/// (this image works on duplicates of them), so none leaks into a worker.
pub(crate) fn release(handover: &Handover) {
    let mut fds: Vec<RawFd> = handover.front.iter().flatten().copied().collect();
    fds.extend(&handover.slots);
    fds.extend(handover.notify.as_ref().map(|hub| hub.fd));
    fds.push(handover.admin);
    fds.extend(handover.answer_to);
    fds.push(handover.spawner.lifeline.0);
    fds.push(handover.spawner.lifeline.1);
    fds.extend(handover.spawner.pipes.iter().map(|p| p.fd));
    fds.push(handover.old_program);
    // The parked connections' descriptors are not here: this image took
    // them themselves ([`crate::datapath::parked::Resumed::take`]).
    fds.extend(
        std::env::var(ENV)
            .ok()
            .and_then(|fd| fd.parse::<RawFd>().ok()),
    );
    for fd in fds {
        // SAFETY: each is a descriptor the old image left for this one,
        // which this image only ever duplicated.
        unsafe { libc::close(fd) };
    }
}

/// This image cannot adopt: executes the old program with the handover
/// (marked with `why`), which takes everything back. Returns only if that
/// exec failed too (the caller then exits, and the workers go with it).
pub(crate) fn roll_back(handover: &Handover, why: &str) -> std::io::Error {
    tracing::error!("upgrade: cannot take over ({why}); executing the old program again");
    let mut back = handover.clone();
    back.rolled_back = Some(why.to_string());
    let written = match back.write() {
        Ok(fd) => fd,
        Err(error) => return error,
    };
    exec::back(handover.old_program, written.as_raw_fd())
}

/// The handover's descriptor number, for a new image whose handover could
/// not even be read: only the old program can read it then.
pub fn roll_back_unread(why: &str) -> Option<std::io::Error> {
    // Read it again as plain JSON for the one field that matters.
    let mut value = super::handover::incoming_json()?.ok()?;
    let old = value.get("old_program")?.as_i64()? as RawFd;
    value["rolled_back"] = serde_json::Value::String(why.to_string());
    match super::handover::write_json(&value) {
        Ok(written) => Some(exec::back(old, written.as_raw_fd())),
        Err(error) => Some(error),
    }
}
