//! The storage backends every suite runs over, each on its real server, and
//! what each server shows of a transfer (objects, open multipart uploads,
//! resumable sessions).

use std::path::{Path, PathBuf};

use crate::*;

/// One MiB.
pub const MIB: u64 = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Fs,
    LocalS3,
    LocalRclone,
    AwsSeaweed,
    AwsMoto,
    /// The gcp plugin on gcp-storage-emulator.
    Gcp,
    /// The gcp plugin on fake-gcs-server.
    GcpFake,
}

impl Kind {
    /// Whether the gcp plugin serves this backend.
    pub fn is_gcp(self) -> bool {
        matches!(self, Kind::Gcp | Kind::GcpFake)
    }
}

pub struct Backend {
    /// Which store.
    pub kind: Kind,
    /// Its services.
    pub svc: Services,
    /// Whether the plugin runs in a child process (`isolation = "process"`).
    pub process: bool,
}

/// Checks of the suite, for [`Backend::cannot`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Check {
    WrongCredentials,
    PresignedUrls,
    SignatureChecked,
}

impl Backend {
    /// The backend on the shared services.
    pub fn new(kind: Kind) -> Self {
        Self::on(kind, Services::get())
    }

    /// The backend on `svc`.
    pub fn on(kind: Kind, svc: Services) -> Self {
        let b = Self { kind, svc, process: false };
        if kind == Kind::AwsMoto {
            // moto starts empty: create the projects bucket (idempotent).
            b.py(
                &format!("{BOTO3_CLIENT}\ntry:\n    s3.create_bucket(Bucket=bucket)\nexcept s3.exceptions.BucketAlreadyOwnedByYou:\n    pass"),
                &[],
            );
        }
        b
    }

    /// The same backend with its plugin in a child process.
    pub fn isolated(self) -> Self {
        Self { process: true, ..self }
    }

    /// Why this backend cannot do `check`, when it cannot.
    pub fn cannot(&self, check: Check) -> Option<&'static str> {
        match (self.kind, check) {
            (Kind::Fs, Check::WrongCredentials) => Some("the filesystem store has no credentials"),
            (Kind::AwsMoto, Check::WrongCredentials) => Some("moto accepts any keys"),
            (Kind::Fs, Check::PresignedUrls | Check::SignatureChecked) => Some("the filesystem store has no URLs"),
            (Kind::AwsMoto, Check::SignatureChecked) => Some("moto serves tampered and expired presigned URLs"),
            _ => None,
        }
    }

    /// The HTTP status an expired presigned URL gets: S3's 403 AccessDenied
    /// ("Request has expired"); rclone refuses it as 400 UnsupportedAlgorithm.
    pub fn expired_url_status(&self) -> &'static str {
        match self.kind {
            Kind::LocalRclone => "400",
            _ => "403",
        }
    }

    /// A workspace on this backend, with a registry that needs credentials.
    /// The secrets of every STS session moto handed out (it records them).
    pub fn moto_sessions(&self) -> Vec<String> {
        moto_state(&self.svc)["sts"]["AssumedRole"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| [r["secret_access_key"].as_str(), r["session_token"].as_str()])
            .flatten()
            .map(str::to_owned)
            .collect()
    }

    pub fn ws(&self) -> Workspace {
        let svc = &self.svc;
        let basic = format!(
            "{{ url = \"http://{}\", auth = \"basic\", username_env = \"REG_USER\", password_env = \"REG_PASS\" }}",
            svc.var("CREDHOST_TEST_REGISTRY_BASIC")
        );
        let mut ws = match self.kind {
            Kind::Fs => Workspace::local(&format!(
                "registry = {basic}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}"
            )),
            Kind::LocalS3 => Workspace::local_s3(svc, &basic),
            Kind::LocalRclone => Workspace::local_s3_at(svc, &basic, &svc.var("CREDHOST_TEST_RCLONE_ENDPOINT")),
            Kind::AwsSeaweed => Workspace::aws(svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), &aws_grants(svc)),
            Kind::AwsMoto => Workspace::aws(svc, &svc.var("CREDHOST_TEST_MOTO_ENDPOINT"), &aws_grants(svc)),
            Kind::Gcp | Kind::GcpFake => {
                let ws = gcp::keyed_ws(svc, 3600).0;
                let mut text = std::fs::read_to_string(ws.path("plugins.toml")).expect("plugins.toml");
                if self.kind == Kind::GcpFake {
                    text = gcp::on_fake_gcs(svc, &text);
                }
                ws.write_config(&format!(
                    "{text}iam_endpoint = \"{}\"\nsts_endpoint = \"{}\"\njob_service_account = \"conformance@{}.iam.gserviceaccount.com\"\n",
                    svc.var("CREDHOST_TEST_GCP_IAM_ENDPOINT"),
                    svc.var("CREDHOST_TEST_GCP_STS_ENDPOINT"),
                    svc.var("CREDHOST_TEST_GCP_PROJECT"),
                ));
                ws
            }
        };
        ws.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
        ws.set_env("REG_PASS", &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
        if self.process {
            ws.set_isolation("process");
        }
        ws
    }

    /// The size at which uploads become multi-part (S3 parts are set to
    /// 8 MiB in the test workspaces; GCS resumable chunks are 16 MiB).
    pub fn part_size(&self) -> u64 {
        if self.kind.is_gcp() {
            16 * MIB
        } else {
            8 * MIB
        }
    }

    pub fn py(&self, script: &str, args: &[&str]) -> String {
        let s3_env = match self.kind {
            Kind::AwsMoto => {
                vec![("CREDHOST_TEST_S3_ENDPOINT".to_owned(), self.svc.var("CREDHOST_TEST_MOTO_ENDPOINT"))]
            }
            Kind::LocalRclone => {
                vec![("CREDHOST_TEST_S3_ENDPOINT".to_owned(), self.svc.var("CREDHOST_TEST_RCLONE_ENDPOINT"))]
            }
            // The scripts' GCS server is the one under test.
            Kind::GcpFake => vec![("CREDHOST_TEST_GCS_EMULATOR".to_owned(), self.svc.var("CREDHOST_TEST_FAKE_GCS"))],
            _ => Vec::new(),
        };
        python_with(&self.svc, &s3_env, script, args)
    }

    /// Whether the object is in the store.
    pub fn object_exists(&self, ws: &Workspace, name: &str) -> bool {
        match self.kind {
            Kind::Fs => ws.path("store/projects").join(name).exists(),
            Kind::LocalS3 | Kind::LocalRclone | Kind::AwsSeaweed | Kind::AwsMoto => {
                let script = format!(
                    "{BOTO3_CLIENT}\nimport botocore\ntry:\n    s3.head_object(Bucket=bucket, Key=sys.argv[1]); print('yes')\nexcept botocore.exceptions.ClientError:\n    print('no')"
                );
                self.py(&script, &[name]).trim() == "yes"
            }
            Kind::Gcp | Kind::GcpFake => {
                let script = format!(
                    "{}\nimport urllib.parse\ncode, _ = call('GET', os.environ['CREDHOST_TEST_GCS_EMULATOR'] + '/storage/v1/b/' + os.environ['CREDHOST_TEST_GCS_BUCKET'] + '/o/' + urllib.parse.quote(sys.argv[1], safe=''))\nprint('yes' if code == 200 else 'no')",
                    gcp::HTTP
                );
                self.py(&script, &[name]).trim() == "yes"
            }
        }
    }

    /// Whether the server shows an upload of `name` under way: a partial
    /// temporary file, an open multipart upload with parts, a resumable
    /// session that received bytes.
    pub fn upload_under_way(&self, ws: &Workspace, name: &str) -> bool {
        match self.kind {
            Kind::Fs => part_files(&ws.path("store/projects")).iter().any(|p| size_of(p) > 0),
            Kind::LocalS3 | Kind::LocalRclone | Kind::AwsSeaweed | Kind::AwsMoto => {
                let script = format!(
                    "{BOTO3_CLIENT}\nups = s3.list_multipart_uploads(Bucket=bucket, Prefix=sys.argv[1]).get('Uploads', [])\nparts = sum(len(s3.list_parts(Bucket=bucket, Key=u['Key'], UploadId=u['UploadId']).get('Parts', [])) for u in ups)\nprint(parts)"
                );
                self.py(&script, &[name]).trim().parse::<u64>().unwrap_or(0) > 0
            }
            Kind::Gcp | Kind::GcpFake => gcp::stats(&self.svc, name)["bytes_up"].as_u64().unwrap_or(0) > 0,
        }
    }

    /// What an interrupted or failed upload of `name` left behind, if anything.
    pub fn leftovers(&self, ws: &Workspace, name: &str) -> Option<String> {
        if self.object_exists(ws, name) {
            return Some("an object".into());
        }
        match self.kind {
            Kind::Fs => {
                let parts = part_files(&ws.path("store/projects"));
                (!parts.is_empty()).then(|| format!("temporary files {parts:?}"))
            }
            Kind::LocalS3 | Kind::LocalRclone | Kind::AwsSeaweed | Kind::AwsMoto => {
                let script = format!(
                    "{BOTO3_CLIENT}\nprint(len(s3.list_multipart_uploads(Bucket=bucket, Prefix=sys.argv[1]).get('Uploads', [])))"
                );
                let open = self.py(&script, &[name]).trim().to_owned();
                (open != "0").then(|| format!("{open} open multipart upload(s)"))
            }
            Kind::Gcp | Kind::GcpFake => {
                // An open resumable session is invisible but holds the bytes
                // until it expires (a week): it must have been cancelled.
                let s = gcp::stats(&self.svc, name);
                let opened = s["initiations"].as_u64().unwrap_or(0);
                (opened > s["cancellations"].as_u64().unwrap_or(0)).then(|| format!("an upload session left open: {s}"))
            }
        }
    }

    /// Makes the workspace's storage credentials wrong.
    pub fn break_credentials(&self, ws: &mut Workspace) {
        match self.kind {
            Kind::LocalS3 | Kind::LocalRclone => ws.set_env("TEST_S3_SECRET", "definitely-wrong-secret"),
            Kind::AwsSeaweed | Kind::AwsMoto => ws.set_env("AWS_SECRET_ACCESS_KEY", "definitely-wrong-secret"),
            Kind::Gcp | Kind::GcpFake => {
                // A well-formed key the token endpoint never issued.
                let mut key = gcp::new_key(&self.svc, 3600);
                let other = gcp::new_key(&self.svc, 3600);
                key["private_key"] = other["private_key"].clone();
                std::fs::write(ws.path("key.json"), key.to_string()).unwrap();
            }
            Kind::Fs => unreachable!("the filesystem store has no credentials"),
        }
    }

    /// Every secret the platform handles in `ws`: storage keys, registry
    /// passwords and tokens, private keys. Each is also looked for in base64.
    pub fn secrets(&self, ws: &Workspace) -> Vec<String> {
        let svc = &self.svc;
        let mut secrets = vec![svc.var("CREDHOST_TEST_REGISTRY_PASSWORD")];
        match self.kind {
            Kind::Fs => {}
            Kind::LocalS3 | Kind::LocalRclone | Kind::AwsSeaweed => {
                secrets.push(svc.var("CREDHOST_TEST_S3_SECRET_KEY"))
            }
            Kind::AwsMoto => secrets.push(svc.var("CREDHOST_TEST_S3_SECRET_KEY")),
            Kind::Gcp | Kind::GcpFake => {
                let key: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(ws.path("key.json")).unwrap()).unwrap();
                let pem = key["private_key"].as_str().unwrap();
                secrets.extend(pem.lines().filter(|l| !l.starts_with("-----")).take(4).map(str::to_owned));
            }
        }
        // The registry credentials the plugin hands out: asked for explicitly
        // here, so that the test knows them.
        let token = ws.run(&["token", "--format", "json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&token).unwrap();
        if let Some(password) = v["password"].as_str() {
            secrets.push(password.to_owned());
            secrets.push(ws.run(&["token"]).ok().trim().to_owned());
        }
        secrets.sort();
        secrets.dedup();
        secrets
    }

    /// Deletes `name` from a GCS server (gcp-storage-emulator keeps every
    /// object in RAM, and the services outlive test runs).
    pub fn forget(&self, name: &str) {
        if self.kind.is_gcp() {
            self.py(&gcp::delete_object_script(), &[name]);
        }
    }
}

pub fn size_of(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Temporary files (`*.part`) anywhere under `dir`.
pub fn part_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.to_string_lossy().ends_with(".part") {
                out.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

/// Grant settings of the aws plugin: sessions of a role at the STS-only moto.
fn aws_grants(svc: &Services) -> String {
    format!(
        "sts_endpoint_url = \"{}\"\njob_role_arn = \"arn:aws:iam::123456789012:role/credhost-job\"",
        svc.var("CREDHOST_TEST_MOTO_STS_ENDPOINT")
    )
}
