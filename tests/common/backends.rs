//! The one kit of hand-rolled backends: small TCP servers on loopback that
//! stand in for an application behind corral.
//!
//! A [`Backend`] runs a handler on its own thread for every connection it
//! accepts (corral's health checks connect too) and sends what the handler
//! returns, its verdict, back to the test thread, before the connection
//! closes. A handler may assert and
//! unwrap: a panic becomes a verdict, and reading it fails the test (so does
//! dropping the backend with an unread panic).
//!
//! Stock handlers: [`echo`], [`reply`], [`http_status`].

use std::fmt::Debug;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::listen_on_free_port;

/// How one connection's handler ended.
enum Verdict<T> {
    Returned(T),
    Panicked(String),
}

/// A TCP server on 127.0.0.1 whose connections are served by a handler.
pub struct Backend<T: Send + 'static> {
    pub addr: SocketAddr,
    verdicts: Receiver<Verdict<T>>,
}

impl<T: Send + 'static> Backend<T> {
    /// Serves every connection with `handler` on a free loopback port.
    pub fn start(handler: impl Fn(&mut TcpStream) -> T + Send + Sync + 'static) -> Backend<T> {
        Backend::serve(listen_on_free_port(), handler)
    }

    /// As [`Backend::start`], on a given port (one a test reserved earlier).
    pub fn start_on(
        port: u16,
        handler: impl Fn(&mut TcpStream) -> T + Send + Sync + 'static,
    ) -> Backend<T> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
        Backend::serve(listener, handler)
    }

    fn serve(
        listener: TcpListener,
        handler: impl Fn(&mut TcpStream) -> T + Send + Sync + 'static,
    ) -> Backend<T> {
        let addr = listener.local_addr().unwrap();
        let (sender, verdicts) = channel();
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (handler, sender) = (Arc::clone(&handler), sender.clone());
                std::thread::spawn(move || {
                    let verdict = match catch_unwind(AssertUnwindSafe(|| handler(&mut stream))) {
                        Ok(value) => Verdict::Returned(value),
                        Err(panic) => Verdict::Panicked(panic_text(&*panic)),
                    };
                    // The test may be over and the backend dropped: nobody asks.
                    let _ = sender.send(verdict);
                    // Only now does the connection close: whoever sees it
                    // closed can already read its verdict.
                    drop(stream);
                });
            }
        });
        Backend { addr, verdicts }
    }

    fn unwrap(&self, verdict: Verdict<T>) -> T {
        match verdict {
            Verdict::Returned(value) => value,
            Verdict::Panicked(text) => {
                panic!(
                    "a connection's handler on backend {} failed: {text}",
                    self.addr
                )
            }
        }
    }

    /// The verdicts of the connections that have ended so far, in order.
    pub fn verdicts(&self) -> Vec<T> {
        let arrived: Vec<Verdict<T>> = self.verdicts.try_iter().collect();
        arrived.into_iter().map(|v| self.unwrap(v)).collect()
    }

    /// Waits for the first verdict `pick` accepts and returns it; verdicts
    /// it passes over (a health check's connection, say) are dropped. Panics
    /// if none comes within `limit`, listing those passed over.
    pub fn verdict_where(&self, limit: Duration, pick: impl Fn(&T) -> bool) -> T
    where
        T: Debug,
    {
        let deadline = Instant::now() + limit;
        let mut passed_over = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.verdicts.recv_timeout(left) {
                Ok(verdict) => {
                    let value = self.unwrap(verdict);
                    if pick(&value) {
                        return value;
                    }
                    passed_over.push(value);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "backend {}: no connection ended as expected within {limit:?}; \
                     the others ended with {passed_over:?}",
                    self.addr
                ),
            }
        }
    }
}

impl<T: Send + 'static> Drop for Backend<T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for verdict in self.verdicts.try_iter() {
            if let Verdict::Panicked(text) = verdict {
                panic!(
                    "a connection's handler on backend {} failed: {text}",
                    self.addr
                );
            }
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// The stock backends; their verdict is how the connection's I/O went.
impl Backend<std::io::Result<()>> {
    /// Echoes every byte back; closes once the peer has half-closed.
    pub fn echo() -> Self {
        Backend::start(echo)
    }

    /// Answers every connection with `bytes`, then closes.
    pub fn reply(bytes: &'static [u8]) -> Self {
        Backend::start(reply(bytes))
    }

    /// Answers every HTTP request with `status` (e.g. "500 Internal Server Error").
    pub fn http_status(status: &'static str) -> Self {
        Backend::start(http_status(status))
    }
}

/// Handler: echo every byte back until the peer half-closes, then close.
pub fn echo(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut reader = stream.try_clone()?;
    std::io::copy(&mut reader, stream)?;
    Ok(())
}

/// Handler: send `bytes`, then close.
pub fn reply(bytes: &'static [u8]) -> impl Fn(&mut TcpStream) -> std::io::Result<()> {
    move |stream| stream.write_all(bytes)
}

/// Handler: read one HTTP request's head, answer it with `status`, close.
pub fn http_status(status: &'static str) -> impl Fn(&mut TcpStream) -> std::io::Result<()> {
    move |stream| {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            if line == "\r\n" {
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n"
                );
                return stream.write_all(answer.as_bytes());
            }
            line.clear();
        }
        Ok(())
    }
}
