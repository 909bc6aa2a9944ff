//! The ledger: the farm's SQLite file, and the only module that speaks SQL.
//!
//! The rest of the farm holds a [`Db`] (one write connection, a pool of readers)
//! and calls the typed methods of [`Ledger`]; no SQLite type crosses this
//! module's public surface except inside [`LedgerError`].
//!
//! Opening a ledger creates the file if needed, refuses one written by a newer
//! binary without touching it, turns on WAL (`synchronous=NORMAL`), foreign keys and
//! a busy timeout, then applies the missing [`migrations`] in order.

pub mod bus;
mod digests;
mod findings;
mod handle;
mod jobs;
pub mod migrations;
mod objects;
mod patches;
mod pg;
mod retention;
mod runners;
mod schedules;
pub mod sql;
mod tokens;
mod views;

pub use digests::*;
pub use findings::*;
pub use handle::*;
pub use jobs::*;
pub use objects::*;
pub use patches::*;
pub use pg::display_url as display_postgres_url;
pub use retention::*;
pub use runners::*;
pub use schedules::*;
pub use tokens::*;
pub use views::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

/// A notification's text: what happened, the process it happened in, to which
/// job (see [`runners::Note`]).
pub(crate) fn note(origin: &str, kind: &str, id: &str) -> String {
    format!("{kind} {origin} {id}")
}

/// How long a statement waits for a lock held by another connection.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema version this binary writes.
pub fn latest_version() -> u32 {
    migrations::MIGRATIONS.len() as u32
}

/// What can go wrong with the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file was written by a newer crafting-table.
    #[error(
        "ledger {path} has schema version {found}, newer than this binary's {supported}: upgrade crafting-table (the file was not modified)"
    )]
    TooNew {
        /// The ledger file.
        path: PathBuf,
        /// Its `user_version`.
        found: u32,
        /// What this binary knows.
        supported: u32,
    },
    /// The directory could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite said no.
    #[error("ledger {path}: {source}")]
    Sqlite {
        /// The ledger file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// PostgreSQL said no.
    #[error("ledger {path}: {}", pg_message(source))]
    Postgres {
        /// The ledger (its address, without a password).
        path: PathBuf,
        /// The server's or the driver's error.
        source: tokio_postgres::Error,
    },
    /// The operation exists for the other engine only.
    #[error("ledger {path}: {what}")]
    Unsupported {
        /// The ledger.
        path: PathBuf,
        /// What, and what to do instead.
        what: String,
    },
    /// A row did not hold what the ledger expects.
    #[error("ledger {path}: {source}")]
    Row {
        /// The ledger.
        path: PathBuf,
        /// Which column, and what it held.
        source: sql::RowError,
    },
}

/// A PostgreSQL error with the server's own words (its `Display` says only "db
/// error").
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

impl LedgerError {
    /// Whether SQLite refused because its disk (or its page limit) is full: the
    /// farm waits for space instead of failing for good.
    pub fn is_full(&self) -> bool {
        match self {
            LedgerError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => e.code == rusqlite::ErrorCode::DiskFull,
            LedgerError::Postgres { source, .. } => {
                source.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL)
            }
            _ => false,
        }
    }
}

/// A function that wraps a SQLite error with the ledger's path.
pub(crate) fn sql_error(path: &Path) -> impl Fn(rusqlite::Error) -> LedgerError + Copy + '_ {
    move |source| LedgerError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// Sets the busy timeout and returns the schema version, refusing a ledger newer
/// than this binary.
fn check_version(conn: &Connection, path: &Path) -> Result<u32, LedgerError> {
    let sql = sql_error(path);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
    let found: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    if found > latest_version() {
        return Err(LedgerError::TooNew {
            path: path.to_owned(),
            found,
            supported: latest_version(),
        });
    }
    Ok(found)
}

fn configure(conn: &Connection, path: &Path) -> rusqlite::Result<()> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "SQLite refused WAL mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path, from: u32) -> rusqlite::Result<()> {
    for (i, sql) in migrations::MIGRATIONS
        .iter()
        .enumerate()
        .skip(from as usize)
    {
        let version = i as u32 + 1;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while this one waited for the lock.
        let now: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if now >= version {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(path = %path.display(), version, "ledger migrated");
    }
    Ok(())
}

/// The connection of a ledger.
enum Backend {
    Sqlite(Connection),
    Pg(Box<std::cell::RefCell<sql::PgClient>>),
}

/// An open ledger: a SQLite file, or a PostgreSQL database (see `pg.rs`).
pub struct Ledger {
    conn: Backend,
    path: PathBuf,
    /// Names this process in the notifications it sends (so it can skip its own).
    origin: String,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

impl Ledger {
    /// Opens (creating if needed) and migrates the ledger at `path`.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let sql = sql_error(path);
        let conn = Connection::open(path).map_err(sql)?;
        // Check the version before anything that writes (journal_mode=WAL does).
        let found = check_version(&conn, path)?;
        let mut conn = conn;
        configure(&conn, path).map_err(sql)?;
        migrate(&mut conn, path, found).map_err(sql)?;
        Ok(Ledger {
            conn: Backend::Sqlite(conn),
            path: path.to_owned(),
            origin: String::new(),
        })
    }

    /// Opens an existing ledger for reading only (for `plan` beside a running farm).
    pub fn open_read_only(path: &Path) -> Result<Ledger, LedgerError> {
        let sql = sql_error(path);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        check_version(&conn, path)?;
        // Readers share the OS page cache; a small cache each keeps a farm that
        // ran for months small (1 MiB instead of SQLite's 2 MiB).
        conn.pragma_update(None, "cache_size", -1024).map_err(sql)?;
        Ok(Ledger {
            conn: Backend::Sqlite(conn),
            path: path.to_owned(),
            origin: String::new(),
        })
    }

    /// Frees what this connection's page cache holds (`PRAGMA shrink_memory`).
    pub fn shrink_memory(&self) {
        if let Backend::Sqlite(c) = &self.conn
            && let Err(e) = c.execute_batch("PRAGMA shrink_memory")
        {
            tracing::debug!(error = %e, "shrink_memory");
        }
    }

    /// The SQLite connection, or an error naming what PostgreSQL users do instead.
    fn lite(&self, instead: &str) -> Result<&Connection, LedgerError> {
        match &self.conn {
            Backend::Sqlite(c) => Ok(c),
            Backend::Pg(_) => Err(LedgerError::Unsupported {
                path: self.path.clone(),
                what: format!("this is a SQLite operation; with PostgreSQL {instead}"),
            }),
        }
    }

    /// Whether this ledger is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self.conn, Backend::Pg(_))
    }

    /// Names the process in the notifications this connection sends.
    pub fn set_origin(&mut self, origin: &str) {
        origin.clone_into(&mut self.origin);
    }

    /// The process name notifications carry.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Statements on this ledger's connection.
    pub(crate) fn sql(&self) -> sql::Sql<'_> {
        match &self.conn {
            Backend::Sqlite(c) => sql::Sql::new(c, &self.path),
            Backend::Pg(pg) => sql::Sql::pg(&**pg, &self.path),
        }
    }

    /// Runs `f` in one write transaction (taken at once, so it never has to be
    /// upgraded): committed when `f` returns `Ok`, rolled back otherwise.
    pub(crate) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&sql::Sql<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        match &mut self.conn {
            Backend::Sqlite(c) => {
                let err = sql_error(&self.path);
                let tx = c
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(err)?;
                let out = f(&sql::Sql::new(&tx, &self.path))?;
                tx.commit().map_err(err)?;
                Ok(out)
            }
            Backend::Pg(pg) => pg::transaction(pg.get_mut(), &self.path, f),
        }
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, LedgerError> {
        match &self.conn {
            Backend::Sqlite(c) => c
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(|e| self.err(e)),
            Backend::Pg(_) => pg::schema_version(&self.sql()),
        }
    }

    /// The journal mode in force (`wal` once opened read-write).
    pub fn journal_mode(&self) -> Result<String, LedgerError> {
        self.lite("the server keeps its own write-ahead log")?
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Caps the ledger's size at `pages` pages (`PRAGMA max_page_count`), or lifts the
    /// cap with a large value: how tests (and operators) try a full disk.
    pub fn set_max_page_count(&self, pages: u64) -> Result<u64, LedgerError> {
        self.lite("limit the database's size on the server")?
            .pragma_update_and_check(None, "max_page_count", pages, |r| r.get::<_, u64>(0))
            .map_err(|e| self.err(e))
    }

    /// Pages the ledger uses now.
    pub fn page_count(&self) -> Result<u64, LedgerError> {
        self.lite("ask the server (pg_database_size)")?
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Runs `PRAGMA integrity_check`; `Ok(())` when SQLite answers `ok`.
    pub fn integrity_check(&self) -> Result<Result<(), String>, LedgerError> {
        let Backend::Sqlite(c) = &self.conn else {
            // The server checks its own pages; a query that runs is the answer.
            return self.schema_version().map(|_| Ok(()));
        };
        let answer: String = c
            .pragma_query_value(None, "integrity_check", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(if answer == "ok" { Ok(()) } else { Err(answer) })
    }

    /// Records that `schedule` fired for `fire_time` (ms). Returns `false`, changing
    /// nothing, when that fire was already recorded: the key that keeps restarts and
    /// overlapping ticks from running a fire twice.
    pub fn record_schedule_fire(
        &self,
        schedule: &str,
        fire_time_ms: i64,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        let n = self.sql().execute(
            "INSERT INTO schedule_fires (schedule_name, fire_time, fired_at)
             VALUES (?1, ?2, ?3)
             ON CONFLICT (schedule_name, fire_time) DO NOTHING",
            sql::args![schedule, fire_time_ms, now_ms],
        )?;
        Ok(n == 1)
    }

    /// Writes a consistent copy of the ledger to `dest` (SQLite's `VACUUM INTO`: one
    /// read transaction, so a running farm keeps writing meanwhile). `dest` must not
    /// exist.
    pub fn backup_to(&self, dest: &Path) -> Result<(), LedgerError> {
        if dest.exists() {
            return Err(LedgerError::Io {
                path: dest.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the backup file exists; choose a new name",
                ),
            });
        }
        let target = dest.display().to_string();
        self.lite("use pg_dump")?
            .execute("VACUUM INTO ?1", params![target])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The names of the tables in the ledger (for diagnostics and tests).
    pub fn table_names(&self) -> Result<Vec<String>, LedgerError> {
        let list = match self.conn {
            Backend::Sqlite(_) => {
                "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"
            }
            Backend::Pg(_) => {
                "SELECT CAST(tablename AS TEXT) FROM pg_tables
                 WHERE schemaname = current_schema() ORDER BY tablename"
            }
        };
        self.sql().query(list, sql::args![], |r| r.get(0))
    }

    /// When `schedule` last fired, if ever (ms).
    pub fn last_schedule_fire(&self, schedule: &str) -> Result<Option<i64>, LedgerError> {
        self.sql().query_one(
            "SELECT MAX(fire_time) FROM schedule_fires WHERE schedule_name = ?1",
            sql::args![schedule],
            |r| r.get::<Option<i64>>(0),
        )
    }
}
