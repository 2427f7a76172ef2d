//! The filesystem store: a bucket is a directory under `root`, an object a
//! file in it (names with `/` in subdirectories).
//!
//! Containment: every name is resolved beneath the bucket directory one
//! component at a time, each opened relative to the one before it and never
//! through a symbolic link (`O_NOFOLLOW`), so nothing outside the bucket is
//! read, written or created, whatever links or races the directory holds.
//! Objects are regular files only, opened without blocking (a FIFO would
//! hang a download, a link to a device would never end).
//!
//! Integrity: uploads are written to a temporary file and renamed into
//! place, so a reader never sees a partial object, and the object's CRC32C
//! and size are kept with it, as an extended attribute
//! (`user.credhost.crc32c`) set before the rename; downloads verify them.
//! Objects stored without one (before this, or on a file system without
//! user attributes) are checked by size only.

use std::{
    ffi::{CStr, CString},
    fs::File,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use credhost_plugin_sdk::{copy, Download, Error, ErrorKind, Probe, Result, Stored, Upload};

/// The extended attribute holding `crc32c:XXXXXXXX SIZE`.
const CRC_ATTR: &CStr = c"user.credhost.crc32c";

/// A directory of buckets.
pub struct FsStore {
    root: PathBuf,
    bucket: String,
}

impl FsStore {
    /// A store rooted at `root` whose projects bucket is `bucket`.
    pub fn new(root: PathBuf, bucket: String) -> Result<Self> {
        check_bucket(&bucket)
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

    /// Stores an upload atomically, with its CRC32C.
    pub async fn upload(&self, req: Upload) -> Result<Stored> {
        let (root, bucket, name) = (self.root.clone(), self.bucket.clone(), req.name.clone());
        let (dir, file_name) = blocking(move || {
            std::fs::create_dir_all(&root).map_err(|e| io("cannot create", &root, e))?;
            let root_fd = open_dir(None, &root, false)?;
            let (dir_path, file_name) = split_name(&name)?;
            let mut dir = open_or_make_dir(&root_fd, &bucket, &root.join(&bucket))?;
            for component in dir_path {
                dir = open_or_make_dir(&dir, component, &root.join(&bucket).join(component))?;
            }
            Ok((dir, file_name.to_owned()))
        })
        .await?;
        let create_only = req.if_absent().is_some();
        // Removed when dropped: on every early return and on cancellation.
        let temp = TempFile::create(dir, &file_name)?;
        if let Some(total) = req.size_hint {
            req.progress.set_total(total);
        }
        let mut out = tokio::fs::File::from_std(temp.file.try_clone().map_err(|e| io("cannot write", &self.root, e))?);
        let reader = req.source.into_reader().await?;
        let done = copy(reader, &mut out, &req.progress).await?;
        out.sync_all().await.map_err(|e| io("cannot write", &self.root, e))?;
        drop(out);
        let stamp = format!("{} {}", done.checksum(), done.size);
        let location = self.root.join(&self.bucket).join(&req.name);
        let shown = format!("{}/{}", self.bucket, req.name);
        blocking(move || temp.persist(&stamp, create_only.then_some(shown.as_str()))).await?;
        Ok(Stored::new(&self.bucket, req.name, done.size, done.checksum()).at(location.display().to_string()))
    }

    /// Copies an object to the destination, verifying its size and CRC32C.
    pub async fn download(&self, req: Download) -> Result<Stored> {
        let (root, bucket, name) = (self.root.clone(), req.bucket.clone(), req.name.clone());
        let shown = format!("{}/{}", req.bucket, req.name);
        let not_found = {
            let shown = shown.clone();
            let root = self.root.display().to_string();
            move || Error::new(ErrorKind::NOT_FOUND, format!("no object {shown} in {root}"))
        };
        let (file, recorded) = blocking(move || {
            check_segment(&bucket).map_err(|why| invalid(format!("invalid bucket {bucket:?}: {why}")))?;
            let root_fd =
                open_dir(None, &root, false)
                    .map_err(|e| if e.kind == ErrorKind::NOT_FOUND { not_found() } else { e })?;
            let (dir_path, file_name) = split_name(&name)?;
            let mut dir = open_dir(Some(&root_fd), Path::new(&bucket), true).map_err(|e| missing_is(e, &not_found))?;
            for component in dir_path {
                dir = open_dir(Some(&dir), Path::new(component), true).map_err(|e| missing_is(e, &not_found))?;
            }
            let file = open_object(&dir, file_name).map_err(|e| missing_is(e, &not_found))?;
            let recorded = read_crc(&file);
            Ok((file, recorded))
        })
        .await?;
        let expected = file.metadata().map_err(|e| io("cannot read", &self.root, e))?.len();
        req.progress.set_total(expected);
        let mut out = req.dest.open().await?;
        let done = copy(tokio::fs::File::from_std(file), &mut out, &req.progress).await?;
        if done.size != expected {
            return Err(Error::new(
                ErrorKind::INTEGRITY,
                format!("{shown} changed while it was read: expected {expected} bytes, got {}", done.size),
            ));
        }
        match recorded {
            Some((checksum, size)) if checksum != done.checksum() || size != done.size => {
                return Err(Error::new(
                    ErrorKind::INTEGRITY,
                    format!(
                        "{shown} is damaged: its content has {} ({} bytes), but it was stored with {checksum} ({size} bytes)",
                        done.checksum(),
                        done.size
                    ),
                ))
            }
            Some(_) => {}
            None => tracing::info!("{shown} was stored without a checksum: verified by size only"),
        }
        out.commit().await?;
        Ok(Stored::new(req.bucket, req.name, done.size, done.checksum()))
    }

    /// Removes an object; removing a missing one succeeds.
    pub async fn delete(&self, bucket: &str, name: &str) -> Result<()> {
        let (root, bucket, name) = (self.root.clone(), bucket.to_owned(), name.to_owned());
        blocking(move || {
            check_segment(&bucket).map_err(|why| invalid(format!("invalid bucket {bucket:?}: {why}")))?;
            let (dir_path, file_name) = split_name(&name)?;
            // Only a directory that does not exist means there is nothing to
            // delete; one that cannot be opened (permissions, I/O) means the
            // store cannot tell, which is an error, never a success.
            let Some(root_fd) = absent_is_none(&root, open_dir_os(None, &root, false))? else { return Ok(()) };
            let Some(mut dir) =
                absent_is_none(Path::new(&bucket), open_dir_os(Some(&root_fd), Path::new(&bucket), true))?
            else {
                return Ok(());
            };
            for component in dir_path {
                match absent_is_none(Path::new(component), open_dir_os(Some(&dir), Path::new(component), true))? {
                    Some(d) => dir = d,
                    None => return Ok(()),
                }
            }
            let c = cstring(file_name)?;
            // SAFETY: `dir` is an open directory and `c` a NUL-terminated name.
            if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(io("cannot delete", &root.join(&bucket).join(&name), e));
                }
            }
            Ok(())
        })
        .await
    }

    /// The bucket directory exists, or its parent can hold it.
    pub async fn check(&self) -> Probe {
        let dir = self.root.join(&self.bucket);
        match tokio::fs::symlink_metadata(&dir).await {
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

/// Runs blocking file-system work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    credhost_plugin_sdk::tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::OTHER, format!("file system task failed: {e}")))?
}

fn invalid(why: String) -> Error {
    Error::new(ErrorKind::INVALID_INPUT, why)
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    let mut err = Error::from(e);
    err.message = format!("{what} {}: {}", path.display(), err.message).into();
    err
}

/// `None` for a directory that does not exist (or a file where it would
/// be: then nothing below it exists either), the error for anything else.
fn absent_is_none(path: &Path, r: std::io::Result<OwnedFd>) -> Result<Option<OwnedFd>> {
    match r {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(open_error(path, e)),
    }
}

fn missing_is(e: Error, not_found: &impl Fn() -> Error) -> Error {
    if e.kind == ErrorKind::NOT_FOUND {
        not_found()
    } else {
        e
    }
}

/// Refuses names that are not a single plain path segment.
/// A bucket name the host accepts for downloads and deletes too: 1-63
/// lower-case letters, digits, `-`, `_` and `.`, not starting with `.`, no `..`.
fn check_bucket(b: &str) -> std::result::Result<(), &'static str> {
    let ok = (1..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.'))
        && !b.starts_with('.')
        && !b.contains("..");
    if ok {
        Ok(())
    } else {
        Err("use 1-63 lower-case letters, digits, `-`, `_` or `.` (not starting with `.`)")
    }
}

fn check_segment(s: &str) -> std::result::Result<(), &'static str> {
    if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\\', '\0']) || s.chars().any(char::is_control) {
        Err("it must be a single plain name")
    } else {
        Ok(())
    }
}

/// An object name as its directories and its file name, each a plain segment.
fn split_name(name: &str) -> Result<(Vec<&str>, &str)> {
    if name.is_empty() || name.len() > 1024 || name.ends_with('/') {
        return Err(invalid(format!("invalid object name {name:?}")));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    for p in &parts {
        check_segment(p).map_err(|why| invalid(format!("invalid object name {name:?}: {why}")))?;
    }
    let file = parts.pop().unwrap_or_default();
    Ok((parts, file))
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| invalid(format!("invalid name {s:?}: it contains a NUL byte")))
}

/// Opens a directory: `path` itself when `at` is `None` (the configured
/// root: a link there is the administrator's choice), else the plain name
/// `path` inside `at`, never through a symbolic link.
fn open_dir(at: Option<&OwnedFd>, path: &Path, nofollow: bool) -> Result<OwnedFd> {
    open_dir_os(at, path, nofollow).map_err(|e| open_error(path, e))
}

/// Why a directory could not be opened, as the store says it.
fn open_error(path: &Path, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
            invalid(format!("{} is a symbolic link or not a directory; the store follows no links", path.display()))
        }
        _ => io("cannot open", path, e),
    }
}

/// Opens the directory `path` inside `at` (the current directory when
/// `None`), without following a final link when `nofollow`.
fn open_dir_os(at: Option<&OwnedFd>, path: &Path, nofollow: bool) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | if nofollow { libc::O_NOFOLLOW } else { 0 };
    let dirfd = at.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: `c` is NUL-terminated; the returned descriptor is owned below.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `name` inside `at`, creating it (mode 0755) when missing.
fn open_or_make_dir(at: &OwnedFd, name: &str, shown: &Path) -> Result<OwnedFd> {
    match open_dir(Some(at), Path::new(name), true) {
        Err(e) if e.kind == ErrorKind::NOT_FOUND => {
            let c = cstring(name)?;
            // SAFETY: `at` is an open directory, `c` a NUL-terminated plain name.
            if unsafe { libc::mkdirat(at.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(io("cannot create", shown, e));
                }
            }
            open_dir(Some(at), Path::new(name), true)
        }
        other => other,
    }
}

/// Opens object `name` in `dir` for reading: a regular file, never through a
/// link, without blocking on a FIFO.
fn open_object(dir: &OwnedFd, name: &str) -> Result<File> {
    let c = cstring(name)?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open directory, `c` a NUL-terminated plain name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) => invalid(format!("object {name:?} is a symbolic link; the store follows no links")),
            _ => io("cannot open", Path::new(name), e),
        });
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let meta = file.metadata().map_err(|e| io("cannot read", Path::new(name), e))?;
    if !meta.is_file() {
        return Err(invalid(format!("object {name:?} is not a regular file")));
    }
    Ok(file)
}

/// The recorded `(checksum, size)` of an object, when it has one.
fn read_crc(file: &File) -> Option<(String, u64)> {
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is writable for its length; the descriptor is open.
    let n = unsafe { libc::fgetxattr(file.as_raw_fd(), CRC_ATTR.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let text = std::str::from_utf8(buf.get(..usize::try_from(n).ok()?)?).ok()?;
    let (checksum, size) = text.split_once(' ')?;
    Some((checksum.to_owned(), size.parse().ok()?))
}

/// A temporary file in an object's directory, renamed into place by
/// [`TempFile::persist`] and removed if dropped before.
struct TempFile {
    dir: OwnedFd,
    temp: CString,
    target: CString,
    file: File,
    persisted: bool,
}

impl TempFile {
    fn create(dir: OwnedFd, file_name: &str) -> Result<Self> {
        let target = cstring(file_name)?;
        for attempt in 0..16u32 {
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let temp = cstring(&format!(".{file_name}.{:08x}{attempt:x}.part", nonce ^ std::process::id()))?;
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: `dir` is an open directory, `temp` a NUL-terminated plain name.
            let fd = unsafe { libc::openat(dir.as_raw_fd(), temp.as_ptr(), flags, 0o644 as libc::c_uint) };
            if fd >= 0 {
                // SAFETY: `fd` was just opened and is owned by nobody else.
                let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                return Ok(Self { dir, temp, target, file, persisted: false });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(io("cannot create a temporary file for", Path::new(file_name), e));
            }
        }
        Err(Error::new(ErrorKind::IO, format!("cannot create a temporary file for {file_name:?}")))
    }

    /// Records `stamp` (checksum and size) and renames the file into place;
    /// with `create_only` (the object's name, for the message) never over a
    /// file of that name: a taken name is
    /// [`ErrorKind::ALREADY_EXISTS`], and the temporary file goes.
    fn persist(mut self, stamp: &str, create_only: Option<&str>) -> Result<()> {
        // SAFETY: the descriptor is open; `stamp` is valid for its length.
        let set =
            unsafe { libc::fsetxattr(self.file.as_raw_fd(), CRC_ATTR.as_ptr(), stamp.as_ptr().cast(), stamp.len(), 0) };
        if set != 0 {
            tracing::info!("this file system keeps no user attributes: the object is stored without its checksum");
        }
        let fd = self.dir.as_raw_fd();
        if let Some(shown) = create_only {
            return self.link_new(shown);
        }
        // SAFETY: both names are NUL-terminated plain names in the open directory `fd`.
        if unsafe { libc::renameat(fd, self.temp.as_ptr(), fd, self.target.as_ptr()) } != 0 {
            return Err(io(
                "cannot store",
                Path::new(&*self.target.to_string_lossy()),
                std::io::Error::last_os_error(),
            ));
        }
        self.persisted = true;
        Ok(())
    }

    /// Moves the file into place only if its name is free, atomically:
    /// `renameat2(RENAME_NOREPLACE)`, or where the file system lacks it, a
    /// hard link (which never replaces) and the temporary name removed.
    fn link_new(&mut self, shown: &str) -> Result<()> {
        let fd = self.dir.as_raw_fd();
        let taken = || {
            Error::new(
                ErrorKind::ALREADY_EXISTS,
                format!("an object named {shown} exists already (created first); nothing was stored"),
            )
        };
        let failed = |e: std::io::Error| io("cannot store", Path::new(&*self.target.to_string_lossy()), e);
        // SAFETY: both names are NUL-terminated plain names in the open directory `fd`.
        let renamed =
            unsafe { libc::renameat2(fd, self.temp.as_ptr(), fd, self.target.as_ptr(), libc::RENAME_NOREPLACE) };
        if renamed == 0 {
            self.persisted = true;
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EEXIST) => return Err(taken()),
            Some(libc::EINVAL | libc::ENOSYS) => {}
            _ => return Err(failed(e)),
        }
        // SAFETY: as above; no flags: the link is of the name itself.
        if unsafe { libc::linkat(fd, self.temp.as_ptr(), fd, self.target.as_ptr(), 0) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EEXIST) { taken() } else { failed(e) });
        }
        // The object is in place; the temporary name goes (Drop unlinks it).
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            // SAFETY: the name is NUL-terminated, in the open directory.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.temp.as_ptr(), 0) };
        }
    }
}
