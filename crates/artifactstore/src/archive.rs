//! The event archive: sealed segments of the log in the blob store, and a restore that rebuilds a database from
//! them.
//!
//! A segment holds consecutive events as a CBOR sequence of canonical envelopes (the `application/cbor-seq` form
//! of the feed, payloads as their exact bytes). It is named
//! `archive/<log_id>/<first, 20 digits>-<last, 20 digits>-<blake3 of the segment, hex>.cborseq`, so the archive's
//! position is its listing: nothing else needs to be stored, and a restarted archiver continues after the last
//! segment it finds.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use artifactstore_blobstore::BlobStore;
use artifactstore_cbor::Value;
use artifactstore_eventlog::{Event, EventLog, Filter, SubjectKind};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::api::envelope_cbor;

/// The archive's directory in the blob store.
pub const ARCHIVE_DIR: &str = "archive";

/// When segments are sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// A segment is sealed as soon as this many events wait.
    pub segment_events: u64,
    /// Fewer events are sealed once the oldest unarchived one has waited this long.
    pub segment_age: Duration,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self { segment_events: 10_000, segment_age: Duration::from_secs(60) }
    }
}

/// One segment's name, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentName {
    /// The first event in it.
    pub first: u64,
    /// The last event in it.
    pub last: u64,
    /// BLAKE3 of its bytes, hex.
    pub blake3: String,
}

impl SegmentName {
    fn parse(name: &str) -> Option<SegmentName> {
        let stem = name.strip_suffix(".cborseq")?;
        let mut parts = stem.splitn(3, '-');
        let first = parts.next()?.parse().ok()?;
        let last = parts.next()?.parse().ok()?;
        let blake3 = parts.next()?.to_owned();
        (blake3.len() == 64 && first <= last).then_some(SegmentName { first, last, blake3 })
    }

    fn render(&self) -> String {
        format!("{:020}-{:020}-{}.cborseq", self.first, self.last, self.blake3)
    }
}

/// The segments of one log, in order.
pub async fn segments(store: &BlobStore, log_id: Uuid) -> anyhow::Result<Vec<SegmentName>> {
    let names = store.list_names(&format!("{ARCHIVE_DIR}/{log_id}")).await.context("list the archive")?;
    let mut segments: Vec<SegmentName> = names.iter().filter_map(|n| SegmentName::parse(n)).collect();
    segments.sort_by_key(|s| s.first);
    Ok(segments)
}

/// Seals one segment of at most `max` events after what is archived, if there is any; returns it.
pub async fn seal(log: &EventLog, store: &BlobStore, after: u64, max: u64) -> anyhow::Result<Option<SegmentName>> {
    let head = log.read_head().await?;
    if head.sequence <= after {
        return Ok(None);
    }
    let upto = head.sequence.min(after + max);
    let mut bytes = Vec::new();
    let mut at = after;
    while at < upto {
        let limit = u32::try_from((upto - at).min(5_000)).unwrap_or(5_000);
        let events = log.read(at, upto, limit, &Filter::default()).await?;
        let Some(last) = events.last() else { bail!("the log has no events after {at} below its head {upto}") };
        at = last.sequence;
        for event in &events {
            bytes.extend(envelope_cbor(event));
        }
    }
    let segment = SegmentName { first: after + 1, last: upto, blake3: blake3::hash(&bytes).to_hex().to_string() };
    store
        .put_object(&format!("{ARCHIVE_DIR}/{}/{}", head.log_id, segment.render()), bytes)
        .await
        .context("write an archive segment")?;
    Ok(Some(segment))
}

/// Archives until `stop`: a segment whenever `segment_events` wait, or whatever waits once it is `segment_age` old.
pub async fn run(
    log: EventLog,
    store: BlobStore,
    config: ArchiveConfig,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let log_id = log.head().log_id;
    let mut archived = segments(&store, log_id).await?.last().map_or(0, |s| s.last);
    let mut waiting_since: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        let head = log.head().sequence;
        if head > archived {
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if head - archived >= config.segment_events || since.elapsed() >= config.segment_age {
                if let Some(segment) = seal(&log, &store, archived, config.segment_events).await? {
                    tracing::debug!(first = segment.first, last = segment.last, "archived a segment");
                    archived = segment.last;
                    waiting_since = None;
                    continue;
                }
            }
        }
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn field<'a>(map: &'a [(Value, Value)], key: &str) -> anyhow::Result<&'a Value> {
    map.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v).with_context(|| format!("no `{key}`"))
}

fn text<'a>(map: &'a [(Value, Value)], key: &str) -> anyhow::Result<&'a str> {
    field(map, key)?.as_text().with_context(|| format!("`{key}` is not text"))
}

fn digest(map: &[(Value, Value)], key: &str) -> anyhow::Result<[u8; 32]> {
    let hex_text = text(map, key)?.strip_prefix("blake3:").with_context(|| format!("`{key}` is not blake3:"))?;
    let bytes = hex::decode(hex_text).with_context(|| format!("`{key}` is not hex"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("`{key}` is not 32 bytes"))
}

/// Reads an envelope of a segment back into an event.
pub fn decode_envelope(value: &Value) -> anyhow::Result<Event> {
    let map = value.as_map().context("an envelope is not a map")?;
    let sequence = field(map, "sequence")?
        .as_integer()
        .and_then(|i| u64::try_from(i).ok())
        .context("`sequence` is not an unsigned integer")?;
    let created_at: DateTime<Utc> =
        DateTime::parse_from_rfc3339(text(map, "created_at")?).context("`created_at`")?.with_timezone(&Utc);
    let subject_id = match field(map, "subject_id")? {
        Value::Null => None,
        v => Some(Uuid::parse_str(v.as_text().context("`subject_id` is not text")?).context("`subject_id`")?),
    };
    Ok(Event {
        sequence,
        created_at,
        event_type: text(map, "event_type")?.to_owned(),
        subject_kind: SubjectKind::parse(text(map, "subject_kind")?).context("unknown `subject_kind`")?,
        subject_id,
        actor: text(map, "actor")?.to_owned(),
        payload: field(map, "payload")?.as_bytes().context("`payload` is not bytes")?.clone(),
        payload_digest: digest(map, "payload_digest")?,
        chain_hash: digest(map, "chain_hash")?,
    })
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Segments read.
    pub segments: usize,
    /// Events imported.
    pub events: u64,
    /// The last event's chain hash.
    pub chain_hash: [u8; 32],
}

/// Imports every archived event of `archived_log` into `log`, which must be empty, checking each segment's name,
/// continuity, payload digests and the hash chain; then the caller rebuilds the views.
pub async fn restore(store: &BlobStore, archived_log: Uuid, log: &EventLog) -> anyhow::Result<Restored> {
    let head = log.read_head().await?;
    if head.sequence != 0 {
        bail!("the target database already holds {} events; restore needs an empty one", head.sequence);
    }
    let segments = segments(store, archived_log).await?;
    if segments.is_empty() {
        bail!("the archive holds no segments of log {archived_log}");
    }
    // First every segment is read and checked (name, digest, continuity, payload digests, chain), so a damaged
    // archive is refused before anything is written; then the events are imported.
    let (mut previous, mut chain) = (0, artifactstore_eventlog::GENESIS_CHAIN_HASH);
    for segment in &segments {
        for event in read_segment(store, archived_log, segment, previous + 1).await? {
            if let Err(fault) = event.check(previous, &chain) {
                bail!("event {} in the archive: {fault}", event.sequence);
            }
            (previous, chain) = (event.sequence, event.chain_hash);
        }
    }
    {
        let mut tx = log.database().begin_write().await?;
        artifactstore_views::mark_stale(&mut tx, "a restore imported events; the views are rebuilt next").await?;
        tx.commit().await?;
    }
    let mut restored = Restored { segments: 0, events: 0, chain_hash: [0; 32] };
    for segment in &segments {
        let events = read_segment(store, archived_log, segment, restored.events + 1).await?;
        let head = log.import(&events).await.context("import a segment")?;
        restored.segments += 1;
        restored.events = head.sequence;
        restored.chain_hash = head.chain_hash;
    }
    Ok(restored)
}

/// Reads and decodes one segment, checking its name's digest and that it starts at `first` and ends where it says.
async fn read_segment(
    store: &BlobStore,
    log_id: Uuid,
    segment: &SegmentName,
    first: u64,
) -> anyhow::Result<Vec<Event>> {
    let name = format!("{ARCHIVE_DIR}/{log_id}/{}", segment.render());
    let bytes = store.get_object(&name).await.with_context(|| format!("read {name}"))?;
    if blake3::hash(&bytes).to_hex().as_str() != segment.blake3 {
        bail!("segment {name} does not have the digest in its name");
    }
    if segment.first != first {
        bail!("the archive has a gap: the next segment starts at {}, not {first}", segment.first);
    }
    let values = artifactstore_cbor::decode_sequence(&bytes).with_context(|| format!("decode {name}"))?;
    let events: Vec<Event> =
        values.iter().map(decode_envelope).collect::<anyhow::Result<_>>().with_context(|| name.clone())?;
    if events.first().map(|e| e.sequence) != Some(segment.first)
        || events.last().map(|e| e.sequence) != Some(segment.last)
    {
        bail!("segment {name} does not hold the events its name says");
    }
    Ok(events)
}

/// The log ids the archive holds segments of.
pub async fn archived_logs(store: &BlobStore) -> anyhow::Result<Vec<Uuid>> {
    let names = store.list_dirs(ARCHIVE_DIR).await.context("list the archive")?;
    Ok(names.iter().filter_map(|n| Uuid::parse_str(n).ok()).collect())
}
