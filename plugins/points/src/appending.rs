//! A checkout's change to the state made on the state's text, without parsing it.
//!
//! A checkout of a transaction this plugin has not seen only appends: one id, one points
//! figure, one factor (and one hold, when some transaction is held) go on the end of the
//! columns, and the oldest fall off the front past `remember_transactions`. Parsing every remembered transaction and writing them all
//! back costs ~3,000 wasm instructions a transaction on every checkout; finding the ends of
//! the columns in the text and splicing it costs ~1,200 a transaction (`tally eval` fuel): two
//! byte-by-byte passes over the ids (`find`, then `contains`), the SDK's check that the text
//! ends where its value does, and the copies.
//!
//! It works only on the text exactly as this plugin writes it (serde_json's compact form of
//! [`crate::State`]'s columns, no escapes): anything else — the earlier shape, whitespace,
//! an escaped id, forgetting a rejected transaction — gives `None`, and the caller takes the
//! general path, which parses the state. `tests::appending_matches_the_general_path` holds
//! the two to the same output byte for byte.

use tally_sdk::Decimal;

/// The columns of a state, found in its text.
#[derive(Debug)]
pub(crate) struct ColumnsText<'a> {
    text: &'a str,
    ids: Column,
    points: Column,
    factors: Column,
    /// The `rejected` column, which a state without rejections leaves out.
    rejected: Option<Column>,
    /// The `holds` column, which a state without holds leaves out.
    holds: Option<Column>,
}

/// Where a column's elements are in the text: `start..end` lies between its brackets.
#[derive(Debug, Clone, Copy)]
struct Column {
    start: usize,
    end: usize,
    count: usize,
}

impl<'a> ColumnsText<'a> {
    /// Finds the columns in `text`, or `None` when it is not in the form this plugin writes.
    pub(crate) fn find(text: &'a str) -> Option<ColumnsText<'a>> {
        // With no backslash anywhere no string has an escape, so every string ends at the
        // next quote. (The host only stores state that is JSON, so no string holds a raw
        // control character either.)
        if text.as_bytes().contains(&b'\\') {
            return None;
        }
        let mut at = expect(text, 0, r#"{"ids":"#)?;
        let ids = strings(text, at)?;
        at = expect(text, ids.end + 1, r#","points":"#)?;
        let points = numbers(text, at)?;
        at = expect(text, points.end + 1, r#","factors":"#)?;
        let factors = strings(text, at)?;
        at = factors.end + 1;
        let rejected = match expect(text, at, r#","rejected":"#) {
            Some(after) => {
                let rejected = strings(text, after)?;
                at = rejected.end + 1;
                Some(rejected)
            }
            None => None,
        };
        let holds = match expect(text, at, r#","holds":"#) {
            Some(after) => {
                let holds = holds(text, after)?;
                at = holds.end + 1;
                Some(holds)
            }
            None => None,
        };
        let uneven = points.count != ids.count
            || factors.count != ids.count
            || holds.is_some_and(|holds| holds.count != ids.count);
        if text.get(at..)? != "}" || uneven {
            // Uneven columns are an error, which the general path reports.
            return None;
        }
        Some(ColumnsText {
            text,
            ids,
            points,
            factors,
            rejected,
            holds,
        })
    }

    /// Whether a transaction with this id is remembered; `None` when the id could not be
    /// written without escapes.
    pub(crate) fn contains(&self, id: &str) -> Option<bool> {
        if !is_plain(id) {
            return None;
        }
        Some(string_elements(self.elements(self.ids)).any(|element| element == id))
    }

    /// The state's text with a transaction appended and the oldest forgotten so that at most
    /// `limit` remain; `None` when that would forget a rejected transaction (the general path
    /// rewrites the rejected column) or the id needs escapes. `hold` is the new transaction's
    /// element of the `holds` column as JSON text (a plain string), `None` for `null`; the
    /// column is written when any of its elements is not `null`, as the general path does.
    pub(crate) fn appended(
        &self,
        id: &str,
        points: i64,
        factor: Decimal,
        hold: Option<&str>,
        limit: usize,
    ) -> Option<String> {
        if !is_plain(id) {
            return None;
        }
        let forget = (self.ids.count + 1).saturating_sub(limit);
        if forget > 0 && self.rejected.is_some() {
            return None;
        }
        let ids = after_strings(self.elements(self.ids), forget)?;
        let points_kept = after_numbers(self.elements(self.points), forget)?;
        let factors = after_strings(self.elements(self.factors), forget)?;
        // The rejected column as it is, with the comma and name before it.
        let rejected = match self.rejected {
            Some(rejected) => &self.text[self.factors.end + 1..rejected.end + 1],
            None => "",
        };
        let holds_kept = match self.holds {
            Some(holds) => Some(after_holds(self.elements(holds), forget)?),
            None => None,
        };
        // Every kept hold is `null` when none is a string.
        let any_kept = holds_kept.is_some_and(|kept| kept.contains('"'));

        let mut out = String::with_capacity(self.text.len() + id.len() + 48);
        out.push_str(r#"{"ids":["#);
        push_element(&mut out, ids, &format!("\"{id}\""));
        out.push_str(r#"],"points":["#);
        push_element(&mut out, points_kept, &points.to_string());
        out.push_str(r#"],"factors":["#);
        push_element(&mut out, factors, &format!("\"{factor}\""));
        out.push(']');
        out.push_str(rejected);
        if any_kept || hold.is_some() {
            out.push_str(r#","holds":["#);
            match holds_kept {
                Some(kept) => out.push_str(kept),
                None => {
                    // The state had no holds: one `null` for each transaction kept.
                    let kept = self.ids.count - forget;
                    for index in 0..kept {
                        if index > 0 {
                            out.push(',');
                        }
                        out.push_str("null");
                    }
                }
            }
            let element = hold.unwrap_or("null");
            if out.ends_with('[') {
                out.push_str(element);
            } else {
                out.push(',');
                out.push_str(element);
            }
            out.push(']');
        }
        out.push('}');
        Some(out)
    }

    fn elements(&self, column: Column) -> &'a str {
        &self.text[column.start..column.end]
    }
}

/// The index just past `literal` when the text has it at `at`.
fn expect(text: &str, at: usize, literal: &str) -> Option<usize> {
    text.get(at..)?
        .starts_with(literal)
        .then_some(at + literal.len())
}

/// An array of strings with no escapes starting at `at` (its `[`).
fn strings(text: &str, at: usize) -> Option<Column> {
    let bytes = text.as_bytes();
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    let start = at + 1;
    let mut next = start;
    let mut count = 0;
    if bytes.get(next) == Some(&b']') {
        return Some(Column {
            start,
            end: next,
            count,
        });
    }
    loop {
        if bytes.get(next) != Some(&b'"') {
            return None;
        }
        let close = position(bytes, next + 1, b'"')?;
        count += 1;
        match bytes.get(close + 1) {
            Some(b',') => next = close + 2,
            Some(b']') => {
                return Some(Column {
                    start,
                    end: close + 1,
                    count,
                });
            }
            _ => return None,
        }
    }
}

/// An array of `null`s and strings with no escapes starting at `at` (its `[`).
fn holds(text: &str, at: usize) -> Option<Column> {
    let bytes = text.as_bytes();
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    let start = at + 1;
    let mut next = start;
    let mut count = 0;
    if bytes.get(next) == Some(&b']') {
        return Some(Column {
            start,
            end: next,
            count,
        });
    }
    loop {
        let last = match bytes.get(next) {
            Some(b'"') => position(bytes, next + 1, b'"')?,
            Some(b'n') if text.get(next..next + 4) == Some("null") => next + 3,
            _ => return None,
        };
        count += 1;
        match bytes.get(last + 1) {
            Some(b',') => next = last + 2,
            Some(b']') => {
                return Some(Column {
                    start,
                    end: last + 1,
                    count,
                });
            }
            _ => return None,
        }
    }
}

/// An array of integers starting at `at` (its `[`).
fn numbers(text: &str, at: usize) -> Option<Column> {
    let bytes = text.as_bytes();
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    let start = at + 1;
    let mut commas = 0;
    for (offset, &byte) in bytes.get(start..)?.iter().enumerate() {
        match byte {
            b']' => {
                let count = if offset == 0 { 0 } else { commas + 1 };
                return Some(Column {
                    start,
                    end: start + offset,
                    count,
                });
            }
            b',' => commas += 1,
            b'0'..=b'9' | b'-' => {}
            _ => return None,
        }
    }
    None
}

/// The strings of a column's elements, without their quotes.
fn string_elements(elements: &str) -> impl Iterator<Item = &str> {
    let mut next = 0;
    std::iter::from_fn(move || {
        // Each element is a quote, its text, a quote, and a comma unless it is the last.
        let close = position(elements.as_bytes(), next + 1, b'"')?;
        let element = elements.get(next + 1..close)?;
        next = close + 2;
        Some(element)
    })
}

/// The elements after the first `skip` strings, without the comma before them.
fn after_strings(elements: &str, skip: usize) -> Option<&str> {
    let mut next = 0;
    for _ in 0..skip {
        next = position(elements.as_bytes(), next + 1, b'"')? + 2;
    }
    Some(elements.get(next..).unwrap_or(""))
}

/// The elements of a `holds` column after the first `skip`, without the comma before them.
fn after_holds(elements: &str, skip: usize) -> Option<&str> {
    let bytes = elements.as_bytes();
    let mut next = 0;
    for _ in 0..skip {
        let last = match bytes.get(next)? {
            b'"' => position(bytes, next + 1, b'"')?,
            _ => next + 3,
        };
        next = last + 2;
    }
    Some(elements.get(next..).unwrap_or(""))
}

/// The elements after the first `skip` numbers, without the comma before them.
fn after_numbers(elements: &str, skip: usize) -> Option<&str> {
    let mut next = 0;
    for _ in 0..skip {
        // Forgetting every number leaves none.
        next = position(elements.as_bytes(), next, b',').map_or(elements.len(), |comma| comma + 1);
    }
    elements.get(next..)
}

/// The first `needle` at or after `from`.
///
/// A plain loop: in wasm, `str::find` and `str::split` with a `char` cost ~275 instructions
/// a match (measured with `tally eval`'s fuel), far more than these elements' few bytes.
fn position(bytes: &[u8], from: usize, needle: u8) -> Option<usize> {
    let offset = bytes.get(from..)?.iter().position(|&byte| byte == needle)?;
    Some(from + offset)
}

/// Appends `element` to a column whose elements so far are `kept`.
fn push_element(out: &mut String, kept: &str, element: &str) {
    out.push_str(kept);
    if !kept.is_empty() {
        out.push(',');
    }
    out.push_str(element);
}

/// Whether serde_json writes `text` as a string with no escapes.
fn is_plain(text: &str) -> bool {
    !text
        .bytes()
        .any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}
