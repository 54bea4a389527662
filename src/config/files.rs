//! Reading a config (or token) file safely: a small regular file only,
//! never a FIFO or a device that could stall the caller.

use std::path::Path;

/// The largest config (or token) file corral reads.
pub(crate) const MAX_FILE: u64 = 1024 * 1024;

/// Reads a config or token file: a regular file (after symlinks) of at most
/// [`MAX_FILE`] bytes, in UTF-8. Anything else is refused with its reason,
/// never read: the file is opened with `O_NONBLOCK` (a FIFO without a
/// writer never blocks the open), its kind and size come from `fstat` of
/// the opened descriptor (not the path, which may change meanwhile), and
/// at most `MAX_FILE + 1` bytes are read (a file that grows is caught).
pub(crate) fn read_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the file: {e}"))?;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    };
    if let Some(what) = what {
        return Err(format!(
            "refused: it is {what}; a config file must be a regular file (of at most 1 MiB)"
        ));
    }
    let too_large = |size: u64| {
        format!("refused: it is {size} bytes; a config file is at most {MAX_FILE} bytes (1 MiB)")
    };
    if meta.len() > MAX_FILE {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "cannot read the file: it is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}
