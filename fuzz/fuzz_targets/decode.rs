//! Fuzz target: the strict decoder never panics, and whatever it accepts is its own canonical encoding.
#![no_main]

use artifactstore_cbor::{canonicalize, decode_value, encode_value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = decode_value(data) {
        let encoded = encode_value(&value).expect("a decoded value encodes");
        assert_eq!(encoded, data, "accepted input is not its own canonical encoding");
    }
    // The lenient path must not panic either, and its output must be strict canonical CBOR.
    if let Ok(canonical) = canonicalize(data) {
        let value = decode_value(&canonical).expect("canonicalize output decodes strictly");
        assert_eq!(encode_value(&value).expect("re-encodes"), canonical);
    }
});
