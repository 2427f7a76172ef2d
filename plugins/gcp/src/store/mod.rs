//! The GCS JSON API: URLs, authorized requests with retries, bucket and
//! object metadata.

use std::sync::Arc;

use credhost_plugin_sdk::{Error as PluginError, ErrorKind, Secret};
use reqwest::{RequestBuilder, Response, StatusCode, Url};

use crate::{
    auth::token::TokenSource,
    error::{is_transient, is_transient_status, send_error, status_error},
    retry::{Budget, Repeat, RETRY_BUDGET},
};

pub mod checksum;
pub mod download;
pub mod presign;
pub mod upload;

use checksum::Reported;

pub use crate::retry::{backoff, ATTEMPTS};

/// A storage endpoint and the tokens to use on it.
pub struct Gcs {
    base: Url,
    http: reqwest::Client,
    tokens: Arc<TokenSource>,
}

/// What GCS says about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The generation (content version), when reported.
    pub generation: Option<String>,
    /// Size and checksums.
    pub reported: Reported,
}

impl Gcs {
    /// A client for the API under `base` (e.g. `https://storage.googleapis.com`).
    pub fn new(base: Url, http: reqwest::Client, tokens: Arc<TokenSource>) -> Self {
        Self { base, http, tokens }
    }

    /// The endpoint's base URL.
    pub fn base_url(&self) -> Url {
        self.base.clone()
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The token source.
    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // Each segment is percent-encoded on its own, so a `/` inside an
            // object name becomes %2F as the JSON API requires.
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `/storage/v1/b/BUCKET`.
    pub fn bucket_url(&self, bucket: &str) -> Url {
        self.url(&["storage", "v1", "b", bucket])
    }

    /// `/storage/v1/b/BUCKET/o/NAME`.
    pub fn object_url(&self, bucket: &str, name: &str) -> Url {
        self.url(&["storage", "v1", "b", bucket, "o", name])
    }

    /// `/upload/storage/v1/b/BUCKET/o`.
    pub fn upload_url(&self, bucket: &str) -> Url {
        self.url(&["upload", "storage", "v1", "b", bucket, "o"])
    }

    /// Adds the current bearer token; returns the token too, so that a 401
    /// can retire exactly that token.
    pub async fn authorize(&self, rb: RequestBuilder) -> Result<(RequestBuilder, Secret), PluginError> {
        let token = self.tokens.token().await?;
        Ok((rb.bearer_auth(token.secret.expose()), token.secret))
    }

    /// Sends the idempotent request `build` makes, with the current token;
    /// see [`Gcs::send_with`].
    pub async fn send(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, PluginError> {
        self.send_with(what, Repeat::Idempotent, build).await
    }

    /// Sends the request `build` makes, with the current token. Sends it
    /// again, as `repeat` allows, when no answer comes or the answer is
    /// 408/429/5xx: at most [`ATTEMPTS`] times, after jittered pauses
    /// ([`backoff`]), none starting later than [`RETRY_BUDGET`] after the
    /// first attempt; and once after a 401 with a fresh token. Returns the
    /// last answer whatever its status.
    pub async fn send_with(
        &self,
        what: &str,
        repeat: Repeat,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, PluginError> {
        let budget = Budget::new(RETRY_BUDGET);
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let (rb, token) = self.authorize(build(&self.http)).await?;
            let sent = rb.send().await;
            let why = match &sent {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !refreshed => {
                    tracing::debug!("{what}: token refused (401); fetching a new one");
                    self.tokens.reject(&token).await;
                    refreshed = true;
                    continue;
                }
                Ok(r) if is_transient_status(r.status()) => Some(r.status().to_string()),
                Err(e) if is_transient(e) && (repeat == Repeat::Idempotent || e.is_connect()) => Some(e.to_string()),
                _ => None,
            };
            if let Some(why) = why {
                let pause = backoff(attempt);
                if attempt < ATTEMPTS && budget.allows(pause) {
                    tracing::debug!("{what}: {why} (attempt {attempt}), retrying");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            return sent.map_err(|e| send_error(what, &e));
        }
    }

    /// Reads the bucket's metadata: it exists and the token may see it.
    pub async fn bucket(&self, bucket: &str) -> Result<(), PluginError> {
        let what = format!("bucket gs://{bucket} at {}", self.endpoint());
        let url = self.bucket_url(bucket);
        let resp = self.send(&what, |http| http.get(url.clone())).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = crate::error::read_text(resp, &what).await.unwrap_or_default();
        Err(status_error(&what, status, &body))
    }

    /// The object's metadata; [`ErrorKind::NOT_FOUND`] when it does not exist.
    pub async fn object(&self, bucket: &str, name: &str) -> Result<ObjectMeta, PluginError> {
        let what = format!("object gs://{bucket}/{name}");
        let url = self.object_url(bucket, name);
        let resp = self.send(&what, |http| http.get(url.clone())).await?;
        let status = resp.status();
        let body = crate::error::read_text(resp, &what).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(PluginError::new(
                ErrorKind::NOT_FOUND,
                format!("no object gs://{bucket}/{name} at {}", self.endpoint()),
            ));
        }
        if !status.is_success() {
            return Err(status_error(&what, status, &body));
        }
        parse_object(&body, &what)
    }

    /// Deletes the object, only while it is still `generation` (so that a
    /// newer upload by someone else survives).
    pub async fn delete(&self, bucket: &str, name: &str, generation: Option<&str>) -> Result<(), PluginError> {
        let what = format!("deleting gs://{bucket}/{name}");
        let mut url = self.object_url(bucket, name);
        if let Some(g) = generation {
            url.query_pairs_mut().append_pair("ifGenerationMatch", g);
        }
        let resp = self.send(&what, |http| http.delete(url.clone())).await?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_FOUND || status == StatusCode::PRECONDITION_FAILED {
            return Ok(());
        }
        let body = crate::error::read_text(resp, &what).await.unwrap_or_default();
        Err(status_error(&what, status, &body))
    }
}

/// Reads an object resource: `size` (a decimal string in the JSON API),
/// `generation`, `crc32c`, `md5Hash`.
pub fn parse_object(body: &str, what: &str) -> Result<ObjectMeta, PluginError> {
    let unreadable = |why: &str| {
        PluginError::new(ErrorKind::OTHER, format!("{what}: unusable object resource from the server: {why}"))
    };
    let v: serde_json::Value = serde_json::from_str(body).map_err(|_| unreadable("not JSON"))?;
    let text = |key: &str| match &v[key] {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let size = text("size").and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| unreadable("no size"))?;
    Ok(ObjectMeta {
        generation: text("generation"),
        reported: Reported { size, crc32c: text("crc32c"), md5: text("md5Hash") },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_resources() {
        let m = parse_object(r#"{"size":"12","generation":"171","crc32c":"AAAAAA==","md5Hash":"x"}"#, "t").unwrap();
        assert_eq!(m.generation.as_deref(), Some("171"));
        assert_eq!(m.reported, Reported { size: 12, crc32c: Some("AAAAAA==".into()), md5: Some("x".into()) });
        let m = parse_object(r#"{"size":5,"generation":3}"#, "t").unwrap();
        assert_eq!((m.reported.size, m.generation.as_deref(), m.reported.md5), (5, Some("3"), None));
        assert!(parse_object(r#"{"generation":"1"}"#, "t").is_err());
    }
}
