//! `tally`: the loyalty event host and the tools around it.
//!
//! - `tally serve` runs the host with its embedded redb store (`--demo` sets up a demo tenant).
//! - `tally eval` runs plugins on an event locally, exactly as the host would.
//! - `tally plugin check` says whether the host would accept a module, and why not.
//! - `tally import` and `tally export` move large files of events in and out of a running host.

mod cli;

use std::process::ExitCode;

use clap::Parser;

// The host allocates and frees many small JSON values per event on several threads (request
// parsing, plugin inputs and outputs, storage records); glibc's malloc spent ~15% of the
// writer thread in `_int_malloc`/`malloc_consolidate` under load. mimalloc's thread-local
// free lists make that a small fraction (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let command = cli::Cli::parse();
    cli::run(command)
}

/// Turns transparent huge pages off for this process.
///
/// Where the kernel's THP mode is `always` (Debian's default), a first touch of memory that
/// mimalloc has given back to the kernel (it purges pages idle for a second) or of a fresh
/// wasm instance's heap faults in and zeroes a whole 2 MiB page. Under ingest load that is
/// ~9% of the host's CPU (`clear_page_erms`, half of it on the writer threads), and the
/// stalls fall on the committer in the middle of a batch; with THP off the ingest bench
/// reads ~6% more events/s and a lower p99 (docs/performance.md). The flag is the
/// process's own (`PR_SET_THP_DISABLE`), so the machine's setting is left alone; failing to
/// set it costs only that speed, so its result is ignored.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory of ours.
    let _ignored = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}
