//! The byte layouts of rows: JSON records, and the three rows every event writes (its event
//! row, a history row, its ledger rows), which have layouts of their own because their size
//! sets how many pages a commit dirties.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_sdk::{PointKind, Timestamp};

use crate::storage::{LedgerEntry, StoreError};

/// A JSON record, decoded; `what` names it in the error.
pub(super) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|why| StoreError::Corrupt(format!("{} does not decode: {why}", what())))
}

/// A record as JSON; `what` names it in the error.
pub(super) fn encode<T: Serialize>(
    value: &T,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|why| StoreError::Invalid(format!("{} does not encode: {why}", what())))
}

/// A history row's value: the action's length (4 bytes, little-endian), the action, the event
/// id. The action is there so that an action filter reads no event it then drops.
pub(super) fn encode_history(action: &str, id: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + action.len() + id.len());
    bytes.extend_from_slice(&len_u32(action.len()).to_le_bytes());
    bytes.extend_from_slice(action.as_bytes());
    bytes.extend_from_slice(id.as_bytes());
    bytes
}

/// (action, event id) of a history row; `None` when the bytes are not one.
pub(super) fn decode_history(bytes: &[u8]) -> Option<(&str, &str)> {
    let (length, rest) = bytes.split_first_chunk::<4>()?;
    let length = usize::try_from(u32::from_le_bytes(*length)).ok()?;
    let (action, id) = (rest.get(..length)?, rest.get(length..)?);
    Some((
        std::str::from_utf8(action).ok()?,
        std::str::from_utf8(id).ok()?,
    ))
}

/// The first byte of an event row. It names the row's layout, so that bytes of any other (a
/// JSON row starts with `{`) are refused as corrupt rather than misread.
pub(super) const EVENT_ROW_LZ4: u8 = 1;

/// An event row's value: [`EVENT_ROW_LZ4`], the length of the event's JSON (4 bytes,
/// little-endian), the JSON compressed in LZ4's block format.
///
/// Compressed because event rows are most of the bytes a commit writes: a checkout as the
/// ingest bench posts it is ~1,800 bytes of JSON (its attributes ~200, the data as posted
/// ~1,000, the outcome ~550) and ~800 compressed, for ~2 µs. Events are appended more or less
/// in id order, so their rows fill leaves one after another, and the smaller the rows the
/// fewer event leaves a batch writes. LZ4 rather than zstd, whose smaller rows cost more CPU
/// an event than the pages they save. Any redb dump still reads a row with one LZ4 call.
pub(super) fn encode_event_row(json: &[u8]) -> Result<Vec<u8>, StoreError> {
    let length = u32::try_from(json.len()).map_err(|_| {
        StoreError::Invalid(format!(
            "an event of {} bytes is larger than the {} a row can hold",
            json.len(),
            u32::MAX
        ))
    })?;
    let mut bytes = vec![0; 5 + lz4_flex::block::get_maximum_output_size(json.len())];
    bytes[0] = EVENT_ROW_LZ4;
    bytes[1..5].copy_from_slice(&length.to_le_bytes());
    let compressed = lz4_flex::block::compress_into(json, &mut bytes[5..]).map_err(|why| {
        StoreError::Invalid(format!(
            "an event of {} bytes does not compress: {why}",
            json.len()
        ))
    })?;
    bytes.truncate(5 + compressed);
    Ok(bytes)
}

/// The event JSON of an event row; `None` when the bytes are not one.
pub(super) fn decode_event_row(bytes: &[u8]) -> Option<Vec<u8>> {
    let (&[version], rest) = bytes.split_first_chunk::<1>()?;
    if version != EVENT_ROW_LZ4 {
        return None;
    }
    let (length, compressed) = rest.split_first_chunk::<4>()?;
    let length = usize::try_from(u32::from_le_bytes(*length)).ok()?;
    // LZ4 turns no byte into more than 255, so a longer length is a damaged row; refusing it
    // keeps a damaged length from allocating up to 4 GiB.
    if length > compressed.len().saturating_mul(255) {
        return None;
    }
    let mut json = vec![0; length];
    let written = lz4_flex::block::decompress_into(compressed, &mut json).ok()?;
    (written == length).then_some(json)
}

/// The first byte of a [`LedgerRow`]. It names the row's layout, so that bytes of any other
/// (a JSON entry starts with `{`) are refused as corrupt rather than misread.
pub(super) const LEDGER_ROW_V2: u8 = 2;

/// A ledger row's value, what a [`LedgerEntry`] holds but its seq (the key has it).
///
/// Binary rather than JSON because the ledger is most of what a customer's key range grows
/// by: an entry is ~50 bytes here and ~200 as JSON (field names, the seq, RFC 3339 times), so
/// a customer's rows span fewer leaves and a commit dirties fewer pages. Numbers are LEB128
/// because most are small.
///
/// Layout: [`LEDGER_ROW_V2`], the kind (0 earn, 1 reverse, 2 spend, 3 expire, 4 release),
/// whether it expires (0 or 1); the amount, the part held, balance after, pending after,
/// lifetime after, the event's time and, when it expires, the expiry (unix seconds), each
/// signed LEB128; the event id and the plugin, each after its
/// length in bytes (unsigned LEB128); the reason, to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LedgerRow<'a> {
    pub(super) event_id: &'a str,
    pub(super) plugin: &'a str,
    pub(super) amount: i64,
    pub(super) kind: PointKind,
    pub(super) reason: &'a str,
    pub(super) expires_at: Option<Timestamp>,
    pub(super) held: i64,
    pub(super) balance_after: i64,
    pub(super) pending_after: i64,
    pub(super) lifetime_after: i64,
    pub(super) at: Timestamp,
}

/// A kind's byte is its place here: new kinds go at the end, so stored rows keep their kind.
const KINDS: [PointKind; 6] = [
    PointKind::Earn,
    PointKind::Reverse,
    PointKind::Spend,
    PointKind::Expire,
    PointKind::Release,
    PointKind::Merge,
];

impl<'a> LedgerRow<'a> {
    pub(super) fn encode(&self) -> Vec<u8> {
        let strings = self.event_id.len() + self.plugin.len() + self.reason.len();
        let mut bytes = Vec::with_capacity(3 + 7 * 10 + 2 * 10 + strings);
        bytes.push(LEDGER_ROW_V2);
        let kind = KINDS
            .iter()
            .position(|kind| *kind == self.kind)
            .unwrap_or(0);
        bytes.push(u8::try_from(kind).unwrap_or(0));
        bytes.push(u8::from(self.expires_at.is_some()));
        let numbers = [
            self.amount,
            self.held,
            self.balance_after,
            self.pending_after,
            self.lifetime_after,
            self.at.unix_seconds(),
        ];
        let expiry = self.expires_at.map(Timestamp::unix_seconds);
        for number in numbers.into_iter().chain(expiry) {
            // Cannot fail: any i64 fits in 64 bits.
            if let Some((encoded, length)) = leb128fmt::encode_s64(number) {
                bytes.extend_from_slice(&encoded[..length]);
            }
        }
        for text in [self.event_id, self.plugin] {
            // Cannot fail: any usize fits in 64 bits.
            if let Some((encoded, length)) = leb128fmt::encode_u64(len_u64(text.len())) {
                bytes.extend_from_slice(&encoded[..length]);
            }
            bytes.extend_from_slice(text.as_bytes());
        }
        bytes.extend_from_slice(self.reason.as_bytes());
        bytes
    }

    /// The row in `bytes`; `None` when they are not one.
    pub(super) fn decode(bytes: &'a [u8]) -> Option<LedgerRow<'a>> {
        let (&[version, kind, expires], _) = bytes.split_first_chunk::<3>()?;
        if version != LEDGER_ROW_V2 {
            return None;
        }
        let mut position = 3;
        let number =
            |position: &mut usize| leb128fmt::decode_sint_slice::<i64, 64>(bytes, position).ok();
        let (amount, held) = (number(&mut position)?, number(&mut position)?);
        let (balance_after, pending_after) = (number(&mut position)?, number(&mut position)?);
        let (lifetime_after, seconds) = (number(&mut position)?, number(&mut position)?);
        let expires_at = match expires {
            0 => None,
            1 => Some(Timestamp::from_unix_seconds(number(&mut position)?)),
            _ => return None,
        };
        let text = |position: &mut usize| -> Option<&'a str> {
            let length = leb128fmt::decode_uint_slice::<u64, 64>(bytes, position).ok()?;
            let end = position.checked_add(usize::try_from(length).ok()?)?;
            let text = std::str::from_utf8(bytes.get(*position..end)?).ok()?;
            *position = end;
            Some(text)
        };
        let (event_id, plugin) = (text(&mut position)?, text(&mut position)?);
        Some(LedgerRow {
            event_id,
            plugin,
            amount,
            kind: *KINDS.get(usize::from(kind))?,
            reason: std::str::from_utf8(bytes.get(position..)?).ok()?,
            expires_at,
            held,
            balance_after,
            pending_after,
            lifetime_after,
            at: Timestamp::from_unix_seconds(seconds),
        })
    }

    pub(super) fn into_entry(self, seq: u64) -> LedgerEntry {
        LedgerEntry {
            seq,
            event_id: self.event_id.to_owned(),
            plugin: self.plugin.to_owned(),
            amount: self.amount,
            kind: self.kind,
            reason: self.reason.to_owned(),
            expires_at: self.expires_at,
            held: self.held,
            balance_after: self.balance_after,
            pending_after: self.pending_after,
            lifetime_after: self.lifetime_after,
            at: self.at,
        }
    }
}

pub(super) fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

pub(super) fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger_rows() -> [LedgerRow<'static>; 3] {
        [
            LedgerRow {
                event_id: "bench-1",
                plugin: "points",
                amount: 20,
                kind: PointKind::Earn,
                reason: "Purchase T-00000001",
                expires_at: Some(Timestamp::from_unix_seconds(1_800_000_000)),
                held: 20,
                balance_after: 120,
                pending_after: 20,
                lifetime_after: 140,
                at: Timestamp::from_unix_seconds(1_764_000_000),
            },
            LedgerRow {
                event_id: "",
                plugin: "p",
                amount: i64::MIN,
                kind: PointKind::Reverse,
                reason: "",
                expires_at: None,
                held: i64::MAX,
                balance_after: i64::MAX,
                pending_after: i64::MIN,
                lifetime_after: -1,
                at: Timestamp::from_unix_seconds(-86_400),
            },
            LedgerRow {
                event_id: "é-42",
                plugin: "tiers",
                amount: -5,
                kind: PointKind::Release,
                reason: "Kaffe ☕ för två",
                expires_at: None,
                held: 0,
                balance_after: 0,
                pending_after: 0,
                lifetime_after: 0,
                at: Timestamp::from_unix_seconds(0),
            },
        ]
    }

    /// The row an entry holds.
    fn row_of(entry: &LedgerEntry) -> Option<LedgerRow<'_>> {
        Some(LedgerRow {
            event_id: &entry.event_id,
            plugin: &entry.plugin,
            amount: entry.amount,
            kind: entry.kind,
            reason: &entry.reason,
            expires_at: entry.expires_at,
            held: entry.held,
            balance_after: entry.balance_after,
            pending_after: entry.pending_after,
            lifetime_after: entry.lifetime_after,
            at: entry.at,
        })
    }

    #[test]
    fn ledger_rows_round_trip_obeyed() {
        for row in ledger_rows() {
            let bytes = row.encode();
            assert_eq!(LedgerRow::decode(&bytes), Some(row));
            let entry = row.into_entry(7);
            assert_eq!(row_of(&entry), Some(row), "{entry:?}");
        }
    }

    #[test]
    fn ledger_rows_cut_short_or_mislabelled_violated() {
        for row in ledger_rows() {
            let bytes = row.encode();
            // Every shorter prefix but those that end inside the reason (the tail) is refused.
            let reason_starts = bytes.len() - row.reason.len();
            for length in 0..reason_starts {
                assert_eq!(LedgerRow::decode(&bytes[..length]), None, "{length} bytes");
            }
            // A kind byte past the last kind, a version and an expiry flag that are none.
            let unknown_kind = u8::try_from(KINDS.len()).unwrap();
            for (at, byte) in [(0, 1), (0, b'{'), (1, unknown_kind), (2, 2)] {
                let mut wrong = bytes.clone();
                wrong[at] = byte;
                assert_eq!(LedgerRow::decode(&wrong), None, "byte {at} = {byte}");
            }
        }
    }

    /// Event JSON of the sizes a row meets: none, a byte, a checkout, a large repetitive
    /// body, and bytes LZ4 cannot shrink (which it stores a little larger).
    fn event_jsons() -> Vec<Vec<u8>> {
        let checkout = serde_json::json!({
            "id": "bench-1", "action": "checkout", "customer": "c-17",
            "data": {"transaction_id": "T-1", "total": 120.5,
                     "items": [{"sku": "A-1", "quantity": 2, "price": 60.25}]},
        });
        let repetitive = format!("[{}]", vec!["{\"sku\":\"A-1\"}"; 20_000].join(","));
        let incompressible: Vec<u8> = (0..4096_u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        vec![
            Vec::new(),
            b"{".to_vec(),
            serde_json::to_vec(&checkout).unwrap(),
            repetitive.into_bytes(),
            incompressible,
        ]
    }

    #[test]
    fn event_rows_round_trip_obeyed() {
        for json in event_jsons() {
            let row = encode_event_row(&json).unwrap();
            assert_eq!(row[0], EVENT_ROW_LZ4);
            assert_eq!(decode_event_row(&row).as_deref(), Some(json.as_slice()));
        }
        let repetitive = &event_jsons()[3];
        let row = encode_event_row(repetitive).unwrap();
        assert!(
            row.len() * 50 < repetitive.len(),
            "{} bytes compress to {}",
            repetitive.len(),
            row.len()
        );
    }

    #[test]
    fn event_rows_cut_short_damaged_or_json_violated() {
        for json in event_jsons() {
            let row = encode_event_row(&json).unwrap();
            // An LZ4 block ends with literals, so a row cut anywhere decodes to less than its
            // length says, or not at all.
            for length in 0..row.len() {
                assert_eq!(decode_event_row(&row[..length]), None, "{length} bytes");
            }
            let mut longer = row.clone();
            longer[1..5].copy_from_slice(&(len_u32(json.len()) + 1).to_le_bytes());
            assert_eq!(decode_event_row(&longer), None, "a length one too long");
            if !json.is_empty() {
                let mut shorter = row.clone();
                shorter[1..5].copy_from_slice(&(len_u32(json.len()) - 1).to_le_bytes());
                assert_eq!(decode_event_row(&shorter), None, "a length one too short");
            }
            let mut huge = row.clone();
            huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
            assert_eq!(decode_event_row(&huge), None, "a length of 4 GiB");
            let mut mislabelled = row.clone();
            mislabelled[0] = 2;
            assert_eq!(decode_event_row(&mislabelled), None, "version 2");
        }
        assert_eq!(decode_event_row(br#"{"id":"e1"}"#), None, "a JSON row");
    }
}
