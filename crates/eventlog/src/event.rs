//! Events as appended and as stored.

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::Error;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// A package version.
    Package,
    /// A blob of the content store.
    File,
    /// The retention state of a package version.
    Retention,
    /// Where a blob's bytes are kept.
    Storage,
    /// The registry itself: snapshots, migrations, collection runs.
    System,
    /// A retention policy, by name.
    Policy,
    /// An OCI manifest in a repository, by repository and digest.
    OciManifest,
    /// An OCI tag, by repository and tag.
    OciTag,
    /// A blob as one OCI repository sees it, by repository and digest.
    OciBlob,
}

impl SubjectKind {
    /// Every kind, in a stable order.
    pub const ALL: [SubjectKind; 9] = [
        SubjectKind::Package,
        SubjectKind::File,
        SubjectKind::Retention,
        SubjectKind::Storage,
        SubjectKind::System,
        SubjectKind::Policy,
        SubjectKind::OciManifest,
        SubjectKind::OciTag,
        SubjectKind::OciBlob,
    ];

    /// The name stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Package => "package",
            SubjectKind::File => "file",
            SubjectKind::Retention => "retention",
            SubjectKind::Storage => "storage",
            SubjectKind::System => "system",
            SubjectKind::Policy => "policy",
            SubjectKind::OciManifest => "oci_manifest",
            SubjectKind::OciTag => "oci_tag",
            SubjectKind::OciBlob => "oci_blob",
        }
    }

    /// The kind a stored name stands for.
    pub fn parse(name: &str) -> Option<SubjectKind> {
        SubjectKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event before it is appended: the log adds its sequence, time, digests and chain hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// A versioned, dotted type such as `v1.package.created`.
    pub event_type: String,
    /// What the event is about.
    pub subject_kind: SubjectKind,
    /// Which one; `None` only for system events.
    pub subject_id: Option<Uuid>,
    /// Who caused it.
    pub actor: String,
    /// The payload, canonical CBOR.
    pub payload: Vec<u8>,
}

/// What was asked for, without what appending gave it (sequence, time, digests): to append it again elsewhere.
impl From<Event> for NewEvent {
    fn from(event: Event) -> NewEvent {
        NewEvent {
            event_type: event.event_type,
            subject_kind: event.subject_kind,
            subject_id: event.subject_id,
            actor: event.actor,
            payload: event.payload,
        }
    }
}

impl NewEvent {
    /// Checks everything the log requires before it accepts an event.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if !is_event_type(&self.event_type) {
            return Err(Error::InvalidEventType(self.event_type.clone()));
        }
        if self.actor.is_empty() || self.actor.len() > MAX_ACTOR_BYTES {
            return Err(Error::InvalidActor);
        }
        artifactstore_cbor::decode_value(&self.payload)?;
        Ok(())
    }
}

/// The longest `actor` an event may name, in bytes.
pub const MAX_ACTOR_BYTES: usize = 256;

/// `v1.` followed by one or more dot-separated segments of `[a-z0-9_]`.
fn is_event_type(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("v1.") else { return false };
    s.len() <= 128
        && rest.split('.').all(|seg| {
            !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its place in the log: 1, 2, 3, ... with no gaps, in commit order.
    pub sequence: u64,
    /// When it was appended, in UTC with microsecond precision.
    pub created_at: DateTime<Utc>,
    /// A versioned, dotted type such as `v1.package.created`.
    pub event_type: String,
    /// What the event is about.
    pub subject_kind: SubjectKind,
    /// Which one; `None` only for system events.
    pub subject_id: Option<Uuid>,
    /// Who caused it.
    pub actor: String,
    /// The payload, canonical CBOR.
    pub payload: Vec<u8>,
    /// BLAKE3 of `payload`.
    pub payload_digest: [u8; 32],
    /// BLAKE3 over the previous event's chain hash and this event's fields.
    pub chain_hash: [u8; 32],
}

/// The end of the log: what a reader resumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The log's identity, made at genesis.
    pub log_id: Uuid,
    /// The sequence of the last committed event; 0 for an empty log.
    pub sequence: u64,
    /// The chain hash of the last committed event; 32 zero bytes for an empty log.
    pub chain_hash: [u8; 32],
}

/// The current time as the log records it: UTC, truncated to microseconds so every backend stores it exactly.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The text form of an event's time everywhere it is shown or hashed: RFC 3339 in UTC with exactly six fractional
/// digits (truncated) and a `Z`, which is `%Y-%m-%dT%H:%M:%S%.6fZ` (the tests hold the two equal).
///
/// chrono's RFC 3339 writer puts the digits down directly; the general formatter parses its pattern on every call,
/// and the committer hashes one of these per event.
pub fn time_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition `time_text` follows.
    const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

    proptest! {
        /// Every instant chrono can hold, leap seconds included, reads as the definition says.
        #[test]
        fn time_text_is_the_definition(
            secs in DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
            nanos in 0u32..2_000_000_000,
        ) {
            if let Some(t) = DateTime::<Utc>::from_timestamp(secs, nanos) {
                prop_assert_eq!(time_text(&t), t.format(TIME_FORMAT).to_string());
            }
        }

        /// The same, over the years an event is ever stamped with.
        #[test]
        fn time_text_is_the_definition_in_our_era(secs in 0i64..4_102_444_800, nanos in 0u32..1_000_000_000) {
            let t = DateTime::<Utc>::from_timestamp(secs, nanos).unwrap();
            prop_assert_eq!(time_text(&t), t.format(TIME_FORMAT).to_string());
        }
    }

    #[test]
    fn time_text_examples() {
        let t = DateTime::parse_from_rfc3339("2026-12-01T23:17:05.123456789Z").unwrap().with_timezone(&Utc);
        assert_eq!(time_text(&t), "2026-12-01T23:17:05.123456Z");
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().with_timezone(&Utc);
        assert_eq!(time_text(&t), "2026-01-02T03:04:05.000000Z");
        let leap = DateTime::<Utc>::from_timestamp(1_483_228_799, 1_500_000_000).unwrap();
        assert_eq!(time_text(&leap), "2016-12-31T23:59:60.500000Z");
    }

    #[test]
    fn event_types_are_versioned_dotted_names() {
        for good in ["v1.file.ingested", "v1.retention.hold_set", "v1.system.snapshot2"] {
            assert!(is_event_type(good), "{good}");
        }
        for bad in ["", "v1", "v1.", "v2.file.ingested", "v1..x", "v1.File", "v1.x.", "v1.a-b", "x.v1.a"] {
            assert!(!is_event_type(bad), "{bad}");
        }
    }

    #[test]
    fn subject_kinds_round_trip() {
        for kind in SubjectKind::ALL {
            assert_eq!(SubjectKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(SubjectKind::parse("blob"), None);
    }
}
