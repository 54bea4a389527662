//! File descriptors across an `execve` of corral (`corral upgrade`): the
//! close-on-exec flag, and duplicates taken from what an earlier image
//! left open. A leaf module: it knows no other part of corral.

use std::io;

/// The environment variable that names the handover's descriptor in a new
/// image of corral (`corral upgrade`); no worker is given it.
pub const HANDOVER_ENV: &str = "CORRAL_HANDOVER_FD";

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Sets or clears close-on-exec on `fd`.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only read and set a flag of the descriptor.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let wanted = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        if libc::fcntl(fd, libc::F_SETFD, wanted) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A close-on-exec duplicate of `fd` numbered `at_least` or above, owned by
/// the caller; `fd` itself stays open as it was.
pub fn duplicate(fd: RawFd, at_least: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor, owned by the result.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, at_least) };
    if copy < 0 {
        return Err(io::Error::other(format!(
            "cannot duplicate descriptor {fd}: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: just created, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}
