//! The two databases the journal can live in, behind one small interface: SQLite (a file,
//! the default) and PostgreSQL (a server a team shares). The journal's queries are written
//! once, in the SQL both understand, with SQLite's `?N` placeholders; this module turns them
//! into PostgreSQL's `$N`, binds the same values to both, and hands rows back as plain
//! values. What the two spell differently (how a schema is created, how a write lock is
//! taken, how durable a commit is) stays here and in `schema.rs`.

use crate::model::events::{Level, Step, StepOutcome, TargetResult};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::mpsc;

/// A value bound to or read from a query: the four kinds the journal stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// Marks a path that is not UTF-8 stored in a PostgreSQL text column: this prefix (a Unicode
/// noncharacter, which no file name uses) and the hex of its bytes. SQLite stores such a path
/// as a blob instead.
pub(crate) const RAW_PATH: &str = "\u{FFFF}";

/// Errors of either backend, or a value that does not decode as the type asked for.
#[derive(Debug)]
pub(crate) enum DbError {
    Sqlite(rusqlite::Error),
    Pg(postgres::Error),
    Decode {
        idx: usize,
        detail: String,
    },
    /// The PostgreSQL connection's thread is gone (it panicked).
    Gone,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Sqlite(e) => e.fmt(f),
            DbError::Pg(e) => pg_message(e).fmt(f),
            DbError::Decode { idx, detail } => write!(f, "column {idx}: {detail}"),
            DbError::Gone => f.write_str("the journal's connection thread stopped"),
        }
    }
}

/// PostgreSQL's own message (`ERROR: ...`), which `postgres::Error`'s Display leaves out.
pub(crate) fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError::Pg(e)
    }
}

pub(crate) type DbResult<T> = Result<T, DbError>;

/// Something bound as a query parameter.
pub(crate) trait ToValue {
    fn to_value(&self) -> Value;
}

/// Something read from a column.
pub(crate) trait FromValue: Sized {
    fn from_value(value: &Value) -> Result<Self, String>;
}

/// `params![a, b]`: the parameters of one query, bound as `?1`, `?2`.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        &[$(&$p as &dyn $crate::journal::db::ToValue),*] as &[&dyn $crate::journal::db::ToValue]
    };
}
pub(crate) use params;

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

macro_rules! int_value {
    ($($ty:ty),*) => {$(
        impl $crate::journal::db::ToValue for $ty {
            fn to_value(&self) -> Value {
                Value::Int(i64::from(*self))
            }
        }
        impl $crate::journal::db::FromValue for $ty {
            fn from_value(value: &Value) -> Result<Self, String> {
                match value {
                    Value::Int(n) => <$ty>::try_from(*n).map_err(|_| format!("{n} is out of range")),
                    other => Err(format!("expected an integer, found {other:?}")),
                }
            }
        }
    )*};
}
int_value!(i64, i32, u32);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// Implements `ToValue`/`FromValue` for an enum stored as its lowercase word.
macro_rules! word_value {
    ($ty:ty, $what:literal, $to:expr, $from:expr) => {
        impl $crate::journal::db::ToValue for $ty {
            fn to_value(&self) -> $crate::journal::db::Value {
                $crate::journal::db::Value::Text(($to)(*self).to_owned())
            }
        }
        impl $crate::journal::db::FromValue for $ty {
            fn from_value(value: &$crate::journal::db::Value) -> Result<Self, String> {
                let $crate::journal::db::Value::Text(text) = value else {
                    return Err(format!("expected a {}, found {value:?}", $what));
                };
                ($from)(text.as_str()).ok_or_else(|| format!("unknown {} `{text}`", $what))
            }
        }
    };
}
pub(crate) use word_value;

word_value!(Step, "step", Step::as_str, Step::parse);
word_value!(
    StepOutcome,
    "step outcome",
    |o| match o {
        StepOutcome::Ok => "ok",
        StepOutcome::Failed => "failed",
        StepOutcome::Unknown => "unknown",
        StepOutcome::Cancelled => "cancelled",
    },
    |t| match t {
        "ok" => Some(StepOutcome::Ok),
        "failed" => Some(StepOutcome::Failed),
        "unknown" => Some(StepOutcome::Unknown),
        "cancelled" => Some(StepOutcome::Cancelled),
        _ => None,
    }
);
word_value!(
    TargetResult,
    "target result",
    |r| match r {
        TargetResult::Succeeded => "succeeded",
        TargetResult::Failed => "failed",
        TargetResult::Skipped => "skipped",
        TargetResult::Cancelled => "cancelled",
    },
    |t| match t {
        "succeeded" => Some(TargetResult::Succeeded),
        "failed" => Some(TargetResult::Failed),
        "skipped" => Some(TargetResult::Skipped),
        "cancelled" => Some(TargetResult::Cancelled),
        _ => None,
    }
);
word_value!(
    Level,
    "notice level",
    |l| match l {
        Level::Info => "info",
        Level::Warning => "warning",
    },
    |t| match t {
        "info" => Some(Level::Info),
        "warning" => Some(Level::Warning),
        _ => None,
    }
);

/// One result row.
#[derive(Debug, Clone)]
pub(crate) struct Row(Vec<Value>);

impl Row {
    pub fn get<T: FromValue>(&self, idx: usize) -> DbResult<T> {
        let value = self.0.get(idx).ok_or_else(|| DbError::Decode {
            idx,
            detail: "no such column".into(),
        })?;
        T::from_value(value).map_err(|detail| DbError::Decode { idx, detail })
    }

    pub fn value(&self, idx: usize) -> &Value {
        self.0.get(idx).unwrap_or(&Value::Null)
    }
}

/// Which server the journal talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// How a write transaction starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Reads as of one moment, writes nothing.
    Read,
    /// Takes the write lock up front (SQLite) and must survive power loss.
    Write,
    /// As `Write`, but survives only the death of the process (batched output lines).
    WriteBatched,
}

/// A PostgreSQL connection, owned by a thread of its own.
///
/// The `postgres` crate's client blocks on a private tokio runtime for every call, and
/// tokio panics when a runtime is blocked on from a thread that is already driving one (the
/// journal is written from async tasks and opened under `block_on`). So the client lives on
/// its own plain thread, connected, used and dropped there; callers hand it work over a
/// channel and wait for the answer, which costs a thread wake-up per statement next to a
/// network round trip. Transactions are `BEGIN`/`COMMIT` statements, so no borrowed
/// transaction object has to cross threads.
pub(crate) struct PgConn {
    jobs: mpsc::Sender<PgJob>,
}

type PgJob = Box<dyn FnOnce(&mut PgWorker) + Send>;

/// The client and the statements it has prepared, by SQL text (prepared once per session).
pub(crate) struct PgWorker {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

impl PgWorker {
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client.prepare(&to_dollar_placeholders(sql))?;
        self.statements.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64, postgres::Error> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        self.client.execute(&stmt, &refs)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>, postgres::Error> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let rows = self.client.query(&stmt, &refs)?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<_, Option<Value>>(i)
                            .map(|v| v.unwrap_or(Value::Null))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row)
            })
            .collect()
    }
}

impl PgConn {
    /// Starts the connection's thread and connects there with `connect`.
    pub fn start<E: Send + 'static>(
        connect: impl FnOnce() -> Result<postgres::Client, E> + Send + 'static,
        no_thread: impl Fn(std::io::Error) -> E,
    ) -> Result<PgConn, E> {
        let (jobs, queue) = mpsc::channel::<PgJob>();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("journal-postgres".into())
            .spawn(move || match connect() {
                Ok(client) => {
                    let _ = ready_tx.send(Ok(()));
                    let mut worker = PgWorker {
                        client,
                        statements: HashMap::new(),
                    };
                    // Ends when the `PgConn` is dropped; the client closes here, off any
                    // runtime.
                    for job in queue {
                        job(&mut worker);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(&no_thread)?;
        match ready.recv() {
            Ok(Ok(())) => Ok(PgConn { jobs }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(no_thread(std::io::Error::other(
                "the connection thread stopped while connecting",
            ))),
        }
    }

    /// Runs `f` on the connection's thread and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut PgWorker) -> Result<T, postgres::Error> + Send + 'static,
    ) -> DbResult<T> {
        let (answer, wait) = mpsc::sync_channel(1);
        let job: PgJob = Box::new(move |w| {
            let _ = answer.send(f(w));
        });
        if self.jobs.send(job).is_err() {
            return Err(DbError::Gone);
        }
        match wait.recv() {
            Ok(result) => result.map_err(DbError::Pg),
            Err(_) => Err(DbError::Gone),
        }
    }
}

/// An open connection of either kind.
pub(crate) enum Conn {
    Sqlite {
        conn: rusqlite::Connection,
        /// The `synchronous` level last set (see [`Mode`]).
        full: bool,
    },
    Pg(PgConn),
}

impl Conn {
    /// Starts a transaction in `mode`.
    pub fn begin(&mut self, mode: Mode) -> DbResult<Tx<'_>> {
        match self {
            Conn::Sqlite { conn, full } => {
                let want_full = mode != Mode::WriteBatched;
                if mode != Mode::Read && *full != want_full {
                    let level = if want_full { "FULL" } else { "NORMAL" };
                    conn.pragma_update(None, "synchronous", level)?;
                    *full = want_full;
                }
                let behavior = match mode {
                    Mode::Read => rusqlite::TransactionBehavior::Deferred,
                    _ => rusqlite::TransactionBehavior::Immediate,
                };
                let tx = conn.transaction_with_behavior(behavior)?;
                Ok(Tx {
                    inner: RefCell::new(TxInner::Sqlite(tx)),
                })
            }
            Conn::Pg(pg) => {
                let begin = match mode {
                    Mode::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                    Mode::Write => "BEGIN",
                    // The PostgreSQL spelling of SQLite's synchronous=NORMAL: the commit
                    // returns before the WAL is flushed; a server crash may lose it.
                    Mode::WriteBatched => "BEGIN; SET LOCAL synchronous_commit TO OFF",
                };
                pg.call(move |w| w.client.batch_execute(begin))?;
                Ok(Tx {
                    inner: RefCell::new(TxInner::Pg {
                        conn: pg,
                        open: true,
                    }),
                })
            }
        }
    }
}

enum TxInner<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Pg { conn: &'a PgConn, open: bool },
}

/// One transaction, rolled back if dropped uncommitted. Methods take `&self` so the
/// journal's query helpers can share it.
pub(crate) struct Tx<'a> {
    inner: RefCell<TxInner<'a>>,
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if let TxInner::Pg { conn, open: true } = &*self.inner.borrow() {
            let _ = conn.call(|w| w.client.batch_execute("ROLLBACK"));
        }
    }
}

impl Tx<'_> {
    pub fn dialect(&self) -> Dialect {
        match &*self.inner.borrow() {
            TxInner::Sqlite(_) => Dialect::Sqlite,
            TxInner::Pg { .. } => Dialect::Postgres,
        }
    }

    /// ` FOR UPDATE` where the server locks rows read for a later update (PostgreSQL);
    /// SQLite's write transaction already holds the whole database.
    pub fn for_update(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> DbResult<usize> {
        let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
        match &*self.inner.borrow() {
            TxInner::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(values.iter()))?)
            }
            TxInner::Pg { conn, .. } => {
                let sql = sql.to_owned();
                let n = conn.call(move |w| w.execute(&sql, &values))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs a query; returns all its rows.
    pub fn query(&self, sql: &str, params: &[&dyn ToValue]) -> DbResult<Vec<Row>> {
        let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
        match &*self.inner.borrow() {
            TxInner::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(sql)?;
                let width = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut row = Vec::with_capacity(width);
                    for i in 0..width {
                        row.push(sqlite_value(r.get_ref(i)?));
                    }
                    out.push(Row(row));
                }
                Ok(out)
            }
            TxInner::Pg { conn, .. } => {
                let sql = sql.to_owned();
                conn.call(move |w| w.query(&sql, &values))
            }
        }
    }

    /// The first row of a query, if any, through `f`.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<Option<T>> {
        match self.query(sql, params)?.first() {
            Some(row) => f(row).map(Some),
            None => Ok(None),
        }
    }

    /// Stores output lines, in order. On PostgreSQL one statement takes them all, as four
    /// arrays the server unnests (ordered by their position, so ids follow the order): one
    /// round trip per batch where row-by-row or 64-row INSERTs cost one per statement. On
    /// SQLite, which has no round trips, multi-row INSERTs of 64, 32, ... 1 rows (each
    /// statement prepared once).
    pub fn insert_output(&self, rows: &[OutputRow<'_>]) -> DbResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if let TxInner::Pg { conn, .. } = &*self.inner.borrow() {
            let step: Vec<i64> = rows.iter().map(|r| r.step).collect();
            let at: Vec<i64> = rows.iter().map(|r| r.at).collect();
            let stream: Vec<i64> = rows.iter().map(|r| r.stream).collect();
            let line: Vec<String> = rows.iter().map(|r| r.line.to_owned()).collect();
            return conn.call(move |w| {
                let stmt = w.statement(INSERT_OUTPUT_UNNEST)?;
                w.client
                    .execute(&stmt, &[&step, &at, &stream, &line])
                    .map(drop)
            });
        }
        let mut rest = rows;
        let mut chunk = INSERT_CHUNK;
        while !rest.is_empty() {
            while chunk > rest.len() {
                chunk /= 2;
            }
            let (now, later) = rest.split_at(chunk);
            let values: Vec<Value> = now
                .iter()
                .flat_map(|r| {
                    [
                        Value::Int(r.step),
                        Value::Int(r.at),
                        Value::Int(r.stream),
                        Value::Text(r.line.to_owned()),
                    ]
                })
                .collect();
            let refs: Vec<&dyn ToValue> = values.iter().map(|v| v as &dyn ToValue).collect();
            self.execute(&insert_output_sql(chunk), &refs)?;
            rest = later;
        }
        Ok(())
    }

    /// Runs a batch of statements with no parameters (schema changes).
    pub fn batch(&self, sql: &str) -> DbResult<()> {
        match &*self.inner.borrow() {
            TxInner::Sqlite(tx) => Ok(tx.execute_batch(sql)?),
            TxInner::Pg { conn, .. } => {
                let sql = sql.to_owned();
                conn.call(move |w| w.client.batch_execute(&sql))
            }
        }
    }

    /// Commits. On failure the transaction is rolled back when `self` drops.
    pub fn commit(self) -> DbResult<()> {
        match &mut *self.inner.borrow_mut() {
            // rusqlite's transaction then finds autocommit on and does nothing on drop.
            TxInner::Sqlite(tx) => Ok(tx.execute_batch("COMMIT")?),
            TxInner::Pg { conn, open } => {
                // Whatever COMMIT answers, the transaction is over: no ROLLBACK on drop.
                *open = false;
                conn.call(|w| w.client.batch_execute("COMMIT"))
            }
        }
    }
}

/// One row of the `output` table, for [`Tx::insert_output`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputRow<'a> {
    pub step: i64,
    pub at: i64,
    pub stream: i64,
    pub line: &'a str,
}

/// PostgreSQL: every row of a batch in one statement (see [`Tx::insert_output`]).
const INSERT_OUTPUT_UNNEST: &str = "INSERT INTO output (step, at, stream, line)
     SELECT s, a, t, l FROM unnest(?1::bigint[], ?2::bigint[], ?3::bigint[], ?4::text[])
     WITH ORDINALITY AS u (s, a, t, l, n) ORDER BY n";

/// SQLite: rows per multi-row INSERT at most.
const INSERT_CHUNK: usize = 64;

fn insert_output_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let b = r * 4;
            format!("(?{}, ?{}, ?{}, ?{})", b + 1, b + 2, b + 3, b + 4)
        })
        .collect();
    format!(
        "INSERT INTO output (step, at, stream, line) VALUES {}",
        values.join(", ")
    )
}

/// `?N` → `$N`, outside string literals and quoted identifiers.
pub(crate) fn to_dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            None => out.push(c),
        }
    }
    out
}

fn sqlite_value(value: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        // The journal stores no floating point numbers; one written by another program
        // reads as text and fails to decode where an integer is expected.
        ValueRef::Real(f) => Value::Text(f.to_string()),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => Value::Blob(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(*n),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// Binds to whatever type PostgreSQL inferred for the parameter: the journal's columns are
/// `BIGINT`, but a parameter compared with a literal may be inferred `integer` or `boolean`.
impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(n), &Type::INT8) => n.to_sql(ty, out),
            (Value::Int(n), &Type::INT4) => i32::try_from(*n)?.to_sql(ty, out),
            (Value::Int(n), &Type::INT2) => i16::try_from(*n)?.to_sql(ty, out),
            (Value::Int(n), &Type::BOOL) => (*n != 0).to_sql(ty, out),
            (Value::Int(n), _) => n.to_string().to_sql(ty, out),
            (Value::Text(s), &Type::BYTEA) => s.as_bytes().to_sql(ty, out),
            (Value::Text(s), _) => s.to_sql(ty, out),
            (Value::Blob(b), &Type::BYTEA) => b.to_sql(ty, out),
            // A path that is not UTF-8 in a text column: see `RAW_PATH`.
            (Value::Blob(b), _) => format!("{RAW_PATH}{}", hex::encode(b)).to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl<'a> postgres::types::FromSql<'a> for Value {
    fn from_sql(
        ty: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(raw.to_vec()),
            _ => Value::Text(String::from_sql(ty, raw)?),
        })
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::Type;
        matches!(
            *ty,
            Type::INT8
                | Type::INT4
                | Type::INT2
                | Type::BOOL
                | Type::BYTEA
                | Type::TEXT
                | Type::VARCHAR
                | Type::NAME
                | Type::BPCHAR
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            to_dollar_placeholders("SELECT '?1', \"a?2\" FROM t WHERE a = ?1 AND b = ?12"),
            "SELECT '?1', \"a?2\" FROM t WHERE a = $1 AND b = $12"
        );
    }
}
