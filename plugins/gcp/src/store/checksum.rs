//! CRC32C and MD5 of transferred bytes, in the forms GCS reports them
//! (base64 of the big-endian CRC32C, base64 of the MD5 digest).

use base64::{engine::general_purpose::STANDARD, Engine as _};
use credhost_plugin_sdk::{Error as PluginError, ErrorKind};
use md5::{Digest as _, Md5};

/// Running checksums over a byte sequence.
#[derive(Clone, Default)]
pub struct Hasher {
    crc32c: u32,
    md5: Md5,
    size: u64,
}

/// The checksums of a whole object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Digests {
    /// Bytes hashed.
    pub size: u64,
    /// CRC32C (Castagnoli).
    pub crc32c: u32,
    /// MD5 digest.
    pub md5: [u8; 16],
}

impl Hasher {
    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.crc32c = crc32c::crc32c_append(self.crc32c, bytes);
        self.md5.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// The checksums of everything added.
    pub fn finish(self) -> Digests {
        let mut md5 = [0u8; 16];
        md5.copy_from_slice(&self.md5.finalize());
        Digests { size: self.size, crc32c: self.crc32c, md5 }
    }

    /// Hashes `bytes` on a blocking thread: MD5 runs at a few hundred MB/s,
    /// too slow for a 16 MiB chunk on an async worker.
    pub async fn update_off_thread(mut self, bytes: bytes::Bytes) -> Result<Self, PluginError> {
        tokio::task::spawn_blocking(move || {
            self.update(&bytes);
            self
        })
        .await
        .map_err(|e| crate::error::join_error("checksum task", e))
    }
}

impl Digests {
    /// `crc32c` as GCS writes it.
    pub fn crc32c_b64(&self) -> String {
        STANDARD.encode(self.crc32c.to_be_bytes())
    }

    /// `md5Hash` as GCS writes it.
    pub fn md5_b64(&self) -> String {
        STANDARD.encode(self.md5)
    }

    /// The boundary's `algorithm:hex` form.
    pub fn checksum(&self) -> String {
        format!("crc32c:{:08x}", self.crc32c)
    }
}

/// The checksums GCS reports for an object; either may be absent (composite
/// objects have no MD5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// Size in bytes.
    pub size: u64,
    /// Base64 CRC32C.
    pub crc32c: Option<String>,
    /// Base64 MD5.
    pub md5: Option<String>,
}

/// Fails with [`ErrorKind::INTEGRITY`] unless the bytes seen match what the
/// server reports for the object; `what` names the transfer.
pub fn verify(what: &str, reported: &Reported, got: &Digests) -> Result<(), PluginError> {
    let mismatch = |detail: String| Err(PluginError::new(ErrorKind::INTEGRITY, format!("{what}: {detail}")));
    if reported.size != got.size {
        return mismatch(format!(
            "size mismatch: the server reports {} bytes, {} were transferred",
            reported.size, got.size
        ));
    }
    if let Some(c) = &reported.crc32c {
        if *c != got.crc32c_b64() {
            return mismatch(format!(
                "crc32c mismatch: the server reports {c}, the bytes transferred give {}",
                got.crc32c_b64()
            ));
        }
    }
    if let Some(m) = &reported.md5 {
        if *m != got.md5_b64() {
            return mismatch(format!(
                "md5 mismatch: the server reports {m}, the bytes transferred give {}",
                got.md5_b64()
            ));
        }
    }
    if reported.crc32c.is_none() && reported.md5.is_none() {
        return mismatch("the server reports no checksum to verify against".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcs_forms_of_known_values() {
        // Known answers: CRC32C("123456789") = 0xe3069283; MD5("") = d41d8cd9...
        let mut h = Hasher::default();
        h.update(b"1234");
        h.update(b"56789");
        let d = h.finish();
        assert_eq!(d.crc32c, 0xe306_9283);
        assert_eq!(d.crc32c_b64(), "4waSgw==");
        assert_eq!(d.checksum(), "crc32c:e3069283");
        assert_eq!(d.size, 9);
        assert_eq!(Hasher::default().finish().md5_b64(), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }

    #[test]
    fn verification_fails_on_any_difference() {
        let mut h = Hasher::default();
        h.update(b"abc");
        let d = h.finish();
        let good = Reported { size: 3, crc32c: Some(d.crc32c_b64()), md5: Some(d.md5_b64()) };
        verify("t", &good, &d).unwrap();
        verify("t", &Reported { md5: None, ..good.clone() }, &d).unwrap();
        for bad in [
            Reported { size: 4, ..good.clone() },
            Reported { crc32c: Some("AAAAAA==".into()), ..good.clone() },
            Reported { md5: Some("AAAAAAAAAAAAAAAAAAAAAA==".into()), ..good.clone() },
            Reported { size: 3, crc32c: None, md5: None },
        ] {
            assert_eq!(verify("t", &bad, &d).unwrap_err().kind, ErrorKind::INTEGRITY, "{bad:?}");
        }
    }
}
