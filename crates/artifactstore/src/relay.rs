//! The relay: every event, in order, to a NATS JetStream stream.
//!
//! The relay is the stream's only writer. Event `n` is published as the stream's message after the one holding
//! event `n - 1`, with `Nats-Expected-Last-Sequence` set to the stream's last sequence, so the server refuses
//! anything out of order; `Nats-Msg-Id` (`<log_id>:<sequence>`) lets JetStream drop a duplicate inside its window
//! as well. Up to `WINDOW` publishes are in flight at once, each expecting the stream's sequence its predecessors
//! will have made; their acknowledgements are taken in order, so a refused or lost publish makes every later one in
//! the window refused too, and nothing lands out of order. On start, and after any error, the relay reads the
//! stream's last message back and resumes after the event it holds, so a crash between a publish and its
//! acknowledgement publishes nothing twice.

use std::time::Duration;

use anyhow::{bail, Context as _};
use artifactstore_eventlog::{Event, EventLog, Filter};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;

use crate::api::envelope_text;

/// Where and how to relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The JetStream stream, created if absent.
    pub stream: String,
    /// Subjects are `<prefix>.<event_type>`.
    pub subject_prefix: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "ARTIFACTSTORE".into(),
            subject_prefix: "artifactstore".into(),
        }
    }
}

/// Header names the relay sets on every message.
pub mod header_names {
    /// The event's sequence in the log.
    pub const SEQUENCE: &str = "Artifactstore-Sequence";
    /// The log's identity.
    pub const LOG_ID: &str = "Artifactstore-Log-Id";
    /// The event's type.
    pub const EVENT_TYPE: &str = "Artifactstore-Event-Type";
    /// `blake3:` of the canonical payload.
    pub const PAYLOAD_DIGEST: &str = "Artifactstore-Payload-Digest";
}

/// Events published per read of the log.
const BATCH: u32 = 2_000;
/// Publishes in flight at once, whose acknowledgements are awaited in order.
const WINDOW: usize = 256;

/// The last event the stream holds (0 if none), checked to come from this log.
async fn resume_point(stream: &mut stream::Stream, log_id: &str) -> anyhow::Result<(u64, u64)> {
    let info = stream.info().await.context("read the stream's state")?;
    let last = info.state.last_sequence;
    if info.state.messages == 0 {
        return Ok((last, 0));
    }
    let message = stream.get_raw_message(last).await.context("read the stream's last message")?;
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
    let relayed_log = header(header_names::LOG_ID).context("the stream's last message was not written by a relay")?;
    if relayed_log != log_id {
        bail!(
            "the stream holds events of log {relayed_log}, but this registry's log is {log_id}; \
             give the relay another stream (the log was restored or replaced)"
        );
    }
    let sequence = header(header_names::SEQUENCE)
        .and_then(|s| s.parse().ok())
        .context("the stream's last message has no readable sequence")?;
    Ok((last, sequence))
}

/// Relays until `stop` resolves or an unrecoverable error occurs; `progress` gets each relayed sequence.
pub async fn run(
    log: EventLog,
    config: RelayConfig,
    mut progress: impl FnMut(u64) + Send,
    stop: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let client = async_nats::connect(&config.url).await.with_context(|| format!("connect to {}", config.url))?;
    let js = jetstream::new(client);
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            ..stream::Config::default()
        })
        .await
        .with_context(|| format!("create or open the stream {}", config.stream))?;
    let log_id = log.head().log_id.to_string();
    let (mut stream_last, mut relayed) = resume_point(&mut stream, &log_id).await?;
    tracing::info!(stream = %config.stream, relayed, "relay resumes after this event");
    progress(relayed);
    let mut heads = log.subscribe();
    tokio::pin!(stop);
    loop {
        let head = log.read_head().await?.sequence;
        if relayed >= head {
            tokio::select! {
                () = &mut stop => return Ok(()),
                _ = heads.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            continue;
        }
        let events = log.read(relayed, head, BATCH, &Filter::default()).await?;
        if let Err(err) =
            publish_all(&js, &config, &log_id, &events, &mut stream_last, &mut relayed, &mut progress).await
        {
            tracing::warn!(error = %format!("{err:#}"), relayed, "relay publish failed; resyncing");
            tokio::time::sleep(Duration::from_millis(500)).await;
            (stream_last, relayed) = resume_point(&mut stream, &log_id).await?;
        }
    }
}

/// Publishes `events` in order with up to `WINDOW` in flight, advancing `stream_last` and `relayed` as each
/// acknowledgement arrives, in order. An error leaves them at the last event the stream acknowledged.
async fn publish_all(
    js: &jetstream::Context,
    config: &RelayConfig,
    log_id: &str,
    events: &[Event],
    stream_last: &mut u64,
    relayed: &mut u64,
    progress: &mut (impl FnMut(u64) + Send),
) -> anyhow::Result<()> {
    let mut in_flight = std::collections::VecDeque::with_capacity(WINDOW);
    for event in events {
        if in_flight.len() == WINDOW {
            acknowledged(in_flight.pop_front(), stream_last, relayed, progress).await?;
        }
        // The stream's last sequence once every publish before this one is stored.
        let expected = *stream_last + in_flight.len() as u64;
        let ack = publish(js, config, log_id, event, expected).await?;
        in_flight.push_back((event.sequence, ack));
    }
    while let Some(next) = in_flight.pop_front() {
        acknowledged(Some(next), stream_last, relayed, progress).await?;
    }
    Ok(())
}

/// Waits for the acknowledgement of the oldest publish in flight and records what it stored.
async fn acknowledged(
    oldest: Option<(u64, jetstream::context::PublishAckFuture)>,
    stream_last: &mut u64,
    relayed: &mut u64,
    progress: &mut (impl FnMut(u64) + Send),
) -> anyhow::Result<()> {
    let Some((sequence, ack)) = oldest else { return Ok(()) };
    let ack = ack.await.context("acknowledgement")?;
    if ack.duplicate {
        tracing::debug!(sequence, "the stream already held this event");
    }
    *stream_last = ack.sequence;
    *relayed = sequence;
    progress(sequence);
    Ok(())
}

/// Sends one event, expecting the stream's last sequence to be `stream_last`; the acknowledgement is awaited by the
/// caller.
async fn publish(
    js: &jetstream::Context,
    config: &RelayConfig,
    log_id: &str,
    event: &Event,
    stream_last: u64,
) -> anyhow::Result<jetstream::context::PublishAckFuture> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{log_id}:{}", event.sequence).as_str());
    headers.insert("Nats-Expected-Last-Sequence", stream_last.to_string().as_str());
    headers.insert(header_names::SEQUENCE, event.sequence.to_string().as_str());
    headers.insert(header_names::LOG_ID, log_id);
    headers.insert(header_names::EVENT_TYPE, event.event_type.as_str());
    headers.insert(header_names::PAYLOAD_DIGEST, format!("blake3:{}", hex::encode(event.payload_digest)).as_str());
    headers.insert("Content-Type", "application/json");
    let subject = format!("{}.{}", config.subject_prefix, event.event_type);
    let body = envelope_text(event);
    js.publish_with_headers(subject, headers, body.into()).await.context("send")
}
