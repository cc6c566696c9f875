//! Float widths: the shortest exact form of a value, shared by the encoder and the decoder's checks.

use half::f16;

/// The bits of the one NaN that canonical CBOR writes, as a half-precision float.
pub(crate) const CANONICAL_NAN: u16 = 0x7e00;

/// A float in the narrowest IEEE 754 width that holds its value exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shortest {
    /// Half precision (`f9`), with its bits.
    Half(u16),
    /// Single precision (`fa`), with its bits.
    Single(u32),
    /// Double precision (`fb`), with its bits.
    Double(u64),
}

/// Picks the narrowest width that keeps `value` exactly (sign of zero included).
///
/// Every NaN becomes the canonical half-precision NaN, and the infinities fit
/// half precision.
pub(crate) fn shortest(value: f64) -> Shortest {
    if value.is_nan() {
        return Shortest::Half(CANONICAL_NAN);
    }
    let half = f16::from_f64(value);
    if half.to_f64().to_bits() == value.to_bits() {
        return Shortest::Half(half.to_bits());
    }
    // The cast rounds to the nearest single; the comparison keeps it only if exact.
    let single = value as f32;
    if f64::from(single).to_bits() == value.to_bits() {
        return Shortest::Single(single.to_bits());
    }
    Shortest::Double(value.to_bits())
}

/// Reads half-precision bits as an `f64` (exactly).
pub(crate) fn half_to_f64(bits: u16) -> f64 {
    f16::from_bits(bits).to_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_narrowest_exact_width() {
        assert_eq!(shortest(0.0), Shortest::Half(0x0000));
        assert_eq!(shortest(-0.0), Shortest::Half(0x8000));
        assert_eq!(shortest(1.5), Shortest::Half(0x3e00));
        assert_eq!(shortest(f64::INFINITY), Shortest::Half(0x7c00));
        assert_eq!(shortest(f64::NEG_INFINITY), Shortest::Half(0xfc00));
        assert_eq!(shortest(f64::NAN), Shortest::Half(CANONICAL_NAN));
        assert_eq!(shortest(-f64::NAN), Shortest::Half(CANONICAL_NAN));
        // The smallest half-precision subnormal.
        assert_eq!(shortest(5.960464477539063e-8), Shortest::Half(0x0001));
        assert_eq!(shortest(100000.0), Shortest::Single(0x47c3_5000));
        assert_eq!(shortest(1.1), Shortest::Double(0x3ff1_9999_9999_999a));
        // The smallest single-precision subnormal is exact in single precision only.
        assert_eq!(shortest(f64::from(f32::from_bits(1))), Shortest::Single(1));
        assert_eq!(shortest(f64::MIN_POSITIVE), Shortest::Double(f64::MIN_POSITIVE.to_bits()));
    }

    #[test]
    fn reads_half_bits() {
        assert_eq!(half_to_f64(0x3c00), 1.0);
        assert_eq!(half_to_f64(0x7bff), 65504.0);
        assert!(half_to_f64(0x7e00).is_nan());
    }
}
