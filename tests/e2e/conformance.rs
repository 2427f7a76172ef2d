//! The provider guarantees, as one suite run over every storage backend,
//! each against its real server: the filesystem store, the local plugin on
//! SeaweedFS and on `rclone serve s3` (ranged GETs answered 200, multipart
//! ETags without the -N suffix), the aws plugin on SeaweedFS and on moto,
//! and the gcp plugin on
//! gcp-storage-emulator and on fake-gcs-server (each behind the
//! token-checking proxy). Every backend has a
//! registry with credentials too, so that every secret a platform handles
//! is looked for in every output.
//!
//! A check a backend cannot do is listed with the reason in
//! [`Backend::cannot`].

use std::{
    path::Path,
    time::{Duration, Instant},
};

use credhost_e2e::{backend::*, *};

// ----------------------------------------------------------------- the checks

/// Round trips below, at and above the multi-part size, and half a GiB.
fn round_trips(b: &Backend) {
    let ws = b.ws();
    let part = b.part_size();
    for (size, seed) in [(1000u64, 11u64), (part, 12), (3 * part + 5, 13), (512 * MIB, 14)] {
        let name = unique("rt");
        let src = ws.path("src.zip");
        write_zip(&src, size, seed);
        let put: serde_json::Value =
            serde_json::from_str(&ws.run(&["upload", "src.zip", "--name", &name, "--json"]).ok()).unwrap();
        assert_eq!((put["bucket"].as_str(), put["name"].as_str()), (Some("projects"), Some(name.as_str())));
        let got: serde_json::Value =
            serde_json::from_str(&ws.run(&["download", "projects", &name, "-o", "dest.zip", "--force", "--json"]).ok())
                .unwrap();
        assert_eq!((got["size"].clone(), got["checksum"].clone()), (put["size"].clone(), put["checksum"].clone()));
        assert_eq!(sha256(&src), sha256(&ws.path("dest.zip")), "size {size}");
        b.forget(&name);
    }
}

/// Names with `/` are stored and fetched under their full name; a download
/// without `-o` lands under the last segment.
fn names_with_slashes(b: &Backend) {
    let ws = b.ws();
    let name = format!("team a/{}/", std::process::id()) + &unique("nested");
    write_zip(&ws.path("src.zip"), 4096, 21);
    assert_eq!(ws.run(&["upload", "src.zip", "--name", &name]).ok().trim(), format!("projects {name}"));
    assert!(b.object_exists(&ws, &name), "stored under its full name");
    let out = ws.run(&["download", "projects", &name]).ok();
    let last = name.rsplit('/').next().unwrap();
    assert_eq!(out.trim(), format!("./{last}"));
    assert_eq!(sha256(&ws.path(last)), sha256(&ws.path("src.zip")));
    b.forget(&name);
}

/// A missing object is exit 3 and leaves nothing at the destination; so is a
/// missing bucket.
fn missing_object_and_bucket(b: &Backend) {
    let ws = b.ws();
    let err = ws.run(&["download", "projects", &unique("missing"), "-o", "x.zip"]).fails_with(3);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!ws.path("x.zip").exists());
    assert!(part_files(ws.dir.path()).is_empty());
    let err = ws.run(&["download", "no-such-bucket-here", &unique("missing"), "-o", "x.zip"]).fails_with(3);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Wrong storage credentials are an authentication failure (exit 4), on one
/// line that holds no secret, for upload, download and check.
fn wrong_credentials(b: &Backend) {
    if let Some(why) = b.cannot(Check::WrongCredentials) {
        println!("not applicable on {:?}: {why}", b.kind);
        return;
    }
    let mut ws = b.ws();
    b.break_credentials(&mut ws);
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

/// An upload whose source fails midway stores nothing and leaves nothing.
fn source_failing_midway(b: &Backend) {
    let ws = b.ws();
    let name = unique("abort");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(async {
        // In-process: the library with the same configuration and environment.
        ws.apply_env();
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        let err =
            provider.upload_reader(&name, FailingReader { left: 3 * b.part_size() }, None, None).await.unwrap_err();
        provider.wait_idle(Duration::from_secs(10)).await;
        err
    });
    assert!(err.to_string().contains("client went away"), "{err}");
    if let Some(left) = b.leftovers(&ws, &name) {
        panic!("a failed upload left {left}");
    }
}

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap();
    assert!(st.success());
}

/// The signals a transfer is stopped by, each with the exit code it must
/// end with and what the command says: SIGTERM (Kubernetes, CI runners,
/// `timeout`), SIGHUP (a closed terminal or SSH session) and SIGINT (Ctrl-C).
const SIGNALS: [(&str, i32, &str); 3] =
    [("TERM", 143, "terminated (SIGTERM)"), ("HUP", 129, "hung up (SIGHUP)"), ("INT", 130, "interrupted")];

/// Bytes the process `pid` and its children (a plugin's process) have
/// written so far (`/proc/PID/io` `wchar`: every write, including the
/// ranged writes into a download file that was sized up front, whose
/// length says nothing of what is in it).
fn bytes_written(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let own: u64 = io.lines().find_map(|l| l.strip_prefix("wchar: ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
    let children = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()).collect::<Vec<_>>())
        .map(bytes_written)
        .sum::<u64>();
    own + children
}

/// A download's file inside its temporary `.part` directory under `dir`.
fn download_file_in(dir: &Path) -> Option<std::path::PathBuf> {
    part_files(dir).iter().filter_map(|d| std::fs::read_dir(d).ok()).flatten().flatten().map(|e| e.path()).next()
}

/// Starts `credhost ARGS`, waits until `ready` says the transfer is under
/// way, sends `sig` and checks that the command ended as it must
/// (an entry of [`SIGNALS`]).
fn interrupt_when(ws: &Workspace, args: &[&str], (sig, code, says): (&str, i32, &str), ready: impl Fn(u32) -> bool) {
    let what = format!("{} (SIG{sig})", args[0]);
    let mut child =
        ws.cmd(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready(child.id()) {
        assert!(Instant::now() < deadline, "{what} never got going");
        assert!(child.try_wait().unwrap().is_none(), "{what} ended before it could be interrupted");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(child.id(), sig);
    let done = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(code), "{what}: exit code; stderr: {err}");
    assert!(err.contains(says), "{what}: {err}");
}

/// Uploads and downloads stopped by SIGTERM, SIGHUP or SIGINT once they are
/// moving bytes leave nothing behind: no object, no open upload, nothing at
/// the destination, no temporary directory. An upload is stopped once the
/// server shows it under way (a part or chunk received); a download once
/// its file holds data (at least 4 MiB written by the process), not merely
/// once its temporary directory exists.
fn cancellation_leaves_nothing(b: &Backend) {
    let ws = b.ws();
    let size = 512 * MIB;
    write_zip(&ws.path("big.zip"), size, 31);

    for signal in SIGNALS {
        let name = unique("cancel");
        interrupt_when(&ws, &["upload", "big.zip", "--name", &name], signal, |_| b.upload_under_way(&ws, &name));
        if let Some(left) = b.leftovers(&ws, &name) {
            panic!("an upload stopped by SIG{} left {left}", signal.0);
        }
    }

    let name = unique("cancel");
    ws.run(&["upload", "big.zip", "--name", &name]).ok();
    for signal in SIGNALS {
        let at = std::cell::Cell::new(0);
        interrupt_when(&ws, &["download", "projects", &name, "-o", "dl.zip"], signal, |pid| {
            let written = bytes_written(pid);
            at.set(written);
            download_file_in(ws.dir.path()).is_some() && written >= 4 * MIB
        });
        println!("{:?}: a download stopped by SIG{} once {} bytes were written", b.kind, signal.0, at.get());
        assert!(at.get() < size, "the download was complete ({} bytes written) before SIG{}", at.get(), signal.0);
        assert!(!ws.path("dl.zip").exists(), "a download stopped by SIG{} left a file at the destination", signal.0);
        let parts = part_files(ws.dir.path());
        assert!(parts.is_empty(), "a download stopped by SIG{} left temporary files: {parts:?}", signal.0);
    }
    b.forget(&name);
}

/// A download onto an existing file: refused (exit 7, the file untouched)
/// unless `--force`, which replaces it.
fn download_onto_an_existing_file(b: &Backend) {
    let ws = b.ws();
    let name = unique("exists");
    write_zip(&ws.path("src.zip"), 3000, 41);
    ws.run(&["upload", "src.zip", "--name", &name]).ok();
    std::fs::write(ws.path("there.zip"), b"precious").unwrap();
    let err = ws.run(&["download", "projects", &name, "-o", "there.zip"]).fails_with(7);
    assert!(err.contains("already exists (use --force to overwrite)"), "{err}");
    assert_eq!(std::fs::read(ws.path("there.zip")).unwrap(), b"precious");
    ws.run(&["download", "projects", &name, "-o", "there.zip", "--force"]).ok();
    assert_eq!(sha256(&ws.path("there.zip")), sha256(&ws.path("src.zip")));
    assert!(part_files(ws.dir.path()).is_empty());
    b.forget(&name);
}

/// A way of asking for log records: its extra arguments and environment.
struct Logs {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

/// Default, `-vvv`, `CREDHOST_LOG=trace`, and trace with the HTTP and
/// cloud-SDK libraries' own records (which hold request and response bodies
/// and headers).
const LOG_LEVELS: [Logs; 4] = [
    Logs { name: "default", args: &[], env: &[] },
    Logs { name: "-vvv", args: &["-vvv"], env: &[] },
    Logs { name: "CREDHOST_LOG=trace", args: &[], env: &[("CREDHOST_LOG", "trace")] },
    Logs {
        name: "trace with dependencies",
        args: &[],
        env: &[("CREDHOST_LOG", "trace"), ("CREDHOST_LOG_DEPENDENCIES", "1")],
    },
];

/// `credhost ARGS` in `ws` with the log records of `logs`.
fn run_logged(ws: &Workspace, logs: &Logs, args: &[&str]) -> Run {
    let mut cmd = ws.cmd(&[logs.args, args].concat());
    cmd.envs(logs.env.iter().copied());
    Run(cmd.output().unwrap())
}

/// No secret the platform handles, nor its base64, appears in any output at
/// any log level (`-vvv`, `CREDHOST_LOG=trace`, trace with the dependencies'
/// records), in any credentials form (unless asked for), and
/// `REGISTRY_TOKEN` is redacted in every form. Every command fetches tokens
/// of its own (the GCP token endpoint mints a new one for each process), so
/// the tokens looked for are all those the endpoint issued while the test
/// ran, as they are and in docker's `base64(user:token)` form.
fn secrets_stay_out_of_output_and_logs(b: &Backend) {
    let ws = b.ws();
    let issued_before = b.kind.is_gcp().then(|| gcp::tokens_issued(&b.svc));
    let secrets = b.secrets(&ws);
    let mut needles: Vec<String> = secrets.iter().flat_map(|s| [s.clone(), base64(s)]).collect();
    // The wrong secret the failure paths below use is a secret too.
    needles.push("definitely-wrong-secret".into());
    write_zip(&ws.path("a.zip"), b.part_size() + 3, 5);
    let name = unique("quiet");
    // What each command printed, looked through once every token is known.
    let mut seen: Vec<(String, String)> = Vec::new();
    let forms = ["env", "json", "dotenv", "shell", "k8s-secret"];
    let mut commands: Vec<Vec<&str>> = vec![
        vec!["upload", "a.zip", "--name", name.as_str()],
        vec!["download", "projects", name.as_str(), "-o", "b.zip", "--force"],
        vec!["check"],
        vec!["plugins"],
        vec!["docker-config", "-o", "-"],
    ];
    commands.extend(forms.iter().map(|f| vec!["credentials", "--format", f]));
    // A grant of every part a platform can grant (the local backends' htpasswd
    // registry cannot narrow: its password is accepted wider, and a secret).
    let project = format!("projects/{name}");
    let mut grant =
        vec!["grant", "--project", project.as_str(), "--repository", "conformance", "--allow-unscoped-registry"];
    if matches!(b.kind, Kind::AwsSeaweed | Kind::AwsMoto | Kind::Gcp | Kind::GcpFake) {
        grant.push("--with-keys");
    }
    commands.extend(forms.iter().map(|f| [grant.clone(), vec!["--format", f]].concat()));
    for level in &LOG_LEVELS {
        for args in &commands {
            let run = run_logged(&ws, level, args);
            assert!(matches!(run.code(), 0 | 6), "{args:?} at {}: {}", level.name, run.stderr());
            if level.name != "default" && args[0] == "upload" {
                assert!(run.stderr().contains("INFO"), "{} took effect: {}", level.name, run.stderr());
            }
            seen.push((format!("{args:?} at {}", level.name), run.stdout() + &run.stderr()));
        }
    }
    for form in forms {
        let out = ws.run(&["credentials", "--format", form]).ok();
        let line = out.lines().find(|l| l.contains("REGISTRY_TOKEN")).unwrap_or_else(|| panic!("{form}: {out}"));
        assert!(line.contains("<redacted>"), "{form}: REGISTRY_TOKEN is not redacted: {line}");
    }
    // Asked for, the credentials print; the logs still hold no secret.
    let shown: serde_json::Value =
        serde_json::from_str(&ws.run(&["credentials", "--format", "json", "--show-secrets"]).ok()).unwrap();
    assert_eq!(shown["PROJECTS_BUCKET"], "projects");
    for level in &LOG_LEVELS[1..] {
        for args in [&["token", "--format", "json"][..], &["credentials", "--show-secrets"]] {
            let run = run_logged(&ws, level, args);
            assert_eq!(run.code(), 0, "{}", run.stderr());
            seen.push((format!("the log of {args:?} at {}", level.name), run.stderr()));
        }
    }
    // Failure paths: a missing object, a missing bucket, and (where there
    // are any) credentials the server rejects.
    let missing = unique("missing");
    let mut failing: Vec<(&Workspace, Vec<&str>)> = vec![
        (&ws, vec!["download", "projects", missing.as_str(), "-o", "m.zip"]),
        (&ws, vec!["download", "no-such-bucket-here", missing.as_str(), "-o", "m.zip"]),
        (&ws, vec!["delete", "projects", missing.as_str()]),
    ];
    let mut broken = b.ws();
    if b.kind != Kind::Fs {
        b.break_credentials(&mut broken);
        std::fs::copy(ws.path("a.zip"), broken.path("a.zip")).unwrap();
    }
    if b.kind != Kind::Fs {
        failing.push((&broken, vec!["upload", "a.zip", "--name", missing.as_str()]));
    }
    for (target, args) in &failing {
        for level in &LOG_LEVELS[1..] {
            let run = run_logged(target, level, args);
            seen.push((format!("{args:?} at {}", level.name), run.stdout() + &run.stderr()));
        }
    }

    if matches!(b.kind, Kind::AwsSeaweed | Kind::AwsMoto) {
        needles.extend(b.moto_sessions());
    }
    if let Some(since) = issued_before {
        let issued = gcp::tokens_issued_since(&b.svc, since);
        // The REGISTRY_TOKEN a command printed when asked is one of them:
        // the list holds what the commands under test carried.
        let printed = shown["REGISTRY_TOKEN"].as_str().expect("a REGISTRY_TOKEN");
        assert!(
            issued.iter().any(|t| gcp::token_forms(t).contains(&printed.to_owned())),
            "the token endpoint's list lacks the token a command printed ({} tokens listed)",
            issued.len()
        );
        needles.extend(issued.iter().flat_map(|t| gcp::token_forms(t)));
    }
    needles.retain(|n| n.len() >= 8);
    needles.sort();
    needles.dedup();
    for (what, text) in &seen {
        for n in &needles {
            assert!(!text.contains(n.as_str()), "a secret appeared in {what}: …{}…", &n[..4]);
        }
    }
    b.forget(&name);
}

/// `curl` of `url` with `headers`, `-T upload` for a PUT; (status, body file).
fn curl_url(
    ws: &Workspace,
    method: &str,
    url: &str,
    headers: &serde_json::Value,
    upload: Option<&Path>,
    out: &str,
) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-o", ws.path(out).to_str().unwrap(), "-w", "%{http_code}", "-X", method]);
    for (k, v) in headers.as_object().into_iter().flatten() {
        cmd.args(["-H", &format!("{k}: {}", v.as_str().unwrap_or_default())]);
    }
    if let Some(file) = upload {
        cmd.args(["-T", file.to_str().unwrap()]);
    }
    let done = cmd.arg(url).output().unwrap();
    String::from_utf8_lossy(&done.stdout).into_owned()
}

fn presign_json(ws: &Workspace, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["presign"];
    full.extend_from_slice(args);
    full.push("--json");
    serde_json::from_str(&ws.run(&full).ok()).unwrap()
}

/// Presigned URLs: plain curl reads an object through a GET URL, byte for
/// byte, and stores one through a PUT URL that credhost then reads; where
/// the server checks signatures, a tampered or expired URL is refused.
fn presigned_urls(b: &Backend) {
    let ws = b.ws();
    if let Some(why) = b.cannot(Check::PresignedUrls) {
        println!("not applicable on {:?}: {why}", b.kind);
        let err = ws.run(&["presign", "get", "projects", "a.zip"]).fails_with(1);
        assert!(err.contains("has no URLs"), "{err}");
        return;
    }
    let name = unique("presigned");
    write_zip(&ws.path("src.zip"), 3 * MIB + 11, 51);
    ws.run(&["upload", "src.zip", "--name", &name]).ok();
    let get = presign_json(&ws, &["get", "projects", &name, "--expires", "10m"]);
    assert_eq!(get["method"], "GET");
    let expires_at = get["expires_at"].as_i64().unwrap();
    let now = credhost::api::rules::unix_now();
    assert!((now + 590..=now + 610).contains(&expires_at), "{get}");
    let url = get["url"].as_str().unwrap();
    assert_eq!(curl_url(&ws, "GET", url, &get["headers"], None, "got.zip"), "200");
    assert_eq!(sha256(&ws.path("got.zip")), sha256(&ws.path("src.zip")));
    // Printed plainly, the URL is the one line of output.
    let plain = ws.run(&["presign", "get", "projects", &name]).ok();
    assert_eq!(plain.lines().count(), 1);

    let put_name = unique("presigned-put");
    let put = presign_json(&ws, &["put", &put_name]);
    assert_eq!(put["method"], "PUT");
    assert_eq!(
        curl_url(&ws, "PUT", put["url"].as_str().unwrap(), &put["headers"], Some(&ws.path("src.zip")), "put.out"),
        "200"
    );
    ws.run(&["download", "projects", &put_name, "-o", "put-back.zip"]).ok();
    assert_eq!(sha256(&ws.path("put-back.zip")), sha256(&ws.path("src.zip")));

    // A job's PROJECT_URL: a secret, redacted unless asked for.
    let redacted = ws.run(&["credentials", "--project", &format!("projects/{name}")]).ok();
    assert!(redacted.contains("PROJECT_URL=<redacted>"), "{redacted}");
    let v: serde_json::Value = serde_json::from_str(
        &ws.run(&[
            "credentials",
            "--format",
            "json",
            "--show-secrets",
            "--project",
            &format!("projects/{name}"),
            "--expires",
            "5m",
        ])
        .ok(),
    )
    .unwrap();
    assert_eq!(
        curl_url(&ws, "GET", v["PROJECT_URL"].as_str().unwrap(), &serde_json::json!({}), None, "job.zip"),
        "200"
    );
    assert_eq!(sha256(&ws.path("job.zip")), sha256(&ws.path("src.zip")));

    if let Some(why) = b.cannot(Check::SignatureChecked) {
        println!("signature checks not applicable on {:?}: {why}", b.kind);
    } else {
        // One character of the signature changed.
        let (head, last) = url.split_at(url.len() - 1);
        let tampered = format!("{head}{}", if last == "0" { "1" } else { "0" });
        assert_eq!(curl_url(&ws, "GET", &tampered, &get["headers"], None, "tampered.out"), "403");
        let short = presign_json(&ws, &["get", "projects", &name, "--expires", "1s"]);
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(
            curl_url(&ws, "GET", short["url"].as_str().unwrap(), &short["headers"], None, "expired.out"),
            b.expired_url_status()
        );
    }
    let err = ws.run(&["presign", "get", "projects", &name, "--expires", "8d"]).fails_with(2);
    assert!(err.contains("7 days"), "{err}");
    b.forget(&name);
    b.forget(&put_name);
}

/// Delete: the object is gone (a download is not found), and deleting again
/// succeeds; names an upload would refuse are refused.
fn delete_is_final_and_idempotent(b: &Backend) {
    let ws = b.ws();
    let name = unique("delete");
    write_zip(&ws.path("src.zip"), 2000, 61);
    ws.run(&["upload", "src.zip", "--name", &name]).ok();
    ws.run(&["delete", "projects", &name]).ok();
    assert!(!b.object_exists(&ws, &name));
    ws.run(&["download", "projects", &name, "-o", "gone.zip"]).fails_with(3);
    ws.run(&["delete", "projects", &name]).ok();
    ws.run(&["delete", "projects", &unique("never-there")]).ok();
    for bad in ["../escape.zip", "/abs.zip", "a\u{202e}b.zip"] {
        ws.run(&["delete", "projects", bad]).fails_with(2);
    }
}

macro_rules! suite {
    ($module:ident, $kind:expr) => {
        suite!($module, Backend::new($kind), ());
    };
    ($module:ident, $kind:expr, process) => {
        suite!($module, Backend::new($kind).isolated(), ());
    };
    ($module:ident, $backend:expr, ()) => {
        mod $module {
            use super::*;

            fn backend() -> Backend {
                $backend
            }

            #[test]
            fn round_trips_including_multi_part_and_half_gib() {
                round_trips(&backend());
            }
            #[test]
            fn names_with_slashes() {
                super::names_with_slashes(&backend());
            }
            #[test]
            fn missing_object_and_bucket_are_not_found() {
                missing_object_and_bucket(&backend());
            }
            #[test]
            fn wrong_credentials_are_an_auth_failure() {
                wrong_credentials(&backend());
            }
            #[test]
            fn an_upload_whose_source_fails_midway_leaves_nothing() {
                source_failing_midway(&backend());
            }
            #[test]
            fn cancelled_transfers_leave_nothing() {
                cancellation_leaves_nothing(&backend());
            }
            #[test]
            fn download_onto_an_existing_file() {
                super::download_onto_an_existing_file(&backend());
            }
            #[test]
            fn secrets_stay_out_of_output_and_logs() {
                super::secrets_stay_out_of_output_and_logs(&backend());
            }
            #[test]
            fn presigned_urls() {
                super::presigned_urls(&backend());
            }
            #[test]
            fn delete_is_final_and_idempotent() {
                super::delete_is_final_and_idempotent(&backend());
            }
        }
    };
}

suite!(fs, Kind::Fs);
suite!(local_seaweedfs, Kind::LocalS3);
suite!(local_rclone, Kind::LocalRclone);
suite!(aws_seaweedfs, Kind::AwsSeaweed);
suite!(aws_moto, Kind::AwsMoto);
suite!(gcp_emulator, Kind::Gcp);
suite!(gcp_fake_gcs, Kind::GcpFake);

// The same guarantees with each plugin in a child process
// (`isolation = "process"`): files go to it as descriptors, streams through
// a socket pair, cancellation reaches its operation.
suite!(process_fs, Kind::Fs, process);
suite!(process_local_seaweedfs, Kind::LocalS3, process);
suite!(process_local_rclone, Kind::LocalRclone, process);
suite!(process_aws_seaweedfs, Kind::AwsSeaweed, process);
suite!(process_aws_moto, Kind::AwsMoto, process);
suite!(process_gcp_emulator, Kind::Gcp, process);
suite!(process_gcp_fake_gcs, Kind::GcpFake, process);
