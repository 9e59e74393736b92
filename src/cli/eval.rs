//! `tally eval`.

use std::process::ExitCode;

/// Options of `tally eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {}

/// Evaluates an event.
pub fn run(_args: EvalArgs) -> ExitCode {
    ExitCode::FAILURE
}
