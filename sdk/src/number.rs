//! Exact numbers for money and points.
//!
//! Real event data writes numbers both ways: `"total": 200` and `"total": "200"`, `"price":
//! 19.99` and `"price": "19.99"`. [`Decimal`] reads all of them exactly, as written, so
//! `19.99 * 100` is `1999` and never `1998.9999999999998`. [`Money`] is an amount in minor
//! units (cents) at two decimals, the scale of most currencies; use
//! [`Decimal::to_minor_units`] for currencies with another scale.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most decimal places a [`Decimal`] keeps. Products with more are rounded half to even.
pub const MAX_SCALE: u32 = 18;

/// Why a number could not be read or computed; the message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberError(String);

impl fmt::Display for NumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NumberError {}

/// An exact decimal number: `mantissa / 10^scale`.
///
/// Parsed from JSON numbers and from numeric strings alike, compared and multiplied without
/// binary floating point. Serialized as a string so that no reader rounds it.
// Every constructor normalizes (no trailing zeros in the mantissa), so structural equality
// is numeric equality: derived `PartialEq` and `Hash` agree with the hand-written `Ord`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

impl Decimal {
    /// Zero.
    pub const ZERO: Decimal = Decimal {
        mantissa: 0,
        scale: 0,
    };

    /// A whole number.
    pub fn from_int(value: i64) -> Decimal {
        Decimal {
            mantissa: i128::from(value),
            scale: 0,
        }
    }

    /// `mantissa / 10^scale`, e.g. `Decimal::new(1999, 2)` is 19.99.
    pub fn new(mantissa: i64, scale: u32) -> Result<Decimal, NumberError> {
        if scale > MAX_SCALE {
            return Err(NumberError(format!(
                "scale {scale} is above the maximum of {MAX_SCALE}"
            )));
        }
        Ok(Decimal {
            mantissa: i128::from(mantissa),
            scale,
        }
        .normalized())
    }

    /// Reads a float as the shortest decimal that round-trips to it, which is what a JSON
    /// writer printed: `19.99_f64` becomes exactly 19.99.
    pub fn from_f64(value: f64) -> Result<Decimal, NumberError> {
        // serde_json prints a float in the shortest form that parses back to the same value
        // (with an exponent when very large or small, which `from_str` reads), so this is the
        // decimal the sender meant. Its printer is in every plugin already, for writing
        // decisions; `format!("{value}")` would add core's float formatting.
        match serde_json::to_vec(&value) {
            // Written straight into a buffer, without a `Formatter`.
            Ok(text) if value.is_finite() => String::from_utf8_lossy(&text).parse(),
            _ => {
                // Spelled as Rust prints them, without pulling in its float printer.
                let name = match value {
                    _ if value.is_nan() => "NaN",
                    _ if value > 0.0 => "inf",
                    _ => "-inf",
                };
                Err(NumberError(format!("{name} is not a finite number")))
            }
        }
    }

    /// The number of decimal places kept (trailing zeros are dropped).
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// True when the number has no fractional part.
    pub fn is_integer(&self) -> bool {
        self.scale == 0
    }

    /// True when the number is below zero.
    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    /// Exact sum.
    pub fn checked_add(self, other: Decimal) -> Result<Decimal, NumberError> {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.rescaled(scale)?, other.rescaled(scale)?);
        let mantissa = a
            .checked_add(b)
            .ok_or_else(|| NumberError(format!("{self} + {other} overflows")))?;
        Ok(Decimal { mantissa, scale }.normalized())
    }

    /// Exact difference.
    pub fn checked_sub(self, other: Decimal) -> Result<Decimal, NumberError> {
        self.checked_add(Decimal {
            mantissa: -other.mantissa,
            scale: other.scale,
        })
    }

    /// Product, exact up to [`MAX_SCALE`] decimals, rounded half to even beyond that.
    pub fn checked_mul(self, other: Decimal) -> Result<Decimal, NumberError> {
        let mantissa = match (i64::try_from(self.mantissa), i64::try_from(other.mantissa)) {
            // Two 64-bit factors always fit 128 bits: a plain multiply, not the checked
            // 128-bit library call.
            (Ok(a), Ok(b)) => i128::from(a) * i128::from(b),
            _ => self
                .mantissa
                .checked_mul(other.mantissa)
                .ok_or_else(|| NumberError(format!("{self} * {other} overflows")))?,
        };
        let mut product = Decimal {
            mantissa,
            scale: self.scale + other.scale,
        }
        .normalized();
        while product.scale > MAX_SCALE {
            product = product.drop_digit_half_even();
        }
        Ok(product)
    }

    /// The greatest integer not above the number: points earned are floored.
    pub fn floor(self) -> Result<i64, NumberError> {
        if let (Ok(small), Some(divisor)) = (i64::try_from(self.mantissa), pow10_i64(self.scale)) {
            // The same quotient in 64 bits, without 128-bit library calls on wasm32.
            return Ok(small.div_euclid(divisor));
        }
        let divisor = pow10(self.scale);
        let quotient = self.mantissa.div_euclid(divisor);
        i64::try_from(quotient).map_err(|_| NumberError(format!("{self} does not fit in 64 bits")))
    }

    /// Rounded to the nearest integer, halves away from zero.
    pub fn round(self) -> Result<i64, NumberError> {
        let divisor = pow10(self.scale);
        let quotient = self.mantissa / divisor;
        let remainder = (self.mantissa % divisor).abs();
        let rounded = if remainder * 2 >= divisor && self.scale > 0 {
            quotient + self.mantissa.signum()
        } else {
            quotient
        };
        i64::try_from(rounded).map_err(|_| NumberError(format!("{self} does not fit in 64 bits")))
    }

    /// The number as a whole count, refusing fractions: for quantities.
    pub fn to_integer(self) -> Result<i64, NumberError> {
        if !self.is_integer() {
            return Err(NumberError(format!("{self} is not a whole number")));
        }
        self.floor()
    }

    /// The amount in minor units at `scale` decimals (`to_minor_units(2)` gives cents),
    /// refusing amounts that have more decimals than the currency: `19.999` is an error,
    /// not a silent rounding.
    pub fn to_minor_units(self, scale: u32) -> Result<i64, NumberError> {
        if self.scale > scale {
            return Err(NumberError(format!(
                "{self} has {} decimals, more than the {scale} this amount allows",
                self.scale
            )));
        }
        let minor = self.rescaled(scale)?;
        i64::try_from(minor).map_err(|_| NumberError(format!("{self} does not fit in 64 bits")))
    }

    /// The nearest float, for display or statistics; never for money.
    pub fn to_f64(self) -> f64 {
        // Both conversions are exact for the magnitudes money and points take.
        self.mantissa as f64 / pow10(self.scale) as f64
    }

    fn normalized(mut self) -> Decimal {
        if self.mantissa == 0 {
            return Decimal::ZERO;
        }
        // 128-bit division is a library call on wasm32; amounts and points fit 64 bits.
        if let Ok(mut small) = i64::try_from(self.mantissa) {
            while self.scale > 0 && small % 10 == 0 {
                small /= 10;
                self.scale -= 1;
            }
            self.mantissa = i128::from(small);
            return self;
        }
        while self.scale > 0 && self.mantissa % 10 == 0 {
            self.mantissa /= 10;
            self.scale -= 1;
        }
        self
    }

    fn rescaled(self, scale: u32) -> Result<i128, NumberError> {
        debug_assert!(scale >= self.scale);
        self.mantissa
            .checked_mul(pow10(scale - self.scale))
            .ok_or_else(|| NumberError(format!("{self} overflows at {scale} decimals")))
    }

    fn drop_digit_half_even(self) -> Decimal {
        let quotient = self.mantissa / 10;
        let digit = (self.mantissa % 10).abs();
        let round_away = digit > 5 || (digit == 5 && quotient % 2 != 0);
        let mantissa = if round_away {
            quotient + self.mantissa.signum()
        } else {
            quotient
        };
        Decimal {
            mantissa,
            scale: self.scale - 1,
        }
        .normalized()
    }
}

fn pow10(exponent: u32) -> i128 {
    10_i128.pow(exponent)
}

/// `10^exponent` when it fits 64 bits (exponent up to 18).
fn pow10_i64(exponent: u32) -> Option<i64> {
    10_i64.checked_pow(exponent)
}

impl From<i64> for Decimal {
    fn from(value: i64) -> Decimal {
        Decimal::from_int(value)
    }
}

impl FromStr for Decimal {
    type Err = NumberError;

    /// Accepts `200`, `-3`, `+1.50`, `19.99`, `.5`, `1e3`, `2.5E-2`, with surrounding spaces.
    /// Refuses thousands separators, `NaN`, infinities and anything else that is not a number.
    fn from_str(text: &str) -> Result<Decimal, NumberError> {
        if let Some(value) = Decimal::parse(text.as_bytes()) {
            return Ok(value);
        }
        Decimal::from_str_general(text)
    }
}

impl Decimal {
    /// The common forms (`200`, `-19.99`, `+0.125`: an optional sign, at most 18 digits, an
    /// optional fraction) in one pass over the bytes and in 64 bits; `None` for anything else,
    /// which [`Decimal::from_str_general`] reads or refuses with its message.
    fn parse(text: &[u8]) -> Option<Decimal> {
        let (negative, digits) = match text.first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        if digits.is_empty() || digits.len() > 19 {
            return None;
        }
        let mut mantissa: i64 = 0;
        let mut count = 0;
        let mut point = None;
        for (index, &byte) in digits.iter().enumerate() {
            match byte {
                b'0'..=b'9' => {
                    mantissa = mantissa * 10 + i64::from(byte - b'0');
                    count += 1;
                }
                b'.' if point.is_none() => point = Some(index),
                _ => return None,
            }
        }
        // At most 18 digits: below 10^18, so the loop above cannot overflow.
        if count == 0 || count > 18 {
            return None;
        }
        let scale = point.map_or(0, |at| digits.len() - at - 1);
        let value = Decimal {
            mantissa: i128::from(if negative { -mantissa } else { mantissa }),
            // At most 18 decimals, within MAX_SCALE.
            scale: scale as u32,
        };
        Some(value.normalized())
    }

    fn from_str_general(text: &str) -> Result<Decimal, NumberError> {
        let invalid = || NumberError(format!("{text:?} is not a number"));
        let trimmed = text.trim();
        let (negative, unsigned) = match trimmed.as_bytes().first() {
            Some(b'-') => (true, &trimmed[1..]),
            Some(b'+') => (false, &trimmed[1..]),
            _ => (false, trimmed),
        };
        let (significand, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => {
                let exponent: i32 = unsigned[at + 1..].parse().map_err(|_| invalid())?;
                (&unsigned[..at], exponent)
            }
            None => (unsigned, 0),
        };
        let (whole, fraction) = significand.split_once('.').unwrap_or((significand, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        if !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|byte| byte.is_ascii_digit())
        {
            return Err(invalid());
        }
        let too_big = || NumberError(format!("{text:?} has too many digits"));
        let mut mantissa: i128 = 0;
        for byte in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(byte - b'0')))
                .ok_or_else(too_big)?;
        }
        let mut scale = i64::try_from(fraction.len()).map_err(|_| too_big())? - i64::from(exponent);
        while scale < 0 {
            mantissa = mantissa.checked_mul(10).ok_or_else(too_big)?;
            scale += 1;
        }
        let mut value = Decimal {
            mantissa: if negative { -mantissa } else { mantissa },
            scale: u32::try_from(scale).map_err(|_| too_big())?,
        }
        .normalized();
        while value.scale > MAX_SCALE {
            value = value.drop_digit_half_even();
        }
        Ok(value)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write(&mut [0; DECIMAL_TEXT_LEN]))
    }
}

/// Room for any decimal: 39 digits of an `i128`, a sign and a point.
const DECIMAL_TEXT_LEN: usize = 48;

impl Decimal {
    /// The decimal as text (`-19.99`, `200`, `0.05`), written into `buffer` without
    /// `core::fmt`: serializing state and decisions does this for every amount.
    fn write(self, buffer: &mut [u8; DECIMAL_TEXT_LEN]) -> &str {
        write_fixed(
            self.mantissa.unsigned_abs(),
            // Every constructor keeps the scale at most MAX_SCALE (18).
            self.scale.min(MAX_SCALE) as usize,
            self.mantissa < 0,
            buffer,
        )
    }
}

/// `magnitude / 10^scale` with exactly `scale` decimals, signed, right-aligned in `buffer`.
fn write_fixed(
    mut magnitude: u128,
    scale: usize,
    negative: bool,
    buffer: &mut [u8; DECIMAL_TEXT_LEN],
) -> &str {
    let mut at = buffer.len();
    let mut written = 0;
    loop {
        // 128-bit division is a library call on wasm32; most magnitudes fit 64 bits.
        let digit = match u64::try_from(magnitude) {
            Ok(small) => {
                magnitude = u128::from(small / 10);
                small % 10
            }
            Err(_) => {
                let digit = magnitude % 10;
                magnitude /= 10;
                digit as u64
            }
        };
        at -= 1;
        // A digit is below 10, so the cast cannot truncate.
        buffer[at] = b'0' + digit as u8;
        written += 1;
        if written == scale {
            at -= 1;
            buffer[at] = b'.';
        }
        if magnitude == 0 && written > scale {
            break;
        }
    }
    if negative {
        at -= 1;
        buffer[at] = b'-';
    }
    // Only ASCII digits, '.' and '-' were written.
    std::str::from_utf8(&buffer[at..]).unwrap_or_default()
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        let scale = self.scale.max(other.scale);
        match (self.rescaled(scale), other.rescaled(scale)) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            // Only a number too large to rescale fails, and it is the larger in magnitude.
            _ => self.to_f64().total_cmp(&other.to_f64()),
        }
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.write(&mut [0; DECIMAL_TEXT_LEN]))
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        deserializer.deserialize_any(DecimalVisitor)
    }
}

struct DecimalVisitor;

impl Visitor<'_> for DecimalVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a numeric string")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Decimal, E> {
        Ok(Decimal::from_int(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Decimal, E> {
        Ok(Decimal {
            mantissa: i128::from(value),
            scale: 0,
        })
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Decimal, E> {
        Decimal::from_f64(value).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Decimal, E> {
        value.parse().map_err(E::custom)
    }
}

/// An amount of money in minor units at two decimals: `"19.99"`, `19.99` and `"19.990"` all
/// read as 1999. An amount with more decimals is refused rather than rounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money {
    minor: i64,
}

impl Money {
    /// Decimals of the minor unit.
    pub const SCALE: u32 = 2;

    /// An amount from minor units: `Money::from_minor(1999)` is 19.99.
    pub fn from_minor(minor: i64) -> Money {
        Money { minor }
    }

    /// The amount in minor units (cents).
    pub fn minor(self) -> i64 {
        self.minor
    }

    /// The amount as an exact decimal in major units.
    pub fn to_decimal(self) -> Decimal {
        Decimal {
            mantissa: i128::from(self.minor),
            scale: Money::SCALE,
        }
        .normalized()
    }

    /// Reads an amount from a decimal, refusing sub-cent digits.
    pub fn from_decimal(amount: Decimal) -> Result<Money, NumberError> {
        Ok(Money {
            minor: amount.to_minor_units(Money::SCALE)?,
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write(&mut [0; DECIMAL_TEXT_LEN]))
    }
}

impl Money {
    /// The amount with two decimals (`19.99`, `200.00`), without `core::fmt`.
    fn write(self, buffer: &mut [u8; DECIMAL_TEXT_LEN]) -> &str {
        write_fixed(
            u128::from(self.minor.unsigned_abs()),
            Money::SCALE as usize,
            self.minor < 0,
            buffer,
        )
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.write(&mut [0; DECIMAL_TEXT_LEN]))
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
        // Refused inside the visitor, while the deserializer is still at the amount, so that
        // an error's position (and the field path the SDK derives from it) is the amount's.
        deserializer.deserialize_any(MoneyVisitor)
    }
}

struct MoneyVisitor;

impl MoneyVisitor {
    fn money<E: de::Error>(amount: Result<Decimal, E>) -> Result<Money, E> {
        Money::from_decimal(amount?).map_err(E::custom)
    }
}

impl Visitor<'_> for MoneyVisitor {
    type Value = Money;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        DecimalVisitor.expecting(f)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Money, E> {
        MoneyVisitor::money(DecimalVisitor.visit_i64(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Money, E> {
        MoneyVisitor::money(DecimalVisitor.visit_u64(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Money, E> {
        MoneyVisitor::money(DecimalVisitor.visit_f64(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Money, E> {
        MoneyVisitor::money(DecimalVisitor.visit_str(value))
    }
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "tests fail loudly on a broken expectation"
)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().expect("a valid decimal")
    }

    #[test]
    fn parses_the_forms_real_data_uses() {
        assert_eq!(d("200"), Decimal::from_int(200));
        assert_eq!(d(" 19.99 "), Decimal::new(1999, 2).expect("valid"));
        assert_eq!(d("+1.50"), Decimal::new(15, 1).expect("valid"));
        assert_eq!(d(".5"), Decimal::new(5, 1).expect("valid"));
        assert_eq!(d("1e3"), Decimal::from_int(1000));
        assert_eq!(d("2.5E-2"), Decimal::new(25, 3).expect("valid"));
        assert_eq!(d("-0.00"), Decimal::ZERO);
    }

    #[test]
    fn refuses_what_is_not_a_number() {
        for text in [
            "", "-", ".", "1,000", "NaN", "inf", "12a", "1e", "1.2.3", "--1",
        ] {
            assert!(
                text.parse::<Decimal>().is_err(),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn floats_read_as_the_decimal_that_was_written() {
        assert_eq!(Decimal::from_f64(19.99).expect("finite"), d("19.99"));
        assert_eq!(Decimal::from_f64(0.1).expect("finite"), d("0.1"));
        let points = d("0.29").checked_mul(Decimal::from_int(100)).expect("fits");
        assert_eq!(points.floor(), Ok(29), "0.29 * 100 is 29, not 28.999...");
    }

    #[test]
    fn floor_and_round_handle_negatives() {
        assert_eq!(d("2.7").floor(), Ok(2));
        assert_eq!(d("-2.3").floor(), Ok(-3));
        assert_eq!(d("2.5").round(), Ok(3));
        assert_eq!(d("-2.5").round(), Ok(-3));
        assert_eq!(d("2.49").round(), Ok(2));
    }

    #[test]
    fn minor_units_are_exact_or_refused() {
        assert_eq!(d("19.99").to_minor_units(2), Ok(1999));
        assert_eq!(d("200").to_minor_units(2), Ok(20000));
        assert_eq!(
            d("1.5").to_minor_units(0).map_err(|e| e.to_string()),
            Err("1.5 has 1 decimals, more than the 0 this amount allows".into())
        );
        assert!(d("19.999").to_minor_units(2).is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in ["0", "-1", "19.99", "-0.05", "123456789.000000001"] {
            assert_eq!(d(text).to_string(), text);
        }
    }

    #[test]
    fn money_reads_numbers_and_strings() {
        let from_string: Money = serde_json::from_str("\"19.99\"").expect("money");
        let from_number: Money = serde_json::from_str("19.99").expect("money");
        let whole: Money = serde_json::from_str("200").expect("money");
        assert_eq!(from_string.minor(), 1999);
        assert_eq!(from_number, from_string);
        assert_eq!(whole.minor(), 20000);
        assert_eq!(whole.to_string(), "200.00");
        assert!(serde_json::from_str::<Money>("\"1.999\"").is_err());
        assert!(serde_json::from_str::<Money>("true").is_err());
    }

    #[test]
    fn text_is_what_the_formatter_it_replaced_wrote() {
        // The Display this crate had: `write!` of the mantissa, or the sign, the quotient and
        // the zero-padded remainder.
        fn formatted(d: Decimal) -> String {
            if d.scale == 0 {
                return format!("{}", d.mantissa);
            }
            let divisor = pow10(d.scale).unsigned_abs();
            let sign = if d.mantissa < 0 { "-" } else { "" };
            let magnitude = d.mantissa.unsigned_abs();
            let width = d.scale as usize;
            format!(
                "{sign}{}.{:0width$}",
                magnitude / divisor,
                magnitude % divisor
            )
        }
        let mantissas = [0, 1, -1, 5, -5, 1999, -1999, 10, 100, i64::MAX, i64::MIN]
            .map(i128::from)
            .into_iter()
            .chain([i128::MAX, i128::MIN + 1, 10_i128.pow(30) + 7]);
        for mantissa in mantissas {
            for scale in [0, 1, 2, 5, 18] {
                let d = Decimal { mantissa, scale };
                assert_eq!(d.to_string(), formatted(d));
                assert_eq!(
                    serde_json::to_string(&d).expect("serializable"),
                    format!("\"{}\"", formatted(d))
                );
            }
        }
        for minor in [0, 5, -5, 1999, -20000, i64::MAX, i64::MIN] {
            let magnitude = minor.unsigned_abs();
            let sign = if minor < 0 { "-" } else { "" };
            let expected = format!("{sign}{}.{:02}", magnitude / 100, magnitude % 100);
            assert_eq!(Money::from_minor(minor).to_string(), expected);
        }
    }

    #[test]
    fn the_fast_reader_agrees_with_the_general_one() {
        let texts = [
            "0",
            "-0",
            "+0",
            "200",
            "19.99",
            "-19.99",
            ".5",
            "5.",
            "-.5",
            "00012.3400",
            "0.000000000000000001",
            "123456789012345678",
            "1234567890123456789",
            "12345678901234567.89",
            "1e3",
            " 1",
            "",
            "-",
            ".",
            "+",
            "1.2.3",
            "--1",
            "1,000",
        ];
        for text in texts {
            if let Some(fast) = Decimal::parse(text.as_bytes()) {
                assert_eq!(Ok(fast), Decimal::from_str_general(text), "{text:?}");
            }
            assert_eq!(
                text.parse::<Decimal>(),
                Decimal::from_str_general(text),
                "{text:?}"
            );
        }
        for float in [0.1, 19.99, -0.0, 1e21, 1e-7, 123.456, 2.5e-2] {
            let printed = format!("{float}");
            assert_eq!(Decimal::from_f64(float), printed.parse(), "{float}");
        }
    }

    #[test]
    fn products_beyond_the_max_scale_round_half_even() {
        let tiny = d("0.000000001");
        let product = tiny.checked_mul(d("0.0000000005")).expect("fits");
        assert_eq!(
            product,
            Decimal::ZERO,
            "5e-19 rounds half to even at 18 decimals"
        );
        let product = tiny.checked_mul(d("0.0000000015")).expect("fits");
        assert_eq!(product, d("0.000000000000000002"));
    }
}
