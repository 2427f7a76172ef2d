//! The plugin's settings (the `[plugins.local.settings]` table).

use serde::Deserialize;

/// All settings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct Settings {
    /// The container registry build jobs push to.
    pub registry: RegistrySettings,
    /// Where project archives are stored.
    pub storage: StorageSettings,
}

/// How to reach and authenticate to the registry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RegistrySettings {
    /// Base URL, e.g. `http://127.0.0.1:5000`.
    pub url: String,
    /// `none`, `basic` (htpasswd) or `token` (Distribution token auth).
    #[serde(default)]
    pub auth: AuthMode,
    /// Environment variable holding the user name (`basic`, `token`).
    pub username_env: Option<String>,
    /// Environment variable holding the password (`basic`, `token`).
    pub password_env: Option<String>,
    /// Default token scope for `token` auth, e.g. `repository:demo:pull,push`.
    pub scope: Option<String>,
    /// `token`: hosts besides the registry's own whose token realm may
    /// receive the password (the registry's challenge names the realm).
    #[serde(default)]
    pub token_realms: Vec<String>,
}

/// Registry authentication modes.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// An open registry: no credentials.
    #[default]
    None,
    /// HTTP basic authentication (htpasswd).
    Basic,
    /// Bearer tokens from the realm named in the registry's challenge.
    Token,
}

/// The project store.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields, expecting = "a table with a `kind`")]
pub enum StorageSettings {
    /// A directory: each bucket is a subdirectory of `root`.
    Fs {
        /// The root directory (relative to the configuration file).
        root: String,
        /// The projects bucket.
        bucket: String,
    },
    /// Any S3-compatible endpoint (MinIO, SeaweedFS, ...), path-style addressing.
    S3 {
        /// Endpoint URL, e.g. `http://127.0.0.1:9000`.
        endpoint: String,
        /// Signing region.
        #[serde(default = "default_region")]
        region: String,
        /// The projects bucket.
        bucket: String,
        /// Environment variable holding the access key id.
        access_key_id_env: String,
        /// Environment variable holding the secret access key.
        secret_access_key_env: String,
        /// Multipart part size in MiB (default 16, at least 5).
        part_size_mib: Option<u64>,
        /// Parts in flight (default 4).
        concurrency: Option<usize>,
    },
}

fn default_region() -> String {
    "us-east-1".to_owned()
}
