//! The shared drop-folder queue (schema V5): several `--watch` processes, on one machine or
//! several, take bundles from the one `watch_bundle` table of a PostgreSQL journal, each
//! bundle exactly once.
//!
//! A bundle is *held* by one watcher at a time, under a lease (`holder`, `lease_until`) on the
//! database's clock, so machines whose clocks disagree still agree on when a lease lapsed:
//! - the watcher that finds a file in its folder holds it while it moves it into
//!   `DIR/.dropship/queue/`, hashes and plans it; then it lets it go into the queue (no lease);
//! - any watcher may *claim* a queued bundle, in one transaction that locks its row with
//!   `SELECT … FOR UPDATE SKIP LOCKED` (two watchers never wait on each other: the loser
//!   skips to the next bundle), and holds it until its file is archived;
//! - the holder renews every lease it holds ([`Journal::watch_renew`]); a holder that died
//!   stops renewing, and once its leases lapse other watchers claim those bundles and finish
//!   them from where the journal says they stood (`resume::left_to_do`).
//!
//! What identifies a bundle in the queue is its rule, name and SHA-256: while one row of a
//! given identity is held, no other row of the same identity can be claimed (a per-identity
//! advisory lock makes that check and the claim one step), and once one was shipped the
//! others are duplicates. So the same bundle seen by two watchers of one shared folder, or
//! dropped into two watchers' own folders, is shipped once. On SQLite the write transaction
//! already holds the whole database, which serialises the same steps.

use super::codec::path_to_sql;
use super::db::{Dialect, Tx, params};
use super::error::{Context, JournalError};
use super::watch::{COLUMNS, row as watch_row, set_staged_path};
use super::write::Durability;
use super::{Journal, WatchRow};
use std::path::Path;
use std::time::Duration;

/// Who holds what, for how long: one per watcher process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `user@host pid N #TOKEN`: readable by people, unique per watcher run.
    pub holder: String,
    pub length: Duration,
}

impl Lease {
    /// A lease for this process, of `length`.
    pub fn new(holder_name: &str, length: Duration) -> Lease {
        let token = hex::encode(rand::random::<[u8; 4]>());
        Lease {
            holder: format!("{holder_name} #{token}"),
            length,
        }
    }

    fn ms(&self) -> i64 {
        i64::try_from(self.length.as_millis()).unwrap_or(i64::MAX / 2)
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// It is this watcher's now.
    Taken(Box<WatchRow>),
    /// Another watcher holds it (or a bundle of the same identity), or it moved on.
    Busy,
}

/// Now on the database's clock, in milliseconds since the epoch: leases of watchers on
/// different machines are judged by one clock.
fn db_now(tx: &Tx<'_>) -> super::db::DbResult<i64> {
    match tx.dialect() {
        Dialect::Sqlite => Ok(crate::model::events::now_ms()),
        Dialect::Postgres => tx
            .query_row(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8",
                &[],
                |r| r.get::<i64>(0),
            )
            .map(Option::unwrap_or_default),
    }
}

/// Serialises, until the transaction ends, every transaction that takes the same `key`
/// (PostgreSQL); SQLite's write transaction already excludes every other writer.
fn key_lock(tx: &Tx<'_>, key: &str) -> super::db::DbResult<()> {
    if tx.dialect() == Dialect::Postgres {
        tx.query_row(
            "SELECT pg_advisory_xact_lock(hashtextextended(?1, 17))::text",
            params![key],
            |_| Ok(()),
        )?;
    }
    Ok(())
}

/// ` FOR UPDATE SKIP LOCKED` on PostgreSQL: a row another watcher is claiming is skipped,
/// never waited for.
fn skip_locked(tx: &Tx<'_>) -> &'static str {
    match tx.dialect() {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
    }
}

impl Journal {
    /// Records a complete file of `dir` held by `lease`, like [`Journal::watch_admit`], unless
    /// another watcher of the same folder holds a file of that name right now (it found it
    /// first and is moving it out): then `None`, and the file is left to it.
    pub fn watch_admit_held(
        &self,
        dir: &Path,
        name: &str,
        size: u64,
        mtime_ns: i64,
        queue_dir: &Path,
        lease: &Lease,
    ) -> Result<Option<WatchRow>, JournalError> {
        let op = "recording a dropped bundle";
        let taken = self.lock().write(Durability::Durable, op, |tx, path| {
            let dir_sql = path_to_sql(dir);
            key_lock(tx, &format!("admit/{}/{name}", dir.display())).ctx(path, op)?;
            let now = db_now(tx).ctx(path, op)?;
            let other = tx
                .query_row(
                    "SELECT id FROM watch_bundle
                     WHERE dir = ?1 AND name = ?2 AND state = 'staging' AND lease_until >= ?3",
                    params![dir_sql, name, now],
                    |r| r.get::<i64>(0),
                )
                .ctx(path, op)?;
            if other.is_some() {
                return Ok(None);
            }
            let id = tx
                .query_row(
                    "INSERT INTO watch_bundle (dir, name, size, mtime_ns, state, staged_path, seen_at,
                                               holder, lease_until)
                     VALUES (?1, ?2, ?3, ?4, 'staging', '', ?5, ?6, ?7) RETURNING id",
                    params![
                        dir_sql,
                        name,
                        super::codec::size_to_sql(size),
                        mtime_ns,
                        crate::model::events::now_ms(),
                        lease.holder,
                        now + lease.ms()
                    ],
                    |r| r.get::<i64>(0),
                )
                .ctx(path, op)?
                .expect("INSERT … RETURNING returns the row");
            set_staged_path(tx, queue_dir, id, name).ctx(path, op)?;
            Ok(Some(id))
        })?;
        match taken {
            Some(id) => self.watch_bundle(id),
            None => Ok(None),
        }
    }

    /// Lets bundle `id` go into the queue (hashed and planned): no lease, any watcher may
    /// claim it.
    pub fn watch_release(&self, id: i64, lease: &Lease) -> Result<(), JournalError> {
        let op = "queueing a bundle";
        self.lock().write(Durability::Durable, op, |tx, path| {
            tx.execute(
                "UPDATE watch_bundle SET holder = NULL, lease_until = NULL
                 WHERE id = ?1 AND holder = ?2",
                params![id, lease.holder],
            )
            .ctx(path, op)?;
            Ok(())
        })
    }

    /// Bundles a watcher could claim, oldest first: queued ones, and those whose holder's
    /// lease lapsed (not finished, or finished and not yet archived). Read only; the claim
    /// itself ([`Journal::watch_claim`]) checks again under the row's lock.
    pub fn watch_claimable(&self, limit: usize) -> Result<Vec<WatchRow>, JournalError> {
        let op = "reading the watch queue";
        self.read(|tx, path| {
            let now = db_now(tx).ctx(path, op)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            tx.query(
                &format!(
                    "SELECT {COLUMNS} FROM watch_bundle
                     WHERE (state IN ('staging', 'queued', 'dispatching') OR archived_at IS NULL)
                       AND (lease_until IS NULL OR lease_until < ?1)
                       AND (state != 'staging' OR lease_until IS NOT NULL)
                     ORDER BY id LIMIT ?2"
                ),
                params![now, limit],
            )
            .ctx(path, op)?
            .iter()
            .map(|r| watch_row(r).ctx(path, op))
            .collect()
        })
    }

    /// Claims bundle `id` for `lease` in one transaction: its row is locked with `FOR UPDATE
    /// SKIP LOCKED` (a row another watcher is claiming is skipped, not waited for), it must
    /// still be claimable, and no other bundle of the same rule, name and content may be held
    /// right now.
    pub fn watch_claim(&self, id: i64, lease: &Lease) -> Result<Claim, JournalError> {
        let op = "claiming a bundle";
        let taken = self.lock().write(Durability::Durable, op, |tx, path| {
            let found = tx
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM watch_bundle WHERE id = ?1{}",
                        skip_locked(tx)
                    ),
                    params![id],
                    watch_row,
                )
                .ctx(path, op)?;
            let Some(row) = found else {
                return Ok(false);
            };
            let lease_until: Option<i64> = tx
                .query_row(
                    "SELECT lease_until FROM watch_bundle WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .ctx(path, op)?
                .flatten();
            let now = db_now(tx).ctx(path, op)?;
            let open = row.state.is_open() || row.archived_at.is_none();
            if !open || lease_until.is_some_and(|l| l >= now) {
                return Ok(false);
            }
            if let (Some(rule), Some(sha)) = (&row.rule, &row.sha256) {
                key_lock(tx, &format!("bundle/{rule}/{}/{sha}", row.name)).ctx(path, op)?;
                let held = tx
                    .query_row(
                        "SELECT id FROM watch_bundle
                         WHERE name = ?1 AND sha256 = ?2 AND rule = ?3 AND id != ?4
                           AND state IN ('queued', 'dispatching') AND lease_until >= ?5
                         LIMIT 1",
                        params![row.name, sha, rule, id, now],
                        |r| r.get::<i64>(0),
                    )
                    .ctx(path, op)?;
                if held.is_some() {
                    return Ok(false);
                }
            }
            tx.execute(
                "UPDATE watch_bundle SET holder = ?2, lease_until = ?3, claims = claims + 1
                 WHERE id = ?1",
                params![id, lease.holder, now + lease.ms()],
            )
            .ctx(path, op)?;
            Ok(true)
        })?;
        if !taken {
            return Ok(Claim::Busy);
        }
        Ok(self
            .watch_bundle(id)?
            .map_or(Claim::Busy, |r| Claim::Taken(Box::new(r))))
    }

    /// [`Journal::watch_begin_dispatch`] for a bundle of the shared queue, only while `lease`
    /// still holds it (checked under the row's lock, in the transaction that records the
    /// dispatch): a watcher that stalled past its lease and lost the bundle to another never
    /// starts a second dispatch of it. `None` when it lost it.
    pub fn watch_begin_dispatch_held(
        &self,
        id: i64,
        rec: &super::NewDispatch,
        lease: &Lease,
    ) -> Result<Option<i64>, JournalError> {
        let op = "starting a dispatch";
        let mut store = self.lock();
        let me = store.writer();
        store.write(Durability::Durable, op, |tx, path| {
            let holder: Option<Option<String>> = tx
                .query_row(
                    &format!(
                        "SELECT holder FROM watch_bundle WHERE id = ?1{}",
                        tx.for_update()
                    ),
                    params![id],
                    |r| r.get(0),
                )
                .ctx(path, op)?;
            if holder.flatten().as_deref() != Some(lease.holder.as_str()) {
                return Ok(None);
            }
            let now = db_now(tx).ctx(path, op)?;
            let dispatch = super::apply::insert_dispatch(tx, path, rec, &me)?;
            tx.execute(
                "UPDATE watch_bundle SET state = 'dispatching', dispatch = ?2, started_at = ?3,
                        lease_until = ?4
                 WHERE id = ?1",
                params![
                    id,
                    dispatch,
                    crate::model::events::now_ms(),
                    now + lease.ms()
                ],
            )
            .ctx(path, op)?;
            Ok(Some(dispatch))
        })
    }

    /// Renews the leases of `ids` held by `lease`; returns those it still holds. One that is
    /// missing was taken over by another watcher (this one stalled longer than its lease).
    pub fn watch_renew(&self, lease: &Lease, ids: &[i64]) -> Result<Vec<i64>, JournalError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let op = "renewing leases";
        self.lock().write(Durability::Durable, op, |tx, path| {
            let now = db_now(tx).ctx(path, op)?;
            let until = now + lease.ms();
            let list = (0..ids.len())
                .map(|i| format!("?{}", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let mut bound: Vec<&dyn super::db::ToValue> = vec![&lease.holder, &until];
            bound.extend(ids.iter().map(|i| i as &dyn super::db::ToValue));
            let rows = tx
                .query(
                    &format!(
                        "UPDATE watch_bundle SET lease_until = ?2
                         WHERE holder = ?1 AND lease_until IS NOT NULL AND id IN ({list})
                         RETURNING id"
                    ),
                    &bound,
                )
                .ctx(path, op)?;
            rows.iter().map(|r| r.get::<i64>(0).ctx(path, op)).collect()
        })
    }

    /// Who holds bundle `id`, and how many times it was claimed: for tests and the console.
    pub fn watch_holder(&self, id: i64) -> Result<Option<(Option<String>, i64)>, JournalError> {
        self.read(|tx, path| {
            tx.query_row(
                "SELECT holder, claims FROM watch_bundle WHERE id = ?1",
                params![id],
                |r| Ok((r.get::<Option<String>>(0)?, r.get::<i64>(1)?)),
            )
            .ctx(path, "reading a bundle")
        })
    }

    /// After a failed write: if the server is gone, the journal goes down (spooling, and
    /// reconnecting on the next [`Journal::flush`]) so [`Journal::is_down`] says so.
    pub fn note_lost(&self, e: &JournalError) {
        self.lock().note_lost(e);
    }

    /// Whether the journal is a server several watchers may share (PostgreSQL): then
    /// `--watch` takes its bundles from the shared queue.
    pub fn is_shared(&self) -> bool {
        Journal::is_server(self.path())
    }
}
