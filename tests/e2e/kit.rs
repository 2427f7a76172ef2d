//! The plugin-author kit, tried as a third-party author would: the template
//! copied out as a cargo project of its own, built, dropped into a plugin
//! directory and used by the already-built `credhost`; and the guide's code
//! blocks assembled into a project that builds and passes its tests.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use credhost_e2e::*;

/// The code block of the guide whose first line is `marker`.
fn guide_block(marker: &str) -> String {
    let guide = std::fs::read_to_string(repo_root().join("docs/writing-a-plugin.md")).unwrap();
    let start = guide.find(&format!("\n{marker}\n")).unwrap_or_else(|| panic!("no block `{marker}` in the guide"));
    let rest = &guide[start + 1..];
    rest[..rest.find("```").unwrap()].to_owned()
}

/// Copies `from` (a directory) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Runs cargo in `project` (its own workspace) with the kit by path and a
/// target directory shared by these tests; returns the built plugin.
fn cargo(project: &Path, args: &[&str]) -> PathBuf {
    let manifest = project.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let sdk = repo_root().join("plugin-sdk");
    let text = text
        .replace("path = \"../../plugin-sdk\"", &format!("path = {:?}", sdk.display().to_string()))
        .replace("path = \"../credhost/plugin-sdk\"", &format!("path = {:?}", sdk.display().to_string()));
    std::fs::write(&manifest, text).unwrap();
    // The versions this repository is tested with; no network needed.
    std::fs::copy(repo_root().join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let target = repo_root().join("target/template");
    let out = Command::new("cargo")
        .args(args)
        .args(["--release", "--offline"])
        .current_dir(project)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("spawn cargo");
    assert!(out.status.success(), "cargo {args:?} in {}:\n{}", project.display(), String::from_utf8_lossy(&out.stderr));
    target.join("release").join(lib_file("credhost_dir"))
}

/// The template, copied out and built, serves every command of the
/// already-built credhost (whose binary is unchanged by any of it).
#[test]
fn the_template_builds_out_of_tree_and_serves_the_installed_credhost() {
    let credhost_before = sha256(&artifact("credhost"));
    let mut ws = Workspace::new();
    let project = ws.path("credhost-dir");
    copy_dir(&repo_root().join("examples/plugin-template"), &project);
    let lines = std::fs::read_to_string(project.join("src/lib.rs")).unwrap().lines().count();
    assert!(lines <= 70, "the template's provider is {lines} lines");
    let built = cargo(&project, &["build"]);
    assert_eq!(exported_symbols(&built), [ROOT_MODULE_SYMBOL], "{}", built.display());

    // Dropped into a plugin directory, configured as the guide says.
    let plugins = ws.path("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = plugins.join(lib_file("credhost_dir"));
    std::fs::copy(&built, &file).unwrap();
    let config = guide_block("# plugins.toml").replace("/home/me/credhost-plugins", plugins.to_str().unwrap());
    ws.write_config(&config);
    std::fs::create_dir(ws.path("store")).unwrap();
    ws.set_env("DIR_PASSWORD", "s3cret-dir");

    let inspect = ws.run(&["plugins", "inspect", file.to_str().unwrap()]).ok();
    assert!(inspect.contains("plugin:      dir 0.1.0") && inspect.contains("would load here"), "{inspect}");
    assert!(inspect.contains("panic:       unwind") && inspect.contains("interface:   1.3"), "{inspect}");
    let listed = ws.run(&["plugins"]).ok();
    assert!(listed.contains("dir") && listed.contains("loaded"), "{listed}");
    assert!(listed.contains("offers: registry, upload, download, credentials, check, delete"), "{listed}");
    assert!(listed.contains("    projects in a directory, a registry password from the environment\n"), "{listed}");
    assert!(ws.run(&["check"]).ok().contains("ok   storage"));

    write_zip(&ws.path("1234.zip"), 100_000, 3);
    assert_eq!(ws.run(&["upload", "1234.zip", "--name", "team/1234.zip"]).ok().trim(), "projects team/1234.zip");
    ws.run(&["download", "projects", "team/1234.zip", "-o", "back.zip"]).ok();
    assert_eq!(sha256(&ws.path("back.zip")), sha256(&ws.path("1234.zip")));
    ws.run(&["delete", "projects", "team/1234.zip"]).ok();
    ws.run(&["delete", "projects", "team/1234.zip"]).ok();
    ws.run(&["download", "projects", "team/1234.zip", "-o", "gone.zip"]).fails_with(3);
    let token = ws.run(&["token"]).ok();
    let decoded =
        python(&Services::get(), "import base64,sys; print(base64.b64decode(sys.argv[1]).decode())", &[token.trim()]);
    assert_eq!(decoded.trim(), "deploy:s3cret-dir");
    let err = ws.run(&["presign", "get", "projects", "x.zip"]).fails_with(1);
    assert!(err.contains("does not offer it"), "{err}");

    // Hosts the configuration maps to the instance reach the plugin as its
    // own registry, which it never heard of, through every front end; a
    // host nobody maps is the plugin's to refuse.
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&format!("{text}\n[registries]\n\"mirror.example:5000\" = \"dir\"\n\"*.dir.example\" = \"dir\"\n"));
    ws.set_env("CREDHOST_CONFIG", ws.path("plugins.toml").to_str().unwrap());
    for host in ["mirror.example:5000", "eu.dir.example", "registry.example.com"] {
        let token = ws.run(&["token", "--registry", host, "--format", "json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&token).unwrap();
        assert_eq!((v["server"].as_str(), v["username"].as_str()), (Some(host), Some("deploy")), "{token}");
        let got = ws.helper(&["get"], host.as_bytes()).ok();
        assert!(got.contains("\"Username\":\"deploy\""), "{host}: {got}");
    }
    let err = ws.run(&["token", "--registry", "elsewhere.example"]).fails_with(3);
    assert!(err.contains("this instance's registry is registry.example.com, not elsewhere.example"), "{err}");

    assert_eq!(sha256(&artifact("credhost")), credhost_before, "the installed credhost was not rebuilt");
}

/// The guide's code blocks, assembled in an empty directory, make a project
/// that builds and whose test passes; its provider is the template's.
#[test]
fn the_guide_builds_from_an_empty_directory() {
    let ws = Workspace::new();
    let project = ws.path("credhost-dir");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::create_dir_all(project.join("tests")).unwrap();
    let lib = guide_block("// src/lib.rs");
    let lib = lib.strip_prefix("// src/lib.rs\n").unwrap();
    assert_eq!(lib, std::fs::read_to_string(repo_root().join("examples/plugin-template/src/lib.rs")).unwrap());
    std::fs::write(project.join("src/lib.rs"), lib).unwrap();
    let test = guide_block("// tests/provider.rs");
    std::fs::write(project.join("tests/provider.rs"), test.strip_prefix("// tests/provider.rs\n").unwrap()).unwrap();
    let manifest =
        guide_block("# Cargo.toml") + &guide_block("# Cargo.toml, added: what the test uses") + "\n[workspace]\n";
    std::fs::write(project.join("Cargo.toml"), manifest).unwrap();
    let build = guide_block("// build.rs");
    let build = build.strip_prefix("// build.rs\n").unwrap();
    assert_eq!(build, std::fs::read_to_string(repo_root().join("examples/plugin-template/build.rs")).unwrap());
    std::fs::write(project.join("build.rs"), build).unwrap();
    cargo(&project, &["test"]);
    // The configuration block is valid for credhost (its loading is the template test's).
    let config = guide_block("# plugins.toml");
    assert!(config.contains("[plugins.dir.settings]"));
}
