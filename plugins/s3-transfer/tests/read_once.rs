//! How often an upload from a path reads its file, counted by this
//! process's `rchar` (`/proc/self/io`: every byte `read(2)` and `pread(2)`
//! returned, sockets included). This file holds one test, so no other test
//! of the binary reads while it counts.
//!
//! The servers come from the environment written by `tests/services/up.sh`:
//! CREDHOST_TEST_S3_ENDPOINT (SeaweedFS), CREDHOST_TEST_MOTO_ENDPOINT,
//! CREDHOST_TEST_RCLONE_ENDPOINT, the keys, region and bucket. Without them
//! the test fails.

use aws_sdk_s3::types::ChecksumMode;
use aws_sdk_s3::Client;
use credhost_s3_transfer::{
    build_client, download_to_writer, upload_path, TransferOptions, Transferred, META_CRC32C, META_SIZE,
};

mod common;
use common::*;

/// Bytes this process has read so far.
fn rchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/self/io")
}

/// Where the whole object's CRC32C went: the server's full-object checksum
/// and our metadata record.
async fn records(client: &Client, bucket: &str, key: &str) -> (Option<String>, Option<String>) {
    let head =
        client.head_object().bucket(bucket).key(key).checksum_mode(ChecksumMode::Enabled).send().await.expect("head");
    let meta = head.metadata().and_then(|m| m.get(META_CRC32C)).cloned();
    if let Some(m) = head.metadata() {
        assert_eq!(m.get(META_CRC32C).is_some(), m.get(META_SIZE).is_some(), "{m:?}");
    }
    (head.checksum_crc32_c().map(str::to_owned), meta)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_read_once_where_the_server_keeps_a_full_object_checksum() {
    init_logging("warn");
    let bucket = var("CREDHOST_TEST_S3_BUCKET");
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = TransferOptions { part_size: PART, concurrency: 3, single_put_threshold: PART, ..Default::default() };
    let big = dir.path().join("big");
    let big_content = data(PART * 6 + 12_345, 1);
    std::fs::write(&big, &big_content).expect("write");
    let small = dir.path().join("small");
    let small_content = data(PART - 1, 2);
    std::fs::write(&small, &small_content).expect("write");

    // (server, endpoint, reads of a multipart upload's file)
    let servers = [
        ("SeaweedFS", "CREDHOST_TEST_S3_ENDPOINT", 1),
        ("moto", "CREDHOST_TEST_MOTO_ENDPOINT", 1),
        ("rclone", "CREDHOST_TEST_RCLONE_ENDPOINT", 2),
    ];
    for (server, endpoint, reads) in servers {
        let client = build_client(&settings(var(endpoint)));
        // moto starts empty. Creating the bucket also makes the client's
        // first request, which may read files of its own.
        let _ = client.create_bucket().bucket(&bucket).send().await;
        for (path, content, reads) in [(&big, &big_content, reads), (&small, &small_content, 2)] {
            let size = content.len() as u64;
            let key = format!("s3-transfer-tests/read-once/{}-{size}-{server}", std::process::id());
            let before = rchar();
            let up = upload_path(&client, &bucket, &key, path, &opts, None).await.expect("upload");
            let read = rchar() - before;
            let crc = crc32c::crc32c(content);
            assert_eq!(up, Transferred { size, crc32c: crc });
            // Beyond the file, the process reads only the servers' short answers.
            assert!(
                (reads * size..reads * size + MIB).contains(&read),
                "{server}: uploading {size} bytes read {read} bytes, not about {reads} x {size}"
            );

            let (full_object, metadata) = records(&client, &bucket, &key).await;
            let full_object_kept = full_object.as_deref() == Some(&aws_smithy_types::base64::encode(crc.to_be_bytes()));
            let metadata_kept = metadata.as_deref() == Some(&format!("{crc:08x}"));
            if size > PART && reads == 1 {
                assert!(full_object_kept && metadata.is_none(), "{server}: {full_object:?} {metadata:?}");
            } else {
                // Measured first: the record is the metadata.
                assert!(metadata_kept, "{server}, {size} bytes: {full_object:?} {metadata:?}");
            }
            let mut back = Vec::new();
            let down = download_to_writer(&client, &bucket, &key, &mut back, &opts, None).await.expect("download");
            assert_eq!(down, up);
            assert!(back == *content, "{server}: downloaded bytes differ");
            client.delete_object().bucket(&bucket).key(&key).send().await.expect("delete");
        }
    }
}
