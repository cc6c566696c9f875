//! Workload e: many SSE subscribers while blobs are committed at a steady rate over HTTP.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use chrono::{DateTime, Utc};
use memchr::memmem;
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
    let mut clock = CommitTimes::default();
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
            while let Some(end) = FRAME_END.find(&pending[start..]) {
                let frame = &pending[start..start + end];
                start += end + 2;
                let mut id = None;
                let mut created = None;
                // memchr finds the line breaks many bytes at a time: a byte-by-byte split of every frame took a
                // fifth of a core here, on the cores the server needs.
                for line in lines(frame) {
                    if let Some(text) = line.strip_prefix(b"id: ") {
                        id = Some(
                            std::str::from_utf8(text)?
                                .trim()
                                .parse::<u64>()
                                .context("an SSE id that is not a number")?,
                        );
                    } else if let Some(data) = line.strip_prefix(b"data: ") {
                        created = clock.created_at(data);
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

/// The lines of an SSE frame, without their line breaks.
fn lines(frame: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', frame).chain(std::iter::once(frame.len())).map(move |end| {
        let line = &frame[start..end];
        start = end + 1;
        line
    })
}

static FRAME_END: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\n\n"));
static CREATED_AT: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\"created_at\":\""));

/// Reads events' `created_at`, cheaply: the subscribers read a million a second, on the cores the server needs.
/// The events of a run share their date, hour and minute, so that part is parsed once per minute and the seconds
/// are added; any other shape goes through chrono's RFC 3339 parser.
#[derive(Default)]
struct CommitTimes {
    /// `YYYY-MM-DDTHH:MM:` of the last time read, and that minute.
    minute: Option<([u8; 17], DateTime<Utc>)>,
}

impl CommitTimes {
    fn created_at(&mut self, data: &[u8]) -> Option<DateTime<Utc>> {
        let at = CREATED_AT.find(data)? + CREATED_AT.needle().len();
        let end = memchr::memchr(b'"', &data[at..])? + at;
        let text = &data[at..end];
        self.fast(text).or_else(|| {
            DateTime::parse_from_rfc3339(std::str::from_utf8(text).ok()?).ok().map(|t| t.with_timezone(&Utc))
        })
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (1 to 9 fraction digits), as the feed writes it.
    fn fast(&mut self, text: &[u8]) -> Option<DateTime<Utc>> {
        let (prefix, rest) = text.split_first_chunk::<17>()?;
        let rest = rest.strip_suffix(b"Z")?;
        let (seconds, fraction) = rest.split_first_chunk::<2>()?;
        let fraction = fraction.strip_prefix(b".")?;
        if !(1..=9).contains(&fraction.len()) || !seconds.iter().chain(fraction).all(u8::is_ascii_digit) {
            return None;
        }
        let minute = match self.minute {
            Some((known, minute)) if &known == prefix => minute,
            _ => {
                let mut whole = prefix.to_vec();
                whole.extend_from_slice(b"00Z");
                let minute = DateTime::parse_from_rfc3339(std::str::from_utf8(&whole).ok()?).ok()?.with_timezone(&Utc);
                self.minute = Some((*prefix, minute));
                minute
            }
        };
        let seconds = i64::from((seconds[0] - b'0') * 10 + (seconds[1] - b'0'));
        if seconds > 59 {
            return None; // a leap second: chrono's parser knows how to hold it
        }
        let nanos =
            fraction.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')) * 10i64.pow(9 - fraction.len() as u32);
        Some(minute + chrono::TimeDelta::seconds(seconds) + chrono::TimeDelta::nanoseconds(nanos))
    }
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
    // A subscriber that fails before its stream opens never adds its permit: its error must not become a hang.
    let opened = tokio::time::timeout(Duration::from_secs(60), ready.acquire_many(subscribers as u32)).await;
    if opened.is_err() {
        for task in tasks {
            if task.is_finished() {
                task.await??;
            } else {
                task.abort();
            }
        }
        bail!("the {subscribers} streams did not all open within 60 s");
    }
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
    run_across(base, base, subscribers, events, rate).await
}

/// `run`, with the streams following the instance at `follow_base` and the blobs committed to the one at `base`.
pub(crate) async fn run_across(
    follow_base: &str,
    base: &str,
    subscribers: usize,
    events: u64,
    rate: u64,
) -> anyhow::Result<FeedRun> {
    let following = follow(follow_base, subscribers, events).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_as_a_byte_split_splits_them() {
        for frame in [&b""[..], b"id: 7", b"id: 7\nevent: x\ndata: {}", b"\n\nid: 1\n", b"a\n\nb"] {
            let expected: Vec<&[u8]> = frame.split(|&b| b == b'\n').collect();
            assert_eq!(lines(frame).collect::<Vec<_>>(), expected, "{:?}", String::from_utf8_lossy(frame));
        }
    }

    #[test]
    fn commit_times_read_as_chrono_reads_them() {
        let mut clock = CommitTimes::default();
        for text in [
            "2026-12-01T19:59:59.999999Z",
            "2026-12-01T19:59:07.000001Z",
            "2026-12-01T20:00:00.5Z",
            "2026-12-01T20:00:59.123456789Z",
            "2026-12-31T23:59:60.25Z",
            "2026-12-01T20:00:01+00:00",
            "2026-12-01T20:00:01Z",
        ] {
            let data = format!("{{\"sequence\":1,\"created_at\":\"{text}\",\"actor\":\"x\"}}");
            let expected = DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
            assert_eq!(clock.created_at(data.as_bytes()), Some(expected), "{text}");
        }
        assert_eq!(clock.created_at(b"{\"created_at\":\"2026-12-01T20:00:61.1Z\"}"), None);
    }
}
