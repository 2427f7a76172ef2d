//! Where projects are kept: a directory ([`fs`]) or an S3-compatible bucket ([`s3`]).

pub mod fs;
pub mod s3;

use credhost_plugin_sdk::{
    check_http_url, secret_from_env, Context, DeleteRequest, Download, Entry, Error, ErrorKind, Grant, GrantPart,
    GrantRequest, PresignRequest, Presigned, Probe, Result, Stored, Upload,
};

use crate::settings::StorageSettings;

/// The store an instance's settings describe.
pub enum Store {
    /// A directory.
    Fs(fs::FsStore),
    /// An S3-compatible bucket.
    S3(s3::S3Store),
}

impl Store {
    /// Validates the `storage` settings and reads the keys they name.
    pub fn new(settings: StorageSettings, ctx: &Context) -> Result<Self> {
        Ok(match settings {
            StorageSettings::Fs { root, bucket } => Store::Fs(fs::FsStore::new(ctx.resolve(&root), bucket)?),
            StorageSettings::S3 {
                endpoint,
                region,
                bucket,
                access_key_id_env,
                secret_access_key_env,
                part_size_mib,
                concurrency,
                grant_role_arn,
                sts_endpoint,
            } => {
                check_http_url(&endpoint).map_err(|why| Error::config("storage.endpoint", why))?;
                if let Some(u) = &sts_endpoint {
                    check_http_url(u).map_err(|why| Error::config("storage.sts_endpoint", why))?;
                }
                if let Some(arn) = &grant_role_arn {
                    if !arn.starts_with("arn:") {
                        return Err(Error::config("storage.grant_role_arn", format!("{arn:?} is not an ARN")));
                    }
                }
                credhost_s3_transfer::check_bucket_name(&bucket).map_err(|why| Error::config("storage.bucket", why))?;
                let opts = credhost_s3_transfer::store::transfer_options("storage.", part_size_mib, concurrency)?;
                let access_key_id =
                    secret_from_env("storage.access_key_id_env", &access_key_id_env)?.expose().to_owned();
                let secret_access_key = secret_from_env("storage.secret_access_key_env", &secret_access_key_env)?;
                Store::S3(s3::S3Store::new(s3::S3Config {
                    endpoint,
                    region,
                    bucket,
                    access_key_id,
                    secret_access_key,
                    opts,
                    grant_role_arn,
                    sts_endpoint,
                }))
            }
        })
    }

    /// Stores an upload, all or nothing.
    pub async fn upload(&self, req: Upload) -> Result<Stored> {
        match self {
            Store::Fs(s) => s.upload(req).await,
            Store::S3(s) => s.bucket.upload(req).await,
        }
    }

    /// Fetches an object, verified.
    pub async fn download(&self, req: Download) -> Result<Stored> {
        match self {
            Store::Fs(s) => s.download(req).await,
            Store::S3(s) => s.bucket.download(req).await,
        }
    }

    /// A presigned URL; only S3 has them.
    pub async fn presign(&self, req: PresignRequest) -> Result<Presigned> {
        match self {
            Store::Fs(_) => Err(Error::new(
                ErrorKind::UNSUPPORTED,
                "the filesystem store has no URLs: presigned URLs need `storage.kind = \"s3\"`",
            )),
            Store::S3(s) => s.bucket.presign(req).await,
        }
    }

    /// Deletes an object; deleting a missing one succeeds.
    pub async fn delete(&self, req: DeleteRequest) -> Result<()> {
        match self {
            Store::Fs(s) => s.delete(&req.bucket, &req.name).await,
            Store::S3(s) => s.bucket.delete(req).await,
        }
    }

    /// The projects bucket.
    pub fn bucket(&self) -> &str {
        match self {
            Store::Fs(s) => s.bucket(),
            Store::S3(s) => s.bucket.bucket(),
        }
    }

    /// Probes the bucket.
    pub async fn check(&self) -> Probe {
        match self {
            Store::Fs(s) => s.check().await,
            Store::S3(s) => s.bucket.check().await,
        }
    }

    /// The project part of a build-job grant: a URL reading the one object
    /// (and, with `with_keys`, keys reading only it), or for a directory
    /// the entries pointing at the shared file.
    pub async fn grant(&self, req: &GrantRequest, grant: &mut Grant) -> Result<()> {
        match self {
            Store::Fs(s) => {
                let path = s.root().join(&req.bucket).join(&req.name);
                grant.entries.extend([
                    Entry::plain("CREDHOST_STORAGE", "fs"),
                    Entry::plain("CREDHOST_STORAGE_ROOT", s.root().display().to_string()),
                    Entry::plain("PROJECTS_BUCKET", &req.bucket),
                    Entry::plain("PROJECT_PATH", path.display().to_string()),
                ]);
                grant.parts.push(GrantPart::new(
                    "project",
                    "shared-directory",
                    format!(
                        "no URL: the filesystem store is a directory the job must share; it reads {} itself, with whatever rights the directory gives it",
                        path.display()
                    ),
                    None,
                ));
                if req.with_keys {
                    grant.parts.push(GrantPart::new(
                        "keys",
                        "none",
                        "the filesystem store has no keys to hand out",
                        None,
                    ));
                }
                Ok(())
            }
            Store::S3(s) => s.grant(req, grant).await,
        }
    }

    /// What a build job needs to reach the store (the job-environment key
    /// names the original service used).
    pub fn credentials(&self) -> Vec<Entry> {
        match self {
            Store::Fs(s) => vec![
                Entry::plain("CREDHOST_STORAGE", "fs"),
                Entry::plain("CREDHOST_STORAGE_ROOT", s.root().display().to_string()),
                Entry::plain("PROJECTS_BUCKET", s.bucket()),
            ],
            Store::S3(s) => {
                let (endpoint, region, key_id, secret) = s.connection();
                vec![
                    Entry::plain("CREDHOST_STORAGE", "s3"),
                    Entry::plain("AWS_ENDPOINT_URL", endpoint),
                    Entry::plain("AWS_ACCESS_KEY_ID", key_id),
                    Entry::secret("AWS_SECRET_ACCESS_KEY", secret.clone()),
                    Entry::plain("AWS_DEFAULT_REGION", region),
                    Entry::plain("PROJECTS_BUCKET", s.bucket.bucket()),
                ]
            }
        }
    }
}
