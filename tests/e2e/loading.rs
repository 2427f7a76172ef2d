//! Plugin loading and the plugin boundary: each way a plugin file can be
//! refused gets its own clear error, nothing runs before it is vetted, what
//! runs is what was vetted, and a plugin that panics or hangs costs one
//! request, never the host.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use credhost_e2e::*;

/// A workspace whose plugin directory holds a copy of the local plugin plus
/// `extra` files (name, source), with `local` active and `entries` appended.
fn setup(extra: &[(&str, PathBuf)], entries: &str) -> Workspace {
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
    let v: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    let rows = v.as_array().unwrap().clone();
    for row in &rows {
        let keys: std::collections::BTreeSet<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        for documented in ["name", "plugin", "version", "api_version", "capabilities", "path", "sha256", "status"] {
            assert!(keys.contains(documented), "{documented} missing from {row}");
        }
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
    assert_eq!(local["api_version"], credhost::api::API_VERSION);
    assert_eq!(local["sha256"].as_str().unwrap().len(), 64);
    write_zip(&ws.path("a.zip"), 500, 1);
    ws.run(&["upload", "a.zip"]).ok();
}

/// The marker library's mark: present only if the library was ever loaded.
fn marker_env(ws: &mut Workspace) -> PathBuf {
    let mark = ws.path("MARK");
    ws.set_env("CREDHOST_TEST_MARKER", mark.to_str().unwrap());
    mark
}

#[test]
fn default_config_lists_the_local_plugin_and_never_loads_other_files() {
    let mut ws = Workspace::local_fs("127.0.0.1:1");
    let plugins = ws.path("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(artifact(&lib_file("credhost_local")), plugins.join(lib_file("credhost_local"))).unwrap();
    std::fs::copy(artifact(&lib_file("fixture_marker")), plugins.join(lib_file("credhost_marker"))).unwrap();
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    let text = text
        .lines()
        .map(|l| if l.starts_with("plugin_dir") { "plugin_dir = \"plugins\"" } else { l })
        .collect::<Vec<_>>();
    ws.write_config(&text.join("\n"));
    let mark = marker_env(&mut ws);

    let rows = report(&ws);
    assert_eq!(rows[0]["name"], "local");
    assert_eq!(rows[0]["status"], "loaded");
    assert_eq!(
        rows[0]["capabilities"],
        serde_json::json!(["registry", "upload", "download", "credentials", "check", "presign", "delete", "grant"])
    );
    let other = row(&rows, "marker");
    assert_eq!(other["status"], "not configured (not loaded)");
    assert_eq!(other["sha256"].as_str().unwrap(), sha256(&plugins.join(lib_file("credhost_marker"))));
    let text = ws.run(&["plugins"]).ok();
    assert!(text.contains("not configured (not loaded)") && text.contains("offers: registry, upload"), "{text}");

    // A configured plugin whose file is missing is looked up by its file name
    // only: the unconfigured library in the directory is never loaded.
    ws.write_config(&format!("{}\n[plugins.ghost]\n", text_of(&ws)));
    let err = ws.run(&["--platform", "ghost", "check"]).fails_with(3);
    assert!(err.contains("libcredhost_ghost.so does not exist"), "{err}");
    assert!(!mark.exists(), "an unconfigured library was loaded");
}

fn text_of(ws: &Workspace) -> String {
    std::fs::read_to_string(ws.path("plugins.toml")).unwrap()
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
fn a_file_cut_short_is_refused_not_a_crash() {
    let ws = setup(&[], "[plugins.cut]\nplugin = \"local\"\nfile = \"plugins/libcredhost_cut.so\"\n[plugins.cut.settings]\nregistry = { url = \"http://127.0.0.1:1\" }\nstorage = { kind = \"fs\", root = \"store\", bucket = \"projects\" }\n");
    let full = std::fs::read(artifact(&lib_file("credhost_local"))).unwrap();
    // An interrupted copy: everything after the middle is missing.
    std::fs::write(ws.path("plugins/libcredhost_cut.so"), &full[..full.len() / 2]).unwrap();
    let err = ws.run(&["--platform", "cut", "check"]).fails_with(5);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("is cut short"), "{err}");
    let rows = report(&ws);
    assert!(row(&rows, "cut")["status"].as_str().unwrap().contains("is cut short"));
    local_still_works(&ws, &rows);
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
    assert!(
        status.contains("built for plugin interface 2.0.0") && status.contains(credhost::api::API_VERSION),
        "{status}"
    );
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
fn missing_files_are_not_found() {
    let ws = setup(
        &[],
        "[plugins.ghost]\nfile = \"plugins/libcredhost_ghost.so\"\n[plugins.phantom]\n[plugins.my-plugin]\n",
    );
    let rows = report(&ws);
    assert!(row(&rows, "ghost")["status"].as_str().unwrap().contains("does not exist"));
    assert!(row(&rows, "phantom")["status"].as_str().unwrap().contains("libcredhost_phantom.so does not exist"));
    // `-` in a plugin name is `_` in its library's name.
    assert!(row(&rows, "my-plugin")["status"].as_str().unwrap().contains("libcredhost_my_plugin.so does not exist"));
    local_still_works(&ws, &rows);
    let err = ws.run(&["--platform", "ghost", "check"]).fails_with(3);
    assert!(err.contains("libcredhost_ghost.so does not exist"), "{err}");
}

#[test]
fn a_file_declaring_another_plugin_is_refused() {
    let ws = setup(&[("libcredhost_other.so", artifact(&lib_file("credhost_local")))], "[plugins.other]\n");
    let rows = report(&ws);
    assert!(row(&rows, "other")["status"].as_str().unwrap().contains("declares plugin `local`, not `other`"));
    // The same file is fine for an instance that says which plugin it runs.
    let ws = setup(
        &[("libcredhost_other.so", artifact(&lib_file("credhost_local")))],
        "[plugins.other]\nplugin = \"local\"\nfile = \"plugins/libcredhost_other.so\"\n[plugins.other.settings]\nregistry = { url = \"http://127.0.0.1:1\" }\nstorage = { kind = \"fs\", root = \"store2\", bucket = \"projects\" }\n",
    );
    assert_eq!(row(&report(&ws), "other")["status"], "loaded");
}

#[test]
fn pins() {
    let ws = setup(&[], "");
    let rows = report(&ws);
    let sha = row(&rows, "local")["sha256"].as_str().unwrap().to_owned();
    let base = text_of(&ws);

    // `--pin` prints what to paste.
    let out = ws.run(&["plugins", "--pin"]).ok();
    assert!(out.contains("[plugins.local]") && out.contains(&format!("sha256 = \"{sha}\"")), "{out}");

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
}

/// Swaps a pinned plugin file with a library whose constructor leaves a
/// mark, by renames, while credhost loads the pinned path again and again:
/// the check and the load always see the same file, so the mark never appears.
#[test]
fn a_pinned_file_swapped_during_loading_never_runs() {
    let mut ws = setup(&[], "");
    let dir = ws.path("plugins");
    let pinned = dir.join(lib_file("credhost_local"));
    let sha = sha256(&pinned);
    let base = text_of(&ws);
    ws.write_config(&base.replace(
        "[plugins.local.settings]",
        &format!("[plugins.local]\nsha256 = \"{sha}\"\n\n[plugins.local.settings]"),
    ));
    let mark = marker_env(&mut ws);
    // Renames of hard links: each swap is instant, so many happen per run.
    let (local, marker) = (dir.join("local.keep"), dir.join("marker.keep"));
    std::fs::copy(artifact(&lib_file("credhost_local")), &local).unwrap();
    std::fs::copy(artifact(&lib_file("fixture_marker")), &marker).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, pinned, dir) = (stop.clone(), pinned.clone(), dir.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (source, temp) in [(&marker, dir.join("evil.tmp")), (&local, dir.join("good.tmp"))] {
                    let _ = std::fs::remove_file(&temp);
                    std::fs::hard_link(source, &temp).unwrap();
                    std::fs::rename(&temp, &pinned).unwrap();
                }
                swaps += 1;
            }
            swaps
        })
    };
    let (mut loaded, mut refused) = (0, 0);
    for _ in 0..40 {
        let run = ws.run(&["token"]);
        match run.code() {
            0 => loaded += 1,
            5 => {
                refused += 1;
                let err = run.stderr();
                assert!(err.contains("but the configuration pins") || err.contains("does not exist"), "{err}");
            }
            other => panic!("exit {other}: {}", run.stderr()),
        }
        assert!(!mark.exists(), "the unpinned library ran ({loaded} loaded, {refused} refused)");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 40, "the file was swapped during the runs ({swaps} swaps)");
    println!("race: {loaded} loads of the pinned file, {refused} refusals, {swaps} swaps, the marker never ran");
}

#[test]
fn permissions_of_the_file_and_every_directory_above_it() {
    let ws = setup(&[], "");
    let file = ws.path("plugins").join(lib_file("credhost_local"));
    let status = |ws: &Workspace| row(&report(ws), "local")["status"].as_str().unwrap().to_owned();

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(status(&ws).contains("the file is world-writable"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();

    std::fs::set_permissions(ws.path("plugins"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let s = status(&ws);
    assert!(s.contains("its directory") && s.contains("world-writable"), "{s}");
    std::fs::set_permissions(ws.path("plugins"), std::fs::Permissions::from_mode(0o755)).unwrap();

    // A plugin directory inside a world-writable parent: the parent could
    // swap the whole directory.
    let parent = ws.path("open");
    std::fs::create_dir(&parent).unwrap();
    std::fs::rename(ws.path("plugins"), parent.join("plugins")).unwrap();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
    ws.write_config(&text_of(&ws).replace("plugin_dir = \"plugins\"", "plugin_dir = \"open/plugins\""));
    let s = status(&ws);
    assert!(
        s.contains(&format!("its directory {} is world-writable", std::fs::canonicalize(&parent).unwrap().display())),
        "{s}"
    );
    // Sticky, like /tmp: fine.
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert_eq!(status(&ws), "loaded");
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();

    // A symbolic link into that directory is refused, never followed.
    let link_dir = ws.path("links");
    std::fs::create_dir(&link_dir).unwrap();
    std::os::unix::fs::symlink(
        parent.join("plugins").join(lib_file("credhost_local")),
        link_dir.join(lib_file("credhost_local")),
    )
    .unwrap();
    ws.write_config(&text_of(&ws).replace("plugin_dir = \"open/plugins\"", "plugin_dir = \"links\""));
    let s = status(&ws);
    assert!(s.contains("it is a symbolic link"), "{s}");
    let err = ws.run(&["token"]).fails_with(5);
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // For development, the checks can be switched off, with a warning on every load.
    ws.write_config(&format!(
        "allow_insecure_permissions = true\n{}",
        text_of(&ws).replace("plugin_dir = \"links\"", "plugin_dir = \"open/plugins\"")
    ));
    let run = ws.run(&["token"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(run.stderr().contains("allow_insecure_permissions is set"), "{}", run.stderr());
}

/// Gives `file` to `uid`:`gid`: directly as root, else through `sudo -n`;
/// fails the test when neither can (never passes without having looked).
fn give_away(file: &Path, uid: u32, gid: u32) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(file, Some(uid), Some(gid)).unwrap();
        return;
    }
    let st = std::process::Command::new("sudo").args(["-n", "chown", &format!("{uid}:{gid}")]).arg(file).status();
    assert!(
        st.as_ref().is_ok_and(|s| s.success()),
        "giving {} to another owner needs root or password-less sudo ({st:?})",
        file.display()
    );
}

/// A group-writable file of another owner (given away as root, or through
/// `sudo -n`; the check itself runs as whoever runs the tests).
#[test]
fn a_file_of_another_owner_is_refused() {
    let ws = setup(&[], "");
    let file = ws.path("plugins").join(lib_file("credhost_local"));
    // Someone who is neither root nor the user running the tests.
    // SAFETY: geteuid has no preconditions.
    let other = if unsafe { libc::geteuid() } == 65534 { 65533 } else { 65534 };
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o775)).unwrap();
    give_away(&file, other, other);
    let s = row(&report(&ws), "local")["status"].as_str().unwrap().to_owned();
    assert!(s.contains("is owned by") && s.contains("not by root or the current user"), "{s}");
    // Given back, but writable by a group that is not the owner's own.
    give_away(&file, 0, other);
    let s = row(&report(&ws), "local")["status"].as_str().unwrap().to_owned();
    assert!(s.contains("is writable by group"), "{s}");
    // Root's own group is root's private group.
    give_away(&file, 0, 0);
    assert_eq!(row(&report(&ws), "local")["status"], "loaded");
}

#[test]
fn a_plugin_built_to_abort_on_panic_is_refused() {
    let built = repo_root().join("target/fixture-abort/release").join(lib_file("credhost_abort"));
    assert!(built.exists(), "{} is missing: tests/run builds it (cargo build --release --manifest-path tests/fixtures/abort/Cargo.toml --target-dir target/fixture-abort)", built.display());
    let ws = setup(&[(lib_file("credhost_abort").as_str(), built)], "[plugins.abort]\n");
    let err = ws.run(&["--platform", "abort", "token"]).fails_with(5);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("built with panic = \"abort\"") && err.contains("rebuild it with panic = \"unwind\""),
        "{err}"
    );
    local_still_works(&ws, &report(&ws));
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

fn raw_ws(mode: &str, extra: &str) -> Workspace {
    setup(
        &[("libcredhost_raw.so", artifact(&lib_file("fixture_raw")))],
        &format!("[plugins.raw]\n{extra}\n[plugins.raw.settings]\nmode = \"{mode}\"\n"),
    )
}

/// A plugin written without the kit whose future panics: the host catches
/// the panic async-ffi raises again on poll, takes the provider out of
/// service, and keeps serving everything else.
#[test]
fn a_raw_plugin_whose_future_panics_is_contained() {
    let ws = raw_ws("panic", "");
    let run = ws.run(&["-v", "--platform", "raw", "token"]);
    let err = run.fails_with(1);
    assert!(err.contains("raw: registry credentials: the plugin panicked"), "{err}");
    // (A plugin without the kit prints its own panic message through its own
    // copy of std; the host adds nothing of its own.)
    assert!(!err.contains("FFI future panicked"), "the host's panic leaked: {err}");
    assert!(err.contains("does not record its panic strategy"), "loads with a note under -v: {err}");
    local_still_works(&ws, &report(&ws));

    // In one process: the failed provider answers at once; other plugins go on.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let raw = host.provider("raw").await.unwrap();
        let local = host.provider("local").await.unwrap();
        let e = raw.check().await.unwrap_err();
        assert_eq!(e.kind(), credhost::ErrorKind::Panicked, "{e}");
        assert!(raw.is_failed());
        let t = Instant::now();
        let e = raw.credentials().await.unwrap_err();
        assert!(e.to_string().contains("out of service"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(1));
        local.check().await.unwrap();
        // A new provider of the same instance works again... and panics again.
        let again = host.provider("raw").await.unwrap();
        assert!(!again.is_failed());
    });
}

/// A plugin that never answers costs one request, bounded by the instance's
/// `timeout`; the next request is served.
#[test]
fn a_plugin_that_never_answers_times_out() {
    let ws = raw_ws("hang", "timeout = 2");
    for args in [&["token"][..], &["check"], &["credentials"]] {
        let mut full = vec!["--platform", "raw"];
        full.extend_from_slice(args);
        let t = Instant::now();
        let err = ws.run(&full).fails_with(1);
        assert!(t.elapsed() < Duration::from_secs(15), "{args:?} took {:?}", t.elapsed());
        assert!(err.contains("no answer within 2 s; the operation was cancelled"), "{args:?}: {err}");
    }
    // Transfers have no total limit but an idle-progress watchdog.
    let ws = raw_ws("hang", "transfer_idle_timeout = 2");
    write_zip(&ws.path("a.zip"), 500, 1);
    let err = ws.run(&["--platform", "raw", "upload", "a.zip"]).fails_with(1);
    assert!(err.contains("upload: no answer within 2 s"), "{err}");
    local_still_works(&ws, &report(&ws));

    let ws = raw_ws("hang_constructor", "timeout = 2");
    let err = ws.run(&["--platform", "raw", "check"]).fails_with(1);
    assert!(err.contains("raw: init: no answer within 2 s"), "{err}");
}

/// A constructor that never returns does not stop a service from applying a
/// later good edit of plugins.toml.
#[test]
fn a_hung_constructor_does_not_freeze_live_reloads() {
    let svc = Services::get();
    let ws = raw_ws("hang_constructor", "timeout = 30");
    let path = ws.path("plugins.toml");
    let good = text_of(&ws);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let options = credhost::WatchOptions { interval: Duration::from_millis(100), ..Default::default() };
        let live = credhost::LiveHost::watch(&path, None, options).await.unwrap();
        assert_eq!(live.status().platform, "local");
        // Switch to the hanging instance: its constructor never returns...
        std::fs::write(&path, good.replace("platform = \"local\"", "platform = \"raw\"")).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(live.status().platform, "local");
        // ...and a later edit (a second local instance) is applied all the same.
        // (Applied only once its check passes: a registry that answers.)
        let second = format!(
            "{}\n[plugins.local2]\nplugin = \"local\"\n[plugins.local2.settings]\nregistry = {{ url = \"http://{}\" }}\nstorage = {{ kind = \"fs\", root = \"store2\", bucket = \"projects\" }}\n",
            good.replace("platform = \"local\"", "platform = \"local2\""),
            svc.var("CREDHOST_TEST_REGISTRY_OPEN")
        );
        std::fs::write(&path, second).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while live.status().platform != "local2" {
            assert!(Instant::now() < deadline, "the good edit was not applied: {:?}", live.status());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        live.provider().check().await.unwrap();
    });
    // The hung constructor's thread is never waited for.
    drop(rt);
}

/// A shipped plugin file exports the root module the host loads it by and
/// nothing else: C functions of its dependencies (the AWS SDK brings
/// crc-fast's) would otherwise be visible to, and could clash with, whatever
/// else the host process links.
#[test]
fn shipped_plugin_files_export_their_root_module_only() {
    for name in ["credhost_local", "credhost_aws", "credhost_gcp"] {
        let path = artifact(&lib_file(name));
        assert_eq!(exported_symbols(&path), [ROOT_MODULE_SYMBOL], "{}", path.display());
    }
}
