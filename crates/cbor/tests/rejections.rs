//! Table-driven tests: the exact error and offset for each kind of refused input, and encoder examples.

mod common;

use artifactstore_cbor::{
    canonicalize, decode_sequence, decode_value, encode_value, from_slice, DecodeError, EncodeError, Value, MAX_DEPTH,
};
use common::unhex;

/// Hex with spaces allowed between bytes.
fn bytes(hex: &str) -> Vec<u8> {
    unhex(&hex.replace(' ', ""))
}

/// Checks that the strict decoder refuses `input` with exactly `expected`.
#[track_caller]
fn check(input: &str, expected: DecodeError) {
    let result = decode_value(&bytes(input));
    assert_eq!(result, Err(expected), "decode_value({input})");
}

/// Checks that the strict decoder accepts `input` and re-encodes it unchanged.
#[track_caller]
fn accept(input: &str) {
    let input_bytes = bytes(input);
    let value = decode_value(&input_bytes).unwrap_or_else(|err| panic!("{input} refused: {err}"));
    assert_eq!(encode_value(&value).unwrap(), input_bytes, "{input} re-encoded");
}

/// Checks what the lenient canonicalizer makes of `input`.
#[track_caller]
fn check_canonicalize(input: &str, expected: Result<&str, DecodeError>) {
    let result = canonicalize(&bytes(input));
    assert_eq!(result, expected.map(bytes), "canonicalize({input})");
}

/// Checks the canonical encoding of `value`.
#[track_caller]
fn check_encode(value: Value, expected: &str) {
    assert_eq!(encode_value(&value).map(hex::encode), Ok(expected.replace(' ', "")), "encode_value({value:?})");
}

/// `n` copies of `unit` in hex.
fn repeat(unit: &str, n: usize) -> String {
    unit.repeat(n)
}

#[test]
fn truncated() {
    use DecodeError::Truncated;
    check("", Truncated { offset: 0 });
    check("19 01", Truncated { offset: 0 });
    check("1b 00 00 00", Truncated { offset: 0 });
    check("f9 7e", Truncated { offset: 0 });
    check("fb 3f f1", Truncated { offset: 0 });
    check("f8", Truncated { offset: 0 });
    check("81 19", Truncated { offset: 1 });
    // The second item of the outer array is missing where the input ends.
    check("82 81 00", Truncated { offset: 3 });
    check("a1 81 00", Truncated { offset: 3 });
    // A tag with nothing to tag.
    check("c2", Truncated { offset: 1 });
}

#[test]
fn length_exceeds_input() {
    let check_length = |input: &str, offset, length, remaining| {
        check(input, DecodeError::LengthExceedsInput { offset, length, remaining });
    };
    check_length("43 01 02", 0, 3, 2);
    check_length("78 20 61", 0, 32, 1);
    check_length("81 62 61", 1, 2, 1);
    check_length("5b ff ff ff ff ff ff ff ff 00", 0, u64::MAX, 1);
    check_length("7b 00 00 00 01 00 00 00 00", 0, 1 << 32, 0);
    // Arrays need at least one byte per item, maps two per entry, before any allocation.
    check_length("82 01", 0, 2, 1);
    check_length("9b 00 00 00 01 00 00 00 00", 0, 1 << 32, 0);
    check_length("9b ff ff ff ff ff ff ff ff", 0, u64::MAX, 0);
    check_length("a2 01 02 03", 0, 2, 3);
    check_length("bb ff ff ff ff ff ff ff ff", 0, u64::MAX, 0);
}

#[test]
fn trailing_bytes() {
    use DecodeError::TrailingBytes;
    check("00 00", TrailingBytes { offset: 1 });
    check("a0 ff", TrailingBytes { offset: 1 });
    check("82 01 02 03 04", TrailingBytes { offset: 3 });
}

#[test]
fn indefinite_lengths_and_breaks() {
    use DecodeError::{IndefiniteLength, InvalidIndefinite, UnexpectedBreak};
    check("5f 41 00 ff", IndefiniteLength { offset: 0 });
    check("7f 61 61 ff", IndefiniteLength { offset: 0 });
    check("9f ff", IndefiniteLength { offset: 0 });
    check("bf ff", IndefiniteLength { offset: 0 });
    check("81 9f ff", IndefiniteLength { offset: 1 });
    check("ff", UnexpectedBreak { offset: 0 });
    check("82 00 ff", UnexpectedBreak { offset: 2 });
    // Additional information 31 on integers and tags is not well-formed at all.
    check("1f", InvalidIndefinite { offset: 0, major: 0 });
    check("3f", InvalidIndefinite { offset: 0, major: 1 });
    check("81 df 00", InvalidIndefinite { offset: 1, major: 6 });
}

#[test]
fn reserved_additional_information() {
    for (input, info) in [("1c", 28), ("3d", 29), ("5e", 30), ("7c", 28), ("9d", 29)] {
        check(input, DecodeError::ReservedAdditionalInfo { offset: 0, info });
    }
    for (input, info) in [("bc", 28), ("dd", 29), ("fc", 28), ("fd", 29), ("fe", 30)] {
        check(input, DecodeError::ReservedAdditionalInfo { offset: 0, info });
    }
    check("82 00 3e", DecodeError::ReservedAdditionalInfo { offset: 2, info: 30 });
}

#[test]
fn non_shortest_heads() {
    use DecodeError::NonShortestHead;
    for input in [
        "18 17",
        "19 00 ff",
        "1a 00 00 ff ff",
        "1b 00 00 00 00 ff ff ff ff",
        "38 00",
        "39 00 17",
        "58 00",
        "79 00 01 61",
        "98 01 00",
        "b8 00",
        "d8 01 00",
        "db 00 00 00 00 00 00 00 20 00",
    ] {
        check(input, NonShortestHead { offset: 0 });
    }
    check("81 19 00 01", NonShortestHead { offset: 1 });
    check("a1 61 61 18 05", NonShortestHead { offset: 3 });
    // The smallest argument of each width is accepted.
    for input in [
        "17",
        "18 18",
        "19 01 00",
        "1a 00 01 00 00",
        "1b 00 00 00 01 00 00 00 00",
        "3b ff ff ff ff ff ff ff ff",
        "d8 18 00",
    ] {
        accept(input);
    }
}

#[test]
fn non_shortest_floats() {
    use DecodeError::NonShortestFloat;
    for input in [
        "fa 3f 80 00 00",             // 1.0 fits half precision.
        "fa 00 00 00 00",             // 0.0
        "fa 80 00 00 00",             // -0.0
        "fa 7f 80 00 00",             // Infinity
        "fa 33 80 00 00",             // The smallest half subnormal, 2^-24.
        "fb 3f f8 00 00 00 00 00 00", // 1.5 fits half precision.
        "fb 00 00 00 00 00 00 00 00", // 0.0
        "fb ff f0 00 00 00 00 00 00", // -Infinity
        "fb 40 f8 6a 00 00 00 00 00", // 100000.0 fits single precision.
        "fb 47 ef ff ff e0 00 00 00", // f32::MAX
        "fb 36 a0 00 00 00 00 00 00", // The smallest single subnormal, 2^-149.
    ] {
        check(input, NonShortestFloat { offset: 0 });
    }
    check("81 fa 3f 80 00 00", NonShortestFloat { offset: 1 });
    for input in [
        "f9 3c 00",
        "f9 00 01",
        "f9 80 00",
        "fa 47 c3 50 00",
        "fa 00 00 00 01",
        "fa 7f 7f ff ff",
        "fb 3f f1 99 99 99 99 99 9a",
        "fb 00 00 00 00 00 00 00 01",
    ] {
        accept(input);
    }
}

#[test]
fn non_canonical_nans() {
    use DecodeError::NonCanonicalNan;
    for input in [
        "f9 7e 01",
        "f9 fe 00",
        "f9 7c 01",
        "f9 7f ff",
        "fa 7f c0 00 00",
        "fa ff c0 00 00",
        "fa 7f 80 00 01",
        "fb 7f f8 00 00 00 00 00 00",
        "fb ff f8 00 00 00 00 00 01",
    ] {
        check(input, NonCanonicalNan { offset: 0 });
    }
    accept("f9 7e 00");
}

#[test]
fn map_key_order_and_duplicates() {
    use DecodeError::{DuplicateKey, UnsortedKeys};
    check("a2 02 00 01 00", UnsortedKeys { offset: 3 });
    check("a2 61 62 00 61 61 00", UnsortedKeys { offset: 4 });
    // RFC 7049's length-first order puts -1 (20) before 24 (18 18); RFC 8949's bytewise order does not.
    check("a2 20 00 18 18 00", UnsortedKeys { offset: 3 });
    accept("a2 18 18 00 20 00");
    // Shorter text keys sort first because the head holds the length.
    check("a2 62 61 61 00 61 62 00", UnsortedKeys { offset: 5 });
    accept("a2 61 62 00 62 61 61 00");
    check("a3 01 00 03 00 02 00", UnsortedKeys { offset: 5 });
    check("a2 01 00 01 00", DuplicateKey { offset: 3 });
    check("a2 61 61 00 61 61 01", DuplicateKey { offset: 4 });
    check("81 a2 80 00 80 00", DuplicateKey { offset: 4 });
    // Keys of every kind, in bytewise order.
    accept("a6 00 00 20 00 40 00 60 00 80 00 f4 00");
}

#[test]
fn invalid_utf8() {
    use DecodeError::InvalidUtf8;
    check("62 c3 28", InvalidUtf8 { offset: 1 });
    check("63 61 ff 61", InvalidUtf8 { offset: 2 });
    check("81 61 80", InvalidUtf8 { offset: 2 });
    // A UTF-16 surrogate encoded as UTF-8.
    check("63 ed a0 80", InvalidUtf8 { offset: 1 });
    // An overlong encoding of '/'.
    check("62 c0 af", InvalidUtf8 { offset: 1 });
    // A sequence cut short by the end of the string.
    check("62 61 e6", InvalidUtf8 { offset: 2 });
    accept("64 f0 90 85 91");
}

#[test]
fn simple_values() {
    use DecodeError::{InvalidSimpleValue, UnsupportedSimpleValue};
    check("f8 00", InvalidSimpleValue { offset: 0, value: 0 });
    check("f8 14", InvalidSimpleValue { offset: 0, value: 20 });
    check("f8 18", InvalidSimpleValue { offset: 0, value: 24 });
    check("f8 1f", InvalidSimpleValue { offset: 0, value: 31 });
    check("e0", UnsupportedSimpleValue { offset: 0, value: 0 });
    check("f3", UnsupportedSimpleValue { offset: 0, value: 19 });
    check("f7", UnsupportedSimpleValue { offset: 0, value: 23 });
    check("f8 20", UnsupportedSimpleValue { offset: 0, value: 32 });
    check("81 f8 ff", UnsupportedSimpleValue { offset: 1, value: 255 });
    assert_eq!(decode_value(&bytes("f4")), Ok(Value::Bool(false)));
    assert_eq!(decode_value(&bytes("f5")), Ok(Value::Bool(true)));
    assert_eq!(decode_value(&bytes("f6")), Ok(Value::Null));
}

#[test]
fn bignums() {
    use DecodeError::{InvalidBignum, NonCanonicalBignum};
    let zeros = |n| repeat("00", n);
    // Zero, one byte, and exactly 64 bits all fit major type 0 or 1.
    check("c2 40", NonCanonicalBignum { offset: 0 });
    check("c2 41 01", NonCanonicalBignum { offset: 0 });
    check("c3 48 ff ff ff ff ff ff ff ff", NonCanonicalBignum { offset: 0 });
    // Leading zero bytes.
    check(&format!("c2 4a 00 01 {}", zeros(8)), NonCanonicalBignum { offset: 0 });
    check(&format!("81 c3 4a 00 01 {}", zeros(8)), NonCanonicalBignum { offset: 1 });
    // Bignum tags must enclose a byte string.
    check("c2 00", InvalidBignum { offset: 0 });
    check("c3 60", InvalidBignum { offset: 0 });
    check(&format!("c2 c2 49 01 {}", zeros(8)), InvalidBignum { offset: 0 });

    let two_to_64 = format!("c2 49 01 {}", zeros(8));
    accept(&two_to_64);
    assert_eq!(decode_value(&bytes(&two_to_64)), Ok(Value::from(18_446_744_073_709_551_616_i128)));
    accept(&format!("c3 49 01 {}", zeros(8)));
    // Beyond i128: kept as the tagged bytes.
    let huge = format!("c2 51 01 {}", zeros(16));
    accept(&huge);
    let mut magnitude = vec![1];
    magnitude.extend([0; 16]);
    assert_eq!(decode_value(&bytes(&huge)), Ok(Value::Tag(2, Box::new(Value::Bytes(magnitude)))));
    assert_eq!(
        decode_value(&bytes("c3 50 7f ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff")),
        Ok(Value::from(i128::MIN))
    );
}

#[test]
fn nesting_depth() {
    use DecodeError::DepthLimitExceeded;
    let limit = MAX_DEPTH;
    accept(&format!("{}00", repeat("81", MAX_DEPTH)));
    check(&format!("{}00", repeat("81", MAX_DEPTH + 1)), DepthLimitExceeded { offset: MAX_DEPTH + 1, limit });
    check(&format!("{}00", repeat("c1", MAX_DEPTH + 1)), DepthLimitExceeded { offset: MAX_DEPTH + 1, limit });
    // Maps nest through their values here: the map at depth 256 starts at
    // byte 512, and its key, one level too deep, at byte 513.
    check(&format!("{}00", repeat("a1 00", MAX_DEPTH + 1)), DepthLimitExceeded { offset: 2 * MAX_DEPTH + 1, limit });
    // A very deep input fails at the limit and never reaches the stack's end.
    let deep = vec![0x81; 1_000_000];
    assert_eq!(decode_value(&deep), Err(DepthLimitExceeded { offset: MAX_DEPTH + 1, limit }));
    assert_eq!(canonicalize(&vec![0x9f; 1_000_000]), Err(DepthLimitExceeded { offset: MAX_DEPTH + 1, limit }));
}

#[test]
fn every_error_reports_its_offset() {
    let error = decode_value(&bytes("82 00 18 01")).unwrap_err();
    assert_eq!(error, DecodeError::NonShortestHead { offset: 2 });
    assert_eq!(error.offset(), 2);
    assert!(error.to_string().contains("byte 2"), "{error}");
}

#[test]
fn sequences() {
    assert_eq!(decode_sequence(&[]), Ok(vec![]));
    assert_eq!(
        decode_sequence(&bytes("00 61 61 80")),
        Ok(vec![Value::from(0), Value::Text("a".into()), Value::Array(vec![])])
    );
    assert_eq!(decode_sequence(&bytes("00 18 01")), Err(DecodeError::NonShortestHead { offset: 1 }));
    assert_eq!(decode_sequence(&bytes("00 19 01")), Err(DecodeError::Truncated { offset: 1 }));
    assert_eq!(decode_sequence(&bytes("00 ff")), Err(DecodeError::UnexpectedBreak { offset: 1 }));
}

#[test]
fn deserialize_errors_point_at_the_item() {
    let error = from_slice::<u8>(&bytes("61 61")).unwrap_err();
    assert!(matches!(error, DecodeError::Deserialize { offset: 0, .. }), "{error:?}");
    assert_eq!(from_slice::<u8>(&bytes("18 01")), Err(DecodeError::NonShortestHead { offset: 0 }));
}

#[test]
fn canonicalize_accepts_any_well_formed_item() {
    use DecodeError::{
        DepthLimitExceeded, DuplicateKey, InvalidBignum, InvalidChunk, InvalidSimpleValue, InvalidUtf8, Truncated,
        UnexpectedBreak, UnsupportedSimpleValue,
    };
    let zeros = |n| repeat("00", n);
    check_canonicalize("18 00", Ok("00"));
    check_canonicalize("3b 00 00 00 00 00 00 00 00", Ok("20"));
    check_canonicalize("5f 41 01 40 41 02 ff", Ok("42 01 02"));
    check_canonicalize("5f ff", Ok("40"));
    check_canonicalize("7f 61 61 78 01 62 ff", Ok("62 61 62"));
    check_canonicalize("9f 01 9f ff ff", Ok("82 01 80"));
    check_canonicalize("bf 02 00 01 00 ff", Ok("a2 01 00 02 00"));
    check_canonicalize("a2 20 00 18 18 00", Ok("a2 18 18 00 20 00"));
    check_canonicalize("fb 3f f0 00 00 00 00 00 00", Ok("f9 3c 00"));
    check_canonicalize("fa 7f c0 00 01", Ok("f9 7e 00"));
    check_canonicalize("f9 fe 00", Ok("f9 7e 00"));
    check_canonicalize("c2 41 05", Ok("05"));
    check_canonicalize("c3 40", Ok("20"));
    check_canonicalize("c3 5f 41 00 41 07 ff", Ok("27"));
    check_canonicalize(&format!("c2 4b 00 00 01 {}", zeros(8)), Ok(&format!("c2 49 01 {}", zeros(8))));
    check_canonicalize("d8 01 19 00 01", Ok("c1 01"));

    // Keys that are equal once canonical are duplicates.
    check_canonicalize("a2 01 00 18 01 00", Err(DuplicateKey { offset: 3 }));
    check_canonicalize("bf 61 61 00 7f 61 61 ff 01 ff", Err(DuplicateKey { offset: 4 }));
    check_canonicalize("a2 f9 7e 00 00 fa 7f c0 00 00 00", Err(DuplicateKey { offset: 5 }));
    check_canonicalize("a1 a2 01 00 01 00 00", Err(DuplicateKey { offset: 4 }));
    check_canonicalize("a3 01 00 02 00 01 00", Err(DuplicateKey { offset: 5 }));
    // Still refused: trailing bytes, malformed items, unrepresentable values.
    check_canonicalize("9f 01 ff 00", Err(DecodeError::TrailingBytes { offset: 3 }));
    check_canonicalize("bf 01 ff", Err(UnexpectedBreak { offset: 2 }));
    check_canonicalize("9f 01", Err(Truncated { offset: 2 }));
    check_canonicalize("5f 61 61 ff", Err(InvalidChunk { offset: 1 }));
    check_canonicalize("5f 5f ff ff", Err(InvalidChunk { offset: 1 }));
    check_canonicalize("7f 61 c3 61 bc ff", Err(InvalidUtf8 { offset: 2 }));
    check_canonicalize("f8 18", Err(InvalidSimpleValue { offset: 0, value: 24 }));
    check_canonicalize("f7", Err(UnsupportedSimpleValue { offset: 0, value: 23 }));
    check_canonicalize("c2 00", Err(InvalidBignum { offset: 0 }));
    check_canonicalize(
        &format!("{}00", repeat("9f", MAX_DEPTH + 1)),
        Err(DepthLimitExceeded { offset: MAX_DEPTH + 1, limit: MAX_DEPTH }),
    );
}

#[test]
fn encodes_integers_in_shortest_form() {
    let int = |i: i128| Value::from(i);
    let zeros = |n| repeat("00", n);
    check_encode(int(0), "00");
    check_encode(int(23), "17");
    check_encode(int(24), "18 18");
    check_encode(int(255), "18 ff");
    check_encode(int(256), "19 01 00");
    check_encode(int(65_535), "19 ff ff");
    check_encode(int(65_536), "1a 00 01 00 00");
    check_encode(int(u32::MAX.into()), "1a ff ff ff ff");
    check_encode(int(1 << 32), "1b 00 00 00 01 00 00 00 00");
    check_encode(int(u64::MAX.into()), "1b ff ff ff ff ff ff ff ff");
    check_encode(int(-1), "20");
    check_encode(int(-24), "37");
    check_encode(int(-25), "38 18");
    check_encode(int(-(1 << 64)), "3b ff ff ff ff ff ff ff ff");
    check_encode(int(1 << 64), &format!("c2 49 01 {}", zeros(8)));
    check_encode(int(-(1 << 64) - 1), &format!("c3 49 01 {}", zeros(8)));
    check_encode(int(i128::MAX), &format!("c2 50 7f {}", repeat("ff", 15)));
    check_encode(int(i128::MIN), &format!("c3 50 7f {}", repeat("ff", 15)));
}

#[test]
fn encodes_bignum_tags_canonically() {
    let bignum = |tag, bytes: &[u8]| Value::Tag(tag, Box::new(Value::Bytes(bytes.to_vec())));
    check_encode(bignum(2, &[0, 0, 5]), "05");
    check_encode(bignum(3, &[]), "20");
    check_encode(bignum(3, &[1, 0]), "39 01 00");
    check_encode(bignum(2, &[0; 20]), "00");
    check_encode(bignum(2, &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), "c2 49 01 00 00 00 00 00 00 00 00");
    assert_eq!(
        encode_value(&Value::Tag(2, Box::new(Value::Text("1".into())))),
        Err(EncodeError::InvalidBignum { tag: 2 })
    );
    assert_eq!(encode_value(&Value::Tag(3, Box::new(Value::from(1)))), Err(EncodeError::InvalidBignum { tag: 3 }));
}

#[test]
fn encodes_floats_in_shortest_exact_width() {
    let float = Value::Float;
    check_encode(float(0.0), "f9 00 00");
    check_encode(float(-0.0), "f9 80 00");
    check_encode(float(1.0), "f9 3c 00");
    check_encode(float(65_504.0), "f9 7b ff");
    check_encode(float(65_505.0), "fa 47 7f e1 00");
    check_encode(float(100_000.0), "fa 47 c3 50 00");
    check_encode(float(1.1), "fb 3f f1 99 99 99 99 99 9a");
    check_encode(float(5.960_464_477_539_063e-8), "f9 00 01");
    check_encode(float(f64::from(f32::from_bits(1))), "fa 00 00 00 01");
    check_encode(float(f64::MIN_POSITIVE), "fb 00 10 00 00 00 00 00 00");
    check_encode(float(f64::from_bits(1)), "fb 00 00 00 00 00 00 00 01");
    check_encode(float(1e300), "fb 7e 37 e4 3c 88 00 75 9c");
    check_encode(float(f64::INFINITY), "f9 7c 00");
    check_encode(float(f64::NEG_INFINITY), "f9 fc 00");
    check_encode(float(f64::NAN), "f9 7e 00");
    check_encode(float(-f64::NAN), "f9 7e 00");
    check_encode(float(f64::from_bits(0x7ff0_0000_0000_0001)), "f9 7e 00");
    check_encode(float(f64::from(f32::from_bits(0x7f80_0001))), "f9 7e 00");
}

#[test]
fn encodes_maps_in_bytewise_key_order() {
    let text = |s: &str| Value::Text(s.into());
    let int = |i: i64| Value::from(i);
    check_encode(Value::Map(vec![(text("b"), int(1)), (text("a"), int(2))]), "a2 61 61 02 61 62 01");
    check_encode(Value::Map(vec![(int(-1), int(0)), (int(24), int(0))]), "a2 18 18 00 20 00");
    check_encode(Value::Map(vec![(text("aa"), int(0)), (text("b"), int(0))]), "a2 61 62 00 62 61 61 00");
    check_encode(
        Value::Map(vec![
            (Value::Bool(false), int(0)),
            (Value::Array(vec![]), int(0)),
            (text(""), int(0)),
            (Value::Bytes(vec![]), int(0)),
            (int(0), int(0)),
        ]),
        "a5 00 00 40 00 60 00 80 00 f4 00",
    );
}

#[test]
fn refuses_duplicate_keys() {
    let dup = |key_a: Value, key_b: Value| {
        let map = Value::Map(vec![(key_a, Value::Null), (key_b, Value::Null)]);
        assert_eq!(encode_value(&map), Err(EncodeError::DuplicateKey), "{map:?}");
    };
    dup(Value::from(1), Value::from(1));
    dup(Value::Text("k".into()), Value::Text("k".into()));
    dup(Value::Float(f64::NAN), Value::Float(-f64::NAN));
    dup(Value::from(5), Value::Tag(2, Box::new(Value::Bytes(vec![0, 5]))));
    // A duplicate deep inside a value is found too.
    let inner = Value::Map(vec![(Value::Null, Value::Null), (Value::Null, Value::Bool(true))]);
    assert_eq!(encode_value(&Value::Array(vec![inner])), Err(EncodeError::DuplicateKey));
}

#[test]
fn encodes_strings_tags_and_depth() {
    check_encode(Value::Text("a".repeat(24)), &format!("78 18 {}", repeat("61", 24)));
    check_encode(Value::Bytes(vec![7; 256]), &format!("59 01 00 {}", repeat("07", 256)));
    check_encode(Value::Tag(u64::MAX, Box::new(Value::Null)), "db ff ff ff ff ff ff ff ff f6");
    check_encode(Value::Tag(24, Box::new(Value::Bytes(vec![]))), "d8 18 40");

    let nest = |depth: usize| (0..depth).fold(Value::from(0), |inner, _| Value::Array(vec![inner]));
    assert!(encode_value(&nest(MAX_DEPTH)).is_ok());
    assert_eq!(encode_value(&nest(MAX_DEPTH + 1)), Err(EncodeError::DepthLimitExceeded { limit: MAX_DEPTH }));
}

/// 256 nested arrays that each declare as many items as there are bytes
/// left, over 10 MB of reserved bytes. Reserving every declared count up
/// front would ask for 256 × 10M values (about 80 GB); the decoder must
/// instead fail cheaply at the first reserved byte. (Found by the fuzzer's
/// memory figures.)
fn check_declared_counts_do_not_drive_allocation() {
    const PADDING: u32 = 10_000_000;
    let mut input = Vec::new();
    for _ in 0..256 {
        input.push(0x9a);
        input.extend(PADDING.to_be_bytes());
    }
    let heads = input.len();
    input.resize(heads + PADDING as usize, 0x1c);
    let expected = DecodeError::ReservedAdditionalInfo { offset: heads, info: 28 };
    assert_eq!(decode_value(&input), Err(expected.clone()));
    assert_eq!(canonicalize(&input), Err(expected));

    // The same with maps nested through their first key.
    let mut input = Vec::new();
    for _ in 0..256 {
        input.push(0xba);
        input.extend((PADDING / 2).to_be_bytes());
    }
    input.resize(heads + PADDING as usize, 0x1c);
    let expected = DecodeError::ReservedAdditionalInfo { offset: heads, info: 28 };
    assert_eq!(decode_value(&input), Err(expected.clone()));
    assert_eq!(canonicalize(&input), Err(expected));
}

/// Runs the check above in a child process whose address space is limited
/// to 2 GB, since Linux would otherwise grant the huge reservations lazily
/// and the test could not tell the difference.
#[test]
fn declared_counts_do_not_drive_allocation() {
    const CHILD: &str = "ARTIFACTSTORE_CBOR_ALLOCATION_CHILD";
    if std::env::var_os(CHILD).is_some() || !cfg!(target_os = "linux") {
        check_declared_counts_do_not_drive_allocation();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary has a path");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 2000000 && exec "$0" --exact declared_counts_do_not_drive_allocation --test-threads=1 --quiet"#)
        .arg(exe)
        .env(CHILD, "1")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("sh runs");
    assert!(status.success(), "the decoder ran out of a 2 GB address space: {status}");
}
