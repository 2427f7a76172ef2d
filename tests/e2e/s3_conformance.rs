//! One conformance suite for every S3-backed store, each run against a real
//! server and cross-checked with boto3: the local plugin on SeaweedFS, and the
//! aws plugin on SeaweedFS and on moto.

use std::time::Duration;

use credhost_e2e::*;

const MIB: u64 = 1 << 20;

/// A plugin configuration plus the S3 endpoint behind it, for boto3.
struct Backend {
    svc: Services,
    make: fn(&Services) -> Workspace,
    /// Environment for the boto3 prelude (endpoint, keys, bucket).
    s3_env: Vec<(String, String)>,
    /// The variable holding the secret key, to test wrong keys.
    secret_var: &'static str,
}

impl Backend {
    fn local_seaweed() -> Self {
        Self {
            svc: Services::get(),
            make: |svc| Workspace::local_s3(svc, "{ url = \"http://127.0.0.1:1\", auth = \"none\" }"),
            s3_env: Vec::new(),
            secret_var: "TEST_S3_SECRET",
        }
    }

    fn aws_seaweed() -> Self {
        Self {
            svc: Services::get(),
            make: |svc| Workspace::aws(svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), ""),
            s3_env: Vec::new(),
            secret_var: "AWS_SECRET_ACCESS_KEY",
        }
    }

    fn aws_moto() -> Self {
        let svc = Services::get();
        let moto = svc.var("CREDHOST_TEST_MOTO_ENDPOINT");
        let b = Self {
            s3_env: vec![("CREDHOST_TEST_S3_ENDPOINT".to_owned(), moto)],
            svc,
            make: |svc| Workspace::aws(svc, &svc.var("CREDHOST_TEST_MOTO_ENDPOINT"), ""),
            secret_var: "AWS_SECRET_ACCESS_KEY",
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

    fn multipart_uploads(&self, prefix: &str) -> String {
        let script = format!(
            "{BOTO3_CLIENT}\nr = s3.list_multipart_uploads(Bucket=bucket, Prefix=sys.argv[1])\nprint(len(r.get('Uploads', [])))"
        );
        self.py(&script, &[prefix]).trim().to_owned()
    }

    fn object_exists(&self, key: &str) -> bool {
        let script = format!(
            "{BOTO3_CLIENT}\nimport botocore\ntry:\n    s3.head_object(Bucket=bucket, Key=sys.argv[1]); print('yes')\nexcept botocore.exceptions.ClientError:\n    print('no')"
        );
        self.py(&script, &[key]).trim() == "yes"
    }
}

fn round_trips_including_half_gib(b: &Backend) {
    let ws = b.ws();
    // Below, at and above the 8 MiB part size, and a large multipart object.
    for (size, seed) in [(1000u64, 11u64), (8 * MIB, 12), (8 * MIB * 3 + 5, 13), (512 * MIB, 14)] {
        let name = unique("rt");
        let src = ws.path("src.zip");
        write_zip(&src, size, seed);
        let out = ws.run(&["upload", "src.zip", "--name", &name]).ok();
        assert_eq!(out.trim(), format!("projects {name}"));
        ws.run(&["download", "projects", &name, "-o", "dest.zip", "--force"]).ok();
        assert_eq!(sha256(&src), sha256(&ws.path("dest.zip")), "size {size}");
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

fn wrong_keys_are_an_auth_failure(b: &Backend) {
    let mut ws = b.ws();
    ws.set_env(b.secret_var, "definitely-wrong-secret");
    write_zip(&ws.path("a.zip"), 1000, 1);
    let err = ws.run(&["upload", "a.zip", "--name", &unique("wrong")]).fails_with(4);
    assert!(!err.contains("definitely-wrong-secret"), "secret leaked: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let err = ws.run(&["download", "projects", "whatever.zip"]).fails_with(4);
    assert!(!err.contains("definitely-wrong-secret"));
    let run = ws.run(&["check"]);
    run.fails_with(6);
    assert!(run.stdout().contains("FAIL storage"), "{}", run.stdout());
}

fn missing_object_is_not_found(b: &Backend) {
    let ws = b.ws();
    ws.run(&["download", "projects", &unique("missing"), "-o", "x.zip"]).fails_with(3);
    assert!(!ws.path("x.zip").exists());
    let run = ws.run(&["check"]);
    assert!(run.stdout().contains("ok   storage"), "{}", run.stdout());
}

/// A reader that fails after `left` bytes, like a client that disconnects.
struct FailingReader {
    left: u64,
}

impl std::io::Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away"));
        }
        let n = (buf.len() as u64).min(self.left) as usize;
        buf[..n].fill(7);
        self.left -= n as u64;
        Ok(n)
    }
}

fn failed_stream_upload_leaves_nothing(b: &Backend) {
    let ws = b.ws();
    let name = unique("abort");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(async {
        // In-process: the library API with the same configuration and environment.
        ws.apply_env();
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        provider.upload_reader(&name, FailingReader { left: 20 * MIB }, None, None).await.unwrap_err()
    });
    assert!(err.to_string().contains("client went away"), "{err}");
    assert!(!b.object_exists(&name), "a partial object is visible");
    assert_eq!(b.multipart_uploads(&name), "0", "a multipart upload was left behind");
}

/// Bytes the process has read so far (all threads), from /proc.
fn bytes_read(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| io.lines().find_map(|l| l.strip_prefix("rchar: ").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

fn part_files(ws: &Workspace) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(ws.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".part"))
        .collect()
}

fn sigint(pid: u32) {
    let st = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(st.success());
}

/// Waits until `ready` says the child is mid-transfer, then interrupts it.
fn interrupt_when(child: &mut std::process::Child, what: &str, ready: impl Fn(u32) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready(child.id()) {
        assert!(std::time::Instant::now() < deadline, "{what} never got going");
        assert!(child.try_wait().unwrap().is_none(), "{what} ended before it could be interrupted");
        std::thread::sleep(Duration::from_millis(1));
    }
    sigint(child.id());
    assert_eq!(child.wait().unwrap().code(), Some(130), "interrupted {what}: exit code");
}

fn cancelled_transfers_leave_nothing(b: &Backend) {
    let ws = b.ws();
    write_zip(&ws.path("big.zip"), 512 * MIB, 31);
    let name = unique("cancel");

    // An upload interrupted well under way: no object, no multipart upload.
    let mut child = ws.cmd(&["upload", "big.zip", "--name", &name]).spawn().unwrap();
    interrupt_when(&mut child, "upload", |pid| bytes_read(pid) > 96 * MIB);
    assert!(!b.object_exists(&name), "interrupted upload left an object");
    assert_eq!(b.multipart_uploads(&name), "0", "interrupted upload left a multipart upload");

    // A download interrupted as soon as it writes: nothing at the destination, no temporary file.
    ws.run(&["upload", "big.zip", "--name", &name]).ok();
    let mut child = ws.cmd(&["download", "projects", &name, "-o", "dl.zip"]).spawn().unwrap();
    interrupt_when(&mut child, "download", |_| !part_files(&ws).is_empty());
    assert!(!ws.path("dl.zip").exists(), "interrupted download left a file at the destination");
    assert!(part_files(&ws).is_empty(), "temporary files left: {:?}", part_files(&ws));
}

fn secrets_stay_out_of_output_and_logs(b: &Backend) {
    let secret = b.svc.var("CREDHOST_TEST_S3_SECRET_KEY");
    let ws = b.ws();
    write_zip(&ws.path("a.zip"), 10 * MIB, 5);
    let name = unique("quiet");
    for args in [
        vec!["-vvv", "upload", "a.zip", "--name", name.as_str()],
        vec!["-vvv", "download", "projects", name.as_str(), "-o", "b.zip"],
        vec!["-vvv", "credentials"],
        vec!["-vvv", "credentials", "--format", "json"],
        vec!["-vvv", "token", "--format", "json"],
        vec!["-vvv", "check"],
    ] {
        let run = ws.run(&args);
        // `check` may fail on an unreachable registry; the point is what it prints.
        assert!(matches!(run.code(), 0 | 6), "{args:?}: {}", run.stderr());
        assert!(!run.stdout().contains(&secret) && !run.stderr().contains(&secret), "secret in output of {args:?}");
    }
    let out = ws.run(&["credentials", "--format", "json", "--show-secrets"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["AWS_SECRET_ACCESS_KEY"], secret.as_str());
    assert_eq!(v["AWS_ACCESS_KEY_ID"], b.svc.var("CREDHOST_TEST_S3_ACCESS_KEY").as_str());
    assert_eq!(v["AWS_DEFAULT_REGION"], "us-east-1");
    assert_eq!(v["PROJECTS_BUCKET"], "projects");
    let out = ws.run(&["credentials", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["AWS_SECRET_ACCESS_KEY"], "<redacted>");
}

macro_rules! suite {
    ($module:ident, $backend:expr, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    super::$test(&$backend);
                }
            )*
        }
    };
}

suite!(
    local_seaweedfs,
    super::Backend::local_seaweed(),
    [
        round_trips_including_half_gib,
        boto3_reads_what_credhost_wrote_and_the_reverse,
        wrong_keys_are_an_auth_failure,
        missing_object_is_not_found,
        failed_stream_upload_leaves_nothing,
        cancelled_transfers_leave_nothing,
        secrets_stay_out_of_output_and_logs,
    ]
);

suite!(
    aws_seaweedfs,
    super::Backend::aws_seaweed(),
    [
        round_trips_including_half_gib,
        boto3_reads_what_credhost_wrote_and_the_reverse,
        wrong_keys_are_an_auth_failure,
        missing_object_is_not_found,
        failed_stream_upload_leaves_nothing,
        cancelled_transfers_leave_nothing,
        secrets_stay_out_of_output_and_logs,
    ]
);

// moto accepts any keys, so the wrong-keys case cannot fail there.
suite!(
    aws_moto,
    super::Backend::aws_moto(),
    [
        round_trips_including_half_gib,
        boto3_reads_what_credhost_wrote_and_the_reverse,
        missing_object_is_not_found,
        failed_stream_upload_leaves_nothing,
        cancelled_transfers_leave_nothing,
    ]
);
