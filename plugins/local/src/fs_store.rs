//! The filesystem store: a bucket is a directory under `root`, an object a
//! file in it. Uploads are written to a temporary file and renamed into place,
//! so a reader never sees a partial object.

use std::path::{Component, Path, PathBuf};

use credhost_plugin_api::{
    sdk::{Dest, Download, ProgressHandle, Source, Upload},
    CheckItem, ErrorKind, PluginError, TransferResult,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::io_error;

const BUF: usize = 1 << 20;

/// A directory of buckets.
pub struct FsStore {
    root: PathBuf,
    bucket: String,
}

impl FsStore {
    /// A store rooted at `root` whose projects bucket is `bucket`.
    pub fn new(root: PathBuf, bucket: String) -> Result<Self, PluginError> {
        check_segment(&bucket).map_err(|why| PluginError::config("storage.bucket", format!("invalid bucket {bucket:?}: {why}")))?;
        Ok(Self { root, bucket })
    }

    /// The projects bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file for `bucket`/`name`, refusing anything that could leave the bucket.
    fn object_path(&self, bucket: &str, name: &str) -> Result<PathBuf, PluginError> {
        let invalid = |why: String| PluginError::new(ErrorKind::INVALID_INPUT, why);
        check_segment(bucket).map_err(|why| invalid(format!("invalid bucket {bucket:?}: {why}")))?;
        if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) || name.contains('\\') {
            return Err(invalid(format!("invalid object name {name:?}")));
        }
        let rel = Path::new(name);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) || name.ends_with('/') {
            return Err(invalid(format!("invalid object name {name:?}: it must be a relative path without `.` or `..`")));
        }
        Ok(self.root.join(bucket).join(rel))
    }

    /// Stores an upload atomically.
    pub async fn upload(&self, req: Upload) -> Result<TransferResult, PluginError> {
        let target = self.object_path(&self.bucket, &req.name)?;
        let bucket_dir = self.root.join(&self.bucket);
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_else(|| bucket_dir.clone());
        tokio::fs::create_dir_all(&dir).await.map_err(|e| io_error("cannot create", &dir, &e))?;
        // A symlinked directory inside the bucket must not lead outside it.
        let (real_dir, real_bucket) = (canonical(&dir).await?, canonical(&bucket_dir).await?);
        if !real_dir.starts_with(&real_bucket) {
            return Err(PluginError::new(ErrorKind::INVALID_INPUT, format!("{} leads outside the bucket", dir.display())));
        }
        let file_name = target.file_name().and_then(|n| n.to_str()).unwrap_or("object").to_owned();
        let temp_dir = dir.clone();
        let temp = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new().prefix(&format!(".{file_name}.")).suffix(".part").tempfile_in(&temp_dir)
        })
        .await
        .map_err(|e| PluginError::new(ErrorKind::OTHER, e.to_string()))?
        .map_err(|e| io_error("cannot create a file in", &dir, &e))?;
        let (std_file, temp_path) = temp.into_parts();
        // `temp_path` removes the file when dropped, on every early return.
        let mut out = tokio::fs::File::from_std(std_file);
        if let Some(total) = req.size_hint {
            req.progress.set_total(total);
        }
        let (size, crc) = match req.source {
            Source::Path(p) => {
                let f = tokio::fs::File::open(&p).await.map_err(|e| io_error("cannot open", &p, &e))?;
                copy(f, &mut out, &req.progress, &p, &temp_path).await?
            }
            Source::Stream(r) => copy(r, &mut out, &req.progress, Path::new("upload stream"), &temp_path).await?,
        };
        out.sync_all().await.map_err(|e| io_error("cannot write", &temp_path, &e))?;
        drop(out);
        let dest = target.clone();
        tokio::task::spawn_blocking(move || temp_path.persist(&dest))
            .await
            .map_err(|e| PluginError::new(ErrorKind::OTHER, e.to_string()))?
            .map_err(|e| io_error("cannot move the upload into", &target, &e.error))?;
        let mut result = TransferResult::new(&self.bucket, &req.name, size, format!("crc32c:{crc:08x}"));
        result.extra.insert("location".into(), target.display().to_string().into());
        Ok(result)
    }

    /// Copies an object to the destination, verifying its size.
    pub async fn download(&self, req: Download) -> Result<TransferResult, PluginError> {
        let path = self.object_path(&req.bucket, &req.name)?;
        let src = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                PluginError::new(ErrorKind::NOT_FOUND, format!("no object {}/{} in {}", req.bucket, req.name, self.root.display()))
            } else {
                io_error("cannot open", &path, &e)
            }
        })?;
        let expected = src.metadata().await.map_err(|e| io_error("cannot read", &path, &e))?.len();
        req.progress.set_total(expected);
        let (size, crc) = match req.dest {
            Dest::Path(dest) => {
                let mut out = tokio::fs::File::create(&dest).await.map_err(|e| io_error("cannot create", &dest, &e))?;
                let r = copy(src, &mut out, &req.progress, &path, &dest).await?;
                out.sync_all().await.map_err(|e| io_error("cannot write", &dest, &e))?;
                r
            }
            Dest::Sink(mut sink) => {
                let r = copy(src, &mut sink, &req.progress, &path, Path::new("download sink")).await?;
                verify_size(r.0, expected, &path)?;
                sink.finish().await?;
                r
            }
        };
        verify_size(size, expected, &path)?;
        Ok(TransferResult::new(req.bucket, req.name, size, format!("crc32c:{crc:08x}")))
    }

    /// The bucket directory exists, or its parent can hold it.
    pub async fn check(&self) -> CheckItem {
        let dir = self.root.join(&self.bucket);
        match tokio::fs::metadata(&dir).await {
            Ok(m) if m.is_dir() => CheckItem::ok("storage", format!("fs bucket {} at {}", self.bucket, dir.display())),
            Ok(_) => CheckItem::failed("storage", format!("{} exists but is not a directory", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CheckItem::ok(
                "storage",
                format!("fs bucket {} will be created at {} on first upload", self.bucket, dir.display()),
            ),
            Err(e) => CheckItem::failed("storage", format!("cannot read {}: {e}", dir.display())),
        }
    }
}

fn verify_size(got: u64, expected: u64, path: &Path) -> Result<(), PluginError> {
    if got == expected {
        Ok(())
    } else {
        Err(PluginError::new(
            ErrorKind::INTEGRITY,
            format!("{} changed while it was read: expected {expected} bytes, got {got}", path.display()),
        ))
    }
}

async fn canonical(p: &Path) -> Result<PathBuf, PluginError> {
    tokio::fs::canonicalize(p).await.map_err(|e| io_error("cannot resolve", p, &e))
}

/// Refuses names that are not a single plain path segment.
fn check_segment(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\\', '\0']) || s.chars().any(char::is_control) {
        Err("it must be a single plain name")
    } else {
        Ok(())
    }
}

/// Copies everything, returning the size and CRC32C.
async fn copy<R, W>(mut r: R, w: &mut W, progress: &ProgressHandle, from: &Path, to: &Path) -> Result<(u64, u32), PluginError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        let n = r.read(&mut buf).await.map_err(|e| io_error("cannot read", from, &e))?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).await.map_err(|e| io_error("cannot write", to, &e))?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
        progress.advance(n as u64);
    }
    w.flush().await.map_err(|e| io_error("cannot write", to, &e))?;
    Ok((size, crc))
}
