//! Before anything changes: is the file at the started path a corral that
//! can take this handover? It must exist, be a regular executable file,
//! answer `handover-format` with the format this image writes, and accept
//! the config file corral runs with (`check`). Each failure is a refusal
//! with the reason; nothing has changed yet.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Refusal, FORMAT};

/// How long the file gets to answer each question.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The longest answer read from the file.
const MAX_ANSWER: u64 = 64 * 1024;

/// What the file said of itself: its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub version: String,
}

/// Asks the file at `program` whether it can take over; `config` is the
/// file corral runs with (none for the embedded default) and `command` the
/// worker command given on the command line, if any.
pub fn probe(
    program: &Path,
    config: Option<&Path>,
    command: Option<&[String]>,
) -> Result<Candidate, Refusal> {
    let shown = program.display();
    let meta = std::fs::metadata(program).map_err(|error| {
        Refusal(format!("{shown} cannot be read: {error}; install the new corral at the path this one was started from"))
    })?;
    if !meta.is_file() {
        return Err(Refusal(format!("{shown} is not a regular file")));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Refusal(format!("{shown} is not executable (chmod +x it)")));
    }
    let answer = ask(program, &["handover-format"])?;
    if !answer.success {
        return Err(Refusal(format!(
            "{shown} {} when asked `handover-format`: it is not a corral that can take over a running one",
            answer.ended
        )));
    }
    let candidate = parse_format(&answer.stdout).ok_or_else(|| {
        Refusal(format!(
            "{shown} answered `handover-format` with {:?}, not `corral VERSION handover N`: it is not a corral that can take over a running one",
            first_line(&answer.stdout)
        ))
    })?;
    if candidate.1 != FORMAT {
        return Err(Refusal(format!(
            "{shown} (corral {}) reads handover format {}; this corral writes format {FORMAT}",
            candidate.0, candidate.1
        )));
    }
    if let Some(config) = config {
        let mut args = vec!["check".to_string(), config.display().to_string()];
        if let Some(command) = command {
            args.push("--".into());
            args.extend(command.iter().cloned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let checked = ask(program, &args)?;
        if !checked.success {
            return Err(Refusal(format!(
                "{shown} (corral {}) does not accept {}: {}",
                candidate.0,
                config.display(),
                first_line(&checked.stderr)
            )));
        }
    }
    Ok(Candidate {
        version: candidate.0,
    })
}

/// `corral VERSION handover N` → (VERSION, N).
fn parse_format(stdout: &str) -> Option<(String, u32)> {
    let mut words = first_line(stdout).split_whitespace();
    match (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) {
        (Some("corral"), Some(version), Some("handover"), Some(format), None) => {
            Some((version.to_string(), format.parse().ok()?))
        }
        _ => None,
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// What a run of the file gave.
struct Answer {
    success: bool,
    ended: String,
    stdout: String,
    stderr: String,
}

/// Runs `program args`, bounded in time and output.
fn ask(program: &Path, args: &[&str]) -> Result<Answer, Refusal> {
    let shown = program.display();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ENOEXEC) => Refusal(format!(
                "{shown} is not a program this system can run (exec format error)"
            )),
            _ => Refusal(format!("{shown} cannot be run: {error}")),
        })?;
    let stdout = child.stdout.take().map(read_bounded);
    let stderr = child.stderr.take().map(read_bounded);
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < ANSWER_WITHIN => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Refusal(format!(
                    "{shown} did not answer `{}` within {ANSWER_WITHIN:?}",
                    args.join(" ")
                )));
            }
        }
    };
    let text = |reader: Option<std::thread::JoinHandle<String>>| {
        reader.and_then(|r| r.join().ok()).unwrap_or_default()
    };
    Ok(Answer {
        success: status.success(),
        ended: match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("was killed ({status})"),
        },
        stdout: text(stdout),
        stderr: text(stderr),
    })
}

/// Reads up to [`MAX_ANSWER`] bytes on a thread of its own, so that a full
/// pipe never blocks the child.
fn read_bounded(stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.take(MAX_ANSWER).read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_line_is_read_strictly() {
        assert_eq!(
            parse_format("corral 0.1.0 handover 1\n"),
            Some(("0.1.0".into(), 1))
        );
        assert_eq!(parse_format("corral 0.1.0 handover x"), None);
        assert_eq!(parse_format("hello"), None);
        assert_eq!(parse_format(""), None);
        assert_eq!(parse_format("corral 0.1.0 handover 1 extra"), None);
    }
}
