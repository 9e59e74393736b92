//! Each tenant's bulk import jobs, and each job's report of refused rows.

use ::redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::codec::{decode, encode};
use super::read::require_tenant;
use super::tables::{IMPORT_ERRORS, IMPORTS, TENANTS};
use crate::domain::imports::{IMPORT_ERRORS_KEPT, ImportJob, ImportRowError};
use crate::storage::StoreError;

/// Adds a job, as [`Store::create_import`](crate::storage::Store::create_import).
pub(super) fn create(
    txn: &WriteTransaction,
    tenant: &str,
    job: &ImportJob,
) -> Result<(), StoreError> {
    require_tenant(&txn.open_table(TENANTS)?, tenant)?;
    let mut table = txn.open_table(IMPORTS)?;
    if table.get((tenant, job.id.as_str()))?.is_some() {
        return Err(StoreError::Conflict(format!(
            "tenant {tenant} has an import {} already",
            job.id
        )));
    }
    let bytes = encode(job, || format!("import {} of tenant {tenant}", job.id))?;
    table.insert((tenant, job.id.as_str()), bytes.as_slice())?;
    Ok(())
}

/// Changes a job and adds to its row report, as
/// [`Store::update_import`](crate::storage::Store::update_import).
pub(super) fn update(
    txn: &WriteTransaction,
    tenant: &str,
    id: &str,
    change: &mut dyn FnMut(&mut ImportJob),
    errors: &[ImportRowError],
) -> Result<ImportJob, StoreError> {
    let mut table = txn.open_table(IMPORTS)?;
    let mut job: ImportJob = match table.get((tenant, id))? {
        Some(bytes) => decode(bytes.value(), || format!("import {id} of tenant {tenant}"))?,
        None => {
            return Err(StoreError::NotFound(format!(
                "tenant {tenant} has no import {id}"
            )));
        }
    };
    let failed_before = job.progress.failed;
    change(&mut job);
    let bytes = encode(&job, || format!("import {id} of tenant {tenant}"))?;
    table.insert((tenant, id), bytes.as_slice())?;
    // The report keeps the first rows refused: `failed_before` of them are in it already
    // (or as many as it keeps).
    let room = IMPORT_ERRORS_KEPT.saturating_sub(failed_before);
    if room > 0 && !errors.is_empty() {
        let mut report = txn.open_table(IMPORT_ERRORS)?;
        for error in errors
            .iter()
            .take(usize::try_from(room).unwrap_or(usize::MAX))
        {
            let bytes = encode(error, || {
                format!("row {} of import {id} of tenant {tenant}", error.row)
            })?;
            report.insert((tenant, id, error.row), bytes.as_slice())?;
        }
    }
    Ok(job)
}

/// One job.
pub(super) fn get(db: &Database, tenant: &str, id: &str) -> Result<Option<ImportJob>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(IMPORTS)?;
    table
        .get((tenant, id))?
        .map(|bytes| decode(bytes.value(), || format!("import {id} of tenant {tenant}")))
        .transpose()
}

/// The jobs of `tenant`, or of every tenant, by tenant and id.
pub(super) fn all(
    db: &Database,
    tenant: Option<&str>,
) -> Result<Vec<(String, ImportJob)>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(IMPORTS)?;
    let rows = match tenant {
        Some(tenant) => table.range::<(&str, &str)>((tenant, "")..)?,
        None => table.range::<(&str, &str)>(..)?,
    };
    let mut jobs = Vec::new();
    for row in rows {
        let (key, value) = row?;
        let (owner, id) = key.value();
        if tenant.is_some_and(|tenant| tenant != owner) {
            break;
        }
        let job = decode(value.value(), || format!("import {id} of tenant {owner}"))?;
        jobs.push((owner.to_owned(), job));
    }
    Ok(jobs)
}

/// Up to `limit` refused rows of a job after row `after`, in row order.
pub(super) fn errors(
    db: &Database,
    tenant: &str,
    id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<ImportRowError>, StoreError> {
    let txn = db.begin_read()?;
    let report = txn.open_table(IMPORT_ERRORS)?;
    let Some(start) = after.checked_add(1) else {
        return Ok(Vec::new());
    };
    let mut errors = Vec::new();
    for row in report
        .range((tenant, id, start)..=(tenant, id, u64::MAX))?
        .take(limit)
    {
        let (key, value) = row?;
        let number = key.value().2;
        errors.push(decode(value.value(), || {
            format!("row {number} of import {id} of tenant {tenant}")
        })?);
    }
    Ok(errors)
}
