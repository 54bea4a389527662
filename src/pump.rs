//! Moving bytes between a client and a backend until both sides are done:
//! half-close is passed on (a client that shuts its write side still gets
//! the whole response), and the connection is closed after `idle` with no
//! bytes in either direction.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::clock;

/// Per-direction buffer size.
const BUFFER: usize = 32 * 1024;

/// How a pumped connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed cleanly.
    Eof,
    /// Nothing moved for the idle timeout.
    IdleTimeout,
    /// A side reset the connection or another socket error happened.
    Reset,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Eof => "eof",
            End::IdleTimeout => "idle_timeout",
            End::Reset => "reset",
        }
    }
}

/// What a pump moved and how it ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Bytes read from the client (and sent to the backend).
    pub from_client: u64,
    /// Bytes read from the backend (and sent to the client).
    pub from_backend: u64,
    pub end: End,
}

/// Pumps until both directions finish, an error, or `idle` of silence.
pub async fn pump(client: &mut TcpStream, backend: &mut TcpStream, idle: Duration) -> Outcome {
    let last_activity = AtomicU64::new(clock::now_ms());
    let mut client = Tracked::new(client, &last_activity);
    let mut backend = Tracked::new(backend, &last_activity);
    let idle_ms = idle.as_millis() as u64;
    let end = {
        let copy =
            tokio::io::copy_bidirectional_with_sizes(&mut client, &mut backend, BUFFER, BUFFER);
        tokio::pin!(copy);
        loop {
            let since = clock::now_ms().saturating_sub(last_activity.load(Ordering::Relaxed));
            if since >= idle_ms {
                break End::IdleTimeout;
            }
            tokio::select! {
                result = &mut copy => break match result {
                    Ok(_) => End::Eof,
                    Err(_) => End::Reset,
                },
                _ = tokio::time::sleep(Duration::from_millis(idle_ms - since)) => {}
            }
        }
    };
    Outcome {
        from_client: client.read,
        from_backend: backend.read,
        end,
    }
}

/// A stream that counts what is read from it and stamps the shared
/// last-activity time on every transfer.
struct Tracked<'a> {
    inner: &'a mut TcpStream,
    last_activity: &'a AtomicU64,
    read: u64,
}

impl<'a> Tracked<'a> {
    fn new(inner: &'a mut TcpStream, last_activity: &'a AtomicU64) -> Self {
        Tracked {
            inner,
            last_activity,
            read: 0,
        }
    }

    fn touch(&self) {
        self.last_activity.store(clock::now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read += n as u64;
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
