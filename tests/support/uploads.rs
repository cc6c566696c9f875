//! Upload sessions step by step (open, chunks, commit) and what the tests look at behind them: session rows and
//! leases, staged bytes, stored blobs.

use artifactstore_blobstore::Location;
use artifactstore_digest::DualDigest;
use reqwest::{Method, Response};
use serde_json::Value;

use crate::{header_u64, TestApp};

impl TestApp {
    /// Opens a session (with `declared` as its JSON body, if any) and returns its path.
    pub async fn open_session(&self, declared: Option<Value>) -> String {
        let mut request = self.request(Method::POST, "/v1/uploads");
        if let Some(declared) = declared {
            request = request.json(&declared);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 201);
        response.headers()["location"].to_str().unwrap().to_owned()
    }

    /// Sends `bytes` to `session` at `offset` (`PATCH` with `Upload-Offset`).
    pub async fn send_chunk(&self, session: &str, offset: u64, bytes: Vec<u8>) -> Response {
        self.request(Method::PATCH, session)
            .header("upload-offset", offset)
            .header("content-type", "application/offset+octet-stream")
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    /// Commits `session` with the whole blob in the body of the `PUT`.
    pub async fn commit_whole(&self, session: &str, digest: &str, body: Vec<u8>) -> Response {
        self.commit_at(session, digest, 0, body).await
    }

    /// Commits `session` with its last bytes, from `offset` on, in the body of the `PUT`.
    pub async fn commit_at(
        &self,
        session: &str,
        digest: impl std::fmt::Display,
        offset: u64,
        body: Vec<u8>,
    ) -> Response {
        self.request(Method::PUT, &format!("{session}?digest={digest}"))
            .header("upload-offset", offset)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Uploads `bytes` through a session in chunks of `chunk` and commits; returns the commit's response.
    pub async fn upload_in_chunks(&self, bytes: &[u8], chunk: usize) -> Response {
        let session = self.open_session(None).await;
        let mut offset = 0;
        for piece in bytes.chunks(chunk.max(1)) {
            let response = self.send_chunk(&session, offset, piece.to_vec()).await;
            assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
            offset += piece.len() as u64;
            assert_eq!(header_u64(&response, "upload-offset"), offset);
        }
        let digest = DualDigest::of(bytes).blake3;
        self.request(Method::PUT, &format!("{session}?digest={digest}")).send().await.unwrap()
    }

    /// The session row's lease, as `(lease, lease_until_ms)`: both `None` when no request holds it.
    pub async fn lease(&self, session: &str) -> (Option<uuid::Uuid>, Option<i64>) {
        let id = session_uuid(session);
        let mut conn = self.instance.db.acquire().await.unwrap();
        artifactstore_db::fetch_one!(
            &mut conn,
            (Option<uuid::Uuid>, Option<i64>),
            "SELECT lease, lease_until_ms FROM upload_sessions WHERE id = $1",
            id
        )
        .unwrap()
    }

    /// Counts the rows of `table`.
    pub async fn rows(&self, table: &str) -> i64 {
        let mut conn = self.instance.db.acquire().await.unwrap();
        let (count,): (i64,) =
            artifactstore_db::fetch_one!(&mut conn, (i64,), &format!("SELECT COUNT(*) FROM {table}")).unwrap();
        count
    }

    /// Keys below the store's `staging/`.
    pub async fn staged(&self) -> Vec<String> {
        match (&self.instance.config.store, self.s3()) {
            (Location::File(dir), _) => match std::fs::read_dir(dir.join("staging")) {
                Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
                Err(_) => Vec::new(),
            },
            (_, Some(s3)) => s3.list_keys().await.into_iter().filter(|k| k.contains("staging/")).collect(),
            (location, None) => panic!("no way to list {location}"),
        }
    }

    /// Whether the store holds the blob whose BLAKE3 is `blake3_hex`.
    pub async fn stored_blob(&self, blake3_hex: &str) -> bool {
        self.instance.store.size_of(blake3_hex).await.unwrap().is_some()
    }
}

/// The UUID of a session's path (a bare session's id is its UUID and a tag).
pub fn session_uuid(session: &str) -> uuid::Uuid {
    let id = session.rsplit('/').next().unwrap();
    uuid::Uuid::parse_str(id.split('.').next().unwrap()).unwrap()
}

/// Deterministic, incompressible-looking test bytes.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = blake3::hash(&[seed]);
    while out.len() < len {
        out.extend_from_slice(block.as_bytes());
        block = blake3::hash(block.as_bytes());
    }
    out.truncate(len);
    out
}
