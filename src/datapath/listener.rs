//! The front end: sockets bound with the configured backlog, the proxy
//! threads, and an accept loop that takes a connection-limit permit *before*
//! `accept()`, so clients beyond `max_connections` wait in the kernel's
//! backlog instead of being refused. The loop survives every accept error;
//! on fd exhaustion it backs off instead of spinning.
//!
//! Each proxy thread runs its own single-threaded runtime with its own
//! SO_REUSEPORT socket per front-end address: the kernel spreads new
//! connections over the threads (at random, by a program attached to the
//! group that picks only corral's own sockets: another process that joins
//! the address with SO_REUSEPORT gets no client), and a connection lives on
//! one thread from accept to close, with no cross-thread wake-ups (measured
//! faster than one acceptor feeding a work-stealing runtime; see the
//! README's Performance section).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::connection;
use super::parked::Resumed;
use crate::health::is_local_shortage;
use crate::shared::Shared;

/// How long the accept loop pauses after EMFILE, ENFILE and the like.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Most clients accepted in a row before the loop lets the thread's other
/// tasks and its event loop run (HAProxy's `tune.maxaccept` has the same
/// job). Accepting the whole backlog at once (up to tokio's budget of 128)
/// put a hundred new connections through each step together: each one's
/// sockets were cold again by its next step, and at 1,000 clients opening
/// a connection per request corral spent 23% more CPU per connection than
/// HAProxy; with 8, 0.82-0.90 of what it spent before. 1, 2, 4, 16, 32 and
/// 64 measured worse than 8. The cost: a burst of thousands of clients at
/// once is taken in more slowly, and overflows a short `listener.backlog`
/// more often. Going on while the kernel's queue was half full fixed that
/// but brought the old cost back under a steady load of thousands of
/// clients, where the queue is always half full (the README's Performance
/// section has the runs).
const ACCEPTS_PER_TURN: usize = 8;

/// How soon a timer is always due on a proxy thread (see
/// [`keep_a_timer_due`]); below `timeouts.connect`'s usual values.
const TIMER_HORIZON: Duration = Duration::from_millis(250);

/// Keeps a timer due within [`TIMER_HORIZON`] on this thread, for ever.
/// tokio's time driver wakes its own thread (a write(2) to its eventfd,
/// and a turn of the event loop) whenever a new timer is due sooner than
/// every timer already set. Each connection's connect timeout (2 s by
/// default, against idle timeouts of an hour) was that soonest timer, and
/// cost one such wake-up per new connection; with this one due first it
/// costs none. Four wake-ups a second on an idle thread.
async fn keep_a_timer_due() {
    let mut tick = tokio::time::interval(TIMER_HORIZON);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// The bound front-end sockets: `per_thread[t]` holds thread `t`'s socket
/// for every configured address.
pub struct FrontEnd {
    pub per_thread: Vec<Vec<Socket>>,
}

/// Binds every front-end address once per proxy thread. Fails with the
/// address that could not be bound.
pub fn bind_all(
    binds: &[SocketAddr],
    backlog: u32,
    threads: usize,
) -> Result<FrontEnd, (SocketAddr, io::Error)> {
    let mut per_thread: Vec<Vec<Socket>> = (0..threads.max(1)).map(|_| Vec::new()).collect();
    for &wanted in binds {
        // SO_REUSEPORT would let us join another process's group on the same
        // port silently: make sure nobody holds it first.
        let probe = socket(wanted, false).and_then(|s| s.bind(&wanted.into()).map(|()| s));
        let addr = match probe {
            Ok(probe) => {
                let bound = probe
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .unwrap_or(wanted);
                drop(probe);
                bound
            }
            Err(e) => return Err((wanted, e)),
        };
        for sockets in per_thread.iter_mut() {
            let listener = socket(addr, true)
                .and_then(|s| {
                    s.bind(&addr.into())?;
                    s.listen(backlog as i32)?;
                    Ok(s)
                })
                .map_err(|e| (wanted, e))?;
            sockets.push(listener);
        }
        // The front end is corral's alone: the group's program picks only
        // among these sockets, so a process that joins the address later
        // with SO_REUSEPORT gets no client.
        if let Some(first) = per_thread.first().and_then(|s| s.last()) {
            crate::steering::program::only_own(per_thread.len())
                .attach(first)
                .map_err(|e| (wanted, e))?;
        }
    }
    Ok(FrontEnd { per_thread })
}

fn socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // "[::]:8080" means IPv6 only; list "0.0.0.0:8080" too for both.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket)
}

/// Starts one proxy thread per entry of `front.per_thread`, each with its
/// own runtime accepting on its own sockets. The threads run until `stop`
/// is cancelled (after the drain).
pub fn start_threads(
    shared: &Arc<Shared>,
    front: FrontEnd,
    stop: CancellationToken,
    resumed: Vec<Resumed>,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let limit = Arc::new(Semaphore::new(shared.config().listener.max_connections));
    let mut handles = Vec::new();
    // Connections an earlier image parked (`corral upgrade`), dealt out
    // over the threads.
    let threads = front.per_thread.len().max(1);
    let mut dealt: Vec<Vec<Resumed>> = (0..threads).map(|_| Vec::new()).collect();
    for (n, connection) in resumed.into_iter().enumerate() {
        dealt[n % threads].push(connection);
    }
    for ((index, sockets), resumed) in front.per_thread.into_iter().enumerate().zip(dealt) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::clone(shared);
        let limit = Arc::clone(&limit);
        let stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("corral-proxy-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(keep_a_timer_due());
                    for connection in resumed {
                        // Within max_connections as any other; one over it
                        // (the limit was lowered) is served all the same.
                        let permit = Arc::clone(&limit).try_acquire_owned().ok();
                        let shared_here = Arc::clone(&shared);
                        shared.connections().spawn(async move {
                            let _permit = permit;
                            connection::resume(shared_here, connection).await;
                        });
                    }
                    for socket in sockets {
                        // SAFETY: the AsyncFd owns the socket, so its fd stays
                        // open and the same for the AsyncFd's whole life.
                        let registered = unsafe {
                            AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE)
                        };
                        match registered.map_err(|e| e.into_parts().1) {
                            Ok(listener) => {
                                shared.accept_loops().spawn(accept_loop(
                                    Arc::clone(&shared),
                                    listener,
                                    Arc::clone(&limit),
                                ));
                            }
                            Err(error) => tracing::error!(%error, "cannot use a front-end socket"),
                        }
                    }
                    stop.cancelled().await;
                });
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Accepts clients until `shared.stop_accepting` is cancelled. `limit` is
/// shared by every listener of every thread: it is `max_connections`.
///
/// The loop first waits until a client is pending on *this* socket, then
/// takes a permit, then accepts: a permit is never held by a thread whose
/// backlog is empty while a client waits in another thread's.
pub async fn accept_loop(shared: Arc<Shared>, listener: AsyncFd<Socket>, limit: Arc<Semaphore>) {
    // One wait for the stop for the loop's whole life: a new one per client
    // would join and leave the token's waiter list (a lock each) every time.
    let mut stop = std::pin::pin!(shared.accepting_stopped());
    let mut accepted_in_a_row = 0;
    loop {
        if accepted_in_a_row == ACCEPTS_PER_TURN {
            accepted_in_a_row = 0;
            // Woken again once the thread's other ready tasks have run and
            // its event loop was polled: the clients just accepted take
            // their first steps first.
            tokio::task::yield_now().await;
        }
        let mut ready = tokio::select! {
            ready = listener.readable() => match ready {
                Ok(ready) => ready,
                Err(error) => {
                    tracing::error!(%error, "front-end socket failed");
                    return;
                }
            },
            _ = &mut stop => return,
        };
        let permit = match Arc::clone(&limit).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // A client is pending on this thread's socket (a client lands
                // on one socket of the group) and must wait for a permit.
                shared.metrics.errors.limit.inc();
                tokio::select! {
                    permit = Arc::clone(&limit).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                    _ = &mut stop => return,
                }
            }
        };
        let accepted = match ready.try_io(|socket| {
            socket
                .get_ref()
                .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        }) {
            Ok(accepted) => accepted,
            Err(_would_block) => {
                // The backlog is empty (or the wake-up was spurious); the
                // permit goes back.
                accepted_in_a_row = 0;
                continue;
            }
        };
        match accepted.and_then(into_tokio) {
            Ok((stream, peer)) => {
                accepted_in_a_row += 1;
                shared.metrics.accepted.inc();
                let task_shared = Arc::clone(&shared);
                // serve() is called inside the block: a future made outside
                // and awaited inside would be held twice (once captured, once
                // being awaited).
                shared.connections().spawn(async move {
                    connection::serve(task_shared, stream, peer).await;
                    drop(permit);
                });
            }
            Err(error) if is_local_shortage(&error) => {
                shared.metrics.accept_errors.inc();
                shared.metrics.errors.resources.inc();
                tracing::error!(%error, "accept failed: out of resources; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(error) => {
                // ECONNABORTED and friends: that client is gone; the rest are fine.
                shared.metrics.accept_errors.inc();
                tracing::debug!(%error, "accept failed");
            }
        }
    }
}

/// An accepted socket as a tokio stream and the peer's address.
fn into_tokio((socket, addr): (Socket, socket2::SockAddr)) -> io::Result<(TcpStream, SocketAddr)> {
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::other("accepted a connection that is not TCP/IP"))?;
    // accept4 made it non-blocking already.
    Ok((TcpStream::from_std(socket.into())?, peer))
}
