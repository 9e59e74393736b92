//! `tally plugin check`: what a module exports and imports, its ABI version and size, and
//! every reason the host would refuse it, from the same report the host's upload uses.
//!
//! Exit status: 0 when the host would accept it, 1 when it would refuse it, 2 when the file
//! cannot be read or is not WebAssembly at all.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use tally_host::runtime::{Item, Limits, ModuleReport, Runtime};

/// Options of `tally plugin check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The module to check.
    #[arg(value_name = "PLUGIN.wasm")]
    plugin: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `tally plugin check`.
pub fn run(args: CheckArgs) -> ExitCode {
    let path = args.plugin.display();
    let wasm = match fs::read(&args.plugin) {
        Ok(wasm) => wasm,
        Err(error) => {
            eprintln!("tally plugin check: {path}: {error}");
            return ExitCode::from(2);
        }
    };
    let report = Runtime::new(Limits::default()).and_then(|runtime| runtime.inspect(&wasm));
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            eprintln!("{path}: refused ({}): {error}", error.code());
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_else(|error| error.to_string())
        );
    } else {
        print!("{}", describe(&path.to_string(), &report));
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn describe(path: &str, report: &ModuleReport) -> String {
    let verdict = if report.problems.is_empty() {
        "accepted"
    } else {
        "refused"
    };
    let abi = report
        .abi_version
        .map_or_else(|| "not called".to_owned(), |version| version.to_string());
    let mut text = format!(
        "{path}: {verdict}\n  size     {} bytes\n  sha256   {}\n  abi      {abi}\n  memory   {} KiB initial\n",
        report.size,
        report.sha256,
        report.initial_memory_bytes / 1024
    );
    let list = |items: &[Item]| -> String {
        if items.is_empty() {
            return " (none)\n".to_owned();
        }
        items
            .iter()
            .map(|item| match item.module.as_str() {
                "" => format!("\n    {}: {}", item.name, item.ty),
                module => format!("\n    {module}.{}: {}", item.name, item.ty),
            })
            .collect::<String>()
            + "\n"
    };
    text += &format!("  imports{}", list(&report.imports));
    text += &format!("  exports{}", list(&report.exports));
    for problem in &report.problems {
        text += &format!("  problem: {problem}\n");
    }
    text
}
