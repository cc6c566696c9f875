//! Blobs and packages over real HTTP, on SQLite with a filesystem store and on PostgreSQL with an S3 store: blobs
//! by either digest with ranges, packages published, read, listed and deleted, retention, and tokens' scopes.

use artifactstore::auth::{Scope, TokenConfig};
use artifactstore_digest::DualDigest;
use artifactstore_tests::{bytes, header_u64, problem, TestApp, SETUPS};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn blobs_by_either_digest_with_ranges() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let data = bytes(100_000, 4);
        let digest = DualDigest::of(&data);
        assert_eq!(app.upload_in_chunks(&data, 30_000).await.status(), 201);
        for d in [digest.blake3, digest.sha256] {
            let response = app.request(Method::GET, &format!("/v1/blobs/{d}")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["etag"], format!("\"{}\"", digest.blake3).as_str());
            assert_eq!(header_u64(&response, "content-length"), 100_000);
            let repr = response.headers()["repr-digest"].to_str().unwrap().to_owned();
            assert!(repr.contains("sha-256=:") && repr.contains("blake3=:"), "{repr}");
            assert_eq!(response.bytes().await.unwrap().as_ref(), data.as_slice());
        }
        let path = format!("/v1/blobs/{}", digest.blake3);
        let head = app.request(Method::HEAD, &path).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(header_u64(&head, "content-length"), 100_000);

        let ranged = app.request(Method::GET, &path).header("range", "bytes=10-19").send().await.unwrap();
        assert_eq!(ranged.status(), 206);
        assert_eq!(ranged.headers()["content-range"], "bytes 10-19/100000");
        assert_eq!(ranged.bytes().await.unwrap().as_ref(), &data[10..20]);
        let suffix = app.request(Method::GET, &path).header("range", "bytes=-5").send().await.unwrap();
        assert_eq!(suffix.status(), 206);
        assert_eq!(suffix.bytes().await.unwrap().as_ref(), &data[99_995..]);
        let open_ended = app.request(Method::GET, &path).header("range", "bytes=99990-").send().await.unwrap();
        assert_eq!(open_ended.bytes().await.unwrap().as_ref(), &data[99_990..]);
        let unsatisfiable = app.request(Method::GET, &path).header("range", "bytes=100000-").send().await.unwrap();
        assert_eq!(unsatisfiable.headers()["content-range"], "bytes */100000");
        problem(unsatisfiable, 416, "range_not_satisfiable").await;
        let beyond = app.request(Method::GET, &path).header("range", "bytes=99999999999999999999999999-").send();
        problem(beyond.await.unwrap(), 416, "range_not_satisfiable").await;
        // A Range header that is not a valid range is ignored (RFC 9110, section 14.2): the whole blob.
        for ignored in ["bytes=abc", "bytes=5-2", "bytes=1-x"] {
            let whole = app.request(Method::GET, &path).header("range", ignored).send().await.unwrap();
            assert_eq!(whole.status(), 200, "{ignored}");
            assert_eq!(whole.bytes().await.unwrap().len(), data.len(), "{ignored}");
        }

        let etag = format!("\"{}\"", digest.blake3);
        let cached = app.request(Method::GET, &path).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(cached.status(), 304);

        let unknown = DualDigest::of(b"never uploaded");
        problem(
            app.request(Method::GET, &format!("/v1/blobs/{}", unknown.sha256)).send().await.unwrap(),
            404,
            "not_found",
        )
        .await;
        problem(app.request(Method::GET, "/v1/blobs/md5:abc").send().await.unwrap(), 400, "bad_request").await;
        problem(app.request(Method::GET, "/v1/blobs/blake3:XYZ").send().await.unwrap(), 400, "bad_request").await;
    }
}

#[tokio::test]
async fn packages_publish_read_list_delete_and_retention() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let a = bytes(5000, 5);
        let b = bytes(7000, 6);
        let (da, db) = (DualDigest::of(&a), DualDigest::of(&b));
        assert_eq!(app.upload_in_chunks(&a, 5000).await.status(), 201);
        let url = "/v1/packages/team/app/versions/1.0.0";

        // Unknown blobs are listed.
        let missing = DualDigest::of(b"missing");
        let manifest = json!({"files": [
            {"path": "bin/app", "digest": da.blake3.to_string(), "media_type": "application/x-executable"},
            {"path": "lib/b.so", "digest": db.sha256.to_string()},
            {"path": "x", "digest": missing.blake3.to_string()},
        ]});
        let before = app.head_now().await;
        let body =
            problem(app.request(Method::PUT, url).json(&manifest).send().await.unwrap(), 422, "missing_blobs").await;
        let listed: Vec<&str> = body["missing"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        assert_eq!(listed.len(), 2);
        assert!(
            listed.contains(&db.sha256.to_string().as_str()) && listed.contains(&missing.blake3.to_string().as_str())
        );
        assert_eq!(app.head_now().await, before);

        assert_eq!(app.upload_in_chunks(&b, 3000).await.status(), 201);
        let manifest = json!({
            "files": [
                {"path": "bin/app", "digest": da.sha256.to_string(), "media_type": "application/x-executable"},
                {"path": "lib/b.so", "digest": db.blake3.to_string()},
            ],
            "metadata": {"git": {"sha": "abc", "dirty": false}, "build": 42},
        });
        let before = app.head_now().await;
        let created = app.request(Method::PUT, url).json(&manifest).send().await.unwrap();
        assert_eq!(created.status(), 201);
        assert_eq!(created.headers()["location"], url);
        let doc: Value = created.json().await.unwrap();
        assert_eq!(app.head_now().await, before + 1);
        assert_eq!(doc["created_sequence"], before + 1);
        assert_eq!(doc["files"][0]["path"], "bin/app");
        assert_eq!(doc["files"][0]["blake3"], da.blake3.to_string());
        assert_eq!(doc["files"][0]["sha256"], da.sha256.to_string());
        assert_eq!(doc["files"][0]["size"], 5000);
        assert_eq!(doc["metadata"]["git"]["sha"], "abc");
        assert_eq!(doc["retention"]["hold"], false);

        // The event carries the manifest with both digests.
        let event: Value = app.get_json(&format!("/v1/events/{}", before + 1)).await;
        assert_eq!(event["event_type"], "v1.package.created");
        assert_eq!(event["subject_id"], doc["package_id"]);
        assert_eq!(event["payload"]["files"][1]["sha256"], db.sha256.to_string());

        // Same manifest (keys in another order): 200, no event. A different one: 409.
        let same = json!({
            "metadata": {"build": 42, "git": {"dirty": false, "sha": "abc"}},
            "files": [
                {"path": "lib/b.so", "digest": db.sha256.to_string()},
                {"path": "bin/app", "digest": da.blake3.to_string(), "media_type": "application/x-executable"},
            ],
        });
        assert_eq!(app.request(Method::PUT, url).json(&same).send().await.unwrap().status(), 200);
        let mut different = manifest.clone();
        different["metadata"]["build"] = json!(43);
        problem(app.request(Method::PUT, url).json(&different).send().await.unwrap(), 409, "conflict").await;
        assert_eq!(app.head_now().await, before + 1);

        // CBOR in, canonical CBOR out.
        let cbor_manifest =
            json!({"files": [{"path": "only", "digest": da.blake3.to_string()}], "metadata": {"z": 1, "a": [1, 2]}});
        let cbor_body = {
            let mut out = Vec::new();
            ciborium::into_writer(&cbor_manifest, &mut out).unwrap();
            out
        };
        let response = app
            .request(Method::PUT, "/v1/packages/team/app/versions/2.0")
            .header("content-type", "application/cbor")
            .header("accept", "application/cbor")
            .body(cbor_body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["content-type"], "application/cbor");
        let raw = response.bytes().await.unwrap();
        let value = artifactstore_cbor::decode_value(&raw).expect("the response is canonical CBOR");
        assert_eq!(artifactstore_cbor::encode_value(&value).unwrap(), raw.as_ref());
        let response = app.request(Method::GET, url).header("accept", "application/cbor").send().await.unwrap();
        let raw = response.bytes().await.unwrap();
        assert!(artifactstore_cbor::decode_value(&raw).is_ok());

        // Versions, listing and pagination.
        let versions: Value = app.get_json("/v1/packages/team/app").await;
        let names: Vec<&str> =
            versions["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
        assert_eq!(names, ["1.0.0", "2.0"]);
        for name in ["team/lib", "team/zed", "other/x"] {
            let response = app
                .request(Method::PUT, &format!("/v1/packages/{name}/versions/1"))
                .json(&json!({"files": [{"path": "f", "digest": da.blake3.to_string()}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
        }
        let page: Value = app.get_json("/v1/packages?prefix=team/&limit=2").await;
        let first: Vec<&str> =
            page["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(first, ["team/app", "team/lib"]);
        assert_eq!(page["packages"][0]["versions"], 2);
        let cursor = page["next_cursor"].as_str().unwrap();
        let page: Value = app.get_json(&format!("/v1/packages?prefix=team/&limit=2&cursor={cursor}")).await;
        let second: Vec<&str> =
            page["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(second, ["team/zed"]);
        assert!(page["next_cursor"].is_null());
        // A cursor this server did not issue is refused, not taken for the first page.
        app.get("/v1/packages?cursor=%FF%00garbage").await.problem(400, "bad_request");
        app.get("/v1/packages?cursor=Team/App").await.problem(400, "bad_request");

        // Files download like blobs, with the manifest's media type.
        let file = app.request(Method::GET, &format!("{url}/files/bin/app")).send().await.unwrap();
        assert_eq!(file.status(), 200);
        assert_eq!(file.headers()["content-type"], "application/x-executable");
        assert_eq!(file.bytes().await.unwrap().as_ref(), a.as_slice());
        let ranged = app
            .request(Method::GET, &format!("{url}/files/lib/b.so"))
            .header("range", "bytes=0-3")
            .send()
            .await
            .unwrap();
        assert_eq!(ranged.status(), 206);
        assert_eq!(ranged.bytes().await.unwrap().as_ref(), &b[..4]);
        problem(app.request(Method::GET, &format!("{url}/files/nope")).send().await.unwrap(), 404, "not_found").await;

        // Retention: extend, never shorten; a hold or a future date blocks delete.
        let retention = format!("{url}/retention");
        let head = app.head_now().await;
        let response = app
            .request(Method::PUT, &retention)
            .json(&json!({"until": "2999-01-01T00:00:00Z", "hold": true, "reason": "audit"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["sequences"].as_array().unwrap().len(), 2);
        assert_eq!(body["retention"]["hold"], true);
        assert_eq!(app.head_now().await, head + 2);
        problem(
            app.request(Method::PUT, &retention).json(&json!({"until": "2998-01-01T00:00:00Z"})).send().await.unwrap(),
            409,
            "conflict",
        )
        .await;
        problem(app.request(Method::DELETE, url).send().await.unwrap(), 409, "conflict").await;
        let response = app.request(Method::PUT, &retention).json(&json!({"hold": false})).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(app.head_now().await, head + 3);
        let types: Vec<String> = {
            let feed: Value = app.get_json(&format!("/v1/events?since={head}")).await;
            feed["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(types, ["v1.retention.extended", "v1.retention.hold_set", "v1.retention.hold_released"]);
        // Still retained until 2999.
        problem(app.request(Method::DELETE, url).send().await.unwrap(), 409, "conflict").await;

        // A version with no retention deletes.
        let response =
            app.request(Method::DELETE, "/v1/packages/team/app/versions/2.0?reason=superseded").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let event: Value = app.get_json(&format!("/v1/events/{}", app.head_sequence())).await;
        assert_eq!(event["event_type"], "v1.package.deleted");
        assert_eq!(event["payload"]["reason"], "superseded");
        problem(app.request(Method::GET, "/v1/packages/team/app/versions/2.0").send().await.unwrap(), 404, "not_found")
            .await;
        problem(
            app.request(Method::DELETE, "/v1/packages/team/app/versions/2.0").send().await.unwrap(),
            404,
            "not_found",
        )
        .await;
        problem(app.request(Method::GET, "/v1/packages/nobody").send().await.unwrap(), 404, "not_found").await;

        // The live views equal a replay of the log.
        let differences = artifactstore_views::verify(&app.log, |_, _| {}).await.unwrap();
        assert!(differences.is_empty(), "{differences:?}");
    }
}

#[tokio::test]
async fn tokens_scope_every_call_and_name_the_actor() {
    let tokens = vec![
        TokenConfig::new("reader-token-0123456789", "reader", vec![Scope::Read], vec![String::new()]),
        TokenConfig::new("team-writer-0123456789", "ci-team", vec![Scope::Write], vec!["team/".into()]),
        TokenConfig::new("admin-token-0123456789", "root", vec![Scope::Admin], vec![String::new()]),
        TokenConfig::new("bare-prefix-0123456789", "bare", vec![Scope::Admin], vec!["team".into()]),
    ];
    for (backend, kind) in SETUPS {
        let Some(mut app) = TestApp::builder().backend(backend).store(kind).tokens(tokens.clone()).start().await else {
            continue;
        };
        let data = bytes(2000, 7);
        let digest = DualDigest::of(&data);

        let response = app.request(Method::GET, "/v1/events").send().await.unwrap();
        assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        problem(response, 401, "unauthorized").await;
        app.token = Some("wrong-token-0123456789".into());
        problem(app.request(Method::GET, "/v1/events").send().await.unwrap(), 401, "unauthorized").await;
        assert_eq!(app.request(Method::GET, "/healthz").send().await.unwrap().status(), 200);

        app.token = Some("reader-token-0123456789".into());
        assert_eq!(app.request(Method::GET, "/v1/events").send().await.unwrap().status(), 200);
        // The scheme's name is case-insensitive (RFC 9110, section 11.1).
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            let response = app
                .http
                .get(app.url("/v1/events"))
                .header("authorization", format!("{scheme} reader-token-0123456789"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{backend:?}: {scheme}");
        }
        problem(app.request(Method::POST, "/v1/uploads").send().await.unwrap(), 403, "forbidden").await;

        app.token = Some("team-writer-0123456789".into());
        let response = app.upload_in_chunks(&data, 1000).await;
        assert_eq!(response.status(), 201);
        let manifest = json!({"files": [{"path": "f", "digest": digest.blake3.to_string()}]});
        let response = app.request(Method::PUT, "/v1/packages/team/x/versions/1").json(&manifest).send().await.unwrap();
        assert_eq!(response.status(), 201);
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["created_by"], "ci-team");
        problem(
            app.request(Method::PUT, "/v1/packages/other/x/versions/1").json(&manifest).send().await.unwrap(),
            403,
            "forbidden",
        )
        .await;
        problem(app.request(Method::DELETE, "/v1/packages/team/x/versions/1").send().await.unwrap(), 403, "forbidden")
            .await;

        // A prefix covers whole name segments: `team` is `team` and `team/...`, never `teamevil/...`.
        app.token = Some("bare-prefix-0123456789".into());
        for name in ["teamevil/x", "teams"] {
            let path = format!("/v1/packages/{name}/versions/1");
            problem(app.request(Method::PUT, &path).json(&manifest).send().await.unwrap(), 403, "forbidden").await;
        }
        let own = app.request(Method::GET, "/v1/packages/team/x/versions/1").send().await.unwrap();
        assert_eq!(own.status(), 200, "{backend:?}");
        app.token = Some("team-writer-0123456789".into());

        // Sessions belong to their subject.
        let session = app.open_session(None).await;
        app.token = Some("admin-token-0123456789".into());
        problem(app.send_chunk(&session, 0, vec![1, 2, 3]).await, 403, "forbidden").await;
        assert_eq!(app.request(Method::DELETE, "/v1/packages/team/x/versions/1").send().await.unwrap().status(), 200);

        let feed: Value = app.get_json("/v1/events").await;
        let actors: Vec<&str> =
            feed["events"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
        assert_eq!(actors, ["ci-team", "ci-team", "root"]);
    }
}

/// Any JSON number a client publishes in metadata comes back as the same number, read as JSON or as CBOR, and
/// one published as CBOR reads back as JSON exactly (canonical CBOR keeps the shortest float with the same value).
mod numbers {
    use artifactstore_tests::TestApp;
    use proptest::prelude::*;
    use serde_json::Value;

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            Just(f64::from(f32::MAX)),
            Just(3.4028234663852886e38),
            Just(0.1),
            Just(-0.0),
            Just(5e-324),
            Just(f64::MAX),
            Just(1e21),
            Just(123_456_789.125),
        ]
    }

    async fn round_trip(values: Vec<f64>) -> Result<(), TestCaseError> {
        let app = TestApp::sqlite().await;
        let blob = app.upload_blob(b"numbers").await.json();
        // Sent as text, the way a client writes JSON (`{:?}` prints the shortest digits that read back exactly).
        let numbers: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        let body = format!(
            r#"{{"files": [{{"path": "f", "digest": {}}}], "metadata": {{"n": [{}]}}}}"#,
            blob["blake3"],
            numbers.join(", ")
        );
        let put = app.send(app.request(reqwest::Method::PUT, "/v1/packages/num/json/versions/1").body(body)).await;
        prop_assert_eq!(put.status, 201, "{}", put.text());
        let read = app.get_json("/v1/packages/num/json/versions/1").await;
        let back: Vec<f64> = read["metadata"]["n"].as_array().unwrap().iter().map(|n| n.as_f64().unwrap()).collect();
        prop_assert_eq!(bits(&back), bits(&values), "JSON in, JSON out");

        let cbor = app
            .send(
                app.request(reqwest::Method::GET, "/v1/packages/num/json/versions/1")
                    .header("accept", "application/cbor"),
            )
            .await;
        let doc: ciborium::Value = ciborium::from_reader(cbor.body.as_slice()).unwrap();
        let from_cbor = floats_of(&doc);
        prop_assert_eq!(bits(&from_cbor), bits(&values), "JSON in, CBOR out");

        // CBOR in, JSON out.
        let manifest = ciborium::Value::Map(vec![
            (
                "files".into(),
                ciborium::Value::Array(vec![ciborium::Value::Map(vec![
                    ("path".into(), "f".into()),
                    ("digest".into(), blob["blake3"].as_str().unwrap().into()),
                ])]),
            ),
            (
                "metadata".into(),
                ciborium::Value::Map(vec![(
                    "n".into(),
                    ciborium::Value::Array(values.iter().map(|v| ciborium::Value::Float(*v)).collect()),
                )]),
            ),
        ]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&manifest, &mut bytes).unwrap();
        let put = app
            .send(
                app.request(reqwest::Method::PUT, "/v1/packages/num/cbor/versions/1")
                    .header("content-type", "application/cbor")
                    .body(bytes),
            )
            .await;
        prop_assert_eq!(put.status, 201, "{}", put.text());
        let read: Value = app.get_json("/v1/packages/num/cbor/versions/1").await;
        let back: Vec<f64> = read["metadata"]["n"].as_array().unwrap().iter().map(|n| n.as_f64().unwrap()).collect();
        prop_assert_eq!(bits(&back), bits(&values), "CBOR in, JSON out");
        Ok(())
    }

    /// The numbers of `metadata.n` in a CBOR manifest.
    fn floats_of(doc: &ciborium::Value) -> Vec<f64> {
        let field = |v: &ciborium::Value, name: &str| {
            v.as_map().unwrap().iter().find(|(k, _)| k.as_text() == Some(name)).map(|(_, v)| v.clone()).unwrap()
        };
        let numbers = field(&field(doc, "metadata"), "n");
        numbers
            .as_array()
            .unwrap()
            .iter()
            .map(|n| match n {
                ciborium::Value::Float(f) => *f,
                ciborium::Value::Integer(i) => i128::from(*i) as f64,
                other => panic!("not a number: {other:?}"),
            })
            .collect()
    }

    /// Bit patterns, so that -0.0 and 0.0 differ.
    fn bits(values: &[f64]) -> Vec<u64> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn numbers_come_back_as_sent(values in prop::collection::vec(finite(), 1..40)) {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(round_trip(values))?;
        }
    }
}

/// The README's `curl` commands that send JSON, joined across their continuation lines.
fn readme_json_commands() -> Vec<String> {
    let readme = include_str!("../README.md");
    let mut commands: Vec<String> = Vec::new();
    let mut continued = false;
    for line in readme.lines() {
        let line = line.trim();
        if continued {
            commands.last_mut().expect("a command to continue").push_str(line.trim_end_matches('\\'));
        } else if line.starts_with("curl ") {
            commands.push(line.trim_end_matches('\\').to_owned());
        }
        continued = line.ends_with('\\');
    }
    commands.retain(|c| c.contains("--json") || c.contains(" -d "));
    commands
}

/// The README's examples that send JSON (publish, then retention) work as written, with `curl` itself.
#[tokio::test]
async fn the_readme_json_examples_work_as_written() {
    let commands = readme_json_commands();
    assert!(commands.len() >= 2, "{commands:?}");
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "curl is needed under CI");
        eprintln!("SKIPPED: curl is not installed; the README's examples were not run");
        return;
    }
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let model = bytes(3000, 5);
        assert_eq!(app.upload_blob(&model).await.status, 201);
        let hex = DualDigest::of(&model).blake3.to_string().trim_start_matches("blake3:").to_owned();
        let address = app.base.trim_start_matches("http://").to_owned();
        for command in &commands {
            let command = command.replace("localhost:8080", &address).replace("<hex>", &hex);
            let script = format!("{command} -o /dev/null -w '%{{http_code}}'");
            let output =
                tokio::task::spawn_blocking(move || std::process::Command::new("sh").arg("-c").arg(script).output())
                    .await
                    .unwrap()
                    .unwrap();
            let status = String::from_utf8_lossy(&output.stdout).to_string();
            assert!(status.starts_with('2'), "{backend:?}: `{command}` answered {status}");
        }
        let version = app.get_json("/v1/packages/ml/model/versions/1.0.0").await;
        assert_eq!(version["metadata"]["git"], "abc123", "{backend:?}: {version}");
        assert_eq!(version["retention"]["hold"], true, "{backend:?}: {version}");
    }
}
