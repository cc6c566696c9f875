//! Workload e: many SSE subscribers while blobs are committed at a steady rate over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

use crate::push::Blob;

/// What the subscribers saw.
#[derive(Debug, Clone)]
pub(crate) struct FeedRun {
    pub(crate) subscribers: usize,
    pub(crate) events: u64,
    pub(crate) elapsed: Duration,
    /// Commit (the event's `created_at`) to arrival at a subscriber, over every subscriber and event.
    pub(crate) latencies: Vec<Duration>,
    pub(crate) reconnects: u64,
}

struct Seen {
    latencies: Vec<Duration>,
    reconnects: u64,
}

/// Follows the stream from `since` until it has seen `until`, checking every sequence arrives once, in order.
async fn subscribe(
    http: reqwest::Client,
    base: String,
    since: u64,
    until: u64,
    ready: Arc<Semaphore>,
) -> anyhow::Result<Seen> {
    let mut last = since;
    let mut seen = Seen { latencies: Vec::with_capacity((until - since) as usize), reconnects: 0 };
    let mut first = true;
    while last < until {
        let mut response = http
            .get(format!("{base}/v1/events/stream?since={last}"))
            .header("Accept", "text/event-stream")
            .send()
            .await?;
        ensure!(response.status().is_success(), "stream: {}", response.status());
        if first {
            ready.add_permits(1);
            first = false;
        } else {
            seen.reconnects += 1;
        }
        let mut pending = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            let now = Utc::now();
            pending.extend_from_slice(&chunk);
            // Whole frames only: a chunk may end between an event's id and its data.
            let mut start = 0;
            while let Some(end) = memchr::memmem::find(&pending[start..], b"\n\n") {
                let frame = &pending[start..start + end];
                start += end + 2;
                let mut id = None;
                let mut created = None;
                for line in frame.split(|&b| b == b'\n') {
                    if let Some(text) = line.strip_prefix(b"id: ") {
                        id = Some(
                            std::str::from_utf8(text)?
                                .trim()
                                .parse::<u64>()
                                .context("an SSE id that is not a number")?,
                        );
                    } else if let Some(data) = line.strip_prefix(b"data: ") {
                        created = created_at(data);
                    }
                }
                let Some(id) = id else { continue };
                if id != last + 1 {
                    bail!("stream jumped from {last} to {id}");
                }
                last = id;
                let created = created.context("an event without created_at")?;
                seen.latencies.push((now - created).to_std().unwrap_or_default());
            }
            pending.drain(..start);
            if last >= until {
                break;
            }
        }
    }
    Ok(seen)
}

fn created_at(data: &[u8]) -> Option<DateTime<Utc>> {
    const KEY: &[u8] = b"\"created_at\":\"";
    let at = memchr::memmem::find(data, KEY)? + KEY.len();
    let end = memchr::memchr(b'"', &data[at..])? + at;
    DateTime::parse_from_rfc3339(std::str::from_utf8(&data[at..end]).ok()?).ok().map(|t| t.with_timezone(&Utc))
}

/// Subscribers following a feed from `since`, all connected.
struct Following {
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Seen>>>,
    http: reqwest::Client,
    subscribers: usize,
    events: u64,
}

/// Opens `subscribers` streams on `base` from its current head, to follow `events` events, and waits until every
/// one is open.
async fn follow(base: &str, subscribers: usize, events: u64) -> anyhow::Result<Following> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(subscribers + 64).build()?;
    let head: serde_json::Value = http.get(format!("{base}/v1/events/head")).send().await?.json().await?;
    let since = head["sequence"].as_u64().context("head without sequence")?;
    let until = since + events;
    let ready = Arc::new(Semaphore::new(0));
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        tasks.push(tokio::spawn(subscribe(http.clone(), base.to_owned(), since, until, ready.clone())));
    }
    let _all = ready.acquire_many(subscribers as u32).await?;
    Ok(Following { tasks, http, subscribers, events })
}

impl Following {
    /// Waits for every subscriber to have seen every event, each once and in order.
    async fn finish(self, start: Instant) -> anyhow::Result<FeedRun> {
        let mut latencies = Vec::new();
        let mut reconnects = 0;
        for task in self.tasks {
            let seen = tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .context("a subscriber never caught up")???;
            reconnects += seen.reconnects;
            latencies.extend(seen.latencies);
        }
        let elapsed = start.elapsed();
        ensure!(
            latencies.len() as u64 == self.events * self.subscribers as u64,
            "{} deliveries, expected {}",
            latencies.len(),
            self.events * self.subscribers as u64
        );
        Ok(FeedRun { subscribers: self.subscribers, events: self.events, elapsed, latencies, reconnects })
    }
}

/// `subscribers` streams follow artifactstore's feed while `events` blobs are committed at `rate` per second.
pub(crate) async fn run(base: &str, subscribers: usize, events: u64, rate: u64) -> anyhow::Result<FeedRun> {
    let following = follow(base, subscribers, events).await?;
    let http = following.http.clone();
    // The producer: one small blob per tick, each committed by a single POST ?digest=, at most 64 in flight.
    let blobs: Vec<Blob> = (0..events).map(|n| Blob::random(n, 64)).collect();
    let in_flight = Arc::new(Semaphore::new(64));
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut producers = Vec::new();
    for blob in blobs {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (http, base) = (http.clone(), base.to_owned());
        producers.push(tokio::spawn(async move {
            let response = http
                .post(format!("{base}/v1/uploads?digest=sha256:{}", blob.sha256))
                .header("Content-Type", "application/octet-stream")
                .body(blob.bytes.clone())
                .send()
                .await?;
            drop(permit);
            ensure!(response.status() == reqwest::StatusCode::CREATED, "commit: {}", response.status());
            Ok::<_, anyhow::Error>(())
        }));
    }
    for producer in producers {
        producer.await??;
    }
    following.finish(start).await
}

/// The same subscribers follow the bare fan-out server (`crate::fanout`), which starts sending its `events` frames
/// at its own rate once they are all open.
pub(crate) async fn run_fanout(base: &str, subscribers: usize, events: u64) -> anyhow::Result<FeedRun> {
    let following = follow(base, subscribers, events).await?;
    following.finish(Instant::now()).await
}
