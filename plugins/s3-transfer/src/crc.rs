//! CRC32C helpers: wire encodings and combining per-part values.

/// 8 lowercase hex digits, as stored in the `credhost-crc32c` metadata.
pub(crate) fn to_hex(crc: u32) -> String {
    format!("{crc:08x}")
}

/// Parses exactly 8 hex digits.
pub(crate) fn from_hex(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Base64 of the big-endian bytes, as in `x-amz-checksum-crc32c`.
pub(crate) fn to_base64(crc: u32) -> String {
    aws_smithy_types::base64::encode(crc.to_be_bytes())
}

/// Parses an `x-amz-checksum-crc32c` value of a whole object. Composite
/// multipart values (`...==-3`) are checksums of checksums and give `None`.
pub(crate) fn from_base64(s: &str) -> Option<u32> {
    let bytes = aws_smithy_types::base64::decode(s).ok()?;
    let arr: [u8; 4] = bytes.try_into().ok()?;
    Some(u32::from_be_bytes(arr))
}

/// CRC32C of consecutive pieces given as `(crc, len)` in content order.
pub(crate) fn combine(pieces: impl IntoIterator<Item = (u32, u64)>) -> u32 {
    pieces.into_iter().fold(0, |acc, (crc, len)| combine2(acc, crc, len))
}

/// CRC32C of `a ++ b` from the CRC32C of each and the length of `b`.
pub(crate) fn combine2(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    // Lengths are at most 5 GiB per piece; usize is 64-bit on every target we build.
    crc32c::crc32c_combine(crc_a, crc_b, usize::try_from(len_b).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip() {
        let c = crc32c::crc32c(b"hello world");
        assert_eq!(from_hex(&to_hex(c)), Some(c));
        assert_eq!(to_hex(0x1a), "0000001a");
        assert_eq!(from_base64(&to_base64(c)), Some(c));
        assert_eq!(from_hex("0000001A"), Some(0x1a));
        assert_eq!(from_hex("1a"), None);
        assert_eq!(from_hex("+0000001"), None);
        assert_eq!(from_base64("adNTvA==-2"), None);
        // RFC 3720 test vector: 32 bytes of zeros.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(to_base64(0x8a91_36aa), "ipE2qg==");
    }

    #[test]
    fn combine_matches_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = crc32c::crc32c(&data);
        let pieces = data.chunks(30_001).map(|c| (crc32c::crc32c(c), c.len() as u64));
        assert_eq!(combine(pieces), whole);
        assert_eq!(combine([(0, 0)]), 0);
        assert_eq!(combine2(whole, crc32c::crc32c(&[]), 0), whole);
    }
}
