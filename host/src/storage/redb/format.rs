//! Which storage format a file is in. A build reads one format, [`FORMAT_VERSION`], and
//! refuses a file of any other before writing to it.

use std::path::Path;

use ::redb::{Builder, ReadableDatabase, ReadableTable, TableError, TableHandle, WriteTransaction};

use super::tables::{META, META_FORMAT};
use crate::storage::StoreError;

/// The storage format this build reads and writes, recorded in `meta.format` (a
/// little-endian `u32`) so that a build never misreads a file of another layout.
pub(super) const FORMAT_VERSION: u32 = 7;

/// What an opened file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Contents {
    /// No table at all: a file just created, which takes [`FORMAT_VERSION`].
    New,
    /// A store of [`FORMAT_VERSION`].
    Current,
}

/// Refuses an existing file of another format without writing a byte to it: a read-only
/// look at `meta.format`, before the store opens the file for writing (redb writes to a file
/// when it opens and closes it for writing, even when nothing is committed).
///
/// A file redb cannot open read-only (there is none yet, it is empty, another process holds
/// it, it is not a redb file, or a crash left it for redb to repair) is left to the opening
/// that follows: that reports why, or repairs the file and checks its format with
/// [`check_in`] before the store writes anything of its own.
pub(super) fn refuse_other(path: &Path, cache_bytes: usize) -> Result<(), StoreError> {
    let Ok(db) = Builder::new()
        .set_cache_size(cache_bytes)
        .open_read_only(path)
    else {
        return Ok(());
    };
    let txn = db.begin_read()?;
    let has_tables =
        txn.list_tables()?.next().is_some() || txn.list_multimap_tables()?.next().is_some();
    let format = match txn.open_table(META) {
        Ok(meta) => meta.get(META_FORMAT)?.map(|bytes| bytes.value().to_vec()),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(error.into()),
    };
    check(path, format.as_deref(), has_tables).map(drop)
}

/// What the file `txn` writes to holds; an error for a file of another format, after which
/// `txn` must not commit. Writes nothing itself (`meta` is opened only when it exists).
pub(super) fn check_in(path: &Path, txn: &WriteTransaction) -> Result<Contents, StoreError> {
    let (mut has_tables, mut has_meta) = (false, false);
    for table in txn.list_tables()? {
        has_tables = true;
        has_meta |= table.name() == META.name();
    }
    has_tables |= txn.list_multimap_tables()?.next().is_some();
    let format = if has_meta {
        let meta = txn.open_table(META)?;
        meta.get(META_FORMAT)?.map(|bytes| bytes.value().to_vec())
    } else {
        None
    };
    check(path, format.as_deref(), has_tables)
}

/// Records [`FORMAT_VERSION`] in a new file's `meta`.
pub(super) fn record(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?
        .insert(META_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
    Ok(())
}

/// What a file whose `meta.format` row is `format` and that holds tables or not is: a file
/// with no table is new; one with tables is of this build's format or refused, with
/// [`StoreError::UnsupportedFormat`], whether it names another format or none.
fn check(path: &Path, format: Option<&[u8]>, has_tables: bool) -> Result<Contents, StoreError> {
    let found = match format {
        None if !has_tables => return Ok(Contents::New),
        None => None,
        Some(bytes) => Some(read_u32(bytes).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "meta.format of {} is {} bytes long, not 4",
                path.display(),
                bytes.len()
            ))
        })?),
    };
    if found == Some(FORMAT_VERSION) {
        return Ok(Contents::Current);
    }
    Err(StoreError::UnsupportedFormat {
        path: path.to_owned(),
        found,
        expected: FORMAT_VERSION,
    })
}

fn read_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}
