//! The drop-folder queue of `--watch` (schema V2, table `watch_bundle`).
//!
//! Each state change is one durable transaction, written before the action it allows: a
//! bundle is recorded before it leaves the drop folder, its hash before it may be dispatched,
//! its dispatch id in the same transaction as the dispatch row, and where it is going before
//! it is moved there. A restart reads the open rows back ([`Journal::watch_open`]) and
//! finishes each from the step its record says it reached.

use super::codec::{path_from_sql, path_to_sql, size_from_sql, size_to_sql};
use super::db::{DbResult, Row, Tx, Value, params};
use super::error::{Context, JournalError};
use super::write::Durability;
use super::{Journal, NewDispatch, apply};
use crate::model::events::{Millis, now_ms};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a bundle of a watched folder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleState {
    /// Recorded; being moved out of the drop folder and hashed.
    Staging,
    /// Waiting for its turn (same hosts in arrival order, limit on dispatches at once).
    Queued,
    /// Its dispatch (`dispatch`) started.
    Dispatching,
    /// Shipped to every host: moved to `done/YYYY-MM-DD/`.
    Done,
    /// Same name and content as a bundle already done from this folder: not shipped again,
    /// moved to `done/YYYY-MM-DD/` with a reason file.
    Duplicate,
    /// Moved to `failed/` with a reason file.
    Failed,
    /// No rule matched its name: moved to `unmatched/` with a reason file.
    Unmatched,
    /// The file disappeared before it was staged (removed or renamed by someone else).
    Vanished,
}

impl BundleState {
    pub fn as_str(self) -> &'static str {
        match self {
            BundleState::Staging => "staging",
            BundleState::Queued => "queued",
            BundleState::Dispatching => "dispatching",
            BundleState::Done => "done",
            BundleState::Duplicate => "duplicate",
            BundleState::Failed => "failed",
            BundleState::Unmatched => "unmatched",
            BundleState::Vanished => "vanished",
        }
    }

    /// Staging, queued or dispatching: counts against the queue bound.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            BundleState::Staging | BundleState::Queued | BundleState::Dispatching
        )
    }
}

impl std::fmt::Display for BundleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

super::db::word_value!(BundleState, "bundle state", BundleState::as_str, |t| {
    [
        BundleState::Staging,
        BundleState::Queued,
        BundleState::Dispatching,
        BundleState::Done,
        BundleState::Duplicate,
        BundleState::Failed,
        BundleState::Unmatched,
        BundleState::Vanished,
    ]
    .into_iter()
    .find(|s| s.as_str() == t)
});

/// One bundle of a watched folder, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRow {
    /// Arrival order within the journal.
    pub id: i64,
    pub dir: PathBuf,
    pub name: String,
    pub size: u64,
    /// Modification time when it was found complete, nanoseconds since the epoch.
    pub mtime_ns: i64,
    pub sha256: Option<String>,
    pub state: BundleState,
    pub staged_path: PathBuf,
    pub rule: Option<String>,
    pub dispatch: Option<i64>,
    pub reason: Option<String>,
    pub archived_path: Option<PathBuf>,
    pub seen_at: Millis,
    pub queued_at: Option<Millis>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub archived_at: Option<Millis>,
}

pub(super) const COLUMNS: &str =
    "id, dir, name, size, mtime_ns, sha256, state, staged_path, rule, dispatch,
    reason, archived_path, seen_at, queued_at, started_at, finished_at, archived_at";

pub(super) fn row(r: &Row) -> DbResult<WatchRow> {
    let archived_path = match r.value(11) {
        Value::Null => None,
        _ => Some(path_from_sql(r, 11)?),
    };
    Ok(WatchRow {
        id: r.get(0)?,
        dir: path_from_sql(r, 1)?,
        name: r.get(2)?,
        size: size_from_sql(r, 3)?,
        mtime_ns: r.get(4)?,
        sha256: r.get(5)?,
        state: r.get(6)?,
        staged_path: path_from_sql(r, 7)?,
        rule: r.get(8)?,
        dispatch: r.get(9)?,
        reason: r.get(10)?,
        archived_path,
        seen_at: r.get(12)?,
        queued_at: r.get(13)?,
        started_at: r.get(14)?,
        finished_at: r.get(15)?,
        archived_at: r.get(16)?,
    })
}

/// Names the staged file of the new row `id` after its id (`ID-NAME` in `queue_dir`), so
/// two bundles of the same name never share one.
pub(super) fn set_staged_path(tx: &Tx<'_>, queue_dir: &Path, id: i64, name: &str) -> DbResult<()> {
    let staged = queue_dir.join(format!("{id}-{name}"));
    tx.execute(
        "UPDATE watch_bundle SET staged_path = ?2 WHERE id = ?1",
        params![id, path_to_sql(&staged)],
    )
    .map(drop)
}

fn one(tx: &Tx<'_>, id: i64) -> DbResult<Option<WatchRow>> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM watch_bundle WHERE id = ?1"),
        params![id],
        row,
    )
}

/// Rows of a query over `watch_bundle`.
/// Where [`Journal::watch_shipped`] looks.
#[derive(Debug, Clone, Copy)]
pub enum ShippedFrom<'a> {
    /// One drop folder (a watcher of its own).
    Folder(&'a Path),
    /// Any folder of the shared queue, for this rule.
    Rule(&'a str),
}

fn rows(tx: &Tx<'_>, sql: &str, params: &[&dyn super::db::ToValue]) -> DbResult<Vec<WatchRow>> {
    tx.query(sql, params)?.iter().map(row).collect()
}

/// An update that changed no row names a bundle this journal does not hold.
fn expect_one(path: &Path, id: i64, changed: usize) -> Result<(), JournalError> {
    if changed == 0 {
        return Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("watched bundle {id} is not in the journal"),
        });
    }
    Ok(())
}

impl Journal {
    /// Records a complete file of `dir` before anything is done to it, in state `staging`.
    /// Its staged path is `queue_dir/ID-NAME`, known (and stored) before the file moves.
    pub fn watch_admit(
        &self,
        dir: &Path,
        name: &str,
        size: u64,
        mtime_ns: i64,
        queue_dir: &Path,
    ) -> Result<WatchRow, JournalError> {
        self.lock().write(
            Durability::Durable,
            "recording a dropped bundle",
            |tx, path| {
                let op = "recording a dropped bundle";
                let id = tx
                    .query_row(
                        "INSERT INTO watch_bundle (dir, name, size, mtime_ns, state, staged_path, seen_at)
                         VALUES (?1, ?2, ?3, ?4, 'staging', '', ?5) RETURNING id",
                        params![path_to_sql(dir), name, size_to_sql(size), mtime_ns, now_ms()],
                        |r| r.get::<i64>(0),
                    )
                    .ctx(path, op)?
                    .expect("INSERT … RETURNING returns the row");
                set_staged_path(tx, queue_dir, id, name).ctx(path, op)?;
                one(tx, id)
                    .ctx(path, op)?
                    .ok_or_else(|| JournalError::Corrupt {
                        path: path.to_path_buf(),
                        detail: format!("watched bundle {id} vanished while recorded"),
                    })
            },
        )
    }

    /// The staged file was hashed: it may be dispatched. `size` and `mtime_ns` are the staged
    /// file's (the file the hash describes).
    pub fn watch_queued(
        &self,
        id: i64,
        sha256: &str,
        size: u64,
        mtime_ns: i64,
        rule: Option<&str>,
    ) -> Result<(), JournalError> {
        self.lock()
            .write(Durability::Durable, "queueing a bundle", |tx, path| {
                let changed = tx
                    .execute(
                        "UPDATE watch_bundle SET state = 'queued', sha256 = ?2, size = ?3,
                                mtime_ns = ?4, rule = ?5, queued_at = ?6
                         WHERE id = ?1",
                        params![id, sha256, size_to_sql(size), mtime_ns, rule, now_ms()],
                    )
                    .ctx(path, "queueing a bundle")?;
                expect_one(path, id, changed)
            })
    }

    /// Records the dispatch of bundle `id` and links them, in one transaction: there is never
    /// a dispatch of a watched bundle the queue does not know about, nor the reverse.
    pub fn watch_begin_dispatch(&self, id: i64, rec: &NewDispatch) -> Result<i64, JournalError> {
        let mut store = self.lock();
        let me = store.writer();
        store.write(Durability::Durable, "starting a dispatch", |tx, path| {
            let dispatch = apply::insert_dispatch(tx, path, rec, &me)?;
            let changed = tx
                .execute(
                    "UPDATE watch_bundle SET state = 'dispatching', dispatch = ?2, started_at = ?3
                     WHERE id = ?1",
                    params![id, dispatch, now_ms()],
                )
                .ctx(path, "starting a dispatch")?;
            expect_one(path, id, changed)?;
            Ok(dispatch)
        })
    }

    /// Records the final state of bundle `id` and where its file is about to go, before it
    /// moves. [`Journal::watch_archived`] confirms the move.
    pub fn watch_finish(
        &self,
        id: i64,
        state: BundleState,
        reason: Option<&str>,
        archived_path: &Path,
    ) -> Result<(), JournalError> {
        self.lock()
            .write(Durability::Durable, "finishing a bundle", |tx, path| {
                let changed = tx
                    .execute(
                        "UPDATE watch_bundle SET state = ?2, reason = ?3, archived_path = ?4,
                                finished_at = coalesce(finished_at, ?5)
                         WHERE id = ?1",
                        params![id, state, reason, path_to_sql(archived_path), now_ms()],
                    )
                    .ctx(path, "finishing a bundle")?;
                expect_one(path, id, changed)
            })
    }

    /// The file of bundle `id` is now at `archived_path`. A dispatch of it is pointed there
    /// too, so `dropship --resume ID` finds the file where it now lies.
    pub fn watch_archived(&self, id: i64, archived_path: &Path) -> Result<(), JournalError> {
        self.lock()
            .write(Durability::Durable, "recording a moved bundle", |tx, path| {
                let op = "recording a moved bundle";
                let changed = tx
                    .execute(
                        "UPDATE watch_bundle SET archived_path = ?2, archived_at = ?3, lease_until = NULL
                         WHERE id = ?1",
                        params![id, path_to_sql(archived_path), now_ms()],
                    )
                    .ctx(path, op)?;
                expect_one(path, id, changed)?;
                tx.execute(
                    "UPDATE dispatch SET bundle_path = ?2
                     WHERE id = (SELECT dispatch FROM watch_bundle WHERE id = ?1)",
                    params![id, path_to_sql(archived_path)],
                )
                .ctx(path, op)?;
                Ok(())
            })
    }

    /// A finished bundle whose file is no longer where it was staged: the move is closed,
    /// the state (done, failed, …) kept.
    pub fn watch_closed(&self, id: i64) -> Result<(), JournalError> {
        self.lock()
            .write(Durability::Durable, "closing a moved bundle", |tx, path| {
                let changed = tx
                    .execute(
                        "UPDATE watch_bundle SET archived_at = ?2 WHERE id = ?1",
                        params![id, now_ms()],
                    )
                    .ctx(path, "closing a moved bundle")?;
                expect_one(path, id, changed)
            })
    }

    /// The bundle's file is gone before it was staged: nothing to ship, nothing to move.
    pub fn watch_vanished(&self, id: i64, reason: &str) -> Result<(), JournalError> {
        self.lock()
            .write(Durability::Durable, "finishing a bundle", |tx, path| {
                let changed = tx
                    .execute(
                        "UPDATE watch_bundle SET state = 'vanished', reason = ?2, finished_at = ?3,
                                archived_at = ?3
                         WHERE id = ?1",
                        params![id, reason, now_ms()],
                    )
                    .ctx(path, "finishing a bundle")?;
                expect_one(path, id, changed)
            })
    }

    /// Bundles of `dir` a restart must pick up, in arrival order: not finished, or finished
    /// and not yet moved.
    pub fn watch_open(&self, dir: &Path) -> Result<Vec<WatchRow>, JournalError> {
        self.read(|conn, path| {
            let op = "reading the watch queue";
            rows(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM watch_bundle
                     WHERE dir = ?1 AND (state IN ('staging', 'queued', 'dispatching')
                                         OR archived_at IS NULL)
                     ORDER BY id"
                ),
                params![path_to_sql(dir)],
            )
            .ctx(path, op)
        })
    }

    /// The bundle with this name and content shipped (`done`) from `from`, if any, other
    /// than `except`: the same bundle dropped twice is shipped once.
    pub fn watch_shipped(
        &self,
        from: ShippedFrom<'_>,
        name: &str,
        sha256: &str,
        except: i64,
    ) -> Result<Option<WatchRow>, JournalError> {
        let (column, key) = match from {
            ShippedFrom::Folder(dir) => ("dir", path_to_sql(dir)),
            ShippedFrom::Rule(rule) => ("rule", Value::Text(rule.to_owned())),
        };
        self.read(|conn, path| {
            conn.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM watch_bundle
                     WHERE {column} = ?1 AND name = ?2 AND sha256 = ?3 AND state = 'done'
                       AND id != ?4
                     ORDER BY id LIMIT 1"
                ),
                params![key, name, sha256, except],
                row,
            )
            .ctx(path, "looking for a shipped bundle")
        })
    }

    /// One bundle by id.
    pub fn watch_bundle(&self, id: i64) -> Result<Option<WatchRow>, JournalError> {
        self.read(|conn, path| one(conn, id).ctx(path, "reading a bundle"))
    }

    /// The latest `limit` bundles of `dir`, newest first: the console's Packages pane.
    pub fn watch_bundles(&self, dir: &Path, limit: usize) -> Result<Vec<WatchRow>, JournalError> {
        self.read(|conn, path| {
            let op = "reading the watch queue";
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            rows(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM watch_bundle WHERE dir = ?1 ORDER BY id DESC LIMIT ?2"
                ),
                params![path_to_sql(dir), limit],
            )
            .ctx(path, op)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &Path) -> NewDispatch {
        NewDispatch {
            bundle: "app-1.tgz".into(),
            bundle_path: path.to_path_buf(),
            bundle_sha256: "ab".into(),
            bundle_size: 3,
            rule: "app".into(),
            config_path: "/etc/dispatch.cfg".into(),
            timestamp: "20240101_000000".into(),
            hosts: vec!["h1".into()],
            started_at: 1,
        }
    }

    /// Killed between the move to `done/` and its confirmation, then the file removed from
    /// the shelf: closing the move keeps it done, so dropping it again is a duplicate.
    #[test]
    fn closing_a_lost_move_keeps_a_done_bundle_done() {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::open(&tmp.path().join("j.sqlite")).unwrap();
        let dir = Path::new("/drop");
        let a = j
            .watch_admit(dir, "app-1.tgz", 3, 7, Path::new("/drop/.dropship/queue"))
            .unwrap();
        j.watch_queued(a.id, "ab", 3, 8, Some("app")).unwrap();
        j.watch_begin_dispatch(a.id, &rec(&a.staged_path)).unwrap();
        let done = Path::new("/drop/.dropship/done/2024-01-01/app-1.tgz");
        j.watch_finish(a.id, BundleState::Done, None, done).unwrap();
        j.watch_closed(a.id).unwrap();
        assert!(j.watch_open(dir).unwrap().is_empty());
        assert_eq!(
            j.watch_bundle(a.id).unwrap().unwrap().state,
            BundleState::Done
        );
        let shipped = j
            .watch_shipped(ShippedFrom::Folder(dir), "app-1.tgz", "ab", -1)
            .unwrap();
        assert_eq!(shipped.map(|r| r.id), Some(a.id));
    }
}
