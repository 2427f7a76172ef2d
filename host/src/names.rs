//! Validation of project (object) names and archives before anything is sent.

use std::{io::Read, path::Path};

use crate::{Error, Result};

/// The longest accepted name, in bytes (S3's key limit).
pub const MAX_NAME_LEN: usize = 1024;

/// Characters that change how text is shown without being visible: bidi
/// controls (which can make `invoice\u{202e}gpj.zip` read as `invoicezip.jpg`),
/// zero-width and other invisible characters (Unicode's default-ignorable
/// code points: `a\u{200b}.zip` and `a\u{fe0f}.zip` look like `a.zip`), the
/// byte-order mark and the line and paragraph separators.
fn is_deceptive(c: char) -> bool {
    matches!(c,
        '\u{00ad}' // soft hyphen
        | '\u{034f}' // combining grapheme joiner
        | '\u{061c}' // Arabic letter mark
        | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}' // Hangul fillers
        | '\u{17b4}' | '\u{17b5}' // Khmer inherent vowels
        | '\u{180b}'..='\u{180f}' // Mongolian variation selectors and vowel separator
        | '\u{200b}'..='\u{200f}' // zero-width space, non-joiner, joiner; LRM, RLM
        | '\u{2028}' | '\u{2029}' // line and paragraph separators
        | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
        | '\u{2060}'..='\u{206f}' // word joiner, invisible operators, bidi isolates, deprecated format characters
        | '\u{fe00}'..='\u{fe0f}' // variation selectors
        | '\u{feff}' // byte-order mark
        | '\u{fff0}'..='\u{fff8}' // unassigned specials
        | '\u{1bca0}'..='\u{1bca3}' // shorthand format controls
        | '\u{1d173}'..='\u{1d17a}' // musical formatting controls
        | '\u{e0000}'..='\u{e0fff}' // tags and variation selectors supplement
    )
}

/// Checks a project name: not empty, at most 1024 bytes, no NUL, control,
/// bidi or zero-width characters, not absolute, no `.`/`..` or empty
/// segments, no backslashes.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidInput(format!("invalid project name {}: {why}", quote(name))));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!("it is {} bytes long, the limit is {MAX_NAME_LEN}", name.len()));
    }
    if name.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    if let Some(c) = name.chars().find(|c| is_deceptive(*c)) {
        return bad(&format!("it contains the invisible character U+{:04X}", c as u32));
    }
    if name.starts_with('/') {
        return bad("it starts with `/`");
    }
    if name.contains('\\') {
        return bad("it contains `\\`");
    }
    if name.split('/').any(|seg| seg == ".." || seg == ".") {
        return bad("it contains a `.` or `..` path segment");
    }
    if name.split('/').any(str::is_empty) {
        return bad("it contains an empty path segment");
    }
    Ok(())
}

/// Checks a bucket name as S3 and the filesystem store accept it.
pub fn validate_bucket(bucket: &str) -> Result<()> {
    let ok = (1..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_')
        && !bucket.starts_with('.')
        && bucket != ".."
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid bucket name {}: use 1-63 lower-case letters, digits, `-`, `_` or `.`",
            quote(bucket)
        )))
    }
}

/// `s` quoted for a message: at most 80 bytes, every character that could
/// hide or reorder text escaped.
fn quote(s: &str) -> String {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::from("\"");
    escape_into(&s[..end], &mut out, |c| c == '"');
    if end < s.len() {
        out.push('…');
    }
    out.push('"');
    out
}

/// `text` as it can be shown on a terminal or in a line-based listing: control
/// characters (line breaks, escape sequences), invisible and bidi characters,
/// and backslashes are written as escapes (`\n`, `\u{1b}`, `\\`), so a name
/// can neither start a line of its own nor change what is displayed around it.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    escape_into(text, &mut out, |_| false);
    std::borrow::Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_deceptive(c) || c == '\\'
}

fn escape_into(text: &str, out: &mut String, also: impl Fn(char) -> bool) {
    for c in text.chars() {
        if needs_escape(c) || also(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

/// Opens a file to upload and checks it: a regular file (a FIFO would block,
/// a device never end), opened without blocking, not empty, and (when
/// `zip`) a ZIP archive: it starts with a local file header (or is an empty
/// archive) and ends with an end-of-central-directory record. Reads at most
/// 64 KiB. Returns the size.
pub fn check_upload_file(path: &Path, zip: bool) -> Result<u64> {
    let io = |e| Error::io("cannot read", path, e);
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let not_regular = || Error::InvalidInput(format!("{} is not a regular file", path.display()));
    let mut f = match options.open(path) {
        Ok(f) => f,
        // A socket cannot be opened at all (ENXIO).
        Err(_) if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) => return Err(not_regular()),
        Err(e) => return Err(io(e)),
    };
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let len = meta.len();
    if len == 0 {
        return Err(Error::InvalidInput(format!("{} is empty (0 bytes); refusing to upload it", path.display())));
    }
    if !zip {
        return Ok(len);
    }
    let not_zip = |why| Err(Error::NotZip { path: path.to_path_buf(), why });
    let mut head = [0u8; 4];
    if len < 22 || f.read_exact(&mut head).is_err() {
        return not_zip("too short");
    }
    if head != *b"PK\x03\x04" && head != *b"PK\x05\x06" {
        return not_zip("no ZIP signature at the start");
    }
    // The end-of-central-directory record sits in the last 22 + 65535 bytes.
    let tail_len = len.min(22 + 65_535);
    let mut tail = vec![0u8; tail_len as usize];
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(len - tail_len)).map_err(io)?;
    f.read_exact(&mut tail).map_err(io)?;
    if !tail.windows(4).rev().any(|w| w == b"PK\x05\x06") {
        return not_zip("no end-of-central-directory record; truncated?");
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a.zip", "1234.zip", "dir/a.zip", "weird name (1).zip", "ünïcode.zip"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(1025);
        for bad in [
            "",
            "..",
            "../x.zip",
            "a/../b",
            "/etc/passwd",
            "a\0b",
            "a\nb",
            "a\x1b",
            "a//b",
            "a\\b",
            &long,
            "invoice\u{202e}gpj.zip",
            "a\u{200b}.zip",
            "\u{feff}a.zip",
            "a\u{2028}b",
            "a\u{2067}b",
            "a\u{180e}.zip",
            "a\u{fe0f}.zip",
            "a\u{e0041}.zip",
            "a\u{3164}.zip",
            "a\u{ad}b.zip",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(1024)).is_ok());
        let e = validate_name("invoice\u{202e}gpj.zip").unwrap_err().to_string();
        assert_eq!(e, "invalid project name \"invoice\\u{202e}gpj.zip\": it contains the invisible character U+202E");
    }

    #[test]
    fn buckets() {
        assert!(validate_bucket("projects").is_ok());
        for bad in ["", "..", "../x", "A", "a/b", ".hidden"] {
            assert!(validate_bucket(bad).is_err(), "{bad:?}");
        }
    }
}
