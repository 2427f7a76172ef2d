//! The S3-compatible store: static keys from the environment, path-style
//! addressing, transfers through the shared crate.

use credhost_plugin_sdk::{Error, Grant, GrantRequest, Result, Secret};
use credhost_s3_transfer::{
    grant::{self, AssumeRole, ObjectPlace, SessionPolicy},
    store::S3Bucket,
    ClientSettings, TransferOptions,
};

/// A bucket on an S3-compatible endpoint, and what a build job needs to reach it.
pub struct S3Store {
    /// The bucket operations.
    pub bucket: S3Bucket,
    endpoint: String,
    region: String,
    access_key_id: String,
    secret_access_key: Secret,
    grant_role_arn: Option<String>,
    sts_endpoint: Option<String>,
}

/// What [`S3Store::new`] needs.
pub struct S3Config {
    /// Endpoint URL.
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    /// Projects bucket.
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Transfer tuning.
    pub opts: TransferOptions,
    /// The role grants assume.
    pub grant_role_arn: Option<String>,
    /// Where STS answers (default: the endpoint).
    pub sts_endpoint: Option<String>,
}

impl S3Store {
    /// A client for the endpoint.
    pub fn new(c: S3Config) -> Self {
        let settings = ClientSettings {
            endpoint: Some(c.endpoint.clone()),
            region: c.region.clone(),
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.expose().to_owned(),
            session_token: None,
            force_path_style: true,
        };
        let client = credhost_s3_transfer::build_client(&settings);
        Self {
            bucket: S3Bucket::new(client, c.bucket, c.endpoint.clone(), c.opts),
            endpoint: c.endpoint,
            region: c.region,
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            grant_role_arn: c.grant_role_arn,
            sts_endpoint: c.sts_endpoint,
        }
    }

    /// Endpoint, region and keys, for build-job credentials.
    pub fn connection(&self) -> (&str, &str, &str, &Secret) {
        (&self.endpoint, &self.region, &self.access_key_id, &self.secret_access_key)
    }

    fn root_keys(&self) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            &self.access_key_id,
            self.secret_access_key.expose(),
            None,
            None,
            "credhost-local",
        )
    }

    /// The project part of a grant. With `storage.grant_role_arn`, a
    /// session of that role limited by its policy to reading the object
    /// signs the URL (and its keys are handed out with `with_keys`);
    /// without, the URL is signed with the store's keys: it still allows
    /// that one GET only, until it expires, but no keys can be handed out.
    pub async fn grant(&self, req: &GrantRequest, grant: &mut Grant) -> Result<()> {
        let place = ObjectPlace {
            endpoint: Some(&self.endpoint),
            region: &self.region,
            force_path_style: true,
            bucket: &req.bucket,
            key: &req.name,
        };
        let policy = SessionPolicy::read_object(&req.bucket, &req.name)?;
        let Some(role) = &self.grant_role_arn else {
            if req.with_keys {
                return Err(Error::config(
                    "storage.grant_role_arn",
                    "keys limited to one project need `storage.grant_role_arn`: the role whose sessions the store's STS narrows (without it only the store's own keys exist, which reach every object)",
                ));
            }
            let url = grant::object_url(&place, &self.root_keys(), req.ttl).await?;
            let end = req.ends_at();
            grant.project_url = Some(url);
            grant.parts.push(grant::url_part(&place, "a URL signed with the store's keys", end));
            return Ok(());
        };
        let sts = grant::sts_client(
            Some(self.sts_endpoint.as_deref().unwrap_or(&self.endpoint)),
            &self.region,
            self.root_keys(),
        );
        let session = grant::assume_role(
            &sts,
            &AssumeRole {
                role_arn: role,
                external_id: None,
                session_name: &req.session_name,
                policy: &policy,
                ttl: req.ttl,
            },
        )
        .await?;
        grant.project_url = Some(grant::object_url(&place, &session.credentials, req.ttl).await?);
        grant.parts.push(grant::url_part(&place, "signed by a session limited to it", session.expires_at));
        if req.with_keys {
            let (entries, part) = grant::key_entries(&place, &session);
            grant.entries.extend(entries);
            grant.parts.push(part);
        }
        Ok(())
    }
}
