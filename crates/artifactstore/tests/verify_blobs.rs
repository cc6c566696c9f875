//! `artifactstore verify --blobs` and `replay --verify` on the data of a live instance.

mod common;

use std::path::Path;

use artifactstore::config::{InstanceConfig, UploadLimits};
use artifactstore::instance::Instance;
use artifactstore_blobstore::{BlobStore, Location};
use artifactstore_digest::DualDigest;

fn run(data: &Path, args: &[&str]) -> (i32, String) {
    let (_, code, text) = common::run_cli(data, args);
    (code, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_blobs_finds_missing_corrupt_and_orphan_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = InstanceConfig {
        data: data.clone(),
        database: format!("sqlite://{}", data.join("artifactstore.db").display()),
        store: Location::File(data.join("blobs")),
        uploads: UploadLimits::default(),
        tokens: Vec::new(),
    };
    let instance = Instance::open(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(artifactstore::server::serve(listener, instance, std::future::pending()));

    let http = reqwest::Client::new();
    let blobs: Vec<Vec<u8>> = vec![b"first blob".to_vec(), vec![7; 300_000], Vec::new()];
    for blob in &blobs {
        let digest = DualDigest::of(blob);
        let response =
            http.post(format!("{base}/v1/uploads?digest={}", digest.blake3)).body(blob.clone()).send().await.unwrap();
        assert_eq!(response.status(), 201);
    }
    let manifest =
        serde_json::json!({"files": [{"path": "a", "digest": DualDigest::of(&blobs[0]).blake3.to_string()}]});
    let response = http.put(format!("{base}/v1/packages/p/versions/1")).json(&manifest).send().await.unwrap();
    assert_eq!(response.status(), 201);

    let (code, text) = run(&data, &["verify", "--blobs"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("blobs: ok, 3 checked"), "{text}");
    assert!(!text.contains("orphans:"), "{text}");
    let (code, text) = run(&data, &["replay", "--verify"]);
    assert_eq!(code, 0, "{text}");
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

    let (code, text) = run(&data, &["verify", "--blobs"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("blake3:{corrupt}: corrupt")), "{text}");
    assert!(text.contains(&format!("blake3:{missing}: missing from the store")), "{text}");
    assert!(text.contains("orphans: 1 stored blob") && text.contains(&format!("blake3:{orphan}")), "{text}");
    // Without --blobs the chain and views are still fine.
    let (code, text) = run(&data, &["verify"]);
    assert_eq!(code, 0, "{text}");
}
