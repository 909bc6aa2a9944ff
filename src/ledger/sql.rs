//! The ledger's SQL without the engine's types: parameters and rows are plain
//! [`Value`]s, statements go through [`Sql`]. The ledger's queries are written
//! once, in the SQL that SQLite and PostgreSQL share (`?N` parameters, `ON
//! CONFLICT`, `RETURNING`), so a second engine is a second implementation of
//! [`Sql`], not a second copy of every query.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::LedgerError;

/// One SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `NULL`.
    Null,
    /// An integer (booleans are stored as 0 and 1).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real number",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

/// A statement parameter.
pub trait Param {
    /// Its SQL value.
    fn value(&self) -> Value;
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn value(&self) -> Value {
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_param!(i64, i32, u32, u64, usize);

impl Param for bool {
    fn value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl Param for f64 {
    fn value(&self) -> Value {
        Value::Real(*self)
    }
}

impl Param for str {
    fn value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl Param for String {
    fn value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl Param for [u8] {
    fn value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl Param for Vec<u8> {
    fn value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl Param for Value {
    fn value(&self) -> Value {
        self.clone()
    }
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value {
        (**self).value()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value {
        self.as_ref().map_or(Value::Null, Param::value)
    }
}

/// Statement parameters: `args![a, b]` is `&[&a, &b]` as `&[&dyn Param]`.
macro_rules! args {
    () => { &[] as &[&dyn $crate::ledger::sql::Param] };
    ($($a:expr),+ $(,)?) => { &[$(&$a as &dyn $crate::ledger::sql::Param),+] as &[&dyn $crate::ledger::sql::Param] };
}
pub(crate) use args;

/// A value a column can be read as.
pub trait FromValue: Sized {
    /// What the column should hold, for the error.
    const WANT: &'static str;
    /// The value, when it has this type.
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    const WANT: &'static str = "an integer";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

macro_rules! narrow_int {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            const WANT: &'static str = "an integer in range";
            fn from_value(v: &Value) -> Option<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i).ok(),
                    _ => None,
                }
            }
        }
    )*};
}
narrow_int!(i32, u32, u64, usize);

impl FromValue for bool {
    const WANT: &'static str = "0 or 1";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    const WANT: &'static str = "a number";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Real(r) => Some(*r),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    const WANT: &'static str = "text";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    const WANT: &'static str = "bytes";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            Value::Text(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const WANT: &'static str = T::WANT;
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A column that did not hold what the ledger expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {col}: expected {want}, found {found}")]
pub struct RowError {
    /// Column index.
    pub col: usize,
    /// What was expected.
    pub want: &'static str,
    /// What was there.
    pub found: &'static str,
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `i` as a `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, RowError> {
        let v = self.0.get(i).unwrap_or(&Value::Null);
        T::from_value(v).ok_or(RowError {
            col: i,
            want: T::WANT,
            found: v.kind(),
        })
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut cols = Vec::with_capacity(n);
    for i in 0..n {
        cols.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        });
    }
    Ok(Row(cols))
}

/// The channel of the farm's notifications (see [`Sql::notify`]).
pub const CHANNEL: &str = "crafting_table";

/// Where statements go.
enum Engine<'c> {
    Sqlite(&'c rusqlite::Connection),
    Pg(&'c RefCell<dyn PgExec + 'c>),
}

/// Statements on one connection (or inside one of its transactions).
pub struct Sql<'c> {
    engine: Engine<'c>,
    path: &'c Path,
}

impl<'c> Sql<'c> {
    /// Statements on a SQLite connection, whose errors name `path`.
    pub(crate) fn new(conn: &'c rusqlite::Connection, path: &'c Path) -> Sql<'c> {
        Sql {
            engine: Engine::Sqlite(conn),
            path,
        }
    }

    /// Statements on a PostgreSQL connection or transaction.
    pub(crate) fn pg(conn: &'c RefCell<dyn PgExec + 'c>, path: &'c Path) -> Sql<'c> {
        Sql {
            engine: Engine::Pg(conn),
            path,
        }
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: self.path.to_owned(),
            source,
        }
    }

    fn pg_err(&self, source: tokio_postgres::Error) -> LedgerError {
        LedgerError::Postgres {
            path: self.path.to_owned(),
            source,
        }
    }

    /// Every row of a PostgreSQL statement.
    fn pg_rows(
        &self,
        conn: &RefCell<dyn PgExec + 'c>,
        sql: &str,
        args: &[&dyn Param],
    ) -> Result<Vec<Row>, LedgerError> {
        let values = Self::params(args);
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = conn
            .try_borrow_mut()
            .map_err(|_| self.busy())?
            .query(&pg_text(sql), &refs)
            .map_err(|e| self.pg_err(e))?;
        rows.iter()
            .map(|r| pg_row(r).map_err(|e| self.pg_err(e)))
            .collect()
    }

    fn busy(&self) -> LedgerError {
        LedgerError::Row {
            path: self.path.to_owned(),
            source: RowError {
                col: 0,
                want: "a free connection",
                found: "one in use by an unfinished statement",
            },
        }
    }

    fn row_err(&self, e: RowError) -> LedgerError {
        LedgerError::Row {
            path: self.path.to_owned(),
            source: e,
        }
    }

    fn params(args: &[&dyn Param]) -> Vec<Value> {
        args.iter().map(|a| a.value()).collect()
    }

    /// The condition "`column` is one of the strings in the JSON array parameter
    /// `?n`" in this engine's SQL.
    pub fn in_json_list(&self, column: &str, n: usize) -> String {
        match self.engine {
            Engine::Sqlite(_) => format!("{column} IN (SELECT value FROM json_each(?{n}))"),
            Engine::Pg(_) => format!(
                "{column} IN (SELECT json_array_elements_text(CAST(CAST(?{n} AS TEXT) AS json)))"
            ),
        }
    }

    /// Runs a statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, args: &[&dyn Param]) -> Result<usize, LedgerError> {
        let conn = match self.engine {
            Engine::Sqlite(c) => c,
            Engine::Pg(pg) => {
                let values = Self::params(args);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
                    .iter()
                    .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                let n = pg
                    .try_borrow_mut()
                    .map_err(|_| self.busy())?
                    .execute(&pg_text(sql), &refs)
                    .map_err(|e| self.pg_err(e))?;
                return Ok(usize::try_from(n).unwrap_or(usize::MAX));
            }
        };
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        stmt.execute(rusqlite::params_from_iter(Self::params(args)))
            .map_err(|e| self.err(e))
    }

    /// Tells every process listening on the farm's channel (PostgreSQL's
    /// `NOTIFY`, delivered when the transaction commits); nothing with SQLite,
    /// where one process is the whole farm.
    pub fn notify(&self, payload: &str) -> Result<(), LedgerError> {
        match self.engine {
            Engine::Sqlite(_) => Ok(()),
            Engine::Pg(_) => self
                .query(
                    "SELECT CAST(pg_notify(?1, CAST(?2 AS TEXT)) AS TEXT)",
                    args![CHANNEL, payload],
                    |_| Ok(()),
                )
                .map(|_| ()),
        }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.engine, Engine::Pg(_))
    }

    /// Runs several statements with no parameters (a migration).
    pub fn batch(&self, sql: &str) -> Result<(), LedgerError> {
        match self.engine {
            Engine::Sqlite(c) => c.execute_batch(sql).map_err(|e| self.err(e)),
            Engine::Pg(pg) => pg
                .try_borrow_mut()
                .map_err(|_| self.busy())?
                .batch(sql)
                .map_err(|e| self.pg_err(e)),
        }
    }

    /// Every row, each read by `f`.
    pub fn query<T>(
        &self,
        sql: &str,
        args: &[&dyn Param],
        mut f: impl FnMut(&Row) -> Result<T, RowError>,
    ) -> Result<Vec<T>, LedgerError> {
        let conn = match self.engine {
            Engine::Sqlite(c) => c,
            Engine::Pg(pg) => {
                return self
                    .pg_rows(pg, sql, args)?
                    .iter()
                    .map(|r| f(r).map_err(|e| self.row_err(e)))
                    .collect();
            }
        };
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let n = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(Self::params(args)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let row = sqlite_row(r, n).map_err(|e| self.err(e))?;
            out.push(f(&row).map_err(|e| self.row_err(e))?);
        }
        Ok(out)
    }

    /// Hands every row to `f` as it is read (nothing is collected: for scans of
    /// the whole ledger).
    pub fn for_each(
        &self,
        sql: &str,
        args: &[&dyn Param],
        mut f: impl FnMut(&Row) -> Result<(), RowError>,
    ) -> Result<(), LedgerError> {
        let conn = match self.engine {
            Engine::Sqlite(c) => c,
            Engine::Pg(pg) => {
                for r in &self.pg_rows(pg, sql, args)? {
                    f(r).map_err(|e| self.row_err(e))?;
                }
                return Ok(());
            }
        };
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let n = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(Self::params(args)))
            .map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let row = sqlite_row(r, n).map_err(|e| self.err(e))?;
            f(&row).map_err(|e| self.row_err(e))?;
        }
        Ok(())
    }

    /// The first row, read by `f`, if there is one.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        args: &[&dyn Param],
        f: impl FnOnce(&Row) -> Result<T, RowError>,
    ) -> Result<Option<T>, LedgerError> {
        let conn = match self.engine {
            Engine::Sqlite(c) => c,
            Engine::Pg(pg) => {
                return match self.pg_rows(pg, sql, args)?.first() {
                    Some(r) => f(r).map(Some).map_err(|e| self.row_err(e)),
                    None => Ok(None),
                };
            }
        };
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let n = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(Self::params(args)))
            .map_err(|e| self.err(e))?;
        match rows.next().map_err(|e| self.err(e))? {
            Some(r) => {
                let row = sqlite_row(r, n).map_err(|e| self.err(e))?;
                f(&row).map(Some).map_err(|e| self.row_err(e))
            }
            None => Ok(None),
        }
    }

    /// The first row, read by `f`; a query that returns none is an error (use it
    /// for aggregates, which always return a row).
    pub fn query_one<T>(
        &self,
        sql: &str,
        args: &[&dyn Param],
        f: impl FnOnce(&Row) -> Result<T, RowError>,
    ) -> Result<T, LedgerError> {
        self.query_opt(sql, args, f)?
            .ok_or_else(|| self.err(rusqlite::Error::QueryReturnedNoRows))
    }
}

/// The SQL text for PostgreSQL: `?N` parameters become `$N` (outside quotes).
pub fn pg_text(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => i.to_string().to_sql(ty, out),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT4 => (*r as f32).to_sql(ty, out),
                Type::FLOAT8 => r.to_sql(ty, out),
                _ => r.to_string().to_sql(ty, out),
            },
            Value::Text(t) => t.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A PostgreSQL row as plain values.
fn pg_row(r: &tokio_postgres::Row) -> Result<Row, tokio_postgres::Error> {
    let mut cols = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => r
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into())),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)?
                .map(|b| Value::Int(b.into())),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            _ => r.try_get::<_, Option<String>>(i)?.map(Value::Text),
        };
        cols.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(cols))
}

/// A PostgreSQL connection or transaction that statements run on, with the
/// connection's prepared statements reused.
pub(crate) trait PgExec {
    /// Rows of a statement.
    fn query(
        &mut self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>;
    /// Rows changed by a statement.
    fn execute(
        &mut self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error>;
    /// Several statements without parameters.
    fn batch(&mut self, sql: &str) -> Result<(), tokio_postgres::Error>;
}

/// What drives a PostgreSQL connection: the farm's runtime (the ledger is used
/// from its blocking threads), or, in a program with none, one of its own.
pub(crate) enum Driver {
    /// The runtime the ledger was opened in.
    Shared(tokio::runtime::Handle),
    /// A runtime of the ledger's own.
    Own(tokio::runtime::Runtime),
}

impl Driver {
    /// The runtime of the calling thread, or a new one.
    pub fn new() -> std::io::Result<Driver> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => Ok(Driver::Shared(h)),
            Err(_) => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("ledger-postgres")
                .enable_all()
                .build()
                .map(Driver::Own),
        }
    }

    /// Waits for `f` (from a thread that may block).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            Driver::Shared(h) => h.block_on(f),
            Driver::Own(rt) => rt.block_on(f),
        }
    }

    /// Runs `f` in the background.
    pub fn spawn<F>(&self, f: F)
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Driver::Shared(h) => drop(h.spawn(f)),
            Driver::Own(rt) => drop(rt.spawn(f)),
        }
    }
}

/// A PostgreSQL connection and its prepared statements.
pub(crate) struct PgClient {
    /// The connection.
    pub client: tokio_postgres::Client,
    /// Statements prepared on it, by SQL text.
    pub statements: HashMap<String, tokio_postgres::Statement>,
    /// What drives it.
    pub driver: Driver,
    /// How to connect again.
    pub dialer: super::pg::Dialer,
    /// Whether a statement found the connection gone (the client may learn it
    /// only later).
    pub broken: bool,
}

/// Whether `e` says the connection is gone: closed, or ended by the server
/// (administrator command, shutdown, crash: class 57P) or a connection exception
/// (class 08).
pub(crate) fn connection_lost(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.code()
            .is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"))
}

impl PgClient {
    /// A connection the server or the network closed is opened again before the
    /// next statement (a farm outlives server restarts); the statement that met
    /// the closed connection has failed and said so.
    pub fn reopen_if_closed(&mut self) -> Result<(), tokio_postgres::Error> {
        if !self.broken && !self.client.is_closed() {
            return Ok(());
        }
        self.client = self.dialer.dial(&self.driver)?;
        self.broken = false;
        self.statements.clear();
        tracing::warn!("ledger connection to PostgreSQL opened again");
        Ok(())
    }

    /// Passes `r` on, remembering when it says the connection is gone.
    fn note<T>(&mut self, r: Result<T, tokio_postgres::Error>) -> Result<T, tokio_postgres::Error> {
        if let Err(e) = &r
            && connection_lost(e)
        {
            self.broken = true;
        }
        r
    }
}

fn prepared<C: tokio_postgres::GenericClient + Sync>(
    driver: &Driver,
    statements: &mut HashMap<String, tokio_postgres::Statement>,
    client: &C,
    sql: &str,
) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    let s = driver.block_on(client.prepare(sql))?;
    statements.insert(sql.to_owned(), s.clone());
    Ok(s)
}

impl PgExec for PgClient {
    fn query(
        &mut self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        self.reopen_if_closed()?;
        let r = prepared(&self.driver, &mut self.statements, &self.client, sql)
            .and_then(|st| self.driver.block_on(self.client.query(&st, args)));
        self.note(r)
    }

    fn execute(
        &mut self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        self.reopen_if_closed()?;
        let r = prepared(&self.driver, &mut self.statements, &self.client, sql)
            .and_then(|st| self.driver.block_on(self.client.execute(&st, args)));
        self.note(r)
    }

    fn batch(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.reopen_if_closed()?;
        let r = self.driver.block_on(self.client.batch_execute(sql));
        self.note(r)
    }
}

/// A transaction on a [`PgClient`], sharing its prepared statements.
pub(crate) struct PgTx<'a> {
    /// The transaction.
    pub tx: tokio_postgres::Transaction<'a>,
    /// The connection's prepared statements.
    pub statements: &'a mut HashMap<String, tokio_postgres::Statement>,
    /// What drives the connection.
    pub driver: &'a Driver,
}

impl PgExec for PgTx<'_> {
    fn query(
        &mut self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let st = prepared(self.driver, self.statements, &self.tx, sql)?;
        self.driver.block_on(self.tx.query(&st, args))
    }

    fn execute(
        &mut self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let st = prepared(self.driver, self.statements, &self.tx, sql)?;
        self.driver.block_on(self.tx.execute(&st, args))
    }

    fn batch(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.driver.block_on(self.tx.batch_execute(sql))
    }
}
