//! `corral upgrade`: the program file at the path corral was started from
//! replaces the running image in the same process (`execve`: the pid stays,
//! so the workers stay its children), and is handed what this image runs.
//!
//! - [`probe`]: before anything changes, is the file a corral that can
//!   take this handover? (a refusal changes nothing)
//! - [`handover`]: what is handed over, written to a memory file whose
//!   descriptor survives the exec, and read back by the next image.
//! - [`exec`]: the exec itself, and the way back (the old program, from a
//!   descriptor kept open across the exec) when the new one cannot adopt.
//! - [`adopt`]: the new image's side: take the descriptors, the workers
//!   and the state, answer the request, or roll back.
//!
//! The path is resolved once, at start ([`remember_program`]); no path is
//! ever taken from a request.

pub mod adopt;
pub(crate) mod exec;
pub mod handover;
pub(crate) mod probe;

use std::path::PathBuf;
use std::sync::OnceLock;

/// The handover format this image writes and reads. A new image that reads
/// another format is refused before anything changes.
pub(crate) const FORMAT: u32 = 1;

/// An environment variable read only by the tests: a new image that finds
/// it set fails to adopt (and rolls back), as an image that cannot take a
/// handover would ([`adopt`]); set to `read`, it fails before that, as an
/// image that cannot even read the handover would ([`handover`]).
pub(crate) const FAIL_FOR_TEST: &str = "CORRAL_TEST_FAIL_ADOPTION";

/// This image's version, as `/status` and the upgrade answer give it.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why an upgrade was refused before anything changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refusal(pub String);

static STARTED_FROM: OnceLock<PathBuf> = OnceLock::new();

/// Records the path of the program file this process was started from (a
/// path, not the file: the upgrade runs whatever file is there then).
/// Called once, at start; later calls keep the first path.
pub fn remember_program() {
    if let Ok(path) = std::env::current_exe() {
        let _ = STARTED_FROM.set(path);
    }
}

/// The path recorded at start.
pub(crate) fn started_from() -> Result<&'static PathBuf, Refusal> {
    STARTED_FROM.get().ok_or_else(|| {
        Refusal("the path corral was started from is unknown (/proc/self/exe could not be read at start)".into())
    })
}

/// `corral handover-format`: the line a running corral asks a candidate
/// file for.
pub fn format_line() -> String {
    format!("corral {VERSION} handover {FORMAT}")
}
