//! The read API (`queries`) on both backends: blobs by either digest, versions with their files and retention, the
//! paginated package list, a version's file by path, and the reads of `verify --blobs`.

use artifactstore_cbor::Value;
use artifactstore_digest::Digest;
use artifactstore_eventlog::{EventLog, LogOptions};
use artifactstore_testkit::{TestDb, BACKENDS};
use artifactstore_views::queries::{self, FileState, PackagePage};
use artifactstore_views::vocab::{
    FileIngested, FileRemoved, PackageCreated, PackageFile, RetentionChange, RetentionKind,
};
use artifactstore_views::{record, RegistryEvent};
use uuid::Uuid;

/// The digests of blob `n`: a real BLAKE3 and a made-up but well-formed SHA-256.
fn digests(n: u8) -> (String, String) {
    let hex = blake3::hash(&[n]).to_hex();
    (format!("blake3:{hex}"), format!("sha256:{}", blake3::hash(&[n, n]).to_hex()))
}

fn ingest(n: u8) -> RegistryEvent {
    let (blake3, sha256) = digests(n);
    RegistryEvent::FileIngested(FileIngested {
        blake3,
        sha256,
        size: u64::from(n) * 10,
        media_type: n.is_multiple_of(2).then(|| "text/plain".to_owned()),
    })
}

fn publish(package_id: Uuid, name: &str, version: &str, files: &[u8]) -> RegistryEvent {
    let files = files
        .iter()
        .map(|&n| {
            let (blake3, sha256) = digests(n);
            PackageFile { path: format!("bin/f{n}"), blake3, sha256, size: u64::from(n) * 10, media_type: None }
        })
        .collect();
    RegistryEvent::PackageCreated {
        package_id,
        payload: PackageCreated {
            name: name.to_owned(),
            version: version.to_owned(),
            files,
            metadata: Value::Map(vec![(Value::Text("k".into()), Value::Text(version.into()))]),
        },
    }
}

async fn write(log: &EventLog, events: Vec<RegistryEvent>) {
    log.transact(move |wtx| {
        Box::pin(async move {
            for event in &events {
                record(wtx, "tester", event).await?;
            }
            Ok::<_, artifactstore_views::Error>(())
        })
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_blob_is_found_by_either_digest() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        write(&log, vec![ingest(1), ingest(2)]).await;
        let (blake3, sha256) = digests(2);
        let mut conn = test.db.acquire().await.unwrap();
        let by_blake3 = queries::blob(&mut conn, &blake3.parse().unwrap()).await.unwrap().expect("by BLAKE3");
        let by_sha256 = queries::blob(&mut conn, &sha256.parse().unwrap()).await.unwrap().expect("by SHA-256");
        assert_eq!(by_blake3, by_sha256, "{backend:?}");
        assert_eq!((by_blake3.sha256.as_str(), by_blake3.size), (sha256.as_str(), 20));
        assert_eq!(by_blake3.media_type.as_deref(), Some("text/plain"));
        assert_eq!(by_blake3.ingested_sequence, 2);
        let (unknown, _) = digests(3);
        assert_eq!(queries::blob(&mut conn, &unknown.parse().unwrap()).await.unwrap(), None);

        assert_eq!(queries::file_state(&mut conn, &blake3).await.unwrap(), FileState::Live);
        assert_eq!(queries::file_state(&mut conn, &unknown).await.unwrap(), FileState::Unknown);

        // A publish resolves a mix of digests, in order, inside its transaction.
        let asked: Vec<Digest> =
            [digests(1).1, unknown.clone(), blake3.clone(), digests(1).1].iter().map(|d| d.parse().unwrap()).collect();
        let mut tx = test.db.begin_write().await.unwrap();
        let resolved = queries::resolve(&mut tx, &asked).await.unwrap();
        tx.rollback().await.unwrap();
        let names: Vec<Option<&str>> = resolved.iter().map(|r| r.as_ref().map(|r| r.blake3.as_str())).collect();
        assert_eq!(names, [Some(digests(1).0.as_str()), None, Some(blake3.as_str()), Some(digests(1).0.as_str())]);
    }
}

#[tokio::test]
async fn a_version_comes_with_its_files_and_retention() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        write(&log, vec![ingest(1), ingest(2), publish(first, "team/app", "1.0", &[2, 1])]).await;
        write(&log, vec![publish(second, "team/app", "2.0", &[1])]).await;
        let hold = RegistryEvent::Retention {
            kind: RetentionKind::HoldSet,
            payload: RetentionChange {
                package_id: first.to_string(),
                reason: Some("audit".into()),
                ..RetentionChange::default()
            },
        };
        write(&log, vec![hold]).await;

        let mut tx = test.db.begin_read().await.unwrap();
        let (version, files) =
            queries::version_with_files(&mut tx, "team/app", "1.0").await.unwrap().expect("the version");
        assert_eq!(version.package.package_id, first, "{backend:?}");
        assert_eq!((version.package.created_sequence, version.package.sequence), (3, 3));
        assert_eq!(version.package.created_by, "tester");
        assert_eq!(artifactstore_cbor::decode_value(&version.package.metadata).unwrap().as_map().unwrap().len(), 1);
        assert_eq!(version.retention.package_id, first);
        assert!(version.retention.hold && !version.retention.expired && version.retention.until.is_none());
        assert_eq!((version.retention.reason.as_deref(), version.retention.sequence), (Some("audit"), 5));
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["bin/f1", "bin/f2"], "by path");
        assert_eq!(files[1].blake3, digests(2).0);
        assert_eq!(queries::version(&mut tx, "team/app", "3.0").await.unwrap(), None);
        assert_eq!(queries::version_with_files(&mut tx, "team/other", "1.0").await.unwrap(), None);

        let versions = queries::versions(&mut tx, "team/app").await.unwrap();
        let listed: Vec<(&str, bool)> =
            versions.iter().map(|v| (v.package.version.as_str(), v.retention.hold)).collect();
        assert_eq!(listed, [("1.0", true), ("2.0", false)], "oldest first");
        assert!(queries::versions(&mut tx, "team").await.unwrap().is_empty());

        let file = queries::package_file(&mut tx, "team/app", "1.0", "bin/f2").await.unwrap().expect("the file");
        assert_eq!((file.package_id, file.size, file.sha256.as_str()), (first, 20, digests(2).1.as_str()));
        assert_eq!(queries::package_file(&mut tx, "team/app", "2.0", "bin/f2").await.unwrap(), None);
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn the_package_list_comes_a_page_at_a_time() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        let mut events = vec![ingest(1)];
        for name in ["a/one", "a/two", "b/three", "a/four", "a/five"] {
            events.push(publish(Uuid::now_v7(), name, "1", &[1]));
        }
        events.push(publish(Uuid::now_v7(), "a/two", "2", &[1]));
        write(&log, events).await;

        let mut conn = test.db.acquire().await.unwrap();
        let names = |page: &PackagePage| page.packages.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        let first = queries::list_packages(&mut conn, "a/", "", 2).await.unwrap();
        assert_eq!(names(&first), ["a/five", "a/four"], "{backend:?}");
        assert_eq!(first.next_cursor.as_deref(), Some("a/four"));
        let second = queries::list_packages(&mut conn, "a/", "a/four", 2).await.unwrap();
        assert_eq!(names(&second), ["a/one", "a/two"]);
        assert_eq!(second.next_cursor, None, "nothing after a/two starts with a/");
        let two = &second.packages[1];
        assert_eq!((two.versions, two.latest_sequence), (2, 7));
        let all = queries::list_packages(&mut conn, "", "", 100).await.unwrap();
        assert_eq!(names(&all), ["a/five", "a/four", "a/one", "a/two", "b/three"]);
        assert_eq!(all.next_cursor, None);
        assert!(queries::list_packages(&mut conn, "c", "", 10).await.unwrap().packages.is_empty());
    }
}

#[tokio::test]
async fn verify_blobs_reads_every_blob_and_the_ones_never_ingested() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        write(&log, vec![ingest(3), ingest(1), publish(Uuid::now_v7(), "p", "1", &[1, 3])]).await;
        let mut conn = test.db.acquire().await.unwrap();
        let mut expected = vec![digests(1).0, digests(3).0];
        expected.sort();
        let all: Vec<String> = queries::all_blobs(&mut conn).await.unwrap().into_iter().map(|f| f.blake3).collect();
        assert_eq!(all, expected, "{backend:?}: by BLAKE3 digest");
        assert!(queries::missing_blobs(&mut conn).await.unwrap().is_empty());
        artifactstore_db::execute!(&mut conn, "DELETE FROM artifact_files WHERE blake3 = $1", digests(3).0).unwrap();
        assert_eq!(queries::missing_blobs(&mut conn).await.unwrap(), [digests(3).0]);
    }
}

/// The subquery a statement uses to learn in its own round trip what the views hold of a blob: live, removed by
/// collection, or never ingested.
#[tokio::test]
async fn file_state_sql_tells_live_removed_and_unknown_apart() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        write(&log, vec![ingest(4), ingest(5)]).await;
        let (blake3, sha256) = digests(5);
        let removed = RegistryEvent::FileRemoved(FileRemoved { blake3, sha256, size: 50, reason: "test".into() });
        write(&log, vec![removed]).await;
        let mut conn = test.db.acquire().await.unwrap();
        let sql = concat!("SELECT $1, ", artifactstore_views::file_state_sql!(2));
        for (n, want) in [(4, FileState::Live), (5, FileState::Removed), (6, FileState::Unknown)] {
            let (seven, state): (i64, i64) =
                artifactstore_db::fetch_one!(&mut conn, (i64, i64), sql, 7i64, digests(n).0).unwrap();
            assert_eq!((seven, FileState::from_sql(state)), (7, want), "{backend:?} {n}");
            assert_eq!(queries::file_state(&mut conn, &digests(n).0).await.unwrap(), want);
        }
        // A removal of a referenced blob, or of one removed already, is refused and changes nothing.
        let package_id = Uuid::now_v7();
        write(&log, vec![publish(package_id, "keep/me", "1", &[4])]).await;
        for n in [4u8, 5] {
            let (blake3, sha256) = digests(n);
            let again = RegistryEvent::FileRemoved(FileRemoved { blake3, sha256, size: 1, reason: "t".into() });
            let refused = log
                .transact(move |wtx| {
                    Box::pin(async move { artifactstore_views::record_all(wtx, "t", &[again]).await.map(drop) })
                })
                .await;
            assert!(refused.is_err(), "{backend:?} {n}: {refused:?}");
        }
        assert_eq!(queries::file_state(&mut conn, &digests(4).0).await.unwrap(), FileState::Live);
        // Removed blobs are absent to a publish's resolve, and to the list of blobs to verify.
        let resolved = queries::resolve(&mut conn, &[digests(5).0.parse().unwrap()]).await.unwrap();
        assert_eq!(resolved, vec![None], "{backend:?}");
        let all: Vec<String> = queries::all_blobs(&mut conn).await.unwrap().into_iter().map(|f| f.blake3).collect();
        assert_eq!(all, vec![digests(4).0], "{backend:?}");
    }
}
