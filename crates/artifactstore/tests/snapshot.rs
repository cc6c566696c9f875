//! `artifactstore snapshot` and `replay --from-snapshot`: the same views as a replay from the first event.

use std::path::Path;

use artifactstore::instance::Instance;
use artifactstore_tests::{cli, TestApp};
use artifactstore_views::vocab::{
    FileIngested, PackageCreated, PackageDeleted, PackageFile, RetentionChange, RetentionKind,
};
use artifactstore_views::{record, RegistryEvent};

/// An app on `dir/data`, the binary's data directory when run in `dir`.
async fn open(dir: &Path) -> TestApp {
    TestApp::builder().data_dir(&dir.join("data")).start().await.unwrap()
}

async fn run(dir: &Path, args: &[&str]) -> String {
    let out = cli!().run_on(&dir.join("data"), args).await;
    assert!(out.ok, "{args:?}: {}", out.text());
    out.text()
}

/// Appends a workload that exercises every kind of view row: files, packages, retention, deletions.
async fn workload(instance: &Instance, from: u64, to: u64) {
    let mut packages = Vec::new();
    for i in from..to {
        let blake3 = format!("blake3:{:064x}", i);
        let sha256 = format!("sha256:{:064x}", i * 7);
        let mut events = vec![RegistryEvent::FileIngested(FileIngested {
            blake3: blake3.clone(),
            sha256: sha256.clone(),
            size: i,
            media_type: (i % 2 == 0).then(|| "text/plain".to_owned()),
        })];
        if i % 3 == 0 {
            let package_id = uuid::Uuid::now_v7();
            packages.push((package_id, i));
            events.push(RegistryEvent::PackageCreated {
                package_id,
                payload: PackageCreated {
                    name: format!("team/p{}", i % 4),
                    version: format!("{i}.0"),
                    files: vec![PackageFile { path: "f".into(), blake3, sha256, size: i, media_type: None }],
                    metadata: artifactstore_cbor::Value::Map(vec![(
                        artifactstore_cbor::Value::Text("i".into()),
                        artifactstore_cbor::Value::Integer(i.into()),
                    )]),
                },
            });
            if i % 2 == 0 {
                events.push(RegistryEvent::Retention {
                    kind: RetentionKind::HoldSet,
                    payload: RetentionChange {
                        package_id: package_id.to_string(),
                        until: None,
                        reason: Some("audit".into()),
                        ..RetentionChange::default()
                    },
                });
                events.push(RegistryEvent::Retention {
                    kind: RetentionKind::Extended,
                    payload: RetentionChange {
                        package_id: package_id.to_string(),
                        until: Some("2999-01-01T00:00:00Z".into()),
                        reason: None,
                        ..RetentionChange::default()
                    },
                });
            }
        }
        if i % 9 == 5 {
            if let Some((package_id, n)) = packages.iter().find(|(_, n)| n % 2 == 1).copied() {
                packages.retain(|(id, _)| *id != package_id);
                events.push(RegistryEvent::PackageDeleted {
                    package_id,
                    payload: PackageDeleted {
                        name: format!("team/p{}", n % 4),
                        version: format!("{n}.0"),
                        reason: None,
                    },
                });
            }
        }
        for event in events {
            instance
                .log
                .transact(move |wtx| Box::pin(async move { record(wtx, "tester", &event).await.map(drop) }))
                .await
                .unwrap();
        }
    }
}

async fn views(dir: &Path) -> artifactstore_views::ViewsDump {
    let app = open(dir).await;
    let mut tx = app.instance.db.begin_read().await.unwrap();
    let dump = artifactstore_views::dump(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    app.stop().await;
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_a_snapshot_equals_replay_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path()).await;
    // More blobs and packages than one multi-row INSERT takes, so loading the snapshot writes several statements
    // for each of those tables.
    workload(&app.instance, 1, 1000).await;
    app.stop().await;
    let text = run(dir.path(), &["snapshot"]).await;
    assert!(text.contains("snapshot of"), "{text}");

    let app = open(dir.path()).await;
    workload(&app.instance, 1000, 1080).await;
    app.stop().await;
    let live = views(dir.path()).await;
    assert!(live.rows() > 1600, "{}", live.rows());

    let text = run(dir.path(), &["replay", "--from-snapshot"]).await;
    assert!(text.contains("loaded snapshot"), "{text}");
    let from_snapshot = views(dir.path()).await;
    let text = run(dir.path(), &["replay"]).await;
    assert!(text.contains("the views are rebuilt"), "{text}");
    let from_zero = views(dir.path()).await;
    assert_eq!(artifactstore_views::diff(&from_zero, &from_snapshot), Vec::new());
    assert_eq!(from_zero, live);

    // A snapshot from another log is skipped, and replay falls back to the first event.
    let other = tempfile::tempdir().unwrap();
    let app = open(other.path()).await;
    workload(&app.instance, 1, 5).await;
    app.stop().await;
    std::fs::create_dir_all(other.path().join("data/blobs/snapshots")).unwrap();
    for entry in std::fs::read_dir(dir.path().join("data/blobs/snapshots")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), other.path().join("data/blobs/snapshots").join(entry.file_name())).unwrap();
    }
    let text = run(other.path(), &["replay", "--from-snapshot"]).await;
    assert!(text.contains("skipping snapshot") && text.contains("replaying from the start"), "{text}");
}
