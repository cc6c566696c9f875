//! A blob's history through its row (ADR 0030): the feed's read of one file subject finds the blob by its subject
//! id through an index and reads only the events its row lists, on both backends.

use artifactstore_db::{execute, fetch_all, Backend};
use artifactstore_eventlog::{EventLog, Filter, LogOptions, TypeFilter};
use artifactstore_testkit::{TestDb, BACKENDS};
use artifactstore_views::vocab::{file_id, FileIngested, FileRemoved};
use artifactstore_views::{file_subject_events, mark_stale, record, RegistryEvent};

fn ingested(n: u32) -> FileIngested {
    FileIngested {
        blake3: format!("blake3:{:064x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15),
        sha256: format!("sha256:{:064x}", n),
        size: 1024,
        media_type: None,
    }
}

async fn commit(log: &EventLog, events: Vec<RegistryEvent>) {
    log.transact(move |wtx| {
        Box::pin(async move {
            for event in &events {
                record(wtx, "t", event).await?;
            }
            Ok::<_, artifactstore_views::Error>(())
        })
    })
    .await
    .unwrap();
}

/// The planner's account of the lookup the history read makes.
async fn lookup_plan(test: &TestDb, id: uuid::Uuid) -> String {
    let sql = "SELECT file_events FROM artifact_files WHERE file_id = $1";
    let mut conn = test.db.acquire().await.unwrap();
    match test.db.backend() {
        Backend::Sqlite => {
            let rows = fetch_all!(&mut conn, (i64, i64, i64, String), &format!("EXPLAIN QUERY PLAN {sql}"), id);
            rows.unwrap().into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
        Backend::Postgres => {
            let rows = fetch_all!(&mut conn, (String,), &format!("EXPLAIN {sql}"), id);
            rows.unwrap().into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
        }
    }
}

#[tokio::test]
async fn a_blob_history_is_read_through_its_row() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        // Many other blobs around the one followed, so a scan and a lookup differ.
        let others: Vec<RegistryEvent> = (1..3_000).map(|n| RegistryEvent::FileIngested(ingested(n))).collect();
        commit(&log, others).await;
        let followed = ingested(0);
        commit(&log, vec![RegistryEvent::FileIngested(followed.clone())]).await;
        let others: Vec<RegistryEvent> = (3_000..6_000).map(|n| RegistryEvent::FileIngested(ingested(n))).collect();
        commit(&log, others).await;
        let removed = FileRemoved {
            blake3: followed.blake3.clone(),
            sha256: followed.sha256.clone(),
            size: followed.size,
            reason: "unreferenced".into(),
        };
        commit(&log, vec![RegistryEvent::FileRemoved(removed)]).await;
        commit(&log, vec![RegistryEvent::FileIngested(followed.clone())]).await;
        let head = log.read_head().await.unwrap().sequence;
        assert_eq!(head, 6_002);

        let subject = Filter {
            subject_kind: Some("file".into()),
            subject_id: Some(file_id(&followed.blake3)),
            ..Filter::default()
        };
        let history = file_subject_events(&log, 0, head, 100, &subject).await.unwrap().unwrap();
        let sequences: Vec<u64> = history.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, vec![3_000, 6_001, 6_002], "{backend:?}");
        let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["v1.file.ingested", "v1.file.removed", "v1.file.ingested"], "{backend:?}");
        assert_eq!(history, log.read(0, head, 100, &subject).await.unwrap(), "{backend:?}: as the log's scan");

        // The range, the limit and a type filter hold as they do on the log.
        let page = file_subject_events(&log, 3_000, 6_001, 100, &subject).await.unwrap().unwrap();
        assert_eq!(page.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![6_001], "{backend:?}");
        let first = file_subject_events(&log, 0, head, 1, &subject).await.unwrap().unwrap();
        assert_eq!(first.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![3_000], "{backend:?}");
        let typed = Filter { event_type: Some(TypeFilter::Exact("v1.file.removed".into())), ..subject.clone() };
        let removals = file_subject_events(&log, 0, head, 100, &typed).await.unwrap().unwrap();
        assert_eq!(removals.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![6_001], "{backend:?}");
        // A subject nothing names has no history; other filters are the log's to answer.
        let unknown = Filter { subject_id: Some(uuid::Uuid::from_u128(7)), ..subject.clone() };
        assert_eq!(file_subject_events(&log, 0, head, 100, &unknown).await.unwrap(), Some(Vec::new()));
        let storage = Filter { subject_kind: Some("storage".into()), ..subject.clone() };
        assert_eq!(file_subject_events(&log, 0, head, 100, &storage).await.unwrap(), None);
        let kind_only = Filter { subject_id: None, ..subject.clone() };
        assert_eq!(file_subject_events(&log, 0, head, 100, &kind_only).await.unwrap(), None);

        // The lookup goes through the index on the subject id.
        if backend == Backend::Postgres {
            let mut conn = test.db.acquire().await.unwrap();
            execute!(&mut conn, "ANALYZE artifact_files").unwrap();
        }
        let plan = lookup_plan(&test, file_id(&followed.blake3)).await;
        assert!(plan.contains("artifact_files_by_file_id"), "{backend:?}: {plan}");

        // Stale views list nothing: the read falls back to the log.
        let mut tx = test.db.begin_write().await.unwrap();
        mark_stale(&mut tx, "test").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(file_subject_events(&log, 0, head, 100, &subject).await.unwrap(), None, "{backend:?}");
    }
}
