//! The strict decoder and the lenient canonicalizer: one hand-written parser in two modes.

use std::cmp::Ordering;

use ciborium::value::Value;

use crate::encode::{encode_value, TAG_BIGNUM_NEGATIVE, TAG_BIGNUM_POSITIVE};
use crate::error::DecodeError;
use crate::float::{half_to_f64, shortest, Shortest};
use crate::MAX_DEPTH;

/// Strictly decodes one canonical CBOR item that fills `bytes` exactly.
///
/// Anything this accepts re-encodes with [`encode_value`] to exactly `bytes`.
/// It refuses, with the offset of the offending byte: truncated input,
/// trailing bytes, indefinite lengths and stray break bytes, non-shortest
/// heads and floats, NaNs other than `f9 7e00`, map keys out of order or
/// repeated, invalid UTF-8, reserved additional information, malformed and
/// unsupported simple values, non-canonical or malformed bignums, nesting
/// deeper than [`MAX_DEPTH`], and lengths that exceed the input.
///
/// A bignum whose magnitude needs more than 64 bits decodes as
/// `Value::Tag(2 or 3, Value::Bytes(magnitude))`, which is how
/// `Value::from(i128)` represents such integers.
pub fn decode_value(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut parser = Parser::new(bytes, Mode::Strict);
    let value = parser.item(0)?;
    parser.finish()?;
    Ok(value)
}

/// Decodes an RFC 8742 CBOR sequence: zero or more canonical items back to back.
///
/// Each item is checked as strictly as by [`decode_value`]; offsets in errors
/// count from the start of the whole sequence.
pub fn decode_sequence(bytes: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let mut parser = Parser::new(bytes, Mode::Strict);
    let mut items = Vec::new();
    while !parser.at_end() {
        items.push(parser.item(0)?);
    }
    Ok(items)
}

/// Reads any well-formed CBOR item that fills `bytes` and returns its canonical encoding.
///
/// Indefinite lengths, non-shortest heads and floats, any NaN, unsorted map
/// keys and bignums with leading zeros or small magnitudes are accepted and
/// normalized. Still refused: input that is not well-formed, trailing bytes,
/// map keys that are equal once canonical, invalid UTF-8, simple values the
/// value model cannot hold, bignum tags around anything but a byte string,
/// and nesting deeper than [`MAX_DEPTH`].
pub fn canonicalize(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut parser = Parser::new(bytes, Mode::Lenient);
    let value = parser.item(0)?;
    parser.finish()?;
    encode_value(&value).map_err(|err| DecodeError::from_encode(err, 0))
}

/// The most array items or map entries reserved before they are read.
///
/// A declared count is only checked against the bytes left, and an item of
/// one byte becomes a `Value` of dozens of bytes, so reserving the full count
/// at every level of nesting would let a small input reserve gigabytes.
/// Beyond this, vectors grow with the items actually read.
const MAX_RESERVED_ITEMS: usize = 256;

/// Whether the parser insists on canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only canonical encodings are accepted.
    Strict,
    /// Any well-formed encoding is accepted.
    Lenient,
}

/// One decoded head: the initial byte and its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    Unsigned(u64),
    Negative(u64),
    Bytes(u64),
    Text(u64),
    Array(u64),
    Map(u64),
    Tag(u64),
    /// A string, array or map of indefinite length, with its major type.
    Indefinite(u8),
    Break,
    Simple(u8),
    Half(u16),
    Single(u32),
    Double(u64),
}

/// A cursor over the input.
#[derive(Debug)]
struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    mode: Mode,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], mode: Mode) -> Self {
        Self { input, pos: 0, mode }
    }

    fn strict(&self) -> bool {
        self.mode == Mode::Strict
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn remaining(&self) -> usize {
        self.input.len().saturating_sub(self.pos)
    }

    /// Refuses any bytes after the item.
    fn finish(&self) -> Result<(), DecodeError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { offset: self.pos })
        }
    }

    /// Consumes a break byte if the next byte is one.
    fn eat_break(&mut self) -> bool {
        if self.input.get(self.pos) == Some(&0xff) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Reads a head, checking that it is well-formed and, in strict mode, shortest.
    fn head(&mut self) -> Result<Head, DecodeError> {
        let start = self.pos;
        let initial = *self.input.get(start).ok_or(DecodeError::Truncated { offset: start })?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        let width = match info {
            0..=23 => 0,
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            28..=30 => return Err(DecodeError::ReservedAdditionalInfo { offset: start, info }),
            _ => {
                self.pos = start + 1;
                return match major {
                    2..=5 => Ok(Head::Indefinite(major)),
                    7 => Ok(Head::Break),
                    _ => Err(DecodeError::InvalidIndefinite { offset: start, major }),
                };
            }
        };
        let argument_bytes =
            self.input.get(start + 1..start + 1 + width).ok_or(DecodeError::Truncated { offset: start })?;
        let argument = if width == 0 {
            u64::from(info)
        } else {
            argument_bytes.iter().fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte))
        };
        self.pos = start + 1 + width;

        if major == 7 {
            return match (info, u8::try_from(argument), u16::try_from(argument), u32::try_from(argument)) {
                (0..=23, Ok(value), _, _) => Ok(Head::Simple(value)),
                (24, Ok(value), _, _) if value < 32 => Err(DecodeError::InvalidSimpleValue { offset: start, value }),
                (24, Ok(value), _, _) => Ok(Head::Simple(value)),
                (25, _, Ok(bits), _) => Ok(Head::Half(bits)),
                (26, _, _, Ok(bits)) => Ok(Head::Single(bits)),
                _ => Ok(Head::Double(argument)),
            };
        }

        if self.strict() {
            let smallest = match width {
                0 => 0,
                1 => 24,
                2 => 1 << 8,
                4 => 1 << 16,
                _ => 1 << 32,
            };
            if argument < smallest {
                return Err(DecodeError::NonShortestHead { offset: start });
            }
        }

        Ok(match major {
            0 => Head::Unsigned(argument),
            1 => Head::Negative(argument),
            2 => Head::Bytes(argument),
            3 => Head::Text(argument),
            4 => Head::Array(argument),
            5 => Head::Map(argument),
            _ => Head::Tag(argument),
        })
    }

    /// Takes `length` content bytes of the string whose head starts at `start`.
    fn take(&mut self, start: usize, length: u64) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        let too_long = DecodeError::LengthExceedsInput { offset: start, length, remaining };
        let length = usize::try_from(length).map_err(|_| too_long.clone())?;
        let content = self.input.get(self.pos..).and_then(|rest| rest.get(..length)).ok_or(too_long)?;
        self.pos += length;
        Ok(content)
    }

    /// Checks that `count` items of at least `bytes_per_item` bytes each could
    /// fit in the rest of the input, before anything is allocated for them.
    fn check_count(&self, start: usize, count: u64, bytes_per_item: u64) -> Result<usize, DecodeError> {
        let remaining = self.remaining();
        count
            .checked_mul(bytes_per_item)
            .and_then(|needed| usize::try_from(needed).ok())
            .filter(|&needed| needed <= remaining)
            .and_then(|_| usize::try_from(count).ok())
            .ok_or(DecodeError::LengthExceedsInput { offset: start, length: count, remaining })
    }

    /// Reads one item (and everything nested in it) found at nesting `depth`.
    fn item(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let start = self.pos;
        if depth > MAX_DEPTH {
            return Err(DecodeError::DepthLimitExceeded { offset: start, limit: MAX_DEPTH });
        }
        match self.head()? {
            Head::Unsigned(argument) => Ok(Value::Integer(argument.into())),
            Head::Negative(argument) => Ok(Value::from(-1 - i128::from(argument))),
            Head::Bytes(length) => Ok(Value::Bytes(self.take(start, length)?.to_vec())),
            Head::Text(length) => {
                let content_start = self.pos;
                let content = self.take(start, length)?;
                Ok(Value::Text(utf8(content, content_start)?.to_owned()))
            }
            Head::Array(count) => {
                let count = self.check_count(start, count, 1)?;
                let mut items = Vec::with_capacity(count.min(MAX_RESERVED_ITEMS));
                for _ in 0..count {
                    items.push(self.item(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            Head::Map(count) => {
                let count = self.check_count(start, count, 2)?;
                self.map(Some(count), depth)
            }
            Head::Tag(tag) => self.tag(start, tag, depth),
            Head::Indefinite(_) if self.strict() => Err(DecodeError::IndefiniteLength { offset: start }),
            Head::Indefinite(major) => self.indefinite(start, major, depth),
            Head::Break => Err(DecodeError::UnexpectedBreak { offset: start }),
            Head::Simple(20) => Ok(Value::Bool(false)),
            Head::Simple(21) => Ok(Value::Bool(true)),
            Head::Simple(22) => Ok(Value::Null),
            Head::Simple(value) => Err(DecodeError::UnsupportedSimpleValue { offset: start, value }),
            Head::Half(bits) => self.float(start, half_to_f64(bits), Shortest::Half(bits)),
            Head::Single(bits) => self.float(start, f64::from(f32::from_bits(bits)), Shortest::Single(bits)),
            Head::Double(bits) => self.float(start, f64::from_bits(bits), Shortest::Double(bits)),
        }
    }

    /// Checks, in strict mode, that a float was written as `shortest` writes it.
    fn float(&self, start: usize, value: f64, read: Shortest) -> Result<Value, DecodeError> {
        if self.strict() && shortest(value) != read {
            return Err(if value.is_nan() {
                DecodeError::NonCanonicalNan { offset: start }
            } else {
                DecodeError::NonShortestFloat { offset: start }
            });
        }
        Ok(Value::Float(value))
    }

    /// Reads the content of a tag whose head starts at `start`.
    fn tag(&mut self, start: usize, tag: u64, depth: usize) -> Result<Value, DecodeError> {
        let content = self.item(depth + 1)?;
        if tag == TAG_BIGNUM_POSITIVE || tag == TAG_BIGNUM_NEGATIVE {
            let Value::Bytes(magnitude) = &content else {
                return Err(DecodeError::InvalidBignum { offset: start });
            };
            // A canonical bignum needs more than 64 bits and has no leading zero byte.
            if self.strict() && (magnitude.len() <= 8 || magnitude.first() == Some(&0)) {
                return Err(DecodeError::NonCanonicalBignum { offset: start });
            }
        }
        Ok(Value::Tag(tag, Box::new(content)))
    }

    /// Reads the entries of a map: `count` of them, or up to a break byte if `None`.
    ///
    /// In strict mode every key's bytes must sort after the previous key's; in
    /// lenient mode the keys are compared by their canonical encodings.
    fn map(&mut self, count: Option<usize>, depth: usize) -> Result<Value, DecodeError> {
        let input = self.input;
        let mut entries = Vec::with_capacity(count.unwrap_or(0).min(MAX_RESERVED_ITEMS));
        let mut previous_key: Option<&[u8]> = None;
        let mut canonical_keys = Vec::new();
        loop {
            match count {
                Some(count) if entries.len() == count => break,
                None if self.eat_break() => break,
                _ => {}
            }
            let key_start = self.pos;
            let key = self.item(depth + 1)?;
            if self.strict() {
                let key_bytes = input.get(key_start..self.pos).unwrap_or_default();
                match previous_key.map(|previous| key_bytes.cmp(previous)) {
                    Some(Ordering::Less) => return Err(DecodeError::UnsortedKeys { offset: key_start }),
                    Some(Ordering::Equal) => return Err(DecodeError::DuplicateKey { offset: key_start }),
                    _ => previous_key = Some(key_bytes),
                }
            } else {
                let canonical = encode_value(&key).map_err(|err| DecodeError::from_encode(err, key_start))?;
                canonical_keys.push((canonical, key_start));
            }
            let value = self.item(depth + 1)?;
            entries.push((key, value));
        }
        if !self.strict() {
            check_duplicates(canonical_keys)?;
        }
        Ok(Value::Map(entries))
    }

    /// Reads an indefinite-length item (lenient mode only) whose head starts at `start`.
    fn indefinite(&mut self, start: usize, major: u8, depth: usize) -> Result<Value, DecodeError> {
        match major {
            2 | 3 => {
                let mut content = Vec::new();
                while !self.eat_break() {
                    let chunk_start = self.pos;
                    let length = match (major, self.head()?) {
                        (2, Head::Bytes(length)) | (3, Head::Text(length)) => length,
                        _ => return Err(DecodeError::InvalidChunk { offset: chunk_start }),
                    };
                    let content_start = self.pos;
                    let chunk = self.take(chunk_start, length)?;
                    // Each chunk of a text string must be valid UTF-8 by itself.
                    if major == 3 {
                        utf8(chunk, content_start)?;
                    }
                    content.extend_from_slice(chunk);
                }
                if major == 2 {
                    Ok(Value::Bytes(content))
                } else {
                    String::from_utf8(content)
                        .map(Value::Text)
                        .map_err(|err| DecodeError::InvalidUtf8 { offset: start + err.utf8_error().valid_up_to() })
                }
            }
            4 => {
                let mut items = Vec::new();
                while !self.eat_break() {
                    items.push(self.item(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            _ => self.map(None, depth),
        }
    }
}

/// Checks text string content that starts at `offset` in the input.
fn utf8(content: &[u8], offset: usize) -> Result<&str, DecodeError> {
    std::str::from_utf8(content).map_err(|err| DecodeError::InvalidUtf8 { offset: offset + err.valid_up_to() })
}

/// Refuses two keys with the same canonical encoding, pointing at the first
/// key (in input order) that repeats an earlier one.
fn check_duplicates(mut keys: Vec<(Vec<u8>, usize)>) -> Result<(), DecodeError> {
    keys.sort();
    let repeated = keys.windows(2).filter(|pair| pair[0].0 == pair[1].0).map(|pair| pair[1].1).min();
    match repeated {
        Some(offset) => Err(DecodeError::DuplicateKey { offset }),
        None => Ok(()),
    }
}
