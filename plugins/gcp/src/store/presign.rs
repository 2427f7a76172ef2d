//! V4 signed URLs (`GOOG4-RSA-SHA256`): a GET or PUT of one object, usable
//! without any other credentials until it expires.
//!
//! The string to sign is signed with the service account's key when the
//! credentials hold one; otherwise (the metadata server's account) through
//! the IAM Credentials API's `signBlob`, with the account's access token.
//! User credentials cannot sign.

use std::time::Duration;

use base64::Engine as _;
use credhost_plugin_sdk::{expires_in, unix_now, Error as PluginError, ErrorKind, Method, Presigned, Secret};
use ring::digest::{digest, SHA256};

use crate::{
    auth::{key::Credentials, Source},
    error::status_error,
    store::Gcs,
};

/// The longest a V4 signature lasts.
const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Characters a V4 canonical URI and query keep as they are.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes `s` as V4 signing does (upper-case hex), keeping `/`
/// when `keep_slash`.
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDD` and `YYYYMMDDTHHMMSSZ` of Unix time `t` (UTC).
pub fn timestamp(t: i64) -> (String, String) {
    let (year, month, day, h, m, s) = credhost_plugin_sdk::api::rules::utc_fields(t);
    let date = format!("{year:04}{month:02}{day:02}");
    let stamp = format!("{date}T{h:02}{m:02}{s:02}Z");
    (date, stamp)
}

/// What is signed, and how to finish the URL.
pub struct Unsigned {
    /// The URL without its signature.
    pub url: String,
    /// The V4 string to sign.
    pub string_to_sign: String,
}

/// The header a create-only signed PUT carries (and signs): the object
/// must not exist.
pub const IF_ABSENT_HEADER: (&str, &str) = ("x-goog-if-generation-match", "0");

/// The unsigned URL and string to sign for `method` on `bucket`/`name` at
/// `base` (scheme and host of the storage endpoint), by `email`, at `now`;
/// with `if_absent`, [`IF_ABSENT_HEADER`] is among the signed headers.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    base: &reqwest::Url,
    method: Method,
    bucket: &str,
    name: &str,
    email: &str,
    now: i64,
    expires: Duration,
    if_absent: bool,
) -> Unsigned {
    let host = match base.port() {
        Some(p) => format!("{}:{p}", base.host_str().unwrap_or_default()),
        None => base.host_str().unwrap_or_default().to_owned(),
    };
    let path = format!("/{}/{}", encode(bucket, false), encode(name, true));
    let (date, stamp) = timestamp(now);
    let scope = format!("{date}/auto/storage/goog4_request");
    let mut query = [
        ("X-Goog-Algorithm", "GOOG4-RSA-SHA256".to_owned()),
        ("X-Goog-Credential", format!("{email}/{scope}")),
        ("X-Goog-Date", stamp.clone()),
        ("X-Goog-Expires", expires.as_secs().to_string()),
        ("X-Goog-SignedHeaders", if if_absent { "host;x-goog-if-generation-match" } else { "host" }.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (encode(k, false), encode(&v, false)))
    .collect::<Vec<_>>();
    query.sort();
    let query = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let verb = match method {
        Method::Get => "GET",
        Method::Put => "PUT",
    };
    let canonical = if if_absent {
        let (name, value) = IF_ABSENT_HEADER;
        format!("{verb}\n{path}\n{query}\nhost:{host}\n{name}:{value}\n\nhost;{name}\nUNSIGNED-PAYLOAD")
    } else {
        format!("{verb}\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD")
    };
    let hashed = hex_of(digest(&SHA256, canonical.as_bytes()).as_ref());
    Unsigned {
        url: format!("{}://{host}{path}?{query}", base.scheme()),
        string_to_sign: format!("GOOG4-RSA-SHA256\n{stamp}\n{scope}\n{hashed}"),
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A V4 signed URL for `method` on `bucket`/`name`, valid for `expires`;
/// with `if_absent` (a PUT) it can only create the object.
pub async fn presign(
    gcs: &Gcs,
    iam: &reqwest::Url,
    method: Method,
    bucket: &str,
    name: &str,
    expires: Duration,
    if_absent: bool,
) -> Result<Presigned, PluginError> {
    if expires > MAX_EXPIRY || expires.is_zero() {
        return Err(PluginError::new(ErrorKind::INVALID_INPUT, "a V4 signed URL lasts from 1 second to 7 days"));
    }
    let source = gcs.tokens().source();
    let email = signer_email(gcs, source).await?;
    let unsigned = prepare(&gcs.base_url(), method, bucket, name, &email, unix_now(), expires, if_absent);
    let signature = match source {
        Source::File(Credentials::ServiceAccount(key)) => key.sign(unsigned.string_to_sign.as_bytes())?,
        _ => sign_blob(gcs, iam, &email, unsigned.string_to_sign.as_bytes()).await?,
    };
    Ok(Presigned {
        method,
        url: Secret::new(format!("{}&X-Goog-Signature={}", unsigned.url, hex_of(&signature))),
        headers: if if_absent {
            vec![(IF_ABSENT_HEADER.0.to_owned(), IF_ABSENT_HEADER.1.to_owned())]
        } else {
            Vec::new()
        },
        expires_at: expires_in(expires),
    })
}

/// The service account that signs: the key's, or the metadata server's.
async fn signer_email(gcs: &Gcs, source: &Source) -> Result<String, PluginError> {
    match source {
        Source::File(Credentials::ServiceAccount(key)) => Ok(key.client_email.clone()),
        Source::File(Credentials::AuthorizedUser(_)) => Err(PluginError::new(
            ErrorKind::UNSUPPORTED,
            "presigned URLs need a service account (a key, or the metadata server's account); user credentials cannot sign them",
        )),
        Source::Metadata { host, .. } => gcs.tokens().metadata_email(host).await,
    }
}

/// Signs `data` as `email` through the IAM Credentials API.
async fn sign_blob(gcs: &Gcs, iam: &reqwest::Url, email: &str, data: &[u8]) -> Result<Vec<u8>, PluginError> {
    let mut url = iam.clone();
    url.set_path(&format!("/v1/projects/-/serviceAccounts/{}:signBlob", encode(email, false)));
    let what = format!("IAM signBlob for {email}");
    let body = serde_json::json!({"payload": base64::engine::general_purpose::STANDARD.encode(data)});
    let resp = gcs.send(&what, |http| http.post(url.clone()).json(&body)).await?;
    let status = resp.status();
    let text = crate::error::read_text(resp, &what).await?;
    if !status.is_success() {
        return Err(status_error(&what, status, &text));
    }
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| PluginError::new(ErrorKind::OTHER, format!("{what}: the answer is not JSON")))?;
    v["signedBlob"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| PluginError::new(ErrorKind::OTHER, format!("{what}: the answer holds no signedBlob")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_encoding() {
        assert_eq!(timestamp(0), ("19700101".into(), "19700101T000000Z".into()));
        assert_eq!(timestamp(1_700_000_000), ("20231114".into(), "20231114T221320Z".into()));
        assert_eq!(encode("a b/ü+c", true), "a%20b/%C3%BC%2Bc");
        assert_eq!(encode("a/b", false), "a%2Fb");
    }

    #[test]
    fn canonical_form() {
        let base = reqwest::Url::parse("http://127.0.0.1:9/").unwrap();
        let u = prepare(
            &base,
            Method::Get,
            "projects",
            "dir/1 2.zip",
            "sa@p.iam.gserviceaccount.com",
            1_700_000_000,
            Duration::from_secs(600),
            false,
        );
        assert_eq!(
            u.url,
            "http://127.0.0.1:9/projects/dir/1%202.zip?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam.gserviceaccount.com%2F20231114%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20231114T221320Z&X-Goog-Expires=600&X-Goog-SignedHeaders=host"
        );
        assert!(u
            .string_to_sign
            .starts_with("GOOG4-RSA-SHA256\n20231114T221320Z\n20231114/auto/storage/goog4_request\n"));
    }

    #[test]
    fn a_create_only_put_signs_its_precondition() {
        let base = reqwest::Url::parse("http://127.0.0.1:9/").unwrap();
        let at = |if_absent| {
            prepare(&base, Method::Put, "projects", "1.zip", "sa@p", 1_700_000_000, Duration::from_secs(600), if_absent)
        };
        let (plain, guarded) = (at(false), at(true));
        assert!(guarded.url.ends_with("X-Goog-SignedHeaders=host%3Bx-goog-if-generation-match"), "{}", guarded.url);
        assert_ne!(plain.string_to_sign, guarded.string_to_sign);
    }
}
