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

/// Appends to the object named by `sys.argv[1]` through SeaweedFS's filer,
/// which keeps the checksum its S3 gateway stored with the object.
const SEAWEEDFS_APPEND: &str = r#"
import os, sys, urllib.request
b = "credhost-boundary"
body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"tail\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\ntail\r\n" f"--{b}--\r\n").encode()
url = f"{os.environ['CREDHOST_TEST_S3_FILER']}/buckets/{os.environ['CREDHOST_TEST_S3_BUCKET']}/{sys.argv[1]}?op=append"
req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={b}"})
urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req).read()
"#;

/// Stores the object named by `sys.argv[1]` again with a CRC32C it does not
/// have, which `rclone serve s3` keeps as told.
const RCLONE_WRONG_CHECKSUM: &str = r#"
import base64
s3 = boto3.client("s3", endpoint_url=os.environ["CREDHOST_TEST_S3_ENDPOINT"],
    aws_access_key_id=os.environ["CREDHOST_TEST_S3_ACCESS_KEY"],
    aws_secret_access_key=os.environ["CREDHOST_TEST_S3_SECRET_KEY"],
    region_name=os.environ["CREDHOST_TEST_S3_REGION"],
    config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"))
body = s3.get_object(Bucket=bucket, Key=sys.argv[1])["Body"].read()
s3.put_object(Bucket=bucket, Key=sys.argv[1], Body=body, ChecksumCRC32C=base64.b64encode(bytes.fromhex("12345678")).decode())
"#;

/// A download whose bytes disagree with the CRC32C its object carries fails
/// (exit 1, one line) and leaves nothing where it was going. `damage` is a
/// Python snippet that does that to the object named by its argument.
fn a_damaged_object_is_refused_and_no_file_is_left(b: &Backend, damage: &str) {
    let ws = b.ws();
    write_zip(&ws.path("src.zip"), 20 * MIB + 3, 23); // multipart at 8 MiB parts
    let name = unique("damaged");
    ws.run(&["upload", "src.zip", "--name", &name]).ok();
    ws.run(&["download", "projects", &name, "-o", "first.zip"]).ok();
    b.py(&format!("{BOTO3_CLIENT}\n{damage}"), &[&name]);
    let err = ws.run(&["download", "projects", &name, "-o", "back.zip"]).fails_with(1);
    assert!(err.contains("crc32c") && err.lines().count() == 1, "{err}");
    assert!(!ws.path("back.zip").exists(), "a damaged download left a file");
    let leftovers: Vec<_> = std::fs::read_dir(ws.dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.contains(".part"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

#[test]
fn local_seaweedfs_a_damaged_object_is_refused_and_no_file_is_left() {
    a_damaged_object_is_refused_and_no_file_is_left(&Backend::local_seaweed(), SEAWEEDFS_APPEND);
}

#[test]
fn local_rclone_a_damaged_object_is_refused_and_no_file_is_left() {
    a_damaged_object_is_refused_and_no_file_is_left(&Backend::local_rclone(), RCLONE_WRONG_CHECKSUM);
}
