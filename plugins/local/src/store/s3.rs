//! The S3-compatible store: static keys from the environment, path-style
//! addressing, transfers through the shared crate.

use credhost_plugin_sdk::Secret;
use credhost_s3_transfer::{store::S3Bucket, ClientSettings, TransferOptions};

/// A bucket on an S3-compatible endpoint, and what a build job needs to reach it.
pub struct S3Store {
    /// The bucket operations.
    pub bucket: S3Bucket,
    endpoint: String,
    region: String,
    access_key_id: String,
    secret_access_key: Secret,
}

/// What [`S3Store::new`] needs.
pub struct S3Config {
    /// Endpoint URL.
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    /// Projects bucket.
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Transfer tuning.
    pub opts: TransferOptions,
}

impl S3Store {
    /// A client for the endpoint.
    pub fn new(c: S3Config) -> Self {
        let settings = ClientSettings {
            endpoint: Some(c.endpoint.clone()),
            region: c.region.clone(),
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.expose().to_owned(),
            session_token: None,
            force_path_style: true,
        };
        let client = credhost_s3_transfer::build_client(&settings);
        Self {
            bucket: S3Bucket::new(client, c.bucket, c.endpoint.clone(), c.opts),
            endpoint: c.endpoint,
            region: c.region,
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
        }
    }

    /// Endpoint, region and keys, for build-job credentials.
    pub fn connection(&self) -> (&str, &str, &str, &Secret) {
        (&self.endpoint, &self.region, &self.access_key_id, &self.secret_access_key)
    }
}
