//! Registry credentials: none, basic (htpasswd) or Distribution token auth.

use std::time::{Duration, Instant};

use credhost_plugin_sdk::{
    check_http_url, error_chain, expires_in, parse_rfc3339, registry_host, secret_from_env, unix_now, AuthForm, Entry,
    Error as PluginError, ErrorKind, Grant, GrantPart, GrantRequest, Probe, RegistryAuth, Secret,
};
use reqwest::{
    header::{RETRY_AFTER, WWW_AUTHENTICATE},
    StatusCode,
};

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

/// Time allowed for one request to the registry or its token server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Attempts at one registry or token-server request, counting the first.
const ATTEMPTS: u32 = 4;

/// Retrying stops this long after the first attempt began: no attempt starts
/// later, and a retried attempt's own time limit ends there. (The host's
/// deadline for the whole call, `plugins.NAME.timeout`, cancels it earlier
/// when shorter.)
const RETRY_BUDGET: Duration = Duration::from_secs(10);

/// Upper end of the first retry's random pause; it doubles per retry.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// The longest `Retry-After` honoured; a server asking for more than what is
/// left of [`RETRY_BUDGET`] is not asked again.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(5);

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
        // Checked first: the reason never repeats a URL holding a password.
        check_http_url(&s.url).map_err(|why| PluginError::config("registry.url", why))?;
        let base = reqwest::Url::parse(&s.url)
            .map_err(|e| PluginError::config("registry.url", format!("invalid URL {:?}: {e}", s.url)))?;
        if base.host_str().is_none() {
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
            .timeout(REQUEST_TIMEOUT)
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
                let what = format!("registry {}", self.host);
                let (resp, _) =
                    self.send_retrying(&what, || self.get_v2().basic_auth(user, Some(pass.expose()))).await?;
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

    /// The registry part of a build-job grant. Token auth narrows: a bearer
    /// token for exactly the requested repositories (push and pull on one,
    /// pull on the others), never the password. Basic auth has one password
    /// for every repository: handed out only when the request accepts a
    /// registry-wide credential. An open registry needs nothing.
    pub async fn grant(&self, req: &GrantRequest, grant: &mut Grant) -> Result<(), PluginError> {
        let Some(scope) = req.registry_scope() else { return Ok(()) };
        let which = scope.replace("repository:", "").replace(' ', ", ");
        match (self.mode, &self.username, &self.password) {
            (AuthMode::Token, Some(_), Some(_)) => {
                let auth = self.auth(Some(&scope), AuthForm::Any).await?.ok_or_else(|| {
                    PluginError::new(ErrorKind::OTHER, format!("registry {} issued no token", self.host))
                })?;
                grant.parts.push(GrantPart::new(
                    "registry",
                    "repository",
                    format!("a bearer token of {}'s token server for {which}", self.host),
                    auth.expires_at,
                ));
                grant.registry = Some(auth);
            }
            (AuthMode::Basic, Some(user), Some(pass)) => {
                if !req.allow_unscoped_registry {
                    return Err(PluginError::new(
                        ErrorKind::INVALID_INPUT,
                        format!(
                            "registry {} uses basic auth: its one password works for every repository, so no credential limited to {which} exists (token auth can narrow); pass --allow-unscoped-registry to hand out the registry-wide password",
                            self.host
                        ),
                    ));
                }
                let auth = self
                    .auth(None, AuthForm::Basic)
                    .await?
                    .unwrap_or_else(|| RegistryAuth::basic(&self.host, user.as_str(), pass.clone()));
                grant.parts.push(GrantPart::new(
                    "registry",
                    "registry",
                    format!("the password of user `{user}`: every repository of {}, with no expiry", self.host),
                    None,
                ));
                grant.registry = Some(auth);
            }
            _ => {
                grant.entries.push(Entry::plain("REGISTRY", &self.host));
                grant.parts.push(GrantPart::new(
                    "registry",
                    "none",
                    format!("registry {} is open: no credential is needed or handed out", self.host),
                    None,
                ));
            }
        }
        Ok(())
    }

    /// `GET /v2/` without credentials; the Bearer challenge if the registry sent one.
    async fn challenge(&self) -> Result<Option<Challenge>, PluginError> {
        let what = format!("registry {}", self.host);
        let (resp, _) = self.send_retrying(&what, || self.get_v2()).await?;
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

    /// Sends the GET that `build` makes, and again after a transport failure
    /// or a 429, 500, 502, 503 or 504 answer: at most [`ATTEMPTS`] times
    /// within [`RETRY_BUDGET`], pausing a random time in
    /// `0..=100 ms × 2^(n-1)` before retry `n`, or what a 429 or 503 answer's
    /// `Retry-After` asks (up to [`RETRY_AFTER_CAP`]). These requests change
    /// nothing on the server, so repeating them is safe. Any other answer,
    /// 401 and 403 included, is returned at once, and so is the last
    /// transient one when attempts or time run out; with it, the number of
    /// attempts made.
    async fn send_retrying(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::Response, u32), PluginError> {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = build();
            if attempt > 1 {
                let left = RETRY_BUDGET.saturating_sub(start.elapsed());
                request = request.timeout(left.min(REQUEST_TIMEOUT));
            }
            let sent = request.send().await;
            let retry = match &sent {
                Ok(resp) if is_transient_status(resp.status()) => {
                    Some((retry_after(resp).unwrap_or_else(|| jittered(attempt)), resp.status().to_string()))
                }
                Err(e) if is_transient(e) => Some((jittered(attempt), error_chain(e))),
                _ => None,
            };
            let left = RETRY_BUDGET.saturating_sub(start.elapsed());
            let pause = match retry {
                Some((pause, why)) if attempt < ATTEMPTS && pause < left => {
                    tracing::debug!(
                        "{what}: {why} (attempt {attempt} of {ATTEMPTS}); trying again in {} ms",
                        pause.as_millis()
                    );
                    pause
                }
                _ => {
                    return sent.map(|resp| (resp, attempt)).map_err(|e| {
                        let mut err = http_error(&format!("{what} unreachable"), &e);
                        if attempt > 1 {
                            err.message = format!("{} (after {attempt} attempts)", err.message).into();
                        }
                        err
                    })
                }
            };
            tokio::time::sleep(pause).await;
        }
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
            // Several scopes go as several parameters, as token servers take them.
            for scope in scope.or(c.scope.as_deref()).unwrap_or_default().split_whitespace() {
                q.append_pair("scope", scope);
            }
        }
        let what = format!("token server for {}", self.host);
        let (resp, attempts) =
            self.send_retrying(&what, || self.http.get(url.clone()).basic_auth(user, Some(pass.expose()))).await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(PluginError::new(
                ErrorKind::UNAUTHENTICATED,
                format!("{what} rejected the credentials of user `{user}` ({status})"),
            ));
        }
        if !status.is_success() {
            let tries = if attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() };
            return Err(PluginError::new(ErrorKind::UNAVAILABLE, format!("{what} answered {status}{tries}"))
                .retryable(is_transient_status(status)));
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
        let auth = match self.auth(None, AuthForm::Any).await {
            Ok(auth) => auth,
            Err(e) => return Probe::failed("registry", format!("{label}: {}", e.message)),
        };
        let request = || match &auth {
            None => self.get_v2(),
            Some(a) if self.mode == AuthMode::Token => self.get_v2().bearer_auth(a.secret.expose()),
            Some(a) => self.get_v2().basic_auth(a.username.as_str(), Some(a.secret.expose())),
        };
        match self.send_retrying(&label, request).await.map(|(r, _)| r) {
            Ok(r) if r.status().is_success() => Probe::ok("registry", format!("{label}: reachable, access granted")),
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED && self.mode == AuthMode::None => Probe::failed(
                "registry",
                format!("{label}: the registry requires authentication; set auth = \"basic\" or \"token\""),
            ),
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                Probe::failed("registry", format!("{label}: credentials rejected (401)"))
            }
            Ok(r) => Probe::failed("registry", format!("{label}: unexpected answer {}", r.status())),
            Err(e) => Probe::failed("registry", e.message.to_string()),
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

/// Answers worth asking again for: the server is overloaded or failed on
/// the way (429, 500, 502, 503, 504).
fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// Failures to get an answer that may heal: refused, reset or timed out
/// connections, an answer cut short. A request that could not be built or a
/// redirect loop will fail the same way again.
fn is_transient(e: &reqwest::Error) -> bool {
    !(e.is_builder() || e.is_redirect() || e.is_status())
}

/// The pause a 429 or 503 answer asks for in whole seconds (`Retry-After: N`),
/// at most [`RETRY_AFTER_CAP`]. A date or anything else is not honoured.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    if !matches!(resp.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        return None;
    }
    let secs = resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs).min(RETRY_AFTER_CAP))
}

/// The pause before retry `retry` (1 for the first): random in
/// `0..=min(100 ms × 2^(retry-1), 2 s)` ("full jitter"), so that clients that
/// failed together do not come back together.
fn jittered(retry: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1 << retry.saturating_sub(1).min(16)).min(Duration::from_secs(2));
    ceiling.mul_f64(unit_random())
}

/// A number in `[0, 1)` that differs between calls and processes: the
/// standard library's randomly keyed hasher over a counter and the clock.
/// Spreads retries; not for anything secret.
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    // The top 53 bits make an exact f64 in [0, 1).
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
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
    fn retry_pauses_are_jittered_and_bounded() {
        for retry in 1..=6u32 {
            let ceiling = (BACKOFF_BASE * 2u32.pow(retry - 1)).min(Duration::from_secs(2));
            let pauses: Vec<Duration> = (0..100).map(|_| jittered(retry)).collect();
            assert!(pauses.iter().all(|p| *p <= ceiling), "retry {retry}: {pauses:?}");
            let distinct: std::collections::HashSet<_> = pauses.iter().collect();
            assert!(distinct.len() > 50, "retry {retry}: {} distinct pauses", distinct.len());
        }
        // Four attempts fit the budget even at the ceiling of every pause.
        let worst: Duration = (1..ATTEMPTS).map(|r| (BACKOFF_BASE * 2u32.pow(r - 1)).min(Duration::from_secs(2))).sum();
        assert!(worst < RETRY_BUDGET);
        assert!(RETRY_AFTER_CAP < RETRY_BUDGET);
    }

    #[test]
    fn transient_statuses() {
        for s in [429, 500, 502, 503, 504] {
            assert!(is_transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 501] {
            assert!(!is_transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
