//! The redb file with its batch commits' fsync taken off the committing thread.
//!
//! A durable redb commit writes the transaction's pages and header, then calls the backend's
//! `sync_data` once. On the ingest bench that fsync is most of a batch's commit (~1.7 of
//! 2.7 ms), and the writer's committer thread sat idle through it although the next batch was
//! already evaluated and waiting. [`DeferredSyncFile`] lets the committer go on: during a
//! commit made inside [`deferring_syncs`], `sync_data` only records that a sync is owed, and
//! whoever answers the batch's requests calls [`SyncHandle::sync_through`] on another thread
//! to make it durable. Meanwhile the committer writes the next batch's B-tree pages in
//! memory.
//!
//! What keeps this as durable as redb's own commit is one rule: **no byte reaches the file
//! while a sync is owed.** Every `write` and `set_len` first waits for the owed sync (or does
//! it), so the file sees exactly the sequence redb would have made it see — each commit's
//! writes, then its fsync, then the next commit's writes — only the fsync is issued from
//! another thread. redb believes a deferred commit durable when `commit` returns and may then
//! reuse the pages it freed; the rule makes that safe, since those pages can only be
//! rewritten after the commit that freed them is on disk. What changes is visibility: a read
//! may see a batch up to one fsync before its requests are answered. Nothing is acknowledged
//! before it is on disk.
//!
//! A failed sync is sticky: after it, every write and sync fails, so no later commit can be
//! built on data the disk may not hold (after an `fsync` error, Linux may drop the dirty pages
//! and report success next time). The host must then be restarted, and redb recovers the file
//! to its last durable commit.
//!
//! Commits outside [`deferring_syncs`] (creating a tenant, uploading a plugin) sync before
//! they return, as redb's always do.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use ::redb::{BackendError, StorageBackend};

thread_local! {
    /// Set while this thread commits inside [`deferring_syncs`].
    static DEFERRING: Cell<bool> = const { Cell::new(false) };
    /// The sync the last deferred `sync_data` of this thread recorded.
    static LAST_DEFERRED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Runs `commit` with the syncs it asks of any [`DeferredSyncFile`] deferred, and returns
/// its result with the number of the sync it owes (`None` when it asked for none). Pass the
/// number to [`SyncHandle::sync_through`] before telling anyone the commit is durable.
pub fn deferring_syncs<T>(commit: impl FnOnce() -> T) -> (T, Option<u64>) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DEFERRING.with(|deferring| deferring.set(false));
        }
    }
    LAST_DEFERRED.with(|last| last.set(None));
    DEFERRING.with(|deferring| deferring.set(true));
    let reset = Reset;
    let result = commit();
    drop(reset);
    (result, LAST_DEFERRED.with(Cell::take))
}

/// A redb storage backend that defers the syncs of commits made in [`deferring_syncs`].
#[derive(Debug)]
pub struct DeferredSyncFile<B> {
    shared: Arc<Shared<B>>,
}

/// Makes the syncs a [`DeferredSyncFile`] owes happen; cloned freely.
pub struct SyncHandle<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for SyncHandle<B> {
    fn clone(&self) -> Self {
        SyncHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<B> fmt::Debug for SyncHandle<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncHandle").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Shared<B> {
    file: B,
    state: Mutex<SyncState>,
    changed: Condvar,
}

/// Syncs are numbered in the order they are asked for; a sync started after the `n`th was
/// asked for covers every write before it, so `synced >= n` means the `n`th is done.
#[derive(Debug, Default)]
struct SyncState {
    /// The last sync asked for.
    requested: u64,
    /// The last sync known to be done.
    synced: u64,
    /// A thread is syncing the file now.
    syncing: bool,
    /// Why a sync failed; every later operation fails with it.
    failed: Option<String>,
}

impl<B: StorageBackend> DeferredSyncFile<B> {
    /// Wraps `file`; the handle makes its owed syncs happen.
    pub fn new(file: B) -> (DeferredSyncFile<B>, SyncHandle<B>) {
        let shared = Arc::new(Shared {
            file,
            state: Mutex::new(SyncState::default()),
            changed: Condvar::new(),
        });
        (
            DeferredSyncFile {
                shared: shared.clone(),
            },
            SyncHandle { shared },
        )
    }
}

impl<B: StorageBackend> SyncHandle<B> {
    /// Blocks until sync number `sync` (from [`deferring_syncs`]) is done, doing it if no
    /// other thread is; `Err` when it, or any sync before it, failed.
    pub fn sync_through(&self, sync: u64) -> io::Result<()> {
        self.shared.sync_through(sync)
    }
}

impl<B: StorageBackend> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sync_through(&self, sync: u64) -> io::Result<()> {
        let mut state = self.lock();
        loop {
            if let Some(why) = &state.failed {
                return Err(failed(why));
            }
            if state.synced >= sync {
                return Ok(());
            }
            if !state.syncing {
                break;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        // Every write so far happened before this point, so this one sync covers every sync
        // asked for until now.
        let covers = state.requested;
        state.syncing = true;
        drop(state);
        let result = self.file.sync_data();
        let mut state = self.lock();
        state.syncing = false;
        match &result {
            Ok(()) => state.synced = state.synced.max(covers),
            Err(error) => {
                tracing::error!(%error, "the store's file could not be synced; it takes no more writes until the host restarts");
                state.failed = Some(error.to_string());
            }
        }
        self.changed.notify_all();
        drop(state);
        result.map_err(|error| failed(&error.to_string()))
    }

    /// Before anything reaches the file: the sync owed, if any, is done first.
    fn settle(&self) -> io::Result<()> {
        let owed = self.lock().requested;
        self.sync_through(owed)
    }
}

fn failed(why: &str) -> io::Error {
    io::Error::other(format!(
        "an earlier sync of the store's file failed ({why}); restart the host to recover the file"
    ))
}

impl<B: StorageBackend> StorageBackend for DeferredSyncFile<B> {
    fn len(&self) -> io::Result<u64> {
        self.shared.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        // Reads see what was written whether or not it is synced yet.
        self.shared.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.shared.settle()?;
        self.shared.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        let sync = {
            let mut state = self.shared.lock();
            if let Some(why) = &state.failed {
                return Err(failed(why));
            }
            state.requested += 1;
            state.requested
        };
        if DEFERRING.with(Cell::get) {
            LAST_DEFERRED.with(|last| last.set(Some(sync)));
            Ok(())
        } else {
            self.shared.sync_through(sync)
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.shared.settle()?;
        self.shared.file.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        // A closed file owes nothing: whatever was committed is on disk.
        let settled = self.shared.settle();
        let closed = self.shared.file.close();
        settled.and(closed)
    }

    // The locks are the file's own; redb takes them to keep a second process out.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.shared.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.shared.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.shared.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.shared.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.shared.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.shared.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    //! The backend's one rule, checked on a file that records what reaches it.

    use super::*;

    /// What reached the file, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Op {
        Write(u64),
        Sync,
    }

    #[derive(Debug, Default)]
    struct RecordingFile {
        ops: Mutex<Vec<Op>>,
        fail_syncs: std::sync::atomic::AtomicBool,
    }

    impl RecordingFile {
        fn ops(&self) -> Vec<Op> {
            self.ops
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    /// The backend's side of a [`RecordingFile`] (a newtype: redb's trait is foreign).
    #[derive(Debug)]
    struct Recorder(Arc<RecordingFile>);

    impl StorageBackend for Recorder {
        fn len(&self) -> io::Result<u64> {
            Ok(0)
        }
        fn read(&self, _offset: u64, out: &mut [u8]) -> io::Result<()> {
            out.fill(0);
            Ok(())
        }
        fn set_len(&self, _len: u64) -> io::Result<()> {
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            if self.0.fail_syncs.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(io::Error::other("the disk is gone"));
            }
            self.0
                .ops
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Op::Sync);
            Ok(())
        }
        fn write(&self, offset: u64, _data: &[u8]) -> io::Result<()> {
            self.0
                .ops
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Op::Write(offset));
            Ok(())
        }
    }

    fn file() -> (
        Arc<RecordingFile>,
        DeferredSyncFile<Recorder>,
        SyncHandle<Recorder>,
    ) {
        let recording = Arc::new(RecordingFile::default());
        let (file, handle) = DeferredSyncFile::new(Recorder(recording.clone()));
        (recording, file, handle)
    }

    #[test]
    fn a_sync_outside_deferring_syncs_happens_at_once_obeyed() {
        let (recording, file, _handle) = file();
        file.write(0, b"page").expect("write");
        file.sync_data().expect("sync");
        assert_eq!(recording.ops(), [Op::Write(0), Op::Sync]);
    }

    #[test]
    fn a_deferred_sync_happens_when_asked_for_violated() {
        let (recording, file, handle) = file();
        let (written, owed) = deferring_syncs(|| {
            file.write(0, b"page")?;
            file.sync_data()
        });
        written.expect("a deferred sync answers Ok");
        assert_eq!(recording.ops(), [Op::Write(0)], "the sync is not done yet");
        handle
            .sync_through(owed.expect("a sync is owed"))
            .expect("sync");
        assert_eq!(recording.ops(), [Op::Write(0), Op::Sync]);
        handle
            .sync_through(owed.expect("a sync is owed"))
            .expect("sync");
        assert_eq!(recording.ops(), [Op::Write(0), Op::Sync], "done once");
    }

    #[test]
    fn no_write_reaches_the_file_while_a_sync_is_owed_obeyed() {
        let (recording, file, handle) = file();
        let (_, owed) = deferring_syncs(|| {
            file.write(0, b"commit 1")?;
            file.sync_data()
        });
        // The next commit's first write does the owed sync before it.
        file.write(4096, b"commit 2").expect("write");
        assert_eq!(recording.ops(), [Op::Write(0), Op::Sync, Op::Write(4096)]);
        handle
            .sync_through(owed.expect("owed"))
            .expect("already done");
        assert_eq!(recording.ops().len(), 3);
    }

    #[test]
    fn a_sync_on_another_thread_holds_back_the_next_write_obeyed() {
        let (recording, file, handle) = file();
        let (_, owed) = deferring_syncs(|| {
            file.write(0, b"commit 1")?;
            file.sync_data()
        });
        let owed = owed.expect("owed");
        std::thread::scope(|scope| {
            let syncer = scope.spawn(|| handle.sync_through(owed));
            file.write(4096, b"commit 2").expect("write");
            syncer.join().expect("the syncer").expect("synced");
        });
        assert_eq!(recording.ops(), [Op::Write(0), Op::Sync, Op::Write(4096)]);
    }

    #[test]
    fn a_failed_sync_fails_everything_after_it_violated() {
        let (recording, file, handle) = file();
        let (_, owed) = deferring_syncs(|| {
            file.write(0, b"commit 1")?;
            file.sync_data()
        });
        recording
            .fail_syncs
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(handle.sync_through(owed.expect("owed")).is_err());
        recording
            .fail_syncs
            .store(false, std::sync::atomic::Ordering::SeqCst);
        // The disk may have dropped commit 1's pages: nothing may be built on them.
        assert!(file.write(4096, b"commit 2").is_err());
        assert!(file.sync_data().is_err());
        assert!(handle.sync_through(owed.expect("owed")).is_err());
        assert_eq!(recording.ops(), [Op::Write(0)]);
    }
}
