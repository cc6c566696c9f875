//! RFC 8949 core deterministic CBOR: a canonical encoder and a strict decoder.
#![doc = include_str!("../README.md")]

mod decode;
mod encode;
mod error;
mod float;

pub use ciborium::value::{Integer, Value};
pub use decode::{canonicalize, decode_sequence, decode_value};
pub use encode::{encode_value, write};
pub use error::{DecodeError, EncodeError};

/// The deepest nesting the encoder writes and the decoder reads.
///
/// An item at the top level has depth 0, and every array, map or tag adds one
/// level for the items inside it. An item deeper than this is an error, which
/// keeps the recursive encoder and decoder well inside the stack.
pub const MAX_DEPTH: usize = 256;

/// Serializes any serde value to its canonical CBOR bytes.
///
/// The value is first turned into a [`Value`] with ciborium's serializer and
/// then written by this crate's own canonical encoder, so map keys (struct
/// field names included) come out sorted by their encoded bytes.
pub fn to_vec<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let value = Value::serialized(value).map_err(|err| EncodeError::Serialize(err.to_string()))?;
    encode_value(&value)
}

/// Strictly decodes canonical CBOR bytes into any deserializable type.
///
/// The bytes must hold exactly one canonical item (see [`decode_value`]). If
/// the item does not fit `T`, the error is [`DecodeError::Deserialize`] with
/// offset 0, the start of the item that could not be converted.
pub fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let value = decode_value(bytes)?;
    value.deserialized().map_err(|err| DecodeError::Deserialize { offset: 0, message: err.to_string() })
}
