//! `credhost docker-config`: a docker `config.json` for the registries
//! credhost serves, either pointing them at `docker-credential-credhost`
//! (`credHelpers`) or, for builders that cannot run helpers (kaniko, some CI
//! runners), holding their current credentials (`auths`).

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
};

use credhost::{api::rules::registry_host, Registries};
use serde_json::{Map, Value};

use crate::{
    credhelper::HELPER_NAME,
    error::{Error, Result},
};

/// What to write.
pub struct Options<'a> {
    /// `auths` entries with the current credentials instead of `credHelpers` entries.
    pub static_auths: bool,
    /// Only these registries; every exactly known one when empty.
    pub registries: &'a [String],
    /// No notes on stderr.
    pub quiet: bool,
}

/// The largest config.json read for merging.
const MAX_CONFIG_JSON: u64 = 1 << 20;

/// Reads an existing config.json as a JSON object; a missing file reads as `{}`.
pub fn read(path: &Path) -> Result<Map<String, Value>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer; the
    // type check below then refuses it.
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(credhost::Error::io("cannot read", path, e).into()),
    };
    let meta = file.metadata().map_err(|e| credhost::Error::io("cannot read", path, e))?;
    if !meta.is_file() {
        return Err(Error::Usage(format!("{}: not a regular file; is it a docker config.json?", path.display())));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_JSON + 1)
        .read_to_string(&mut text)
        .map_err(|e| credhost::Error::io("cannot read", path, e))?;
    if text.len() as u64 > MAX_CONFIG_JSON {
        return Err(Error::Usage(format!(
            "{}: larger than {MAX_CONFIG_JSON} bytes; is it a docker config.json?",
            path.display()
        )));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::Usage(format!("{}: not a JSON object; is it a docker config.json?", path.display()))),
        Err(e) => Err(Error::Usage(format!("{}: invalid JSON: {e}", path.display()))),
    }
}

/// `base` with an entry for each registry, as pretty JSON. With
/// `static_auths`, a registry whose credentials cannot be fetched is skipped
/// with a note; it fails only when no registry answered.
pub async fn build(registries: &Registries, mut base: Map<String, Value>, opts: &Options<'_>) -> Result<String> {
    let map = registries.map().await?;
    let hosts: Vec<String> = if opts.registries.is_empty() {
        if !opts.quiet {
            for pattern in map.wildcard_patterns() {
                eprintln!("credhost: note: [registries] `{pattern}` is a wildcard, which config.json cannot express; name its hosts with --registry");
            }
        }
        map.hosts().map(|(h, _)| h.to_owned()).collect()
    } else {
        let mut wanted = Vec::new();
        for r in opts.registries {
            let host = registry_host(r);
            if map.resolve(&host).is_none() {
                return Err(Error::Usage(format!(
                    "no instance serves registry {host}: add it to [registries] or to an instance's `registries`"
                )));
            }
            wanted.push(host);
        }
        wanted
    };
    if opts.static_auths {
        let mut failures = Vec::new();
        let mut answered = 0;
        for host in &hosts {
            let auth = match registries.get(host).await {
                Ok(Some(auth)) => auth,
                Ok(None) => {
                    answered += 1;
                    if !opts.quiet {
                        eprintln!("credhost: note: {host} needs no credentials; no entry written");
                    }
                    continue;
                }
                Err(e) => {
                    eprintln!("credhost: note: skipping {host}: {}", credhost::one_line(&e.to_string()));
                    failures.push(e);
                    continue;
                }
            };
            answered += 1;
            let token = auth.registry_token();
            section(&mut base, "auths")?.insert(host.clone(), serde_json::json!({ "auth": token.expose() }));
            // A helper entry for the same registry would win over the stored one.
            if let Ok(helpers) = section(&mut base, "credHelpers") {
                if helpers.get(host).and_then(Value::as_str) == Some(HELPER_NAME) {
                    helpers.remove(host);
                }
            }
            if let Some(exp) = auth.expires_at.map(credhost::unix_seconds) {
                if !opts.quiet {
                    let left = exp - credhost::unix_seconds(std::time::SystemTime::now());
                    if left > 0 {
                        eprintln!("credhost: note: the credentials for {host} expire in {left} s (Unix time {exp}); write the file again before then");
                    } else {
                        eprintln!("credhost: warning: the credentials for {host} already expired (Unix time {exp})");
                    }
                }
            }
        }
        if answered == 0 {
            if let Some(first) = failures.into_iter().next() {
                return Err(first.into());
            }
        }
    } else {
        let helpers = section(&mut base, "credHelpers")?;
        for host in &hosts {
            helpers.insert(host.clone(), Value::String(HELPER_NAME.to_owned()));
        }
    }
    drop_empty(&mut base, "credHelpers");
    let mut doc = Value::Object(base);
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::Usage(format!("cannot format JSON: {e}")));
    // The document held the credentials: wipe them before it is dropped.
    wipe(&mut doc);
    let mut text = text?;
    text.push('\n');
    Ok(text)
}

/// Overwrites every string in `v` with zeros.
fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => zeroize::Zeroize::zeroize(s),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(o) => o.values_mut().for_each(wipe),
        _ => {}
    }
}

/// The object under `key`, created when missing.
fn section<'a>(doc: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Map<String, Value>> {
    match doc.entry(key).or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(m) => Ok(m),
        _ => Err(Error::Usage(format!("the config's `{key}` is not a JSON object"))),
    }
}

fn drop_empty(doc: &mut Map<String, Value>, key: &str) {
    if doc.get(key).and_then(Value::as_object).is_some_and(Map::is_empty) {
        doc.remove(key);
    }
}

/// The file a write to `path` should replace: `path`, or the file a
/// symbolic link at `path` points to (so that a symlinked config.json, as
/// dotfile managers make, stays a link).
pub fn write_target(path: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).or_else(|e| {
                // A dangling link: write where it points.
                if e.kind() == std::io::ErrorKind::NotFound {
                    let target = std::fs::read_link(path).map_err(|e| credhost::Error::io("cannot read", path, e))?;
                    Ok(match path.parent() {
                        Some(dir) if target.is_relative() => dir.join(target),
                        _ => target,
                    })
                } else {
                    Err(Error::from(credhost::Error::io("cannot resolve", path, e)))
                }
            })
        }
        _ => Ok(path.to_path_buf()),
    }
}

/// Writes `bytes` to `path` (through a symbolic link, to its target) by a
/// temporary file (mode 0600 from the start) renamed into place, so readers
/// never see half a file and the credentials are never readable by others.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = write_target(path)?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |e| Error::from(credhost::Error::io("cannot write", &target, e));
    let mut temp = tempfile::Builder::new()
        .prefix(".config.json.")
        .tempfile_in(&dir)
        .map_err(|e| Error::from(credhost::Error::io("cannot create a file in", &dir, e)))?;
    temp.write_all(bytes).map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(&target).map_err(|e| io(e.error))?;
    Ok(())
}

/// Says where the helper will look for its configuration when that is not
/// the file these entries were made from.
pub fn note_helper_config(config: &credhost::config::Config) {
    let ours = std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone());
    let helpers = crate::credhelper::config_path();
    let same = helpers.as_ref().is_some_and(|h| std::fs::canonicalize(h).is_ok_and(|h| h == ours));
    if !same {
        eprintln!(
            "credhost: note: docker-credential-credhost reads {} ({}); set CREDHOST_CONFIG={} where docker runs",
            helpers.as_ref().map(|h| h.display().to_string()).unwrap_or_else(|| "$CREDHOST_CONFIG".into()),
            if std::env::var_os(credhost::config::CONFIG_ENV).is_some() {
                "from CREDHOST_CONFIG"
            } else {
                "the default"
            },
            ours.display()
        );
    }
}
