//! `credhost docker-config`: a docker `config.json` for the registries
//! credhost serves, either pointing them at `docker-credential-credhost`
//! (`credHelpers`) or, for builders that cannot run helpers (kaniko, some CI
//! runners), holding their current credentials (`auths`).

use std::{io::Write, path::Path};

use serde_json::{Map, Value};

use crate::{
    config::Config,
    credhelper::{self, CredentialHelper, HELPER_NAME},
    registries::normalize_host,
    token_cache::unix_now,
    Error, Result,
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

/// Reads an existing config.json as a JSON object; a missing file reads as `{}`.
pub fn read(path: &Path) -> Result<Map<String, Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::InvalidInput(format!("{}: not a JSON object; is it a docker config.json?", path.display()))),
        Err(e) => Err(Error::InvalidInput(format!("{}: invalid JSON: {e}", path.display()))),
    }
}

/// `base` with an entry for each registry, as pretty JSON.
pub async fn build(helper: &CredentialHelper, mut base: Map<String, Value>, opts: &Options<'_>) -> Result<String> {
    let map = helper.registries();
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
            let host = normalize_host(r);
            if map.resolve(&host).is_none() {
                return Err(Error::InvalidInput(format!(
                    "no plugin serves registry {host}: add it to [registries] or to a plugin's `registry` setting"
                )));
            }
            wanted.push(host);
        }
        wanted
    };
    if opts.static_auths {
        for host in &hosts {
            let Some(auth) = helper.get(host).await? else {
                if !opts.quiet {
                    eprintln!("credhost: note: {host} needs no credentials; no entry written");
                }
                continue;
            };
            let token = auth.registry_token();
            section(&mut base, "auths")?.insert(host.clone(), serde_json::json!({ "auth": token.expose() }));
            // A helper entry for the same registry would win over the stored one.
            if let Ok(helpers) = section(&mut base, "credHelpers") {
                if helpers.get(host).and_then(Value::as_str) == Some(HELPER_NAME) {
                    helpers.remove(host);
                }
            }
            if let Some(exp) = auth.expires_at.into_option() {
                if !opts.quiet {
                    let left = exp - unix_now();
                    if left > 0 {
                        eprintln!("credhost: note: the credentials for {host} expire in {left} s (Unix time {exp}); write the file again before then");
                    } else {
                        eprintln!("credhost: warning: the credentials for {host} already expired (Unix time {exp})");
                    }
                }
            }
        }
    } else {
        let helpers = section(&mut base, "credHelpers")?;
        for host in &hosts {
            helpers.insert(host.clone(), Value::String(HELPER_NAME.to_owned()));
        }
    }
    drop_empty(&mut base, "credHelpers");
    let mut text = serde_json::to_string_pretty(&Value::Object(base))
        .map_err(|e| Error::Internal(format!("cannot format JSON: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// The object under `key`, created when missing.
fn section<'a>(doc: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Map<String, Value>> {
    match doc.entry(key).or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(m) => Ok(m),
        _ => Err(Error::InvalidInput(format!("the config's `{key}` is not a JSON object"))),
    }
}

fn drop_empty(doc: &mut Map<String, Value>, key: &str) {
    if doc.get(key).and_then(Value::as_object).is_some_and(Map::is_empty) {
        doc.remove(key);
    }
}

/// Writes `bytes` to `path` through a temporary file (mode 0600 from the
/// start) renamed into place, so readers never see half a file and the
/// credentials are never readable by others.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".config.json.")
        .tempfile_in(&dir)
        .map_err(|e| Error::io("cannot create a file in", &dir, e))?;
    temp.write_all(bytes).map_err(|e| Error::io("cannot write", path, e))?;
    temp.as_file().sync_all().map_err(|e| Error::io("cannot write", path, e))?;
    temp.persist(path).map_err(|e| Error::io("cannot write", path, e.error))?;
    Ok(())
}

/// Says where the helper will look for its configuration when that is not
/// the file these entries were made from.
pub fn note_helper_config(config: &Config) {
    let ours = std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone());
    let helpers = credhelper::config_path();
    let same = helpers.as_ref().is_some_and(|h| std::fs::canonicalize(h).is_ok_and(|h| h == ours));
    if !same {
        eprintln!(
            "credhost: note: docker-credential-credhost reads {} ({}); set CREDHOST_CONFIG={} where docker runs",
            helpers.as_ref().map(|h| h.display().to_string()).unwrap_or_else(|| "$CREDHOST_CONFIG".into()),
            if std::env::var_os(crate::config::CONFIG_ENV).is_some() { "from CREDHOST_CONFIG" } else { "the default" },
            ours.display()
        );
    }
}
