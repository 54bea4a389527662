//! The signals corral acts on (SIGTERM and SIGINT, SIGHUP, SIGUSR2),
//! installed once at start-up, right after the addresses are bound and
//! before any worker is spawned (until they are, SIGHUP's default action
//! would kill the process). One [`Signals`] holds the handles and is
//! handed along the lifecycle, never shared: while the first workers
//! start only a stop is read (the others stay pending), the control loop
//! reads every kind while corral serves, and the drain reads the same
//! handles for a second stop signal.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks of corral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// SIGTERM or SIGINT: stop gracefully (a second one cuts the drain).
    Stop(&'static str),
    /// SIGHUP: reload the config file.
    Reload,
    /// SIGUSR2: rolling restart of the workers.
    RollingRestart,
}

/// The handles of the signals in [`Asked`]; a signal that comes while
/// nobody reads stays pending until the next read.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

impl Signals {
    /// Installs the handlers: from now on these signals are only counted,
    /// never acted on by the kernel's default.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// The next signal that arrives.
    pub async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.term.recv() => Asked::Stop("SIGTERM"),
            _ = self.int.recv() => Asked::Stop("SIGINT"),
            _ = self.hup.recv() => Asked::Reload,
            _ = self.usr2.recv() => Asked::RollingRestart,
        }
    }

    /// The next SIGTERM or SIGINT; other signals stay pending for the
    /// control loop (while the first workers start).
    pub async fn stop_asked(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// The next SIGTERM or SIGINT; other signals are ignored meanwhile
    /// (during the drain there is nothing to reload or restart).
    pub async fn next_stop(&mut self) -> &'static str {
        loop {
            if let Asked::Stop(name) = self.next().await {
                return name;
            }
        }
    }
}
