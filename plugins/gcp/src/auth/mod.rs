//! Where credentials come from: a pinned source, or the default order
//! (a service-account key held inline in `GOOGLE_APPLICATION_CREDENTIALS`,
//! as the original service did; Application Default Credentials files; the
//! metadata server).

use std::{fmt, path::PathBuf};

use credhost_plugin_sdk::{Context, Error as PluginError, ErrorKind, Secret};

use crate::settings::CredentialsSetting;

pub mod key;
pub mod token;

use key::{Credentials, ServiceAccountKey};

/// The variable Google's libraries read credentials from.
pub const GAC: &str = "GOOGLE_APPLICATION_CREDENTIALS";
/// The variable that moves the metadata server (`host[:port]`).
pub const METADATA_HOST_VAR: &str = "GCE_METADATA_HOST";
/// The metadata server's name on Google Cloud.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// A resolved credential source.
// One per provider, built once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Source {
    /// A service-account key or gcloud user credentials.
    File(Credentials),
    /// The metadata server at `host`; `tried` says what the default order
    /// looked at first, for the error when the server does not answer.
    Metadata {
        /// `host[:port]`.
        host: String,
        /// What else was tried, when the metadata server was the fallback.
        tried: Option<String>,
    },
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(c) => f.debug_tuple("File").field(c).finish(),
            Self::Metadata { host, tried } => {
                f.debug_struct("Metadata").field("host", host).field("tried", tried).finish()
            }
        }
    }
}

impl Source {
    /// One line naming the source, for logs and `check`.
    pub fn describe(&self) -> String {
        match self {
            Self::File(Credentials::ServiceAccount(k)) => format!("service account {} ({})", k.client_email, k.origin),
            Self::File(Credentials::AuthorizedUser(u)) => format!("authorized user ({})", u.origin),
            Self::Metadata { host, .. } => format!("metadata server at {host}"),
        }
    }

    /// The credentials JSON to hand a build job, when there is one (the
    /// metadata server's credentials belong to the machine, not to us).
    pub fn json(&self) -> Option<&Secret> {
        match self {
            Self::File(c) => Some(c.json()),
            Self::Metadata { .. } => None,
        }
    }

    /// The service-account key, when that is the source.
    pub fn service_account(&self) -> Option<&ServiceAccountKey> {
        match self {
            Self::File(Credentials::ServiceAccount(k)) => Some(k),
            _ => None,
        }
    }
}

/// Resolves `setting` (or the default order when `None`). Files are read
/// and parsed here, so a bad key fails at start-up; nothing is fetched.
pub async fn resolve(setting: Option<&CredentialsSetting>, ctx: &Context) -> Result<Source, PluginError> {
    match setting {
        Some(CredentialsSetting::ServiceAccountFile(path)) => {
            let key = "credentials.service_account_file";
            let path = ctx.resolve(path);
            let text = read_file(&path).await.map_err(|e| {
                PluginError::config(
                    key,
                    format!("cannot read the service-account key file {} named by `{key}`: {e}", path.display()),
                )
            })?;
            service_account(Credentials::parse(text, &format!("key file {}", path.display()))?)
        }
        Some(CredentialsSetting::ServiceAccountJsonEnv(var)) => {
            let text = credhost_plugin_sdk::secret_from_env("credentials.service_account_json_env", var)?;
            service_account(Credentials::parse(text, &format!("environment variable {var}"))?)
        }
        Some(CredentialsSetting::Adc) => match adc().await? {
            Ok(c) => Ok(Source::File(c)),
            Err(tried) => Err(PluginError::new(
                ErrorKind::UNAUTHENTICATED,
                format!("no Application Default Credentials: {tried}"),
            )),
        },
        Some(CredentialsSetting::Metadata) => Ok(Source::Metadata { host: metadata_host(), tried: None }),
        None => match adc().await? {
            Ok(c) => Ok(Source::File(c)),
            Err(tried) => Ok(Source::Metadata { host: metadata_host(), tried: Some(tried) }),
        },
    }
}

fn service_account(c: Credentials) -> Result<Source, PluginError> {
    match c {
        Credentials::ServiceAccount(_) => Ok(Source::File(c)),
        Credentials::AuthorizedUser(u) => Err(PluginError::new(
            ErrorKind::UNAUTHENTICATED,
            format!(
                "{} holds authorized_user credentials, not a service-account key (use credentials = \"adc\" for those)",
                u.origin
            ),
        )),
    }
}

fn metadata_host() -> String {
    match std::env::var(METADATA_HOST_VAR) {
        Ok(h) if !h.trim().is_empty() => h.trim().to_owned(),
        _ => DEFAULT_METADATA_HOST.to_owned(),
    }
}

/// `GOOGLE_APPLICATION_CREDENTIALS` (inline JSON or a file), then gcloud's
/// well-known file. `Ok(Err(tried))` when there is none: `tried` lists what
/// was looked at. A file that exists but cannot be read or parsed is an
/// error, not a reason to move on: silently using other credentials would
/// hide the mistake.
async fn adc() -> Result<Result<Credentials, String>, PluginError> {
    // A path need not be UTF-8; inline JSON is.
    let value = std::env::var_os(GAC).unwrap_or_default();
    if let Some(json) = value.to_str().filter(|v| v.trim_start().starts_with('{')) {
        return Credentials::parse(Secret::new(json), &format!("environment variable {GAC}")).map(Ok);
    }
    if !value.to_string_lossy().trim().is_empty() {
        let path = std::path::PathBuf::from(&value);
        // The value is shown only when it looks like a path: a key pasted
        // in with a byte-order mark or a stray prefix must not be echoed.
        let text = value.to_string_lossy();
        let looks_like_path = text.len() < 4096 && !text.contains(['{', '\n', '"']);
        let shown = if looks_like_path { path.display().to_string() } else { "the file".to_owned() };
        let text = read_file(&path).await.map_err(|e| {
            PluginError::new(ErrorKind::UNAUTHENTICATED, format!("cannot read {shown} named by {GAC}: {e}"))
        })?;
        return Credentials::parse(text, &format!("{GAC} file {shown}")).map(Ok);
    }
    let Some(path) = gcloud_adc_file() else {
        return Ok(Err(format!("{GAC} is not set and there is no home directory to look for gcloud's credentials in")));
    };
    match read_file(&path).await {
        Ok(text) => Credentials::parse(text, &format!("gcloud credentials file {}", path.display())).map(Ok),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Err(format!("{GAC} is not set and there is no gcloud credentials file at {}", path.display())))
        }
        Err(e) => Err(PluginError::new(ErrorKind::UNAUTHENTICATED, format!("cannot read {}: {e}", path.display()))),
    }
}

/// Where `gcloud auth application-default login` writes its credentials.
fn gcloud_adc_file() -> Option<PathBuf> {
    const FILE: &str = "application_default_credentials.json";
    if let Some(dir) = std::env::var_os("CLOUDSDK_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join(FILE));
    }
    if cfg!(windows) {
        return std::env::var_os("APPDATA").map(|d| PathBuf::from(d).join("gcloud").join(FILE));
    }
    std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|d| PathBuf::from(d).join(".config/gcloud").join(FILE))
}

async fn read_file(path: &std::path::Path) -> std::io::Result<Secret> {
    tokio::fs::read_to_string(path).await.map(Secret::new)
}
