//! The one error type of this crate, classified by what the caller should do.

use std::fmt;
use std::path::Path;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, chosen by what the caller should do next.
///
/// New kinds may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransferErrorKind {
    /// The object or the bucket does not exist.
    NotFound,
    /// The credentials were rejected: unknown access key, wrong secret
    /// (signature mismatch), expired or invalid session token, clock skew.
    Unauthenticated,
    /// The credentials are valid but not allowed to do this.
    PermissionDenied,
    /// The request itself is wrong: bad options, bucket name, key, region or
    /// endpoint; the server does not implement the request.
    InvalidInput,
    /// The service could not be reached or answered with a transient failure:
    /// connection refused, timeout, stalled stream, throttling, 5xx.
    Unavailable,
    /// The data does not match its size or CRC32C: on download against what
    /// the upload recorded, on upload against what the server received or
    /// against the file read a moment earlier (it changed while uploading).
    Integrity,
    /// Reading or writing the local file failed.
    Io,
    /// A create-only upload found an object of its name (see
    /// [`TransferOptions::if_absent`](crate::TransferOptions::if_absent)).
    AlreadyExists,
    /// Anything else.
    Other,
}

impl TransferErrorKind {
    /// Short lower-case phrase used in messages.
    fn phrase(self) -> &'static str {
        match self {
            Self::NotFound => "not found",
            Self::Unauthenticated => "credentials rejected",
            Self::PermissionDenied => "access denied",
            Self::InvalidInput => "request rejected",
            Self::Unavailable => "service unavailable",
            Self::Integrity => "data integrity check failed",
            Self::Io => "local i/o error",
            Self::AlreadyExists => "the object exists already",
            Self::Other => "request failed",
        }
    }
}

/// A failed transfer or check.
///
/// `Display` is one lower-case sentence naming the operation and the reason,
/// e.g. `upload of projects/x.zip failed: credentials rejected
/// (InvalidAccessKeyId)`; the underlying SDK or I/O error comes through
/// [`source()`](std::error::Error::source). Neither contains credentials.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransferError {
    kind: TransferErrorKind,
    message: String,
    retryable: bool,
    code: Option<String>,
    status: Option<u16>,
    #[source]
    source: Option<BoxError>,
}

impl TransferError {
    /// A new error; retryable exactly when `kind` is `Unavailable`.
    pub(crate) fn new(kind: TransferErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable: kind == TransferErrorKind::Unavailable,
            code: None,
            status: None,
            source: None,
        }
    }

    pub(crate) fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> TransferErrorKind {
        self.kind
    }

    /// Whether the same call may succeed if tried again later (transient
    /// network or server trouble, or the object changed while reading it).
    /// Requests were already retried inside the SDK before this error.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The S3 error code the server answered with, such as `NoSuchKey` or
    /// `SignatureDoesNotMatch`, when there was one.
    #[must_use]
    pub fn service_code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The HTTP status of the server's error answer, when the server answered.
    #[must_use]
    pub fn http_status(&self) -> Option<u16> {
        self.status
    }

    /// The message, the same text as `Display`.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The operation an error happened in, for messages:
/// `upload of bucket/key`, `check of bucket b`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op<'a> {
    verb: &'static str,
    bucket: &'a str,
    key: Option<&'a str>,
}

impl<'a> Op<'a> {
    pub(crate) fn upload(bucket: &'a str, key: &'a str) -> Self {
        Self { verb: "upload", bucket, key: Some(key) }
    }

    pub(crate) fn download(bucket: &'a str, key: &'a str) -> Self {
        Self { verb: "download", bucket, key: Some(key) }
    }

    pub(crate) fn check_bucket(bucket: &'a str) -> Self {
        Self { verb: "check", bucket, key: None }
    }

    pub(crate) fn presign(bucket: &'a str, key: &'a str) -> Self {
        Self { verb: "presigning", bucket, key: Some(key) }
    }

    pub(crate) fn delete(bucket: &'a str, key: &'a str) -> Self {
        Self { verb: "delete", bucket, key: Some(key) }
    }

    /// An error of `kind` in this operation: "`<op>` failed: `<detail>`".
    pub(crate) fn err(&self, kind: TransferErrorKind, detail: impl fmt::Display) -> TransferError {
        TransferError::new(kind, format!("{self} failed: {detail}"))
    }

    /// A local I/O error while doing `what` (e.g. "cannot read") to `path`.
    pub(crate) fn io(&self, what: &str, path: &Path, err: std::io::Error) -> TransferError {
        self.err(TransferErrorKind::Io, format_args!("{what} {}", path.display())).with_source(err)
    }

    /// Re-labels an error from `TransferOptions::validate` with this operation.
    pub(crate) fn wrap(&self, err: TransferError) -> TransferError {
        TransferError { message: format!("{self} failed: {}", err.message), ..err }
    }

    /// Classifies an SDK error.
    pub(crate) fn sdk<E>(&self, err: SdkError<E, HttpResponse>) -> TransferError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = match &err {
            SdkError::ServiceError(ctx) => Some(ctx.raw().status().as_u16()),
            _ => None,
        };
        let (kind, retryable, detail, code) = match &err {
            SdkError::ServiceError(ctx) => {
                let status = ctx.raw().status().as_u16();
                let code = ctx.err().code().map(str::to_owned);
                let (kind, retryable) = classify_service(status, code.as_deref());
                let request_id =
                    ctx.raw().headers().get("x-amz-request-id").or_else(|| ctx.err().meta().extra("aws_request_id"));
                let detail = service_detail(kind, status, code.as_deref(), ctx.err().message(), request_id);
                (kind, retryable, detail, code)
            }
            SdkError::TimeoutError(_) => (TransferErrorKind::Unavailable, true, "timed out".to_owned(), None),
            SdkError::DispatchFailure(d) if d.is_timeout() => {
                (TransferErrorKind::Unavailable, true, "timed out".to_owned(), None)
            }
            SdkError::DispatchFailure(d) if d.is_user() => {
                (TransferErrorKind::Other, false, "could not send the request body".to_owned(), None)
            }
            SdkError::DispatchFailure(_) if credentials_failed(&err) => {
                (TransferErrorKind::Unauthenticated, false, "no usable credentials".to_owned(), None)
            }
            SdkError::DispatchFailure(_) => {
                (TransferErrorKind::Unavailable, true, "could not reach the service".to_owned(), None)
            }
            SdkError::ResponseError(_) => {
                (TransferErrorKind::Unavailable, true, "invalid response from the service".to_owned(), None)
            }
            SdkError::ConstructionFailure(_) => {
                (TransferErrorKind::InvalidInput, false, "could not build the request".to_owned(), None)
            }
            _ => (TransferErrorKind::Other, false, "request failed".to_owned(), None),
        };
        let mut e = self.err(kind, detail).retryable(retryable).with_source(err);
        e.code = code;
        e.status = status;
        e
    }
}

/// What a server's error answer says, for a message: the kind, then the
/// code (or the HTTP status without one), the server's own words where the
/// code alone does not say what to fix, and for the server's own failures
/// (5xx) the request id its operators ask for:
/// `service unavailable (InternalError: We encountered an internal error,
/// please try again.; request id 18ECE68F)`.
fn service_detail(
    kind: TransferErrorKind,
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
    request_id: Option<&str>,
) -> String {
    use TransferErrorKind::{InvalidInput, Other, PermissionDenied, Unavailable};
    let mut inner = code.map_or_else(|| format!("HTTP {status}"), str::to_owned);
    let says = matches!(kind, PermissionDenied | InvalidInput | Unavailable | Other)
        .then(|| message.map(server_words))
        .flatten()
        .filter(|m| !m.is_empty() && Some(m.as_str()) != code);
    if let Some(m) = says {
        inner.push_str(": ");
        inner.push_str(&m);
    }
    if let Some(id) = request_id.map(server_words).filter(|id| status >= 500 && !id.is_empty()) {
        inner.push_str("; request id ");
        inner.push_str(&id);
    }
    format!("{} ({inner})", kind.phrase())
}

/// Text a server sent, fit for a one-line message: control characters
/// (line breaks, terminal escapes) become spaces, runs of spaces one, and
/// more than 200 characters are cut.
fn server_words(text: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > MAX {
            out = out.chars().take(MAX).collect::<String>() + "...";
            break;
        }
    }
    out
}

impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            Some(key) => write!(f, "{} of {}/{}", self.verb, self.bucket, key),
            None => write!(f, "{} of bucket {}", self.verb, self.bucket),
        }
    }
}

/// Whether a request failed before it was sent because no credentials could
/// be resolved (an empty chain, an unknown profile, a failed role assumption).
fn credentials_failed(err: &dyn std::error::Error) -> bool {
    let mut source = err.source();
    while let Some(s) = source {
        if s.is::<aws_credential_types::provider::error::CredentialsError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether an SDK error is a service answer that names no error code (as
/// every HEAD error does, having no body), so a follow-up request with a body
/// could tell more.
pub(crate) fn lacks_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::ServiceError(ctx) => ctx.err().code().is_none_or(|c| c == "NotFound" || c == "Forbidden"),
        _ => false,
    }
}

/// Maps an S3 error code, or the HTTP status when the code is unknown, to a
/// kind and whether retrying may help.
pub(crate) fn classify_service(status: u16, code: Option<&str>) -> (TransferErrorKind, bool) {
    use TransferErrorKind::{Integrity, InvalidInput, NotFound, Other, PermissionDenied, Unauthenticated, Unavailable};
    let by_code = match code {
        Some("NoSuchKey" | "NoSuchBucket" | "NoSuchVersion") => Some((NotFound, false)),
        Some(
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired"
            | "InvalidSecurity"
            | "MissingSecurityHeader"
            | "RequestTimeTooSkewed"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException",
        ) => Some((Unauthenticated, false)),
        Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem") => Some((PermissionDenied, false)),
        Some("BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch") => Some((Integrity, false)),
        Some(
            "SlowDown"
            | "ServiceUnavailable"
            | "InternalError"
            | "RequestTimeout"
            | "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "OperationAborted"
            | "RequestThrottled",
        ) => Some((Unavailable, true)),
        // The upload was aborted under us (lifecycle rule, another client) or
        // the object changed between requests: a fresh attempt can succeed.
        Some("NoSuchUpload" | "PreconditionFailed") => Some((Other, true)),
        Some(
            "InvalidArgument"
            | "InvalidRequest"
            | "InvalidBucketName"
            | "KeyTooLongError"
            | "EntityTooLarge"
            | "EntityTooSmall"
            | "InvalidPart"
            | "InvalidPartOrder"
            | "MalformedXML"
            | "MetadataTooLarge"
            | "NotImplemented"
            | "InvalidRange"
            | "AuthorizationHeaderMalformed"
            | "PermanentRedirect"
            | "InvalidBucketState",
        ) => Some((InvalidInput, false)),
        _ => None,
    };
    by_code.unwrap_or(match status {
        401 => (Unauthenticated, false),
        403 => (PermissionDenied, false),
        404 => (NotFound, false),
        412 => (Other, true),
        408 | 429 | 500..=599 => (Unavailable, true),
        400..=499 => (InvalidInput, false),
        _ => (Other, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransferErrorKind::*;

    #[test]
    fn classifies_codes_before_status() {
        assert_eq!(classify_service(403, Some("InvalidAccessKeyId")), (Unauthenticated, false));
        assert_eq!(classify_service(403, Some("SignatureDoesNotMatch")), (Unauthenticated, false));
        assert_eq!(classify_service(403, Some("AccessDenied")), (PermissionDenied, false));
        assert_eq!(classify_service(404, Some("NoSuchBucket")), (NotFound, false));
        assert_eq!(classify_service(503, Some("SlowDown")), (Unavailable, true));
        assert_eq!(classify_service(400, Some("BadDigest")), (Integrity, false));
        assert_eq!(classify_service(404, Some("NoSuchUpload")), (Other, true));
        assert_eq!(classify_service(403, None), (PermissionDenied, false));
        assert_eq!(classify_service(404, None), (NotFound, false));
        assert_eq!(classify_service(502, None), (Unavailable, true));
        assert_eq!(classify_service(400, Some("SomethingNew")), (InvalidInput, false));
    }

    #[test]
    fn service_details_say_what_the_server_said_on_one_line() {
        assert_eq!(
            service_detail(Unavailable, 500, Some("InternalError"), Some("Try\nagain.\u{1b}[2J"), Some("18EC")),
            "service unavailable (InternalError: Try again. [2J; request id 18EC)"
        );
        // The code says it all: no message; no request id below 500.
        assert_eq!(
            service_detail(NotFound, 404, Some("NoSuchKey"), Some("The specified key does not exist."), Some("1")),
            "not found (NoSuchKey)"
        );
        assert_eq!(
            service_detail(PermissionDenied, 403, Some("AccessDenied"), Some("Access Denied"), None),
            "access denied (AccessDenied: Access Denied)"
        );
        assert_eq!(service_detail(Unavailable, 503, None, None, None), "service unavailable (HTTP 503)");
        let long = "x".repeat(500);
        let cut = service_detail(InvalidInput, 400, Some("InvalidArgument"), Some(&long), None);
        assert_eq!(cut, format!("request rejected (InvalidArgument: {}...)", "x".repeat(200)));
    }

    #[test]
    fn messages_are_one_layer() {
        let op = Op::upload("projects", "x.zip");
        let e = op.err(Unauthenticated, "credentials rejected (InvalidAccessKeyId)");
        assert_eq!(e.to_string(), "upload of projects/x.zip failed: credentials rejected (InvalidAccessKeyId)");
        assert!(!e.is_retryable());
        assert!(op.err(Unavailable, "timed out").is_retryable());
        assert_eq!(Op::check_bucket("b").err(NotFound, "not found").to_string(), "check of bucket b failed: not found");
    }
}
