//! The projects bucket as plugin operations (feature `sdk`): the glue between
//! the plugin SDK's requests and this crate's transfers, shared by every
//! S3-backed provider.

use credhost_plugin_sdk::{
    error_chain, expires_in, CreateOnly, DeleteRequest, Dest, Download, Error as PluginError, ErrorKind, Method,
    PresignRequest, Presigned, Probe, Secret, Source, Stored, Upload,
};

use crate::{TransferError, TransferErrorKind, TransferOptions};

/// A provider's projects bucket on an S3 endpoint.
pub struct S3Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Where the bucket is, for messages (an endpoint URL or a region).
    place: String,
    opts: TransferOptions,
}

impl S3Bucket {
    /// `bucket` through `client`; `place` describes the endpoint in messages.
    pub fn new(client: aws_sdk_s3::Client, bucket: String, place: String, opts: TransferOptions) -> Self {
        Self { client, bucket, place, opts }
    }

    /// The projects bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Stores an upload in the projects bucket: one PUT or a multipart upload
    /// that is aborted on any failure.
    pub async fn upload(&self, req: Upload) -> Result<Stored, PluginError> {
        if let Some(total) = req.size_hint {
            req.progress.set_total(total);
        }
        let mut opts = self.opts.clone();
        if req.multi_part() {
            // A multipart upload whatever the size (the host probing it).
            opts.single_put_threshold = 0;
        }
        match req.if_absent() {
            None => {}
            Some(CreateOnly::Required) => opts.if_absent = true,
            // The store ignores the precondition (the host found so, and the
            // instance accepts the race): look first.
            Some(CreateOnly::BestEffort)
                if crate::object_exists(&self.client, &self.bucket, &req.name).await.map_err(plugin_error)? =>
            {
                return Err(PluginError::new(
                    ErrorKind::ALREADY_EXISTS,
                    format!(
                        "an object named {} exists already in bucket {} (looked for first: best-effort create-only); nothing was stored",
                        req.name, self.bucket
                    ),
                ));
            }
            Some(CreateOnly::BestEffort) => {}
        }
        let progress = req.progress.as_callback();
        let done = match req.source {
            Source::Path(p) => crate::upload_path(&self.client, &self.bucket, &req.name, &p, &opts, progress).await,
            Source::Stream(r) => crate::upload_reader(&self.client, &self.bucket, &req.name, r, &opts, progress).await,
        }
        .map_err(plugin_error)?;
        let location = format!("s3://{}/{}", self.bucket, req.name);
        Ok(Stored::new(&self.bucket, req.name, done.size, format!("crc32c:{:08x}", done.crc32c)).at(location))
    }

    /// Fetches an object, verified, into the request's destination.
    pub async fn download(&self, req: Download) -> Result<Stored, PluginError> {
        let progress = req.progress.as_callback();
        let done = match req.dest {
            Dest::Path(p) => crate::download_to_path(&self.client, &req.bucket, &req.name, &p, &self.opts, progress)
                .await
                .map_err(plugin_error)?,
            Dest::Sink(sink) => {
                let mut out = Dest::Sink(sink).open().await?;
                let done =
                    crate::download_to_writer(&self.client, &req.bucket, &req.name, &mut out, &self.opts, progress)
                        .await
                        .map_err(plugin_error)?;
                out.commit().await?;
                done
            }
        };
        let location = format!("s3://{}/{}", req.bucket, req.name);
        Ok(Stored::new(req.bucket, req.name, done.size, format!("crc32c:{:08x}", done.crc32c)).at(location))
    }

    /// A presigned URL: GET of an object, or PUT of one into the projects bucket.
    pub async fn presign(&self, req: PresignRequest) -> Result<Presigned, PluginError> {
        let signed = match req.method {
            Method::Get => crate::presign_get(&self.client, &req.bucket, &req.name, req.expires).await,
            Method::Put if req.if_absent().is_some() => {
                crate::presign_put_if_absent(&self.client, &self.bucket, &req.name, req.expires).await
            }
            Method::Put => crate::presign_put(&self.client, &self.bucket, &req.name, req.expires).await,
        }
        .map_err(plugin_error)?;
        Ok(Presigned {
            method: req.method,
            url: Secret::new(signed.url),
            headers: signed.headers,
            expires_at: expires_in(req.expires),
        })
    }

    /// Deletes an object; deleting a missing one succeeds.
    pub async fn delete(&self, req: DeleteRequest) -> Result<(), PluginError> {
        crate::delete_object(&self.client, &req.bucket, &req.name).await.map_err(plugin_error)
    }

    /// `HeadBucket` on the projects bucket.
    pub async fn check(&self) -> Probe {
        match crate::head_bucket(&self.client, &self.bucket).await {
            Ok(()) => Probe::ok("storage", format!("s3 bucket {} at {}", self.bucket, self.place)),
            Err(e) => {
                Probe::failed("storage", format!("s3 bucket {} at {}: {}", self.bucket, self.place, error_chain(&e)))
            }
        }
    }
}

/// Transfer tuning from a plugin's `part_size_mib` and `concurrency`
/// settings; `prefix` is where those keys live (e.g. `storage.`).
pub fn transfer_options(
    prefix: &str,
    part_size_mib: Option<u64>,
    concurrency: Option<usize>,
) -> Result<TransferOptions, PluginError> {
    let mut opts = TransferOptions::default();
    if let Some(mib) = part_size_mib {
        if !(5..=5 * 1024).contains(&mib) {
            let key = format!("{prefix}part_size_mib");
            return Err(PluginError::config(&key, format!("`{key}` must be between 5 and 5120")));
        }
        opts.part_size = mib << 20;
        opts.single_put_threshold = opts.part_size;
    }
    if let Some(c) = concurrency {
        if !(1..=64).contains(&c) {
            let key = format!("{prefix}concurrency");
            return Err(PluginError::config(&key, format!("`{key}` must be between 1 and 64")));
        }
        opts.concurrency = c;
    }
    // A transfer holds up to concurrency + 1 parts in memory.
    let held = (opts.part_size >> 20) * (opts.concurrency as u64 + 1);
    if held > MAX_HELD_MIB {
        let key = format!("{prefix}part_size_mib");
        return Err(PluginError::config(
            &key,
            format!(
                "`{prefix}part_size_mib` × (`{prefix}concurrency` + 1) is {held} MiB, the memory a transfer may hold; the limit is {MAX_HELD_MIB}"
            ),
        ));
    }
    Ok(opts)
}

/// The most memory a transfer's parts may take, in MiB.
const MAX_HELD_MIB: u64 = 2048;

/// A transfer error as a plugin error, its causes folded into the message.
pub fn plugin_error(e: TransferError) -> PluginError {
    let kind = match e.kind() {
        TransferErrorKind::NotFound => ErrorKind::NOT_FOUND,
        TransferErrorKind::Unauthenticated => ErrorKind::UNAUTHENTICATED,
        TransferErrorKind::PermissionDenied => ErrorKind::PERMISSION_DENIED,
        TransferErrorKind::InvalidInput => ErrorKind::INVALID_INPUT,
        TransferErrorKind::Unavailable => ErrorKind::UNAVAILABLE,
        TransferErrorKind::Integrity => ErrorKind::INTEGRITY,
        TransferErrorKind::Io => ErrorKind::IO,
        TransferErrorKind::AlreadyExists => ErrorKind::ALREADY_EXISTS,
        _ => ErrorKind::OTHER,
    };
    // A failure of the host's byte source keeps the host's own error.
    if let Some(host) = io_source(&e).and_then(|io| io.get_ref()).and_then(|inner| inner.downcast_ref::<PluginError>())
    {
        let mut err = host.clone();
        err.message = format!("{}: {}", e, host.message).into();
        return err;
    }
    // A service's answer is in the message already (code, its words, request
    // id); for the rest the causes (connection refused, a local read error)
    // matter.
    let message = if e.http_status().is_some() { e.to_string() } else { error_chain(&e) };
    PluginError::new(kind, message).retryable(e.is_retryable())
}

fn io_source(e: &TransferError) -> Option<&std::io::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}
