//! Uploads: one multipart request for anything up to one chunk, a resumable
//! upload session for the rest.
//!
//! Memory stays bounded: one chunk is in flight while the next is read. A
//! chunk that fails transiently is not sent again from its start: the
//! session is asked how much it holds and the upload goes on from there.
//! Checksums: for files, CRC32C and MD5 are computed first and sent with the
//! object's metadata, so the server refuses to finish an upload whose bytes
//! differ; for streams they are computed on the way and compared with what
//! the server reports, and a mismatching object is deleted again.

use std::{path::Path, sync::Arc};

use bytes::Bytes;
use credhost_plugin_sdk::{
    CreateOnly, Error as PluginError, ErrorKind, Progress as ProgressHandle, Source, Stored, Upload,
};
use reqwest::{
    header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE},
    StatusCode, Url,
};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{
    error::{io_error, is_transient, is_transient_status, send_error, server_message, status_error},
    retry::{Budget, Repeat, RETRY_BUDGET},
    store::{
        backoff,
        checksum::{verify, Digests, Hasher},
        parse_object, Gcs, ObjectMeta, ATTEMPTS,
    },
};

/// Resumable chunks are multiples of this (the JSON API's rule).
pub const CHUNK_QUANTUM: usize = 256 << 10;
/// The default chunk: large enough that per-request latency does not
/// dominate, small enough to keep two in memory.
pub const DEFAULT_CHUNK: usize = 64 * CHUNK_QUANTUM;

/// Uploads `req` to `bucket` in chunks of `chunk` bytes (a multiple of
/// [`CHUNK_QUANTUM`]).
pub async fn upload(gcs: &Arc<Gcs>, bucket: &str, req: Upload, chunk: usize) -> Result<Stored, PluginError> {
    if chunk == 0 || chunk % CHUNK_QUANTUM != 0 {
        return Err(PluginError::new(ErrorKind::OTHER, format!("chunk size {chunk} is not a multiple of 256 KiB")));
    }
    let content_type = req.content_type.clone().unwrap_or_else(|| content_type_for(&req.name).to_owned());
    let if_absent = match req.if_absent() {
        None => false,
        Some(CreateOnly::Required) => true,
        // The store ignores the precondition (the host found so, and the
        // instance accepts the race): look first.
        Some(CreateOnly::BestEffort) => match gcs.object(bucket, &req.name).await {
            Ok(_) => {
                return Err(PluginError::new(
                    ErrorKind::ALREADY_EXISTS,
                    format!(
                        "an object named gs://{bucket}/{} exists already (looked for first: best-effort create-only); nothing was stored",
                        req.name
                    ),
                ))
            }
            Err(e) if e.kind == ErrorKind::NOT_FOUND => false,
            Err(e) => return Err(e),
        },
    };
    let target = Target { gcs, bucket, name: &req.name, content_type: &content_type, if_absent };
    // A resumable session whatever the size (the host probing it).
    let resumable = req.multi_part();
    let (mut reader, known) = match req.source {
        Source::Path(path) => {
            let digests = hash_file(&path).await?;
            req.progress.set_total(digests.size);
            let file = tokio::fs::File::open(&path).await.map_err(|e| io_error("cannot open", &path, &e))?;
            // Never read past the size that was hashed; a file that grows or
            // shrinks meanwhile fails the checksum instead.
            let reader = ChunkReader::new(Box::new(file.take(digests.size)), path.display().to_string(), false);
            (reader, Some(digests))
        }
        Source::Stream(stream) => {
            if let Some(total) = req.size_hint {
                req.progress.set_total(total);
            }
            (ChunkReader::new(Box::new(stream), "the upload stream".to_owned(), true), None)
        }
    };

    let first = reader.next(chunk).await?;
    let (meta, digests) = if first.last && !resumable {
        let digests = match known {
            Some(d) => d,
            None => reader.digests(),
        };
        let meta = target.single(first.data, &digests).await?;
        req.progress.advance(digests.size);
        (meta, digests)
    } else {
        target.resumable(first, &mut reader, known, chunk, &req.progress).await?
    };
    let what = format!("upload of gs://{bucket}/{}", req.name);
    if let Err(e) = verify(&what, &meta.reported, &digests) {
        // The object is visible already: take it away again, unless someone
        // replaced it meanwhile.
        if let Err(d) = gcs.delete(bucket, &req.name, meta.generation.as_deref()).await {
            tracing::warn!("could not delete the mismatching object gs://{bucket}/{}: {}", req.name, d.message);
        }
        return Err(e);
    }
    let mut result =
        Stored::new(bucket, &req.name, digests.size, digests.checksum()).at(format!("gs://{bucket}/{}", req.name));
    result.generation = meta.generation.clone();
    Ok(result)
}

fn content_type_for(name: &str) -> &'static str {
    if name.to_ascii_lowercase().ends_with(".zip") {
        "application/zip"
    } else {
        "application/octet-stream"
    }
}

/// Reads the whole file once for its size and checksums, on a blocking thread.
async fn hash_file(path: &Path) -> Result<Digests, PluginError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<Digests, PluginError> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(&owned).map_err(|e| io_error("cannot open", &owned, &e))?;
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buf) {
                Ok(0) => return Ok(hasher.finish()),
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("cannot read", &owned, &e)),
            }
        }
    })
    .await
    .map_err(|e| crate::error::join_error("hashing the file", e))?
}

/// One chunk of the source.
struct Chunk {
    data: Bytes,
    /// Nothing follows it.
    last: bool,
}

/// Splits a reader into chunks, knowing for each whether it is the last one
/// (by peeking one byte past it), optionally hashing what it reads.
struct ChunkReader {
    inner: Box<dyn AsyncRead + Unpin + Send>,
    peeked: Option<u8>,
    hasher: Option<Hasher>,
    what: String,
}

impl ChunkReader {
    fn new(inner: Box<dyn AsyncRead + Unpin + Send>, what: String, hash: bool) -> Self {
        Self { inner, peeked: None, hasher: hash.then(Hasher::default), what }
    }

    async fn next(&mut self, size: usize) -> Result<Chunk, PluginError> {
        let mut buf = vec![0u8; size];
        let mut filled = 0;
        if let Some(b) = self.peeked.take() {
            buf[0] = b;
            filled = 1;
        }
        while filled < size {
            match self.read(&mut buf[filled..]).await? {
                0 => break,
                n => filled += n,
            }
        }
        buf.truncate(filled);
        let last = if filled < size {
            true
        } else {
            let mut one = [0u8; 1];
            match self.read(&mut one).await? {
                0 => true,
                _ => {
                    self.peeked = Some(one[0]);
                    false
                }
            }
        };
        let data = Bytes::from(buf);
        if let Some(h) = self.hasher.take() {
            self.hasher = Some(h.update_off_thread(data.clone()).await?);
        }
        Ok(Chunk { data, last })
    }

    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, PluginError> {
        loop {
            match self.inner.read(buf).await {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("cannot read", Path::new(&self.what), &e)),
            }
        }
    }

    /// The checksums of everything read (streams only).
    fn digests(&mut self) -> Digests {
        self.hasher.take().unwrap_or_default().finish()
    }
}

/// Where an upload goes.
struct Target<'a> {
    gcs: &'a Arc<Gcs>,
    bucket: &'a str,
    name: &'a str,
    content_type: &'a str,
    /// Create only: `ifGenerationMatch=0` (the object must not exist).
    if_absent: bool,
}

/// What a chunk PUT achieved.
enum Put {
    /// The chunk is stored; the session wants more.
    More,
    /// The object is complete.
    Done(ObjectMeta),
}

impl Target<'_> {
    fn what(&self) -> String {
        format!("upload of gs://{}/{}", self.bucket, self.name)
    }

    fn metadata(&self, digests: Option<&Digests>) -> serde_json::Value {
        let mut meta = serde_json::json!({"name": self.name, "contentType": self.content_type});
        if let Some(d) = digests {
            meta["crc32c"] = d.crc32c_b64().into();
            meta["md5Hash"] = d.md5_b64().into();
        }
        meta
    }

    /// Adds the create-only precondition to an upload URL.
    fn precondition(&self, url: &mut Url) {
        if self.if_absent {
            url.query_pairs_mut().append_pair("ifGenerationMatch", "0");
        }
    }

    /// One `uploadType=multipart` request: metadata (with checksums, which
    /// the server verifies) and content together.
    async fn single(&self, data: Bytes, digests: &Digests) -> Result<ObjectMeta, PluginError> {
        let boundary = boundary()?;
        let meta = self.metadata(Some(digests)).to_string();
        let mut body = Vec::with_capacity(data.len() + meta.len() + 256);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n").as_bytes(),
        );
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {}\r\n\r\n", self.content_type).as_bytes());
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let body = Bytes::from(body);
        let mut url = self.gcs.upload_url(self.bucket);
        url.query_pairs_mut().append_pair("uploadType", "multipart").append_pair("name", self.name);
        self.precondition(&mut url);
        let what = self.what();
        let content_type = format!("multipart/related; boundary={boundary}");
        // A create-only request is not repeated once the server may have
        // received it: a repeat of one that stored the object would be
        // answered 412, as if the name had been taken first.
        let repeat = if self.if_absent { Repeat::IfNotReceived } else { Repeat::Idempotent };
        let resp = self
            .gcs
            .send_with(&what, repeat, |http| {
                http.post(url.clone()).header(CONTENT_TYPE, content_type.as_str()).body(body.clone())
            })
            .await?;
        let status = resp.status();
        let text = crate::error::read_text(resp, &what).await?;
        if !status.is_success() {
            return Err(finish_error(&what, status, &text));
        }
        parse_object(&text, &what)
    }

    /// A resumable upload session, chunk by chunk, reading the next chunk
    /// while the current one is sent.
    async fn resumable(
        &self,
        first: Chunk,
        reader: &mut ChunkReader,
        known: Option<Digests>,
        chunk: usize,
        progress: &ProgressHandle,
    ) -> Result<(ObjectMeta, Digests), PluginError> {
        let session = self.initiate(known.as_ref()).await?;
        let mut guard = SessionGuard { gcs: Some(self.gcs.clone()), session: session.clone() };
        let total = known.map(|d| d.size);
        let mut start = 0u64;
        let mut current = first;
        let meta = loop {
            let len = current.data.len() as u64;
            if !current.last {
                let (sent, read) =
                    tokio::join!(self.put(&session, &current.data, start, None, total), reader.next(chunk));
                if let Put::Done(_) = sent? {
                    return Err(PluginError::new(
                        ErrorKind::OTHER,
                        format!("{}: the server completed the object early", self.what()),
                    ));
                }
                progress.advance(len);
                start += len;
                current = read?;
                continue;
            }
            let size = start + len;
            let digests = match known {
                Some(d) if d.size != size => {
                    return Err(PluginError::new(
                        ErrorKind::INTEGRITY,
                        format!(
                            "{} changed while it was uploaded: {} bytes were hashed, {size} read",
                            reader.what, d.size
                        ),
                    ))
                }
                Some(d) => d,
                None => reader.digests(),
            };
            let meta = match self.put(&session, &current.data, start, Some(&digests), Some(size)).await? {
                Put::Done(meta) => meta,
                Put::More => {
                    return Err(PluginError::new(
                        ErrorKind::OTHER,
                        format!("{}: the server still wants data after the last byte", self.what()),
                    ))
                }
            };
            progress.advance(len);
            break (meta, digests);
        };
        guard.gcs = None;
        Ok(meta)
    }

    /// Starts a session; its URI is where the chunks go.
    ///
    /// Starting one is not idempotent, so the request is repeated only when
    /// the server answered without starting a session or the connection
    /// could not be opened ([`Repeat::IfNotReceived`]). When the answer is
    /// lost, the upload fails (retryable); a session the request may have
    /// started holds no data, is visible nowhere, and GCS forgets it within a
    /// week (the JSON API offers no way to list sessions).
    async fn initiate(&self, digests: Option<&Digests>) -> Result<Url, PluginError> {
        let mut url = self.gcs.upload_url(self.bucket);
        url.query_pairs_mut().append_pair("uploadType", "resumable").append_pair("name", self.name);
        self.precondition(&mut url);
        let meta = self.metadata(digests).to_string();
        let what = format!("{}: starting the session", self.what());
        let resp = self
            .gcs
            .send_with(&what, Repeat::IfNotReceived, |http| {
                let mut rb = http
                    .post(url.clone())
                    .header(CONTENT_TYPE, "application/json; charset=UTF-8")
                    .header("X-Upload-Content-Type", self.content_type)
                    .body(meta.clone());
                if let Some(d) = digests {
                    rb = rb.header("X-Upload-Content-Length", d.size);
                }
                rb
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let text = crate::error::read_text(resp, &what).await.unwrap_or_default();
            return Err(finish_error(&what, status, &text));
        }
        let location =
            resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()).and_then(|l| Url::parse(l).ok()).ok_or_else(
                || PluginError::new(ErrorKind::OTHER, format!("{what}: the server sent no usable session URI")),
            )?;
        // Chunks carry the bearer token: send them nowhere but the endpoint.
        if location.origin() != self.gcs.upload_url(self.bucket).origin() {
            return Err(PluginError::new(
                ErrorKind::OTHER,
                format!(
                    "{what}: the session URI points at {}, not at {}",
                    location.origin().ascii_serialization(),
                    self.gcs.endpoint()
                ),
            ));
        }
        Ok(location)
    }

    /// Sends `data`, which starts at byte `start` of the object, to the
    /// session. `last` (the object's checksums) marks the final chunk, whose
    /// request states the total `size`. On a transient failure the session
    /// is asked how much it holds (`Content-Range: bytes */TOTAL`) and the
    /// rest of the chunk goes from there; a 401 gets a fresh token once.
    /// Failures in a row without progress end the upload after [`ATTEMPTS`]
    /// of them or [`RETRY_BUDGET`] after the first, with jittered pauses
    /// ([`backoff`]) before each status query.
    async fn put(
        &self,
        session: &Url,
        data: &Bytes,
        start: u64,
        last: Option<&Digests>,
        total: Option<u64>,
    ) -> Result<Put, PluginError> {
        let what = self.what();
        let end = start + data.len() as u64;
        let total_text = total.map_or_else(|| "*".to_owned(), |t| t.to_string());
        let mut offset = start;
        let mut ask = false;
        let mut failures = 0u32;
        let mut refreshed = false;
        let mut last_error = String::new();
        // Since the first failure of the current series without progress.
        let mut series: Option<Budget> = None;
        loop {
            if failures == 0 {
                series = None;
            } else {
                let budget = *series.get_or_insert_with(|| Budget::new(RETRY_BUDGET));
                let pause = if ask { backoff(failures) } else { std::time::Duration::ZERO };
                if failures >= ATTEMPTS || !budget.allows(pause) {
                    return Err(PluginError::new(
                        ErrorKind::UNAVAILABLE,
                        format!("{what}: giving up at byte {offset} after {failures} failed attempts: {last_error}"),
                    )
                    .retryable(true));
                }
                tokio::time::sleep(pause).await;
            }
            let body = data.slice((offset - start) as usize..);
            if body.is_empty() && last.is_none() {
                return Ok(Put::More);
            }
            let querying = ask || body.is_empty();
            let rb = if querying {
                self.gcs
                    .http()
                    .put(session.clone())
                    .header(CONTENT_LENGTH, 0)
                    .header(CONTENT_RANGE, format!("bytes */{total_text}"))
            } else {
                let range = format!("bytes {offset}-{}/{total_text}", end - 1);
                self.gcs.http().put(session.clone()).header(CONTENT_RANGE, range).body(body)
            };
            let (rb, token) = self.gcs.authorize(rb).await?;
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) if is_transient(&e) => {
                    last_error = crate::error::send_error("request", &e).message.to_string();
                    tracing::debug!("{what}: at byte {offset}: {last_error}; asking the session where to go on");
                    failures += 1;
                    ask = true;
                    continue;
                }
                Err(e) => return Err(send_error(&what, &e)),
            };
            let status = resp.status();
            match status.as_u16() {
                200 | 201 => {
                    let text = crate::error::read_text(resp, &what).await?;
                    return parse_object(&text, &what).map(Put::Done);
                }
                308 => {
                    let held = persisted(resp.headers().get(RANGE).and_then(|v| v.to_str().ok()));
                    if held < start || held > end {
                        return Err(PluginError::new(
                            ErrorKind::OTHER,
                            format!(
                                "{what}: the session holds {held} bytes, outside the chunk {start}..{end} being sent"
                            ),
                        ));
                    }
                    if held > offset {
                        failures = 0;
                    } else if !querying {
                        failures += 1;
                        last_error = format!("the session took none of the bytes from {offset}");
                    }
                    if held != offset || querying {
                        tracing::debug!("{what}: the session holds {held} bytes; going on from there");
                    }
                    offset = held;
                    ask = false;
                }
                401 if !refreshed => {
                    self.gcs.tokens().reject(&token).await;
                    refreshed = true;
                    ask = true;
                }
                404 | 410 if last.is_some() => {
                    // Some servers forget a session once it completed; if the
                    // answer to the last chunk was lost, the object is there.
                    let digests = last.copied().unwrap_or_else(|| Hasher::default().finish());
                    return match self.gcs.object(self.bucket, self.name).await {
                        Ok(meta) if verify(&what, &meta.reported, &digests).is_ok() => Ok(Put::Done(meta)),
                        _ => Err(session_gone(&what, status)),
                    };
                }
                404 | 410 => return Err(session_gone(&what, status)),
                _ if is_transient_status(status) => {
                    last_error = format!("{status}");
                    failures += 1;
                    ask = true;
                }
                _ => {
                    let text = crate::error::read_text(resp, &what).await.unwrap_or_default();
                    return Err(finish_error(&what, status, &text));
                }
            }
        }
    }
}

fn session_gone(what: &str, status: StatusCode) -> PluginError {
    PluginError::new(ErrorKind::UNAVAILABLE, format!("{what}: the upload session expired or was cancelled ({status})"))
        .retryable(true)
}

/// An error answer to a request that would complete the object: a checksum
/// refusal is an integrity failure, anything else as usual.
fn finish_error(what: &str, status: StatusCode, body: &str) -> PluginError {
    let message = server_message(body).unwrap_or_default();
    if status == StatusCode::PRECONDITION_FAILED {
        // Only create-only uploads carry a precondition.
        return PluginError::new(
            ErrorKind::ALREADY_EXISTS,
            format!(
                "{what}: an object of that name exists already (created first; this upload stored nothing): {message}"
            ),
        );
    }
    let lower = message.to_ascii_lowercase();
    if status == StatusCode::BAD_REQUEST && (lower.contains("crc32c") || lower.contains("md5")) {
        return PluginError::new(ErrorKind::INTEGRITY, format!("{what}: the server refused the content: {message}"));
    }
    status_error(what, status, body)
}

/// Bytes a session holds, from its `Range: bytes=0-N` answer (none: 0).
pub fn persisted(range: Option<&str>) -> u64 {
    range
        .and_then(|r| r.trim().strip_prefix("bytes=0-"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map_or(0, |last| last + 1)
}

/// A random multipart boundary; the content cannot plausibly contain it.
fn boundary() -> Result<String, PluginError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PluginError::new(ErrorKind::OTHER, "no randomness for a multipart boundary"))?;
    Ok(format!("credhost-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// Cancels an unfinished session when the upload fails or is dropped, in
/// the background (the plugin's `wait_idle` waits for it).
struct SessionGuard {
    gcs: Option<Arc<Gcs>>,
    session: Url,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let Some(gcs) = self.gcs.take() else {
            return;
        };
        let session = self.session.clone();
        credhost_plugin_sdk::spawn_cleanup(async move {
            // The JSON API answers 499 to a cancelled session; any answer will do.
            match gcs.authorize(gcs.http().delete(session)).await {
                Ok((rb, _)) => match rb.header(CONTENT_LENGTH, 0).send().await {
                    Ok(r) => tracing::debug!("cancelled the upload session ({})", r.status()),
                    Err(e) => tracing::debug!("could not cancel the upload session: {e}"),
                },
                Err(e) => tracing::debug!("could not cancel the upload session: {}", e.message),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ranges() {
        assert_eq!(persisted(None), 0);
        assert_eq!(persisted(Some("bytes=0-262143")), 262_144);
        assert_eq!(persisted(Some("garbage")), 0);
    }

    #[test]
    fn checksum_refusals_are_integrity_errors() {
        let body = r#"{"error":{"message":"Provided CRC32C \"AAAAAA==\" doesn't match calculated CRC32C \"x\"."}}"#;
        assert_eq!(finish_error("u", StatusCode::BAD_REQUEST, body).kind, ErrorKind::INTEGRITY);
        assert_eq!(finish_error("u", StatusCode::BAD_REQUEST, "{}").kind, ErrorKind::OTHER);
        assert_eq!(finish_error("u", StatusCode::FORBIDDEN, body).kind, ErrorKind::PERMISSION_DENIED);
    }

    #[tokio::test]
    async fn chunks_know_when_they_are_last() {
        let data: Vec<u8> = (0..10u8).collect();
        let mut r = ChunkReader::new(Box::new(std::io::Cursor::new(data.clone())), "t".into(), true);
        let a = r.next(4).await.unwrap();
        let b = r.next(4).await.unwrap();
        let c = r.next(4).await.unwrap();
        assert_eq!((a.data.as_ref(), a.last), (&data[..4], false));
        assert_eq!((b.data.as_ref(), b.last), (&data[4..8], false));
        assert_eq!((c.data.as_ref(), c.last), (&data[8..], true));
        let mut h = Hasher::default();
        h.update(&data);
        assert_eq!(r.digests(), h.finish());

        // An exact multiple ends with a full last chunk, never an empty one.
        let mut r = ChunkReader::new(Box::new(std::io::Cursor::new(data[..8].to_vec())), "t".into(), false);
        assert!(!r.next(4).await.unwrap().last);
        assert!(r.next(4).await.unwrap().last);
    }
}
