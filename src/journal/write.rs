//! Applying events: the write side of the journal.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction that first commits the buffered output
//! lines, so lines are never stored after the control event that follows them. Per step run a
//! [`Cursor`] keeps the stored and dropped line counts in memory, so the bound is checked
//! without counting rows; the counts are written to the step row with each commit.

use super::codec::{size_to_sql, stream_code};
use super::db::{Conn, Mode, OutputRow, Tx, params};
use super::error::{Context, JournalError};
use super::liveness::Writer;
use super::spool::{BufferedLine, Entry, Orphan, Spool};
use super::{JournalOptions, NewDispatch, ResumeState, apply, read};
use crate::model::events::{Event, Lines, Millis, Step};
use crate::transport::lines::cap_line;
use crate::transport::{Stream, TransferEvent};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Buffered output above this many bytes is committed even before `batch_lines` lines.
const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// Whether a commit must survive power loss (fsync) or only the death of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    Durable,
    Batched,
}

/// The connection and the write buffers behind [`super::Journal`]'s mutex.
pub(crate) struct Store {
    conn: Conn,
    path: PathBuf,
    options: JournalOptions,
    me: Writer,
    pending: Vec<PendingLine>,
    pending_bytes: usize,
    /// Lines seen (stored or dropped) since the last commit.
    unflushed: usize,
    /// Open step runs by (dispatch, step), then host: lookups by `&str` without allocating.
    cursors: HashMap<(i64, Step), HashMap<String, Cursor>>,
    /// Connects again (PostgreSQL only; a file is not "away").
    reconnect: Option<Reconnect>,
    /// Events kept while the server is away (see [`super::spool`]).
    spool: Option<Spool>,
    /// What the user should hear about the server going and coming back.
    notices: Vec<String>,
}

/// Opens a new connection to the same journal.
pub(crate) type Reconnect = Box<dyn Fn() -> Result<Conn, JournalError> + Send>;

/// A line waiting for the next commit (the spool keeps the same, see [`super::spool`]).
type PendingLine = BufferedLine;

/// Line counts of one step run, ahead of the database by the unflushed lines.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    step_id: i64,
    stored: u64,
    dropped: u64,
    dirty: bool,
}

impl Cursor {
    fn new(step_id: i64) -> Cursor {
        Cursor {
            step_id,
            stored: 0,
            dropped: 0,
            dirty: false,
        }
    }

    /// Counts `lines` into this step run and returns those to store: as many as the bound
    /// `max` leaves room for; the rest are only counted as dropped.
    fn admit<'a>(&mut self, lines: &'a Lines, max: u64) -> impl Iterator<Item = &'a str> + use<'a> {
        let all = lines.count() as u64;
        let kept = all.min(max.saturating_sub(self.stored));
        self.stored += kept;
        self.dropped += all - kept;
        self.dirty = true;
        lines
            .iter()
            .take(usize::try_from(kept).unwrap_or(usize::MAX))
    }
}

impl Store {
    pub fn new(
        mut conn: Conn,
        path: PathBuf,
        options: JournalOptions,
        reconnect: Option<Reconnect>,
    ) -> Result<Store, JournalError> {
        let me = writer_of(&mut conn, &path)?;
        Ok(Store {
            reconnect,
            spool: None,
            notices: Vec::new(),
            conn,
            path,
            options: JournalOptions {
                batch_lines: options.batch_lines.max(1),
                ..options
            },
            me,
            pending: Vec::new(),
            pending_bytes: 0,
            unflushed: 0,
            cursors: HashMap::new(),
        })
    }

    /// Who this handle writes as (the journal's liveness marker for dispatch rows).
    pub(super) fn writer(&self) -> Writer {
        self.me.clone()
    }

    /// A read transaction: one consistent view, even while other processes write.
    pub fn read_tx(&mut self) -> Result<Tx<'_>, JournalError> {
        self.conn.begin(Mode::Read).ctx(&self.path, "reading")
    }

    pub fn begin_dispatch(&mut self, rec: &NewDispatch) -> Result<i64, JournalError> {
        let me = self.me.clone();
        self.write(
            Durability::Durable,
            "recording a new dispatch",
            |tx, path| {
                super::schema::check_writable(tx, path)?;
                apply::insert_dispatch(tx, path, rec, &me)
            },
        )
    }

    /// Records `event`, or spools it while the server is away (see [`super::spool`]).
    pub fn record(&mut self, event: &Event) -> Result<(), JournalError> {
        self.recover();
        if let Some(spool) = &mut self.spool {
            return spool_push(spool, event, &mut self.notices);
        }
        match self.record_now(event) {
            Err(e) if e.is_connection_lost() && self.reconnect.is_some() => {
                self.go_down(&e);
                let spool = self.spool.as_mut().expect("just went down");
                spool_push(spool, event, &mut self.notices)
            }
            other => other,
        }
    }

    /// Whether events are being spooled because the server is away.
    pub fn is_down(&self) -> bool {
        self.spool.is_some()
    }

    /// What happened to the server connection since the last call (for the user).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// A write outside `record` found the server gone: spool from now on and reconnect like
    /// `record` does (the drop-folder queue's writes, say, while no dispatch runs).
    pub(super) fn note_lost(&mut self, e: &JournalError) {
        if e.is_connection_lost() && self.reconnect.is_some() && self.spool.is_none() {
            self.go_down(e);
        }
    }

    fn go_down(&mut self, e: &JournalError) {
        tracing::warn!("journal server lost: {e}");
        // The buffered lines stay in memory for the reconnect; the file gets a copy, in case
        // this process dies before that.
        let buffered = Entry::Buffered {
            lines: self.pending.clone(),
            counts: self
                .cursors
                .values()
                .flat_map(|hosts| hosts.values())
                .filter(|c| c.dirty)
                .map(|c| (c.step_id, c.stored, c.dropped))
                .collect(),
        };
        let mut spool = Spool::new(&self.me, buffered);
        self.notices.push(format!(
            "journal server lost ({e}); the dispatch goes on, events are kept in {} and written when it is back",
            spool.path().display()
        ));
        self.notices.extend(spool.take_error());
        self.spool = Some(spool);
    }

    /// Records the spools of this machine's dropship processes that died while the server
    /// was away (see [`super::spool`]), so their hosts' work is in the journal before anyone
    /// resumes it. Each file is claimed by renaming it, applied in one transaction and
    /// removed; one whose dispatches were resumed meanwhile is kept as `*.stale`.
    pub fn replay_orphans(&mut self) {
        for path in super::spool::orphan_files() {
            let claimed = path.with_extension(format!("replaying-{}", std::process::id()));
            if std::fs::rename(&path, &claimed).is_err() {
                continue; // another process took it
            }
            let orphan = match super::spool::read_orphan(&claimed) {
                Ok(orphan) => orphan,
                Err(e) => {
                    self.keep_stale(&claimed, &format!("it cannot be read ({e})"));
                    continue;
                }
            };
            let max = self.options.max_lines_per_step;
            let outcome = self.write(
                Durability::Durable,
                "recording a dead process's spool",
                |tx, path| replay(tx, path, &orphan, max),
            );
            match outcome {
                Ok(Ok(())) => {
                    let _ = std::fs::remove_file(&claimed);
                    self.notices.push(format!(
                        "recorded the {} events that dropship (pid {}) kept while the journal server was away, of dispatch {}",
                        orphan.events.len(),
                        orphan.writer.pid,
                        ids(&orphan.dispatches()),
                    ));
                }
                Ok(Err(why)) => self.keep_stale(&claimed, &why),
                Err(e) => {
                    tracing::warn!("replaying {}: {e}", claimed.display());
                    let _ = std::fs::rename(&claimed, &path);
                }
            }
        }
    }

    fn keep_stale(&mut self, claimed: &Path, why: &str) {
        let stale = claimed.with_extension("stale");
        let _ = std::fs::rename(claimed, &stale);
        self.notices.push(format!(
            "the journal spool {} of a dead dropship was not recorded: {why}; it is kept for you to read",
            stale.display()
        ));
    }

    /// Reconnects (at most every [`super::spool::RETRY`]) and replays the spool in order.
    fn recover(&mut self) {
        let Some(spool) = &mut self.spool else {
            return;
        };
        if !spool.due() {
            return;
        }
        let Some(reconnect) = &self.reconnect else {
            return;
        };
        let Ok(mut conn) = reconnect() else {
            return;
        };
        let Ok(me) = writer_of(&mut conn, &self.path) else {
            return;
        };
        self.conn = conn;
        let old = std::mem::replace(&mut self.me, me);
        let mut spool = self.spool.take().expect("checked above");
        // This process still writes its dispatches: readers elsewhere judge it by the new
        // session now.
        let me = self.me.clone();
        let moved = self.write(Durability::Durable, "reconnecting", |tx, path| {
            tx.execute(
                "UPDATE dispatch SET writer_marker = ?3 WHERE writer_pid = ?1 AND writer_marker = ?2",
                params![old.pid, old.marker, me.marker],
            )
            .ctx(path, "reconnecting")
        });
        if moved.is_err() {
            self.spool = Some(spool);
            return;
        }
        let events = std::mem::take(&mut spool.events);
        let total = events.len();
        for (i, event) in events.iter().enumerate() {
            match self.record_now(event) {
                Ok(()) => {}
                Err(e) if e.is_connection_lost() => {
                    spool.events = events[i..].to_vec();
                    self.spool = Some(spool);
                    return;
                }
                // The event itself is wrong (as it would have been without the outage).
                Err(e) => tracing::error!("journal write failed on replay: {e}"),
            }
        }
        if self.flush_now().is_err() {
            self.spool = Some(spool);
            return;
        }
        let away = spool.since.elapsed();
        spool.finish();
        self.notices.push(format!(
            "journal server back after {:.1}s: the {total} events kept meanwhile are recorded",
            away.as_secs_f64()
        ));
    }

    fn record_now(&mut self, event: &Event) -> Result<(), JournalError> {
        match event {
            Event::Output {
                dispatch,
                at,
                host,
                step,
                stream,
                lines,
            } => self.output(*dispatch, host, *step, *at, *stream, lines),
            Event::Transfer {
                dispatch,
                host,
                transfer,
                ..
            } => self.transfer(*dispatch, host, transfer),
            _ => self.control(event),
        }
    }

    /// Commits buffered lines; while the server is away, tries to reconnect instead (the
    /// lines stay buffered).
    pub fn flush(&mut self) -> Result<(), JournalError> {
        self.recover();
        if self.spool.is_some() {
            return Ok(());
        }
        match self.flush_now() {
            Err(e) if e.is_connection_lost() && self.reconnect.is_some() => {
                self.go_down(&e);
                Ok(())
            }
            other => other,
        }
    }

    fn flush_now(&mut self) -> Result<(), JournalError> {
        if self.unflushed == 0 {
            return Ok(());
        }
        self.write(Durability::Batched, "storing output lines", |_, _| Ok(()))
    }

    pub fn mark_cancelled(&mut self, id: i64) -> Result<(), JournalError> {
        self.write(Durability::Durable, "cancelling a dispatch", |tx, path| {
            apply::cancel_dispatch(tx, path, id)
        })
    }

    pub fn mark_unknown(&mut self, id: i64, host: &str, step: Step) -> Result<(), JournalError> {
        self.write(Durability::Durable, "marking a step unknown", |tx, path| {
            apply::mark_unknown(tx, path, id, host, step)
        })
    }

    pub fn begin_resume(&mut self, id: i64) -> Result<ResumeState, JournalError> {
        let me = self.me.clone();
        self.write(Durability::Durable, "taking over a dispatch", |tx, path| {
            apply::take_over(tx, path, id, &me)?;
            read::resume_state(tx, path, id)
        })
    }

    /// Buffers output lines (each capped, see [`cap_line`]) until their step run has
    /// reached the bound; the rest are only counted. Counted lines are nothing to write but
    /// the step's count, which goes with the next commit (the session flushes every second):
    /// so only stored lines make a batch full, and a command printing millions of lines past
    /// the bound costs a count, not a commit per `batch_lines`.
    fn output(
        &mut self,
        dispatch: i64,
        host: &str,
        step: Step,
        at: Millis,
        stream: Stream,
        lines: &Lines,
    ) -> Result<(), JournalError> {
        let max = self.options.max_lines_per_step;
        let cursor = self.cursor(dispatch, host, step, at)?;
        let step_id = cursor.step_id;
        for line in cursor.admit(lines, max) {
            // Whoever emitted it, a stored line is at most `MAX_LINE` bytes and a marker.
            let line = cap_line(line).into_owned();
            self.pending_bytes += line.len();
            self.pending.push(PendingLine {
                step: step_id,
                at,
                stream,
                line,
            });
        }
        let all = lines.count();
        self.unflushed += all;
        if self.pending.len() >= self.options.batch_lines || self.pending_bytes >= MAX_PENDING_BYTES
        {
            self.flush()?;
        }
        Ok(())
    }

    /// The open run of `step` on `host`: from memory, else the latest run in the file (started
    /// by another handle, or before a restart), else a new run starting with this line.
    fn cursor(
        &mut self,
        dispatch: i64,
        host: &str,
        step: Step,
        at: Millis,
    ) -> Result<&mut Cursor, JournalError> {
        let known = self
            .cursors
            .get(&(dispatch, step))
            .is_some_and(|hosts| hosts.contains_key(host));
        if !known {
            let cursor = match self.latest_run(dispatch, host, step)? {
                Some(cursor) => cursor,
                None => Cursor::new(self.write(
                    Durability::Durable,
                    "recording output",
                    |tx, path| apply::insert_step(tx, path, dispatch, host, step, None, at),
                )?),
            };
            self.open_cursor(dispatch, host, step, cursor);
        }
        Ok(self
            .cursors
            .get_mut(&(dispatch, step))
            .and_then(|hosts| hosts.get_mut(host))
            .expect("cursor inserted above"))
    }

    fn latest_run(
        &mut self,
        dispatch: i64,
        host: &str,
        step: Step,
    ) -> Result<Option<Cursor>, JournalError> {
        let tx = self
            .conn
            .begin(Mode::Read)
            .ctx(&self.path, "recording output")?;
        latest_run_in(&tx, dispatch, host, step).ctx(&self.path, "recording output")
    }

    fn open_cursor(&mut self, dispatch: i64, host: &str, step: Step, cursor: Cursor) {
        self.cursors
            .entry((dispatch, step))
            .or_default()
            .insert(host.to_owned(), cursor);
    }

    fn close_cursor(&mut self, dispatch: i64, host: &str, step: Step) {
        if let Some(hosts) = self.cursors.get_mut(&(dispatch, step)) {
            hosts.remove(host);
            if hosts.is_empty() {
                self.cursors.remove(&(dispatch, step));
            }
        }
    }

    /// Stores what resume needs from uploads: attempts, and that the file was verified.
    /// Progress and retries are for the screen only.
    fn transfer(
        &mut self,
        dispatch: i64,
        host: &str,
        transfer: &TransferEvent,
    ) -> Result<(), JournalError> {
        match transfer {
            TransferEvent::Started { .. } => {
                self.write(Durability::Batched, "recording an upload", |tx, path| {
                    apply::upload_started(tx, path, dispatch, host)
                })
            }
            TransferEvent::Verified { size, sha256, .. } => self.write(
                Durability::Durable,
                "recording a verified upload",
                |tx, path| {
                    apply::upload_verified(tx, path, dispatch, host, *size, sha256.as_deref())
                },
            ),
            TransferEvent::Progress { .. } | TransferEvent::Retrying { .. } => Ok(()),
        }
    }

    /// Commits a control event durably, then updates the cursors to match.
    fn control(&mut self, event: &Event) -> Result<(), JournalError> {
        let step_id = self.write(Durability::Durable, "recording an event", |tx, path| {
            apply::control(tx, path, event)
        })?;
        match event {
            Event::StepStarted {
                dispatch,
                host,
                step,
                ..
            } => {
                let id = step_id.expect("a started step has a row");
                self.open_cursor(*dispatch, host, *step, Cursor::new(id));
            }
            Event::StepFinished {
                dispatch,
                host,
                step,
                ..
            } => self.close_cursor(*dispatch, host, *step),
            _ => {}
        }
        Ok(())
    }

    /// One write transaction: the buffered output first, then `apply`. Buffers are cleared
    /// only after the commit, so a failed write loses nothing and the next one retries them.
    pub(super) fn write<T>(
        &mut self,
        durability: Durability,
        op: &'static str,
        apply: impl FnOnce(&Tx<'_>, &Path) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mode = match durability {
            Durability::Durable => Mode::Write,
            Durability::Batched => Mode::WriteBatched,
        };
        let tx = self.conn.begin(mode).ctx(&self.path, op)?;
        store_pending(&tx, &self.pending, &self.cursors).ctx(&self.path, "storing output lines")?;
        let value = apply(&tx, &self.path)?;
        tx.commit().ctx(&self.path, op)?;
        self.pending.clear();
        self.pending_bytes = 0;
        self.unflushed = 0;
        self.cursors
            .values_mut()
            .flat_map(|hosts| hosts.values_mut())
            .for_each(|c| c.dirty = false);
        Ok(value)
    }
}

/// This process as the writer of `conn`: on PostgreSQL, with its database session.
fn writer_of(conn: &mut Conn, path: &Path) -> Result<Writer, JournalError> {
    let me = Writer::current();
    if let Conn::Pg(_) = conn {
        let tx = conn
            .begin(Mode::Read)
            .ctx(path, "identifying this writer")?;
        let session = super::liveness::pg_session(&tx).ctx(path, "identifying this writer")?;
        return Ok(me.with_session(&session));
    }
    Ok(me)
}

/// Spools `event`; a spool file that cannot be written is told once (memory still has it).
fn spool_push(
    spool: &mut Spool,
    event: &Event,
    notices: &mut Vec<String>,
) -> Result<(), JournalError> {
    spool.push(event);
    notices.extend(spool.take_error());
    Ok(())
}

fn ids(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies a dead writer's spool in `tx`, if every dispatch it touches still names that
/// writer and runs; `Ok(Err(why))` if not (nothing is written then).
fn replay(
    tx: &Tx<'_>,
    path: &Path,
    orphan: &Orphan,
    max_lines: u64,
) -> Result<Result<(), String>, JournalError> {
    let op = "recording a dead process's spool";
    for id in orphan.dispatches() {
        let row = tx
            .query_row(
                "SELECT state, writer_pid, writer_marker FROM dispatch WHERE id = ?1",
                params![id],
                |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<String>(2)?)),
            )
            .ctx(path, op)?;
        let Some((state, pid, marker)) = row else {
            return Ok(Err(format!("dispatch {id} is not in the journal")));
        };
        if state != "running" || pid != orphan.writer.pid || marker != orphan.writer.marker {
            return Ok(Err(format!(
                "dispatch {id} was taken over or ended meanwhile (it is {state})"
            )));
        }
    }
    // Stored after every step row they belong to exists, in the order they came.
    let mut lines = orphan.buffered.clone();
    let mut cursors: HashMap<(i64, String, Step), Cursor> = HashMap::new();
    for &(step_id, stored, dropped) in &orphan.counts {
        let mut c = Cursor::new(step_id);
        (c.stored, c.dropped, c.dirty) = (stored, dropped, true);
        write_counts(tx, &c).ctx(path, op)?;
    }
    for event in &orphan.events {
        match event {
            Event::Output {
                dispatch,
                at,
                host,
                step,
                stream,
                lines: batch,
            } => {
                let key = (*dispatch, host.clone(), *step);
                if !cursors.contains_key(&key) {
                    let latest = latest_run_in(tx, *dispatch, host, *step).ctx(path, op)?;
                    let c = match latest {
                        Some(c) => c,
                        None => Cursor::new(apply::insert_step(
                            tx, path, *dispatch, host, *step, None, *at,
                        )?),
                    };
                    cursors.insert(key.clone(), c);
                }
                let c = cursors.get_mut(&key).expect("inserted above");
                let step = c.step_id;
                lines.extend(c.admit(batch, max_lines).map(|line| PendingLine {
                    step,
                    at: *at,
                    stream: *stream,
                    line: cap_line(line).into_owned(),
                }));
            }
            Event::Transfer {
                dispatch,
                host,
                transfer,
                ..
            } => match transfer {
                TransferEvent::Started { .. } => apply::upload_started(tx, path, *dispatch, host)?,
                TransferEvent::Verified { size, sha256, .. } => {
                    apply::upload_verified(tx, path, *dispatch, host, *size, sha256.as_deref())?
                }
                TransferEvent::Progress { .. } | TransferEvent::Retrying { .. } => {}
            },
            _ => {
                let started = apply::control(tx, path, event)?;
                if let (
                    Some(id),
                    Event::StepStarted {
                        dispatch,
                        host,
                        step,
                        ..
                    },
                ) = (started, event)
                {
                    cursors.insert((*dispatch, host.clone(), *step), Cursor::new(id));
                }
            }
        }
    }
    insert_lines(tx, &lines).ctx(path, op)?;
    for c in cursors.values().filter(|c| c.dirty) {
        write_counts(tx, c).ctx(path, op)?;
    }
    Ok(Ok(()))
}

/// Inserts `lines`, in order, in one statement per batch (see [`Tx::insert_output`]).
fn insert_lines(tx: &Tx<'_>, lines: &[PendingLine]) -> super::db::DbResult<()> {
    let rows: Vec<OutputRow<'_>> = lines
        .iter()
        .map(|l| OutputRow {
            step: l.step,
            at: l.at,
            stream: stream_code(l.stream),
            line: &l.line,
        })
        .collect();
    tx.insert_output(&rows)
}

/// The latest run of `step` on `host` with its line counts.
fn latest_run_in(
    tx: &Tx<'_>,
    dispatch: i64,
    host: &str,
    step: Step,
) -> super::db::DbResult<Option<Cursor>> {
    tx.query_row(
        "SELECT id, lines, dropped_lines FROM step
         WHERE dispatch = ?1 AND host = ?2 AND step = ?3 ORDER BY id DESC LIMIT 1",
        params![dispatch, host, step],
        |r| {
            Ok(Cursor {
                step_id: r.get(0)?,
                stored: super::codec::size_from_sql(r, 1)?,
                dropped: super::codec::size_from_sql(r, 2)?,
                dirty: false,
            })
        },
    )
}

fn write_counts(tx: &Tx<'_>, cursor: &Cursor) -> super::db::DbResult<usize> {
    tx.execute(
        "UPDATE step SET lines = ?2, dropped_lines = ?3 WHERE id = ?1",
        params![
            cursor.step_id,
            size_to_sql(cursor.stored),
            size_to_sql(cursor.dropped)
        ],
    )
}

fn store_pending(
    tx: &Tx<'_>,
    pending: &[PendingLine],
    cursors: &HashMap<(i64, Step), HashMap<String, Cursor>>,
) -> super::db::DbResult<()> {
    insert_lines(tx, pending)?;
    let dirty = cursors
        .values()
        .flat_map(|hosts| hosts.values())
        .filter(|c| c.dirty);
    for cursor in dirty {
        write_counts(tx, cursor)?;
    }
    Ok(())
}
