//! The workers' recent output, for `corral logs` and `GET /logs`: the last
//! lines of each worker slot, and a feed of new lines for followers.
//!
//! It owns, per slot (`worker-<id>`), a ring bounded both in lines
//! ([`MAX_LINES`]) and in bytes ([`MAX_BYTES`]); a line longer than
//! [`MAX_LINE`] is cut and the cut is marked. Lines are kept by slot, not
//! by process: the replacement in a rolling restart, or after a crash,
//! writes on under the same name, so a worker's history survives its
//! restarts (as pm2 keeps an app's log). The only way in is [`Output::record`].
//!
//! Followers read a broadcast feed that never waits for them: a follower
//! that falls behind skips lines and is told how many (every line has a
//! sequence number, overall and per slot, so the gap is exact).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

/// Lines kept per worker slot.
pub const MAX_LINES: usize = 1000;
/// Bytes of text kept per worker slot.
pub const MAX_BYTES: usize = 256 * 1024;
/// Longest line kept whole (bytes of text); the rest is cut.
pub const MAX_LINE: usize = 8 * 1024;
/// Lines a follower may fall behind before it skips some.
pub const FEED_LINES: usize = 1024;

/// One line a worker wrote.
#[derive(Debug)]
pub struct Line {
    /// Order among every worker's lines.
    pub seq: u64,
    /// Order among this slot's lines.
    pub slot_seq: u64,
    pub worker: usize,
    /// Written to standard error (shown with `!` instead of `|`).
    pub stderr: bool,
    /// Already escaped: no control characters.
    pub text: Box<str>,
}

impl Line {
    /// `worker-0 | text`, or `worker-0 ! text` for standard error, as the
    /// log shows it; with the newline.
    pub fn render(&self, into: &mut String) {
        use std::fmt::Write as _;
        let mark = if self.stderr { '!' } else { '|' };
        let _ = writeln!(into, "worker-{} {mark} {}", self.worker, self.text);
    }
}

/// One slot's kept lines.
#[derive(Default)]
struct Tail {
    lines: VecDeque<Arc<Line>>,
    bytes: usize,
    next_seq: u64,
}

#[derive(Default)]
struct Kept {
    next_seq: u64,
    slots: BTreeMap<usize, Tail>,
}

/// The workers' output: every slot's tail and the feed to followers.
pub struct Output {
    kept: Mutex<Kept>,
    feed: broadcast::Sender<Arc<Line>>,
}

impl Default for Output {
    fn default() -> Self {
        Output::new()
    }
}

impl Output {
    pub fn new() -> Output {
        Output {
            kept: Mutex::new(Kept::default()),
            feed: broadcast::channel(FEED_LINES).0,
        }
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        // A panic elsewhere never leaves the rings half-written (each
        // change is a push and pops): the data stays usable.
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps one line of worker `worker` (text already escaped; `cut_bytes`
    /// already cut from its end) and hands it to the followers. Never
    /// waits for a follower.
    pub fn record(&self, worker: usize, stderr: bool, text: &str, cut_bytes: usize) {
        let text = cut(text, cut_bytes);
        let mut kept = self.kept();
        let seq = kept.next_seq;
        kept.next_seq += 1;
        let tail = kept.slots.entry(worker).or_default();
        let line = Arc::new(Line {
            seq,
            slot_seq: tail.next_seq,
            worker,
            stderr,
            text,
        });
        tail.next_seq += 1;
        tail.bytes += line.text.len();
        tail.lines.push_back(Arc::clone(&line));
        while tail.lines.len() > MAX_LINES || tail.bytes > MAX_BYTES {
            match tail.lines.pop_front() {
                Some(old) => tail.bytes -= old.text.len(),
                None => break,
            }
        }
        // Sent under the lock, so a follower's start (also under it) sees
        // every line exactly once: in its tail or in its feed. No receiver:
        // nothing is stored.
        let _ = self.feed.send(line);
    }

    /// Has slot `worker` written anything (still kept)?
    pub fn has(&self, worker: usize) -> bool {
        self.kept().slots.contains_key(&worker)
    }

    /// The last `count` lines of `worker` (of every worker when `None`),
    /// oldest first.
    pub fn tail(&self, worker: Option<usize>, count: usize) -> Vec<Arc<Line>> {
        last_lines(&self.kept(), worker, count)
    }

    /// The last `count` lines, as [`Output::tail`], and a follower that
    /// gets every line written after them.
    pub fn follow(&self, worker: Option<usize>, count: usize) -> (Vec<Arc<Line>>, Follower) {
        let kept = self.kept();
        let feed = self.feed.subscribe();
        let tail = last_lines(&kept, worker, count);
        let follower = Follower {
            feed,
            worker,
            next_seq: kept.next_seq,
            next_slot_seq: worker.map_or(0, |w| kept.slots.get(&w).map_or(0, |t| t.next_seq)),
        };
        (tail, follower)
    }
}

fn last_lines(kept: &Kept, worker: Option<usize>, count: usize) -> Vec<Arc<Line>> {
    let mut lines: Vec<Arc<Line>> = match worker {
        Some(w) => kept.slots.get(&w).map_or_else(Vec::new, |tail| {
            let skip = tail.lines.len().saturating_sub(count);
            tail.lines.iter().skip(skip).cloned().collect()
        }),
        None => {
            let mut all: Vec<Arc<Line>> = kept
                .slots
                .values()
                .flat_map(|t| t.lines.iter().rev().take(count).cloned())
                .collect();
            all.sort_unstable_by_key(|l| l.seq);
            let skip = all.len().saturating_sub(count);
            all.drain(..skip);
            all
        }
    };
    lines.shrink_to_fit();
    lines
}

/// `text` cut to at most [`MAX_LINE`] bytes (on a character boundary),
/// the cut marked with how many bytes went (with `before`, cut earlier).
fn cut(text: &str, before: usize) -> Box<str> {
    let mut end = text.len().min(MAX_LINE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let gone = before + (text.len() - end);
    if gone == 0 {
        return text.into();
    }
    format!("{} [... {gone} bytes cut]", &text[..end]).into()
}

/// What a follower reads next.
#[derive(Debug)]
pub enum Next {
    /// A line, after `missed` lines this follower skipped because it fell
    /// behind (0 almost always).
    Line { missed: u64, line: Arc<Line> },
    /// The output is gone (corral is stopping).
    Closed,
}

/// New lines of one worker, or of all, as they are written.
pub struct Follower {
    feed: broadcast::Receiver<Arc<Line>>,
    worker: Option<usize>,
    /// The sequence number (overall, or of the followed slot) expected next.
    next_seq: u64,
    next_slot_seq: u64,
}

impl Follower {
    /// The next line for this follower; cancel-safe.
    pub async fn next(&mut self) -> Next {
        loop {
            match self.feed.recv().await {
                Ok(line) => {
                    if let Some(next) = self.take(line) {
                        return next;
                    }
                }
                // Skipped lines are counted from the sequence numbers.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Next::Closed,
            }
        }
    }

    /// The next line already written, without waiting.
    pub fn try_next(&mut self) -> Option<Next> {
        loop {
            match self.feed.try_recv() {
                Ok(line) => {
                    if let Some(next) = self.take(line) {
                        return Some(next);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(broadcast::error::TryRecvError::Closed) => return Some(Next::Closed),
                Err(broadcast::error::TryRecvError::Empty) => return None,
            }
        }
    }

    /// `line` as this follower's next, with the gap before it; `None` for
    /// another worker's line.
    fn take(&mut self, line: Arc<Line>) -> Option<Next> {
        let missed = match self.worker {
            Some(w) if w != line.worker => return None,
            Some(_) => {
                let gap = line.slot_seq.saturating_sub(self.next_slot_seq);
                self.next_slot_seq = line.slot_seq + 1;
                gap
            }
            None => {
                let gap = line.seq.saturating_sub(self.next_seq);
                self.next_seq = line.seq + 1;
                gap
            }
        };
        Some(Next::Line { missed, line })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Arc<Line>]) -> Vec<String> {
        lines.iter().map(|l| l.text.to_string()).collect()
    }

    #[test]
    fn tail_of_one_worker_and_of_all_in_order() {
        let output = Output::new();
        for i in 0..5 {
            output.record(i % 2, false, &format!("line {i}"), 0);
        }
        assert_eq!(
            texts(&output.tail(Some(0), 2)),
            ["line 2", "line 4"].map(String::from)
        );
        assert_eq!(
            texts(&output.tail(None, 3)),
            ["line 2", "line 3", "line 4"].map(String::from)
        );
        assert_eq!(output.tail(Some(7), 3).len(), 0);
        assert!(output.has(1) && !output.has(7));
        let mut shown = String::new();
        output.tail(Some(1), 1)[0].render(&mut shown);
        assert_eq!(shown, "worker-1 | line 3\n");
    }

    #[test]
    fn rings_are_bounded_in_lines_and_bytes() {
        let output = Output::new();
        for i in 0..MAX_LINES + 10 {
            output.record(0, false, &format!("{i}"), 0);
        }
        let kept = output.tail(Some(0), usize::MAX);
        assert_eq!(kept.len(), MAX_LINES);
        assert_eq!(&*kept[0].text, "10");
        let big = "x".repeat(MAX_LINE);
        for _ in 0..100 {
            output.record(1, true, &big, 0);
        }
        assert_eq!(output.tail(Some(1), usize::MAX).len(), MAX_BYTES / MAX_LINE);
    }

    #[test]
    fn a_huge_line_is_cut_and_marked() {
        let output = Output::new();
        output.record(0, false, &"é".repeat(MAX_LINE), 0);
        output.record(1, false, "short", 20);
        let line = &output.tail(Some(0), 1)[0];
        assert!(line.text.len() < MAX_LINE + 40, "{}", line.text.len());
        assert!(line
            .text
            .ends_with(&format!("[... {} bytes cut]", MAX_LINE)));
        assert_eq!(
            &*output.tail(Some(1), 1)[0].text,
            "short [... 20 bytes cut]"
        );
    }

    #[tokio::test]
    async fn a_follower_gets_new_lines_of_its_worker_only() {
        let output = Output::new();
        output.record(1, false, "old", 0);
        let (tail, mut follower) = output.follow(Some(1), 10);
        assert_eq!(texts(&tail), ["old"]);
        output.record(0, false, "other", 0);
        output.record(1, true, "new", 0);
        match follower.next().await {
            Next::Line { missed, line } => {
                assert_eq!((missed, &*line.text, line.stderr), (0, "new", true));
            }
            Next::Closed => panic!("closed"),
        }
        assert!(follower.try_next().is_none());
    }

    #[tokio::test]
    async fn a_slow_follower_skips_and_is_told_how_many() {
        let output = Output::new();
        let (_, mut slow) = output.follow(Some(0), 0);
        let (_, mut all) = output.follow(None, 0);
        let total = FEED_LINES as u64 * 3;
        for i in 0..total {
            output.record((i % 2) as usize, false, &format!("{i}"), 0);
        }
        let mut seen = 0;
        let mut missed_total = 0;
        while let Some(Next::Line { missed, line }) = slow.try_next() {
            assert_eq!(line.worker, 0);
            missed_total += missed;
            seen += 1;
        }
        assert!(missed_total > 0);
        assert_eq!(
            seen + missed_total,
            total / 2,
            "worker-0's lines, shown or counted"
        );
        let (mut seen, mut missed_total) = (0, 0);
        while let Some(Next::Line { missed, .. }) = all.try_next() {
            missed_total += missed;
            seen += 1;
        }
        assert_eq!(seen + missed_total, total);
    }
}
