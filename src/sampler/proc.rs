//! Reading `/proc`: every process's `stat` (parent, state, CPU ticks,
//! resident pages), the socket inodes a process holds (`/proc/<pid>/fd`),
//! a process's name (`comm`) and its children. Plain blocking reads, for
//! the sampler's thread ([`super::Sampler`]) and for processes that have
//! no async runtime (the worker shim, the notify hub's thread); nothing on
//! an async thread calls them.

use std::collections::{HashMap, HashSet};

/// The CPU and memory of one process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User plus system CPU seconds, the tree's reaped children included.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub memory_bytes: u64,
    /// Processes in the tree.
    pub processes: usize,
}

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Process {
    pub parent: u32,
    pub cpu_ticks: u64,
    pub rss_pages: u64,
    /// A zombie, dead, or in the middle of exiting (`PF_EXITING`): its
    /// sockets may already be closed while it is not yet a zombie.
    pub exiting: bool,
}

/// Every process on the machine, as one pass read it.
#[derive(Debug, Default)]
pub struct ProcessTable {
    processes: HashMap<u32, Process>,
    children: HashMap<u32, Vec<u32>>,
    tick: f64,
    page: u64,
}

impl ProcessTable {
    /// Reads `/proc`. Processes that exit while it is read are skipped.
    pub fn read() -> ProcessTable {
        let mut processes = HashMap::new();
        for pid in pids() {
            if let Some(process) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|text| parse_stat(&text))
            {
                processes.insert(pid, process);
            }
        }
        ProcessTable::from_processes(processes)
    }

    pub(crate) fn from_processes(processes: HashMap<u32, Process>) -> ProcessTable {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (&pid, process) in &processes {
            children.entry(process.parent).or_default().push(pid);
        }
        // SAFETY: sysconf only reads a configuration value.
        let (tick, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        ProcessTable {
            processes,
            children,
            tick: if tick > 0 { tick as f64 } else { 100.0 },
            page: if page > 0 { page as u64 } else { 4096 },
        }
    }

    /// The pids whose parent is `pid`.
    pub fn children(&self, pid: u32) -> Vec<u32> {
        self.children.get(&pid).cloned().unwrap_or_default()
    }

    /// `root` and all its descendants (empty if `root` is gone).
    pub fn tree_pids(&self, root: u32) -> Vec<u32> {
        let mut seen = Vec::new();
        if !self.processes.contains_key(&root) {
            return seen;
        }
        let mut stack = vec![root];
        while let Some(pid) = stack.pop() {
            if seen.contains(&pid) || !self.processes.contains_key(&pid) {
                continue;
            }
            seen.push(pid);
            if let Some(kids) = self.children.get(&pid) {
                stack.extend(kids.iter().copied());
            }
        }
        seen
    }

    /// The usage of `root` and all its descendants; `None` if `root` is gone.
    pub fn tree(&self, root: u32) -> Option<Usage> {
        let pids = self.tree_pids(root);
        if pids.is_empty() {
            return None;
        }
        let (ticks, pages) = pids
            .iter()
            .filter_map(|pid| self.processes.get(pid))
            .fold((0u64, 0u64), |(t, p), process| {
                (t + process.cpu_ticks, p + process.rss_pages)
            });
        Some(Usage {
            cpu_seconds: ticks as f64 / self.tick,
            memory_bytes: pages * self.page,
            processes: pids.len(),
        })
    }

    /// True when `pid` is gone, a zombie, or exiting.
    pub fn is_exiting(&self, pid: u32) -> bool {
        self.processes.get(&pid).is_none_or(|p| p.exiting)
    }
}

/// The pids `/proc` lists.
pub(crate) fn pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// The socket inodes process `pid` holds (`/proc/<pid>/fd`).
pub(crate) fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| socket_inode(target.to_str()?))
        .collect()
}

/// The inode of an fd link's text `socket:[N]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A process's name (`/proc/<pid>/comm`).
pub(crate) fn command(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// The pids whose parent is `pid`: its main thread's children list, or
/// (on kernels without it) a whole pass over `/proc`. For the worker
/// shim, which reaps its worker's tree.
pub fn children_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => ProcessTable::read().children(pid),
    }
}

/// The parent pid of `pid`. For the notify hub's own thread, which walks a
/// sender's ancestry.
pub fn parent_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|p| p.parent)
}

/// Parent, state, flags, CPU ticks (utime + stime + cutime + cstime) and
/// RSS pages from the text of `/proc/<pid>/stat`.
pub(crate) fn parse_stat(text: &str) -> Option<Process> {
    /// PF_EXITING in the flags field.
    const PF_EXITING: u64 = 0x4;
    // The command name is in parentheses and may hold spaces or ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let state = fields.first().copied().unwrap_or("X");
    let flags = number(6).unwrap_or(0);
    Some(Process {
        parent: u32::try_from(number(1)?).ok()?,
        cpu_ticks: number(11)? + number(12)? + number(13)? + number(14)?,
        rss_pages: number(21)?,
        exiting: matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parent: u32, cpu_ticks: u64, rss_pages: u64) -> Process {
        Process {
            parent,
            cpu_ticks,
            rss_pages,
            exiting: false,
        }
    }

    #[test]
    fn a_tree_sums_its_descendants() {
        let table = ProcessTable::from_processes(HashMap::from([
            (10, p(1, 100, 10)),
            (11, p(10, 50, 5)),
            (12, p(11, 50, 5)),
            (20, p(1, 999, 999)),
        ]));
        let usage = table.tree(10).unwrap();
        assert_eq!(usage.processes, 3);
        assert_eq!(usage.memory_bytes, 20 * table.page);
        assert!((usage.cpu_seconds - 200.0 / table.tick).abs() < 1e-9);
        assert!(table.tree(99).is_none());
        assert!(table.is_exiting(99));
        assert!(!table.is_exiting(12));
    }

    #[test]
    fn this_process_is_read() {
        let table = ProcessTable::read();
        let usage = table.tree(std::process::id()).unwrap();
        assert!(usage.memory_bytes > 0);
        assert!(!table.is_exiting(std::process::id()));
    }

    #[test]
    fn stat_with_spaces_in_the_name_parses() {
        let text = "42 (a b) c) S 7 42 42 0 -1 4194304 100 0 0 0 3 4 5 6 20 0 1 0 100 1000 77 18446744073709551615";
        let process = parse_stat(text).unwrap();
        assert_eq!(
            (process.parent, process.cpu_ticks, process.rss_pages),
            (7, 18, 77)
        );
        assert!(!process.exiting);
        let zombie = text.replace(") S ", ") Z ");
        assert!(parse_stat(&zombie).unwrap().exiting);
        let exiting = text.replace("4194304", "4194308");
        assert!(parse_stat(&exiting).unwrap().exiting);
    }

    #[test]
    fn socket_links_name_their_inode() {
        assert_eq!(socket_inode("socket:[1234]"), Some(1234));
        assert_eq!(socket_inode("pipe:[1234]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }
}
