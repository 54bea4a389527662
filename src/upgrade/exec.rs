//! The exec: this process becomes the new program (or, on the way back, the
//! old one), with the same arguments and environment, plus the handover's
//! descriptor in [`super::handover::ENV`].

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::handover::ENV;

/// The running program's file, open: what a new image that cannot adopt
/// executes to hand everything back. Close-on-exec until the caller clears
/// it just before the exec.
pub fn open_own_program() -> io::Result<OwnedFd> {
    // SAFETY: open of a constant path; the descriptor is owned by the result.
    let fd = unsafe { libc::open(c"/proc/self/exe".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Executes `program` with this process's arguments; returns only if the
/// exec failed.
pub fn into(program: &Path, handover: RawFd) -> io::Error {
    let Ok(path) = CString::new(program.as_os_str().as_bytes()) else {
        return io::Error::other("the program path holds a NUL byte");
    };
    let (argv, envp) = match arguments(handover) {
        Ok(both) => both,
        Err(error) => return error,
    };
    match nix::unistd::execve(&path, &argv, &envp) {
        Err(errno) => io::Error::from(errno),
        Ok(never) => match never {},
    }
}

/// Executes the program open at `old` (the image before an upgrade that
/// could not adopt); returns only if the exec failed.
pub fn back(old: RawFd, handover: RawFd) -> io::Error {
    let (argv, envp) = match arguments(handover) {
        Ok(both) => both,
        Err(error) => return error,
    };
    match nix::unistd::fexecve(old, &argv, &envp) {
        Err(errno) => io::Error::from(errno),
        Ok(never) => match never {},
    }
}

/// This process's argv, and its environment with [`ENV`] naming `handover`.
fn arguments(handover: RawFd) -> io::Result<(Vec<CString>, Vec<CString>)> {
    let c = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| io::Error::other("a NUL byte in an argument"))
    };
    let argv = std::env::args_os()
        .map(|a| c(a.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let mut envp = Vec::new();
    for (name, value) in std::env::vars_os() {
        if name == ENV {
            continue;
        }
        let mut pair = OsString::from(&name);
        pair.push("=");
        pair.push(&value);
        envp.push(c(pair.as_bytes())?);
    }
    envp.push(c(format!("{ENV}={handover}").as_bytes())?);
    Ok((argv, envp))
}
