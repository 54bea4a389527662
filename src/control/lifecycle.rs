//! corral's own life: start-up (bind everything, drop privileges, start
//! the workers and wait for them, then serve), and the graceful stop (stop
//! accepting, drain open connections, stop the workers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::signals::Signals;
use super::{admin, notify, Source};
use crate::config::Config;
use crate::datapath::connection;
use crate::datapath::listener::{self, FrontEnd};
use crate::datapath::parked::Resumed;
use crate::front::{Front, FrontError};
use crate::sampler::Sampler;
use crate::shared::Shared;
use crate::supervisor::spawn::Spawner;
use crate::supervisor::Supervisor;
use crate::upgrade::{adopt, handover::Handover};

/// A failure that stops corral at run time (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// A listening address could not be bound (taken, or not this host's).
    #[error("cannot bind the {what} to {addr}: {source}")]
    Bind {
        /// Which socket: the front end or the admin port.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What bind(2) said.
        source: std::io::Error,
    },
    /// `workers.port_base` was left to corral and no block of free ports
    /// (two per worker) was found for it.
    #[error("{0}")]
    Ports(String),
    /// `corral upgrade`: this image cannot take over what it was handed.
    #[error("cannot take over from the previous corral: {0}")]
    Adopt(String),
    /// Another start-up step the system refused (the log file, the
    /// runtime, a thread, signal handlers, dropping privileges...).
    #[error("{context}: {source}")]
    Io {
        /// The step, as the error line names it.
        context: &'static str,
        /// What the system said.
        source: std::io::Error,
    },
}

impl Fatal {
    fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Fatal {
        move |source| Fatal::Io { context, source }
    }
}

/// Runs corral until a graceful stop completes. `incoming`: what an
/// earlier image of this process handed over (`corral upgrade`), to adopt
/// rather than bind and spawn; `config` is then the one handed over.
pub fn run(config: Config, source: Source, incoming: Option<Handover>) -> Result<(), Fatal> {
    let _flush_on_exit = crate::logging::init(&config.log)
        .map_err(Fatal::io("cannot open the log file (log.file)"))?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    // The control plane (admin, health checks, supervisor, signals) runs on
    // this thread; the proxy threads have runtimes of their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Fatal::io("cannot start the runtime"))?;
    let rollback = incoming.clone();
    let result = runtime.block_on(serve(config, source, incoming));
    if let (Err(error), Some(handover)) = (&result, rollback) {
        // Start-up is the only place serve fails: this image could not
        // adopt what it was handed.
        if handover.rolled_back.is_none() {
            let failed = adopt::roll_back(&handover, &error.to_string());
            tracing::error!(error = %failed, "cannot execute the old program again");
        }
    }
    // Nothing is left to do: a blocking task still in flight (a rescue
    // blocked in accept, a /proc or netlink read) must not hold the exit.
    runtime.shutdown_background();
    result
}

/// Start-up, serving, and the graceful stop, in that order.
async fn serve(
    mut config: Config,
    source: Source,
    incoming: Option<Handover>,
) -> Result<(), Fatal> {
    if let Some(handover) = &incoming {
        adopt::refuse_for_test(handover).map_err(Fatal::Adopt)?;
    }
    // Bind everything first: if an address is taken nothing is started.
    let (front, listeners, admin_listener) = open_listeners(&config, incoming.as_ref()).await?;
    let upgrade_listeners = super::upgrade::Listeners::of(listeners.as_ref(), &admin_listener);
    let mut signals = settle_process(&mut config, incoming.is_none())?;
    let (spawner, adopted) = start_spawner(incoming.as_ref())?;
    let sampler = Sampler::start().map_err(Fatal::io("cannot start the /proc sampler thread"))?;

    let shared = Shared::new(config.clone(), front, sampler);
    if let Some(handover) = &incoming {
        adopt::state(&shared, handover);
    }
    shared.set_bound();
    let (control_tx, control_rx) = mpsc::channel(8);
    start_tasks(&shared, admin_listener, control_tx);

    let supervisor = Supervisor::new(Arc::clone(&shared), spawner);
    let adopted_workers = adopted.len();
    if let Some(handover) = &incoming {
        supervisor.adopt(
            adopted,
            &handover.ports,
            &handover.health,
            handover.notify.as_ref(),
        );
    }
    let stopped_while_starting = match &config.workers {
        Some(workers) => first_start(&supervisor, workers, &mut signals).await,
        None => None,
    };

    let proxies_stop = CancellationToken::new();
    let resumed = incoming
        .as_ref()
        .map(resume_connections)
        .unwrap_or_default();
    let resumed_connections = resumed.len();
    let proxies = match listeners {
        Some(listeners) => {
            listener::start_threads(&shared, listeners, proxies_stop.clone(), resumed)
                .map_err(Fatal::io("cannot start the proxy threads"))?
        }
        None => {
            // A handed front end has no proxy threads: the clients it
            // relays (fd mode's rescues) resume on this runtime.
            for connection in resumed {
                let shared_here = Arc::clone(&shared);
                shared
                    .connections()
                    .spawn(connection::resume(shared_here, connection));
            }
            Vec::new()
        }
    };
    if let Some(handover) = &incoming {
        took_over(&shared, handover, adopted_workers, resumed_connections);
    }
    let signals = match stopped_while_starting {
        Some(name) => {
            tracing::info!("{name} while the first workers started: stopping gracefully");
            signals
        }
        None => {
            announce(&shared, &config);
            notify::ready();
            super::run(
                Arc::clone(&shared),
                Arc::clone(&supervisor),
                source,
                upgrade_listeners,
                signals,
                control_rx,
            )
            .await
        }
    };
    stop(&shared, signals, proxies_stop, &supervisor, proxies).await;
    Ok(())
}

/// The front end, the proxy threads' sockets and the admin port: bound
/// afresh, or taken over from an earlier image (`incoming`).
async fn open_listeners(
    config: &Config,
    incoming: Option<&Handover>,
) -> Result<(Front, Option<FrontEnd>, tokio::net::TcpListener), Fatal> {
    let Some(handover) = incoming else {
        let (front, listeners) = bind_front(config)?;
        let admin = tokio::net::TcpListener::bind(config.admin.bind)
            .await
            .map_err(|source| Fatal::Bind {
                what: "admin port",
                addr: config.admin.bind,
                source,
            })?;
        return Ok((front, listeners, admin));
    };
    let (front, listeners) = adopt_front(config, handover)?;
    let admin = adopt::admin_listener(handover)
        .map_err(|e| Fatal::Adopt(format!("cannot take the admin port: {e}")))?;
    Ok((front, listeners, admin))
}

/// The spawner thread: new, or holding the workers an earlier image
/// handed over (returned by slot).
fn start_spawner(
    incoming: Option<&Handover>,
) -> Result<
    (
        Spawner,
        Vec<(usize, crate::supervisor::process::WorkerProcess)>,
    ),
    Fatal,
> {
    match incoming {
        Some(handover) => Spawner::adopt(handover.spawner.clone())
            .map_err(|e| Fatal::Adopt(format!("cannot take the workers over: {e}"))),
        None => Ok((
            Spawner::start().map_err(Fatal::io("cannot start the worker spawner thread"))?,
            Vec::new(),
        )),
    }
}

/// The front end and the proxy threads' sockets an earlier image handed
/// over (a handed front end: its slot sockets).
fn adopt_front(config: &Config, handover: &Handover) -> Result<(Front, Option<FrontEnd>), Fatal> {
    let slots = adopt::slot_sockets(handover)
        .map_err(|e| Fatal::Adopt(format!("cannot take the slot sockets: {e}")))?;
    let front = Front::adopt(config, slots)
        .map_err(|e| Fatal::Adopt(format!("cannot set the front end up: {e}")))?;
    if !front.proxies() {
        return Ok((front, None));
    }
    let sockets = adopt::front_end(handover)
        .map_err(|e| Fatal::Adopt(format!("cannot take the front-end sockets: {e}")))?;
    Ok((front, Some(sockets)))
}

/// The connections an earlier image parked, their sockets taken over (one
/// that cannot be is left to close with the originals).
fn resume_connections(handover: &Handover) -> Vec<Resumed> {
    handover
        .connections
        .iter()
        .filter_map(|parked| match Resumed::take(parked) {
            Ok(resumed) => Some(resumed),
            Err(error) => {
                tracing::warn!(client = %parked.state.client_addr, %error, "upgrade: cannot take over a connection");
                None
            }
        })
        .collect()
}

/// This image serves what the earlier one handed over: the originals are
/// closed, the upgrade counted, and the request that asked for it answered.
fn took_over(shared: &Shared, handover: &Handover, workers: usize, connections: usize) {
    let milliseconds = super::upgrade::wall_ms().saturating_sub(handover.asked_at_ms);
    match &handover.rolled_back {
        None => {
            shared.metrics.upgrade_done.inc();
            tracing::info!(
                from = %handover.from,
                to = crate::upgrade::VERSION,
                milliseconds,
                workers,
                connections,
                "upgrade: the new program serves"
            );
        }
        Some(why) => {
            shared.metrics.upgrade_rolled_back.inc();
            tracing::error!(
                milliseconds,
                workers,
                "upgrade rolled back: the old program took everything back: {why}"
            );
        }
    }
    let done = adopt::Done {
        milliseconds,
        workers,
        connections,
    };
    adopt::answer(handover, &done);
    adopt::release(handover);
}

/// The front end ([`Front`]), and for a proxied one the proxy threads'
/// sockets (a handed front end is the workers' slot sockets, and corral
/// runs no proxy threads).
fn bind_front(config: &Config) -> Result<(Front, Option<FrontEnd>), Fatal> {
    let front = Front::bind(config).map_err(|error| match error {
        FrontError::Rule(source) => Fatal::io("balance.strategy")(source),
        FrontError::Bind { addr, source } => Fatal::Bind {
            what: "front end (one socket per worker)",
            addr,
            source,
        },
    })?;
    if !front.proxies() {
        return Ok((front, None));
    }
    let bound = listener::bind_all(
        &config.listener.binds,
        config.listener.backlog,
        config.runtime.threads,
    )
    .map_err(|(addr, source)| Fatal::Bind {
        what: "front end",
        addr,
        source,
    })?;
    Ok((front, Some(bound)))
}

/// With every address bound: the workers' ports (picked clear of them
/// when the config leaves them to corral and `pick_ports`: an adopted
/// config has its ports), the signal handlers, the fd
/// limit, and the drop of root's privileges.
fn settle_process(config: &mut Config, pick_ports: bool) -> Result<Signals, Fatal> {
    if pick_ports {
        crate::supervisor::ports::settle(config, None).map_err(Fatal::Ports)?;
    }
    let signals = Signals::install().map_err(Fatal::io("cannot install signal handlers"))?;
    raise_fd_limit();
    if let Some(who) = config
        .runtime
        .drop_to
        .as_ref()
        .filter(|_| nix::unistd::geteuid().is_root())
    {
        crate::privileges::drop_to(who).map_err(Fatal::io("cannot drop privileges"))?;
        tracing::info!(uid = ?who.uid, gid = who.gid, "dropped privileges");
    }
    Ok(signals)
}

/// The control plane's tasks: the admin port, the health checks, the
/// sticky and client table sweeps, and the front end's own (a handed
/// front end's steering).
fn start_tasks(
    shared: &Arc<Shared>,
    admin_listener: tokio::net::TcpListener,
    control_tx: mpsc::Sender<super::Request>,
) {
    tokio::spawn(admin::serve(Arc::clone(shared), admin_listener, control_tx));
    tokio::spawn(crate::health::run(Arc::clone(shared)));
    tokio::spawn(crate::dispatch::sweep_sticky(
        Arc::clone(shared),
        |shared| &shared.dispatcher.sticky,
        Shared::config,
    ));
    tokio::spawn(crate::clients::sweep(
        Arc::clone(shared),
        |shared| &shared.clients,
        Shared::config,
    ));
    shared.front.spawn_tasks(shared);
}

/// The graceful stop: drain the open connections, stop the proxy threads
/// and the workers, close the slot sockets.
async fn stop(
    shared: &Arc<Shared>,
    signals: Signals,
    proxies_stop: CancellationToken,
    supervisor: &Supervisor,
    proxies: Vec<std::thread::JoinHandle<()>>,
) {
    drain(shared, signals).await;
    proxies_stop.cancel();
    supervisor.shutdown().await;
    shared.front.close();
    let _ = tokio::task::spawn_blocking(move || {
        for proxy in proxies {
            let _ = proxy.join();
        }
    })
    .await;
    tracing::info!("corral stopped");
}

/// Starts the worker slots and holds the first clients in the backlog
/// until every worker is ready or has failed (`ready_timeout` bounds it),
/// rather than turning them away, or placing sticky clients on whichever
/// worker booted first. A SIGTERM or SIGINT meanwhile ends the wait at
/// once: its name is returned, and corral stops.
async fn first_start(
    supervisor: &Supervisor,
    workers: &crate::config::WorkersConfig,
    signals: &mut Signals,
) -> Option<&'static str> {
    let first_starts = supervisor.start_slots(&Arc::new(workers.clone())).await;
    let all_started = async {
        for started in first_starts {
            let _ = started.await;
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(workers.ready_timeout, all_started) => None,
        name = signals.stop_asked() => Some(name),
    }
}

/// One line that says what runs: front end, admin URL, workers up.
fn announce(shared: &Shared, config: &Config) {
    let snapshot = shared.snapshot();
    let workers: Vec<_> = snapshot.pool.worker_backends().collect();
    let up = workers.iter().filter(|b| b.is_up()).count();
    let pids: Vec<String> = workers
        .iter()
        .filter_map(|b| b.instance().pid.map(|p| p.to_string()))
        .collect();
    let fronts = shared.front.describe();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        strategy = config.strategy.as_str(),
        "corral serving {} | admin http://{} | {up}/{} workers up (pids {}) | {} static backends",
        fronts.join(", "),
        config.admin.bind,
        workers.len(),
        if pids.is_empty() {
            "-".to_string()
        } else {
            pids.join(", ")
        },
        config.backends.len(),
    );
}

/// The graceful stop: no new clients, `/readyz` 503, open connections get
/// up to `timeouts.drain` (a second SIGTERM or SIGINT cuts them at once).
async fn drain(shared: &Arc<Shared>, mut signals: Signals) {
    notify::stopping();
    shared.set_draining();
    shared.stop_accepting();
    shared.front.stop_listening();
    let limit = shared.config().timeouts.drain;
    wait_then_cut(shared, limit, signals.next_stop()).await;
}

/// The drain's deadline: the open connections get up to `limit` to finish
/// (none is added any more), or until `second_stop` (a second stop signal)
/// comes; those still open then are cut and given a second to close.
async fn wait_then_cut(
    shared: &Shared,
    limit: Duration,
    second_stop: impl std::future::Future<Output = &'static str>,
) {
    shared.connections().close();
    let open = shared.connections().len();
    if open > 0 {
        tracing::info!(open, limit = ?limit, "draining open connections");
    }
    tokio::select! {
        _ = tokio::time::timeout(limit, shared.connections().wait()) => {}
        name = second_stop => tracing::warn!("second stop signal ({name}): closing open connections now"),
    }
    if !shared.connections().is_empty() {
        tracing::warn!(
            open = shared.connections().len(),
            "closing connections still open"
        );
        shared.cut_connections();
        let _ = tokio::time::timeout(Duration::from_secs(1), shared.connections().wait()).await;
    }
}

/// Raises the soft limit on open files to the hard limit (as nginx and
/// HAProxy do) and logs the limit corral runs with.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            let raised = soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok();
            let limit = if raised { hard } else { soft };
            tracing::info!(
                open_files = limit,
                raised_from = soft,
                "file descriptor limit"
            );
        }
        Err(error) => tracing::warn!(%error, "cannot read the file descriptor limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn shared() -> Arc<Shared> {
        Shared::for_test("[[backends]]\nname = \"app\"\naddress = \"127.0.0.1:3000\"\n")
    }

    /// An open connection that would never finish by itself: it ends when
    /// connections are cut.
    fn endless_connection(shared: &Arc<Shared>) {
        let own = Arc::clone(shared);
        shared
            .connections()
            .spawn(async move { own.connections_cut().await });
    }

    #[tokio::test(start_paused = true)]
    async fn open_connections_get_the_drain_limit_then_are_cut() {
        let shared = shared();
        endless_connection(&shared);
        let started = Instant::now();
        wait_then_cut(&shared, Duration::from_secs(30), std::future::pending()).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(30) && took < Duration::from_secs(31),
            "cut after {took:?}"
        );
        assert!(shared.cut_signal().is_fired());
        assert!(shared.connections().is_empty(), "the cut one closed");
    }

    #[tokio::test(start_paused = true)]
    async fn connections_that_finish_end_the_drain_uncut() {
        let shared = shared();
        shared
            .connections()
            .spawn(tokio::time::sleep(Duration::from_secs(5)));
        let started = Instant::now();
        wait_then_cut(&shared, Duration::from_secs(30), std::future::pending()).await;
        assert_eq!(started.elapsed().as_secs(), 5);
        assert!(!shared.cut_signal().is_fired(), "nothing was cut");
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_stop_cuts_at_once() {
        let shared = shared();
        endless_connection(&shared);
        let started = Instant::now();
        let second_stop = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "SIGTERM"
        };
        wait_then_cut(&shared, Duration::from_secs(30), second_stop).await;
        assert_eq!(started.elapsed().as_secs(), 2);
        assert!(shared.cut_signal().is_fired());
        assert!(shared.connections().is_empty());
    }
}
