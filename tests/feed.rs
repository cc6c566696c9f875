//! The event feed over real HTTP, on both backends.

use std::time::{Duration, Instant};

use artifactstore_eventlog::NewEvent;
use artifactstore_testkit::BACKENDS;
use artifactstore_tests::{event, TestApp};
use serde_json::Value;
use uuid::Uuid;

/// Appends event `n` of `event_type`, about the system subject `n`.
async fn append(app: &TestApp, n: u64, event_type: &str) {
    app.append(event(event_type, Some(n.into()), &serde_json::json!({"n": n, "z": [1, 2], "a": "x"}))).await;
}

fn sequences(body: &Value) -> Vec<u64> {
    body["events"].as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn health_head_and_events() {
    for backend in BACKENDS {
        let Some(app) = TestApp::builder().backend(backend).start().await else { continue };
        assert_eq!(app.get("/healthz").await.status, 200);
        let ready = app.get("/readyz").await;
        assert_eq!(ready.status, 200, "{}", ready.text());

        let head = app.get_json("/v1/events/head").await;
        assert_eq!(head["sequence"], 0);
        let log_id = head["log_id"].as_str().unwrap().to_owned();
        assert_eq!(head["chain_hash"], format!("blake3:{}", "0".repeat(64)));

        for n in 1..=5 {
            append(&app, n, if n % 2 == 0 { "v1.test.even" } else { "v1.test.odd" }).await;
        }
        let reply = app.get("/v1/events").await;
        assert_eq!(reply.status, 200);
        let body = reply.json();
        assert_eq!(sequences(&body), vec![1, 2, 3, 4, 5]);
        assert_eq!((body["next"].as_u64(), body["head"].as_u64()), (Some(5), Some(5)));
        assert_eq!(body["log_id"], log_id.as_str());

        // The envelope: payload rendered as JSON, digests as blake3: strings that a client can check.
        let first = &body["events"][0];
        assert_eq!(first["event_type"], "v1.test.odd");
        assert_eq!(first["subject_kind"], "system");
        assert_eq!(first["subject_id"], Uuid::from_u128(1).to_string());
        assert_eq!(first["payload"], serde_json::json!({"a": "x", "n": 1, "z": [1, 2]}));
        let stored = app.log.get(1).await.unwrap().unwrap();
        assert_eq!(first["payload_digest"], format!("blake3:{}", blake3_hex(&stored.payload)));
        assert!(first["created_at"].as_str().unwrap().ends_with('Z'));

        let page = app.get_json("/v1/events?since=1&limit=2").await;
        assert_eq!((sequences(&page), page["next"].as_u64()), (vec![2, 3], Some(3)));
        let filtered = app.get_json("/v1/events?type=v1.test.even").await;
        assert_eq!((sequences(&filtered), filtered["next"].as_u64()), (vec![2, 4], Some(5)));
        let prefixed = app.get_json("/v1/events?type=v1.test.*&since=3").await;
        assert_eq!(sequences(&prefixed), vec![4, 5]);
        let subject = app.get_json(&format!("/v1/events?subject_id={}", Uuid::from_u128(3))).await;
        assert_eq!(sequences(&subject), vec![3]);
        let kind = app.get_json("/v1/events?subject_kind=package").await;
        assert_eq!((sequences(&kind), kind["next"].as_u64()), (vec![], Some(5)));
        let same_log = app.get_json(&format!("/v1/events?since=5&log_id={log_id}")).await;
        assert_eq!(sequences(&same_log), Vec::<u64>::new());

        let reply = app.get("/v1/events/4").await;
        assert_eq!(reply.status, 200);
        let one = reply.json();
        assert_eq!(one["sequence"], 4);
        assert_eq!(one["chain_hash"], format!("blake3:{}", hex(&app.log.get(4).await.unwrap().unwrap().chain_hash)));
        let head = app.get_json("/v1/events/head").await;
        assert_eq!(head["sequence"], 5);
        assert_eq!(head["chain_hash"], one_chain(&app, 5).await);
    }
}

async fn one_chain(app: &TestApp, sequence: u64) -> String {
    format!("blake3:{}", hex(&app.log.get(sequence).await.unwrap().unwrap().chain_hash))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// BLAKE3 of the payload, computed by the digest crate rather than the log.
fn blake3_hex(bytes: &[u8]) -> String {
    artifactstore_digest::DualDigest::of(bytes).blake3.hex()
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_an_event_commits() {
    for backend in BACKENDS {
        let Some(app) = TestApp::builder().backend(backend).start().await else { continue };
        append(&app, 1, "v1.test.odd").await;
        let writer_log = app.log.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            writer_log.append(event("v1.test.even", None, &2u64)).await.unwrap();
        });
        let started = Instant::now();
        let reply = app.get("/v1/events?since=1&wait=20").await;
        let waited = started.elapsed();
        writer.await.unwrap();
        assert_eq!(reply.status, 200);
        let body = reply.json();
        assert_eq!(sequences(&body), vec![2], "{backend:?}");
        assert!(waited >= Duration::from_millis(250), "it waited for the event: {waited:?}");
        assert!(waited < Duration::from_secs(10), "it returned when the event came: {waited:?}");

        // Nothing arrives: the wait runs out and the answer is empty, with the cursor where it was.
        let started = Instant::now();
        let reply = app.get("/v1/events?since=2&wait=1").await;
        assert_eq!(reply.status, 200);
        let body = reply.json();
        assert_eq!((sequences(&body), body["next"].as_u64()), (vec![], Some(2)));
        assert!(started.elapsed() >= Duration::from_millis(900));
    }
}

#[tokio::test]
async fn bad_requests_get_problem_documents_and_change_nothing() {
    for backend in BACKENDS {
        let Some(app) = TestApp::builder().backend(backend).start().await else { continue };
        append(&app, 1, "v1.test.odd").await;
        let cases: &[(&str, u16, &str)] = &[
            ("/v1/events?since=2", 410, "cursor_expired"),
            ("/v1/events?log_id=0190d1c6-1111-7222-8333-444455556666", 410, "cursor_expired"),
            ("/v1/events?since=-1", 400, "bad_request"),
            ("/v1/events?since=abc", 400, "bad_request"),
            ("/v1/events?limit=0", 400, "bad_request"),
            ("/v1/events?limit=1001", 400, "bad_request"),
            ("/v1/events?wait=61", 400, "bad_request"),
            ("/v1/events?type=v1.*x", 400, "bad_request"),
            ("/v1/events?type=V1.FILE", 400, "bad_request"),
            ("/v1/events?subject_kind=blob", 400, "bad_request"),
            ("/v1/events?subject_id=not-a-uuid", 400, "bad_request"),
            ("/v1/events?log_id=nope", 400, "bad_request"),
            ("/v1/events?bogus=1", 400, "bad_request"),
            ("/v1/events/99", 404, "not_found"),
            ("/v1/events/abc", 400, "bad_request"),
            ("/v1/events/99999999999999999999999", 400, "bad_request"),
            ("/v1/nothing-here", 404, "not_found"),
        ];
        for (path, status, code) in cases {
            let reply = app.get(path).await;
            let body = reply.json();
            assert_eq!(reply.status, *status, "{backend:?} {path}: {body}");
            assert_eq!(reply.header("content-type"), "application/problem+json", "{path}");
            assert_eq!(body["code"], *code, "{path}");
            assert_eq!(body["status"], *status, "{path}");
            assert!(body["type"].as_str().unwrap().ends_with(code), "{path}");
            assert!(!body["detail"].as_str().unwrap().is_empty(), "{path}");
        }
        let expired = app.get_json("/v1/events?since=7").await;
        assert_eq!(expired["head"], 1, "a 410 says where the head is");
        let response = app.post("/v1/events", "").await;
        assert_eq!(response.status, 405);
        assert_eq!(response.headers["content-type"], "application/problem+json");
        assert_eq!(app.get("/healthz").await.status, 200, "the server stays healthy");
        assert_eq!(app.log.read_head().await.unwrap().sequence, 1, "the head did not move");
    }
}

/// A chain check written only from `docs/EVENT-LOG.md`, with a hand-made CBOR writer, agrees with the service.
mod independent_chain_check {
    use super::*;

    fn head(major: u8, n: u64, out: &mut Vec<u8>) {
        let m = major << 5;
        match n {
            0..=23 => out.push(m | n as u8),
            24..=0xff => out.extend([m | 24, n as u8]),
            0x100..=0xffff => {
                out.push(m | 25);
                out.extend((n as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(m | 26);
                out.extend((n as u32).to_be_bytes());
            }
            _ => {
                out.push(m | 27);
                out.extend(n.to_be_bytes());
            }
        }
    }

    fn bytes(b: &[u8], out: &mut Vec<u8>) {
        head(2, b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn text(s: &str, out: &mut Vec<u8>) {
        head(3, s.len() as u64, out);
        out.extend_from_slice(s.as_bytes());
    }

    fn digest_bytes(field: &Value) -> Vec<u8> {
        let s = field.as_str().unwrap().strip_prefix("blake3:").unwrap();
        hex::decode(s).unwrap()
    }

    fn chain(previous: &[u8], e: &Value) -> Vec<u8> {
        let mut out = vec![0x88];
        bytes(previous, &mut out);
        head(0, e["sequence"].as_u64().unwrap(), &mut out);
        text(e["created_at"].as_str().unwrap(), &mut out);
        text(e["event_type"].as_str().unwrap(), &mut out);
        text(e["subject_kind"].as_str().unwrap(), &mut out);
        match e["subject_id"].as_str() {
            Some(id) => bytes(Uuid::parse_str(id).unwrap().as_bytes(), &mut out),
            None => out.push(0xf6),
        }
        text(e["actor"].as_str().unwrap(), &mut out);
        bytes(&digest_bytes(&e["payload_digest"]), &mut out);
        blake3::hash(&out).as_bytes().to_vec()
    }

    #[tokio::test]
    async fn recomputed_chain_matches_the_feed() {
        for backend in BACKENDS {
            let Some(app) = TestApp::builder().backend(backend).start().await else { continue };
            for n in 1..=30 {
                let event = NewEvent {
                    subject_id: (n % 2 == 0).then(Uuid::now_v7),
                    actor: "a".repeat(n as usize * 8),
                    ..event("v1.system.checked", None, &vec![n; n as usize])
                };
                app.log.append(event).await.unwrap();
            }
            let body = app.get_json("/v1/events?limit=1000").await;
            let events = body["events"].as_array().unwrap();
            assert_eq!(events.len(), 30);
            let mut previous = vec![0u8; 32];
            for e in events {
                let expected = chain(&previous, e);
                assert_eq!(digest_bytes(&e["chain_hash"]), expected, "{backend:?} event {}", e["sequence"]);
                previous = expected;
            }
            let head = app.get_json("/v1/events/head").await;
            assert_eq!(digest_bytes(&head["chain_hash"]), previous);
        }
    }
}

/// The subject id of the blob with this BLAKE3 digest, as the log names it.
fn file_subject(blake3: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, blake3.as_bytes())
}

/// A blob's history is read through its row: one response from sequence 0 holds all of it and reaches the head,
/// however long the log around it, on the JSON feed and on SSE.
#[tokio::test]
async fn a_blob_history_costs_its_events_not_the_log() {
    for backend in BACKENDS {
        let Some(app) = TestApp::builder().backend(backend).start().await else { continue };
        let early = app.upload_blob(b"an early blob").await.json();
        // More events than one filtered read of the log scans (10,000), in a few large commits.
        for round in 0..3u64 {
            app.log
                .transact(move |wtx| {
                    Box::pin(async move {
                        for n in 0..4_000 {
                            let filler = event("v1.test.filler", Some((round * 4_000 + n).into()), &n);
                            wtx.append(filler)?;
                        }
                        Ok::<_, artifactstore_eventlog::Error>(())
                    })
                })
                .await
                .unwrap();
        }
        let late = app.upload_blob(b"a late blob").await.json();
        let head = app.head_now().await;
        assert_eq!(head, 12_002, "{backend:?}");
        for blob in [&early, &late] {
            let id = file_subject(blob["blake3"].as_str().unwrap());
            let page = app.get_json(&format!("/v1/events?since=0&subject_kind=file&subject_id={id}")).await;
            assert_eq!(sequences(&page), vec![blob["sequence"].as_u64().unwrap()], "{backend:?}: {blob}");
            assert_eq!(page["next"].as_u64(), Some(head), "{backend:?}: one response reaches the head");
        }

        // SSE from 0, filtered to the late blob: its event is the first event frame. A stream the broadcaster cut
        // (it may still be reading the filler when the stream opens) is resumed from its last id, as clients do.
        let id = file_subject(late["blake3"].as_str().unwrap());
        let first_id = tokio::time::timeout(Duration::from_secs(30), async {
            let mut last = 0u64;
            loop {
                let mut stream = tokio::net::TcpStream::connect(&app.address).await.unwrap();
                let request = format!(
                    "GET /v1/events/stream?since={last}&subject_kind=file&subject_id={id} HTTP/1.1\r\nHost: x\r\n\
                     Connection: close\r\n\r\n"
                );
                tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
                let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stream));
                let (mut frame_id, mut frame_event) = (None, None);
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(n) = line.strip_prefix("id: ") {
                        frame_id = n.parse::<u64>().ok();
                    } else if let Some(event) = line.strip_prefix("event: ") {
                        frame_event = Some(event.to_owned());
                    } else if line.is_empty() {
                        match (frame_id.take(), frame_event.take()) {
                            (Some(n), Some(event)) if event != "bookmark" => return n,
                            (Some(n), _) => last = n,
                            _ => {}
                        }
                    }
                }
            }
        })
        .await
        .expect("the blob's event within 30 s");
        assert_eq!(first_id, late["sequence"].as_u64().unwrap(), "{backend:?}");
    }
}

#[tokio::test]
async fn a_page_ends_when_its_bytes_are_spent_and_next_continues() {
    for backend in BACKENDS {
        let Some(app) = TestApp::builder().backend(backend).start().await else { continue };
        // Twelve events of about 900 KB each: some 10.8 MB, more than two pages' worth.
        let pad = "x".repeat(900_000);
        for n in 1..=12u64 {
            app.append(event("v1.system.test", Some(n.into()), &serde_json::json!({"n": n, "pad": pad}))).await;
        }
        let head = app.head_now().await;
        let first: Value = app.get_json("/v1/events?since=0&limit=1000").await;
        let got = sequences(&first);
        assert!(got.len() >= 2 && got.len() < 12, "{backend:?}: a page of about 4 MiB, not {} events", got.len());
        assert_eq!(first["next"].as_u64(), got.last().copied(), "{backend:?}: next is the last event sent");
        let mut seen = got;
        let mut since = first["next"].as_u64().unwrap();
        while since < head {
            let page: Value = app.get_json(&format!("/v1/events?since={since}&limit=1000")).await;
            seen.extend(sequences(&page));
            since = page["next"].as_u64().unwrap();
        }
        assert_eq!(seen, (1..=head).collect::<Vec<_>>(), "{backend:?}: every event once, in order");
    }
}
