//! The hash chain: its definition and its end-to-end check.

use crate::Event;

/// The chain hash before the first event: 32 zero bytes.
pub const GENESIS_CHAIN_HASH: [u8; 32] = [0; 32];

/// The chain hash of `event` given the chain hash of the event before it.
///
/// It is BLAKE3 of the canonical CBOR array
/// `[previous_chain_hash, sequence, created_at, event_type, subject_kind, subject_id, actor, payload_digest]`
/// where the hashes are 32-byte strings, `created_at` is RFC 3339 text in UTC with exactly six fractional digits and a `Z`,
/// and `subject_id` is the UUID's 16 bytes or null. `docs/EVENT-LOG.md` specifies it for other implementations.
pub fn chain_hash(previous: &[u8; 32], event: &Event) -> [u8; 32] {
    use artifactstore_cbor::write;
    // Written item by item, without a `Value` tree: the committer hashes one of these per event.
    let mut out = Vec::with_capacity(160 + event.event_type.len() + event.actor.len());
    write::array(&mut out, 8);
    write::bytes(&mut out, previous);
    write::unsigned(&mut out, event.sequence);
    write::text(&mut out, &crate::time_text(&event.created_at));
    write::text(&mut out, &event.event_type);
    write::text(&mut out, event.subject_kind.as_str());
    match event.subject_id {
        Some(id) => write::bytes(&mut out, id.as_bytes()),
        None => write::null(&mut out),
    }
    write::text(&mut out, &event.actor);
    write::bytes(&mut out, &event.payload_digest);
    *blake3::hash(&out).as_bytes()
}

/// One thing wrong with the stored log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFault {
    /// The event where the fault shows.
    pub sequence: u64,
    /// What is wrong, in words.
    pub problem: String,
}

/// The outcome of checking the whole chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// How many events were read.
    pub events_checked: u64,
    /// The head sequence the check ran up to.
    pub head_sequence: u64,
    /// Everything found wrong (at most the first hundred).
    pub faults: Vec<ChainFault>,
}

impl ChainReport {
    /// Whether the chain is whole.
    pub fn is_ok(&self) -> bool {
        self.faults.is_empty()
    }
}

/// One way an event does not follow from the event before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventFault {
    /// Its sequence is not the next one.
    #[error("expected sequence {expected}, found {found}")]
    Sequence {
        /// The sequence after the previous event's.
        expected: u64,
        /// The event's own.
        found: u64,
    },
    /// Its `payload_digest` is not the BLAKE3 of its payload.
    #[error("payload_digest is not the BLAKE3 of the payload")]
    PayloadDigest,
    /// Its payload is not canonical CBOR.
    #[error("payload is not canonical CBOR: {0}")]
    NonCanonicalPayload(String),
    /// Its `chain_hash` is not the one its fields and the previous chain hash make.
    #[error("chain_hash does not follow from the previous event")]
    ChainHash,
}

impl Event {
    /// The event check: that this event follows the one whose sequence and chain hash are given (0 and
    /// `GENESIS_CHAIN_HASH` before the first event). Its sequence is the next one, its payload digest is the BLAKE3
    /// of its payload, its payload is canonical CBOR and its chain hash follows. Returns the first fault found.
    pub fn check(&self, previous_sequence: u64, previous_chain: &[u8; 32]) -> Result<(), EventFault> {
        match self.faults(previous_sequence, previous_chain).into_iter().next() {
            Some(fault) => Err(fault),
            None => Ok(()),
        }
    }

    /// Every fault `check` finds, in its order.
    pub fn faults(&self, previous_sequence: u64, previous_chain: &[u8; 32]) -> Vec<EventFault> {
        let mut faults = Vec::new();
        let expected = previous_sequence + 1;
        if self.sequence != expected {
            faults.push(EventFault::Sequence { expected, found: self.sequence });
        }
        if *blake3::hash(&self.payload).as_bytes() != self.payload_digest {
            faults.push(EventFault::PayloadDigest);
        }
        if let Err(err) = artifactstore_cbor::decode_value(&self.payload) {
            faults.push(EventFault::NonCanonicalPayload(err.to_string()));
        }
        if chain_hash(previous_chain, self) != self.chain_hash {
            faults.push(EventFault::ChainHash);
        }
        faults
    }
}

#[cfg(test)]
mod tests {
    use artifactstore_cbor::Value;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::chain_hash;
    use crate::{Event, SubjectKind};

    /// The definition above, built as a `Value` and encoded by the general encoder.
    fn by_definition(previous: &[u8; 32], event: &Event) -> [u8; 32] {
        let fields = Value::Array(vec![
            Value::Bytes(previous.to_vec()),
            Value::Integer(event.sequence.into()),
            Value::Text(crate::time_text(&event.created_at)),
            Value::Text(event.event_type.clone()),
            Value::Text(event.subject_kind.as_str().to_owned()),
            event.subject_id.map_or(Value::Null, |id| Value::Bytes(id.as_bytes().to_vec())),
            Value::Text(event.actor.clone()),
            Value::Bytes(event.payload_digest.to_vec()),
        ]);
        *blake3::hash(&artifactstore_cbor::encode_value(&fields).unwrap()).as_bytes()
    }

    proptest! {
        #[test]
        fn the_chain_hash_is_blake3_of_the_canonical_array(
            previous in any::<[u8; 32]>(),
            sequence in prop_oneof![any::<u64>(), 1u64..30, Just(u64::from(u32::MAX) + 1)],
            micros in 0i64..4_102_444_800_000_000,
            event_type in "v1\\.[a-z_]{1,20}(\\.[a-z0-9_]{1,100})?",
            kind in 0usize..5,
            subject in prop::option::of(any::<u128>()),
            actor in ".{1,300}",
            payload_digest in any::<[u8; 32]>(),
        ) {
            let event = Event {
                sequence,
                created_at: Utc.timestamp_micros(micros).unwrap(),
                event_type,
                subject_kind: SubjectKind::ALL[kind],
                subject_id: subject.map(Uuid::from_u128),
                actor,
                payload: Vec::new(),
                payload_digest,
                chain_hash: [0; 32],
            };
            prop_assert_eq!(chain_hash(&previous, &event), by_definition(&previous, &event));
        }
    }
}
