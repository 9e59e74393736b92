//! What the store keeps of a bulk import job: the file it reads, where reading has got,
//! and what became of the rows so far. The service runs the job
//! (`service/imports.rs`); this is only its record, so that a job survives a restart.

use serde::{Deserialize, Serialize};
use tally_sdk::Timestamp;

/// A bulk import: one uploaded file of events, read a chunk at a time through the writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportJob {
    /// `imp_` and 16 hex digits, the first ten the milliseconds it came in at: ids sort by
    /// age.
    pub id: String,
    /// How the file is read.
    pub format: ImportFormat,
    /// Where the job is.
    pub state: ImportState,
    /// The file's size in bytes.
    pub bytes: u64,
    /// The SHA-256 of the file, hex: rows without an id get one made from it and the row's
    /// number, so the same file imported again stores nothing twice.
    pub sha256: String,
    /// When the file was received.
    pub created_at: Timestamp,
    /// When the job first started reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it ended (done, failed or cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Why it failed, when the file could not be read on (a header without `action`, an
    /// unreadable file); a row that fails is in the row report, not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The tenant asked for it to stop; the runner stops after the chunk in hand.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Where reading has got; moved only after the rows before it were answered.
    #[serde(default)]
    pub progress: ImportProgress,
}

/// How an import's file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportFormat {
    /// RFC 4180 CSV with a header row, as `POST /v1/events/import` takes it (Antavo's import
    /// format).
    Csv,
    /// One JSON event a line, as `POST /v1/events` takes it.
    Ndjson,
}

impl ImportFormat {
    /// The name used in the API and on disk.
    pub fn name(self) -> &'static str {
        match self {
            ImportFormat::Csv => "csv",
            ImportFormat::Ndjson => "ndjson",
        }
    }
}

/// Where an import job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportState {
    /// Received, waiting for the jobs before it.
    Queued,
    /// Being read (or interrupted by a restart, and resumed at the next start).
    Running,
    /// Every row was read; some may have failed (see the row report).
    Done,
    /// The file could not be read on; the rows before stay stored.
    Failed,
    /// Stopped by the tenant; the rows before stay stored.
    Cancelled,
}

impl ImportState {
    /// Whether the job has ended and will not run again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            ImportState::Done | ImportState::Failed | ImportState::Cancelled
        )
    }

    /// The name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            ImportState::Queued => "queued",
            ImportState::Running => "running",
            ImportState::Done => "done",
            ImportState::Failed => "failed",
            ImportState::Cancelled => "cancelled",
        }
    }
}

/// Where reading a file has got: everything before `offset` was read and answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportProgress {
    /// The byte offset of the next row.
    pub offset: u64,
    /// The 1-based line of the file the next row starts on.
    pub line: u64,
    /// Rows read (the header not counted).
    pub rows_read: u64,
    /// Rows stored as new events.
    pub stored: u64,
    /// Rows whose id was stored before (nothing new happened).
    pub replayed: u64,
    /// Rows refused; the first [`IMPORT_ERRORS_KEPT`] are in the row report.
    pub failed: u64,
    /// Time spent reading and storing rows, in milliseconds (not counting time queued or
    /// stopped), for the rate.
    pub active_ms: u64,
}

impl ImportProgress {
    /// Rows a second while the job ran.
    pub fn rate(&self) -> u64 {
        match self.active_ms {
            0 => 0,
            ms => self.rows_read.saturating_mul(1_000) / ms,
        }
    }
}

/// How many failed rows an import's report keeps; the rest are counted only.
pub const IMPORT_ERRORS_KEPT: u64 = 10_000;

/// A row of an import that was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRowError {
    /// The row's number, 1-based, the header not counted.
    pub row: u64,
    /// The line of the file it starts on, 1-based.
    pub line: u64,
    /// The event id the row had or was given, when it got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The stable error code, as a single event's answer would have it.
    pub code: String,
    /// What is wrong.
    pub message: String,
    /// The error's details, as a single event's answer would have them (the schema's
    /// violations with their paths, ...).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}
