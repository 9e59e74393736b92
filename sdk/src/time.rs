//! Event time. Plugins never see a clock: the only time a rule knows is the event's own
//! timestamp, so replaying history gives the same decisions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A moment in UTC with second precision, read from and written as RFC 3339
/// (`2026-11-23T10:00:00Z`; offsets such as `+02:00` and fractions are accepted on input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_seconds: i64,
}

/// Why a timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError(String);

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimestampError {}

const SECONDS_PER_DAY: i64 = 86_400;

impl Timestamp {
    /// The moment `unix_seconds` after 1970-01-01T00:00:00Z.
    pub fn from_unix_seconds(unix_seconds: i64) -> Timestamp {
        Timestamp { unix_seconds }
    }

    /// Seconds since 1970-01-01T00:00:00Z.
    pub fn unix_seconds(self) -> i64 {
        self.unix_seconds
    }

    /// The calendar date: (year, month 1-12, day 1-31).
    pub fn date(self) -> (i32, u32, u32) {
        civil_from_days(self.unix_seconds.div_euclid(SECONDS_PER_DAY))
    }

    /// The calendar year, for rules such as "purchases this year".
    pub fn year(self) -> i32 {
        self.date().0
    }

    /// The moment `days` days later (or earlier, when negative): for expiry dates.
    pub fn plus_days(self, days: i64) -> Timestamp {
        Timestamp {
            unix_seconds: self
                .unix_seconds
                .saturating_add(days.saturating_mul(SECONDS_PER_DAY)),
        }
    }

    /// Midnight UTC of the calendar date `year-month-day`, `None` for a month or day out of
    /// range (a day past the month's end included).
    pub fn from_date(year: i32, month: u32, day: u32) -> Option<Timestamp> {
        if !(1..=12).contains(&month)
            || day == 0
            || i64::from(day) > days_in_month(i64::from(year), i64::from(month))
        {
            return None;
        }
        let days = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
        Some(Timestamp {
            unix_seconds: days.saturating_mul(SECONDS_PER_DAY),
        })
    }

    /// Seconds since midnight UTC of the timestamp's day.
    pub fn seconds_of_day(self) -> u32 {
        // Below 86400, so it fits a u32.
        self.unix_seconds.rem_euclid(SECONDS_PER_DAY) as u32
    }

    /// The moment `seconds` later (or earlier, when negative).
    pub fn plus_seconds(self, seconds: i64) -> Timestamp {
        Timestamp {
            unix_seconds: self.unix_seconds.saturating_add(seconds),
        }
    }

    /// The date as `YYYY-MM-DD`.
    pub fn date_string(self) -> String {
        let (year, month, day) = self.date();
        format!("{year:04}-{month:02}-{day:02}")
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(text: &str) -> Result<Timestamp, TimestampError> {
        let invalid = |why: &str| {
            TimestampError(format!(
                "{text:?} is not an RFC 3339 timestamp such as 2026-11-23T10:00:00Z: {why}"
            ))
        };
        let bytes = text.as_bytes();
        if bytes.len() < 20 {
            return Err(invalid("too short"));
        }
        // Every plugin reads its event's timestamp: the digits are summed by hand, without
        // `str::parse`'s sign and overflow handling, which two to four digits do not need.
        let number = |range: std::ops::Range<usize>| -> Result<i64, TimestampError> {
            bytes[range].iter().try_fold(0, |number, &byte| {
                if byte.is_ascii_digit() {
                    Ok(number * 10 + i64::from(byte - b'0'))
                } else {
                    Err(invalid("a date or time field is not a number"))
                }
            })
        };
        if bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
            return Err(invalid("expected YYYY-MM-DDTHH:MM:SS"));
        }
        if bytes[13] != b':' || bytes[16] != b':' {
            return Err(invalid("expected HH:MM:SS"));
        }
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(invalid("no such date"));
        }
        if hour > 23 || minute > 59 || second > 60 {
            return Err(invalid("no such time of day"));
        }
        let mut rest = &text[19..];
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(invalid("a '.' must be followed by digits"));
            }
            rest = &fraction[digits..];
        }
        let offset_seconds = match rest {
            "Z" | "z" => 0,
            _ if rest.len() == 6
                && matches!(rest.as_bytes()[0], b'+' | b'-')
                && rest.as_bytes()[3] == b':' =>
            {
                let offset = &rest[1..];
                let hours: i64 = offset[..2].parse().map_err(|_| invalid("bad UTC offset"))?;
                let minutes: i64 = offset[3..].parse().map_err(|_| invalid("bad UTC offset"))?;
                let seconds = hours * 3600 + minutes * 60;
                if rest.starts_with('-') {
                    -seconds
                } else {
                    seconds
                }
            }
            _ => {
                return Err(invalid(
                    "expected 'Z' or an offset such as +02:00 at the end",
                ));
            }
        };
        let days = days_from_civil(year, month, day);
        // A leap second is read as the last second of the minute.
        let seconds_of_day = hour * 3600 + minute * 60 + second.min(59);
        Ok(Timestamp {
            unix_seconds: days * SECONDS_PER_DAY + seconds_of_day - offset_seconds,
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.write(&mut [0; RFC3339_LEN]) {
            Some(text) => f.write_str(text),
            None => {
                let seconds_of_day = self.unix_seconds.rem_euclid(SECONDS_PER_DAY);
                write!(
                    f,
                    "{}T{:02}:{:02}:{:02}Z",
                    self.date_string(),
                    seconds_of_day / 3600,
                    seconds_of_day / 60 % 60,
                    seconds_of_day % 60
                )
            }
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
const RFC3339_LEN: usize = 20;

impl Timestamp {
    /// The timestamp as RFC 3339 written into `buffer` without `core::fmt` (decisions with
    /// expiring points write one each), for years 0 to 9999; `None` for the rest.
    fn write(self, buffer: &mut [u8; RFC3339_LEN]) -> Option<&str> {
        let (year, month, day) = self.date();
        let year = u32::try_from(year).ok().filter(|year| *year <= 9999)?;
        // Below 86400, so it fits a u32.
        let seconds_of_day = self.unix_seconds.rem_euclid(SECONDS_PER_DAY) as u32;
        let fields = [
            (0, year / 100),
            (2, year % 100),
            (5, month),
            (8, day),
            (11, seconds_of_day / 3600),
            (14, seconds_of_day / 60 % 60),
            (17, seconds_of_day % 60),
        ];
        for (at, value) in fields {
            // Every field is below 100, so both digits are below 10.
            buffer[at] = b'0' + (value / 10) as u8;
            buffer[at + 1] = b'0' + (value % 10) as u8;
        }
        for (at, separator) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'Z'),
        ] {
            buffer[at] = separator;
        }
        std::str::from_utf8(buffer).ok()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.write(&mut [0; RFC3339_LEN]) {
            Some(text) => serializer.serialize_str(text),
            None => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        // Parsed inside the visitor, while the deserializer is still at the string, so that
        // an error's position (and the field path the SDK derives from it) is the timestamp's.
        deserializer.deserialize_str(TimestampVisitor)
    }
}

struct TimestampVisitor;

impl de::Visitor<'_> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Timestamp, E> {
        text.parse().map_err(E::custom)
    }
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// How many days `month` (1-12) of `year` has; `None` for a month out of range.
pub fn days_in_month_of(year: i32, month: u32) -> Option<u32> {
    if !(1..=12).contains(&month) {
        return None;
    }
    u32::try_from(days_in_month(i64::from(year), i64::from(month))).ok()
}

// Howard Hinnant's days_from_civil / civil_from_days: exact for the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Years of timestamps this parser accepts are four digits, so the casts cannot truncate.
    (year as i32, month as u32, day as u32)
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "tests fail loudly on a broken expectation"
)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("valid timestamp")
    }

    #[test]
    fn reads_utc_offsets_and_fractions() {
        assert_eq!(ts("1970-01-01T00:00:00Z").unix_seconds(), 0);
        assert_eq!(ts("2026-11-23T10:00:00Z"), ts("2026-11-23T12:00:00+02:00"));
        assert_eq!(
            ts("2026-11-23T10:00:00.123456Z"),
            ts("2026-11-23T10:00:00Z")
        );
        assert_eq!(ts("2024-02-29T23:59:59Z").date(), (2024, 2, 29));
    }

    #[test]
    fn writes_rfc3339_utc() {
        assert_eq!(
            ts("2026-11-23T12:30:05+02:00").to_string(),
            "2026-11-23T10:30:05Z"
        );
        assert_eq!(
            ts("1969-12-31T23:59:59Z").to_string(),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(
            ts("2026-12-31T10:00:00Z").plus_days(1).to_string(),
            "2027-01-01T10:00:00Z"
        );
    }

    #[test]
    fn text_is_what_the_formatter_it_replaced_wrote() {
        let formatted = |t: Timestamp| {
            let seconds_of_day = t.unix_seconds().rem_euclid(SECONDS_PER_DAY);
            format!(
                "{}T{:02}:{:02}:{:02}Z",
                t.date_string(),
                seconds_of_day / 3600,
                seconds_of_day / 60 % 60,
                seconds_of_day % 60
            )
        };
        let year_0 = ts("0000-01-01T00:00:00Z").unix_seconds();
        let year_9999 = ts("9999-12-31T23:59:59Z").unix_seconds();
        let mut seconds = year_0 - 3 * SECONDS_PER_DAY;
        while seconds < year_9999 + 3 * SECONDS_PER_DAY {
            let t = Timestamp::from_unix_seconds(seconds);
            assert_eq!(t.to_string(), formatted(t));
            assert_eq!(
                serde_json::to_string(&t).expect("serializable"),
                format!("\"{}\"", formatted(t))
            );
            // About every 114 days and a few hours, at varying times of day.
            seconds += 9_876_543;
        }
    }

    #[test]
    fn refuses_impossible_dates() {
        for text in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23",
            "2026-11-23T10:00:00",
            "yesterday",
        ] {
            assert!(
                text.parse::<Timestamp>().is_err(),
                "{text} should be refused"
            );
        }
    }
}
