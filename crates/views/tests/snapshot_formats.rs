//! A snapshot of the format before retention policies (v1) fits only a log with no policy event up to its sequence.

use artifactstore_eventlog::{EventLog, LogOptions};
use artifactstore_testkit::{TestDb, BACKENDS};
use artifactstore_views::vocab::{FileIngested, PolicyChange, PolicyKind};
use artifactstore_views::{matches_log, record, take, RegistryEvent, Snapshot, SNAPSHOT_FORMAT};

async fn write(log: &EventLog, event: RegistryEvent) {
    log.transact(move |wtx| Box::pin(async move { record(wtx, "test", &event).await.map(drop) })).await.unwrap();
}

fn as_v1(snapshot: &Snapshot) -> Snapshot {
    let mut old = snapshot.clone();
    old.format = "artifactstore-views-snapshot-v1".to_owned();
    Snapshot::from_cbor(&old.to_cbor().unwrap()).expect("a v1 snapshot still reads")
}

#[tokio::test]
async fn a_v1_snapshot_fits_only_a_log_without_policies_up_to_it() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        let blob = FileIngested {
            blake3: format!("blake3:{}", "ab".repeat(32)),
            sha256: format!("sha256:{}", "cd".repeat(32)),
            size: 1,
            media_type: None,
        };
        write(&log, RegistryEvent::FileIngested(blob)).await;
        let before_policies = take(&log).await.unwrap();
        assert_eq!(before_policies.format, SNAPSHOT_FORMAT);
        assert!(matches_log(&log, &as_v1(&before_policies)).await.unwrap(), "{backend:?}: no policy yet");

        let policy = PolicyChange { name: "p".into(), prefix: "a/".into(), keep_last: Some(1), keep_days: None };
        write(&log, RegistryEvent::Policy { kind: PolicyKind::Set, payload: policy }).await;
        // A policy after the snapshot is replayed on top of it: the v1 snapshot still fits.
        assert!(matches_log(&log, &as_v1(&before_policies)).await.unwrap(), "{backend:?}: policy after it");
        let with_policy = take(&log).await.unwrap();
        assert!(matches_log(&log, &with_policy).await.unwrap());
        assert!(!matches_log(&log, &as_v1(&with_policy)).await.unwrap(), "{backend:?}: a v1 snapshot lacks it");
    }
}
