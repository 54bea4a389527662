//! The lifeline: how a worker's shim learns that corral is gone.
//!
//! corral holds the write end of one pipe for as long as it runs; every
//! shim holds the read end. When the last write end closes (corral exited,
//! or was killed with SIGKILL), the kernel raises SIGIO in every shim that
//! armed the read end with `O_ASYNC`, and the shim takes its worker's tree
//! down. An `execve` of corral itself (`corral upgrade`) keeps the write end
//! open, so the workers stay.
//!
//! This replaces `PR_SET_PDEATHSIG`, which fires when the *thread* that
//! forked the shim ends: `execve` ends every thread but the caller's, so
//! shims forked from the spawner thread would take their workers down with
//! an upgrade.
//!
//! corral's side ([`Lifeline`]) owns both ends (close-on-exec, moved above
//! the low descriptors a spawn hands out); the shim's side is [`arm`] and
//! [`is_cut`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::fds::duplicate;
pub use crate::fds::set_cloexec;

/// The descriptor the read end gets in a shim.
pub const SHIM_FD: RawFd = 4;

/// Lowest descriptor corral's ends are moved to, clear of 0-4 which a
/// spawn rewires in the child.
const HIGH_FD: RawFd = 64;

/// corral's two ends of the lifeline pipe.
#[derive(Debug)]
pub struct Lifeline {
    read: OwnedFd,
    write: OwnedFd,
}

impl Lifeline {
    /// A new pipe, both ends close-on-exec and above [`HIGH_FD`].
    pub fn new() -> io::Result<Lifeline> {
        let mut ends = [-1 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into `ends`.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here.
        let (read, write) =
            unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
        Ok(Lifeline {
            read: move_high(read)?,
            write: move_high(write)?,
        })
    }

    /// Takes over the ends an earlier image of corral handed over, as
    /// duplicates: the originals stay as they were (see
    /// [`crate::upgrade::adopt`]).
    pub fn adopt(read: RawFd, write: RawFd) -> io::Result<Lifeline> {
        Ok(Lifeline {
            read: duplicate(read, HIGH_FD)?,
            write: duplicate(write, HIGH_FD)?,
        })
    }

    /// The read end, which a spawn puts at [`SHIM_FD`] in the shim.
    pub fn read_end(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Both ends, kept open across an `execve` of corral: (read, write).
    pub fn keep_across_exec(&self) -> io::Result<(RawFd, RawFd)> {
        let keep = |fd: RawFd| {
            set_cloexec(fd, false)
                .map_err(|e| io::Error::new(e.kind(), format!("the lifeline's fd {fd}: {e}")))
        };
        keep(self.read.as_raw_fd())?;
        keep(self.write.as_raw_fd())?;
        Ok((self.read.as_raw_fd(), self.write.as_raw_fd()))
    }
}

fn move_high(fd: OwnedFd) -> io::Result<OwnedFd> {
    duplicate(fd.as_raw_fd(), HIGH_FD)
}

/// In the shim: the read end at [`SHIM_FD`] raises SIGIO in this process
/// when corral's end closes, and is not passed on to the worker. The
/// caller must block SIGIO and take it with `sigwaitinfo`, then ask
/// [`is_cut`].
///
/// Every shim inherits the *same* open file description, and the process
/// SIGIO goes to (`F_SETOWN`) is one per description: the shim first opens
/// the pipe again through `/proc/self/fd`, which gives it a description of
/// its own, so that every shim hears, not only the last one armed.
pub fn arm() -> io::Result<()> {
    let path = c"/proc/self/fd/4";
    // SAFETY: open, dup3, close and fcntl on descriptors of this process;
    // getpid cannot fail.
    unsafe {
        let own = libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        );
        if own < 0 {
            return Err(io::Error::last_os_error());
        }
        let moved = libc::dup3(own, SHIM_FD, libc::O_CLOEXEC);
        libc::close(own);
        if moved < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::fcntl(SHIM_FD, libc::F_SETOWN, libc::getpid()) < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = libc::fcntl(SHIM_FD, libc::F_GETFL);
        if flags < 0 || libc::fcntl(SHIM_FD, libc::F_SETFL, flags | libc::O_ASYNC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// In the shim: whether corral's end of the lifeline has closed (checked
/// once after [`arm`], for a corral that died before, and on each SIGIO).
pub fn is_cut() -> bool {
    let mut poll = libc::pollfd {
        fd: SHIM_FD,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, no wait.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}
