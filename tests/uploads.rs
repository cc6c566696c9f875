//! Upload sessions over real HTTP, on SQLite with a filesystem store and on PostgreSQL with an S3 store: open,
//! chunks, resume, commit (in chunks or whole), mismatches, abort, expiry, and what a commit that fails between the
//! bytes and the event leaves.

use std::time::Duration;

use artifactstore_db::Backend;
use artifactstore_digest::DualDigest;
use artifactstore_tests::{bytes, header_u64, problem, session_uuid, TestApp, SETUPS};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn upload_sessions_from_open_to_commit() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        // Over one S3 part, with chunks under S3's part minimum, so the pending tail is exercised.
        let data = bytes(12 * 1024 * 1024 + 100, 1);
        let digest = DualDigest::of(&data);
        let before = app.head_now().await;

        let response =
            app.request(Method::POST, "/v1/uploads").json(&json!({"size": data.len()})).send().await.unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(header_u64(&response, "upload-offset"), 0);
        let session = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(session.starts_with("/v1/uploads/"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["offset"], 0);
        assert!(session.ends_with(body["id"].as_str().unwrap()));
        assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));

        let chunk = 3 * 1024 * 1024;
        let first = app.send_chunk(&session, 0, data[..chunk].to_vec()).await;
        assert_eq!(first.status(), 202);
        assert_eq!(header_u64(&first, "upload-offset"), chunk as u64);
        // The save gave the lease up (in the same statement): the session is free by the time the client hears back.
        assert_eq!(app.lease(&session).await, (None, None));

        // HEAD says where to resume.
        let head = app.request(Method::HEAD, &session).send().await.unwrap();
        assert_eq!(head.status(), 204);
        assert_eq!(header_u64(&head, "upload-offset"), chunk as u64);
        assert_eq!(header_u64(&head, "upload-length"), data.len() as u64);

        // A chunk at the wrong offset is refused with the true offset.
        let wrong = app.send_chunk(&session, 0, data[..10].to_vec()).await;
        let body = problem(wrong, 409, "offset_mismatch").await;
        assert_eq!(body["offset"], chunk);
        assert_eq!(app.lease(&session).await, (None, None), "a refused chunk releases the lease too");

        // Content-Range works as well as Upload-Offset.
        let second = &data[chunk..2 * chunk];
        let response = app
            .request(Method::PATCH, &session)
            .header("content-range", format!("bytes {}-{}/*", chunk, 2 * chunk - 1))
            .body(second.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let mut offset = 2 * chunk;
        while data.len() - offset > chunk {
            let response = app.send_chunk(&session, offset as u64, data[offset..offset + chunk].to_vec()).await;
            assert_eq!(response.status(), 202);
            offset += chunk;
        }
        assert_eq!(app.head_now().await, before, "session bookkeeping logs nothing");

        // The last chunk rides on the commit.
        let response = app.commit_at(&session, &digest.sha256, offset as u64, data[offset..].to_vec()).await;
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["location"], format!("/v1/blobs/{}", digest.blake3).as_str());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["blake3"], digest.blake3.to_string());
        assert_eq!(body["sha256"], digest.sha256.to_string());
        assert_eq!(body["size"], data.len());
        assert_eq!(app.head_now().await, before + 1);
        assert!(app.stored_blob(&digest.blake3.hex()).await);
        assert!(app.staged().await.is_empty(), "commit clears staging: {:?}", app.staged().await);
        let event: Value = app.get_json(&format!("/v1/events/{}", before + 1)).await;
        assert_eq!(event["event_type"], "v1.file.ingested");
        assert_eq!(event["actor"], "anonymous");
        assert_eq!(event["payload"]["blake3"], digest.blake3.to_string());
        assert_eq!(event["payload"]["size"], data.len());

        // The session is gone.
        assert_eq!(app.request(Method::HEAD, &session).send().await.unwrap().status(), 404);

        // The bytes come back whole.
        let got = app.request(Method::GET, &format!("/v1/blobs/{}", digest.blake3)).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());

        // The same content again: 200, no new event, nothing written twice.
        let again = app.upload_in_chunks(&data, 5 * 1024 * 1024).await;
        assert_eq!(again.status(), 200);
        assert_eq!(again.headers()["location"], format!("/v1/blobs/{}", digest.blake3).as_str());
        assert_eq!(app.head_now().await, before + 1);
        assert!(app.staged().await.is_empty());

        // One-request upload: the whole blob on the POST.
        let small = bytes(1000, 2);
        let small_digest = DualDigest::of(&small);
        let response = app
            .request(Method::POST, &format!("/v1/uploads?digest={}", small_digest.blake3))
            .header("content-type", "application/octet-stream")
            .body(small.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(app.head_now().await, before + 2);
        let response = app
            .request(Method::POST, &format!("/v1/uploads?digest={}", small_digest.sha256))
            .body(small.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(app.head_now().await, before + 2);

        // An empty blob is a blob.
        let response = app.upload_in_chunks(&[], 1).await;
        assert_eq!(response.status(), 201);
        assert_eq!(app.head_now().await, before + 3);
        assert!(app.staged().await.is_empty());
    }
}

#[tokio::test]
async fn mismatches_aborts_and_expiry_store_nothing() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let data = bytes(6 * 1024 * 1024, 3);
        let digest = DualDigest::of(&data);
        let other = DualDigest::of(b"something else");
        let before = app.head_now().await;

        // Wrong digest at commit: 422, nothing stored, nothing logged.
        let session = app.open_session(None).await;
        assert_eq!(app.send_chunk(&session, 0, data.clone()).await.status(), 202);
        let response = app.request(Method::PUT, &format!("{session}?digest={}", other.blake3)).send().await.unwrap();
        let body = problem(response, 422, "digest_mismatch").await;
        assert_eq!(body["blake3"], digest.blake3.to_string());
        assert!(!app.stored_blob(&digest.blake3.hex()).await);
        assert_eq!(app.head_now().await, before);

        // Declared digests are checked too.
        let declared = app.open_session(Some(json!({"sha256": other.sha256.to_string()}))).await;
        assert_eq!(app.send_chunk(&declared, 0, data.clone()).await.status(), 202);
        let response = app.request(Method::PUT, &format!("{declared}?digest={}", digest.blake3)).send().await.unwrap();
        problem(response, 422, "digest_mismatch").await;
        assert_eq!(app.head_now().await, before);

        // A wrong digest on a commit that carries the last chunk: 422, and the chunk is kept, its save giving the
        // lease up, so the session stands at its end and is free for the next request.
        let carried = app.open_session(None).await;
        assert_eq!(app.send_chunk(&carried, 0, data[..1000].to_vec()).await.status(), 202);
        let response = app.commit_at(&carried, &other.blake3, 1000, data[1000..].to_vec()).await;
        problem(response, 422, "digest_mismatch").await;
        let head = app.request(Method::HEAD, &carried).send().await.unwrap();
        assert_eq!(header_u64(&head, "upload-offset"), data.len() as u64);
        assert_eq!(app.lease(&carried).await, (None, None));
        assert_eq!(app.head_now().await, before);

        // Abort frees the staged bytes.
        for session in [&session, &declared, &carried] {
            assert_eq!(app.request(Method::DELETE, session).send().await.unwrap().status(), 204);
            problem(app.request(Method::DELETE, session).send().await.unwrap(), 404, "not_found").await;
        }
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);

        // Expired sessions answer 404 and the sweeper reclaims their bytes.
        let session = app.open_session(None).await;
        assert_eq!(app.send_chunk(&session, 0, data[..1000].to_vec()).await.status(), 202);
        assert!(!app.staged().await.is_empty());
        let id = session_uuid(&session);
        let mut conn = app.instance.db.acquire().await.unwrap();
        artifactstore_db::execute!(&mut conn, "UPDATE upload_sessions SET expires_ms = 0 WHERE id = $1", id).unwrap();
        drop(conn);
        problem(app.send_chunk(&session, 1000, vec![1]).await, 404, "not_found").await;
        let (sessions, _) = artifactstore::jobs::sweep(app.state(), Duration::from_secs(3600)).await.unwrap();
        assert_eq!(sessions, 1);
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);
        assert_eq!(app.head_now().await, before);
    }
}

#[tokio::test]
async fn a_commit_carrying_the_whole_blob() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let data = bytes(5000, 4);
        let digest = DualDigest::of(&data);
        let other = DualDigest::of(b"not these bytes");
        let before = app.head_now().await;

        // A wrong digest: 422, and the bytes stay in the session, so a corrected commit needs no resend.
        let session = app.open_session(None).await;
        let response = app.commit_whole(&session, &other.blake3.to_string(), data.clone()).await;
        problem(response, 422, "digest_mismatch").await;
        let head = app.request(Method::HEAD, &session).send().await.unwrap();
        assert_eq!(header_u64(&head, "upload-offset"), data.len() as u64);
        assert_eq!(app.head_now().await, before);
        let response = app.request(Method::PUT, &format!("{session}?digest={}", digest.sha256)).send().await.unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        assert_eq!(app.head_now().await, before + 1);
        assert!(app.stored_blob(&digest.blake3.hex()).await);

        // The same bytes again: 200, no event, nothing left staged.
        let session = app.open_session(None).await;
        let response = app.commit_whole(&session, &digest.blake3.to_string(), data.clone()).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        assert_eq!(app.request(Method::HEAD, &session).send().await.unwrap().status(), 404);

        // New bytes in one commit: 201 with the event's sequence.
        let fresh = bytes(3000, 5);
        let session = app.open_session(None).await;
        let response = app.commit_whole(&session, &DualDigest::of(&fresh).sha256.to_string(), fresh.clone()).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["sequence"], before + 2);
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);

        // A session another request holds is not committed behind its back: 409, nothing stored or logged. (A
        // declared session has its row from the start; a bare one's is written by the request that holds it.)
        let session = app.open_session(Some(json!({"media_type": "application/octet-stream"}))).await;
        let id = session_uuid(&session);
        let mut conn = app.instance.db.acquire().await.unwrap();
        artifactstore_db::execute!(
            &mut conn,
            "UPDATE upload_sessions SET lease = $2, lease_until_ms = $3 WHERE id = $1",
            id,
            uuid::Uuid::new_v4(),
            i64::MAX / 2
        )
        .unwrap();
        drop(conn);
        let held = bytes(2000, 6);
        let response = app.commit_whole(&session, &DualDigest::of(&held).blake3.to_string(), held.clone()).await;
        problem(response, 409, "conflict").await;
        assert!(!app.stored_blob(&DualDigest::of(&held).blake3.hex()).await);
        assert_eq!(app.head_now().await, before + 2);
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);
    }
}

/// Makes the log refuse `v1.file.ingested` events, as a crash between the bytes and the event would.
async fn refuse_ingest_events(app: &TestApp, refuse: bool) {
    let mut conn = app.instance.db.acquire().await.unwrap();
    let statements: &[&str] = match (app.instance.db.backend(), refuse) {
        (Backend::Sqlite, true) => &["CREATE TRIGGER refuse_ingest BEFORE INSERT ON events \
             WHEN NEW.event_type = 'v1.file.ingested' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"],
        (Backend::Sqlite, false) => &["DROP TRIGGER refuse_ingest"],
        (Backend::Postgres, true) => &[
            "CREATE FUNCTION refuse_ingest() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.event_type = 'v1.file.ingested' THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_ingest BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_ingest()",
        ],
        (Backend::Postgres, false) => &["DROP TRIGGER refuse_ingest ON events", "DROP FUNCTION refuse_ingest()"],
    };
    for statement in statements {
        artifactstore_db::execute!(&mut conn, *statement).unwrap();
    }
}

#[tokio::test]
async fn a_failure_between_bytes_and_event_leaves_an_orphan_never_a_dangling_event() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let data = bytes(6 * 1024 * 1024 + 7, 10);
        let digest = DualDigest::of(&data);
        let before = app.head_now().await;
        let session = app.open_session(None).await;
        assert_eq!(app.send_chunk(&session, 0, data.clone()).await.status(), 202);

        refuse_ingest_events(&app, true).await;
        let response = app.request(Method::PUT, &format!("{session}?digest={}", digest.blake3)).send().await.unwrap();
        assert_eq!(response.status(), 500);
        // The bytes are durable at their address, but nothing names them.
        assert!(app.stored_blob(&digest.blake3.hex()).await);
        assert_eq!(app.head_now().await, before);
        problem(
            app.request(Method::GET, &format!("/v1/blobs/{}", digest.blake3)).send().await.unwrap(),
            404,
            "not_found",
        )
        .await;

        // The session survived; committing again logs the event for the bytes already in place.
        refuse_ingest_events(&app, false).await;
        let response = app
            .request(Method::PUT, &format!("{session}?digest={}", digest.blake3))
            .header("upload-offset", data.len())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(app.head_now().await, before + 1);
        let got = app.request(Method::GET, &format!("/v1/blobs/{}", digest.sha256)).send().await.unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
        assert!(app.staged().await.is_empty());
    }
}
