//! The JSON form of events: the envelope, and canonical CBOR payloads rendered as JSON.

use artifactstore_cbor::Value;
use artifactstore_eventlog::{time_text, Event, Head};
use serde_json::{json, Value as Json};

/// The JSON envelope of one event, as the feed serves it.
pub fn envelope_json(event: &Event) -> Json {
    let payload =
        artifactstore_cbor::decode_value(&event.payload).map(|value| payload_json(&value)).unwrap_or(Json::Null);
    json!({
        "sequence": event.sequence,
        "created_at": time_text(&event.created_at),
        "event_type": event.event_type,
        "subject_kind": event.subject_kind.as_str(),
        "subject_id": event.subject_id.map(|id| id.to_string()),
        "actor": event.actor,
        "payload": payload,
        "payload_digest": format!("blake3:{}", hex::encode(event.payload_digest)),
        "chain_hash": format!("blake3:{}", hex::encode(event.chain_hash)),
    })
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
    match value {
        Value::Integer(i) => {
            let i = i128::from(*i);
            if let Ok(n) = i64::try_from(i) {
                Json::from(n)
            } else if let Ok(n) = u64::try_from(i) {
                Json::from(n)
            } else {
                Json::from(i.to_string())
            }
        }
        Value::Bytes(b) => Json::from(hex::encode(b)),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Text(t) => Json::from(t.as_str()),
        Value::Bool(b) => Json::from(*b),
        Value::Null => Json::Null,
        Value::Tag(_, inner) => payload_json(inner),
        Value::Array(items) => Json::Array(items.iter().map(payload_json).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::Text(t) => t.clone(),
                        other => payload_json(other).to_string(),
                    };
                    (key, payload_json(v))
                })
                .collect(),
        ),
        _ => Json::Null,
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
        assert_eq!(
            payload_json(&value),
            json!({"big": u64::MAX, "neg": -5, "bytes": "ab01", "7": [true, null, 1.5], "nan": null, "tag": 0})
        );
    }
}
