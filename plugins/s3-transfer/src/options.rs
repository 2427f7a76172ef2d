//! Transfer tuning, progress reporting and results.

use std::sync::Arc;

use crate::error::{TransferError, TransferErrorKind};

const MIB: u64 = 1024 * 1024;

/// Smallest part S3 accepts for every part but the last (5 MiB).
pub const MIN_PART_SIZE: u64 = 5 * MIB;

/// Largest part, and largest single `PutObject`, S3 accepts (5 GiB).
const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;

/// Largest object S3 stores (5 TiB); larger files are refused before any
/// of them is read.
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * MIB;

/// Most parts one multipart upload may have.
pub const MAX_PARTS: u64 = 10_000;

/// Upper bound on `concurrency`; more streams only add memory and contention.
const MAX_CONCURRENCY: usize = 64;

/// How a transfer splits and parallelises its work.
///
/// A multipart upload holds up to `concurrency + 1` buffers of `part_size`
/// bytes (80 MiB with the defaults); a ranged download holds two 1 MiB
/// buffers per stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOptions {
    /// Size of one multipart part and of one download range, in bytes.
    /// Default 16 MiB; at least [`MIN_PART_SIZE`], at most 5 GiB. An upload
    /// from a path too large for [`MAX_PARTS`] parts of this size uses larger
    /// parts (rounded up to whole MiB).
    pub part_size: u64,
    /// Parts uploaded, or ranges downloaded, at the same time. Default 4; 1 to 64.
    pub concurrency: usize,
    /// Objects smaller than this go up in one `PutObject` and come down in one
    /// `GetObject`; from this size on, uploads are multipart and downloads to a
    /// path use parallel ranged GETs. Default: the default `part_size`; at most
    /// 5 GiB. [`upload_reader`](crate::upload_reader) caps it at `part_size`
    /// because it must buffer the data to learn its size.
    pub single_put_threshold: u64,
    /// Create only: the object is stored only if no object of its name
    /// exists, checked by the server (`If-None-Match: *` on `PutObject` and
    /// on `CompleteMultipartUpload`); a name taken first fails with
    /// [`AlreadyExists`](crate::TransferErrorKind::AlreadyExists), nothing
    /// of this upload stored. A server that ignores the header overwrites.
    pub if_absent: bool,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self { part_size: 16 * MIB, concurrency: 4, single_put_threshold: 16 * MIB, if_absent: false }
    }
}

impl TransferOptions {
    /// Checks the options against S3's limits.
    ///
    /// The transfer functions call this first and fail with
    /// [`TransferErrorKind::InvalidInput`] on the same conditions.
    pub fn validate(&self) -> Result<(), TransferError> {
        let bad = |what: String| Err(TransferError::new(TransferErrorKind::InvalidInput, what));
        if self.part_size < MIN_PART_SIZE || self.part_size > MAX_PART_SIZE {
            return bad(format!("invalid transfer options: part_size {} is outside 5 MiB..=5 GiB", self.part_size));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return bad(format!(
                "invalid transfer options: concurrency {} is outside 1..={MAX_CONCURRENCY}",
                self.concurrency
            ));
        }
        if self.single_put_threshold > MAX_PART_SIZE {
            return bad(format!(
                "invalid transfer options: single_put_threshold {} is above 5 GiB",
                self.single_put_threshold
            ));
        }
        Ok(())
    }

    /// The part size for an object of `size` bytes: `part_size`, grown to whole
    /// MiB when `size` would otherwise need more than [`MAX_PARTS`] parts.
    pub(crate) fn part_size_for(&self, size: u64) -> u64 {
        let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        self.part_size.max(needed)
    }
}

/// Progress callback: called with the number of bytes just transferred.
///
/// Uploads report each part (or the single `PutObject`) once the server has
/// accepted it; downloads report each chunk written to the destination. The
/// reported amounts add up to the object size on success, retries included.
/// It is called from the transfer's async task, so it must return quickly and
/// must not block.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// What a successful transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transferred {
    /// Size of the object in bytes.
    pub size: u64,
    /// CRC32C (Castagnoli) of the whole object content, computed client-side
    /// while streaming.
    pub crc32c: u32,
}

/// S3's bucket naming rules: 3-63 lower-case letters, digits, `.` and `-`,
/// starting and ending with a letter or digit, no `..`. A name outside them
/// would only fail at the first request, with a misleading answer (even a
/// signature mismatch), so settings are checked against them up front.
pub fn check_bucket_name(bucket: &str) -> Result<(), String> {
    let edge = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && edge(bucket.bytes().next())
        && edge(bucket.bytes().last())
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid bucket {bucket:?}: use 3-63 lower-case letters, digits, `.` and `-`, starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let o = TransferOptions::default();
        assert!(o.validate().is_ok());
        assert_eq!(o.part_size, 16 * MIB);
        assert_eq!(o.single_put_threshold, o.part_size);
        assert_eq!(o.concurrency, 4);
    }

    #[test]
    fn rejects_out_of_range() {
        let small = TransferOptions { part_size: MIN_PART_SIZE - 1, ..Default::default() };
        let err = small.validate().unwrap_err();
        assert_eq!(err.kind(), TransferErrorKind::InvalidInput);
        assert!(!err.is_retryable());
        let zero = TransferOptions { concurrency: 0, ..Default::default() };
        assert!(zero.validate().is_err());
        let big = TransferOptions { single_put_threshold: MAX_PART_SIZE + 1, ..Default::default() };
        assert!(big.validate().is_err());
    }

    #[test]
    fn part_size_grows_for_huge_objects() {
        let o = TransferOptions::default();
        assert_eq!(o.part_size_for(0), o.part_size);
        assert_eq!(o.part_size_for(MAX_PARTS * o.part_size), o.part_size);
        let huge = MAX_PARTS * o.part_size + 1;
        let p = o.part_size_for(huge);
        assert_eq!(p, 17 * MIB);
        assert!(huge.div_ceil(p) <= MAX_PARTS);
    }
}
