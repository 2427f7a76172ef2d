//! Build-job grants on S3 and STS: a session cut from a role by an inline
//! session policy (which STS intersects with the role's own policies), and
//! what a job is handed from it: a presigned GET of one object and, when
//! asked, the session's keys.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use credhost_plugin_sdk::{error_chain, Entry, Error as PluginError, ErrorKind, GrantPart, Secret};
use serde_json::{json, Value};

use crate::{build_client, presign_get, store::plugin_error, ClientSettings};

/// STS's limit on an inline session policy, in characters.
pub const MAX_SESSION_POLICY: usize = 2048;

/// An inline session policy: `Allow` statements only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionPolicy {
    statements: Vec<Value>,
}

/// The ARN of one S3 object.
pub fn object_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

/// Refuses a resource name that an IAM policy would read as a pattern
/// (`*`, `?`) or a policy variable (`${...}`): it could match more than the
/// one resource meant.
pub fn check_literal(what: &str, name: &str) -> Result<(), PluginError> {
    if let Some(c) = name.chars().find(|c| matches!(c, '*' | '?' | '$')) {
        return Err(PluginError::new(
            ErrorKind::INVALID_INPUT,
            format!("{what} {name:?} contains `{c}`, which a session policy reads as a pattern: it cannot be granted narrowly"),
        ));
    }
    Ok(())
}

impl SessionPolicy {
    /// A policy allowing `s3:GetObject` of `bucket`/`key` and nothing else.
    pub fn read_object(bucket: &str, key: &str) -> Result<Self, PluginError> {
        check_literal("the project name", key)?;
        let mut p = Self::default();
        p.allow(&["s3:GetObject"], &[object_arn(bucket, key)]);
        Ok(p)
    }

    /// Adds a statement allowing `actions` on `resources`.
    pub fn allow(&mut self, actions: &[&str], resources: &[String]) {
        let resource = match resources {
            [one] => json!(one),
            many => json!(many),
        };
        self.statements.push(json!({ "Effect": "Allow", "Action": actions, "Resource": resource }));
    }

    /// The policy document, compact; refused when over STS's limit, before
    /// anything is asked of STS.
    pub fn to_json(&self) -> Result<String, PluginError> {
        let doc = json!({ "Version": "2012-10-17", "Statement": self.statements }).to_string();
        if doc.len() > MAX_SESSION_POLICY {
            return Err(PluginError::new(
                ErrorKind::INVALID_INPUT,
                format!(
                    "the grant's session policy is {} characters, over STS's limit of {MAX_SESSION_POLICY}: ask for fewer repositories",
                    doc.len()
                ),
            ));
        }
        Ok(doc)
    }
}

/// An STS error as a plugin error, by what the caller should do next.
pub fn sdk_error<E, R>(what: &str, e: SdkError<E, R>) -> PluginError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (kind, retryable) = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => (ErrorKind::UNAVAILABLE, true),
        SdkError::ServiceError(se) => match se.err().code() {
            Some(
                "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "ExpiredTokenException"
                | "ExpiredToken",
            ) => (ErrorKind::UNAUTHENTICATED, false),
            Some("AccessDeniedException" | "AccessDenied") => (ErrorKind::PERMISSION_DENIED, false),
            Some("ThrottlingException" | "ServerException" | "ServiceUnavailable") => (ErrorKind::UNAVAILABLE, true),
            Some("MalformedPolicyDocument" | "PackedPolicyTooLarge" | "ValidationError") => {
                (ErrorKind::INVALID_INPUT, false)
            }
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
        other => error_chain(other),
    };
    PluginError::new(kind, format!("{what} failed: {detail}")).retryable(retryable)
}

/// What to assume.
pub struct AssumeRole<'a> {
    /// The role's ARN.
    pub role_arn: &'a str,
    /// The role's external id, when its trust policy asks for one.
    pub external_id: Option<&'a str>,
    /// The session name STS records (and CloudTrail shows).
    pub session_name: &'a str,
    /// The inline session policy.
    pub policy: &'a SessionPolicy,
    /// The session's lifetime.
    pub ttl: Duration,
}

/// A session's credentials and when they end.
pub struct Session {
    /// The keys.
    pub credentials: Credentials,
    /// Unix seconds at which they stop working.
    pub expires_at: i64,
}

/// Assumes a role with an inline session policy.
pub async fn assume_role(sts: &aws_sdk_sts::Client, a: &AssumeRole<'_>) -> Result<Session, PluginError> {
    let policy = a.policy.to_json()?;
    let duration = i32::try_from(a.ttl.as_secs()).unwrap_or(i32::MAX);
    let mut req = sts
        .assume_role()
        .role_arn(a.role_arn)
        .role_session_name(a.session_name)
        .policy(policy)
        .duration_seconds(duration);
    if let Some(id) = a.external_id {
        req = req.external_id(id);
    }
    let out = req.send().await.map_err(|e| sdk_error(&format!("STS AssumeRole of {}", a.role_arn), e))?;
    session("AssumeRole", a.role_arn, a.session_name, out.credentials())
}

/// The session STS answered `call` of `role` with.
fn session(
    call: &str,
    role: &str,
    name: &str,
    c: Option<&aws_sdk_sts::types::Credentials>,
) -> Result<Session, PluginError> {
    let c = c.ok_or_else(|| {
        PluginError::new(ErrorKind::OTHER, format!("STS answered {call} of {role} without credentials"))
    })?;
    let expires_at = c.expiration().secs();
    tracing::debug!("STS session {name} of {role} until {expires_at} ({call})");
    Ok(Session {
        credentials: Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            "credhost-session",
        ),
        expires_at,
    })
}

/// A web identity to assume a role with: the caller holds no AWS keys, STS
/// verifies the token against the role's trusted OIDC provider.
pub struct WebIdentity<'a> {
    /// The role's ARN.
    pub role_arn: &'a str,
    /// The session name STS records (and CloudTrail shows).
    pub session_name: &'a str,
    /// The inline session policy, if the session is narrowed further than
    /// the role.
    pub policy: Option<&'a SessionPolicy>,
    /// The OIDC token (a Kubernetes service-account token).
    pub token: &'a Secret,
    /// The session's lifetime.
    pub ttl: Duration,
}

/// Assumes a role with a web identity token (unsigned: no keys needed).
pub async fn assume_role_with_web_identity(
    sts: &aws_sdk_sts::Client,
    w: &WebIdentity<'_>,
) -> Result<Session, PluginError> {
    let duration = i32::try_from(w.ttl.as_secs()).unwrap_or(i32::MAX);
    let mut req = sts
        .assume_role_with_web_identity()
        .role_arn(w.role_arn)
        .role_session_name(w.session_name)
        .web_identity_token(w.token.expose())
        .duration_seconds(duration);
    if let Some(policy) = w.policy {
        req = req.policy(policy.to_json()?);
    }
    let out =
        req.send().await.map_err(|e| sdk_error(&format!("STS AssumeRoleWithWebIdentity of {}", w.role_arn), e))?;
    session("AssumeRoleWithWebIdentity", w.role_arn, w.session_name, out.credentials())
}

/// An STS client for `endpoint` (AWS's regional endpoint when `None`) with
/// static keys, or none (for the unsigned web-identity call).
pub fn sts_client(endpoint: Option<&str>, region: &str, credentials: Credentials) -> aws_sdk_sts::Client {
    sts_client_with(endpoint, region, Some(credentials))
}

/// [`sts_client`], with keys or without.
pub fn sts_client_with(endpoint: Option<&str>, region: &str, credentials: Option<Credentials>) -> aws_sdk_sts::Client {
    let mut b = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new(region.to_owned()));
    if let Some(credentials) = credentials {
        b = b.credentials_provider(credentials);
    }
    b = b.timeout_config(
        aws_sdk_sts::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(20))
            .operation_timeout(Duration::from_secs(60))
            .build(),
    );
    if let Some(url) = endpoint {
        b = b.endpoint_url(url);
    }
    aws_sdk_sts::Client::from_conf(b.build())
}

/// Where the object is, to sign for it.
pub struct ObjectPlace<'a> {
    /// The S3 endpoint (`None`: AWS's).
    pub endpoint: Option<&'a str>,
    /// The signing region.
    pub region: &'a str,
    /// Path-style addressing.
    pub force_path_style: bool,
    /// The bucket.
    pub bucket: &'a str,
    /// The key.
    pub key: &'a str,
}

/// A presigned GET of the object with `credentials`, working for `ttl`.
pub async fn object_url(
    place: &ObjectPlace<'_>,
    credentials: &Credentials,
    ttl: Duration,
) -> Result<Secret, PluginError> {
    let client = build_client(&ClientSettings {
        endpoint: place.endpoint.map(str::to_owned),
        region: place.region.to_owned(),
        access_key_id: credentials.access_key_id().to_owned(),
        secret_access_key: credentials.secret_access_key().to_owned(),
        session_token: credentials.session_token().map(str::to_owned),
        force_path_style: place.force_path_style,
    });
    let signed = presign_get(&client, place.bucket, place.key, ttl).await.map_err(plugin_error)?;
    Ok(Secret::new(signed.url))
}

/// The grant's part for a URL reading the object.
pub fn url_part(place: &ObjectPlace<'_>, how: &str, expires_at: i64) -> GrantPart {
    GrantPart::new(
        "project",
        "object",
        format!("GET of {} only ({how})", object_arn(place.bucket, place.key)),
        Some(expires_at),
    )
}

/// A session's keys as a job's entries, and their part.
pub fn key_entries(place: &ObjectPlace<'_>, session: &Session) -> (Vec<Entry>, GrantPart) {
    let c = &session.credentials;
    let mut entries = vec![
        Entry::plain("AWS_ACCESS_KEY_ID", c.access_key_id()),
        Entry::secret("AWS_SECRET_ACCESS_KEY", Secret::new(c.secret_access_key())),
    ];
    if let Some(t) = c.session_token() {
        entries.push(Entry::secret("AWS_SESSION_TOKEN", Secret::new(t)));
    }
    entries.push(Entry::plain("AWS_DEFAULT_REGION", place.region));
    if let Some(e) = place.endpoint {
        entries.push(Entry::plain("AWS_ENDPOINT_URL_S3", e));
    }
    entries.push(Entry::plain("PROJECTS_BUCKET", place.bucket));
    let part = GrantPart::new(
        "keys",
        "object",
        format!("session keys allowing s3:GetObject on {} only", object_arn(place.bucket, place.key)),
        Some(session.expires_at),
    );
    (entries, part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_object_policy() {
        let p = SessionPolicy::read_object("projects", "team/app.zip").unwrap();
        assert_eq!(
            p.to_json().unwrap(),
            r#"{"Statement":[{"Action":["s3:GetObject"],"Effect":"Allow","Resource":"arn:aws:s3:::projects/team/app.zip"}],"Version":"2012-10-17"}"#
        );
        for bad in ["a*.zip", "a?.zip", "${aws:username}.zip"] {
            assert_eq!(SessionPolicy::read_object("projects", bad).unwrap_err().kind, ErrorKind::INVALID_INPUT);
        }
    }

    #[test]
    fn policies_over_the_limit_are_refused_before_sts() {
        let mut p = SessionPolicy::read_object("projects", "app.zip").unwrap();
        let many: Vec<String> =
            (0..40).map(|i| format!("arn:aws:ecr:us-east-1:123456789012:repository/r{i}")).collect();
        p.allow(&["ecr:BatchGetImage"], &many);
        let err = p.to_json().unwrap_err();
        assert!(err.message.contains("over STS's limit of 2048"), "{}", err.message);
    }
}
