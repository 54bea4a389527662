//! The sampler owns `/proc`: it is the only part of corral's master that
//! reads it while serving. One thread ([`Sampler::start`]) makes a pass
//! every [`INTERVAL`] (every process's parent, state, CPU and resident
//! memory) and publishes it as a [`Sample`]; everyone else reads the last
//! sample, and nothing on a proxy thread or the control thread touches
//! the filesystem for it.
//!
//! A reader that needs something newer than the last pass asks for it and
//! waits (asynchronously) for a pass that started after it asked:
//! [`Sampler::taken_after`] (a worker that just started, or one whose
//! connection just ended: is it exiting?), [`Sampler::sockets_of`] (the
//! socket inodes a process tree holds: did the tree accept this
//! connection?) and [`Sampler::holders_of`] (which processes hold these
//! socket inodes: who else listens on the front end?). Requests made
//! while a pass runs are served together by the next one.
//!
//! A leaf: it uses nothing else of corral.

pub mod proc;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use proc::{ProcessTable, Usage};

/// How often a pass is made unasked.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Another process's socket, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its name (`/proc/<pid>/comm`), if it could be read.
    pub command: Option<String>,
}

/// What one pass saw.
#[derive(Debug)]
pub struct Sample {
    /// The pass's number: 1 for the first (0: none was made yet).
    pub generation: u64,
    /// When the pass started: everything it says is at least this new.
    pub taken: Instant,
    table: ProcessTable,
    /// The socket inodes held by each process tree a reader asked about.
    sockets: HashMap<u32, HashSet<u64>>,
    /// The first process found holding each socket inode a reader asked
    /// about.
    holders: HashMap<u64, Holder>,
}

impl Sample {
    /// The CPU and memory of `root`'s process tree; `None` if it is gone
    /// (or started after this pass).
    pub fn tree(&self, root: u32) -> Option<Usage> {
        self.table.tree(root)
    }

    /// True when `pid` is gone, a zombie, or in the middle of exiting.
    pub fn is_exiting(&self, pid: u32) -> bool {
        self.table.is_exiting(pid)
    }

    /// Does a process of `root`'s tree hold the socket `inode`? False when
    /// the tree was not asked about ([`Sampler::sockets_of`]).
    pub fn tree_holds_socket(&self, root: u32, inode: u64) -> bool {
        self.sockets
            .get(&root)
            .is_some_and(|held| held.contains(&inode))
    }

    /// The socket inodes `root`'s process tree holds; empty when the tree
    /// was not asked about ([`Sampler::sockets_of`]) or is gone.
    pub fn sockets_held(&self, root: u32) -> HashSet<u64> {
        self.sockets.get(&root).cloned().unwrap_or_default()
    }

    /// Who holds socket `inode`, if it was asked about
    /// ([`Sampler::holders_of`]) and found.
    pub fn holder(&self, inode: u64) -> Option<&Holder> {
        self.holders.get(&inode)
    }

    fn empty() -> Sample {
        Sample {
            generation: 0,
            taken: Instant::now(),
            table: ProcessTable::default(),
            sockets: HashMap::new(),
            holders: HashMap::new(),
        }
    }
}

/// What readers asked the next pass to look at, beyond the processes.
#[derive(Default)]
struct Asked {
    /// The generation of the next pass to start: the one that serves the
    /// requests made until it starts.
    next: u64,
    /// A reader waits for a pass that starts after its request.
    pass: bool,
    /// Process trees whose sockets to list.
    sockets_of: HashSet<u32>,
    /// Socket inodes whose holders to name.
    holders_of: HashSet<u64>,
}

struct Requests {
    asked: Mutex<Asked>,
    wake: Condvar,
}

/// The handle to the sampler's thread and its last sample. Cheap to
/// clone; the thread ends once every handle is gone.
#[derive(Clone)]
pub struct Sampler {
    requests: Arc<Requests>,
    latest: watch::Receiver<Arc<Sample>>,
}

impl Sampler {
    /// Starts the sampler's thread; its first pass starts at once.
    pub fn start() -> std::io::Result<Sampler> {
        Sampler::start_every(INTERVAL)
    }

    /// A sampler that makes a pass unasked every `interval`.
    pub fn start_every(interval: Duration) -> std::io::Result<Sampler> {
        let requests = Arc::new(Requests {
            asked: Mutex::new(Asked {
                next: 1,
                pass: true,
                ..Asked::default()
            }),
            wake: Condvar::new(),
        });
        let (publish, latest) = watch::channel(Arc::new(Sample::empty()));
        let thread_requests = Arc::clone(&requests);
        std::thread::Builder::new()
            .name("corral-sampler".into())
            .spawn(move || run(&thread_requests, &publish, interval))?;
        Ok(Sampler { requests, latest })
    }

    /// The last pass, however old (at most about [`INTERVAL`]).
    pub fn latest(&self) -> Arc<Sample> {
        Arc::clone(&self.latest.borrow())
    }

    /// A pass that started at or after `instant`: the last one if it did,
    /// else the next one, asked for now.
    pub async fn taken_after(&self, instant: Instant) -> Arc<Sample> {
        self.wait_for(Some(instant), |_| {}).await
    }

    /// A pass that started now or later and listed the sockets held by
    /// `root`'s process tree.
    pub async fn sockets_of(&self, root: u32) -> Arc<Sample> {
        self.wait_for(None, |asked| {
            asked.sockets_of.insert(root);
        })
        .await
    }

    /// A pass that started now or later and named the processes holding
    /// each of `inodes` (the first one found for each).
    pub async fn holders_of(&self, inodes: &[u64]) -> Arc<Sample> {
        self.wait_for(None, |asked| {
            asked.holders_of.extend(inodes.iter().copied())
        })
        .await
    }

    /// The last pass if it started at or after `recent_enough`, else (and
    /// always without it) the pass that takes the request `ask` writes.
    async fn wait_for(
        &self,
        recent_enough: Option<Instant>,
        ask: impl FnOnce(&mut Asked),
    ) -> Arc<Sample> {
        let mut latest = self.latest.clone();
        if let Some(instant) = recent_enough {
            let current = latest.borrow_and_update();
            if current.generation > 0 && current.taken >= instant {
                return Arc::clone(&current);
            }
        }
        // The pass that takes this request starts after it, under the
        // same lock: its generation is the one to wait for.
        let serving = {
            let mut asked = self.requests.lock();
            asked.pass = true;
            ask(&mut asked);
            asked.next
        };
        self.requests.wake.notify_one();
        loop {
            if latest.changed().await.is_err() {
                // The thread is gone (it cannot be, while a handle
                // lives): the last pass is all there is.
                return Arc::clone(&latest.borrow());
            }
            let current = latest.borrow_and_update();
            if current.generation >= serving {
                return Arc::clone(&current);
            }
        }
    }
}

impl Requests {
    fn lock(&self) -> MutexGuard<'_, Asked> {
        self.asked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The sampler's thread: a pass every `interval`, or sooner when asked,
/// until no handle is left.
fn run(requests: &Requests, publish: &watch::Sender<Arc<Sample>>, interval: Duration) {
    loop {
        let (asked, generation, taken) = {
            let mut asked = requests.lock();
            let deadline = Instant::now() + interval;
            while !asked.pass {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                asked = requests
                    .wake
                    .wait_timeout(asked, left)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
            if publish.is_closed() {
                return;
            }
            // Taken under the lock: a request made after it is served by
            // the next pass, whose start is later than the request.
            let generation = asked.next;
            let taken = Asked {
                next: generation + 1,
                ..Asked::default()
            };
            (
                std::mem::replace(&mut *asked, taken),
                generation,
                Instant::now(),
            )
        };
        let sample = pass(generation, taken, &asked);
        if publish.send(Arc::new(sample)).is_err() {
            return;
        }
    }
}

/// One pass over `/proc`.
fn pass(generation: u64, taken: Instant, asked: &Asked) -> Sample {
    let table = ProcessTable::read();
    let sockets = asked
        .sockets_of
        .iter()
        .map(|&root| {
            let held = table
                .tree_pids(root)
                .into_iter()
                .flat_map(proc::socket_inodes)
                .collect();
            (root, held)
        })
        .collect();
    Sample {
        generation,
        taken,
        holders: name_holders(&asked.holders_of),
        table,
        sockets,
    }
}

/// The first process found holding each of `inodes`.
fn name_holders(inodes: &HashSet<u64>) -> HashMap<u64, Holder> {
    let mut found = HashMap::new();
    if inodes.is_empty() {
        return found;
    }
    for pid in proc::pids() {
        for inode in proc::socket_inodes(pid).intersection(inodes) {
            found.entry(*inode).or_insert_with(|| Holder {
                pid,
                command: proc::command(pid),
            });
        }
        if found.len() == inodes.len() {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn inode_of(socket: &impl AsRawFd) -> u64 {
        // SAFETY: fstat writes a `stat` into the zeroed buffer.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(socket.as_raw_fd(), &mut stat) }, 0);
        stat.st_ino
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_process_started_before_the_request_is_in_the_answer() {
        let sampler = Sampler::start_every(Duration::from_secs(3600)).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let sample = runtime().block_on(sampler.taken_after(Instant::now()));
        let usage = sample.tree(child.id()).expect("the child is in the pass");
        assert!(usage.memory_bytes > 0 && usage.processes == 1);
        assert!(!sample.is_exiting(child.id()));
        let mine = sample.tree(std::process::id()).unwrap();
        assert!(mine.processes >= 2, "the child is in this process's tree");
        child.kill().unwrap();
        child.wait().unwrap();
        let sample = runtime().block_on(sampler.taken_after(Instant::now()));
        assert!(sample.is_exiting(child.id()));
        assert!(sample.tree(child.id()).is_none());
    }

    #[test]
    fn the_last_pass_serves_readers_that_need_nothing_newer() {
        let sampler = Sampler::start_every(Duration::from_secs(3600)).unwrap();
        let first = runtime().block_on(sampler.taken_after(Instant::now()));
        let again = runtime().block_on(sampler.taken_after(first.taken));
        assert_eq!(again.generation, first.generation);
        assert_eq!(sampler.latest().generation, first.generation);
    }

    #[test]
    fn a_trees_sockets_and_a_sockets_holder_are_found() {
        let sampler = Sampler::start_every(Duration::from_secs(3600)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = inode_of(&listener);
        let me = std::process::id();
        let sample = runtime().block_on(sampler.sockets_of(me));
        assert!(sample.tree_holds_socket(me, inode));
        assert!(!sample.tree_holds_socket(me, u64::MAX));
        let sample = runtime().block_on(sampler.holders_of(&[inode]));
        assert_eq!(sample.holder(inode).map(|h| h.pid), Some(me));
        assert!(sample.holder(inode).unwrap().command.is_some());
    }

    #[test]
    fn concurrent_requests_are_all_answered() {
        let sampler = Sampler::start_every(Duration::from_secs(3600)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = inode_of(&listener);
        let me = std::process::id();
        let asked = Instant::now();
        let inodes = [inode];
        let (a, b, c, d) = runtime().block_on(async {
            tokio::join!(
                sampler.sockets_of(me),
                sampler.sockets_of(me),
                sampler.taken_after(asked),
                sampler.holders_of(&inodes),
            )
        });
        assert!(a.tree_holds_socket(me, inode) && b.tree_holds_socket(me, inode));
        assert!(c.taken >= asked && c.tree(me).is_some());
        assert_eq!(d.holder(inode).map(|h| h.pid), Some(me));
    }
}
