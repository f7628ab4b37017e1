//! How event values are spelled in the journal: the same lowercase words as in `--json`, so a
//! user reading the file with `sqlite3` sees what the console shows. Output streams are small
//! integers because they repeat on every one of possibly millions of lines.

use super::DispatchState;
use crate::model::events::{Level, Step, StepOutcome, TargetResult};
use crate::transport::Stream;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Implements `ToSql`/`FromSql` for an enum through a table of (value, text).
macro_rules! text_enum {
    ($ty:ty, $what:literal, [$($variant:path => $text:literal),+ $(,)?]) => {
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                let text = match self { $($variant => $text,)+ };
                Ok(ToSqlOutput::from(text))
            }
        }
        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                match value.as_str()? {
                    $($text => Ok($variant),)+
                    other => Err(FromSqlError::Other(format!("unknown {} `{other}`", $what).into())),
                }
            }
        }
    };
}

// Steps are spelled by `Step::as_str`/`Step::parse`, the same words as events and --json.
impl ToSql for Step {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Step {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        Step::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown step `{text}`").into()))
    }
}

text_enum!(StepOutcome, "step outcome", [
    StepOutcome::Ok => "ok",
    StepOutcome::Failed => "failed",
    StepOutcome::Unknown => "unknown",
    StepOutcome::Cancelled => "cancelled",
]);

text_enum!(TargetResult, "target result", [
    TargetResult::Succeeded => "succeeded",
    TargetResult::Failed => "failed",
    TargetResult::Skipped => "skipped",
    TargetResult::Cancelled => "cancelled",
]);

text_enum!(Level, "notice level", [
    Level::Info => "info",
    Level::Warning => "warning",
]);

/// Read only: states are written as SQL literals, and `Interrupted` is never stored (it is
/// `running` whose writer is gone).
impl FromSql for DispatchState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "running" => Ok(DispatchState::Running),
            "finished" => Ok(DispatchState::Finished),
            "cancelled" => Ok(DispatchState::Cancelled),
            other => Err(FromSqlError::Other(
                format!("unknown dispatch state `{other}`").into(),
            )),
        }
    }
}

pub(crate) fn stream_code(stream: Stream) -> i64 {
    match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    }
}

pub(crate) fn stream_from_code(code: i64) -> FromSqlResult<Stream> {
    match code {
        1 => Ok(Stream::Stdout),
        2 => Ok(Stream::Stderr),
        other => Err(FromSqlError::OutOfRange(other)),
    }
}

/// Sizes are `u64` in Rust and signed in SQLite; real sizes never come near the limit.
pub(crate) fn size_to_sql(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

pub(crate) fn size_from_sql(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(idx)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, value))
}

pub(crate) fn opt_size_from_sql(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<u64>> {
    match row.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(value) => u64::try_from(value)
            .map(Some)
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, value)),
    }
}

/// Paths are stored as text when they are UTF-8 (readable with `sqlite3`), else as their raw
/// bytes, so a resume finds the very bundle and config it started with.
pub(crate) fn path_to_sql(path: &std::path::Path) -> ToSqlOutput<'_> {
    use std::os::unix::ffi::OsStrExt;
    match path.to_str() {
        Some(text) => ToSqlOutput::from(text),
        None => ToSqlOutput::from(path.as_os_str().as_bytes()),
    }
}

pub(crate) fn path_from_sql(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let value = row.get_ref(idx)?;
    let bytes = match value {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes,
        other => {
            return Err(rusqlite::Error::InvalidColumnType(
                idx,
                "path".into(),
                other.data_type(),
            ));
        }
    };
    Ok(std::ffi::OsStr::from_bytes(bytes).into())
}
