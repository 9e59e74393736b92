//! `tally plugin check`.

use std::process::ExitCode;

/// Options of `tally plugin check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

/// Checks a module.
pub fn run(_args: CheckArgs) -> ExitCode {
    ExitCode::FAILURE
}
