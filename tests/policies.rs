//! Retention policies over real HTTP, on SQLite with a filesystem store and on PostgreSQL with an S3 store: made,
//! changed, read and removed through events that replay rebuilds; bodies checked; the admin scope over the prefix.

use artifactstore::auth::{Scope, TokenConfig};
use artifactstore_tests::{TestApp, SETUPS};
use serde_json::{json, Value};

#[tokio::test]
async fn policies_are_made_changed_read_and_removed_through_the_log() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let made = app.put_json("/v1/policies/nightly", &json!({"prefix": "ci/nightly/", "keep_last": 5})).await;
        assert_eq!(made.status, 201, "{}", made.text());
        let policy = made.json();
        assert_eq!(policy["name"], "nightly");
        assert_eq!(policy["prefix"], "ci/nightly/");
        assert_eq!(policy["keep_last"], 5);
        assert_eq!(policy["keep_days"], serde_json::Value::Null);
        let set_at = policy["sequence"].as_u64().unwrap();
        assert_eq!(app.head_now().await, set_at, "{backend:?}: one event");

        // The same body again commits nothing.
        let again = app.put_json("/v1/policies/nightly", &json!({"prefix": "ci/nightly/", "keep_last": 5})).await;
        assert_eq!((again.status, again.json()["sequence"].as_u64()), (200, Some(set_at)));
        assert_eq!(app.head_now().await, set_at, "{backend:?}: no event for the same policy");

        let changed = app.put_json("/v1/policies/nightly", &json!({"prefix": "ci/nightly/", "keep_days": 30})).await;
        assert_eq!(changed.status, 200);
        assert_eq!(
            (changed.json()["keep_last"].clone(), changed.json()["keep_days"].clone()),
            (json!(null), json!(30))
        );
        assert!(app.put_json("/v1/policies/all", &json!({"prefix": "", "keep_days": 365})).await.status == 201);

        let listed = app.get_json("/v1/policies").await;
        let names: Vec<&str> =
            listed["policies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["all", "nightly"], "{backend:?}");
        assert_eq!(app.get_json("/v1/policies/nightly").await["keep_days"], 30);

        // The events, filtered by the policy subject kind.
        let events = app.get_json("/v1/events?since=0&subject_kind=policy").await;
        let types: Vec<&str> =
            events["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
        assert_eq!(types, ["v1.policy.set", "v1.policy.set", "v1.policy.set"], "{backend:?}");
        assert_eq!(
            events["events"][1]["payload"],
            json!({"name": "nightly", "prefix": "ci/nightly/", "keep_days": 30})
        );

        assert_eq!(app.delete("/v1/policies/nightly").await.status, 204);
        let removed = app.get_json("/v1/events?since=0&type=v1.policy.removed").await;
        assert_eq!(removed["events"][0]["payload"]["name"], "nightly");
        assert_eq!(removed["events"][0]["subject_kind"], "policy");
        app.get("/v1/policies/nightly").await.problem(404, "not_found");
        app.delete("/v1/policies/nightly").await.problem(404, "not_found");

        // Replay rebuilds the policies the live path made.
        let differences = artifactstore_views::verify(&app.log, |_, _| {}).await.unwrap();
        assert!(differences.is_empty(), "{backend:?}: {differences:?}");
        let mut conn = app.instance.db.acquire().await.unwrap();
        let kept = artifactstore_views::queries::policies(&mut conn).await.unwrap();
        assert_eq!(kept.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["all"]);
    }
}

#[tokio::test]
async fn bad_policies_get_a_problem_and_commit_nothing() {
    let app = TestApp::sqlite().await;
    let head = app.head_now().await;
    let bad = [
        ("/v1/policies/p", json!({"keep_last": 3}), "missing prefix"),
        ("/v1/policies/p", json!({"prefix": "a/", "keep_last": -1}), "negative"),
        ("/v1/policies/p", json!({"prefix": "a/", "keep_days": "30"}), "wrong type"),
        ("/v1/policies/p", json!({"prefix": "a/", "keep": 3}), "unknown field"),
        ("/v1/policies/p", json!({"prefix": "A/"}), "upper case prefix"),
        ("/v1/policies/p", json!({"prefix": "/a"}), "leading slash"),
        ("/v1/policies/p", json!({"prefix": "a/", "keep_last": 2_000_000}), "too many"),
        ("/v1/policies/p", json!({"prefix": "a/", "keep_last": 0}), "keeps nothing by count"),
        ("/v1/policies/p", json!({"prefix": "a/", "keep_days": 0}), "keeps nothing by age"),
        ("/v1/policies/P", json!({"prefix": "a/"}), "bad name"),
        ("/v1/policies/-p", json!({"prefix": "a/"}), "bad name start"),
        ("/v1/policies/p", json!(["a/"]), "not an object"),
    ];
    for (path, body, why) in bad {
        let reply = app.put_json(path, &body).await;
        assert_eq!(reply.status, 400, "{why}: {}", reply.text());
        reply.problem(400, "bad_request");
    }
    app.put("/v1/policies/p", Vec::new()).await.problem(400, "bad_request");
    app.get("/v1/policies/Bad").await.problem(400, "bad_request");
    assert_eq!(app.head_now().await, head, "no refused body committed anything");

    // One policy per prefix: longest-prefix matching must have one answer.
    assert_eq!(app.put_json("/v1/policies/first", &json!({"prefix": "a/", "keep_last": 3})).await.status, 201);
    app.put_json("/v1/policies/second", &json!({"prefix": "a/", "keep_days": 3})).await.problem(409, "conflict");
    assert_eq!(app.put_json("/v1/policies/first", &json!({"prefix": "b/", "keep_last": 3})).await.status, 200);
    assert_eq!(app.put_json("/v1/policies/second", &json!({"prefix": "a/", "keep_days": 3})).await.status, 201);
}

#[tokio::test]
async fn changing_a_policy_needs_admin_over_its_prefix() {
    let tokens = vec![
        TokenConfig::new("reader-token-0123456789", "reader", vec![Scope::Read], vec![String::new()]),
        TokenConfig::new("team-admin-0123456789", "team-admin", vec![Scope::Admin], vec!["team/".into()]),
        TokenConfig::new("root-admin-0123456789", "root", vec![Scope::Admin], vec![String::new()]),
    ];
    let Some(mut app) = TestApp::builder().tokens(tokens).start().await else { return };
    let body = json!({"prefix": "team/app", "keep_last": 3});

    app.token = Some("reader-token-0123456789".into());
    app.put_json("/v1/policies/team-app", &body).await.problem(403, "forbidden");
    app.put("/v1/policies/team-app", Vec::new()).await.problem(403, "forbidden");
    assert_eq!(app.get_json("/v1/policies").await["policies"], json!([]));

    app.token = Some("team-admin-0123456789".into());
    assert_eq!(app.put_json("/v1/policies/team-app", &body).await.status, 201);
    app.put_json("/v1/policies/everything", &json!({"prefix": "", "keep_last": 1})).await.problem(403, "forbidden");

    app.token = Some("root-admin-0123456789".into());
    assert_eq!(app.put_json("/v1/policies/other", &json!({"prefix": "other/"})).await.status, 201);

    // The team's admin may neither remove nor retarget a policy over another prefix; its actor is recorded on what
    // it may change.
    app.token = Some("team-admin-0123456789".into());
    app.delete("/v1/policies/other").await.problem(403, "forbidden");
    let retarget = json!({"prefix": "team/x", "keep_last": 1});
    app.put_json("/v1/policies/other", &retarget).await.problem(403, "forbidden");
    // Nor read it, or its events (ADR 0034).
    app.get("/v1/policies/other").await.problem(403, "forbidden");
    assert_eq!(app.delete("/v1/policies/team-app").await.status, 204);
    let actors = |events: Value| -> Vec<String> {
        events["events"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(actors(app.get_json("/v1/events?since=0&subject_kind=policy").await), ["team-admin", "team-admin"]);
    app.token = Some("root-admin-0123456789".into());
    assert_eq!(app.get_json("/v1/policies/other").await["prefix"], "other/");
    assert_eq!(
        actors(app.get_json("/v1/events?since=0&subject_kind=policy").await),
        ["team-admin", "root", "team-admin"]
    );
}
