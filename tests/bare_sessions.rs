//! Bare upload sessions (ADR 0022): a session opened without declarations on a filesystem store writes nothing
//! until its first bytes, is reached only through its tagged id, and belongs to the subject that opened it.

use std::time::Duration;

use artifactstore::auth::{Scope, TokenConfig};
use artifactstore::config::UploadLimits;
use artifactstore::session_key::SessionKey;
use artifactstore_db::Backend;
use artifactstore_digest::DualDigest;
use artifactstore_tests::{bytes, header_u64, problem, session_uuid, Store, TestApp};
use reqwest::Method;

/// A session opened without declarations on a filesystem store writes nothing until its first bytes (ADR 0022):
/// its id is checked by its tag, its commit or abort closes it, and it expires with its id.
#[tokio::test]
async fn bare_sessions_write_nothing_until_their_first_bytes() {
    let setups = [(Backend::Sqlite, Store::File), (Backend::Postgres, Store::File), (Backend::Postgres, Store::S3)];
    for (backend, kind) in setups {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let before = app.head_now().await;
        let session = app.open_session(None).await;
        if matches!(kind, Store::S3) {
            // An S3 session starts its multipart upload at the opening, which its row remembers.
            assert!(!session.contains('.'), "{session}");
            assert_eq!(app.rows("upload_sessions").await, 1);
            continue;
        }
        assert!(session.contains('.'), "{session}");
        assert_eq!(app.rows("upload_sessions").await, 0, "a bare session writes nothing");
        let head = app.request(Method::HEAD, &session).send().await.unwrap();
        assert_eq!(head.status(), 204);
        assert_eq!(header_u64(&head, "upload-offset"), 0);
        assert!(head.headers().contains_key("upload-expires"));

        // An altered tag, or a tag on another UUID, names no session.
        let mut forged = session.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).unwrap();
        let (_, tag) = session.split_once('.').unwrap();
        let moved = format!("/v1/uploads/{}.{tag}", uuid::Uuid::now_v7());
        for path in [&forged, &moved] {
            assert_eq!(app.request(Method::HEAD, path).send().await.unwrap().status(), 404);
            problem(app.send_chunk(path, 0, vec![1]).await, 404, "not_found").await;
            problem(
                app.commit_whole(path, &DualDigest::of(b"x").blake3.to_string(), b"x".to_vec()).await,
                404,
                "not_found",
            )
            .await;
            problem(app.request(Method::DELETE, path).send().await.unwrap(), 404, "not_found").await;
        }
        assert_eq!(app.rows("upload_sessions").await, 0, "{:?}", app.staged().await);

        // Committed whole: no row, and the id is closed; the same commit again finds no session.
        let data = bytes(4096, 41);
        let digest = DualDigest::of(&data).blake3.to_string();
        assert_eq!(app.commit_whole(&session, &digest, data.clone()).await.status(), 201);
        assert_eq!((app.rows("upload_sessions").await, app.rows("upload_sessions_closed").await), (0, 1));
        assert_eq!(app.request(Method::HEAD, &session).send().await.unwrap().status(), 404);
        problem(app.commit_whole(&session, &digest, data.clone()).await, 404, "not_found").await;
        problem(app.send_chunk(&session, 0, vec![1]).await, 404, "not_found").await;
        assert_eq!(app.head_now().await, before + 1);

        // Aborted before any bytes: gone.
        let aborted = app.open_session(None).await;
        assert_eq!(app.request(Method::DELETE, &aborted).send().await.unwrap().status(), 204);
        assert_eq!(app.request(Method::HEAD, &aborted).send().await.unwrap().status(), 404);
        problem(app.request(Method::DELETE, &aborted).send().await.unwrap(), 404, "not_found").await;
        problem(app.send_chunk(&aborted, 0, vec![1]).await, 404, "not_found").await;

        // A chunk refused before its body is read writes no row.
        let chunked = app.open_session(None).await;
        problem(app.send_chunk(&chunked, 5, vec![1]).await, 409, "offset_mismatch").await;
        assert_eq!(app.rows("upload_sessions").await, 0);

        // In chunks: the first chunk writes the row, the commit deletes it and closes the id.
        let data = bytes(5000, 42);
        assert_eq!(app.send_chunk(&chunked, 0, data[..3000].to_vec()).await.status(), 202);
        assert_eq!(app.rows("upload_sessions").await, 1);
        // Its row is reached only through the id with its tag.
        let untagged = chunked.split_once('.').unwrap().0.to_owned();
        assert_eq!(app.request(Method::HEAD, &untagged).send().await.unwrap().status(), 404);
        problem(app.send_chunk(&untagged, 3000, vec![1]).await, 404, "not_found").await;
        problem(app.commit_whole(&untagged, &DualDigest::of(&data).blake3.to_string(), vec![]).await, 404, "not_found")
            .await;
        problem(app.request(Method::DELETE, &untagged).send().await.unwrap(), 404, "not_found").await;
        assert_eq!(app.lease(&chunked).await, (None, None));
        let head = app.request(Method::HEAD, &chunked).send().await.unwrap();
        assert_eq!(header_u64(&head, "upload-offset"), 3000);
        let response = app.commit_at(&chunked, &DualDigest::of(&data).sha256, 3000, data[3000..].to_vec()).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        assert_eq!((app.rows("upload_sessions").await, app.rows("upload_sessions_closed").await), (0, 3));
        assert_eq!(app.request(Method::HEAD, &chunked).send().await.unwrap().status(), 404);
        problem(app.send_chunk(&chunked, 5000, vec![1]).await, 404, "not_found").await;
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);
        assert_eq!(app.head_now().await, before + 2);

        // Aborted with a row: the row and its staged bytes go, and the id is closed.
        let partial = app.open_session(None).await;
        assert_eq!(app.send_chunk(&partial, 0, vec![7; 100]).await.status(), 202);
        assert_eq!(app.request(Method::DELETE, &partial).send().await.unwrap().status(), 204);
        assert_eq!((app.rows("upload_sessions").await, app.rows("upload_sessions_closed").await), (0, 4));
        assert_eq!(app.request(Method::HEAD, &partial).send().await.unwrap().status(), 404);
        problem(app.send_chunk(&partial, 0, vec![1]).await, 404, "not_found").await;
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);

        // A bare session another request holds (its row written with its lease) is not committed behind its back.
        let held = app.open_session(None).await;
        let id = session_uuid(&held);
        let mut conn = app.instance.db.acquire().await.unwrap();
        artifactstore_db::execute!(
            &mut conn,
            "INSERT INTO upload_sessions (id, actor, created_ms, expires_ms, offset_bytes, hasher, staging, lease, \
             lease_until_ms, bare_until_ms) VALUES ($1, 'anonymous', 0, $2, 0, $3, $4, $5, $2, $2)",
            id,
            i64::MAX / 2,
            artifactstore_digest::DualHasher::new().save(),
            artifactstore_blobstore::StagingState::File.to_json(),
            uuid::Uuid::new_v4()
        )
        .unwrap();
        drop(conn);
        let other = bytes(700, 44);
        let response = app.commit_whole(&held, &DualDigest::of(&other).blake3.to_string(), other.clone()).await;
        problem(response, 409, "conflict").await;
        assert!(!app.stored_blob(&DualDigest::of(&other).blake3.hex()).await);
        assert_eq!(app.head_now().await, before + 2);

        // Another instance on the database holds the same key, so it reads the same ids.
        let again = SessionKey::load_or_create(&app.instance.db).await.unwrap();
        let fresh = app.open_session(None).await;
        let fresh_id = fresh.rsplit('/').next().unwrap();
        assert_eq!(again.read(fresh_id, artifactstore::auth::ANONYMOUS), Some((session_uuid(&fresh), true)));

        // A bare id expires with the idle time counted from its opening.
        let idle = UploadLimits::default().session_idle.as_secs();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let old = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, now - idle - 5, 0));
        let old = format!("/v1/uploads/{}", app.instance.session_key.sign(old, artifactstore::auth::ANONYMOUS));
        assert_eq!(app.request(Method::HEAD, &old).send().await.unwrap().status(), 404);
        problem(app.send_chunk(&old, 0, vec![1]).await, 404, "not_found").await;

        // The sweeper drops closed marks whose ids have expired, and only those.
        let mut conn = app.instance.db.acquire().await.unwrap();
        let aborted_id = session_uuid(&aborted);
        artifactstore_db::execute!(
            &mut conn,
            "UPDATE upload_sessions_closed SET until_ms = 0 WHERE id = $1",
            aborted_id
        )
        .unwrap();
        drop(conn);
        artifactstore::jobs::sweep(app.state(), Duration::from_secs(3600)).await.unwrap();
        assert_eq!(app.rows("upload_sessions_closed").await, 3);
    }
}

/// A bare session's id names its subject: another subject is told it is not theirs, not that it does not exist.
#[tokio::test]
async fn bare_sessions_belong_to_their_subject() {
    let tokens = vec![
        TokenConfig::new("writer-one-0123456789", "one", vec![Scope::Write], vec![String::new()]),
        TokenConfig::new("writer-two-0123456789", "two", vec![Scope::Write], vec![String::new()]),
    ];
    let Some(mut app) = TestApp::builder().tokens(tokens).start().await else { return };
    app.token = Some("writer-one-0123456789".into());
    let session = app.open_session(None).await;
    assert!(session.contains('.'), "{session}");
    app.token = Some("writer-two-0123456789".into());
    assert_eq!(app.request(Method::HEAD, &session).send().await.unwrap().status(), 403);
    problem(app.send_chunk(&session, 0, vec![1]).await, 403, "forbidden").await;
    problem(app.request(Method::DELETE, &session).send().await.unwrap(), 403, "forbidden").await;
    app.token = Some("writer-one-0123456789".into());
    let data = bytes(100, 43);
    let response = app.commit_whole(&session, &DualDigest::of(&data).blake3.to_string(), data).await;
    assert_eq!(response.status(), 201);
}
