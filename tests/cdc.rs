//! The live feed over real HTTP: SSE hand-over, reconnects, slow consumers, many idle subscribers, several
//! instances on one PostgreSQL, the CBOR sequence form, and /metrics.

use std::time::Duration;

use artifactstore_db::Backend;
use artifactstore_eventlog::NewEvent;
use artifactstore_testkit::BACKENDS;
use artifactstore_tests::{Client, TestApp};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

fn event(n: u64, event_type: &str, pad: usize) -> NewEvent {
    artifactstore_tests::event(event_type, Some(n.into()), &serde_json::json!({"n": n, "pad": "x".repeat(pad)}))
}

/// One SSE frame.
#[derive(Debug, Default, Clone)]
struct Frame {
    id: Option<u64>,
    event: Option<String>,
    data: String,
}

/// A raw SSE connection: the request written by hand, frames parsed line by line.
struct SseClient {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl SseClient {
    async fn connect(address: &str, query: &str, last_event_id: Option<u64>) -> SseClient {
        Self::connect_with(TcpStream::connect(address).await.unwrap(), address, query, last_event_id).await
    }

    async fn connect_with(mut stream: TcpStream, address: &str, query: &str, last: Option<u64>) -> SseClient {
        let last = last.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        let request = format!(
            "GET /v1/events/stream{query} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n{last}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        loop {
            let header = lines.next_line().await.unwrap().unwrap();
            if header.is_empty() {
                break;
            }
        }
        SseClient { lines }
    }

    /// The next event frame (comments and chunked-encoding lines skipped); `None` when the stream ends.
    async fn next(&mut self) -> Option<Frame> {
        let mut frame = Frame::default();
        let mut any = false;
        loop {
            let line = match tokio::time::timeout(Duration::from_secs(30), self.lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(_) => return None,
                Err(_) => panic!("no frame within 30 s"),
            };
            if let Some(id) = line.strip_prefix("id: ") {
                frame.id = Some(id.parse().unwrap());
                any = true;
            } else if let Some(event) = line.strip_prefix("event: ") {
                frame.event = Some(event.to_owned());
                any = true;
            } else if let Some(data) = line.strip_prefix("data: ") {
                frame.data.push_str(data);
                any = true;
            } else if line.is_empty() && any {
                return Some(frame);
            } else if line == "0" {
                return None;
            }
        }
    }

    /// Sequences of event frames (bookmarks skipped) until `last` is seen.
    async fn collect_until(&mut self, last: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        while let Some(frame) = self.next().await {
            let Some(id) = frame.id else { continue };
            if frame.event.as_deref() == Some("bookmark") {
                if id >= last {
                    break;
                }
                continue;
            }
            seen.push(id);
            if id >= last {
                break;
            }
        }
        seen
    }
}

async fn long_poll_until(base: &str, last: u64) -> Vec<u64> {
    let client = Client::new(base);
    let mut since = 0;
    let mut seen = Vec::new();
    while since < last {
        let page = client.get_json(&format!("/v1/events?since={since}&limit=37&wait=5")).await;
        seen.extend(page["events"].as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()));
        since = page["next"].as_u64().unwrap();
    }
    seen
}

/// A commit on one instance wakes the other instances on the same PostgreSQL: here the other's head poll is a
/// minute long, so only the wake-up can bring the event to its long-poll in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_other_instances_before_their_poll() {
    let Some(a) = TestApp::builder().backend(Backend::Postgres).start().await else { return };
    let b = TestApp::builder()
        .same_database_as(&a)
        .config(|c| c.head_poll = Duration::from_secs(60))
        .start()
        .await
        .expect("a second instance");
    let since = b.head_now().await;
    let waiting = {
        let client = Client::new(b.base.clone());
        tokio::spawn(async move { client.get_json(&format!("/v1/events?since={since}&wait=30")).await })
    };
    // Its listener may not listen yet when the first write lands: a write every half second until it wakes.
    let started = std::time::Instant::now();
    let mut n = 0u8;
    let page = loop {
        n += 1;
        assert_eq!(a.upload_blob(&[n; 64]).await.status, 201);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if waiting.is_finished() {
            break waiting.await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "instance b never woke (its poll is a minute long)");
    };
    let events = page["events"].as_array().unwrap();
    assert!(!events.is_empty(), "{page}");
    assert_eq!(events[0]["sequence"], since + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_and_two_tailers_see_every_event_once() {
    const WRITERS: u64 = 8;
    const EACH: u64 = 40;
    for backend in BACKENDS {
        let Some(a) = TestApp::builder().backend(backend).start().await else { continue };
        // On PostgreSQL a second instance with its own pool serves the SSE tailer and takes half the writes.
        let b = match backend {
            Backend::Postgres => {
                Some(TestApp::builder().same_database_as(&a).start().await.expect("a second instance"))
            }
            Backend::Sqlite => None,
        };
        let sse_address = b.as_ref().map_or(a.address.clone(), |b| b.address.clone());
        let total = WRITERS * EACH;
        let mut sse = SseClient::connect(&sse_address, "?since=0", None).await;
        let sse_task = tokio::spawn(async move { sse.collect_until(total).await });
        let poll_base = a.base.clone();
        let poll_task = tokio::spawn(async move { long_poll_until(&poll_base, total).await });
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let log = if w % 2 == 1 { b.as_ref().map_or(a.log.clone(), |b| b.log.clone()) } else { a.log.clone() };
            writers.push(tokio::spawn(async move {
                for i in 0..EACH {
                    log.append(event(w * 1000 + i, "v1.test.written", 10)).await.unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let expected: Vec<u64> = (1..=total).collect();
        let polled = tokio::time::timeout(Duration::from_secs(60), poll_task).await.unwrap().unwrap();
        assert_eq!(polled, expected, "{backend:?}: the long-poll tailer sees every event once, in order");
        let streamed = tokio::time::timeout(Duration::from_secs(60), sse_task).await.unwrap().unwrap();
        assert_eq!(streamed, expected, "{backend:?}: the SSE tailer sees every event once, in order");
    }
}

#[tokio::test]
async fn reconnecting_with_last_event_id_loses_and_repeats_nothing() {
    for backend in BACKENDS {
        let Some(server) = TestApp::builder().backend(backend).start().await else { continue };
        for n in 1..=10 {
            server.log.append(event(n, if n % 3 == 0 { "v1.test.three" } else { "v1.test.other" }, 0)).await.unwrap();
        }
        let mut first = SseClient::connect(&server.address, "?since=0", None).await;
        let opening: Vec<u64> = first.collect_until(6).await;
        assert_eq!(opening, [1, 2, 3, 4, 5, 6]);
        drop(first);
        for n in 11..=15 {
            server.log.append(event(n, "v1.test.other", 0)).await.unwrap();
        }
        let mut again = SseClient::connect(&server.address, "", Some(6)).await;
        let writer = server.log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for n in 16..=20 {
                writer.append(event(n, "v1.test.other", 0)).await.unwrap();
            }
        });
        assert_eq!(again.collect_until(20).await, (7..=20).collect::<Vec<_>>());

        // A filtered stream only carries matches, and its frames still say where it is.
        let mut filtered = SseClient::connect(&server.address, "?since=0&type=v1.test.three", None).await;
        let frame = filtered.next().await.unwrap();
        assert_eq!((frame.id, frame.event.as_deref()), (Some(3), Some("v1.test.three")));
        let envelope: Value = serde_json::from_str(&frame.data).unwrap();
        assert_eq!(envelope["sequence"], 3);
        assert_eq!(filtered.collect_until(9).await, [6, 9]);

        // A cursor beyond the head is refused.
        assert_eq!(server.get("/v1/events/stream?since=999").await.status, 410);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_is_cut_counted_and_resumes_to_completeness() {
    let server = TestApp::sqlite().await;
    // A client that reads nothing, with a tiny receive buffer, so the server's buffers fill.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.address.parse().unwrap()).await.unwrap();
    let mut slow = SseClient::connect_with(stream, &server.address, "?since=0", None).await;
    let total: u64 = 4000;
    let mut batch = Vec::new();
    for n in 1..=total {
        batch.push(server.log.append(event(n, "v1.test.bulk", 8000)));
        if batch.len() == 200 {
            for appended in futures::future::join_all(batch.drain(..)).await {
                appended.unwrap();
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = server.get("/metrics").await.text();
        if metric(&metrics, "artifactstore_feed_subscribers_cut_total") >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slow subscriber was never cut:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The stream ends after what was already buffered; resuming from its last id completes it.
    let mut seen = Vec::new();
    while let Some(frame) = slow.next().await {
        seen.extend(frame.id);
    }
    assert!(!seen.is_empty() && (*seen.last().unwrap()) < total, "cut before the end: {} frames", seen.len());
    let last = *seen.last().unwrap();
    let mut resumed = SseClient::connect(&server.address, "", Some(last)).await;
    seen.extend(resumed.collect_until(total).await);
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// A client that hangs up on an idle stream (nothing to send, no heartbeat due) is noticed at once: its stream
/// ends and its subscription is released, so departed clients cost nothing until the next event.
#[tokio::test]
async fn a_client_hanging_up_on_an_idle_stream_is_let_go_at_once() {
    let server = TestApp::sqlite().await;
    server.log.append(event(1, "v1.test.before", 0)).await.unwrap();
    let streams = || async {
        let text = server.get("/metrics").await.text();
        metric(&text, "artifactstore_sse_streams")
    };
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = SseClient::connect(&server.address, "?since=0", None).await;
        assert_eq!(client.collect_until(1).await, [1]);
        clients.push(client);
    }
    assert_eq!(streams().await, 20.0);
    drop(clients);
    // Clients that ask and leave at once, before any of the stream has been written.
    for _ in 0..20 {
        let mut stream = TcpStream::connect(&server.address).await.unwrap();
        let request = format!("GET /v1/events/stream HTTP/1.1\r\nHost: {}\r\n\r\n", server.address);
        stream.write_all(request.as_bytes()).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while streams().await > 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "streams still open 5 s after their clients hung up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The feed goes on for whoever connects next.
    let mut late = SseClient::connect(&server.address, "?since=1", None).await;
    server.log.append(event(2, "v1.test.after", 0)).await.unwrap();
    assert_eq!(late.collect_until(2).await, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_idle_subscribers_each_receive_a_new_event() {
    let server = TestApp::sqlite().await;
    server.log.append(event(1, "v1.test.before", 0)).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let mut client = SseClient::connect(&server.address, "?since=1", None).await;
        clients.push(tokio::spawn(async move { client.collect_until(2).await }));
    }
    let metrics = server.get("/metrics").await.text();
    assert!(metric(&metrics, "artifactstore_sse_streams") >= 1000.0, "{metrics}");
    server.log.append(event(2, "v1.test.after", 0)).await.unwrap();
    let mut received = 0;
    for client in clients {
        let seen = tokio::time::timeout(Duration::from_secs(60), client).await.unwrap().unwrap();
        assert_eq!(seen, [2]);
        received += 1;
    }
    assert_eq!(received, 1000);
}

#[tokio::test]
async fn cbor_sequences_carry_the_exact_payload_bytes() {
    for backend in BACKENDS {
        let Some(server) = TestApp::builder().backend(backend).start().await else { continue };
        for n in 1..=4 {
            server.log.append(event(n, "v1.test.cbor", 3)).await.unwrap();
        }
        let response = server
            .send(server.request(Method::GET, "/v1/events?since=0").header("accept", "application/cbor-seq"))
            .await;
        assert_eq!(response.headers["content-type"], "application/cbor-seq");
        assert_eq!(response.headers["feed-next"], "4");
        let log_id = response.header("log-id").to_owned();
        let body = response.body;
        let items = artifactstore_cbor::decode_sequence(&body).expect("canonical CBOR items");
        assert_eq!(items.len(), 4);
        let mut previous = [0u8; 32];
        for (i, item) in items.iter().enumerate() {
            let map = item.as_map().unwrap();
            let get = |key: &str| map.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v.clone()).unwrap();
            let payload = get("payload").as_bytes().unwrap().clone();
            let digest = format!("blake3:{}", blake3::hash(&payload).to_hex());
            assert_eq!(get("payload_digest").as_text().unwrap(), digest);
            assert_eq!(
                artifactstore_cbor::encode_value(&artifactstore_cbor::decode_value(&payload).unwrap()).unwrap(),
                payload
            );
            let stored = server.log.get(i as u64 + 1).await.unwrap().unwrap();
            assert_eq!(payload, stored.payload);
            assert_eq!(artifactstore_eventlog::chain_hash(&previous, &stored), stored.chain_hash);
            assert_eq!(get("chain_hash").as_text().unwrap(), format!("blake3:{}", hex::encode(stored.chain_hash)));
            previous = stored.chain_hash;
        }
        assert_eq!(log_id, server.log.head().log_id.to_string());
    }
}

#[tokio::test]
async fn metrics_speak_prometheus() {
    let server = TestApp::sqlite().await;
    server.log.append(event(1, "v1.test.m", 0)).await.unwrap();
    server.get("/v1/events").await;
    server.get("/nowhere").await;
    let response = server.get("/metrics").await;
    assert!(response.header("content-type").starts_with("text/plain"));
    let text = response.text();
    assert_eq!(metric(&text, "artifactstore_head_sequence"), 1.0);
    assert_eq!(metric(&text, "artifactstore_events_appended_total"), 1.0);
    assert!(
        text.contains("artifactstore_http_requests_total{route=\"/v1/events\",method=\"GET\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("status=\"404\""), "{text}");
    for name in ["artifactstore_upload_sessions", "artifactstore_feed_subscribers", "artifactstore_relay_lag_events"] {
        metric(&text, name);
    }
}
