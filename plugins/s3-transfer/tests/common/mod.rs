//! What the crate's integration tests share: the test server's settings
//! (from the environment written by `tests/services/up.sh`), logging and
//! test data.

use credhost_s3_transfer::ClientSettings;

pub const MIB: u64 = 1024 * 1024;
/// The smallest part S3 accepts, so that small files make several parts.
pub const PART: u64 = 5 * MIB;

/// Shows this crate's records at `level` in test output; `RUST_LOG` for more.
pub fn init_logging(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("credhost_s3_transfer={level}"))),
        )
        .with_test_writer()
        .try_init();
}

/// A variable of the test services' environment.
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need a running S3-compatible server. Start one with \
             tests/services/up.sh and source its env file"
        )
    })
}

/// Client settings for the test server, reached at `endpoint`.
pub fn settings(endpoint: String) -> ClientSettings {
    ClientSettings {
        endpoint: Some(endpoint),
        region: var("CREDHOST_TEST_S3_REGION"),
        access_key_id: var("CREDHOST_TEST_S3_ACCESS_KEY"),
        secret_access_key: var("CREDHOST_TEST_S3_SECRET_KEY"),
        session_token: None,
        force_path_style: true,
    }
}

/// Deterministic incompressible bytes.
pub fn data(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len as usize + 8);
    while (out.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len as usize);
    out
}
