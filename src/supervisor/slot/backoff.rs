//! The restart backoff of one slot: the delay before a crashed or failed
//! worker is started again. It starts at `workers.restart_delay`, doubles
//! after every restart up to `workers.restart_delay_max`, and starts over
//! once a process stayed up for `workers.min_uptime`. The slot task owns
//! one and changes it only through the operations here.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Command;
use crate::config::WorkersConfig;

/// The delay the next restart waits.
#[derive(Debug)]
pub(super) struct Backoff {
    delay: Duration,
}

impl Backoff {
    /// A slot's first backoff: `workers.restart_delay`.
    pub(super) fn new(workers: &WorkersConfig) -> Backoff {
        Backoff {
            delay: workers.restart_delay,
        }
    }

    /// The backoff an earlier image of corral had reached for this slot
    /// (`corral upgrade`): the next restart waits `delay`.
    pub(super) fn carried(delay: Duration) -> Backoff {
        Backoff { delay }
    }

    /// The delay the next restart waits.
    pub(super) fn delay(&self) -> Duration {
        self.delay
    }

    /// A process that had been up for `uptime` exited: one that stayed up
    /// for `workers.min_uptime` was not crash-looping, so the backoff
    /// starts over.
    pub(super) fn process_exited(&mut self, uptime: Duration, workers: &WorkersConfig) {
        if uptime >= workers.min_uptime {
            self.delay = workers.restart_delay;
        }
    }

    /// Waits out the delay before a restart; a stop ends the wait early.
    /// A rolling restart asked for meanwhile has nothing running to replace:
    /// it is answered at once and its `workers` are the ones the restart
    /// uses. Then the delay doubles for the next restart, up to
    /// `restart_delay_max` of the `workers` in force.
    pub(super) async fn wait(
        &mut self,
        workers: &mut Arc<WorkersConfig>,
        commands: &mut mpsc::Receiver<Command>,
        stop: &CancellationToken,
    ) {
        let wait = tokio::time::sleep(self.delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                _ = stop.cancelled() => break,
                Some(Command::Replace { workers: fresh, done }) = commands.recv() => {
                    *workers = fresh;
                    let _ = done.send(Ok(()));
                }
            }
        }
        self.delay = (self.delay * 2).min(workers.restart_delay_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;
    use tokio::time::Instant;

    fn workers(first: u64, max: u64) -> Arc<WorkersConfig> {
        let config = crate::config::Config::parse(
            &format!(
                "[workers]\ncommand = [\"sh\", \"-c\", \"sleep 9\"]\nrestart_delay = \"{first}s\"\nrestart_delay_max = \"{max}s\"\nmin_uptime = \"10s\"\n"
            ),
            std::path::Path::new("test.toml"),
        )
        .unwrap();
        Arc::new(config.workers.unwrap())
    }

    /// The seconds each of `n` waits in a row took (on the paused clock).
    async fn waits(
        backoff: &mut Backoff,
        n: usize,
        workers: &mut Arc<WorkersConfig>,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Vec<u64> {
        let stop = CancellationToken::new();
        let mut took = Vec::new();
        for _ in 0..n {
            let started = Instant::now();
            backoff.wait(workers, commands, &stop).await;
            took.push(started.elapsed().as_secs());
        }
        took
    }

    #[tokio::test(start_paused = true)]
    async fn the_delay_doubles_up_to_the_max_and_starts_over_after_min_uptime() {
        let mut workers = workers(1, 8);
        let (_tx, mut commands) = mpsc::channel(1);
        let mut backoff = Backoff::new(&workers);
        assert_eq!(
            waits(&mut backoff, 5, &mut workers, &mut commands).await,
            [1, 2, 4, 8, 8]
        );
        // A crash before min_uptime: still backing off.
        backoff.process_exited(Duration::from_secs(9), &workers);
        assert_eq!(backoff.delay(), Duration::from_secs(8));
        // Up for min_uptime: the next restart comes after restart_delay.
        backoff.process_exited(Duration::from_secs(10), &workers);
        assert_eq!(
            waits(&mut backoff, 2, &mut workers, &mut commands).await,
            [1, 2]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_and_a_rollout_meanwhile_is_taken_for_the_restart() {
        let mut workers = workers(30, 60);
        let (tx, mut commands) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let mut backoff = Backoff::new(&workers);
        let fresh = self::workers(30, 45);
        let (done, answer) = oneshot::channel();
        let asker = tokio::spawn({
            let fresh = Arc::clone(&fresh);
            let stop = stop.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = tx
                    .send(Command::Replace {
                        workers: fresh,
                        done,
                    })
                    .await;
                let answered = answer.await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                stop.cancel();
                answered
            }
        });
        let started = Instant::now();
        backoff.wait(&mut workers, &mut commands, &stop).await;
        assert_eq!(started.elapsed().as_secs(), 10, "the stop ended the wait");
        assert!(
            matches!(asker.await.unwrap(), Ok(Ok(()))),
            "answered at once"
        );
        assert!(
            Arc::ptr_eq(&workers, &fresh),
            "the restart uses the rollout's workers"
        );
        assert_eq!(
            backoff.delay(),
            Duration::from_secs(45),
            "doubled, up to the fresh restart_delay_max"
        );
    }
}
