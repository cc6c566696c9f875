//! Limits that keep a caller from wearing the server down: bounded metric labels, a share of upload sessions per
//! subject, deadlines for request heads and idle connections, a cap on open connections, a floor on body rates, a
//! deadline for clients that stop reading.

use std::time::Duration;

use artifactstore::config::UploadLimits;
use artifactstore_tests::{bytes, header_u64, problem, Store, TestApp, SETUPS};
use reqwest::Method;
use serde_json::json;

/// Made-up methods are counted under one label, so no request can grow `/metrics` without bound.
#[tokio::test]
async fn made_up_methods_share_one_metrics_label() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let before = app.get("/metrics").await.text().len();
        for n in 0..300 {
            let method = Method::from_bytes(format!("MADEUP{n}{}", "X".repeat(200)).as_bytes()).unwrap();
            let status = app.request(method, "/v1/events").send().await.unwrap().status();
            assert!(status.is_client_error(), "{backend:?}: {status}");
        }
        let metrics = app.get("/metrics").await.text();
        assert!(!metrics.contains("MADEUP"), "{backend:?}: a made-up method became a label");
        assert!(metrics.contains("method=\"other\""), "{backend:?}");
        assert!(metrics.len() < before + 2_000, "{backend:?}: /metrics grew from {before} to {} bytes", metrics.len());
    }
}

/// One subject holds at most its share of the open upload sessions, so it cannot lock the others out.
#[tokio::test]
async fn a_subject_holds_only_its_share_of_the_sessions() {
    use artifactstore::auth::{Scope, TokenConfig};
    let tokens = vec![
        TokenConfig::new("first-writer-0123456789", "first", vec![Scope::Write], vec![String::new()]),
        TokenConfig::new("second-writer-0123456789", "second", vec![Scope::Write], vec![String::new()]),
    ];
    let limits = UploadLimits { max_open_sessions: 4, max_sessions_per_subject: 2, ..UploadLimits::default() };
    for (backend, kind) in SETUPS {
        let Some(mut app) =
            TestApp::builder().backend(backend).store(kind).tokens(tokens.clone()).limits(limits.clone()).start().await
        else {
            continue;
        };
        let declared = json!({"media_type": "application/x-tar"});
        app.token = Some("first-writer-0123456789".into());
        for _ in 0..2 {
            assert_eq!(app.request(Method::POST, "/v1/uploads").json(&declared).send().await.unwrap().status(), 201);
        }
        let refused = app.request(Method::POST, "/v1/uploads").json(&declared).send().await.unwrap();
        let body = problem(refused, 429, "too_many_sessions").await;
        assert!(body["detail"].as_str().unwrap().contains("one subject"), "{backend:?}: {body}");
        if matches!(kind, Store::File) {
            // A bare session counts from its first bytes: those are refused too.
            let bare = app.open_session(None).await;
            problem(app.send_chunk(&bare, 0, vec![1]).await, 429, "too_many_sessions").await;
        }
        // The other subject still has its share.
        app.token = Some("second-writer-0123456789".into());
        for _ in 0..2 {
            assert_eq!(app.request(Method::POST, "/v1/uploads").json(&declared).send().await.unwrap().status(), 201);
        }
        assert_eq!(app.rows("upload_sessions").await, 4, "{backend:?}");
    }
}

/// Whether the server closes `socket` within `within` (reads end, or fail), discarding what it sends.
async fn closed_within(socket: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// A half-sent request head, a connection that never speaks and a kept-alive one left idle are each closed after the
/// header read timeout; past the cap on open connections a new one is answered `503` with a problem document.
#[tokio::test]
async fn slow_and_idle_connections_are_let_go_and_open_ones_capped() {
    use artifactstore::config::ConnectionLimits;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    for (backend, kind) in SETUPS {
        let quick =
            ConnectionLimits { header_read: Duration::from_secs(1), max_open: 100, ..ConnectionLimits::default() };
        let Some(app) = TestApp::builder()
            .backend(backend)
            .store(kind)
            .config(move |config| config.connections = quick)
            .start()
            .await
        else {
            continue;
        };
        let address = app.base.trim_start_matches("http://").to_owned();
        let mut half = TcpStream::connect(&address).await.unwrap();
        half.write_all(b"GET /v1/events HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let mut silent = TcpStream::connect(&address).await.unwrap();
        let mut idle = TcpStream::connect(&address).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        for (what, socket) in [("a half-sent head", &mut half), ("a silent connection", &mut silent)] {
            assert!(closed_within(socket, Duration::from_secs(5)).await, "{backend:?}: {what} was held open");
        }
        assert!(closed_within(&mut idle, Duration::from_secs(5)).await, "{backend:?}: an idle kept-alive connection");
        assert_eq!(app.get("/healthz").await.status, 200);
        app.stop().await;

        let capped = ConnectionLimits { max_open: 2, ..ConnectionLimits::default() };
        let Some(app) = TestApp::builder()
            .backend(backend)
            .store(kind)
            .config(move |config| config.connections = capped)
            .start()
            .await
        else {
            continue;
        };
        let address = app.base.trim_start_matches("http://").to_owned();
        let first = TcpStream::connect(&address).await.unwrap();
        let _second = TcpStream::connect(&address).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let refused = reqwest::Client::new().get(format!("{}/healthz", app.base)).send().await.unwrap();
        assert_eq!(refused.headers()["retry-after"], "1");
        let body = problem(refused, 503, "too_many_connections").await;
        assert!(body["detail"].as_str().unwrap().contains("2 connections"), "{backend:?}: {body}");
        drop(first);
        let mut served = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let client = reqwest::Client::new();
            if client.get(format!("{}/healthz", app.base)).send().await.unwrap().status() == 200 {
                served = true;
                break;
            }
        }
        assert!(served, "{backend:?}: a closed connection gives its place back");
    }
}

/// A body that trickles (here 50 bytes a second against a floor of 1,000 over each 2 s) is ended with `408` as a
/// silent one is, and its session is free again at its last acknowledged offset.
#[tokio::test]
async fn a_trickling_body_is_ended_and_its_session_freed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (backend, kind) in SETUPS {
        let limits =
            UploadLimits { body_idle: Duration::from_secs(2), min_body_rate: 1_000, ..UploadLimits::default() };
        let Some(app) = TestApp::builder().backend(backend).store(kind).limits(limits).start().await else { continue };
        let data = bytes(20_000, 21);
        let session = app.open_session(None).await;
        assert_eq!(app.send_chunk(&session, 0, data[..5_000].to_vec()).await.status(), 202);

        let address = app.base.trim_start_matches("http://").to_owned();
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "PATCH {session} HTTP/1.1\r\nhost: {address}\r\nupload-offset: 5000\r\n\
             content-type: application/offset+octet-stream\r\ncontent-length: 15000\r\nconnection: close\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let (mut reader, mut writer) = socket.into_split();
        let trickle = tokio::spawn(async move {
            for piece in data[5_000..6_000].chunks(10) {
                if writer.write_all(piece).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut answer))
            .await
            .expect("the server never ended a trickling body")
            .unwrap();
        trickle.abort();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{backend:?}: {answer}");
        assert!(answer.contains("under the floor of 1000 bytes a second"), "{backend:?}: {answer}");
        let head = app.request(Method::HEAD, &session).send().await.unwrap();
        assert_eq!(header_u64(&head, "upload-offset"), 5_000, "{backend:?}: nothing of the trickle counts");
        let data = bytes(20_000, 21);
        assert_eq!(app.send_chunk(&session, 5_000, data[5_000..].to_vec()).await.status(), 202, "{backend:?}");
    }
}

/// A client that stops taking a response's bytes (here an SSE stream from 0 over 3 MB of events, on a socket with a
/// small receive buffer, never read) has its connection closed after the send stall deadline, and the server lets go
/// of what the stream held.
#[tokio::test]
async fn a_client_that_stops_reading_is_let_go() {
    use artifactstore::config::ConnectionLimits;
    use artifactstore_tests::event;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (backend, kind) in SETUPS {
        let stall = ConnectionLimits { send_stall: Duration::from_secs(2), ..ConnectionLimits::default() };
        let Some(app) =
            TestApp::builder().backend(backend).store(kind).config(move |c| c.connections = stall).start().await
        else {
            continue;
        };
        let pad = "x".repeat(100_000);
        for n in 0..30u64 {
            app.append(event("v1.system.test", Some(n.into()), &json!({"n": n, "pad": pad}))).await;
        }
        let address: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(address).await.unwrap();
        stream.write_all(b"GET /v1/events/stream?since=0 HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        // Past the deadline the server has closed: what was sent drains, then the stream ends (it would otherwise go
        // on with the rest of the 3 MB and heartbeats).
        let mut received = Vec::new();
        let drained = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await;
        assert!(drained.is_ok(), "{backend:?}: the stalled stream was still open");
        assert!(received.len() < 3_000_000, "{backend:?}: {} bytes arrived after the stall", received.len());
        let metrics = app.get("/metrics").await.text();
        assert!(metrics.contains("artifactstore_sse_streams 0"), "{backend:?}: the stream is still counted open");
    }
}

/// A request target or a request head too large to read is answered with a problem document, as every refusal is,
/// though hyper answers it before any request reaches the service.
#[tokio::test]
async fn targets_and_heads_too_large_get_problem_documents() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(app) = TestApp::builder().start().await else { return };
    let address = app.base.trim_start_matches("http://").to_owned();
    let long_target = format!("GET /v1/packages/{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(100_000));
    let long_head = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n\r\n", "b".repeat(2_000_000));
    for (request, status, code) in [(long_target, "414", "uri_too_long"), (long_head, "431", "header_too_large")] {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        // The server may answer and close before it has read the whole request.
        let _ = socket.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        assert!(answer.contains("content-type: application/problem+json"), "{answer}");
        let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["code"], code);
        assert_eq!(body["status"].to_string(), status);
    }
    assert_eq!(app.get("/healthz").await.status, 200);
}
