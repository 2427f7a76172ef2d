//! Plugin loading: each way a plugin file can be refused gets its own clear
//! error, and the other plugins keep working.

use std::os::unix::fs::PermissionsExt;

use credhost_e2e::*;

/// A workspace whose plugin directory holds a copy of the local plugin plus
/// `extra` files (name, source), with `local` active and `entries` appended.
fn setup(extra: &[(&str, std::path::PathBuf)], entries: &str) -> Workspace {
    let ws = Workspace::new();
    let dir = ws.path("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(artifact(&lib_file("credhost_local")), dir.join(lib_file("credhost_local"))).unwrap();
    for (name, src) in extra {
        std::fs::copy(src, dir.join(name)).unwrap();
    }
    ws.write_config(&format!(
        "platform = \"local\"\nplugin_dir = \"plugins\"\n\n[plugins.local.settings]\nregistry = {{ url = \"http://127.0.0.1:1\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}\n{entries}"
    ));
    ws
}

fn report(ws: &Workspace) -> Vec<serde_json::Value> {
    // Exit 5 when the active plugin is refused; the listing is printed either way.
    let run = ws.run(&["plugins", "--json"]);
    assert!(matches!(run.code(), 0 | 5), "{}", run.stderr());
    let out = run.stdout();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap().clone();
    for row in &rows {
        let keys: std::collections::BTreeSet<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["api_version", "name", "path", "sha256", "status", "version"].into_iter().collect());
    }
    rows
}

fn row<'a>(rows: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    rows.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no row {name} in {rows:?}"))
}

/// The local plugin is still loaded and usable next to a broken one.
fn local_still_works(ws: &Workspace, rows: &[serde_json::Value]) {
    let local = row(rows, "local");
    assert_eq!(local["status"], "loaded");
    assert_eq!(local["api_version"], "1.0.0");
    assert_eq!(local["sha256"].as_str().unwrap().len(), 64);
    write_zip(&ws.path("a.zip"), 500, 1);
    ws.run(&["upload", "a.zip"]).ok();
}

#[test]
fn default_config_lists_the_local_plugin() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    let rows = report(&ws);
    assert_eq!(rows[0]["name"], "local");
    assert_eq!(rows[0]["status"], "loaded");
    // The other platform plugins in the directory are found, not configured.
    for other in ["aws", "gcp"] {
        assert_eq!(row(&rows, other)["status"], "loaded (not configured)", "{rows:?}");
    }
    assert_eq!(rows.len(), 3, "fixtures are not named like plugins: {rows:?}");
    let text = ws.run(&["plugins"]).ok();
    assert!(text.contains("local") && text.contains("loaded"), "{text}");
}

#[test]
fn not_a_library() {
    let ws = setup(&[], "[plugins.junk]\nfile = \"plugins/libcredhost_junk.so\"\n");
    std::fs::write(ws.path("plugins/libcredhost_junk.so"), b"#!/bin/sh\necho not a library\n").unwrap();
    let rows = report(&ws);
    let status = row(&rows, "junk")["status"].as_str().unwrap().to_owned();
    assert!(status.starts_with("refused: ") && status.contains("is not a loadable library"), "{status}");
    local_still_works(&ws, &rows);
    let err = ws.run(&["--platform", "junk", "check"]).fails_with(5);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("plugin `junk`") && err.contains("not a loadable library"), "{err}");
}

#[test]
fn no_root_module() {
    let ws = setup(&[("libcredhost_noroot.so", artifact(&lib_file("fixture_no_root")))], "[plugins.noroot]\n");
    let rows = report(&ws);
    let status = row(&rows, "noroot")["status"].as_str().unwrap();
    assert!(status.contains("exports no credhost root module"), "{status}");
    local_still_works(&ws, &rows);
    let err = ws.run(&["--platform", "noroot", "check"]).fails_with(5);
    assert!(err.contains("not a credhost plugin"), "{err}");
}

#[test]
fn interface_major_mismatch() {
    let ws = setup(&[("libcredhost_future.so", artifact(&lib_file("fixture_major_mismatch")))], "[plugins.future]\n");
    let rows = report(&ws);
    let status = row(&rows, "future")["status"].as_str().unwrap();
    assert!(status.contains("built for plugin interface 2.0.0") && status.contains("1.0.0"), "{status}");
    local_still_works(&ws, &rows);
    let err = ws.run(&["--platform", "future", "token"]).fails_with(5);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn layout_mismatch() {
    let ws = setup(&[("libcredhost_odd.so", artifact(&lib_file("fixture_layout_mismatch")))], "[plugins.odd]\n");
    let rows = report(&ws);
    let status = row(&rows, "odd")["status"].as_str().unwrap();
    assert!(status.contains("incompatible plugin interface layout"), "{status}");
    local_still_works(&ws, &rows);
    let err = ws.run(&["--platform", "odd", "check"]).fails_with(5);
    assert_eq!(err.trim().lines().count(), 1, "abi_stable's report must not be dumped: {err}");
}

#[test]
fn missing_file() {
    let ws = setup(&[], "[plugins.ghost]\nfile = \"plugins/libcredhost_ghost.so\"\n[plugins.phantom]\n");
    let rows = report(&ws);
    assert!(row(&rows, "ghost")["status"].as_str().unwrap().contains("does not exist"));
    assert!(row(&rows, "phantom")["status"].as_str().unwrap().contains("no plugin file for `phantom`"));
    local_still_works(&ws, &rows);
    let err = ws.run(&["--platform", "ghost", "check"]).fails_with(3);
    assert!(err.contains("libcredhost_ghost.so does not exist"), "{err}");
}

#[test]
fn duplicate_plugin_name() {
    let ws = setup(&[("libcredhost_local_copy.so", artifact(&lib_file("credhost_local")))], "");
    let rows = report(&ws);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let dup = rows.iter().find(|r| r["path"].as_str().unwrap().ends_with("libcredhost_local_copy.so")).unwrap();
    let status = dup["status"].as_str().unwrap();
    assert!(status.contains("duplicate plugin name `local`"), "{status}");
    local_still_works(&ws, &rows);

    // A configured entry whose file declares another name is refused too.
    let ws = setup(&[("libcredhost_other.so", artifact(&lib_file("credhost_local")))], "[plugins.other]\n");
    let rows = report(&ws);
    assert!(row(&rows, "other")["status"].as_str().unwrap().contains("declares plugin `local`, not `other`"));
}

#[test]
fn pins_and_permissions() {
    let ws = setup(&[], "");
    let rows = report(&ws);
    let sha = row(&rows, "local")["sha256"].as_str().unwrap().to_owned();
    let base = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();

    ws.write_config(&base.replace(
        "[plugins.local.settings]",
        &format!("[plugins.local]\nsha256 = \"{sha}\"\n\n[plugins.local.settings]"),
    ));
    assert_eq!(row(&report(&ws), "local")["status"], "loaded");

    let wrong = "0".repeat(64);
    ws.write_config(&base.replace(
        "[plugins.local.settings]",
        &format!("[plugins.local]\nsha256 = \"{wrong}\"\n\n[plugins.local.settings]"),
    ));
    let status = row(&report(&ws), "local")["status"].as_str().unwrap().to_owned();
    assert!(status.contains("but the configuration pins"), "{status}");
    ws.run(&["token"]).fails_with(5);

    ws.write_config(&base);
    let file = ws.path("plugins").join(lib_file("credhost_local"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let status = row(&report(&ws), "local")["status"].as_str().unwrap().to_owned();
    assert!(status.contains("world-writable"), "{status}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(ws.path("plugins"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let status = row(&report(&ws), "local")["status"].as_str().unwrap().to_owned();
    assert!(status.contains("directory") && status.contains("world-writable"), "{status}");
}

#[test]
fn panics_never_cross_the_boundary() {
    let ws =
        setup(&[("libcredhost_panicky.so", artifact(&lib_file("fixture_panicky")))], "[plugins.panicky.settings]\n");
    write_zip(&ws.path("a.zip"), 500, 1);
    for args in [
        &["upload", "a.zip"][..],
        &["token"],
        &["credentials"],
        &["check"],
        &["download", "projects", "a.zip", "-o", "x.zip"],
    ] {
        let mut full = vec!["--platform", "panicky"];
        full.extend_from_slice(args);
        let err = ws.run(&full).fails_with(1);
        assert!(err.contains("plugin panicked") && err.contains("on purpose"), "{args:?}: {err}");
    }
    assert!(!ws.path("x.zip").exists());

    let ws = setup(
        &[("libcredhost_panicky.so", artifact(&lib_file("fixture_panicky")))],
        "[plugins.panicky.settings]\npanic_in = \"new\"\n",
    );
    let err = ws.run(&["--platform", "panicky", "check"]).fails_with(1);
    assert!(err.contains("constructor panicked on purpose"), "{err}");
}
