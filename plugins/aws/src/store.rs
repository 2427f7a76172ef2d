//! The projects bucket on S3, through the shared transfer crate.

use credhost_plugin_sdk::Result;
use credhost_s3_transfer::store::{transfer_options, S3Bucket};

use crate::{clients::Clients, settings::Settings};

/// The instance's projects bucket.
pub fn bucket(clients: &Clients, s: &Settings) -> Result<S3Bucket> {
    let opts = transfer_options("", s.part_size_mib, s.concurrency)?;
    let place =
        s.s3_endpoint_url.clone().or_else(|| s.endpoint_url.clone()).unwrap_or_else(|| format!("region {}", s.region));
    Ok(S3Bucket::new(clients.s3.clone(), s.bucket.clone(), place, opts))
}
