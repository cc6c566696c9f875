//! Uploads at once: whole blobs placed in rounds of syncs, commits of the same bytes, commits racing for one
//! session, and a first chunk racing a commit or an abort of a bare session.

use artifactstore_db::Backend;
use artifactstore_digest::DualDigest;
use artifactstore_tests::{bytes, session_uuid, TestApp, SETUPS};
use reqwest::Method;
use serde_json::Value;

/// Whole blobs committed at once on a filesystem store: each is recorded and reads back, and `/metrics` counts
/// their placements and the rounds of syncs that made them durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_blobs_at_once_are_placed_in_counted_rounds() {
    let app = TestApp::sqlite().await;
    let app = std::sync::Arc::new(app);
    let blobs: Vec<Vec<u8>> = (0..12u8).map(|n| bytes(4096, 100 + n)).collect();
    let mut commits = Vec::new();
    for data in blobs.clone() {
        let app = app.clone();
        commits.push(tokio::spawn(async move {
            let session = app.open_session(None).await;
            let digest = DualDigest::of(&data).blake3.to_string();
            app.commit_whole(&session, &digest, data).await.status()
        }));
    }
    for commit in commits {
        assert_eq!(commit.await.unwrap(), 201);
    }
    for data in &blobs {
        let got = app.request(Method::GET, &format!("/v1/blobs/{}", DualDigest::of(data).blake3)).send().await;
        assert_eq!(got.unwrap().bytes().await.unwrap().as_ref(), data.as_slice());
    }
    let text = app.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    let count = |name: &str| -> u64 {
        let line = text.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("no {name}:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(count("artifactstore_blob_placements_total"), 12, "{text}");
    let rounds = count("artifactstore_blob_placement_rounds_total");
    assert!((1..=12).contains(&rounds), "{rounds} rounds for 12 placements");
}

#[tokio::test]
async fn concurrent_commits_of_the_same_bytes_log_one_event() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        let data = bytes(300_000, 9);
        let digest = DualDigest::of(&data);
        let before = app.head_now().await;
        let mut sessions = Vec::new();
        for _ in 0..4 {
            let session = app.open_session(None).await;
            assert_eq!(app.send_chunk(&session, 0, data.clone()).await.status(), 202);
            sessions.push(session);
        }
        let commits = sessions
            .iter()
            .map(|session| app.request(Method::PUT, &format!("{session}?digest={}", digest.blake3)).send());
        let responses = futures::future::join_all(commits).await;
        let mut statuses = Vec::new();
        for response in responses {
            let response = response.unwrap();
            statuses.push(response.status().as_u16());
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["blake3"], digest.blake3.to_string());
            assert_eq!(body["size"], data.len());
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 200, 200, 201]);
        assert_eq!(app.head_now().await, before + 1);
        assert!(app.staged().await.is_empty());
    }
}

#[tokio::test]
async fn two_whole_blob_commits_racing_for_one_session_record_one_blob() {
    for (backend, kind) in SETUPS {
        let Some(app) = TestApp::builder().backend(backend).store(kind).start().await else { continue };
        for round in 0..8u8 {
            let before = app.head_now().await;
            let session = app.open_session(None).await;
            let bodies = [bytes(4096, 100 + round), bytes(4096, 200 - round)];
            let digests = bodies.each_ref().map(|body| DualDigest::of(body).blake3.to_string());
            let commits =
                bodies.iter().zip(&digests).map(|(body, digest)| app.commit_whole(&session, digest, body.clone()));
            let mut statuses: Vec<u16> =
                futures::future::join_all(commits).await.into_iter().map(|r| r.status().as_u16()).collect();
            statuses.sort_unstable();
            // One wins; the other finds the session taken (409) or already gone (404).
            assert!(statuses == [201, 404] || statuses == [201, 409], "round {round}: {statuses:?}");
            // The loser's bytes are not in the store: nothing could ever name them.
            let stored = [app.stored_blob(&digests[0][7..]).await, app.stored_blob(&digests[1][7..]).await];
            assert_eq!(stored.iter().filter(|s| **s).count(), 1, "round {round}: {stored:?} stored");
            assert_eq!(app.head_now().await, before + 1, "round {round}: one event");
            assert!(app.staged().await.is_empty(), "round {round}: {:?}", app.staged().await);
        }
    }
}

/// Racing requests on one bare session: a first chunk against a whole-blob commit, and against an abort. Whatever
/// the order, a session is never both closed and written to: never a chunk taken and a blob committed from one
/// empty session, never a row left beside a closed mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_sessions_are_closed_or_written_never_both() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::builder().backend(backend).start().await else { continue };
        for round in 0..24u8 {
            let session = app.open_session(None).await;
            let blob = bytes(1000, round);
            let digest = DualDigest::of(&blob).blake3.to_string();
            let patch = app.send_chunk(&session, 0, vec![round; 10]);
            let (patched, other) = if round % 2 == 0 {
                let commit = app.commit_whole(&session, &digest, blob.clone());
                let (patched, committed) = tokio::join!(patch, commit);
                let pair = (patched.status().as_u16(), committed.status().as_u16());
                assert_ne!(pair, (202, 201), "round {round}: a chunk taken and a blob committed");
                pair
            } else {
                let abort = app.request(Method::DELETE, &session).send();
                let (patched, aborted) = tokio::join!(patch, abort);
                (patched.status().as_u16(), aborted.unwrap().status().as_u16())
            };
            let id = session_uuid(&session);
            let mut conn = app.instance.db.acquire().await.unwrap();
            let count = |table: &'static str| format!("SELECT COUNT(*) FROM {table} WHERE id = $1");
            let (row,): (i64,) =
                artifactstore_db::fetch_one!(&mut conn, (i64,), &count("upload_sessions"), id).unwrap();
            let (mark,): (i64,) =
                artifactstore_db::fetch_one!(&mut conn, (i64,), &count("upload_sessions_closed"), id).unwrap();
            assert!(row + mark == 1, "round {round}: {patched} and {other} left {row} row(s), {mark} mark(s)");
        }
    }
}
