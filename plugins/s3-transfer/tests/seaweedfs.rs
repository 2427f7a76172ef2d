//! Transfers against a real S3-compatible server (SeaweedFS in CI).
//!
//! The server comes from the environment, as exported by the project's
//! service script: CREDHOST_TEST_S3_ENDPOINT, CREDHOST_TEST_S3_ACCESS_KEY,
//! CREDHOST_TEST_S3_SECRET_KEY, CREDHOST_TEST_S3_REGION and
//! CREDHOST_TEST_S3_BUCKET. Without them every test fails: these tests are
//! the point of the crate and must never be skipped silently.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use credhost_s3_transfer::{
    build_client, download_to_path, download_to_writer, head_bucket, upload_path, upload_reader, ClientSettings,
    Progress, TransferErrorKind, TransferOptions, Transferred, META_CRC32C, META_SIZE,
};
use tokio::io::{AsyncRead, ReadBuf};

mod common;
use common::*;

struct Env {
    settings: ClientSettings,
    bucket: String,
}

fn env() -> Env {
    Env { settings: settings(var("CREDHOST_TEST_S3_ENDPOINT")), bucket: var("CREDHOST_TEST_S3_BUCKET") }
}

fn client() -> (Client, String) {
    init_logging("warn");
    let env = env();
    (build_client(&env.settings), env.bucket)
}

/// A key unique to this test run.
fn key(name: &str) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("s3-transfer-tests/{}-{nanos}", std::process::id())
    });
    format!("{run}/{name}")
}

fn opts() -> TransferOptions {
    TransferOptions { part_size: PART, concurrency: 3, single_put_threshold: PART, ..Default::default() }
}

fn counter() -> (Progress, Arc<AtomicU64>) {
    let total = Arc::new(AtomicU64::new(0));
    let t = total.clone();
    (
        Arc::new(move |n| {
            t.fetch_add(n, Ordering::Relaxed);
        }),
        total,
    )
}

async fn head_meta(client: &Client, bucket: &str, key: &str) -> Option<std::collections::HashMap<String, String>> {
    let head = client.head_object().bucket(bucket).key(key).send().await.ok()?;
    Some(head.metadata().cloned().unwrap_or_default())
}

async fn pending_uploads(client: &Client, bucket: &str, key: &str) -> Vec<String> {
    let out = client.list_multipart_uploads().bucket(bucket).prefix(key).send().await.expect("ListMultipartUploads");
    out.uploads().iter().filter_map(|u| u.upload_id().map(str::to_owned)).collect()
}

async fn assert_nothing_left(client: &Client, bucket: &str, key: &str) {
    // A dropped upload aborts from a spawned task: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = pending_uploads(client, bucket, key).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "multipart uploads left behind for {key}: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let head = client.head_object().bucket(bucket).key(key).send().await;
    assert!(head.is_err(), "object {key} exists after a failed upload");
}

/// Downloads `key` both ways and checks the bytes and the reported result.
async fn check_download(client: &Client, bucket: &str, key: &str, expected: &[u8], o: &TransferOptions) {
    let want = Transferred { size: expected.len() as u64, crc32c: crc32c::crc32c(expected) };
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("out.bin");
    // Pre-existing longer content must be truncated.
    std::fs::write(&dest, vec![0xAAu8; expected.len() + 100]).expect("prefill");
    let (progress, total) = counter();
    let got = download_to_path(client, bucket, key, &dest, o, Some(progress)).await.expect("download_to_path");
    assert_eq!(got, want, "download_to_path result for {key}");
    assert_eq!(total.load(Ordering::Relaxed), want.size, "download progress for {key}");
    let on_disk = std::fs::read(&dest).expect("read back");
    assert!(on_disk == expected, "downloaded file differs for {key} ({} vs {} bytes)", on_disk.len(), expected.len());

    let mut sink = Vec::new();
    let got = download_to_writer(client, bucket, key, &mut sink, o, None).await.expect("download_to_writer");
    assert_eq!(got, want, "download_to_writer result for {key}");
    assert!(sink == expected, "written bytes differ for {key}");
}

const SIZES: [(&str, u64); 5] =
    [("empty", 0), ("one", 1), ("part-minus-1", PART - 1), ("part", PART), ("three-and-a-half", PART * 7 / 2)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_round_trips() {
    let (client, bucket) = client();
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (name, size)) in SIZES.into_iter().enumerate() {
        let content = data(size, i as u64 + 1);
        let src = dir.path().join(name);
        std::fs::write(&src, &content).expect("write source");
        let k = key(&format!("path/{name}"));
        let (progress, total) = counter();
        let up = upload_path(&client, &bucket, &k, &src, &opts(), Some(progress)).await.expect("upload_path");
        assert_eq!(up, Transferred { size, crc32c: crc32c::crc32c(&content) }, "{name}");
        assert_eq!(total.load(Ordering::Relaxed), size, "upload progress for {name}");

        let meta = head_meta(&client, &bucket, &k).await.expect("object exists");
        if size <= PART {
            // One PutObject: measured first, recorded as metadata.
            assert_eq!(meta.get(META_CRC32C), Some(&format!("{:08x}", up.crc32c)), "{name}");
            assert_eq!(meta.get(META_SIZE), Some(&size.to_string()), "{name}");
        } else {
            // Multipart: the server's full-object CRC32C is the record.
            assert_eq!(meta.get(META_CRC32C), None, "{name}");
            assert_eq!(full_object_crc(&client, &bucket, &k).await, Some(up.crc32c), "{name}");
        }
        assert!(pending_uploads(&client, &bucket, &k).await.is_empty());

        check_download(&client, &bucket, &k, &content, &opts()).await;
    }
}

/// The full-object CRC32C the server keeps for `key`, if any.
async fn full_object_crc(client: &Client, bucket: &str, key: &str) -> Option<u32> {
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .expect("head");
    let bytes = aws_smithy_types::base64::decode(head.checksum_crc32_c()?).ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Yields the data in odd-sized pieces, as a pipe would.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
    /// Fail with this error once `pos` reaches the given offset.
    fail_at: Option<usize>,
}

impl AsyncRead for Trickle {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.fail_at.is_some_and(|at| self.pos >= at) {
            return Poll::Ready(Err(io::Error::other("source broke")));
        }
        let end = self.data.len().min(self.pos + self.step).min(self.pos + buf.remaining());
        let end = match self.fail_at {
            Some(at) => end.min(at.max(self.pos + 1)),
            None => end,
        };
        let pos = self.pos;
        buf.put_slice(&self.data[pos..end]);
        self.pos = end;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_round_trips() {
    let (client, bucket) = client();
    for (i, (name, size)) in SIZES.into_iter().enumerate() {
        let content = data(size, i as u64 + 100);
        let reader = Trickle { data: content.clone(), pos: 0, step: 100_003, fail_at: None };
        let k = key(&format!("reader/{name}"));
        let (progress, total) = counter();
        let up = upload_reader(&client, &bucket, &k, reader, &opts(), Some(progress)).await.expect("upload_reader");
        assert_eq!(up, Transferred { size, crc32c: crc32c::crc32c(&content) }, "{name}");
        assert_eq!(total.load(Ordering::Relaxed), size, "upload progress for {name}");

        let meta = head_meta(&client, &bucket, &k).await.expect("object exists");
        if size < PART {
            // Fits one PutObject: size and crc known up front.
            assert_eq!(meta.get(META_CRC32C), Some(&format!("{:08x}", up.crc32c)), "{name}");
        } else {
            // Multipart from a stream: the server's full-object CRC32C stands in.
            assert_eq!(meta.get(META_CRC32C), None, "{name}");
            assert_eq!(full_object_crc(&client, &bucket, &k).await, Some(up.crc32c), "{name}");
        }
        assert!(pending_uploads(&client, &bucket, &k).await.is_empty());
        check_download(&client, &bucket, &k, &content, &opts()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_download_in_ranges_with_more_streams() {
    let (client, bucket) = client();
    let content = data(PART * 4 + 12_345, 7);
    let k = key("ranged/odd");
    let reader = Trickle { data: content.clone(), pos: 0, step: 1 << 20, fail_at: None };
    upload_reader(&client, &bucket, &k, reader, &opts(), None).await.expect("upload");
    for concurrency in [1, 2, 5] {
        let o = TransferOptions { concurrency, ..opts() };
        check_download(&client, &bucket, &k, &content, &o).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_reader_leaves_nothing_behind() {
    let (client, bucket) = client();
    // Fails in the middle of the third part, after two parts were sent.
    let content = data(PART * 3, 11);
    let reader = Trickle { data: content, pos: 0, step: 1 << 20, fail_at: Some((PART * 5 / 2) as usize) };
    let k = key("fail/reader");
    let err = upload_reader(&client, &bucket, &k, reader, &opts(), None).await.expect_err("must fail");
    assert_eq!(err.kind(), TransferErrorKind::Io, "{err}");
    assert!(err.to_string().starts_with(&format!("upload of {bucket}/{k} failed: ")), "{err}");
    assert_nothing_left(&client, &bucket, &k).await;
}

/// Yields `ready` bytes, then never completes a read again.
struct Stall {
    data: Vec<u8>,
    pos: usize,
}

impl AsyncRead for Stall {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos >= self.data.len() {
            return Poll::Pending;
        }
        let end = self.data.len().min(self.pos + buf.remaining());
        let pos = self.pos;
        buf.put_slice(&self.data[pos..end]);
        self.pos = end;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reader_upload_is_aborted() {
    let (client, bucket) = client();
    let k = key("drop/reader");
    let (progress, total) = counter();
    let reader = Stall { data: data(PART * 2 + 1, 12), pos: 0 };
    let o = opts();
    let upload = upload_reader(&client, &bucket, &k, reader, &o, Some(progress));
    // Until the two full parts are on the server.
    drop_midway(&client, &bucket, &k, upload, || total.load(Ordering::Relaxed) >= PART * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_path_upload_is_aborted() {
    let (client, bucket) = client();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("big");
    std::fs::write(&src, data(PART * 6, 13)).expect("write");
    let k = key("drop/path");
    let (progress, total) = counter();
    let o = TransferOptions { concurrency: 1, ..opts() };
    let upload = upload_path(&client, &bucket, &k, &src, &o, Some(progress));
    // Until the first of its 6 parts is on the server.
    drop_midway(&client, &bucket, &k, upload, || total.load(Ordering::Relaxed) > 0).await;
}

/// Drives `upload` until `far_enough()`, checks that the server holds one
/// multipart upload of `key`, drops the future and checks that nothing of
/// it is left. Fails if the upload ends first or takes over 30 s to get
/// far enough.
async fn drop_midway<T: std::fmt::Debug>(
    client: &Client,
    bucket: &str,
    key: &str,
    upload: impl std::future::Future<Output = T>,
    far_enough: impl Fn() -> bool,
) {
    // Boxed so that `drop` really drops the future (a pinned reference would not).
    let mut upload = Box::pin(upload);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !far_enough() {
        assert!(Instant::now() < deadline, "the upload did not get far enough in time");
        tokio::select! {
            r = &mut upload => panic!("the upload finished before it could be dropped: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    assert_eq!(pending_uploads(client, bucket, key).await.len(), 1, "one upload in progress");
    drop(upload);
    assert_nothing_left(client, bucket, key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_unauthenticated() {
    let mut env = env();
    let secret = "definitely-not-the-secret-0123456789".to_owned();
    env.settings.secret_access_key = secret.clone();
    let client = build_client(&env.settings);
    let bucket = env.bucket;
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().join("small");
    std::fs::write(&small, b"hello").expect("write");
    let big = dir.path().join("big");
    std::fs::write(&big, data(PART + 1, 3)).expect("write");

    let mut errors = vec![
        upload_path(&client, &bucket, &key("auth/small"), &small, &opts(), None).await.expect_err("small upload"),
        upload_path(&client, &bucket, &key("auth/big"), &big, &opts(), None).await.expect_err("multipart upload"),
        download_to_path(&client, &bucket, &key("auth/small"), &dir.path().join("x"), &opts(), None)
            .await
            .expect_err("download"),
        head_bucket(&client, &bucket).await.expect_err("head bucket"),
    ];
    let mut sink = Vec::new();
    errors.push(download_to_writer(&client, &bucket, "any", &mut sink, &opts(), None).await.expect_err("writer"));
    for err in errors {
        assert_eq!(err.kind(), TransferErrorKind::Unauthenticated, "{err}");
        assert!(!err.is_retryable(), "{err}");
        let chain = format!("{err} / {err:?} / {:?}", std::error::Error::source(&err));
        assert!(!chain.contains(&secret), "secret leaked: {chain}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_access_key_is_unauthenticated() {
    let mut env = env();
    env.settings.access_key_id = "NOSUCHKEYID".to_owned();
    let client = build_client(&env.settings);
    let err = head_bucket(&client, &env.bucket).await.expect_err("must fail");
    assert_eq!(err.kind(), TransferErrorKind::Unauthenticated, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_and_bucket_are_not_found() {
    let (client, bucket) = client();
    head_bucket(&client, &bucket).await.expect("bucket exists");
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("x");
    let k = key("missing/none");
    let err = download_to_path(&client, &bucket, &k, &dest, &opts(), None).await.expect_err("missing key");
    assert_eq!(err.kind(), TransferErrorKind::NotFound, "{err}");
    assert_eq!(err.service_code(), Some("NoSuchKey"), "{err}");
    assert_eq!(err.to_string(), format!("download of {bucket}/{k} failed: not found (NoSuchKey)"));
    let mut sink = Vec::new();
    let err = download_to_writer(&client, &bucket, &k, &mut sink, &opts(), None).await.expect_err("missing key");
    assert_eq!(err.kind(), TransferErrorKind::NotFound, "{err}");

    let nobucket = "credhost-no-such-bucket";
    let err = download_to_path(&client, nobucket, "k", &dest, &opts(), None).await.expect_err("missing bucket");
    assert_eq!(err.kind(), TransferErrorKind::NotFound, "{err}");
    let err = head_bucket(&client, nobucket).await.expect_err("missing bucket");
    assert_eq!(err.kind(), TransferErrorKind::NotFound, "{err}");
    let err = upload_path(&client, nobucket, "k", &dest, &opts(), None).await.expect_err("no source");
    assert_eq!(err.kind(), TransferErrorKind::Io, "missing local file: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_is_unavailable() {
    let mut env = env();
    // Nothing listens on port 1 of loopback.
    env.settings.endpoint = Some("http://127.0.0.1:1".to_owned());
    let client = build_client(&env.settings);
    let err = head_bucket(&client, &env.bucket).await.expect_err("must fail");
    assert_eq!(err.kind(), TransferErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}

/// Stores `content` with a recorded crc32c that does not match it, as if the
/// object had been corrupted at rest or replaced without its metadata.
async fn put_with_wrong_crc(client: &Client, bucket: &str, key: &str, content: &[u8]) {
    let wrong = crc32c::crc32c(content) ^ 0x0000_0100;
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .metadata(META_CRC32C, format!("{wrong:08x}"))
        .metadata(META_SIZE, content.len().to_string())
        .body(ByteStream::from(content.to_vec()))
        .send()
        .await
        .expect("raw put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc_mismatch_is_detected() {
    let (client, bucket) = client();
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, size) in [("small", 1000u64), ("ranged", PART * 2 + 3)] {
        let content = data(size, 21);
        let k = key(&format!("crc/{name}"));
        put_with_wrong_crc(&client, &bucket, &k, &content).await;
        let err =
            download_to_path(&client, &bucket, &k, &dir.path().join(name), &opts(), None).await.expect_err("mismatch");
        assert_eq!(err.kind(), TransferErrorKind::Integrity, "{name}: {err}");
        assert!(err.to_string().contains("crc32c"), "{err}");
        let mut sink = Vec::new();
        let err = download_to_writer(&client, &bucket, &k, &mut sink, &opts(), None).await.expect_err("mismatch");
        assert_eq!(err.kind(), TransferErrorKind::Integrity, "{name}: {err}");
    }

    // A recorded size that disagrees with the object is caught before any GET.
    let k = key("crc/size");
    client
        .put_object()
        .bucket(&bucket)
        .key(&k)
        .metadata(META_SIZE, "5")
        .body(ByteStream::from_static(b"four"))
        .send()
        .await
        .expect("raw put");
    let err = download_to_path(&client, &bucket, &k, &dir.path().join("s"), &opts(), None).await.expect_err("size");
    assert_eq!(err.kind(), TransferErrorKind::Integrity, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_without_records_verify_size_only() {
    let (client, bucket) = client();
    let content = data(PART + 17, 31);
    let k = key("plain/foreign");
    client.put_object().bucket(&bucket).key(&k).body(ByteStream::from(content.clone())).send().await.expect("raw put");
    check_download(&client, &bucket, &k, &content, &opts()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_options_are_rejected_before_any_request() {
    let (client, bucket) = client();
    let bad = TransferOptions { part_size: MIB, ..TransferOptions::default() };
    let err = upload_reader(&client, &bucket, "k", &b"x"[..], &bad, None).await.expect_err("bad options");
    assert_eq!(err.kind(), TransferErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().starts_with(&format!("upload of {bucket}/k failed: invalid transfer options")), "{err}");
}

#[test]
fn public_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let client = Client::from_conf(
        aws_sdk_s3::Config::builder().behavior_version(aws_sdk_s3::config::BehaviorVersion::latest()).build(),
    );
    let o = TransferOptions::default();
    let p = std::path::Path::new("x");
    is_send(&upload_path(&client, "b", "k", p, &o, None));
    is_send(&upload_reader(&client, "b", "k", tokio::io::empty(), &o, None));
    is_send(&download_to_path(&client, "b", "k", p, &o, None));
    is_send(&download_to_writer(&client, "b", "k", tokio::io::sink(), &o, None));
    is_send(&head_bucket(&client, "b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_to_while_its_parts_are_read_is_not_stored() {
    let (client, bucket) = client();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("changing");
    std::fs::write(&src, data(PART * 4, 14)).expect("write");
    let k = key("changed/mixed");
    // Once the first part is on the server, bytes in it and in the last part
    // change: sent as read, the object would hold the old first part and the
    // new last one, which the file never held together.
    let writer = src.clone();
    let written = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = written.clone();
    let progress: Progress = Arc::new(move |_| {
        if !done.swap(true, Ordering::SeqCst) {
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new().write(true).open(&writer).expect("open for writing");
            for at in [10, PART * 3 + 10] {
                file.write_all_at(b"changed", at).expect("write");
            }
        }
    });
    let o = TransferOptions { concurrency: 1, ..opts() };
    let err = upload_path(&client, &bucket, &k, &src, &o, Some(progress)).await.expect_err("the file changed");
    assert!(written.load(Ordering::SeqCst), "the file was not written to");
    assert_eq!(err.kind(), TransferErrorKind::Integrity, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().ends_with("changed while it was being uploaded"), "{err}");
    assert_nothing_left(&client, &bucket, &k).await;
}
