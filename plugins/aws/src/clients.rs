//! SDK configuration from aws-config's default chain, narrowed by settings.

use std::time::Duration;

use aws_config::{
    stalled_stream_protection::StalledStreamProtectionConfig, sts::AssumeRoleProvider, timeout::TimeoutConfig,
    BehaviorVersion, Region, SdkConfig,
};
use aws_credential_types::{
    provider::{ProvideCredentials, SharedCredentialsProvider},
    Credentials,
};
use credhost_plugin_sdk::{check_http_url, error_chain, Error as PluginError, ErrorKind};

use crate::settings::Settings;

/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a small call (ECR, STS, a bucket probe) from the first
/// attempt to the answer, retries included. S3 transfers get the shared
/// transfer crate's own limits instead (a part may take minutes).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for one attempt of a small call.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a body may make no progress before the call fails.
const STALL_GRACE: Duration = Duration::from_secs(30);

/// The SDK clients a provider uses.
pub struct Clients {
    /// Shared configuration (region, credentials chain, endpoint).
    pub sdk: SdkConfig,
    /// ECR.
    pub ecr: aws_sdk_ecr::Client,
    /// S3, tuned for cheap integrity checks.
    pub s3: aws_sdk_s3::Client,
    /// ECR's endpoint override.
    ecr_endpoint_url: Option<String>,
}

impl Clients {
    /// Loads the shared configuration and builds the clients. Credentials are
    /// resolved lazily, on first use.
    pub async fn new(s: &Settings) -> Result<Self, PluginError> {
        for (key, url) in [
            ("endpoint_url", &s.endpoint_url),
            ("s3_endpoint_url", &s.s3_endpoint_url),
            ("ecr_endpoint_url", &s.ecr_endpoint_url),
            ("sts_endpoint_url", &s.sts_endpoint_url),
        ] {
            if let Some(u) = url {
                check_http_url(u).map_err(|why| PluginError::config(key, why))?;
            }
        }
        // Every call is bounded: an endpoint that accepts connections and
        // never answers must fail, not hang.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(ATTEMPT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(s.region.clone()))
            .timeout_config(timeouts)
            .stalled_stream_protection(StalledStreamProtectionConfig::enabled().grace_period(STALL_GRACE).build());
        if let Some(profile) = &s.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &s.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let mut sdk = loader.load().await;
        if let Some(role) = &s.role_arn {
            if !role.starts_with("arn:") {
                return Err(PluginError::config("role_arn", format!("{role:?} is not an ARN")));
            }
            let provider = AssumeRoleProvider::builder(role).session_name("credhost").configure(&sdk).build().await;
            sdk = sdk.into_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build();
        }
        // ECR's answer is a registry password: never in a trace record.
        let mut ecr = aws_sdk_ecr::config::Builder::from(&sdk).interceptor(SensitiveAnswers);
        if let Some(url) = &s.ecr_endpoint_url {
            ecr = ecr.endpoint_url(url);
        }
        // Transfers retry only idempotent requests, a bounded number of times
        // with jittered backoff, whatever count the environment or a profile
        // sets for other AWS calls.
        let mut s3 = credhost_s3_transfer::tune_config(aws_sdk_s3::config::Builder::from(&sdk))
            .force_path_style(s.force_path_style)
            .timeout_config(credhost_s3_transfer::transfer_timeouts())
            .retry_config(credhost_s3_transfer::transfer_retries());
        if let Some(url) = &s.s3_endpoint_url {
            s3 = s3.endpoint_url(url);
        }
        if let Some(role) = &s.job_role_arn {
            if !role.starts_with("arn:") {
                return Err(PluginError::config("job_role_arn", format!("{role:?} is not an ARN")));
            }
        }
        Ok(Self {
            ecr_endpoint_url: s.ecr_endpoint_url.clone(),
            ecr: aws_sdk_ecr::Client::from_conf(ecr.build()),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            sdk,
        })
    }

    /// An ECR client acting with a session's keys.
    pub fn ecr_as(&self, credentials: Credentials) -> aws_sdk_ecr::Client {
        let mut ecr = aws_sdk_ecr::config::Builder::from(&self.sdk)
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .interceptor(SensitiveAnswers);
        if let Some(url) = &self.ecr_endpoint_url {
            ecr = ecr.endpoint_url(url);
        }
        aws_sdk_ecr::Client::from_conf(ecr.build())
    }

    /// The chain's current credentials.
    pub async fn credentials(&self) -> Result<Credentials, PluginError> {
        let provider = self
            .sdk
            .credentials_provider()
            .ok_or_else(|| PluginError::new(ErrorKind::UNAUTHENTICATED, "no AWS credentials provider is configured"))?;
        provider.provide_credentials().await.map_err(|e| {
            PluginError::new(ErrorKind::UNAUTHENTICATED, format!("no usable AWS credentials: {}", error_chain(&e)))
        })
    }
}

/// Marks every answer of a client as sensitive, so that the SDK's own trace
/// records show a redaction marker instead of the response body (unless the
/// user sets the SDK's `LOG_SENSITIVE_BODIES`).
#[derive(Debug)]
struct SensitiveAnswers;

impl aws_sdk_ecr::config::Intercept for SensitiveAnswers {
    fn name(&self) -> &'static str {
        "SensitiveAnswers"
    }

    fn read_before_execution(
        &self,
        _context: &aws_sdk_ecr::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut aws_sdk_ecr::config::ConfigBag,
    ) -> Result<(), aws_sdk_ecr::error::BoxError> {
        cfg.interceptor_state().store_put(aws_smithy_runtime_api::client::orchestrator::SensitiveOutput);
        Ok(())
    }
}
