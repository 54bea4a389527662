//! splice(2) through a pipe: moving a bulk connection's bytes from one
//! socket to the other inside the kernel, without copying them through user
//! space. Used by the pump once a direction has carried enough bytes to be
//! worth the pipe (see `pump::SPLICE_AFTER`); empty pipes are reused.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes asked for per splice call: the default pipe capacity.
const CHUNK: usize = 64 * 1024;

/// Empty pipes kept per thread for reuse.
const POOLED_PER_THREAD: usize = 64;

thread_local! {
    static PIPES: RefCell<Vec<(OwnedFd, OwnedFd)>> = const { RefCell::new(Vec::new()) };
}

/// A pipe and how many bytes sit in it.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet spliced out.
    pub pending: usize,
}

impl Pipe {
    /// A pipe from this thread's pool, or a new non-blocking one.
    pub fn take() -> io::Result<Pipe> {
        let (read, write) = match PIPES.with(|pool| pool.borrow_mut().pop()) {
            Some(pair) => pair,
            None => nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?,
        };
        Ok(Pipe {
            read,
            write,
            pending: 0,
        })
    }

    /// Returns an empty pipe to the pool; one with bytes in it is closed.
    pub fn give_back(self) {
        if self.pending == 0 {
            PIPES.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOLED_PER_THREAD {
                    pool.push((self.read, self.write));
                }
            });
        }
    }

    /// Moves what `from` has to read into the (empty) pipe. `Ok(0)` is EOF;
    /// `WouldBlock` means `from` has nothing now (its readiness is cleared).
    pub fn fill(&mut self, from: &TcpStream) -> io::Result<usize> {
        let n = from.try_io(Interest::READABLE, || {
            splice(
                from,
                None,
                &self.write,
                None,
                CHUNK,
                SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
            )
            .map_err(io::Error::from)
        })?;
        self.pending += n;
        Ok(n)
    }

    /// Reads what the pipe holds onto the end of `into` (for `corral
    /// upgrade`), leaving it empty.
    pub fn empty_into(&mut self, into: &mut Vec<u8>) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        while self.pending > 0 {
            let want = self.pending.min(chunk.len());
            let n = nix::unistd::read(
                std::os::fd::AsRawFd::as_raw_fd(&self.read),
                &mut chunk[..want],
            )?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            into.extend_from_slice(&chunk[..n]);
            self.pending -= n;
        }
        Ok(())
    }

    /// Moves what the pipe holds into `to`. `WouldBlock` means `to` cannot
    /// take more now (its readiness is cleared).
    pub fn drain(&mut self, to: &TcpStream) -> io::Result<usize> {
        let n = to.try_io(Interest::WRITABLE, || {
            splice(
                &self.read,
                None,
                to,
                None,
                self.pending,
                SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
            )
            .map_err(io::Error::from)
        })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.pending -= n;
        Ok(n)
    }
}
