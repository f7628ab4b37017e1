//! The two databases the journal can live in, behind one small interface: SQLite (a file,
//! the default) and PostgreSQL (a server a team shares). The journal's queries are written
//! once, in the SQL both understand, with SQLite's `?N` placeholders; this module turns them
//! into PostgreSQL's `$N`, binds the same values to both, and hands rows back as plain
//! values. What the two spell differently (how a schema is created, how a write lock is
//! taken, how durable a commit is) stays here and in `schema.rs`.

use crate::model::events::{Level, Step, StepOutcome, TargetResult};
use std::cell::RefCell;
use std::collections::HashMap;

/// A value bound to or read from a query: the four kinds the journal stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// Errors of either backend, or a value that does not decode as the type asked for.
#[derive(Debug)]
pub(crate) enum DbError {
    Sqlite(rusqlite::Error),
    Pg(postgres::Error),
    Decode { idx: usize, detail: String },
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Sqlite(e) => e.fmt(f),
            DbError::Pg(e) => pg_message(e).fmt(f),
            DbError::Decode { idx, detail } => write!(f, "column {idx}: {detail}"),
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

/// A PostgreSQL connection and the statements it has prepared, by SQL text.
pub(crate) struct PgConn {
    pub client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

impl PgConn {
    pub fn new(client: postgres::Client) -> PgConn {
        PgConn {
            client,
            statements: HashMap::new(),
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
    Pg(Box<PgConn>),
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
                let PgConn { client, statements } = &mut **pg;
                let mut builder = client.build_transaction();
                if mode == Mode::Read {
                    builder = builder
                        .isolation_level(postgres::IsolationLevel::RepeatableRead)
                        .read_only(true);
                }
                let mut tx = builder.start()?;
                if mode == Mode::WriteBatched {
                    // The PostgreSQL spelling of SQLite's synchronous=NORMAL: the commit
                    // returns before the WAL is flushed; a server crash may lose it.
                    tx.batch_execute("SET LOCAL synchronous_commit TO OFF")?;
                }
                Ok(Tx {
                    inner: RefCell::new(TxInner::Pg(tx, statements)),
                })
            }
        }
    }
}

enum TxInner<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Pg(
        postgres::Transaction<'a>,
        &'a mut HashMap<String, postgres::Statement>,
    ),
}

/// One transaction. Methods take `&self` so the journal's query helpers can share it.
pub(crate) struct Tx<'a> {
    inner: RefCell<TxInner<'a>>,
}

impl Tx<'_> {
    pub fn dialect(&self) -> Dialect {
        match &*self.inner.borrow() {
            TxInner::Sqlite(_) => Dialect::Sqlite,
            TxInner::Pg(..) => Dialect::Postgres,
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
        match &mut *self.inner.borrow_mut() {
            TxInner::Sqlite(tx) => {
                let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
                let mut stmt = tx.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(values.iter()))?)
            }
            TxInner::Pg(tx, statements) => {
                let stmt = pg_statement(tx, statements, sql)?;
                let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
                    .iter()
                    .map(|v| v as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                let n = tx.execute(&stmt, &refs)?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs a query; returns all its rows.
    pub fn query(&self, sql: &str, params: &[&dyn ToValue]) -> DbResult<Vec<Row>> {
        match &mut *self.inner.borrow_mut() {
            TxInner::Sqlite(tx) => {
                let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
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
            TxInner::Pg(tx, statements) => {
                let stmt = pg_statement(tx, statements, sql)?;
                let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
                    .iter()
                    .map(|v| v as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                let rows = tx.query(&stmt, &refs)?;
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                r.try_get::<_, Option<Value>>(i)
                                    .map(|v| v.unwrap_or(Value::Null))
                            })
                            .collect::<Result<Vec<_>, _>>()
                            .map(Row)
                            .map_err(DbError::Pg)
                    })
                    .collect()
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

    /// Runs a batch of statements with no parameters (schema changes).
    pub fn batch(&self, sql: &str) -> DbResult<()> {
        match &mut *self.inner.borrow_mut() {
            TxInner::Sqlite(tx) => Ok(tx.execute_batch(sql)?),
            TxInner::Pg(tx, _) => Ok(tx.batch_execute(sql)?),
        }
    }

    pub fn commit(self) -> DbResult<()> {
        match self.inner.into_inner() {
            TxInner::Sqlite(tx) => Ok(tx.commit()?),
            TxInner::Pg(tx, _) => Ok(tx.commit()?),
        }
    }
}

/// The prepared statement for `sql`, preparing it on first use. A statement prepared in a
/// transaction that was rolled back stays valid: PostgreSQL prepares per session.
fn pg_statement(
    tx: &mut postgres::Transaction<'_>,
    statements: &mut HashMap<String, postgres::Statement>,
    sql: &str,
) -> DbResult<postgres::Statement> {
    if let Some(stmt) = statements.get(sql) {
        return Ok(stmt.clone());
    }
    let stmt = tx.prepare(&to_dollar_placeholders(sql))?;
    statements.insert(sql.to_owned(), stmt.clone());
    Ok(stmt)
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
            // A path that is not UTF-8 in a text column: see `codec::RAW_PATH`.
            (Value::Blob(b), _) => {
                format!("{}{}", super::codec::RAW_PATH, hex::encode(b)).to_sql(ty, out)
            }
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
