//! The kubelet's image credential provider protocol
//! (`credentialprovider.kubelet.k8s.io/v1`): its request and response, the
//! kubelet's own image matching, and the answer credhost gives.
//!
//! The kubelet execs a provider with a `CredentialProviderRequest` on
//! standard input and decodes its `CredentialProviderResponse` strictly
//! (unknown fields are an error, and the `apiVersion` must be the one it
//! sent). Front ends read the request and print [`respond`]'s answer; the
//! rules live here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{api::rules::refresh_margin, types::unix_seconds, Error, Registries, Result, Secret};

/// The protocol version this module speaks.
pub const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";
/// The request's kind.
pub const REQUEST_KIND: &str = "CredentialProviderRequest";
/// The response's kind.
pub const RESPONSE_KIND: &str = "CredentialProviderResponse";
/// The largest request read: an image name, a token and annotations.
pub const MAX_REQUEST: usize = 1 << 20;

/// What the kubelet asks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`REQUEST_KIND`].
    pub kind: String,
    /// The image to pull, e.g. `registry.example:5000/team/app:v1`.
    pub image: String,
    /// The pod's service-account token, in service-account mode.
    #[serde(default)]
    pub service_account_token: Option<Secret>,
    /// The service account's annotations the provider's config asked for.
    #[serde(default)]
    pub service_account_annotations: BTreeMap<String, String>,
}

credhost_plugin_api::debug_fields!(Request { api_version, kind, image, service_account_token });

/// One registry's credentials in a response.
#[derive(Serialize)]
pub struct AuthConfig {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Secret,
}

/// What the provider answers.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// [`API_VERSION`].
    pub api_version: &'static str,
    /// [`RESPONSE_KIND`].
    pub kind: &'static str,
    /// `Registry`: the kubelet caches the answer per registry host.
    pub cache_key_type: &'static str,
    /// How long the kubelet may reuse the answer, as a Go duration.
    pub cache_duration: String,
    /// Credentials by registry (`host[:port]`); absent when no instance
    /// serves the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<BTreeMap<String, AuthConfig>>,
}

/// Parses a request, strictly: the version and kind the kubelet sends,
/// every field known, an image named.
pub fn parse_request(input: &[u8]) -> Result<Request> {
    if input.len() > MAX_REQUEST {
        return Err(Error::InvalidInput(format!("the request is over {MAX_REQUEST} bytes")));
    }
    let req: Request = serde_json::from_slice(input).map_err(|e| {
        // serde's message names a field or a position, never a value.
        Error::InvalidInput(format!("not a {REQUEST_KIND}: {e}"))
    })?;
    if req.api_version != API_VERSION {
        return Err(Error::InvalidInput(format!(
            "apiVersion {:?} is not {API_VERSION}, the version this provider speaks",
            crate::names::printable(&req.api_version)
        )));
    }
    if req.kind != REQUEST_KIND {
        return Err(Error::InvalidInput(format!(
            "kind {:?} is not {REQUEST_KIND}",
            crate::names::printable(&req.kind)
        )));
    }
    if req.image.trim().is_empty() {
        return Err(Error::InvalidInput("the request names no image".into()));
    }
    Ok(req)
}

/// `(host[:port], path)` of an image reference: its first component when
/// that looks like a host (holds a `.` or a `:`, or is `localhost`), else
/// Docker Hub's `docker.io`.
pub fn image_registry(image: &str) -> (String, String) {
    let image = image.trim();
    let (first, rest) = image.split_once('/').unwrap_or((image, ""));
    if !rest.is_empty() && (first.contains(['.', ':']) || first == "localhost") {
        (first.to_ascii_lowercase(), format!("/{rest}"))
    } else {
        ("docker.io".to_owned(), format!("/{image}"))
    }
}

/// Whether `target` (an image or a registry, no scheme) matches `glob` as
/// the kubelet matches `matchImages` and its credential keys
/// (`pkg/credentialprovider/keyring.go`, `URLsMatch`): the ports are
/// equal, the hosts have as many labels, each label matches as a shell glob
/// (`*`, `?`, `[...]`), and the glob's path is a prefix of the target's.
pub fn urls_match(glob: &str, target: &str) -> bool {
    let (glob_host, glob_path) = split_schemeless(glob);
    let (target_host, target_path) = split_schemeless(target);
    let (glob_labels, glob_port) = split_host(glob_host);
    let (target_labels, target_port) = split_host(target_host);
    glob_port == target_port
        && glob_labels.len() == target_labels.len()
        && target_path.starts_with(glob_path)
        && glob_labels.iter().zip(&target_labels).all(|(g, t)| shell_match(g.as_bytes(), t.as_bytes()))
}

/// `(host[:port], path)` of a URL without a scheme.
fn split_schemeless(s: &str) -> (&str, &str) {
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// The labels of a host and its port (empty when none).
fn split_host(host: &str) -> (Vec<&str>, &str) {
    let (name, port) = match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
        _ => (host, ""),
    };
    (name.split('.').collect(), port)
}

/// A shell glob of one label (Go's `filepath.Match` without `/`): `*` any
/// run, `?` one character, `[...]` a class (`^` or `!` negates, `a-z`
/// ranges), `\` escapes. A malformed pattern matches nothing.
fn shell_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| shell_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && shell_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some((&c, tail)) = name.split_first() else { return false };
            match class(rest, c) {
                Some((true, after)) => shell_match(after, tail),
                _ => false,
            }
        }
        Some((b'\\', rest)) => match (rest.split_first(), name.split_first()) {
            (Some((p, rest)), Some((c, tail))) => p == c && shell_match(rest, tail),
            _ => false,
        },
        Some((p, rest)) => name.first() == Some(p) && shell_match(rest, &name[1..]),
    }
}

/// Whether `c` is in the class starting at `pattern` (after its `[`), and
/// the pattern after the class's `]`; `None` when the class is malformed.
fn class(pattern: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negated, mut p) = match pattern.first() {
        Some(b'^' | b'!') => (true, &pattern[1..]),
        _ => (false, pattern),
    };
    let mut found = false;
    let mut first = true;
    loop {
        let (&lo, rest) = p.split_first()?;
        if lo == b']' && !first {
            return Some((found != negated, rest));
        }
        first = false;
        let (lo, rest) = if lo == b'\\' { rest.split_first().map(|(&l, r)| (l, r))? } else { (lo, rest) };
        if let [b'-', hi, tail @ ..] = rest {
            if *hi != b']' {
                let (hi, tail) = if *hi == b'\\' { tail.split_first().map(|(&h, t)| (h, t))? } else { (*hi, tail) };
                found |= lo <= c && c <= hi;
                p = tail;
                continue;
            }
        }
        found |= lo == c;
        p = rest;
    }
}

/// A Go duration string (`time.Duration.String`) of whole seconds:
/// `0s`, `45s`, `5m0s`, `11h55m0s`.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// How long the kubelet may reuse credentials expiring at `expires_at`
/// (Unix seconds) at `now`: their remaining lifetime less credhost's own
/// refresh margin; `"0"` (do not cache) when the expiry is unknown, past or
/// within the margin.
pub fn cache_duration(now: i64, expires_at: Option<i64>) -> String {
    let Some(exp) = expires_at else { return "0".into() };
    let left = exp - now;
    let usable = left - refresh_margin(left);
    if left <= 0 || usable <= 0 {
        return "0".into();
    }
    go_duration(u64::try_from(usable).unwrap_or(0))
}

/// A workload's identity, from a request in service-account mode.
#[derive(Clone)]
pub struct Workload {
    /// The pod's service-account token, as the kubelet sent it.
    pub token: Secret,
    /// From the token's `sub` claim, unverified (the platform verifies the
    /// token): for names, never for trust.
    pub namespace: String,
    /// See `namespace`.
    pub service_account: String,
    /// The service account's annotations the kubelet passed.
    pub annotations: BTreeMap<String, String>,
}

credhost_plugin_api::debug_fields!(Workload { token, namespace, service_account, annotations });

impl Workload {
    /// The workload of a request carrying a service-account token (`None`
    /// without one). The token is a JWT whose `sub` claim is
    /// `system:serviceaccount:NAMESPACE:NAME`; it is decoded, not verified:
    /// the platform that exchanges it does that.
    pub fn from_request(req: &Request) -> Result<Option<Workload>> {
        let Some(token) = req.service_account_token.as_ref().filter(|t| !t.is_empty()) else { return Ok(None) };
        let bad = |why: &str| Error::InvalidInput(format!("the service-account token {why}"));
        let mut parts = token.expose().split('.');
        let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad("is not a JWT (three dot-separated parts)"));
        };
        use base64::Engine as _;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| bad("has a payload that is not base64url"))?;
        #[derive(Deserialize)]
        struct Claims {
            sub: Option<String>,
        }
        let claims: Claims =
            serde_json::from_slice(&claims).map_err(|_| bad("has a payload that is not a JSON object"))?;
        let sub = claims.sub.ok_or_else(|| bad("has no sub claim"))?;
        let mut fields = sub.splitn(4, ':');
        let (Some("system"), Some("serviceaccount"), Some(namespace), Some(name)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad(&format!(
                "is not a service account's (its sub is {:?}, not system:serviceaccount:NAMESPACE:NAME)",
                crate::names::printable(&sub)
            )));
        };
        let dns = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !dns(namespace) || !dns(name) {
            return Err(bad(&format!(
                "names a service account Kubernetes would not ({:?})",
                crate::names::printable(&sub)
            )));
        }
        Ok(Some(Workload {
            token: token.clone(),
            namespace: namespace.to_owned(),
            service_account: name.to_owned(),
            annotations: req.service_account_annotations.clone(),
        }))
    }
}

/// How the provider was configured (its `args` in the kubelet's config).
#[derive(Clone, Copy, Debug, Default)]
pub struct RespondOptions {
    /// `tokenAttributes.requireServiceAccount`: every answer is a
    /// workload's, never the node's.
    pub require_service_account: bool,
}

/// The answer to `req`: the credentials of the instance serving the
/// image's registry, as a user name and password, keyed by that registry;
/// no `auth` for an image no instance serves.
///
/// A request carrying a service-account token asks for the workload's own
/// credentials: an instance whose plugin has workload identity exchanges
/// the token at its platform; one without answers with the node's
/// credentials unless `require_service_account`, when it is refused. A
/// workload's answer is never replaced by the node's: a failed exchange is
/// an error.
pub async fn respond(registries: &Registries, req: &Request, opts: RespondOptions) -> Result<Response> {
    let (host, _) = image_registry(&req.image);
    let empty = |duration: String| Response {
        api_version: API_VERSION,
        kind: RESPONSE_KIND,
        cache_key_type: "Registry",
        cache_duration: duration,
        auth: None,
    };
    let workload = Workload::from_request(req)?;
    if workload.is_none() && opts.require_service_account {
        return Err(Error::InvalidInput(
            "the provider is configured with requireServiceAccount, and the request carries no service-account token: no node credentials are given in a workload's place".into(),
        ));
    }
    let auth = match workload {
        None => registries.get(&host).await?,
        Some(workload) => {
            let map = registries.map().await?;
            let Some(route) = map.resolve(&host) else {
                crate::resolver::unresolved(map, &host)?;
                return Ok(empty("0".into()));
            };
            let provider = registries.provider(&route.instance).await?;
            // A plugin that declares workload identity but answers that it
            // has none (one built with `Capabilities::ALL` that never
            // implemented it) counts as one without.
            let answer = if provider.offers(crate::Operation::WorkloadIdentity) {
                tracing::debug!(target: "credhost::kubelet", registry = %host, instance = %route.instance,
                    namespace = %workload.namespace, service_account = %workload.service_account,
                    "the workload's own credentials");
                match provider.workload_registry_auth(Some(&host), &workload).await {
                    Err(e) if e.kind() == crate::ErrorKind::Unsupported => None,
                    // The token is the pod's, bound to it and to the
                    // audience the platform trusts: handed on as a
                    // password, every registry the kubelet sends it to
                    // could replay it.
                    Ok(Some(a)) if a.secret.expose() == workload.token.expose() => {
                        return Err(Error::Unsupported {
                            instance: route.instance,
                            op: crate::Operation::WorkloadIdentity.description(),
                            why: format!(
                                "plugin `{}` answered with the service-account token itself as the password, which credhost never hands on",
                                provider.plugin()
                            ),
                        });
                    }
                    other => Some(other?),
                }
            } else {
                None
            };
            if let Some(answer) = answer {
                answer
            } else if opts.require_service_account {
                // Why this instance has none (an older interface, a plugin
                // without it), and why the node's are no answer.
                let why = match provider.require(crate::Operation::WorkloadIdentity) {
                    Err(Error::Unsupported { why, .. }) => why,
                    _ => format!("plugin `{}` answers that it has no workload identity", provider.plugin()),
                };
                return Err(Error::Unsupported {
                    instance: route.instance,
                    op: crate::Operation::WorkloadIdentity.description(),
                    why: format!(
                        "{why}; the provider is configured with requireServiceAccount, and the node's credentials are never given in a workload's place"
                    ),
                });
            } else {
                tracing::debug!(target: "credhost::kubelet", registry = %host, instance = %route.instance,
                    "no workload identity in plugin `{}`: the node's credentials", provider.plugin());
                registries.get(&host).await?
            }
        }
    };
    // Nothing for an image no instance serves, or whose registry needs no
    // credentials: the kubelet goes on with its other providers, or
    // anonymously.
    let Some(auth) = auth else {
        return Ok(empty("0".into()));
    };
    if auth.kind == crate::AuthKind::Bearer {
        return Err(Error::Unsupported {
            instance: registries.map().await?.resolve(&host).map(|r| r.instance).unwrap_or_default(),
            op: "registry credentials",
            why: format!(
                "the plugin answered {host} with a bearer token, and the kubelet needs a user name and password"
            ),
        });
    }
    let now = unix_seconds(std::time::SystemTime::now());
    let duration = cache_duration(now, auth.expires_at.map(unix_seconds));
    let mut map = BTreeMap::new();
    map.insert(host, AuthConfig { username: auth.username, password: auth.secret });
    Ok(Response { auth: Some(map), ..empty(duration) })
}

/// Options of [`provider_config`].
#[derive(Clone, Debug, Default)]
pub struct ConfigOptions {
    /// The provider's name: the executable the kubelet runs from its
    /// `--image-credential-provider-bin-dir` (`credhost`).
    pub name: String,
    /// The default cache duration, a Go duration.
    pub default_cache_duration: String,
    /// The configuration file the provider reads (`CREDHOST_CONFIG`).
    pub config_path: String,
    /// Service-account mode (`tokenAttributes`), when asked for.
    pub tokens: Option<TokenAttributes>,
}

/// The annotations credhost's plugins read, passed by the kubelet when a
/// service account has them.
pub const ANNOTATIONS: [&str; 3] = [
    credhost_plugin_api::annotations::ROLE_ARN,
    credhost_plugin_api::annotations::PULL,
    credhost_plugin_api::annotations::SERVICE_ACCOUNT,
];

/// The kubelet's `tokenAttributes`: service-account mode.
#[derive(Clone, Debug)]
pub struct TokenAttributes {
    /// `serviceAccountTokenAudience`.
    pub audience: String,
    /// `cacheType`: `ServiceAccount` or `Token`.
    pub cache_type: String,
    /// `requireServiceAccount`.
    pub require_service_account: bool,
    /// `requiredServiceAccountAnnotationKeys`.
    pub required_annotations: Vec<String>,
    /// `optionalServiceAccountAnnotationKeys`: those of [`ANNOTATIONS`] not
    /// required.
    pub optional_annotations: Vec<String>,
}

impl TokenAttributes {
    /// Checked attributes: an audience, a cache type the kubelet knows,
    /// annotation keys Kubernetes accepts (`[prefix/]name`).
    pub fn new(
        audience: String,
        cache_type: &str,
        require_service_account: bool,
        required: Vec<String>,
    ) -> Result<Self> {
        if audience.trim().is_empty() || audience.chars().any(char::is_control) {
            return Err(Error::InvalidInput("the service-account audience is empty or not printable".into()));
        }
        if !matches!(cache_type, "Token" | "ServiceAccount") {
            return Err(Error::InvalidInput(format!(
                "cache type {:?} is not Token or ServiceAccount",
                crate::names::printable(cache_type)
            )));
        }
        let mut required_annotations: Vec<String> = Vec::new();
        for key in required {
            if !annotation_key_ok(&key) {
                return Err(Error::InvalidInput(format!(
                    "{:?} is not an annotation key ([prefix/]name: a DNS subdomain, then up to 63 letters, digits, '-', '_', '.')",
                    crate::names::printable(&key)
                )));
            }
            if !required_annotations.contains(&key) {
                required_annotations.push(key);
            }
        }
        let optional_annotations = ANNOTATIONS
            .iter()
            .filter(|k| !required_annotations.iter().any(|r| r == *k))
            .map(|k| (*k).to_owned())
            .collect();
        Ok(Self {
            audience,
            cache_type: cache_type.to_owned(),
            require_service_account,
            required_annotations,
            optional_annotations,
        })
    }
}

/// Whether `key` is a Kubernetes annotation key: an optional DNS-subdomain
/// prefix and `/`, then a name of 1 to 63 alphanumerics, `-`, `_` and `.`,
/// starting and ending alphanumeric.
fn annotation_key_ok(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && alnum(name.chars().next())
        && alnum(name.chars().last())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    name_ok && prefix_ok
}

/// The kubelet's `CredentialProviderConfig` (YAML) for the registries
/// `patterns` (hosts and `*.` wildcards, as `matchImages`).
pub fn provider_config(opts: &ConfigOptions, patterns: &[String]) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut out = String::from("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n");
    out.push_str(&format!("  - name: {}\n", quote(&opts.name)));
    out.push_str("    matchImages:\n");
    for p in patterns {
        out.push_str(&format!("      - {}\n", quote(p)));
    }
    out.push_str(&format!("    defaultCacheDuration: {}\n", quote(&opts.default_cache_duration)));
    out.push_str(&format!("    apiVersion: {}\n", quote(API_VERSION)));
    out.push_str("    args:\n      - \"kubelet-provider\"\n");
    if opts.tokens.as_ref().is_some_and(|t| t.require_service_account) {
        out.push_str("      - \"--require-service-account\"\n");
    }
    out.push_str("    env:\n      - name: \"CREDHOST_CONFIG\"\n");
    out.push_str(&format!("        value: {}\n", quote(&opts.config_path)));
    if let Some(t) = &opts.tokens {
        out.push_str("    tokenAttributes:\n");
        out.push_str(&format!("      serviceAccountTokenAudience: {}\n", quote(&t.audience)));
        out.push_str(&format!("      cacheType: {}\n", quote(&t.cache_type)));
        out.push_str(&format!("      requireServiceAccount: {}\n", t.require_service_account));
        for (field, keys) in [
            ("requiredServiceAccountAnnotationKeys", &t.required_annotations),
            ("optionalServiceAccountAnnotationKeys", &t.optional_annotations),
        ] {
            if !keys.is_empty() {
                out.push_str(&format!("      {field}:\n"));
                for k in keys {
                    out.push_str(&format!("        - {}\n", quote(k)));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kubelet's own cases (keyring_test.go's URLsMatch table), and the
    /// ones credhost's configurations lean on.
    #[test]
    fn matching_follows_the_kubelet() {
        for (glob, target, want) in [
            ("*.kubernetes.io", "prefix.kubernetes.io", true),
            ("prefix.*.io", "prefix.kubernetes.io", true),
            ("prefix.kubernetes.*", "prefix.kubernetes.io", true),
            ("*-good.kubernetes.io", "prefix-good.kubernetes.io", true),
            ("prefix.kubernetes.io", "prefix.kubernetes.io/path", true),
            ("prefix.kubernetes.io/path", "prefix.kubernetes.io/path/subpath", true),
            ("prefix.kubernetes.io:8080", "prefix.kubernetes.io:8080", true),
            ("*.kubernetes.io:8080", "prefix.kubernetes.io:8080", true),
            ("prefix.kubernetes.io", "prefix.kubernetes.io:8080", false),
            ("prefix.kubernetes.io:8080", "prefix.kubernetes.io", false),
            ("*.kubernetes.io", "prefix.sub.kubernetes.io", false),
            ("*.kubernetes.io", "kubernetes.io", false),
            ("*.*.kubernetes.io", "prefix.sub.kubernetes.io", true),
            ("prefix.kubernetes.io/path", "prefix.kubernetes.io/otherpath", false),
            ("prefix.kubernetes.io/path/subpath", "prefix.kubernetes.io/path", false),
            ("*.kubernetes.io", "prefix.kubernetes.io/path:tag", true),
            ("1?3.dkr.ecr.*.amazonaws.com", "123.dkr.ecr.us-east-1.amazonaws.com", true),
            ("reg[0-9].example.com", "reg7.example.com", true),
            ("reg[!0-9].example.com", "reg7.example.com", false),
            ("127.0.0.1:5000", "127.0.0.1:5000/team/app:v1", true),
            ("127.0.0.1:5000", "127.0.0.1:5001/team/app:v1", false),
        ] {
            assert_eq!(urls_match(glob, target), want, "{glob} ~ {target}");
        }
    }

    #[test]
    fn images_name_their_registry() {
        assert_eq!(image_registry("127.0.0.1:5000/team/app:v1"), ("127.0.0.1:5000".into(), "/team/app:v1".into()));
        assert_eq!(image_registry("Reg.Example/app"), ("reg.example".into(), "/app".into()));
        assert_eq!(image_registry("library/busybox"), ("docker.io".into(), "/library/busybox".into()));
        assert_eq!(image_registry("busybox"), ("docker.io".into(), "/busybox".into()));
        assert_eq!(image_registry("localhost/app"), ("localhost".into(), "/app".into()));
    }

    #[test]
    fn cache_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(45), "45s");
        assert_eq!(go_duration(300), "5m0s");
        assert_eq!(go_duration(42_900), "11h55m0s");
        assert_eq!(cache_duration(1000, None), "0");
        assert_eq!(cache_duration(1000, Some(900)), "0");
        // 12 hours left: reused until 5 minutes before.
        assert_eq!(cache_duration(0, Some(43_200)), "11h55m0s");
        // 4 minutes left: a quarter of them is the margin.
        assert_eq!(cache_duration(0, Some(240)), "3m0s");
    }

    #[test]
    fn requests_are_read_strictly() {
        let ok = br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"r:5000/a"}"#;
        assert_eq!(parse_request(ok).unwrap().image, "r:5000/a");
        for bad in [
            &br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","kind":"CredentialProviderRequest","image":"a"}"#[..],
            br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"Other","image":"a"}"#,
            br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":""}"#,
            br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"a","extra":1}"#,
            b"registry.example",
        ] {
            assert!(parse_request(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let with_token = br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"a","serviceAccountToken":"eyJ.secret.sig"}"#;
        let req = parse_request(with_token).unwrap();
        assert!(!format!("{req:?}").contains("secret"));
    }
}
