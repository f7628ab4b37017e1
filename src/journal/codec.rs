//! How event values are spelled in the journal: the same lowercase words as in `--json`, so a
//! user reading it with `sqlite3` or `psql` sees what the console shows (the words themselves
//! are in `db.rs`, shared by both backends). Output streams are small integers because they
//! repeat on every one of possibly millions of lines.

use super::DispatchState;
use super::db::{DbError, DbResult, FromValue, RAW_PATH, Row, Value};
use crate::transport::Stream;

/// Read only: states are written as SQL literals, and `Interrupted` is never stored (it is
/// `running` whose writer is gone).
impl FromValue for DispatchState {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(t) if t == "running" => Ok(DispatchState::Running),
            Value::Text(t) if t == "finished" => Ok(DispatchState::Finished),
            Value::Text(t) if t == "cancelled" => Ok(DispatchState::Cancelled),
            other => Err(format!("unknown dispatch state {other:?}")),
        }
    }
}

pub(crate) fn stream_code(stream: Stream) -> i64 {
    match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    }
}

pub(crate) fn stream_from_code(code: i64) -> Result<Stream, String> {
    match code {
        1 => Ok(Stream::Stdout),
        2 => Ok(Stream::Stderr),
        other => Err(format!("unknown output stream {other}")),
    }
}

/// Sizes are `u64` in Rust and signed in SQL; real sizes never come near the limit.
pub(crate) fn size_to_sql(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

pub(crate) fn size_from_sql(row: &Row, idx: usize) -> DbResult<u64> {
    let value: i64 = row.get(idx)?;
    u64::try_from(value).map_err(|_| DbError::Decode {
        idx,
        detail: format!("{value} is not a size"),
    })
}

pub(crate) fn opt_size_from_sql(row: &Row, idx: usize) -> DbResult<Option<u64>> {
    match row.get::<Option<i64>>(idx)? {
        None => Ok(None),
        Some(value) => u64::try_from(value).map(Some).map_err(|_| DbError::Decode {
            idx,
            detail: format!("{value} is not a size"),
        }),
    }
}

/// Paths are stored as text when they are UTF-8 (readable with `sqlite3`/`psql`), else as
/// their raw bytes, so a resume finds the very bundle and config it started with.
pub(crate) fn path_to_sql(path: &std::path::Path) -> Value {
    use std::os::unix::ffi::OsStrExt;
    match path.to_str() {
        Some(text) => Value::Text(text.to_owned()),
        None => Value::Blob(path.as_os_str().as_bytes().to_vec()),
    }
}

pub(crate) fn path_from_sql(row: &Row, idx: usize) -> DbResult<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    match row.value(idx) {
        Value::Text(t) => match t.strip_prefix(RAW_PATH).map(hex::decode) {
            Some(Ok(bytes)) => Ok(std::ffi::OsStr::from_bytes(&bytes).into()),
            Some(Err(_)) => Err(DbError::Decode {
                idx,
                detail: "a raw path that is not hex".into(),
            }),
            None => Ok(t.into()),
        },
        Value::Blob(b) => Ok(std::ffi::OsStr::from_bytes(b).into()),
        other => Err(DbError::Decode {
            idx,
            detail: format!("expected a path, found {other:?}"),
        }),
    }
}
