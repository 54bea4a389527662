//! `log.file`: the log written to a file that is rotated by size
//! (`corral.log` -> `corral.log.1` -> ... -> `corral.log.<keep>`, the
//! oldest deleted) and reopened on request (SIGHUP, after an external
//! rotation such as logrotate's `create` mode).
//!
//! It runs on the log's writer thread, behind the lossy non-blocking queue
//! (see [`super`]), so a slow or full disk never reaches a proxy thread.
//! It owns the open file and its size. It is written one whole log line at
//! a time and rotates before a line that would pass `max_size`, so a line
//! is never split between two files. It never fails its caller: a line it
//! cannot write is dropped and counted ([`FileErrors`]), and the file is
//! opened again at most once a second until that works.
//!
//! tracing-appender's own rolling appender rotates by time only, which is
//! why this exists (pm2-logrotate and logrotate rotate by size).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a file that cannot be opened is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Shared with the rest of the process: the reopen request and the count
/// of lines the file did not get.
#[derive(Clone, Default)]
pub struct FileErrors {
    reopen: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl FileErrors {
    /// Asks the writer to close and open the file again before its next line.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Lines not written because the file could not be written.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A log file rotated by size.
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    file: Option<File>,
    /// Bytes in the open file.
    size: u64,
    errors: FileErrors,
    /// When opening last failed (retries wait [`RETRY`]).
    failed_at: Option<Instant>,
}

impl RotatingFile {
    /// Opens (or creates, appending) `path`; an error names the file.
    pub fn open(path: &Path, max_size: u64, keep: u32) -> io::Result<(RotatingFile, FileErrors)> {
        let errors = FileErrors::default();
        let mut file = RotatingFile {
            path: path.to_path_buf(),
            max_size,
            keep,
            file: None,
            size: 0,
            errors: errors.clone(),
            failed_at: None,
        };
        file.reopen()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok((file, errors))
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// The name of rotated file `n` (`corral.log.3`).
    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Shifts `file.N` to `file.N+1` (the last one is replaced), the file
    /// to `file.1`, and starts a new file.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        for n in (1..self.keep).rev() {
            match std::fs::rename(self.numbered(n), self.numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.numbered(1))?;
        self.reopen()
    }

    /// Makes sure a file that can take `incoming` more bytes is open.
    fn ready_for(&mut self, incoming: u64) -> io::Result<()> {
        if self.errors.reopen.swap(false, Ordering::AcqRel) {
            self.file = None;
            self.failed_at = None;
        }
        if self.file.is_none() {
            if self.failed_at.is_some_and(|at| at.elapsed() < RETRY) {
                return Err(io::Error::other("waiting to retry"));
            }
            self.reopen()?;
        }
        if self.size > 0 && self.size + incoming > self.max_size {
            self.rotate()?;
        }
        Ok(())
    }

    fn failed(&mut self, error: &io::Error) {
        self.errors.dropped.fetch_add(1, Ordering::Relaxed);
        if self.failed_at.is_none() {
            // Once per failure: the line goes to stderr (and is dropped
            // here, since this file is failing).
            tracing::error!(
                "cannot write the log file {}: {error}; its lines are dropped (and counted) until it can be opened again",
                self.path.display()
            );
        }
        self.file = None;
        self.failed_at = Some(Instant::now());
    }
}

impl Write for RotatingFile {
    /// Writes one log line whole; never fails (a line it cannot write is
    /// dropped and counted).
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let written = self
            .ready_for(line.len() as u64)
            .and_then(|()| match &mut self.file {
                Some(file) => file.write_all(line),
                None => Err(io::Error::other("no file")),
            });
        match written {
            Ok(()) => {
                self.size += line.len() as u64;
                self.failed_at = None;
            }
            Err(error) => self.failed(&error),
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotates_by_size_keeping_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.log");
        let (mut file, errors) = RotatingFile::open(&path, 4096, 2).unwrap();
        for i in 0..1000 {
            let line = format!("line {i:05} {}\n", "x".repeat(90));
            file.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(
            names(dir.path()),
            ["corral.log", "corral.log.1", "corral.log.2"]
        );
        for name in names(dir.path()) {
            let text = std::fs::read_to_string(dir.path().join(&name)).unwrap();
            assert!(
                text.len() <= 4096 && !text.is_empty(),
                "{name}: {}",
                text.len()
            );
            assert!(text.ends_with('\n'));
            assert!(text
                .lines()
                .all(|l| l.len() == 101 && l.starts_with("line ")));
        }
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with(&format!("line 00999 {}\n", "x".repeat(90))));
        assert_eq!(errors.dropped_lines(), 0);
    }

    #[test]
    fn reopens_after_an_external_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.log");
        let (mut file, errors) = RotatingFile::open(&path, 1 << 20, 5).unwrap();
        file.write_all(b"before\n").unwrap();
        std::fs::rename(&path, dir.path().join("moved.log")).unwrap();
        file.write_all(b"still old\n").unwrap();
        errors.reopen();
        file.write_all(b"after\n").unwrap();
        let moved = std::fs::read_to_string(dir.path().join("moved.log")).unwrap();
        assert_eq!(moved, "before\nstill old\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
    }

    #[test]
    fn a_file_that_cannot_be_written_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("gone");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("corral.log");
        let (mut file, errors) = RotatingFile::open(&path, 4096, 1).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(&sub).unwrap();
        errors.reopen();
        file.write_all(b"lost\n").unwrap();
        file.write_all(b"lost too\n").unwrap();
        assert_eq!(errors.dropped_lines(), 2);
        assert!(RotatingFile::open(&path, 4096, 1)
            .err()
            .is_some_and(|e| e.to_string().contains("corral.log")));
    }
}
