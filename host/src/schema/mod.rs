//! Event types: interaction schemas (JSON Schema 2020-12) and the built-in types.
//!
//! An event type is a document as marketing platforms write interaction schemas
//! (Voyado Engage): `{"id": "repair", "displayName": "Repair", "jsonSchema": {...}}`. Its
//! id is the action of the events it types; its schema checks their `data`; properties
//! marked `"showInContactCard": true` (or `"true"`) are shown, under their `displayName`,
//! on the customer's contact card.
//!
//! - [`parse_document`] checks and compiles a tenant's document; [`builtins`] are the types
//!   every tenant has (`checkout`, `point_add`, `opt_in`, ...), written the same way;
//! - [`EventType::validate`] lists every [`Violation`] of some event data, each at a JSON
//!   Pointer into the data (`/items/0/price`);
//! - [`EventTypes`] resolves an action for one tenant (built-in, then the tenant's, then
//!   untyped if allowed); [`SchemaCache`] keeps compiled validators across requests;
//! - [`parse_jsonc`], [`form_to_json`] and [`csv_to_events`] turn the formats senders really
//!   use (JSON with comments, bracket-nested forms, CSV imports) into JSON.
//!
//! This module knows nothing of HTTP or storage: the API layer parses bodies with it and
//! maps [`SchemaError::code`] into its error responses. Nothing here ever fetches a URL: a
//! schema that refers outside itself does not compile.

mod builtins;
mod csv_import;
mod document;
mod error;
mod form;
mod jsonc;
mod registry;

pub use builtins::{BUILTIN_IDS, builtin, builtin_documents, builtins, is_builtin_id};
pub use csv_import::{CsvEvents, CsvRow, csv_to_events};
pub use document::{
    ContactCardField, ContactCardValue, DRAFT_2020_12, EventType, MAX_DISPLAY_NAME_LEN, MAX_ID_LEN,
    document_hash, is_valid_id, parse_document,
};
pub use error::{SchemaError, Violation};
pub use form::{MAX_DEPTH as MAX_FORM_DEPTH, MAX_INDEX as MAX_FORM_INDEX, form_to_json};
pub use jsonc::parse_jsonc;
pub use registry::{EventTypes, Resolved, SchemaCache};
