//! Finding, vetting and loading plugin libraries.
//!
//! Each file is loaded with its own `LibHeader` (never through abi_stable's
//! per-type module cache, which would hand back the first plugin for every
//! file) and is never unloaded: a path, once loaded, keeps its code for the
//! life of the process.

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    sync::Mutex,
};

use abi_stable::library::{lib_header_from_path, LibraryError};
use credhost_plugin_api::{PluginInfo, PluginRoot_Ref};
use sha2::Digest;

/// Why a plugin file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file does not exist.
    #[error("{} does not exist", .0.display())]
    MissingFile(PathBuf),
    /// No file in the plugin directory declares this plugin name.
    #[error("no plugin file for `{name}` in {}", dir.display())]
    NotInDir {
        /// The plugin name looked for.
        name: String,
        /// The directory searched.
        dir: PathBuf,
    },
    /// Anyone may modify the file or its directory.
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
    /// The file is not a loadable shared library.
    #[error("{} is not a loadable library: {detail}", path.display())]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// The loader's reason.
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
    /// Another file already provides this plugin name.
    #[error("duplicate plugin name `{name}`: {} also declares it (first loaded from {})", path.display(), first.display())]
    Duplicate {
        /// The name.
        name: String,
        /// This file.
        path: PathBuf,
        /// The file loaded first.
        first: PathBuf,
    },
}

impl LoadError {
    /// What the caller should do next: a missing file is not found, every
    /// other reason is a refused plugin.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            LoadError::MissingFile(_) | LoadError::NotInDir { .. } => crate::ErrorKind::NotFound,
            _ => crate::ErrorKind::PluginRefused,
        }
    }
}

/// A loaded plugin library.
#[derive(Clone, Copy)]
pub struct Loaded {
    /// Its root module.
    pub root: PluginRoot_Ref,
}

impl Loaded {
    /// The plugin's self-description.
    pub fn info(&self) -> PluginInfo {
        (self.root.info())()
    }
}

/// Resolves a `file` setting (or the default `credhost_NAME`): a bare name is
/// a library name in `plugin_dir` (`libNAME.so`, `NAME.dll`, `libNAME.dylib`);
/// anything with a path separator or an extension is a path relative to `base_dir`.
pub fn resolve_file(file: &str, plugin_dir: &Path, base_dir: &Path) -> PathBuf {
    let looks_like_path = file.contains('/') || file.contains('\\') || Path::new(file).extension().is_some();
    if looks_like_path {
        base_dir.join(file)
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

/// Plugin-looking files in `dir` (`libcredhost_*.so` and the platform's equivalents), sorted.
pub fn candidates(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}credhost_", std::env::consts::DLL_PREFIX);
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(std::env::consts::DLL_SUFFIX))
                && p.is_file()
        })
        .collect();
    files.sort();
    files
}

/// The sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Refuses files that anyone could have replaced.
pub fn vet_permissions(path: &Path) -> Result<(), LoadError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|_| LoadError::MissingFile(path.to_path_buf()))?;
        if !meta.is_file() {
            return Err(LoadError::NotALibrary { path: path.to_path_buf(), detail: "not a regular file".into() });
        }
        if meta.permissions().mode() & 0o002 != 0 {
            return Err(LoadError::Unsafe { path: path.to_path_buf(), why: "the file is world-writable".into() });
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Ok(dmeta) = std::fs::metadata(&dir) {
            let mode = dmeta.permissions().mode();
            // A sticky world-writable directory (like /tmp) still stops others
            // from replacing our file; a plain world-writable one does not.
            if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                return Err(LoadError::Unsafe {
                    path: path.to_path_buf(),
                    why: format!("its directory {} is world-writable", dir.display()),
                });
            }
        }
    }
    #[cfg(not(unix))]
    if !path.is_file() {
        return Err(LoadError::MissingFile(path.to_path_buf()));
    }
    Ok(())
}

static LOADED: Mutex<Option<HashMap<PathBuf, PluginRoot_Ref>>> = Mutex::new(None);

/// Vets and loads one plugin file: existence, permissions, the optional pin,
/// then the library, its root module, interface version and layout.
pub fn load_file(path: &Path, pin: Option<&str>) -> Result<Loaded, LoadError> {
    if !path.exists() {
        return Err(LoadError::MissingFile(path.to_path_buf()));
    }
    vet_permissions(path)?;
    if let Some(expected) = pin {
        let actual = sha256_file(path)
            .map_err(|e| LoadError::Other { path: path.to_path_buf(), detail: format!("cannot read: {e}") })?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(LoadError::PinMismatch {
                path: path.to_path_buf(),
                expected: expected.to_ascii_lowercase(),
                actual,
            });
        }
    }
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut cache = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(root) = cache.get_or_insert_with(HashMap::new).get(&key) {
        return Ok(Loaded { root: *root });
    }
    let header = lib_header_from_path(&key).map_err(|e| map_library_error(path, e))?;
    // Later interface minors: on a layout mismatch, retry here with the frozen
    // snapshot types of each older released minor (none exist before 1.1).
    let root = header.init_root_module::<PluginRoot_Ref>().map_err(|e| map_library_error(path, e))?;
    cache.get_or_insert_with(HashMap::new).insert(key, root);
    Ok(Loaded { root })
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
