//! Exercising a provider without a host: build it from settings, and make
//! the requests a host would send (files and streams, paths and sinks).
//!
//! ```text
//! #[tokio::test]
//! async fn round_trip() {
//!     let dir = tempfile::tempdir().unwrap();
//!     let p: MyProvider = testing::build(json!({"root": "store"}), dir.path()).await.unwrap();
//!     p.upload(testing::upload_bytes("a.zip", b"PK...".to_vec())).await.unwrap();
//!     let (req, got) = testing::download_bytes("projects", "a.zip");
//!     p.download(req).await.unwrap();
//!     assert_eq!(got.bytes(), b"PK...");
//!     assert!(got.committed());
//! }
//! ```
//!
//! Streams and sinks run the host's side on a blocking thread, as a host
//! does: call these from within a tokio runtime (`#[tokio::test]`).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use credhost_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RSlice, RSliceMut},
    },
    ByteSink, ByteSink_TO, ByteSource, ByteSource_TO, PResult,
};

use crate::{
    Context, DeleteRequest, Dest, Download, Method, Plugin, PresignRequest, Progress, RegistryRequest, Result,
    SinkWriter, Source, StreamReader, Upload,
};

/// Builds a provider of plugin `P` from `settings`, relative paths resolving
/// against `base_dir` (where a host's plugins.toml would be).
pub async fn build<P: Plugin>(settings: serde_json::Value, base_dir: &Path) -> Result<P> {
    let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    P::new(settings, Context { base_dir }).await
}

/// A request for the instance's own registry: what the host sends for the
/// registry your setting names and for every host the configuration maps
/// to the instance.
pub fn registry() -> RegistryRequest {
    RegistryRequest::default()
}

/// A request naming `host`: what the host sends for a registry its
/// configuration does not know (serve it, or answer `NOT_FOUND`).
pub fn registry_for(host: &str) -> RegistryRequest {
    RegistryRequest { registry: Some(host.to_owned()), ..RegistryRequest::default() }
}

/// An upload of the file at `path` under `name`, as a host sends local files.
pub fn upload_file(name: &str, path: impl Into<PathBuf>) -> Upload {
    let path = path.into();
    let size_hint = std::fs::metadata(&path).ok().map(|m| m.len());
    upload(name, Source::Path(path), size_hint)
}

/// An upload of `bytes` under `name` as a stream of unknown length, as a
/// host sends request bodies. Call within a tokio runtime.
pub fn upload_bytes(name: &str, bytes: Vec<u8>) -> Upload {
    let source = ByteSource_TO::from_value(Bytes(std::io::Cursor::new(bytes)), TD_Opaque);
    upload(name, Source::Stream(StreamReader::new(source)), None)
}

fn upload(name: &str, source: Source, size_hint: Option<u64>) -> Upload {
    Upload {
        name: name.to_owned(),
        source,
        size_hint,
        progress: Progress::default(),
        content_type: None,
        extra: HashMap::new(),
    }
}

/// A download of `bucket`/`name` into the file `path`.
pub fn download_to(bucket: &str, name: &str, path: impl Into<PathBuf>) -> Download {
    download(bucket, name, Dest::Path(path.into()))
}

/// A download of `bucket`/`name` into memory, as a host streams into a
/// response body; the [`Collected`] says what arrived and whether the
/// provider committed it. Call within a tokio runtime.
pub fn download_bytes(bucket: &str, name: &str) -> (Download, Collected) {
    let collected = Collected::default();
    let sink = ByteSink_TO::from_value(collected.clone(), TD_Opaque);
    (download(bucket, name, Dest::Sink(SinkWriter::new(sink))), collected)
}

fn download(bucket: &str, name: &str, dest: Dest) -> Download {
    Download {
        bucket: bucket.to_owned(),
        name: name.to_owned(),
        dest,
        progress: Progress::default(),
        extra: HashMap::new(),
    }
}

/// A presigned-URL request.
pub fn presign(method: Method, bucket: &str, name: &str, expires: Duration) -> PresignRequest {
    PresignRequest { method, bucket: bucket.to_owned(), name: name.to_owned(), expires, extra: HashMap::new() }
}

/// A delete request.
pub fn delete(bucket: &str, name: &str) -> DeleteRequest {
    DeleteRequest { bucket: bucket.to_owned(), name: name.to_owned(), extra: HashMap::new() }
}

/// What a [`download_bytes`] sink received.
#[derive(Clone, Default)]
pub struct Collected(Arc<Mutex<(Vec<u8>, bool)>>);

impl Collected {
    /// The bytes written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|g| g.0.clone()).unwrap_or_default()
    }

    /// Whether the provider declared the object complete
    /// ([`DestWriter::commit`](crate::DestWriter::commit)).
    pub fn committed(&self) -> bool {
        self.0.lock().map(|g| g.1).unwrap_or(false)
    }
}

impl ByteSink for Collected {
    fn write(&mut self, buf: RSlice<'_, u8>) -> PResult<()> {
        if let Ok(mut g) = self.0.lock() {
            g.0.extend_from_slice(buf.as_slice());
        }
        RResult::ROk(())
    }

    fn finish(&mut self) -> PResult<()> {
        if let Ok(mut g) = self.0.lock() {
            g.1 = true;
        }
        RResult::ROk(())
    }
}

struct Bytes(std::io::Cursor<Vec<u8>>);

impl ByteSource for Bytes {
    fn read(&mut self, mut buf: RSliceMut<'_, u8>) -> PResult<usize> {
        RResult::ROk(std::io::Read::read(&mut self.0, buf.as_mut_slice()).unwrap_or(0))
    }
}
