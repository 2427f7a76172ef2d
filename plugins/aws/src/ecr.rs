//! ECR registry tokens.

use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use base64::Engine as _;
use credhost_plugin_api::{ErrorKind, PluginError, RegistryAuth, Secret};

/// `host[:port]` of a registry URL or host, lower case, without scheme or path.
pub fn host_of(registry: &str) -> String {
    let r = registry.trim();
    let r = r.strip_prefix("https://").or_else(|| r.strip_prefix("http://")).unwrap_or(r);
    r.split('/').next().unwrap_or(r).to_ascii_lowercase()
}

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
    let wanted = host_of(registry);
    let mut seen = Vec::new();
    for data in out.authorization_data() {
        let endpoint = data.proxy_endpoint().unwrap_or_default();
        if host_of(endpoint) != wanted {
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
        let mut auth = RegistryAuth::new(wanted, user, Secret::new(password), expires_at);
        auth.extra.insert("kind".into(), "basic".into());
        return Ok(auth);
    }
    Err(PluginError::new(
        ErrorKind::NOT_FOUND,
        format!(
            "ECR returned no authorization for registry {wanted}; it returned: {}",
            if seen.is_empty() { "nothing".to_owned() } else { seen.join(", ") }
        ),
    ))
}

/// An AWS SDK error as a plugin error, by what the caller should do next.
pub fn sdk_error<E, R>(what: &str, e: SdkError<E, R>) -> PluginError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (kind, retryable) = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => (ErrorKind::UNAVAILABLE, true),
        SdkError::ServiceError(se) => match se.err().code() {
            Some(
                "UnrecognizedClientException" | "InvalidClientTokenId" | "InvalidSignatureException"
                | "SignatureDoesNotMatch" | "ExpiredTokenException" | "ExpiredToken",
            ) => (ErrorKind::UNAUTHENTICATED, false),
            Some("AccessDeniedException" | "AccessDenied") => (ErrorKind::PERMISSION_DENIED, false),
            Some("ThrottlingException" | "ServerException" | "ServiceUnavailable") => (ErrorKind::UNAVAILABLE, true),
            _ => (ErrorKind::OTHER, false),
        },
        SdkError::ConstructionFailure(_) => (ErrorKind::CONFIG, false),
        _ => (ErrorKind::OTHER, false),
    };
    let detail = match &e {
        SdkError::ServiceError(se) => format!(
            "{}{}",
            se.err().code().unwrap_or("service error"),
            se.err().message().map(|m| format!(": {m}")).unwrap_or_default()
        ),
        other => credhost_plugin_api::sdk::error_chain(other),
    };
    PluginError::new(kind, format!("{what} failed: {detail}")).retryable(retryable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_compare_without_scheme_and_case() {
        assert_eq!(host_of("https://123.dkr.ecr.us-east-1.amazonaws.com"), "123.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(host_of("123.DKR.ecr.us-east-1.amazonaws.com/"), "123.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(host_of("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
    }
}
