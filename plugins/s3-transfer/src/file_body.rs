//! Request bodies streamed from a range of a file, with the CRC32C of the
//! bytes sent.
//!
//! An upload from a path sends the parts straight from the file: each body
//! reads its range in [`CHUNK`] steps with positional reads off the async
//! threads, one read ahead of the network, and computes the CRC32C of what
//! it reads. The first body of a range to read all of it records that
//! CRC32C as the range's ([`FileRange::crc`]); a range may also be given its
//! CRC32C up front, measured by a pass over the file ([`range_crcs`]). Every
//! later body of the range (the SDK's retries) must read the same bytes: if
//! they differ (the file changed in between), the body fails before its
//! last byte is sent, so the server never receives a complete request with
//! other content than the one recorded.
//!
//! The chunks' memory is reused: every body of one upload takes its read
//! buffers from one [`ChunkPool`], which gets back each chunk the HTTP
//! client has written and dropped. Fresh buffers would cost more than the
//! copy into them: the kernel hands out and zeroes new pages for each (a
//! tenth of an upload's client CPU when every part started with new ones).

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::body::SdkBody;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

/// Size of one read of a request body, and of one frame handed to the HTTP
/// client. 1 MiB reads were measured to keep a single-stream upload at the
/// speed of curl here; smaller ones cost more system calls and wake-ups.
pub(crate) const CHUNK: usize = 1 << 20;

/// Read size of the checksum pass: small enough that each read is still in
/// the CPU cache when its CRC32C is computed.
const CRC_READ: usize = 256 << 10;

/// Most threads the checksum pass reads with.
const MAX_CRC_THREADS: usize = 4;

/// Chunks a [`ChunkPool`] keeps a handle on per body it serves at once, to
/// reuse their memory once the HTTP client has written and dropped them.
const RECYCLE: usize = 4;

/// Why a file-range body stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileBodyError {
    /// The bytes read differ from the ones measured or sent before from the
    /// same range: the file changed (or shrank) in between.
    #[error("the file changed while it was being uploaded")]
    Changed,
    /// Reading the file failed.
    #[error("cannot read the file")]
    Read(#[source] io::Error),
}

/// `len` bytes of a file from `offset`, read into buffers of `pool`.
#[derive(Clone)]
pub(crate) struct FileRange {
    file: Arc<File>,
    offset: u64,
    len: u64,
    /// The range's CRC32C: given, or recorded by the first body that read
    /// the whole range. Shared by every body of the range.
    crc: Arc<OnceLock<u32>>,
    pool: Arc<ChunkPool>,
}

/// Read buffers shared by the bodies of one upload: the chunks they handed
/// to the HTTP client, oldest first, each reused once nobody else holds it.
/// Holds at most `limit` chunks, so memory stays bounded by the number of
/// bodies served at once.
pub(crate) struct ChunkPool {
    handed_out: std::sync::Mutex<VecDeque<Bytes>>,
    limit: usize,
}

impl ChunkPool {
    /// A pool for `bodies` bodies streaming at the same time.
    pub(crate) fn new(bodies: usize) -> Arc<Self> {
        let limit = bodies.max(1) * RECYCLE;
        Arc::new(Self { handed_out: std::sync::Mutex::new(VecDeque::with_capacity(limit + 1)), limit })
    }

    fn chunks(&self) -> std::sync::MutexGuard<'_, VecDeque<Bytes>> {
        // The queue is valid whatever a panicking holder did to it.
        self.handed_out.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A buffer of `n` bytes: the oldest handed-out chunk nobody holds any
    /// more, or a new one.
    fn take(&self, n: usize) -> BytesMut {
        let reclaimed = {
            let mut chunks = self.chunks();
            let mut found = None;
            for _ in 0..chunks.len() {
                let Some(oldest) = chunks.pop_front() else { break };
                match oldest.try_into_mut() {
                    Ok(buf) => {
                        found = Some(buf);
                        break;
                    }
                    Err(still_held) => chunks.push_back(still_held),
                }
            }
            found
        };
        match reclaimed {
            Some(mut buf) => {
                buf.resize(n, 0);
                buf
            }
            None => BytesMut::zeroed(n),
        }
    }

    /// Keeps a handle on `chunk`, handed to the HTTP client, for reuse.
    fn give(&self, chunk: Bytes) {
        let mut chunks = self.chunks();
        chunks.push_back(chunk);
        if chunks.len() > self.limit {
            chunks.pop_front();
        }
    }
}

impl FileRange {
    /// `len` bytes of `file` from `offset`, whose CRC32C is `crc` when it
    /// was measured before, or else learned from the first complete read.
    pub(crate) fn new(file: Arc<File>, offset: u64, len: u64, crc: Option<u32>, pool: Arc<ChunkPool>) -> Self {
        let known = OnceLock::new();
        if let Some(c) = crc {
            let _ = known.set(c);
        }
        Self { file, offset, len, crc: Arc::new(known), pool }
    }

    /// The range's CRC32C, once known: given at creation, or read by a body
    /// that streamed the whole range.
    pub(crate) fn crc(&self) -> Option<u32> {
        if self.len == 0 {
            return Some(0);
        }
        self.crc.get().copied()
    }

    /// A request body streaming this range. The SDK can rebuild it for a
    /// retry: each attempt reads the range again.
    pub(crate) fn byte_stream(&self) -> ByteStream {
        if self.len == 0 {
            return ByteStream::from_static(b"");
        }
        let range = self.clone();
        ByteStream::new(SdkBody::retryable(move || SdkBody::from_body_1_x(RangeBody::new(&range))))
    }
}

/// One chunk read off the async threads, with the CRC32C of the range up to
/// and including it.
type Read = io::Result<(BytesMut, u32)>;

/// The body of one request: reads its range chunk by chunk, verifying the
/// whole range's CRC32C before handing out the last chunk.
struct RangeBody {
    file: Arc<File>,
    /// Where the next read starts.
    next: u64,
    /// End of the range (exclusive).
    end: u64,
    /// Bytes not yet handed out.
    remaining: u64,
    /// CRC32C of the bytes read so far.
    crc: u32,
    /// CRC32C the whole range must have, once known.
    expected: Arc<OnceLock<u32>>,
    /// The read in progress, if any.
    reading: Option<JoinHandle<Read>>,
    /// Where read buffers come from and handed-out chunks go.
    pool: Arc<ChunkPool>,
}

impl RangeBody {
    fn new(r: &FileRange) -> Self {
        Self {
            file: r.file.clone(),
            next: r.offset,
            end: r.offset + r.len,
            remaining: r.len,
            crc: 0,
            expected: r.crc.clone(),
            reading: None,
            pool: r.pool.clone(),
        }
    }

    /// Starts reading the next chunk unless one is being read or the range
    /// is all read. Reads run one at a time, each extending the CRC32C of
    /// the ones before (cheaper than combining a CRC32C per chunk).
    fn start_read(&mut self) {
        if self.reading.is_some() || self.next >= self.end {
            return;
        }
        let n = usize::try_from(self.end - self.next).map_or(CHUNK, |left| left.min(CHUNK));
        let mut buf = self.pool.take(n);
        let (file, at, crc) = (self.file.clone(), self.next, self.crc);
        self.next += n as u64;
        self.reading = Some(tokio::task::spawn_blocking(move || {
            file.read_exact_at(&mut buf, at)?;
            let crc = crc32c::crc32c_append(crc, &buf);
            Ok((buf, crc))
        }));
    }
}

impl Body for RangeBody {
    type Data = Bytes;
    type Error = FileBodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, FileBodyError>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        this.start_read();
        let Some(reading) = this.reading.as_mut() else {
            return Poll::Ready(Some(Err(FileBodyError::Changed)));
        };
        let read = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        let (buf, crc) = match read {
            Ok(Ok(done)) => done,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Poll::Ready(Some(Err(FileBodyError::Changed)))
            }
            Ok(Err(e)) => return Poll::Ready(Some(Err(FileBodyError::Read(e)))),
            Err(e) => return Poll::Ready(Some(Err(FileBodyError::Read(io::Error::other(e))))),
        };
        this.crc = crc;
        this.remaining -= buf.len() as u64;
        // The whole range is read: the first body to get here records its
        // CRC32C; any other must match it.
        if this.remaining == 0 && *this.expected.get_or_init(|| crc) != crc {
            return Poll::Ready(Some(Err(FileBodyError::Changed)));
        }
        let chunk = buf.freeze();
        this.pool.give(chunk.clone());
        // Read ahead while the HTTP client sends this chunk.
        this.start_read();
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A range's index and its CRC32C.
type MeasuredRange = (usize, u32);

/// CRC32C of each consecutive `part_size` range of the first `size` bytes of
/// `file`, in order: positional reads of [`CRC_READ`] bytes on up to
/// [`MAX_CRC_THREADS`] blocking threads, each taking the next unmeasured
/// range. Dropping the returned future stops the reading threads at their
/// next read.
pub(crate) async fn range_crcs(file: Arc<File>, size: u64, part_size: u64) -> io::Result<Vec<u32>> {
    let count = usize::try_from(size.div_ceil(part_size)).unwrap_or(usize::MAX);
    if count == 0 {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_CRC_THREADS).min(count);
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<JoinHandle<io::Result<Vec<MeasuredRange>>>> = (0..threads)
        .map(|_| {
            let (file, next, stop) = (file.clone(), next.clone(), stop.0.clone());
            tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; CRC_READ];
                let mut done = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let start = index * part_size;
                    if start >= size {
                        return Ok(done);
                    }
                    let end = (start + part_size).min(size);
                    let (mut at, mut crc) = (start, 0u32);
                    while at < end {
                        if stop.load(Ordering::Relaxed) {
                            return Err(io::Error::new(io::ErrorKind::Interrupted, "checksum pass stopped"));
                        }
                        let n = usize::try_from(end - at).map_or(CRC_READ, |left| left.min(CRC_READ));
                        file.read_exact_at(&mut buf[..n], at)?;
                        crc = crc32c::crc32c_append(crc, &buf[..n]);
                        at += n as u64;
                    }
                    done.push((usize::try_from(index).unwrap_or(usize::MAX), crc));
                }
            })
        })
        .collect();
    let mut crcs = vec![0u32; count];
    for worker in workers {
        for (index, crc) in worker.await.map_err(io::Error::other)?? {
            crcs[index] = crc;
        }
    }
    Ok(crcs)
}

/// Tells the checksum threads to stop when the pass is abandoned.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a body yields, or its error.
    async fn collect<B: Body<Data = Bytes> + Unpin>(mut body: B) -> Result<Vec<u8>, B::Error> {
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            if let Ok(data) = frame?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect()
    }

    fn file_with(data: &[u8]) -> (tempfile::NamedTempFile, Arc<File>) {
        let tmp = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(tmp.path(), data).expect("write");
        let file = Arc::new(File::open(tmp.path()).expect("open"));
        (tmp, file)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn range_crcs_match_each_part() {
        let data = content(5 * CRC_READ + 123);
        let (_tmp, file) = file_with(&data);
        for part in [1u64, 1000, CRC_READ as u64, 2 * CRC_READ as u64 + 1, data.len() as u64, 10 * CRC_READ as u64] {
            let got = range_crcs(file.clone(), data.len() as u64, part).await.expect("crcs");
            let want: Vec<u32> = data.chunks(part as usize).map(crc32c::crc32c).collect();
            assert_eq!(got, want, "part size {part}");
        }
        assert!(range_crcs(file, 0, 5).await.expect("empty").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_stream_their_range_and_reuse_buffers() {
        let data = content(3 * CHUNK + 17);
        let (_tmp, file) = file_with(&data);
        let pool = ChunkPool::new(1);
        for (offset, len) in [(0, data.len()), (5, 2 * CHUNK), (CHUNK + 1, 1), (data.len() - 10, 10)] {
            let want = &data[offset..offset + len];
            let range =
                FileRange::new(file.clone(), offset as u64, len as u64, Some(crc32c::crc32c(want)), pool.clone());
            let body = RangeBody::new(&range);
            assert_eq!(body.size_hint().exact(), Some(len as u64));
            let got = collect(body).await.expect("body");
            assert!(got == want, "range {offset}+{len}");
        }
        // The bodies took their buffers from the pool and handed every chunk
        // back: it holds at most its limit, and its chunks are reused.
        let held = pool.chunks().len();
        assert!(held > 0 && held <= pool.limit, "{held} chunks held");
        let reused = pool.chunks().front().map(|c| c.as_ptr());
        assert_eq!(Some(pool.take(10).as_ptr()), reused, "the oldest chunk nobody holds is reused");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_changed_or_shortened_file_fails_the_body() {
        let data = content(2 * CHUNK + 5);
        let (tmp, file) = file_with(&data);
        let range = FileRange::new(file.clone(), 0, data.len() as u64, Some(crc32c::crc32c(&data)), ChunkPool::new(1));
        let mut changed = data.clone();
        changed[CHUNK + 3] ^= 1;
        std::fs::write(tmp.path(), &changed).expect("rewrite");
        let err = collect(RangeBody::new(&range)).await.expect_err("changed content");
        assert!(matches!(err, FileBodyError::Changed), "{err:?}");

        std::fs::write(tmp.path(), &data[..CHUNK]).expect("truncate");
        let err = collect(RangeBody::new(&range)).await.expect_err("shortened file");
        assert!(matches!(err, FileBodyError::Changed), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_learns_its_crc_from_the_first_complete_read_and_holds_later_reads_to_it() {
        let data = content(2 * CHUNK + 5);
        let (tmp, file) = file_with(&data);
        let range = FileRange::new(file.clone(), 3, data.len() as u64 - 3, None, ChunkPool::new(1));
        assert_eq!(range.crc(), None, "nothing read yet");
        // A body that stops early records nothing.
        let mut partial = RangeBody::new(&range);
        let first = std::future::poll_fn(|cx| Pin::new(&mut partial).poll_frame(cx)).await;
        assert!(first.is_some_and(|f| f.is_ok()));
        drop(partial);
        assert_eq!(range.crc(), None, "a partial read recorded a checksum");

        let got = collect(RangeBody::new(&range)).await.expect("first complete read");
        assert!(got == data[3..]);
        assert_eq!(range.crc(), Some(crc32c::crc32c(&data[3..])));
        // A retry reads the same bytes again.
        collect(RangeBody::new(&range)).await.expect("same bytes");

        let mut changed = data.clone();
        changed[2 * CHUNK] ^= 1;
        std::fs::write(tmp.path(), &changed).expect("rewrite");
        let err = collect(RangeBody::new(&range)).await.map(|read| read.len()).expect_err("changed content");
        assert!(matches!(err, FileBodyError::Changed), "{err:?}");
        assert_eq!(range.crc(), Some(crc32c::crc32c(&data[3..])), "the first read's checksum stays");
        assert_eq!(FileRange::new(file, 0, 0, None, ChunkPool::new(1)).crc(), Some(0), "an empty range");
    }
}
