use credhost_dir::Dir;
use credhost_plugin_sdk::{testing, Provider};

#[tokio::test]
async fn round_trip_through_the_provider() {
    let dir = std::env::temp_dir().join(format!("credhost-dir-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::env::set_var("DIR_TEST_PASSWORD", "hunter2");
    let settings = serde_json::json!({"root": ".", "registry": "r.example", "password_env": "DIR_TEST_PASSWORD"});
    let p: Dir = testing::build(settings, &dir).await.unwrap();

    let stored = p.upload(testing::upload_bytes("team/1234.zip", b"PK zip bytes".to_vec())).await.unwrap();
    assert_eq!((stored.bucket.as_str(), stored.size), ("projects", 12));
    let (request, got) = testing::download_bytes("projects", "team/1234.zip");
    assert_eq!(p.download(request).await.unwrap().checksum, stored.checksum);
    assert_eq!((got.bytes(), got.committed()), (b"PK zip bytes".to_vec(), true));

    p.delete(testing::delete("projects", "team/1234.zip")).await.unwrap();
    p.delete(testing::delete("projects", "team/1234.zip")).await.unwrap(); // idempotent
    let (request, _) = testing::download_bytes("projects", "team/1234.zip");
    let missing = p.download(request).await.unwrap_err();
    assert_eq!(missing.kind, credhost_plugin_sdk::ErrorKind::NOT_FOUND);
    let auth = p.registry_auth(testing::registry()).await.unwrap().unwrap();
    assert_eq!((auth.username.as_str(), auth.secret.expose()), ("deploy", "hunter2"));
    std::fs::remove_dir_all(&dir).unwrap();
}
