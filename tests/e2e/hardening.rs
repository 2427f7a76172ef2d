//! What the tool does with hostile or broken surroundings: standard output
//! that cannot be written, a docker config that is a link, registries that
//! do not answer, a registry that names a foreign token realm, credentials
//! inside URLs handed to the helper.

use std::{io::Write, process::Stdio};

use credhost_e2e::*;

fn basic_registry_ws(svc: &Services, extra: &str) -> Workspace {
    let mut ws = Workspace::local(&format!(
        "registry = {{ url = \"http://{}\", auth = \"basic\", username_env = \"REG_USER\", password_env = \"REG_PASS\"{extra} }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}",
        svc.var("CREDHOST_TEST_REGISTRY_BASIC")
    ));
    ws.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
    ws.set_env("REG_PASS", &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    ws.set_env("CREDHOST_CONFIG", ws.path("plugins.toml").to_str().unwrap());
    ws.set_env("XDG_CACHE_HOME", ws.path("xdg-cache").to_str().unwrap());
    ws.set_env("XDG_CONFIG_HOME", ws.path("xdg-config").to_str().unwrap());
    ws
}

/// A full device: a clear error and exit 1, never a panic, never a silent 0.
#[test]
fn a_failed_write_to_standard_output_is_an_error() {
    let svc = Services::get();
    let ws = basic_registry_ws(&svc, "");
    write_zip(&ws.path("a.zip"), 1000, 1);
    for args in [
        &["credentials", "--show-secrets"][..],
        &["credentials", "--format", "json"],
        &["token"],
        &["plugins"],
        &["upload", "a.zip", "--json"],
    ] {
        let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
        let out = ws.cmd(args).stdout(full).stderr(Stdio::piped()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("standard output") && !err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A reader that went away (`credhost … | head -0`): exit 141 quietly, as
/// a process killed by SIGPIPE would.
#[test]
fn a_closed_pipe_ends_the_command_quietly_with_141() {
    let svc = Services::get();
    let ws = basic_registry_ws(&svc, "");
    for args in [&["credentials", "--format", "env"][..], &["plugins"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = ws.cmd(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        assert_eq!(out.status.code(), Some(141), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}

/// `docker-config --merge` on a config.json that is a link (dotfile
/// managers keep them so) writes the link's target and keeps the link.
#[test]
fn docker_config_merge_writes_through_a_link() {
    let svc = Services::get();
    let ws = basic_registry_ws(&svc, "");
    std::fs::create_dir(ws.path("dotfiles")).unwrap();
    std::fs::write(ws.path("dotfiles/config.json"), r#"{"psFormat": "table"}"#).unwrap();
    std::os::unix::fs::symlink("dotfiles/config.json", ws.path("config.json")).unwrap();
    ws.run(&["docker-config", "--merge", "config.json"]).ok();
    assert!(std::fs::symlink_metadata(ws.path("config.json")).unwrap().file_type().is_symlink(), "the link stays");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("dotfiles/config.json")).unwrap()).unwrap();
    assert_eq!(v["psFormat"], "table");
    assert_eq!(v["credHelpers"][svc.var("CREDHOST_TEST_REGISTRY_BASIC").as_str()], "credhost");
}

/// `docker-config --static` with one mapped registry that does not answer:
/// the others are written, the dead one is named in a note; only when none
/// answers does the command fail.
#[test]
fn docker_config_static_skips_a_registry_that_does_not_answer() {
    let svc = Services::get();
    let mut ws = basic_registry_ws(&svc, "");
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&format!(
        "{text}\n[plugins.dead]\nplugin = \"local\"\n[plugins.dead.settings]\nregistry = {{ url = \"http://127.0.0.1:1\", auth = \"basic\", username_env = \"REG_USER\", password_env = \"REG_PASS\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}\n"
    ));
    let run = ws.run(&["docker-config", "--static", "-o", "static.json"]);
    run.ok();
    assert!(run.stderr().contains("skipping 127.0.0.1:1"), "{}", run.stderr());
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ws.path("static.json")).unwrap()).unwrap();
    assert!(v["auths"][svc.var("CREDHOST_TEST_REGISTRY_BASIC").as_str()]["auth"].is_string(), "{v}");
    assert!(v["auths"].get("127.0.0.1:1").is_none(), "{v}");

    let err = ws.run(&["docker-config", "--static", "--registry", "127.0.0.1:1", "-o", "none.json"]).fails_with(1);
    assert!(!ws.path("none.json").exists(), "{err}");
    ws.set_env("REG_PASS", "wrong");
    let run = ws.run(&["docker-config", "--static", "-o", "wrong.json"]);
    assert!(matches!(run.code(), 1 | 4), "none answered: {}", run.stderr());
    assert!(!ws.path("wrong.json").exists());
}

/// The token registry's challenge names a realm on 127.0.0.1; reached as
/// `localhost`, the registry's own host is another name, so the password is
/// not sent there until `registry.token_realms` lists it.
#[test]
fn the_password_goes_only_to_the_registrys_own_or_listed_token_realm() {
    let svc = Services::get();
    let port = svc.var("CREDHOST_TEST_REGISTRY_TOKEN").rsplit(':').next().unwrap().to_owned();
    let settings = |extra: &str| {
        format!(
            "registry = {{ url = \"http://localhost:{port}\", auth = \"token\", username_env = \"REG_USER\", password_env = \"REG_PASS\"{extra} }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}"
        )
    };
    let mut ws = Workspace::local(&settings(""));
    ws.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
    ws.set_env("REG_PASS", &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let log = std::fs::read_to_string(svc.var("CREDHOST_TEST_TOKEN_LOG")).unwrap_or_default();
    let run = ws.run(&["token"]);
    let err = run.stderr();
    assert_ne!(run.code(), 0);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("token_realms") && err.contains("127.0.0.1"), "{err}");
    assert_eq!(
        std::fs::read_to_string(svc.var("CREDHOST_TEST_TOKEN_LOG")).unwrap_or_default(),
        log,
        "no token request"
    );

    ws.write_config(
        &std::fs::read_to_string(ws.path("plugins.toml"))
            .unwrap()
            .replace(&settings(""), &settings(", token_realms = [\"127.0.0.1\"]")),
    );
    assert!(!ws.run(&["token"]).ok().trim().is_empty());
}

/// A server URL with `user:password@` handed to the helper never shows the
/// password, whatever the log level.
#[test]
fn the_helper_never_logs_a_password_inside_a_url() {
    let svc = Services::get();
    let mut ws = basic_registry_ws(&svc, "");
    ws.set_env("CREDHOST_LOG", "trace");
    let registry = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    for server in [
        format!("https://someone:hunter2-url-secret@{registry}/v2/"),
        "https://someone:hunter2-url-secret@unknown.example".to_owned(),
        "http://someone:hunter2-url-secret@".to_owned(),
    ] {
        let mut child = ws
            .program(artifact("docker-credential-credhost"), &["-v", "get"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(format!("{server}\n").as_bytes());
        let out = child.wait_with_output().unwrap();
        let all = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(!all.contains("hunter2"), "{server}: {all}");
        assert!(!all.contains("panicked"), "{all}");
    }
    // The CLI too, when a URL with credentials is given as a registry.
    let out = ws
        .cmd(&["-vvv", "token", "--registry", "https://someone:hunter2-url-secret@unknown.example"])
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!all.contains("hunter2"), "{all}");
}
