//! Interface evolution, both ways: plugins built against the released 1.0,
//! 1.1 and 1.2 interfaces (from their frozen sources, tests/fixtures/v1_0,
//! v1_1 and v1_2) in this 1.3 host, and plugins built against 1.3 in a host
//! that knows only 1.0; the 1.0 and 1.1 kits' sources compiling unchanged
//! against the current kit; and `credhost plugins inspect`.

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
    let err = ws.run(&["grant", "--project", "projects/a.zip"]).fails_with(1);
    assert!(err.contains("implements plugin interface 1.0") && err.contains("need interface 1.2"), "{err}");
    let inspect = ws.run(&["plugins", "inspect", "plugins/libcredhost_legacy.so"]).ok();
    assert!(inspect.contains("interface:   1.0 (built against 1.0.0)"), "{inspect}");
    assert!(inspect.contains("panic:       not recorded") && inspect.contains("would load here"), "{inspect}");
}

/// The same plugin source, written against the 1.0 kit, compiled unchanged
/// against the current interface crate (a workspace member): it loads as
/// the current interface.
#[test]
fn the_1_0_kit_source_compiles_unchanged_against_1_1() {
    let ws = legacy_ws(&artifact(&lib_file("fixture_legacy_1_1")));
    let rows: serde_json::Value = serde_json::from_str(&ws.run(&["plugins", "--json"]).ok()).unwrap();
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["api_version"].as_str()),
        (Some("loaded"), Some(credhost::api::API_VERSION))
    );
    every_1_0_method_works(&ws);
    // The 1.0 kit offers the 1.0 operations: the host says so before calling.
    let err = ws.run(&["delete", "projects", "a.zip"]).fails_with(1);
    assert!(err.contains("does not offer it (it offers: registry, upload, download, credentials, check)"), "{err}");
}

/// A workspace with instance `dir` running `file` (a build of the 1.1 kit's
/// plugin template) over `store/`, its password in `DIR_PASSWORD`.
fn dir_ws(file: &std::path::Path) -> Workspace {
    let mut ws = Workspace::new();
    let dir = ws.path("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(file, dir.join(lib_file("credhost_dir"))).unwrap();
    std::fs::create_dir_all(ws.path("store/projects")).unwrap();
    ws.write_config("platform = \"dir\"\nplugin_dir = \"plugins\"\n\n[plugins.dir.settings]\nroot = \"store\"\nregistry = \"registry.example:5000\"\npassword_env = \"DIR_PASSWORD\"\n");
    ws.set_env("DIR_PASSWORD", "dir-pw");
    ws
}

/// The 1.1 template's operations, and grants refused as they must be.
fn the_1_1_template_serves(ws: &Workspace, interface: &str) -> String {
    let rows: serde_json::Value = serde_json::from_str(&ws.run(&["plugins", "--json"]).ok()).unwrap();
    assert_eq!((rows[0]["status"].as_str(), rows[0]["api_version"].as_str()), (Some("loaded"), Some(interface)));
    write_zip(&ws.path("a.zip"), 20_000, 3);
    ws.run(&["upload", "a.zip"]).ok();
    ws.run(&["download", "projects", "a.zip", "-o", "b.zip"]).ok();
    assert_eq!(sha256(&ws.path("a.zip")), sha256(&ws.path("b.zip")));
    ws.run(&["delete", "projects", "a.zip"]).ok();
    assert!(ws.run(&["credentials"]).ok().contains("REGISTRY_TOKEN=<redacted>"));
    ws.run(&["grant", "--project", "projects/a.zip"]).fails_with(1)
}

fn fixture_1_1(file: &str) -> PathBuf {
    let p = repo_root().join("target/fixture-v1_1/release").join(file);
    assert!(
        p.exists(),
        "{} is missing: tests/run builds it (cargo build --release --manifest-path tests/fixtures/v1_1/Cargo.toml --target-dir target/fixture-v1_1)",
        p.display()
    );
    p
}

#[test]
fn a_plugin_built_for_1_1_loads_in_this_host_and_grants_answer_that_they_need_1_2() {
    let ws = dir_ws(&fixture_1_1(&lib_file("credhost_dir")));
    let err = the_1_1_template_serves(&ws, "1.1.0");
    assert!(err.contains("implements plugin interface 1.1") && err.contains("need interface 1.2"), "{err}");
    let inspect = ws.run(&["plugins", "inspect", "plugins/libcredhost_dir.so"]).ok();
    assert!(inspect.contains("interface:   1.1 (built against 1.1.0)"), "{inspect}");
}

/// The template written against the 1.1 kit, compiled unchanged against
/// the current kit (a workspace member): it loads as the current interface,
/// and a grant is answered by the kit's default, "unsupported".
#[test]
fn the_1_1_kit_source_compiles_unchanged_against_the_current_kit() {
    let ws = dir_ws(&artifact(&lib_file("fixture_legacy_1_2")));
    let err = the_1_1_template_serves(&ws, credhost::api::API_VERSION);
    assert!(err.contains("build-job grants is not supported by this plugin"), "{err}");
}

fn fixture_1_2(file: &str) -> PathBuf {
    let p = repo_root().join("target/fixture-v1_2/release").join(file);
    assert!(
        p.exists(),
        "{} is missing: tests/run builds it (cargo build --release --manifest-path tests/fixtures/v1_2/Cargo.toml --target-dir target/fixture-v1_2)",
        p.display()
    );
    p
}

/// The 1.2 template (built from the frozen 1.2 crates) in this host: every
/// operation it offers works; a workload's pull (service-account mode,
/// interface 1.3) is answered with the node's credentials when the
/// kubelet's config allows it, and refused, saying the plugin needs 1.3,
/// when it requires a service account.
#[test]
fn a_plugin_built_for_1_2_loads_in_this_host_and_workload_pulls_answer_that_they_need_1_3() {
    let ws = dir_ws(&fixture_1_2(&lib_file("credhost_dir")));
    // The template offers the 1.1 operations but presign; grants it leaves out.
    let err = the_1_1_template_serves(&ws, "1.2.0");
    assert!(err.contains("plugin `dir` 0.0.0 does not offer it"), "{err}");
    let inspect = ws.run(&["plugins", "inspect", "plugins/libcredhost_dir.so"]).ok();
    assert!(inspect.contains("interface:   1.2 (built against 1.2.0)"), "{inspect}");
    let request = serde_json::json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderRequest",
        "image": "registry.example:5000/app:v1",
        "serviceAccountToken": format!("e30.{}.sig", "eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dGVhbTpidWlsZGVyIn0"),
    });
    let answer = |args: &[&str]| {
        let mut child = ws
            .cmd(args)
            .env("CREDHOST_CONFIG", ws.path("plugins.toml"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
        Run(child.wait_with_output().unwrap())
    };
    let node = answer(&["kubelet-provider"]).ok();
    assert!(node.contains("\"registry.example:5000\"") && node.contains("dir-pw"), "{node}");
    let err = answer(&["kubelet-provider", "--require-service-account"]).fails_with(1);
    assert!(err.contains("implements plugin interface 1.2") && err.contains("need interface 1.3"), "{err}");
    assert!(!err.contains("dir-pw"), "{err}");
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
        assert!(text.contains(&format!("api {}", credhost::api::API_VERSION)), "{text}");
    }
}

#[test]
fn inspect_describes_a_file_and_says_why_it_would_be_refused() {
    let ws = Workspace::new();
    let local = artifact(&lib_file("credhost_local"));
    let out = ws.run(&["plugins", "inspect", local.to_str().unwrap()]).ok();
    assert!(out.contains("plugin:      local") && out.contains("interface:   1.3 (built against 1.3.0)"), "{out}");
    assert!(
        out.contains("offers:      registry, upload, download, credentials, check, presign, delete, grant"),
        "{out}"
    );
    assert!(out.contains("panic:       unwind") && out.contains("status:      would load here"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&ws.run(&["plugins", "inspect", local.to_str().unwrap(), "--json"]).ok()).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["interface"].as_str(), v["panic"].as_str()),
        (Some("local"), Some("1.3"), Some("unwind"))
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

/// The released 1.1 interface, frozen likewise: the host's fallback types
/// (`plugin-api/src/v1_1.rs`) and the 1.1 crates, kit and template the
/// 1.1 fixture is built from (`tests/fixtures/v1_1`).
#[test]
fn the_released_1_1_interface_stays_frozen() {
    const FROZEN: &[(&str, &str)] = &[
        ("plugin-api/src/v1_1.rs", "27385b36a7e297db84d6ac8c0940f400f50141a188e008ee649b3bb42e97b1c2"),
        ("tests/fixtures/v1_1/Cargo.toml", "0f0d45de0f02d0722f38f73224a64791df8f634a8e338500e85fe19535535d1e"),
        ("tests/fixtures/v1_1/api/Cargo.toml", "557d940d5b45af756e7ef48c44c94f5b1522767729e3b7dff895459c8fd1ea4e"),
        ("tests/fixtures/v1_1/api/src/error.rs", "e20a1ac7ca01288c29cfdcfe8050ba1ce0b5271ea481d09714d5a108bb13432b"),
        ("tests/fixtures/v1_1/api/src/extra.rs", "671cc06f1bdb3839ec61e19d6d2e9e38c5e8c9cf6242c7b4a96747b3f5ca3aa2"),
        ("tests/fixtures/v1_1/api/src/lib.rs", "ab0857a6e4e4777f48a9e6fdf99761ed78d9e5812af3c270724c3d96b568da0b"),
        ("tests/fixtures/v1_1/api/src/provider.rs", "0a8f3d8672d8fe867da090f15eecc0651228fc8d8d284e025f0867899e2636a5"),
        ("tests/fixtures/v1_1/api/src/root.rs", "bd47bef629ed88fce7810f28f01b264673054e698cd0173843dbaded814784c8"),
        ("tests/fixtures/v1_1/api/src/rules.rs", "897b378db204651a7a793579661b826db1a2b39113a34aa3b172603606b09194"),
        (
            "tests/fixtures/v1_1/api/src/sdk/helpers.rs",
            "dc03f59b1039e6e37d373cd9019a088107ef8bb8791b55306cc766c663eb629c",
        ),
        ("tests/fixtures/v1_1/api/src/sdk/io.rs", "13595247c67597357ff6b8b30eb5f3f4fd5ed67bca28b67fc040e2f9317cb2cf"),
        (
            "tests/fixtures/v1_1/api/src/sdk/kit_v1_0.rs",
            "5d6e09a508855ff7606aaa07ffe938882174b8efd3058c0a7c5b85d7aa967a6e",
        ),
        (
            "tests/fixtures/v1_1/api/src/sdk/logging.rs",
            "cbe0bca1e8c00547f22bf7096e2a7eaa284788dd4caccb4c86026e415e5749a3",
        ),
        ("tests/fixtures/v1_1/api/src/sdk/mod.rs", "c25f1c65d56840fee86f84987f0947dca9abeb148886bc3aa0a8cdff0fb7a853"),
        (
            "tests/fixtures/v1_1/api/src/sdk/process.rs",
            "14d1010191193d1997f4a2def43b8afb76c2ea6dd23125b9ba4ee07d01202624",
        ),
        (
            "tests/fixtures/v1_1/api/src/sdk/runtime.rs",
            "786cb4c3d2a9f2e459a5d611e8dd0d2d3b536876dba75b46c0ff7ea60cfd128e",
        ),
        ("tests/fixtures/v1_1/api/src/secret.rs", "c2d9ce580e03c3d74384e5e3f83a9713b745f3da7a5dadfcc95abebbde2ae556"),
        ("tests/fixtures/v1_1/api/src/types.rs", "f71e623b631f1e550af5f8f1af60f6a080ac98feb5e822c86d7a7edf19ce1806"),
        ("tests/fixtures/v1_1/api/src/v1_0.rs", "db848b99dd32c7d6f4a95a8b002ea036a94bd5a366e2bd855979f0c4f76fb66f"),
        ("tests/fixtures/v1_1/plugin/Cargo.toml", "147fc7dc4bdfdff77331cf29e20662af1cf5950cdb4623972a3268532c29e2df"),
        ("tests/fixtures/v1_1/plugin/src/lib.rs", "c908583b74196f4610972d76d160db091d343121253b8a9abb5c1794086e691d"),
        ("tests/fixtures/v1_1/sdk/Cargo.toml", "cd3f59c9255847ae361c31c5a37efbfdf3aa04e540a35889f1f1d8f20cecfe76"),
        ("tests/fixtures/v1_1/sdk/src/adapter.rs", "4669c18b3ca708c0f660bdc31b4bcafc7891c36bcf90964b18176f34434e161f"),
        ("tests/fixtures/v1_1/sdk/src/io.rs", "3a9fa23d45a48c610a292acf51c6e8da0ec444b65fff6c9a30c2701a3a31301f"),
        ("tests/fixtures/v1_1/sdk/src/lib.rs", "bd2c0ac52796f274147800aa58980515b344cc443591a228ab7cd4cf1d40ee4e"),
        ("tests/fixtures/v1_1/sdk/src/testing.rs", "79c573deddbd23a9333d5f98999306214111382baf63dc26c69d90733b46d79a"),
        ("tests/fixtures/v1_1/sdk/src/types.rs", "dfa583f5c93ad4fe30f929be1d42786d7f2292e17192fd24621062be4b29ad95"),
    ];
    frozen(FROZEN, "1.1", "tests/fixtures/v1_1");
}

/// The released 1.2 interface, frozen likewise: the host's fallback types
/// (`plugin-api/src/v1_2.rs`) and the 1.2 crates, kit and template the 1.2
/// fixture is built from (`tests/fixtures/v1_2`).
#[test]
fn the_released_1_2_interface_stays_frozen() {
    const FROZEN: &[(&str, &str)] = &[
        ("plugin-api/src/v1_2.rs", "a299b37dcfd285b2db28069ea4a86a446f28b03596db352cd89c3c2e42de883d"),
        ("tests/fixtures/v1_2/Cargo.toml", "ef65a9ff208301c7cbb0c3b388ae655312c3a542bdbc90018a532b8156de3a14"),
        ("tests/fixtures/v1_2/api/Cargo.toml", "af0fe45380da8890159e1c61650ea39fb9608316a0ba85f900c528cbb0222f89"),
        ("tests/fixtures/v1_2/api/src/error.rs", "e20a1ac7ca01288c29cfdcfe8050ba1ce0b5271ea481d09714d5a108bb13432b"),
        ("tests/fixtures/v1_2/api/src/extra.rs", "671cc06f1bdb3839ec61e19d6d2e9e38c5e8c9cf6242c7b4a96747b3f5ca3aa2"),
        ("tests/fixtures/v1_2/api/src/lib.rs", "eabe811c7cfdac1b996f49b9fda289d1e10c1ff45889b636daa1a8a215a51fe1"),
        ("tests/fixtures/v1_2/api/src/provider.rs", "71537f7cf8bcea0a127d4513d9f4758eec01db6edb5a224a1a213ee84de5493f"),
        ("tests/fixtures/v1_2/api/src/root.rs", "44ec87d68863755ee849025d9beffec2c1140f77b7319122e10d174f425c0321"),
        ("tests/fixtures/v1_2/api/src/rules.rs", "cb79d9dee55ac9446fbc7e1473d8d9801a0644a8f73dc4592903a70f28cea81c"),
        (
            "tests/fixtures/v1_2/api/src/sdk/helpers.rs",
            "dc03f59b1039e6e37d373cd9019a088107ef8bb8791b55306cc766c663eb629c",
        ),
        ("tests/fixtures/v1_2/api/src/sdk/io.rs", "13595247c67597357ff6b8b30eb5f3f4fd5ed67bca28b67fc040e2f9317cb2cf"),
        (
            "tests/fixtures/v1_2/api/src/sdk/kit_v1_0.rs",
            "5d6e09a508855ff7606aaa07ffe938882174b8efd3058c0a7c5b85d7aa967a6e",
        ),
        (
            "tests/fixtures/v1_2/api/src/sdk/logging.rs",
            "cbe0bca1e8c00547f22bf7096e2a7eaa284788dd4caccb4c86026e415e5749a3",
        ),
        ("tests/fixtures/v1_2/api/src/sdk/mod.rs", "c25f1c65d56840fee86f84987f0947dca9abeb148886bc3aa0a8cdff0fb7a853"),
        (
            "tests/fixtures/v1_2/api/src/sdk/process.rs",
            "14d1010191193d1997f4a2def43b8afb76c2ea6dd23125b9ba4ee07d01202624",
        ),
        (
            "tests/fixtures/v1_2/api/src/sdk/runtime.rs",
            "786cb4c3d2a9f2e459a5d611e8dd0d2d3b536876dba75b46c0ff7ea60cfd128e",
        ),
        ("tests/fixtures/v1_2/api/src/secret.rs", "c2d9ce580e03c3d74384e5e3f83a9713b745f3da7a5dadfcc95abebbde2ae556"),
        ("tests/fixtures/v1_2/api/src/types.rs", "104f4f592f8c3bf9800778e529f22462e1dd117f68e99de589d90c0914701dfb"),
        ("tests/fixtures/v1_2/api/src/v1_0.rs", "db848b99dd32c7d6f4a95a8b002ea036a94bd5a366e2bd855979f0c4f76fb66f"),
        ("tests/fixtures/v1_2/api/src/v1_1.rs", "27385b36a7e297db84d6ac8c0940f400f50141a188e008ee649b3bb42e97b1c2"),
        ("tests/fixtures/v1_2/plugin/Cargo.toml", "5e5dcf41cf1ddf5765dde093b0ae61694a296ae79313ad7f439ba625d4dae841"),
        ("tests/fixtures/v1_2/plugin/src/lib.rs", "6c7e20724891d2d49657b2420e62a0f3d49f6006f66797b0745701e0fb667680"),
        ("tests/fixtures/v1_2/sdk/Cargo.toml", "6a9f084c14b928ea13a4fbb746aa0b459f182dc6225be560d851c486b8a957e9"),
        ("tests/fixtures/v1_2/sdk/src/adapter.rs", "269c841099b565a6416cf475aff955c7e9a39bc4bd4a3dbdfe88874a2c761d86"),
        ("tests/fixtures/v1_2/sdk/src/io.rs", "3a9fa23d45a48c610a292acf51c6e8da0ec444b65fff6c9a30c2701a3a31301f"),
        ("tests/fixtures/v1_2/sdk/src/lib.rs", "f8cf855290c86888e02efe1e41c5309f12bb7e797a82d12fce857c35cd6c3179"),
        ("tests/fixtures/v1_2/sdk/src/testing.rs", "79c573deddbd23a9333d5f98999306214111382baf63dc26c69d90733b46d79a"),
        ("tests/fixtures/v1_2/sdk/src/types.rs", "6e9a0c8287d2e46e4f47190e1a7b366f5883b96e5fa2a39aea64e0464e8d0ca8"),
    ];
    frozen(FROZEN, "1.2", "tests/fixtures/v1_2");
}

/// Every file of `frozen` has its digest, and `dir` holds no other source.
fn frozen(frozen: &[(&str, &str)], release: &str, dir: &str) {
    let changed: Vec<&str> =
        frozen.iter().filter(|(file, digest)| sha256(&repo_root().join(file)) != *digest).map(|(f, _)| *f).collect();
    assert!(
        changed.is_empty(),
        "frozen copies of the released {release} interface were edited: {changed:?}; restore them from the release (git log -- FILE)"
    );
    let mut sources = Vec::new();
    let mut stack = vec![repo_root().join(dir)];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") || p.file_name().is_some_and(|n| n == "Cargo.toml") {
                sources.push(p);
            }
        }
    }
    let listed = frozen.iter().filter(|(f, _)| f.starts_with(dir)).count();
    assert_eq!(sources.len(), listed, "a file was added to or removed from {dir}");
}
