//! Building an S3 client tuned for large transfers.

use std::fmt;

use aws_sdk_s3::config::{
    BehaviorVersion, Builder, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};

use crate::retry::transfer_retries;
use crate::timeouts::{transfer_timeouts, STALL_GRACE};

/// Connection settings for an S3-compatible endpoint with static keys.
///
/// `Debug` is implemented by hand and prints `** redacted **` in place of the
/// secret access key and the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Endpoint URL such as `http://127.0.0.1:9000`; `None` uses the AWS
    /// endpoint of `region`.
    pub endpoint: Option<String>,
    /// Signing region, e.g. `us-east-1` (most S3-compatible servers accept any).
    pub region: String,
    /// Access key id. Not secret, but not printed in error messages either.
    pub access_key_id: String,
    /// Secret access key. Never printed.
    pub secret_access_key: String,
    /// Session token for temporary credentials. Never printed.
    pub session_token: Option<String>,
    /// Address buckets as `endpoint/bucket/key` instead of
    /// `bucket.endpoint/key`; needed by most S3-compatible servers.
    pub force_path_style: bool,
}

const REDACTED: &str = "** redacted **";

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &REDACTED)
            .field("session_token", &self.session_token.as_ref().map(|_| REDACTED))
            .field("force_path_style", &self.force_path_style)
            .finish()
    }
}

/// Builds a client with static credentials, tuned for this crate.
///
/// On top of [`tune_config`] it sets the latest behavior version, a 10 s
/// connect timeout, a 5 minute limit from sending a request to receiving its
/// response headers (the SDK counts the request body in it), stalled-stream
/// protection with a 30 s grace period for bodies in both directions, and
/// the retry policy of [`transfer_retries`](crate::transfer_retries): up to
/// 4 attempts of an idempotent request with jittered backoff (Create and
/// Complete of a multipart upload are never retried by the SDK).
///
/// Building does no I/O; a wrong endpoint or bad keys show up on the first
/// request (see [`head_bucket`](crate::head_bucket) to check early).
#[must_use]
pub fn build_client(s: &ClientSettings) -> aws_sdk_s3::Client {
    let credentials = Credentials::new(
        s.access_key_id.clone(),
        s.secret_access_key.clone(),
        s.session_token.clone(),
        None,
        "credhost-static",
    );
    let mut builder = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(s.region.clone()))
        .credentials_provider(credentials)
        .force_path_style(s.force_path_style)
        .timeout_config(transfer_timeouts())
        .retry_config(transfer_retries())
        .stalled_stream_protection(StalledStreamProtectionConfig::enabled().grace_period(STALL_GRACE).build());
    if let Some(endpoint) = &s.endpoint {
        builder = builder.endpoint_url(endpoint.clone());
    }
    aws_sdk_s3::Client::from_conf(tune_config(builder).build())
}

/// Applies the settings this crate relies on to a config builder.
///
/// The SDK then computes and validates checksums only where an operation
/// requires them. By default it would wrap every streamed body in signed
/// aws-chunked encoding with a CRC32 trailer, which roughly halves upload
/// throughput against a CPU-bound server; this crate sends its own CRC32C
/// headers instead. Use it when the client comes from `aws-config`:
///
/// ```text
/// let sdk_config = aws_config::defaults(BehaviorVersion::latest()).load().await;
/// let conf = credhost_s3_transfer::tune_config(aws_sdk_s3::config::Builder::from(&sdk_config));
/// let client = aws_sdk_s3::Client::from_conf(conf.build());
/// ```
#[must_use]
pub fn tune_config(builder: Builder) -> Builder {
    builder
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let s = ClientSettings {
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: "us-east-1".into(),
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-secret".into()),
            force_path_style: true,
        };
        assert_eq!(
            format!("{s:?}"),
            "ClientSettings { endpoint: Some(\"http://127.0.0.1:9000\"), region: \"us-east-1\", \
             access_key_id: \"AKID\", secret_access_key: \"** redacted **\", \
             session_token: Some(\"** redacted **\"), force_path_style: true }"
        );
        let none = ClientSettings { session_token: None, ..s };
        assert!(format!("{none:?}").contains("session_token: None"));
        assert!(!format!("{none:#?}").contains("very-secret"));
    }
}
