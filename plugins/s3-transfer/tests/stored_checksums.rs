//! Downloads hold an object to the CRC32C it carries, in either form: the
//! server's full-object checksum (what uploads leave where the server
//! keeps one) and the `credhost-crc32c` metadata (what uploads left before,
//! and still leave where the server keeps none). Objects whose bytes
//! disagree with that record are made on the real servers, each the way it
//! allows: SeaweedFS keeps an object's checksum when its filer appends to
//! the object's bytes, and `rclone serve s3` keeps whatever checksum a
//! client declared with a PUT.
//!
//! The servers come from the environment written by `tests/services/up.sh`:
//! CREDHOST_TEST_S3_ENDPOINT and CREDHOST_TEST_S3_FILER (SeaweedFS),
//! CREDHOST_TEST_RCLONE_ENDPOINT, the keys, region and bucket. Without them
//! every test fails.

use std::io::{Read, Write};
use std::net::TcpStream;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use credhost_s3_transfer::{
    build_client, download_to_path, download_to_writer, upload_path, TransferError, TransferErrorKind, TransferOptions,
    Transferred, META_CRC32C, META_SIZE,
};

mod common;
use common::*;

fn opts() -> TransferOptions {
    TransferOptions { part_size: PART, concurrency: 2, single_put_threshold: PART, ..Default::default() }
}

fn client(endpoint: &str) -> (Client, String) {
    init_logging("warn");
    (build_client(&settings(var(endpoint))), var("CREDHOST_TEST_S3_BUCKET"))
}

fn key(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("s3-transfer-tests/stored-checksums/{}-{nanos}/{name}", std::process::id())
}

fn base64(crc: u32) -> String {
    aws_smithy_types::base64::encode(crc.to_be_bytes())
}

/// Both downloads of `key`: to a path (ranged when large) and to a writer.
async fn download_both(client: &Client, bucket: &str, key: &str) -> [Result<Transferred, TransferError>; 2] {
    let dir = tempfile::tempdir().expect("tempdir");
    let to_path = download_to_path(client, bucket, key, &dir.path().join("out"), &opts(), None).await;
    let mut sink = Vec::new();
    let to_writer = download_to_writer(client, bucket, key, &mut sink, &opts(), None).await;
    [to_path, to_writer]
}

async fn assert_refused(client: &Client, bucket: &str, key: &str, what: &str) {
    for result in download_both(client, bucket, key).await {
        let err = result.expect_err(what);
        assert_eq!(err.kind(), TransferErrorKind::Integrity, "{what}: {err}");
        assert!(!err.is_retryable(), "{what}: {err}");
    }
}

async fn assert_verified(client: &Client, bucket: &str, key: &str, content: &[u8], what: &str) {
    let want = Transferred { size: content.len() as u64, crc32c: crc32c::crc32c(content) };
    for result in download_both(client, bucket, key).await {
        assert_eq!(result.unwrap_or_else(|e| panic!("{what}: {e}")), want, "{what}");
    }
}

/// Appends `tail` to the object `key` through SeaweedFS's filer, which
/// keeps the object's entry, with the checksum its S3 gateway stored.
fn append_through_the_filer(bucket: &str, key: &str, tail: &[u8]) {
    let filer = var("CREDHOST_TEST_S3_FILER");
    let host = filer.trim_start_matches("http://").trim_end_matches('/');
    let boundary = "credhost-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"tail\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(tail);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /buckets/{bucket}/{key}?op=append HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; \
         boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut conn = TcpStream::connect(host).expect("connect to the filer");
    conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(&body)).expect("send to the filer");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("the filer's answer");
    assert!(answer.starts_with("HTTP/1.1 2"), "the filer refused the append: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_changed_under_a_kept_checksum_are_refused() {
    let (client, bucket) = client("CREDHOST_TEST_S3_ENDPOINT");
    let dir = tempfile::tempdir().expect("tempdir");
    // Multipart: the server's full-object checksum is the only record.
    // Single PUT: the metadata records the size and CRC32C as well.
    for (name, size) in [("multipart", PART * 2 + 3), ("single", 1000)] {
        let content = data(size, 3);
        let src = dir.path().join(name);
        std::fs::write(&src, &content).expect("write");
        let k = key(name);
        upload_path(&client, &bucket, &k, &src, &opts(), None).await.expect("upload");
        assert_verified(&client, &bucket, &k, &content, name).await;

        append_through_the_filer(&bucket, &k, b"tail");
        let head =
            client.head_object().bucket(&bucket).key(&k).checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
        assert_eq!(head.content_length(), Some(size as i64 + 4), "{name}: the bytes changed");
        assert_eq!(head.checksum_crc32_c(), Some(base64(crc32c::crc32c(&content)).as_str()), "{name}: kept");
        assert_refused(&client, &bucket, &k, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_checksum_the_bytes_do_not_have_is_refused() {
    let (client, bucket) = client("CREDHOST_TEST_RCLONE_ENDPOINT");
    for (name, size) in [("ranged", PART * 2 + 3), ("whole", 1000)] {
        let content = data(size, 4);
        let k = key(name);
        let wrong = crc32c::crc32c(&content) ^ 0x0400;
        client
            .put_object()
            .bucket(&bucket)
            .key(&k)
            .checksum_crc32_c(base64(wrong))
            .body(ByteStream::from(content.clone()))
            .send()
            .await
            .expect("put");
        let head =
            client.head_object().bucket(&bucket).key(&k).checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
        assert_eq!(head.checksum_crc32_c(), Some(base64(wrong).as_str()), "{name}: rclone keeps what it was told");
        assert_refused(&client, &bucket, &k, name).await;
    }
}

/// Stores `content` at `key` as uploads from a path did before full-object
/// checksums: a multipart upload created with the whole object's CRC32C
/// (`recorded`) and size as metadata, each part with its CRC32C.
async fn put_old_style(client: &Client, bucket: &str, key: &str, content: &[u8], recorded: u32) {
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .metadata(META_CRC32C, format!("{recorded:08x}"))
        .metadata(META_SIZE, content.len().to_string())
        .send()
        .await;
    let id = match created {
        Ok(out) => out.upload_id().expect("upload id").to_owned(),
        // rclone's answer has another root element, which the SDK does not read.
        Err(e) => {
            let raw = e.raw_response().and_then(|r| r.body().bytes()).expect("create: no answer");
            let body = String::from_utf8_lossy(raw);
            let id = body.split_once("<UploadId>").and_then(|(_, rest)| rest.split_once("</UploadId>"));
            id.unwrap_or_else(|| panic!("create: {body}")).0.to_owned()
        }
    };
    let id = id.as_str();
    let mut parts = Vec::new();
    for (i, chunk) in content.chunks(PART as usize).enumerate() {
        let number = i as i32 + 1;
        let out = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .expect("part");
        parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_owned)).build());
    }
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .expect("complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_stored_with_the_metadata_record_still_verify() {
    for endpoint in ["CREDHOST_TEST_S3_ENDPOINT", "CREDHOST_TEST_RCLONE_ENDPOINT"] {
        let (client, bucket) = client(endpoint);
        let content = data(PART * 2 + 5, 5);
        let crc = crc32c::crc32c(&content);
        let k = key("old-style");
        put_old_style(&client, &bucket, &k, &content, crc).await;
        let head =
            client.head_object().bucket(&bucket).key(&k).checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
        assert_eq!(head.checksum_crc32_c(), None, "{endpoint}: the metadata is the only record");
        assert_verified(&client, &bucket, &k, &content, endpoint).await;

        // The record is held against the bytes: one that disagrees fails.
        let k = key("old-style-wrong");
        put_old_style(&client, &bucket, &k, &content, crc ^ 1).await;
        assert_refused(&client, &bucket, &k, endpoint).await;
    }
}
