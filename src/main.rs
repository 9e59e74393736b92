//! `tally`: the loyalty event host and the tools around it.
//!
//! - `tally serve` runs the host with its embedded redb store (`--demo` sets up a demo tenant).
//! - `tally eval` runs plugins on an event locally, exactly as the host would.
//! - `tally plugin check` says whether the host would accept a module, and why not.

mod cli;

use std::process::ExitCode;

use clap::Parser;

// The host allocates and frees many small JSON values per event on several threads (request
// parsing, plugin inputs and outputs, storage records); glibc's malloc spent ~15% of the
// writer thread in `_int_malloc`/`malloc_consolidate` under load. mimalloc's thread-local
// free lists make that a small fraction (figures in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = cli::Cli::parse();
    cli::run(command)
}
