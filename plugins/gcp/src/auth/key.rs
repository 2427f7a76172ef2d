//! Credential files: service-account keys and gcloud's `authorized_user`
//! credentials, parsed without ever echoing their content, and the RS256 JWT
//! assertion a service account trades for an access token.

use std::fmt;

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine as _,
};
use credhost_plugin_sdk::{Error as PluginError, ErrorKind, Secret};
use ring::{rand::SystemRandom, signature::RsaKeyPair};
use zeroize::Zeroize as _;

/// Google's OAuth token endpoint, for files that do not name one.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// How long a JWT assertion is valid (Google's maximum).
const ASSERTION_LIFETIME: i64 = 3600;

/// A parsed credentials file.
pub enum Credentials {
    /// A service-account key.
    ServiceAccount(ServiceAccountKey),
    /// gcloud's user credentials (`gcloud auth application-default login`).
    AuthorizedUser(AuthorizedUser),
}

/// A service-account key (`"type": "service_account"`).
pub struct ServiceAccountKey {
    /// The account, e.g. `deployer@my-project.iam.gserviceaccount.com`.
    pub client_email: String,
    /// The key's id, sent as the JWT `kid`.
    pub private_key_id: Option<String>,
    /// Where assertions are exchanged for tokens (the JWT audience).
    pub token_uri: String,
    key_pair: RsaKeyPair,
    /// The key JSON as read, handed to build jobs.
    pub json: Secret,
    /// Where the key came from, for messages (`key file /x.json`).
    pub origin: String,
}

/// gcloud's user credentials (`"type": "authorized_user"`).
pub struct AuthorizedUser {
    /// The OAuth client.
    pub client_id: String,
    /// The OAuth client's secret.
    pub client_secret: Secret,
    /// The long-lived refresh token.
    pub refresh_token: Secret,
    /// Where the refresh token is exchanged (Google's unless the file says).
    pub token_uri: String,
    /// The JSON as read, handed to build jobs.
    pub json: Secret,
    /// Where the credentials came from, for messages.
    pub origin: String,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("private_key", &credhost_plugin_sdk::api::REDACTED)
            .field("origin", &self.origin)
            .finish()
    }
}

impl fmt::Debug for AuthorizedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizedUser")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("refresh_token", &self.refresh_token)
            .field("token_uri", &self.token_uri)
            .field("origin", &self.origin)
            .finish()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceAccount(k) => k.fmt(f),
            Self::AuthorizedUser(u) => u.fmt(f),
        }
    }
}

fn invalid(origin: &str, why: impl fmt::Display) -> PluginError {
    PluginError::new(ErrorKind::UNAUTHENTICATED, format!("invalid credentials in {origin}: {why}"))
}

impl Credentials {
    /// Parses credentials JSON read from `origin`. Errors say what is wrong
    /// and where, never what the file holds.
    pub fn parse(json: Secret, origin: &str) -> Result<Self, PluginError> {
        // serde_json's syntax errors carry positions only; type errors could
        // quote values, so the fields are taken out of a generic map instead.
        let mut map = match serde_json::from_str::<serde_json::Value>(json.expose()) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => return Err(invalid(origin, "not a JSON object")),
            Err(e) => return Err(invalid(origin, format!("not JSON ({e})"))),
        };
        let kind = take_string(&mut map, "type").ok_or_else(|| invalid(origin, "no `type` field"))?;
        let origin = origin.to_owned();
        match kind.expose() {
            "service_account" => {
                let required = |map: &mut serde_json::Map<String, serde_json::Value>, field: &str| {
                    take_string(map, field).ok_or_else(|| invalid(&origin, format!("no `{field}` field")))
                };
                let client_email = required(&mut map, "client_email")?.expose().to_owned();
                let pem = required(&mut map, "private_key")?;
                let key_pair = parse_private_key(&pem).map_err(|why| invalid(&origin, why))?;
                Ok(Self::ServiceAccount(ServiceAccountKey {
                    client_email,
                    private_key_id: take_string(&mut map, "private_key_id").map(|s| s.expose().to_owned()),
                    token_uri: token_uri(&mut map, &origin)?,
                    key_pair,
                    json,
                    origin,
                }))
            }
            "authorized_user" => {
                let required = |map: &mut serde_json::Map<String, serde_json::Value>, field: &str| {
                    take_string(map, field).ok_or_else(|| invalid(&origin, format!("no `{field}` field")))
                };
                Ok(Self::AuthorizedUser(AuthorizedUser {
                    client_id: required(&mut map, "client_id")?.expose().to_owned(),
                    client_secret: required(&mut map, "client_secret")?,
                    refresh_token: required(&mut map, "refresh_token")?,
                    token_uri: token_uri(&mut map, &origin)?,
                    json,
                    origin,
                }))
            }
            other => Err(invalid(
                &origin,
                format!("credentials of type {:?} are not supported (use a service-account key or authorized_user credentials)", truncate(other)),
            )),
        }
    }

    /// The JSON as read.
    pub fn json(&self) -> &Secret {
        match self {
            Self::ServiceAccount(k) => &k.json,
            Self::AuthorizedUser(u) => &u.json,
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Removes `field` from the map and returns it when it is a non-empty string;
/// the string moves into a [`Secret`] so that it is wiped when dropped.
fn take_string(map: &mut serde_json::Map<String, serde_json::Value>, field: &str) -> Option<Secret> {
    match map.remove(field) {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(Secret::new(s)),
        Some(serde_json::Value::String(mut s)) => {
            s.zeroize();
            None
        }
        _ => None,
    }
}

fn token_uri(map: &mut serde_json::Map<String, serde_json::Value>, origin: &str) -> Result<String, PluginError> {
    let Some(uri) = take_string(map, "token_uri") else {
        return Ok(GOOGLE_TOKEN_URI.to_owned());
    };
    let uri = uri.expose().to_owned();
    match reqwest::Url::parse(&uri) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(uri),
        _ => Err(invalid(origin, format!("`token_uri` {:?} is not an http(s) URL", truncate(&uri)))),
    }
}

/// Decodes a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, what Google
/// issues) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
fn parse_private_key(pem: &Secret) -> Result<RsaKeyPair, String> {
    let text = pem.expose().trim();
    let (label, body) = text
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
        .ok_or("`private_key` is not a PEM block")?;
    let end = format!("-----END {label}-----");
    let body = body.trim().strip_suffix(end.as_str()).ok_or("`private_key` has no matching PEM end line")?;
    let mut b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let decoded = STANDARD.decode(b64.as_bytes());
    b64.zeroize();
    let mut der = decoded.map_err(|_| "`private_key` is not valid base64 inside its PEM block")?;
    let parsed = match label {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        _ => {
            der.zeroize();
            return Err(format!("`private_key` is a {:?} PEM block, not an RSA private key", truncate(label)));
        }
    };
    der.zeroize();
    parsed.map_err(|e| format!("`private_key` is not a usable RSA key ({e})"))
}

impl ServiceAccountKey {
    /// A signed JWT asking `token_uri` for a token with `scope`, issued at
    /// `now` (Unix seconds).
    pub fn assertion(&self, scope: &str, now: i64) -> Result<Secret, PluginError> {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = kid.as_str().into();
        }
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": scope,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0u8; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(&ring::signature::RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature)
            .map_err(|_| PluginError::new(ErrorKind::OTHER, format!("cannot sign with the key in {}", self.origin)))?;
        Ok(Secret::new(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))))
    }

    /// An RSA-SHA256 (PKCS#1 v1.5) signature of `data` with the key.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, PluginError> {
        let mut signature = vec![0u8; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(&ring::signature::RSA_PKCS1_SHA256, &SystemRandom::new(), data, &mut signature)
            .map_err(|_| PluginError::new(ErrorKind::OTHER, format!("cannot sign with the key in {}", self.origin)))?;
        Ok(signature)
    }

    /// The public half, DER (PKCS#1 `RSAPublicKey`), for verifying assertions.
    pub fn public_key_der(&self) -> &[u8] {
        self.key_pair.public().as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_say_what_is_wrong_without_quoting_them() {
        let cases = [
            ("not json at all hunter2", "not JSON"),
            ("\"hunter2\"", "not a JSON object"),
            (r#"{"private_key":"hunter2"}"#, "no `type` field"),
            (r#"{"type":"service_account","client_email":"a@b","private_key":"hunter2"}"#, "not a PEM block"),
            (
                r#"{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\naHVudGVyMg==\n-----END PRIVATE KEY-----\n"}"#,
                "not a usable RSA key",
            ),
            (r#"{"type":"service_account","private_key":"hunter2"}"#, "no `client_email` field"),
            (r#"{"type":"authorized_user","client_id":"c","client_secret":"hunter2"}"#, "no `refresh_token` field"),
            (r#"{"type":"external_account","x":"hunter2"}"#, "\"external_account\" are not supported"),
            (
                r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"hunter2","token_uri":"file:///x"}"#,
                "`token_uri`",
            ),
        ];
        for (json, expected) in cases {
            let e = Credentials::parse(Secret::new(json), "key file /k.json").unwrap_err();
            assert_eq!(e.kind, ErrorKind::UNAUTHENTICATED, "{json}");
            assert!(e.message.starts_with("invalid credentials in key file /k.json: "), "{}", e.message);
            assert!(e.message.contains(expected), "{json}: {}", e.message);
            assert!(!e.message.contains("hunter2"), "{}", e.message);
        }
    }

    #[test]
    fn authorized_user_defaults_to_google_and_redacts() {
        let json =
            r#"{"type":"authorized_user","client_id":"cid","client_secret":"hunter2","refresh_token":"hunter3"}"#;
        let c = Credentials::parse(Secret::new(json), "gcloud file").unwrap();
        let Credentials::AuthorizedUser(u) = &c else { panic!("wrong type") };
        assert_eq!(u.token_uri, GOOGLE_TOKEN_URI);
        assert_eq!(u.refresh_token.expose(), "hunter3");
        assert_eq!(c.json().expose(), json);
        assert_eq!(
            format!("{c:?}"),
            "AuthorizedUser { client_id: \"cid\", client_secret: Secret(<redacted>), refresh_token: Secret(<redacted>), \
             token_uri: \"https://oauth2.googleapis.com/token\", origin: \"gcloud file\" }"
        );
    }
}
