//! A read token limited to some prefixes reads those prefixes on every path, on both backends: the feed, one event,
//! the SSE stream, blobs by digest (`/v1/` and `/v2/`), the package list and policies.

use std::time::Duration;

use artifactstore::auth::{Scope, TokenConfig};
use artifactstore_digest::DualDigest;
use artifactstore_tests::{bytes, problem, TestApp, SETUPS};
use reqwest::Method;
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "team-reader-0123456789";
const WRITER: &str = "team-writer-0123456789";

fn tokens() -> Vec<TokenConfig> {
    vec![
        TokenConfig::new(ADMIN, "root", vec![Scope::Admin], vec![String::new()]),
        TokenConfig::new(READER, "reader", vec![Scope::Read], vec!["team".into()]),
        TokenConfig::new(WRITER, "team-ci", vec![Scope::Write], vec!["team/".into()]),
    ]
}

/// Every event frame's (id, data) of an SSE stream from `since`, until the frame with id `until`.
async fn stream_until(app: &TestApp, token: &str, since: u64, until: u64) -> Vec<(u64, String)> {
    let request = format!(
        "GET /v1/events/stream?since={since} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(&app.address).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stream));
    let mut frames = Vec::new();
    let (mut id, mut event, mut data) = (None, None, String::new());
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(n) = line.strip_prefix("id: ") {
                id = n.parse::<u64>().ok();
            } else if let Some(e) = line.strip_prefix("event: ") {
                event = Some(e.to_owned());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = d.to_owned();
            } else if line.is_empty() {
                if let (Some(n), Some(e)) = (id.take(), event.take()) {
                    if e != "bookmark" {
                        frames.push((n, std::mem::take(&mut data)));
                    }
                    if n >= until {
                        return;
                    }
                }
            }
        }
        panic!("the stream ended before event {until}");
    })
    .await
    .expect("the stream reaches the event within 30 s");
    frames
}

fn publish(app: &TestApp, name: &str, files: Vec<&str>, metadata: Value) -> reqwest::RequestBuilder {
    let files: Vec<Value> =
        files.iter().enumerate().map(|(i, f)| json!({"path": format!("f{i}"), "digest": f})).collect();
    app.request(Method::PUT, &format!("/v1/packages/{name}/versions/1"))
        .json(&json!({"files": files, "metadata": metadata}))
}

fn blob(app: &TestApp, digest: &str) -> reqwest::RequestBuilder {
    app.request(Method::GET, &format!("/v1/blobs/{digest}"))
}

#[tokio::test]
async fn a_prefix_limited_token_reads_its_prefixes_on_every_path() {
    for (backend, kind) in SETUPS {
        let Some(mut app) = TestApp::builder().backend(backend).store(kind).tokens(tokens()).start().await else {
            continue;
        };
        let (secret, shared, team, own) = (bytes(2000, 1), bytes(2000, 2), bytes(2000, 3), bytes(2000, 4));
        let d = |b: &[u8]| DualDigest::of(b).blake3.to_string();

        // Another team's package, policy and retention; ours; and a name that only looks like ours.
        app.token = Some(ADMIN.into());
        for blob in [&secret, &shared, &team] {
            assert_eq!(app.upload_in_chunks(blob, 2000).await.status(), 201);
        }
        let (ds, dsh, dt) = (d(&secret), d(&shared), d(&team));
        assert_eq!(
            publish(&app, "other/app", vec![&ds, &dsh], json!({"secret": "hush"})).send().await.unwrap().status(),
            201
        );
        assert_eq!(
            publish(&app, "teamevil/x", vec![&ds], json!({"secret": "hush"})).send().await.unwrap().status(),
            201
        );
        assert_eq!(publish(&app, "team/app", vec![&dt, &dsh], json!({})).send().await.unwrap().status(), 201);
        assert_eq!(publish(&app, "team", vec![&dt], json!({})).send().await.unwrap().status(), 201);
        for (name, reason) in [("other/app", "hush"), ("team/app", "ours")] {
            let url = format!("/v1/packages/{name}/versions/1/retention");
            let hold = json!({"hold": true, "reason": reason});
            assert_eq!(app.request(Method::PUT, &url).json(&hold).send().await.unwrap().status(), 200);
        }
        for (policy, prefix) in [("o", "other/"), ("t", "team/"), ("all", "")] {
            let body = json!({"prefix": prefix, "keep_last": 5});
            let response = app.request(Method::PUT, &format!("/v1/policies/{policy}")).json(&body).send().await;
            assert_eq!(response.unwrap().status(), 201);
        }
        app.token = Some(WRITER.into());
        assert_eq!(app.upload_in_chunks(&own, 2000).await.status(), 201);
        let head = app.head_now().await;

        // The feed: only the reader's prefixes, and `next` still reaches the head, a page at a time or at once.
        app.token = Some(READER.into());
        let page: Value = app.get_json("/v1/events?since=0&limit=1000").await;
        assert_eq!(page["next"], head);
        let text = page.to_string();
        assert!(!text.contains("other/") && !text.contains("teamevil") && !text.contains("hush"), "{text}");
        let seen: Vec<(String, String)> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (e["event_type"].as_str().unwrap().to_owned(), e["payload"]["name"].as_str().unwrap_or("").to_owned())
            })
            .collect();
        let expected = [
            ("v1.package.created", "team/app"),
            ("v1.package.created", "team"),
            ("v1.retention.hold_set", ""),
            ("v1.policy.set", "t"),
        ];
        assert_eq!(seen, expected.map(|(t, n)| (t.to_owned(), n.to_owned())), "{backend:?}");
        let mut paged = Vec::new();
        let mut since = 0;
        while since < head {
            let page: Value = app.get_json(&format!("/v1/events?since={since}&limit=2")).await;
            let next = page["next"].as_u64().unwrap();
            assert!(next > since, "next advances past what the token may not see");
            paged.extend(page["events"].as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()));
            since = next;
        }
        let all: Vec<u64> =
            page["events"].as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
        assert_eq!(paged, all);

        // One event: the other team's is refused.
        app.token = Some(ADMIN.into());
        let everything: Value = app.get_json("/v1/events?since=0&limit=1000").await;
        assert_eq!(everything["events"].as_array().unwrap().len() as u64, head, "the admin sees every event");
        let first_other =
            everything["events"].as_array().unwrap().iter().find(|e| e["payload"]["name"] == "other/app").unwrap()
                ["sequence"]
                .as_u64()
                .unwrap();
        app.token = Some(READER.into());
        problem(app.request(Method::GET, &format!("/v1/events/{first_other}")).send().await.unwrap(), 403, "forbidden")
            .await;
        assert_eq!(app.request(Method::GET, &format!("/v1/events/{}", all[0])).send().await.unwrap().status(), 200);

        // The writer sees its own upload's event, not the admin's uploads.
        app.token = Some(WRITER.into());
        let page: Value = app.get_json("/v1/events?since=0&limit=1000&subject_kind=file").await;
        let actors: Vec<&str> =
            page["events"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
        assert_eq!(actors, ["team-ci"]);

        // SSE: the catch-up and the live events alike.
        app.token = Some(ADMIN.into());
        let streamed = {
            let reader = stream_until(&app, READER, 0, head + 2);
            let publish_more = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let other = app.request(Method::PUT, "/v1/packages/other/app/versions/2");
                let files = json!({"files": [{"path": "f", "digest": ds}]});
                assert_eq!(other.json(&files).send().await.unwrap().status(), 201);
                let ours = app.request(Method::PUT, "/v1/packages/team/app/versions/2");
                let files = json!({"files": [{"path": "f", "digest": dt}]});
                assert_eq!(ours.json(&files).send().await.unwrap().status(), 201);
            };
            tokio::join!(reader, publish_more).0
        };
        let ids: Vec<u64> = streamed.iter().map(|(n, _)| *n).collect();
        assert_eq!(ids, [all.clone(), vec![head + 2]].concat(), "{backend:?}");
        assert!(streamed.iter().all(|(_, data)| !data.contains("other/") && !data.contains("hush")));

        // Blobs: those a version under the prefixes names, and the token's own uploads.
        app.token = Some(READER.into());
        assert_eq!(blob(&app, &dt).send().await.unwrap().status(), 200);
        assert_eq!(blob(&app, &dsh).send().await.unwrap().status(), 200, "shared with a version of ours");
        problem(blob(&app, &ds).send().await.unwrap(), 404, "not_found").await;
        problem(blob(&app, &d(&own)).send().await.unwrap(), 404, "not_found").await;
        app.token = Some(WRITER.into());
        assert_eq!(blob(&app, &d(&own)).send().await.unwrap().status(), 200, "its own upload");
        problem(blob(&app, &ds).send().await.unwrap(), 404, "not_found").await;
        app.token = Some(READER.into());
        let oci = app.request(Method::GET, &format!("/v2/team/app/blobs/{}", DualDigest::of(&secret).sha256));
        assert_eq!(oci.send().await.unwrap().status(), 404, "nor through a repository of ours");

        // The package list and the policies.
        let list: Value = app.get_json("/v1/packages").await;
        let names: Vec<&str> =
            list["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["team", "team/app"]);
        let first: Value = app.get_json("/v1/packages?limit=1").await;
        assert_eq!(first["next_cursor"], "team");
        let rest: Value = app.get_json("/v1/packages?limit=1&cursor=team").await;
        assert_eq!(rest["packages"][0]["name"], "team/app");
        assert_eq!(rest["next_cursor"], Value::Null);
        let other: Value = app.get_json("/v1/packages?prefix=other").await;
        assert_eq!(other["packages"], json!([]));
        let policies: Value = app.get_json("/v1/policies").await;
        assert_eq!(policies["policies"].as_array().unwrap().len(), 1);
        assert_eq!(policies["policies"][0]["name"], "t");
        problem(app.request(Method::GET, "/v1/policies/o").send().await.unwrap(), 403, "forbidden").await;
        problem(app.request(Method::GET, "/v1/packages/other/app").send().await.unwrap(), 403, "forbidden").await;
    }
}
