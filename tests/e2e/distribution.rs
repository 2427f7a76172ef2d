//! Plugins distributed through OCI registries: `credhost plugins push` and
//! `install` against the Distribution registries of the test services
//! (open, htpasswd, token auth), skopeo reading what was pushed, and an
//! artifact tampered with in the registry's own storage.

use std::{
    io::BufRead,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use credhost_e2e::*;

const PLUGINS: [&str; 3] = ["aws", "local", "gcp"];

/// A repository name no other test uses.
fn repo(prefix: &str) -> String {
    unique(prefix).trim_end_matches(".zip").to_ascii_lowercase()
}

/// This machine's platform as OCI names it.
fn this_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("linux/{arch}")
}

/// `(stdout, stderr)` of a successful run.
#[track_caller]
fn ok(run: Run) -> (String, String) {
    let stdout = run.ok();
    (stdout, run.stderr())
}

/// Everything a run that exits with `code` said, stdout and stderr (the
/// plugin listing reports a refused plugin on stdout).
#[track_caller]
fn said(run: Run, code: i32) -> String {
    let stderr = run.fails_with(code);
    format!("{}{stderr}", run.stdout())
}

/// The names in `dir`, sorted (hidden ones too: a `.part` left behind
/// is a failure).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// The pins `install` printed: (`oci`, `sha256`).
#[track_caller]
fn pins(stdout: &str) -> (String, String) {
    let table: toml::Table = stdout.parse().unwrap_or_else(|e| panic!("pins are TOML ({e}): {stdout}"));
    let plugins = table["plugins"].as_table().expect("[plugins.NAME]");
    assert_eq!(plugins.len(), 1, "{stdout}");
    let instance = plugins.values().next().unwrap();
    (instance["oci"].as_str().unwrap().to_owned(), instance["sha256"].as_str().unwrap().to_owned())
}

/// `skopeo inspect --raw` of `reference` (with `auth`, skopeo's flags), as JSON.
#[track_caller]
fn skopeo_raw(reference: &str, auth: &[&str]) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .args(auth)
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a manifest")
}

/// The test services' registry storage of `registry` (`registry-open`).
fn registry_blob(name: &str, digest: &str) -> PathBuf {
    let dir = std::env::var_os("CREDHOST_TEST_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/services/.run"));
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    dir.join(name).join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
}

/// A copy of the release build's local plugin in `ws` with `suffix`
/// appended (the library loads as before; its digests are its own).
fn local_plugin_variant(ws: &Workspace, name: &str, suffix: &str) -> PathBuf {
    let path = ws.path(name);
    let mut bytes = std::fs::read(artifact(&lib_file("credhost_local"))).unwrap();
    bytes.extend_from_slice(suffix.as_bytes());
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `plugins.toml` with the local plugin on the fs store, its files in
/// `plugins/`, and `extra` appended.
fn fs_default_config(ws: &Workspace, extra: &str) {
    ws.write_config(&format!(
        "# written by the test\nplatform = \"local\"\nplugin_dir = \"plugins\"\n{extra}\n\n[plugins.local.settings]\nregistry = {{ url = \"http://127.0.0.1:1\", auth = \"none\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}\n"
    ));
}

/// Uploads a ZIP and downloads it again through the configuration in `ws`.
#[track_caller]
fn round_trip(ws: &Workspace) {
    let _ = std::fs::remove_file(ws.path("back.zip"));
    let zip = ws.path("project.zip");
    write_zip(&zip, 200_000, 7);
    ws.run(&["upload", zip.to_str().unwrap(), "--name", "1.zip"]).ok();
    ws.run(&["download", "projects", "1.zip", "-o", "back.zip"]).ok();
    assert_eq!(sha256(&ws.path("back.zip")), sha256(&zip));
}

#[test]
fn the_shipped_plugins_go_up_as_one_artifact_and_install_by_tag_and_digest() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_OPEN");
    let reference = format!("{registry}/{}:v1", repo("plugins"));
    let ws = Workspace::new();
    let files: Vec<String> =
        PLUGINS.iter().map(|p| artifact(&lib_file(&format!("credhost_{p}"))).display().to_string()).collect();
    let mut args = vec!["plugins", "push"];
    args.extend(files.iter().map(String::as_str));
    args.push(&reference);
    let (digest, stderr) = ok(ws.run(&args));
    let digest = digest.trim().to_owned();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    assert!(stderr.contains("pushed 3 plugin file(s)"), "{stderr}");

    // A standard OCI 1.1 artifact manifest, as skopeo reads it.
    let manifest = skopeo_raw(&reference, &[]);
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["artifactType"], "application/vnd.credhost.plugin.v1");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
    assert_eq!(manifest["config"]["size"], 2);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for (layer, (plugin, file)) in layers.iter().zip(PLUGINS.iter().zip(&files)) {
        let a = &layer["annotations"];
        assert_eq!(layer["mediaType"], "application/vnd.credhost.plugin.layer.v1");
        assert_eq!(layer["digest"], format!("sha256:{}", sha256(Path::new(file))));
        assert_eq!(a["io.credhost.plugin.name"], *plugin);
        assert_eq!(a["io.credhost.plugin.platform"], this_platform());
        assert_eq!(a["org.opencontainers.image.title"], lib_file(&format!("credhost_{plugin}")));
        assert!(a["io.credhost.plugin.api-version"].as_str().unwrap().starts_with("1."), "{a}");
        assert!(!a["io.credhost.plugin.version"].as_str().unwrap().is_empty());
    }

    // Each plugin, by tag and by digest, into empty directories: the files
    // are the pushed ones, loadable by the host with the printed pins.
    let pinned = format!("{}@{digest}", reference.trim_end_matches(":v1"));
    let mut pins_text = String::new();
    for plugin in PLUGINS {
        let by_tag = ws.path(&format!("by-tag-{plugin}"));
        let (stdout, stderr) =
            ok(ws.run(&["plugins", "install", &reference, "--as", plugin, "--dir", by_tag.to_str().unwrap()]));
        assert!(stderr.contains(&format!("resolved to {digest}")), "{stderr}");
        let (oci, sha) = pins(&stdout);
        assert_eq!(oci, pinned);
        let file = by_tag.join(lib_file(&format!("credhost_{plugin}")));
        assert_eq!(listing(&by_tag), [lib_file(&format!("credhost_{plugin}"))]);
        assert_eq!(sha256(&file), sha);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o755);

        let by_digest = ws.path("plugins");
        let (stdout, stderr) =
            ok(ws.run(&["plugins", "install", &pinned, "--as", plugin, "--dir", by_digest.to_str().unwrap()]));
        assert!(!stderr.contains("resolved to"), "a digest needs no resolving: {stderr}");
        assert_eq!(pins(&stdout), (pinned.clone(), sha.clone()));
        pins_text += &stdout;
    }
    assert_eq!(listing(&ws.path("plugins")).len(), 3);

    // The printed pins, as they are, in a configuration: all three load,
    // and the fs default does a round trip.
    ws.write_config(&format!(
        "platform = \"local\"\nplugin_dir = \"plugins\"\n{pins_text}\n[plugins.local.settings]\nregistry = {{ url = \"http://{registry}\", auth = \"none\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}\n"
    ));
    let listed: serde_json::Value = serde_json::from_str(&ws.run(&["plugins", "--json"]).ok()).unwrap();
    let text = listed.to_string();
    for plugin in PLUGINS {
        assert!(text.contains(&format!("\"{plugin}\"")), "{plugin} not listed: {text}");
    }
    assert!(!text.contains("refused"), "{text}");
    round_trip(&ws);
}

/// `ws` pushes and installs the local plugin at `registry` with the
/// credentials of the instance serving it.
fn push_and_install_with_instance_credentials(ws: &Workspace, registry: &str) {
    let reference = format!("{registry}/{}:v1", repo("authed"));
    let file = artifact(&lib_file("credhost_local"));
    let (digest, stderr) = ok(ws.run(&["plugins", "push", file.to_str().unwrap(), &reference]));
    assert!(stderr.contains("as "), "pushed with the instance's credentials: {stderr}");
    let dir = ws.path("installed");
    let (stdout, _) = ok(ws.run(&["plugins", "install", &reference, "--dir", dir.to_str().unwrap()]));
    let (oci, sha) = pins(&stdout);
    assert!(oci.ends_with(digest.trim()), "{oci}");
    assert_eq!(sha, sha256(&file));
    assert_eq!(sha256(&dir.join(lib_file("credhost_local"))), sha);
}

#[test]
fn htpasswd_and_token_registries_take_the_credentials_credhost_serves() {
    let svc = Services::get();
    push_and_install_with_instance_credentials(&Workspace::local_basic(&svc), &svc.var("CREDHOST_TEST_REGISTRY_BASIC"));
    push_and_install_with_instance_credentials(&Workspace::local_token(&svc), &svc.var("CREDHOST_TEST_REGISTRY_TOKEN"));
}

#[test]
fn without_a_serving_instance_the_docker_config_chain_is_used_else_anonymous() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    let reference = format!("{registry}/{}:v1", repo("dockercfg"));
    let file = artifact(&lib_file("credhost_local"));
    // No plugins.toml at all: the docker config chain, then anonymous.
    let mut ws = Workspace::new();
    let home = ws.dir.path().display().to_string();
    ws.set_env("HOME", &home);
    ws.unset_env("DOCKER_CONFIG");
    ws.unset_env("REGISTRY_AUTH_FILE");
    let err = ws.run(&["plugins", "push", file.to_str().unwrap(), &reference]).fails_with(4);
    assert!(err.contains(&registry) && err.trim_end().lines().count() == 1, "{err}");

    let auth =
        base64(&format!("{}:{}", svc.var("CREDHOST_TEST_REGISTRY_USER"), svc.var("CREDHOST_TEST_REGISTRY_PASSWORD")));
    std::fs::write(ws.path("auth.json"), format!("{{\"auths\": {{\"{registry}\": {{\"auth\": \"{auth}\"}}}}}}"))
        .unwrap();
    let auth_file = ws.path("auth.json").display().to_string();
    ws.set_env("REGISTRY_AUTH_FILE", &auth_file);
    let (digest, stderr) = ok(ws.run(&["plugins", "push", file.to_str().unwrap(), &reference]));
    assert!(stderr.contains(&format!("as {}", svc.var("CREDHOST_TEST_REGISTRY_USER"))), "{stderr}");
    let (stdout, _) = ok(ws.run(&["plugins", "install", &reference, "--dir", "plugins"]));
    assert!(pins(&stdout).0.ends_with(digest.trim()));
    assert!(!stdout.contains(&svc.var("CREDHOST_TEST_REGISTRY_PASSWORD")));

    // Pins written into a new configuration load the file from where it was
    // put, outside the configuration's plugin directory.
    ok(ws.run(&["plugins", "install", &reference, "--dir", "elsewhere", "--write-config"]));
    let listed = ws.run(&["--platform", "local", "plugins", "--json"]).ok();
    assert!(listed.contains("elsewhere") && listed.contains("\"loaded\""), "{listed}");

    // The same file through ~/.docker/config.json.
    ws.unset_env("REGISTRY_AUTH_FILE");
    std::fs::create_dir_all(ws.path(".docker")).unwrap();
    std::fs::rename(ws.path("auth.json"), ws.path(".docker/config.json")).unwrap();
    ok(ws.run(&["plugins", "install", &reference, "--dir", "plugins2"]));
}

#[test]
fn a_tampered_artifact_is_refused_and_a_file_off_its_pin_never_loads() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_OPEN");
    let name = repo("tamper");
    let reference = format!("{registry}/{name}:v1");
    let ws = Workspace::new();
    let marker = unique("m");
    let original = local_plugin_variant(&ws, "original.so", &format!("original-{marker}"));
    let changed = local_plugin_variant(&ws, "changed.so", &format!("changed!-{marker}"));
    fs_default_config(&ws, "");

    let (d1, _) = ok(ws.run(&["plugins", "push", original.to_str().unwrap(), &reference]));
    let d1 = d1.trim().to_owned();
    ok(ws.run(&["plugins", "install", &reference, "--write-config"]));
    let config = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    assert!(config.starts_with("# written by the test\n"), "comments kept: {config}");
    assert!(config.contains(&format!("oci = \"{registry}/{name}@{d1}\"")), "{config}");
    let s1 = sha256(&original);
    assert!(config.contains(&format!("sha256 = \"{s1}\"")), "{config}");
    round_trip(&ws);

    // The layer changed and pushed again under the same tag.
    let (d2, _) = ok(ws.run(&["plugins", "push", changed.to_str().unwrap(), &reference]));
    let d2 = d2.trim().to_owned();
    assert_ne!(d1, d2);

    // A registry that serves the new manifest under the old digest: refused.
    let manifest_blob = registry_blob("registry-open", &d1);
    let kept = std::fs::read(&manifest_blob).unwrap();
    std::fs::copy(registry_blob("registry-open", &d2), &manifest_blob).unwrap();
    let old = format!("{registry}/{name}@{d1}");
    let fresh = ws.path("fresh");
    let err = ws.run(&["plugins", "install", &old, "--dir", fresh.to_str().unwrap()]).fails_with(5);
    assert!(err.contains("digest mismatch"), "{err}");
    assert_eq!(listing(&fresh), Vec::<String>::new());
    std::fs::write(&manifest_blob, kept).unwrap();

    // A registry that serves other bytes for the old layer: refused.
    let layer_blob = registry_blob("registry-open", &format!("sha256:{s1}"));
    std::fs::copy(&changed, &layer_blob).unwrap();
    let err = ws.run(&["plugins", "install", &old, "--dir", fresh.to_str().unwrap()]).fails_with(5);
    assert!(err.contains("do not match its digest"), "{err}");
    assert_eq!(listing(&fresh), Vec::<String>::new());
    std::fs::copy(&original, &layer_blob).unwrap();

    // By tag: the new digest and a new sha256, which the configuration's
    // pin refuses; the host never loads the file.
    let (stdout, stderr) = ok(ws.run(&["plugins", "install", &reference, "--as", "local"]));
    assert!(stderr.contains(&format!("resolved to {d2}")), "{stderr}");
    assert!(stderr.contains(&format!("plugins.local.sha256 pins {s1}")), "warned: {stderr}");
    let (oci, s2) = pins(&stdout);
    assert_eq!(oci, format!("{registry}/{name}@{d2}"));
    assert_ne!(s1, s2);
    let err = said(ws.run(&["plugins"]), 5);
    assert!(err.contains(&format!("sha256 is {s2}, but the configuration pins {s1}")), "{err}");
}

#[test]
fn auto_install_fetches_a_missing_file_and_checks_its_pin_first() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_OPEN");
    let reference = format!("{registry}/{}:v1", repo("auto"));
    let ws = Workspace::new();
    let file = artifact(&lib_file("credhost_local"));
    let (digest, _) = ok(ws.run(&["plugins", "push", file.to_str().unwrap(), &reference]));
    let pinned = format!("{}@{}", reference.trim_end_matches(":v1"), digest.trim());
    let sha = sha256(&file);

    // Off by default: a missing file is an error naming it.
    fs_default_config(&ws, &format!("\n[plugins.local]\noci = \"{pinned}\"\nsha256 = \"{sha}\""));
    let err = said(ws.run(&["plugins"]), 5);
    assert!(err.contains("libcredhost_local.so does not exist"), "{err}");
    assert_eq!(listing(&ws.path("plugins")), Vec::<String>::new());

    // A wrong pin: refused before anything is fetched.
    let wrong = "0".repeat(64);
    fs_default_config(
        &ws,
        &format!("\n[plugins.local]\noci = \"{pinned}\"\nsha256 = \"{wrong}\"\nauto_install = true"),
    );
    let err = said(ws.run(&["token"]), 5);
    assert!(err.contains("never loaded") && err.contains(&sha), "{err}");
    assert_eq!(listing(&ws.path("plugins")), Vec::<String>::new());

    for isolation in ["in-process", "process"] {
        let _ = std::fs::remove_dir_all(ws.path("plugins"));
        fs_default_config(
            &ws,
            &format!("\n[plugins.local]\noci = \"{pinned}\"\nsha256 = \"{sha}\"\nauto_install = true\nisolation = \"{isolation}\""),
        );
        round_trip(&ws);
        assert_eq!(listing(&ws.path("plugins")), [lib_file("credhost_local")], "{isolation}");
        assert_eq!(sha256(&ws.path("plugins").join(lib_file("credhost_local"))), sha);
    }

    // A tag is not a pin.
    fs_default_config(&ws, &format!("\n[plugins.local]\noci = \"{reference}\"\nauto_install = true"));
    let err = said(ws.run(&["plugins"]), 2);
    assert!(err.contains("plugins.local.oci names no digest"), "{err}");
}

#[test]
fn an_artifact_for_other_platforms_only_names_the_platforms_it_has() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_OPEN");
    let tool = repo_root().join("tests/services/oci_tool.py");
    let ws = Workspace::new();
    for index in [false, true] {
        let name = repo("elsewhere");
        let mut cmd = Command::new("python3");
        cmd.arg(&tool).args(["push-raw", &registry, &name, "v1", "linux/s390x", "darwin/arm64"]);
        if index {
            cmd.arg("--index");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let err = ws.run(&["plugins", "install", &format!("{registry}/{name}:v1"), "--dir", "plugins"]).fails_with(3);
        assert!(err.contains("has no plugin for linux/") && err.contains("it has: "), "{err}");
        assert!(err.contains("darwin/arm64") && err.contains("linux/s390x"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert_eq!(listing(&ws.path("plugins")), Vec::<String>::new());
    }
}

#[test]
fn an_oversize_plugin_is_refused_before_it_is_written() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_OPEN");
    let reference = format!("{registry}/{}:v1", repo("big"));
    let ws = Workspace::new();
    fs_default_config(&ws, "plugin_download_max_mib = 1");
    let file = artifact(&lib_file("credhost_local"));
    ok(ws.run(&["plugins", "push", file.to_str().unwrap(), &reference]));
    let err = ws.run(&["plugins", "install", &reference]).fails_with(5);
    assert!(err.contains("over the limit of 1 MiB (plugin_download_max_mib)"), "{err}");
    assert_eq!(listing(&ws.path("plugins")), Vec::<String>::new());
}

/// A proxy from `tests/services/oci_tool.py` in front of the open registry.
fn cutting_proxy(svc: &Services, mode: &str) -> (Server, String) {
    let port = free_port();
    let mut child = Command::new("python3")
        .arg(repo_root().join("tests/services/oci_tool.py"))
        .args(["proxy", &port.to_string(), &svc.var("CREDHOST_TEST_REGISTRY_OPEN"), mode])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    (Server(child), format!("127.0.0.1:{port}"))
}

#[test]
fn an_interrupted_download_leaves_nothing_in_the_plugin_directory() {
    let svc = Services::get();
    let name = repo("cut");
    let ws = Workspace::new();
    let file = artifact(&lib_file("credhost_local"));
    ok(ws.run(&[
        "plugins",
        "push",
        file.to_str().unwrap(),
        &format!("{}/{name}:v1", svc.var("CREDHOST_TEST_REGISTRY_OPEN")),
    ]));

    // The connection closed halfway.
    let (_cut, proxy) = cutting_proxy(&svc, "cut");
    let err = ws.run(&["plugins", "install", &format!("{proxy}/{name}:v1"), "--dir", "plugins"]).fails_with(1);
    assert!(err.contains("nothing was written") || err.contains("broke off"), "{err}");
    assert_eq!(listing(&ws.path("plugins")), Vec::<String>::new());

    // Stalled halfway, then stopped by a signal.
    let (_stall, proxy) = cutting_proxy(&svc, "stall");
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let child = ws
            .cmd(&["plugins", "install", &format!("{proxy}/{name}:v1"), "--dir", "plugins"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listing(&ws.path("plugins")).iter().any(|n| n.ends_with(".part")) {
            assert!(Instant::now() < deadline, "the download never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, signal) };
        let run = Run(child.wait_with_output().unwrap());
        assert_eq!(run.code(), 128 + signal, "{}", run.stderr());
        assert_eq!(listing(&ws.path("plugins")), Vec::<String>::new(), "after signal {signal}");
    }
}

#[test]
fn push_and_install_refuse_bad_input_with_one_line() {
    let ws = Workspace::new();
    let file = artifact(&lib_file("credhost_local"));
    let cases: [(&[&str], i32, &str); 5] = [
        (&["plugins", "push", file.to_str().unwrap(), "busybox:v1"], 2, "no registry host"),
        (
            &[
                "plugins",
                "push",
                file.to_str().unwrap(),
                "127.0.0.1:1/x@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ],
            2,
            "push to a tag",
        ),
        (&["plugins", "push", "notes.txt", "127.0.0.1:1/x:v1"], 2, "notes.txt"),
        (
            &["plugins", "push", file.to_str().unwrap(), "127.0.0.1:1/x:v1", "--platform", "plan9/mips"],
            2,
            "--platform plan9/mips",
        ),
        (&["plugins", "install", "127.0.0.1:1/x:v1"], 1, "127.0.0.1:1/x:v1"),
    ];
    std::fs::write(ws.path("notes.txt"), "not a plugin").unwrap();
    for (args, code, needle) in cases {
        let err = ws.run(args).fails_with(code);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn files_of_several_platforms_make_an_index_and_install_picks_this_machines() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_OPEN");
    let name = repo("index");
    let ws = Workspace::new();
    let here = credhost::oci::Platform::current();
    let file = artifact(&lib_file("credhost_local"));
    let vetted = credhost::oci::vet_for_push(&file, None, Default::default()).unwrap();
    // A file for another machine cannot be vetted here (that is why the
    // command line refuses one): this stands in for one, under the
    // library's own API, to build the index a multi-platform push makes.
    let other_file = local_plugin_variant(&ws, "other.so", "built elsewhere");
    let other = credhost::oci::PushFile {
        path: other_file.clone(),
        platform: credhost::oci::Platform::parse("linux/riscv64").unwrap(),
        sha256: sha256(&other_file),
        ..vetted.clone()
    };
    let reference = credhost::oci::ArtifactRef::parse(&format!("{registry}/{name}:v1")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pushed = runtime
        .block_on(credhost::oci::push(&[other, vetted], &reference, &credhost::oci::RegistryCredentials::Anonymous))
        .unwrap();
    assert_eq!(pushed.manifests.len(), 2);

    let index = skopeo_raw(&reference.to_string(), &[]);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap())
        })
        .collect();
    assert!(platforms.contains(&here.to_string()) && platforms.contains(&"linux/riscv64".to_owned()), "{platforms:?}");

    let (stdout, stderr) = ok(ws.run(&["plugins", "install", &reference.to_string(), "--dir", "plugins"]));
    assert!(stderr.contains(&format!("resolved to {}", pushed.digest)), "{stderr}");
    let (oci, sha) = pins(&stdout);
    assert_eq!(oci, pushed.pinned);
    assert_eq!(sha, sha256(&file), "this machine's file, not the other one");
}

#[test]
fn ecr_credentials_from_the_aws_instance_push_and_install() {
    // moto answers ECR's GetAuthorizationToken; the htpasswd registry takes
    // that answer (user AWS, moto's password), mapped to the aws instance
    // by [registries]: the same path as a pull from ECR.
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    let ws = Workspace::aws(&svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), "");
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&format!("{text}\n[registries]\n\"{registry}\" = \"aws\"\n"));
    let reference = format!("{registry}/{}:v1", repo("ecr"));
    let file = artifact(&lib_file("credhost_aws"));
    let (digest, stderr) = ok(ws.run(&["plugins", "push", file.to_str().unwrap(), &reference]));
    assert!(stderr.contains("as AWS"), "pushed with the ECR token: {stderr}");
    let (stdout, stderr) = ok(ws.run(&["plugins", "install", &reference, "--dir", "installed"]));
    assert!(stderr.contains("as AWS"), "{stderr}");
    assert!(pins(&stdout).0.ends_with(digest.trim()));
    assert_eq!(sha256(&ws.path("installed").join(lib_file("credhost_aws"))), sha256(&file));
}
