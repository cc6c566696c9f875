//! The canonical encoder: RFC 8949 §4.2.1 core deterministic encoding of any [`Value`].

use ciborium::value::Value;

use crate::error::EncodeError;
use crate::float::{shortest, Shortest};
use crate::MAX_DEPTH;

/// Major type 0: unsigned integers.
pub(crate) const MAJOR_UNSIGNED: u8 = 0;
/// Major type 1: negative integers.
pub(crate) const MAJOR_NEGATIVE: u8 = 1;
/// Major type 2: byte strings.
pub(crate) const MAJOR_BYTES: u8 = 2;
/// Major type 3: text strings.
pub(crate) const MAJOR_TEXT: u8 = 3;
/// Major type 4: arrays.
pub(crate) const MAJOR_ARRAY: u8 = 4;
/// Major type 5: maps.
pub(crate) const MAJOR_MAP: u8 = 5;
/// Major type 6: tags.
pub(crate) const MAJOR_TAG: u8 = 6;
/// The tag of a positive bignum.
pub(crate) const TAG_BIGNUM_POSITIVE: u64 = 2;
/// The tag of a negative bignum.
pub(crate) const TAG_BIGNUM_NEGATIVE: u64 = 3;

/// Returns the canonical encoding of `value`.
///
/// Heads take their shortest form, lengths are definite, map keys are sorted
/// by the bytewise order of their encodings (two keys with the same encoding
/// are [`EncodeError::DuplicateKey`]), floats take the narrowest exact width
/// with every NaN written as `f9 7e00`, and integers outside 64 bits become
/// bignums (tags 2 and 3) without leading zero bytes. A bignum tag whose
/// magnitude fits in 64 bits is written as a plain integer instead.
pub fn encode_value(value: &Value) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(value, &mut out, 0)?;
    Ok(out)
}

/// Appends the canonical encoding of `value`, found at nesting `depth`, to `out`.
fn encode_into(value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), EncodeError> {
    if depth > MAX_DEPTH {
        return Err(EncodeError::DepthLimitExceeded { limit: MAX_DEPTH });
    }
    match value {
        Value::Integer(integer) => encode_integer(i128::from(*integer), out, depth),
        Value::Bytes(bytes) => {
            write_head(out, MAJOR_BYTES, len_u64(bytes.len()));
            out.extend_from_slice(bytes);
            Ok(())
        }
        Value::Text(text) => {
            write_head(out, MAJOR_TEXT, len_u64(text.len()));
            out.extend_from_slice(text.as_bytes());
            Ok(())
        }
        Value::Float(float) => {
            encode_float(*float, out);
            Ok(())
        }
        Value::Bool(false) => {
            out.push(0xf4);
            Ok(())
        }
        Value::Bool(true) => {
            out.push(0xf5);
            Ok(())
        }
        Value::Null => {
            out.push(0xf6);
            Ok(())
        }
        Value::Tag(tag @ (TAG_BIGNUM_POSITIVE | TAG_BIGNUM_NEGATIVE), content) => match &**content {
            Value::Bytes(magnitude) => encode_bignum(*tag, magnitude, out, depth),
            _ => Err(EncodeError::InvalidBignum { tag: *tag }),
        },
        Value::Tag(tag, content) => {
            write_head(out, MAJOR_TAG, *tag);
            encode_into(content, out, depth + 1)
        }
        Value::Array(items) => {
            write_head(out, MAJOR_ARRAY, len_u64(items.len()));
            items.iter().try_for_each(|item| encode_into(item, out, depth + 1))
        }
        Value::Map(entries) => encode_map(entries, out, depth),
        // `Value` is non-exhaustive; a variant added by a later ciborium has no
        // canonical form defined here yet.
        other => Err(EncodeError::UnsupportedValue(format!("{other:?}"))),
    }
}

/// Appends a map with its entries sorted by the bytes of their encoded keys.
fn encode_map(entries: &[(Value, Value)], out: &mut Vec<u8>, depth: usize) -> Result<(), EncodeError> {
    let mut keyed = entries
        .iter()
        .map(|(key, value)| {
            let mut encoded_key = Vec::new();
            encode_into(key, &mut encoded_key, depth + 1)?;
            Ok((encoded_key, value))
        })
        .collect::<Result<Vec<_>, EncodeError>>()?;
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    if keyed.windows(2).any(|pair| pair[0].0 == pair[1].0) {
        return Err(EncodeError::DuplicateKey);
    }
    write_head(out, MAJOR_MAP, len_u64(keyed.len()));
    for (encoded_key, value) in keyed {
        out.extend_from_slice(&encoded_key);
        encode_into(value, out, depth + 1)?;
    }
    Ok(())
}

/// Appends an integer: major type 0 or 1 when its magnitude fits in 64 bits,
/// a bignum otherwise.
fn encode_integer(value: i128, out: &mut Vec<u8>, depth: usize) -> Result<(), EncodeError> {
    // For a negative value, CBOR stores -1 - value, which is !value in two's complement.
    let (tag, magnitude) =
        if value < 0 { (TAG_BIGNUM_NEGATIVE, !value as u128) } else { (TAG_BIGNUM_POSITIVE, value as u128) };
    encode_bignum(tag, &magnitude.to_be_bytes(), out, depth)
}

/// Appends the integer that bignum `tag` (2 or 3) with big-endian `magnitude`
/// stands for, in its canonical form.
fn encode_bignum(tag: u64, magnitude: &[u8], out: &mut Vec<u8>, depth: usize) -> Result<(), EncodeError> {
    let first_significant = magnitude.iter().position(|&byte| byte != 0).unwrap_or(magnitude.len());
    let significant = &magnitude[first_significant..];
    if significant.len() <= 8 {
        let argument = significant.iter().fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
        let major = if tag == TAG_BIGNUM_NEGATIVE { MAJOR_NEGATIVE } else { MAJOR_UNSIGNED };
        write_head(out, major, argument);
        return Ok(());
    }
    // The byte string inside the tag sits one level deeper, as the decoder sees it.
    if depth + 1 > MAX_DEPTH {
        return Err(EncodeError::DepthLimitExceeded { limit: MAX_DEPTH });
    }
    write_head(out, MAJOR_TAG, tag);
    write_head(out, MAJOR_BYTES, len_u64(significant.len()));
    out.extend_from_slice(significant);
    Ok(())
}

/// Appends a float in the narrowest width that holds it exactly.
fn encode_float(value: f64, out: &mut Vec<u8>) {
    match shortest(value) {
        Shortest::Half(bits) => {
            out.push(0xf9);
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Shortest::Single(bits) => {
            out.push(0xfa);
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Shortest::Double(bits) => {
            out.push(0xfb);
            out.extend_from_slice(&bits.to_be_bytes());
        }
    }
}

/// Writers of single canonical items straight into a buffer, for a caller that knows the shape of what it encodes
/// and needs no `Value` tree for it (the event log's chain hash, once per event). Each writes exactly the bytes
/// `encode_value` writes for the same item.
pub mod write {
    use super::{len_u64, write_head, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_TEXT, MAJOR_UNSIGNED};

    /// The head of an array of `len` items; the items follow.
    pub fn array(out: &mut Vec<u8>, len: usize) {
        write_head(out, MAJOR_ARRAY, len_u64(len));
    }

    /// An unsigned integer.
    pub fn unsigned(out: &mut Vec<u8>, value: u64) {
        write_head(out, MAJOR_UNSIGNED, value);
    }

    /// A byte string.
    pub fn bytes(out: &mut Vec<u8>, value: &[u8]) {
        write_head(out, MAJOR_BYTES, len_u64(value.len()));
        out.extend_from_slice(value);
    }

    /// A text string.
    pub fn text(out: &mut Vec<u8>, value: &str) {
        write_head(out, MAJOR_TEXT, len_u64(value.len()));
        out.extend_from_slice(value.as_bytes());
    }

    /// `null`.
    pub fn null(out: &mut Vec<u8>) {
        out.push(0xf6);
    }
}

/// Appends the head of major type `major` with `argument` in its shortest form.
fn write_head(out: &mut Vec<u8>, major: u8, argument: u64) {
    let major = major << 5;
    if argument < 24 {
        out.push(major | argument as u8);
    } else if let Ok(byte) = u8::try_from(argument) {
        out.extend_from_slice(&[major | 24, byte]);
    } else if let Ok(short) = u16::try_from(argument) {
        out.push(major | 25);
        out.extend_from_slice(&short.to_be_bytes());
    } else if let Ok(word) = u32::try_from(argument) {
        out.push(major | 26);
        out.extend_from_slice(&word.to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&argument.to_be_bytes());
    }
}

/// Widens a length to the 64-bit argument of a head.
fn len_u64(len: usize) -> u64 {
    // A usize is at most 64 bits wide on every platform Rust supports.
    u64::try_from(len).unwrap_or(u64::MAX)
}
