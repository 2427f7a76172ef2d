//! Downloads: HEAD for size and recorded checksums, then one streamed GET or
//! parallel ranged GETs written at their offsets, verified at the end.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::types::ChecksumMode;
use aws_sdk_s3::types::ChecksumType;
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::crc;
use crate::error::{lacks_code, Op, TransferError, TransferErrorKind};
use crate::options::{Progress, TransferOptions, Transferred};
use crate::retry::jittered;
use crate::{META_CRC32C, META_SIZE};

const MIB: u64 = 1 << 20;

/// Most bytes written to the destination per call. Writes above ~1 MiB were
/// measured to be much slower here (page-cache copy cost), 64 KiB–1 MiB fast.
const WRITE_CHUNK: usize = 1 << 20;

/// Longest range of a ranged download (unless the part size is larger).
const MAX_RANGE: u64 = 64 * MIB;

/// Bytes a stream gathers into one job for the writer thread. Each chunk is
/// still written with its own call (they are as large as the HTTP client
/// read them); a job only saves channel hand-offs, and held chunks keep the
/// client's read buffers alive, so jobs stay small.
const JOB_BYTES: usize = 256 << 10;

/// Jobs of up to [`JOB_BYTES`] bytes each stream may have queued for the
/// writer thread: enough to keep it busy, few enough to bound memory.
const QUEUED_WRITES_PER_STREAM: usize = 2;

/// Progress is reported in steps of at least this many bytes.
const PROGRESS_STEP: u64 = 1 << 20;

/// Times a range whose body broke off is requested again for its remainder
/// (the SDK only retries until the response headers arrive). Ranged GETs
/// are idempotent; the pause before resume `n` is random in
/// `0..=min(200 ms × 2^(n-1), 2 s)`.
const MAX_RESUMES: u32 = 3;

/// Upper end of the pause before the first resume.
const RESUME_BACKOFF: Duration = Duration::from_millis(200);

/// Downloads `bucket`/`key` into the file at `dest`, created or truncated.
///
/// Objects smaller than `opts.single_put_threshold` (or any object with
/// `opts.concurrency == 1`) come in one streamed GET; larger ones in ranged
/// GETs, `concurrency` at a time (see [`range_len`] for their size). Every
/// stream computes the CRC32C of its bytes as they arrive and hands them,
/// without copying, to one writer thread that puts them at their offsets in
/// the preallocated file with positional writes of at most 1 MiB (one
/// writer: parallel writes to one file only contend for its lock). All GETs
/// are conditional on the `ETag` seen by the initial HEAD, so an object
/// replaced mid-way fails the download (retryable) instead of mixing two
/// versions. A range whose body breaks off is requested again from where it
/// stopped. The result is verified against the object size and, when
/// recorded, its CRC32C (see the crate docs).
///
/// On error the content of `dest` is unspecified: write to a temporary file
/// (a fresh name per attempt: writes of a cancelled attempt may still land
/// for a moment) and rename it on success. The file is not fsynced.
pub async fn download_to_path(
    client: &Client,
    bucket: &str,
    key: &str,
    dest: &Path,
    opts: &TransferOptions,
    progress: Option<Progress>,
) -> Result<Transferred, TransferError> {
    let (op, object) = start(client, bucket, key, opts).await?;
    let size = object.size;
    let file = create_dest(&op, dest, size).await?;
    let source = Source { client, bucket, key, op, object: &object };

    let ranges: Vec<(u64, u64)> = if size == 0 {
        Vec::new()
    } else if size < opts.single_put_threshold || opts.concurrency == 1 {
        vec![(0, size)]
    } else {
        let len = range_len(size, opts);
        (0..size.div_ceil(len)).map(|i| (i * len, len.min(size - i * len))).collect()
    };
    let whole = ranges.len() == 1;
    let streams = opts.concurrency.min(ranges.len()).max(1);
    let writer = FileWriter::start(file, streams);
    let progress = progress.as_ref();
    let fetched: Result<Vec<(u64, u32, u64)>, TransferError> = stream::iter(ranges)
        .map(|(start, len)| {
            let sink = FileSink::new(&writer, start);
            let source = &source;
            async move {
                let crc = source.fetch(start, len, whole, sink, progress).await?;
                Ok::<_, TransferError>((start, crc, len))
            }
        })
        .buffer_unordered(streams)
        .try_collect()
        .await;
    // A failed write explains a failed fetch (its sink found the writer gone).
    writer.finish().await.map_err(|e| op.io("cannot write", dest, e))?;
    let mut results = fetched?;
    results.sort_by_key(|r| r.0);
    let crc32c = crc::combine(results.iter().map(|r| (r.1, r.2)));
    object.verify(&op, crc32c)?;
    Ok(Transferred { size, crc32c })
}

/// The length of the ranges an object of `size` bytes is fetched in:
/// `size / concurrency` (so every stream has work even for objects of a few
/// parts), at least `part_size` and at most [`MAX_RANGE`] unless `part_size`
/// is larger. Fewer, longer ranges cost fewer requests; more streams than
/// the machine has cores only contend.
fn range_len(size: u64, opts: &TransferOptions) -> u64 {
    let even = size.div_ceil(opts.concurrency as u64).div_ceil(MIB) * MIB;
    even.min(MAX_RANGE).max(opts.part_size_for(size))
}

/// Downloads `bucket`/`key` into `writer`, sequentially in one streamed GET
/// (resumed with a range request if the connection breaks), in writes of up
/// to 1 MiB. Flushes `writer` at the end.
///
/// The data is verified like [`download_to_path`], but only after it has all
/// been written: on error, discard what `writer` received.
pub async fn download_to_writer<W: AsyncWrite + Unpin + Send>(
    client: &Client,
    bucket: &str,
    key: &str,
    writer: W,
    opts: &TransferOptions,
    progress: Option<Progress>,
) -> Result<Transferred, TransferError> {
    let (op, object) = start(client, bucket, key, opts).await?;
    let size = object.size;
    let source = Source { client, bucket, key, op, object: &object };
    let sink = WriterSink { writer: BufWriter::with_capacity(WRITE_CHUNK, writer) };
    let crc32c = source.fetch(0, size, true, sink, progress.as_ref()).await?;
    object.verify(&op, crc32c)?;
    Ok(Transferred { size, crc32c })
}

/// Checks the options and learns about the object, the start of every
/// download.
async fn start<'a>(
    client: &Client,
    bucket: &'a str,
    key: &'a str,
    opts: &TransferOptions,
) -> Result<(Op<'a>, ObjectInfo), TransferError> {
    let op = Op::download(bucket, key);
    opts.validate().map_err(|e| op.wrap(e))?;
    let object = head_object(client, bucket, key, &op).await?;
    Ok((op, object))
}

/// Checks that `bucket` exists and the credentials may use it.
///
/// A cheap way for a plugin to validate its configuration: wrong keys give
/// [`Unauthenticated`](TransferErrorKind::Unauthenticated), a missing bucket
/// [`NotFound`](TransferErrorKind::NotFound), an unreachable endpoint
/// [`Unavailable`](TransferErrorKind::Unavailable).
pub async fn head_bucket(client: &Client, bucket: &str) -> Result<(), TransferError> {
    let op = Op::check_bucket(bucket);
    match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) if lacks_code(&e) => {
            // HEAD answers have no body, hence no error code: a 403 could be
            // a wrong secret or a missing permission. Ask again with a GET.
            match client.list_objects_v2().bucket(bucket).max_keys(1).send().await {
                Err(probe) if !lacks_code(&probe) && probe.as_service_error().is_some() => Err(op.sdk(probe)),
                _ => Err(op.sdk(e)),
            }
        }
        Err(e) => Err(op.sdk(e)),
    }
}

/// Whether `bucket`/`key` exists (a HEAD of it: 404 is "no").
pub async fn object_exists(client: &Client, bucket: &str, key: &str) -> Result<bool, TransferError> {
    let op = Op::download(bucket, key);
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => Ok(true),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
        Err(e) => Err(op.sdk(e)),
    }
}

/// What the HEAD request told about the object.
struct ObjectInfo {
    size: u64,
    etag: Option<String>,
    /// CRC32C values the content must match, with where each came from.
    expected: Vec<(u32, &'static str)>,
}

impl ObjectInfo {
    fn verify(&self, op: &Op<'_>, got: u32) -> Result<(), TransferError> {
        for (want, from) in &self.expected {
            if *want != got {
                return Err(op.err(
                    TransferErrorKind::Integrity,
                    format_args!("crc32c of the data is {got:08x} but {from} says {want:08x}"),
                ));
            }
        }
        Ok(())
    }
}

async fn head_object(client: &Client, bucket: &str, key: &str, op: &Op<'_>) -> Result<ObjectInfo, TransferError> {
    let head = match client.head_object().bucket(bucket).key(key).checksum_mode(ChecksumMode::Enabled).send().await {
        Ok(head) => head,
        Err(e) if lacks_code(&e) => {
            // HEAD errors carry no code; a one-byte GET tells NoSuchKey from
            // NoSuchBucket and InvalidAccessKeyId from AccessDenied.
            return Err(match client.get_object().bucket(bucket).key(key).range("bytes=0-0").send().await {
                Err(probe) if !lacks_code(&probe) && probe.as_service_error().is_some() => op.sdk(probe),
                _ => op.sdk(e),
            });
        }
        Err(e) => return Err(op.sdk(e)),
    };

    let size = head
        .content_length()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| op.err(TransferErrorKind::Other, "server sent no object size"))?;
    let mut expected = Vec::new();
    if let Some(meta) = head.metadata() {
        if let Some(recorded) = meta.get(META_SIZE) {
            match recorded.parse::<u64>() {
                Ok(n) if n != size => {
                    return Err(op.err(
                        TransferErrorKind::Integrity,
                        format_args!("object is {size} bytes but its metadata records {n}"),
                    ))
                }
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(key, value = %recorded, "ignoring malformed {META_SIZE} metadata")
                }
            }
        }
        if let Some(recorded) = meta.get(META_CRC32C) {
            if let Some(c) = crc::from_hex(recorded) {
                expected.push((c, "its metadata"));
            } else {
                tracing::warn!(key, value = %recorded, "ignoring malformed {META_CRC32C} metadata");
            }
        }
    }
    // Our own record, written at upload from the bytes we read, is the
    // authority; the server's full-object checksum only stands in where that
    // record is missing (objects from other clients, streamed multipart
    // uploads). Some S3-compatible servers report a wrong full-object value
    // for multipart objects (moto does), so the two are not both required.
    let composite = head.checksum_type() == Some(&ChecksumType::Composite);
    if let Some(c) = head.checksum_crc32_c().filter(|_| !composite && expected.is_empty()).and_then(crc::from_base64) {
        expected.push((c, "the server's full-object checksum"));
    }
    tracing::debug!(bucket, key, size, ?expected, "object found");
    Ok(ObjectInfo { size, etag: head.e_tag().map(str::to_owned), expected })
}

/// Preallocates the destination with `set_len` so ranges can be written at
/// their offsets in any order.
async fn create_dest(op: &Op<'_>, dest: &Path, size: u64) -> Result<File, TransferError> {
    let owned = dest.to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&owned)?;
        file.set_len(size)?;
        Ok::<_, io::Error>(file)
    })
    .await
    .map_err(|e| op.err(TransferErrorKind::Other, "file task failed").with_source(e))?;
    result.map_err(|e| op.io("cannot create", dest, e))
}

/// Where downloaded bytes go, in content order.
trait Sink: Send {
    fn write(&mut self, data: Bytes) -> impl Future<Output = Result<(), SinkError>> + Send;
    fn finish(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// A failed write.
struct SinkError(io::Error);

impl SinkError {
    fn into_transfer(self, op: &Op<'_>) -> TransferError {
        op.err(TransferErrorKind::Io, "cannot write the destination").with_source(self.0)
    }
}

/// Bytes to write at an offset of the destination: received body chunks,
/// together at most [`JOB_BYTES`] bytes and each written with its own call.
struct WriteJob {
    pos: u64,
    chunks: Vec<Bytes>,
}

/// The one thread writing the destination. Streams queue jobs through a
/// bounded channel, so a slow disk holds back the network instead of
/// filling memory.
struct FileWriter {
    tx: mpsc::Sender<WriteJob>,
    thread: JoinHandle<io::Result<()>>,
}

impl FileWriter {
    /// Starts the writer; `streams` streams feed it.
    fn start(file: File, streams: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<WriteJob>(streams.max(1) * QUEUED_WRITES_PER_STREAM);
        let thread = tokio::task::spawn_blocking(move || {
            while let Some(job) = rx.blocking_recv() {
                let mut pos = job.pos;
                for chunk in job.chunks {
                    file.write_all_at(&chunk, pos)?;
                    pos += chunk.len() as u64;
                }
            }
            Ok(())
        });
        Self { tx, thread }
    }

    /// Waits until everything queued is written (or the first write error).
    /// Sinks still alive are cut off: their later writes fail.
    async fn finish(self) -> io::Result<()> {
        drop(self.tx);
        self.thread.await.map_err(io::Error::other)?
    }
}

/// One stream's way to the writer thread: gathers body chunks at increasing
/// offsets into jobs of up to [`JOB_BYTES`] bytes.
struct FileSink {
    tx: mpsc::Sender<WriteJob>,
    /// File offset of the first byte of `batch`.
    pos: u64,
    batch: Vec<Bytes>,
    batched: usize,
}

impl FileSink {
    fn new(writer: &FileWriter, pos: u64) -> Self {
        Self { tx: writer.tx.clone(), pos, batch: Vec::new(), batched: 0 }
    }

    async fn send(&mut self) -> Result<(), SinkError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let job = WriteJob { pos: self.pos, chunks: std::mem::take(&mut self.batch) };
        self.pos += self.batched as u64;
        self.batched = 0;
        self.tx
            .send(job)
            .await
            .map_err(|_| SinkError(io::Error::new(io::ErrorKind::BrokenPipe, "the file writer stopped")))
    }
}

impl Sink for FileSink {
    async fn write(&mut self, data: Bytes) -> Result<(), SinkError> {
        let mut data = data;
        while !data.is_empty() {
            let n = data.len().min(JOB_BYTES - self.batched);
            self.batch.push(data.split_to(n));
            self.batched += n;
            if self.batched >= JOB_BYTES {
                self.send().await?;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), SinkError> {
        self.send().await
    }
}

/// Writes sequentially to a caller's writer through a 1 MiB buffer.
struct WriterSink<W> {
    writer: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin + Send> Sink for WriterSink<W> {
    async fn write(&mut self, data: Bytes) -> Result<(), SinkError> {
        self.writer.write_all(&data).await.map_err(SinkError)
    }

    async fn finish(&mut self) -> Result<(), SinkError> {
        self.writer.flush().await.map_err(SinkError)
    }
}

/// The object being downloaded.
struct Source<'a> {
    client: &'a Client,
    bucket: &'a str,
    key: &'a str,
    op: Op<'a>,
    object: &'a ObjectInfo,
}

impl Source<'_> {
    /// Streams bytes `start..start+len` into `sink` and returns their CRC32C.
    /// With `whole`, the first request asks for the entire object without a
    /// Range header. A body that breaks off is resumed where it stopped.
    async fn fetch<S: Sink>(
        &self,
        start: u64,
        len: u64,
        whole: bool,
        mut sink: S,
        progress: Option<&Progress>,
    ) -> Result<u32, TransferError> {
        let op = &self.op;
        let (mut done, mut crc, mut resumes, mut unreported) = (0u64, 0u32, 0u32, 0u64);
        while done < len {
            let (from, to) = (start + done, start + len - 1);
            let ranged = !(whole && done == 0);
            let mut request = self.client.get_object().bucket(self.bucket).key(self.key);
            if let Some(etag) = &self.object.etag {
                request = request.if_match(etag);
            }
            if ranged {
                request = request.range(format!("bytes={from}-{to}"));
            }
            let response = request.send().await.map_err(|e| {
                let e = op.sdk(e);
                if e.service_code() == Some("PreconditionFailed") {
                    changed(op)
                } else {
                    e
                }
            })?;
            // A server that ignores If-Match still names the version it sent.
            if let (Some(want), Some(got)) = (&self.object.etag, response.e_tag()) {
                if want != got {
                    return Err(changed(op));
                }
            }
            let mut skip =
                body_offset(ranged, from, to, self.object.size, response.content_range(), response.content_length())
                    .map_err(|why| op.err(TransferErrorKind::Other, why).retryable(true))?;

            let mut body = response.body;
            let broke = loop {
                match body.next().await {
                    None => break None,
                    Some(Err(e)) => break Some(e),
                    Some(Ok(mut chunk)) => {
                        if skip > 0 {
                            let n = usize::try_from(skip).map_or(chunk.len(), |s| s.min(chunk.len()));
                            let _ = chunk.split_to(n);
                            skip -= n as u64;
                        }
                        let take = usize::try_from(len - done).map_or(chunk.len(), |r| r.min(chunk.len()));
                        chunk.truncate(take);
                        crc = crc32c::crc32c_append(crc, &chunk);
                        sink.write(chunk).await.map_err(|e| e.into_transfer(op))?;
                        done += take as u64;
                        unreported += take as u64;
                        if unreported >= PROGRESS_STEP {
                            report(progress, std::mem::take(&mut unreported));
                        }
                        if done == len {
                            // Ignore anything past the range; dropping the
                            // body closes that connection.
                            break None;
                        }
                    }
                }
            };
            if done == len {
                break;
            }
            resumes += 1;
            let why = match &broke {
                Some(e) => format!("{}", DisplayErrorContext(e)),
                None => "body ended early".to_owned(),
            };
            if resumes > MAX_RESUMES {
                let e = op.err(
                    TransferErrorKind::Unavailable,
                    format_args!("connection lost {resumes} times at byte {}", start + done),
                );
                return Err(match broke {
                    Some(b) => e.with_source(b),
                    None => e,
                });
            }
            tracing::warn!(bucket = self.bucket, key = self.key, at = start + done, error = %why, "download stream broke; resuming");
            tokio::time::sleep(jittered(RESUME_BACKOFF, resumes, Duration::from_secs(2))).await;
        }
        sink.finish().await.map_err(|e| e.into_transfer(op))?;
        report(progress, unreported);
        Ok(crc)
    }
}

/// The error of a download whose object was replaced after the HEAD.
fn changed(op: &Op<'_>) -> TransferError {
    op.err(TransferErrorKind::Other, "object changed during the download").retryable(true)
}

/// Checks a GET response against the bytes `from..=to` asked for (the whole
/// object of `total` bytes when not `ranged`) and returns how many leading
/// body bytes to skip.
///
/// Accepts 206 or 200 with a matching `Content-Range` (rclone answers ranged
/// GETs with 200), and a 200 with the whole object from a server that ignored
/// the Range header (then the bytes before `from` are skipped).
fn body_offset(
    ranged: bool,
    from: u64,
    to: u64,
    total: u64,
    content_range: Option<&str>,
    content_length: Option<i64>,
) -> Result<u64, String> {
    let length = content_length.and_then(|n| u64::try_from(n).ok());
    if !ranged {
        return match length {
            Some(n) if n != total => Err(format!("object size changed from {total} to {n} bytes during the download")),
            _ => Ok(0),
        };
    }
    match content_range.map(parse_content_range) {
        Some(Some((first, last, size))) => {
            if size.is_some_and(|s| s != total) {
                return Err("object size changed during the download".to_owned());
            }
            if first > from || last < first {
                return Err(format!("server sent bytes {first}-{last} for a request of {from}-{to}"));
            }
            Ok(from - first)
        }
        Some(None) => Err(format!("unreadable Content-Range {:?}", content_range.unwrap_or_default())),
        None if length == Some(total) => Ok(from),
        None => Err("server answered a range request without Content-Range".to_owned()),
    }
}

/// Parses `bytes FIRST-LAST/SIZE` (SIZE may be `*`).
fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, size) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let size = match size.trim() {
        "*" => None,
        s => Some(s.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?, size))
}

fn report(progress: Option<&Progress>, n: u64) {
    if let Some(p) = progress {
        if n > 0 {
            p(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0, 99, Some(1000))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn body_offsets() {
        // 206 or rclone's 200 with Content-Range: exact range.
        assert_eq!(body_offset(true, 100, 199, 1000, Some("bytes 100-199/1000"), Some(100)), Ok(0));
        // Server ignored Range and sent everything: skip to the range.
        assert_eq!(body_offset(true, 100, 199, 1000, None, Some(1000)), Ok(100));
        // Server started earlier than asked: skip the difference.
        assert_eq!(body_offset(true, 100, 199, 1000, Some("bytes 0-999/1000"), Some(1000)), Ok(100));
        assert!(body_offset(true, 100, 199, 1000, Some("bytes 150-199/1000"), Some(50)).is_err());
        assert!(body_offset(true, 100, 199, 1000, Some("bytes 100-199/2000"), Some(100)).is_err());
        assert!(body_offset(true, 100, 199, 1000, None, Some(100)).is_err());
        assert_eq!(body_offset(false, 0, 999, 1000, None, Some(1000)), Ok(0));
        assert!(body_offset(false, 0, 999, 1000, None, Some(999)).is_err());
    }
}
