//! The event archive: a live instance archives its log; the database is deleted; `artifactstore restore` rebuilds
//! it from the archive and the registry is whole again.

use std::time::Duration;

use artifactstore::archive::{self, ArchiveConfig};
use artifactstore::server::Background;
use artifactstore_digest::DualDigest;
use artifactstore_tests::{cli, TestApp};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_restored_from_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cli = cli!();
    let archive_config = ArchiveConfig { segment_events: 7, segment_age: Duration::from_millis(300) };
    let background = Background { archive: Some(archive_config), ..Background::default() };
    let app = TestApp::builder().data_dir(&data).background(background).start().await.unwrap();
    let mut blobs = Vec::new();
    for i in 0..12u32 {
        let bytes = format!("blob number {i} ").repeat(1 + i as usize * 100).into_bytes();
        let digest = DualDigest::of(&bytes);
        assert_eq!(app.upload_blob(&bytes).await.status, 201);
        if i % 2 == 0 {
            let manifest = json!({"files": [{"path": "f", "digest": digest.blake3.to_string()}], "metadata": {"i": i}});
            assert_eq!(app.publish("team/p", &i.to_string(), &manifest).await.status, 201);
        }
        blobs.push((digest, bytes));
    }
    let r = app.put_json("/v1/packages/team/p/versions/0/retention", &json!({"hold": true})).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.delete("/v1/packages/team/p/versions/2").await.status, 200);

    let head = app.log.read_head().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let archived = archive::segments(&app.instance.store, head.log_id).await.unwrap();
        if archived.last().is_some_and(|s| s.last == head.sequence) {
            assert!(archived.len() >= 3, "several segments: {archived:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the archiver did not catch up: {archived:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The database is gone; the blob store (with the archive) is not.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("artifactstore.db{suffix}")));
    }
    let out = cli.run_on(&data, &["restore"]).await;
    assert!(out.ok, "{}", out.text());
    assert!(out.text().contains(&format!("restored {} events", head.sequence)), "{}", out.text());
    let out = cli.run_on(&data, &["verify", "--blobs"]).await;
    assert!(out.ok, "{}", out.text());

    let app = TestApp::builder().data_dir(&data).start().await.unwrap();
    assert_eq!(app.get("/readyz").await.status, 200);
    let restored = app.log.read_head().await.unwrap();
    assert_eq!(restored.sequence, head.sequence);
    assert_eq!(restored.chain_hash, head.chain_hash);
    assert_ne!(restored.log_id, head.log_id, "a restore that could rewind the log gets a new log id");
    for (digest, bytes) in &blobs {
        let got = app.get(&format!("/v1/blobs/{}", digest.sha256)).await;
        assert_eq!(&got.body, bytes);
    }
    let versions = app.get_json("/v1/packages/team/p").await;
    let names: Vec<&str> =
        versions["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
    assert_eq!(names, ["0", "4", "6", "8", "10"]);
    assert_eq!(versions["versions"][0]["retention"]["hold"], true);

    // While the views are known to be behind the log, the instance is not ready; a replay makes it ready again.
    let mut tx = app.instance.db.begin_write().await.unwrap();
    artifactstore_views::mark_stale(&mut tx, "test").await.unwrap();
    tx.commit().await.unwrap();
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("behind the log"));
    artifactstore_views::rebuild(&app.log, |_, _| {}).await.unwrap();
    assert_eq!(app.get("/readyz").await.status, 200);

    // A damaged segment is refused, and nothing is imported.
    let other = tempfile::tempdir().unwrap();
    let other_data = other.path().join("data");
    let segments = archive::segments(&app.instance.store, head.log_id).await.unwrap();
    let root = std::fs::canonicalize(data.join("blobs")).unwrap();
    let victim = root.join(format!(
        "archive/{}/{:020}-{:020}-{}.cborseq",
        head.log_id, segments[1].first, segments[1].last, segments[1].blake3
    ));
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let from = format!("file://{}", root.display());
    let out = cli.run_on(&other_data, &["restore", "--from", &from]).await;
    assert!(!out.ok, "{}", out.text());
    assert!(out.text().contains("does not have the digest in its name"), "{}", out.text());
    let untouched = TestApp::builder().data_dir(&other_data).start().await.unwrap();
    assert_eq!(untouched.log.read_head().await.unwrap().sequence, 0, "a refused restore imports nothing");
}
