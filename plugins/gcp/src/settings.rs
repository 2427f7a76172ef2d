//! The plugin's settings (the `[plugins.gcp.settings]` table), validated.

use credhost_plugin_sdk::Error as PluginError;
use serde::Deserialize;

/// The settings as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The Google Cloud project build jobs work in.
    pub project_id: String,
    /// The region build jobs run in, e.g. `us-central1`.
    pub location: String,
    /// The registry host build jobs push to, e.g. `us-central1-docker.pkg.dev`.
    pub registry: String,
    /// The projects bucket.
    pub bucket: String,
    /// Pins one credential source; absent: the default order.
    pub credentials: Option<CredentialsSetting>,
    /// Base URL of the storage JSON API (an emulator); absent: Google's.
    pub storage_endpoint: Option<String>,
    /// Base URL of the IAM Credentials API, which signs URLs for accounts
    /// whose key the plugin does not hold; absent: Google's.
    pub iam_endpoint: Option<String>,
    /// Base URL of the Security Token Service (downscoped tokens for
    /// grants with keys); absent: Google's.
    pub sts_endpoint: Option<String>,
    /// The service account build-job grants hand tokens of (`credhost
    /// grant`); bind it only what a job may do.
    pub job_service_account: Option<String>,
    /// The longest token IAM Credentials issues here, in seconds (3600
    /// unless an organization policy allows up to 43200).
    pub job_token_max_lifetime: Option<u64>,
    /// The workload identity pool provider trusting the cluster's
    /// service-account tokens (kubelet service-account mode):
    /// `projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`,
    /// with or without `//iam.googleapis.com/`.
    pub kubelet_audience: Option<String>,
    /// The Google service account a workload's pulls act as when its
    /// Kubernetes service account has no `credhost.io/service-account`
    /// annotation.
    pub kubelet_service_account: Option<String>,
}

/// `credentials = ...`: one pinned source.
#[derive(Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsSetting {
    /// `{ service_account_file = "PATH" }`: a service-account key file
    /// (relative to the configuration file).
    ServiceAccountFile(String),
    /// `{ service_account_json_env = "VAR" }`: a variable holding the key JSON.
    ServiceAccountJsonEnv(String),
    /// `"adc"`: Application Default Credentials files only.
    Adc,
    /// `"metadata"`: the metadata server only.
    Metadata,
}

/// Google's storage endpoint.
pub const DEFAULT_STORAGE_ENDPOINT: &str = "https://storage.googleapis.com";
/// Google's Security Token Service endpoint.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.googleapis.com";
/// Google's IAM Credentials endpoint.
pub const DEFAULT_IAM_ENDPOINT: &str = "https://iamcredentials.googleapis.com";

impl Settings {
    /// Checks each value, naming the setting at fault.
    pub fn validate(&self) -> Result<(), PluginError> {
        non_empty("project_id", &self.project_id)?;
        non_empty("location", &self.location)?;
        check_host("registry", &self.registry)?;
        check_bucket(&self.bucket)?;
        if let Some(ep) = &self.storage_endpoint {
            storage_url(ep)?;
        }
        self.iam_base()?;
        self.sts_base()?;
        if let Some(a) = &self.job_service_account {
            if !a.contains('@') || a.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
                return Err(PluginError::config(
                    "job_service_account",
                    format!("`job_service_account` = {a:?} is not a service account email"),
                ));
            }
        }
        if let Some(a) = &self.kubelet_audience {
            if crate::workload::pool_audience(a).is_none() {
                return Err(PluginError::config(
                    "kubelet_audience",
                    format!("`kubelet_audience` = {a:?} is not a workload identity pool provider (projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)"),
                ));
            }
        }
        if let Some(a) = &self.kubelet_service_account {
            if !crate::workload::is_service_account(a) {
                return Err(PluginError::config(
                    "kubelet_service_account",
                    format!("`kubelet_service_account` = {a:?} is not a service account email"),
                ));
            }
        }
        if let Some(l) = self.job_token_max_lifetime {
            if !(900..=43_200).contains(&l) {
                return Err(PluginError::config(
                    "job_token_max_lifetime",
                    "`job_token_max_lifetime` is seconds from 900 to 43200",
                ));
            }
        }
        match &self.credentials {
            Some(CredentialsSetting::ServiceAccountFile(p)) => non_empty("credentials.service_account_file", p),
            Some(CredentialsSetting::ServiceAccountJsonEnv(v)) => non_empty("credentials.service_account_json_env", v),
            _ => Ok(()),
        }
    }

    /// The IAM Credentials base URL.
    pub fn iam_base(&self) -> Result<reqwest::Url, PluginError> {
        let endpoint = self.iam_endpoint.as_deref().unwrap_or(DEFAULT_IAM_ENDPOINT);
        credhost_plugin_sdk::check_http_url(endpoint)
            .map_err(|why| PluginError::config("iam_endpoint", format!("`iam_endpoint`: {why}")))?;
        reqwest::Url::parse(endpoint)
            .map_err(|e| PluginError::config("iam_endpoint", format!("`iam_endpoint` is not a URL: {e}")))
    }

    /// The Security Token Service base URL.
    pub fn sts_base(&self) -> Result<reqwest::Url, PluginError> {
        let endpoint = self.sts_endpoint.as_deref().unwrap_or(DEFAULT_STS_ENDPOINT);
        credhost_plugin_sdk::check_http_url(endpoint)
            .map_err(|why| PluginError::config("sts_endpoint", format!("`sts_endpoint`: {why}")))?;
        reqwest::Url::parse(endpoint)
            .map_err(|e| PluginError::config("sts_endpoint", format!("`sts_endpoint` is not a URL: {e}")))
    }

    /// The storage base URL, without a trailing slash.
    pub fn storage_base(&self) -> Result<reqwest::Url, PluginError> {
        storage_url(self.storage_endpoint.as_deref().unwrap_or(DEFAULT_STORAGE_ENDPOINT))
    }
}

fn non_empty(key: &str, value: &str) -> Result<(), PluginError> {
    if value.trim().is_empty() {
        Err(PluginError::config(key, format!("`{key}` is empty")))
    } else if value.chars().any(char::is_control) {
        Err(PluginError::config(key, format!("`{key}` contains a control character")))
    } else {
        Ok(())
    }
}

/// A registry host: `host[:port]`, no scheme, path or spaces.
fn check_host(key: &str, host: &str) -> Result<(), PluginError> {
    non_empty(key, host)?;
    let bad = host.contains("://")
        || host.contains(['/', '?', '#', '@'])
        || host.chars().any(char::is_whitespace)
        || host.starts_with(':')
        || host.ends_with(':');
    if bad {
        return Err(PluginError::config(
            key,
            format!("`{key}` = {host:?} is not a host name such as us-central1-docker.pkg.dev (no scheme or path)"),
        ));
    }
    Ok(())
}

/// GCS bucket names: 3-63 characters of lower-case letters, digits, `-`,
/// `_` and `.`, starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), PluginError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(PluginError::config(
            "bucket",
            format!("`bucket` = {bucket:?} is not a GCS bucket name (3-63 lower-case letters, digits, `-`, `_`, `.`)"),
        ))
    }
}

fn storage_url(endpoint: &str) -> Result<reqwest::Url, PluginError> {
    let key = "storage_endpoint";
    credhost_plugin_sdk::check_http_url(endpoint).map_err(|why| PluginError::config(key, format!("`{key}`: {why}")))?;
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| PluginError::config(key, format!("`{key}` = {endpoint:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(PluginError::config(key, format!("`{key}` = {endpoint:?} is not an http(s) URL with a host")));
    }
    if url.query().is_some() || url.fragment().is_some() || !matches!(url.path(), "" | "/") {
        return Err(PluginError::config(
            key,
            format!("`{key}` = {endpoint:?} must be a base URL without path or query"),
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<Settings, PluginError> {
        let s: Settings = credhost_plugin_sdk::parse_settings(v)?;
        s.validate()?;
        Ok(s)
    }

    fn base() -> serde_json::Value {
        serde_json::json!({"project_id": "p", "location": "us-central1", "registry": "us-central1-docker.pkg.dev", "bucket": "projects"})
    }

    #[test]
    fn credentials_forms() {
        let mut v = base();
        assert_eq!(parse(v.clone()).unwrap().credentials, None);
        v["credentials"] = "adc".into();
        assert_eq!(parse(v.clone()).unwrap().credentials, Some(CredentialsSetting::Adc));
        v["credentials"] = "metadata".into();
        assert_eq!(parse(v.clone()).unwrap().credentials, Some(CredentialsSetting::Metadata));
        v["credentials"] = serde_json::json!({"service_account_file": "k.json"});
        assert_eq!(
            parse(v.clone()).unwrap().credentials,
            Some(CredentialsSetting::ServiceAccountFile("k.json".into()))
        );
        v["credentials"] = serde_json::json!({"service_account_json_env": "KEY"});
        assert_eq!(
            parse(v.clone()).unwrap().credentials,
            Some(CredentialsSetting::ServiceAccountJsonEnv("KEY".into()))
        );
        v["credentials"] = "gcloud".into();
        let e = parse(v.clone()).err().unwrap();
        assert_eq!(e.config_key(), Some("credentials"));
        assert!(e.message.contains("unknown variant `gcloud`"), "{}", e.message);
    }

    #[test]
    fn unknown_and_bad_keys_name_the_key() {
        let mut v = base();
        v["colour"] = "red".into();
        let e = parse(v).err().unwrap();
        assert!(e.message.contains("unknown field `colour`"), "{}", e.message);

        let mut v = base();
        v["storage_endpoint"] = "ftp://x".into();
        assert_eq!(parse(v).err().unwrap().config_key(), Some("storage_endpoint"));
        let mut v = base();
        v["storage_endpoint"] = "http://127.0.0.1:1/storage/v1".into();
        assert_eq!(parse(v).err().unwrap().config_key(), Some("storage_endpoint"));
        let mut v = base();
        v["registry"] = "https://gcr.io".into();
        assert_eq!(parse(v).err().unwrap().config_key(), Some("registry"));
        let mut v = base();
        v["bucket"] = "Projects".into();
        assert_eq!(parse(v).err().unwrap().config_key(), Some("bucket"));
        let mut v = base();
        v["credentials"] = serde_json::json!({"service_account_file": ""});
        assert_eq!(parse(v).err().unwrap().config_key(), Some("credentials.service_account_file"));
        let mut v = base();
        v.as_object_mut().unwrap().remove("location");
        assert!(parse(v).err().unwrap().message.contains("missing field `location`"));
    }

    #[test]
    fn storage_base_defaults_to_google() {
        let s = parse(base()).unwrap();
        assert_eq!(s.storage_base().unwrap().as_str(), "https://storage.googleapis.com/");
    }
}
