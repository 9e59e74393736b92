//! The redb file, with its fsync run on a thread of its own.
//!
//! redb commits by writing every page the transaction changed and the header that points at
//! them, then syncing the file once. Under load that sync is most of a batch's commit: the
//! dirty pages are scattered over the file, and the disk takes milliseconds to make a few
//! hundred random 4 KiB writes durable. While it waits, the committer can do nothing, though
//! the next batch is evaluated and waiting.
//!
//! [`SyncedFile`] lets the next transaction do its in-memory work during that wait. Its
//! `sync_data` hands the sync to its thread and returns, so redb's commit returns as soon as
//! the pages are written: the transaction is visible, not yet durable. Every later write to
//! the file (and every change of its length) first waits for that sync to finish. So what
//! reaches the disk, and in which order, is exactly what redb's own synchronous commit
//! produces: the pages and header of commit N are durable before any byte of commit N+1 is
//! written, and the pages N+1 may reuse (those freed by N) are no longer referenced by the
//! header on disk. What moves is only redb's work that touches no file: the B-tree inserts,
//! page copies and allocation of the next batch.
//!
//! A caller that must not answer before the data is on disk takes a [`CommitTicket`] after its
//! commit ([`SyncHandle::ticket`]: the last sync requested) and waits on it
//! ([`SyncHandle::wait`]). A sync that fails is kept: every later
//! write, sync and wait fails with it, because after a failed fsync the kernel may have
//! dropped the pages, and nothing written after them can be trusted to mean anything. The
//! host then stops accepting writes until it is restarted and redb recovers the file from
//! what is on disk.

use std::fs::File;
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use ::redb::StorageBackend;
use ::redb::backends::FileBackend;

use super::CommitTicket;

/// What the sync thread and the file's users share.
#[derive(Debug, Default)]
struct SyncState {
    /// Syncs asked for, numbered from 1.
    requested: u64,
    /// The highest-numbered sync that has finished.
    synced: u64,
    /// Why a sync failed; once set, never cleared.
    failed: Option<String>,
    /// Set when the file closes: the thread finishes what was requested and stops.
    closing: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<SyncState>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until every sync requested so far has finished; the error of a failed one.
    fn wait_idle(&self) -> std::io::Result<()> {
        let state = self.lock();
        let state = self
            .changed
            .wait_while(state, |state| {
                state.failed.is_none() && state.synced < state.requested
            })
            .unwrap_or_else(PoisonError::into_inner);
        match &state.failed {
            Some(why) => Err(sync_failed(why)),
            None => Ok(()),
        }
    }
}

fn sync_failed(why: &str) -> std::io::Error {
    std::io::Error::other(format!(
        "an earlier fsync of the database failed ({why}); restart the host to recover the \
         file from what is on disk"
    ))
}

/// A handle on the file's syncs, kept by the store after redb owns the file.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    shared: Arc<Shared>,
}

impl SyncHandle {
    /// A ticket for everything written so far: take it after a commit returns.
    pub fn ticket(&self) -> CommitTicket {
        CommitTicket(self.shared.lock().requested)
    }

    /// Waits until what `ticket` covers is on disk.
    pub fn wait(&self, ticket: CommitTicket) -> std::io::Result<()> {
        let state = self.shared.lock();
        let state = self
            .shared
            .changed
            .wait_while(state, |state| {
                state.failed.is_none() && state.synced < ticket.0
            })
            .unwrap_or_else(PoisonError::into_inner);
        match &state.failed {
            Some(why) => Err(sync_failed(why)),
            None => Ok(()),
        }
    }
}

/// A redb backend (the database file: [`FileBackend`]) with `sync_data` run by a thread of
/// its own (see the module doc).
#[derive(Debug)]
pub struct SyncedFile<B: StorageBackend = FileBackend> {
    file: Arc<B>,
    shared: Arc<Shared>,
}

impl SyncedFile {
    /// The database file `file`, with its sync thread.
    pub fn open(file: File) -> std::io::Result<(SyncedFile, SyncHandle)> {
        SyncedFile::new(FileBackend::new(file).map_err(std::io::Error::other)?)
    }
}

impl<B: StorageBackend> SyncedFile<B> {
    /// Wraps `file` and starts its sync thread.
    pub fn new(file: B) -> std::io::Result<(SyncedFile<B>, SyncHandle)> {
        let file = Arc::new(file);
        let shared = Arc::new(Shared::default());
        {
            let (file, shared) = (file.clone(), shared.clone());
            std::thread::Builder::new()
                .name("tally-fsync".to_owned())
                .spawn(move || run_syncs(file.as_ref(), &shared))?;
        }
        let handle = SyncHandle {
            shared: shared.clone(),
        };
        Ok((SyncedFile { file, shared }, handle))
    }
}

/// Syncs the file whenever a sync is asked for, one at a time; several asked for while one
/// runs are served by the next.
fn run_syncs(file: &impl StorageBackend, shared: &Shared) {
    loop {
        let target = {
            let state = shared.lock();
            let state = shared
                .changed
                .wait_while(state, |state| {
                    state.synced == state.requested && !state.closing
                })
                .unwrap_or_else(PoisonError::into_inner);
            if state.synced == state.requested || state.failed.is_some() {
                // Closing with nothing left to sync, or nothing can be synced any more.
                return;
            }
            state.requested
        };
        let outcome = file.sync_data();
        let mut state = shared.lock();
        match outcome {
            Ok(()) => state.synced = target,
            Err(error) => {
                tracing::error!(%error, "fsync of the database failed; the host stops writing");
                state.failed = Some(error.to_string());
            }
        }
        shared.changed.notify_all();
    }
}

impl<B: StorageBackend> StorageBackend for SyncedFile<B> {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        // Reads need no ordering: what redb reads was written before, and the OS page cache
        // serves it whether or not it is durable yet.
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.shared.wait_idle()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let mut state = self.shared.lock();
        if let Some(why) = &state.failed {
            return Err(sync_failed(why));
        }
        state.requested += 1;
        self.shared.changed.notify_all();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.shared.wait_idle()?;
        self.file.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        {
            let mut state = self.shared.lock();
            state.closing = true;
            self.shared.changed.notify_all();
        }
        self.shared.wait_idle()?;
        self.file.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, ::redb::BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, ::redb::BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), ::redb::BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), ::redb::BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), ::redb::BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, ::redb::BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    //! The ordering [`SyncedFile`] promises, on a backend whose sync the test holds open.

    use std::sync::mpsc;
    use std::time::Duration;

    use ::redb::backends::InMemoryBackend;

    use super::*;

    /// A backend that logs what reaches it, and whose syncs wait for the test's go-ahead.
    #[derive(Debug)]
    struct Gated {
        memory: InMemoryBackend,
        log: Mutex<Vec<&'static str>>,
        gate: Mutex<mpsc::Receiver<Result<(), String>>>,
    }

    impl Gated {
        fn new() -> (Gated, mpsc::Sender<Result<(), String>>) {
            let (open, gate) = mpsc::channel();
            let memory = InMemoryBackend::new();
            memory.set_len(4096).expect("room");
            let gated = Gated {
                memory,
                log: Mutex::new(Vec::new()),
                gate: Mutex::new(gate),
            };
            (gated, open)
        }

        fn note(&self, what: &'static str) {
            self.log.lock().expect("not poisoned").push(what);
        }
    }

    impl StorageBackend for Gated {
        fn len(&self) -> std::io::Result<u64> {
            self.memory.len()
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.note("read");
            self.memory.read(offset, out)
        }

        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.note("set_len");
            self.memory.set_len(len)
        }

        fn sync_data(&self) -> std::io::Result<()> {
            self.note("sync begins");
            let outcome = self
                .gate
                .lock()
                .expect("not poisoned")
                .recv()
                .unwrap_or(Ok(()));
            self.note("sync ends");
            outcome.map_err(std::io::Error::other)
        }

        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.note("write");
            self.memory.write(offset, data)
        }
    }

    fn log_of(file: &SyncedFile<Gated>) -> Vec<&'static str> {
        file.file.log.lock().expect("not poisoned").clone()
    }

    /// Long enough for a thread that does not wait to have done its write.
    const A_WHILE: Duration = Duration::from_millis(50);

    #[test]
    fn a_write_after_a_sync_waits_until_the_sync_ends_obeyed() {
        let (gated, open) = Gated::new();
        let (file, _syncs) = SyncedFile::new(gated).expect("a sync thread");
        let file = Arc::new(file);
        file.sync_data().expect("the sync is handed over");
        let writer = {
            let file = file.clone();
            std::thread::spawn(move || file.write(0, b"next commit"))
        };
        std::thread::sleep(A_WHILE);
        assert!(!log_of(&file).contains(&"write"), "{:?}", log_of(&file));
        open.send(Ok(())).expect("the sync waits");
        writer.join().expect("no panic").expect("the write");
        assert_eq!(log_of(&file), ["sync begins", "sync ends", "write"]);
    }

    #[test]
    fn a_read_during_a_sync_does_not_wait() {
        let (gated, open) = Gated::new();
        let (file, _syncs) = SyncedFile::new(gated).expect("a sync thread");
        file.sync_data().expect("the sync is handed over");
        let mut page = [0; 16];
        file.read(0, &mut page).expect("the read");
        assert!(!log_of(&file).contains(&"sync ends"));
        open.send(Ok(())).expect("the sync waits");
    }

    #[test]
    fn a_ticket_is_durable_once_its_sync_ends_obeyed() {
        let (gated, open) = Gated::new();
        let (file, syncs) = SyncedFile::new(gated).expect("a sync thread");
        let before = syncs.ticket();
        syncs.wait(before).expect("nothing to wait for");
        file.sync_data().expect("the sync is handed over");
        let ticket = syncs.ticket();
        assert!(ticket > before);
        let (done, waited) = mpsc::channel();
        let waiter = {
            let syncs = syncs.clone();
            std::thread::spawn(move || {
                let outcome = syncs.wait(ticket);
                let _ = done.send(());
                outcome
            })
        };
        assert!(
            waited.recv_timeout(A_WHILE).is_err(),
            "waited before the sync ended"
        );
        open.send(Ok(())).expect("the sync waits");
        waiter.join().expect("no panic").expect("durable");
        assert_eq!(log_of(&file), ["sync begins", "sync ends"]);
    }

    #[test]
    fn a_failed_sync_fails_every_later_wait_write_and_sync_violated() {
        let (gated, open) = Gated::new();
        let (file, syncs) = SyncedFile::new(gated).expect("a sync thread");
        file.sync_data().expect("the sync is handed over");
        let ticket = syncs.ticket();
        open.send(Err("the disk went away".to_owned()))
            .expect("the sync waits");
        let failed = syncs.wait(ticket).expect_err("not durable");
        assert!(
            failed.to_string().contains("the disk went away"),
            "{failed}"
        );
        assert!(file.write(0, b"next commit").is_err());
        assert!(file.set_len(8192).is_err());
        assert!(file.sync_data().is_err());
        assert_eq!(log_of(&file), ["sync begins", "sync ends"]);
    }
}
