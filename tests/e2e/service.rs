//! The embedding example service: a ZIP posted over HTTP lands in storage.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use credhost_e2e::*;

#[test]
fn example_service_streams_posted_zips_to_storage() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _server = Server(
        Command::new(release_dir().join("examples/serve"))
            .args([ws.path("plugins.toml").to_str().unwrap(), &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("examples/serve is missing: cargo build --release --examples"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "example service did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let src = ws.path("p.zip");
    write_zip(&src, 40 << 20, 77);
    let (body, code) =
        curl(&["--data-binary", &format!("@{}", src.display()), &format!("http://{addr}/projects/4242.zip")]);
    assert_eq!(code, "201", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["size"], std::fs::metadata(&src).unwrap().len());
    assert_eq!(sha256(&ws.path("store/projects/4242.zip")), sha256(&src));

    let (body, code) = curl(&["--data-binary", "x", &format!("http://{addr}/projects/..%2Fescape.zip")]);
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("invalid project name"), "{body}");

    let (body, code) = curl(&[&format!("http://{addr}/token")]);
    assert_eq!((body.as_str(), code.as_str()), ("null", "200"));

    // A deploy is PID/DEPLOY_ID.zip, create-only: the same deploy again is
    // a conflict, and the first one's bytes stay.
    let other = ws.path("other.zip");
    write_zip(&other, 1 << 20, 78);
    let deploy = format!("http://{addr}/projects/4242/deploys/7");
    let (body, code) = curl(&["--data-binary", &format!("@{}", src.display()), &deploy]);
    assert_eq!(code, "201", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["name"].as_str(), v["create_only"].as_str()), (Some("4242/7.zip"), Some("enforced")));
    let (body, code) = curl(&["--data-binary", &format!("@{}", other.display()), &deploy]);
    assert_eq!(code, "409", "{body}");
    assert!(body.contains("exists already"), "{body}");
    assert_eq!(sha256(&ws.path("store/projects/4242/7.zip")), sha256(&src));
}
