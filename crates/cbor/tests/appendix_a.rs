//! RFC 8949 Appendix A examples: canonical ones round-trip, the others are refused and canonicalized.

mod common;

use artifactstore_cbor::{canonicalize, decode_value, encode_value, DecodeError, Value};
use common::{assert_same, unhex};
use serde::Deserialize;

/// One entry of `fixtures/cbor_appendix_a.json`.
#[derive(Debug, Deserialize)]
struct Entry {
    hex: String,
    roundtrip: bool,
    decoded: Option<serde_json::Value>,
    diagnostic: Option<String>,
}

fn entries() -> Vec<Entry> {
    let text = include_str!("fixtures/cbor_appendix_a.json");
    let entries: Vec<Entry> = serde_json::from_str(text).expect("the fixture parses");
    assert_eq!(entries.len(), 82, "the fixture has the 82 Appendix A examples");
    entries
}

/// Converts the JSON form of an example to the value it stands for.
fn from_json(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::Float(n.as_f64().expect("a JSON number is an f64 at worst"))
            }
        }
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => {
            Value::Map(map.iter().map(|(k, v)| (Value::Text(k.clone()), from_json(v))).collect())
        }
    }
}

/// Examples whose JSON `decoded` number is beyond 64 bits (so serde_json
/// reads it as a lossy f64), with their exact values.
fn exact_big_integer(hex: &str) -> Option<Value> {
    match hex {
        "c249010000000000000000" => Some(Value::from(18_446_744_073_709_551_616_i128)),
        "3bffffffffffffffff" => Some(Value::from(-18_446_744_073_709_551_616_i128)),
        "c349010000000000000000" => Some(Value::from(-18_446_744_073_709_551_617_i128)),
        _ => None,
    }
}

/// The values of the examples that the file gives only in diagnostic notation.
fn from_diagnostic(hex: &str) -> Option<Value> {
    let int = |i: u64| Value::from(i);
    Some(match hex {
        "f97c00" | "fa7f800000" | "fb7ff0000000000000" => Value::Float(f64::INFINITY),
        "f9fc00" | "faff800000" | "fbfff0000000000000" => Value::Float(f64::NEG_INFINITY),
        "f97e00" | "fa7fc00000" | "fb7ff8000000000000" => Value::Float(f64::NAN),
        "c074323031332d30332d32315432303a30343a30305a" => {
            Value::Tag(0, Box::new(Value::Text("2013-03-21T20:04:00Z".into())))
        }
        "c11a514b67b0" => Value::Tag(1, Box::new(int(1_363_896_240))),
        "c1fb41d452d9ec200000" => Value::Tag(1, Box::new(Value::Float(1_363_896_240.5))),
        "d74401020304" => Value::Tag(23, Box::new(Value::Bytes(vec![1, 2, 3, 4]))),
        "d818456449455446" => Value::Tag(24, Box::new(Value::Bytes(b"dIETF".to_vec()))),
        "d82076687474703a2f2f7777772e6578616d706c652e636f6d" => {
            Value::Tag(32, Box::new(Value::Text("http://www.example.com".into())))
        }
        // `"decoded": null` reads as a missing `decoded` through `Option`.
        "f6" => Value::Null,
        "40" => Value::Bytes(vec![]),
        "4401020304" => Value::Bytes(vec![1, 2, 3, 4]),
        "5f42010243030405ff" => Value::Bytes(vec![1, 2, 3, 4, 5]),
        "a201020304" => Value::Map(vec![(int(1), int(2)), (int(3), int(4))]),
        _ => return None,
    })
}

/// The value an example stands for, if the test knows it.
fn expected_value(entry: &Entry) -> Option<Value> {
    exact_big_integer(&entry.hex)
        .or_else(|| entry.decoded.as_ref().map(from_json))
        .or_else(|| from_diagnostic(&entry.hex))
}

/// Examples marked `roundtrip: true` that this codec refuses anyway, with the reason.
fn refused_canonical_example(hex: &str) -> Option<DecodeError> {
    match hex {
        // Undefined and unassigned simple values are well-formed and
        // canonical, but ciborium's `Value` has no variant for them, and
        // reading them as anything else would not re-encode to the input.
        "f7" => Some(DecodeError::UnsupportedSimpleValue { offset: 0, value: 23 }),
        "f0" => Some(DecodeError::UnsupportedSimpleValue { offset: 0, value: 16 }),
        "f8ff" => Some(DecodeError::UnsupportedSimpleValue { offset: 0, value: 255 }),
        // RFC 8949 §3.3: a two-byte simple value below 32 is not well-formed
        // (RFC 7049 allowed it, hence the flag in the file).
        "f818" => Some(DecodeError::InvalidSimpleValue { offset: 0, value: 24 }),
        _ => None,
    }
}

/// The error the strict decoder gives for each `roundtrip: false` example.
fn expected_rejection(hex: &str) -> DecodeError {
    let indefinite = |offset| DecodeError::IndefiniteLength { offset };
    match hex {
        "fa7f800000" | "faff800000" | "fb7ff0000000000000" | "fbfff0000000000000" => {
            DecodeError::NonShortestFloat { offset: 0 }
        }
        "fa7fc00000" | "fb7ff8000000000000" => DecodeError::NonCanonicalNan { offset: 0 },
        "83018202039f0405ff" => indefinite(5),
        "83019f0203ff820405" => indefinite(2),
        "826161bf61626163ff" => indefinite(3),
        // Every other non-canonical example starts with an indefinite-length item.
        _ => indefinite(0),
    }
}

#[test]
fn canonical_examples_round_trip() {
    let mut checked = 0;
    for entry in entries().iter().filter(|e| e.roundtrip) {
        let bytes = unhex(&entry.hex);
        if let Some(error) = refused_canonical_example(&entry.hex) {
            assert_eq!(decode_value(&bytes), Err(error.clone()), "{}", entry.hex);
            assert_eq!(canonicalize(&bytes), Err(error), "{}", entry.hex);
            continue;
        }
        let value =
            decode_value(&bytes).unwrap_or_else(|err| panic!("{} ({:?}) refused: {err}", entry.hex, entry.diagnostic));
        assert_eq!(encode_value(&value).unwrap(), bytes, "{}", entry.hex);
        assert_eq!(canonicalize(&bytes).unwrap(), bytes, "{}", entry.hex);
        if let Some(expected) = expected_value(entry) {
            match (&value, &expected, &entry.decoded) {
                // serde_json's default float parser may be one unit in the last
                // place off (3.4028234663852886e+38 is), so floats read from the
                // JSON are compared within one ULP; the exact bits are checked by
                // the round trip above.
                (Value::Float(actual), Value::Float(json), Some(_)) => {
                    let ulps = actual.to_bits().abs_diff(json.to_bits());
                    assert!(ulps <= 1, "{}: {actual} is not {json}", entry.hex);
                }
                _ => {
                    assert_same(&value, &expected);
                    // The expected value encodes to the example's bytes, whatever its map order.
                    assert_eq!(encode_value(&expected).unwrap(), bytes, "{}", entry.hex);
                }
            }
            checked += 1;
        }
    }
    // All 65 canonical examples but the four refused ones have a known value.
    assert_eq!(checked, 61);
}

#[test]
fn non_canonical_examples_are_refused_then_canonicalized() {
    let mut checked = 0;
    for entry in entries().iter().filter(|e| !e.roundtrip) {
        let bytes = unhex(&entry.hex);
        assert_eq!(decode_value(&bytes), Err(expected_rejection(&entry.hex)), "{}", entry.hex);
        let canonical =
            canonicalize(&bytes).unwrap_or_else(|err| panic!("{} could not be canonicalized: {err}", entry.hex));
        assert_ne!(canonical, bytes, "{}", entry.hex);
        let value =
            decode_value(&canonical).unwrap_or_else(|err| panic!("canonical form of {} refused: {err}", entry.hex));
        assert_eq!(canonicalize(&canonical).unwrap(), canonical);
        let expected = expected_value(entry).expect("every non-canonical example has a known value");
        assert_same(&value, &expected);
        assert_eq!(encode_value(&expected).unwrap(), canonical, "{}", entry.hex);
        checked += 1;
    }
    assert_eq!(checked, 17);
}

#[test]
fn canonical_forms_of_selected_examples() {
    let cases = [
        ("fa7f800000", "f97c00"),
        ("fb7ff8000000000000", "f97e00"),
        ("5f42010243030405ff", "450102030405"),
        ("7f657374726561646d696e67ff", "6973747265616d696e67"),
        ("9fff", "80"),
        ("bf6346756ef563416d7421ff", "a263416d74216346756ef5"),
    ];
    for (input, canonical) in cases {
        assert_eq!(canonicalize(&unhex(input)).unwrap(), unhex(canonical), "{input}");
    }
}

#[test]
fn the_f818_example_is_not_well_formed() {
    let error = decode_value(&unhex("f818")).unwrap_err();
    assert_eq!(error, DecodeError::InvalidSimpleValue { offset: 0, value: 24 });
    assert_eq!(error.offset(), 0);
}
