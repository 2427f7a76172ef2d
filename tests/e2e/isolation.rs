//! `isolation = "process"`: an instance's plugin in a child process
//! (`credhost-plugin-runner`). The same answers as in-process; a plugin that
//! aborts, crashes or exits costs the call in flight (kind `unavailable`,
//! saying how the child died), never the host, and the next call gets a new
//! child; a constructor that never returns is killed at the instance's
//! `timeout`; `env` keeps the other platforms' secrets from the child. The
//! same fixture in-process ends the host, as the README says.

use std::{os::unix::fs::PermissionsExt, time::Instant};

use credhost_e2e::*;

/// A workspace whose instance `crash` runs the crash fixture, misbehaving
/// (`how`) once in `place`, with `isolation` and the extra `lines`.
fn crash_ws(how: &str, place: &str, isolation: &str, lines: &str) -> Workspace {
    let ws = Workspace::new();
    let dir = ws.path("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(artifact(&lib_file("fixture_crash")), dir.join(lib_file("credhost_crash"))).unwrap();
    ws.write_config(&format!(
        "platform = \"crash\"\nplugin_dir = \"plugins\"\n\n[plugins.crash]\nisolation = \"{isolation}\"\n{lines}\n[plugins.crash.settings]\nhow = \"{how}\"\nin = \"{place}\"\nmarker = {:?}\n",
        ws.path("marker").display().to_string()
    ));
    ws
}

/// The same answers in both modes, through the CLI: registry credentials,
/// build-job credentials, check, grants and presigned URLs (local on the
/// SeaweedFS store, its token-auth registry).
#[test]
fn a_plugin_in_a_child_process_answers_as_in_process() {
    let svc = Services::get();
    let ws = Workspace::local_token(&svc);
    let in_process: serde_json::Value = serde_json::from_str(&ws.run(&["token", "--format", "json"]).ok()).unwrap();
    let creds_in = ws.run(&["credentials", "--show-secrets"]).ok();
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(
        &text.replace(
            "[plugins.local.settings]",
            "[plugins.local]\nisolation = \"process\"\n\n[plugins.local.settings]",
        ),
    );
    let isolated: serde_json::Value = serde_json::from_str(&ws.run(&["token", "--format", "json"]).ok()).unwrap();
    assert_eq!(isolated["username"], in_process["username"]);
    assert_eq!(isolated["kind"], in_process["kind"]);
    assert!(isolated["password"].as_str().is_some_and(|p| p.len() > 20), "{isolated}");
    // Registry tokens are minted per call; the rest is the same text.
    let strip = |t: &str| t.lines().filter(|l| !l.starts_with("REGISTRY_TOKEN=")).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(&ws.run(&["credentials", "--show-secrets"]).ok()), strip(&creds_in));
    let check = ws.run(&["check"]).ok();
    assert!(check.contains("plugin process") && check.contains("pid "), "{check}");
    let grant =
        ws.run(&["grant", "--project", "projects/app.zip", "--repository", "team/app", "--format", "json"]).ok();
    let grant: serde_json::Value = serde_json::from_str(&grant).unwrap();
    assert_eq!(grant["CREDHOST_GRANT_REGISTRY_SCOPE"], "repository");
    // Files go to the child as descriptors: the same objects either way.
    write_zip(&ws.path("a.zip"), 3 * 8 * 1024 * 1024 + 5, 1);
    let name = unique("isolated");
    let up: serde_json::Value =
        serde_json::from_str(&ws.run(&["upload", "a.zip", "--name", &name, "--json"]).ok()).unwrap();
    let down: serde_json::Value =
        serde_json::from_str(&ws.run(&["download", "projects", &name, "-o", "b.zip", "--json"]).ok()).unwrap();
    assert_eq!((&up["size"], &up["checksum"]), (&down["size"], &down["checksum"]));
    assert_eq!(sha256(&ws.path("a.zip")), sha256(&ws.path("b.zip")));
    let rows: serde_json::Value = serde_json::from_str(&ws.run(&["plugins", "--json"]).ok()).unwrap();
    assert_eq!((rows[0]["status"].as_str(), rows[0]["isolation"].as_str()), (Some("loaded"), Some("process")));
    assert!(ws.run(&["plugins"]).ok().contains("runs in: a process of its own"));
}

/// abort(), SIGSEGV, exit(0) and a leak past `process_memory_limit_mib` in
/// a registry call: the host (here a
/// library user, one process for all the calls) gets an `unavailable`
/// error saying how the child died, within the call's time, and the next
/// call is answered by a new child.
#[test]
fn a_plugin_that_kills_its_process_costs_one_call() {
    for (how, says) in [("abort", "SIGABRT"), ("segv", "SIGSEGV"), ("exit", "exit status 0"), ("leak", "SIGABRT")] {
        let ws = crash_ws(how, "registry", "process", "process_memory_limit_mib = 256\n");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
            let provider = host.active().await.unwrap();
            let first = provider.process_id().expect("a child runs");
            let started = Instant::now();
            let err = provider.registry_auth(None, None).await.expect_err("the child died");
            assert!(started.elapsed().as_secs() < 10, "{how}: {:?}", started.elapsed());
            assert_eq!(err.kind(), credhost::ErrorKind::Unavailable, "{how}: {err}");
            assert!(err.to_string().contains(&format!("the plugin process for crash died: {says}")), "{err}");
            assert!(err.is_retryable(), "{err}");
            let state = provider.process_state().expect("a process instance");
            assert_eq!((state.crashes_in_a_row, state.last_exit.as_deref()), (1, Some(says)), "{state:?}");
            if how == "abort" {
                // Crashes in a row: said in the error and the state, and the
                // next start waits.
                std::fs::remove_file(ws.path("marker")).unwrap();
                let err = provider.registry_auth(None, None).await.expect_err("the child died again");
                assert!(err.to_string().contains("(2 times in a row; the next start waits 0.25 s)"), "{err}");
                let state = provider.process_state().unwrap();
                assert_eq!(state.crashes_in_a_row, 2, "{state:?}");
                assert!(state.next_start_waits.is_some(), "{state:?}");
                assert!(state.describe().contains("2 crash(es) in a row, the last: SIGABRT"), "{}", state.describe());
            }
            let auth = provider.registry_auth(None, None).await.unwrap().unwrap();
            assert_eq!(auth.secret.expose(), "crash-password");
            let second = provider.process_id().expect("a new child runs");
            assert_ne!(first, second, "{how}");
            assert!(!std::path::Path::new(&format!("/proc/{first}")).exists(), "the dead child is reaped");
            let state = provider.process_state().unwrap();
            assert_eq!((state.pid, state.crashes_in_a_row), (Some(second), 0), "{state:?}");
        });
    }
}

/// In-process, the same fixture ends the process that loaded it, in a
/// token call or in an upload: what the mode protects against.
#[test]
fn in_process_the_same_plugin_ends_the_host() {
    use std::os::unix::process::ExitStatusExt;
    let ws = crash_ws("segv", "registry", "in-process", "");
    let out = ws.run(&["token"]).0;
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
    let ws = crash_ws("abort", "upload", "in-process", "");
    write_zip(&ws.path("big.zip"), 8 << 20, 5);
    let out = ws.run(&["upload", "big.zip"]).0;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
}

/// A reader that counts its reads, for a streamed upload.
struct CountedReader {
    left: usize,
    reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl std::io::Read for CountedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = buf.len().min(self.left).min(64 << 10);
        buf[..n].fill(3);
        self.left -= n;
        Ok(n)
    }
}

/// abort(), SIGSEGV, exit(0) and a leak (past `process_memory_limit_mib`)
/// once 4 MiB of an upload are stored, a file's and a library caller's
/// stream's: the call fails `unavailable` within its time, saying how the
/// child died; nothing is published; the stream is read no more; the next
/// upload is stored whole by a new child.
#[test]
fn a_plugin_that_dies_mid_upload_costs_that_upload() {
    let size = 32usize << 20;
    for (how, says) in [("abort", "SIGABRT"), ("segv", "SIGSEGV"), ("exit", "exit status 0"), ("leak", "SIGABRT")] {
        for streamed in [false, true] {
            let ws = crash_ws(how, "upload", "process", "process_memory_limit_mib = 256\n");
            write_zip(&ws.path("big.zip"), size as u64, 3);
            let stored_at = ws.path("marker.store/app.zip");
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
                let provider = host.active().await.unwrap();
                let first = provider.process_id().expect("a child runs");
                let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let started = Instant::now();
                let err = if streamed {
                    let reader = CountedReader { left: size, reads: reads.clone() };
                    provider.upload_reader("app.zip", reader, None, None).await
                } else {
                    let opts = credhost::UploadOptions { name: Some("app.zip".into()), ..Default::default() };
                    provider.upload_file(&ws.path("big.zip"), &opts).await
                }
                .expect_err("the child died");
                let what = format!("{how}, streamed: {streamed}");
                assert!(started.elapsed().as_secs() < 20, "{what}: {:?}", started.elapsed());
                assert_eq!(err.kind(), credhost::ErrorKind::Unavailable, "{what}: {err}");
                assert!(err.to_string().contains(&format!("the plugin process for crash died: {says}")), "{err}");
                assert!(!stored_at.exists(), "{what}: a dead child's upload was published");
                if streamed {
                    let seen = reads.load(std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    assert_eq!(reads.load(std::sync::atomic::Ordering::Relaxed), seen, "{what}: still read");
                    assert!(seen * (64 << 10) < size, "{what}: the whole stream was read");
                }
                let reader = CountedReader { left: 9 << 20, reads };
                let stored = provider.upload_reader("app.zip", reader, None, None).await.expect("a new child");
                assert_eq!(stored.size, 9 << 20);
                assert_eq!(std::fs::metadata(&stored_at).unwrap().len(), 9 << 20);
                assert_ne!(provider.process_id(), Some(first), "{what}");
            });
        }
    }
}

/// An upload that stops moving is cancelled at `transfer_idle_timeout`, in
/// the child too (its future dropped), and nothing is published.
#[test]
fn a_wedged_upload_is_cancelled_in_the_child() {
    let ws = crash_ws("hang", "upload", "process", "transfer_idle_timeout = 2\n");
    write_zip(&ws.path("big.zip"), 8 << 20, 3);
    let started = Instant::now();
    let err = ws.run(&["upload", "big.zip", "--name", "app.zip"]).fails_with(1);
    assert!(started.elapsed().as_secs() < 15, "{:?}", started.elapsed());
    assert!(err.contains("no answer within 2 s"), "{err}");
    assert!(ws.path("marker.dropped").exists(), "the plugin's upload was not cancelled in the child");
    assert!(!ws.path("marker.store/app.zip").exists());
    ws.run(&["upload", "big.zip", "--name", "app.zip"]).ok();
    assert!(ws.path("marker.store/app.zip").exists());
}

/// A constructor that never returns: the child is killed at the
/// instance's `timeout`, and the host says so; the next start (the
/// constructor behaves now) serves.
#[test]
fn a_child_that_never_answers_its_handshake_is_killed() {
    let ws = crash_ws("hang", "new", "process", "timeout = 2");
    let started = Instant::now();
    let err = ws.run(&["token"]).fails_with(1);
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    assert!(err.contains("no answer within 2 s"), "{err}");
    assert!(!ws.run(&["token"]).ok().trim().is_empty());
}

/// `env` lists what the child may see: the other platforms' secrets stay
/// in the host.
#[test]
fn env_keeps_other_secrets_from_the_plugin_process() {
    let mut ws = crash_ws("abort", "never", "process", "env = [\"CRASH_*\"]");
    ws.set_env("CRASH_TOKEN", "mine");
    ws.set_env("OTHER_SECRET", "not-for-plugins");
    let out = ws.run(&["credentials"]).ok();
    assert!(out.contains("SEEN=CRASH_TOKEN"), "{out}");
    assert!(!out.contains("OTHER_SECRET"), "{out}");
    // In-process, the plugin sees everything the host does.
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&text.replace("isolation = \"process\"\nenv = [\"CRASH_*\"]", "isolation = \"in-process\""));
    assert!(ws.run(&["credentials"]).ok().contains("OTHER_SECRET"));
    // `env` without process isolation is a configuration error.
    ws.write_config(&text.replace("isolation = \"process\"", "isolation = \"in-process\""));
    let err = ws.run(&["credentials"]).fails_with(2);
    assert!(err.contains("plugins.crash.env") && err.contains("isolation = \"process\""), "{err}");
}

/// A child with no calls for `process_idle_timeout` is stopped, and the
/// next call starts a new one.
#[test]
fn an_idle_plugin_process_stops_and_starts_again_on_demand() {
    let ws = crash_ws("abort", "never", "process", "process_idle_timeout = 1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        let first = provider.process_id().expect("a child runs");
        provider.credentials().await.unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while provider.process_id().is_some() && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(provider.process_id(), None, "the idle child still runs");
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{first}")).exists() && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(!std::path::Path::new(&format!("/proc/{first}")).exists(), "the stopped child is reaped");
        let entries = provider.credentials().await.unwrap();
        assert!(entries.iter().any(|e| e.key == "SEEN"));
        assert!(provider.process_id().is_some_and(|p| p != first));
    });
    // Without process isolation the key is a configuration error.
    let ws = crash_ws("abort", "never", "in-process", "process_idle_timeout = 1");
    let err = ws.run(&["credentials"]).fails_with(2);
    assert!(err.contains("plugins.crash.process_idle_timeout"), "{err}");
}

/// A call that never ends is cancelled at its deadline, in the child too:
/// the child stays, and answers the next call.
#[test]
fn a_call_past_its_deadline_is_cancelled_in_the_child() {
    let ws = crash_ws("hang", "registry", "process", "timeout = 2");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        let pid = provider.process_id().expect("a child runs");
        let err = provider.registry_auth(None, None).await.expect_err("it never answers");
        assert_eq!(err.kind(), credhost::ErrorKind::TimedOut, "{err}");
        let dropped = ws.path("marker.dropped");
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while !dropped.exists() && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(dropped.exists(), "the plugin's call was not cancelled in the child");
        let auth = provider.registry_auth(None, None).await.unwrap().unwrap();
        assert_eq!(auth.username, "crash");
        assert_eq!(provider.process_id(), Some(pid), "the child was replaced");
    });
}

/// The runner executes plugins with the host's environment: it is vetted
/// as a plugin file is, so a runner anyone may rewrite is refused.
#[test]
fn a_runner_anyone_may_rewrite_is_refused() {
    let mut ws = crash_ws("abort", "never", "process", "");
    let runner = ws.path("credhost-plugin-runner");
    std::fs::copy(artifact("credhost-plugin-runner"), &runner).unwrap();
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o777)).unwrap();
    ws.set_env("CREDHOST_PLUGIN_RUNNER", runner.to_str().unwrap());
    let err = ws.run(&["credentials"]).fails_with(5);
    assert!(err.contains("world-writable"), "{err}");
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(ws.run(&["credentials"]).ok().contains("SEEN="));
}

/// Counts what a transfer reports.
#[derive(Default)]
struct Counted {
    total: std::sync::atomic::AtomicU64,
    advanced: std::sync::atomic::AtomicU64,
}

impl credhost::Progress for Counted {
    fn set_total(&self, total: u64) {
        self.total.store(total, std::sync::atomic::Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        self.advanced.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A stream (a library caller's reader) goes to the child through a socket
/// pair and is stored whole; the child's progress reports reach the
/// caller's receiver, every byte counted by the time the call returns; a
/// download is reported the same way.
#[test]
fn streams_and_progress_cross_the_process_boundary() {
    let svc = Services::get();
    let ws = Workspace::local_token(&svc);
    ws.set_isolation("process");
    ws.apply_env();
    let size = 21 * 1024 * 1024 + 3;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let name = unique("streamed");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let live = credhost::LiveHost::watch(&ws.path("plugins.toml"), None, Default::default()).await.unwrap();
        let provider = live.provider();
        let pid = provider.process_id().expect("a child runs");
        assert_eq!(live.status().process.and_then(|p| p.pid), Some(pid));
        let up = std::sync::Arc::new(Counted::default());
        let stored = provider
            .upload_reader(&name, std::io::Cursor::new(data.clone()), None, Some(up.clone()))
            .await
            .expect("streamed upload");
        assert_eq!(stored.size, size as u64);
        assert_eq!(up.advanced.load(std::sync::atomic::Ordering::Relaxed), size as u64, "progress of the upload");
        let down = std::sync::Arc::new(Counted::default());
        let opts = credhost::DownloadOptions { progress: Some(down.clone()), ..Default::default() };
        let fetched = provider.download_to_path("projects", &name, &ws.path("back.bin"), &opts).await.unwrap();
        assert_eq!(fetched.checksum, stored.checksum);
        assert_eq!(down.total.load(std::sync::atomic::Ordering::Relaxed), size as u64);
        assert_eq!(down.advanced.load(std::sync::atomic::Ordering::Relaxed), size as u64, "progress of the download");
        provider.wait_idle(std::time::Duration::from_secs(10)).await;
    });
    assert!(std::fs::read(ws.path("back.bin")).unwrap() == data, "the stream came back whole");
}

/// A reader that gives 1 MiB per read, slowly, without end.
struct Slow;

impl std::io::Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let n = buf.len().min(1 << 20);
        buf[..n].fill(9);
        Ok(n)
    }
}

/// A streamed upload whose caller stops waiting (its future dropped) is
/// cancelled in the child: the plugin never takes the stream's early end
/// for its end, nothing is stored and no multipart upload stays open; as
/// in-process.
#[test]
fn a_dropped_streamed_upload_leaves_nothing() {
    dropped_streamed_upload(&backend::Backend::new(backend::Kind::LocalS3));
    dropped_streamed_upload(&backend::Backend::new(backend::Kind::LocalS3).isolated());
}

fn dropped_streamed_upload(b: &backend::Backend) {
    let ws = b.ws();
    ws.apply_env();
    let name = unique("dropped");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        let upload = provider.upload_reader(&name, Slow, None, None);
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(3), upload).await;
        assert!(stopped.is_err(), "the endless upload ended: {:?}", stopped.map(|r| r.map(|t| t.size)));
        provider.wait_idle(std::time::Duration::from_secs(20)).await;
    });
    if let Some(left) = b.leftovers(&ws, &name) {
        panic!("a dropped streamed upload left {left}");
    }
}
