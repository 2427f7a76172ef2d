//! ECR registry tokens.

use base64::Engine as _;
use credhost_plugin_sdk::{registry_host, Error as PluginError, ErrorKind, RegistryAuth, Secret};

use crate::error::sdk_error;

/// Fetches an authorization token and picks the entry for `registry`.
pub async fn registry_auth(
    client: &aws_sdk_ecr::Client,
    registry_ids: &[String],
    registry: &str,
) -> Result<RegistryAuth, PluginError> {
    let mut req = client.get_authorization_token();
    // Deprecated by AWS (the token no longer depends on it) but still honoured
    // by the API and by ECR-compatible services: users who set it expect it sent.
    #[allow(deprecated)]
    for id in registry_ids {
        req = req.registry_ids(id);
    }
    let out = req.send().await.map_err(|e| sdk_error("ECR GetAuthorizationToken", e))?;
    let wanted = registry_host(registry);
    let mut seen = Vec::new();
    for data in out.authorization_data() {
        let endpoint = data.proxy_endpoint().unwrap_or_default();
        if registry_host(endpoint) != wanted {
            seen.push(endpoint.to_owned());
            continue;
        }
        let token = data
            .authorization_token()
            .ok_or_else(|| PluginError::new(ErrorKind::OTHER, format!("ECR returned no token for {endpoint}")))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| PluginError::new(ErrorKind::OTHER, "ECR returned a token that is not base64 text"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| PluginError::new(ErrorKind::OTHER, "ECR returned a token without `user:password`"))?;
        let expires_at = data.expires_at().map(|t| t.secs());
        tracing::debug!("ECR authorization token fetched for {wanted}, expires at {expires_at:?}");
        let auth = RegistryAuth::basic(wanted, user, Secret::new(password));
        return Ok(match expires_at {
            Some(t) => auth.expires_at(t),
            None => auth,
        });
    }
    Err(PluginError::new(
        ErrorKind::NOT_FOUND,
        format!(
            "ECR returned no authorization for registry {wanted}; it returned: {}",
            if seen.is_empty() { "nothing".to_owned() } else { seen.join(", ") }
        ),
    ))
}
