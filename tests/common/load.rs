//! Load: clients making new connections through corral's front end in a
//! loop until stopped, each request noted with whether a mark the test sets
//! (at a kill, say) was already set when the request began.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{eventually, get_from};

/// One request of a [`Load`]: whether the mark was set when it began, and
/// the answer's body or why there was none.
pub struct Request {
    pub after_mark: bool,
    pub answer: Result<String, String>,
}

/// What the clients of a [`Load`] saw, once stopped.
pub struct Report {
    pub requests: Vec<Request>,
}

impl Report {
    pub fn served(&self) -> usize {
        self.requests.iter().filter(|r| r.answer.is_ok()).count()
    }

    /// The reasons of every failed request.
    pub fn errors(&self) -> Vec<String> {
        self.requests
            .iter()
            .filter_map(|r| r.answer.as_ref().err().cloned())
            .collect()
    }

    /// (served, failed, error texts), the summary most tests assert on.
    pub fn summary(&self) -> (usize, usize, Vec<String>) {
        let errors = self.errors();
        (self.served(), errors.len(), errors)
    }
}

/// Counters shared by the clients and the test.
#[derive(Default)]
struct Counters {
    stop: AtomicBool,
    mark: AtomicBool,
    served: AtomicUsize,
    served_after_mark: AtomicUsize,
}

/// Clients making new connections in a loop until stopped.
pub struct Load {
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<Vec<Request>>>,
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
        let counters = Arc::new(Counters::default());
        let threads = (0..clients)
            .map(|_| {
                let counters = counters.clone();
                std::thread::spawn(move || client(front, &counters, stop_at_error))
            })
            .collect();
        Load { counters, threads }
    }

    /// Marks every request begun from now on as begun after the mark.
    pub fn set_mark(&self) {
        self.counters.mark.store(true, Ordering::SeqCst);
    }

    /// How many requests have been served so far.
    pub fn served(&self) -> usize {
        self.counters.served.load(Ordering::SeqCst)
    }

    /// How many requests begun after the mark have been served so far.
    pub fn served_after_mark(&self) -> usize {
        self.counters.served_after_mark.load(Ordering::SeqCst)
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
        self.report().summary()
    }

    /// Stops the clients; returns every request they made.
    pub fn report(self) -> Report {
        self.counters.stop.store(true, Ordering::SeqCst);
        let requests = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("a load client panicked"))
            .collect();
        Report { requests }
    }
}

/// One client: requests until told to stop (or, with `stop_at_error`, until
/// its first failure), counting what was served.
fn client(front: SocketAddr, counters: &Counters, stop_at_error: bool) -> Vec<Request> {
    let mut requests = Vec::new();
    while !counters.stop.load(Ordering::SeqCst) {
        let after_mark = counters.mark.load(Ordering::SeqCst);
        let answer = get_from(front, None).map_err(|e| e.to_string());
        if answer.is_ok() {
            counters.served.fetch_add(1, Ordering::SeqCst);
            if after_mark {
                counters.served_after_mark.fetch_add(1, Ordering::SeqCst);
            }
        }
        let failed = answer.is_err();
        requests.push(Request { after_mark, answer });
        if failed && stop_at_error {
            break;
        }
    }
    requests
}
