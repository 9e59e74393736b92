//! The redb event store, behind a domain-level trait.
