//! The limit row of workload e: a bare fan-out server.
//!
//! It does the least a feed server can do: it renders an SSE frame once per tick, at the workload's rate, and
//! hands it to every open stream; a stream writes what is waiting in one go (up to 64 frames), as artifactstore's
//! do. There is no database, no upload and no log behind it. It runs as a process of its own (this binary,
//! started with `--fanout-listen`), and the workload's own subscribers follow it, so its delivery times show what
//! this machine and this harness allow before any registry work is added.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use tokio::sync::{broadcast, Notify};

use crate::servers::Process;

/// Frames each stream may fall behind before it is cut (and catches up from the history on its reconnect).
const CAPACITY: usize = 1024;
/// Waiting frames written together, at most (as artifactstore's streams).
const COALESCE: usize = 64;

/// What the fan-out process is asked to do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) subscribers: usize,
    pub(crate) events: u64,
    pub(crate) rate: u64,
}

struct Shared {
    /// Every frame sent so far (frame `n` at index `n - 1`), and the sender, under one lock: a stream that opens
    /// takes the history and subscribes at the same point, so it sees no gap and no repeat.
    feed: Mutex<(Vec<Bytes>, broadcast::Sender<Bytes>)>,
    opened: Mutex<usize>,
    all_open: Notify,
    plan: Plan,
}

/// Serves `/healthz`, `/v1/events/head` and `/v1/events/stream?since=` on `listen` until killed; once
/// `plan.subscribers` streams are open it sends `plan.events` frames at `plan.rate` per second.
pub(crate) fn serve(listen: &str, plan: Plan) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let shared = Arc::new(Shared {
            feed: Mutex::new((Vec::new(), broadcast::channel(CAPACITY).0)),
            opened: Mutex::new(0),
            all_open: Notify::new(),
            plan,
        });
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/v1/events/head", get(|| async { Json(serde_json::json!({ "sequence": 0 })) }))
            .route("/v1/events/stream", get(stream))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
        tokio::spawn(produce(shared));
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn produce(shared: Arc<Shared>) {
    shared.all_open.notified().await;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / shared.plan.rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for sequence in 1..=shared.plan.events {
        ticker.tick().await;
        let frame = frame(sequence);
        let mut feed = shared.feed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        feed.0.push(frame.clone());
        // No receiver is not an error here: every stream may have been cut and be reconnecting.
        let _ = feed.1.send(frame);
    }
}

/// An SSE frame shaped like artifactstore's for the workload's blobs (`v1.file.ingested` of 64 bytes, no media
/// type): the same members, of the same lengths.
fn frame(sequence: u64) -> Bytes {
    let created_at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
    let hash = blake3::hash(&sequence.to_le_bytes()).to_hex();
    let data = serde_json::json!({
        "sequence": sequence,
        "created_at": created_at.to_string(),
        "event_type": "v1.file.ingested",
        "subject_kind": "file",
        "subject_id": uuid::Uuid::from_u64_pair(sequence, sequence).to_string(),
        "actor": "anonymous",
        "payload": {
            "blake3": format!("blake3:{hash}"),
            "sha256": format!("sha256:{hash}"),
            "size": 64,
        },
        "payload_digest": format!("blake3:{hash}"),
        "chain_hash": format!("blake3:{hash}"),
    });
    Bytes::from(format!("id: {sequence}\nevent: v1.file.ingested\ndata: {data}\n\n"))
}

#[derive(serde::Deserialize)]
struct Since {
    since: u64,
}

async fn stream(State(shared): State<Arc<Shared>>, Query(Since { since }): Query<Since>) -> Response {
    // Only handles are copied under the lock the producer takes; the bytes are joined after it.
    let (missed, receiver) = {
        let feed = shared.feed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let from = usize::try_from(since).unwrap_or(usize::MAX).min(feed.0.len());
        (feed.0[from..].to_vec(), feed.1.subscribe())
    };
    let backlog = missed.concat();
    {
        let mut opened = shared.opened.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *opened += 1;
        if *opened == shared.plan.subscribers {
            shared.all_open.notify_one();
        }
    }
    let first =
        futures::stream::iter((!backlog.is_empty()).then_some(Ok::<_, std::convert::Infallible>(Bytes::from(backlog))));
    let live = futures::stream::unfold(receiver, |mut receiver| async move {
        // A lagging stream ends here; its client reconnects from its last id and takes the history.
        let first = receiver.recv().await.ok()?;
        let mut out = BytesMut::from(&first[..]);
        for _ in 1..COALESCE {
            match receiver.try_recv() {
                Ok(frame) => out.extend_from_slice(&frame),
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(_) => return None,
            }
        }
        Some((Ok(out.freeze()), receiver))
    });
    let mut response = Body::from_stream(futures::StreamExt::chain(first, live)).into_response();
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("text/event-stream"));
    response
}

/// The fan-out process, killed when dropped.
pub(crate) struct FanoutServer {
    pub(crate) base: String,
    pub(crate) process: Process,
}

impl FanoutServer {
    /// Starts this binary as a fan-out server on a free loopback port.
    pub(crate) async fn start(dir: &Path, plan: Plan) -> anyhow::Result<FanoutServer> {
        let port = crate::servers::free_port()?;
        let child = Command::new(std::env::current_exe()?)
            .args(["--fanout-listen", &format!("127.0.0.1:{port}")])
            .args(["--fanout-plan", &format!("{},{},{}", plan.subscribers, plan.events, plan.rate)])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the fan-out server")?;
        let server = FanoutServer { base: format!("http://127.0.0.1:{port}"), process: Process::new(child) };
        crate::servers::wait_ready(&server.base, "/healthz", "the fan-out server").await?;
        Ok(server)
    }
}
