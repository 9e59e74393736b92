//! Page cursors: positions in a listing, opaque to clients. A kind letter stops a ledger
//! cursor from being used on an event history and the other way round.

use crate::storage::StoreError;

/// `e` + 16 hex digits of the timestamp (sign bit flipped, so the digits sort) + 16 of the
/// seq.
pub(super) fn encode_event((seconds, seq): (i64, u64)) -> String {
    format!("e{:016x}{seq:016x}", seconds.cast_unsigned() ^ (1 << 63))
}

/// The (unix seconds, seq) position of an event history cursor.
pub(super) fn decode_event(cursor: &str) -> Result<(i64, u64), StoreError> {
    let fields = cursor
        .strip_prefix('e')
        .filter(|rest| rest.len() == 32)
        .and_then(|rest| Some((hex_u64(&rest[..16])?, hex_u64(&rest[16..])?)));
    match fields {
        Some((seconds, seq)) => Ok(((seconds ^ (1 << 63)).cast_signed(), seq)),
        None => Err(invalid(cursor, "an event history")),
    }
}

/// `l` + 16 hex digits of the last entry's seq.
pub(super) fn encode_ledger(seq: u64) -> String {
    format!("l{seq:016x}")
}

/// The seq of a ledger cursor.
pub(super) fn decode_ledger(cursor: &str) -> Result<u64, StoreError> {
    cursor
        .strip_prefix('l')
        .filter(|rest| rest.len() == 16)
        .and_then(hex_u64)
        .ok_or_else(|| invalid(cursor, "a ledger"))
}

fn hex_u64(digits: &str) -> Option<u64> {
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn invalid(cursor: &str, listing: &str) -> StoreError {
    StoreError::Invalid(format!(
        "cursor {cursor:?} is not a cursor of {listing}; pass back a next_cursor unchanged"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_cursors_round_trip_and_sort_like_positions() {
        let positions = [
            (i64::MIN, 0),
            (-1, 7),
            (0, 1),
            (1_700_000_000, 42),
            (i64::MAX, u64::MAX),
        ];
        for position in positions {
            assert_eq!(decode_event(&encode_event(position)).ok(), Some(position));
        }
        let encoded: Vec<String> = positions.iter().map(|&p| encode_event(p)).collect();
        assert!(encoded.is_sorted(), "{encoded:?}");
    }

    #[test]
    fn foreign_cursors_are_refused() {
        let ledger = encode_ledger(5);
        assert_eq!(decode_ledger(&ledger).ok(), Some(5));
        for bad in [
            ledger.as_str(),
            "",
            "e",
            "eZZ",
            "e0000000000000000000000000000000g",
        ] {
            let error = decode_event(bad).err();
            assert!(
                matches!(error, Some(StoreError::Invalid(_))),
                "{bad:?}: {error:?}"
            );
        }
        assert!(decode_ledger(&encode_event((1, 1))).is_err());
    }
}
