//! Property tests over random value trees, random bytes and sloppy (non-canonical) encodings.

mod common;

use artifactstore_cbor::{canonicalize, decode_value, encode_value, Value};
use common::assert_same;
use half::f16;
use proptest::collection::vec;
use proptest::prelude::*;

/// Integers near every head-width boundary and at the ends of the ranges.
const BOUNDARIES: &[i128] = &[
    0,
    23,
    24,
    255,
    256,
    65_535,
    65_536,
    4_294_967_295,
    4_294_967_296,
    18_446_744_073_709_551_615,
    18_446_744_073_709_551_616,
    -1,
    -24,
    -25,
    -256,
    -257,
    -18_446_744_073_709_551_616,
    -18_446_744_073_709_551_617,
    i128::MAX,
    i128::MIN,
];

/// Integers across the whole i128 range and beyond (as `Value::from(u128)`).
fn arb_integer() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i128>().prop_map(Value::from),
        any::<u128>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-30_i128..30).prop_map(Value::from),
        prop::sample::select(BOUNDARIES).prop_map(Value::from),
    ]
}

/// Floats of every width and class: NaNs, infinities, zeros, subnormals.
fn arb_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
        any::<u32>().prop_map(|bits| f64::from(f32::from_bits(bits))),
        any::<u16>().prop_map(|bits| f16::from_bits(bits).to_f64()),
        prop::sample::select(vec![
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            f64::MAX,
            f64::MIN,
            65_504.0,
            5.960_464_477_539_063e-8,
        ]),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => arb_integer(),
        2 => arb_float().prop_map(Value::Float),
        1 => vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        1 => any::<String>().prop_map(Value::Text),
        // Short keys from a small alphabet, so that maps meet repeated keys.
        1 => "[ab]{0,2}".prop_map(Value::Text),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ]
}

/// Tag numbers, avoiding the bignum tags 2 and 3 (bignums come from the integers).
fn arb_tag() -> impl Strategy<Value = u64> {
    prop_oneof![0_u64..40, any::<u64>()].prop_map(|tag| if tag == 2 || tag == 3 { tag + 40 } else { tag })
}

/// Random value trees; maps keep the first of any keys with the same encoding.
fn arb_value() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            vec((inner.clone(), inner.clone()), 0..8).prop_map(without_duplicate_keys),
            (arb_tag(), inner).prop_map(|(tag, value)| Value::Tag(tag, Box::new(value))),
        ]
    })
}

fn without_duplicate_keys(entries: Vec<(Value, Value)>) -> Value {
    let mut seen = std::collections::HashSet::new();
    Value::Map(
        entries.into_iter().filter(|(key, _)| seen.insert(encode_value(key).expect("generated keys encode"))).collect(),
    )
}

/// A small deterministic generator for the choices of the test helpers below.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self) -> bool {
        self.next().is_multiple_of(2)
    }
}

/// The same value with the entries of every map in a random order.
fn scramble(value: &Value, rng: &mut Rng) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|v| scramble(v, rng)).collect()),
        Value::Map(entries) => {
            let mut entries: Vec<_> = entries.iter().map(|(k, v)| (scramble(k, rng), scramble(v, rng))).collect();
            for i in (1..entries.len()).rev() {
                entries.swap(i, rng.below(i + 1));
            }
            Value::Map(entries)
        }
        Value::Tag(tag, inner) => Value::Tag(*tag, Box::new(scramble(inner, rng))),
        other => other.clone(),
    }
}

/// Writes a head with a random argument width at least as wide as needed.
fn sloppy_head(out: &mut Vec<u8>, major: u8, argument: u64, rng: &mut Rng) {
    let major = major << 5;
    let mut widths = vec![8];
    if argument <= u64::from(u32::MAX) {
        widths.push(4);
    }
    if argument <= u64::from(u16::MAX) {
        widths.push(2);
    }
    if argument <= u64::from(u8::MAX) {
        widths.push(1);
    }
    if argument < 24 {
        widths.push(0);
    }
    match widths[rng.below(widths.len())] {
        0 => out.push(major | argument as u8),
        1 => out.extend([major | 24, argument as u8]),
        2 => {
            out.push(major | 25);
            out.extend((argument as u16).to_be_bytes());
        }
        4 => {
            out.push(major | 26);
            out.extend((argument as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend(argument.to_be_bytes());
        }
    }
}

/// Writes a byte or text string, sometimes as indefinite-length chunks
/// (split only at character boundaries for text).
fn sloppy_string(out: &mut Vec<u8>, major: u8, content: &[u8], rng: &mut Rng) {
    if rng.chance() {
        sloppy_head(out, major, content.len() as u64, rng);
        out.extend(content);
        return;
    }
    out.push((major << 5) | 31);
    let mut rest = content;
    while !rest.is_empty() || rng.below(4) == 0 {
        let mut cut = rng.below(rest.len() + 1);
        if major == 3 {
            let text = std::str::from_utf8(rest).expect("text chunks split at boundaries");
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
        }
        let (chunk, tail) = rest.split_at(cut);
        sloppy_head(out, major, chunk.len() as u64, rng);
        out.extend(chunk);
        rest = tail;
    }
    out.push(0xff);
}

/// Writes an integer magnitude as a bignum with random leading zero bytes.
fn sloppy_bignum(out: &mut Vec<u8>, tag: u64, magnitude: &[u8], rng: &mut Rng) {
    sloppy_head(out, 6, tag, rng);
    let mut padded = vec![0; rng.below(3)];
    padded.extend(magnitude);
    sloppy_string(out, 2, &padded, rng);
}

/// Writes any well-formed, usually non-canonical, encoding of `value`:
/// wide heads, indefinite lengths, maps in random order, wide floats, NaN
/// payloads, padded bignums.
fn sloppy(value: &Value, out: &mut Vec<u8>, rng: &mut Rng) {
    match value {
        Value::Integer(integer) => {
            let i = i128::from(*integer);
            let (major, tag, magnitude) = if i < 0 { (1, 3, !i as u128) } else { (0, 2, i as u128) };
            if rng.below(4) == 0 {
                sloppy_bignum(out, tag, &magnitude.to_be_bytes()[8..], rng);
            } else {
                sloppy_head(out, major, magnitude as u64, rng);
            }
        }
        Value::Bytes(bytes) => sloppy_string(out, 2, bytes, rng),
        Value::Text(text) => sloppy_string(out, 3, text.as_bytes(), rng),
        Value::Float(float) => sloppy_float(*float, out, rng),
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Null => out.push(0xf6),
        Value::Tag(tag @ (2 | 3), inner) => match &**inner {
            Value::Bytes(magnitude) => sloppy_bignum(out, *tag, magnitude, rng),
            _ => unreachable!("generated bignums enclose bytes"),
        },
        Value::Tag(tag, inner) => {
            sloppy_head(out, 6, *tag, rng);
            sloppy(inner, out, rng);
        }
        Value::Array(items) => {
            let indefinite = rng.chance();
            if indefinite {
                out.push(0x9f);
            } else {
                sloppy_head(out, 4, items.len() as u64, rng);
            }
            items.iter().for_each(|item| sloppy(item, out, rng));
            if indefinite {
                out.push(0xff);
            }
        }
        Value::Map(entries) => {
            let indefinite = rng.chance();
            if indefinite {
                out.push(0xbf);
            } else {
                sloppy_head(out, 5, entries.len() as u64, rng);
            }
            let Value::Map(entries) = scramble(&Value::Map(entries.clone()), rng) else { unreachable!() };
            for (key, value) in &entries {
                sloppy(key, out, rng);
                sloppy(value, out, rng);
            }
            if indefinite {
                out.push(0xff);
            }
        }
        other => unreachable!("no generated value is {other:?}"),
    }
}

/// Writes a float in a random width that holds it exactly (any NaN for NaN).
fn sloppy_float(value: f64, out: &mut Vec<u8>, rng: &mut Rng) {
    if value.is_nan() {
        let nans: [&[u8]; 6] = [
            &[0xf9, 0x7e, 0x00],
            &[0xf9, 0xfe, 0x01],
            &[0xf9, 0x7c, 0x01],
            &[0xfa, 0x7f, 0xc0, 0x00, 0x00],
            &[0xfa, 0xff, 0x80, 0x12, 0x34],
            &[0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0x01],
        ];
        out.extend(nans[rng.below(nans.len())]);
        return;
    }
    let half = f16::from_f64(value);
    let single = value as f32;
    match rng.below(3) {
        0 if half.to_f64().to_bits() == value.to_bits() => {
            out.push(0xf9);
            out.extend(half.to_bits().to_be_bytes());
        }
        0 | 1 if f64::from(single).to_bits() == value.to_bits() => {
            out.push(0xfa);
            out.extend(single.to_bits().to_be_bytes());
        }
        _ => {
            out.push(0xfb);
            out.extend(value.to_bits().to_be_bytes());
        }
    }
}

/// Applies a few random byte edits (replace, insert, delete) to `bytes`.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(position, byte, kind) in edits {
        let at = if bytes.is_empty() { 0 } else { position % (bytes.len() + 1) };
        match kind % 3 {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.push(byte),
        }
    }
    bytes
}

/// What every input must satisfy: no panic, strict acceptance means the
/// input is its own canonical form, and canonicalize's output is strict.
fn check_any_input(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(value) = decode_value(bytes) {
        prop_assert_eq!(encode_value(&value), Ok(bytes.to_vec()));
        prop_assert_eq!(canonicalize(bytes), Ok(bytes.to_vec()));
    }
    if let Ok(canonical) = canonicalize(bytes) {
        let value = decode_value(&canonical);
        prop_assert!(value.is_ok(), "canonical form refused: {:?}", value);
        prop_assert_eq!(canonicalize(&canonical), Ok(canonical));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (1) The order of map entries does not change the bytes.
    #[test]
    fn scrambled_key_order_gives_identical_bytes(value in arb_value(), seed in any::<u64>()) {
        let scrambled = scramble(&value, &mut Rng::new(seed));
        prop_assert_eq!(encode_value(&scrambled), encode_value(&value));
    }

    /// (2) Decoding the encoding gives the value back (maps sorted, NaN canonical).
    #[test]
    fn decode_inverts_encode(value in arb_value()) {
        let bytes = encode_value(&value).expect("generated values encode");
        let decoded = decode_value(&bytes).expect("canonical bytes decode");
        assert_same(&decoded, &value);
    }

    /// (3) Re-encoding decoded canonical bytes is the identity.
    #[test]
    fn reencoding_is_the_identity(value in arb_value()) {
        let bytes = encode_value(&value).expect("generated values encode");
        let decoded = decode_value(&bytes).expect("canonical bytes decode");
        prop_assert_eq!(encode_value(&decoded), Ok(bytes.clone()));
        prop_assert_eq!(canonicalize(&bytes), Ok(bytes));
    }

    /// (4) and (5) on random bytes.
    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..64)) {
        check_any_input(&bytes)?;
    }

    /// (4) and (5) on canonical encodings with random edits, which reach far
    /// deeper into the decoder than random bytes.
    #[test]
    fn mutated_encodings_never_panic(
        value in arb_value(),
        edits in vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let bytes = encode_value(&value).expect("generated values encode");
        check_any_input(&mutate(bytes, &edits))?;
    }

    /// (5) Any sloppy encoding canonicalizes to the canonical encoding, which
    /// the strict decoder accepts, and canonicalizing is idempotent.
    #[test]
    fn canonicalize_normalizes_sloppy_encodings(value in arb_value(), seed in any::<u64>()) {
        let mut sloppy_bytes = Vec::new();
        sloppy(&value, &mut sloppy_bytes, &mut Rng::new(seed));
        let canonical = canonicalize(&sloppy_bytes).expect("sloppy encodings are well-formed");
        prop_assert_eq!(Ok(canonical.clone()), encode_value(&value));
        prop_assert!(decode_value(&canonical).is_ok());
        prop_assert_eq!(canonicalize(&canonical), Ok(canonical.clone()));
        check_any_input(&sloppy_bytes)?;
    }
}

/// One flat item for the `write` functions, and the same item as a `Value`.
#[derive(Debug, Clone)]
enum Flat {
    Unsigned(u64),
    Bytes(Vec<u8>),
    Text(String),
    Null,
}

fn arb_flat() -> impl Strategy<Value = Flat> {
    prop_oneof![
        prop_oneof![any::<u64>(), prop::sample::select(vec![0u64, 23, 24, 255, 256, 65_535, 65_536, 4_294_967_296])]
            .prop_map(Flat::Unsigned),
        vec(any::<u8>(), 0..300).prop_map(Flat::Bytes),
        ".{0,80}".prop_map(Flat::Text),
        Just(Flat::Null),
    ]
}

proptest! {
    /// An array written item by item is byte for byte what `encode_value` makes of the same array.
    #[test]
    fn writers_encode_as_encode_value_does(items in vec(arb_flat(), 0..40)) {
        use artifactstore_cbor::write;
        let mut written = Vec::new();
        write::array(&mut written, items.len());
        let mut values = Vec::new();
        for item in &items {
            match item {
                Flat::Unsigned(n) => {
                    write::unsigned(&mut written, *n);
                    values.push(Value::from(*n));
                }
                Flat::Bytes(b) => {
                    write::bytes(&mut written, b);
                    values.push(Value::Bytes(b.clone()));
                }
                Flat::Text(t) => {
                    write::text(&mut written, t);
                    values.push(Value::Text(t.clone()));
                }
                Flat::Null => {
                    write::null(&mut written);
                    values.push(Value::Null);
                }
            }
        }
        prop_assert_eq!(written, encode_value(&Value::Array(values)).unwrap());
    }
}
