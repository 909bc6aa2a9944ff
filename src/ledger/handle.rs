//! The shared ledger handle every part of the farm holds.
//!
//! One write connection (SQLite allows one writer at a time) behind a mutex, and a
//! small pool of read-only connections: with WAL, reads never wait for writes, and
//! concurrent readers do not queue behind one connection. Calls run on tokio's
//! blocking threads. Hold the write connection only for SQL: never fetch, spawn a
//! child or wait on a network inside [`Db::write`].

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Ledger, LedgerError};

/// A ledger connection shared between threads.
pub type SharedLedger = Arc<Mutex<Ledger>>;

/// Locks a shared connection, ignoring poisoning (a panicked holder left no
/// half-written transaction: SQLite rolled it back).
pub fn lock(l: &SharedLedger) -> MutexGuard<'_, Ledger> {
    match l.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Runs `f` on a shared connection in a blocking thread.
pub async fn with_ledger<T: Send + 'static>(
    ledger: &SharedLedger,
    f: impl FnOnce(&mut Ledger) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    let ledger = ledger.clone();
    match tokio::task::spawn_blocking(move || f(&mut lock(&ledger))).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The farm's handle on its ledger: one writer, a pool of readers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    is_postgres: bool,
    origin: Arc<str>,
    writer: SharedLedger,
    readers: Arc<Vec<SharedLedger>>,
    next: Arc<AtomicUsize>,
}

impl Db {
    /// Opens (creating and migrating if needed) the ledger at `path` with `readers`
    /// read-only connections beside the writer.
    pub fn open(path: &Path, readers: usize) -> Result<Db, LedgerError> {
        let writer = Ledger::open(path)?;
        Db::with_writer(writer, readers)
    }

    /// Connects to (and migrates) the PostgreSQL ledger at `url`, with `readers`
    /// more connections beside the writer. Blocking.
    pub fn open_postgres(url: &str, readers: usize) -> Result<Db, LedgerError> {
        let writer = Ledger::open_postgres(url)?;
        let mut conns = Vec::new();
        for _ in 0..readers.max(1) {
            conns.push(Ledger::connect_postgres(url)?);
        }
        Ok(Db::assemble(writer, conns))
    }

    /// Wraps an open ledger, adding `readers` read-only connections to its file.
    pub fn with_writer(writer: Ledger, readers: usize) -> Result<Db, LedgerError> {
        let path = writer.path().to_owned();
        let mut conns = Vec::new();
        for _ in 0..readers.max(1) {
            conns.push(Ledger::open_read_only(&path)?);
        }
        Ok(Db::assemble(writer, conns))
    }

    fn assemble(mut writer: Ledger, mut conns: Vec<Ledger>) -> Db {
        let origin = uuid::Uuid::new_v4().simple().to_string();
        writer.set_origin(&origin);
        for c in &mut conns {
            c.set_origin(&origin);
        }
        Db {
            is_postgres: writer.is_postgres(),
            origin: origin.into(),
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(conns.into_iter().map(|c| Arc::new(Mutex::new(c))).collect()),
            next: Arc::default(),
        }
    }

    /// Whether the ledger is a PostgreSQL database (several processes may share it).
    pub fn is_postgres(&self) -> bool {
        self.is_postgres
    }

    /// This process's name in the ledger's notifications.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Runs `f` on the write connection (SQL only; see the module doc).
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        with_ledger(&self.writer, f).await
    }

    /// Runs `f` on a read-only connection.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        with_ledger(self.reader(), f).await
    }

    /// Runs `f` on the write connection from a blocking thread.
    pub fn write_blocking<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(&mut lock(&self.writer))
    }

    /// Runs `f` on a read-only connection from a blocking thread.
    pub fn read_blocking<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(&mut lock(self.reader()))
    }

    /// Asks every connection to free the memory its page cache holds (SQLite's
    /// `shrink_memory`), from a blocking thread. For an idle farm: caches refill
    /// from the OS's page cache on the next queries.
    pub fn shrink_memory_blocking(&self) {
        for conn in std::iter::once(&self.writer).chain(self.readers.iter()) {
            lock(conn).shrink_memory();
        }
    }

    fn reader(&self) -> &SharedLedger {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.readers[i % self.readers.len()]
    }
}
