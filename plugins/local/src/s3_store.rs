//! The S3-compatible store, through the shared transfer crate.

use credhost_plugin_api::{
    sdk::{Dest, Download, Source, Upload},
    CheckItem, PluginError, Secret, TransferResult,
};
use credhost_s3_transfer as s3;

use crate::error::transfer_error;

/// A bucket on an S3-compatible endpoint.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    endpoint: String,
    region: String,
    bucket: String,
    access_key_id: String,
    secret_access_key: Secret,
    opts: s3::TransferOptions,
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
    pub opts: s3::TransferOptions,
}

impl S3Store {
    /// A client for the endpoint (path-style addressing).
    pub fn new(c: S3Config) -> Self {
        let settings = s3::ClientSettings {
            endpoint: Some(c.endpoint.clone()),
            region: c.region.clone(),
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.expose().to_owned(),
            session_token: None,
            force_path_style: true,
        };
        Self {
            client: s3::build_client(&settings),
            endpoint: c.endpoint,
            region: c.region,
            bucket: c.bucket,
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            opts: c.opts,
        }
    }

    /// The projects bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Endpoint, region and keys, for build-job credentials.
    pub fn connection(&self) -> (&str, &str, &str, &Secret) {
        (&self.endpoint, &self.region, &self.access_key_id, &self.secret_access_key)
    }

    /// Multipart (or single PUT) upload; aborted on failure.
    pub async fn upload(&self, req: Upload) -> Result<TransferResult, PluginError> {
        if let Some(total) = req.size_hint {
            req.progress.set_total(total);
        }
        let progress = req.progress.as_callback();
        let done = match req.source {
            Source::Path(p) => s3::upload_path(&self.client, &self.bucket, &req.name, &p, &self.opts, progress).await,
            Source::Stream(r) => s3::upload_reader(&self.client, &self.bucket, &req.name, r, &self.opts, progress).await,
        }
        .map_err(transfer_error)?;
        let mut result = TransferResult::new(&self.bucket, &req.name, done.size, format!("crc32c:{:08x}", done.crc32c));
        result.extra.insert("location".into(), format!("s3://{}/{}", self.bucket, req.name).into());
        Ok(result)
    }

    /// Streamed or ranged download, verified.
    pub async fn download(&self, req: Download) -> Result<TransferResult, PluginError> {
        let progress = req.progress.as_callback();
        let done = match req.dest {
            Dest::Path(p) => s3::download_to_path(&self.client, &req.bucket, &req.name, &p, &self.opts, progress)
                .await
                .map_err(transfer_error)?,
            Dest::Sink(mut sink) => {
                let done = s3::download_to_writer(&self.client, &req.bucket, &req.name, &mut sink, &self.opts, progress)
                    .await
                    .map_err(transfer_error)?;
                sink.finish().await?;
                done
            }
        };
        Ok(TransferResult::new(req.bucket, req.name, done.size, format!("crc32c:{:08x}", done.crc32c)))
    }

    /// `HeadBucket` on the projects bucket.
    pub async fn check(&self) -> CheckItem {
        match s3::head_bucket(&self.client, &self.bucket).await {
            Ok(()) => CheckItem::ok("storage", format!("s3 bucket {} at {}", self.bucket, self.endpoint)),
            Err(e) => CheckItem::failed("storage", format!("s3 bucket {} at {}: {e}", self.bucket, self.endpoint)),
        }
    }
}
