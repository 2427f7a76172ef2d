//! What an outside bad-input battery found, kept found: plugin files that
//! are devices or huge, libraries whose constructors crash or hang, file
//! names that try to forge a listing, registry input that carries escapes,
//! variables that are not text, a delete that could not look, and a
//! registry whose instance's plugin was refused.

use std::{
    ffi::OsStr,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use credhost_e2e::*;

/// Runs `cmd` to completion, failing the test (and killing it) when it
/// takes longer than `limit`: a command that never ends is the bug these
/// tests look for, and must fail them rather than hang them.
fn within(mut cmd: Command, limit: Duration) -> Run {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run(child.wait_with_output().unwrap())
}

/// A workspace with the local plugin active and the instance `odd` whose
/// plugin file is `file`.
fn odd_instance(file: &str) -> Workspace {
    let ws = Workspace::local_fs("127.0.0.1:1");
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&format!("{text}\n[plugins.odd]\nfile = {file:?}\n"));
    ws
}

/// `/dev/zero`, a FIFO and a file over the size bound are refused before a
/// byte is read, by `plugins`, `plugins --pin` and `plugins inspect`, each
/// in moments (hashing first would read `/dev/zero` for ever).
#[test]
fn devices_fifos_and_huge_files_are_refused_before_they_are_read() {
    let probe = Workspace::new();
    let fifo = probe.path("libcredhost_fifo.so");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let huge = probe.path("libcredhost_huge.so");
    std::fs::File::create(&huge).unwrap().set_len(600 << 20).unwrap();
    std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cases = [
        ("/dev/zero", "not a regular file"),
        (fifo.to_str().unwrap(), "not a regular file"),
        (huge.to_str().unwrap(), "plugin files over 512 MiB are not read"),
    ];
    for (file, why) in cases {
        let ws = odd_instance(file);
        let limit = Duration::from_secs(20);
        let listed = within(ws.cmd(&["plugins", "--json"]), limit);
        assert_eq!(listed.code(), 0, "{}", listed.stderr());
        let rows: serde_json::Value = serde_json::from_str(&listed.stdout()).unwrap();
        let odd = rows.as_array().unwrap().iter().find(|r| r["name"] == "odd").unwrap();
        assert!(odd["status"].as_str().unwrap().contains(why), "{file}: {odd}");
        assert!(odd["sha256"].is_null(), "{file} was hashed: {odd}");
        let pins = within(ws.cmd(&["plugins", "--pin"]), limit);
        assert_eq!(pins.code(), 5, "{file}: {}", pins.stderr());
        assert!(pins.stderr().contains(why) && pins.stderr().trim().lines().count() == 1, "{}", pins.stderr());
        assert!(pins.stdout().contains("[plugins.local]"), "the other pins are still printed");
        let inspected = within(ws.cmd(&["plugins", "inspect", file]), limit);
        assert_eq!(inspected.code(), 5, "{file}: {}", inspected.stdout());
        assert!(inspected.stdout().contains(why) && inspected.stdout().contains("sha256:      -"), "{file}");
    }
}

/// A library whose constructor crashes the process that loads it: `plugins
/// inspect` loads it in a child and reports the crash, instead of dying
/// without a word.
#[test]
fn inspect_reports_a_library_that_crashes_while_it_loads() {
    let mut ws = Workspace::new();
    ws.set_env("CREDHOST_TEST_MARKER_ACTION", "segv");
    let lib = ws.path(&lib_file("credhost_crash"));
    std::fs::copy(artifact(&lib_file("fixture_marker")), &lib).unwrap();
    let run = within(ws.cmd(&["plugins", "inspect", lib.to_str().unwrap()]), Duration::from_secs(60));
    assert_eq!(run.code(), 5, "stdout: {}\nstderr: {}", run.stdout(), run.stderr());
    assert!(run.stdout().contains("crashed the process that loaded it (SIGSEGV, signal 11)"), "{}", run.stdout());
    let json = within(ws.cmd(&["plugins", "inspect", "--json", lib.to_str().unwrap()]), Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    assert!(v["status"].as_str().unwrap().contains("SIGSEGV"), "{v}");
    // A library that writes to standard output as it loads cannot pass its
    // words off as the inspection's: it is still not a plugin.
    ws.set_env("CREDHOST_TEST_MARKER_ACTION", "print");
    let run = within(ws.cmd(&["plugins", "inspect", lib.to_str().unwrap()]), Duration::from_secs(60));
    assert_eq!(run.code(), 5, "{}", run.stdout());
    assert!(
        run.stdout().contains("exports no credhost root module") && !run.stdout().contains("forged"),
        "{}",
        run.stdout()
    );
}

/// SIGTERM is answered (exit 143, at once) while credhost is stuck in
/// synchronous work on plugin files: a library whose constructor sleeps,
/// loaded by `plugins` (in process) and by `plugins inspect` (in a child,
/// which goes too).
#[test]
fn sigterm_is_answered_while_a_plugin_file_loads() {
    for args in [&["plugins"][..], &["plugins", "inspect", "plugins/libcredhost_slow.so"][..]] {
        let mut ws = Workspace::local_fs("127.0.0.1:1");
        std::fs::create_dir(ws.path("plugins")).unwrap();
        std::fs::set_permissions(ws.path("plugins"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(artifact(&lib_file("fixture_marker")), ws.path("plugins/libcredhost_slow.so")).unwrap();
        let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
        ws.write_config(&format!("{text}\n[plugins.slow]\nfile = \"plugins/libcredhost_slow.so\"\n"));
        let mark = ws.path("MARK");
        ws.set_env("CREDHOST_TEST_MARKER", mark.to_str().unwrap());
        ws.set_env("CREDHOST_TEST_MARKER_ACTION", "sleep");
        let mut child = ws.cmd(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        // The constructor has started: it left its mark before sleeping.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !mark.exists() {
            assert!(Instant::now() < deadline, "{args:?}: the library never started loading");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        let sent = Instant::now();
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let deadline = sent + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?}: SIGTERM was not answered within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(143), "{args:?}");
        // No process is left loading the library.
        std::thread::sleep(Duration::from_millis(200));
        let lib = ws.path("plugins/libcredhost_slow.so");
        assert!(processes_naming(lib.to_str().unwrap()).is_empty(), "{args:?}: a child is left behind");
    }
}

/// Live processes whose command line mentions `text`.
fn processes_naming(text: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(text) {
            found.push(pid);
        }
    }
    found
}

/// A file name in the plugin directory cannot forge a row of `credhost
/// plugins` nor send the terminal escape codes: line breaks and control
/// characters in it are shown escaped.
#[test]
fn file_names_cannot_forge_the_plugin_listing() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    let dir = ws.path("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(artifact(&lib_file("credhost_local")), dir.join(lib_file("credhost_local"))).unwrap();
    let forged = "libcredhost_x\n* forged     9.9.9    api 1.1.0  loaded\n\u{1b}[2J.so";
    std::fs::write(dir.join(forged), b"x").unwrap();
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    let text: Vec<&str> =
        text.lines().map(|l| if l.starts_with("plugin_dir") { "plugin_dir = \"plugins\"" } else { l }).collect();
    ws.write_config(&text.join("\n"));
    let out = ws.run(&["plugins"]).ok();
    assert!(!out.lines().any(|l| l.starts_with("* forged")), "a forged row:\n{out}");
    assert!(!out.contains('\u{1b}'), "an escape code reached the terminal: {out:?}");
    assert!(out.contains(r"x\n* forged") && out.contains(r"\u{1b}[2J"), "{out}");
}

/// The credential helper's input may hold anything: a server "URL" with a
/// line break and an escape code is refused on one line, and no log record
/// (at trace, with dependency logs) carries it raw.
#[test]
fn the_helper_never_echoes_control_characters() {
    let mut ws = Workspace::local_fs("127.0.0.1:5999");
    ws.set_env("CREDHOST_CONFIG", ws.path("plugins.toml").to_str().unwrap());
    ws.set_env("CREDHOST_LOG", "trace");
    ws.set_env("CREDHOST_LOG_DEPENDENCIES", "1");
    let run = ws.helper(&["get"], b"127.0.0.1:5999\x1b[31m\nsecond line\x07");
    assert_eq!(run.code(), 1);
    for (stream, text) in [("stdout", run.stdout()), ("stderr", run.stderr())] {
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "{stream}: {text:?}");
        assert!(!text.contains("\nsecond line"), "{stream}: {text:?}");
    }
    assert_eq!(run.stdout().trim().lines().count(), 1, "{}", run.stdout());
    assert!(run.stdout().contains("invalid registry host"), "{}", run.stdout());
}

/// When the instance that serves a registry has its plugin refused, the
/// helper answers with the refusal (exit 1, one line), never "credentials
/// not found" (which clients take for "go on anonymously").
#[test]
fn the_helper_reports_a_refused_plugin_instead_of_no_credentials() {
    for (registries, servers) in [
        ("", &["127.0.0.1:5999"][..]),
        ("registries = [\"mirror.example:5000\"]\n", &["127.0.0.1:5999", "mirror.example:5000"][..]),
    ] {
        let mut ws = Workspace::local_fs("127.0.0.1:5999");
        let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
        let pinned = text.replace(
            "[plugins.local.settings]",
            &format!("[plugins.local]\nsha256 = \"{}\"\n{registries}\n[plugins.local.settings]", "0".repeat(64)),
        );
        ws.write_config(&pinned);
        ws.set_env("CREDHOST_CONFIG", ws.path("plugins.toml").to_str().unwrap());
        for server in servers {
            let run = ws.helper(&["get"], server.as_bytes());
            assert_eq!(run.code(), 1, "{server}: {}", run.stdout());
            let answer = run.stdout();
            assert!(!answer.contains("credentials not found"), "{registries}{server}: {answer}");
            assert!(answer.contains("but the configuration pins"), "{registries}{server}: {answer}");
            assert_eq!(answer.trim().lines().count(), 1, "{answer}");
        }
        // A registry neither the refused instance's settings nor the
        // configuration name is still nobody's: clients go on without
        // credentials, as they should.
        for server in ["index.docker.io", "mirror.example:5001"] {
            let run = ws.helper(&["get"], server.as_bytes());
            assert_eq!(run.stdout().trim(), "credentials not found in native keychain", "{registries}{server}");
        }
    }
}

/// A registry password variable that is set but not UTF-8 is reported as
/// such, not as missing.
#[test]
fn a_variable_that_is_not_text_is_named_for_what_it_is() {
    let ws = Workspace::local(
        "registry = { url = \"http://127.0.0.1:5999\", auth = \"basic\", username_env = \"ODD_USER\", password_env = \"ODD_PASSWORD\" }\nstorage = { kind = \"fs\", root = \"store\", bucket = \"projects\" }",
    );
    let mut cmd = ws.cmd(&["token"]);
    cmd.env("ODD_USER", "deploy").env("ODD_PASSWORD", OsStr::from_bytes(b"pass\xffword"));
    let run = Run(cmd.output().unwrap());
    let err = run.fails_with(2);
    assert!(err.contains("ODD_PASSWORD") && err.contains("is set but not valid UTF-8 text"), "{err}");
    assert!(!err.contains("is not set"), "{err}");
}

/// `delete` run by a user who cannot open the bucket directory fails (exit
/// 4) and the object stays: only a name that does not exist is success.
/// Run as an unprivileged user (root would be let in anywhere).
#[test]
fn delete_fails_when_it_cannot_look() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    write_zip(&ws.path("a.zip"), 1000, 5);
    ws.run(&["upload", "a.zip"]).ok();
    let bucket = ws.path("store/projects");
    let object = bucket.join("a.zip");
    assert!(object.exists());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mode = |m: u32| std::fs::set_permissions(&bucket, std::fs::Permissions::from_mode(m)).unwrap();
    let mut cmd = if root {
        // Everything above the bucket readable by others, the bucket not.
        for dir in [ws.dir.path(), &ws.path("store")] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        mode(0o700);
        let mut c = ws.program("setpriv", &["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(artifact("credhost")).args(["delete", "projects", "a.zip"]);
        c
    } else {
        mode(0o000);
        ws.cmd(&["delete", "projects", "a.zip"])
    };
    let run = Run(cmd.output().unwrap());
    mode(0o755);
    let err = run.fails_with(4);
    assert!(err.contains("permission denied") || err.contains("Permission denied"), "{err}");
    assert!(!err.contains("deleted"), "{err}");
    assert!(object.exists(), "the object is gone");
    // Deleting what does not exist still succeeds, also below a file.
    ws.run(&["delete", "projects", "never-stored.zip"]).ok();
    ws.run(&["delete", "projects", "no/such/dir.zip"]).ok();
    ws.run(&["delete", "projects", "a.zip/inside.zip"]).ok();
    assert!(object.exists());
}

/// `credhost plugins` describes an instance with `isolation = "process"`
/// from a child as well: a library that crashes as it loads is listed as
/// refused, saying how its process died. The same listing in-process dies
/// with it.
#[test]
fn plugins_describes_a_process_instance_from_a_child() {
    use std::os::unix::{fs::PermissionsExt, process::ExitStatusExt};
    let mut ws = Workspace::new();
    ws.set_env("CREDHOST_TEST_MARKER_ACTION", "segv");
    let dir = ws.path("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(artifact(&lib_file("fixture_marker")), dir.join(lib_file("credhost_crash"))).unwrap();
    let config = |isolation: &str| {
        format!("platform = \"crash\"\nplugin_dir = \"plugins\"\n\n[plugins.crash]\nisolation = \"{isolation}\"\n")
    };
    ws.write_config(&config("process"));
    let listed = within(ws.cmd(&["plugins", "--json"]), Duration::from_secs(60));
    assert_eq!(listed.code(), 5, "stdout: {}\nstderr: {}", listed.stdout(), listed.stderr());
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout()).unwrap();
    let status = rows[0]["status"].as_str().unwrap();
    assert!(status.starts_with("refused") && status.contains("died while starting: SIGSEGV"), "{rows}");
    ws.write_config(&config("in-process"));
    let listed = within(ws.cmd(&["plugins", "--json"]), Duration::from_secs(60));
    assert_eq!(listed.0.status.signal(), Some(libc::SIGSEGV), "{}", listed.stdout());
}
