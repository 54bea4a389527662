//! Waiting until a starting process of a slot is ready: it accepts a
//! probe (as its seat says how it is reached) and, with `workers.notify`,
//! said `READY=1`, within `workers.ready_timeout`. A handed worker's tree
//! is also watched for listeners of its own ([`crate::supervisor::strays`]):
//! one that listens elsewhere is said at once and marked down.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::seat::StrayWatch;
use super::{describe, next_notice, Slot, SlotError};
use crate::config::WorkersConfig;
use crate::health::Verdict;
use crate::pool::DownReason;
use crate::supervisor::notify::{Notice, Registration};
use crate::supervisor::spawn::WorkerProcess;
use crate::supervisor::strays;

/// The longest pause between two readiness probes of a starting worker
/// (they start at 2 ms: most workers bind within milliseconds). A process
/// that starts listening sends corral no notice, so this one wait polls.
const READY_PROBE_MAX: Duration = Duration::from_millis(50);

/// How a starting process is waited for, and the errors it can end with.
pub(super) struct Waiting<'a> {
    pub workers: &'a WorkersConfig,
    pub stop: &'a CancellationToken,
    /// It never accepted within `ready_timeout`.
    pub not_ready: SlotError,
    /// It exited first (with its status).
    pub exited: fn(String) -> SlotError,
    /// A handed worker: the tree to watch for listeners of its own, and
    /// its socket's inode.
    pub strays: Option<StrayWatch>,
}

/// What a starting handed worker was seen listening on besides fd 3, and
/// since when.
#[derive(Default)]
struct Strays {
    addrs: Vec<SocketAddr>,
    since: Option<tokio::time::Instant>,
    told: bool,
}

impl Slot {
    /// Waits until `probe` passes for a starting `process` (probes start
    /// 2 ms apart, doubling up to [`READY_PROBE_MAX`]) and, with
    /// `workers.notify`, until it sent `READY=1` (`EXTEND_TIMEOUT_USEC`
    /// extends the wait, as under systemd), for at most
    /// `workers.ready_timeout`: then the process is killed. A process that
    /// exits first fails with `exited`; a stop meanwhile stops it.
    pub(super) async fn wait_ready<Probe, Checked>(
        &self,
        mut process: WorkerProcess,
        mut notices: Option<Registration>,
        waiting: Waiting<'_>,
        probe: Probe,
    ) -> Result<(WorkerProcess, Option<Registration>), SlotError>
    where
        Probe: Fn() -> Checked,
        Checked: std::future::Future<Output = Verdict>,
    {
        let Waiting {
            workers,
            stop,
            not_ready,
            exited,
            strays: watch,
        } = waiting;
        let mut strays = Strays::default();
        let mut look = tokio::time::interval(strays::LOOK_EVERY);
        let accepting = async {
            let mut pause = Duration::from_millis(2);
            loop {
                if let Verdict::Passed = probe().await {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(READY_PROBE_MAX);
            }
        };
        tokio::pin!(accepting);
        let deadline = tokio::time::sleep(workers.ready_timeout);
        tokio::pin!(deadline);
        let mut accepts = false;
        let mut said_ready = notices.is_none();
        while !(accepts && said_ready) {
            tokio::select! {
                () = &mut accepting, if !accepts => accepts = true,
                notice = next_notice(&mut notices), if !said_ready => match notice {
                    Notice::Ready => said_ready = true,
                    Notice::ExtendTimeout(more) => {
                        let later = tokio::time::Instant::now() + more;
                        if later > deadline.deadline() {
                            deadline.as_mut().reset(later);
                        }
                    }
                    Notice::Status(text) => self.backend.set_status_text(text),
                    _ => {}
                },
                _ = look.tick(), if !accepts && watch.is_some() => {
                    if let Some(watch) = watch {
                        self.look_for_strays(watch, process.pid, &mut strays).await;
                    }
                }
                () = &mut deadline => {
                    process.kill().await;
                    return Err(if accepts {
                        SlotError::NoReadyNotice { timeout: workers.ready_timeout }
                    } else if strays.told {
                        SlotError::ListensElsewhere {
                            timeout: workers.ready_timeout,
                            advice: strays::advice(&strays.addrs),
                        }
                    } else {
                        not_ready
                    });
                }
                status = process.wait() => return Err(exited(describe(status))),
                _ = stop.cancelled() => {
                    process.stop(workers.stop_timeout).await;
                    return Err(SlotError::Stopped);
                }
            }
        }
        Ok((process, notices))
    }
}

impl Slot {
    /// A handed worker: looks whether its starting tree listens somewhere
    /// other than its handed socket. Once it has for [`strays::GRACE`], it
    /// is said at once in the log and the slot is marked down with the
    /// reason (it stays out of rotation; its clients go to the others).
    async fn look_for_strays(&self, handed: StrayWatch, pid: u32, strays: &mut Strays) {
        let held = self
            .shared
            .sampler
            .sockets_of(handed.shim)
            .await
            .sockets_held(handed.shim);
        let found =
            tokio::task::spawn_blocking(move || strays::listening_elsewhere(&held, handed.inode))
                .await;
        let addrs = match found {
            Ok(Ok(addrs)) => addrs,
            _ => return, // /proc or sock_diag unreadable: the ready_timeout still applies
        };
        if addrs.is_empty() {
            *strays = Strays::default();
            return;
        }
        let since = *strays.since.get_or_insert_with(tokio::time::Instant::now);
        if strays.told && strays.addrs == addrs || since.elapsed() < strays::GRACE {
            strays.addrs = addrs;
            return;
        }
        strays.addrs = addrs;
        strays.told = true;
        self.backend.listens_elsewhere();
        tracing::error!(
            worker = self.id,
            pid,
            listens_on = %strays::list(&strays.addrs),
            reason = DownReason::ListensElsewhere.as_str(),
            "worker-{} is out of rotation: {}",
            self.id,
            strays::advice(&strays.addrs)
        );
    }
}
