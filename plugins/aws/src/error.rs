//! AWS SDK errors as plugin errors, by what the caller should do next.

use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use credhost_plugin_sdk::{error_chain, Error as PluginError, ErrorKind};

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
                "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "ExpiredTokenException"
                | "ExpiredToken",
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
        other => error_chain(other),
    };
    PluginError::new(kind, format!("{what} failed: {detail}")).retryable(retryable)
}
