//! Kubernetes workloads' own pulls (service-account mode of the kubelet's
//! credential provider): the pod's service-account token exchanged at STS
//! through the instance's workload identity pool provider
//! (`kubelet_audience`) for a federated token, then an access token of the
//! Google service account the Kubernetes one names
//! (`credhost.io/service-account`) from the IAM Credentials API, called
//! with the federated token: the node's credentials are not involved.

use std::time::Duration;

use credhost_plugin_sdk::{
    api::annotations, expires_in, Error as PluginError, ErrorKind, RegistryAuth, WorkloadRequest,
};

use crate::{
    auth::token::{AccessToken, SCOPE},
    error::send_error,
    grant::{generated_token, json_answer, token_field, ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE},
    provider::GcpProvider,
    registry,
    store::presign::encode,
};

/// The token type of a Kubernetes service-account token at STS.
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// How long a workload's access token lives (IAM Credentials' default).
const LIFETIME: Duration = Duration::from_secs(3600);

/// The prefix of a workload identity pool provider's full resource name.
const IAM_PREFIX: &str = "//iam.googleapis.com/";

/// The STS audience of a pool provider: its full resource name
/// (`//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`),
/// given with or without the `//iam.googleapis.com/` prefix.
pub fn pool_audience(setting: &str) -> Option<String> {
    let name = setting.trim();
    let name =
        name.strip_prefix(IAM_PREFIX).or_else(|| name.strip_prefix("https://iam.googleapis.com/")).unwrap_or(name);
    let parts: Vec<&str> = name.split('/').collect();
    let ok = matches!(
        parts.as_slice(),
        ["projects", number, "locations", location, "workloadIdentityPools", pool, "providers", provider]
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
                && [location, pool, provider].iter().all(|s| !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    );
    ok.then(|| format!("{IAM_PREFIX}{name}"))
}

/// Whether `email` looks like a service account's address.
pub fn is_service_account(email: &str) -> bool {
    email.split_once('@').is_some_and(|(name, domain)| {
        !name.is_empty()
            && domain.contains('.')
            && !email.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '%'))
    })
}

impl GcpProvider {
    pub(crate) async fn workload_auth(&self, req: WorkloadRequest) -> Result<RegistryAuth, PluginError> {
        let server = registry::server_for(&self.registry, req.registry.registry.as_deref())?;
        let audience = self.kubelet_audience.as_deref().ok_or_else(|| {
            PluginError::config(
                "kubelet_audience",
                "workloads' pulls need `kubelet_audience`: the workload identity pool provider that trusts the cluster's service-account tokens (the node's credentials are never used in their place)",
            )
        })?;
        let account = match req.annotation(annotations::SERVICE_ACCOUNT) {
            Some(a) => a.to_owned(),
            None => self.kubelet_service_account.clone().ok_or_else(|| {
                PluginError::config(
                    "kubelet_service_account",
                    format!(
                        "service account {}/{} has no annotation {} and the instance sets no `kubelet_service_account`: no Google service account to pull as",
                        req.namespace,
                        req.service_account,
                        annotations::SERVICE_ACCOUNT
                    ),
                )
            })?,
        };
        if !is_service_account(&account) {
            return Err(PluginError::new(
                ErrorKind::INVALID_INPUT,
                format!("{account:?} (annotation {}) is not a service account email", annotations::SERVICE_ACCOUNT),
            ));
        }
        let federated = self.federate(audience, &req).await?;
        let token = self.impersonate(&federated, &account).await?;
        tracing::info!("Artifact Registry token for workload {}/{} as {account}", req.namespace, req.service_account);
        Ok(registry::auth(server, token))
    }

    /// The workload's token exchanged at STS through the pool provider.
    async fn federate(&self, audience: &str, req: &WorkloadRequest) -> Result<AccessToken, PluginError> {
        let mut url = self.sts.clone();
        url.set_path("/v1/token");
        let what = "STS token exchange (workload identity federation)";
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("audience", audience),
            ("scope", SCOPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token_type", JWT_TOKEN_TYPE),
            ("subject_token", req.token.expose()),
        ];
        let resp = self.gcs.http().post(url).form(&form).send().await.map_err(|e| send_error(what, &e))?;
        let v = json_answer(resp, what).await?;
        let secret = token_field(&v, "access_token", what)?;
        let lifetime = v["expires_in"].as_u64().unwrap_or(LIFETIME.as_secs());
        Ok(AccessToken { secret, expires_at: expires_in(Duration::from_secs(lifetime)), lifetime })
    }

    /// An access token of `account`, asked for with the federated token.
    async fn impersonate(&self, federated: &AccessToken, account: &str) -> Result<AccessToken, PluginError> {
        let mut url = self.iam.clone();
        url.set_path(&format!("/v1/projects/-/serviceAccounts/{}:generateAccessToken", encode(account, false)));
        let what = format!("IAM generateAccessToken for {account} as the workload");
        let body = serde_json::json!({ "scope": [SCOPE], "lifetime": format!("{}s", LIFETIME.as_secs()) });
        let resp = self
            .gcs
            .http()
            .post(url)
            .bearer_auth(federated.secret.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| send_error(&what, &e))?;
        generated_token(resp, &what, LIFETIME).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_providers_and_accounts() {
        let full = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/k8s/providers/cluster";
        assert_eq!(pool_audience(full).as_deref(), Some(full));
        assert_eq!(pool_audience(&full[IAM_PREFIX.len()..]).as_deref(), Some(full));
        assert_eq!(pool_audience("projects/abc/locations/global/workloadIdentityPools/k8s/providers/cluster"), None);
        assert_eq!(pool_audience("projects/123/locations/global/workloadIdentityPools/k8s"), None);
        assert!(is_service_account("puller@proj.iam.gserviceaccount.com"));
        assert!(!is_service_account("puller"));
        assert!(!is_service_account("a/b@proj.iam.gserviceaccount.com"));
    }
}
