//! `tally serve`: runs the host. (Built in issue #3.)

use std::process::ExitCode;

/// Options of `tally serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Runs the host until Ctrl-C.
pub fn run(_args: ServeArgs) -> ExitCode {
    eprintln!("tally serve is not built yet");
    ExitCode::FAILURE
}
