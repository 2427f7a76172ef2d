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
    assert!(ws.run(&["check"]).ok().contains("ok"));
    let grant =
        ws.run(&["grant", "--project", "projects/app.zip", "--repository", "team/app", "--format", "json"]).ok();
    let grant: serde_json::Value = serde_json::from_str(&grant).unwrap();
    assert_eq!(grant["CREDHOST_GRANT_REGISTRY_SCOPE"], "repository");
    // What this mode does not pass yet is refused, naming the way out.
    write_zip(&ws.path("a.zip"), 1000, 1);
    let err = ws.run(&["upload", "a.zip"]).fails_with(1);
    assert!(err.contains("isolation = \"in-process\""), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&ws.run(&["plugins", "--json"]).ok()).unwrap();
    assert_eq!((rows[0]["status"].as_str(), rows[0]["isolation"].as_str()), (Some("loaded"), Some("process")));
    assert!(ws.run(&["plugins"]).ok().contains("runs in: a process of its own"));
}

/// abort(), SIGSEGV and exit(0) in a registry call: the host (here a
/// library user, one process for all the calls) gets an `unavailable`
/// error saying how the child died, within the call's time, and the next
/// call is answered by a new child.
#[test]
fn a_plugin_that_kills_its_process_costs_one_call() {
    for (how, says) in [("abort", "SIGABRT"), ("segv", "SIGSEGV"), ("exit", "exit status 0")] {
        let ws = crash_ws(how, "registry", "process", "");
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
            let auth = provider.registry_auth(None, None).await.unwrap().unwrap();
            assert_eq!(auth.secret.expose(), "crash-password");
            let second = provider.process_id().expect("a new child runs");
            assert_ne!(first, second, "{how}");
            assert!(!std::path::Path::new(&format!("/proc/{first}")).exists(), "the dead child is reaped");
        });
    }
}

/// In-process, the same fixture ends the process that loaded it: what the
/// mode protects against.
#[test]
fn in_process_the_same_plugin_ends_the_host() {
    use std::os::unix::process::ExitStatusExt;
    let ws = crash_ws("segv", "registry", "in-process", "");
    let out = ws.run(&["token"]).0;
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
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
