//! Snapshots of the formats before the blobs' histories (v1 to v4) are refused with a message that says why, so
//! `replay --from-snapshot` replays the whole log instead; the current format reads back.

use artifactstore_eventlog::{EventLog, LogOptions};
use artifactstore_testkit::{TestDb, BACKENDS};
use artifactstore_views::vocab::FileIngested;
use artifactstore_views::{matches_log, record, take, RegistryEvent, Snapshot, SNAPSHOT_FORMAT};

#[tokio::test]
async fn snapshots_of_older_formats_are_refused() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        let blob = FileIngested {
            blake3: format!("blake3:{}", "ab".repeat(32)),
            sha256: format!("sha256:{}", "cd".repeat(32)),
            size: 1,
            media_type: None,
        };
        let event = RegistryEvent::FileIngested(blob);
        log.transact(move |wtx| Box::pin(async move { record(wtx, "test", &event).await.map(drop) })).await.unwrap();
        let snapshot = take(&log).await.unwrap();
        assert_eq!(snapshot.format, SNAPSHOT_FORMAT);
        let read = Snapshot::from_cbor(&snapshot.to_cbor().unwrap()).unwrap();
        assert_eq!(read, snapshot);
        assert!(matches_log(&log, &read).await.unwrap());
        for older in (1..=4).map(|v| format!("artifactstore-views-snapshot-v{v}")) {
            let mut old = snapshot.clone();
            old.format = older;
            let refused = Snapshot::from_cbor(&old.to_cbor().unwrap()).unwrap_err().to_string();
            assert!(refused.contains("is older than these views"), "{backend:?}: {refused}");
        }
        // A v4 snapshot as v4 wrote it: blob rows without their histories, which do not decode as v5 rows.
        let mut v4 = artifactstore_cbor::decode_value(&snapshot.to_cbor().unwrap()).unwrap();
        strip_v5(&mut v4);
        let refused = Snapshot::from_cbor(&artifactstore_cbor::encode_value(&v4).unwrap()).unwrap_err().to_string();
        assert!(refused.contains("is older than these views"), "{backend:?}: {refused}");
        let mut unknown = snapshot.clone();
        unknown.format = "artifactstore-views-snapshot-v9".to_owned();
        let refused = Snapshot::from_cbor(&unknown.to_cbor().unwrap()).unwrap_err().to_string();
        assert!(refused.contains("unknown snapshot format"), "{refused}");
    }
}

/// Turns a v5 snapshot's value into what v4 wrote: its tag, and blob rows without the v5 column.
fn strip_v5(value: &mut artifactstore_cbor::Value) {
    use artifactstore_cbor::Value;
    if let Value::Map(entries) = value {
        entries.retain(|(k, _)| k.as_text() != Some("file_events"));
        for (key, inner) in entries.iter_mut() {
            if key.as_text() == Some("format") {
                *inner = Value::Text("artifactstore-views-snapshot-v4".into());
            } else {
                strip_v5(inner);
            }
        }
    } else if let Value::Array(items) = value {
        items.iter_mut().for_each(strip_v5);
    }
}
