//! The one error type of the schema module, and the violation it reports per path.
//!
//! Every variant has a stable machine-readable [`SchemaError::code`] that the API layer
//! puts in its JSON error body; the human message says what is wrong and where.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One way in which event data breaks its event type's schema.
///
/// `path` is a JSON Pointer (RFC 6901) into the event's `data`: `""` is `data` itself,
/// `"/items/0/price"` is the price of the first item. A missing required property is
/// reported at the path it should have had (`"/transaction_id"`), not at its parent, so a
/// client can attach every violation to a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// JSON Pointer into the event data.
    pub path: String,
    /// What is wrong, for a person.
    pub message: String,
    /// The JSON Schema keyword that failed (`type`, `required`, `format`, `pattern`, ...).
    pub keyword: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", display_path(&self.path), self.message)
    }
}

/// Everything that can go wrong in the schema module.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The event-type document itself is wrong (id, displayName, annotations, shape).
    /// `path` is a JSON Pointer into the posted document.
    #[error("invalid event type at {}: {message}", display_path(.path))]
    InvalidEventType {
        /// JSON Pointer into the document.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The `jsonSchema` is not a JSON Schema draft 2020-12 that compiles.
    /// `path` is a JSON Pointer into the posted document (so it starts with `/jsonSchema`).
    #[error("invalid JSON Schema at {}: {message}", display_path(.path))]
    InvalidSchema {
        /// JSON Pointer into the document.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The action has no event type and the tenant does not allow untyped events.
    #[error("{message}")]
    UnknownAction {
        /// The action as sent.
        action: String,
        /// Says what is defined and how to fix it.
        message: String,
    },
    /// Event data breaks its type's schema; every violation is listed.
    #[error("{}", violation_summary(.type_id, .violations))]
    SchemaViolation {
        /// The event type the data was checked against.
        type_id: String,
        /// Every violation, each with its path.
        violations: Vec<Violation>,
    },
    /// Text that should be JSON (comments allowed) is not.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// An `application/x-www-form-urlencoded` body that cannot become JSON.
    #[error("invalid form body: {message}")]
    InvalidForm {
        /// What is wrong, naming the field.
        message: String,
    },
    /// A CSV import that cannot become events.
    #[error("invalid CSV at line {line}: {message}")]
    InvalidCsv {
        /// 1-based line of the file where the problem is.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

impl SchemaError {
    /// The stable machine-readable code of this error, for API error bodies.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidEventType { .. } => "invalid_event_type",
            Self::InvalidSchema { .. } => "invalid_schema",
            Self::UnknownAction { .. } => "unknown_action",
            Self::SchemaViolation { .. } => "schema_violation",
            Self::InvalidJson { .. } => "invalid_json",
            Self::InvalidForm { .. } => "invalid_form",
            Self::InvalidCsv { .. } => "invalid_csv",
        }
    }

    /// The violations of a [`SchemaError::SchemaViolation`]; empty for the other variants.
    #[must_use]
    pub fn violations(&self) -> &[Violation] {
        match self {
            Self::SchemaViolation { violations, .. } => violations,
            _ => &[],
        }
    }

    pub(crate) fn event_type(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidEventType {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn form(message: impl Into<String>) -> Self {
        Self::InvalidForm {
            message: message.into(),
        }
    }

    pub(crate) fn csv(line: u64, message: impl Into<String>) -> Self {
        Self::InvalidCsv {
            line,
            message: message.into(),
        }
    }
}

/// The root pointer `""` reads badly in a sentence; name it instead.
fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "the top level"
    } else {
        path
    }
}

/// A one-line summary that still names every violation (up to a cap, so that an event with
/// thousands of bad items does not make a megabyte message; the full list is in the variant).
fn violation_summary(type_id: &str, violations: &[Violation]) -> String {
    const SHOWN: usize = 10;
    let mut out = format!(
        "event data does not match event type \"{type_id}\" ({} violation{}): ",
        violations.len(),
        if violations.len() == 1 { "" } else { "s" }
    );
    for (i, v) in violations.iter().take(SHOWN).enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&v.to_string());
    }
    if violations.len() > SHOWN {
        out.push_str(&format!("; and {} more", violations.len() - SHOWN));
    }
    out
}

/// Escapes one JSON Pointer reference token (RFC 6901: `~` is `~0`, `/` is `~1`).
pub(crate) fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
