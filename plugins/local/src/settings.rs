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
#[serde(try_from = "StorageTable")]
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
        /// The role build-job grants assume at the store's STS (which
        /// answers on `sts_endpoint`), cut down by a session policy to
        /// reading one object; without it a grant signs its URL with the
        /// store's keys and cannot hand out keys.
        grant_role_arn: Option<String>,
        /// The STS endpoint for grants (default: `endpoint`, where
        /// SeaweedFS and MinIO answer STS).
        sts_endpoint: Option<String>,
    },
}

/// The `storage` table as written. One flat table rather than an
/// internally tagged enum, so that an error about a key names the key
/// (`storage.part_size_mib`), not just the table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with a `kind`")]
struct StorageTable {
    kind: StorageKind,
    root: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    access_key_id_env: Option<String>,
    secret_access_key_env: Option<String>,
    part_size_mib: Option<u64>,
    concurrency: Option<usize>,
    grant_role_arn: Option<String>,
    sts_endpoint: Option<String>,
}

#[derive(Clone, Copy)]
enum StorageKind {
    Fs,
    S3,
}

impl<'de> Deserialize<'de> for StorageKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "fs" => Ok(StorageKind::Fs),
            "s3" => Ok(StorageKind::S3),
            other => Err(serde::de::Error::unknown_variant(other, &["fs", "s3"])),
        }
    }
}

impl TryFrom<StorageTable> for StorageSettings {
    type Error = String;

    fn try_from(t: StorageTable) -> Result<Self, String> {
        fn required(value: Option<String>, key: &str) -> Result<String, String> {
            value.ok_or_else(|| format!("missing field `{key}`"))
        }
        fn unused<T>(value: &Option<T>, key: &str, kind: &str) -> Result<(), String> {
            match value {
                Some(_) => Err(format!("`{key}` is not a setting of kind = \"{kind}\"")),
                None => Ok(()),
            }
        }
        match t.kind {
            StorageKind::Fs => {
                unused(&t.endpoint, "endpoint", "fs")?;
                unused(&t.region, "region", "fs")?;
                unused(&t.access_key_id_env, "access_key_id_env", "fs")?;
                unused(&t.secret_access_key_env, "secret_access_key_env", "fs")?;
                unused(&t.part_size_mib, "part_size_mib", "fs")?;
                unused(&t.concurrency, "concurrency", "fs")?;
                unused(&t.grant_role_arn, "grant_role_arn", "fs")?;
                unused(&t.sts_endpoint, "sts_endpoint", "fs")?;
                Ok(StorageSettings::Fs { root: required(t.root, "root")?, bucket: required(t.bucket, "bucket")? })
            }
            StorageKind::S3 => {
                unused(&t.root, "root", "s3")?;
                Ok(StorageSettings::S3 {
                    endpoint: required(t.endpoint, "endpoint")?,
                    region: t.region.unwrap_or_else(default_region),
                    bucket: required(t.bucket, "bucket")?,
                    access_key_id_env: required(t.access_key_id_env, "access_key_id_env")?,
                    secret_access_key_env: required(t.secret_access_key_env, "secret_access_key_env")?,
                    part_size_mib: t.part_size_mib,
                    concurrency: t.concurrency,
                    grant_role_arn: t.grant_role_arn,
                    sts_endpoint: t.sts_endpoint,
                })
            }
        }
    }
}

fn default_region() -> String {
    "us-east-1".to_owned()
}
