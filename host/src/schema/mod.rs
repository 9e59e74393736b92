//! Event types: interaction schemas (JSON Schema 2020-12) and the built-in types.
