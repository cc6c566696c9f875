//! What a manifest means, on both backends: a version is one manifest forever, even after it is deleted; "same
//! manifest" is equality of canonical CBOR; JSON metadata keeps every number it is sent, or is refused.

use artifactstore_cbor::Value as Cbor;
use artifactstore_digest::DualDigest;
use artifactstore_tests::{bytes, problem, TestApp, SETUPS};
use reqwest::Method;
use serde_json::{json, Value};

fn cbor(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

fn text(s: &str) -> Cbor {
    Cbor::Text(s.to_owned())
}

/// A CBOR manifest of one file, `digest` at `f`, with `metadata`.
fn cbor_manifest(digest: &str, metadata: Cbor) -> Vec<u8> {
    cbor(&Cbor::Map(vec![
        (text("files"), Cbor::Array(vec![Cbor::Map(vec![(text("path"), text("f")), (text("digest"), text(digest))])])),
        (text("metadata"), metadata),
    ]))
}

#[tokio::test]
async fn a_deleted_version_comes_back_only_with_its_first_manifest() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let (a, b) = (bytes(3000, 1), bytes(3000, 2));
        assert_eq!(app.upload_in_chunks(&a, 3000).await.status(), 201);
        assert_eq!(app.upload_in_chunks(&b, 3000).await.status(), 201);
        let (da, db) = (DualDigest::of(&a).blake3.to_string(), DualDigest::of(&b).blake3.to_string());
        let url = "/v1/packages/team/app/versions/1.0";
        let first =
            json!({"files": [{"path": "bin", "digest": da}, {"path": "lib", "digest": db}], "metadata": {"n": 1}});
        assert_eq!(app.request(Method::PUT, url).json(&first).send().await.unwrap().status(), 201);
        assert_eq!(app.request(Method::DELETE, url).send().await.unwrap().status(), 200);

        let head = app.head_now().await;
        let other_files = json!({"files": [{"path": "bin", "digest": db}], "metadata": {"n": 1}});
        let other_metadata =
            json!({"files": [{"path": "bin", "digest": da}, {"path": "lib", "digest": db}], "metadata": {"n": 2}});
        for refused in [&other_files, &other_metadata] {
            let answer =
                problem(app.request(Method::PUT, url).json(refused).send().await.unwrap(), 409, "conflict").await;
            assert!(answer["detail"].as_str().unwrap().contains("first had"), "{answer}");
        }
        assert_eq!(app.head_now().await, head, "a refused publish records nothing");

        // The first manifest again, its files in another order, publishes the version anew.
        let again =
            json!({"files": [{"path": "lib", "digest": db}, {"path": "bin", "digest": da}], "metadata": {"n": 1}});
        assert_eq!(app.request(Method::PUT, url).json(&again).send().await.unwrap().status(), 201);
        assert_eq!(app.request(Method::DELETE, url).send().await.unwrap().status(), 200);
        problem(app.request(Method::PUT, url).json(&other_files).send().await.unwrap(), 409, "conflict").await;
        assert_eq!(app.request(Method::PUT, url).json(&first).send().await.unwrap().status(), 201);

        // The rule holds after the views are rebuilt from the log.
        let differences = artifactstore_views::verify(&app.log, |_, _| {}).await.unwrap();
        assert!(differences.is_empty(), "{differences:?}");
        artifactstore_views::rebuild(&app.log, |_, _| {}).await.unwrap();
        assert_eq!(app.request(Method::DELETE, url).send().await.unwrap().status(), 200);
        problem(app.request(Method::PUT, url).json(&other_metadata).send().await.unwrap(), 409, "conflict").await;
    }
}

#[tokio::test]
async fn the_same_manifest_is_the_same_canonical_cbor() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let data = bytes(1000, 3);
        assert_eq!(app.upload_in_chunks(&data, 1000).await.status(), 201);
        let digest = DualDigest::of(&data).blake3.to_string();
        let put = |version: &str, body: Vec<u8>| {
            app.request(Method::PUT, &format!("/v1/packages/team/m/versions/{version}"))
                .header("content-type", "application/cbor")
                .body(body)
        };
        // NaN is the same NaN again.
        let nan = cbor_manifest(&digest, Cbor::Map(vec![(text("x"), Cbor::Float(f64::NAN))]));
        assert_eq!(put("nan", nan.clone()).send().await.unwrap().status(), 201);
        assert_eq!(put("nan", nan).send().await.unwrap().status(), 200);
        // -0.0 is not 0.0.
        let negative = cbor_manifest(&digest, Cbor::Map(vec![(text("x"), Cbor::Float(-0.0))]));
        let positive = cbor_manifest(&digest, Cbor::Map(vec![(text("x"), Cbor::Float(0.0))]));
        assert_eq!(put("zero", negative.clone()).send().await.unwrap().status(), 201);
        problem(put("zero", positive).send().await.unwrap(), 409, "conflict").await;
        assert_eq!(put("zero", negative).send().await.unwrap().status(), 200);
        // An integer and a float of the same value are different numbers.
        let one = cbor_manifest(&digest, Cbor::Map(vec![(text("x"), Cbor::Integer(1.into()))]));
        let one_float = cbor_manifest(&digest, Cbor::Map(vec![(text("x"), Cbor::Float(1.0))]));
        assert_eq!(put("one", one).send().await.unwrap().status(), 201);
        problem(put("one", one_float).send().await.unwrap(), 409, "conflict").await;
    }
}

#[tokio::test]
async fn json_metadata_keeps_its_numbers_and_refuses_what_cbor_refuses() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let data = bytes(1000, 4);
        assert_eq!(app.upload_in_chunks(&data, 1000).await.status(), 201);
        let digest = DualDigest::of(&data).blake3.to_string();
        let put = |version: &str, body: String| {
            app.request(Method::PUT, &format!("/v1/packages/team/j/versions/{version}"))
                .header("content-type", "application/json")
                .body(body)
        };
        let files = format!(r#""files": [{{"path": "f", "digest": "{digest}"}}]"#);
        let head = app.head_now().await;

        // Past 64 bits: refused, not rounded to a float.
        let big = put("big", format!(r#"{{{files}, "metadata": {{"n": 1180591620717411303424}}}}"#));
        let answer = problem(big.send().await.unwrap(), 422, "invalid_manifest").await;
        assert!(answer["detail"].as_str().unwrap().contains("1180591620717411303424"), "{answer}");
        // A key twice in one object: refused, as a CBOR map with a key twice is.
        let twice = put("twice", format!(r#"{{{files}, "metadata": {{"a": {{"k": 1, "k": 2}}}}}}"#));
        let answer = problem(twice.send().await.unwrap(), 400, "bad_request").await;
        assert!(answer["detail"].as_str().unwrap().contains("`k` appears twice"), "{answer}");
        // Metadata past 1 MiB of canonical CBOR: 413.
        let long = "x".repeat(1024 * 1024);
        let huge = put("huge", format!(r#"{{{files}, "metadata": {{"blob": "{long}"}}}}"#));
        problem(huge.send().await.unwrap(), 413, "too_large").await;
        assert_eq!(app.head_now().await, head, "nothing refused was recorded");

        // The largest and smallest 64-bit integers come back as sent, in JSON and in CBOR.
        let edges = format!(r#"{{{files}, "metadata": {{"max": 18446744073709551615, "min": -9223372036854775808}}}}"#);
        assert_eq!(put("edges", edges).send().await.unwrap().status(), 201);
        let read: Value = app.get_json("/v1/packages/team/j/versions/edges").await;
        assert_eq!(read["metadata"]["max"].as_u64(), Some(u64::MAX));
        assert_eq!(read["metadata"]["min"].as_i64(), Some(i64::MIN));
        let raw = app
            .request(Method::GET, "/v1/packages/team/j/versions/edges")
            .header("accept", "application/cbor")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let doc = artifactstore_cbor::decode_value(&raw).unwrap();
        let metadata = doc.as_map().unwrap().iter().find(|(k, _)| k == &text("metadata")).unwrap().1.clone();
        assert_eq!(
            metadata,
            Cbor::Map(vec![
                (text("max"), Cbor::Integer(u64::MAX.into())),
                (text("min"), Cbor::Integer(i64::MIN.into()))
            ])
        );
    }
}

/// The references each blob's row counts.
async fn refs(app: &TestApp, blobs: &[Vec<u8>]) -> Vec<i64> {
    let mut conn = app.state().instance.db.acquire().await.unwrap();
    let mut counts = Vec::new();
    for blob in blobs {
        let row = artifactstore_views::queries::blob(&mut conn, &DualDigest::of(blob).blake3).await.unwrap();
        counts.push(row.unwrap().refs);
    }
    counts
}

#[tokio::test]
async fn a_version_of_many_files_leaves_the_views_as_replay_does() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let blobs: Vec<Vec<u8>> = (0..5).map(|n| bytes(500, 40 + n)).collect();
        for blob in &blobs {
            assert_eq!(app.upload_in_chunks(blob, 500).await.status(), 201);
        }
        // 2,000 files naming five blobs, written in multi-row statements: each blob gains 400 references.
        let files: Vec<Value> = (0..2_000)
            .map(|i| json!({"path": format!("dir/{i:05}"), "digest": DualDigest::of(&blobs[i % 5]).sha256.to_string()}))
            .collect();
        let url = "/v1/packages/team/many/versions/1";
        assert_eq!(app.request(Method::PUT, url).json(&json!({"files": files})).send().await.unwrap().status(), 201);
        let doc: Value = app.get_json(url).await;
        assert_eq!(doc["files"].as_array().unwrap().len(), 2_000);
        let differences = artifactstore_views::verify(&app.log, |_, _| {}).await.unwrap();
        assert!(differences.is_empty(), "{backend:?}: {differences:?}");
        assert_eq!(refs(&app, &blobs).await, [400; 5], "{backend:?}");
        // A path twice is refused before anything is written; the version stands as it was.
        let mut twice = files.clone();
        twice.push(files[0].clone());
        let response = app.request(Method::PUT, "/v1/packages/team/many/versions/2").json(&json!({"files": twice}));
        problem(response.send().await.unwrap(), 422, "invalid_manifest").await;
        // Deleting it takes the 2,000 references away again.
        assert_eq!(app.request(Method::DELETE, url).send().await.unwrap().status(), 200);
        let differences = artifactstore_views::verify(&app.log, |_, _| {}).await.unwrap();
        assert!(differences.is_empty(), "{backend:?}: {differences:?}");
        assert_eq!(refs(&app, &blobs).await, [0; 5], "{backend:?}");
    }
}

/// Every JSON number published comes back as the same number, in JSON and in CBOR: the canonical CBOR keeps the
/// shortest float that holds the value, and the JSON rendering prints that value exactly.
#[tokio::test]
async fn json_numbers_come_back_as_sent() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let data = bytes(100, 50);
        assert_eq!(app.upload_in_chunks(&data, 100).await.status(), 201);
        let digest = DualDigest::of(&data).blake3.to_string();
        let fixed = ["3.4028234663852886e+38", "1e-7", "0.1", "-0.0", "5e-324", "1.7976931348623157e308", "65504.0"];
        let mut runner = TestRunner::new(Config { cases: 24, ..Config::default() });
        let numbers = prop::collection::vec(
            prop_oneof![
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
                any::<f32>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{:e}", f64::from(f))),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
            ],
            1..40,
        );
        let mut cases = vec![fixed.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()];
        for _ in 0..24 {
            cases.push(numbers.new_tree(&mut runner).unwrap().current());
        }
        for (n, sent) in cases.iter().enumerate() {
            let body = format!(
                r#"{{"files": [{{"path": "f", "digest": "{digest}"}}], "metadata": {{"n": [{}]}}}}"#,
                sent.join(", ")
            );
            let url = format!("/v1/packages/team/numbers/versions/{n}");
            let put = app.request(Method::PUT, &url).header("content-type", "application/json").body(body);
            assert_eq!(put.send().await.unwrap().status(), 201, "{sent:?}");
            let read: Value = app.get_json(&url).await;
            let back = read["metadata"]["n"].as_array().unwrap();
            for (text, got) in sent.iter().zip(back) {
                let wanted: Value = serde_json::from_str(text).unwrap();
                match (wanted.as_f64(), got.as_f64()) {
                    _ if wanted.is_i64() || wanted.is_u64() => assert_eq!(&wanted, got, "{backend:?}: {text}"),
                    (Some(w), Some(g)) => {
                        assert_eq!(w.to_bits(), g.to_bits(), "{backend:?}: {text} came back as {got}")
                    }
                    _ => panic!("{text} came back as {got}"),
                }
            }
        }
    }
}
