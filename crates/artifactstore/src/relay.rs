//! The relay: every event, in order, to a NATS JetStream stream.
//!
//! The relay is the stream's only writer. Event `n` is published as the stream's message after the one holding
//! event `n - 1`, with `Nats-Expected-Last-Sequence` set to the stream's last sequence, so the server refuses
//! anything out of order; `Nats-Msg-Id` (`<log_id>:<sequence>`) lets JetStream drop a duplicate inside its window
//! as well. On start, and after any error, the relay reads the stream's last message back and resumes after the
//! event it holds, so a crash between a publish and its acknowledgement publishes nothing twice.

use std::time::Duration;

use anyhow::{bail, Context as _};
use artifactstore_eventlog::{Event, EventLog, Filter};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;

use crate::api::envelope_json;

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
const BATCH: u32 = 500;

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
        for event in &events {
            match publish(&js, &config, &log_id, event, stream_last).await {
                Ok(sequence) => {
                    stream_last = sequence;
                    relayed = event.sequence;
                    progress(relayed);
                }
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), sequence = event.sequence, "relay publish failed; resyncing");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    (stream_last, relayed) = resume_point(&mut stream, &log_id).await?;
                    break;
                }
            }
        }
    }
}

async fn publish(
    js: &jetstream::Context,
    config: &RelayConfig,
    log_id: &str,
    event: &Event,
    stream_last: u64,
) -> anyhow::Result<u64> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{log_id}:{}", event.sequence).as_str());
    headers.insert("Nats-Expected-Last-Sequence", stream_last.to_string().as_str());
    headers.insert(header_names::SEQUENCE, event.sequence.to_string().as_str());
    headers.insert(header_names::LOG_ID, log_id);
    headers.insert(header_names::EVENT_TYPE, event.event_type.as_str());
    headers.insert(header_names::PAYLOAD_DIGEST, format!("blake3:{}", hex::encode(event.payload_digest)).as_str());
    headers.insert("Content-Type", "application/json");
    let subject = format!("{}.{}", config.subject_prefix, event.event_type);
    let body = envelope_json(event).to_string();
    let ack = js
        .publish_with_headers(subject, headers, body.into())
        .await
        .context("send")?
        .await
        .context("acknowledgement")?;
    if ack.duplicate {
        tracing::debug!(sequence = event.sequence, "the stream already held this event");
    }
    Ok(ack.sequence)
}
