//! A manifest's metadata as sent in JSON, turned into the CBOR the log keeps, with the rules CBOR bodies follow:
//! no key twice in one object, and no integer the CBOR data model cannot hold.

use std::collections::HashSet;
use std::fmt;

use artifactstore_cbor::Value as Cbor;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

use crate::problem::ApiError;

/// The most a version's metadata may hold, as canonical CBOR.
pub(crate) const MAX_METADATA: usize = 1024 * 1024;

/// A JSON value read straight into CBOR; an object with a key twice is refused, as a CBOR map would be.
#[derive(Debug)]
pub(super) struct FromJson(pub(super) Cbor);

impl<'de> Deserialize<'de> for FromJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor).map(FromJson)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Cbor;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Cbor, E> {
        Ok(Cbor::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Cbor, E> {
        Ok(Cbor::Integer(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Cbor, E> {
        Ok(Cbor::Integer(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Cbor, E> {
        Ok(Cbor::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cbor, E> {
        Ok(Cbor::Text(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cbor, E> {
        Ok(Cbor::Text(v))
    }

    fn visit_unit<E>(self) -> Result<Cbor, E> {
        Ok(Cbor::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Cbor, A::Error> {
        let mut items = Vec::new();
        while let Some(FromJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Cbor::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Cbor, A::Error> {
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(A::Error::custom(format_args!("key `{}` appears twice in one object", key.escape_debug())));
            }
            let FromJson(value) = map.next_value()?;
            entries.push((Cbor::Text(key), value));
        }
        Ok(Cbor::Map(entries))
    }
}

/// Refuses a JSON text with an integer beyond the 64-bit range the CBOR data model holds: a JSON reader would
/// otherwise keep it as a float, a different number. A number with a fraction or an exponent is a float as sent.
pub(super) fn check_integers(json: &[u8]) -> Result<(), ApiError> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < json.len() && matches!(json[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                let token = std::str::from_utf8(&json[start..i]).unwrap_or("");
                let integer = !token.contains(['.', 'e', 'E']);
                if integer && token != "-" && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                    return Err(ApiError::invalid_manifest(format!(
                        "the integer {token} is beyond the 64-bit range; send it as a string, or send the manifest \
                         as CBOR with a bignum"
                    )));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Canonical CBOR of `metadata`, refused with `413` past `MAX_METADATA`.
pub(super) fn canonical(metadata: &Cbor) -> Result<Vec<u8>, ApiError> {
    let bytes = artifactstore_cbor::encode_value(metadata)
        .map_err(|err| ApiError::invalid_manifest(format!("metadata: {err}")))?;
    if bytes.len() > MAX_METADATA {
        return Err(ApiError::too_large(format!(
            "metadata is {} bytes as canonical CBOR; a version's metadata may hold at most {MAX_METADATA}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Cbor, String> {
        check_integers(json.as_bytes()).map_err(|err| err.detail().to_owned())?;
        serde_json::from_str::<FromJson>(json).map(|v| v.0).map_err(|err| err.to_string())
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(read(r#"{"a": 1, "a": 2}"#).unwrap_err().contains("`a` appears twice"));
        assert!(read(r#"{"x": [{"b": 1, "b": 1}]}"#).unwrap_err().contains("`b` appears twice"));
        assert!(read(r#"{"a": {"a": 1}}"#).is_ok());
    }

    #[test]
    fn integers_keep_their_value_or_are_refused() {
        assert_eq!(read("18446744073709551615").unwrap(), Cbor::Integer(u64::MAX.into()));
        assert_eq!(read("-9223372036854775808").unwrap(), Cbor::Integer(i64::MIN.into()));
        assert!(read(r#"{"n": 1180591620717411303424}"#).unwrap_err().contains("1180591620717411303424"));
        assert!(read("-9223372036854775809").is_err());
        assert_eq!(read("1.5e300").unwrap(), Cbor::Float(1.5e300));
        assert_eq!(read("0").unwrap(), Cbor::Integer(0.into()));
        assert!(read(r#"{"s": "1180591620717411303424", "t": "\"99999999999999999999"}"#).is_ok());
    }
}
