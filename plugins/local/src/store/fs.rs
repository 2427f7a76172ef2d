//! The filesystem store: a bucket is a directory under `root`, an object a
//! file in it. Uploads are written to a temporary file and renamed into place,
//! so a reader never sees a partial object.

use std::path::{Component, Path, PathBuf};

use credhost_plugin_sdk::{copy, AtomicFile, Download, Error, ErrorKind, IoContext, Probe, Result, Stored, Upload};

/// A directory of buckets.
pub struct FsStore {
    root: PathBuf,
    bucket: String,
}

impl FsStore {
    /// A store rooted at `root` whose projects bucket is `bucket`.
    pub fn new(root: PathBuf, bucket: String) -> Result<Self> {
        check_segment(&bucket)
            .map_err(|why| Error::config("storage.bucket", format!("invalid bucket {bucket:?}: {why}")))?;
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
    fn object_path(&self, bucket: &str, name: &str) -> Result<PathBuf> {
        let invalid = |why: String| Error::new(ErrorKind::INVALID_INPUT, why);
        check_segment(bucket).map_err(|why| invalid(format!("invalid bucket {bucket:?}: {why}")))?;
        if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) || name.contains('\\') {
            return Err(invalid(format!("invalid object name {name:?}")));
        }
        let rel = Path::new(name);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) || name.ends_with('/') {
            return Err(invalid(format!(
                "invalid object name {name:?}: it must be a relative path without `.` or `..`"
            )));
        }
        Ok(self.root.join(bucket).join(rel))
    }

    /// Stores an upload atomically.
    pub async fn upload(&self, req: Upload) -> Result<Stored> {
        let target = self.object_path(&self.bucket, &req.name)?;
        let bucket_dir = self.root.join(&self.bucket);
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_else(|| bucket_dir.clone());
        tokio::fs::create_dir_all(&dir).await.context("cannot create", &dir)?;
        // A symlinked directory inside the bucket must not lead outside it.
        let real_dir = tokio::fs::canonicalize(&dir).await.context("cannot resolve", &dir)?;
        let real_bucket = tokio::fs::canonicalize(&bucket_dir).await.context("cannot resolve", &bucket_dir)?;
        if !real_dir.starts_with(&real_bucket) {
            return Err(Error::new(ErrorKind::INVALID_INPUT, format!("{} leads outside the bucket", dir.display())));
        }
        let file_name = target.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        // Removed when dropped, on every early return and on cancellation.
        let mut out = AtomicFile::create_in(&dir, file_name).await?;
        if let Some(total) = req.size_hint {
            req.progress.set_total(total);
        }
        let reader = req.source.into_reader().await?;
        let done = copy(reader, &mut out, &req.progress).await?;
        out.persist(&target).await?;
        Ok(Stored::new(&self.bucket, req.name, done.size, done.checksum()).at(target.display().to_string()))
    }

    /// Copies an object to the destination, verifying its size.
    pub async fn download(&self, req: Download) -> Result<Stored> {
        let path = self.object_path(&req.bucket, &req.name)?;
        let src = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::new(
                    ErrorKind::NOT_FOUND,
                    format!("no object {}/{} in {}", req.bucket, req.name, self.root.display()),
                )
            } else {
                Error::from(e)
            }
        })?;
        let expected = src.metadata().await.context("cannot read", &path)?.len();
        req.progress.set_total(expected);
        let mut out = req.dest.open().await?;
        let done = copy(src, &mut out, &req.progress).await?;
        if done.size != expected {
            return Err(Error::new(
                ErrorKind::INTEGRITY,
                format!("{} changed while it was read: expected {expected} bytes, got {}", path.display(), done.size),
            ));
        }
        out.commit().await?;
        Ok(Stored::new(req.bucket, req.name, done.size, done.checksum()))
    }

    /// Removes an object; removing a missing one succeeds.
    pub async fn delete(&self, bucket: &str, name: &str) -> Result<()> {
        let path = self.object_path(bucket, name)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::from(e)).map_err(|mut e: Error| {
                e.message = format!("cannot delete {}: {}", path.display(), e.message).into();
                e
            }),
            _ => Ok(()),
        }
    }

    /// The bucket directory exists, or its parent can hold it.
    pub async fn check(&self) -> Probe {
        let dir = self.root.join(&self.bucket);
        match tokio::fs::metadata(&dir).await {
            Ok(m) if m.is_dir() => Probe::ok("storage", format!("fs bucket {} at {}", self.bucket, dir.display())),
            Ok(_) => Probe::failed("storage", format!("{} exists but is not a directory", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Probe::ok(
                "storage",
                format!("fs bucket {} will be created at {} on first upload", self.bucket, dir.display()),
            ),
            Err(e) => Probe::failed("storage", format!("cannot read {}: {e}", dir.display())),
        }
    }
}

/// Refuses names that are not a single plain path segment.
fn check_segment(s: &str) -> std::result::Result<(), &'static str> {
    if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\\', '\0']) || s.chars().any(char::is_control) {
        Err("it must be a single plain name")
    } else {
        Ok(())
    }
}
