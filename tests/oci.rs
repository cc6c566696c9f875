//! The OCI distribution API (`/v2/`) over real HTTP, on SQLite with a filesystem store and on PostgreSQL with an S3
//! store: blobs pushed through `/v2/` are the blobs of `/v1/` and the other way round; manifests, tags and referrers
//! are events the feed carries and replay rebuilds; collection keeps what tags reach and frees untagged manifests;
//! errors are OCI error bodies; tokens work as on `/v1/`, with the challenge and token endpoint OCI clients follow.

use std::time::Duration;

use artifactstore::auth::{Scope, TokenConfig};
use artifactstore_digest::DualDigest;
use artifactstore_tests::{Reply, TestApp, SETUPS};
use reqwest::Method;
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn sha(bytes: &[u8]) -> String {
    DualDigest::of(bytes).sha256.to_string()
}

fn oci_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "expected {status} {code}: {}", reply.text());
    assert_eq!(reply.json()["errors"][0]["code"], code, "{}", reply.text());
}

/// Pushes `bytes` to `repo` in one request (`POST ?digest=`).
async fn push_blob(app: &TestApp, repo: &str, bytes: &[u8]) -> String {
    let digest = sha(bytes);
    let reply = app.post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"), bytes.to_vec()).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.header("docker-content-digest"), digest);
    digest
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha(bytes), "size": bytes.len()})
}

/// An image manifest naming `config` and `layers`, with optional extra fields.
fn image(config: &[u8], layers: &[&[u8]], extra: Value) -> Vec<u8> {
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut manifest, extra) {
        m.extend(e);
    }
    serde_json::to_vec(&manifest).unwrap()
}

async fn put_manifest(app: &TestApp, repo: &str, reference: &str, bytes: &[u8], media_type: &str) -> Reply {
    let request = app
        .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(bytes.to_vec());
    app.send(request).await
}

async fn events_since(app: &TestApp, since: u64) -> Vec<Value> {
    app.get_json(&format!("/v1/events?since={since}&limit=1000")).await["events"].as_array().unwrap().clone()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["event_type"].as_str().unwrap()).collect()
}

async fn replay_agrees(app: &TestApp) {
    let differences = artifactstore_views::verify(&app.log, |_, _| {}).await.unwrap();
    assert!(differences.is_empty(), "replay differs from the live views: {differences:?}");
}

#[tokio::test]
async fn blobs_uploads_manifests_and_tags_through_v2_are_the_registrys_own() {
    for (backend, store) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(store).start().await else { continue };
        let base = app.get("/v2/").await;
        assert_eq!((base.status, base.header("docker-distribution-api-version")), (200, "registry/2.0"));

        // A chunked upload: a chunk at the wrong offset is 416 with where the session is; then stream mode.
        let layer: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let opened = app.post("/v2/team/app/blobs/uploads/", Vec::new()).await;
        assert_eq!((opened.status, opened.header("range")), (202, "0-0"), "{}", opened.text());
        let location = opened.header("location").to_owned();
        assert!(location.starts_with("/v2/team/app/blobs/uploads/"), "{location}");
        let chunk = |start: usize, end: usize| {
            app.request(Method::PATCH, &location)
                .header("content-range", format!("{start}-{}", end - 1))
                .header("content-type", "application/octet-stream")
                .body(layer[start..end].to_vec())
        };
        let early = app.send(chunk(1000, 2000)).await;
        oci_error(&early, 416, "BLOB_UPLOAD_INVALID");
        assert_eq!(early.header("range"), "0-0");
        let first = app.send(chunk(0, 150_000)).await;
        assert_eq!((first.status, first.header("range")), (202, "0-149999"), "{}", first.text());
        oci_error(&app.send(chunk(0, 150_000)).await, 416, "BLOB_UPLOAD_INVALID");
        let status = app.get(&location).await;
        assert_eq!((status.status, status.header("range")), (204, "0-149999"));
        let streamed = app.patch(&location, layer[150_000..300_000].to_vec()).await;
        assert_eq!((streamed.status, streamed.header("range")), (202, "0-299999"), "{}", streamed.text());
        let wrong = app.put(&format!("{location}?digest={}", sha(b"other")), layer[300_000..].to_vec()).await;
        oci_error(&wrong, 400, "DIGEST_INVALID");
        let committed = app.put(&format!("{location}?digest={}", sha(&layer)), Vec::new()).await;
        assert_eq!(committed.status, 201, "{}", committed.text());
        assert_eq!(committed.header("location"), format!("/v2/team/app/blobs/{}", sha(&layer)));

        // The same blob for /v1/, by its BLAKE3 digest; a /v1/ upload is readable through /v2/ with Range.
        let blake3 = DualDigest::of(&layer).blake3;
        assert_eq!(app.get(&format!("/v1/blobs/{blake3}")).await.body, layer, "{backend:?}");
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        assert_eq!(app.upload_blob(&config).await.status, 201);
        let ranged = app
            .send(
                app.request(Method::GET, &format!("/v2/any/repo/blobs/{}", sha(&config))).header("range", "bytes=0-9"),
            )
            .await;
        assert_eq!((ranged.status, ranged.body.as_slice()), (206, &config[..10]));
        assert_eq!(ranged.header("docker-content-digest"), sha(&config));
        assert_eq!(app.head(&format!("/v2/team/app/blobs/{}", sha(b"never pushed"))).await.status, 404);
        oci_error(&app.get(&format!("/v2/team/app/blobs/{}", sha(b"never pushed"))).await, 404, "BLOB_UNKNOWN");

        // A manifest naming a blob nobody pushed is refused; one whose blobs are all there is taken, byte for byte.
        let head = app.head_now().await;
        let missing = image(&config, &[b"nowhere"], json!({}));
        oci_error(&put_manifest(&app, "team/app", "v1", &missing, OCI_MANIFEST).await, 400, "MANIFEST_BLOB_UNKNOWN");
        let first = image(&config, &[&layer], json!({"annotations": {"org.example": "first"}}));
        let pushed = put_manifest(&app, "team/app", "v1", &first, OCI_MANIFEST).await;
        assert_eq!(pushed.status, 201, "{}", pushed.text());
        assert_eq!(pushed.header("docker-content-digest"), sha(&first));
        let by_digest = put_manifest(&app, "team/app", &sha(b"not it"), &first, OCI_MANIFEST).await;
        oci_error(&by_digest, 400, "DIGEST_INVALID");
        let pulled = app.get("/v2/team/app/manifests/v1").await;
        assert_eq!((pulled.status, pulled.header("content-type")), (200, OCI_MANIFEST));
        assert_eq!(pulled.body, first, "{backend:?}: the manifest comes back byte for byte");
        let headed = app.head(&format!("/v2/team/app/manifests/{}", sha(&first))).await;
        assert_eq!((headed.status, headed.header_u64("content-length")), (200, first.len() as u64));
        oci_error(&app.get("/v2/team/app/manifests/v9").await, 404, "MANIFEST_UNKNOWN");
        oci_error(&app.get("/v2/other/manifests/v1").await, 404, "MANIFEST_UNKNOWN");

        // The tag moves; every move is an event.
        let second = image(&config, &[], json!({}));
        assert_eq!(put_manifest(&app, "team/app", "v1", &second, OCI_MANIFEST).await.status, 201);
        assert_eq!(put_manifest(&app, "team/app", "v1", &second, OCI_MANIFEST).await.status, 201, "again: no change");
        assert_eq!(app.get("/v2/team/app/manifests/v1").await.body, second);
        let events = events_since(&app, head).await;
        assert_eq!(
            types(&events),
            [
                "v1.file.ingested",
                "v1.oci.manifest.pushed",
                "v1.oci.tag.set",
                "v1.file.ingested",
                "v1.oci.manifest.pushed",
                "v1.oci.tag.set"
            ],
            "{backend:?}"
        );
        let pushed_event = &events[1];
        assert_eq!(pushed_event["subject_kind"], "oci_manifest");
        assert_eq!(pushed_event["payload"]["digest"], sha(&first));
        let references = pushed_event["payload"]["references"].as_array().unwrap();
        assert_eq!(references.len(), 2);
        assert_eq!(references[1]["blake3"], blake3.to_string());
        assert_eq!(events[5]["payload"], json!({"repository": "team/app", "tag": "v1", "digest": sha(&second)}));

        // Tags in order, a page at a time.
        for tag in ["b", "a", "c"] {
            assert_eq!(put_manifest(&app, "team/app", tag, &first, OCI_MANIFEST).await.status, 201);
        }
        let all = app.get_json("/v2/team/app/tags/list").await;
        assert_eq!(all, json!({"name": "team/app", "tags": ["a", "b", "c", "v1"]}));
        let page = app.get("/v2/team/app/tags/list?n=2&last=a").await;
        assert_eq!(page.json()["tags"], json!(["b", "c"]));
        assert_eq!(page.header("link"), "</v2/team/app/tags/list?n=2&last=c>; rel=\"next\"");
        oci_error(&app.get("/v2/nothing/here/tags/list").await, 404, "NAME_UNKNOWN");
        assert_eq!(app.get_json("/v2/_catalog").await, json!({"repositories": ["team/app"]}));

        // Deleting by digest takes the tags that name it; deleting a tag takes only the tag.
        assert_eq!(app.delete("/v2/team/app/manifests/c").await.status, 202);
        assert_eq!(app.delete(&format!("/v2/team/app/manifests/{}", sha(&first))).await.status, 202);
        assert_eq!(app.get_json("/v2/team/app/tags/list").await["tags"], json!(["v1"]));
        oci_error(&app.get(&format!("/v2/team/app/manifests/{}", sha(&first))).await, 404, "MANIFEST_UNKNOWN");

        // A blob deleted from one repository is gone there only, and comes back when pushed there again.
        assert_eq!(app.delete(&format!("/v2/team/app/blobs/{}", sha(&layer))).await.status, 202);
        oci_error(&app.get(&format!("/v2/team/app/blobs/{}", sha(&layer))).await, 404, "BLOB_UNKNOWN");
        assert_eq!(app.head(&format!("/v2/team/other/blobs/{}", sha(&layer))).await.status, 200);
        assert_eq!(app.get(&format!("/v1/blobs/{blake3}")).await.status, 200);
        let naming_it = image(&config, &[&layer], json!({}));
        let refused = put_manifest(&app, "team/app", "uses-deleted", &naming_it, OCI_MANIFEST).await;
        oci_error(&refused, 400, "MANIFEST_BLOB_UNKNOWN");
        assert_eq!(put_manifest(&app, "team/other", "ok", &naming_it, OCI_MANIFEST).await.status, 201);
        let mounted =
            app.post(&format!("/v2/team/app/blobs/uploads/?mount={}&from=team/other", sha(&layer)), Vec::new()).await;
        assert_eq!(mounted.status, 201, "{}", mounted.text());
        assert_eq!(app.head(&format!("/v2/team/app/blobs/{}", sha(&layer))).await.status, 200);
        let unmountable =
            app.post(&format!("/v2/team/app/blobs/uploads/?mount={}&from=team/other", sha(b"x")), Vec::new()).await;
        assert_eq!(unmountable.status, 202, "a mount that cannot be made opens a session");

        replay_agrees(&app).await;
    }
}

#[tokio::test]
async fn referrers_are_listed_from_the_views_and_filtered_by_artifact_type() {
    for (backend, store) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(store).start().await else { continue };
        let config = b"{}".to_vec();
        push_blob(&app, "r/img", &config).await;
        let subject = image(&config, &[], json!({}));
        assert_eq!(put_manifest(&app, "r/img", "v1", &subject, OCI_MANIFEST).await.status, 201);
        let mut referrers = Vec::new();
        for (kind, note) in [("application/vnd.example.sbom", "sbom"), ("application/vnd.example.sig", "sig")] {
            let manifest = image(
                &config,
                &[],
                json!({"artifactType": kind, "subject": descriptor(OCI_MANIFEST, &subject), "annotations": {"note": note}}),
            );
            let pushed = put_manifest(&app, "r/img", &sha(&manifest), &manifest, OCI_MANIFEST).await;
            assert_eq!(pushed.status, 201, "{}", pushed.text());
            assert_eq!(pushed.header("oci-subject"), sha(&subject));
            referrers.push(manifest);
        }
        let listed = app.get(&format!("/v2/r/img/referrers/{}", sha(&subject))).await;
        assert_eq!((listed.status, listed.header("content-type")), (200, OCI_INDEX));
        let body = listed.json();
        assert_eq!(body["mediaType"], OCI_INDEX);
        let mut found: Vec<Value> = body["manifests"].as_array().unwrap().clone();
        found.sort_by_key(|d| d["artifactType"].as_str().unwrap().to_owned());
        assert_eq!(found.len(), 2, "{backend:?}: {body}");
        assert_eq!(found[0]["digest"], sha(&referrers[0]));
        assert_eq!(found[0]["size"], referrers[0].len());
        assert_eq!(found[0]["annotations"], json!({"note": "sbom"}));
        let filtered =
            app.get(&format!("/v2/r/img/referrers/{}?artifactType=application/vnd.example.sig", sha(&subject))).await;
        assert_eq!(filtered.header("oci-filters-applied"), "artifactType");
        assert_eq!(filtered.json()["manifests"].as_array().unwrap().len(), 1);
        let none = app.get_json(&format!("/v2/r/img/referrers/{}", sha(b"nothing refers to this"))).await;
        assert_eq!(none["manifests"], json!([]));
        replay_agrees(&app).await;
    }
}

#[tokio::test]
async fn collection_keeps_what_tags_reach_and_frees_untagged_manifests() {
    for (backend, store) in SETUPS {
        let Some(app) =
            TestApp::builder().backend(backend).store(store).config(|c| c.gc_grace = Duration::ZERO).start().await
        else {
            continue;
        };
        let blob = |name: &str| format!("layer {name}").into_bytes();
        let (config, a, b, c, d) = (b"{}".to_vec(), blob("a"), blob("b"), blob("c"), blob("d"));
        for bytes in [&config, &a, &b, &c, &d] {
            push_blob(&app, "g/img", bytes).await;
        }
        let tagged = image(&config, &[&a], json!({}));
        let untagged = image(&config, &[&b], json!({}));
        let child = image(&config, &[&c], json!({}));
        let signature = image(&config, &[&d], json!({"subject": descriptor(OCI_MANIFEST, &tagged)}));
        assert_eq!(put_manifest(&app, "g/img", "v1", &tagged, OCI_MANIFEST).await.status, 201);
        for manifest in [&untagged, &child, &signature] {
            assert_eq!(put_manifest(&app, "g/img", &sha(manifest), manifest, OCI_MANIFEST).await.status, 201);
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, &child)]
        }))
        .unwrap();
        assert_eq!(put_manifest(&app, "g/img", "multi", &index, OCI_INDEX).await.status, 201);

        let report = app.post("/v1/gc", Vec::new()).await.json();
        assert_eq!(report["untagged"], json!([{"repository": "g/img", "digest": sha(&untagged)}]), "{backend:?}");
        let removed: Vec<&str> =
            report["removed"].as_array().unwrap().iter().map(|r| r["digest"].as_str().unwrap()).collect();
        let b3 = |bytes: &[u8]| DualDigest::of(bytes).blake3.to_string();
        let mut want = vec![b3(&b), b3(&untagged)];
        want.sort();
        assert_eq!(removed, want, "{backend:?}: the untagged manifest and the layer only it named");
        for kept in [&a, &c, &d, &config, &tagged, &child, &signature, &index] {
            assert_eq!(app.head(&format!("/v1/blobs/{}", b3(kept))).await.status, 200, "{backend:?}");
        }
        oci_error(&app.get(&format!("/v2/g/img/manifests/{}", sha(&untagged))).await, 404, "MANIFEST_UNKNOWN");

        // Untag the image: it goes, and its signature with it; the index keeps its child.
        assert_eq!(app.delete("/v2/g/img/manifests/v1").await.status, 202);
        let report = app.post("/v1/gc", Vec::new()).await.json();
        let mut gone: Vec<String> =
            report["untagged"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_owned()).collect();
        gone.sort();
        let mut want = vec![sha(&tagged), sha(&signature)];
        want.sort();
        assert_eq!(gone, want, "{backend:?}");
        assert_eq!(app.head(&format!("/v1/blobs/{}", b3(&a))).await.status, 410);
        assert_eq!(app.head(&format!("/v1/blobs/{}", b3(&c))).await.status, 200);
        let events = events_since(&app, 0).await;
        let gc = events.iter().rev().find(|e| e["event_type"] == "v1.system.gc").unwrap();
        assert_eq!(gc["payload"]["untagged"], 2);
        replay_agrees(&app).await;
    }
}

#[tokio::test]
async fn tokens_work_as_on_v1_with_the_challenge_oci_clients_follow() {
    let tokens = vec![
        TokenConfig::new("push-secret", "ci", vec![Scope::Write], vec!["team/".into()]),
        TokenConfig::new("read-secret", "reader", vec![Scope::Read], vec!["team/".into()]),
    ];
    let Some(mut app) = TestApp::builder().tokens(tokens).start().await else { return };
    let denied = app.get("/v2/").await;
    oci_error(&denied, 401, "UNAUTHORIZED");
    let challenge = denied.header("www-authenticate").to_owned();
    assert!(challenge.starts_with("Bearer realm=\"http://") && challenge.contains("/v2/token\""), "{challenge}");
    assert!(challenge.contains("service=\"artifactstore\""), "{challenge}");
    let pull = app.get("/v2/team/app/tags/list").await;
    assert!(
        pull.header("www-authenticate").contains("scope=\"repository:team/app:pull,push\""),
        "{}",
        pull.header("www-authenticate")
    );

    // Log in as OCI clients do: HTTP Basic with the token as the password, at the challenge's realm.
    let login = app.send(app.request(Method::GET, "/v2/token").basic_auth("anyone", Some("push-secret"))).await;
    assert_eq!(login.status, 200, "{}", login.text());
    assert_eq!(login.json()["token"], "push-secret");
    oci_error(
        &app.send(app.request(Method::GET, "/v2/token").basic_auth("x", Some("wrong"))).await,
        401,
        "UNAUTHORIZED",
    );
    let basic = app.send(app.request(Method::GET, "/v2/").basic_auth("x", Some("read-secret"))).await;
    assert_eq!(basic.status, 200, "Basic credentials are taken directly too");

    app.token = Some("push-secret".into());
    push_blob(&app, "team/app", b"config").await;
    oci_error(&app.post("/v2/elsewhere/blobs/uploads/", Vec::new()).await, 403, "DENIED");
    oci_error(&app.delete("/v2/team/app/manifests/v1").await, 403, "DENIED");
    // A prefix-limited reader reads the blobs a manifest of the repository names (ADR 0034), not those merely pushed.
    app.token = Some("read-secret".into());
    let config_path = format!("/v2/team/app/blobs/{}", sha(b"config"));
    assert_eq!(app.head(&config_path).await.status, 404);
    app.token = Some("push-secret".into());
    assert_eq!(app.head(&config_path).await.status, 200, "the pusher reads its own upload");
    push_blob(&app, "team/app", b"layer").await;
    let manifest = image(b"config", &[b"layer"], json!({}));
    assert_eq!(put_manifest(&app, "team/app", "v1", &manifest, OCI_MANIFEST).await.status, 201);
    app.token = Some("read-secret".into());
    assert_eq!(app.head(&config_path).await.status, 200);
    assert_eq!(app.head(&format!("/v2/team/app/blobs/{}", sha(b"layer"))).await.status, 200);
    assert_eq!(app.head(&format!("/v2/team/other/blobs/{}", sha(b"layer"))).await.status, 404);
    oci_error(&app.post("/v2/team/app/blobs/uploads/", Vec::new()).await, 403, "DENIED");
    assert_eq!(app.get_json("/v2/_catalog").await, json!({"repositories": ["team/app"]}));
}

#[tokio::test]
async fn bad_names_and_manifests_get_oci_errors_never_a_500() {
    let app = TestApp::sqlite().await;
    push_blob(&app, "ok", b"{}").await;
    let head = app.head_now().await;
    oci_error(&app.get("/v2/UPPER/tags/list").await, 400, "NAME_INVALID");
    oci_error(&app.get("/v2/a%FF%00b/tags/list").await, 400, "NAME_INVALID");
    oci_error(&app.get("/v2/a__b_/manifests/x").await, 400, "NAME_INVALID");
    oci_error(&app.get("/v2/ok/blobs/sha256:short").await, 400, "DIGEST_INVALID");
    oci_error(&app.get("/v2/ok/manifests/sha256:totallywrong").await, 400, "DIGEST_INVALID");
    oci_error(
        &put_manifest(&app, "ok", "bad+tag", &image(b"{}", &[], json!({})), OCI_MANIFEST).await,
        400,
        "TAG_INVALID",
    );
    for body in [&b"not json"[..], b"{\"schemaVersion\":2}", b"{\"schemaVersion\":2,\"mediaType\":\"text/plain\"}"] {
        oci_error(&put_manifest(&app, "ok", "t", body, OCI_MANIFEST).await, 400, "MANIFEST_INVALID");
    }
    let wrong_size = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "x/y", "digest": sha(b"{}"), "size": 99}, "layers": []
    }))
    .unwrap();
    oci_error(&put_manifest(&app, "ok", "t", &wrong_size, OCI_MANIFEST).await, 400, "MANIFEST_INVALID");
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    assert_eq!(put_manifest(&app, "ok", "t", &huge, OCI_MANIFEST).await.status, 413);
    oci_error(&app.send(app.request(Method::OPTIONS, "/v2/ok/tags/list")).await, 405, "UNSUPPORTED");
    oci_error(&app.get("/v2/ok/nothing").await, 404, "NAME_UNKNOWN");
    oci_error(&app.patch("/v2/ok/blobs/uploads/not-a-session", b"x".to_vec()).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(app.head_now().await, head, "nothing refused was recorded");
}
