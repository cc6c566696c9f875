//! Ingestion over real HTTP: upload sessions, blobs, packages, retention and tokens, on SQLite with a filesystem
//! store and on PostgreSQL with an S3 store (a moto server the test starts).

use std::sync::Arc;
use std::time::Duration;

use artifactstore::auth::{Scope, TokenConfig};
use artifactstore::config::{InstanceConfig, UploadLimits};
use artifactstore::instance::Instance;
use artifactstore::server::AppState;
use artifactstore::session_key::SessionKey;
use artifactstore_blobstore::{BlobStore, Location};
use artifactstore_db::Backend;
use artifactstore_digest::DualDigest;
use artifactstore_eventlog::{EventLog, LogOptions};
use artifactstore_testkit::{S3Server, TestDb};
use reqwest::{Method, Response};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    File,
    S3,
}

/// The two setups every behaviour runs on.
const SETUPS: [(Backend, StoreKind); 2] = [(Backend::Sqlite, StoreKind::File), (Backend::Postgres, StoreKind::S3)];

struct App {
    base: String,
    client: reqwest::Client,
    log: EventLog,
    state: AppState,
    store_dir: Option<std::path::PathBuf>,
    s3: Option<S3Server>,
    token: Option<String>,
    _test: TestDb,
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[derive(Default)]
struct Options {
    limits: UploadLimits,
    tokens: Vec<TokenConfig>,
}

impl App {
    async fn start(backend: Backend, kind: StoreKind, options: Options) -> Option<App> {
        let test = TestDb::of(backend).await?;
        let (location, overrides, s3, store_dir) = match kind {
            StoreKind::File => {
                let dir = test.dir().join("blobs");
                (Location::File(dir.clone()), Vec::new(), None, Some(dir))
            }
            StoreKind::S3 => {
                let server = S3Server::start().await?;
                let location = Location::parse(&server.store_url()).unwrap();
                (location, server.env(), Some(server), None)
            }
        };
        let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        let store = BlobStore::open_with(&location, &overrides).unwrap();
        let config = InstanceConfig {
            data: test.dir().to_path_buf(),
            database: test.url.clone(),
            store: location,
            uploads: options.limits,
            tokens: options.tokens,
        };
        let session_key = SessionKey::load_or_create(&test.db).await.unwrap();
        let instance = Instance { db: test.db.clone(), log: log.clone(), store, config: Arc::new(config), session_key };
        let state = AppState::new(instance.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(artifactstore::server::serve(listener, instance, async {
            let _ = stopped.await;
        }));
        Some(App {
            base,
            client: reqwest::Client::new(),
            log,
            state,
            store_dir,
            s3,
            token: None,
            _test: test,
            _stop: stop,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let builder = self.client.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    fn head_sequence(&self) -> u64 {
        self.log.head().sequence
    }

    async fn head_now(&self) -> u64 {
        self.log.read_head().await.unwrap().sequence
    }

    /// Opens a session and returns its path.
    async fn open(&self, declared: Option<Value>) -> String {
        let mut request = self.request(Method::POST, "/v1/uploads");
        if let Some(declared) = declared {
            request = request.json(&declared);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 201);
        response.headers()["location"].to_str().unwrap().to_owned()
    }

    async fn patch(&self, session: &str, offset: u64, bytes: Vec<u8>) -> Response {
        self.request(Method::PATCH, session)
            .header("upload-offset", offset)
            .header("content-type", "application/offset+octet-stream")
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    /// Commits `session` with the whole blob in the body of the `PUT`.
    async fn commit_whole(&self, session: &str, digest: &str, body: Vec<u8>) -> Response {
        self.request(Method::PUT, &format!("{session}?digest={digest}"))
            .header("upload-offset", 0)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Uploads `bytes` in chunks of `chunk` and commits; returns the commit response.
    async fn upload(&self, bytes: &[u8], chunk: usize) -> Response {
        let session = self.open(None).await;
        let mut offset = 0;
        for piece in bytes.chunks(chunk.max(1)) {
            let response = self.patch(&session, offset, piece.to_vec()).await;
            assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
            offset += piece.len() as u64;
            assert_eq!(header_u64(&response, "upload-offset"), offset);
        }
        let digest = DualDigest::of(bytes).blake3;
        self.request(Method::PUT, &format!("{session}?digest={digest}")).send().await.unwrap()
    }

    /// The session row's lease, as `(lease, lease_until_ms)`: both `None` when no request holds it.
    async fn lease(&self, session: &str) -> (Option<uuid::Uuid>, Option<i64>) {
        let id = session_uuid(session);
        let mut conn = self.state.instance.db.acquire().await.unwrap();
        artifactstore_db::fetch_one!(
            &mut conn,
            (Option<uuid::Uuid>, Option<i64>),
            "SELECT lease, lease_until_ms FROM upload_sessions WHERE id = $1",
            id
        )
        .unwrap()
    }

    /// Keys below the store's `staging/`.
    async fn staged(&self) -> Vec<String> {
        match (&self.store_dir, &self.s3) {
            (Some(dir), _) => match std::fs::read_dir(dir.join("staging")) {
                Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
                Err(_) => Vec::new(),
            },
            (None, Some(s3)) => s3.list_keys().await.into_iter().filter(|k| k.contains("staging/")).collect(),
            _ => unreachable!(),
        }
    }

    async fn stored_blob(&self, blake3_hex: &str) -> bool {
        self.state.instance.store.size_of(blake3_hex).await.unwrap().is_some()
    }
}

/// The UUID of a session's path (a bare session's id is its UUID and a tag).
fn session_uuid(session: &str) -> uuid::Uuid {
    let id = session.rsplit('/').next().unwrap();
    uuid::Uuid::parse_str(id.split('.').next().unwrap()).unwrap()
}

fn header_u64(response: &Response, name: &str) -> u64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}

async fn problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "expected {status} {code}");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().ends_with(code));
    body
}

/// Deterministic, incompressible-looking test bytes.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = blake3::hash(&[seed]);
    while out.len() < len {
        out.extend_from_slice(block.as_bytes());
        block = blake3::hash(block.as_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn upload_sessions_from_open_to_commit() {
    for (backend, kind) in SETUPS {
        let Some(app) = App::start(backend, kind, Options::default()).await else { continue };
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
        let first = app.patch(&session, 0, data[..chunk].to_vec()).await;
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
        let wrong = app.patch(&session, 0, data[..10].to_vec()).await;
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
            let response = app.patch(&session, offset as u64, data[offset..offset + chunk].to_vec()).await;
            assert_eq!(response.status(), 202);
            offset += chunk;
        }
        assert_eq!(app.head_now().await, before, "session bookkeeping logs nothing");

        // The last chunk rides on the commit.
        let response = app
            .request(Method::PUT, &format!("{session}?digest={}", digest.sha256))
            .header("upload-offset", offset)
            .body(data[offset..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["location"], format!("/v1/blobs/{}", digest.blake3).as_str());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["blake3"], digest.blake3.to_string());
        assert_eq!(body["sha256"], digest.sha256.to_string());
        assert_eq!(body["size"], data.len());
        assert_eq!(app.head_now().await, before + 1);
        assert!(app.stored_blob(&digest.blake3.hex()).await);
        assert!(app.staged().await.is_empty(), "commit clears staging: {:?}", app.staged().await);
        let event: Value =
            app.request(Method::GET, &format!("/v1/events/{}", before + 1)).send().await.unwrap().json().await.unwrap();
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
        let again = app.upload(&data, 5 * 1024 * 1024).await;
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
        let response = app.upload(&[], 1).await;
        assert_eq!(response.status(), 201);
        assert_eq!(app.head_now().await, before + 3);
        assert!(app.staged().await.is_empty());
    }
}

#[tokio::test]
async fn mismatches_aborts_and_expiry_store_nothing() {
    for (backend, kind) in SETUPS {
        let Some(app) = App::start(backend, kind, Options::default()).await else { continue };
        let data = bytes(6 * 1024 * 1024, 3);
        let digest = DualDigest::of(&data);
        let other = DualDigest::of(b"something else");
        let before = app.head_now().await;

        // Wrong digest at commit: 422, nothing stored, nothing logged.
        let session = app.open(None).await;
        assert_eq!(app.patch(&session, 0, data.clone()).await.status(), 202);
        let response = app.request(Method::PUT, &format!("{session}?digest={}", other.blake3)).send().await.unwrap();
        let body = problem(response, 422, "digest_mismatch").await;
        assert_eq!(body["blake3"], digest.blake3.to_string());
        assert!(!app.stored_blob(&digest.blake3.hex()).await);
        assert_eq!(app.head_now().await, before);

        // Declared digests are checked too.
        let declared = app.open(Some(json!({"sha256": other.sha256.to_string()}))).await;
        assert_eq!(app.patch(&declared, 0, data.clone()).await.status(), 202);
        let response = app.request(Method::PUT, &format!("{declared}?digest={}", digest.blake3)).send().await.unwrap();
        problem(response, 422, "digest_mismatch").await;
        assert_eq!(app.head_now().await, before);

        // A wrong digest on a commit that carries the last chunk: 422, and the chunk is kept, its save giving the
        // lease up, so the session stands at its end and is free for the next request.
        let carried = app.open(None).await;
        assert_eq!(app.patch(&carried, 0, data[..1000].to_vec()).await.status(), 202);
        let response = app
            .request(Method::PUT, &format!("{carried}?digest={}", other.blake3))
            .header("upload-offset", 1000)
            .body(data[1000..].to_vec())
            .send()
            .await
            .unwrap();
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
        let session = app.open(None).await;
        assert_eq!(app.patch(&session, 0, data[..1000].to_vec()).await.status(), 202);
        assert!(!app.staged().await.is_empty());
        let id = session_uuid(&session);
        let mut conn = app.state.instance.db.acquire().await.unwrap();
        artifactstore_db::execute!(&mut conn, "UPDATE upload_sessions SET expires_ms = 0 WHERE id = $1", id).unwrap();
        drop(conn);
        problem(app.patch(&session, 1000, vec![1]).await, 404, "not_found").await;
        let (sessions, _) = artifactstore::api::sweep(&app.state, Duration::from_secs(3600)).await.unwrap();
        assert_eq!(sessions, 1);
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);
        assert_eq!(app.head_now().await, before);
    }
}

/// Whole blobs committed at once on a filesystem store: each is recorded and reads back, and `/metrics` counts
/// their placements and the rounds of syncs that made them durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_blobs_at_once_are_placed_in_counted_rounds() {
    let Some(app) = App::start(Backend::Sqlite, StoreKind::File, Options::default()).await else { return };
    let app = std::sync::Arc::new(app);
    let blobs: Vec<Vec<u8>> = (0..12u8).map(|n| bytes(4096, 100 + n)).collect();
    let mut commits = Vec::new();
    for data in blobs.clone() {
        let app = app.clone();
        commits.push(tokio::spawn(async move {
            let session = app.open(None).await;
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
async fn a_commit_carrying_the_whole_blob() {
    for (backend, kind) in SETUPS {
        let Some(app) = App::start(backend, kind, Options::default()).await else { continue };
        let data = bytes(5000, 4);
        let digest = DualDigest::of(&data);
        let other = DualDigest::of(b"not these bytes");
        let before = app.head_now().await;

        // A wrong digest: 422, and the bytes stay in the session, so a corrected commit needs no resend.
        let session = app.open(None).await;
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
        let session = app.open(None).await;
        let response = app.commit_whole(&session, &digest.blake3.to_string(), data.clone()).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        assert_eq!(app.request(Method::HEAD, &session).send().await.unwrap().status(), 404);

        // New bytes in one commit: 201 with the event's sequence.
        let fresh = bytes(3000, 5);
        let session = app.open(None).await;
        let response = app.commit_whole(&session, &DualDigest::of(&fresh).sha256.to_string(), fresh.clone()).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["sequence"], before + 2);
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);

        // A session another request holds is not committed behind its back: 409, nothing stored or logged. (A
        // declared session has its row from the start; a bare one's is written by the request that holds it.)
        let session = app.open(Some(json!({"media_type": "application/octet-stream"}))).await;
        let id = session_uuid(&session);
        let mut conn = app.state.instance.db.acquire().await.unwrap();
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

/// Sends a `PATCH` that promises `promised` bytes but breaks off after `sent` of them, the way a dropped connection
/// does, and waits until the server has let go of the session.
async fn broken_patch(app: &App, session: &str, offset: u64, promised: usize, sent: &[u8]) {
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
        let Some(app) = App::start(backend, kind, Options::default()).await else { continue };
        let data = bytes(3 * 1024 * 1024 + 7, 7);
        let acked = 1024 * 1024 + 3;
        let junk = bytes(2 * 1024 * 1024 + 11, 8);

        // Commit with no body right after a broken chunk: the blob is the acknowledged bytes, nothing more.
        let session = app.open(None).await;
        assert_eq!(app.patch(&session, 0, data[..acked].to_vec()).await.status(), 202);
        broken_patch(&app, &session, acked as u64, 4 * 1024 * 1024, &junk).await;
        let head = &data[..acked];
        let digest = DualDigest::of(head);
        let response = app.request(Method::PUT, &format!("{session}?digest={}", digest.blake3)).send().await.unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let got = app.request(Method::GET, &format!("/v1/blobs/{}", digest.blake3)).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap().as_ref(), head);
        // Downloads read the recorded length; the store must hold exactly those bytes too.
        let stored = app.state.instance.store.size_of(&digest.blake3.hex()).await.unwrap();
        assert_eq!(stored, Some(acked as u64), "the stored blob is exactly the acknowledged bytes");

        // Resumed after a broken chunk, with the rest riding on the commit: the whole blob and nothing else.
        let session = app.open(None).await;
        assert_eq!(app.patch(&session, 0, data[..acked].to_vec()).await.status(), 202);
        broken_patch(&app, &session, acked as u64, 4 * 1024 * 1024, &junk).await;
        let digest = DualDigest::of(&data);
        let response = app
            .request(Method::PUT, &format!("{session}?digest={}", digest.sha256))
            .header("upload-offset", acked)
            .body(data[acked..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let got = app.request(Method::GET, &format!("/v1/blobs/{}", digest.blake3)).send().await.unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
        let stored = app.state.instance.store.size_of(&digest.blake3.hex()).await.unwrap();
        assert_eq!(stored, Some(data.len() as u64));
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);
    }
}

/// Sends a request whose head promises `promised` body bytes, then only `sent` of them, and keeps the connection
/// open without sending more, the way a client that vanished without closing does. Returns the server's answer
/// (status line, headers and body as text) and how long it took to come.
async fn stalled_request(app: &App, head: &str, promised: usize, sent: &[u8]) -> (String, Duration) {
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
        let Some(app) = App::start(backend, kind, Options { limits, ..Options::default() }).await else { continue };
        let data = bytes(300_000, 9);
        let session = app.open(None).await;
        assert_eq!(app.patch(&session, 0, data[..100_000].to_vec()).await.status(), 202);

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
        let resumed = app.patch(&session, 100_000, data[100_000..].to_vec()).await;
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
        let session = app.open(None).await;
        assert_eq!(app.patch(&session, 0, other[..400].to_vec()).await.status(), 202);
        let (answer, _) = stalled_request(
            &app,
            &format!("PUT {session}?digest={other_digest} HTTP/1.1\r\nupload-offset: 400"),
            600,
            &other[400..410],
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let resumed = app
            .request(Method::PUT, &format!("{session}?digest={other_digest}"))
            .header("upload-offset", 400)
            .body(other[400..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resumed.status(), 201, "{}", resumed.text().await.unwrap());
        let third = bytes(1000, 12);
        let third_digest = DualDigest::of(&third).blake3;
        let session = app.open(None).await;
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
async fn blobs_by_either_digest_with_ranges() {
    for (backend, kind) in SETUPS {
        let Some(app) = App::start(backend, kind, Options::default()).await else { continue };
        let data = bytes(100_000, 4);
        let digest = DualDigest::of(&data);
        assert_eq!(app.upload(&data, 30_000).await.status(), 201);
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
        let Some(app) = App::start(backend, kind, Options::default()).await else { continue };
        let a = bytes(5000, 5);
        let b = bytes(7000, 6);
        let (da, db) = (DualDigest::of(&a), DualDigest::of(&b));
        assert_eq!(app.upload(&a, 5000).await.status(), 201);
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

        assert_eq!(app.upload(&b, 3000).await.status(), 201);
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
        let event: Value =
            app.request(Method::GET, &format!("/v1/events/{}", before + 1)).send().await.unwrap().json().await.unwrap();
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
        let versions: Value =
            app.request(Method::GET, "/v1/packages/team/app").send().await.unwrap().json().await.unwrap();
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
        let page: Value =
            app.request(Method::GET, "/v1/packages?prefix=team/&limit=2").send().await.unwrap().json().await.unwrap();
        let first: Vec<&str> =
            page["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(first, ["team/app", "team/lib"]);
        assert_eq!(page["packages"][0]["versions"], 2);
        let cursor = page["next_cursor"].as_str().unwrap();
        let page: Value = app
            .request(Method::GET, &format!("/v1/packages?prefix=team/&limit=2&cursor={cursor}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let second: Vec<&str> =
            page["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(second, ["team/zed"]);
        assert!(page["next_cursor"].is_null());

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
            let feed: Value = app
                .request(Method::GET, &format!("/v1/events?since={head}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            feed["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(types, ["v1.retention.extended", "v1.retention.hold_set", "v1.retention.hold_released"]);
        // Still retained until 2999.
        problem(app.request(Method::DELETE, url).send().await.unwrap(), 409, "conflict").await;

        // A version with no retention deletes.
        let response =
            app.request(Method::DELETE, "/v1/packages/team/app/versions/2.0?reason=superseded").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let event: Value = app
            .request(Method::GET, &format!("/v1/events/{}", app.head_sequence()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
    ];
    for (backend, kind) in SETUPS {
        let options = Options { tokens: tokens.clone(), ..Options::default() };
        let Some(mut app) = App::start(backend, kind, options).await else { continue };
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
        problem(app.request(Method::POST, "/v1/uploads").send().await.unwrap(), 403, "forbidden").await;

        app.token = Some("team-writer-0123456789".into());
        let response = app.upload(&data, 1000).await;
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

        // Sessions belong to their subject.
        let session = app.open(None).await;
        app.token = Some("admin-token-0123456789".into());
        problem(app.patch(&session, 0, vec![1, 2, 3]).await, 403, "forbidden").await;
        assert_eq!(app.request(Method::DELETE, "/v1/packages/team/x/versions/1").send().await.unwrap().status(), 200);

        let feed: Value = app.request(Method::GET, "/v1/events").send().await.unwrap().json().await.unwrap();
        let actors: Vec<&str> =
            feed["events"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
        assert_eq!(actors, ["ci-team", "ci-team", "root"]);
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
        let Some(app) = App::start(backend, kind, Options { limits, ..Options::default() }).await else { continue };
        let data = bytes(1000, 8);
        let digest = DualDigest::of(&data);
        assert_eq!(app.upload(&data, 1000).await.status(), 201);
        let head = app.head_now().await;
        let session = app.open(None).await;
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
        let held = rows(&app, "upload_sessions").await;
        assert_eq!(held, i64::from(matches!(kind, StoreKind::S3)));
        let declared = json!({"media_type": "application/x-tar"});
        for _ in held..4 {
            assert_eq!(app.request(Method::POST, "/v1/uploads").json(&declared).send().await.unwrap().status(), 201);
        }
        let refused = app.request(Method::POST, "/v1/uploads").json(&declared).send().await.unwrap();
        problem(refused, 429, "too_many_sessions").await;
        // ... a bare one from its first bytes: it opens, and its first chunk is refused, writing no row.
        if matches!(kind, StoreKind::File) {
            let bare = app.open(None).await;
            problem(app.patch(&bare, 0, vec![1]).await, 429, "too_many_sessions").await;
            assert_eq!(app.request(Method::HEAD, &bare).send().await.unwrap().status(), 204);
            assert_eq!(rows(&app, "upload_sessions").await, 4);
        }

        assert_eq!(app.request(Method::GET, "/healthz").send().await.unwrap().status(), 200);
        assert_eq!(app.request(Method::GET, "/readyz").send().await.unwrap().status(), 200);
        assert_eq!(app.head_now().await, head, "no bad request moved the head");
    }
}

#[tokio::test]
async fn concurrent_commits_of_the_same_bytes_log_one_event() {
    for (backend, kind) in SETUPS {
        let Some(app) = App::start(backend, kind, Options::default()).await else { continue };
        let data = bytes(300_000, 9);
        let digest = DualDigest::of(&data);
        let before = app.head_now().await;
        let mut sessions = Vec::new();
        for _ in 0..4 {
            let session = app.open(None).await;
            assert_eq!(app.patch(&session, 0, data.clone()).await.status(), 202);
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
        let Some(app) = App::start(backend, kind, Options::default()).await else { continue };
        for round in 0..8u8 {
            let before = app.head_now().await;
            let session = app.open(None).await;
            let bodies = [bytes(4096, 100 + round), bytes(4096, 200 - round)];
            let digests = bodies.each_ref().map(|body| DualDigest::of(body).blake3.to_string());
            let commits =
                bodies.iter().zip(&digests).map(|(body, digest)| app.commit_whole(&session, digest, body.clone()));
            let mut statuses: Vec<u16> =
                futures::future::join_all(commits).await.into_iter().map(|r| r.status().as_u16()).collect();
            statuses.sort_unstable();
            // One wins; the other finds the session taken (409) or already gone (404).
            assert!(statuses == [201, 404] || statuses == [201, 409], "round {round}: {statuses:?}");
            assert_eq!(app.head_now().await, before + 1, "round {round}: one event");
            assert!(app.staged().await.is_empty(), "round {round}: {:?}", app.staged().await);
        }
    }
}

/// Counts the rows of `table`.
async fn rows(app: &App, table: &str) -> i64 {
    let mut conn = app.state.instance.db.acquire().await.unwrap();
    let (count,): (i64,) =
        artifactstore_db::fetch_one!(&mut conn, (i64,), &format!("SELECT COUNT(*) FROM {table}")).unwrap();
    count
}

/// A session opened without declarations on a filesystem store writes nothing until its first bytes (ADR 0022):
/// its id is checked by its tag, its commit or abort closes it, and it expires with its id.
#[tokio::test]
async fn bare_sessions_write_nothing_until_their_first_bytes() {
    let setups =
        [(Backend::Sqlite, StoreKind::File), (Backend::Postgres, StoreKind::File), (Backend::Postgres, StoreKind::S3)];
    for (backend, kind) in setups {
        let Some(app) = App::start(backend, kind, Options::default()).await else { continue };
        let before = app.head_now().await;
        let session = app.open(None).await;
        if matches!(kind, StoreKind::S3) {
            // An S3 session starts its multipart upload at the opening, which its row remembers.
            assert!(!session.contains('.'), "{session}");
            assert_eq!(rows(&app, "upload_sessions").await, 1);
            continue;
        }
        assert!(session.contains('.'), "{session}");
        assert_eq!(rows(&app, "upload_sessions").await, 0, "a bare session writes nothing");
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
            problem(app.patch(path, 0, vec![1]).await, 404, "not_found").await;
            problem(
                app.commit_whole(path, &DualDigest::of(b"x").blake3.to_string(), b"x".to_vec()).await,
                404,
                "not_found",
            )
            .await;
            problem(app.request(Method::DELETE, path).send().await.unwrap(), 404, "not_found").await;
        }
        assert_eq!(rows(&app, "upload_sessions").await, 0, "{:?}", app.staged().await);

        // Committed whole: no row, and the id is closed; the same commit again finds no session.
        let data = bytes(4096, 41);
        let digest = DualDigest::of(&data).blake3.to_string();
        assert_eq!(app.commit_whole(&session, &digest, data.clone()).await.status(), 201);
        assert_eq!((rows(&app, "upload_sessions").await, rows(&app, "upload_sessions_closed").await), (0, 1));
        assert_eq!(app.request(Method::HEAD, &session).send().await.unwrap().status(), 404);
        problem(app.commit_whole(&session, &digest, data.clone()).await, 404, "not_found").await;
        problem(app.patch(&session, 0, vec![1]).await, 404, "not_found").await;
        assert_eq!(app.head_now().await, before + 1);

        // Aborted before any bytes: gone.
        let aborted = app.open(None).await;
        assert_eq!(app.request(Method::DELETE, &aborted).send().await.unwrap().status(), 204);
        assert_eq!(app.request(Method::HEAD, &aborted).send().await.unwrap().status(), 404);
        problem(app.request(Method::DELETE, &aborted).send().await.unwrap(), 404, "not_found").await;
        problem(app.patch(&aborted, 0, vec![1]).await, 404, "not_found").await;

        // A chunk refused before its body is read writes no row.
        let chunked = app.open(None).await;
        problem(app.patch(&chunked, 5, vec![1]).await, 409, "offset_mismatch").await;
        assert_eq!(rows(&app, "upload_sessions").await, 0);

        // In chunks: the first chunk writes the row, the commit deletes it and closes the id.
        let data = bytes(5000, 42);
        assert_eq!(app.patch(&chunked, 0, data[..3000].to_vec()).await.status(), 202);
        assert_eq!(rows(&app, "upload_sessions").await, 1);
        // Its row is reached only through the id with its tag.
        let untagged = chunked.split_once('.').unwrap().0.to_owned();
        assert_eq!(app.request(Method::HEAD, &untagged).send().await.unwrap().status(), 404);
        problem(app.patch(&untagged, 3000, vec![1]).await, 404, "not_found").await;
        problem(app.commit_whole(&untagged, &DualDigest::of(&data).blake3.to_string(), vec![]).await, 404, "not_found")
            .await;
        problem(app.request(Method::DELETE, &untagged).send().await.unwrap(), 404, "not_found").await;
        assert_eq!(app.lease(&chunked).await, (None, None));
        let head = app.request(Method::HEAD, &chunked).send().await.unwrap();
        assert_eq!(header_u64(&head, "upload-offset"), 3000);
        let response = app
            .request(Method::PUT, &format!("{chunked}?digest={}", DualDigest::of(&data).sha256))
            .header("upload-offset", 3000)
            .body(data[3000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        assert_eq!((rows(&app, "upload_sessions").await, rows(&app, "upload_sessions_closed").await), (0, 3));
        assert_eq!(app.request(Method::HEAD, &chunked).send().await.unwrap().status(), 404);
        problem(app.patch(&chunked, 5000, vec![1]).await, 404, "not_found").await;
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);
        assert_eq!(app.head_now().await, before + 2);

        // Aborted with a row: the row and its staged bytes go, and the id is closed.
        let partial = app.open(None).await;
        assert_eq!(app.patch(&partial, 0, vec![7; 100]).await.status(), 202);
        assert_eq!(app.request(Method::DELETE, &partial).send().await.unwrap().status(), 204);
        assert_eq!((rows(&app, "upload_sessions").await, rows(&app, "upload_sessions_closed").await), (0, 4));
        assert_eq!(app.request(Method::HEAD, &partial).send().await.unwrap().status(), 404);
        problem(app.patch(&partial, 0, vec![1]).await, 404, "not_found").await;
        assert!(app.staged().await.is_empty(), "{:?}", app.staged().await);

        // A bare session another request holds (its row written with its lease) is not committed behind its back.
        let held = app.open(None).await;
        let id = session_uuid(&held);
        let mut conn = app.state.instance.db.acquire().await.unwrap();
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
        let again = SessionKey::load_or_create(&app.state.instance.db).await.unwrap();
        let fresh = app.open(None).await;
        let fresh_id = fresh.rsplit('/').next().unwrap();
        assert_eq!(again.read(fresh_id, artifactstore::auth::ANONYMOUS), Some((session_uuid(&fresh), true)));

        // A bare id expires with the idle time counted from its opening.
        let idle = UploadLimits::default().session_idle.as_secs();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let old = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, now - idle - 5, 0));
        let old = format!("/v1/uploads/{}", app.state.instance.session_key.sign(old, artifactstore::auth::ANONYMOUS));
        assert_eq!(app.request(Method::HEAD, &old).send().await.unwrap().status(), 404);
        problem(app.patch(&old, 0, vec![1]).await, 404, "not_found").await;

        // The sweeper drops closed marks whose ids have expired, and only those.
        let mut conn = app.state.instance.db.acquire().await.unwrap();
        let aborted_id = session_uuid(&aborted);
        artifactstore_db::execute!(
            &mut conn,
            "UPDATE upload_sessions_closed SET until_ms = 0 WHERE id = $1",
            aborted_id
        )
        .unwrap();
        drop(conn);
        artifactstore::api::sweep(&app.state, Duration::from_secs(3600)).await.unwrap();
        assert_eq!(rows(&app, "upload_sessions_closed").await, 3);
    }
}

/// Racing requests on one bare session: a first chunk against a whole-blob commit, and against an abort. Whatever
/// the order, a session is never both closed and written to: never a chunk taken and a blob committed from one
/// empty session, never a row left beside a closed mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_sessions_are_closed_or_written_never_both() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = App::start(backend, StoreKind::File, Options::default()).await else { continue };
        for round in 0..24u8 {
            let session = app.open(None).await;
            let blob = bytes(1000, round);
            let digest = DualDigest::of(&blob).blake3.to_string();
            let patch = app.patch(&session, 0, vec![round; 10]);
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
            let mut conn = app.state.instance.db.acquire().await.unwrap();
            let count = |table: &'static str| format!("SELECT COUNT(*) FROM {table} WHERE id = $1");
            let (row,): (i64,) =
                artifactstore_db::fetch_one!(&mut conn, (i64,), &count("upload_sessions"), id).unwrap();
            let (mark,): (i64,) =
                artifactstore_db::fetch_one!(&mut conn, (i64,), &count("upload_sessions_closed"), id).unwrap();
            assert!(row + mark == 1, "round {round}: {patched} and {other} left {row} row(s), {mark} mark(s)");
        }
    }
}

/// A bare session's id names its subject: another subject is told it is not theirs, not that it does not exist.
#[tokio::test]
async fn bare_sessions_belong_to_their_subject() {
    let tokens = vec![
        TokenConfig::new("writer-one-0123456789", "one", vec![Scope::Write], vec![String::new()]),
        TokenConfig::new("writer-two-0123456789", "two", vec![Scope::Write], vec![String::new()]),
    ];
    let options = Options { tokens, ..Options::default() };
    let Some(mut app) = App::start(Backend::Sqlite, StoreKind::File, options).await else { return };
    app.token = Some("writer-one-0123456789".into());
    let session = app.open(None).await;
    assert!(session.contains('.'), "{session}");
    app.token = Some("writer-two-0123456789".into());
    assert_eq!(app.request(Method::HEAD, &session).send().await.unwrap().status(), 403);
    problem(app.patch(&session, 0, vec![1]).await, 403, "forbidden").await;
    problem(app.request(Method::DELETE, &session).send().await.unwrap(), 403, "forbidden").await;
    app.token = Some("writer-one-0123456789".into());
    let data = bytes(100, 43);
    let response = app.commit_whole(&session, &DualDigest::of(&data).blake3.to_string(), data).await;
    assert_eq!(response.status(), 201);
}

/// Makes the log refuse `v1.file.ingested` events, as a crash between the bytes and the event would.
async fn refuse_ingest_events(app: &App, refuse: bool) {
    let mut conn = app.state.instance.db.acquire().await.unwrap();
    let statements: &[&str] = match (app.state.instance.db.backend(), refuse) {
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
        let Some(app) = App::start(backend, kind, Options::default()).await else { continue };
        let data = bytes(6 * 1024 * 1024 + 7, 10);
        let digest = DualDigest::of(&data);
        let before = app.head_now().await;
        let session = app.open(None).await;
        assert_eq!(app.patch(&session, 0, data.clone()).await.status(), 202);

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
