//! S3 specifics, beyond the conformance suite: what credhost stores is what
//! another S3 client (boto3) reads, and the reverse, on every S3 backend
//! (SeaweedFS, moto, `rclone serve s3`).

use credhost_e2e::*;

const MIB: u64 = 1 << 20;

/// A plugin configuration plus the S3 endpoint behind it, for boto3.
struct Backend {
    svc: Services,
    make: fn(&Services) -> Workspace,
    /// Environment for the boto3 prelude (endpoint, keys, bucket).
    s3_env: Vec<(String, String)>,
}

impl Backend {
    fn local_seaweed() -> Self {
        Self {
            svc: Services::get(),
            make: |svc| Workspace::local_s3(svc, "{ url = \"http://127.0.0.1:1\", auth = \"none\" }"),
            s3_env: Vec::new(),
        }
    }

    fn aws_seaweed() -> Self {
        Self {
            svc: Services::get(),
            make: |svc| Workspace::aws(svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), ""),
            s3_env: Vec::new(),
        }
    }

    fn local_rclone() -> Self {
        let svc = Services::get();
        Self {
            s3_env: vec![("CREDHOST_TEST_S3_ENDPOINT".to_owned(), svc.var("CREDHOST_TEST_RCLONE_ENDPOINT"))],
            svc,
            make: |svc| {
                let registry = "{ url = \"http://127.0.0.1:1\", auth = \"none\" }";
                Workspace::local_s3_at(svc, registry, &svc.var("CREDHOST_TEST_RCLONE_ENDPOINT"))
            },
        }
    }

    fn aws_rclone() -> Self {
        let svc = Services::get();
        Self {
            s3_env: vec![("CREDHOST_TEST_S3_ENDPOINT".to_owned(), svc.var("CREDHOST_TEST_RCLONE_ENDPOINT"))],
            svc,
            make: |svc| Workspace::aws(svc, &svc.var("CREDHOST_TEST_RCLONE_ENDPOINT"), ""),
        }
    }

    fn aws_moto() -> Self {
        let svc = Services::get();
        let moto = svc.var("CREDHOST_TEST_MOTO_ENDPOINT");
        let b = Self {
            s3_env: vec![("CREDHOST_TEST_S3_ENDPOINT".to_owned(), moto)],
            svc,
            make: |svc| Workspace::aws(svc, &svc.var("CREDHOST_TEST_MOTO_ENDPOINT"), ""),
        };
        // moto starts empty: create the projects bucket (idempotent).
        b.py(&format!("{BOTO3_CLIENT}\ntry:\n    s3.create_bucket(Bucket=bucket)\nexcept s3.exceptions.BucketAlreadyOwnedByYou:\n    pass"), &[]);
        b
    }

    fn ws(&self) -> Workspace {
        (self.make)(&self.svc)
    }

    fn py(&self, script: &str, args: &[&str]) -> String {
        python_with(&self.svc, &self.s3_env, script, args)
    }
}

fn boto3_reads_what_credhost_wrote_and_the_reverse(b: &Backend) {
    let ws = b.ws();
    let src = ws.path("src.zip");
    write_zip(&src, 20 * MIB + 3, 21); // multipart at 8 MiB parts
    let name = unique("to-boto3");
    ws.run(&["upload", "src.zip", "--name", &name]).ok();
    let script = format!("{BOTO3_CLIENT}\nimport hashlib\nbody = s3.get_object(Bucket=bucket, Key=sys.argv[1])['Body'].read()\nprint(hashlib.sha256(body).hexdigest())");
    assert_eq!(b.py(&script, &[&name]).trim(), sha256(&src));

    let name = unique("from-boto3");
    b.py(&format!("{BOTO3_CLIENT}\ns3.upload_file(sys.argv[1], bucket, sys.argv[2])"), &[src.to_str().unwrap(), &name]);
    ws.run(&["download", "projects", &name, "-o", "back.zip"]).ok();
    assert_eq!(sha256(&ws.path("back.zip")), sha256(&src));
}

macro_rules! suite {
    ($module:ident, $backend:expr) => {
        mod $module {
            #[test]
            fn boto3_reads_what_credhost_wrote_and_the_reverse() {
                super::boto3_reads_what_credhost_wrote_and_the_reverse(&$backend);
            }
        }
    };
}

suite!(local_seaweedfs, super::Backend::local_seaweed());
suite!(aws_seaweedfs, super::Backend::aws_seaweed());
suite!(aws_moto, super::Backend::aws_moto());
suite!(local_rclone, super::Backend::local_rclone());
suite!(aws_rclone, super::Backend::aws_rclone());
