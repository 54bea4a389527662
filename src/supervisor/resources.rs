//! What each worker costs: CPU time and resident memory of its whole
//! process tree (the worker and everything it started: `npm start` and
//! shell wrappers are common), read from `/proc`. One pass over `/proc`
//! serves every worker, so a scrape costs the same with 2 workers or 200.
//! Also which tree holds a given socket (the `fd`-mode health check asks
//! who accepted its connection).

use std::collections::HashMap;

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
#[derive(Debug, Clone, Copy)]
struct Process {
    parent: u32,
    cpu_ticks: u64,
    rss_pages: u64,
}

/// Every process on the machine, read once.
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
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                if let Some(process) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|text| parse_stat(&text))
                {
                    processes.insert(pid, process);
                }
            }
        }
        ProcessTable::from_processes(processes)
    }

    fn from_processes(processes: HashMap<u32, Process>) -> ProcessTable {
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

    /// The usage of `root` and all its descendants; `None` if `root` is gone.
    pub fn tree(&self, root: u32) -> Option<Usage> {
        self.processes.get(&root)?;
        let mut usage = Usage::default();
        let mut ticks = 0u64;
        let mut pages = 0u64;
        let mut stack = vec![root];
        while let Some(pid) = stack.pop() {
            let Some(process) = self.processes.get(&pid) else {
                continue;
            };
            usage.processes += 1;
            ticks += process.cpu_ticks;
            pages += process.rss_pages;
            if let Some(kids) = self.children.get(&pid) {
                stack.extend(kids.iter().copied().filter(|&k| k != pid));
            }
        }
        usage.cpu_seconds = ticks as f64 / self.tick;
        usage.memory_bytes = pages * self.page;
        Some(usage)
    }
}

/// The usage of one process tree, found by following each process's
/// children (`/proc/<pid>/task/<tid>/children`): cheap enough to sample
/// one worker every second. `None` if `root` is gone.
pub fn tree(root: u32) -> Option<Usage> {
    let processes: HashMap<u32, Process> = tree_pids(root)
        .into_iter()
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat(&text)?))
        })
        .collect();
    ProcessTable::from_processes(processes).tree(root)
}

/// Does a process of `root`'s tree hold the socket whose inode is `inode`
/// (the accepting side of a connection)?
pub fn tree_holds_socket(root: u32, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    tree_pids(root).into_iter().any(|pid| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
        })
    })
}

/// The inodes of every socket the processes of `root`'s tree hold.
pub fn tree_socket_inodes(root: u32) -> std::collections::HashSet<u64> {
    tree_pids(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .flat_map(|fds| fds.flatten())
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// `root` and its descendants, following each process's children
/// (listed per thread that forked them).
fn tree_pids(root: u32) -> Vec<u32> {
    let mut seen = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if seen.contains(&pid) || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        seen.push(pid);
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        for thread in threads.flatten() {
            let Ok(children) = std::fs::read_to_string(thread.path().join("children")) else {
                continue;
            };
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    seen
}

/// Parent, CPU ticks (utime + stime + cutime + cstime) and RSS pages from
/// the text of `/proc/<pid>/stat`.
fn parse_stat(text: &str) -> Option<Process> {
    // The command name is in parentheses and may hold spaces or ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Process {
        parent: u32::try_from(number(1)?).ok()?,
        cpu_ticks: number(11)? + number(12)? + number(13)? + number(14)?,
        rss_pages: number(21)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_sums_its_descendants() {
        let p = |parent, cpu_ticks, rss_pages| Process {
            parent,
            cpu_ticks,
            rss_pages,
        };
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
    }

    #[test]
    fn this_process_is_read() {
        let table = ProcessTable::read();
        let usage = table.tree(std::process::id()).unwrap();
        assert!(usage.memory_bytes > 0);
        let walked = tree(std::process::id()).unwrap();
        assert!(walked.memory_bytes > 0 && walked.processes >= 1);
    }

    #[test]
    fn stat_with_spaces_in_the_name_parses() {
        let text = "42 (a b) c) S 7 42 42 0 -1 4194304 100 0 0 0 3 4 5 6 20 0 1 0 100 1000 77 18446744073709551615";
        let process = parse_stat(text).unwrap();
        assert_eq!(
            (process.parent, process.cpu_ticks, process.rss_pages),
            (7, 18, 77)
        );
    }
}
