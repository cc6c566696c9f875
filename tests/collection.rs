//! Collection over real HTTP, on SQLite with a filesystem store and on PostgreSQL with an S3 store: blobs no live
//! version names are removed through the log and then their bytes; shared blobs stay; removed blobs answer `410`
//! and come back when uploaded again; the grace time protects fresh uploads; a publish racing a collection never
//! leaves a version whose blob is gone; one run at a time per database.

use std::collections::BTreeSet;
use std::time::Duration;

use artifactstore_db::Backend;
use artifactstore_digest::DualDigest;
use artifactstore_tests::{TestApp, SETUPS};
use serde_json::{json, Value};

/// An app whose collection has no grace time, so a run removes what it frees.
async fn no_grace(backend: Backend, store: artifactstore_tests::Store) -> Option<TestApp> {
    TestApp::builder().backend(backend).store(store).config(|c| c.gc_grace = Duration::ZERO).start().await
}

fn hex(digest: &Value) -> String {
    digest.as_str().unwrap().trim_start_matches("blake3:").to_owned()
}

async fn stored(app: &TestApp, digest: &Value) -> Option<u64> {
    app.instance.store.size_of(&hex(digest)).await.unwrap()
}

#[tokio::test]
async fn collection_removes_what_no_live_version_names_and_explains_it() {
    for (backend, kind) in SETUPS {
        let Some(app) = no_grace(backend, kind).await else { continue };
        let [shared, old, kept, orphan] =
            [&b"shared"[..], b"only the old version", b"only the new one", b"never named"].map(|bytes| bytes.to_vec());
        let mut digests = Vec::new();
        for bytes in [&shared, &old, &kept, &orphan] {
            let reply = app.upload_blob(bytes).await;
            assert_eq!(reply.status, 201, "{}", reply.text());
            digests.push(reply.json()["blake3"].clone());
        }
        let [shared_d, old_d, kept_d, orphan_d] = [0, 1, 2, 3].map(|i| digests[i].clone());
        let files = |a: &Value, b: &Value| json!({"files": [{"path": "a", "digest": a}, {"path": "b", "digest": b}]});
        assert_eq!(app.publish("app/web", "1", &files(&shared_d, &old_d)).await.status, 201);
        assert_eq!(app.publish("app/web", "2", &files(&shared_d, &kept_d)).await.status, 201);
        assert_eq!(app.put_json("/v1/policies/web", &json!({"prefix": "app/", "keep_last": 1})).await.status, 201);
        let head = app.head_now().await;

        let mut removed =
            vec![json!({"digest": old_d, "size": old.len()}), json!({"digest": orphan_d, "size": orphan.len()})];
        removed.sort_by_key(|r| r["digest"].as_str().unwrap().to_owned());
        let expired = json!([{"name": "app/web", "version": "1", "policy": "web", "rule": "not among the 1 newest"}]);
        let bytes = old.len() + orphan.len();
        let dry = app.post("/v1/gc?dry_run=true", Vec::new()).await;
        assert_eq!(dry.status, 200, "{}", dry.text());
        let want = json!({"dry_run": true, "expired": expired, "removed": removed, "bytes": bytes});
        assert_eq!(dry.json(), want, "{backend:?}");
        assert_eq!(app.head_now().await, head, "{backend:?}: a dry run commits nothing");
        assert_eq!(stored(&app, &old_d).await, Some(old.len() as u64));

        let mut real = app.post("/v1/gc", Vec::new()).await.json();
        assert_eq!(real["dry_run"], false);
        real["dry_run"] = json!(true);
        assert_eq!(real, want, "{backend:?}: the real run's report is the dry run's");

        let events = app.get_json(&format!("/v1/events?since={head}")).await["events"].clone();
        let events = events.as_array().unwrap();
        let types: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            ["v1.retention.expired", "v1.package.deleted", "v1.file.removed", "v1.file.removed", "v1.system.gc"],
            "{backend:?}"
        );
        let removal = events.iter().find(|e| e["payload"]["blake3"] == old_d).expect("the old blob's removal");
        assert_eq!(removal["payload"]["size"], old.len());
        assert!(removal["payload"]["sha256"].as_str().unwrap().starts_with("sha256:"));
        assert!(removal["payload"]["reason"].as_str().unwrap().starts_with("unreferenced since "), "{removal}");
        assert_eq!(events[4]["payload"], json!({"expired": 1, "removed": 2, "bytes": bytes}));

        // Removed: 410 with the removal's sequence, bytes gone; the shared and the kept blob stay.
        let gone = app.get(&format!("/v1/blobs/{}", old_d.as_str().unwrap())).await.problem(410, "blob_removed");
        assert_eq!(gone["sequence"], removal["sequence"], "{backend:?}");
        assert_eq!(app.head(&format!("/v1/blobs/{}", old_d.as_str().unwrap())).await.status, 410);
        let sha256 = removal["payload"]["sha256"].as_str().unwrap();
        app.get(&format!("/v1/blobs/{sha256}")).await.problem(410, "blob_removed");
        assert_eq!(stored(&app, &old_d).await, None, "{backend:?}: the bytes are deleted");
        assert_eq!(stored(&app, &orphan_d).await, None);
        for live in [&shared_d, &kept_d] {
            assert_eq!(app.get(&format!("/v1/blobs/{}", live.as_str().unwrap())).await.status, 200, "{backend:?}");
        }

        // A publish naming a removed blob is refused; uploading the bytes again brings it back.
        app.publish("app/web", "3", &files(&shared_d, &old_d)).await.problem(422, "missing_blobs");
        let again = app.upload_blob(&old).await;
        assert_eq!(again.status, 201, "{}", again.text());
        assert!(again.json()["sequence"].as_u64().unwrap() > removal["sequence"].as_u64().unwrap());
        let back = app.get(&format!("/v1/blobs/{}", old_d.as_str().unwrap())).await;
        assert_eq!((back.status, back.body.as_slice()), (200, old.as_slice()), "{backend:?}");
        assert_eq!(app.publish("app/web", "3", &files(&shared_d, &old_d)).await.status, 201);

        // Its history tells the whole story, in order.
        let file_id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, old_d.as_str().unwrap().as_bytes());
        let history =
            app.get_json(&format!("/v1/events?since=0&subject_kind=file&subject_id={file_id}")).await["events"].clone();
        let story: Vec<&str> = history.as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
        assert_eq!(story, ["v1.file.ingested", "v1.file.removed", "v1.file.ingested"], "{backend:?}");

        // Replay gives the same views; nothing is named and missing.
        let differences = artifactstore_views::verify(&app.log, |_, _| {}).await.unwrap();
        assert!(differences.is_empty(), "{backend:?}: {differences:?}");
        let mut conn = app.instance.db.acquire().await.unwrap();
        assert!(artifactstore_views::queries::missing_blobs(&mut conn).await.unwrap().is_empty());
        for blob in artifactstore_views::queries::all_blobs(&mut conn).await.unwrap() {
            let hex = blob.blake3.trim_start_matches("blake3:");
            assert_eq!(app.instance.store.size_of(hex).await.unwrap(), Some(blob.size as u64), "{backend:?}");
        }
        drop(conn);

        // The new version 3 expires version 2 and frees the kept blob; the orphan is not removed twice.
        let last = app.post("/v1/gc", Vec::new()).await.json();
        assert_eq!(last["expired"][0]["version"], "2", "{backend:?}");
        assert_eq!(last["removed"], json!([{"digest": kept_d, "size": kept.len()}]), "{backend:?}");
        let idle = app.head_now().await;
        assert_eq!(app.post("/v1/gc", Vec::new()).await.json()["removed"], json!([]));
        assert_eq!(app.head_now().await, idle, "{backend:?}: a run with nothing to do commits nothing");

        let metrics = app.get("/metrics").await.text();
        assert!(metrics.contains("artifactstore_gc_blobs_removed_total 3\n"), "{metrics}");
        let reclaimed = old.len() + orphan.len() + kept.len();
        assert!(metrics.contains(&format!("artifactstore_gc_bytes_reclaimed_total {reclaimed}\n")), "{metrics}");
    }
}

#[tokio::test]
async fn the_grace_time_keeps_fresh_blobs() {
    let grace = Duration::from_millis(1500);
    let Some(app) = TestApp::builder().config(move |c| c.gc_grace = grace).start().await else { return };
    let blob = app.upload_blob(b"uploaded, not yet published").await.json();
    let run = app.post("/v1/gc", Vec::new()).await.json();
    assert_eq!(run["removed"], json!([]), "a blob within the grace time stays");
    let manifest = json!({"files": [{"path": "f", "digest": blob["blake3"]}]});
    assert_eq!(app.publish("late/app", "1", &manifest).await.status, 201, "upload then publish is safe");
    assert_eq!(app.delete("/v1/packages/late/app/versions/1").await.status, 200);
    // The grace time counts from the last reference's end, not from the upload.
    assert_eq!(app.post("/v1/gc", Vec::new()).await.json()["removed"], json!([]));
    tokio::time::sleep(grace + Duration::from_millis(200)).await;
    let run = app.post("/v1/gc", Vec::new()).await.json();
    assert_eq!(run["removed"][0]["digest"], blob["blake3"]);
}

/// Publishes racing collections of the blob they name: whichever commits first wins, and a `201` publish never
/// leaves a version whose blob is gone. On PostgreSQL the publish and the collection run on two instances.
#[tokio::test]
async fn a_publish_and_a_collection_never_both_win() {
    for (backend, kind) in SETUPS {
        let Some(collector) = no_grace(backend, kind).await else { continue };
        let publisher = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                TestApp::builder()
                    .same_database_as(&collector)
                    .config(|c| c.gc_grace = Duration::ZERO)
                    .start()
                    .await
                    .unwrap(),
            ),
        };
        let publisher = publisher.as_ref().unwrap_or(&collector);
        let (mut published, mut collected) = (0, 0);
        for round in 0..30u32 {
            let bytes = format!("{backend:?} round {round}").into_bytes();
            let digest = publisher.upload_blob(&bytes).await.json()["blake3"].clone();
            let manifest = json!({"files": [{"path": "f", "digest": digest}]});
            let version = round.to_string();
            // Stagger the two by a varying fraction of a millisecond or a few, so each gets to go first.
            let pause = Duration::from_micros(u64::from(round % 10) * 400);
            let (publish_pause, run_pause) =
                if round % 2 == 0 { (Duration::ZERO, pause) } else { (pause, Duration::ZERO) };
            let (publish, run) = tokio::join!(
                async {
                    tokio::time::sleep(publish_pause).await;
                    publisher.publish("race/app", &version, &manifest).await
                },
                async {
                    tokio::time::sleep(run_pause).await;
                    collector.post("/v1/gc", Vec::new()).await
                }
            );
            assert_eq!(run.status, 200, "{}", run.text());
            let removed = run.json()["removed"].as_array().unwrap().iter().any(|r| r["digest"] == digest);
            let fetched = publisher.get(&format!("/v1/blobs/{}", digest.as_str().unwrap())).await;
            match publish.status {
                201 => {
                    published += 1;
                    assert!(!removed, "{backend:?} round {round}: published, yet collected");
                    assert_eq!((fetched.status, fetched.body), (200, bytes), "{backend:?} round {round}");
                    let path = format!("/v1/packages/race/app/versions/{version}/files/f");
                    assert_eq!(publisher.get(&path).await.status, 200);
                }
                422 => {
                    collected += 1;
                    assert!(removed, "{backend:?} round {round}: refused, yet not collected");
                    assert_eq!(fetched.status, 410);
                }
                other => panic!("{backend:?} round {round}: publish answered {other}: {}", publish.text()),
            }
        }
        assert_eq!(published + collected, 30);
        eprintln!("{backend:?}: {published} publishes won, {collected} collections won");
        let differences = artifactstore_views::verify(&collector.log, |_, _| {}).await.unwrap();
        assert!(differences.is_empty(), "{backend:?}: {differences:?}");
    }
}

/// Two instances on one PostgreSQL database: a run holds the database's lifecycle lock, so another instance's
/// run answers `409 gc_running` meanwhile; runs fired at once on both remove each blob once.
#[tokio::test]
async fn one_run_at_a_time_across_instances() {
    let Some(a) = no_grace(Backend::Postgres, artifactstore_tests::Store::File).await else { return };
    let b = TestApp::builder().same_database_as(&a).config(|c| c.gc_grace = Duration::ZERO).start().await.unwrap();
    // Held by someone else (here: the test, with the lock's own key): both instances refuse to run.
    let test_db = a.test_db().unwrap();
    let mut holder = test_db.db.begin_read().await.unwrap();
    artifactstore_db::execute!(&mut holder, "SELECT pg_advisory_xact_lock(1734541313, hashtext(current_schema()))")
        .unwrap();
    a.post("/v1/gc", Vec::new()).await.problem(409, "gc_running");
    b.post("/v1/gc?dry_run=true", Vec::new()).await.problem(409, "gc_running");
    holder.rollback().await.unwrap();
    assert_eq!(a.post("/v1/gc", Vec::new()).await.status, 200);

    let mut blobs = BTreeSet::new();
    for n in 0..200u32 {
        let bytes = format!("garbage {n}").into_bytes();
        blobs.insert(DualDigest::of(&bytes).blake3.to_string());
        assert_eq!(a.upload_blob(&bytes).await.status, 201);
    }
    let (one, other) = tokio::join!(a.post("/v1/gc", Vec::new()), b.post("/v1/gc", Vec::new()));
    let mut removed = Vec::new();
    for reply in [&one, &other] {
        match reply.status {
            200 => removed.extend(reply.json()["removed"].as_array().unwrap().iter().map(|r| r["digest"].clone())),
            _ => {
                reply.problem(409, "gc_running");
            }
        }
    }
    // Whatever one run left, a last run takes.
    let last = a.post("/v1/gc", Vec::new()).await.json();
    removed.extend(last["removed"].as_array().unwrap().iter().map(|r| r["digest"].clone()));
    let removed: Vec<String> = removed.iter().map(|d| d.as_str().unwrap().to_owned()).collect();
    assert_eq!(removed.len(), blobs.len(), "each blob removed once");
    assert_eq!(removed.into_iter().collect::<BTreeSet<_>>(), blobs);
    let events = a.get_json("/v1/events?since=0&type=v1.file.removed&limit=1000").await["events"].clone();
    assert_eq!(events.as_array().unwrap().len(), blobs.len(), "one removal event per blob");
}

/// A removal whose byte deletion did not happen (a crash between the two) is finished by the next run; an upload
/// of the same bytes before that calls the deletion off.
#[tokio::test]
async fn deletions_a_crash_interrupted_are_finished_or_called_off() {
    for (backend, kind) in SETUPS {
        let Some(app) = no_grace(backend, kind).await else { continue };
        let (first, second) = (b"interrupted deletion".to_vec(), b"ingested again before the next run".to_vec());
        let mut keys = Vec::new();
        for bytes in [&first, &second] {
            keys.push(app.upload_blob(bytes).await.json()["blake3"].clone());
        }
        assert_eq!(app.post("/v1/gc", Vec::new()).await.json()["removed"].as_array().unwrap().len(), 2);
        // What a kill between the removal's commit and the deletion leaves: the bytes, and their pending row.
        for (key, bytes) in keys.iter().zip([&first, &second]) {
            let relative = artifactstore_blobstore::BlobStore::blob_key(&hex(key));
            app.instance.store.put_object(&relative, bytes.to_vec()).await.unwrap();
            let mut conn = app.instance.db.acquire().await.unwrap();
            let removal: (i64,) = artifactstore_db::fetch_one!(
                &mut conn,
                (i64,),
                "SELECT removed_sequence FROM artifact_files WHERE blake3 = $1",
                key.as_str().unwrap()
            )
            .unwrap();
            artifactstore_db::execute!(
                &mut conn,
                "INSERT INTO blob_deletions (blake3, sequence) VALUES ($1, $2)",
                key.as_str().unwrap(),
                removal.0
            )
            .unwrap();
        }
        assert_eq!(app.rows("blob_deletions").await, 2);
        // The second is uploaded again: a new ingestion, and its pending deletion called off.
        assert_eq!(app.upload_blob(&second).await.status, 201);
        assert_eq!(app.rows("blob_deletions").await, 1, "{backend:?}");
        let manifest = json!({"files": [{"path": "f", "digest": keys[1]}]});
        assert_eq!(app.publish("keep/it", "1", &manifest).await.status, 201);
        let head = app.head_now().await;
        let run = app.post("/v1/gc", Vec::new()).await.json();
        assert_eq!(run["removed"].as_array().unwrap().len(), 0, "{backend:?}: nothing new is removed");
        assert_eq!(app.head_now().await, head, "{backend:?}: finishing a deletion commits nothing");
        assert_eq!(app.rows("blob_deletions").await, 0);
        assert_eq!(stored(&app, &keys[0]).await, None, "{backend:?}: the interrupted deletion is finished");
        let back = app.get(&format!("/v1/blobs/{}", keys[1].as_str().unwrap())).await;
        assert_eq!((back.status, back.body), (200, second.clone()), "{backend:?}: the bytes ingested again stay");
        app.get(&format!("/v1/blobs/{}", keys[0].as_str().unwrap())).await.problem(410, "blob_removed");

        // A pending row left from a history the log no longer has (a restore rewound it) never deletes live bytes.
        let mut conn = app.instance.db.acquire().await.unwrap();
        artifactstore_db::execute!(
            &mut conn,
            "INSERT INTO blob_deletions (blake3, sequence) VALUES ($1, 1)",
            keys[1].as_str().unwrap()
        )
        .unwrap();
        drop(conn);
        assert_eq!(app.post("/v1/gc", Vec::new()).await.status, 200);
        assert_eq!(app.rows("blob_deletions").await, 0);
        assert_eq!(stored(&app, &keys[1]).await, Some(second.len() as u64), "{backend:?}: live bytes stay");
    }
}

/// A database migrated from before reference counts has its views marked stale by migration 0008; the next start
/// replays the log, so the counts are right before the first run.
#[tokio::test]
async fn a_start_after_the_migration_rebuilds_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = TestApp::builder().data_dir(&data).start().await.unwrap();
    let blob = app.upload_blob(b"counted after the upgrade").await.json();
    let manifest = json!({"files": [{"path": "a", "digest": blob["blake3"]}, {"path": "b", "digest": blob["blake3"]}]});
    assert_eq!(app.publish("up/grade", "1", &manifest).await.status, 201);
    let db = app.instance.db.clone();
    // What migration 0008 leaves on a database that had blobs: zero counts, views marked stale.
    let mut conn = db.acquire().await.unwrap();
    artifactstore_db::execute!(&mut conn, "UPDATE artifact_files SET refs = 0, idle_since_ms = 0").unwrap();
    let reason = "migration 0008: blob reference counts are rebuilt by replay";
    artifactstore_db::execute!(&mut conn, "UPDATE views_status SET stale = TRUE, reason = $1", reason).unwrap();
    drop(conn);
    app.stop().await;

    let app = TestApp::builder().data_dir(&data).start().await.unwrap();
    assert_eq!(app.get("/readyz").await.status, 200, "the start replayed the log");
    let mut conn = app.instance.db.acquire().await.unwrap();
    let rows =
        artifactstore_views::queries::files(&mut conn, &[blob["blake3"].as_str().unwrap().to_owned()]).await.unwrap();
    assert_eq!(rows[0].refs, 2, "one version names it twice");
    drop(conn);
    assert!(artifactstore_views::verify(&app.log, |_, _| {}).await.unwrap().is_empty());
}
