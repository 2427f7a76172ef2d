//! S3 transfer code shared by the credhost provider plugins.
//!
//! This crate moves project archives (KiB to many GiB) between the local disk
//! and any S3-compatible store. It knows nothing about the plugin ABI: a
//! plugin builds an [`aws_sdk_s3::Client`] (with [`build_client`] for static
//! keys, or from `aws-config` passed through [`tune_config`]) and calls the
//! transfer functions from its own tokio runtime. With the `sdk` feature,
//! [`store`] adapts these transfers to the plugin SDK's upload and download
//! requests, so every S3-backed provider shares that glue too.
//!
//! # Guarantees
//!
//! * **Uploads are all or nothing.** Small objects go in one `PutObject`;
//!   larger ones use a multipart upload that is aborted on every failure,
//!   including when the returned future is dropped (the abort is then spawned
//!   on the current tokio runtime). Nothing partial becomes visible. An abort
//!   that cannot reach the server (it died mid-upload) is tried again on the
//!   runtime, with growing pauses, for 15 minutes.
//! * **Memory is bounded.** A multipart upload holds at most
//!   `concurrency + 1` part buffers, reused from a pool; a download holds two
//!   1 MiB write buffers per stream. Neither grows with the object size.
//! * **End-to-end integrity.** Every transfer computes the CRC32C of the whole
//!   content client-side while streaming ([`Transferred::crc32c`]), and
//!   uploads leave it where downloads can verify it. Multipart uploads ask
//!   the server for a full-object CRC32C (`x-amz-checksum-type:
//!   FULL_OBJECT`) and give the whole object's at completion, for the server
//!   to check and keep; a file is then read once, each part's CRC32C
//!   computed as the part is sent. Where the server keeps no full-object
//!   checksum, [`upload_path`] records the CRC32C and size as user metadata
//!   instead ([`META_CRC32C`], [`META_SIZE`]), which means measuring the
//!   file before the upload is created; a single `PutObject` (from a path,
//!   or a stream that fits one) records the metadata too. A part or
//!   `PutObject` whose CRC32C is known before it is sent carries it for the
//!   server to check. Downloads verify the size always and the CRC32C
//!   whenever the object carries either record (objects stored before
//!   full-object checksums were used carry the metadata).
//! * **Only idempotent requests are repeated.** Parts, single PUTs, GETs and
//!   HEADs are retried a bounded number of times with jittered backoff; the
//!   Create and Complete of a multipart upload are not (see [`transfer_retries`]).
//!   When a Complete fails, even with its answer lost, the stored object is
//!   checked (size and CRC32C) and accepted if it is this upload's; when a
//!   Create fails with its answer lost, the uploads of the key it may have
//!   started are aborted.
//!
//! # Cheap on the wire
//!
//! The client is configured so the SDK computes no checksums of its own
//! (`WhenRequired`) and payload signing is disabled on `PutObject` and
//! `UploadPart`: integrity comes from the CRC32C values computed here at
//! several GB/s instead of SHA-256 over every byte. Against a server that
//! shares the CPU (measured with `SeaweedFS` on 2 cores) the SDK defaults cost
//! about 30% of upload throughput: every 64 KiB chunk of a streamed body is
//! signed and trailed by a CRC32.
//!
//! # Errors
//!
//! Every function returns [`TransferError`], whose [`kind`](TransferError::kind)
//! tells the caller what to do next and whose
//! [`is_retryable`](TransferError::is_retryable) says whether the same call may
//! succeed later. Messages never contain credentials.

#![warn(missing_docs)]
#![deny(unsafe_code)]

mod cleanup;
mod client;
mod crc;
mod download;
mod error;
mod file_body;
#[cfg(feature = "sdk")]
pub mod grant;
mod options;
mod pool;
mod presign;
mod retry;
#[cfg(feature = "sdk")]
pub mod store;
mod timeouts;
mod upload;

pub use client::{build_client, tune_config, ClientSettings};
pub use download::{download_to_path, download_to_writer, head_bucket, object_exists};
pub use error::{TransferError, TransferErrorKind};
pub use options::{
    check_bucket_name, Progress, TransferOptions, Transferred, MAX_OBJECT_SIZE, MAX_PARTS, MIN_PART_SIZE,
};
pub use presign::{delete_object, presign_get, presign_put, presign_put_if_absent, PresignedUrl};
pub use retry::transfer_retries;
pub use timeouts::transfer_timeouts;
pub use upload::{upload_path, upload_reader};

/// User-metadata key (without the `x-amz-meta-` prefix) holding the CRC32C of
/// the whole object as 8 lowercase hex digits.
pub const META_CRC32C: &str = "credhost-crc32c";

/// User-metadata key (without the `x-amz-meta-` prefix) holding the object
/// size in bytes as a decimal number.
pub const META_SIZE: &str = "credhost-size";
