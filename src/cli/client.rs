//! `tally import` and `tally export`: a client of a running host, for files too large for
//! one request.
//!
//! - `tally import FILE` uploads a CSV file (Antavo's import format, as `POST
//!   /v1/events/import` takes it) or an NDJSON file (one event a line, as `POST /v1/events`
//!   takes it) as an import job (`POST /v1/imports`), streamed from the file, then shows the
//!   job's progress until it ends, the first rows refused, and a summary; a file imported
//!   again stores nothing twice (a row without an id gets one made from the file and row).
//! - `tally export events|customers|ledger` streams `GET /v1/exports/...` to standard output
//!   or `--out FILE`.
//!
//! The host's URL and the tenant's key come from `--url`/`TALLY_URL` and `--key`/`TALLY_KEY`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where the host is and whose key to use.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// The host's base URL.
    #[arg(long, env = "TALLY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The tenant's API key.
    #[arg(long, env = "TALLY_KEY", hide_env_values = true)]
    key: String,
}

/// Options of `tally import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A `.csv` file, or `.ndjson`/`.jsonl` (one event a line).
    file: PathBuf,
    #[command(flatten)]
    connection: Connection,
}

/// Options of `tally export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// `events`, `customers` or `ledger`.
    what: String,
    /// `ndjson` (the default) or `csv`.
    #[arg(long)]
    format: Option<String>,
    /// Go on after this id (the last one an export that broke off wrote).
    #[arg(long)]
    after: Option<String>,
    /// Events at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Events before this time.
    #[arg(long)]
    to: Option<String>,
    /// Events of these actions, comma-separated.
    #[arg(long)]
    action: Option<String>,
    /// One customer's events.
    #[arg(long)]
    customer: Option<String>,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    connection: Connection,
}

/// The failed rows a summary lists; the rest are in the job's report.
const FAILURES_SHOWN: usize = 20;

/// How often the job's progress is read.
const POLL_EVERY: Duration = Duration::from_millis(500);

pub fn import(args: ImportArgs) -> ExitCode {
    match runtime().and_then(|runtime| runtime.block_on(run_import(&args))) {
        Ok(job) if job["state"] == "done" && job["rows"]["failed"] == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(error) => {
            eprintln!("tally import: {error}");
            ExitCode::from(2)
        }
    }
}

/// Uploads the file as an import job, follows its progress on standard error until it
/// ends, lists the first rows refused, and prints the summary on standard output.
async fn run_import(args: &ImportArgs) -> Result<Value, String> {
    let connection = &args.connection;
    let base = connection.url.trim_end_matches('/');
    let file = tokio::fs::File::open(&args.file)
        .await
        .map_err(|error| format!("cannot open {}: {error}", args.file.display()))?;
    let csv = args
        .file
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("csv"));
    let client = reqwest::Client::new();
    let started = Instant::now();
    // Streamed from the file: a file of millions of rows is never held whole.
    let job = send(
        client
            .post(format!("{base}/v1/imports"))
            .bearer_auth(&connection.key)
            .header(
                "content-type",
                if csv {
                    "text/csv"
                } else {
                    "application/x-ndjson"
                },
            )
            .body(reqwest::Body::from(file)),
    )
    .await?;
    let id = job["id"]
        .as_str()
        .ok_or_else(|| format!("the host answered no job id: {job}"))?
        .to_owned();
    eprintln!(
        "tally import: {} uploaded as import {id}",
        args.file.display()
    );
    let job = loop {
        let job = send(
            client
                .get(format!("{base}/v1/imports/{id}"))
                .bearer_auth(&connection.key),
        )
        .await?;
        eprint!("\r{}", progress_line(&job));
        if matches!(job["state"].as_str(), Some("done" | "failed" | "cancelled")) {
            eprintln!();
            break job;
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    if let Some(error) = job["error"].as_str() {
        eprintln!(
            "tally import: the import {}: {error}",
            job["state"].as_str().unwrap_or("ended")
        );
    }
    let failed = job["rows"]["failed"].as_u64().unwrap_or(0);
    if failed > 0 {
        let report = send(
            client
                .get(format!("{base}/v1/imports/{id}/errors"))
                .query(&[("limit", FAILURES_SHOWN)])
                .bearer_auth(&connection.key),
        )
        .await?;
        for row in report["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            eprintln!(
                "  row {} (line {}): {}: {}",
                row["row"],
                row["line"],
                row["code"].as_str().unwrap_or_default(),
                row["message"].as_str().unwrap_or_default()
            );
        }
        if failed > FAILURES_SHOWN as u64 {
            eprintln!(
                "  ... and {} more: GET /v1/imports/{id}/errors",
                failed - FAILURES_SHOWN as u64
            );
        }
    }
    let rows = &job["rows"];
    println!(
        "{}",
        json!({"id": id, "state": job["state"], "read": rows["read"], "stored": rows["stored"],
               "replayed": rows["replayed"], "failed": rows["failed"],
               "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0})
    );
    Ok(job)
}

/// `[#######.............]  35%  350000 rows read, 349998 stored, ... (41000 rows/s)`
fn progress_line(job: &Value) -> String {
    let (read, total) = (
        job["bytes_read"].as_u64().unwrap_or(0),
        job["bytes"].as_u64().unwrap_or(0).max(1),
    );
    let done = usize::try_from(read.saturating_mul(20) / total)
        .unwrap_or(20)
        .min(20);
    let rows = &job["rows"];
    format!(
        "[{}{}] {:>3}%  {} rows read, {} stored, {} replayed, {} failed ({} rows/s)  ",
        "#".repeat(done),
        ".".repeat(20 - done),
        read.saturating_mul(100) / total,
        rows["read"],
        rows["stored"],
        rows["replayed"],
        rows["failed"],
        job["rate"]
    )
}

async fn send(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request.send().await.map_err(|error| error.to_string())?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|error| format!("the host's answer ({status}) is not JSON: {error}"))?;
    if !status.is_success() {
        return Err(format!(
            "the host refused the request ({status}): {}",
            body["error"]["message"].as_str().unwrap_or("no message")
        ));
    }
    Ok(body)
}

pub fn export(args: ExportArgs) -> ExitCode {
    match runtime().and_then(|runtime| runtime.block_on(run_export(&args))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tally export: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run_export(args: &ExportArgs) -> Result<(), String> {
    let mut query: Vec<(&str, &str)> = Vec::new();
    let options = [
        ("format", &args.format),
        ("after", &args.after),
        ("from", &args.from),
        ("to", &args.to),
        ("action", &args.action),
        ("customer", &args.customer),
    ];
    for (name, value) in options {
        if let Some(value) = value {
            query.push((name, value));
        }
    }
    let url = format!(
        "{}/v1/exports/{}",
        args.connection.url.trim_end_matches('/'),
        args.what
    );
    let mut response = reqwest::Client::new()
        .get(url)
        .bearer_auth(&args.connection.key)
        .query(&query)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        return Err(format!(
            "the host refused the export ({status}): {}",
            body["error"]["message"].as_str().unwrap_or("no message")
        ));
    }
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    while let Some(chunk) = response.chunk().await.map_err(|error| {
        format!("the export broke off ({error}); go on with --after and the last id written")
    })? {
        out.write_all(&chunk).map_err(|error| error.to_string())?;
    }
    out.flush().map_err(|error| error.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start: {error}"))
}
