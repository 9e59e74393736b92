//! The command line: one subcommand per file.

mod check;
mod client;
mod eval;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tally: a multi-tenant loyalty event host with WebAssembly rules.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host: the HTTP API with its embedded redb store.
    Serve(serve::ServeArgs),
    /// Run plugins on one event locally and print the decision as JSON.
    Eval(eval::EvalArgs),
    /// Work with plugin modules.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Post a CSV or NDJSON file of events to a running host, in chunks, with progress.
    Import(client::ImportArgs),
    /// Stream a tenant's events, customers or ledger from a running host.
    Export(client::ExportArgs),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print a module's exports, imports, ABI version and size, and why the host would refuse it.
    Check(check::CheckArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Plugin(PluginCommand::Check(args)) => check::run(args),
        Command::Import(args) => client::import(args),
        Command::Export(args) => client::export(args),
    }
}
