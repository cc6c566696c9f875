//! Serde round trips through `to_vec` and `from_slice`, and key order of serialized structs.

mod common;

use std::collections::{BTreeMap, HashMap};

use artifactstore_cbor::{decode_value, from_slice, to_vec, DecodeError, Value};
use common::unhex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Upload { size: u64 },
    Delete,
    Renamed(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Event {
    zeta: u32,
    alpha: String,
    middle: Option<i64>,
    missing: Option<bool>,
    labels: HashMap<String, String>,
    nested: BTreeMap<String, BTreeMap<u16, Vec<Kind>>>,
    huge: u128,
    very_negative: i128,
    ratio: f64,
    small: f32,
    #[serde(with = "bytes")]
    blob: Vec<u8>,
    kind: Kind,
}

/// Serializes a `Vec<u8>` as a CBOR byte string rather than an array of integers.
mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let value = ciborium::Value::deserialize(deserializer)?;
        value.into_bytes().map_err(|_| serde::de::Error::custom("expected a byte string"))
    }
}

fn sample_event() -> Event {
    let mut nested = BTreeMap::new();
    nested.insert(
        "uploads".to_string(),
        BTreeMap::from([
            (1, vec![Kind::Upload { size: 1 << 40 }]),
            (300, vec![Kind::Delete, Kind::Renamed("b.tar".into())]),
        ]),
    );
    nested.insert("empty".to_string(), BTreeMap::new());
    Event {
        zeta: 7,
        alpha: "first in the alphabet, last in canonical order".into(),
        middle: Some(-42),
        missing: None,
        labels: (0..20).map(|i| (format!("label-{i}"), "x".repeat(i))).collect(),
        nested,
        huge: u128::MAX,
        very_negative: i128::MIN,
        ratio: 0.1,
        small: 1.5,
        blob: vec![0, 1, 2, 255],
        kind: Kind::Upload { size: 99 },
    }
}

#[test]
fn struct_with_nested_maps_round_trips() {
    let event = sample_event();
    let bytes = to_vec(&event).unwrap();
    let back: Event = from_slice(&bytes).unwrap();
    assert_eq!(back, event);
    // The bytes are canonical: the strict decoder takes them, and encoding again changes nothing.
    let value = decode_value(&bytes).unwrap();
    assert_eq!(to_vec(&value).unwrap(), bytes);
}

#[test]
fn hash_map_order_does_not_matter() {
    let forward: HashMap<String, u32> = (0..100).map(|i| (format!("k{i}"), i)).collect();
    let backward: HashMap<String, u32> = (0..100).rev().map(|i| (format!("k{i}"), i)).collect();
    let sorted: BTreeMap<String, u32> = (0..100).map(|i| (format!("k{i}"), i)).collect();
    let bytes = to_vec(&forward).unwrap();
    assert_eq!(to_vec(&backward).unwrap(), bytes);
    assert_eq!(to_vec(&sorted).unwrap(), bytes);
    // Canonical order is bytewise over the encoded keys, so "k9" comes before "k10".
    let Value::Map(entries) = decode_value(&bytes).unwrap() else {
        panic!("a map encodes as a map");
    };
    assert_eq!(entries[9].0, Value::Text("k9".into()));
    assert_eq!(entries[10].0, Value::Text("k10".into()));
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FieldsOutOfOrder {
    zeta: u8,
    alpha: u8,
    mid: u8,
    b: u8,
    a: u8,
}

#[test]
fn struct_fields_are_written_in_key_order() {
    let value = FieldsOutOfOrder { zeta: 1, alpha: 2, mid: 3, b: 4, a: 5 };
    let bytes = to_vec(&value).unwrap();
    // Shorter keys first (the head holds the length), then bytewise: a, b, mid, zeta, alpha.
    let expected =
        unhex(concat!("a5", "6161", "05", "6162", "04", "636d6964", "03", "647a657461", "01", "65616c706861", "02",));
    assert_eq!(bytes, expected);
    assert_eq!(from_slice::<FieldsOutOfOrder>(&bytes).unwrap(), value);
}

#[test]
fn from_slice_is_strict() {
    // The same struct with its keys in declaration order is not canonical.
    let unsorted =
        unhex(concat!("a5", "647a657461", "01", "65616c706861", "02", "636d6964", "03", "6162", "04", "6161", "05",));
    // "zeta" (64 7a…) sorts before "alpha" (65 61…); "mid" (63 6d…), at byte 14, does not follow "alpha".
    assert_eq!(from_slice::<FieldsOutOfOrder>(&unsorted), Err(DecodeError::UnsortedKeys { offset: 14 }));
    // Serde's own errors come back as `Deserialize`.
    let error = from_slice::<FieldsOutOfOrder>(&unhex("a0")).unwrap_err();
    assert!(matches!(error, DecodeError::Deserialize { offset: 0, .. }), "{error:?}");
}

#[test]
fn big_integers_use_bignums() {
    assert_eq!(to_vec(&u64::MAX).unwrap(), unhex("1bffffffffffffffff"));
    assert_eq!(to_vec(&(u128::from(u64::MAX) + 1)).unwrap(), unhex("c249010000000000000000"));
    assert_eq!(to_vec(&-18_446_744_073_709_551_616_i128).unwrap(), unhex("3bffffffffffffffff"));
    for value in [i128::MIN, i128::MAX, -1, 0, 1 << 64, -(1 << 64) - 1] {
        assert_eq!(from_slice::<i128>(&to_vec(&value).unwrap()).unwrap(), value);
    }
    assert_eq!(from_slice::<u128>(&to_vec(&u128::MAX).unwrap()).unwrap(), u128::MAX);
}

#[test]
fn floats_take_the_shortest_form() {
    assert_eq!(to_vec(&1.5_f32).unwrap(), unhex("f93e00"));
    assert_eq!(to_vec(&0.1_f32).unwrap(), unhex("fa3dcccccd"));
    assert_eq!(to_vec(&f64::NAN).unwrap(), unhex("f97e00"));
    assert_eq!(from_slice::<f32>(&unhex("fa3dcccccd")).unwrap(), 0.1_f32);
}
