//! `tally import` and `tally export`: a client of a running host, for files too large for
//! one request.
//!
//! - `tally import FILE` posts a CSV file (Antavo's import format, as `POST
//!   /v1/events/import` takes it) or an NDJSON file (one event a line, as `POST /v1/events`
//!   takes it) in chunks of `--chunk` rows, printing progress and a summary; a file read
//!   again stores nothing twice (a row without an id gets one made from its chunk and row).
//! - `tally export events|customers|ledger` streams `GET /v1/exports/...` to standard output
//!   or `--out FILE`.
//!
//! The host's URL and the tenant's key come from `--url`/`TALLY_URL` and `--key`/`TALLY_KEY`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

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
    /// Rows a request (the host takes at most 1,000).
    #[arg(long, default_value_t = 1000)]
    chunk: usize,
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

/// What an import has done so far.
#[derive(Debug, Default)]
struct Tally {
    read: u64,
    stored: u64,
    replayed: u64,
    failed: u64,
    failures: Vec<String>,
}

/// The failures a summary lists; the rest are counted.
const FAILURES_SHOWN: usize = 20;

pub fn import(args: ImportArgs) -> ExitCode {
    match runtime().and_then(|runtime| runtime.block_on(run_import(&args))) {
        Ok(tally) if tally.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(error) => {
            eprintln!("tally import: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run_import(args: &ImportArgs) -> Result<Tally, String> {
    let file = std::fs::File::open(&args.file)
        .map_err(|error| format!("cannot open {}: {error}", args.file.display()))?;
    let csv = args
        .file
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("csv"));
    let chunk = args.chunk.clamp(1, 1000);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut lines = BufReader::new(file).lines();
    let header = if csv {
        match lines.next() {
            Some(line) => Some(line.map_err(|error| error.to_string())?),
            None => return Ok(tally),
        }
    } else {
        None
    };
    let mut rows: Vec<String> = Vec::with_capacity(chunk);
    let mut first_row = 1_u64;
    loop {
        let line = lines
            .next()
            .transpose()
            .map_err(|error| error.to_string())?;
        if let Some(line) = line {
            if !line.trim().is_empty() {
                rows.push(line);
            }
            if rows.len() < chunk {
                continue;
            }
        }
        if rows.is_empty() {
            break;
        }
        let count = rows.len() as u64;
        let answer = match &header {
            Some(header) => post_csv(&client, &args.connection, header, &rows).await?,
            None => post_ndjson(&client, &args.connection, &rows, first_row).await?,
        };
        count_answer(&mut tally, &answer, first_row);
        tally.read += count;
        first_row += count;
        rows.clear();
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        eprintln!(
            "tally import: {} rows read, {} stored, {} replayed, {} failed ({:.0} rows/s)",
            tally.read,
            tally.stored,
            tally.replayed,
            tally.failed,
            tally.read as f64 / seconds
        );
    }
    for failure in tally.failures.iter().take(FAILURES_SHOWN) {
        eprintln!("  {failure}");
    }
    if tally.failures.len() > FAILURES_SHOWN {
        eprintln!("  ... and {} more", tally.failures.len() - FAILURES_SHOWN);
    }
    println!(
        "{}",
        json!({"read": tally.read, "stored": tally.stored, "replayed": tally.replayed,
               "failed": tally.failed,
               "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0})
    );
    Ok(tally)
}

/// One chunk of a CSV file, with its header, as `POST /v1/events/import` takes it.
async fn post_csv(
    client: &reqwest::Client,
    connection: &Connection,
    header: &str,
    rows: &[String],
) -> Result<Value, String> {
    let mut body = String::with_capacity(
        header.len() + rows.iter().map(String::len).sum::<usize>() + rows.len() + 1,
    );
    body.push_str(header);
    body.push('\n');
    for row in rows {
        body.push_str(row);
        body.push('\n');
    }
    send(
        client
            .post(format!(
                "{}/v1/events/import",
                connection.url.trim_end_matches('/')
            ))
            .bearer_auth(&connection.key)
            .header("content-type", "text/csv")
            .body(body),
    )
    .await
}

/// One chunk of an NDJSON file as `POST /v1/events/batch` takes it; an event without an id
/// gets `import-<the file chunk's SHA-256>-<line>`, so reading the file again is a replay.
async fn post_ndjson(
    client: &reqwest::Client,
    connection: &Connection,
    rows: &[String],
    first_row: u64,
) -> Result<Value, String> {
    let digest = Sha256::digest(rows.join("\n").as_bytes());
    let chunk = hex::encode(&digest[..8]);
    let mut events = Vec::with_capacity(rows.len());
    for (offset, row) in rows.iter().enumerate() {
        let mut event: Value = serde_json::from_str(row).unwrap_or_else(|error| {
            // Sent as it is: the host answers it with its own invalid_json-like refusal.
            json!({"unreadable": error.to_string()})
        });
        if let Value::Object(fields) = &mut event
            && !fields.contains_key("id")
            && !fields.contains_key("unreadable")
        {
            let line = first_row + offset as u64;
            fields.insert("id".to_owned(), json!(format!("import-{chunk}-{line}")));
        }
        events.push(event);
    }
    send(
        client
            .post(format!(
                "{}/v1/events/batch",
                connection.url.trim_end_matches('/')
            ))
            .bearer_auth(&connection.key)
            .json(&events),
    )
    .await
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

fn count_answer(tally: &mut Tally, answer: &Value, first_row: u64) {
    let count = |name: &str| answer[name].as_u64().unwrap_or(0);
    tally.stored += count("stored");
    tally.replayed += count("replayed");
    tally.failed += count("failed");
    let results = answer["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (offset, result) in results.iter().enumerate() {
        if let Some(code) = result["error"]["code"].as_str() {
            tally.failures.push(format!(
                "row {}: {code}: {}",
                first_row + offset as u64,
                result["error"]["message"].as_str().unwrap_or_default()
            ));
        }
    }
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
