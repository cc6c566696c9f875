//! Lifecycle runs over real HTTP, on SQLite with a filesystem store and on PostgreSQL with an S3 store: expiry by
//! the retention policies, holds winning, a dry run equal to the real run and committing nothing, the events that
//! explain each expiry, and replay equal to the live views afterwards.

use std::time::Duration;

use artifactstore::server::Background;
use artifactstore_tests::{TestApp, SETUPS};
use serde_json::json;

#[tokio::test]
async fn a_run_expires_what_the_policies_let_go_and_explains_it() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let blob = app.upload_blob(b"shared bytes").await.json();
        let manifest = json!({"files": [{"path": "a.bin", "digest": blob["blake3"]}]});
        for version in ["1.1", "1.2", "1.3", "1.4"] {
            assert_eq!(app.publish("app/web", version, &manifest).await.status, 201);
        }
        for version in ["1.0", "2.0"] {
            assert_eq!(app.publish("other/x", version, &manifest).await.status, 201);
        }
        let hold = app.put_json("/v1/packages/app/web/versions/1.1/retention", &json!({"hold": true})).await;
        assert_eq!(hold.status, 200, "{}", hold.text());
        assert_eq!(app.put_json("/v1/policies/web", &json!({"prefix": "app/", "keep_last": 2})).await.status, 201);
        let head = app.head_now().await;

        let expected =
            json!([{"name": "app/web", "version": "1.2", "policy": "web", "rule": "not among the 2 newest"}]);
        let dry = app.post("/v1/gc?dry_run=true", Vec::new()).await;
        assert_eq!(dry.status, 200, "{}", dry.text());
        assert_eq!(dry.json(), json!({"dry_run": true, "expired": expected, "removed": [], "bytes": 0}), "{backend:?}");
        assert_eq!(app.head_now().await, head, "{backend:?}: a dry run commits nothing");

        let real = app.post("/v1/gc", Vec::new()).await.json();
        assert_eq!(real, json!({"dry_run": false, "expired": expected, "removed": [], "bytes": 0}), "{backend:?}");
        assert_eq!(app.head_now().await, head + 3, "{backend:?}: expired, deleted, and the run's summary");
        assert_eq!(app.get("/v1/packages/app/web/versions/1.2").await.status, 404);
        for kept in ["1.1", "1.3", "1.4"] {
            assert_eq!(app.get(&format!("/v1/packages/app/web/versions/{kept}")).await.status, 200, "{kept}");
        }
        assert_eq!(app.get("/v1/packages/other/x/versions/1.0").await.status, 200, "no policy governs other/");

        let events = app.get_json(&format!("/v1/events?since={head}")).await["events"].clone();
        let types: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
        assert_eq!(types, ["v1.retention.expired", "v1.package.deleted", "v1.system.gc"], "{backend:?}");
        let why = &events[0]["payload"];
        assert_eq!((why["name"].clone(), why["version"].clone()), (json!("app/web"), json!("1.2")));
        assert_eq!((why["policy"].clone(), why["rule"].clone()), (json!("web"), json!("not among the 2 newest")));
        assert_eq!(events[1]["payload"]["reason"], "expired: web");
        assert_eq!(events[2]["payload"], json!({"expired": 1, "removed": 0, "bytes": 0}));

        // Nothing left to expire: a run commits nothing.
        let again = app.post("/v1/gc", Vec::new()).await.json();
        assert_eq!(again["expired"], json!([]));
        assert_eq!(app.head_now().await, head + 3, "{backend:?}: an idle run commits nothing");

        // Releasing the hold lets the oldest go too; replay rebuilds what the runs left.
        let release = app.put_json("/v1/packages/app/web/versions/1.1/retention", &json!({"hold": false})).await;
        assert_eq!(release.status, 200);
        let last = app.post("/v1/gc", Vec::new()).await.json();
        assert_eq!(last["expired"][0]["version"], "1.1", "{backend:?}");
        let differences = artifactstore_views::verify(&app.log, |_, _| {}).await.unwrap();
        assert!(differences.is_empty(), "{backend:?}: {differences:?}");

        app.post("/v1/gc?dry=1", Vec::new()).await.problem(400, "bad_request");

        // Three real runs, two expiries; the dry run is not counted.
        let metrics = app.get("/metrics").await.text();
        assert!(metrics.contains("artifactstore_gc_runs_total 3\n"), "{metrics}");
        assert!(metrics.contains("artifactstore_gc_versions_expired_total 2\n"), "{metrics}");
        assert!(metrics.contains("artifactstore_gc_last_run_timestamp_seconds "), "{metrics}");
    }
}

#[tokio::test]
async fn serve_runs_the_lifecycle_on_its_timer() {
    let background = Background { gc_every: Some(Duration::from_millis(200)), ..Background::default() };
    let Some(app) = TestApp::builder().background(background).start().await else { return };
    let blob = app.upload_blob(b"timer bytes").await.json();
    let manifest = json!({"files": [{"path": "f", "digest": blob["blake3"]}]});
    for version in ["1", "2", "3"] {
        assert_eq!(app.publish("nightly/app", version, &manifest).await.status, 201);
    }
    assert_eq!(app.put_json("/v1/policies/nightly", &json!({"prefix": "nightly/", "keep_last": 1})).await.status, 201);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.get("/v1/packages/nightly/app/versions/2").await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "the timer never expired nightly/app@2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.get("/v1/packages/nightly/app/versions/1").await.status, 404);
    assert_eq!(app.get("/v1/packages/nightly/app/versions/3").await.status, 200);
    let runs = app.get_json("/v1/events?since=0&type=v1.system.gc").await;
    assert_eq!(runs["events"][0]["actor"], "artifactstore-gc");
}
