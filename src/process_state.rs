//! What the kernel says about a process corral started, read from
//! `/proc/<pid>/stat` (a leaf: the data path asks it without reaching into
//! the supervisor).

/// True when process `pid` is gone, a zombie, or in the middle of exiting
/// (its sockets may already be closed while it is not yet a zombie).
pub fn is_exiting(pid: u32) -> bool {
    /// PF_EXITING in /proc/<pid>/stat's flags field.
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return true;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().copied().unwrap_or("X");
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0
}
