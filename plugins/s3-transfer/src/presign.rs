//! Presigned URLs and deletes.

use std::time::Duration;

use aws_sdk_s3::{presigning::PresigningConfig, Client};

use crate::error::{Op, TransferError, TransferErrorKind};

/// A presigned request: the URL (query-signed with SigV4) and the headers a
/// client must send with it.
pub struct PresignedUrl {
    /// `GET` or `PUT`.
    pub method: String,
    /// The URL. It is a credential until it expires: never log it.
    pub url: String,
    /// Headers the signature covers besides `host`, `(name, value)`.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for PresignedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresignedUrl").field("method", &self.method).field("url", &"** redacted **").finish()
    }
}

/// A URL that GETs `bucket`/`key` for `expires` (at most 7 days). Signing
/// happens locally: nothing is sent, and a missing object is only seen when
/// the URL is used.
pub async fn presign_get(
    client: &Client,
    bucket: &str,
    key: &str,
    expires: Duration,
) -> Result<PresignedUrl, TransferError> {
    presign(client, Method::Get, bucket, key, expires).await
}

/// A URL that PUTs an object `bucket`/`key` for `expires` (at most 7 days).
pub async fn presign_put(
    client: &Client,
    bucket: &str,
    key: &str,
    expires: Duration,
) -> Result<PresignedUrl, TransferError> {
    presign(client, Method::Put, bucket, key, expires).await
}

/// A URL that PUTs an object `bucket`/`key` only if no object of that name
/// exists: `If-None-Match: *` is signed into it (a client must send it, and
/// cannot leave it out), so the URL replayed cannot overwrite.
pub async fn presign_put_if_absent(
    client: &Client,
    bucket: &str,
    key: &str,
    expires: Duration,
) -> Result<PresignedUrl, TransferError> {
    presign(client, Method::PutIfAbsent, bucket, key, expires).await
}

/// Which request a presigned URL makes.
enum Method {
    Get,
    Put,
    PutIfAbsent,
}

/// Signs a `method` request of `bucket`/`key` valid for `expires`.
async fn presign(
    client: &Client,
    method: Method,
    bucket: &str,
    key: &str,
    expires: Duration,
) -> Result<PresignedUrl, TransferError> {
    let op = Op::presign(bucket, key);
    let config = PresigningConfig::expires_in(expires).map_err(|e| op.err(TransferErrorKind::InvalidInput, e))?;
    let req = match method {
        Method::Get => client.get_object().bucket(bucket).key(key).presigned(config).await.map_err(|e| op.sdk(e)),
        Method::Put => client.put_object().bucket(bucket).key(key).presigned(config).await.map_err(|e| op.sdk(e)),
        Method::PutIfAbsent => client
            .put_object()
            .bucket(bucket)
            .key(key)
            .if_none_match("*")
            .presigned(config)
            .await
            .map_err(|e| op.sdk(e)),
    }?;
    Ok(PresignedUrl {
        method: req.method().to_owned(),
        url: req.uri().to_owned(),
        headers: req
            .headers()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
    })
}

/// Deletes `bucket`/`key`; deleting a missing object succeeds (S3 itself
/// answers 204 for it; a store that answers `NoSuchKey` is taken at its word).
pub async fn delete_object(client: &Client, bucket: &str, key: &str) -> Result<(), TransferError> {
    let op = Op::delete(bucket, key);
    match client.delete_object().bucket(bucket).key(key).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let err = op.sdk(e);
            if err.service_code() == Some("NoSuchKey") {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}
