//! Load: clients making new connections through corral's front end in a
//! loop until stopped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{eventually, get_from};

/// Clients making new connections in a loop until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    /// `clients` clients, each sending one request per connection through
    /// `front`; a failed request is counted and the client goes on.
    pub fn start(front: SocketAddr, clients: usize) -> Load {
        Load::spawn(front, clients, false)
    }

    /// As [`Load::start`], but a client stops at its first failed request
    /// (against a blocked corral there is no use piling up more).
    pub fn start_until_error(front: SocketAddr, clients: usize) -> Load {
        Load::spawn(front, clients, true)
    }

    fn spawn(front: SocketAddr, clients: usize, stop_at_error: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match get_from(front, None) {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                errors.push(e.to_string());
                                failed.fetch_add(1, Ordering::Relaxed);
                                if stop_at_error {
                                    break;
                                }
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// How many requests have been served so far.
    pub fn served(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests have been served than now: the clients
    /// have run through whatever happened before the call.
    pub fn serves_more(&self, n: usize) -> bool {
        let now = self.served();
        eventually(Duration::from_secs(15), || self.served() >= now + n)
    }

    /// Have all the clients stopped of themselves (with
    /// [`Load::start_until_error`], each at its first failed request)?
    pub fn all_stopped(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stops the clients; returns (served, failed, error texts).
    pub fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}
