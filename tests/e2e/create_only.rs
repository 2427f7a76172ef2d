//! Create-only uploads (`--if-absent`): the store refuses a name that is
//! taken, atomically, on every server that enforces preconditions
//! (SeaweedFS, moto, the filesystem store); a store that ignores them
//! (rclone's S3 server, gcp-storage-emulator) is found out by a canary and
//! refused, unless the instance accepts a racy look-then-write; so is a
//! store that enforces them on one upload path only (fake-gcs-server, which
//! ignores them on resumable sessions).

use std::process::Stdio;

use credhost_e2e::{
    backend::{Backend, Kind, MIB},
    *,
};

/// Exit code of "the destination exists" (`cli/src/error.rs`).
const EXIT_EXISTS: i32 = 7;
/// Exit code of a usage, configuration or input error.
const EXIT_INPUT: i32 = 2;

/// 16 processes upload 16 different archives of `size` bytes under one
/// name, create-only: exactly one is stored (the winner's bytes), the 15
/// others exit 7 and leave nothing (no temporary file, no open multipart
/// upload). With `atomic_complete` false (a server that checks
/// `If-None-Match` on `CompleteMultipartUpload` but not atomically), more
/// than one may be stored in turn: then the object is one winner's, whole.
fn sixteen_racers(kind: Kind, size: u64) {
    racers(kind, size, true)
}

fn racers(kind: Kind, size: u64, atomic_complete: bool) {
    let b = Backend::new(kind);
    let ws = b.ws();
    let name = unique("race");
    for i in 0..16u64 {
        write_zip(&ws.path(&format!("r{i}.zip")), size, 1000 + i);
    }
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let file = format!("r{i}.zip");
            let mut cmd = ws.cmd(&["upload", &file, "--name", &name, "--if-absent", "--quiet"]);
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            cmd.spawn().expect("spawn credhost upload")
        })
        .collect();
    let outcomes: Vec<(i32, String)> = racers
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .collect();
    let winners: Vec<usize> = outcomes.iter().enumerate().filter(|(_, (c, _))| *c == 0).map(|(i, _)| i).collect();
    if atomic_complete {
        assert_eq!(winners.len(), 1, "{kind:?}: not exactly one stored: {outcomes:?}");
    } else {
        assert!(!winners.is_empty(), "{kind:?}: nothing stored: {outcomes:?}");
        eprintln!(
            "{kind:?}: {} of 16 concurrent multipart completes succeeded (not atomic on this server)",
            winners.len()
        );
    }
    for (i, (code, err)) in outcomes.iter().enumerate() {
        if !winners.contains(&i) {
            assert_eq!(*code, EXIT_EXISTS, "{kind:?}: racer {i}: {err}");
            assert!(err.contains("exists already") && err.trim().lines().count() == 1, "{kind:?}: {err}");
        }
    }
    ws.run(&["download", "projects", &name, "-o", "got.zip"]).ok();
    let got = sha256(&ws.path("got.zip"));
    assert!(winners.iter().any(|w| sha256(&ws.path(&format!("r{w}.zip"))) == got), "{kind:?}: not a winner's bytes");
    ws.run(&["delete", "projects", &name]).ok();
    assert_eq!(b.leftovers(&ws, &name), None, "{kind:?}: the losers left something");
    // Once the name is taken, a create-only upload is refused, multipart too.
    ws.run(&["upload", "r0.zip", "--name", &name, "--quiet"]).ok();
    let err = ws.run(&["upload", "r1.zip", "--name", &name, "--if-absent"]).fails_with(EXIT_EXISTS);
    assert!(err.contains("exists already"), "{kind:?}: {err}");
    ws.run(&["download", "projects", &name, "-o", "again.zip", "--force"]).ok();
    assert_eq!(sha256(&ws.path("again.zip")), sha256(&ws.path("r0.zip")));
    ws.run(&["delete", "projects", &name]).ok();
    assert_eq!(b.leftovers(&ws, &name), None, "{kind:?}: the refused upload left something");
}

#[test]
fn fs_store_sixteen_racers_store_one() {
    sixteen_racers(Kind::Fs, 100 * 1024);
}

#[test]
fn seaweedfs_sixteen_racers_store_one_put() {
    sixteen_racers(Kind::LocalS3, 100 * 1024);
}

/// SeaweedFS checks `If-None-Match` on `CompleteMultipartUpload`, but not
/// atomically: of 16 concurrent completes of one name, 1 to 3 succeeded in
/// trials (each leaving the object whole; the last one stays). AWS S3
/// refuses all but one (412, or 409 for a complete under way).
#[test]
fn seaweedfs_multipart_racers_never_mix_and_a_taken_name_is_refused() {
    racers(Kind::LocalS3, 9 * MIB, false);
}

#[test]
fn moto_sixteen_racers_store_one_put() {
    sixteen_racers(Kind::AwsMoto, 100 * 1024);
}

/// moto, like SeaweedFS, checks the precondition of a multipart complete
/// but not atomically (up to 5 of 16 succeeded in trials).
#[test]
fn moto_multipart_racers_never_mix_and_a_taken_name_is_refused() {
    racers(Kind::AwsMoto, 9 * MIB, false);
}

/// `check` says whether the store enforces create-only writes.
#[test]
fn check_reports_enforced_or_ignored() {
    for (kind, want) in [
        (Kind::Fs, "create-only: enforced"),
        (Kind::LocalS3, "create-only: enforced"),
        (Kind::AwsMoto, "create-only: enforced"),
        (Kind::AwsSeaweed, "create-only: enforced"),
        (Kind::LocalRclone, "create-only: ignored by this store"),
        // gcp-storage-emulator ignores `ifGenerationMatch` (GCS enforces it).
        (Kind::Gcp, "create-only: ignored by this store: "),
        // fake-gcs-server checks it on single-request uploads only.
        (Kind::GcpFake, "create-only: ignored by this store on multi-part uploads"),
    ] {
        let ws = Backend::new(kind).ws();
        let out = ws.run(&["check"]).ok();
        assert!(out.contains(want), "{kind:?}: {out}");
    }
}

/// rclone's S3 server overwrites whatever the precondition says: the canary
/// finds it out, and `--if-absent` is refused there (exit 2, nothing
/// stored), unless the instance sets `create_only = "best-effort"`: then
/// the name is looked for first, and the output says the result is racy.
#[test]
fn a_store_that_ignores_preconditions_is_refused_unless_best_effort() {
    ignored_preconditions(Kind::LocalRclone);
}

/// gcp-storage-emulator, likewise: it ignores `ifGenerationMatch=0`.
#[test]
fn gcs_emulator_ignoring_preconditions_is_refused_unless_best_effort() {
    ignored_preconditions(Kind::Gcp);
}

/// fake-gcs-server checks `ifGenerationMatch=0` on single-request uploads
/// (simple and multipart) but not on resumable sessions, which uploads of
/// 16 MiB and more use: a session started with the precondition completes
/// over an existing object. The canary, written again by a resumable
/// session, finds it out: `check` says so, and `--if-absent` is refused
/// (exit 2) unless best-effort. Presigned PUTs are single requests, so a
/// create-only one is made, and a replay of it is refused (412).
#[test]
fn fake_gcs_ignoring_preconditions_on_resumable_sessions_is_found_out() {
    let b = Backend::new(Kind::GcpFake);
    let ws = b.ws();
    let name = unique("fake-gcs");
    write_zip(&ws.path("p.zip"), 1000, 1);
    let err = ws.run(&["upload", "p.zip", "--name", &name, "--if-absent"]).fails_with(EXIT_INPUT);
    assert!(
        err.contains("ignores create-only preconditions on multi-part uploads") && err.contains("best-effort"),
        "{err}"
    );
    assert!(!b.object_exists(&ws, &name));

    presigned_put_once(&ws, &name, ("x-goog-if-generation-match", "0"));

    // Best-effort: looked for first, then written.
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(
        &text.replace(
            "[plugins.gcp.settings]",
            "[plugins.gcp]\ncreate_only = \"best-effort\"\n\n[plugins.gcp.settings]",
        ),
    );
    let stored: serde_json::Value =
        serde_json::from_str(&ws.run(&["upload", "p.zip", "--name", &name, "--if-absent", "--json"]).ok()).unwrap();
    assert_eq!(stored["create_only"], "best-effort");
    write_zip(&ws.path("big.zip"), 17 * MIB, 3);
    let err = ws.run(&["upload", "big.zip", "--name", &name, "--if-absent"]).fails_with(EXIT_EXISTS);
    assert!(err.contains("looked for first"), "{err}");
    ws.run(&["delete", "projects", &name]).ok();
}

fn ignored_preconditions(kind: Kind) {
    let b = Backend::new(kind);
    let ws = b.ws();
    let name = unique("rclone");
    write_zip(&ws.path("p.zip"), 1000, 1);
    let err = ws.run(&["upload", "p.zip", "--name", &name, "--if-absent"]).fails_with(EXIT_INPUT);
    assert!(err.contains("ignores create-only preconditions") && err.contains("best-effort"), "{err}");
    assert!(!b.object_exists(&ws, &name));
    let err = ws.run(&["presign", "put", &name, "--if-absent"]).fails_with(EXIT_INPUT);
    assert!(err.contains("ignores create-only preconditions"), "{err}");

    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    let instance = if kind == Kind::Gcp { "gcp" } else { "local" };
    let table = format!("[plugins.{instance}.settings]");
    assert!(text.contains(&table), "{text}");
    let text = text.replace(&table, &format!("[plugins.{instance}]\ncreate_only = \"best-effort\"\n\n{table}"));
    ws.write_config(&text);
    let run = ws.run(&["upload", "p.zip", "--name", &name, "--if-absent", "--json"]);
    let stored: serde_json::Value = serde_json::from_str(&run.ok()).unwrap();
    assert_eq!(stored["create_only"], "best-effort");
    assert!(run.stderr().contains("best-effort (racy)"), "{}", run.stderr());
    let err = ws.run(&["upload", "p.zip", "--name", &name, "--if-absent"]).fails_with(EXIT_EXISTS);
    assert!(err.contains("looked for first"), "{err}");
    ws.run(&["delete", "projects", &name]).ok();
}

/// A create-only presigned PUT carries `If-None-Match: *` in its signature:
/// SeaweedFS (which checks signatures) stores the first PUT, refuses the
/// same URL replayed (412), and refuses it sent without the header (403).
#[test]
fn a_create_only_presigned_put_cannot_be_replayed() {
    let b = Backend::new(Kind::LocalS3);
    presigned_put_once(&b.ws(), &unique("presigned"), ("if-none-match", "*"));
}

/// A create-only presigned PUT of `name`, whose signed precondition is
/// `header`: refused without the header (403), stored with it (200), and
/// refused when replayed with other bytes (412), the first bytes staying.
fn presigned_put_once(ws: &Workspace, name: &str, (header, value): (&str, &str)) {
    let signed: serde_json::Value =
        serde_json::from_str(&ws.run(&["presign", "put", name, "--if-absent", "--json"]).ok()).unwrap();
    assert_eq!(signed["headers"][header], value, "{signed}");
    let url = signed["url"].as_str().unwrap();
    write_zip(&ws.path("first.zip"), 1000, 1);
    write_zip(&ws.path("second.zip"), 1000, 2);
    let precondition = format!("{header}: {value}");
    let put = |file: &str, with_header: bool| {
        let data = format!("@{}", ws.path(file).display());
        let mut args = vec!["-o", "/dev/null", "-X", "PUT", "--data-binary", data.as_str()];
        if with_header {
            args.extend(["-H", precondition.as_str()]);
        }
        args.push(url);
        curl(&args).1
    };
    assert_eq!(put("first.zip", false), "403", "the header is part of the signature");
    assert_eq!(put("first.zip", true), "200");
    assert_eq!(put("second.zip", true), "412", "a replayed URL overwrote");
    ws.run(&["download", "projects", name, "-o", "got.zip"]).ok();
    assert_eq!(sha256(&ws.path("got.zip")), sha256(&ws.path("first.zip")));
    ws.run(&["delete", "projects", name]).ok();
}

/// With the plugin in a process of its own, create-only uploads and the
/// canary behave the same.
#[test]
fn create_only_in_a_plugin_process() {
    for kind in [Kind::Fs, Kind::LocalS3] {
        let ws = Backend::new(kind).isolated().ws();
        let name = unique("process");
        write_zip(&ws.path("a.zip"), 1000, 1);
        write_zip(&ws.path("b.zip"), 1000, 2);
        ws.run(&["upload", "a.zip", "--name", &name, "--if-absent", "--quiet"]).ok();
        let err = ws.run(&["upload", "b.zip", "--name", &name, "--if-absent"]).fails_with(EXIT_EXISTS);
        assert!(err.contains("exists already"), "{kind:?}: {err}");
        assert!(ws.run(&["check"]).ok().contains("create-only: enforced"), "{kind:?}");
        ws.run(&["download", "projects", &name, "-o", "got.zip"]).ok();
        assert_eq!(sha256(&ws.path("got.zip")), sha256(&ws.path("a.zip")), "{kind:?}");
        ws.run(&["delete", "projects", &name]).ok();
    }
}
