//! The event archive: a live instance archives its log; the database is deleted; `artifactstore restore` rebuilds
//! it from the archive and the registry is whole again.

mod common;

use std::path::Path;
use std::time::Duration;

use artifactstore::archive::{self, ArchiveConfig};
use artifactstore::config::{InstanceConfig, UploadLimits};
use artifactstore::instance::Instance;
use artifactstore::server::Background;
use artifactstore_blobstore::Location;
use artifactstore_digest::DualDigest;
use serde_json::json;

fn config(data: &Path) -> InstanceConfig {
    InstanceConfig {
        data: data.to_path_buf(),
        database: format!("sqlite://{}", data.join("artifactstore.db").display()),
        store: Location::File(data.join("blobs")),
        uploads: UploadLimits::default(),
        tokens: Vec::new(),
    }
}

fn run(data: &Path, args: &[&str]) -> (bool, String) {
    let (ok, _, text) = common::run_cli(data, args);
    (ok, text)
}

async fn serve(data: &Path, archive: Option<ArchiveConfig>) -> (String, tokio::sync::oneshot::Sender<()>, Instance) {
    let instance = Instance::open(&config(data)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let background = Background { relay: None, archive };
    tokio::spawn(artifactstore::server::serve_configured(listener, instance.clone(), background, async {
        let _ = stopped.await;
    }));
    (base, stop, instance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_restored_from_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let archive_config = ArchiveConfig { segment_events: 7, segment_age: Duration::from_millis(300) };
    let (base, stop, instance) = serve(&data, Some(archive_config)).await;
    let http = reqwest::Client::new();
    let mut blobs = Vec::new();
    for i in 0..12u32 {
        let bytes = format!("blob number {i} ").repeat(1 + i as usize * 100).into_bytes();
        let digest = DualDigest::of(&bytes);
        let r =
            http.post(format!("{base}/v1/uploads?digest={}", digest.blake3)).body(bytes.clone()).send().await.unwrap();
        assert_eq!(r.status(), 201);
        if i % 2 == 0 {
            let manifest = json!({"files": [{"path": "f", "digest": digest.blake3.to_string()}], "metadata": {"i": i}});
            let r = http.put(format!("{base}/v1/packages/team/p/versions/{i}")).json(&manifest).send().await.unwrap();
            assert_eq!(r.status(), 201);
        }
        blobs.push((digest, bytes));
    }
    let r =
        http.put(format!("{base}/v1/packages/team/p/versions/0/retention")).json(&json!({"hold": true})).send().await;
    assert_eq!(r.unwrap().status(), 200);
    let r = http.delete(format!("{base}/v1/packages/team/p/versions/2")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let head = instance.log.read_head().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let archived = archive::segments(&instance.store, head.log_id).await.unwrap();
        if archived.last().is_some_and(|s| s.last == head.sequence) {
            assert!(archived.len() >= 3, "several segments: {archived:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the archiver did not catch up: {archived:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    instance.db.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The database is gone; the blob store (with the archive) is not.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("artifactstore.db{suffix}")));
    }
    let (ok, text) = run(&data, &["restore"]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("restored {} events", head.sequence)), "{text}");
    let (ok, text) = run(&data, &["verify", "--blobs"]);
    assert!(ok, "{text}");

    let (base, _stop, instance) = serve(&data, None).await;
    assert_eq!(http.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    let restored = instance.log.read_head().await.unwrap();
    assert_eq!(restored.sequence, head.sequence);
    assert_eq!(restored.chain_hash, head.chain_hash);
    assert_ne!(restored.log_id, head.log_id, "a restore that could rewind the log gets a new log id");
    for (digest, bytes) in &blobs {
        let got = http.get(format!("{base}/v1/blobs/{}", digest.sha256)).send().await.unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
    }
    let versions: serde_json::Value =
        http.get(format!("{base}/v1/packages/team/p")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> =
        versions["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
    assert_eq!(names, ["0", "4", "6", "8", "10"]);
    assert_eq!(versions["versions"][0]["retention"]["hold"], true);

    // While the views are known to be behind the log, the instance is not ready; a replay makes it ready again.
    let mut tx = instance.db.begin_write().await.unwrap();
    artifactstore_views::mark_stale(&mut tx, "test").await.unwrap();
    tx.commit().await.unwrap();
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("behind the log"));
    artifactstore_views::rebuild(&instance.log, |_, _| {}).await.unwrap();
    assert_eq!(http.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);

    // A damaged segment is refused, and nothing is imported.
    let other = tempfile::tempdir().unwrap();
    let other_data = other.path().join("data");
    let segments = archive::segments(&instance.store, head.log_id).await.unwrap();
    let root = std::fs::canonicalize(data.join("blobs")).unwrap();
    let victim = root.join(format!(
        "archive/{}/{:020}-{:020}-{}.cborseq",
        head.log_id, segments[1].first, segments[1].last, segments[1].blake3
    ));
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let from = format!("file://{}", root.display());
    let (ok, text) = run(&other_data, &["restore", "--from", &from]);
    assert!(!ok, "{text}");
    assert!(text.contains("does not have the digest in its name"), "{text}");
    let untouched = Instance::open(&config(&other_data)).await.unwrap();
    assert_eq!(untouched.log.read_head().await.unwrap().sequence, 0, "a refused restore imports nothing");
}
