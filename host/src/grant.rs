//! Build-job grants: what one job needs (read one project object, push one
//! repository, pull a few), narrowed by the platform and short-lived, as
//! the entries the job reads.

use std::time::{Duration, SystemTime};

use credhost_plugin_api as api;
use serde::Serialize;

use crate::{
    names,
    types::{from_unix, unix, unix_opt, unix_seconds},
    AuthKind, CredentialEntry, Error, RegistryAuth, Result, Secret,
};

/// The shortest grant (STS's minimum session).
pub const MIN_GRANT_TTL: Duration = Duration::from_secs(15 * 60);
/// The longest grant (STS's maximum session).
pub const MAX_GRANT_TTL: Duration = Duration::from_secs(12 * 3600);
/// A grant's lifetime unless asked otherwise.
pub const DEFAULT_GRANT_TTL: Duration = Duration::from_secs(3600);

/// What a build job is to be granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRequest {
    /// The bucket of the project object.
    pub bucket: String,
    /// The project object the job reads.
    pub name: String,
    /// The repository the job pushes to (and pulls from).
    pub repository: Option<String>,
    /// Repositories the job pulls from.
    pub pull: Vec<String>,
    /// How long the grant works: 15 minutes to 12 hours.
    pub ttl: Duration,
    /// Also hand storage credentials limited to reading the object.
    pub with_keys: bool,
    /// Accept a registry credential wider than the repositories asked for,
    /// when the registry cannot narrow one (the grant says so).
    pub allow_unscoped_registry: bool,
    /// Who the grant is for (a session name where the platform records
    /// one); derived from the project name when `None`.
    pub session_name: Option<String>,
}

impl GrantRequest {
    /// A grant to read `bucket`/`name` for an hour.
    pub fn new(bucket: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            name: name.into(),
            repository: None,
            pull: Vec::new(),
            ttl: DEFAULT_GRANT_TTL,
            with_keys: false,
            allow_unscoped_registry: false,
            session_name: None,
        }
    }

    /// Checks every part before anything is issued.
    pub(crate) fn validate(&self) -> Result<()> {
        names::validate_bucket(&self.bucket)?;
        names::validate_name(&self.name)?;
        for repo in self.repository.iter().chain(&self.pull) {
            validate_repository(repo)?;
        }
        let secs = self.ttl.as_secs();
        if !(MIN_GRANT_TTL.as_secs()..=MAX_GRANT_TTL.as_secs()).contains(&secs) || self.ttl.subsec_nanos() != 0 {
            return Err(Error::InvalidInput(format!(
                "a grant lasts from 15 minutes to 12 hours (--ttl 15m to 12h), not {}",
                human(self.ttl)
            )));
        }
        if let Some(s) = &self.session_name {
            if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_alphanumeric() || "_=,.@-".contains(c)) {
                return Err(Error::InvalidInput(format!(
                    "the grant's name {:?} must be 1 to 64 characters of A-Z a-z 0-9 _=,.@-",
                    names::printable(s)
                )));
            }
        }
        Ok(())
    }

    /// The session name: the one asked for, else `credhost-` and the
    /// project name with other characters as `-`.
    pub(crate) fn session_name(&self) -> String {
        if let Some(s) = &self.session_name {
            return s.clone();
        }
        let base: String = self
            .name
            .trim_end_matches(".zip")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "_=,.@-".contains(c) { c } else { '-' })
            .collect();
        let mut s = format!("credhost-{base}");
        s.truncate(64);
        s
    }

    pub(crate) fn to_api(&self) -> api::GrantRequest {
        api::GrantRequest {
            bucket: self.bucket.as_str().into(),
            name: self.name.as_str().into(),
            repository: self.repository.as_deref().map(Into::into).into(),
            pull: self.pull.iter().map(|p| p.as_str().into()).collect(),
            ttl_secs: self.ttl.as_secs(),
            with_keys: self.with_keys,
            allow_unscoped_registry: self.allow_unscoped_registry,
            session_name: self.session_name().into(),
            extra: api::Extra::new(),
        }
    }
}

/// `15m`, `1h30m`, `90s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (h, 0, 0) => format!("{h}h"),
        _ => format!("{s}s"),
    }
}

/// A repository name as registries take it: lower-case path components of
/// letters and digits joined by `.`, `_`, `__`, `-`, separated by `/`.
pub fn validate_repository(repo: &str) -> Result<()> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'.' | b'_' | b'-'))
            && !c.contains("..")
    };
    if repo.len() > 255 || !repo.split('/').all(component_ok) {
        return Err(Error::InvalidInput(format!(
            "{:?} is not a repository name (lower-case letters, digits, and . _ - inside /-separated parts, e.g. team/app)",
            names::printable(repo)
        )));
    }
    Ok(())
}

/// How far the registry credential of a grant reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryScope {
    /// Only the repositories asked for.
    Repository,
    /// The whole registry (accepted with `allow_unscoped_registry`).
    Registry,
    /// What the job's own identity is granted: the registry cannot narrow
    /// per request, and the platform narrows by the account the credential
    /// belongs to (bound to the repositories out of band).
    Account,
}

impl RegistryScope {
    /// `repository` or `registry`.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryScope::Repository => "repository",
            RegistryScope::Registry => "registry",
            RegistryScope::Account => "account",
        }
    }
}

/// What one part of a grant is limited to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrantPart {
    /// `project`, `registry` or `keys`.
    pub part: String,
    /// `object`, `repository`, `registry`, `none`, or a platform word.
    pub scope: String,
    /// What it allows, one line, no secrets.
    pub detail: String,
    /// When it stops working, when known.
    #[serde(serialize_with = "unix_opt")]
    pub expires_at: Option<SystemTime>,
}

/// A build-job grant: the job's entries, when they stop working, and what
/// each part is limited to.
#[derive(Clone, Serialize)]
pub struct Grant {
    /// The job's environment-style entries, secrets marked.
    pub entries: Vec<CredentialEntry>,
    /// When the grant stops working (its earliest part).
    #[serde(serialize_with = "unix")]
    pub expires_at: SystemTime,
    /// How far the registry credential reaches; `None` without one.
    pub registry_scope: Option<RegistryScope>,
    /// What each part is limited to.
    pub parts: Vec<GrantPart>,
}

credhost_plugin_api::debug_fields!(Grant { entries, expires_at, registry_scope, parts });

impl Grant {
    /// The value of entry `key`.
    pub fn get(&self, key: &str) -> Option<&Secret> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    /// Turns a plugin's answer into the job's entries, refusing a registry
    /// credential wider than asked unless that was accepted.
    pub(crate) fn from_api(req: &GrantRequest, g: &api::Grant, instance: &str) -> Result<Self> {
        let parts: Vec<GrantPart> = g
            .parts
            .iter()
            .map(|p| GrantPart {
                part: p.part.to_string(),
                scope: p.scope.to_string(),
                detail: p.detail.to_string(),
                expires_at: p.expires_at.into_option().map(from_unix),
            })
            .collect();
        let now = unix_seconds(SystemTime::now());
        let asked_end = now.saturating_add(i64::try_from(req.ttl.as_secs()).unwrap_or(i64::MAX));
        let end = std::iter::once(g.expires_at)
            .chain(g.parts.iter().filter_map(|p| p.expires_at.into_option()))
            .chain(g.registry.as_ref().into_option().and_then(|a| a.expires_at.into_option()))
            .filter(|t| *t > 0)
            .min()
            .unwrap_or(asked_end)
            .min(asked_end);
        if end <= now {
            return Err(Error::Internal(format!(
                "instance `{instance}` answered with a grant that has already expired"
            )));
        }
        let wants_registry = req.repository.is_some() || !req.pull.is_empty();
        let mut entries = Vec::new();
        if let Some(url) = g.project_url.as_ref().into_option() {
            entries.push(CredentialEntry::secret("PROJECT_URL", Secret::new(url.expose())));
        }
        let mut registry_scope = None;
        match g.registry.as_ref().into_option() {
            Some(auth) => {
                let auth = RegistryAuth::from_api(auth);
                let said = parts.iter().find(|p| p.part == "registry").map(|p| p.scope.as_str());
                let scope = match said {
                    Some("repository") => RegistryScope::Repository,
                    Some("account") => RegistryScope::Account,
                    _ => RegistryScope::Registry,
                };
                if wants_registry && scope == RegistryScope::Registry && !req.allow_unscoped_registry {
                    return Err(Error::InvalidInput(format!(
                        "instance `{instance}` can only hand a registry-wide credential for {}, not one limited to the repositories asked for; pass --allow-unscoped-registry (Python: allow_unscoped_registry=True) to accept it",
                        auth.server
                    )));
                }
                registry_scope = Some(scope);
                entries.push(CredentialEntry::plain("REGISTRY", auth.server.as_str()));
                if let Some(repo) = &req.repository {
                    entries.push(CredentialEntry::plain("REGISTRY_REPOSITORY", repo.as_str()));
                }
                entries.push(CredentialEntry::secret("REGISTRY_TOKEN", auth.registry_token()));
                entries.push(CredentialEntry::secret("DOCKER_CONFIG_JSON", docker_config(&auth)));
                entries.push(CredentialEntry::plain("CREDHOST_GRANT_REGISTRY_SCOPE", scope.as_str()));
            }
            // An open registry: nothing to hand out, which the plugin says.
            None if wants_registry && parts.iter().any(|p| p.part == "registry" && p.scope == "none") => {
                if let Some(repo) = &req.repository {
                    entries.push(CredentialEntry::plain("REGISTRY_REPOSITORY", repo.as_str()));
                }
            }
            None if wants_registry => {
                return Err(Error::InvalidInput(format!(
                    "instance `{instance}` has no registry credential to grant for the repositories asked for"
                )))
            }
            None => {}
        }
        let taken: Vec<String> = entries.iter().map(|e| e.key.clone()).collect();
        for e in g.entries.iter() {
            if taken.iter().any(|k| k == e.key.as_str()) || e.key.as_str() == "CREDHOST_GRANT_EXPIRES_AT" {
                continue;
            }
            entries.push(CredentialEntry::from_api(e));
        }
        entries.push(CredentialEntry::plain("CREDHOST_GRANT_EXPIRES_AT", rfc3339(end)));
        Ok(Self { entries, expires_at: from_unix(end), registry_scope, parts })
    }
}

/// A docker `config.json` for one registry: `auth` (base64 `user:secret`),
/// or `registrytoken` for a registry bearer token.
fn docker_config(auth: &RegistryAuth) -> Secret {
    let entry = match auth.kind {
        AuthKind::Basic => serde_json::json!({ "auth": auth.registry_token().expose() }),
        AuthKind::Bearer => serde_json::json!({ "registrytoken": auth.secret.expose() }),
    };
    let mut doc = serde_json::json!({ "auths": { auth.server.as_str(): entry } });
    let text = Secret::new(doc.to_string());
    zero_json(&mut doc);
    text
}

/// Overwrites the strings of a JSON value that held secrets.
fn zero_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => zeroize::Zeroize::zeroize(s),
        serde_json::Value::Object(m) => m.values_mut().for_each(zero_json),
        serde_json::Value::Array(a) => a.iter_mut().for_each(zero_json),
        _ => {}
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-12-05T01:02:03Z`).
pub fn rfc3339(unix: i64) -> String {
    api::rules::format_rfc3339(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_before_anything_is_issued() {
        let ok = GrantRequest { repository: Some("team/app".into()), ..GrantRequest::new("projects", "app.zip") };
        ok.validate().unwrap();
        assert_eq!(ok.session_name(), "credhost-app");
        for bad in [
            GrantRequest { ttl: Duration::from_secs(899), ..ok.clone() },
            GrantRequest { ttl: Duration::from_secs(43_201), ..ok.clone() },
            GrantRequest { repository: Some("Team/App".into()), ..ok.clone() },
            GrantRequest { pull: vec!["a//b".into()], ..ok.clone() },
            GrantRequest { session_name: Some("has space".into()), ..ok.clone() },
            GrantRequest { name: "../x".into(), ..ok.clone() },
        ] {
            assert_eq!(bad.validate().unwrap_err().kind(), crate::ErrorKind::InvalidInput, "{bad:?}");
        }
        let long = GrantRequest::new("projects", "n".repeat(200));
        assert_eq!(long.session_name().len(), 64);
    }

    fn answer(scope: &str, kind: api::AuthKind) -> api::Grant {
        let in_an_hour = unix_seconds(SystemTime::now()) + 3600;
        api::Grant {
            project_url: abi_stable::std_types::ROption::RSome(api::Secret::new("https://s/p?sig=1")),
            registry: abi_stable::std_types::ROption::RSome(
                api::RegistryAuth::new("reg:5000", "job", api::Secret::new("tok"), Some(in_an_hour - 60))
                    .with_kind(kind),
            ),
            entries: vec![api::CredentialEntry::plain("REGISTRY", "spoofed")].into(),
            parts: vec![api::GrantPart::new("registry", scope, "push team/app", None)].into(),
            expires_at: in_an_hour,
            extra: api::Extra::new(),
        }
    }

    #[test]
    fn entries_of_a_narrowed_grant() {
        let req = GrantRequest { repository: Some("team/app".into()), ..GrantRequest::new("projects", "app.zip") };
        let g = Grant::from_api(&req, &answer("repository", api::AuthKind::Bearer), "i").unwrap();
        let keys: Vec<&str> = g.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "PROJECT_URL",
                "REGISTRY",
                "REGISTRY_REPOSITORY",
                "REGISTRY_TOKEN",
                "DOCKER_CONFIG_JSON",
                "CREDHOST_GRANT_REGISTRY_SCOPE",
                "CREDHOST_GRANT_EXPIRES_AT"
            ]
        );
        assert_eq!(g.get("REGISTRY").unwrap().expose(), "reg:5000");
        assert_eq!(g.get("DOCKER_CONFIG_JSON").unwrap().expose(), r#"{"auths":{"reg:5000":{"registrytoken":"tok"}}}"#);
        assert_eq!(g.registry_scope, Some(RegistryScope::Repository));
        // The registry credential ends first: so does the grant.
        let end = unix_seconds(g.expires_at);
        assert_eq!(g.get("CREDHOST_GRANT_EXPIRES_AT").unwrap().expose(), rfc3339(end));
        assert!(end < unix_seconds(SystemTime::now()) + 3600 - 30);
        assert!(!format!("{g:?}").contains("tok\""));
    }

    #[test]
    fn a_wider_registry_credential_is_refused_unless_accepted() {
        let req = GrantRequest { repository: Some("app".into()), ..GrantRequest::new("projects", "app.zip") };
        let err = Grant::from_api(&req, &answer("registry", api::AuthKind::Basic), "i").unwrap_err();
        assert!(err.to_string().contains("--allow-unscoped-registry"), "{err}");
        let req = GrantRequest { allow_unscoped_registry: true, ..req };
        let g = Grant::from_api(&req, &answer("registry", api::AuthKind::Basic), "i").unwrap();
        assert_eq!(g.get("CREDHOST_GRANT_REGISTRY_SCOPE").unwrap().expose(), "registry");
        assert_eq!(g.get("DOCKER_CONFIG_JSON").unwrap().expose(), r#"{"auths":{"reg:5000":{"auth":"am9iOnRvaw=="}}}"#);
    }
}
