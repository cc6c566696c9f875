//! Requests that go wrong: a chunk broken off midway, a body that stalls, malformed input and limits; each is
//! answered with a problem document and moves nothing.

use std::time::Duration;

use artifactstore::config::UploadLimits;
use artifactstore_digest::DualDigest;
use artifactstore_tests::{bytes, header_u64, problem, Store, TestApp, SETUPS};
use reqwest::Method;
use serde_json::json;

/// Sends a `PATCH` that promises `promised` bytes but breaks off after `sent` of them, the way a dropped connection
/// does, and waits until the server has let go of the session.
async fn broken_patch(app: &TestApp, session: &str, offset: u64, promised: usize, sent: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let address = app.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "PATCH {session} HTTP/1.1\r\nhost: {address}\r\nupload-offset: {offset}\r\n\
         content-type: application/offset+octet-stream\r\ncontent-length: {promised}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(sent).await.unwrap();
    socket.flush().await.unwrap();
    // Let the server receive and write what was sent before the connection drops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(socket);
    for _ in 0..100 {
        let head = app.request(Method::HEAD, session).send().await.unwrap();
        assert_eq!(header_u64(&head, "upload-offset"), offset, "a broken chunk is not acknowledged");
        if app.lease(session).await.1.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the broken request never released the session");
}

#[tokio::test]
async fn a_chunk_broken_off_midway_leaves_no_bytes_in_the_blob() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let data = bytes(3 * 1024 * 1024 + 7, 7);
        let acked = 1024 * 1024 + 3;
        let junk = bytes(2 * 1024 * 1024 + 11, 8);

        // Commit with no body right after a broken chunk: the blob is the acknowledged bytes, nothing more.
        let session = app.open_session(None).await;
        assert_eq!(app.send_chunk(&session, 0, data[..acked].to_vec()).await.status(), 202);
        broken_patch(&app, &session, acked as u64, 4 * 1024 * 1024, &junk).await;
        let head = &data[..acked];
        let digest = DualDigest::of(head);
        let response = app.request(Method::PUT, &format!("{session}?digest={}", digest.blake3)).send().await.unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let got = app.request(Method::GET, &format!("/v1/blobs/{}", digest.blake3)).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap().as_ref(), head);
        // Downloads read the recorded length; the store must hold exactly those bytes too.
        let stored = app.instance.store.size_of(&digest.blake3.hex()).await.unwrap();
        assert_eq!(stored, Some(acked as u64), "the stored blob is exactly the acknowledged bytes");

        // Resumed after a broken chunk, with the rest riding on the commit: the whole blob and nothing else.
        let session = app.open_session(None).await;
        assert_eq!(app.send_chunk(&session, 0, data[..acked].to_vec()).await.status(), 202);
        broken_patch(&app, &session, acked as u64, 4 * 1024 * 1024, &junk).await;
        let digest = DualDigest::of(&data);
        let response = app.commit_at(&session, &digest.sha256, acked as u64, data[acked..].to_vec()).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let got = app.request(Method::GET, &format!("/v1/blobs/{}", digest.blake3)).send().await.unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
        let stored = app.instance.store.size_of(&digest.blake3.hex()).await.unwrap();
        assert_eq!(stored, Some(data.len() as u64));
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);
    }
}

/// Sends a request whose head promises `promised` body bytes, then only `sent` of them, and keeps the connection
/// open without sending more, the way a client that vanished without closing does. Returns the server's answer
/// (status line, headers and body as text) and how long it took to come.
async fn stalled_request(app: &TestApp, head: &str, promised: usize, sent: &[u8]) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!("{head}\r\nhost: {address}\r\ncontent-length: {promised}\r\nconnection: close\r\n\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(sent).await.unwrap();
    socket.flush().await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut answer))
        .await
        .expect("the server never ended a stalled request")
        .unwrap();
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[tokio::test]
async fn a_stalled_body_is_ended_and_its_session_freed() {
    for (backend, kind) in SETUPS {
        let limits = UploadLimits { body_idle: Duration::from_secs(2), ..UploadLimits::default() };
        let Some(app) = TestApp::builder().backend(backend).store(kind).limits(limits).start().await else { continue };
        let data = bytes(300_000, 9);
        let session = app.open_session(None).await;
        assert_eq!(app.send_chunk(&session, 0, data[..100_000].to_vec()).await.status(), 202);

        // A chunk that stops halfway and never ends: the server answers 408 once the body has been silent for the
        // configured two seconds, closes the connection, and acknowledges none of it.
        let junk = bytes(50_000, 10);
        let (answer, waited) = stalled_request(
            &app,
            &format!(
                "PATCH {session} HTTP/1.1\r\nupload-offset: 100000\r\ncontent-type: application/offset+octet-stream"
            ),
            200_000,
            &junk,
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("application/problem+json") && answer.contains("\"request_timeout\""), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        assert!(waited >= Duration::from_millis(1900), "answered after {waited:?}, before the body was idle for 2 s");
        let head = app.request(Method::HEAD, &session).send().await.unwrap();
        assert_eq!(header_u64(&head, "upload-offset"), 100_000);

        // The session is free at once (not after the writer's 15-minute lease): the client resumes and commits, and
        // the blob holds the acknowledged bytes and the resumed ones, none of the stalled chunk's.
        let resumed = app.send_chunk(&session, 100_000, data[100_000..].to_vec()).await;
        assert_eq!(resumed.status(), 202, "{}", resumed.text().await.unwrap());
        let digest = DualDigest::of(&data);
        let response = app.request(Method::PUT, &format!("{session}?digest={}", digest.blake3)).send().await.unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let got = app.request(Method::GET, &format!("/v1/blobs/{}", digest.blake3)).send().await.unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());

        // A commit whose last chunk stalls (on a session that has bytes, so the commit holds its lease), a whole blob
        // on a fresh session's commit, a one-request upload and a package manifest: each ends the same way, and
        // only the commits resumed after them log events.
        let before = app.head_now().await;
        let other = bytes(1000, 11);
        let other_digest = DualDigest::of(&other).blake3;
        let session = app.open_session(None).await;
        assert_eq!(app.send_chunk(&session, 0, other[..400].to_vec()).await.status(), 202);
        let (answer, _) = stalled_request(
            &app,
            &format!("PUT {session}?digest={other_digest} HTTP/1.1\r\nupload-offset: 400"),
            600,
            &other[400..410],
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let resumed = app.commit_at(&session, &other_digest, 400, other[400..].to_vec()).await;
        assert_eq!(resumed.status(), 201, "{}", resumed.text().await.unwrap());
        let third = bytes(1000, 12);
        let third_digest = DualDigest::of(&third).blake3;
        let session = app.open_session(None).await;
        let (answer, _) = stalled_request(
            &app,
            &format!("PUT {session}?digest={third_digest} HTTP/1.1\r\nupload-offset: 0"),
            third.len(),
            &third[..10],
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let resumed = app.commit_whole(&session, &third_digest.to_string(), third.clone()).await;
        assert_eq!(resumed.status(), 201, "{}", resumed.text().await.unwrap());
        let fourth = bytes(1000, 13);
        let fourth_digest = DualDigest::of(&fourth).blake3;
        let (answer, _) = stalled_request(
            &app,
            &format!("POST /v1/uploads?digest={fourth_digest} HTTP/1.1\r\ncontent-type: application/octet-stream"),
            fourth.len(),
            &fourth[..10],
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(!app.stored_blob(&fourth_digest.hex()).await, "a stalled one-request upload stores nothing");
        let manifest = json!({"files": [{"path": "f", "digest": digest.blake3.to_string()}]}).to_string();
        let (answer, _) = stalled_request(
            &app,
            "PUT /v1/packages/team/stalled/versions/1 HTTP/1.1\r\ncontent-type: application/json",
            manifest.len(),
            &manifest.as_bytes()[..10],
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert_eq!(app.head_now().await, before + 2, "only the resumed commits logged events");
        let package = app.request(Method::GET, "/v1/packages/team/stalled").send().await.unwrap();
        assert_eq!(package.status(), 404);
        assert!(app.staged().await.is_empty(), "stalled bodies left staged bytes: {:?}", app.staged().await);
    }
}

#[tokio::test]
async fn bad_input_gets_4xx_problems_and_moves_nothing() {
    for (backend, kind) in SETUPS {
        let limits = UploadLimits {
            max_chunk_bytes: 64 * 1024,
            max_blob_bytes: 256 * 1024,
            max_open_sessions: 4,
            ..UploadLimits::default()
        };
        let Some(app) = TestApp::builder().backend(backend).store(kind).limits(limits).start().await else { continue };
        let data = bytes(1000, 8);
        let digest = DualDigest::of(&data);
        assert_eq!(app.upload_in_chunks(&data, 1000).await.status(), 201);
        let head = app.head_now().await;
        let session = app.open_session(None).await;
        let pkg = "/v1/packages/team/app/versions/1";
        let good_file = json!({"path": "f", "digest": digest.blake3.to_string()});

        let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
            // Upload sessions.
            (
                app.request(Method::POST, "/v1/uploads").header("content-type", "application/json").body("{not json"),
                400,
                "bad_request",
            ),
            (app.request(Method::POST, "/v1/uploads").json(&json!({"size": "big"})), 400, "bad_request"),
            (app.request(Method::POST, "/v1/uploads").json(&json!({"sha256": "sha256:zz"})), 400, "bad_request"),
            (
                app.request(Method::POST, "/v1/uploads").json(&json!({"blake3": digest.sha256.to_string()})),
                400,
                "bad_request",
            ),
            (app.request(Method::POST, "/v1/uploads").json(&json!({"size": 10_000_000})), 413, "too_large"),
            (app.request(Method::POST, "/v1/uploads").json(&json!({"surprise": 1})), 400, "bad_request"),
            (
                app.request(Method::POST, "/v1/uploads").header("content-type", "text/plain").body("x"),
                415,
                "unsupported_media_type",
            ),
            (app.request(Method::POST, "/v1/uploads?digest=nope").body("x"), 400, "bad_request"),
            (
                app.request(Method::POST, &format!("/v1/uploads?digest={}", DualDigest::of(b"y").blake3)).body("x"),
                422,
                "digest_mismatch",
            ),
            (app.request(Method::PATCH, &session).body("x"), 400, "bad_request"),
            (app.request(Method::PATCH, &session).header("upload-offset", "-1").body("x"), 400, "bad_request"),
            (app.request(Method::PATCH, &session).header("upload-offset", "5").body("x"), 409, "offset_mismatch"),
            (app.request(Method::PATCH, &session).header("content-range", "bytes 9-2/*").body("x"), 400, "bad_request"),
            // A range whose length overflows a u64, or that ends past the total it gives.
            (
                app.request(Method::PATCH, &session).header("content-range", "bytes 0-18446744073709551615/*"),
                400,
                "bad_request",
            ),
            (
                app.request(Method::PATCH, &session).header("content-range", "bytes 0-2/2").body("xyz"),
                400,
                "bad_request",
            ),
            (
                app.request(Method::PATCH, &session).header("upload-offset", "0").body(vec![0u8; 65 * 1024]),
                413,
                "too_large",
            ),
            (
                app.request(Method::PATCH, "/v1/uploads/not-a-uuid").header("upload-offset", "0").body("x"),
                404,
                "not_found",
            ),
            (
                app.request(Method::PATCH, &format!("/v1/uploads/{}", uuid::Uuid::now_v7()))
                    .header("upload-offset", "0")
                    .body("x"),
                404,
                "not_found",
            ),
            (app.request(Method::PUT, &session), 400, "bad_request"),
            (app.request(Method::PUT, &format!("{session}?digest=sha1:00")), 400, "bad_request"),
            (app.request(Method::GET, &session), 405, "method_not_allowed"),
            // Packages.
            (app.request(Method::PUT, pkg).header("content-type", "application/json").body("[1,"), 400, "bad_request"),
            (
                app.request(Method::PUT, pkg).header("content-type", "application/cbor").body(vec![0xa1, 0x61]),
                400,
                "bad_request",
            ),
            (
                app.request(Method::PUT, pkg).header("content-type", "application/cbor").body(vec![0x9f, 0x01]),
                400,
                "bad_request",
            ),
            (app.request(Method::PUT, pkg).json(&json!({"files": []})), 422, "invalid_manifest"),
            (app.request(Method::PUT, pkg).json(&json!({"files": [good_file, good_file]})), 422, "invalid_manifest"),
            (
                app.request(Method::PUT, pkg)
                    .json(&json!({"files": [{"path": "../etc/passwd", "digest": digest.blake3.to_string()}]})),
                422,
                "invalid_manifest",
            ),
            (
                app.request(Method::PUT, pkg)
                    .json(&json!({"files": [{"path": "/abs", "digest": digest.blake3.to_string()}]})),
                422,
                "invalid_manifest",
            ),
            (
                app.request(Method::PUT, pkg)
                    .json(&json!({"files": [{"path": "a\u{0}b", "digest": digest.blake3.to_string()}]})),
                422,
                "invalid_manifest",
            ),
            (
                app.request(Method::PUT, pkg).json(&json!({"files": [{"path": "f", "digest": "md5:00"}]})),
                422,
                "invalid_manifest",
            ),
            // Bidirectional, zero-width, byte-order and line-separator characters in a path.
            (
                app.request(Method::PUT, pkg).json(&json!({"files": [
                    {"path": "a\u{202E}b", "digest": digest.blake3.to_string()},
                ]})),
                422,
                "invalid_manifest",
            ),
            (
                app.request(Method::PUT, pkg).json(&json!({"files": [
                    {"path": "\u{FEFF}a\u{200B}", "digest": digest.blake3.to_string()},
                ]})),
                422,
                "invalid_manifest",
            ),
            (
                app.request(Method::PUT, pkg).json(&json!({"files": [
                    {"path": "a\u{2028}b", "digest": digest.blake3.to_string()},
                ]})),
                422,
                "invalid_manifest",
            ),
            // A media type is checked alike on publish and on upload (RFC 6838).
            (
                app.request(Method::PUT, pkg).json(&json!({"files": [
                    {"path": "f", "digest": digest.blake3.to_string(), "media_type": "text/plain\r\nX-Evil: 1"},
                ]})),
                422,
                "invalid_manifest",
            ),
            (
                app.request(Method::PUT, pkg).json(&json!({"files": [
                    {"path": "f", "digest": digest.blake3.to_string(), "media_type": "text/pl\u{0}ain"},
                ]})),
                422,
                "invalid_manifest",
            ),
            (
                app.request(Method::POST, "/v1/uploads").json(&json!({"media_type": "text/plain\r\nX-Evil: 1"})),
                400,
                "bad_request",
            ),
            (
                app.request(Method::PUT, pkg).json(&json!({"files": [good_file], "metadata": [1]})),
                422,
                "invalid_manifest",
            ),
            (app.request(Method::PUT, pkg).json(&json!({"files": [good_file], "extra": 1})), 400, "bad_request"),
            (
                app.request(Method::PUT, pkg)
                    .header("content-type", "application/json")
                    .body(vec![b' '; 17 * 1024 * 1024]),
                413,
                "too_large",
            ),
            (
                app.request(Method::PUT, "/v1/packages/Team/App/versions/1").json(&json!({"files": [good_file]})),
                400,
                "bad_request",
            ),
            (
                app.request(Method::PUT, "/v1/packages/team/app/versions/-1").json(&json!({"files": [good_file]})),
                400,
                "bad_request",
            ),
            (
                app.request(Method::PUT, "/v1/packages/team/versions/versions/1").json(&json!({"files": [good_file]})),
                400,
                "bad_request",
            ),
            (
                app.request(Method::PUT, "/v1/packages/a%2F..%2Fb/versions/1").json(&json!({"files": [good_file]})),
                400,
                "bad_request",
            ),
            (app.request(Method::GET, &format!("{pkg}/files/..%2F..%2Fetc%2Fpasswd")), 400, "bad_request"),
            (
                app.request(Method::PUT, &format!("{pkg}/retention")).json(&json!({"until": "tomorrow"})),
                400,
                "bad_request",
            ),
            (app.request(Method::PUT, &format!("{pkg}/retention")).json(&json!({})), 400, "bad_request"),
            (app.request(Method::PUT, &format!("{pkg}/retention")).json(&json!({"hold": true})), 404, "not_found"),
            (app.request(Method::POST, pkg), 405, "method_not_allowed"),
            (app.request(Method::GET, "/v1/packages?limit=0"), 400, "bad_request"),
            (app.request(Method::GET, "/v1/packages?bogus=1"), 400, "bad_request"),
        ];
        for (i, (request, status, code)) in cases.into_iter().enumerate() {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), status, "case {i}: {}", response.text().await.unwrap());
            problem(response, status, code).await;
        }
        // Too many sessions. A session counts once it has a row: a declared one (or any on S3) from its opening
        // (`session` has one on S3; on a filesystem it is bare, and its refused chunks wrote none)...
        let held = app.rows("upload_sessions").await;
        assert_eq!(held, i64::from(matches!(kind, Store::S3)));
        let declared = json!({"media_type": "application/x-tar"});
        for _ in held..4 {
            assert_eq!(app.request(Method::POST, "/v1/uploads").json(&declared).send().await.unwrap().status(), 201);
        }
        let refused = app.request(Method::POST, "/v1/uploads").json(&declared).send().await.unwrap();
        problem(refused, 429, "too_many_sessions").await;
        // ... a bare one from its first bytes: it opens, and its first chunk is refused, writing no row.
        if matches!(kind, Store::File) {
            let bare = app.open_session(None).await;
            problem(app.send_chunk(&bare, 0, vec![1]).await, 429, "too_many_sessions").await;
            assert_eq!(app.request(Method::HEAD, &bare).send().await.unwrap().status(), 204);
            assert_eq!(app.rows("upload_sessions").await, 4);
        }

        assert_eq!(app.request(Method::GET, "/healthz").send().await.unwrap().status(), 200);
        assert_eq!(app.request(Method::GET, "/readyz").send().await.unwrap().status(), 200);
        assert_eq!(app.head_now().await, head, "no bad request moved the head");
    }
}
