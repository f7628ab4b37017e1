//! The journal's two backends for tests that run once on each: an SQLite file, or a new
//! database on the [`super::postgres::shared`] server.

use std::path::PathBuf;

/// Which journal a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh journal: a file in a new directory, or a new database on the shared server.
pub fn temp_journal(b: Backend) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = match b {
        // A missing parent directory is created by `open`.
        Backend::Sqlite => dir.path().join("state").join("journal.sqlite"),
        Backend::Postgres => {
            let server = super::postgres::shared().expect("PostgreSQL is available");
            PathBuf::from(server.url(super::postgres::PG_USER, &server.new_database()))
        }
    };
    (dir, path)
}

/// `mod sqlite` and `mod postgres`, one `#[test]` per backend for each test function named
/// (each takes a [`Backend`]; the calling file imports `Backend` and has `mod support`).
/// The PostgreSQL tests pass quietly where no server can run (see `postgres::shared`).
#[allow(unused_macros)] // only the journal suites use it; every test binary compiles it
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(super::Backend::Sqlite)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                if super::support::postgres::shared().is_some() {
                    super::$name(super::Backend::Postgres)
                }
            })*
        }
    };
}
pub(crate) use on_both_backends;
