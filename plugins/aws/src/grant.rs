//! Build-job grants: a session of `job_role_arn` whose inline session
//! policy allows reading one project object, pushing one ECR repository and
//! pulling a few; its ECR token and a presigned URL of the object are what
//! the job gets (and, with `with_keys`, the keys of a second session that
//! may only read the object).

use credhost_plugin_sdk::{unix_now, Error, ErrorKind, Grant, GrantPart, GrantRequest, Result};
use credhost_s3_transfer::grant::{self, check_literal, AssumeRole, ObjectPlace, SessionPolicy};

use crate::{provider::AwsProvider, registry};

/// ECR actions a push needs (layer upload and manifest put), and the pulls.
const PUSH_ACTIONS: &[&str] = &[
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
];
const PULL_ACTIONS: &[&str] = &["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"];

/// The longest session STS grants to credentials that are themselves a
/// role's session (role chaining).
const CHAINED_MAX_SECS: u64 = 3600;

/// `(account, region)` of an ECR registry host
/// (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`).
pub fn ecr_account_region(host: &str) -> Option<(&str, &str)> {
    let mut labels = host.split('.');
    let account = labels.next()?;
    let (dkr, ecr, region) = (labels.next()?, labels.next()?, labels.next()?);
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && dkr == "dkr" && ecr == "ecr")
        .then_some((account, region))
}

/// The session policy of a grant: the object, the repositories, and the
/// ECR token call (which has no resource of its own).
pub fn session_policy(req: &GrantRequest, account: &str, region: &str) -> Result<SessionPolicy> {
    let mut policy = SessionPolicy::read_object(&req.bucket, &req.name)?;
    let arn = |repo: &str| format!("arn:aws:ecr:{region}:{account}:repository/{repo}");
    if let Some(repo) = &req.repository {
        check_literal("the repository", repo)?;
        policy.allow(PUSH_ACTIONS, &[arn(repo)]);
    }
    let pulls: Vec<String> =
        req.pull.iter().filter(|p| req.repository.as_deref() != Some(p.as_str())).map(|p| arn(p)).collect();
    for p in &req.pull {
        check_literal("the repository", p)?;
    }
    if !pulls.is_empty() {
        policy.allow(PULL_ACTIONS, &pulls);
    }
    if req.wants_registry() {
        policy.allow(&["ecr:GetAuthorizationToken"], &["*".to_owned()]);
    }
    Ok(policy)
}

impl AwsProvider {
    /// The account and region of the instance's ECR registry: from its host
    /// name, else the first `registry_ids` and the instance's region; a
    /// config error saying `why` they are needed when neither tells.
    pub(crate) fn ecr_account_region(&self, why: &str) -> Result<(String, String)> {
        match (ecr_account_region(&self.registry), self.registry_ids.first()) {
            (Some((a, r)), _) => Ok((a.to_owned(), r.to_owned())),
            (None, Some(id)) => Ok((id.clone(), self.region.clone())),
            (None, None) => Err(Error::config(
                "registry_ids",
                format!(
                    "the account of registry {} cannot be told from its name: set `registry_ids` to its account id, so {why}",
                    self.registry
                ),
            )),
        }
    }

    pub(crate) async fn grant_job(&self, mut req: GrantRequest) -> Result<Grant> {
        let role = self.job_role_arn.as_deref().ok_or_else(|| {
            Error::config(
                "job_role_arn",
                "grants need `job_role_arn`: the role whose sessions, cut down to one project and its repositories, build jobs get",
            )
        })?;
        if req.bucket.is_empty() {
            req.bucket = self.store.bucket().to_owned();
        }
        let (account, region) = match self.ecr_account_region("the grant can name the repository's ARN") {
            Ok(found) => found,
            Err(_) if !req.wants_registry() => (String::new(), self.region.clone()),
            Err(e) => return Err(e),
        };
        let policy = session_policy(&req, &account, &region)?;
        let base = self.clients.credentials().await?;
        if base.session_token().is_some() && req.ttl.as_secs() > CHAINED_MAX_SECS {
            return Err(Error::new(
                ErrorKind::INVALID_INPUT,
                format!(
                    "the service's AWS credentials are a session themselves, and AWS caps a role assumed with them at 1 hour (role chaining): a grant of {} s cannot be made; use --ttl 1h or less",
                    req.ttl.as_secs()
                ),
            ));
        }
        let sts = grant::sts_client(self.sts_endpoint(), &self.region, base);
        let assume = |policy| AssumeRole {
            role_arn: role,
            external_id: self.job_external_id.as_deref(),
            session_name: &req.session_name,
            policy,
            ttl: req.ttl,
        };
        let session = grant::assume_role(&sts, &assume(&policy)).await?;
        let place = ObjectPlace {
            endpoint: self.s3_endpoint(),
            region: &self.region,
            force_path_style: self.force_path_style,
            bucket: &req.bucket,
            key: &req.name,
        };
        let mut out = Grant { expires_at: session.expires_at, ..Grant::default() };
        out.project_url = Some(grant::object_url(&place, &session.credentials, req.ttl).await?);
        out.parts.push(grant::url_part(&place, "signed by the grant's session", session.expires_at));
        if req.wants_registry() {
            let ecr = self.clients.ecr_as(session.credentials.clone());
            let mut auth = registry::registry_auth(&ecr, &self.registry_ids, &self.registry).await?;
            // A token made with the session's keys is no use past the
            // session; an expiry already past (ECR stand-ins answer a fixed
            // one) says nothing.
            auth.expires_at = Some(match auth.expires_at {
                Some(t) if t > unix_now() => t.min(session.expires_at),
                _ => session.expires_at,
            });
            let which = req.registry_scope().unwrap_or_default().replace("repository:", "").replace(' ', ", ");
            out.parts.push(GrantPart::new(
                "registry",
                "repository",
                format!("an ECR token of the grant's session, whose policy allows {which} in {account}"),
                Some(session.expires_at),
            ));
            out.registry = Some(auth);
        }
        if req.with_keys {
            // Keys of their own session: the first one may also push.
            let keys = if req.wants_registry() {
                let only_read = SessionPolicy::read_object(&req.bucket, &req.name)?;
                grant::assume_role(&sts, &assume(&only_read)).await?
            } else {
                session
            };
            let (entries, part) = grant::key_entries(&place, &keys);
            out.entries.extend(entries);
            out.parts.push(part);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts() {
        assert_eq!(
            ecr_account_region("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some(("123456789012", "eu-west-1"))
        );
        assert_eq!(ecr_account_region("127.0.0.1:5000"), None);
    }

    #[test]
    fn the_policy_names_the_object_and_the_repositories() {
        let req = GrantRequest {
            bucket: "projects".into(),
            name: "app.zip".into(),
            repository: Some("team/app".into()),
            pull: vec!["base".into(), "team/app".into()],
            ttl: std::time::Duration::from_secs(3600),
            with_keys: false,
            allow_unscoped_registry: false,
            session_name: "s".into(),
            extra: Default::default(),
        };
        let doc = session_policy(&req, "123456789012", "us-east-1").unwrap().to_json().unwrap();
        let v: credhost_plugin_sdk::serde_json::Value = credhost_plugin_sdk::serde_json::from_str(&doc).unwrap();
        let st = v["Statement"].as_array().unwrap();
        assert_eq!(st.len(), 4, "{doc}");
        assert_eq!(st[0]["Resource"], "arn:aws:s3:::projects/app.zip");
        assert_eq!(st[1]["Resource"], "arn:aws:ecr:us-east-1:123456789012:repository/team/app");
        assert_eq!(st[1]["Action"].as_array().unwrap().len(), 7);
        assert_eq!(st[2]["Resource"], "arn:aws:ecr:us-east-1:123456789012:repository/base");
        assert_eq!(st[3]["Action"][0], "ecr:GetAuthorizationToken");
    }
}
