//! OAuth2 access tokens: fetched from the credential source, cached, and
//! replaced before they expire, with one fetch in flight at a time.

use std::{
    fmt,
    time::{Duration, Instant},
};

use credhost_plugin_sdk::{
    api::rules::{refresh_margin, unix_now},
    Error as PluginError, ErrorKind, Secret,
};
use reqwest::StatusCode;

use crate::{
    auth::{
        key::{AuthorizedUser, Credentials, ServiceAccountKey},
        Source,
    },
    error::{is_transient_status, send_error, server_message},
    retry::{backoff, Budget, RETRY_BUDGET},
};

/// Full access to the project's Google Cloud resources; what Artifact
/// Registry and GCS both accept.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Attempts at a token fetch that fails transiently (no answer, 408, 429,
/// 5xx). Fetching a token changes nothing, so it may be repeated; the
/// pauses are jittered ([`backoff`]) and none starts later than
/// [`RETRY_BUDGET`] after the first attempt.
const ATTEMPTS: u32 = 3;

/// An access token and when it stops working.
#[derive(Clone)]
pub struct AccessToken {
    /// The bearer token.
    pub secret: Secret,
    /// Unix seconds after which the token is rejected.
    pub expires_at: i64,
    /// Seconds it was valid for when issued.
    pub lifetime: u64,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &self.secret)
            .field("expires_at", &self.expires_at)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

struct Cached {
    token: AccessToken,
    /// When to stop handing the token out (monotonic, so clock jumps do not matter).
    refresh_at: Instant,
}

/// Tokens for one credential source.
pub struct TokenSource {
    source: Source,
    http: reqwest::Client,
    metadata_http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource").field("source", &self.source).finish_non_exhaustive()
    }
}

/// When to refresh a token fetched at `fetched` that lives `lifetime`: the
/// interface's rule, on the monotonic clock (so clock jumps do not matter).
pub fn refresh_at(fetched: Instant, lifetime: Duration) -> Instant {
    let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    let margin = Duration::from_secs(refresh_margin(secs).unsigned_abs());
    fetched + lifetime.saturating_sub(margin)
}

impl TokenSource {
    /// Tokens from `source`. `http` serves token endpoints; the metadata
    /// server gets its own client with short timeouts, since off Google
    /// Cloud its address may not answer at all.
    pub fn new(source: Source, http: reqwest::Client) -> Result<Self, PluginError> {
        let metadata_http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .no_proxy()
            .build()
            .map_err(|e| send_error("cannot build the metadata HTTP client", &e))?;
        Ok(Self { source, http, metadata_http, cached: tokio::sync::Mutex::new(None) })
    }

    /// The credential source.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// A token with some life left: the cached one until its refresh time,
    /// then a new one. Concurrent callers share one fetch.
    pub async fn token(&self) -> Result<AccessToken, PluginError> {
        let mut slot = self.cached.lock().await;
        if let Some(c) = slot.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        let fetched = Instant::now();
        let token = self.fetch().await?;
        let until = refresh_at(fetched, Duration::from_secs(token.lifetime));
        tracing::debug!("new access token from {}, valid {} s", self.source.describe(), token.lifetime);
        *slot = Some(Cached { token: token.clone(), refresh_at: until });
        Ok(token)
    }

    /// Forgets `rejected` (a server refused it before its time: revoked, or
    /// clocks disagree), so that the next [`TokenSource::token`] fetches anew.
    pub async fn reject(&self, rejected: &Secret) {
        let mut slot = self.cached.lock().await;
        if slot.as_ref().is_some_and(|c| c.token.secret == *rejected) {
            *slot = None;
        }
    }

    async fn fetch(&self) -> Result<AccessToken, PluginError> {
        let budget = Budget::new(RETRY_BUDGET);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match &self.source {
                Source::File(Credentials::ServiceAccount(k)) => self.token_for_service_account(k).await,
                Source::File(Credentials::AuthorizedUser(u)) => self.token_for_authorized_user(u).await,
                Source::Metadata { host, tried } => self.token_from_metadata(host, tried.as_deref()).await,
            };
            let pause = backoff(attempt);
            match result {
                Err(e) if e.retryable && attempt < ATTEMPTS && budget.allows(pause) => {
                    tracing::debug!("token fetch failed (attempt {attempt}), retrying: {}", e.message);
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    async fn token_for_service_account(&self, key: &ServiceAccountKey) -> Result<AccessToken, PluginError> {
        let assertion = key.assertion(SCOPE, unix_now())?;
        let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.expose())];
        let who = format!("service account {}", key.client_email);
        self.exchange(&key.token_uri, &form, &who).await
    }

    async fn token_for_authorized_user(&self, user: &AuthorizedUser) -> Result<AccessToken, PluginError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", user.client_id.as_str()),
            ("client_secret", user.client_secret.expose()),
            ("refresh_token", user.refresh_token.expose()),
        ];
        let who = format!("the authorized user credentials ({})", user.origin);
        self.exchange(&user.token_uri, &form, &who).await
    }

    /// POSTs an OAuth2 token request and reads the answer.
    async fn exchange(&self, token_uri: &str, form: &[(&str, &str)], who: &str) -> Result<AccessToken, PluginError> {
        let what = format!("token endpoint {token_uri}");
        let resp = self.http.post(token_uri).form(form).send().await.map_err(|e| send_error(&what, &e))?;
        let status = resp.status();
        let body = zeroize::Zeroizing::new(crate::error::read_text(resp, &what).await?);
        if status.is_success() {
            return parse_token(&body, &what);
        }
        let detail = server_message(&body).map(|m| format!(": {m}")).unwrap_or_default();
        if is_transient_status(status) {
            return Err(
                PluginError::new(ErrorKind::UNAVAILABLE, format!("{what} answered {status}{detail}")).retryable(true)
            );
        }
        // 400 invalid_grant / 401 invalid_client: the credentials themselves.
        Err(PluginError::new(ErrorKind::UNAUTHENTICATED, format!("{what} rejected {who} ({status}{detail})")))
    }

    /// The metadata server's service account (its email).
    pub async fn metadata_email(&self, host: &str) -> Result<String, PluginError> {
        let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/email");
        let what = format!("metadata server at {host}");
        let resp = self
            .metadata_http
            .get(&url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| send_error(&what, &e))?;
        let status = resp.status();
        let body = zeroize::Zeroizing::new(crate::error::read_text(resp, &what).await?);
        let email = body.trim();
        if !status.is_success() || email.is_empty() || email.len() > 320 || email.contains(char::is_whitespace) {
            return Err(PluginError::new(
                ErrorKind::UNAUTHENTICATED,
                format!("{what} names no service account ({status})"),
            ));
        }
        Ok(email.to_owned())
    }

    async fn token_from_metadata(&self, host: &str, tried: Option<&str>) -> Result<AccessToken, PluginError> {
        let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
        let what = format!("metadata server at {host}");
        let sent =
            self.metadata_http.get(&url).query(&[("scopes", SCOPE)]).header("Metadata-Flavor", "Google").send().await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Err(match tried {
                    // The metadata server was only the last resort: say what
                    // else was looked for, since that is what the user lacks.
                    Some(tried) => PluginError::new(
                        ErrorKind::UNAUTHENTICATED,
                        format!(
                            "no credentials found: {tried}, and the {what} did not answer ({})",
                            credhost_plugin_sdk::error_chain(&e)
                        ),
                    ),
                    None => send_error(&what, &e),
                });
            }
        };
        let status = resp.status();
        let body = zeroize::Zeroizing::new(crate::error::read_text(resp, &what).await?);
        match status {
            s if s.is_success() => parse_token(&body, &what),
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Err(PluginError::new(
                ErrorKind::UNAUTHENTICATED,
                format!("{what} has no token for this machine ({status})"),
            )),
            s => Err(PluginError::new(ErrorKind::UNAVAILABLE, format!("{what} answered {s}"))
                .retryable(is_transient_status(s))),
        }
    }
}

/// Reads `{"access_token", "expires_in", "token_type"}`.
fn parse_token(body: &str, what: &str) -> Result<AccessToken, PluginError> {
    let unreadable = |why: &str| PluginError::new(ErrorKind::OTHER, format!("{what} sent an unusable answer: {why}"));
    let mut v: serde_json::Value = serde_json::from_str(body).map_err(|_| unreadable("not JSON"))?;
    let secret = match v.get_mut("access_token").map(serde_json::Value::take) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Secret::new(s),
        _ => return Err(unreadable("no access_token")),
    };
    if let Some(kind) = v["token_type"].as_str() {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(unreadable(&format!("token_type {kind:?} is not Bearer")));
        }
    }
    // Google always says; an hour is what it issues when it does not.
    let lifetime =
        v["expires_in"].as_u64().or_else(|| v["expires_in"].as_str().and_then(|s| s.parse().ok())).unwrap_or(3600);
    if lifetime == 0 {
        return Err(unreadable("the token has already expired"));
    }
    Ok(AccessToken { secret, expires_at: unix_now() + lifetime as i64, lifetime })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_margin_scales_with_lifetime() {
        let t0 = Instant::now();
        assert_eq!(refresh_at(t0, Duration::from_secs(3600)), t0 + Duration::from_secs(3300));
        assert_eq!(refresh_at(t0, Duration::from_secs(8)), t0 + Duration::from_secs(6));
        assert_eq!(refresh_at(t0, Duration::from_secs(0)), t0);
    }

    #[test]
    fn token_answers() {
        let t = parse_token(r#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#, "t").unwrap();
        assert_eq!((t.secret.expose(), t.lifetime), ("ya29.x", 3599));
        assert!((t.expires_at - unix_now() - 3599).abs() <= 1);
        assert_eq!(format!("{t:?}").matches("ya29").count(), 0);
        for bad in [
            r#"{"expires_in":1}"#,
            "nope",
            r#"{"access_token":"x","token_type":"MAC"}"#,
            r#"{"access_token":"x","expires_in":0}"#,
        ] {
            assert!(parse_token(bad, "t").is_err(), "{bad}");
        }
    }
}
