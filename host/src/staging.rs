//! Where a download is written before it is whole: a private temporary
//! directory beside the destination, moved into place only once the plugin
//! verified the object, and swept when a killed process left one behind.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{Error, Result};

/// A download's private directory beside its destination, removed with
/// everything in it when dropped (on error, and when the caller's future is
/// dropped).
pub(crate) struct Staging {
    work: Option<tempfile::TempDir>,
    part: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let Some(work) = self.work.take() else { return };
        let dir = work.keep();
        // A cancelled plugin task may still open its output file while the
        // directory is being emptied (its cancellation is not synchronous),
        // which makes the final rmdir fail: empty it again. Once the
        // directory is gone, nothing can be created in it.
        for _ in 0..20 {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound && dir.exists() => continue,
                _ => return,
            }
        }
        tracing::warn!(target: "credhost::download", dir = %dir.display(), "cannot remove a cancelled download's directory");
    }
}

impl Staging {
    /// Checks `dest` (see [`check_destination`]), refuses an existing one
    /// unless `force`, sweeps old remains beside it, and makes the directory.
    pub(crate) async fn beside(dest: &Path, force: bool) -> Result<Self> {
        check_destination(dest)?;
        if !force && std::fs::symlink_metadata(dest).is_ok() {
            return Err(Error::Exists(dest.to_path_buf()));
        }
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("download").to_owned();
        let swept = dir.clone();
        let _ = tokio::task::spawn_blocking(move || sweep_stale_downloads(&swept)).await;
        // A directory rather than a file: a cancelled plugin task may still
        // (re)create its output file after the host gave up, and it cannot
        // once the directory is gone.
        let work = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".part")
            .tempdir_in(&dir)
            .map_err(|e| Error::io("cannot create a directory in", &dir, e))?;
        let part = std::path::absolute(work.path().join(&file_name))
            .map_err(|e| Error::io("cannot resolve", work.path(), e))?;
        Ok(Self { work: Some(work), part })
    }

    /// The file the plugin writes.
    pub(crate) fn part(&self) -> &Path {
        &self.part
    }

    /// Moves the verified file to `dest` (see [`persist`]); the directory goes.
    pub(crate) fn finish(self, dest: &Path, force: bool) -> Result<()> {
        persist(&self.part, dest, force)?;
        Ok(())
    }
}

/// Moves the verified download at `part` to `dest`. Without `force` nothing
/// is replaced, even a `dest` that appeared during the download: a hard link
/// fails when `dest` exists (file systems without hard links get a check and
/// a rename).
/// Refuses a destination whose directory does not exist, and an existing
/// destination that is neither a regular file nor a symbolic link, with or
/// without `--force`: the download is renamed into place, which would
/// replace a device, FIFO or socket (as root, `/dev/null` itself) with a
/// plain file. A link is replaced, never followed.
pub(crate) fn check_destination(dest: &Path) -> Result<()> {
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        let why = format!("the directory {} does not exist", dir.display());
        return Err(Error::io("cannot write", dest, std::io::Error::new(std::io::ErrorKind::NotFound, why)));
    }
    let Ok(meta) = std::fs::symlink_metadata(dest) else { return Ok(()) };
    let kind = meta.file_type();
    if kind.is_file() || kind.is_symlink() {
        return Ok(());
    }
    let what = if kind.is_dir() { "a directory" } else { special_kind(&kind) };
    Err(Error::InvalidInput(format!("refusing to write {}: it is {what}, not a regular file", dest.display())))
}

#[cfg(unix)]
fn special_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

fn persist(part: &Path, dest: &Path, force: bool) -> Result<()> {
    let persisted = if force {
        std::fs::rename(part, dest)
    } else {
        match std::fs::hard_link(part, dest) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                if std::fs::symlink_metadata(dest).is_ok() {
                    Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
                } else {
                    std::fs::rename(part, dest)
                }
            }
            other => other,
        }
    };
    match persisted {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists(dest.to_path_buf())),
        Err(e) => Err(Error::io("cannot write", dest, e)),
    }
}

/// How old a download's temporary directory must be before a later download
/// beside it takes it for the remains of a killed process.
const STALE_DOWNLOAD: Duration = Duration::from_secs(24 * 3600);

/// Removes the temporary directories that downloads killed outright (power
/// loss, SIGKILL) left in `dir` more than a day ago: directories of this
/// user named `.NAME.XXXXXX.part` holding at most the one file `NAME`.
fn sweep_stale_downloads(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(inner) = stale_part_name(name) else { continue };
        let path = entry.path();
        if is_stale_download(&path, inner) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(target: "credhost::download", dir = %path.display(), "removed the remains of an interrupted download")
                }
                Err(e) => {
                    tracing::debug!(target: "credhost::download", dir = %path.display(), "cannot remove an old temporary directory: {e}")
                }
            }
        }
    }
}

/// `NAME` of a `.NAME.XXXXXX.part` directory name.
fn stale_part_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?.strip_suffix(".part")?;
    let (inner, random) = rest.rsplit_once('.')?;
    (random.len() == 6 && random.bytes().all(|b| b.is_ascii_alphanumeric()) && !inner.is_empty()).then_some(inner)
}

fn is_stale_download(path: &Path, inner: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
    // SAFETY: geteuid has no preconditions.
    if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } {
        return false;
    }
    let old =
        |m: &std::fs::Metadata| m.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a > STALE_DOWNLOAD);
    if !old(&meta) {
        return false;
    }
    let Ok(mut contents) = std::fs::read_dir(path) else { return false };
    match contents.next() {
        None => true,
        Some(Ok(e)) => {
            e.file_name() == inner
                && contents.next().is_none()
                && std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_file() && old(&m))
        }
        Some(Err(_)) => false,
    }
}
