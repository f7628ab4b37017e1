//! Journal errors. Each names the journal file and what dropship was doing, and says what the
//! user can do about it: the journal sits in the state directory where users rarely look, so
//! "database is locked" alone would leave them guessing which file and which program.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "cannot create the journal directory {path}: {source}\n  help: check its permissions, or point XDG_STATE_HOME somewhere writable"
    )]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot open journal {path}: {detail}\n  help: check that the file and its directory are readable and writable by you"
    )]
    CannotOpen { path: PathBuf, detail: String },
    #[error(
        "{path} is not a dropship journal ({detail})\n  help: move the file aside; dropship creates a new journal there on the next run"
    )]
    NotAJournal { path: PathBuf, detail: String },
    #[error(
        "journal {path} has schema version {found}, which a dropship must know at least up to version {needs} to write (this one knows up to {known})\n  help: upgrade dropship, or move the file aside to start a new journal"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        /// The oldest schema a dropship may write this journal with.
        needs: i64,
        known: i64,
    },
    #[error(
        "journal {path} is locked by another process (gave up after {secs}s while {op})\n  help: wait for the other dropship to finish, or stop it"
    )]
    Locked {
        path: PathBuf,
        op: &'static str,
        secs: u64,
    },
    #[error(
        "journal {path}: the disk is full while {op}\n  help: free space on that file system; the journal needs it to record dispatches"
    )]
    DiskFull { path: PathBuf, op: &'static str },
    #[error(
        "journal {path}: dispatch {id} does not exist\n  help: list dispatches with `dropship --history`"
    )]
    NoSuchDispatch { path: PathBuf, id: i64 },
    #[error("journal {path}: dispatch {id} has no target `{host}`")]
    NoSuchTarget {
        path: PathBuf,
        id: i64,
        host: String,
    },
    #[error("journal {path}: dispatch {id} never started step `{step}` on `{host}`")]
    NoSuchStep {
        path: PathBuf,
        id: i64,
        host: String,
        step: String,
    },
    #[error(
        "dispatch {id} is still running in process {pid}\n  help: wait for it to finish, or stop that process and resume again"
    )]
    StillRunning { id: i64, pid: i64 },
    #[error("dispatch {id} has already finished: there is nothing to resume")]
    AlreadyFinished { id: i64 },
    #[error(
        "journal {path} holds a record dropship cannot read ({detail})\n  help: the file was changed by another program; move it aside to start a new journal"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("journal {path}: {op} failed: {source}")]
    Sqlite {
        path: PathBuf,
        op: &'static str,
        source: Box<rusqlite::Error>,
    },
    #[error(
        "--journal: not a usable PostgreSQL URL: {detail}\n  help: write it as postgres://USER@HOST[:PORT]/DB, optionally with ?sslmode=disable or ?sslrootcert=FILE"
    )]
    BadUrl { detail: String },
    #[error("journal credentials: {detail}")]
    Credentials { detail: String },
    #[error(
        "cannot reach the journal {url}: {detail}\n  help: check that PostgreSQL runs there and accepts this user (pg_hba.conf), and the password in ~/.pgpass"
    )]
    Unreachable { url: String, detail: String },
    #[error(
        "journal {path}: the database refused a write while {op} ({detail})\n  help: dropship needs a role that may create tables and write rows in that database; ask its administrator for one, or point --journal at another database"
    )]
    ReadOnly {
        path: PathBuf,
        op: &'static str,
        detail: String,
    },
    #[error("journal {path}: {op} failed: {detail}")]
    Postgres {
        path: PathBuf,
        op: &'static str,
        detail: String,
        /// Whether the connection broke (the server went away) rather than a query failed.
        lost: bool,
    },
}

/// A connection attempt that failed: the server is down, unreachable, refuses the user, or
/// fails the TLS check. The password is never part of the message.
pub(crate) fn pg_connect_error(url: &str, e: &postgres::Error) -> JournalError {
    JournalError::Unreachable {
        url: url.to_owned(),
        detail: super::db::pg_message(e),
    }
}

impl JournalError {
    /// Whether the journal's server went away (the write may succeed once it is back).
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            JournalError::Postgres { lost: true, .. } | JournalError::Unreachable { .. }
        )
    }
}

/// Turns an SQLite error into the journal error a user can act on. Busy, full, not-a-database
/// and cannot-open each have their own remedy; anything else keeps SQLite's message.
pub(crate) fn classify(
    path: &std::path::Path,
    op: &'static str,
    error: super::db::DbError,
) -> JournalError {
    use super::db::DbError;
    match error {
        DbError::Sqlite(e) => classify_sqlite(path, op, e),
        DbError::Decode { idx, detail } => JournalError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("column {idx}: {detail}"),
        },
        DbError::Pg(e) => classify_pg(path, op, &e),
        DbError::Gone => JournalError::Postgres {
            path: path.to_path_buf(),
            op,
            detail: error_gone(),
            lost: true,
        },
    }
}

/// Read-only roles and read-only servers (a hot standby) get their own remedy; a broken
/// connection is marked so the writer can spool and retry.
fn error_gone() -> String {
    super::db::DbError::Gone.to_string()
}

fn classify_pg(path: &std::path::Path, op: &'static str, e: &postgres::Error) -> JournalError {
    use postgres::error::SqlState;
    let path = path.to_path_buf();
    let detail = super::db::pg_message(e);
    match e.code() {
        Some(c)
            if *c == SqlState::INSUFFICIENT_PRIVILEGE
                || *c == SqlState::READ_ONLY_SQL_TRANSACTION =>
        {
            JournalError::ReadOnly { path, op, detail }
        }
        Some(c) if *c == SqlState::DISK_FULL => JournalError::DiskFull { path, op },
        Some(c) if c.code().starts_with("08") || c.code().starts_with("57P") => {
            JournalError::Postgres {
                path,
                op,
                detail,
                lost: true,
            }
        }
        Some(_) => JournalError::Postgres {
            path,
            op,
            detail,
            lost: false,
        },
        None => JournalError::Postgres {
            path,
            op,
            detail,
            lost: e.is_closed()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
        },
    }
}

fn classify_sqlite(
    path: &std::path::Path,
    op: &'static str,
    error: rusqlite::Error,
) -> JournalError {
    use rusqlite::ErrorCode;
    let path = path.to_path_buf();
    if matches!(
        error,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
    ) {
        return JournalError::Corrupt {
            path,
            detail: error.to_string(),
        };
    }
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => JournalError::Locked {
            path,
            op,
            secs: super::BUSY_TIMEOUT.as_secs(),
        },
        Some(ErrorCode::NotADatabase) => JournalError::NotAJournal {
            path,
            detail: "the file is not an SQLite database".into(),
        },
        Some(ErrorCode::DiskFull) => JournalError::DiskFull { path, op },
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            JournalError::CannotOpen {
                path,
                detail: error.to_string(),
            }
        }
        _ => JournalError::Sqlite {
            path,
            op,
            source: Box::new(error),
        },
    }
}

/// `.ctx(path, "doing what")` on SQLite results, for errors that name the file and the
/// operation.
pub(crate) trait Context<T> {
    fn ctx(self, path: &std::path::Path, op: &'static str) -> Result<T, JournalError>;
}

impl<T> Context<T> for super::db::DbResult<T> {
    fn ctx(self, path: &std::path::Path, op: &'static str) -> Result<T, JournalError> {
        self.map_err(|e| classify(path, op, e))
    }
}

impl JournalError {
    /// The warning the user sees when recording an event of `dispatch` failed: without it,
    /// history and `--resume` silently miss what the screen showed. Front ends show the
    /// first failure of a run this way; the log file has every one.
    pub fn notice(&self, dispatch: i64) -> crate::model::events::Event {
        crate::model::events::Event::Notice {
            dispatch,
            at: crate::model::events::now_ms(),
            host: None,
            level: crate::model::events::Level::Warning,
            message: format!(
                "journal write failed: {self}\n  history and --resume may miss this dispatch; further failures are only in the log file ({})",
                crate::logfile::path().display()
            ),
        }
    }
}
