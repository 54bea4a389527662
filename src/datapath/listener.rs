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

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
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
/// tasks run (HAProxy's `tune.maxaccept` has the same job).
///
/// - Accepting the whole backlog at once (up to tokio's budget of 128) put
///   a hundred new connections through each step together: each one's
///   sockets were cold again by its next step, and at 1,000 clients opening
///   a connection per request corral spent 23% more CPU per connection than
///   HAProxy. With 8 it spends as much or less; 1, 2, 4, 16 and 32 measured
///   worse than 8 (the README's Performance section has the runs).
/// - A burst, though (10,000 clients connecting at once), taken in 8 at a
///   time, overflowed the kernel's accept queue, and the handshakes it
///   dropped cost those clients a second or more. So while the queue is at
///   least half full the loop goes on, 8 at a time, up to
///   [`MOST_IN_A_ROW`].
/// - The accept loops run in each proxy thread's own future, not as tasks:
///   a task that lets the others run waits behind every task ready, and
///   thousands are when thousands of clients are open. tokio's
///   current-thread scheduler polls the thread's future, when woken, after
///   every `event_interval` (61) tasks, however many are ready.
const ACCEPTS_PER_TURN: usize = 8;

/// Most clients accepted in a row while the kernel's accept queue stays at
/// least half full (tokio's budget per poll is 128 too).
const MOST_IN_A_ROW: usize = 128;

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
                    let mut accepting = Vec::new();
                    for socket in sockets {
                        // SAFETY: the AsyncFd owns the socket, so its fd stays
                        // open and the same for the AsyncFd's whole life.
                        let registered = unsafe {
                            AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE)
                        };
                        match registered.map_err(|e| e.into_parts().1) {
                            Ok(listener) => {
                                accepting.push(Box::pin(shared.accept_loops().track_future(
                                    accept_loop(Arc::clone(&shared), listener, Arc::clone(&limit)),
                                )));
                            }
                            Err(error) => tracing::error!(%error, "cannot use a front-end socket"),
                        }
                    }
                    // The accept loops run in the thread's own future, not as
                    // tasks: see [`ACCEPTS_PER_TURN`]. They end when accepting
                    // stops; the thread, after the drain.
                    tokio::select! {
                        biased;
                        () = all_of(accepting) => stop.cancelled().await,
                        () = stop.cancelled() => {}
                    }
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
        if accepted_in_a_row > 0
            && accepted_in_a_row % ACCEPTS_PER_TURN == 0
            && (accepted_in_a_row >= MOST_IN_A_ROW || !queue_half_full(listener.get_ref()))
        {
            accepted_in_a_row = 0;
            let_the_thread_run().await;
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

/// Polls every future to its end, dropping each as it ends (a tracked
/// accept loop counts as running until it is dropped).
async fn all_of<F: Future<Output = ()> + Unpin>(futures: Vec<F>) {
    let mut running: Vec<Option<F>> = futures.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        for slot in running.iter_mut() {
            if let Some(future) = slot {
                if Pin::new(future).poll(cx).is_ready() {
                    *slot = None;
                }
            }
        }
        if running.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Lets the thread's other work run once: the caller's waker is woken at
/// once and the call returns on the next poll. From the thread's own
/// future (the accept loops), that poll comes after the next
/// `event_interval` tasks (61) at most, however many are ready.
async fn let_the_thread_run() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Whether the kernel's accept queue of a listening socket is at least
/// half full: for one, `TCP_INFO`'s `tcpi_unacked` is the queue's length
/// and `tcpi_sacked` its limit. Unknown (the call failed) counts as not.
fn queue_half_full(listener: &Socket) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data, zero is a valid value of every field,
    // and the kernel writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let done = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    done == 0 && info.tcpi_sacked > 0 && info.tcpi_unacked.saturating_mul(2) >= info.tcpi_sacked
}

/// An accepted socket as a tokio stream and the peer's address.
fn into_tokio((socket, addr): (Socket, socket2::SockAddr)) -> io::Result<(TcpStream, SocketAddr)> {
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::other("accepted a connection that is not TCP/IP"))?;
    // accept4 made it non-blocking already.
    Ok((TcpStream::from_std(socket.into())?, peer))
}
