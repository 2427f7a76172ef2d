//! Finding, vetting and loading plugin libraries.
//!
//! A plugin file is code that will run inside the embedding service, next to
//! its secrets, so nothing in it runs before it is vetted, and what runs is
//! exactly what was vetted. In this order:
//!
//! 1. The directory holding the file is resolved to its canonical path, and
//!    every directory on that path must be owned by root or the current user
//!    and writable by no one else (a sticky world-writable directory such as
//!    `/tmp` is fine; so is a group-writable one whose group is its owner's
//!    own, as a user-private-group umask makes them).
//! 2. The file is opened once, without following a symbolic link, and the
//!    open handle is checked: a regular file, owned by root or the current
//!    user, writable by no one else.
//! 3. The file's ELF headers are read through the handle; a file cut short
//!    (an interrupted copy), which would crash the process when mapped, is
//!    refused.
//! 4. With a `sha256` pin, the digest is computed from the handle.
//! 5. The library is loaded from the handle (`/proc/self/fd/N`), so a file
//!    renamed over the path after the checks is never the one loaded. The
//!    handle stays open for as long as the library is loaded (for ever:
//!    libraries are never unloaded), so its name is never reused.
//! 6. Its root module, interface version and type layout are checked, and a
//!    plugin built with `panic = "abort"` is refused.
//!
//! Each file is loaded with its own `LibHeader` (never through abi_stable's
//! per-type module cache, which would hand back the first plugin for every
//! file). A file, once loaded, keeps its code for the life of the process; a
//! new file (another inode) at the same path is a new library.

use std::{
    collections::HashMap,
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    sync::Mutex,
};

#[cfg(unix)]
mod elf;
#[cfg(unix)]
mod permissions;

use abi_stable::library::{lib_header_from_path, LibraryError};
use credhost_plugin_api::{v1_0, v1_1, v1_2, PluginInfo, PluginRoot_Ref};
use sha2::Digest;

/// Why a plugin file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file does not exist.
    #[error("{} does not exist", .0.display())]
    MissingFile(PathBuf),
    /// Someone else could have replaced or changed the file.
    #[error("refusing {}: {why}", path.display())]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// What is unsafe about it.
        why: String,
    },
    /// The file's digest differs from the pin in the configuration.
    #[error("refusing {}: sha256 is {actual}, but the configuration pins {expected}", path.display())]
    PinMismatch {
        /// The file.
        path: PathBuf,
        /// The configured pin.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// The file is not a loadable shared library (or is cut short).
    #[error("{} is not a loadable library: {detail}", path.display())]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The library does not export a credhost root module.
    #[error("{} is not a credhost plugin: it exports no credhost root module", .0.display())]
    NoRootModule(PathBuf),
    /// The plugin was built against an incompatible interface version.
    #[error("{} was built for plugin interface {found}, this host speaks {expected}", path.display())]
    IncompatibleVersion {
        /// The file.
        path: PathBuf,
        /// The host's interface version.
        expected: String,
        /// The plugin's.
        found: String,
    },
    /// The plugin's types do not match the host's interface layout.
    #[error("{} has an incompatible plugin interface layout (built against a different credhost-plugin-api or abi_stable); rebuild the plugin", path.display())]
    LayoutMismatch {
        /// The file.
        path: PathBuf,
        /// abi_stable's full report, for debug logs only.
        report: String,
    },
    /// The plugin would end the process on its first panic.
    #[error("refusing {}: it was built with panic = \"abort\", so one panic in it would end this process; rebuild it with panic = \"unwind\"", .0.display())]
    AbortsOnPanic(PathBuf),
    /// The library failed in another way while loading.
    #[error("{} could not be loaded: {detail}", path.display())]
    Other {
        /// The file.
        path: PathBuf,
        /// What happened.
        detail: String,
    },
    /// The file declares a different plugin name than the configuration entry.
    #[error("{} declares plugin `{declared}`, not `{expected}`", path.display())]
    NameMismatch {
        /// The file.
        path: PathBuf,
        /// Its declared name.
        declared: String,
        /// The configured name.
        expected: String,
    },
}

/// How strictly files are vetted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Skip the ownership and permission checks (`allow_insecure_permissions
    /// = true`): for development only, and warned about on every load.
    pub allow_insecure_permissions: bool,
}

/// A loaded plugin library, by the interface version it speaks.
#[derive(Clone, Copy)]
pub enum Loaded {
    /// The current interface (1.3).
    V1_3(PluginRoot_Ref),
    /// The released 1.2 interface: the newer methods answer "unsupported".
    V1_2(v1_2::PluginRoot_Ref),
    /// The released 1.1 interface: the newer methods answer "unsupported".
    V1_1(v1_1::PluginRoot_Ref),
    /// The released 1.0 interface: the newer methods answer "unsupported".
    V1_0(v1_0::PluginRoot_Ref),
}

impl Loaded {
    /// The plugin's self-description.
    pub fn info(&self) -> PluginInfo {
        match self {
            Loaded::V1_3(root) => (root.info())(),
            Loaded::V1_2(root) => (root.info())(),
            Loaded::V1_1(root) => (root.info())(),
            Loaded::V1_0(root) => (root.info())(),
        }
    }

    /// The interface minor the plugin speaks, e.g. `1.0`.
    pub fn interface(&self) -> &'static str {
        match self {
            Loaded::V1_3(_) => "1.3",
            Loaded::V1_2(_) => "1.2",
            Loaded::V1_1(_) => "1.1",
            Loaded::V1_0(_) => "1.0",
        }
    }
}

/// Resolves a `file` setting (or the default library name): a bare name is
/// a library name in `plugin_dir` (`libNAME.so`, `NAME.dll`, `libNAME.dylib`);
/// anything with a path separator or an extension is a path relative to
/// `base_dir`.
pub fn resolve_file(file: &str, plugin_dir: &Path, base_dir: &Path) -> PathBuf {
    let looks_like_path = file.contains('/') || file.contains('\\') || Path::new(file).extension().is_some();
    if looks_like_path {
        // `./x.so` beside a file in `.` is `./x.so`, not `././x.so`.
        let file = Path::new(file);
        base_dir.join(file.strip_prefix(".").unwrap_or(file))
    } else {
        plugin_dir.join(library_file_name(file))
    }
}

/// The library name of plugin `plugin`: `credhost_` and the name with `-`
/// as `_` (cargo library names cannot contain `-`).
pub fn default_library(plugin: &str) -> String {
    format!("credhost_{}", plugin.replace('-', "_"))
}

/// `libNAME.so` on Linux, `NAME.dll` on Windows, `libNAME.dylib` on macOS.
pub fn library_file_name(name: &str) -> String {
    format!("{}{name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// Plugin-looking files in `dir` (`libcredhost_*.so` and the platform's
/// equivalents), sorted. Listed, never loaded.
pub fn candidates(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}credhost_", std::env::consts::DLL_PREFIX);
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(std::env::consts::DLL_SUFFIX))
        })
        .collect();
    files.sort();
    files
}

/// The largest plugin file that is read at all: far above any real plugin
/// (the bundled ones are 6-17 MB), and low enough that hashing one ends in
/// seconds.
pub const MAX_PLUGIN_BYTES: u64 = 512 << 20;

/// The sha256 of a plugin file, lower-case hex, from a handle vetted as for
/// loading (steps 1-2: a regular file reached without a final symbolic
/// link, owned and written as a plugin file must be, at most
/// [`MAX_PLUGIN_BYTES`]). A device, a FIFO or a huge file is refused before
/// a byte of it is read.
pub fn sha256_file(path: &Path, policy: Policy) -> Result<String, LoadError> {
    open_vetted(path, policy)?.sha256()
}

/// Opens `path` for reading without following a final symbolic link and
/// without blocking on a FIFO.
fn open_nofollow(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
    );
    options.open(path)
}

/// A vetted, open plugin file.
pub struct Vetted {
    file: File,
    path: PathBuf,
    size: u64,
    /// (device, inode): the identity of what was vetted.
    id: (u64, u64),
}

impl Vetted {
    /// The sha256 of what was vetted, read through the vetted handle.
    pub fn sha256(&mut self) -> Result<String, LoadError> {
        use std::io::{Seek, SeekFrom};
        let read_err =
            |e: std::io::Error| LoadError::Other { path: self.path.clone(), detail: format!("cannot read: {e}") };
        self.file.seek(SeekFrom::Start(0)).map_err(read_err)?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        // No further than the size that was vetted, should the file grow.
        let mut file = (&self.file).take(self.size);
        loop {
            let n = file.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    }
}

/// Steps 1-4: opens and vets `path`, and checks the `pin` from the handle.
pub fn vet(path: &Path, pin: Option<&str>, policy: Policy) -> Result<Vetted, LoadError> {
    let mut vetted = open_vetted(path, policy)?;
    #[cfg(unix)]
    elf::check_elf(&mut vetted)?;
    if let Some(expected) = pin {
        let actual = vetted.sha256()?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(LoadError::PinMismatch {
                path: path.to_path_buf(),
                expected: expected.to_ascii_lowercase(),
                actual,
            });
        }
    }
    Ok(vetted)
}

/// Steps 1-2 for an executable credhost runs (the plugin runner): a regular
/// file reached without a final link, owned and written as a plugin file
/// must be, in directories no one else may write.
pub(crate) fn vet_executable(path: &Path, policy: Policy) -> Result<(), LoadError> {
    open_vetted(path, policy).map(drop)
}

/// Steps 1-2: opens `path` once, without following a final link, and vets
/// the handle (a regular file of at most [`MAX_PLUGIN_BYTES`], its owner
/// and mode) and every directory above it. Nothing of the file is read.
fn open_vetted(path: &Path, policy: Policy) -> Result<Vetted, LoadError> {
    let unsafe_file = |why: String| LoadError::Unsafe { path: path.to_path_buf(), why };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let canonical_dir = std::fs::canonicalize(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::MissingFile(path.to_path_buf()),
        _ => LoadError::Other { path: path.to_path_buf(), detail: format!("cannot resolve its directory: {e}") },
    })?;
    let name = path.file_name().ok_or_else(|| LoadError::MissingFile(path.to_path_buf()))?;
    let file = open_nofollow(&canonical_dir.join(name)).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EMLINK) => unsafe_file(
            "it is a symbolic link; name the library file itself (a link can be pointed elsewhere after it was checked)".into(),
        ),
        _ if e.kind() == std::io::ErrorKind::NotFound => LoadError::MissingFile(path.to_path_buf()),
        // A socket cannot be opened at all (ENXIO).
        _ if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) => {
            LoadError::NotALibrary { path: path.to_path_buf(), detail: "not a regular file".into() }
        }
        _ => LoadError::Other { path: path.to_path_buf(), detail: format!("cannot open: {e}") },
    })?;
    let meta = file
        .metadata()
        .map_err(|e| LoadError::Other { path: path.to_path_buf(), detail: format!("cannot read: {e}") })?;
    if !meta.is_file() {
        return Err(LoadError::NotALibrary { path: path.to_path_buf(), detail: "not a regular file".into() });
    }
    if meta.len() > MAX_PLUGIN_BYTES {
        return Err(LoadError::NotALibrary {
            path: path.to_path_buf(),
            detail: format!(
                "it is {} MiB; plugin files over {} MiB are not read",
                meta.len() >> 20,
                MAX_PLUGIN_BYTES >> 20
            ),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let checks = permissions::check_owner_and_mode("the file", &meta)
            .and_then(|()| permissions::check_directories(&canonical_dir));
        match checks {
            Ok(()) => {}
            Err(why) if policy.allow_insecure_permissions => tracing::warn!(
                target: "credhost::loader",
                file = %path.display(),
                "loading a plugin file that would be refused ({why}): allow_insecure_permissions is set; never use it outside development"
            ),
            Err(why) => return Err(unsafe_file(why)),
        }
        Ok(Vetted { id: (meta.dev(), meta.ino()), size: meta.len(), path: path.to_path_buf(), file })
    }
    #[cfg(not(unix))]
    {
        let _ = policy;
        Err(LoadError::Other { path: path.to_path_buf(), detail: "plugin loading is supported on Unix only".into() })
    }
}

/// Loaded libraries by (device, inode).
static LOADED: Mutex<Option<HashMap<(u64, u64), Loaded>>> = Mutex::new(None);

/// Vets and loads one plugin file (steps 1-6).
pub fn load_file(path: &Path, pin: Option<&str>, policy: Policy) -> Result<Loaded, LoadError> {
    let vetted = vet(path, pin, policy)?;
    load_vetted(vetted)
}

/// Steps 5-6: loads the library through the vetted handle.
pub fn load_vetted(vetted: Vetted) -> Result<Loaded, LoadError> {
    let path = vetted.path.clone();
    let loaded = load_library(vetted)?;
    check_panic_strategy(&path, &loaded.info())?;
    Ok(loaded)
}

/// What `credhost plugins inspect` reports about a file.
pub struct Inspection {
    /// The file's sha256, when it was vetted for reading.
    pub sha256: Option<String>,
    /// What the plugin says about itself, when its library could be loaded.
    pub info: Option<crate::PluginInfo>,
    /// Why a host would refuse it; `None` when it would load.
    pub refused: Option<LoadError>,
}

/// Vets and loads `path` (as a configured plugin would be, without a pin)
/// and describes it, including when a host would refuse it. Loading runs
/// the library's code: inspect only files you would load.
pub fn inspect(path: &Path, policy: Policy) -> Inspection {
    let mut vetted = match vet(path, None, policy) {
        Ok(v) => v,
        Err(e) => {
            // A file refused only for what it holds (not an ELF file, cut
            // short) was vetted for reading, and its digest helps.
            let sha256 = match e {
                LoadError::NotALibrary { .. } => sha256_file(path, policy).ok(),
                _ => None,
            };
            return Inspection { sha256, info: None, refused: Some(e) };
        }
    };
    let sha256 = vetted.sha256().ok();
    match load_library(vetted) {
        Ok(loaded) => {
            let info = loaded.info();
            let refused = check_panic_strategy(path, &info).err();
            Inspection { sha256, info: Some(crate::PluginInfo::from_api(&info, loaded.interface())), refused }
        }
        Err(e) => Inspection { sha256, info: None, refused: Some(e) },
    }
}

/// Step 5 and the interface checks of step 6.
fn load_library(vetted: Vetted) -> Result<Loaded, LoadError> {
    let path = vetted.path.clone();
    let mut cache = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(loaded) = cache.get(&vetted.id) {
        return Ok(*loaded);
    }
    #[cfg(target_os = "linux")]
    let load_path = {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", vetted.file.as_raw_fd()))
    };
    #[cfg(not(target_os = "linux"))]
    let load_path = path.clone();
    let id = vetted.id;
    // Once a library was opened under a name, the dynamic loader answers that
    // name with it for ever (libraries are never unloaded): the handle must
    // stay open, whatever happens next, so that no other file ever gets its
    // number and name.
    KEPT.lock().unwrap_or_else(|p| p.into_inner()).push(vetted.file);
    let header = lib_header_from_path(&load_path).map_err(|e| map_library_error(&path, e))?;
    // The current interface first. A plugin built against an older released
    // minor fails that check (its version is lower, its provider's table of
    // methods shorter): retry with the frozen types of each older minor.
    // The interface minor the library declares picks the types to check it
    // against: the current ones, or the frozen ones of an older released
    // minor (abi_stable checks the major version, then the layout; a
    // plugin built for an older minor has a shorter table of methods).
    let declared = header.version_strings();
    let mut parts = declared.version.as_str().split('.').map(|p| p.trim().parse::<u32>().ok());
    let loaded = match (parts.next().flatten(), parts.next().flatten()) {
        (Some(1), Some(0)) => header.init_root_module::<v1_0::PluginRoot_Ref>().map(Loaded::V1_0),
        (Some(1), Some(1)) => header.init_root_module::<v1_1::PluginRoot_Ref>().map(Loaded::V1_1),
        (Some(1), Some(2)) => header.init_root_module::<v1_2::PluginRoot_Ref>().map(Loaded::V1_2),
        _ => header.init_root_module::<PluginRoot_Ref>().map(Loaded::V1_3),
    }
    .map_err(|e| map_library_error(&path, e))?;
    cache.insert(id, loaded);
    Ok(loaded)
}

/// Every handle a library was loaded through (see [`load_vetted`]).
static KEPT: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Refuses a plugin that aborts on panic; one that does not say (built by
/// hand or by an older kit) loads with a note.
fn check_panic_strategy(path: &Path, info: &PluginInfo) -> Result<(), LoadError> {
    match info.panic_strategy() {
        Some("abort") => Err(LoadError::AbortsOnPanic(path.to_path_buf())),
        Some(_) => Ok(()),
        None => {
            tracing::info!(
                target: "credhost::loader",
                file = %path.display(),
                "the plugin does not record its panic strategy (built by hand or by an older kit); if it was built with panic = \"abort\", a panic in it ends this process"
            );
            Ok(())
        }
    }
}

fn map_library_error(path: &Path, e: LibraryError) -> LoadError {
    let path = path.to_path_buf();
    match e {
        LibraryError::OpenError { err, .. } => {
            let detail = err.to_string();
            // dlerror text repeats the path; keep the reason after it.
            let detail = detail.rsplit(": ").next().unwrap_or(&detail).trim().to_owned();
            LoadError::NotALibrary { path, detail }
        }
        LibraryError::GetSymbolError { .. } => LoadError::NoRootModule(path),
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => {
            LoadError::IncompatibleVersion {
                path,
                expected: expected_version.to_string(),
                found: actual_version.to_string(),
            }
        }
        LibraryError::AbiInstability(report) => {
            let report = report.to_string();
            tracing::debug!(target: "credhost::loader", file = %path.display(), "layout check failed:\n{report}");
            LoadError::LayoutMismatch { path, report }
        }
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
            LoadError::Other { path, detail: "built with an incompatible abi_stable".into() }
        }
        LibraryError::RootModule { err, .. } => {
            LoadError::Other { path, detail: format!("its root module failed: {err}") }
        }
        other => {
            let text = other.to_string();
            let first = text.lines().next().unwrap_or("unknown error").to_owned();
            LoadError::Other { path, detail: first }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn this_exe_copy(dir: &Path) -> PathBuf {
        // Any ELF file will do for the checks before loading.
        let p = dir.join("libcredhost_x.so");
        std::fs::copy(std::env::current_exe().unwrap(), &p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn truncated_files_are_refused_before_loading() {
        let dir = tempfile::tempdir().unwrap();
        let p = this_exe_copy(dir.path());
        assert!(vet(&p, None, Policy::default()).is_ok());
        let len = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len / 2).unwrap();
        let e = vet(&p, None, Policy::default()).err().unwrap().to_string();
        assert!(e.contains("is cut short"), "{e}");
        std::fs::write(&p, b"\x7fELF").unwrap();
        assert!(vet(&p, None, Policy::default()).is_err());
    }

    #[test]
    #[cfg(all(target_pointer_width = "64", target_endian = "little"))]
    fn other_machines_classes_and_types_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = this_exe_copy(dir.path());
        let good = std::fs::read(&p).unwrap();
        let refused = |patch: &[(usize, u8)]| {
            let mut bytes = good.clone();
            for &(at, value) in patch {
                bytes[at] = value;
            }
            std::fs::write(&p, &bytes).unwrap();
            vet(&p, None, Policy::default()).err().map(|e| e.to_string()).unwrap_or_default()
        };
        let other = if cfg!(target_arch = "aarch64") { 62 } else { 183 };
        let e = refused(&[(18, other), (19, 0)]);
        assert!(e.contains("it is built for") && e.contains(&format!("(ELF machine {other}); this host is")), "{e}");
        let e = refused(&[(4, 1)]);
        assert!(e.contains("it is a 32-bit ELF file; this host loads 64-bit libraries"), "{e}");
        let e = refused(&[(16, 1), (17, 0)]);
        assert!(e.contains("it is an object file (.o), not a shared library"), "{e}");
        let e = refused(&[(5, 2)]);
        assert!(e.contains("it is a big-endian ELF file"), "{e}");
    }

    #[test]
    fn links_open_files_and_pins() {
        let dir = tempfile::tempdir().unwrap();
        let p = this_exe_copy(dir.path());
        let link = dir.path().join("libcredhost_link.so");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = vet(&link, None, Policy::default()).err().unwrap().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = vet(&p, None, Policy::default()).err().unwrap().to_string();
        assert!(e.contains("world-writable"), "{e}");
        assert!(vet(&p, None, Policy { allow_insecure_permissions: true }).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sha = sha256_file(&p, Policy::default()).unwrap();
        assert!(vet(&p, Some(&sha), Policy::default()).is_ok());
        let e = vet(&p, Some(&"0".repeat(64)), Policy::default()).err().unwrap().to_string();
        assert!(e.contains("but the configuration pins"), "{e}");
    }
}
