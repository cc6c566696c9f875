//! Replay writes in batches of thousands of rows: a log long enough to cross many batch boundaries, with changes to
//! rows still waiting in a batch and to rows written by an earlier one, rebuilds exactly the live views.

use artifactstore_cbor::Value;
use artifactstore_db::Backend;
use artifactstore_eventlog::{EventLog, LogOptions};
use artifactstore_testkit::TestDb;
use artifactstore_views::vocab::{
    FileIngested, PackageCreated, PackageDeleted, PackageFile, RetentionChange, RetentionKind, StorageChange,
    StorageKind,
};
use artifactstore_views::{dump, record, RegistryEvent};
use uuid::Uuid;

fn digest(n: u64) -> (String, String) {
    let hex = blake3::hash(&n.to_le_bytes()).to_hex();
    (format!("blake3:{hex}"), format!("sha256:{hex}"))
}

fn retention(package: Uuid, kind: RetentionKind, until: Option<&str>) -> RegistryEvent {
    RegistryEvent::Retention {
        kind,
        payload: RetentionChange {
            package_id: package.to_string(),
            until: until.map(str::to_owned),
            reason: Some(format!("{kind:?}")),
            ..RetentionChange::default()
        },
    }
}

/// About 14,000 events: blobs (some ingested twice), packages, and retention changes, deletions and storage moves
/// aimed both at the package just created and at packages from thousands of events before.
fn workload() -> Vec<RegistryEvent> {
    let mut events = Vec::new();
    let mut packages: Vec<(Uuid, String, String)> = Vec::new();
    for n in 0..10_000u64 {
        let (blake3, sha256) = digest(n);
        events.push(RegistryEvent::FileIngested(FileIngested {
            blake3: blake3.clone(),
            sha256: sha256.clone(),
            size: n,
            media_type: (n % 3 == 0).then(|| "application/gzip".to_owned()),
        }));
        if n % 997 == 5 {
            // The same blob again: the first ingestion stays its origin.
            let (blake3, sha256) = digest(n - 3);
            events.push(RegistryEvent::FileIngested(FileIngested { blake3, sha256, size: n - 3, media_type: None }));
        }
        if n % 4 == 3 {
            let package_id = Uuid::now_v7();
            let (name, version) = (format!("pkg-{}", n % 50), format!("1.{n}"));
            let files = (0..2)
                .map(|k| {
                    let (blake3, sha256) = digest(n - k);
                    PackageFile { path: format!("f{k}"), blake3, sha256, size: n - k, media_type: None }
                })
                .collect();
            events.push(RegistryEvent::PackageCreated {
                package_id,
                payload: PackageCreated {
                    name: name.clone(),
                    version: version.clone(),
                    files,
                    metadata: Value::Map(vec![(Value::Text("n".into()), Value::Integer(n.into()))]),
                },
            });
            packages.push((package_id, name, version));
            // A change to the package just made (still waiting in the batch during replay).
            if n % 8 == 3 {
                events.push(retention(package_id, RetentionKind::HoldSet, None));
            }
            // Changes to a package from long ago (written by an earlier batch).
            if packages.len() > 600 && n % 16 == 7 {
                let (old, _, _) = packages[packages.len() - 600];
                events.push(retention(old, RetentionKind::Extended, Some("2031-01-01T00:00:00Z")));
                events.push(retention(old, RetentionKind::HoldReleased, None));
            }
            if n % 40 == 11 {
                let (doomed, name, version) = packages.remove(packages.len() - 1);
                events.push(RegistryEvent::PackageDeleted {
                    package_id: doomed,
                    payload: PackageDeleted { name, version, reason: None },
                });
            }
            if packages.len() > 1000 && n % 200 == 19 {
                let (doomed, name, version) = packages.remove(packages.len() - 1000);
                events.push(RegistryEvent::PackageDeleted {
                    package_id: doomed,
                    payload: PackageDeleted { name, version, reason: Some("old".into()) },
                });
            }
        }
        if n % 500 == 250 {
            let (blake3, _) = digest(n);
            let placed =
                StorageChange { blake3: blake3.clone(), location: "hot".into(), tier: "ssd".into(), from: None };
            events.push(RegistryEvent::Storage { kind: StorageKind::Placed, payload: placed });
            let moved =
                StorageChange { blake3, location: "cold".into(), tier: "tape".into(), from: Some("hot".into()) };
            events.push(RegistryEvent::Storage { kind: StorageKind::Moved, payload: moved });
        }
    }
    events
}

async fn case(backend: Backend) {
    let Some(test) = TestDb::of(backend).await else { return };
    let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
    let events = workload();
    let total = events.len() as u64;
    for chunk in events.chunks(1_000) {
        let chunk = chunk.to_vec();
        log.transact(move |wtx| {
            Box::pin(async move {
                for event in &chunk {
                    record(wtx, "tester", event).await?;
                }
                Ok::<_, artifactstore_views::Error>(())
            })
        })
        .await
        .unwrap();
    }
    let live = {
        let mut tx = test.db.begin_read().await.unwrap();
        dump(&mut tx).await.unwrap()
    };
    assert!(live.files.len() >= 10_000 && live.packages.len() > 2_000, "the workload fills the views");
    assert!(live.retention.iter().any(|r| r.hold) && live.retention.iter().any(|r| r.until.is_some()));
    let stats = artifactstore_views::rebuild(&log, |_, _| {}).await.unwrap();
    assert_eq!(stats.events, total);
    let replayed = {
        let mut tx = test.db.begin_read().await.unwrap();
        dump(&mut tx).await.unwrap()
    };
    assert_eq!(artifactstore_views::diff(&live, &replayed), vec![]);
    assert!(artifactstore_views::verify(&log, |_, _| {}).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_replay_equals_live_views_on_sqlite() {
    case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_replay_equals_live_views_on_postgres() {
    case(Backend::Postgres).await;
}
