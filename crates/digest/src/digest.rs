//! The `Digest` type and its `algorithm:hex` string form.

use std::fmt;
use std::str::FromStr;

/// A hash function the registry addresses content by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// BLAKE3 with its default 32-byte output: the primary content address.
    Blake3,
    /// SHA-256: the digest OCI registries and package managers use.
    Sha256,
}

impl Algorithm {
    /// The prefix of the digest string, without the colon.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Blake3 => "blake3",
            Algorithm::Sha256 => "sha256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A 32-byte digest together with the algorithm that made it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    bytes: [u8; 32],
}

impl Digest {
    /// A digest from its algorithm and raw bytes.
    pub fn new(algorithm: Algorithm, bytes: [u8; 32]) -> Self {
        Self { algorithm, bytes }
    }

    /// A BLAKE3 digest from raw bytes.
    pub fn blake3(bytes: [u8; 32]) -> Self {
        Self::new(Algorithm::Blake3, bytes)
    }

    /// A SHA-256 digest from raw bytes.
    pub fn sha256(bytes: [u8; 32]) -> Self {
        Self::new(Algorithm::Sha256, bytes)
    }

    /// The algorithm that made this digest.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw 32 digest bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The 64 lowercase hex characters, without the algorithm prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.bytes)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseDigestError {
    /// There is no `algorithm:` prefix.
    #[error("a digest looks like `blake3:<64 hex>` or `sha256:<64 hex>`; found no `:`")]
    MissingColon,
    /// The prefix names an algorithm the registry does not use.
    #[error("unknown digest algorithm `{0}`; expected `blake3` or `sha256`")]
    UnknownAlgorithm(String),
    /// The hex part is not 64 characters long.
    #[error("a digest has 64 hex characters after the colon; found {0}")]
    WrongLength(usize),
    /// The hex part holds something other than `0-9a-f`.
    #[error("a digest's hex is lowercase `0-9a-f`; found {0:?} at position {1}")]
    InvalidHex(char, usize),
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, hex) = s.split_once(':').ok_or(ParseDigestError::MissingColon)?;
        let algorithm = match name {
            "blake3" => Algorithm::Blake3,
            "sha256" => Algorithm::Sha256,
            other => return Err(ParseDigestError::UnknownAlgorithm(other.to_owned())),
        };
        if hex.len() != 64 {
            return Err(ParseDigestError::WrongLength(hex.chars().count()));
        }
        if let Some((i, c)) = hex.char_indices().find(|(_, c)| !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(ParseDigestError::InvalidHex(c, i));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex, &mut bytes).map_err(|_| ParseDigestError::WrongLength(hex.len()))?;
        Ok(Self { algorithm, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(input: &str, expected: ParseDigestError) {
        assert_eq!(input.parse::<Digest>(), Err(expected), "input {input:?}");
    }

    #[test]
    fn parses_and_prints_both_algorithms() {
        for name in ["blake3", "sha256"] {
            let s = format!("{name}:{}", "0123456789abcdef".repeat(4));
            let d: Digest = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
            assert_eq!(d.algorithm().name(), name);
            assert_eq!(d.bytes()[0], 0x01);
        }
    }

    #[test]
    fn rejects_everything_else() {
        let hex64 = "ab".repeat(32);
        check_err(&hex64, ParseDigestError::MissingColon);
        check_err(&format!("md5:{hex64}"), ParseDigestError::UnknownAlgorithm("md5".into()));
        check_err(&format!("BLAKE3:{hex64}"), ParseDigestError::UnknownAlgorithm("BLAKE3".into()));
        check_err("sha256:abcd", ParseDigestError::WrongLength(4));
        check_err(&format!("sha256:{hex64}00"), ParseDigestError::WrongLength(66));
        check_err(&format!("sha256:{}", "AB".repeat(32)), ParseDigestError::InvalidHex('A', 0));
        check_err(&format!("blake3:{}g", &hex64[..63]), ParseDigestError::InvalidHex('g', 63));
        check_err(&format!("blake3: {}", &hex64[..63]), ParseDigestError::InvalidHex(' ', 0));
        check_err(&format!("blake3:{}é", &hex64[..62]), ParseDigestError::InvalidHex('é', 62));
    }
}
