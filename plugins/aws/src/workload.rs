//! Kubernetes workloads' own pulls (service-account mode of the kubelet's
//! credential provider): STS `AssumeRoleWithWebIdentity` with the pod's
//! service-account token and the role its service account names, an
//! inline session policy limited to pulling the repositories it lists,
//! then the ECR token of that session.

use std::time::Duration;

use credhost_plugin_sdk::{api::annotations, unix_now, Error, ErrorKind, RegistryAuth, Result, WorkloadRequest};
use credhost_s3_transfer::grant::{self, check_literal, SessionPolicy, WebIdentity};

use crate::{provider::AwsProvider, registry};

/// What pulling an image needs of ECR, besides the token call.
const PULL_ACTIONS: &[&str] = &["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"];

/// How long a workload's session lasts: an hour, AWS's default and the
/// most a role allows unless its maximum was raised.
const SESSION: Duration = Duration::from_secs(3600);

/// STS's limit on a role session name.
const MAX_SESSION_NAME: usize = 64;

/// The session policy of a workload that may pull only `repositories`
/// (comma-separated, the annotation's value) of `account` in `region`.
pub fn pull_policy(repositories: &str, account: &str, region: &str) -> Result<SessionPolicy> {
    let mut arns = Vec::new();
    for repo in repositories.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        check_literal("the repository", repo)?;
        arns.push(format!("arn:aws:ecr:{region}:{account}:repository/{repo}"));
    }
    if arns.is_empty() {
        return Err(Error::new(
            ErrorKind::INVALID_INPUT,
            format!("the annotation {} names no repository", annotations::PULL),
        ));
    }
    let mut policy = SessionPolicy::default();
    policy.allow(PULL_ACTIONS, &arns);
    policy.allow(&["ecr:GetAuthorizationToken"], &["*".to_owned()]);
    Ok(policy)
}

/// Whether `arn` names an IAM role (`arn:PARTITION:iam::ACCOUNT:role/NAME`).
fn is_role_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("arn"), Some(p), Some("iam"), Some(""), Some(account), Some(resource))
            if !p.is_empty() && account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("role/").is_some_and(|n| !n.is_empty())
    )
}

impl AwsProvider {
    pub(crate) async fn workload_auth(&self, req: WorkloadRequest) -> Result<RegistryAuth> {
        req.registry.ensure_for(&self.registry)?;
        let role = match req.annotation(annotations::ROLE_ARN) {
            Some(role) => role.to_owned(),
            None => self.kubelet_role_arn.clone().ok_or_else(|| {
                Error::config(
                    "kubelet_role_arn",
                    format!(
                        "service account {}/{} has no annotation {} and the instance sets no `kubelet_role_arn`: no role to pull as (the node's credentials are never used in its place)",
                        req.namespace,
                        req.service_account,
                        annotations::ROLE_ARN
                    ),
                )
            })?,
        };
        if !is_role_arn(&role) {
            return Err(Error::new(
                ErrorKind::INVALID_INPUT,
                format!("{:?} (annotation {} or kubelet_role_arn) is not an IAM role ARN", role, annotations::ROLE_ARN),
            ));
        }
        let policy = match req.annotation(annotations::PULL) {
            None => None,
            Some(repos) => {
                let (account, region) =
                    self.ecr_account_region(&format!("the pulls of {} can be limited", annotations::PULL))?;
                Some(pull_policy(repos, &account, &region)?)
            }
        };
        let session_name = req.session_name(MAX_SESSION_NAME);
        let sts = grant::sts_client_with(self.sts_endpoint(), &self.region, None);
        let session = grant::assume_role_with_web_identity(
            &sts,
            &WebIdentity {
                role_arn: &role,
                session_name: &session_name,
                policy: policy.as_ref(),
                token: &req.token,
                ttl: SESSION,
            },
        )
        .await?;
        let ecr = self.clients.ecr_as(session.credentials.clone());
        let mut auth = registry::registry_auth(&ecr, &self.registry_ids, &self.registry).await?;
        // The token is no use past the session; an expiry already past (ECR
        // stand-ins answer a fixed one) says nothing more.
        auth.expires_at = Some(match auth.expires_at {
            Some(t) if t > unix_now() => t.min(session.expires_at),
            Some(t) => t,
            None => session.expires_at,
        });
        tracing::info!(
            "ECR token for workload {}/{} as {role} (session {session_name}{})",
            req.namespace,
            req.service_account,
            if policy.is_some() { ", pulls limited by the service account's annotation" } else { "" }
        );
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_pull_policies() {
        assert!(is_role_arn("arn:aws:iam::123456789012:role/pull"));
        assert!(is_role_arn("arn:aws:iam::123456789012:role/path/pull"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:user/pull"));
        assert!(!is_role_arn("arn:aws:iam::1234:role/pull"));
        assert!(!is_role_arn("role/pull"));
        let doc = pull_policy("team/app, base", "123456789012", "eu-west-1").unwrap().to_json().unwrap();
        assert!(doc.contains("arn:aws:ecr:eu-west-1:123456789012:repository/team/app"), "{doc}");
        assert!(doc.contains("arn:aws:ecr:eu-west-1:123456789012:repository/base"), "{doc}");
        assert!(pull_policy(" , ", "123456789012", "eu-west-1").is_err());
        assert!(pull_policy("team/*", "123456789012", "eu-west-1").is_err());
    }
}
