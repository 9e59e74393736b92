//! A customer's row in `customer_data` (storage format 5): the [`CustomerRecord`] and every
//! plugin's state in one value.
//!
//! An event changes the record and, usually, the state of every plugin it ran; kept in rows
//! of their own (format 4) that was one B-tree insert per plugin on top of the record's, in
//! the one thread that commits. In one row it is one insert. Measured on the ingest bench
//! before this format, a throwaway build that skipped the state rows altogether ran 14%
//! faster; see `docs/ingest.md` for what this layout measured.
//!
//! Layout, every length little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 4 | the record's length `R`; 0 when the customer has plugin states but no record, which a format-2 file could hold |
//! | `R` | the record, JSON |
//! | then, for each plugin with a state, by name: | |
//! | 2 | the name's length `N` |
//! | `N` | the plugin's name |
//! | 4 | the state's length `S` |
//! | `S` | the state, JSON |
//!
//! [`CustomerRecord`]: crate::storage::CustomerRecord

use std::fmt;

use crate::storage::RawJson;

/// A row that does not have this layout: what was expected and what was there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RowError(String);

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed row, borrowing the stored bytes; every length in it has been checked.
#[derive(Debug, Clone, Copy)]
pub(super) struct CustomerRow<'a> {
    record: &'a [u8],
    /// The state entries, after the record.
    states: &'a [u8],
}

impl<'a> CustomerRow<'a> {
    /// Checks the layout of `bytes` and splits them.
    pub(super) fn parse(bytes: &'a [u8]) -> Result<CustomerRow<'a>, RowError> {
        let (length, rest) = take_u32(bytes)
            .ok_or_else(|| RowError(format!("the row is {} bytes long, under 4", bytes.len())))?;
        let record = rest.get(..length).ok_or_else(|| {
            RowError(format!(
                "the record is said to be {length} bytes long, but {} follow",
                rest.len()
            ))
        })?;
        let row = CustomerRow {
            record,
            states: &rest[length..],
        };
        // Walked once here, so that reading the states later cannot fail.
        let mut entries = Entries {
            rest: row.states,
            at: 4 + length,
        };
        while entries.next_checked()?.is_some() {}
        Ok(row)
    }

    /// The record's JSON; `None` when the row holds only plugin states.
    pub(super) fn record(&self) -> Option<&'a [u8]> {
        (!self.record.is_empty()).then_some(self.record)
    }

    /// The state of `plugin`, if it has one.
    pub(super) fn state(&self, plugin: &str) -> Option<&'a [u8]> {
        self.states()
            .find(|(name, _)| *name == plugin)
            .map(|(_, state)| state)
    }

    /// Every plugin's state, by name.
    pub(super) fn states(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + use<'a> {
        let mut entries = Entries {
            rest: self.states,
            at: 0,
        };
        // `parse` walked these entries already, so none fails.
        std::iter::from_fn(move || entries.next_checked().ok().flatten())
    }
}

/// A row with `record` (JSON; empty for none) followed by `states`, the entries
/// [`encode_states`] or [`merged_states`] wrote.
pub(super) fn encode(record: &[u8], states: &[u8]) -> Result<Vec<u8>, RowError> {
    let length = u32::try_from(record.len())
        .map_err(|_| RowError(format!("a record of {} bytes is too long", record.len())))?;
    let mut row = Vec::with_capacity(4 + record.len() + states.len());
    row.extend_from_slice(&length.to_le_bytes());
    row.extend_from_slice(record);
    row.extend_from_slice(states);
    Ok(row)
}

/// The state entries of a row, from (plugin, state JSON) pairs sorted by name.
pub(super) fn encode_states<'s>(
    states: impl IntoIterator<Item = (&'s str, &'s [u8])>,
) -> Result<Vec<u8>, RowError> {
    let mut bytes = Vec::new();
    for (name, state) in states {
        let name_length = u16::try_from(name.len()).map_err(|_| {
            RowError(format!(
                "a plugin name of {} bytes is too long (at most {})",
                name.len(),
                u16::MAX
            ))
        })?;
        let state_length = u32::try_from(state.len()).map_err(|_| {
            RowError(format!(
                "the state of plugin {name} is {} bytes, too long",
                state.len()
            ))
        })?;
        bytes.extend_from_slice(&name_length.to_le_bytes());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(&state_length.to_le_bytes());
        bytes.extend_from_slice(state);
    }
    Ok(bytes)
}

/// The state entries after an event: those of `before` with `changes` applied in order (a
/// state replaces the plugin's, `None` removes it), sorted by name.
pub(super) fn merged_states(
    before: Option<&CustomerRow<'_>>,
    changes: &[(String, Option<RawJson>)],
) -> Result<Vec<u8>, RowError> {
    let mut states: Vec<(&str, &[u8])> =
        before.map(|row| row.states().collect()).unwrap_or_default();
    for (plugin, change) in changes {
        let found = states.iter().position(|(name, _)| name == plugin);
        match (found, change) {
            (Some(at), Some(state)) => states[at].1 = state.get().as_bytes(),
            (Some(at), None) => {
                states.remove(at);
            }
            (None, Some(state)) => states.push((plugin, state.get().as_bytes())),
            (None, None) => {}
        }
    }
    states.sort_unstable_by_key(|(name, _)| *name);
    encode_states(states)
}

/// A cursor over state entries; `at` is the offset in the row, for messages.
struct Entries<'a> {
    rest: &'a [u8],
    at: usize,
}

impl<'a> Entries<'a> {
    fn next_checked(&mut self) -> Result<Option<(&'a str, &'a [u8])>, RowError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let short = |what: &str, needed: usize, left: usize, at: usize| {
            RowError(format!(
                "{what} at byte {at} needs {needed} bytes, but {left} are left"
            ))
        };
        let (name_length, rest) = self
            .rest
            .split_first_chunk::<2>()
            .map(|(length, rest)| (usize::from(u16::from_le_bytes(*length)), rest))
            .ok_or_else(|| short("a state's name length", 2, self.rest.len(), self.at))?;
        let name = rest
            .get(..name_length)
            .ok_or_else(|| short("a plugin name", name_length, rest.len(), self.at + 2))?;
        let name = std::str::from_utf8(name).map_err(|_| {
            RowError(format!(
                "the plugin name at byte {} is not UTF-8",
                self.at + 2
            ))
        })?;
        let state_at = self.at + 2 + name_length;
        let (state_length, rest) = take_u32(&rest[name_length..]).ok_or_else(|| {
            short(
                &format!("the state length of plugin {name}"),
                4,
                rest.len() - name_length,
                state_at,
            )
        })?;
        let state = rest.get(..state_length).ok_or_else(|| {
            RowError(format!(
                "the state of plugin {name} is said to be {state_length} bytes long, but {} \
                 follow",
                rest.len()
            ))
        })?;
        self.rest = &rest[state_length..];
        self.at = state_at + 4 + state_length;
        Ok(Some((name, state)))
    }
}

/// A little-endian u32 length at the start of `bytes`, and what follows it.
fn take_u32(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let (length, rest) = bytes.split_first_chunk::<4>()?;
    Some((usize::try_from(u32::from_le_bytes(*length)).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(text: &str) -> Option<RawJson> {
        Some(RawJson::from_text_unchecked(text))
    }

    fn states_of(row: &[u8]) -> Vec<(String, String)> {
        CustomerRow::parse(row)
            .unwrap()
            .states()
            .map(|(name, state)| (name.to_owned(), String::from_utf8(state.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn a_row_round_trips_its_record_and_states() {
        let states =
            encode_states([("points", br#"{"n":1}"#.as_slice()), ("tiers", b"[]")]).unwrap();
        let row = encode(br#"{"id":"ada"}"#, &states).unwrap();
        let parsed = CustomerRow::parse(&row).unwrap();
        assert_eq!(parsed.record(), Some(br#"{"id":"ada"}"#.as_slice()));
        assert_eq!(parsed.state("points"), Some(br#"{"n":1}"#.as_slice()));
        assert_eq!(parsed.state("tiers"), Some(b"[]".as_slice()));
        assert_eq!(parsed.state("engagement"), None);
        let only_states = encode(b"", &states).unwrap();
        assert_eq!(CustomerRow::parse(&only_states).unwrap().record(), None);
    }

    #[test]
    fn changes_replace_add_and_remove_states_in_name_order() {
        let before = encode(
            b"{}",
            &encode_states([("b", b"1".as_slice()), ("c", b"2")]).unwrap(),
        )
        .unwrap();
        let before = CustomerRow::parse(&before).unwrap();
        let changes = vec![
            ("c".to_owned(), None),
            ("a".to_owned(), state("3")),
            ("b".to_owned(), state("4")),
            ("d".to_owned(), None),
        ];
        let row = encode(b"{}", &merged_states(Some(&before), &changes).unwrap()).unwrap();
        assert_eq!(
            states_of(&row),
            [
                ("a".to_owned(), "3".to_owned()),
                ("b".to_owned(), "4".to_owned())
            ]
        );
        let first = encode(b"{}", &merged_states(None, &changes).unwrap()).unwrap();
        assert_eq!(
            states_of(&first),
            [
                ("a".to_owned(), "3".to_owned()),
                ("b".to_owned(), "4".to_owned())
            ]
        );
    }

    #[test]
    fn a_cut_row_is_refused_with_the_numbers() {
        let row = encode(
            b"{}",
            &encode_states([("points", br#"{"n":1}"#.as_slice())]).unwrap(),
        )
        .unwrap();
        for cut in 0..row.len() {
            let Err(error) = CustomerRow::parse(&row[..cut]) else {
                // A row cut just after its record is a record with no states: still a row.
                assert_eq!(cut, 6, "only the end of the record is a valid cut");
                continue;
            };
            assert!(error.to_string().contains(char::is_numeric), "{error}");
        }
        let error = CustomerRow::parse(&[9, 0, 0, 0, b'{', b'}']).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the record is said to be 9 bytes long, but 2 follow"
        );
    }
}
