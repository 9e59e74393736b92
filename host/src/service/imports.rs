//! Bulk imports as background jobs: a file of events (CSV or NDJSON) is written to disk as
//! it arrives, then read a chunk of rows at a time through the writer, the path every posted
//! event takes, while the tenant polls its progress.
//!
//! A job survives a restart: its record in the store says how far reading has got (the byte
//! offset of the next row, moved only once the rows before it were answered), and the next
//! start resumes there. Rows read again after a restart are not applied twice: every row has
//! an event id (its own, or `import-<file hash>-<row>`), so a row stored before the restart
//! is a replay. Such a row is counted as `replayed`, not `stored`.
//!
//! Jobs run one at a time, oldest first (an interrupted one before any other), and yield to
//! live traffic: a chunk is queued only while a quarter of the writer's queue stays free.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Service;
use super::clock::system_now;
use super::error::{ErrorKind, ServiceError};
use super::events::Origin;
use super::ingest::{Pace, Queued};
use crate::auth::random_hex;
use crate::domain::imports::{
    ImportFormat, ImportJob, ImportProgress, ImportRowError, ImportState,
};
use crate::schema::CsvEvents;
use crate::storage::{Store, TenantRecord};

/// Rows read, checked and queued together; the job's progress is stored after each.
const CHUNK_ROWS: usize = 1_000;

/// How long the runner waits for a new job before looking again anyway.
const IDLE: Duration = Duration::from_secs(5);

/// Each tenant's import jobs, and the files they read.
pub struct Imports {
    store: Arc<dyn Store>,
    /// Where uploaded files wait for their job: `<data dir>/imports`.
    dir: PathBuf,
    /// The largest file taken, in bytes.
    max_bytes: u64,
    /// Wakes the runner when a job is added or cancelled.
    wake: tokio::sync::Notify,
}

impl Imports {
    /// The imports kept in `store`, with their files in `dir`; a file left half-received by
    /// a stop is removed.
    pub fn new(
        store: Arc<dyn Store>,
        dir: PathBuf,
        max_bytes: u64,
    ) -> Result<Imports, ServiceError> {
        std::fs::create_dir_all(&dir).map_err(|error| {
            ServiceError::internal(format!("cannot create {}: {error}", dir.display()))
        })?;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry
                    .path()
                    .extension()
                    .is_some_and(|extension| extension == "part")
                {
                    // Never acknowledged, so nobody waits for it.
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(Imports {
            store,
            dir,
            max_bytes,
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Starts receiving a file for `tenant`: write its bytes to the upload as they arrive,
    /// then [`Upload::finish`] it.
    pub async fn upload(
        &self,
        tenant: &str,
        format: ImportFormat,
    ) -> Result<Upload<'_>, ServiceError> {
        // The time first, so that ids sort in the order the files came in.
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let id = format!(
            "imp_{:010x}{}",
            millis & 0xff_ffff_ffff,
            random_hex(3).map_err(|error| ServiceError::internal(error.to_string()))?
        );
        let partial = self.dir.join(format!("{id}.part"));
        let file = tokio::fs::File::create(&partial).await.map_err(|error| {
            ServiceError::internal(format!("cannot create {}: {error}", partial.display()))
        })?;
        Ok(Upload {
            imports: self,
            tenant: tenant.to_owned(),
            id,
            format,
            file: Some(tokio::io::BufWriter::with_capacity(1 << 20, file)),
            partial,
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    /// One job, or `404`.
    pub fn get(&self, tenant: &str, id: &str) -> Result<ImportJob, ServiceError> {
        self.store.import(tenant, id)?.ok_or_else(|| not_found(id))
    }

    /// The tenant's jobs, newest first.
    pub fn list(&self, tenant: &str) -> Result<Vec<ImportJob>, ServiceError> {
        // The store answers by id, and ids sort by age.
        Ok(self
            .store
            .imports(Some(tenant))?
            .into_iter()
            .rev()
            .map(|(_, job)| job)
            .collect())
    }

    /// Stops a job: a queued one at once, a running one after the chunk in hand (its
    /// `cancel_requested` says so until then). The rows stored before stay stored.
    /// `409 import_finished` when it has ended.
    pub fn cancel(&self, tenant: &str, id: &str) -> Result<ImportJob, ServiceError> {
        let mut finished = None;
        let job = self.store.update_import(
            tenant,
            id,
            &mut |job| match job.state {
                state if state.is_finished() => finished = Some(state),
                ImportState::Queued => {
                    job.state = ImportState::Cancelled;
                    job.finished_at = Some(system_now());
                }
                _ => job.cancel_requested = true,
            },
            &[],
        )?;
        if let Some(state) = finished {
            return Err(ServiceError::new(
                ErrorKind::Conflict,
                "import_finished",
                format!(
                    "import {id} has ended ({}); there is nothing to cancel",
                    state.name()
                ),
            ));
        }
        if job.state == ImportState::Cancelled {
            self.remove_file(&job);
        }
        self.wake.notify_one();
        Ok(job)
    }

    /// Up to `limit` refused rows of a job after row `after`.
    pub fn errors(
        &self,
        tenant: &str,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ImportRowError>, ServiceError> {
        self.get(tenant, id)?;
        Ok(self.store.import_errors(tenant, id, after, limit)?)
    }

    fn file_of(&self, job: &ImportJob) -> PathBuf {
        self.dir.join(format!("{}.{}", job.id, job.format.name()))
    }

    fn remove_file(&self, job: &ImportJob) {
        let path = self.file_of(job);
        if let Err(error) = std::fs::remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), %error, "cannot remove an import's file");
        }
    }
}

impl std::fmt::Debug for Imports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imports")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// A file being received for an import. Dropped before [`Upload::finish`], it leaves
/// nothing behind.
#[derive(Debug)]
pub struct Upload<'a> {
    imports: &'a Imports,
    tenant: String,
    id: String,
    format: ImportFormat,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    partial: PathBuf,
    hasher: Sha256,
    bytes: u64,
}

impl Upload<'_> {
    /// Appends the next bytes of the file; `413 payload_too_large` past the host's limit.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ServiceError> {
        self.bytes = self.bytes.saturating_add(chunk.len() as u64);
        if self.bytes > self.imports.max_bytes {
            return Err(ServiceError::new(
                ErrorKind::TooLarge,
                "payload_too_large",
                format!(
                    "the file is over this host's limit of {} bytes for an import (--max-import-bytes)",
                    self.imports.max_bytes
                ),
            ));
        }
        self.hasher.update(chunk);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| ServiceError::internal("the upload has ended"))?;
        file.write_all(chunk).await.map_err(write_failed)
    }

    /// Makes the file durable and queues its job: once this answers, the import survives a
    /// restart.
    pub async fn finish(mut self) -> Result<ImportJob, ServiceError> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| ServiceError::internal("the upload has ended"))?;
        file.flush().await.map_err(write_failed)?;
        let file = file.into_inner();
        file.sync_all().await.map_err(write_failed)?;
        drop(file);
        let job = ImportJob {
            id: self.id.clone(),
            format: self.format,
            state: ImportState::Queued,
            bytes: self.bytes,
            sha256: hex::encode(std::mem::take(&mut self.hasher).finalize()),
            created_at: system_now(),
            started_at: None,
            finished_at: None,
            error: None,
            cancel_requested: false,
            progress: ImportProgress {
                line: 1,
                ..ImportProgress::default()
            },
        };
        let path = self.imports.file_of(&job);
        tokio::fs::rename(&self.partial, &path)
            .await
            .map_err(write_failed)?;
        sync_dir(&self.imports.dir).await?;
        let (store, tenant, stored) =
            (self.imports.store.clone(), self.tenant.clone(), job.clone());
        let created = tokio::task::spawn_blocking(move || store.create_import(&tenant, &stored))
            .await
            .map_err(|error| {
                ServiceError::internal(format!("storing an import failed: {error}"))
            })?;
        if let Err(error) = created {
            let _ = std::fs::remove_file(&path);
            return Err(error.into());
        }
        self.imports.wake.notify_one();
        Ok(job)
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Not finished: a broken-off or refused upload.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

fn write_failed(error: std::io::Error) -> ServiceError {
    ServiceError::new(
        ErrorKind::Unavailable,
        "storage_unavailable",
        format!("the file could not be written to disk: {error}"),
    )
}

/// Makes a rename in `dir` durable.
async fn sync_dir(dir: &Path) -> Result<(), ServiceError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|error| ServiceError::internal(error.to_string()))?
        .map_err(write_failed)
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found(format!("no import {id}"))
}

/// Runs the host's import jobs, one at a time, for as long as the host runs: an interrupted
/// one first, then the oldest queued.
pub async fn run_imports(service: Arc<Service>) {
    loop {
        let store = service.imports.store.clone();
        let next = tokio::task::spawn_blocking(move || next_job(store.as_ref())).await;
        match next {
            Ok(Ok(Some((tenant, job)))) => run_job(&service, &tenant, job).await,
            Ok(Ok(None)) => {
                let _ = tokio::time::timeout(IDLE, service.imports.wake.notified()).await;
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot read the import jobs");
                tokio::time::sleep(IDLE).await;
            }
            Err(error) => {
                tracing::error!(%error, "reading the import jobs panicked");
                tokio::time::sleep(IDLE).await;
            }
        }
    }
}

/// The job to run next: an interrupted one, else the oldest queued.
fn next_job(store: &dyn Store) -> Result<Option<(String, ImportJob)>, ServiceError> {
    Ok(store
        .imports(None)?
        .into_iter()
        .filter(|(_, job)| !job.state.is_finished())
        .min_by(|(_, a), (_, b)| {
            (a.state != ImportState::Running, &a.id).cmp(&(b.state != ImportState::Running, &b.id))
        }))
}

/// Runs one job to its end (or until the host stops), storing its progress after every
/// chunk. Reading the next chunk overlaps with the writer storing the one before.
async fn run_job(service: &Arc<Service>, tenant: &str, job: ImportJob) {
    let imports = &service.imports;
    let id = job.id.clone();
    let outcome = run_chunks(service, tenant, job).await;
    let ended = match outcome {
        Ok(Ended::Done) => Some((ImportState::Done, None)),
        Ok(Ended::Cancelled) => Some((ImportState::Cancelled, None)),
        Ok(Ended::Gone) => None,
        Err(error) => Some((ImportState::Failed, Some(error))),
    };
    let Some((state, error)) = ended else { return };
    let store = imports.store.clone();
    let (owner, job_id) = (tenant.to_owned(), id.clone());
    let finished = tokio::task::spawn_blocking(move || {
        store.update_import(
            &owner,
            &job_id,
            &mut |job| {
                job.state = state;
                job.finished_at = Some(system_now());
                job.cancel_requested = false;
                job.error.clone_from(&error);
            },
            &[],
        )
    })
    .await;
    match finished {
        Ok(Ok(job)) => {
            tracing::info!(tenant, import = %id, state = state.name(), rows = job.progress.rows_read, "import ended");
            imports.remove_file(&job);
        }
        Ok(Err(error)) => tracing::error!(tenant, import = %id, %error, "cannot end an import"),
        Err(error) => tracing::error!(tenant, import = %id, %error, "ending an import panicked"),
    }
}

/// How a job's run ended.
enum Ended {
    Done,
    Cancelled,
    /// The job or its tenant is gone: nothing to record.
    Gone,
}

async fn run_chunks(service: &Arc<Service>, tenant: &str, job: ImportJob) -> Result<Ended, String> {
    let imports = &service.imports;
    let path = imports.file_of(&job);
    let store = imports.store.clone();
    let job = blocking({
        let (tenant, id) = (tenant.to_owned(), job.id.clone());
        move || {
            store.update_import(
                &tenant,
                &id,
                &mut |job| {
                    if job.state == ImportState::Queued {
                        job.state = ImportState::Running;
                        job.started_at = Some(system_now());
                    }
                },
                &[],
            )
        }
    })
    .await
    .map_err(|error| error.to_string())?;
    let mut rows = blocking({
        let job = job.clone();
        move || Rows::open(&path, &job)
    })
    .await?;
    let origin = Origin {
        source: "import".to_owned(),
        ip_address: None,
        user_agent: None,
    };
    let mut pending: Option<(Chunk, Vec<Queued>)> = None;
    let mut since = Instant::now();
    loop {
        // Read and check the next chunk while the writer stores the one before.
        let next = blocking({
            let (service, tenant, id, origin) = (
                service.clone(),
                tenant.to_owned(),
                job.id.clone(),
                origin.clone(),
            );
            move || {
                let store = &service.imports.store;
                let (Some(job), Some(tenant)) =
                    (store.import(&tenant, &id)?, store.tenant(&tenant)?)
                else {
                    return Ok(Next::Gone);
                };
                if job.cancel_requested {
                    return Ok(Next::Cancel);
                }
                let mut chunk = rows
                    .next_chunk(CHUNK_ROWS)
                    .map_err(ServiceError::internal)?;
                let prepared = prepare(&service, &tenant, &mut chunk, &origin);
                Ok::<_, ServiceError>(Next::Chunk(Box::new((rows, chunk, prepared))))
            }
        })
        .await?;
        let (returned, chunk, prepared) = match next {
            Next::Chunk(read) => *read,
            stop @ (Next::Gone | Next::Cancel) => {
                if let Some((chunk, queued)) = pending.take() {
                    checkpoint(service, tenant, &job.id, chunk, queued, &mut since).await?;
                }
                return Ok(match stop {
                    Next::Gone => Ended::Gone,
                    _ => Ended::Cancelled,
                });
            }
        };
        rows = returned;
        let queued = service.ingest.queue(prepared, Pace::LeaveRoom).await;
        if let Some((before, before_queued)) = pending.take() {
            checkpoint(service, tenant, &job.id, before, before_queued, &mut since).await?;
        }
        if chunk.end {
            checkpoint(service, tenant, &job.id, chunk, queued, &mut since).await?;
            return Ok(Ended::Done);
        }
        pending = Some((chunk, queued));
    }
}

/// The file read on, a chunk of its rows, and their events checked.
type ReadChunk = (
    Rows,
    Chunk,
    Vec<Result<crate::domain::NewEvent, ServiceError>>,
);

/// A row's line, and its event or what is wrong with it.
type RowRead = (u64, Result<Value, ServiceError>);

/// What the runner does next.
enum Next {
    Chunk(Box<ReadChunk>),
    Cancel,
    Gone,
}

/// Checks a chunk's events against the tenant's types, as posted events are.
fn prepare(
    service: &Service,
    tenant: &TenantRecord,
    chunk: &mut Chunk,
    origin: &Origin,
) -> Vec<Result<crate::domain::NewEvent, ServiceError>> {
    // The events are taken out of the rows (only their numbers, lines and ids are kept on).
    let inputs: Vec<Value> = chunk
        .rows
        .iter_mut()
        .map(|row| row.event.as_mut().map(std::mem::take).unwrap_or_default())
        .collect();
    match service.ingest.prepare_events(tenant, inputs, origin) {
        Ok(prepared) => prepared
            .into_iter()
            .zip(&chunk.rows)
            .map(|(prepared, row)| match &row.event {
                // The row's own error, not the envelope check's of a null.
                Err(error) => Err(error.clone()),
                Ok(_) => prepared,
            })
            .collect(),
        Err(error) => chunk.rows.iter().map(|_| Err(error.clone())).collect(),
    }
}

/// Waits for a chunk's answers and stores where the job has got, with the rows refused.
async fn checkpoint(
    service: &Arc<Service>,
    tenant: &str,
    id: &str,
    chunk: Chunk,
    queued: Vec<Queued>,
    since: &mut Instant,
) -> Result<(), String> {
    let answers = service.ingest.answers(queued).await;
    let (mut stored, mut replayed) = (0_u64, 0_u64);
    let mut errors = Vec::new();
    for (row, answer) in chunk.rows.iter().zip(answers) {
        match answer {
            Ok(ingested) if ingested.replayed => replayed += 1,
            Ok(_) => stored += 1,
            Err(error) => errors.push(ImportRowError {
                row: row.number,
                line: row.line,
                id: row.id.clone(),
                code: error.code.to_owned(),
                message: error.message,
                details: error.details,
            }),
        }
    }
    let elapsed = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
    *since = Instant::now();
    let store = service.imports.store.clone();
    let (tenant, id) = (tenant.to_owned(), id.to_owned());
    let read = chunk.rows.len() as u64;
    let (offset, line) = chunk.next;
    let end = chunk.end;
    blocking(move || {
        let failed = errors.len() as u64;
        store.update_import(
            &tenant,
            &id,
            &mut |job| {
                let progress = &mut job.progress;
                progress.offset = offset;
                progress.line = line;
                progress.rows_read += read;
                progress.stored += stored;
                progress.replayed += replayed;
                progress.failed += failed;
                progress.active_ms = progress.active_ms.saturating_add(elapsed);
                if end {
                    job.state = ImportState::Done;
                    job.finished_at = Some(system_now());
                }
            },
            &errors,
        )
    })
    .await
    .map(|_| ())
    .map_err(|error| error.to_string())
}

async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|error| error.to_string()),
        Err(error) => Err(format!("an import task panicked: {error}")),
    }
}

/// Rows read from a file, with where the next one starts.
#[derive(Debug)]
struct Chunk {
    rows: Vec<Row>,
    /// The byte offset and line of the row after them.
    next: (u64, u64),
    /// No rows are left after these.
    end: bool,
}

/// One row of an import's file.
#[derive(Debug)]
struct Row {
    /// 1-based, the header not counted.
    number: u64,
    line: u64,
    /// The event id, the row's own or the one made for it.
    id: Option<String>,
    /// The event (taken out when the chunk is checked), or what is wrong with the row.
    event: Result<Value, ServiceError>,
}

/// An import's file, read a row at a time from where the job has got.
#[derive(Debug)]
struct Rows {
    format: Format,
    /// Rows read so far, the header not counted.
    number: u64,
    /// The start of the file's hash, for the ids of rows without one.
    file: String,
}

#[derive(Debug)]
enum Format {
    Csv(CsvEvents<BufReader<std::fs::File>>),
    Ndjson {
        reader: BufReader<std::fs::File>,
        offset: u64,
        line: u64,
        buffer: Vec<u8>,
    },
}

impl Rows {
    /// Opens `path` at the row `job` has got to. A CSV file whose header is wrong cannot be
    /// read at all: the job fails with why.
    fn open(path: &Path, job: &ImportJob) -> Result<Rows, String> {
        let file = std::fs::File::open(path)
            .map_err(|error| format!("the import's file cannot be opened: {error}"))?;
        let progress = &job.progress;
        let format = match job.format {
            ImportFormat::Csv => {
                let mut csv = CsvEvents::new(BufReader::with_capacity(1 << 16, file))
                    .map_err(|error| error.to_string())?;
                if progress.offset > 0 {
                    csv.seek((progress.offset, progress.line))
                        .map_err(|error| error.to_string())?;
                }
                Format::Csv(csv)
            }
            ImportFormat::Ndjson => {
                let mut reader = BufReader::with_capacity(1 << 16, file);
                reader
                    .seek(SeekFrom::Start(progress.offset))
                    .map_err(|error| format!("the import's file cannot be read: {error}"))?;
                Format::Ndjson {
                    reader,
                    offset: progress.offset,
                    line: progress.line.max(1),
                    buffer: Vec::new(),
                }
            }
        };
        Ok(Rows {
            format,
            number: progress.rows_read,
            file: job.sha256.chars().take(16).collect(),
        })
    }

    /// Up to `max` rows; fewer only at the end of the file.
    fn next_chunk(&mut self, max: usize) -> Result<Chunk, String> {
        let mut rows = Vec::with_capacity(max);
        let mut end = false;
        while rows.len() < max {
            let Some((line, event)) = self.next_row()? else {
                end = true;
                break;
            };
            self.number += 1;
            let event = event.map(|event| self.with_id(event));
            let id = event
                .as_ref()
                .ok()
                .and_then(|event| event.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            rows.push(Row {
                number: self.number,
                line,
                id,
                event,
            });
        }
        Ok(Chunk {
            rows,
            next: self.position(),
            end,
        })
    }

    /// A row without an id gets one made from the file and the row, so that importing the
    /// same file again (or reading a row again after a restart) stores nothing twice. The
    /// same ids `POST /v1/events/import` makes.
    fn with_id(&self, mut event: Value) -> Value {
        if let Value::Object(fields) = &mut event
            && !fields.contains_key("id")
        {
            fields.insert(
                "id".to_owned(),
                json!(format!("import-{}-{}", self.file, self.number)),
            );
        }
        event
    }

    fn position(&self) -> (u64, u64) {
        match &self.format {
            Format::Csv(csv) => csv.position(),
            Format::Ndjson { offset, line, .. } => (*offset, *line),
        }
    }

    /// The next row and the line it starts on; `None` at the end. An error is the file's
    /// (it cannot be read on), a row's own is in the row.
    fn next_row(&mut self) -> Result<Option<RowRead>, String> {
        match &mut self.format {
            Format::Csv(csv) => Ok(csv
                .next_event()
                .map(|row| (row.line, row.event.map_err(ServiceError::from)))),
            Format::Ndjson {
                reader,
                offset,
                line,
                buffer,
            } => loop {
                buffer.clear();
                let read = reader
                    .read_until(b'\n', buffer)
                    .map_err(|error| format!("the import's file cannot be read: {error}"))?;
                if read == 0 {
                    return Ok(None);
                }
                let this_line = *line;
                *offset += read as u64;
                *line += 1;
                let text = buffer.trim_ascii();
                if text.is_empty() {
                    continue;
                }
                return Ok(Some((this_line, ndjson_event(text, this_line))));
            },
        }
    }
}

/// One NDJSON line as an event object.
fn ndjson_event(text: &[u8], line: u64) -> Result<Value, ServiceError> {
    let invalid = |message: String| {
        ServiceError::new(ErrorKind::BadRequest, "invalid_json", message)
            .with_details(json!({"line": line}))
    };
    match serde_json::from_slice::<Value>(text) {
        Ok(event @ Value::Object(_)) => Ok(event),
        Ok(_) => Err(invalid(format!(
            "line {line} is not a JSON object (one event a line)"
        ))),
        Err(error) => Err(invalid(format!(
            "line {line} is not JSON: {error} (one event a line)"
        ))),
    }
}
