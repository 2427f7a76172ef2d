//! The plugin's settings (the `[plugins.aws.settings]` table).

use serde::Deserialize;

/// All settings. Credentials never appear here: they come from aws-config's
/// default chain (environment, shared files and profiles, SSO, web identity,
/// container and instance metadata), optionally narrowed by `profile` and
/// `role_arn`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// AWS region, e.g. `us-east-2`.
    pub region: String,
    /// The ECR registry host build jobs push to, e.g.
    /// `123456789012.dkr.ecr.us-east-2.amazonaws.com`.
    pub registry: String,
    /// The projects bucket.
    pub bucket: String,
    /// A named profile of the shared config/credentials files.
    pub profile: Option<String>,
    /// A role to assume (STS AssumeRole) with the chain's credentials.
    pub role_arn: Option<String>,
    /// Registry ids (account ids) for GetAuthorizationToken.
    #[serde(default)]
    pub registry_ids: Vec<String>,
    /// Endpoint override for every service (STS, ECR, S3).
    pub endpoint_url: Option<String>,
    /// Endpoint override for S3 only.
    pub s3_endpoint_url: Option<String>,
    /// Endpoint override for ECR only.
    pub ecr_endpoint_url: Option<String>,
    /// Endpoint override for STS only (build-job grants).
    pub sts_endpoint_url: Option<String>,
    /// The role build-job grants assume (`credhost grant`): each grant is a
    /// session of it, cut down by a session policy to one object and the
    /// requested repositories. Its own policies bound what any grant can get.
    pub job_role_arn: Option<String>,
    /// The external id the job role's trust policy asks for, if any.
    pub job_external_id: Option<String>,
    /// The role a Kubernetes workload's pulls assume with its
    /// service-account token when its service account has no
    /// `credhost.io/role-arn` annotation (kubelet service-account mode).
    pub kubelet_role_arn: Option<String>,
    /// Path-style S3 addressing (for S3-compatible endpoints).
    #[serde(default)]
    pub force_path_style: bool,
    /// Multipart part size in MiB (default 16, at least 5).
    pub part_size_mib: Option<u64>,
    /// Parts in flight (default 4).
    pub concurrency: Option<usize>,
}
