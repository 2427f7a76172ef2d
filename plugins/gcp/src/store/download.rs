//! Downloads: `alt=media` of one pinned generation, streamed to the
//! destination; a connection that breaks goes on with a ranged request from
//! the first missing byte. CRC32C and MD5 are checked against the object's
//! metadata before the destination counts as complete.

use std::path::Path;

use credhost_plugin_sdk::{Dest, Download, Error as PluginError, ErrorKind, Progress as ProgressHandle, Stored};
use reqwest::{header::CONTENT_RANGE, StatusCode};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use crate::{
    error::{io_error, is_transient, is_transient_status, send_error, status_error},
    retry::{Budget, RETRY_BUDGET},
    store::{
        backoff,
        checksum::{verify, Hasher},
        Gcs, ObjectMeta, ATTEMPTS,
    },
};

/// Writes `bucket`/`name` to the destination, verified.
pub async fn download(gcs: &Gcs, req: Download) -> Result<Stored, PluginError> {
    let meta = gcs.object(&req.bucket, &req.name).await?;
    req.progress.set_total(meta.reported.size);
    let fetch = Fetch { gcs, bucket: &req.bucket, name: &req.name, meta: &meta };
    let digests = match req.dest {
        Dest::Path(path) => {
            let file = tokio::fs::File::create(&path).await.map_err(|e| io_error("cannot create", &path, &e))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let digests = fetch.write_to(&mut out, &path, &req.progress).await?;
            out.flush().await.map_err(|e| io_error("cannot write", &path, &e))?;
            out.get_mut().sync_all().await.map_err(|e| io_error("cannot write", &path, &e))?;
            digests
        }
        Dest::Sink(sink) => {
            let mut out = Dest::Sink(sink).open().await?;
            let digests = fetch.write_to(&mut out, Path::new("the download sink"), &req.progress).await?;
            out.commit().await?;
            digests
        }
    };
    let location = format!("gs://{}/{}", req.bucket, req.name);
    Ok(Stored::new(req.bucket, req.name, digests.size, digests.checksum()).at(location))
}

struct Fetch<'a> {
    gcs: &'a Gcs,
    bucket: &'a str,
    name: &'a str,
    meta: &'a ObjectMeta,
}

impl Fetch<'_> {
    /// Streams the object into `out`, resuming with `Range` after transient
    /// failures, and verifies it. Only `out`'s `finish` (for sinks) or the
    /// host's rename (for files) makes it count.
    async fn write_to<W: AsyncWrite + Unpin>(
        &self,
        out: &mut W,
        out_name: &Path,
        progress: &ProgressHandle,
    ) -> Result<crate::store::checksum::Digests, PluginError> {
        let what = format!("download of gs://{}/{}", self.bucket, self.name);
        let size = self.meta.reported.size;
        let mut url = self.gcs.object_url(self.bucket, self.name);
        url.query_pairs_mut().append_pair("alt", "media");
        if let Some(g) = &self.meta.generation {
            // Pinned, so that a resumed request cannot mix two versions.
            url.query_pairs_mut().append_pair("generation", g);
        }
        let mut hasher = Hasher::default();
        let mut offset = 0u64;
        let mut failures = 0u32;
        let mut last_error = String::new();
        // Since the first failure of the current series without progress.
        let mut series: Option<Budget> = None;
        while offset < size {
            if failures == 0 {
                series = None;
            } else {
                let budget = *series.get_or_insert_with(|| Budget::new(RETRY_BUDGET));
                let pause = backoff(failures);
                if failures >= ATTEMPTS || !budget.allows(pause) {
                    return Err(PluginError::new(
                        ErrorKind::UNAVAILABLE,
                        format!(
                            "{what}: giving up at byte {offset} of {size} after {failures} failed attempts: {last_error}"
                        ),
                    )
                    .retryable(true));
                }
                tokio::time::sleep(pause).await;
            }
            let from = offset;
            let resp = self
                .gcs
                .send(&what, |http| {
                    let rb = http.get(url.clone());
                    if from > 0 {
                        rb.header(reqwest::header::RANGE, format!("bytes={from}-"))
                    } else {
                        rb
                    }
                })
                .await?;
            let status = resp.status();
            let ok = match status {
                StatusCode::OK => from == 0,
                StatusCode::PARTIAL_CONTENT => {
                    range_start(resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok())) == Some(from)
                }
                StatusCode::NOT_FOUND => {
                    return Err(PluginError::new(
                        ErrorKind::NOT_FOUND,
                        format!("{what}: the object was deleted or replaced during the download"),
                    ))
                }
                s if is_transient_status(s) => {
                    failures += 1;
                    last_error = s.to_string();
                    continue;
                }
                s => {
                    let body = crate::error::read_text(resp, &what).await.unwrap_or_default();
                    return Err(status_error(&what, s, &body));
                }
            };
            if !ok {
                return Err(PluginError::new(
                    ErrorKind::OTHER,
                    format!("{what}: asked for bytes from {from}, the server answered {status} for another range"),
                ));
            }
            let mut resp = resp;
            loop {
                match resp.chunk().await {
                    Ok(Some(bytes)) => {
                        if offset + bytes.len() as u64 > size {
                            return Err(PluginError::new(
                                ErrorKind::INTEGRITY,
                                format!("{what}: the server sent more than the {size} bytes the object has"),
                            ));
                        }
                        out.write_all(&bytes).await.map_err(|e| io_error("cannot write", out_name, &e))?;
                        hasher.update(&bytes);
                        offset += bytes.len() as u64;
                        progress.advance(bytes.len() as u64);
                        failures = 0;
                    }
                    Ok(None) => break,
                    Err(e) if is_transient(&e) => {
                        last_error = send_error("reading the body", &e).message.to_string();
                        tracing::debug!("{what}: broken at byte {offset}: {last_error}; resuming from there");
                        failures += 1;
                        break;
                    }
                    Err(e) => return Err(send_error(&what, &e)),
                }
            }
            if offset < size && failures == 0 {
                // The body ended early without an error: count it as one.
                failures += 1;
                last_error = format!("the body ended at byte {offset}");
            }
        }
        let digests = hasher.finish();
        verify(&what, &self.meta.reported, &digests)?;
        Ok(digests)
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` answer.
fn range_start(header: Option<&str>) -> Option<u64> {
    header?.trim().strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(range_start(Some("bytes 100-199/200")), Some(100));
        assert_eq!(range_start(Some("bytes */200")), None);
        assert_eq!(range_start(None), None);
    }
}
