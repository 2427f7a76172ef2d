//! The local plugin's S3 backend against SeaweedFS, cross-checked with boto3.

use std::time::Duration;

use credhost_e2e::*;

const MIB: u64 = 1 << 20;

fn open_registry() -> &'static str {
    "{ url = \"http://127.0.0.1:1\", auth = \"none\" }"
}

#[test]
fn round_trips_including_half_gib() {
    let svc = Services::get();
    let ws = Workspace::local_s3(&svc, open_registry());
    // Below, at and above the 8 MiB part size, and a large multipart object.
    for (size, seed) in [(1000u64, 11u64), (8 * MIB, 12), (8 * MIB * 3 + 5, 13), (512 * MIB, 14)] {
        let name = unique("rt");
        let src = ws.path("src.zip");
        write_zip(&src, size, seed);
        let out = ws.run(&["upload", "src.zip", "--name", &name]).ok();
        assert_eq!(out.trim(), format!("projects {name}"));
        let dest = ws.path("dest.zip");
        ws.run(&["download", "projects", &name, "-o", "dest.zip", "--force"]).ok();
        assert_eq!(sha256(&src), sha256(&dest), "size {size}");
    }
}

#[test]
fn boto3_reads_what_credhost_wrote_and_the_reverse() {
    let svc = Services::get();
    let ws = Workspace::local_s3(&svc, open_registry());
    let src = ws.path("src.zip");
    write_zip(&src, 20 * MIB + 3, 21); // multipart at 8 MiB parts
    let name = unique("to-boto3");
    ws.run(&["upload", "src.zip", "--name", &name]).ok();
    let script = format!("{BOTO3_CLIENT}\nimport hashlib\nbody = s3.get_object(Bucket=bucket, Key=sys.argv[1])['Body'].read()\nprint(hashlib.sha256(body).hexdigest())");
    let digest = python(&svc, &script, &[&name]);
    assert_eq!(digest.trim(), sha256(&src));

    let name = unique("from-boto3");
    let put = format!("{BOTO3_CLIENT}\ns3.upload_file(sys.argv[1], bucket, sys.argv[2])");
    python(&svc, &put, &[src.to_str().unwrap(), &name]);
    ws.run(&["download", "projects", &name, "-o", "back.zip"]).ok();
    assert_eq!(sha256(&ws.path("back.zip")), sha256(&src));
}

#[test]
fn wrong_keys_are_an_auth_failure() {
    let svc = Services::get();
    let mut ws = Workspace::local_s3(&svc, open_registry());
    ws.set_env("TEST_S3_SECRET", "definitely-wrong-secret");
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

#[test]
fn missing_object_and_check() {
    let svc = Services::get();
    let ws = Workspace::local_s3(&svc, open_registry());
    ws.run(&["download", "projects", &unique("missing"), "-o", "x.zip"]).fails_with(3);
    assert!(!ws.path("x.zip").exists());
    let run = ws.run(&["check"]);
    assert!(run.stdout().contains("ok   storage"), "{}", run.stdout());
}

#[test]
fn secrets_stay_out_of_output_and_logs() {
    let svc = Services::get();
    let secret = svc.var("CREDHOST_TEST_S3_SECRET_KEY");
    let ws = Workspace::local_s3(&svc, open_registry());
    write_zip(&ws.path("a.zip"), 10 * MIB, 5);
    let name = unique("quiet");
    for args in [
        vec!["-vvv", "upload", "a.zip", "--name", name.as_str()],
        vec!["-vvv", "download", "projects", name.as_str(), "-o", "b.zip"],
        vec!["-vvv", "credentials"],
        vec!["-vvv", "credentials", "--format", "json"],
        vec!["-vvv", "check"],
    ] {
        let run = ws.run(&args);
        // `check` fails on the unreachable registry; the point is what it prints.
        assert!(matches!(run.code(), 0 | 6), "{args:?}: {}", run.stderr());
        assert!(!run.stdout().contains(&secret) && !run.stderr().contains(&secret), "secret in output of {args:?}");
    }
    let out = ws.run(&["credentials", "--format", "json", "--show-secrets"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["AWS_SECRET_ACCESS_KEY"], secret.as_str());
    assert_eq!(v["AWS_ACCESS_KEY_ID"], svc.var("CREDHOST_TEST_S3_ACCESS_KEY").as_str());
    assert_eq!(v["AWS_DEFAULT_REGION"], svc.var("CREDHOST_TEST_S3_REGION").as_str());
    assert_eq!(v["AWS_ENDPOINT_URL"], svc.var("CREDHOST_TEST_S3_ENDPOINT").as_str());
    let out = ws.run(&["credentials", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["AWS_SECRET_ACCESS_KEY"], "<redacted>");
}

fn multipart_uploads(svc: &Services, prefix: &str) -> String {
    let script = format!(
        "{BOTO3_CLIENT}\nr = s3.list_multipart_uploads(Bucket=bucket, Prefix=sys.argv[1])\nprint(len(r.get('Uploads', [])))"
    );
    python(svc, &script, &[prefix]).trim().to_owned()
}

fn object_exists(svc: &Services, key: &str) -> bool {
    let script = format!(
        "{BOTO3_CLIENT}\nimport botocore\ntry:\n    s3.head_object(Bucket=bucket, Key=sys.argv[1]); print('yes')\nexcept botocore.exceptions.ClientError:\n    print('no')"
    );
    python(svc, &script, &[key]).trim() == "yes"
}

/// A reader that fails after `fail_after` bytes, like a client that disconnects.
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

#[test]
fn failed_stream_upload_leaves_no_object_and_no_multipart_upload() {
    let svc = Services::get();
    let ws = Workspace::local_s3(&svc, open_registry());
    let name = unique("abort");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (k, v) in [("TEST_S3_KEY", "CREDHOST_TEST_S3_ACCESS_KEY"), ("TEST_S3_SECRET", "CREDHOST_TEST_S3_SECRET_KEY")] {
        std::env::set_var(k, svc.var(v));
    }
    let err = rt.block_on(async {
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        provider.upload_reader(&name, FailingReader { left: 20 * MIB }, None, None).await.unwrap_err()
    });
    assert!(err.to_string().contains("client went away"), "{err}");
    assert!(!object_exists(&svc, &name), "a partial object is visible");
    assert_eq!(multipart_uploads(&svc, &name), "0", "a multipart upload was left behind");
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

#[test]
fn cancelled_upload_and_download_leave_nothing_behind() {
    let svc = Services::get();
    let ws = Workspace::local_s3(&svc, open_registry());
    let src = ws.path("big.zip");
    write_zip(&src, 512 * MIB, 31);
    let name = unique("cancel");

    // Interrupt an upload once it is well under way: no object, no multipart upload.
    let mut child = ws.cmd(&["upload", "big.zip", "--name", &name]).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while bytes_read(child.id()) < 96 * MIB {
        assert!(std::time::Instant::now() < deadline, "upload never got going");
        assert!(child.try_wait().unwrap().is_none(), "upload ended before it could be interrupted");
        std::thread::sleep(Duration::from_millis(5));
    }
    sigint(child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted upload exit code");
    assert!(!object_exists(&svc, &name), "interrupted upload left an object");
    assert_eq!(multipart_uploads(&svc, &name), "0", "interrupted upload left a multipart upload");

    // Interrupt a download as soon as it writes: nothing at the destination, no temporary file.
    ws.run(&["upload", "big.zip", "--name", &name]).ok();
    let mut child = ws.cmd(&["download", "projects", &name, "-o", "dl.zip"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while part_files(&ws).is_empty() {
        assert!(std::time::Instant::now() < deadline, "download never started");
        assert!(child.try_wait().unwrap().is_none(), "download ended before it could be interrupted");
        std::thread::sleep(Duration::from_millis(1));
    }
    sigint(child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted download exit code");
    assert!(!ws.path("dl.zip").exists(), "interrupted download left a file at the destination");
    assert!(part_files(&ws).is_empty(), "temporary files left: {:?}", part_files(&ws));
}

fn sigint(pid: u32) {
    let st = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(st.success());
}
