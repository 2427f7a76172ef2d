//! Build-job grants on Google Cloud: a V4 signed URL reading the one
//! object; for the registry an access token of the job's own service
//! account (`job_service_account`, from the IAM Credentials API, living the
//! grant's length); with `with_keys`, a token downscoped by a Credential
//! Access Boundary (the STS token exchange) to reading that object.
//!
//! Artifact Registry has no per-request narrowing: what the registry token
//! reaches is what the job account is granted, so bind it the writer role
//! on the one repository (and the reader role on pulled ones), nothing
//! wider. The grant says so in its registry part (scope `account`).

use std::time::Duration;

use credhost_plugin_sdk::{
    expires_in, parse_rfc3339, Entry, Error as PluginError, ErrorKind, Grant, GrantPart, GrantRequest, Method, Secret,
};

use crate::{
    auth::token::{AccessToken, SCOPE},
    error::{read_text, send_error, status_error},
    provider::GcpProvider,
    registry,
    store::presign::{self, encode},
};

/// What IAM Credentials issues without an organization policy allowing more.
pub const DEFAULT_MAX_TOKEN_LIFETIME: u64 = 3600;

/// The STS token exchange's grant and token types.
pub(crate) const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub(crate) const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The Credential Access Boundary allowing only reads of `bucket`/`name`.
pub fn object_boundary(bucket: &str, name: &str) -> Result<serde_json::Value, PluginError> {
    if name.contains(['\'', '\\']) {
        return Err(PluginError::new(
            ErrorKind::INVALID_INPUT,
            format!("the project name {name:?} contains a quote or backslash, which an access boundary condition cannot hold exactly"),
        ));
    }
    Ok(serde_json::json!({
        "accessBoundary": {
            "accessBoundaryRules": [{
                "availablePermissions": ["inRole:roles/storage.objectViewer"],
                "availableResource": format!("//storage.googleapis.com/projects/_/buckets/{bucket}"),
                "availabilityCondition": {
                    "title": "the project object",
                    "expression": format!("resource.name == 'projects/_/buckets/{bucket}/objects/{name}'"),
                },
            }],
        },
    }))
}

impl GcpProvider {
    pub(crate) async fn grant_job(&self, mut req: GrantRequest) -> Result<Grant, PluginError> {
        if req.bucket.is_empty() {
            req.bucket = self.bucket.clone();
        }
        let boundary = if req.with_keys { Some(object_boundary(&req.bucket, &req.name)?) } else { None };
        let needs_account = req.wants_registry() || req.with_keys;
        let account = match (&self.job_service_account, needs_account) {
            (Some(a), _) => Some(a.as_str()),
            (None, false) => None,
            (None, true) => {
                return Err(PluginError::config(
                    "job_service_account",
                    "grants with a registry token or keys need `job_service_account`: the service account whose tokens build jobs get (bind it the Artifact Registry writer role on the job's repository only)",
                ))
            }
        };
        if account.is_some() && req.ttl.as_secs() > self.job_token_max_lifetime {
            return Err(PluginError::new(
                ErrorKind::INVALID_INPUT,
                format!(
                    "IAM Credentials issues access tokens for at most {} s here (`job_token_max_lifetime`; Google's default is 1 hour unless an organization policy allows up to 12): a grant of {} s cannot be made",
                    self.job_token_max_lifetime,
                    req.ttl.as_secs()
                ),
            ));
        }
        let signed =
            presign::presign(&self.gcs, &self.iam, Method::Get, &req.bucket, &req.name, req.ttl, false).await?;
        let mut grant = Grant { expires_at: req.ends_at(), ..Grant::default() };
        grant.parts.push(GrantPart::new(
            "project",
            "object",
            format!("a V4 signed GET of gs://{}/{} only", req.bucket, req.name),
            Some(signed.expires_at),
        ));
        grant.project_url = Some(signed.url);
        let Some(account) = account else { return Ok(grant) };
        let token = self.generate_access_token(account, req.ttl).await?;
        if req.wants_registry() {
            let which = req.registry_scope().unwrap_or_default().replace("repository:", "").replace(' ', ", ");
            grant.parts.push(GrantPart::new(
                "registry",
                "account",
                format!(
                    "an access token of {account}: Artifact Registry cannot narrow it per request, so it reaches what that account is granted (for {which})"
                ),
                Some(token.expires_at),
            ));
            grant.registry = Some(registry::auth(self.registry.clone(), token.clone()));
        }
        if let Some(boundary) = boundary {
            let downscoped = self.downscope(&token, &boundary).await?;
            grant.entries.extend([
                Entry::plain("GOOGLE_APPLICATION_PROJECT_ID", &self.project_id),
                Entry::secret("GOOGLE_OAUTH_ACCESS_TOKEN", downscoped.secret.clone()),
                Entry::secret("CLOUDSDK_AUTH_ACCESS_TOKEN", downscoped.secret.clone()),
                Entry::plain("PROJECTS_BUCKET", &req.bucket),
            ]);
            grant.parts.push(GrantPart::new(
                "keys",
                "object",
                format!(
                    "an access token of {account} downscoped to roles/storage.objectViewer on gs://{}/{} only",
                    req.bucket, req.name
                ),
                Some(downscoped.expires_at),
            ));
        }
        Ok(grant)
    }

    /// An access token of `account`, living `lifetime`, from the IAM
    /// Credentials API with the plugin's own credentials.
    async fn generate_access_token(&self, account: &str, lifetime: Duration) -> Result<AccessToken, PluginError> {
        let mut url = self.iam.clone();
        url.set_path(&format!("/v1/projects/-/serviceAccounts/{}:generateAccessToken", encode(account, false)));
        let what = format!("IAM generateAccessToken for {account}");
        let body = serde_json::json!({ "scope": [SCOPE], "lifetime": format!("{}s", lifetime.as_secs()) });
        let resp = self.gcs.send(&what, |http| http.post(url.clone()).json(&body)).await?;
        generated_token(resp, &what, lifetime).await
    }

    /// `token` exchanged at STS for one limited by `boundary`.
    async fn downscope(&self, token: &AccessToken, boundary: &serde_json::Value) -> Result<AccessToken, PluginError> {
        let mut url = self.sts.clone();
        url.set_path("/v1/token");
        let what = "STS token exchange (access boundary)";
        let options = boundary.to_string();
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", token.secret.expose()),
            ("options", options.as_str()),
        ];
        let resp = self.gcs.http().post(url).form(&form).send().await.map_err(|e| send_error(what, &e))?;
        let v = json_answer(resp, what).await?;
        let secret = token_field(&v, "access_token", what)?;
        // Without `expires_in` the downscoped token lives as its subject.
        let expires_at = match v["expires_in"].as_u64() {
            Some(s) => expires_in(Duration::from_secs(s)).min(token.expires_at),
            None => token.expires_at,
        };
        Ok(AccessToken { secret, expires_at, lifetime: token.lifetime })
    }
}

/// The token of a `generateAccessToken` answer.
pub(crate) async fn generated_token(
    resp: reqwest::Response,
    what: &str,
    lifetime: Duration,
) -> Result<AccessToken, PluginError> {
    let v = json_answer(resp, what).await?;
    let secret = token_field(&v, "accessToken", what)?;
    let expires_at = v["expireTime"]
        .as_str()
        .and_then(parse_rfc3339)
        .ok_or_else(|| PluginError::new(ErrorKind::OTHER, format!("{what}: the answer holds no expireTime")))?;
    Ok(AccessToken { secret, expires_at, lifetime: lifetime.as_secs() })
}

/// A successful answer's JSON, or the server's error in its words.
pub(crate) async fn json_answer(resp: reqwest::Response, what: &str) -> Result<serde_json::Value, PluginError> {
    let status = resp.status();
    let text = read_text(resp, what).await?;
    if !status.is_success() {
        return Err(status_error(what, status, &text));
    }
    serde_json::from_str(&text)
        .map_err(|_| PluginError::new(ErrorKind::OTHER, format!("{what}: the answer is not JSON")))
}

/// A non-empty token under `field` of an answer.
pub(crate) fn token_field(v: &serde_json::Value, field: &str, what: &str) -> Result<Secret, PluginError> {
    v[field]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .ok_or_else(|| PluginError::new(ErrorKind::OTHER, format!("{what}: the answer holds no {field}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_name_one_object() {
        let b = object_boundary("projects", "team/app.zip").unwrap();
        let rule = &b["accessBoundary"]["accessBoundaryRules"][0];
        assert_eq!(rule["availableResource"], "//storage.googleapis.com/projects/_/buckets/projects");
        assert_eq!(
            rule["availabilityCondition"]["expression"],
            "resource.name == 'projects/_/buckets/projects/objects/team/app.zip'"
        );
        assert!(object_boundary("projects", "it's.zip").is_err());
    }
}
