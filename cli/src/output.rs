//! Standard output: one writer for every command, so that a failed write is
//! an error with an exit code (quietly 141 on a closed pipe, 1 otherwise),
//! never a panic and never a silent success.

use std::io::Write;

use crate::error::{Error, Result};

/// Writes `text` to standard output and flushes it.
pub fn print(text: &str) -> Result<()> {
    // Not through `print!`, which panics when the write fails.
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(Error::Stdout)
}

/// Writes `line` and a line break.
pub fn println(line: &str) -> Result<()> {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    print(&text)
}

/// Writes `value` as pretty JSON and a line break. The text is wiped
/// afterwards: some answers hold secrets the user asked to see.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    // Room from the start, so that the buffer is never moved (leaving a
    // copy behind) while it grows.
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(64 * 1024));
    serde_json::to_writer_pretty(&mut *bytes, value).map_err(|e| Error::Usage(format!("cannot format JSON: {e}")))?;
    bytes.push(b'\n');
    let mut out = std::io::stdout().lock();
    std::io::Write::write_all(&mut out, &bytes).and_then(|()| std::io::Write::flush(&mut out)).map_err(Error::Stdout)
}
