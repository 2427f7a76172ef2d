//! The credential helper's opt-in on-disk cache of registry credentials.
//!
//! Docker and skopeo start `docker-credential-credhost` once per registry
//! operation, so the in-process [`TokenCache`](crate::token_cache::TokenCache)
//! never sees a second request. With `[credential_helper] cache = true` the
//! answers are kept in files instead:
//!
//! - the directory (and any parent it needs) is created with mode 0700, and
//!   refused unless it belongs to this user and group and others have no
//!   access; each entry is opened relative to that checked directory handle,
//!   never through a link, and read from the handle it was checked on: one
//!   that is not a regular file of this user with mode 0600 is removed;
//! - a file is named by plugin, registry and identity (a digest of everything
//!   that picks the credentials: the configuration file, the plugin's settings
//!   and the environment variables those settings name, plus the usual cloud
//!   credential variables), so changing profile, role or user never reuses
//!   another identity's answer;
//! - an entry is used only until the same margin before expiry as in memory,
//!   and never past its expiry; expired entries are deleted whenever the
//!   helper runs. Answers that are already expired are never written.
//!
//! The trade-off: a secret sits in a file (readable by the same user and by
//! root) for up to its lifetime, and a revoked or rotated credential keeps
//! being handed out until the entry expires.

use std::{
    ffi::{CString, OsStr, OsString},
    fs::File,
    io::{Read, Write},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::DirBuilderExt},
    },
    path::{Path, PathBuf},
};

use crate::{
    types::{from_unix, unix_seconds},
    AuthKind, PluginInfo, RegistryAuth, Secret,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{config::Config, token_cache::use_until, Error, Result};
use credhost_plugin_api::rules::unix_now;

const FORMAT_VERSION: u32 = 1;

/// Before plugins declared their identity, these variables were assumed to
/// pick cloud credentials (credential chains, profiles, metadata endpoints);
/// still used, with a deprecation warning, for plugins that declare nothing.
const LEGACY_VAR_PREFIXES: &[&str] = &["AWS_", "GOOGLE_", "CLOUDSDK_", "GCE_METADATA", "AZURE_"];
/// Likewise: variables that move the files credential chains read.
const LEGACY_VARS: &[&str] = &["HOME", "USERPROFILE", "XDG_CONFIG_HOME"];

/// A cache directory, checked to be private. Every entry is opened, checked
/// and read relative to the checked directory handle, never by path.
pub struct DiskCache {
    dir: PathBuf,
    handle: OwnedFd,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    version: u32,
    plugin: &'a str,
    registry: &'a str,
    server: &'a str,
    username: &'a str,
    secret: &'a str,
    kind: Option<&'a str>,
    expires_at: Option<i64>,
    use_until: i64,
}

#[derive(Deserialize)]
struct EntryIn {
    version: u32,
    server: String,
    username: String,
    secret: Zeroizing<String>,
    kind: Option<String>,
    expires_at: Option<i64>,
    use_until: i64,
}

impl EntryIn {
    /// Usable now: before `use_until` and before the expiry, whatever
    /// `use_until` claims.
    fn live(&self, now: i64) -> bool {
        now < self.use_until && self.expires_at.is_none_or(|e| now < e)
    }
}

/// The user's cache directory for registry credentials:
/// `$XDG_CACHE_HOME/credhost/registry-auth`, else `~/.cache/credhost/registry-auth`
/// (`%LOCALAPPDATA%\credhost\registry-auth` on Windows).
pub fn default_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = if cfg!(windows) {
        var("LOCALAPPDATA")?
    } else {
        var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?
    };
    Some(base.join("credhost").join("registry-auth"))
}

/// A digest of everything that decides which credentials instance
/// `instance` hands out: the configuration file, the instance and its
/// settings, and the values of the environment variables its credentials
/// depend on: those its plugin declares (by name or prefix, and through the
/// settings that name variables) and those its `identity_env` lists.
pub fn identity(config: &Config, instance: &str, info: Option<&PluginInfo>) -> String {
    let mut h = Sha256::new();
    let mut feed = |k: &str, v: &[u8]| {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
    };
    let config_path = std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone());
    feed("config", config_path.display().to_string().as_bytes());
    feed("instance", instance.as_bytes());
    feed("settings", config.settings_json(instance).as_bytes());
    let entry = config.instances.get(instance);
    if let Some(entry) = entry {
        feed("plugin", entry.plugin.as_bytes());
    }
    // Exact names and `PREFIX*` patterns.
    let mut patterns: Vec<String> = Vec::new();
    if let Some(entry) = entry {
        patterns.extend(entry.identity_env.iter().cloned());
        if let Some(info) = info {
            patterns.extend(info.identity_env.iter().cloned());
            for path in &info.identity_env_settings {
                if let Some(var) = entry.setting(path).and_then(toml::Value::as_str) {
                    patterns.push(var.to_owned());
                }
            }
        }
        let declared = info.is_some_and(|i| !i.identity_env.is_empty() || !i.identity_env_settings.is_empty());
        if !declared && entry.identity_env.is_empty() {
            tracing::warn!(
                target: "credhost::cache",
                "instance `{instance}`: its plugin does not declare which environment variables its credentials depend on; guessing (keys ending in `_env`, cloud variables) is deprecated and will stop in the next release: rebuild the plugin with the current kit, or list them in `identity_env = [...]` of [plugins.{instance}]"
            );
            named_vars(&toml::Value::Table(entry.settings.clone()), &mut patterns);
            patterns.extend(LEGACY_VAR_PREFIXES.iter().map(|p| format!("{p}*")));
            patterns.extend(LEGACY_VARS.iter().map(|v| (*v).to_owned()));
        }
    }
    let mut names: Vec<String> = Vec::new();
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if patterns.iter().any(|p| matches_pattern(p, k)) {
                names.push(k.to_owned());
            }
        }
    }
    // Named but unset variables count too (as empty): setting one later
    // must change the identity.
    names.extend(patterns.iter().filter(|p| !p.ends_with('*')).cloned());
    names.sort();
    names.dedup();
    for name in names {
        let value = std::env::var_os(&name).map(|v| v.to_string_lossy().into_owned());
        let value = Zeroizing::new(value.unwrap_or_default());
        feed(&format!("env:{name}"), value.as_bytes());
    }
    hex::encode(h.finalize())
}

fn matches_pattern(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The variables a plugin's settings name by the old convention: string
/// values of keys ending in `_env`.
fn named_vars(value: &toml::Value, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                match v {
                    toml::Value::String(s) if k.ends_with("_env") => out.push(s.clone()),
                    other => named_vars(other, out),
                }
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| named_vars(v, out)),
        _ => {}
    }
}

impl DiskCache {
    /// Creates `dir` and its missing parents (mode 0700) or checks that an
    /// existing one belongs to this user and is private, then removes the
    /// entries that have expired.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io("cannot create", dir, e))?;
        let handle = open_at(libc::AT_FDCWD, dir.as_os_str(), libc::O_DIRECTORY)
            .map_err(|e| Error::io("cannot open", dir, e))?;
        let meta = fstat(handle.as_fd()).map_err(|e| Error::io("cannot read", dir, e))?;
        let refuse = |why: String| Error::InvalidInput(format!("credential cache {}: {why}", dir.display()));
        if meta.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(refuse("not a directory".into()));
        }
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.st_uid != me {
            return Err(refuse(format!(
                "owned by user {}, not by this user ({me}): its entries could have been planted",
                meta.st_uid
            )));
        }
        let mode = meta.st_mode & 0o777;
        if mode & 0o077 != 0 {
            return Err(refuse(format!(
                "has mode {mode:03o}: others could read or plant credentials; use a directory with mode 0700"
            )));
        }
        let cache = Self { dir: dir.to_path_buf(), handle };
        cache.sweep();
        Ok(cache)
    }

    /// The file for `plugin`'s credentials for `registry` under `identity`.
    pub fn file_for(&self, plugin: &str, registry: &str, identity: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(format!("{plugin}\0{registry}\0{identity}")));
        self.dir.join(format!("{plugin}-{}.json", &digest[..32]))
    }

    /// The entry in `file`, when it is private and still live. Anything else
    /// (expired, unreadable, another user's, too open) is removed and reads
    /// as a miss.
    pub fn load(&self, file: &Path) -> Option<RegistryAuth> {
        let entry = self.read(file.file_name()?)?;
        Some(RegistryAuth {
            server: entry.server.clone(),
            username: entry.username.clone(),
            secret: Secret::new(entry.secret.as_str()),
            expires_at: entry.expires_at.map(from_unix),
            kind: match entry.kind.as_deref() {
                Some("bearer") => AuthKind::Bearer,
                _ => AuthKind::Basic,
            },
        })
    }

    fn read(&self, name: &OsStr) -> Option<EntryIn> {
        let file = match open_at(self.handle.as_raw_fd(), name, libc::O_NOFOLLOW | libc::O_NONBLOCK) {
            Ok(fd) => File::from(fd),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(_) => {
                // A link, a FIFO, an unreadable file: not ours to serve.
                self.refuse(name, "not a readable regular file");
                return None;
            }
        };
        let meta = match fstat(file.as_fd()) {
            Ok(m) => m,
            Err(_) => return None,
        };
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.st_mode & libc::S_IFMT != libc::S_IFREG {
            self.refuse(name, "not a regular file");
            return None;
        }
        if meta.st_uid != me || meta.st_mode & 0o077 != 0 {
            self.refuse(name, "not a private file of this user");
            return None;
        }
        let mut text = Zeroizing::new(String::new());
        if (&file).take(MAX_ENTRY_BYTES + 1).read_to_string(&mut text).is_err() || text.len() as u64 > MAX_ENTRY_BYTES {
            self.remove(name);
            return None;
        }
        match serde_json::from_str::<EntryIn>(&text) {
            Ok(entry) if entry.version == FORMAT_VERSION && entry.live(unix_now()) => Some(entry),
            _ => {
                self.remove(name);
                None
            }
        }
    }

    fn refuse(&self, name: &OsStr, why: &str) {
        tracing::warn!(target: "credhost::cache", file = %self.dir.join(name).display(), "removing a cache entry: {why}");
        self.remove(name);
    }

    /// Writes `auth` to `file` (mode 0600, atomically) when it may be cached:
    /// never when it has expired or is about to. Returns whether it was written.
    pub fn store(&self, file: &Path, plugin: &str, registry: &str, auth: &RegistryAuth) -> Result<bool> {
        let now = unix_now();
        let expires_at = auth.expires_at.map(unix_seconds);
        let Some(until) = use_until(now, expires_at) else { return Ok(false) };
        let Some(name) = file.file_name() else {
            return Err(Error::Internal(format!("cache entry {} has no file name", file.display())));
        };
        let entry = EntryOut {
            version: FORMAT_VERSION,
            plugin,
            registry,
            server: auth.server.as_str(),
            username: auth.username.as_str(),
            secret: auth.secret.expose(),
            kind: Some(auth.kind.as_str()),
            expires_at,
            use_until: until,
        };
        let bytes = Zeroizing::new(
            serde_json::to_vec(&entry).map_err(|e| Error::Internal(format!("cannot encode a cache entry: {e}")))?,
        );
        let dir = self.handle.as_raw_fd();
        let temp = OsString::from(format!(".entry-{:016x}", random_u64()));
        // Created with mode 0600 before anything is written, never through a link.
        let mut out = File::from(
            open_at(dir, &temp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW)
                .map_err(|e| Error::io("cannot create a file in", &self.dir, e))?,
        );
        let written = out.write_all(&bytes).and_then(|()| out.sync_all());
        let renamed = written.and_then(|()| {
            let (from, to) = (cstring(&temp)?, cstring(name)?);
            // SAFETY: both names are NUL-terminated and relative to the open directory `dir`.
            if unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
        if let Err(e) = renamed {
            self.remove(&temp);
            return Err(Error::io("cannot write", file, e));
        }
        Ok(true)
    }

    /// Removes every entry that is no longer live, and left-over temporary files.
    pub fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", self.handle.as_raw_fd()))
            .or_else(|_| std::fs::read_dir(&self.dir))
        else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let shown = name.to_string_lossy();
            if shown.ends_with(".json") && !shown.starts_with('.') {
                // `read` removes what is dead.
                let _ = self.read(&name);
            } else if shown.starts_with(".entry-") && is_stale(&entry) {
                self.remove(&name);
            }
        }
    }

    fn remove(&self, name: &OsStr) {
        let Ok(c) = cstring(name) else { return };
        // SAFETY: `c` is NUL-terminated and relative to the open cache directory.
        if unsafe { libc::unlinkat(self.handle.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(target: "credhost::cache", file = %self.dir.join(name).display(), "cannot remove a cache entry: {e}");
            }
        }
    }
}

/// Entries are a few hundred bytes; anything larger is not one.
const MAX_ENTRY_BYTES: u64 = 64 * 1024;

fn cstring(name: &OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a name"))
}

/// Opens `name` relative to `dir` (close-on-exec; mode 0600 when created).
fn open_at(dir: libc::c_int, name: &OsStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = cstring(name)?;
    let rw = if flags & (libc::O_WRONLY | libc::O_RDWR) == 0 { libc::O_RDONLY } else { 0 };
    // SAFETY: `c` is NUL-terminated; the returned descriptor is owned below.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | rw | libc::O_CLOEXEC, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: BorrowedFd<'_>) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to fill in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is writable.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// A name for a temporary file that no other writer picks.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// A temporary file of a writer that died more than a minute ago.
fn is_stale(entry: &std::fs::DirEntry) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(expires_at: Option<i64>) -> RegistryAuth {
        RegistryAuth {
            server: "r.example:5000".into(),
            username: "user".into(),
            secret: Secret::new("s3cret"),
            expires_at: expires_at.map(from_unix),
            kind: AuthKind::Basic,
        }
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn entries_are_private_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/cache");
        let cache = DiskCache::open(&dir).unwrap();
        let file = cache.file_for("local", "r.example:5000", "id");
        assert!(cache.store(&file, "local", "r.example:5000", &auth(Some(unix_now() + 3600))).unwrap());
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&file), 0o600);
        }
        let back = cache.load(&file).unwrap();
        assert_eq!((back.username.as_str(), back.secret.expose()), ("user", "s3cret"));
        assert_eq!(back.kind, AuthKind::Basic);
        assert_ne!(file, cache.file_for("local", "r.example:5000", "other-id"));
        assert_ne!(file, cache.file_for("aws", "r.example:5000", "id"));
    }

    #[test]
    fn expired_answers_are_never_written_and_dead_entries_go() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(&tmp.path().join("c")).unwrap();
        let file = cache.file_for("aws", "r", "id");
        assert!(!cache.store(&file, "aws", "r", &auth(Some(1_420_070_400))).unwrap());
        assert!(!file.exists());
        // An entry whose use_until was tampered past its expiry is not used.
        assert!(cache.store(&file, "aws", "r", &auth(Some(unix_now() + 3600))).unwrap());
        let text = std::fs::read_to_string(&file).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["expires_at"] = (unix_now() - 1).into();
        std::fs::write(&file, v.to_string()).unwrap();
        assert!(cache.load(&file).is_none());
        assert!(!file.exists(), "a dead entry is removed");
    }

    #[cfg(unix)]
    #[test]
    fn open_directories_and_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = DiskCache::open(tmp.path()).err().unwrap().to_string();
        assert!(e.contains("has mode 755"), "{e}");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let cache = DiskCache::open(tmp.path()).unwrap();
        let file = cache.file_for("local", "r", "id");
        cache.store(&file, "local", "r", &auth(None)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(cache.load(&file).is_none());
        assert!(!file.exists());
    }

    /// Entries planted by another user, links and FIFOs are never served,
    /// and missing parents are created private. Changing a file's owner
    /// needs root: as another user the ownership half is checked with a
    /// directory that already belongs to root.
    #[test]
    fn another_users_directory_or_entry_links_and_fifos_are_refused() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new/parents/cache");
        let cache = DiskCache::open(&dir).unwrap();
        for p in [tmp.path().join("new"), tmp.path().join("new/parents")] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        let file = cache.file_for("local", "r", "id");
        let name = |f: &Path| f.file_name().unwrap().to_owned();

        // A link to a valid entry elsewhere is not followed.
        let elsewhere = DiskCache::open(&tmp.path().join("other")).unwrap();
        let real = elsewhere.file_for("local", "r", "id");
        elsewhere.store(&real, "local", "r", &auth(None)).unwrap();
        symlink(&real, &file).unwrap();
        assert!(cache.load(&file).is_none());
        assert!(std::fs::symlink_metadata(&file).is_err(), "the link is removed");
        assert!(real.exists(), "its target is not");

        // A FIFO does not hang the reader.
        let c = CString::new(file.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(cache.load(&file).is_none());
        assert!(cache.read(&name(&file)).is_none());

        if unsafe { libc::geteuid() } == 0 {
            cache.store(&file, "local", "r", &auth(None)).unwrap();
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
            assert!(cache.load(&file).is_none(), "another user's entry is not served");
            assert!(!file.exists());
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            let e = DiskCache::open(&dir).err().unwrap().to_string();
            assert!(e.contains("owned by user 65534"), "{e}");
        } else {
            let root_owned = Path::new("/root");
            if std::fs::metadata(root_owned).is_ok_and(|m| m.permissions().mode() & 0o077 == 0) {
                let e = DiskCache::open(root_owned).err().unwrap().to_string();
                assert!(e.contains("owned by user 0") || e.contains("cannot open"), "{e}");
            }
        }
    }

    #[test]
    fn identity_follows_declared_and_listed_variables() {
        use credhost_plugin_api::{keys, Capabilities, Extra};
        let text = "platform = \"local\"\n[plugins.local]\nidentity_env = [\"CREDHOST_UNIT_LISTED\"]\n[plugins.local.settings]\nregistry = { url = \"http://r\", auth = \"basic\", username_env = \"CREDHOST_UNIT_IDENTITY_USER\", password_env = \"X\" }\n";
        let config = Config::parse(Path::new("p.toml"), text, None, None).unwrap();
        let info = credhost_plugin_api::PluginInfo {
            name: "local".into(),
            version: "1".into(),
            api_version: "1.0.0".into(),
            capabilities: Capabilities::ALL,
            extra: Extra::new(),
        }
        .with_extra(keys::IDENTITY_ENV_SETTINGS, "registry.username_env")
        .with_extra(keys::IDENTITY_ENV, "CREDHOST_UNIT_PREFIX_*");
        let info = PluginInfo::from_api(&info, "1.1");
        let id = || identity(&config, "local", Some(&info));
        std::env::set_var("CREDHOST_UNIT_IDENTITY_USER", "alice");
        let a = id();
        assert_eq!(a, id());
        for (var, value) in
            [("CREDHOST_UNIT_IDENTITY_USER", "bob"), ("CREDHOST_UNIT_LISTED", "1"), ("CREDHOST_UNIT_PREFIX_X", "1")]
        {
            let before = id();
            std::env::set_var(var, value);
            assert_ne!(before, id(), "{var} is part of the identity");
        }
        let before = id();
        std::env::set_var("CREDHOST_UNIT_UNRELATED", "1");
        assert_eq!(before, id());
    }
}
