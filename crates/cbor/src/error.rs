//! Errors of the canonical encoder and of the strict and lenient decoders.

use thiserror::Error;

/// Why a value has no canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Two keys of one map have the same canonical encoding.
    #[error("duplicate map key: two keys of one map have the same canonical encoding")]
    DuplicateKey,
    /// A bignum tag (2 or 3) encloses something other than a byte string.
    #[error("tag {tag} is a bignum and must enclose a byte string")]
    InvalidBignum {
        /// The tag number, 2 or 3.
        tag: u64,
    },
    /// The value nests deeper than [`crate::MAX_DEPTH`].
    #[error("the value nests deeper than {limit} levels")]
    DepthLimitExceeded {
        /// The limit, [`crate::MAX_DEPTH`].
        limit: usize,
    },
    /// A [`crate::Value`] variant that this encoder does not know.
    #[error("no canonical encoding is defined for {0}")]
    UnsupportedValue(String),
    /// Serde could not turn the input into a [`crate::Value`].
    #[error("serialization failed: {0}")]
    Serialize(String),
}

/// Why bytes were refused by the decoder.
///
/// Every variant carries `offset`, the index in the input of the byte where
/// the problem starts (for most variants, the first byte of the offending
/// item's head).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends inside the head that starts at `offset`, or an item was
    /// expected at `offset` and the input ends there.
    #[error("truncated input: the item at byte {offset} is cut short")]
    Truncated {
        /// Where the incomplete item starts.
        offset: usize,
    },
    /// A head declares more bytes (strings) or items (arrays and maps) than
    /// there are bytes left after it.
    #[error("the head at byte {offset} declares length {length}, but only {remaining} bytes follow it")]
    LengthExceedsInput {
        /// Where the head starts.
        offset: usize,
        /// The declared length (bytes for strings, items for arrays, pairs for maps).
        length: u64,
        /// How many bytes of input follow the head.
        remaining: usize,
    },
    /// Bytes follow the single item the input should hold.
    #[error("trailing bytes after the item, starting at byte {offset}")]
    TrailingBytes {
        /// Where the first extra byte is.
        offset: usize,
    },
    /// An indefinite-length string, array or map (additional information 31).
    #[error("indefinite-length item at byte {offset}; canonical CBOR uses definite lengths only")]
    IndefiniteLength {
        /// Where the item starts.
        offset: usize,
    },
    /// A break byte (`0xff`) outside an indefinite-length item.
    #[error("unexpected break byte at {offset}")]
    UnexpectedBreak {
        /// Where the break byte is.
        offset: usize,
    },
    /// Additional information 31 on an integer or tag head (major types 0, 1 and 6), which is not well-formed.
    #[error("major type {major} cannot have an indefinite length (byte {offset})")]
    InvalidIndefinite {
        /// Where the head starts.
        offset: usize,
        /// The major type, 0, 1 or 6.
        major: u8,
    },
    /// Additional information 28, 29 or 30, which RFC 8949 reserves.
    #[error("reserved additional information {info} at byte {offset}")]
    ReservedAdditionalInfo {
        /// Where the head starts.
        offset: usize,
        /// The additional information, 28 to 30.
        info: u8,
    },
    /// A head whose argument would fit a shorter form.
    #[error("the head at byte {offset} is not in its shortest form")]
    NonShortestHead {
        /// Where the head starts.
        offset: usize,
    },
    /// A float whose value a shorter float width holds exactly.
    #[error("the float at byte {offset} fits a shorter width exactly")]
    NonShortestFloat {
        /// Where the float starts.
        offset: usize,
    },
    /// A NaN other than the half-precision quiet NaN `f9 7e00`.
    #[error("the NaN at byte {offset} is not the canonical f9 7e00")]
    NonCanonicalNan {
        /// Where the float starts.
        offset: usize,
    },
    /// A map key whose encoding sorts before the previous key's.
    #[error("the map key at byte {offset} is out of order")]
    UnsortedKeys {
        /// Where the key starts.
        offset: usize,
    },
    /// A map key equal to an earlier key of the same map.
    #[error("the map key at byte {offset} repeats an earlier key")]
    DuplicateKey {
        /// Where the repeated key starts.
        offset: usize,
    },
    /// A text string that is not valid UTF-8.
    #[error("invalid UTF-8 in a text string at byte {offset}")]
    InvalidUtf8 {
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// A two-byte simple value `f8 xx` with `xx < 32`, which is not well-formed.
    #[error("simple value {value} at byte {offset} must not use the two-byte form")]
    InvalidSimpleValue {
        /// Where the head starts.
        offset: usize,
        /// The simple value.
        value: u8,
    },
    /// A well-formed simple value that the value model cannot hold: anything
    /// but false, true and null (undefined included, since
    /// [`crate::Value`] has no variant for it).
    #[error("simple value {value} at byte {offset} is not supported")]
    UnsupportedSimpleValue {
        /// Where the head starts.
        offset: usize,
        /// The simple value.
        value: u8,
    },
    /// A bignum (tag 2 or 3) with leading zero bytes or a magnitude that fits
    /// in 64 bits, which must be written as major type 0 or 1 instead.
    #[error("the bignum at byte {offset} is not in canonical form")]
    NonCanonicalBignum {
        /// Where the tag starts.
        offset: usize,
    },
    /// A bignum tag (2 or 3) that does not enclose a byte string.
    #[error("the bignum tag at byte {offset} does not enclose a byte string")]
    InvalidBignum {
        /// Where the tag starts.
        offset: usize,
    },
    /// A chunk of an indefinite-length string that is not a definite-length
    /// string of the same major type (only the lenient decoder reads these).
    #[error("invalid chunk in an indefinite-length string at byte {offset}")]
    InvalidChunk {
        /// Where the chunk starts.
        offset: usize,
    },
    /// Nesting deeper than [`crate::MAX_DEPTH`].
    #[error("the item at byte {offset} nests deeper than {limit} levels")]
    DepthLimitExceeded {
        /// Where the too-deep item starts.
        offset: usize,
        /// The limit, [`crate::MAX_DEPTH`].
        limit: usize,
    },
    /// The decoded value does not fit the requested serde type.
    #[error("cannot deserialize the item at byte {offset}: {message}")]
    Deserialize {
        /// Where the item starts (always 0: the whole input).
        offset: usize,
        /// Serde's message.
        message: String,
    },
}

impl DecodeError {
    /// The byte offset in the input where the problem starts.
    pub fn offset(&self) -> usize {
        match self {
            Self::Truncated { offset }
            | Self::LengthExceedsInput { offset, .. }
            | Self::TrailingBytes { offset }
            | Self::IndefiniteLength { offset }
            | Self::UnexpectedBreak { offset }
            | Self::InvalidIndefinite { offset, .. }
            | Self::ReservedAdditionalInfo { offset, .. }
            | Self::NonShortestHead { offset }
            | Self::NonShortestFloat { offset }
            | Self::NonCanonicalNan { offset }
            | Self::UnsortedKeys { offset }
            | Self::DuplicateKey { offset }
            | Self::InvalidUtf8 { offset }
            | Self::InvalidSimpleValue { offset, .. }
            | Self::UnsupportedSimpleValue { offset, .. }
            | Self::NonCanonicalBignum { offset }
            | Self::InvalidBignum { offset }
            | Self::InvalidChunk { offset }
            | Self::DepthLimitExceeded { offset, .. }
            | Self::Deserialize { offset, .. } => *offset,
        }
    }

    /// Turns an error of re-encoding a value decoded from `offset` into a
    /// decode error at that offset.
    pub(crate) fn from_encode(err: EncodeError, offset: usize) -> Self {
        match err {
            EncodeError::DuplicateKey => Self::DuplicateKey { offset },
            EncodeError::InvalidBignum { .. } => Self::InvalidBignum { offset },
            EncodeError::DepthLimitExceeded { limit } => Self::DepthLimitExceeded { offset, limit },
            EncodeError::UnsupportedValue(message) | EncodeError::Serialize(message) => {
                Self::Deserialize { offset, message }
            }
        }
    }
}
