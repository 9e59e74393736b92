//! CSV imports of events, as Antavo's Imports module takes them: one event per row, one
//! event attribute per column.
//!
//! Columns:
//! - `_id` (Antavo's name) or `id`: the event id, which makes the import idempotent;
//! - `action`: required, the event's action;
//! - `customer`: the customer's id. Antavo's own example (opt-in events) has no customer
//!   column and identifies the customer by `email`, so a file must have a `customer` or an
//!   `email` column; when a row's `customer` is empty or missing, its `email` is the
//!   customer (and stays in `data` too, where the opt-in type expects it);
//! - `timestamp`: the event's time, when given;
//! - every other column goes into the event's `data`, as a string (CSV has no types); a
//!   column name may nest with the form syntax (`items[0][price]`);
//! - an empty cell means "not given" and is left out of `data`, so an optional field that
//!   one row leaves blank does not fail a format check.
//!
//! Whitespace around fields is trimmed (documents that show the format often pad lines with
//! trailing spaces); quoted fields may hold commas, newlines and doubled quotes (RFC 4180).
//! Errors give the 1-based line of the file.

use super::SchemaError;
use super::form::{Segment, Tree, parse_key};
use serde_json::{Map, Value};

/// One column's role.
#[derive(Debug)]
enum Column {
    Id,
    Action,
    Customer,
    Timestamp,
    /// Goes into `data` at this path; `email` is also remembered as a customer fallback.
    Data(Vec<Segment>),
}

/// Turns a CSV import (header row first) into events:
/// `{"id"?, "action", "customer", "timestamp"?, "data": {...}}`.
///
/// # Errors
/// [`SchemaError::InvalidCsv`] with the line: an empty file, a header without `action` or
/// without `customer`/`email`, an empty or repeated column name, a row with the wrong
/// number of fields, a row without an action or a customer, or cells that conflict.
pub fn csv_to_events(text: &str) -> Result<Vec<Value>, SchemaError> {
    let mut rows = CsvEvents::new(text.as_bytes())?;
    let mut events = Vec::new();
    while let Some(row) = rows.next_event() {
        events.push(row.event?);
    }
    Ok(events)
}

/// A CSV import read a row at a time from any reader, for files too large to hold: each
/// row is an event, or the error that row has (a bad row does not stop the rows after it).
/// Over a file it can stop at a row's [`CsvEvents::position`] and start there again with
/// [`CsvEvents::seek`].
#[derive(Debug)]
pub struct CsvEvents<R> {
    reader: csv::Reader<R>,
    columns: Vec<Column>,
    email_column: Option<usize>,
    record: csv::StringRecord,
}

/// One row of a CSV import.
#[derive(Debug)]
pub struct CsvRow {
    /// The 1-based line of the file the row starts on.
    pub line: u64,
    /// The event, or what is wrong with the row.
    pub event: Result<Value, SchemaError>,
}

impl<R: std::io::Read> CsvEvents<R> {
    /// Reads the header row.
    ///
    /// # Errors
    /// [`SchemaError::InvalidCsv`]: an empty file, a header without `action` or without
    /// `customer`/`email`, an empty or repeated column name.
    pub fn new(input: R) -> Result<CsvEvents<R>, SchemaError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .flexible(false)
            .from_reader(input);
        let headers = reader.headers().map_err(csv_error)?.clone();
        if headers.is_empty() || headers.iter().all(str::is_empty) {
            return Err(SchemaError::csv(
                1,
                "the file is empty: the first line must name the columns (e.g. `_id,action,customer`)",
            ));
        }
        let columns = columns_of(&headers)?;
        let email_column = headers.iter().position(|h| h == "email");
        Ok(CsvEvents {
            reader,
            columns,
            email_column,
            record: csv::StringRecord::new(),
        })
    }

    /// The next row; `None` at the end of the file. A reader that fails (not a row that is
    /// wrong) is a row whose error has line 0 and after which nothing is read.
    pub fn next_event(&mut self) -> Option<CsvRow> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, csv::Position::line);
                Some(CsvRow {
                    line,
                    event: self.event_of_record(line),
                })
            }
            Err(error) => {
                let line = error.position().map_or(0, csv::Position::line);
                let event = Err(csv_error(error));
                Some(CsvRow { line, event })
            }
        }
    }

    /// Where the next row starts: give it to [`CsvEvents::seek`] to read on from here.
    pub fn position(&self) -> (u64, u64) {
        let position = self.reader.position();
        (position.byte(), position.line())
    }

    fn event_of_record(&self, line: u64) -> Result<Value, SchemaError> {
        let record = &self.record;
        let mut event = Map::new();
        let mut data = Tree::default();
        for (column, cell) in self.columns.iter().zip(record.iter()) {
            if cell.is_empty() {
                continue;
            }
            let cell = cell.to_owned();
            match column {
                Column::Id => {
                    event.insert("id".to_owned(), Value::String(cell));
                }
                Column::Action => {
                    event.insert("action".to_owned(), Value::String(cell));
                }
                Column::Customer => {
                    event.insert("customer".to_owned(), Value::String(cell));
                }
                Column::Timestamp => {
                    event.insert("timestamp".to_owned(), Value::String(cell));
                }
                Column::Data(path) => data
                    .insert(path, cell)
                    .map_err(|m| SchemaError::csv(line, m))?,
            }
        }
        if !event.contains_key("action") {
            return Err(SchemaError::csv(line, "the `action` of this row is empty"));
        }
        if !event.contains_key("customer") {
            let email = self
                .email_column
                .and_then(|i| record.get(i))
                .filter(|e| !e.is_empty());
            let Some(email) = email else {
                return Err(SchemaError::csv(
                    line,
                    "this row names no customer: its `customer` and `email` are both empty",
                ));
            };
            event.insert("customer".to_owned(), Value::String(email.to_owned()));
        }
        event.insert(
            "data".to_owned(),
            data.into_value().map_err(|m| SchemaError::csv(line, m))?,
        );
        Ok(Value::Object(event))
    }
}

impl<R: std::io::Read + std::io::Seek> CsvEvents<R> {
    /// Goes to a row's start, as [`CsvEvents::position`] gave it (byte offset and line);
    /// the header is kept.
    ///
    /// # Errors
    /// The reader's error.
    pub fn seek(&mut self, (byte, line): (u64, u64)) -> Result<(), SchemaError> {
        let mut position = csv::Position::new();
        position.set_byte(byte).set_line(line);
        self.reader.seek(position).map_err(csv_error)
    }
}

fn columns_of(headers: &csv::StringRecord) -> Result<Vec<Column>, SchemaError> {
    let mut columns = Vec::with_capacity(headers.len());
    for (i, name) in headers.iter().enumerate() {
        if name.is_empty() {
            return Err(SchemaError::csv(1, format!("column {} has no name", i + 1)));
        }
        let same = |other: &str| {
            other == name || (matches!(name, "_id" | "id") && matches!(other, "_id" | "id"))
        };
        if headers.iter().take(i).any(same) {
            return Err(SchemaError::csv(
                1,
                format!("column `{name}` (column {}) is named twice", i + 1),
            ));
        }
        columns.push(match name {
            "_id" | "id" => Column::Id,
            "action" => Column::Action,
            "customer" => Column::Customer,
            "timestamp" => Column::Timestamp,
            other => Column::Data(parse_key(other).map_err(|m| SchemaError::csv(1, m))?),
        });
    }
    if !headers.iter().any(|h| h == "action") {
        return Err(SchemaError::csv(
            1,
            "no `action` column: every row needs the action it records",
        ));
    }
    if !headers.iter().any(|h| h == "customer" || h == "email") {
        return Err(SchemaError::csv(
            1,
            "no `customer` or `email` column: every row needs the customer it belongs to (`_id` is the event's id, not the customer's)",
        ));
    }
    Ok(columns)
}

fn csv_error(err: csv::Error) -> SchemaError {
    let line = err.position().map_or(0, csv::Position::line);
    let message = match err.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "this row has {len} field{} but the header names {expected_len} column{} (a field holding a comma must be quoted: \"a, b\")",
            if *len == 1 { "" } else { "s" },
            if *expected_len == 1 { "" } else { "s" },
        ),
        csv::ErrorKind::Utf8 { .. } => "the text is not valid UTF-8".to_owned(),
        _ => err.to_string(),
    };
    SchemaError::csv(line, message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoted_fields_obeyed() {
        let text = "id,action,customer,note,qty\n\
                    e1,review,c1,\"great, really \"\"great\"\"\",2\n\
                    e2,review,c2,\"two\nlines\",\n";
        let events = csv_to_events(text).unwrap();
        assert_eq!(
            events,
            vec![
                json!({"id": "e1", "action": "review", "customer": "c1",
                       "data": {"note": "great, really \"great\"", "qty": "2"}}),
                json!({"id": "e2", "action": "review", "customer": "c2",
                       "data": {"note": "two\nlines"}}),
            ]
        );
    }

    #[test]
    fn reading_on_from_a_position_obeyed() {
        let text = "action,customer,note\nopt_in,c1,\"a\nb\"\nopt_in,c2,x\nopt_in,c3,y\n";
        let mut rows = CsvEvents::new(std::io::Cursor::new(text.as_bytes())).unwrap();
        let first = rows.next_event().unwrap();
        assert_eq!(first.line, 2);
        let position = rows.position();
        // A reader opened again on the file, moved to where the first stopped.
        let mut again = CsvEvents::new(std::io::Cursor::new(text.as_bytes())).unwrap();
        again.seek(position).unwrap();
        let second = again.next_event().unwrap();
        assert_eq!(second.line, 4, "the quoted field took two lines");
        assert_eq!(second.event.unwrap()["customer"], "c2");
        assert_eq!(again.next_event().unwrap().event.unwrap()["customer"], "c3");
        assert!(again.next_event().is_none());
    }

    #[test]
    fn a_bad_row_does_not_stop_the_rows_after_it_obeyed() {
        let text = "action,customer\nopt_in,c1,extra\nopt_in,c2\n";
        let mut rows = CsvEvents::new(text.as_bytes()).unwrap();
        assert!(rows.next_event().unwrap().event.is_err());
        assert_eq!(rows.next_event().unwrap().event.unwrap()["customer"], "c2");
    }

    #[test]
    fn nested_columns_and_timestamp_obeyed() {
        let text = "action,customer,timestamp,items[0][price],items[1][price]\n\
                    purchase,c1,2026-01-02T03:04:05Z,10,20\n";
        assert_eq!(
            csv_to_events(text).unwrap(),
            vec![json!({"action": "purchase", "customer": "c1",
                        "timestamp": "2026-01-02T03:04:05Z",
                        "data": {"items": [{"price": "10"}, {"price": "20"}]}})]
        );
    }

    #[test]
    fn customer_column_wins_over_email_obeyed() {
        let text = "action,customer,email\nopt_in,c9,a@b.example\nopt_in,,x@y.example\n";
        let events = csv_to_events(text).unwrap();
        assert_eq!(events[0]["customer"], "c9");
        assert_eq!(events[1]["customer"], "x@y.example");
        assert_eq!(events[1]["data"]["email"], "x@y.example");
    }

    #[test]
    fn header_only_obeyed() {
        assert_eq!(
            csv_to_events("action,customer\n").unwrap(),
            Vec::<Value>::new()
        );
    }

    fn err(text: &str) -> (u64, String) {
        match csv_to_events(text).unwrap_err() {
            SchemaError::InvalidCsv { line, message } => (line, message),
            other => panic!("wrong error: {other:?}"),
        }
    }

    #[test]
    fn wrong_field_count_violated() {
        let (line, message) = err("action,customer\nopt_in,c1\nopt_in,c2,extra\n");
        assert_eq!(line, 3);
        assert!(
            message.contains("3 fields but the header names 2"),
            "{message}"
        );
    }

    #[test]
    fn missing_columns_violated() {
        let (line, message) = err("_id,email\n1,a@b\n");
        assert_eq!(line, 1);
        assert!(message.contains("no `action` column"), "{message}");
        let (_, message) = err("_id,action,first_name\n1,opt_in,Jo\n");
        assert!(
            message.contains("no `customer` or `email` column"),
            "{message}"
        );
    }

    #[test]
    fn empty_action_or_customer_violated() {
        let (line, message) = err("action,email\nopt_in,a@b\n,a@b\n");
        assert_eq!(line, 3);
        assert!(message.contains("`action`"), "{message}");
        let (line, message) = err("action,email\nopt_in,\n");
        assert_eq!(line, 2);
        assert!(message.contains("names no customer"), "{message}");
    }

    #[test]
    fn bad_header_violated() {
        assert!(err("action,customer,action\n").1.contains("named twice"));
        assert!(err("_id,id,action,customer\n").1.contains("named twice"));
        assert!(err("action,,customer\n").1.contains("column 2 has no name"));
        assert!(err("").1.contains("the file is empty"));
        assert!(err("action,customer,a[\n").1.contains("never closed"));
    }

    #[test]
    fn conflicting_cells_violated() {
        let (line, message) = err("action,customer,a,a[b]\nx,c,1,2\n");
        assert_eq!(line, 2);
        assert!(
            message.contains("both as a value and as a group"),
            "{message}"
        );
    }
}
