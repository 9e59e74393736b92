//! tally-host: the library behind the Tally service.
//!
//! See ARCHITECTURE.md at the repository root for the map of modules and their invariants.
//! Data flows one way: `api` -> `service` -> `pipeline` -> `runtime` + `storage`.

pub mod api;
pub mod auth;
pub mod config;
pub mod domain;
pub mod pipeline;
pub mod runtime;
pub mod schema;
pub mod service;
pub mod storage;
