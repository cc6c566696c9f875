//! Replay equals the live views: random valid event streams, written concurrently through the live path,
//! then rebuilt from the log, on both backends; and both agree with a plain in-memory model (`model`).

mod model;

use std::collections::BTreeMap;

use artifactstore_db::Backend;
use artifactstore_eventlog::{EventLog, Filter, LogOptions};
use artifactstore_testkit::TestDb;
use artifactstore_views::{dump, file_subject_events, record, RegistryEvent};
use model::{blob, model_of, op, project, Lane, Op};
use proptest::prelude::*;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error(transparent)]
    Views(#[from] artifactstore_views::Error),
    #[error(transparent)]
    Log(#[from] artifactstore_eventlog::Error),
    #[error("abandoned on purpose")]
    Abandoned,
}

async fn run_case(backend: Backend, lanes: Vec<Vec<Op>>) -> Result<(), TestCaseError> {
    let Some(test) = TestDb::of(backend).await else { return Ok(()) };
    let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
    // Lanes touch disjoint names and blobs, so they commute; run concurrently, the committer groups their units.
    let mut tasks = Vec::new();
    for (id, ops) in lanes.into_iter().enumerate() {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut lane = Lane::new(id);
            let mut committed = Vec::new();
            for op in ops {
                if let Op::Abandon { seed } = op {
                    let ghost = RegistryEvent::FileIngested(blob(id + 1000, seed, false));
                    let result = log
                        .transact(move |wtx| {
                            Box::pin(async move {
                                record(wtx, "ghost", &ghost).await?;
                                Err::<(), TestError>(TestError::Abandoned)
                            })
                        })
                        .await;
                    assert!(matches!(result, Err(TestError::Abandoned)));
                    continue;
                }
                let Some(event) = lane.event_for(&op) else { continue };
                let recorded = event.clone();
                let appended = log
                    .transact(move |wtx| {
                        Box::pin(async move { Ok::<_, TestError>(record(wtx, "tester", &recorded).await?) })
                    })
                    .await
                    .unwrap();
                committed.push((appended.sequence, event));
            }
            committed
        }));
    }
    let mut committed = Vec::new();
    for task in tasks {
        committed.extend(task.await.unwrap());
    }
    committed.sort_by_key(|(seq, _)| *seq);
    let events: Vec<RegistryEvent> = committed.iter().map(|(_, e)| e.clone()).collect();
    let head = log.read_head().await.unwrap();
    prop_assert_eq!(head.sequence, committed.len() as u64, "abandoned units left nothing in the log");

    let mut tx = test.db.begin_read().await.unwrap();
    let live = dump(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    prop_assert_eq!(project(&live), model_of(&events), "the live views follow the model");
    prop_assert!(live.files.iter().all(|f| !f.blake3.is_empty()));

    // Each blob's history, read through its row, is what a scan of the whole log finds about its subject.
    for file in &live.files {
        let filter = Filter {
            subject_kind: Some("file".into()),
            subject_id: Some(artifactstore_views::vocab::file_id(&file.blake3)),
            ..Filter::default()
        };
        let scanned = log.read(0, head.sequence, 1_000, &filter).await.unwrap();
        let listed = file_subject_events(&log, 0, head.sequence, 1_000, &filter).await.unwrap();
        prop_assert_eq!(listed.as_ref(), Some(&scanned), "the history of {}", file.blake3);
        prop_assert!(!scanned.is_empty());
        // From the middle of its history, a page at a time, as a feed client reads it.
        let after = scanned[0].sequence;
        let page = file_subject_events(&log, after, head.sequence, 1, &filter).await.unwrap().unwrap();
        prop_assert_eq!(&page[..], &scanned[1..scanned.len().min(2)]);
    }

    let differences = artifactstore_views::verify(&log, |_, _| {}).await.unwrap();
    prop_assert!(differences.is_empty(), "verify found {:?}", differences);
    let stats = artifactstore_views::rebuild(&log, |_, _| {}).await.unwrap();
    prop_assert_eq!(stats.events, head.sequence);
    let mut tx = test.db.begin_read().await.unwrap();
    let replayed = dump(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    prop_assert_eq!(&replayed, &live, "replay(log) == live views");
    // A snapshot at the head loads back into the same views.
    let snapshot = artifactstore_views::take(&log).await.unwrap();
    let stats = artifactstore_views::rebuild_from(&log, &snapshot, |_, _| {}).await.unwrap();
    prop_assert_eq!(stats.events, 0);
    let mut tx = test.db.begin_read().await.unwrap();
    let restored = dump(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    prop_assert_eq!(&restored, &live, "load(snapshot) == live views");
    let chain = log.verify_chain(|_, _| {}).await.unwrap();
    prop_assert!(chain.is_ok(), "chain faults: {:?}", chain.faults);
    Ok(())
}

fn lanes() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 0..25), 1..5)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn replay_equals_live_views_on_sqlite(lanes in lanes()) {
        runtime().block_on(run_case(Backend::Sqlite, lanes))?;
    }

    #[test]
    fn replay_equals_live_views_on_postgres(lanes in lanes()) {
        runtime().block_on(run_case(Backend::Postgres, lanes))?;
    }
}

/// A view row changed behind the log's back is caught by `verify` and put right by `rebuild`.
#[tokio::test]
async fn verify_reports_drift_and_rebuild_repairs_it() {
    for backend in artifactstore_testkit::BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        let mut lane = Lane::default();
        for op in [Op::Ingest { seed: 1, media: true }, Op::Ingest { seed: 2, media: false }] {
            let event = lane.event_for(&op).unwrap();
            log.transact(move |wtx| Box::pin(async move { record(wtx, "t", &event).await.map(drop) })).await.unwrap();
        }
        let mut tx = test.db.begin_write().await.unwrap();
        artifactstore_db::execute!(&mut tx, "UPDATE artifact_files SET size = 999").unwrap();
        artifactstore_db::execute!(
            &mut tx,
            "INSERT INTO storage_locations (blake3, location, tier, sequence) VALUES ('blake3:x', 'nowhere', 'hot', 1)"
        )
        .unwrap();
        tx.commit().await.unwrap();
        let differences = artifactstore_views::verify(&log, |_, _| {}).await.unwrap();
        assert_eq!(differences.len(), 3, "{backend:?}: {differences:#?}");
        assert!(differences.iter().any(|d| d.table == "storage_locations" && d.key.contains("nowhere")));
        artifactstore_views::rebuild(&log, |_, _| {}).await.unwrap();
        assert!(artifactstore_views::verify(&log, |_, _| {}).await.unwrap().is_empty());
    }
}

/// Every index of the database, by name, with the text that defines it.
async fn indexes(db: &artifactstore_db::Database) -> Vec<(String, Option<String>)> {
    let mut tx = db.begin_read().await.unwrap();
    let sql = match db.backend() {
        Backend::Sqlite => "SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name",
        Backend::Postgres => {
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname"
        }
    };
    let rows = artifactstore_db::fetch_all!(&mut tx, (String, Option<String>), sql).unwrap();
    tx.rollback().await.unwrap();
    rows
}

/// A replay fills the views without their secondary indexes on SQLite: a rebuild, a verification and a rebuild
/// that fails all leave every index defined as the migrations defined it, and the rebuilt indexes answer lookups.
#[tokio::test]
async fn replay_leaves_the_views_indexes_as_they_were() {
    for backend in artifactstore_testkit::BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        // More blobs than a replay keeps waiting in memory, so the failed rebuild below writes rows before it fails.
        for chunk in (0..4_500u16).collect::<Vec<_>>().chunks(1_500) {
            let events: Vec<RegistryEvent> =
                chunk.iter().map(|&n| RegistryEvent::FileIngested(blob(0, n, n % 2 == 0))).collect();
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
        let before = indexes(&test.db).await;
        assert!(
            before.iter().any(|(name, _)| name == "artifact_files_by_sha256"),
            "{backend:?}: the migrations define the sha256 index: {before:?}"
        );

        artifactstore_views::rebuild(&log, |_, _| {}).await.unwrap();
        assert_eq!(indexes(&test.db).await, before, "{backend:?}: after a rebuild");
        assert!(artifactstore_views::verify(&log, |_, _| {}).await.unwrap().is_empty());
        assert_eq!(indexes(&test.db).await, before, "{backend:?}: after a verification");

        // A rebuilt index holds every row: a lookup by sha256 made to go through it finds each blob.
        let live = {
            let mut tx = test.db.begin_read().await.unwrap();
            dump(&mut tx).await.unwrap()
        };
        let lookup = match backend {
            // SQLite fails the statement if the named index does not exist or cannot serve it.
            Backend::Sqlite => {
                "SELECT blake3 FROM artifact_files INDEXED BY artifact_files_by_sha256 WHERE sha256 = $1"
            }
            Backend::Postgres => "SELECT blake3 FROM artifact_files WHERE sha256 = $1",
        };
        let mut tx = test.db.begin_read().await.unwrap();
        for file in &live.files {
            let found = artifactstore_db::fetch_all!(&mut tx, (String,), lookup, file.sha256.as_str()).unwrap();
            assert_eq!(found, vec![(file.blake3.clone(),)], "{backend:?}");
        }
        tx.rollback().await.unwrap();

        // An event whose payload does not fit its type stops the next rebuild halfway: nothing of it remains.
        let bad = artifactstore_eventlog::NewEvent {
            event_type: "v1.file.ingested".into(),
            subject_kind: artifactstore_eventlog::SubjectKind::File,
            subject_id: Some(Uuid::from_u128(7)),
            actor: "t".into(),
            payload: artifactstore_cbor::to_vec(&BTreeMap::from([("size", "not a number")])).unwrap(),
        };
        log.transact(move |wtx| Box::pin(async move { wtx.append(bad).map(drop) })).await.unwrap();
        assert!(artifactstore_views::rebuild(&log, |_, _| {}).await.is_err(), "{backend:?}");
        assert_eq!(indexes(&test.db).await, before, "{backend:?}: after a failed rebuild");
        let mut tx = test.db.begin_read().await.unwrap();
        assert_eq!(dump(&mut tx).await.unwrap(), live, "{backend:?}: a failed rebuild changes no view");
        tx.rollback().await.unwrap();
    }
}
