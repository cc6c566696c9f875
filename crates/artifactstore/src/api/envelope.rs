//! The JSON form of events: the envelope, and canonical CBOR payloads rendered as JSON.

use artifactstore_cbor::Value;
use artifactstore_eventlog::{time_text, Event, Head};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value as Json};

/// The JSON envelope of one event, as the feed serves it.
pub fn envelope_json(event: &Event) -> Json {
    serde_json::to_value(Envelope::of(event)).unwrap_or(Json::Null)
}

/// The JSON envelope of one event as text, written straight from the decoded payload: no JSON tree is built, so a
/// large payload costs its CBOR tree and the text, not a second tree.
pub fn envelope_text(event: &Event) -> Vec<u8> {
    serde_json::to_vec(&Envelope::of(event)).unwrap_or_default()
}

/// An event's JSON envelope, for serializers.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Envelope<'a> {
    sequence: u64,
    created_at: String,
    event_type: &'a str,
    subject_kind: &'static str,
    subject_id: Option<String>,
    actor: &'a str,
    payload: Option<PayloadJson<Value>>,
    payload_digest: String,
    chain_hash: String,
}

impl<'a> Envelope<'a> {
    pub(crate) fn of(event: &'a Event) -> Envelope<'a> {
        Envelope {
            sequence: event.sequence,
            created_at: time_text(&event.created_at),
            event_type: &event.event_type,
            subject_kind: event.subject_kind.as_str(),
            subject_id: event.subject_id.map(|id| id.to_string()),
            actor: &event.actor,
            payload: artifactstore_cbor::decode_value(&event.payload).ok().map(PayloadJson),
            payload_digest: format!("blake3:{}", hex::encode(event.payload_digest)),
            chain_hash: format!("blake3:{}", hex::encode(event.chain_hash)),
        }
    }
}

/// Events' envelopes as a JSON array, each event decoded only while it is written.
#[derive(Debug)]
pub(crate) struct Envelopes<'a>(pub(crate) &'a [Event]);

impl Serialize for Envelopes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(Envelope::of))
    }
}

/// The canonical CBOR envelope of one event, as `application/cbor-seq` serves it: the same members as the JSON
/// envelope, with `payload` as the exact canonical payload bytes, so a client can check `payload_digest` and
/// recompute `chain_hash` from what it received.
pub fn envelope_cbor(event: &Event) -> Vec<u8> {
    let text = |s: &str| Value::Text(s.to_owned());
    let map = Value::Map(vec![
        (text("sequence"), Value::Integer(event.sequence.into())),
        (text("created_at"), text(&time_text(&event.created_at))),
        (text("event_type"), text(&event.event_type)),
        (text("subject_kind"), text(event.subject_kind.as_str())),
        (text("subject_id"), event.subject_id.map_or(Value::Null, |id| text(&id.to_string()))),
        (text("actor"), text(&event.actor)),
        (text("payload"), Value::Bytes(event.payload.clone())),
        (text("payload_digest"), text(&format!("blake3:{}", hex::encode(event.payload_digest)))),
        (text("chain_hash"), text(&format!("blake3:{}", hex::encode(event.chain_hash)))),
    ]);
    artifactstore_cbor::encode_value(&map).expect("an envelope of text, integers and bytes always encodes")
}

/// The head as `GET /v1/events/head` serves it.
pub(crate) fn head_json(head: &Head) -> Json {
    json!({
        "log_id": head.log_id.to_string(),
        "sequence": head.sequence,
        "chain_hash": format!("blake3:{}", hex::encode(head.chain_hash)),
    })
}

/// A CBOR value as JSON: byte strings become lowercase hex, integers outside the 64-bit range become decimal
/// strings, non-finite floats become null, tags show their content, and map keys that are not text are printed
/// in CBOR diagnostic-like form. The canonical bytes, not this rendering, are what `payload_digest` covers.
pub fn payload_json(value: &Value) -> Json {
    serde_json::to_value(PayloadJson(value)).unwrap_or(Json::Null)
}

/// A CBOR value that serializes as `payload_json` renders it, written as it goes.
#[derive(Debug)]
pub(crate) struct PayloadJson<V>(pub(crate) V);

impl<V: std::borrow::Borrow<Value>> Serialize for PayloadJson<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.borrow() {
            Value::Integer(i) => {
                let i = i128::from(*i);
                if let Ok(n) = i64::try_from(i) {
                    serializer.serialize_i64(n)
                } else if let Ok(n) = u64::try_from(i) {
                    serializer.serialize_u64(n)
                } else {
                    serializer.serialize_str(&i.to_string())
                }
            }
            Value::Bytes(b) => serializer.serialize_str(&hex::encode(b)),
            Value::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            Value::Text(t) => serializer.serialize_str(t),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Tag(_, inner) => PayloadJson(inner.as_ref()).serialize(serializer),
            Value::Array(items) => serializer.collect_seq(items.iter().map(PayloadJson)),
            Value::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    match key {
                        Value::Text(t) => map.serialize_entry(t, &PayloadJson(value))?,
                        other => map.serialize_entry(&payload_json(other).to_string(), &PayloadJson(value))?,
                    }
                }
                map.end()
            }
            _ => serializer.serialize_unit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_cbor_kind() {
        let value = Value::Map(vec![
            (Value::Text("big".into()), Value::Integer(u64::MAX.into())),
            (Value::Text("neg".into()), Value::Integer((-5i64).into())),
            (Value::Text("bytes".into()), Value::Bytes(vec![0xab, 0x01])),
            (Value::Integer(7.into()), Value::Array(vec![Value::Bool(true), Value::Null, Value::Float(1.5)])),
            (Value::Text("nan".into()), Value::Float(f64::NAN)),
            (Value::Text("tag".into()), Value::Tag(1, Box::new(Value::Integer(0.into())))),
        ]);
        let expected =
            json!({"big": u64::MAX, "neg": -5, "bytes": "ab01", "7": [true, null, 1.5], "nan": null, "tag": 0});
        assert_eq!(payload_json(&value), expected);
        // Written as it goes, the same document.
        let text = serde_json::to_vec(&PayloadJson(&value)).unwrap();
        assert_eq!(serde_json::from_slice::<Json>(&text).unwrap(), expected);
    }
}
