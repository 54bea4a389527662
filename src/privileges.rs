//! Dropping root after the sockets are bound (`runtime.user` and
//! `runtime.group`). Workers are forked later, so they run as that user too.

use std::ffi::CString;
use std::io;

use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};

use crate::config::Privileges;

/// Becomes `who` for good: supplementary groups, then group, then user (the
/// order that leaves no way back).
pub fn drop_to(who: &Privileges) -> io::Result<()> {
    let gid = Gid::from_raw(who.gid);
    match &who.user {
        Some(name) => {
            let name = CString::new(name.as_str())
                .map_err(|_| io::Error::other("user name contains a NUL byte"))?;
            nix::unistd::initgroups(&name, gid)?;
        }
        None => setgroups(&[gid])?,
    }
    setgid(gid)?;
    if let Some(uid) = who.uid {
        setuid(Uid::from_raw(uid))?;
        // Make sure there is no way back to root.
        if uid != 0 && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(io::Error::other("could regain root after dropping it"));
        }
    }
    Ok(())
}
