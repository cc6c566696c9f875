//! Helpers shared by the integration tests: hex input and value comparison.

// Each test binary uses only some of these helpers.
#![allow(dead_code)]

use artifactstore_cbor::{encode_value, Value};

/// Decodes a hex literal of a test table.
pub(crate) fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap_or_else(|err| panic!("bad hex {text:?} in a test: {err}"))
}

/// Compares two values as canonical CBOR sees them: map entries in any
/// order, NaN equal to NaN, and floats otherwise by their bits (so `0.0` and
/// `-0.0` differ).
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits(),
        (Value::Array(xs), Value::Array(ys)) => xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y)),
        (Value::Map(xs), Value::Map(ys)) => {
            let (xs, ys) = (sorted_entries(xs), sorted_entries(ys));
            xs.len() == ys.len() && xs.iter().zip(&ys).all(|((kx, vx), (ky, vy))| same(kx, ky) && same(vx, vy))
        }
        (Value::Tag(tx, x), Value::Tag(ty, y)) => tx == ty && same(x, y),
        _ => a == b,
    }
}

/// Asserts [`same`], showing both values on failure.
#[track_caller]
pub(crate) fn assert_same(actual: &Value, expected: &Value) {
    assert!(same(actual, expected), "values differ:\n  actual:   {actual:?}\n  expected: {expected:?}");
}

/// Map entries in the order of their canonical key encodings.
fn sorted_entries(entries: &[(Value, Value)]) -> Vec<(Value, Value)> {
    let mut keyed: Vec<_> =
        entries.iter().map(|(k, v)| (encode_value(k).unwrap_or_default(), (k.clone(), v.clone()))).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, entry)| entry).collect()
}
