//! A one-way signal that thousands of connection tasks check on every
//! poll: a flag read with one atomic load, and a [`CancellationToken`] for
//! the tasks to be woken by when it fires.
//!
//! A `CancellationToken` alone costs a lock of its shared node on every
//! `is_cancelled` and on every poll of its `cancelled()` future (and a
//! lock of its waiter list, shared by every thread): 2.5% of corral's CPU
//! under keep-alive load, in four such polls per pump poll. A pump polls
//! the token's future only to register its task's waker (once, and again
//! only if that waker changes) and reads the flag otherwise
//! ([`Watch`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The signal: fired once, never reset.
#[derive(Debug, Default)]
pub struct Signal {
    fired: AtomicBool,
    token: CancellationToken,
}

impl Signal {
    /// Fires the signal: the flag first, then every waiting task is woken.
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether it has fired (one atomic load).
    #[inline]
    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Resolves once it has fired.
    pub fn fired(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }
}

pin_project_lite::pin_project! {
    /// A task's watch on a [`Signal`], polled on every poll of the task: it
    /// polls the token's future only when the task's waker is not the one
    /// it registered, and reads the flag. Pinned where it is polled (no
    /// allocation per connection).
    pub struct Watch<'s> {
        signal: &'s Signal,
        #[pin]
        waiting: WaitForCancellationFuture<'s>,
        // The waker registered with the token, once it is.
        registered: Option<Waker>,
    }
}

impl<'s> Watch<'s> {
    /// A watch on `signal`, registered at its first poll.
    pub fn new(signal: &'s Signal) -> Watch<'s> {
        Watch {
            signal,
            waiting: signal.fired(),
            registered: None,
        }
    }

    /// Whether the signal has fired; makes sure the task is woken when it
    /// does.
    #[inline]
    pub fn poll_fired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        let this = self.project();
        if this.signal.is_fired() {
            return true;
        }
        let known = this
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if !known {
            if this.waiting.poll(cx).is_ready() {
                return true;
            }
            *this.registered = Some(cx.waker().clone());
        }
        // The flag is set before the token wakes anyone: read it again in
        // case it fired while the waker was being registered.
        this.signal.is_fired()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::task::Poll;

    #[tokio::test]
    async fn a_watching_task_is_woken_when_the_signal_fires() {
        let signal = Arc::new(Signal::default());
        let watching = tokio::spawn({
            let signal = Arc::clone(&signal);
            async move {
                let mut watch = std::pin::pin!(Watch::new(&signal));
                let mut polls = 0;
                poll_fn(|cx| {
                    polls += 1;
                    match watch.as_mut().poll_fired(cx) {
                        true => Poll::Ready(()),
                        false => Poll::Pending,
                    }
                })
                .await;
                polls
            }
        });
        tokio::task::yield_now().await;
        assert!(!signal.is_fired());
        signal.fire();
        let polls = tokio::time::timeout(std::time::Duration::from_secs(10), watching)
            .await
            .expect("the watching task was never woken")
            .unwrap();
        assert!(polls >= 2, "{polls}");
    }

    #[test]
    fn a_fired_signal_is_seen_at_once() {
        let signal = Signal::default();
        signal.fire();
        let watch = std::pin::pin!(Watch::new(&signal));
        let waker = Waker::noop();
        assert!(watch.poll_fired(&mut Context::from_waker(waker)));
    }
}
