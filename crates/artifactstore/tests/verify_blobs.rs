//! `artifactstore verify --blobs` and `replay --verify` on the data of a live instance.

use artifactstore_blobstore::{BlobStore, Location};
use artifactstore_digest::DualDigest;
use artifactstore_tests::{cli, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_blobs_finds_missing_corrupt_and_orphan_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = TestApp::builder().data_dir(&data).start().await.unwrap();

    let blobs: Vec<Vec<u8>> = vec![b"first blob".to_vec(), vec![7; 300_000], Vec::new()];
    for blob in &blobs {
        assert_eq!(app.upload_blob(blob).await.status, 201);
    }
    let manifest =
        serde_json::json!({"files": [{"path": "a", "digest": DualDigest::of(&blobs[0]).blake3.to_string()}]});
    assert_eq!(app.publish("p", "1", &manifest).await.status, 201);

    let cli = cli!();
    let out = cli.run_on(&data, &["verify", "--blobs"]).await;
    let text = out.text();
    assert_eq!(out.code, 0, "{text}");
    assert!(text.contains("blobs: ok, 3 checked"), "{text}");
    assert!(!text.contains("orphans:"), "{text}");
    let out = cli.run_on(&data, &["replay", "--verify"]).await;
    let text = out.text();
    assert_eq!(out.code, 0, "{text}");
    assert!(text.contains("views: ok"), "{text}");

    // Corrupt one blob in place, delete another, and leave an orphan.
    let store = BlobStore::open(&Location::File(data.join("blobs"))).unwrap();
    let root = std::fs::canonicalize(data.join("blobs")).unwrap();
    let corrupt = DualDigest::of(&blobs[1]).blake3.hex();
    let mut bytes = std::fs::read(root.join(BlobStore::blob_key(&corrupt))).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(root.join(BlobStore::blob_key(&corrupt)), bytes).unwrap();
    let missing = DualDigest::of(&blobs[0]).blake3.hex();
    store.remove(&missing).await.unwrap();
    let orphan = DualDigest::of(b"never logged").blake3.hex();
    let orphan_path = root.join(BlobStore::blob_key(&orphan));
    std::fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
    std::fs::write(&orphan_path, b"never logged").unwrap();

    let out = cli.run_on(&data, &["verify", "--blobs"]).await;
    let text = out.text();
    assert_eq!(out.code, 1, "{text}");
    assert!(text.contains(&format!("blake3:{corrupt}: corrupt")), "{text}");
    assert!(text.contains(&format!("blake3:{missing}: missing from the store")), "{text}");
    assert!(text.contains("orphans: 1 stored blob") && text.contains(&format!("blake3:{orphan}")), "{text}");
    // Without --blobs the chain and views are still fine.
    let out = cli.run_on(&data, &["verify"]).await;
    assert_eq!(out.code, 0, "{}", out.text());
}
