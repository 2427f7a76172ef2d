//! Byte plumbing every storage provider needs: a [`Source`] as a reader, a
//! [`Dest`] as a writer that counts only once committed, a copy loop with a
//! CRC32C and progress, and files that appear atomically or not at all.

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Dest, Error, ErrorKind, Progress, Result, SinkWriter, Source};

/// Copy buffer: large enough for few system calls, small enough to keep
/// memory flat whatever the object size.
const BUF: usize = 1 << 20;

/// Adds what was being done, and to which file, to an I/O error, keeping its
/// kind (`?` alone converts `std::io::Error` too, without the path).
pub trait IoContext<T> {
    /// `what path: cause`, e.g. `cannot open /x/y: permission denied`.
    fn context(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| {
            // An error the host raised (its byte source or sink failed)
            // keeps its own message.
            let from_host = e.get_ref().is_some_and(|inner| inner.is::<Error>());
            let mut err = Error::from(e);
            if !from_host {
                err.message = format!("{what} {}: {}", path.display(), err.message).into();
            }
            err
        })
    }
}

/// What a copy moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copied {
    /// Bytes copied.
    pub size: u64,
    /// CRC32C (Castagnoli) of those bytes.
    pub crc32c: u32,
}

impl Copied {
    /// The checksum in the interface's `algorithm:hex` form.
    pub fn checksum(&self) -> String {
        format!("crc32c:{:08x}", self.crc32c)
    }

    /// Itself when `expected` bytes were copied, else an
    /// [`ErrorKind::INTEGRITY`] error: what a download checks before it
    /// commits, when the store knows the object's size.
    pub fn verify_size(self, expected: u64) -> Result<Self> {
        if self.size == expected {
            return Ok(self);
        }
        Err(Error::new(ErrorKind::INTEGRITY, format!("copied {} bytes of an object of {expected}", self.size)))
    }
}

/// Copies all of `reader` into `writer` in 1 MiB steps, computing the
/// CRC32C and reporting progress, then flushes. Memory stays flat.
pub async fn copy<R, W>(mut reader: R, writer: &mut W, progress: &Progress) -> Result<Copied>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    let mut done = Copied { size: 0, crc32c: 0 };
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        writer.write_all(&buf[..n]).await?;
        done.crc32c = crc32c::crc32c_append(done.crc32c, &buf[..n]);
        done.size += n as u64;
        progress.advance(n as u64);
    }
    writer.flush().await?;
    Ok(done)
}

impl Source {
    /// The bytes as one reader: the file opened, or the host stream.
    pub async fn into_reader(self) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        match self {
            Source::Path(path) => {
                let file = tokio::fs::File::open(&path).await.context("cannot open", &path)?;
                Ok(Box::new(file))
            }
            Source::Stream(stream) => Ok(Box::new(stream)),
        }
    }

    /// The local file, for [`Source::Path`].
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Path(p) => Some(p),
            Source::Stream(_) => None,
        }
    }

    /// For messages: the file, or "the upload stream".
    pub fn describe(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Stream(_) => "the upload stream".to_owned(),
        }
    }
}

impl Dest {
    /// Opens the destination for writing.
    pub async fn open(self) -> Result<DestWriter> {
        match self {
            Dest::Path(path) => {
                let file = tokio::fs::File::create(&path).await.context("cannot create", &path)?;
                Ok(DestWriter(Inner::File(file, path)))
            }
            Dest::Sink(sink) => Ok(DestWriter(Inner::Sink(sink))),
        }
    }
}

/// A destination being written. Dropping it without [`DestWriter::commit`]
/// leaves a sink incomplete (a file destination is removed by the host).
pub struct DestWriter(Inner);

enum Inner {
    File(tokio::fs::File, PathBuf),
    Sink(SinkWriter),
}

impl DestWriter {
    /// Declares the object complete and verified: a file is flushed to disk,
    /// a host sink is finished. Call it only after checking size and checksum.
    pub async fn commit(self) -> Result<()> {
        match self.0 {
            Inner::File(mut file, path) => {
                file.flush().await.context("cannot write", &path)?;
                file.sync_all().await.context("cannot write", &path)
            }
            Inner::Sink(sink) => sink.finish().await,
        }
    }
}

impl AsyncWrite for DestWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Inner::File(f, _) => Pin::new(f).poll_write(cx, buf),
            Inner::Sink(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::File(f, _) => Pin::new(f).poll_flush(cx),
            Inner::Sink(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::File(f, _) => Pin::new(f).poll_shutdown(cx),
            Inner::Sink(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A file that appears under its final name complete or not at all: written
/// as a hidden temporary file in the target's directory, renamed into place
/// by [`AtomicFile::persist`], and removed if dropped before that (an error,
/// or the operation's future dropped on cancellation).
pub struct AtomicFile {
    file: tokio::fs::File,
    temp: tempfile::TempPath,
}

impl AtomicFile {
    /// A new temporary file in `dir`, named after `name` (`.NAME.XXXXXX.part`).
    pub async fn create_in(dir: &Path, name: &str) -> Result<Self> {
        let (dir_owned, prefix) = (dir.to_path_buf(), format!(".{name}."));
        let temp = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new().prefix(&prefix).suffix(".part").tempfile_in(&dir_owned)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::OTHER, format!("creating a temporary file: {e}")))?
        .context("cannot create a file in", dir)?;
        let (file, temp) = temp.into_parts();
        Ok(Self { file: tokio::fs::File::from_std(file), temp })
    }

    /// A new temporary file beside `target`, creating the directories
    /// above it first (object names may contain `/`); [`AtomicFile::persist`]
    /// it to `target`.
    pub async fn create_for(target: &Path) -> Result<Self> {
        let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir).await.context("cannot create the directory", dir)?;
        let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("upload");
        Self::create_in(dir, name).await
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Flushes to disk and renames the file to `target`, replacing it.
    pub async fn persist(mut self, target: &Path) -> Result<()> {
        self.file.flush().await.context("cannot write", &self.temp)?;
        self.file.sync_all().await.context("cannot write", &self.temp)?;
        drop(self.file);
        let target_owned = target.to_path_buf();
        let temp = self.temp;
        tokio::task::spawn_blocking(move || temp.persist(&target_owned))
            .await
            .map_err(|e| Error::new(ErrorKind::OTHER, format!("storing {}: {e}", target.display())))?
            .map_err(|e| e.error)
            .context("cannot move the file into", target)
    }
}

impl AsyncWrite for AtomicFile {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().file).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_with_crc_and_stores_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"123456789").unwrap();
        let mut out = AtomicFile::create_in(dir.path(), "obj").await.unwrap();
        let temp = out.path().to_path_buf();
        let reader = Source::Path(src.clone()).into_reader().await.unwrap();
        let done = copy(reader, &mut out, &Progress::default()).await.unwrap();
        // The CRC32C check value of "123456789".
        assert_eq!((done.size, done.checksum().as_str()), (9, "crc32c:e3069283"));
        out.persist(&dir.path().join("obj")).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("obj")).unwrap(), b"123456789");
        assert!(!temp.exists());

        let dropped = AtomicFile::create_in(dir.path(), "gone").await.unwrap();
        let temp = dropped.path().to_path_buf();
        assert!(temp.exists());
        drop(dropped);
        assert!(!temp.exists(), "a dropped AtomicFile leaves nothing");
    }

    #[tokio::test]
    async fn io_errors_keep_their_kind_and_name_the_file() {
        let missing = Path::new("/nonexistent/credhost-sdk-test");
        let err = match Source::Path(missing.to_path_buf()).into_reader().await {
            Err(e) => e,
            Ok(_) => panic!("opened a missing file"),
        };
        assert_eq!(err.kind, ErrorKind::NOT_FOUND);
        assert!(err.message.starts_with("cannot open /nonexistent/credhost-sdk-test: "), "{}", err.message);
    }
}
