//! Opening the file: is it ours, is it a version we understand, and bring it to the current
//! schema.
//!
//! The file is marked with `PRAGMA application_id` so dropship never "migrates" an unrelated
//! SQLite database it was pointed at, and versioned with `PRAGMA user_version`: migration `n`
//! (1-based) takes the schema from version `n - 1` to `n`.
//!
//! # Two dropship versions on one journal
//! A team upgrades one machine at a time, so an older dropship meets a journal a newer one
//! migrated. Most migrations only add what older code never reads or writes (a column, a
//! table); an older dropship keeps working next to them. A few change what rows mean, and an
//! older dropship writing next to them would misread or bypass them: those are listed in
//! [`BREAKING`]. The journal records the oldest schema that may still write it
//! (`dropship_journal.compatible`); a dropship older than that is refused when it opens the
//! journal, and a running one when it next begins a dispatch, with a message that says to
//! upgrade. Nothing is ever "migrated down".
//!
//! One schema for both backends: the migrations below are written in SQLite's spelling
//! and [`postgres_ddl`] rewrites the few words PostgreSQL spells differently (`INTEGER` is
//! 64-bit in SQLite and becomes `BIGINT`; an `INTEGER PRIMARY KEY` becomes an identity
//! column; `WITHOUT ROWID` is dropped), so a migration appended to [`MIGRATIONS`] in that
//! spelling serves both. On PostgreSQL the version lives in the one-row table
//! `dropship_journal` and migrations run under an advisory lock, so two dropships starting
//! at once do not both migrate.

use super::db::{Conn, DbError, Mode, PgConn, Tx};
use super::error::{JournalError, classify};
use super::location::PgTarget;
use std::path::Path;

/// "DRSH": marks a dropship journal in the SQLite header.
const APPLICATION_ID: i32 = 0x4452_5348;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

/// The schema version this dropship writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Versions whose migration an older dropship cannot write next to. V1 is everything; V3 makes
/// ad-hoc runs dispatch rows told apart by `kind`, which an older `--resume` would take for a
/// dispatch; V5 adds only columns, but their meaning is the shared queue's exactly-once: an
/// older watcher next to it neither claims nor respects claims, so a bundle dropped into its
/// folder and another's would ship twice. V2 (the drop-folder table) and V4 (who and where)
/// only add.
const BREAKING: &[i64] = &[1, 3, 5];

/// The oldest schema that may write a journal at `version`.
fn oldest_writer(version: i64) -> i64 {
    BREAKING
        .iter()
        .copied()
        .filter(|&v| v <= version)
        .max()
        .unwrap_or(0)
}

/// Version 1. Targets and steps are keyed by (dispatch, host) so the engine's events, which
/// name hosts, map to rows without a lookup table. A step may run more than once in one
/// dispatch (re-run by `--resume --force`), so each run is its own row and "the step" means
/// its latest run. Output lines hang off the step run; the per-run line count and the count
/// of lines not stored live on the step row so a bound check never counts rows.
const V1: &str = "
CREATE TABLE dispatch (
    id            INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: users type these ids
    bundle        TEXT    NOT NULL,
    bundle_path   TEXT    NOT NULL,
    bundle_sha256 TEXT    NOT NULL,
    bundle_size   INTEGER NOT NULL,
    rule          TEXT    NOT NULL,
    config_path   TEXT    NOT NULL,
    stamp         TEXT    NOT NULL, -- the pinned {timestamp}, so a resume rebuilds the same plan
    state         TEXT    NOT NULL CHECK (state IN ('running', 'finished', 'cancelled')),
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    writer_pid    INTEGER NOT NULL,
    writer_marker TEXT    NOT NULL  -- boot id + process start time: tells a live writer from a dead one
);
CREATE TABLE target (
    dispatch        INTEGER NOT NULL REFERENCES dispatch (id) ON DELETE CASCADE,
    host            TEXT    NOT NULL,
    position        INTEGER NOT NULL,
    result          TEXT CHECK (result IN ('succeeded', 'failed', 'skipped', 'cancelled')),
    failed_step     TEXT,
    error           TEXT,
    started_at      INTEGER,
    finished_at     INTEGER,
    duration_ms     INTEGER,
    upload_attempts INTEGER NOT NULL DEFAULT 0,
    verified_size   INTEGER, -- set only once the uploaded file was verified on the host
    verified_sha256 TEXT,
    PRIMARY KEY (dispatch, host)
) WITHOUT ROWID;
CREATE INDEX target_by_host ON target (host, finished_at);
CREATE TABLE step (
    id            INTEGER PRIMARY KEY,
    dispatch      INTEGER NOT NULL,
    host          TEXT    NOT NULL,
    step          TEXT    NOT NULL,
    command       TEXT,
    started_at    INTEGER NOT NULL,
    outcome       TEXT CHECK (outcome IN ('ok', 'failed', 'unknown', 'cancelled')), -- NULL: never finished
    exit_code     INTEGER,
    error         TEXT,
    finished_at   INTEGER,
    duration_ms   INTEGER,
    lines         INTEGER NOT NULL DEFAULT 0,
    dropped_lines INTEGER NOT NULL DEFAULT 0,
    FOREIGN KEY (dispatch, host) REFERENCES target (dispatch, host) ON DELETE CASCADE
);
CREATE INDEX step_by_target ON step (dispatch, host, step);
CREATE TABLE output (
    id     INTEGER PRIMARY KEY,
    step   INTEGER NOT NULL REFERENCES step (id) ON DELETE CASCADE,
    at     INTEGER NOT NULL,
    stream INTEGER NOT NULL CHECK (stream IN (1, 2)), -- 1 stdout, 2 stderr
    line   TEXT    NOT NULL
);
CREATE INDEX output_by_step ON output (step);
CREATE TABLE notice (
    id       INTEGER PRIMARY KEY,
    dispatch INTEGER NOT NULL REFERENCES dispatch (id) ON DELETE CASCADE,
    at       INTEGER NOT NULL,
    host     TEXT,
    level    TEXT    NOT NULL,
    message  TEXT    NOT NULL
);
CREATE INDEX notice_by_dispatch ON notice (dispatch);
";

/// Version 2: the drop-folder queue of `--watch`. A row is written when a file in the folder
/// is complete and *before* it is moved out of the folder, hashed or dispatched, so a bundle
/// is never in flight without a record; the row id is the arrival order. `staged_path` is
/// where the file waits (`DIR/.dropship/queue/ID-NAME`) and is known before the move, so a
/// restart finds it whichever side of the move the process died on. `archived_at` stays NULL
/// until the file reached `archived_path` (done/, failed/, unmatched/): a final state with no
/// `archived_at` is a move a restart must finish. "Already shipped" is a `done` row with the
/// same folder, name and SHA-256.
const V2: &str = "
CREATE TABLE watch_bundle (
    id            INTEGER PRIMARY KEY AUTOINCREMENT, -- arrival order; never reused
    dir           TEXT    NOT NULL, -- the watched folder, canonical
    name          TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    mtime_ns      INTEGER NOT NULL,
    sha256        TEXT,             -- NULL only while staging
    state         TEXT    NOT NULL CHECK (state IN ('staging', 'queued', 'dispatching', 'done',
                                  'duplicate', 'failed', 'unmatched', 'vanished')),
    staged_path   TEXT    NOT NULL,
    rule          TEXT,
    dispatch      INTEGER REFERENCES dispatch (id),
    reason        TEXT,
    archived_path TEXT,
    seen_at       INTEGER NOT NULL,
    queued_at     INTEGER,
    started_at    INTEGER,
    finished_at   INTEGER,
    archived_at   INTEGER
);
CREATE INDEX watch_bundle_open ON watch_bundle (dir, state);
CREATE INDEX watch_bundle_content ON watch_bundle (dir, name, sha256);
CREATE INDEX watch_bundle_dispatch ON watch_bundle (dispatch);
";

/// Version 3: what a dispatch row is. Ad-hoc runs (`--run`) and a rule's named actions
/// (`--action`) are journaled as dispatch rows (their targets, steps and output lines are
/// those of a dispatch), told apart by `kind`; `command` is the command as typed (or the
/// action's as configured), `action` the action's name. Rows written before are dispatches
/// or rollbacks (`kind` 'dispatch'). Plain `ALTER TABLE ... ADD COLUMN`, so the same text
/// serves PostgreSQL.
const V3: &str = "
ALTER TABLE dispatch ADD COLUMN kind TEXT NOT NULL DEFAULT 'dispatch';
ALTER TABLE dispatch ADD COLUMN command TEXT;
ALTER TABLE dispatch ADD COLUMN action TEXT;
";

/// Version 4: who started a dispatch and from which machine (the OS user name and the
/// hostname), so a team's shared journal says who shipped what from where. NULL on rows
/// written before, which `--history` shows as `-`. Portable like V3.
const V4: &str = "
ALTER TABLE dispatch ADD COLUMN started_by TEXT;
ALTER TABLE dispatch ADD COLUMN started_on TEXT;
";

/// Version 5: the shared drop-folder queue (several `--watch` processes on one PostgreSQL
/// journal). `holder` names the watcher that holds a bundle (`user@host pid N #TOKEN`) and
/// `lease_until` (milliseconds since the epoch, on the database's clock) until when: the
/// holder renews it while it works on the bundle, and once it lapses (the holder died) any
/// other watcher may take the bundle over. A bundle waiting in the queue has no lease.
/// `claims` counts how often it was claimed from the queue (1, plus one per takeover; holding
/// a file while it is moved into the queue is not a claim). Rows written before
/// have no lease, as a single watcher never needs one. Portable like V3.
const V5: &str = "
ALTER TABLE watch_bundle ADD COLUMN holder TEXT;
ALTER TABLE watch_bundle ADD COLUMN lease_until INTEGER;
ALTER TABLE watch_bundle ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
CREATE INDEX watch_bundle_lease ON watch_bundle (state, lease_until);
CREATE INDEX watch_bundle_key ON watch_bundle (name, sha256);
";

/// Opens `path`, creating it and its directory if needed, and leaves it at [`SCHEMA_VERSION`].
pub(crate) fn open(path: &Path) -> Result<Conn, JournalError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let conn = rusqlite::Connection::open(path).map_err(|e| classify(path, "opening", e.into()))?;
    conn.busy_timeout(super::BUSY_TIMEOUT)
        .map_err(|e| classify(path, "opening", e.into()))?;
    // Identify before configuring: switching an unrelated database to WAL would change it.
    let version = identify(&conn, path)?;
    configure(&conn).map_err(|e| classify(path, "configuring", e.into()))?;
    let mut conn = Conn::Sqlite { conn, full: true };
    if version < SCHEMA_VERSION {
        migrate(&mut conn, path)?;
    }
    Ok(conn)
}

/// Connects to the PostgreSQL journal `target` and leaves it at [`SCHEMA_VERSION`].
pub(crate) fn open_postgres(target: &PgTarget, shown: &Path) -> Result<Conn, JournalError> {
    let owned = target.clone();
    let pg = PgConn::start(
        move || super::location::connect(&owned),
        |e| JournalError::Unreachable {
            url: shown.display().to_string(),
            detail: format!("cannot start a thread: {e}"),
        },
    )?;
    let mut conn = Conn::Pg(pg);
    let version = {
        let tx = conn
            .begin(Mode::Read)
            .map_err(|e| classify(shown, "reading the journal version", e))?;
        let version = pg_version(&tx, shown)?;
        if version > SCHEMA_VERSION {
            check_writable(&tx, shown)?;
        }
        version
    };
    if version < SCHEMA_VERSION {
        migrate(&mut conn, shown)?;
    }
    Ok(conn)
}

/// The version recorded in `dropship_journal`; 0 for an empty database. A database that
/// already holds a `dispatch` table of something else is not ours to migrate.
fn pg_version(tx: &Tx<'_>, shown: &Path) -> Result<i64, JournalError> {
    let op = "reading the journal version";
    let (ours, foreign): (i64, i64) = tx
        .query_row(
            "SELECT CASE WHEN to_regclass('dropship_journal') IS NULL THEN 0 ELSE 1 END,
                    CASE WHEN to_regclass('dispatch') IS NULL THEN 0 ELSE 1 END",
            &[],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| classify(shown, op, e))?
        .unwrap_or((0, 0));
    if ours == 0 {
        if foreign != 0 {
            return Err(JournalError::NotAJournal {
                path: shown.to_path_buf(),
                detail: "the database holds tables of another program".into(),
            });
        }
        return Ok(0);
    }
    tx.query_row("SELECT version FROM dropship_journal", &[], |r| r.get(0))
        .map_err(|e| classify(shown, op, e))
        .map(|v| v.unwrap_or(0))
}

/// The file's schema version, if it is a dropship journal (or empty) this dropship can read.
fn identify(conn: &rusqlite::Connection, path: &Path) -> Result<i64, JournalError> {
    let (app_id, version, tables): (i32, i64, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id),
                    (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM sqlite_schema)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(|e| classify(path, "reading the journal header", e.into()))?;
    if app_id == 0 && version == 0 && tables == 0 {
        return Ok(0);
    }
    if app_id != APPLICATION_ID {
        return Err(JournalError::NotAJournal {
            path: path.to_path_buf(),
            detail: "it is an SQLite database of another program".into(),
        });
    }
    if version > SCHEMA_VERSION {
        let compatible = conn
            .query_row("SELECT compatible FROM dropship_journal", [], |r| r.get(0))
            .ok();
        check_version(path, version, compatible)?;
    }
    Ok(version)
}

/// Refuses a journal at `found` that this dropship may not write: one newer than it knows
/// whose `compatible` (the oldest schema that may write it; unknown means `found`) is newer
/// too.
fn check_version(path: &Path, found: i64, compatible: Option<i64>) -> Result<(), JournalError> {
    let needs = compatible.unwrap_or(found);
    if found > SCHEMA_VERSION && needs > SCHEMA_VERSION {
        return Err(JournalError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            needs,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// The journal's version and the oldest schema that may write it, read in `tx`.
fn version_and_compatible(tx: &Tx<'_>) -> Result<(i64, Option<i64>), DbError> {
    let version = match tx.dialect() {
        super::db::Dialect::Sqlite => tx
            .query_row("SELECT user_version FROM pragma_user_version", &[], |r| {
                r.get(0)
            })?
            .unwrap_or(0),
        super::db::Dialect::Postgres => tx
            .query_row("SELECT version FROM dropship_journal", &[], |r| r.get(0))?
            .unwrap_or(0),
    };
    if version <= SCHEMA_VERSION {
        return Ok((version, None));
    }
    // A journal migrated by a dropship from before this rule has no `compatible`.
    let compatible = tx
        .query_row("SELECT compatible FROM dropship_journal", &[], |r| {
            r.get::<Option<i64>>(0)
        })
        .ok()
        .flatten()
        .flatten();
    Ok((version, compatible))
}

/// Refuses to begin a dispatch on a journal a newer dropship migrated, since this process
/// opened it, to a schema this one may not write.
pub(crate) fn check_writable(tx: &Tx<'_>, path: &Path) -> Result<(), JournalError> {
    let (version, compatible) =
        version_and_compatible(tx).map_err(|e| classify(path, "reading the journal version", e))?;
    check_version(path, version, compatible)
}

/// WAL lets readers (`--history`, the console) work while a dispatch writes, and lets two
/// dropship processes share the file. `synchronous` is switched per transaction by the writer
/// (see [`super::Journal`]); FULL is the safe default for anything not batched.
fn configure(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    // A file system without shared memory (some network mounts) stays in rollback mode:
    // slower under concurrency, still correct.
    conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Truncate the WAL after checkpoints so a million-line dispatch does not leave it huge.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    Ok(())
}

/// Applies the missing migrations in one transaction. Another process may be migrating the
/// same journal right now, so the version is read again under the write lock.
fn migrate(conn: &mut Conn, path: &Path) -> Result<(), JournalError> {
    let err = |e: DbError| classify(path, "upgrading the journal schema", e);
    let tx = conn.begin(Mode::Write).map_err(err)?;
    let version = match tx.dialect() {
        super::db::Dialect::Sqlite => tx
            .query_row("SELECT user_version FROM pragma_user_version", &[], |r| {
                r.get(0)
            })
            .map_err(err)?
            .unwrap_or(0),
        super::db::Dialect::Postgres => {
            tx.query_row(
                "SELECT pg_advisory_xact_lock(?1)::text",
                super::db::params![i64::from(APPLICATION_ID)],
                |_| Ok(()),
            )
            .map_err(err)?;
            tx.batch(
                "CREATE TABLE IF NOT EXISTS dropship_journal (
                     one     BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
                     version BIGINT  NOT NULL
                 );
                 ALTER TABLE dropship_journal ADD COLUMN IF NOT EXISTS compatible BIGINT",
            )
            .map_err(err)?;
            pg_version(&tx, path)?
        }
    };
    if version >= SCHEMA_VERSION {
        // Another dropship got there first (perhaps a newer one: may this one write it?).
        check_writable(&tx, path)?;
        return tx.commit().map_err(err);
    }
    let done = usize::try_from(version).unwrap_or(0);
    for migration in &MIGRATIONS[done..] {
        match tx.dialect() {
            super::db::Dialect::Sqlite => tx.batch(migration),
            super::db::Dialect::Postgres => tx.batch(&postgres_ddl(migration)),
        }
        .map_err(err)?;
    }
    if tx.dialect() == super::db::Dialect::Sqlite {
        tx.batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};
             CREATE TABLE IF NOT EXISTS dropship_journal (
                 one        BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
                 version    INTEGER NOT NULL,
                 compatible INTEGER
             );"
        ))
        .map_err(err)?;
    }
    tx.execute(
        "INSERT INTO dropship_journal (version, compatible) VALUES (?1, ?2)
         ON CONFLICT (one) DO UPDATE SET version = excluded.version, compatible = excluded.compatible",
        super::db::params![SCHEMA_VERSION, oldest_writer(SCHEMA_VERSION)],
    )
    .map_err(err)?;
    tx.commit().map_err(err)
}

/// SQLite's spelling of a migration in PostgreSQL's: 64-bit integers, identity keys, no
/// `WITHOUT ROWID`, `BYTEA` for blobs.
pub(crate) fn postgres_ddl(sql: &str) -> String {
    use std::sync::LazyLock;
    static REWRITES: LazyLock<Vec<(regex::Regex, &str)>> = LazyLock::new(|| {
        [
            (
                r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?\b",
                "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            ),
            (r"\bINTEGER\b", "BIGINT"),
            (r"\)\s*WITHOUT\s+ROWID\b", ")"),
            (r"\bBLOB\b", "BYTEA"),
        ]
        .into_iter()
        .map(|(re, with)| (regex::Regex::new(re).expect("valid regex"), with))
        .collect()
    });
    REWRITES.iter().fold(sql.to_owned(), |sql, (re, with)| {
        re.replace_all(&sql, *with).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_spelling_of_the_schema() {
        let ddl = postgres_ddl(V1);
        assert!(ddl.contains("id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"));
        assert!(ddl.contains("bundle_size   BIGINT NOT NULL"));
        assert!(!ddl.contains("INTEGER") && !ddl.contains("ROWID"), "{ddl}");
    }
}
