//! Many callers through one host, and a destination that runs out of room.

use std::time::Duration;

use credhost::{DownloadOptions, UploadOptions};
use credhost_e2e::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// 10,000 concurrent requests for one registry and scope: the token server
/// issues one token.
#[test]
fn ten_thousand_concurrent_token_requests_make_one_upstream_call() {
    let svc = Services::get();
    let ws = Workspace::local_token(&svc);
    let repo = unique("stampede");
    let scope = format!("repository:{repo}:pull,push");
    let issued = || {
        let log = std::fs::read_to_string(svc.var("CREDHOST_TEST_TOKEN_LOG")).unwrap_or_default();
        log.lines().filter(|l| l.contains("token-issued") && l.contains(&repo)).count()
    };
    let secrets = runtime().block_on(async {
        ws.apply_env();
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        let tasks: Vec<_> = (0..10_000)
            .map(|_| {
                let (p, scope) = (provider.clone(), scope.clone());
                tokio::spawn(async move { p.registry_auth(None, Some(&scope)).await })
            })
            .collect();
        let mut secrets = std::collections::HashSet::new();
        for t in tasks {
            let auth = t.await.unwrap().unwrap().expect("credentials");
            secrets.insert(auth.secret.expose().to_owned());
        }
        secrets
    });
    assert_eq!(secrets.len(), 1, "every caller got the same token");
    assert_eq!(issued(), 1, "one upstream call");
}

/// 200 uploads at once through one host to SeaweedFS: 200 objects, each
/// byte-identical to its source.
#[test]
fn two_hundred_concurrent_uploads_through_one_host() {
    let svc = Services::get();
    let ws = Workspace::local_s3(&svc, "{ url = \"http://127.0.0.1:1\", auth = \"none\" }");
    let prefix = unique("many");
    let sources: Vec<_> = (0..200u64)
        .map(|i| {
            let path = ws.path(&format!("src-{i}.zip"));
            write_zip(&path, 20_000 + i * 997, 1000 + i);
            path
        })
        .collect();
    runtime().block_on(async {
        ws.apply_env();
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        let uploads: Vec<_> = sources
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let (p, path) = (provider.clone(), path.clone());
                let opts = UploadOptions { name: Some(format!("{prefix}/{i}.zip")), ..Default::default() };
                tokio::spawn(async move { p.upload_file(&path, &opts).await })
            })
            .collect();
        for u in uploads {
            u.await.unwrap().unwrap();
        }
        let downloads: Vec<_> = (0..sources.len())
            .map(|i| {
                let p = provider.clone();
                let (name, dest) = (format!("{prefix}/{i}.zip"), ws.path(&format!("back-{i}.zip")));
                tokio::spawn(
                    async move { p.download_to_path("projects", &name, &dest, &DownloadOptions::default()).await },
                )
            })
            .collect();
        for d in downloads {
            d.await.unwrap().unwrap();
        }
        provider.wait_idle(Duration::from_secs(10)).await;
    });
    for (i, src) in sources.iter().enumerate() {
        assert_eq!(sha256(&ws.path(&format!("back-{i}.zip"))), sha256(src), "object {i}");
    }
    let listed = python(
        &svc,
        "import boto3,os,sys\ns3=boto3.client('s3',endpoint_url=os.environ['CREDHOST_TEST_S3_ENDPOINT'],aws_access_key_id=os.environ['CREDHOST_TEST_S3_ACCESS_KEY'],aws_secret_access_key=os.environ['CREDHOST_TEST_S3_SECRET_KEY'],region_name='us-east-1')\nprint(sum(1 for p in s3.get_paginator('list_objects_v2').paginate(Bucket='projects',Prefix=sys.argv[1]+'/') for _ in p.get('Contents',[])))",
        &[&prefix],
    );
    assert_eq!(listed.trim(), "200");
}

/// A small tmpfs as the destination directory; the download does not fit.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// Mounts it, through `sudo -n` when not root, owned by this user.
    fn mount(at: std::path::PathBuf, mib: u64) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let st = Self::privileged("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,uid={uid},gid={gid},mode=0700"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs needs root or password-less sudo");
        Self(at)
    }

    fn privileged(program: &str) -> std::process::Command {
        if unsafe { libc::geteuid() } == 0 {
            std::process::Command::new(program)
        } else {
            let mut c = std::process::Command::new("sudo");
            c.args(["-n", program]);
            c
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Self::privileged("umount").arg(&self.0).status();
    }
}

/// A disk that fills during a download: a clear one-line error, nothing at
/// the destination, no temporary directory left, for the fs store and S3.
#[test]
fn a_disk_that_fills_during_a_download_leaves_no_file() {
    let svc = Services::get();
    for ws in [
        Workspace::local_fs("127.0.0.1:1"),
        Workspace::local_s3(&svc, "{ url = \"http://127.0.0.1:1\", auth = \"none\" }"),
    ] {
        let name = unique("full");
        write_zip(&ws.path("big.zip"), 48 << 20, 7);
        ws.run(&["upload", "big.zip", "--name", &name]).ok();
        let disk = SmallDisk::mount(ws.path("small"), 16);
        let err = ws.run(&["download", "projects", &name, "-o", "small/big.zip"]).fails_with(1);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("No space left on device") || err.contains("no space"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&disk.0).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "left on the full disk: {left:?}");
        drop(disk);
    }
}
