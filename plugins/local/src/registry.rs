//! Registry credentials: none, basic (htpasswd) or Distribution token auth.

use std::time::Duration;

use credhost_plugin_sdk::{
    expires_in, registry_host, secret_from_env, unix_now, AuthForm, Error as PluginError, ErrorKind, Probe,
    RegistryAuth, Secret,
};
use reqwest::{header::WWW_AUTHENTICATE, StatusCode};

use crate::{
    error::http_error,
    settings::{AuthMode, RegistrySettings},
};

/// A configured registry.
pub struct Registry {
    base: reqwest::Url,
    host: String,
    mode: AuthMode,
    username: Option<String>,
    password: Option<Secret>,
    scope: Option<String>,
    /// Hosts besides the registry's own that may receive the password as
    /// token realms.
    token_realms: Vec<String>,
    http: reqwest::Client,
}

/// The largest token-server answer read: tokens are a few KiB.
const MAX_TOKEN_ANSWER: usize = 1 << 20;

/// A `WWW-Authenticate: Bearer` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Where to ask for a token.
    pub realm: String,
    /// The `service` parameter to pass on.
    pub service: Option<String>,
    /// The scope the registry asked for, if any.
    pub scope: Option<String>,
}

impl Registry {
    /// Validates the settings and reads the credentials they name.
    pub fn new(s: RegistrySettings) -> Result<Self, PluginError> {
        let base = reqwest::Url::parse(&s.url)
            .map_err(|e| PluginError::config("registry.url", format!("invalid URL {:?}: {e}", s.url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(PluginError::config("registry.url", format!("{:?} is not an http(s) URL with a host", s.url)));
        }
        let host = registry_host(&s.url);
        let (username, password) = match s.mode_needs_credentials() {
            false => {
                for (key, v) in [("registry.username_env", &s.username_env), ("registry.password_env", &s.password_env)]
                {
                    if v.is_some() {
                        return Err(PluginError::config(
                            key,
                            format!("`{key}` is only used with auth = \"basic\" or \"token\""),
                        ));
                    }
                }
                (None, None)
            }
            true => {
                let user_var = s.username_env.as_deref().ok_or_else(|| {
                    PluginError::config(
                        "registry.username_env",
                        "auth needs `username_env`: the environment variable holding the user name",
                    )
                })?;
                let pass_var = s.password_env.as_deref().ok_or_else(|| {
                    PluginError::config(
                        "registry.password_env",
                        "auth needs `password_env`: the environment variable holding the password",
                    )
                })?;
                let user = secret_from_env("registry.username_env", user_var)?.expose().to_owned();
                (Some(user), Some(secret_from_env("registry.password_env", pass_var)?))
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("credhost-local/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| http_error("cannot build the HTTP client", &e))?;
        let token_realms = s.token_realms.iter().map(|h| registry_host(h)).collect();
        Ok(Self { base, host, mode: s.auth, username, password, scope: s.scope, token_realms, http })
    }

    /// The registry host (`host[:port]`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Credentials for the registry, `None` for an open one. With token auth
    /// the answer is a bearer token for `scope`, unless `form` is
    /// [`AuthForm::Basic`]: then it is the user name and password the token
    /// server accepts, checked there first. (The docker credential-helper
    /// protocol's only other form, user `<token>`, carries an OAuth2 refresh
    /// token, which a Distribution token server does not issue, so the
    /// registry client gets the password and runs the token exchange itself.)
    pub async fn auth(&self, scope: Option<&str>, form: AuthForm) -> Result<Option<RegistryAuth>, PluginError> {
        let (Some(user), Some(pass)) = (&self.username, &self.password) else {
            return Ok(None);
        };
        match self.mode {
            AuthMode::None => Ok(None),
            AuthMode::Basic => {
                // Prove the credentials work before handing them out, so a
                // wrong password fails here rather than in the build job.
                let resp = self
                    .get_v2()
                    .basic_auth(user, Some(pass.expose()))
                    .send()
                    .await
                    .map_err(|e| http_error(&format!("registry {} unreachable", self.host), &e))?;
                if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
                    return Err(PluginError::new(
                        ErrorKind::UNAUTHENTICATED,
                        format!("registry {} rejected the credentials of user `{user}` ({})", self.host, resp.status()),
                    ));
                }
                Ok(Some(RegistryAuth::basic(&self.host, user, pass.clone())))
            }
            AuthMode::Token => {
                let scope = scope.or(self.scope.as_deref());
                let challenge = self.challenge().await?.ok_or_else(|| {
                    PluginError::new(
                        ErrorKind::CONFIG,
                        format!("registry {} did not ask for a Bearer token; is auth = \"token\" right?", self.host),
                    )
                })?;
                let (token, expires_at) = self.fetch_token(&challenge, scope, user, pass).await?;
                Ok(Some(match form {
                    AuthForm::Basic => RegistryAuth::basic(&self.host, user, pass.clone()),
                    // The token proved the password; the client fetches its own tokens with it.
                    _ => RegistryAuth::bearer(&self.host, user, token).expires_at(expires_at),
                }))
            }
        }
    }

    /// `GET /v2/` without credentials; the Bearer challenge if the registry sent one.
    async fn challenge(&self) -> Result<Option<Challenge>, PluginError> {
        let resp =
            self.get_v2().send().await.map_err(|e| http_error(&format!("registry {} unreachable", self.host), &e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(None);
        }
        Ok(resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_bearer_challenge))
    }

    fn get_v2(&self) -> reqwest::RequestBuilder {
        let mut url = self.base.clone();
        url.set_path("/v2/");
        self.http.get(url)
    }

    async fn fetch_token(
        &self,
        c: &Challenge,
        scope: Option<&str>,
        user: &str,
        pass: &Secret,
    ) -> Result<(Secret, i64), PluginError> {
        let mut url = self.realm_url(&c.realm)?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = &c.service {
                q.append_pair("service", service);
            }
            if let Some(scope) = scope.or(c.scope.as_deref()) {
                q.append_pair("scope", scope);
            }
        }
        let resp = self
            .http
            .get(url)
            .basic_auth(user, Some(pass.expose()))
            .send()
            .await
            .map_err(|e| http_error("token server unreachable", &e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(PluginError::new(
                ErrorKind::UNAUTHENTICATED,
                format!("token server for {} rejected the credentials of user `{user}` ({status})", self.host),
            ));
        }
        if !status.is_success() {
            return Err(PluginError::new(
                ErrorKind::UNAVAILABLE,
                format!("token server for {} answered {status}", self.host),
            )
            .retryable(status.is_server_error()));
        }
        let body = zeroize::Zeroizing::new(read_limited(resp, MAX_TOKEN_ANSWER).await?);
        let mut body: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| PluginError::new(ErrorKind::OTHER, format!("token server sent an unreadable answer: {e}")))?;
        let token = body
            .token
            .take()
            .or_else(|| body.access_token.take())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| PluginError::new(ErrorKind::OTHER, "token server answered without a token"))?;
        let token = Secret::new(token.as_str());
        // Distribution's default lifetime when the server does not say.
        let expires_in = body.expires_in.filter(|s| *s > 0).unwrap_or(60);
        let issued = body.issued_at.as_deref().and_then(parse_rfc3339).unwrap_or_else(unix_now);
        tracing::debug!("token for {} issued to `{user}`, valid {expires_in} s", self.host);
        // A server whose clock is off may date the token in the past or the
        // future: trust the lifetime more than the date.
        let expires_at = (issued + expires_in).min(expires_in_secs(expires_in));
        Ok((token, expires_at))
    }

    /// The token realm a challenge named, if the password may be sent there:
    /// over https (plain http only when the registry itself is a plain-http
    /// registry on this machine), and to the registry's own host or one the
    /// `token_realms` setting lists. A registry cannot send the password
    /// anywhere else by naming it in its challenge.
    fn realm_url(&self, realm: &str) -> Result<reqwest::Url, PluginError> {
        let refused = |why: String| {
            PluginError::new(
                ErrorKind::PERMISSION_DENIED,
                format!("refusing to send credentials to the token realm of {}: {why}", self.host),
            )
        };
        let url = reqwest::Url::parse(realm).map_err(|e| refused(format!("the realm is not a URL ({e})")))?;
        let realm_host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_ascii_lowercase();
        let registry_host_only = self.base.host_str().unwrap_or_default().trim_matches(['[', ']']).to_ascii_lowercase();
        match url.scheme() {
            "https" => {}
            "http" if self.base.scheme() == "http" && is_loopback(&registry_host_only) && is_loopback(&realm_host) => {}
            scheme => return Err(refused(format!("it uses {scheme}, not https"))),
        }
        let listed =
            self.token_realms.iter().any(|h| h.split(':').next() == Some(realm_host.as_str()) || *h == realm_host);
        if realm_host != registry_host_only && !listed {
            return Err(refused(format!(
                "its host {realm_host} is not the registry's; list it in `registry.token_realms` if it is the registry's token server"
            )));
        }
        Ok(url)
    }

    /// Probes the registry: reachable, and credentials accepted where needed.
    pub async fn check(&self) -> Probe {
        let label = format!("registry {} (auth {:?})", self.host, self.mode).to_lowercase();
        let request = match self.auth(None, AuthForm::Any).await {
            Ok(None) => self.get_v2(),
            Ok(Some(a)) if self.mode == AuthMode::Token => self.get_v2().bearer_auth(a.secret.expose()),
            Ok(Some(a)) => self.get_v2().basic_auth(a.username.as_str(), Some(a.secret.expose())),
            Err(e) => return Probe::failed("registry", format!("{label}: {}", e.message)),
        };
        match request.send().await {
            Ok(r) if r.status().is_success() => Probe::ok("registry", format!("{label}: reachable, access granted")),
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED && self.mode == AuthMode::None => Probe::failed(
                "registry",
                format!("{label}: the registry requires authentication; set auth = \"basic\" or \"token\""),
            ),
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                Probe::failed("registry", format!("{label}: credentials rejected (401)"))
            }
            Ok(r) => Probe::failed("registry", format!("{label}: unexpected answer {}", r.status())),
            Err(e) => Probe::failed("registry", format!("{label}: {}", http_error("unreachable", &e).message)),
        }
    }
}

impl RegistrySettings {
    fn mode_needs_credentials(&self) -> bool {
        self.auth != AuthMode::None
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    // Wiped when dropped: Distribution sends the token twice.
    token: Option<zeroize::Zeroizing<String>>,
    access_token: Option<zeroize::Zeroizing<String>>,
    expires_in: Option<i64>,
    issued_at: Option<String>,
}

/// Unix seconds `secs` from now.
fn expires_in_secs(secs: i64) -> i64 {
    expires_in(std::time::Duration::from_secs(secs.max(0) as u64))
}

/// `127.0.0.0/8`, `::1` or `localhost`.
fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads an answer's body, refusing one longer than `limit` bytes instead of
/// holding it in memory.
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, PluginError> {
    let too_long =
        || PluginError::new(ErrorKind::OTHER, format!("the token server's answer is longer than {limit} bytes"));
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_long());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| http_error("reading the token server's answer", &e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses `Bearer realm="...",service="...",scope="..."`.
pub fn parse_bearer_challenge(header: &str) -> Option<Challenge> {
    let rest = header.trim();
    let (scheme, params) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service, mut scope) = (None, None, None);
    let mut s = params.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (quoted[..end].to_owned(), &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        match key.as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge { realm: realm?, service, scope })
}

/// Parses the RFC 3339 times token servers send as `issued_at` (UTC offsets
/// and fractions accepted) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let (clock, offset) = if let Some(stripped) = time.strip_suffix(['Z', 'z']) {
        (stripped, 0)
    } else {
        let idx = time.rfind(['+', '-'])?;
        let (c, o) = time.split_at(idx);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':')?;
        (c, sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60))
    };
    let clock = clock.split('.').next()?;
    let mut c = clock.split(':');
    let (hh, mm, ss): (i64, i64, i64) = (c.next()?.parse().ok()?, c.next()?.parse().ok()?, c.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:demo:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.realm, "http://127.0.0.1:1/token");
        assert_eq!(c.service.as_deref(), Some("reg"));
        assert_eq!(c.scope.as_deref(), Some("repository:demo:pull,push"));
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
        assert_eq!(parse_bearer_challenge(r#"bearer realm="r""#).unwrap().service, None);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2015-01-01T00:00:00Z"), Some(1_420_070_400));
        assert_eq!(parse_rfc3339("2015-01-01T01:00:00.123456+01:00"), Some(1_420_070_400));
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
