//! The issuance audit log (`[audit]`): one line per credential handed out
//! and per destructive act, secrets only as keyed hashes, and with
//! `required = true` nothing handed out when the line cannot be written.

use std::{collections::BTreeMap, io::Write as _, process::Stdio};

use credhost_e2e::*;

/// The HMAC key of the tests' audit logs.
const KEY: &str = "audit-key-for-the-e2e-tests-0123456789";

/// The local plugin on the token-auth registry and SeaweedFS (with its STS
/// role, so that grants hand out keys), logging to `path` under [`KEY`].
fn audited_ws(svc: &Services, path: &str, required: bool) -> Workspace {
    let mut ws = Workspace::local(&format!(
        "registry = {{ url = \"http://{}\", auth = \"token\", username_env = \"REG_USER\", password_env = \"REG_PASS\" }}\nstorage = {{ kind = \"s3\", endpoint = \"{}\", region = \"{}\", bucket = \"projects\", access_key_id_env = \"TEST_S3_KEY\", secret_access_key_env = \"TEST_S3_SECRET\", grant_role_arn = \"{}\" }}",
        svc.var("CREDHOST_TEST_REGISTRY_TOKEN"),
        svc.var("CREDHOST_TEST_STS_S3_ENDPOINT"),
        svc.var("CREDHOST_TEST_S3_REGION"),
        svc.var("CREDHOST_TEST_STS_ROLE_ARN"),
    ));
    ws.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
    ws.set_env("REG_PASS", &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    ws.set_env("TEST_S3_KEY", &svc.var("CREDHOST_TEST_S3_ACCESS_KEY"));
    ws.set_env("TEST_S3_SECRET", &svc.var("CREDHOST_TEST_S3_SECRET_KEY"));
    ws.set_env("AUDIT_KEY", KEY);
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&format!("{text}\n[audit]\npath = \"{path}\"\nkey_env = \"AUDIT_KEY\"\nrequired = {required}\n"));
    ws
}

/// The lines of the log at `path`, each parsed.
fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect()
}

/// `hmac-sha256:HEX` of `value` under [`KEY`], as `credhost audit hash` prints it.
fn hashed(ws: &Workspace, value: &str) -> String {
    ws.run(&["audit", "hash", value]).ok().trim().to_owned()
}

/// The JSON output of `ws.run(args)`.
fn json(ws: &Workspace, args: &[&str]) -> serde_json::Value {
    let out = ws.run(args).ok();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} did not print JSON ({e}): {out}"))
}

/// The values of `shown` whose key `redacted` (the same entries printed
/// without `--show-secrets`) hides.
fn secret_values(shown: &serde_json::Value, redacted: &serde_json::Value) -> Vec<String> {
    let shown: BTreeMap<String, String> = serde_json::from_value(shown.clone()).unwrap();
    let redacted: BTreeMap<String, String> = serde_json::from_value(redacted.clone()).unwrap();
    shown.into_iter().filter(|(k, _)| redacted.get(k).is_some_and(|v| v == "<redacted>")).map(|(_, v)| v).collect()
}

/// Every operation writes exactly one line, with what was asked, what was
/// handed out (secrets as keyed hashes that `credhost audit hash` matches),
/// the plugin file's sha256 and the caller's label; no secret the run
/// handled is in the log in clear.
#[test]
fn each_operation_writes_one_line_and_no_secret_in_clear() {
    let svc = Services::get();
    let ws = audited_ws(&svc, "audit.log", false);
    let log = ws.path("audit.log");
    let label = |op: &str| format!("e2e {op} by tester");
    let name = unique("audit");
    let repo = unique("audit-repo").trim_end_matches(".zip").to_owned();
    let mut secrets: Vec<String> =
        vec![svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"), svc.var("CREDHOST_TEST_S3_SECRET_KEY"), KEY.to_owned()];
    let mut handed: Vec<(String, String)> = Vec::new(); // (operation, secret handed out)

    let token = json(&ws, &["--audit-label", &label("token"), "token", "--repository", &repo, "--format", "json"]);
    let password = token["password"].as_str().unwrap().to_owned();
    handed.push(("token".into(), password));

    write_zip(&ws.path("p.zip"), 1000, 1);
    json(&ws, &["--audit-label", &label("upload"), "upload", "p.zip", "--name", &name, "--json"]);

    let creds =
        json(&ws, &["--audit-label", &label("credentials"), "credentials", "--format", "json", "--show-secrets"]);
    let redacted = json(&ws, &["--audit-label", &label("credentials"), "credentials", "--format", "json"]);
    for v in secret_values(&creds, &redacted) {
        handed.push(("credentials".into(), v));
    }

    for (method, args) in [("get", vec!["projects", name.as_str()]), ("put", vec![name.as_str()])] {
        let mut all = vec!["--audit-label", "e2e presign by tester", "presign", method];
        all.extend(args);
        all.push("--json");
        let signed = json(&ws, &all);
        handed.push(("presign".into(), signed["url"].as_str().unwrap().to_owned()));
    }

    let project = format!("projects/{name}");
    let grant_args = ["grant", "--project", &project, "--repository", &repo, "--with-keys", "--format", "json"];
    let mut shown_args = vec!["--audit-label", "e2e grant by tester"];
    shown_args.extend(grant_args);
    let redacted_args = shown_args.clone();
    shown_args.push("--show-secrets");
    let shown = json(&ws, &shown_args);
    let redacted = json(&ws, &redacted_args);
    for v in secret_values(&shown, &redacted) {
        handed.push(("grant".into(), v));
    }

    let image = format!("{}/{repo}:v1", svc.var("CREDHOST_TEST_REGISTRY_TOKEN"));
    let request = serde_json::json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderRequest", "image": image});
    let mut cmd = ws.cmd(&["--audit-label", "e2e kubelet by tester", "kubelet-provider"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let auth = answer["auth"].as_object().unwrap().values().next().unwrap().clone();
    handed.push(("kubelet".into(), auth["password"].as_str().unwrap().to_owned()));

    ws.run(&["--audit-label", &label("delete"), "delete", "projects", &name]).ok();

    let got = lines(&log);
    let ops: Vec<&str> = got.iter().map(|l| l["operation"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        ["token", "upload", "credentials", "credentials", "presign", "presign", "grant", "grant", "kubelet", "delete"],
        "one line per operation"
    );
    let plugin_sha = sha256(&artifact(&lib_file("credhost_local")));
    let mut ids = std::collections::BTreeSet::new();
    for line in &got {
        let op = line["operation"].as_str().unwrap();
        assert_eq!(line["outcome"], "ok", "{line}");
        assert_eq!(line["label"], label(op).as_str(), "{line}");
        assert_eq!(line["instance"], "local");
        assert_eq!(line["plugin"]["name"], "local");
        assert_eq!(line["plugin"]["sha256"], plugin_sha.as_str(), "{line}");
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(ids.insert(line["request_id"].as_str().unwrap().to_owned()), "a request id twice: {line}");
    }
    assert_eq!(got[0]["scope"], format!("repository:{repo}:pull,push").as_str());
    assert_eq!(got[1]["object"]["name"], name.as_str());
    assert_eq!(got[1]["object"]["bucket"], "projects");
    assert_eq!(got[4]["method"], "GET");
    assert_eq!(got[6]["repository"], repo.as_str());
    assert!(got[6]["expires_at"].is_string(), "{}", got[6]);
    assert_eq!(got[8]["registry"], svc.var("CREDHOST_TEST_REGISTRY_TOKEN").as_str());
    assert_eq!(got[9]["object"]["name"], name.as_str());

    // Each secret handed out is in its line as the hash `audit hash` gives.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(handed.len() >= 8, "{handed:?}");
    for (op, secret) in &handed {
        let h = hashed(&ws, secret);
        assert!(h.starts_with("hmac-sha256:") && h.len() == 12 + 64, "{h}");
        let line = got.iter().find(|l| l["operation"] == op.as_str() && l.to_string().contains(&h));
        assert!(line.is_some(), "the {op} secret's hash is in no {op} line");
        secrets.push(secret.clone());
    }
    for secret in &secrets {
        assert!(secret.len() >= 8);
        assert!(!text.contains(secret.as_str()), "a secret in clear in the audit log");
    }
    assert!(!text.contains("eyJ"), "a JWT in the audit log");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
}

/// With `required = true`, a line that cannot be written (a full disk, a
/// directory where no file can be made, a closed standard error) hands
/// nothing out: the call fails with one line saying why, and prints no
/// credential.
#[test]
fn a_required_log_that_cannot_be_written_hands_nothing_out() {
    let svc = Services::get();
    for path in ["/dev/full", "/proc/credhost-audit.log", "missing-dir/audit.log"] {
        let ws = audited_ws(&svc, path, true);
        let repo = unique("closed").trim_end_matches(".zip").to_owned();
        let run = ws.run(&["token", "--repository", &repo, "--format", "json"]);
        assert_ne!(run.code(), 0, "{path}: handed out: {}", run.stdout());
        assert_eq!(run.stdout(), "", "{path}: something printed");
        let err = run.stderr();
        assert!(err.contains("audit log") && err.contains("nothing was handed out"), "{path}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{path}: {err}");
        // The same in `credentials`, and `check` fails on it.
        let run = ws.run(&["credentials", "--format", "json", "--show-secrets"]);
        assert!(run.code() != 0 && run.stdout().is_empty(), "{path}: {}", run.stdout());
        if path != "/dev/full" {
            let check = ws.run(&["check"]);
            assert_ne!(check.code(), 0, "{path}: check passed");
            assert!(check.stdout().contains("audit log"), "{}", check.stdout());
        }
    }

    // Standard error closed: nothing on stdout either.
    let ws = audited_ws(&svc, "-", true);
    let mut cmd = ws.cmd(&["token", "--repository", "closed-stderr", "--format", "json"]);
    let (read, write) = std::io::pipe().unwrap();
    drop(read);
    cmd.stderr(write).stdout(Stdio::piped());
    let out = cmd.output().unwrap();
    assert!(!out.status.success() && out.stdout.is_empty(), "handed out with stderr closed");
}

/// Without `required`, a log that cannot be written is said once on stderr
/// and the credentials are handed out.
#[test]
fn a_log_that_is_not_required_says_so_and_goes_on() {
    let svc = Services::get();
    let ws = audited_ws(&svc, "/dev/full", false);
    let run = ws.run(&["token", "--repository", "not-required", "--format", "json"]);
    let out = run.ok();
    assert!(out.contains("password"), "{out}");
    let err = run.stderr();
    assert_eq!(err.matches("cannot write a line").count(), 1, "{err}");
}

/// A key that is missing or too short is a configuration error naming the
/// variable; nothing runs.
#[test]
fn the_key_is_checked_before_anything_runs() {
    let svc = Services::get();
    let mut ws = audited_ws(&svc, "audit.log", false);
    ws.unset_env("AUDIT_KEY");
    let err = ws.run(&["token"]).fails_with(2);
    assert!(err.contains("AUDIT_KEY") && err.contains("not set"), "{err}");
    ws.set_env("AUDIT_KEY", "short");
    let err = ws.run(&["token"]).fails_with(2);
    assert!(err.contains("at least 16"), "{err}");
    assert!(!ws.path("audit.log").exists());
}

/// A runtime, and the active provider of `ws` (its environment applied).
fn provider(ws: &Workspace) -> (tokio::runtime::Runtime, credhost::ProviderHandle) {
    ws.apply_env();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
    let provider = rt.block_on(host.active()).unwrap();
    (rt, provider)
}

/// 1,000 concurrent issuances in one process: 1,000 whole lines, each with
/// its own request id.
#[test]
fn concurrent_issuances_write_whole_lines() {
    let svc = Services::get();
    let ws = audited_ws(&svc, "audit.log", true);
    let (rt, provider) = provider(&ws);
    let provider = provider.with_audit_label("concurrent");
    rt.block_on(async {
        let scope = format!("repository:{}:pull", unique("many").trim_end_matches(".zip"));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let (provider, scope) = (provider.clone(), scope.clone());
            calls.spawn(async move { provider.registry_auth(None, Some(&scope)).await });
        }
        while let Some(r) = calls.join_next().await {
            r.unwrap().unwrap().expect("a token");
        }
    });
    let got = lines(&ws.path("audit.log"));
    assert_eq!(got.len(), 1000);
    let ids: std::collections::BTreeSet<_> = got.iter().map(|l| l["request_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 1000);
    assert!(got.iter().all(|l| l["label"] == "concurrent" && l["operation"] == "token"));
}

/// A log renamed away (logrotate's default) is followed by a new file at
/// the path; `credhost::audit::reopen` opens it again whatever happened.
#[test]
fn a_rotated_log_is_opened_again() {
    let svc = Services::get();
    let ws = audited_ws(&svc, "audit.log", true);
    let (rt, provider) = provider(&ws);
    rt.block_on(async {
        let scope = format!("repository:{}:pull", unique("rotate").trim_end_matches(".zip"));
        provider.registry_auth(None, Some(&scope)).await.unwrap();
        std::fs::rename(ws.path("audit.log"), ws.path("audit.log.1")).unwrap();
        provider.registry_auth(None, Some(&scope)).await.unwrap();
        assert_eq!(lines(&ws.path("audit.log.1")).len(), 1);
        assert_eq!(lines(&ws.path("audit.log")).len(), 1);
        // Copied away and truncated in place: reopen() starts it afresh.
        std::fs::copy(ws.path("audit.log"), ws.path("audit.log.2")).unwrap();
        std::fs::File::create(ws.path("audit.log")).unwrap();
        credhost::audit::reopen();
        provider.registry_auth(None, Some(&scope)).await.unwrap();
        assert_eq!(lines(&ws.path("audit.log")).len(), 1);
    });
}

/// The audit key is the host's: a plugin in a process of its own does not
/// get its variable, even when the instance lets every variable through.
#[test]
fn plugin_processes_do_not_get_the_audit_key() {
    let svc = Services::get();
    let ws = audited_ws(&svc, "audit.log", true);
    ws.set_isolation("process");
    let (rt, provider) = provider(&ws);
    rt.block_on(async {
        let scope = format!("repository:{}:pull", unique("hidden").trim_end_matches(".zip"));
        provider.registry_auth(None, Some(&scope)).await.unwrap();
    });
    let pid = provider.process_state().expect("a plugin process").pid.expect("running");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the child's environment");
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(vars.iter().any(|v| v.starts_with(b"REG_USER=")), "the child's environment was not read");
    assert!(!vars.iter().any(|v| v.starts_with(b"AUDIT_KEY=")), "the plugin process got the audit key");
    assert_eq!(std::env::var("AUDIT_KEY").as_deref(), Ok(KEY));
}
