//! Uploads: one `PutObject` for small objects, a guarded multipart upload for
//! the rest.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::put_object::PutObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, BoxStream, FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::cleanup::Cleanup;
use crate::crc;
use crate::error::{Op, TransferError, TransferErrorKind};
use crate::file_body::{range_crcs, ChunkPool, FileBodyError, FileRange};
use crate::options::{Progress, TransferOptions, Transferred, MAX_OBJECT_SIZE, MAX_PARTS};
use crate::pool::{BufferPool, PooledBuf};
use crate::retry::{jittered, server_busy, single_attempt, Budget, CONTROL_ATTEMPTS, CONTROL_BACKOFF, CONTROL_BUDGET};
use crate::timeouts::{control_timeouts, transfer_timeouts};
use crate::{META_CRC32C, META_SIZE};

/// Largest read from a streamed source between two CRC32C updates.
const READ_BUFFER: usize = 1 << 20;

/// HEAD requests made to find the object of a Complete whose answer was lost
/// (the server may still be assembling it); one when the server answered.
const LOST_COMPLETE_LOOKS: u32 = 3;

/// Uploads the file at `path` to `bucket`/`key`, replacing any object there.
///
/// A file larger than S3's largest object (5 TiB) is refused before any of
/// it is read. The data is streamed straight from the file, and no part is
/// held in memory: in one `PutObject` when the file is at most
/// `opts.single_put_threshold` bytes, otherwise as a multipart upload of
/// `opts.concurrency` parts at a time, each read at its offset. The whole
/// file's CRC32C goes where downloads can verify it:
///
/// * a multipart upload asks the server to keep a full-object CRC32C. Where
///   it does (AWS, `SeaweedFS`, moto), the CRC32C of each part is computed as
///   the part is sent, and the whole object's, combined from them, is given
///   at completion for the server to check and keep: the file is read once.
/// * Where it does not, that upload is aborted, and the file is measured
///   first (the CRC32C of each part, by positional reads on up to four
///   threads) so that the whole file's CRC32C can be recorded as metadata
///   when the upload is created; each part then carries its CRC32C in its
///   checksum header.
/// * A single `PutObject` carries the CRC32C in its header and its
///   metadata, so it is measured first too: a request's head comes before
///   its body, and only this one request could carry it.
///
/// The first `len` bytes as of the start are sent; if the file changes
/// meanwhile the upload fails with [`Integrity`](TransferErrorKind::Integrity)
/// (retryable) and nothing is stored. A 0-byte file makes a 0-byte object.
///
/// Either the whole object is stored or nothing is: a failed or dropped
/// multipart upload is aborted.
pub async fn upload_path(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    opts: &TransferOptions,
    progress: Option<Progress>,
) -> Result<Transferred, TransferError> {
    let op = Op::upload(bucket, key);
    opts.validate().map_err(|e| op.wrap(e))?;
    let (file, stamp) = open_for_read(&op, path).await?;
    let size = stamp.len;
    if size > MAX_OBJECT_SIZE {
        return Err(op.err(
            TransferErrorKind::InvalidInput,
            format_args!(
                "{} is {size} bytes; an S3 object holds at most 5 TiB ({MAX_OBJECT_SIZE} bytes)",
                path.display()
            ),
        ));
    }
    let file = Arc::new(file);
    let target = Target { client, bucket, key, op, path: Some(path), if_absent: opts.if_absent };

    if size <= opts.single_put_threshold {
        let crc = measure(&op, path, file.clone(), size, size.max(1)).await?.first().copied().unwrap_or(0);
        let range = FileRange::new(file, 0, size, Some(crc), ChunkPool::new(1));
        target.put(Body::File(range), size, crc).await?;
        report(progress.as_ref(), size);
        return Ok(Transferred { size, crc32c: crc });
    }

    let part_size = opts.part_size_for(size);
    let upload = target.start(None, true).await?;
    if upload.mode.full_object {
        let parts = file_parts(op, &file, size, part_size, None, opts.concurrency);
        let check = Check::Unchanged { file, stamp };
        return target.finish(upload, check, parts, opts.concurrency, progress.as_ref()).await;
    }

    // The server keeps no full-object CRC32C: record the file's as metadata
    // instead, which can only be set when the upload is created, so measure
    // the file first. On such servers the file is read twice (the first
    // pass costs about 2% of an upload's time here); the Create and Abort of
    // the first upload are the price of asking, two small requests. The
    // record could also be added after completion, by tagging the object
    // or copying it onto itself with new metadata (on rclone 4 ms and 10 ms
    // for 256 MiB), but either leaves the object without a record for a
    // while, needs a permission an upload may not have (tagging; reading
    // the object to copy it), and tags would cost every download another
    // request and a permission a read-only grant does not give. Metadata
    // comes with the object, and downloads already verify it.
    let ask = upload.mode.parts;
    tracing::debug!(bucket, key, "the server keeps no full-object CRC32C; recording the file's as metadata");
    upload.abort.run().await;
    let crcs = measure(&op, path, file.clone(), size, part_size).await?;
    let whole_crc = crc::combine(crcs.iter().zip(part_lens(size, part_size)).map(|(c, len)| (*c, len)));
    let upload = target.start(Some((whole_crc, size)), ask).await?;
    let parts = file_parts(op, &file, size, part_size, Some(crcs), opts.concurrency);
    let check = Check::Measured { crc: whole_crc, size };
    target.finish(upload, check, parts, opts.concurrency, progress.as_ref()).await
}

/// The lengths of the `part_size` parts of `size` bytes, in order.
fn part_lens(size: u64, part_size: u64) -> impl Iterator<Item = u64> {
    (0..size.div_ceil(part_size)).map(move |i| part_size.min(size - i * part_size))
}

/// The parts of the first `size` bytes of `file`, `part_size` each, read
/// at their offsets when they are sent. With `crcs`, the CRC32C each part
/// was measured to have, which its body checks; without, each part's is
/// learned as it is read.
fn file_parts<'a>(
    op: Op<'a>,
    file: &Arc<File>,
    size: u64,
    part_size: u64,
    crcs: Option<Vec<u32>>,
    concurrency: usize,
) -> PartStream<'a> {
    let pool = ChunkPool::new(concurrency);
    let file = file.clone();
    stream::iter((0u64..).zip(part_lens(size, part_size)))
        .map(move |(i, len)| {
            let crc = crcs.as_ref().and_then(|c| c.get(to_usize(i)).copied());
            let range = FileRange::new(file.clone(), i * part_size, len, crc, pool.clone());
            let part = part_number(&op, i).map(|number| PartData {
                number,
                body: PartBody::File(range),
                len: to_usize(len),
                crc,
            });
            futures::future::ready(part).boxed()
        })
        .boxed()
}

/// Uploads everything `reader` yields until end of file to `bucket`/`key`,
/// replacing any object there.
///
/// Reads up to `part_size` bytes first. If the reader ends before
/// `min(single_put_threshold, part_size)` bytes, the data goes up in one
/// `PutObject` with its CRC32C and size recorded as metadata. Otherwise it is
/// a multipart upload of parts read sequentially while up to
/// `opts.concurrency` parts are in flight; its size and CRC32C are not known
/// when it starts, so instead of metadata the server is asked for a
/// full-object CRC32C, which downloads verify when the server keeps one
/// (`SeaweedFS` and AWS do). An empty reader makes a 0-byte object.
///
/// Either the whole object is stored or nothing is: a reader error, a failed
/// request or dropping the future aborts the multipart upload.
pub async fn upload_reader<R: AsyncRead + Unpin + Send>(
    client: &Client,
    bucket: &str,
    key: &str,
    mut reader: R,
    opts: &TransferOptions,
    progress: Option<Progress>,
) -> Result<Transferred, TransferError> {
    let op = Op::upload(bucket, key);
    opts.validate().map_err(|e| op.wrap(e))?;
    let target = Target { client, bucket, key, op, path: None, if_absent: opts.if_absent };
    let part_size = to_usize(opts.part_size);
    let pool = BufferPool::new(part_size, opts.concurrency + 1);

    let mut first = pool.acquire().await;
    let (len, first_crc, eof) = fill(&mut reader, &mut first, &op).await?;
    let threshold = opts.single_put_threshold.min(opts.part_size);
    if eof && (len as u64) < threshold.max(1) {
        let bytes = first.freeze(len);
        let size = len as u64;
        target.put(Body::Memory(bytes), size, first_crc).await?;
        report(progress.as_ref(), size);
        return Ok(Transferred { size, crc32c: first_crc });
    }

    let state = ReadState {
        reader: &mut reader,
        pool,
        pending: Some(PartData { number: 1, body: PartBody::Memory(first), len, crc: Some(first_crc) }),
        next: 1,
        eof,
    };
    let parts = stream::unfold(state, move |mut st| async move {
        if let Some(part) = st.pending.take() {
            return Some((Ok(part), st));
        }
        if st.eof {
            return None;
        }
        let mut buf = st.pool.acquire().await;
        let item = match fill(st.reader, &mut buf, &op).await {
            Ok((0, _, _)) => return None,
            Ok((len, part_crc, eof)) => {
                st.eof = eof;
                match part_number(&op, st.next) {
                    Ok(number) => {
                        st.next += 1;
                        Ok(PartData { number, body: PartBody::Memory(buf), len, crc: Some(part_crc) })
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if item.is_err() {
            st.eof = true;
        }
        Some((item, st))
    })
    .map(|item| futures::future::ready(item).boxed())
    .boxed();
    let upload = target.start(None, true).await?;
    target.finish(upload, Check::Nothing, parts, opts.concurrency, progress.as_ref()).await
}

/// Sequential part reading for [`upload_reader`].
struct ReadState<'r, R> {
    reader: &'r mut R,
    pool: BufferPool,
    /// The first part, read before deciding between one PUT and multipart.
    pending: Option<PartData>,
    /// Index of the next part to read (0-based).
    next: u64,
    eof: bool,
}

/// Parts to upload, in order: each future yields one part's data.
type PartStream<'a> = BoxStream<'a, BoxFuture<'a, Result<PartData, TransferError>>>;

/// One part to upload.
struct PartData {
    number: i32,
    body: PartBody,
    len: usize,
    /// Its CRC32C, when known before it is sent.
    crc: Option<u32>,
}

/// Where a part's bytes come from.
enum PartBody {
    /// Read from a stream into a pooled buffer.
    Memory(PooledBuf),
    /// Streamed from a range of the file, which computes its CRC32C.
    File(FileRange),
}

/// One uploaded part.
struct PartDone {
    number: i32,
    etag: String,
    crc: u32,
    len: u64,
}

/// Where an upload goes, and the file it comes from (if any).
struct Target<'a> {
    client: &'a Client,
    bucket: &'a str,
    key: &'a str,
    op: Op<'a>,
    path: Option<&'a Path>,
    /// Create only (`If-None-Match: *`).
    if_absent: bool,
}

impl Target<'_> {
    /// Classifies an error of a request whose body may have been streamed
    /// from the source file: a body that stopped because the file changed
    /// or could not be read is that, not a network failure.
    fn sdk<E>(&self, err: SdkError<E, HttpResponse>) -> TransferError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let path = self.path.unwrap_or(Path::new("the source"));
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            match e.downcast_ref::<FileBodyError>() {
                Some(FileBodyError::Changed) => return self.changed(),
                Some(FileBodyError::Read(io)) => {
                    let io = std::io::Error::new(io.kind(), io.to_string());
                    return self.op.io("cannot read", path, io);
                }
                None => source = e.source(),
            }
        }
        self.op.sdk(err)
    }

    /// The error of a create-only request the server refused because the
    /// name is taken (412), as [`TransferErrorKind::AlreadyExists`]; any
    /// other error as it is.
    fn taken(&self, e: TransferError) -> TransferError {
        if !(self.if_absent && e.http_status() == Some(412)) {
            return e;
        }
        self.op.err(
            TransferErrorKind::AlreadyExists,
            format_args!(
                "an object named {} exists already in bucket {} (created first; this upload stored nothing)",
                self.key, self.bucket
            ),
        )
    }

    fn changed(&self) -> TransferError {
        let path = self.path.unwrap_or(Path::new("the source"));
        self.op
            .err(TransferErrorKind::Integrity, format_args!("{} changed while it was being uploaded", path.display()))
            .retryable(true)
    }

    /// One `PutObject` with the CRC32C header and metadata. If the server
    /// rejects the request as unsupported while the checksum header is set,
    /// retries once without it.
    async fn put(&self, body: Body, size: u64, whole_crc: u32) -> Result<(), TransferError> {
        if self.if_absent {
            return self.put_if_absent(body, size, whole_crc).await;
        }
        match self.put_once(body.stream(), size, whole_crc, true, false).await {
            Ok(()) => Ok(()),
            Err(e) if rejects_checksum(&e) => {
                tracing::warn!(
                    bucket = self.bucket,
                    key = self.key,
                    error = %DisplayErrorContext(&e),
                    "server rejected PutObject with a CRC32C header; retrying without it"
                );
                self.put_once(body.stream(), size, whole_crc, false, false).await.map_err(|e| self.sdk(e))
            }
            Err(e) => Err(self.sdk(e)),
        }
    }

    /// A create-only `PutObject`, one attempt at a time (the SDK's own
    /// retries would hide a lost answer): a 412 that follows an attempt whose
    /// answer was lost (it may have stored the object) is this upload's own
    /// object when the key holds its size and CRC32C; any other 412 means the
    /// name was taken first.
    async fn put_if_absent(&self, body: Body, size: u64, whole_crc: u32) -> Result<(), TransferError> {
        let budget = Budget::new(CONTROL_BUDGET);
        let (mut with_checksum, mut answer_lost, mut attempt) = (true, false, 0);
        loop {
            attempt += 1;
            let err = match self.put_once(body.stream(), size, whole_crc, with_checksum, true).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if with_checksum && rejects_checksum(&err) {
                with_checksum = false;
                continue;
            }
            if status_of(&err) == Some(412) {
                if answer_lost && self.stored_matches(size, whole_crc, 1).await {
                    return Ok(());
                }
                return Err(self.taken(self.sdk(err)));
            }
            let lost = match &err {
                SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
                SdkError::DispatchFailure(d) => !d.is_user(),
                _ => false,
            };
            answer_lost |= lost;
            if attempt < CONTROL_ATTEMPTS && (lost || server_busy(&err) || failed_internally(&err)) {
                let pause = jittered(CONTROL_BACKOFF, attempt, CONTROL_BUDGET);
                if budget.allows(pause) {
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            return Err(self.sdk(err));
        }
    }

    async fn put_once(
        &self,
        body: ByteStream,
        size: u64,
        whole_crc: u32,
        with_checksum: bool,
        single: bool,
    ) -> Result<(), SdkError<PutObjectError, HttpResponse>> {
        let mut op = self
            .client
            .put_object()
            .bucket(self.bucket)
            .key(self.key)
            .content_length(to_i64(size))
            .metadata(META_CRC32C, crc::to_hex(whole_crc))
            .metadata(META_SIZE, size.to_string())
            .set_checksum_crc32_c(with_checksum.then(|| crc::to_base64(whole_crc)))
            .set_if_none_match(self.if_absent.then(|| "*".to_owned()))
            .body(body)
            .customize()
            .disable_payload_signing();
        if single {
            op = op.config_override(single_attempt(transfer_timeouts()));
        }
        op.send().await.map(drop)
    }

    /// Creates a multipart upload, with `meta` (the whole object's CRC32C
    /// and size) recorded as metadata when given, asking for CRC32C
    /// checksums when `ask` (see [`Target::create`]). Until it is finished,
    /// dropping the upload aborts it.
    async fn start(&self, meta: Option<(u32, u64)>, ask: bool) -> Result<Started, TransferError> {
        let (id, mode) = self.create(meta, ask).await?;
        let abort = Cleanup::abort(self.client, self.bucket, self.key, &id);
        Ok(Started { id, mode, abort })
    }

    /// Sends `parts` (a stream of futures each yielding one part's data)
    /// with `concurrency` parts in flight, checks what they add up to
    /// against `check`, then completes the upload. Any failure, or dropping
    /// the returned future, aborts the upload.
    async fn finish(
        &self,
        upload: Started,
        check: Check,
        parts: PartStream<'_>,
        concurrency: usize,
        progress: Option<&Progress>,
    ) -> Result<Transferred, TransferError> {
        match self.send_parts(&upload.id, upload.mode, check, parts, concurrency, progress).await {
            Ok(done) => {
                upload.abort.disarm();
                Ok(done)
            }
            Err(e) => {
                upload.abort.run().await;
                Err(e)
            }
        }
    }

    async fn send_parts(
        &self,
        upload_id: &str,
        mode: PartChecksums,
        check: Check,
        mut parts: PartStream<'_>,
        concurrency: usize,
        progress: Option<&Progress>,
    ) -> Result<Transferred, TransferError> {
        // Written out rather than with `buffer_unordered`: closures returning
        // futures there make the public futures fail to prove `Send`.
        // `parts.next()` is cancel-safe (a read in progress stays inside the
        // stream), so racing it against the uploads loses nothing.
        let mut in_flight = FuturesUnordered::new();
        let mut exhausted = false;
        let mut done = Vec::new();
        loop {
            let can_start = !exhausted && in_flight.len() < concurrency;
            tokio::select! {
                next = parts.next(), if can_start => match next {
                    Some(data) => in_flight.push(self.load_and_upload(upload_id, mode, data)),
                    None => exhausted = true,
                },
                Some(part) = in_flight.next(), if !in_flight.is_empty() => {
                    let part = part?;
                    report(progress, part.len);
                    done.push(part);
                }
                else => break,
            }
        }
        done.sort_by_key(|p| p.number);
        let size = done.iter().map(|p| p.len).sum();
        let whole_crc = crc::combine(done.iter().map(|p| (p.crc, p.len)));
        let unchanged = match check {
            Check::Nothing => true,
            Check::Measured { crc, size: measured } => (whole_crc, size) == (crc, measured),
            // Each part is as its first complete read found it; the file is
            // one whole only if nothing wrote to it while the parts were read.
            Check::Unchanged { file, stamp } => stamp_of(&self.op, self.path, file).await? == stamp,
        };
        if !unchanged {
            return Err(self.changed());
        }

        let completed: Vec<CompletedPart> = done
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(&p.etag)
                    .set_checksum_crc32_c(mode.parts.then(|| crc::to_base64(p.crc)))
                    .build()
            })
            .collect();
        self.complete(upload_id, mode, completed, size, whole_crc).await?;
        Ok(Transferred { size, crc32c: whole_crc })
    }

    /// Completes the multipart upload of `size` bytes whose CRC32C is
    /// `whole_crc`; `Ok` when the object is stored.
    ///
    /// The SDK does not retry this request: were its answer lost, a second
    /// attempt would find the upload gone (`NoSuchUpload`) though the object
    /// is stored. Instead, after any failure (an error answer, a lost or
    /// unreadable answer, `NoSuchUpload`) the key is looked at, and an object
    /// there of `size` bytes with this CRC32C counts as this upload's. Failing
    /// that, the request is sent again only when the server answered that it
    /// is busy or failed internally (for an `InternalError` AWS asks for a
    /// retry), at most [`CONTROL_ATTEMPTS`] times within [`CONTROL_BUDGET`]
    /// with jittered pauses; otherwise the error is returned (and the caller
    /// aborts the upload).
    async fn complete(
        &self,
        upload_id: &str,
        mode: PartChecksums,
        completed: Vec<CompletedPart>,
        size: u64,
        whole_crc: u32,
    ) -> Result<(), TransferError> {
        let budget = Budget::new(CONTROL_BUDGET);
        let mut attempt = 0;
        // Whether an earlier attempt's answer was lost (it may have completed).
        let mut answer_lost = false;
        loop {
            attempt += 1;
            let sent = self
                .client
                .complete_multipart_upload()
                .bucket(self.bucket)
                .key(self.key)
                .upload_id(upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed.clone())).build())
                .set_checksum_crc32_c(mode.full_object.then(|| crc::to_base64(whole_crc)))
                .set_checksum_type(mode.full_object.then_some(ChecksumType::FullObject))
                .mpu_object_size(to_i64(size))
                .set_if_none_match(self.if_absent.then(|| "*".to_owned()))
                .customize()
                .config_override(single_attempt(transfer_timeouts()))
                .send()
                .await;
            let err = match sent {
                Ok(_) => return Ok(()),
                Err(e) if misnamed_complete_result(&e) => {
                    tracing::debug!(
                        bucket = self.bucket,
                        key = self.key,
                        "multipart upload completed (non-standard answer)"
                    );
                    return Ok(());
                }
                Err(e) => e,
            };
            let answered = matches!(err, SdkError::ServiceError(_));
            let refused = answered && self.if_absent && status_of(&err) == Some(412);
            if refused && !answer_lost {
                // The name was taken first: whatever the key holds is not
                // this upload's, even with the same bytes.
                return Err(self.taken(self.op.sdk(err)));
            }
            answer_lost |= !answered;
            let looks = if answered { 1 } else { LOST_COMPLETE_LOOKS };
            if self.stored_matches(size, whole_crc, looks).await {
                tracing::info!(
                    bucket = self.bucket,
                    key = self.key,
                    upload_id,
                    error = %DisplayErrorContext(&err),
                    "CompleteMultipartUpload failed, but the key holds this upload's object (size and crc32c match)"
                );
                return Ok(());
            }
            if attempt < CONTROL_ATTEMPTS && (server_busy(&err) || failed_internally(&err)) {
                let pause = jittered(CONTROL_BACKOFF, attempt, CONTROL_BUDGET);
                if budget.allows(pause) {
                    tracing::debug!(
                        bucket = self.bucket,
                        key = self.key,
                        upload_id,
                        error = %DisplayErrorContext(&err),
                        "CompleteMultipartUpload refused for now; sending it again"
                    );
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            return Err(self.taken(self.op.sdk(err)));
        }
    }

    /// Whether the key holds an object of `size` bytes whose CRC32C is `crc`,
    /// by our metadata record when it has one (as downloads judge it), else
    /// by the server's full-object CRC32C. An object with neither cannot be
    /// told apart and does not count. Looks up to `looks` times, with short
    /// jittered pauses, while the answer is "no".
    async fn stored_matches(&self, size: u64, crc: u32, looks: u32) -> bool {
        for look in 1..=looks {
            if look > 1 {
                tokio::time::sleep(jittered(CONTROL_BACKOFF, look, Duration::from_secs(2))).await;
            }
            let head = self
                .client
                .head_object()
                .bucket(self.bucket)
                .key(self.key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await;
            let head = match head {
                Ok(h) => h,
                Err(e) => {
                    tracing::debug!(bucket = self.bucket, key = self.key, error = %DisplayErrorContext(&e), "no object to check");
                    continue;
                }
            };
            if head.content_length().and_then(|n| u64::try_from(n).ok()) != Some(size) {
                continue;
            }
            let meta = head.metadata();
            let recorded_crc = meta.and_then(|m| m.get(META_CRC32C)).and_then(|v| crc::from_hex(v));
            let recorded_size = meta.and_then(|m| m.get(META_SIZE)).and_then(|v| v.parse::<u64>().ok());
            let composite = head.checksum_type() == Some(&ChecksumType::Composite);
            let full_object = head.checksum_crc32_c().filter(|_| !composite).and_then(crc::from_base64);
            let matches = match recorded_crc {
                Some(recorded) => recorded == crc && recorded_size.is_none_or(|n| n == size),
                None => full_object == Some(crc),
            };
            if matches {
                return true;
            }
        }
        false
    }

    /// Starts the multipart upload, asking for per-part and full-object
    /// CRC32C when `ask`. A server that rejects that request as unsupported
    /// gets a plain multipart upload instead (then parts carry no checksum
    /// header, which AWS would refuse for an upload created without an
    /// algorithm).
    ///
    /// The SDK does not retry this request; it is sent again only after an
    /// answer that the server is busy (nothing was started then). A failure
    /// that leaves unknown whether an upload was started (no answer, a lost
    /// answer, a server error) ends with aborting the uploads of this key
    /// started since the first attempt, and so does dropping the returned
    /// future before it finishes: no upload is left that nobody knows of.
    async fn create(&self, meta: Option<(u32, u64)>, ask: bool) -> Result<(String, PartChecksums), TransferError> {
        let sweep = Cleanup::sweep(self.client, self.bucket, self.key, SystemTime::now());
        match self.try_create(meta, ask).await {
            Ok(created) => {
                sweep.disarm();
                Ok(created)
            }
            Err(CreateFailure { error, maybe_started: false }) => {
                sweep.disarm();
                Err(error)
            }
            Err(CreateFailure { error, maybe_started: true }) => {
                tracing::debug!(
                    bucket = self.bucket,
                    key = self.key,
                    error = %error,
                    "CreateMultipartUpload may have started an upload; aborting what it left"
                );
                sweep.run().await;
                Err(error)
            }
        }
    }

    async fn try_create(&self, meta: Option<(u32, u64)>, ask: bool) -> Result<(String, PartChecksums), CreateFailure> {
        let request = |with_checksums: bool| {
            let mut r = self.client.create_multipart_upload().bucket(self.bucket).key(self.key);
            if let Some((whole_crc, size)) = meta {
                r = r.metadata(META_CRC32C, crc::to_hex(whole_crc)).metadata(META_SIZE, size.to_string());
            }
            if with_checksums {
                r = r.checksum_algorithm(ChecksumAlgorithm::Crc32C).checksum_type(ChecksumType::FullObject);
            }
            r.customize().config_override(single_attempt(control_timeouts())).send()
        };
        let budget = Budget::new(CONTROL_BUDGET);
        let mut asked = ask;
        let mut busy = 0;
        let created = loop {
            match request(asked).await {
                Err(e) if asked && rejects_checksum(&e) => {
                    tracing::warn!(
                        bucket = self.bucket,
                        key = self.key,
                        error = %DisplayErrorContext(&e),
                        "server rejected CreateMultipartUpload with CRC32C; uploading parts without checksums"
                    );
                    asked = false;
                }
                Err(e) if server_busy(&e) && busy + 1 < CONTROL_ATTEMPTS => {
                    busy += 1;
                    let pause = jittered(CONTROL_BACKOFF, busy, CONTROL_BUDGET);
                    if !budget.allows(pause) {
                        break Err(e);
                    }
                    tracing::debug!(
                        bucket = self.bucket,
                        key = self.key,
                        error = %DisplayErrorContext(&e),
                        "CreateMultipartUpload refused for now; sending it again"
                    );
                    tokio::time::sleep(pause).await;
                }
                other => break other,
            }
        };
        let (upload_id, full_object_echoed) = match created {
            Ok(out) => {
                (out.upload_id().unwrap_or_default().to_owned(), out.checksum_type() == Some(&ChecksumType::FullObject))
            }
            Err(e) => match misnamed_initiate_result(&e) {
                Some(id) => {
                    tracing::debug!(
                        bucket = self.bucket,
                        key = self.key,
                        "accepted a non-standard CreateMultipartUpload answer"
                    );
                    (id, false)
                }
                None => {
                    let maybe_started = !create_refused(&e);
                    return Err(CreateFailure { error: self.op.sdk(e), maybe_started });
                }
            },
        };
        if upload_id.is_empty() {
            return Err(CreateFailure {
                error: self.op.err(TransferErrorKind::Other, "server returned no upload id"),
                maybe_started: true,
            });
        }
        // Only promise a full-object checksum at completion if the server
        // acknowledged that type; one that ignored the header would compare
        // it with a composite checksum and refuse to complete.
        let mode = PartChecksums { parts: asked, full_object: asked && full_object_echoed };
        tracing::debug!(bucket = self.bucket, key = self.key, upload_id, ?mode, "multipart upload created");
        Ok((upload_id, mode))
    }

    fn load_and_upload<'s>(
        &'s self,
        upload_id: &'s str,
        mode: PartChecksums,
        data: BoxFuture<'s, Result<PartData, TransferError>>,
    ) -> BoxFuture<'s, Result<PartDone, TransferError>> {
        async move { self.upload_part(upload_id, mode, data.await?).await }.boxed()
    }

    async fn upload_part(
        &self,
        upload_id: &str,
        mode: PartChecksums,
        mut part: PartData,
    ) -> Result<PartDone, TransferError> {
        let (body, frozen) = match &mut part.body {
            PartBody::Memory(buf) => {
                let bytes = buf.freeze(part.len);
                (ByteStream::from(bytes.clone()), Some(bytes))
            }
            PartBody::File(range) => (range.byte_stream(), None),
        };
        let result = self
            .client
            .upload_part()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(upload_id)
            .part_number(part.number)
            .content_length(to_i64(part.len as u64))
            .set_checksum_crc32_c(part.crc.filter(|_| mode.parts).map(crc::to_base64))
            .body(body)
            .customize()
            .disable_payload_signing()
            .send()
            .await;
        if let (PartBody::Memory(buf), Some(bytes)) = (&mut part.body, frozen) {
            buf.restore(bytes);
        }
        let out = result.map_err(|e| self.sdk(e))?;
        // A part read from the file as it was sent has the CRC32C of what
        // the successful attempt sent.
        let learned = match &part.body {
            PartBody::File(range) => range.crc(),
            PartBody::Memory(_) => None,
        };
        let sent = part.crc.or(learned).ok_or_else(|| {
            self.op.err(TransferErrorKind::Other, format_args!("part {} was sent but not read through", part.number))
        })?;
        // A server that checks the header has already refused a mismatch; one
        // that ignores it, or was sent none, may still tell us what it computed.
        if let Some(theirs) = out.checksum_crc32_c().and_then(crc::from_base64) {
            if theirs != sent {
                return Err(self.op.err(
                    TransferErrorKind::Integrity,
                    format_args!("server computed crc32c {theirs:08x} for part {} instead of {sent:08x}", part.number),
                ));
            }
        }
        let etag = out
            .e_tag()
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                self.op.err(TransferErrorKind::Other, format_args!("server returned no etag for part {}", part.number))
            })?
            .to_owned();
        Ok(PartDone { number: part.number, etag, crc: sent, len: part.len as u64 })
    }
}

/// A `PutObject` body that can be produced again for a retry.
enum Body {
    /// A file streamed from its start, checked against its CRC32C.
    File(FileRange),
    /// Bytes in memory.
    Memory(Bytes),
}

impl Body {
    fn stream(&self) -> ByteStream {
        match self {
            Body::File(range) => range.byte_stream(),
            Body::Memory(bytes) => ByteStream::from(bytes.clone()),
        }
    }
}

/// Which checksums a multipart upload carries.
#[derive(Debug, Clone, Copy)]
struct PartChecksums {
    /// The upload was created with CRC32C: a part whose CRC32C is known
    /// before it is sent carries it in `x-amz-checksum-crc32c`, and
    /// Complete lists every part's.
    parts: bool,
    /// Complete sends the whole object's CRC32C with type `FULL_OBJECT`.
    full_object: bool,
}

/// A created multipart upload, aborted unless it completes.
struct Started {
    id: String,
    mode: PartChecksums,
    abort: Cleanup,
}

/// What the parts of an upload must add up to before it is completed.
enum Check {
    /// Nothing known up front: a stream.
    Nothing,
    /// The CRC32C and size the file was measured to have before the upload
    /// was created (and recorded as metadata).
    Measured { crc: u32, size: u64 },
    /// The file must be as it was when it was opened: nothing wrote to it
    /// while its parts were read.
    Unchanged { file: Arc<File>, stamp: FileStamp },
}

/// A failed `CreateMultipartUpload`, and whether it may have started an
/// upload nonetheless.
struct CreateFailure {
    error: TransferError,
    maybe_started: bool,
}

/// Whether a failed `CreateMultipartUpload` certainly started nothing: the
/// request was never built, the connection was refused, or the server
/// answered with a refusal (4xx) or that it was busy.
fn create_refused<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ConstructionFailure(_) => true,
        SdkError::DispatchFailure(_) => connection_refused(err),
        SdkError::ServiceError(ctx) => ctx.raw().status().as_u16() < 500 || server_busy(err),
        _ => false,
    }
}

/// Whether an error comes from a refused connection: nothing was sent.
fn connection_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether the server answered a request with an internal error (500
/// `InternalError`), for which AWS documents a retry.
fn failed_internally<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::ServiceError(ctx) => ctx.raw().status().as_u16() == 500 || ctx.err().code() == Some("InternalError"),
        _ => false,
    }
}

/// The upload id from a successful `CreateMultipartUpload` answer that the SDK
/// could not parse because its XML root is `InitiateMultipartUpload` instead
/// of `InitiateMultipartUploadResult` (rclone's `serve s3` answers so).
/// Without this, such servers would be left with an upload nobody aborts.
fn misnamed_initiate_result<E>(err: &SdkError<E, HttpResponse>) -> Option<String> {
    let SdkError::ServiceError(ctx) = err else {
        return None;
    };
    if ctx.raw().status().as_u16() != 200 {
        return None;
    }
    let body = std::str::from_utf8(ctx.raw().body().bytes()?).ok()?;
    if !body.contains("<InitiateMultipartUpload>") {
        return None;
    }
    let start = body.find("<UploadId>")? + "<UploadId>".len();
    let end = start + body[start..].find("</UploadId>")?;
    let id = body[start..end].trim();
    // Escaped characters would need XML decoding; no server uses them in ids.
    (!id.is_empty() && !id.contains(['&', '<'])).then(|| id.to_owned())
}

/// Whether a `CompleteMultipartUpload` answer the SDK could not parse is a
/// success whose XML root is `CompleteMultipartUploadResponse` instead of
/// `CompleteMultipartUploadResult` (moto answers so). An error inside a 200
/// answer has an `<Error>` root and is not taken for success.
fn misnamed_complete_result<E>(err: &SdkError<E, HttpResponse>) -> bool {
    let SdkError::ServiceError(ctx) = err else {
        return false;
    };
    if ctx.raw().status().as_u16() != 200 {
        return false;
    }
    let Some(body) = ctx.raw().body().bytes().and_then(|b| std::str::from_utf8(b).ok()) else {
        return false;
    };
    body.contains("<CompleteMultipartUploadResponse") && body.contains("<ETag>") && !body.contains("<Error>")
}

/// Whether the server refused a request as unsupported rather than for a
/// reason a checksum-free retry would not fix.
fn rejects_checksum<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            matches!(ctx.err().code(), Some("InvalidArgument" | "InvalidRequest" | "NotImplemented")) || status == 501
        }
        _ => false,
    }
}

/// Fills `buf` from `reader` until it is full or the reader ends.
/// Returns `(bytes read, their crc32c, reached end of file)`.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut PooledBuf,
    op: &Op<'_>,
) -> Result<(usize, u32, bool), TransferError> {
    let slice = buf.as_mut_slice();
    let (mut len, mut part_crc) = (0, 0);
    while len < slice.len() {
        // Read at most 1 MiB at a time so the CRC is computed in small steps
        // between awaits rather than in one long burst.
        let end = slice.len().min(len + READ_BUFFER);
        let n = reader
            .read(&mut slice[len..end])
            .await
            .map_err(|e| op.err(TransferErrorKind::Io, "cannot read the source").with_source(e))?;
        if n == 0 {
            return Ok((len, part_crc, true));
        }
        part_crc = crc32c::crc32c_append(part_crc, &slice[len..len + n]);
        len += n;
    }
    Ok((len, part_crc, false))
}

/// What tells one state of a file from another without reading it: its
/// identity, size and the times of its last change. Every write moves
/// `mtime` and `ctime`, and `ctime` cannot be set back; kernels since 6.13
/// give a change right after such a look a time of its own, finer than
/// the clock tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

async fn open_for_read(op: &Op<'_>, path: &Path) -> Result<(File, FileStamp), TransferError> {
    let owned = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || {
        let file = File::open(&owned)?;
        let meta = file.metadata()?;
        Ok::<_, std::io::Error>((file, meta))
    })
    .await
    .map_err(|e| op.err(TransferErrorKind::Other, "file task failed").with_source(e))?;
    let (file, meta) = opened.map_err(|e| op.io("cannot open", path, e))?;
    if !meta.is_file() {
        return Err(op.err(TransferErrorKind::InvalidInput, format_args!("{} is not a regular file", path.display())));
    }
    Ok((file, FileStamp::of(&meta)))
}

/// The stamp of the open `file` now.
async fn stamp_of(op: &Op<'_>, path: Option<&Path>, file: Arc<File>) -> Result<FileStamp, TransferError> {
    let path = path.unwrap_or(Path::new("the source"));
    let meta = tokio::task::spawn_blocking(move || file.metadata())
        .await
        .map_err(|e| op.err(TransferErrorKind::Other, "file task failed").with_source(e))?;
    meta.map(|m| FileStamp::of(&m)).map_err(|e| op.io("cannot read the status of", path, e))
}

/// The CRC32C of each `part_size` range of the first `size` bytes of the
/// file (one value for a file that fits one part, none for an empty file).
async fn measure(
    op: &Op<'_>,
    path: &Path,
    file: Arc<File>,
    size: u64,
    part_size: u64,
) -> Result<Vec<u32>, TransferError> {
    range_crcs(file, size, part_size).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => op
            .err(TransferErrorKind::Integrity, format_args!("{} shrank while it was being read", path.display()))
            .retryable(true),
        _ => op.io("cannot read", path, e),
    })
}

fn part_number(op: &Op<'_>, index: u64) -> Result<i32, TransferError> {
    if index >= MAX_PARTS {
        return Err(op.err(
            TransferErrorKind::InvalidInput,
            format_args!("more than {MAX_PARTS} parts; use a larger part_size"),
        ));
    }
    // index < 10_000 fits.
    Ok(i32::try_from(index + 1).unwrap_or(i32::MAX))
}

fn report(progress: Option<&Progress>, n: u64) {
    if let Some(p) = progress {
        if n > 0 {
            p(n);
        }
    }
}

/// Sizes here are bounded by 5 GiB parts or file sizes, and usize is 64-bit
/// on every target this builds for.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The HTTP status of a service's answer.
fn status_of<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    match err {
        SdkError::ServiceError(ctx) => Some(ctx.raw().status().as_u16()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::ConnectorError;
    use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadError;

    type CreateError = SdkError<CreateMultipartUploadError, HttpResponse>;

    /// An error wrapping another, as connector errors nest.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn dispatch(kind: std::io::ErrorKind) -> CreateError {
        SdkError::dispatch_failure(ConnectorError::io(Box::new(Wrapped(std::io::Error::new(kind, "tcp connect")))))
    }

    #[test]
    fn only_a_refused_connection_or_a_refusal_settles_a_failed_create() {
        assert!(create_refused(&dispatch(std::io::ErrorKind::ConnectionRefused)));
        assert!(!create_refused(&dispatch(std::io::ErrorKind::ConnectionReset)));
        assert!(!create_refused(&dispatch(std::io::ErrorKind::UnexpectedEof)));
        assert!(create_refused(&CreateError::construction_failure("bad input")));
    }
}
