//! The issuance audit log (`[audit]` in `plugins.toml`): one JSON line per
//! credential handed out and per destructive act, so that what was issued,
//! to whom and from which plugin file can be accounted for afterwards.
//!
//! Secret values never appear in it: each is written as
//! `hmac-sha256:HEX` under the log's key ([`AuditLog::hash`]), so that a
//! leaked token can be traced to the line that issued it
//! (`credhost audit hash VALUE`) while the log itself hands nothing out.
//!
//! Each line is one `write(2)` on a file opened with `O_APPEND` (mode 0600
//! when it is created), so that processes sharing the file write whole
//! lines. The file is opened again when its path no longer names it (a log
//! rotated by renaming or removing it) and after [`reopen`]. With
//! `required = true` a line that cannot be written fails the call and hands
//! nothing out; otherwise the failure is said on stderr once a minute and
//! the call goes on.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use hmac::Mac as _;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// How often a log that is not required says that it cannot be written.
const COMPLAIN_EVERY: Duration = Duration::from_secs(60);

/// Where the lines go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AuditPath {
    /// `path = "-"`: the process's standard error.
    Stderr,
    /// A file (resolved against the configuration's directory).
    File(PathBuf),
}

impl std::fmt::Display for AuditPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditPath::Stderr => f.write_str("stderr"),
            AuditPath::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The `[audit]` table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuditSettings {
    /// `path`: the file, or `-` for stderr.
    pub path: AuditPath,
    /// `key_env`: the environment variable holding the HMAC key.
    pub key_env: String,
    /// `required`: fail closed (default false).
    pub required: bool,
}

/// An open audit log. Hosts with the same settings in one process share it.
pub struct AuditLog {
    settings: AuditSettings,
    key: zeroize::Zeroizing<Vec<u8>>,
    sink: Mutex<Sink>,
    complained: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("settings", &self.settings).field("key", &crate::REDACTED).finish()
    }
}

#[derive(Default)]
struct Sink {
    file: Option<std::fs::File>,
    /// A line was cut short (the disk filled up mid-line): the next one
    /// starts on a line of its own.
    cut: bool,
    /// The `reopen` generation the file was opened in.
    generation: u64,
}

/// Bumped by [`reopen`].
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The logs open in this process, to share them and to reopen them.
static LOGS: Mutex<Vec<Weak<AuditLog>>> = Mutex::new(Vec::new());

/// Opens every audit log file of this process again before its next line:
/// call it from a service's SIGHUP handler after rotating the logs by
/// copying. (A log rotated by renaming or removing its file is noticed
/// without it.)
pub fn reopen() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The HMAC key from `key_env`, checked.
fn read_key(settings: &AuditSettings) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let var = &settings.key_env;
    let value = std::env::var_os(var).unwrap_or_default();
    let key = zeroize::Zeroizing::new(value.as_encoded_bytes().to_vec());
    if key.is_empty() {
        return Err(Error::Config {
            location: format!("[audit] key_env = \"{var}\""),
            message: format!("${var} is not set: the audit log needs the key it hashes secrets under"),
        });
    }
    if key.len() < MIN_KEY_LEN {
        return Err(Error::Config {
            location: format!("[audit] key_env = \"{var}\""),
            message: format!("${var} holds {} bytes; an audit key needs at least {MIN_KEY_LEN}", key.len()),
        });
    }
    Ok(key)
}

impl AuditLog {
    /// The log of `settings`: the one already open in this process, else a
    /// new one (its file opened at the first line). Fails when the key is
    /// missing or too short.
    pub fn open(settings: &AuditSettings) -> Result<Arc<AuditLog>> {
        hide_from_plugins(&settings.key_env);
        let key = read_key(settings)?;
        let mut logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
        logs.retain(|l| l.strong_count() > 0);
        if let Some(log) = logs.iter().filter_map(Weak::upgrade).find(|l| l.settings == *settings && l.key == key) {
            return Ok(log);
        }
        let log = Arc::new(AuditLog {
            settings: settings.clone(),
            key,
            sink: Mutex::new(Sink::default()),
            complained: Mutex::new(None),
        });
        logs.push(Arc::downgrade(&log));
        Ok(log)
    }

    /// Its settings.
    pub fn settings(&self) -> &AuditSettings {
        &self.settings
    }

    /// `hmac-sha256:HEX` of `value` under the log's key: the form secrets
    /// take in the log.
    pub fn hash(&self, value: &str) -> String {
        hash_with(&self.key, value)
    }

    /// Writes one record (a line of JSON) on a blocking thread. An error
    /// only when the log is `required`; otherwise a failure is said on
    /// stderr (once a minute) and `Ok` returned.
    pub async fn write(self: &Arc<Self>, record: Value) -> Result<()> {
        let mut line = record.to_string();
        line.push('\n');
        let log = self.clone();
        let written = tokio::task::spawn_blocking(move || log.write_line(line.as_bytes()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("the writing task failed: {e}"))));
        match written {
            Ok(()) => Ok(()),
            Err(e) => self.failed(&e),
        }
    }

    /// Whether a line can be written now (the file opened for appending).
    pub fn probe(&self) -> std::io::Result<()> {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        self.ready(&mut sink).map(|_| ())
    }

    fn failed(&self, e: &std::io::Error) -> Result<()> {
        let why = format!("audit log {}: cannot write a line: {e}", self.settings.path);
        if self.settings.required {
            return Err(Error::Audit(why));
        }
        let mut last = self.complained.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= COMPLAIN_EVERY) {
            *last = Some(Instant::now());
            eprintln!("credhost: {why}; going on without it (said at most once a minute)");
        }
        Ok(())
    }

    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        if self.settings.path == AuditPath::Stderr {
            let mut err = std::io::stderr().lock();
            err.write_all(line)?;
            return err.flush();
        }
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let cut = std::mem::take(&mut sink.cut);
        let file = self.ready(&mut sink)?;
        let mut bytes = Vec::with_capacity(line.len() + 1);
        if cut {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(line);
        let written = match file.write(&bytes) {
            // A short write (the disk filled up mid-line): the rest goes
            // after it, so that the line stays whole if it can be.
            Ok(n) if n < bytes.len() => file.write_all(&bytes[n..]).map_err(|e| (e, n > 0)),
            Ok(_) => Ok(()),
            Err(e) => Err((e, false)),
        };
        written.map_err(|(e, partly)| {
            // Opened again for the next line (the file may have been
            // replaced), which starts after whatever was cut short.
            sink.file = None;
            sink.cut = partly || cut;
            e
        })
    }

    /// The open file, opened (again) when needed.
    fn ready<'a>(&self, sink: &'a mut Sink) -> std::io::Result<&'a mut std::fs::File> {
        let AuditPath::File(path) = &self.settings.path else {
            return Err(std::io::Error::other("not a file"));
        };
        let generation = GENERATION.load(Ordering::SeqCst);
        let stale = match &sink.file {
            None => true,
            Some(file) => sink.generation != generation || !same_file(file, path),
        };
        if stale {
            sink.file = None;
            sink.file = Some(open_append(path)?);
            sink.generation = generation;
        }
        sink.file.as_mut().ok_or_else(|| std::io::Error::other("the log is not open"))
    }
}

/// Whether `path` still names the open `file`.
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().append(true).create(true).mode(0o600).custom_flags(libc::O_CLOEXEC).open(path)
}

fn hash_with(key: &[u8], value: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(value.as_bytes());
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

/// `hmac-sha256:HEX` of `value` under the key of `settings`
/// (`credhost audit hash`).
pub fn hash(settings: &AuditSettings, value: &str) -> Result<String> {
    Ok(hash_with(&read_key(settings)?, value))
}

/// A fresh request id: 16 random bytes, in hex.
pub fn request_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No randomness source: unique within the process at least.
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
        bytes[8..].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    hex::encode(bytes)
}

/// The variables holding audit keys, kept from plugin processes.
static KEY_VARS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keeps `var` (an audit key's variable) out of the environment of plugin
/// processes started from now on.
pub(crate) fn hide_from_plugins(var: &str) {
    let mut vars = KEY_VARS.lock().unwrap_or_else(|p| p.into_inner());
    if !vars.iter().any(|v| v == var) {
        vars.push(var.to_owned());
    }
}

/// The variables [`hide_from_plugins`] named.
pub(crate) fn hidden_from_plugins() -> Vec<String> {
    KEY_VARS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The label of this process's calls (the CLI's `--audit-label`).
static PROCESS_LABEL: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Sets the label of audit lines of calls that carry none of their own
/// (the CLI sets its `--audit-label` here). Kept to one line.
pub fn set_process_label(label: Option<&str>) {
    *PROCESS_LABEL.write().unwrap_or_else(|p| p.into_inner()) = label.map(crate::one_line);
}

tokio::task_local! {
    static TASK_LABEL: Arc<str>;
}

/// Runs `fut` with `label` in the audit lines of the calls it makes that
/// carry no label of their own ([`crate::ProviderHandle::with_audit_label`]
/// wins; the process label of [`set_process_label`] is the fallback).
pub async fn labelled<F: std::future::Future>(label: Option<&str>, fut: F) -> F::Output {
    match label {
        Some(label) => TASK_LABEL.scope(Arc::from(crate::one_line(label)), fut).await,
        None => fut.await,
    }
}

/// The start of a record: the fields every line has.
pub(crate) fn record(operation: &str, instance: &str, plugin: Value, label: Option<&str>) -> Map<String, Value> {
    let process_label = PROCESS_LABEL.read().unwrap_or_else(|p| p.into_inner()).clone();
    let task_label = TASK_LABEL.try_with(|l| l.to_string()).ok();
    let label = label.map(str::to_owned).or(task_label).or(process_label);
    let mut m = Map::new();
    m.insert("time".into(), crate::grant::rfc3339(credhost_plugin_api::rules::unix_now()).into());
    m.insert("request_id".into(), request_id().into());
    m.insert("operation".into(), operation.into());
    m.insert("instance".into(), instance.into());
    m.insert("plugin".into(), plugin);
    if let Some(label) = label {
        m.insert("label".into(), label.into());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_hmacs() {
        // RFC 4231, test case 2.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hash_with(b"Jefe", "what do ya want for nothing?"),
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(hash_with(b"another key", "what do ya want for nothing?"), hash_with(b"Jefe", "x"));
    }

    #[test]
    fn request_ids_differ() {
        let (a, b) = (request_id(), request_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
