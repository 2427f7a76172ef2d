//! Validation of project (object) names and archives before anything is sent.

use std::{io::Read, path::Path};

use crate::{Error, Result};

/// The longest accepted name, in bytes (S3's key limit).
pub const MAX_NAME_LEN: usize = 1024;

/// Checks a project name: not empty, at most 1024 bytes, no NUL or control
/// characters, not absolute, no `.`/`..` segments, no backslashes.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidInput(format!("invalid project name {:?}: {why}", shorten(name))));
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
            "invalid bucket name {:?}: use 1-63 lower-case letters, digits, `-`, `_` or `.`",
            shorten(bucket)
        )))
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_owned();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Checks that `path` is a non-empty ZIP archive: it starts with a local file
/// header (or is an empty archive) and ends with an end-of-central-directory
/// record. Reads at most 64 KiB.
pub fn verify_zip(path: &Path) -> Result<u64> {
    let io = |e| Error::io("cannot read", path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(Error::InvalidInput(format!("{} is not a regular file", path.display())));
    }
    let len = meta.len();
    if len == 0 {
        return Err(Error::InvalidInput(format!("{} is empty (0 bytes); refusing to upload it", path.display())));
    }
    let not_zip = |why: &str| {
        Err(Error::InvalidInput(format!(
            "{} is not a ZIP archive ({why}); use --no-verify to upload it anyway",
            path.display()
        )))
    };
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
        for bad in ["", "..", "../x.zip", "a/../b", "/etc/passwd", "a\0b", "a\nb", "a\x1b", "a//b", "a\\b", &long] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(1024)).is_ok());
    }

    #[test]
    fn buckets() {
        assert!(validate_bucket("projects").is_ok());
        for bad in ["", "..", "../x", "A", "a/b", ".hidden"] {
            assert!(validate_bucket(bad).is_err(), "{bad:?}");
        }
    }
}
