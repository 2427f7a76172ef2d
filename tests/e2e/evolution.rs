//! Interface evolution, both ways: a plugin built against the released 1.0
//! interface (from its frozen sources, tests/fixtures/v1_0) in this 1.1 host,
//! and plugins built against 1.1 in a host that knows only 1.0; the 1.0 kit's
//! source compiling unchanged against 1.1; and `credhost plugins inspect`.

use std::{os::unix::fs::PermissionsExt, path::PathBuf};

use credhost_e2e::*;

fn fixture(file: &str) -> PathBuf {
    let p = repo_root().join("target/fixture-v1_0/release").join(file);
    assert!(
        p.exists(),
        "{} is missing: tests/run builds it (cargo build --release --manifest-path tests/fixtures/v1_0/Cargo.toml --target-dir target/fixture-v1_0)",
        p.display()
    );
    p
}

/// A workspace with instance `legacy` running `file` (a build of the 1.0 kit plugin).
fn legacy_ws(file: &std::path::Path) -> Workspace {
    let mut ws = Workspace::new();
    let dir = ws.path("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(file, dir.join(lib_file("credhost_legacy"))).unwrap();
    ws.write_config("platform = \"legacy\"\nplugin_dir = \"plugins\"\n\n[plugins.legacy.settings]\nroot = \"store\"\npassword_env = \"LEGACY_PASSWORD\"\n");
    ws.set_env("LEGACY_PASSWORD", "legacy-pw");
    ws
}

/// Every 1.0 method of a plugin serves the host.
fn every_1_0_method_works(ws: &Workspace) {
    let token = ws.run(&["token"]).ok();
    let decoded =
        python(&Services::get(), "import base64,sys; print(base64.b64decode(sys.argv[1]).decode())", &[token.trim()]);
    assert_eq!(decoded.trim(), "legacy:legacy-pw");
    write_zip(&ws.path("a.zip"), 50_000, 7);
    ws.run(&["upload", "a.zip"]).ok();
    ws.run(&["download", "projects", "a.zip", "-o", "b.zip"]).ok();
    assert_eq!(sha256(&ws.path("a.zip")), sha256(&ws.path("b.zip")));
    assert!(ws.run(&["credentials"]).ok().contains("REGISTRY_TOKEN=<redacted>"));
    assert!(ws.run(&["check"]).ok().contains("ok   storage"));
}

#[test]
fn a_plugin_built_for_1_0_loads_in_this_host_and_the_newer_methods_answer_unsupported() {
    let ws = legacy_ws(&fixture(&lib_file("credhost_legacy")));
    let rows: serde_json::Value = serde_json::from_str(&ws.run(&["plugins", "--json"]).ok()).unwrap();
    assert_eq!(rows[0]["status"], "loaded");
    assert_eq!(rows[0]["api_version"], "1.0.0");
    every_1_0_method_works(&ws);
    for args in [&["presign", "get", "projects", "a.zip"][..], &["delete", "projects", "a.zip"]] {
        let err = ws.run(args).fails_with(1);
        assert!(
            err.contains("implements plugin interface 1.0") && err.contains("need interface 1.1"),
            "{args:?}: {err}"
        );
    }
    let inspect = ws.run(&["plugins", "inspect", "plugins/libcredhost_legacy.so"]).ok();
    assert!(inspect.contains("interface:   1.0 (built against 1.0.0)"), "{inspect}");
    assert!(inspect.contains("panic:       not recorded") && inspect.contains("would load here"), "{inspect}");
}

/// The same plugin source, written against the 1.0 kit, compiled unchanged
/// against the 1.1 interface crate (a workspace member): it loads as 1.1.
#[test]
fn the_1_0_kit_source_compiles_unchanged_against_1_1() {
    let ws = legacy_ws(&artifact(&lib_file("fixture_legacy_1_1")));
    let rows: serde_json::Value = serde_json::from_str(&ws.run(&["plugins", "--json"]).ok()).unwrap();
    assert_eq!((rows[0]["status"].as_str(), rows[0]["api_version"].as_str()), (Some("loaded"), Some("1.1.0")));
    every_1_0_method_works(&ws);
    // The 1.0 kit offers the 1.0 operations: the host says so before calling.
    let err = ws.run(&["delete", "projects", "a.zip"]).fails_with(1);
    assert!(err.contains("does not offer it (it offers: registry, upload, download, credentials, check)"), "{err}");
}

/// Plugins built against 1.1 in a host that knows only the released 1.0
/// interface: every 1.0 method works.
#[test]
fn plugins_built_for_1_1_serve_a_1_0_host() {
    let host = fixture("host-1-0");
    let svc = Services::get();
    let cases = [
        (artifact(&lib_file("credhost_local")), "{\"registry\":{\"url\":\"http://127.0.0.1:1\"},\"storage\":{\"kind\":\"fs\",\"root\":\"store\",\"bucket\":\"projects\"}}".to_owned()),
        (artifact(&lib_file("fixture_legacy_1_1")), "{\"root\":\"store\",\"password_env\":\"LEGACY_PASSWORD\"}".to_owned()),
        (
            artifact(&lib_file("credhost_local")),
            format!(
                "{{\"registry\":{{\"url\":\"http://{}\"}},\"storage\":{{\"kind\":\"s3\",\"endpoint\":\"{}\",\"bucket\":\"{}\",\"access_key_id_env\":\"TEST_S3_KEY\",\"secret_access_key_env\":\"TEST_S3_SECRET\"}}}}",
                svc.var("CREDHOST_TEST_REGISTRY_OPEN"),
                svc.var("CREDHOST_TEST_S3_ENDPOINT"),
                svc.var("CREDHOST_TEST_S3_BUCKET")
            ),
        ),
    ];
    for (plugin, settings) in cases {
        let ws = Workspace::new();
        let out = std::process::Command::new(&host)
            .args([
                plugin.to_str().unwrap(),
                &settings,
                ws.dir.path().to_str().unwrap(),
                ws.dir.path().to_str().unwrap(),
            ])
            .env("LEGACY_PASSWORD", "legacy-pw")
            .env("TEST_S3_KEY", svc.var("CREDHOST_TEST_S3_ACCESS_KEY"))
            .env("TEST_S3_SECRET", svc.var("CREDHOST_TEST_S3_SECRET_KEY"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}\n{text}\n{}", plugin.display(), String::from_utf8_lossy(&out.stderr));
        for method in
            ["info", "new_provider", "registry_auth", "upload", "upload_stream", "credentials", "check", "wait_idle"]
        {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("OK {method}"))),
                "{method} on {}:\n{text}",
                plugin.display()
            );
        }
        assert!(text.contains("OK download: ") && text.contains("identical true"), "{text}");
        assert!(text.contains("api 1.1.0"), "{text}");
    }
}

#[test]
fn inspect_describes_a_file_and_says_why_it_would_be_refused() {
    let ws = Workspace::new();
    let local = artifact(&lib_file("credhost_local"));
    let out = ws.run(&["plugins", "inspect", local.to_str().unwrap()]).ok();
    assert!(out.contains("plugin:      local") && out.contains("interface:   1.1 (built against 1.1.0)"), "{out}");
    assert!(out.contains("offers:      registry, upload, download, credentials, check, presign, delete"), "{out}");
    assert!(out.contains("panic:       unwind") && out.contains("status:      would load here"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&ws.run(&["plugins", "inspect", local.to_str().unwrap(), "--json"]).ok()).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["interface"].as_str(), v["panic"].as_str()),
        (Some("local"), Some("1.1"), Some("unwind"))
    );

    let abort = repo_root().join("target/fixture-abort/release").join(lib_file("credhost_abort"));
    let run = ws.run(&["plugins", "inspect", abort.to_str().unwrap()]);
    assert_eq!(run.code(), 5);
    assert!(
        run.stdout().contains("panic:       abort") && run.stdout().contains("status:      refused:"),
        "{}",
        run.stdout()
    );

    let junk = ws.path("libcredhost_junk.so");
    std::fs::write(&junk, b"not a library").unwrap();
    let run = ws.run(&["plugins", "inspect", junk.to_str().unwrap()]);
    assert_eq!(run.code(), 5);
    assert!(run.stdout().contains("refused:") && run.stdout().contains("not an ELF file"), "{}", run.stdout());

    // Layout details under -v.
    let odd = artifact(&lib_file("fixture_layout_mismatch"));
    let quiet = ws.run(&["plugins", "inspect", odd.to_str().unwrap()]);
    let verbose = ws.run(&["-v", "plugins", "inspect", odd.to_str().unwrap()]);
    assert_eq!((quiet.code(), verbose.code()), (5, 5));
    assert!(
        !quiet.stdout().contains("layout check:") && verbose.stdout().contains("layout check:"),
        "{}",
        verbose.stdout()
    );
}

/// The released 1.0 interface is kept, frozen, in two places: the host's
/// fallback types (`plugin-api/src/v1_0.rs`) and the whole 1.0 crate the
/// old-plugin fixtures are built from (`tests/fixtures/v1_0/api`). Both
/// repeat today's code on purpose (the repeated-code report lists them),
/// and neither may change: an edited copy would prove old plugins load by
/// testing something that was never released.
#[test]
fn the_released_1_0_interface_stays_frozen() {
    const FROZEN: &[(&str, &str)] = &[
        ("plugin-api/src/v1_0.rs", "db848b99dd32c7d6f4a95a8b002ea036a94bd5a366e2bd855979f0c4f76fb66f"),
        ("tests/fixtures/v1_0/api/Cargo.toml", "1496608487a1a9c922b2595c93822dc6ec766ba96c01e90da35823ec21f7d7f9"),
        ("tests/fixtures/v1_0/api/src/error.rs", "52abe73ed85313aba97f1b41ff872330f2d5890484406748e6c5c770b3867e9b"),
        ("tests/fixtures/v1_0/api/src/lib.rs", "cd74e6adf7dc9a43569313f7a1b843bb47bcb57fe5342ecc6c94d549fa658ac0"),
        ("tests/fixtures/v1_0/api/src/provider.rs", "8b90cf83127e93df744f93490fed94ae4ce7e617bb2ff62561e2eac4ceb763b3"),
        ("tests/fixtures/v1_0/api/src/root.rs", "968ab1d373c01b8bf5727ac5fd4d765229bc536b7e998dd474009bda533ec97b"),
        ("tests/fixtures/v1_0/api/src/sdk.rs", "829deec3ca288086989bf1ca0e5ede4b72e6dcde575bd600fd1cf67b23fda585"),
        ("tests/fixtures/v1_0/api/src/secret.rs", "1bed5b98f919d038b4072a38928e303a32c3991231ed7455479de13061f028ee"),
        ("tests/fixtures/v1_0/api/src/types.rs", "fa5e6f8a06a239240fc2b48a43d948bfbbece68fcae8c4c17b50e03aac96c5e5"),
    ];
    let changed: Vec<&str> =
        FROZEN.iter().filter(|(file, digest)| sha256(&repo_root().join(file)) != *digest).map(|(f, _)| *f).collect();
    assert!(
        changed.is_empty(),
        "frozen copies of the released 1.0 interface were edited: {changed:?}; restore them from the release (git log -- FILE)"
    );
    let files = std::fs::read_dir(repo_root().join("tests/fixtures/v1_0/api/src")).unwrap().count();
    assert_eq!(files, FROZEN.iter().filter(|(f, _)| f.starts_with("tests/fixtures/v1_0/api/src/")).count());
}
