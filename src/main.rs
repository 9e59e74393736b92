//! `tally`: the loyalty event host and the tools around it.
//!
//! - `tally serve` runs the host with its embedded redb store (`--demo` sets up a demo tenant).
//! - `tally eval` runs plugins on an event locally, exactly as the host would.
//! - `tally plugin check` says whether the host would accept a module, and why not.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let command = cli::Cli::parse();
    cli::run(command)
}
