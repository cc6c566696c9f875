//! The hash chain: its definition and its end-to-end check.

use artifactstore_cbor::Value;

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
    let bytes = artifactstore_cbor::encode_value(&fields).expect("an array without maps always encodes");
    *blake3::hash(&bytes).as_bytes()
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

/// Checks one event against its predecessor's chain hash and the expected sequence, pushing any fault found.
pub(crate) fn check_event(previous: &[u8; 32], expected_sequence: u64, event: &Event, faults: &mut Vec<ChainFault>) {
    let mut fault = |problem: String| faults.push(ChainFault { sequence: event.sequence, problem });
    if event.sequence != expected_sequence {
        fault(format!("expected sequence {expected_sequence}, found {}", event.sequence));
    }
    if *blake3::hash(&event.payload).as_bytes() != event.payload_digest {
        fault("payload_digest is not the BLAKE3 of the payload".to_owned());
    }
    if let Err(err) = artifactstore_cbor::decode_value(&event.payload) {
        fault(format!("payload is not canonical CBOR: {err}"));
    }
    if chain_hash(previous, event) != event.chain_hash {
        fault("chain_hash does not follow from the previous event".to_owned());
    }
}
