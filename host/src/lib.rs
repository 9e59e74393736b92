//! tally-host: the library behind the Tally service.
//!
//! See ARCHITECTURE.md at the repository root for the map of modules and their invariants.

pub mod pipeline;
pub mod runtime;
pub mod schema;
pub mod storage;
