//! Following the dispatches other processes write into the same journal (another console, a
//! headless `--dispatch`, a watcher; on PostgreSQL also on other machines), so the console
//! shows everyone's work as it happens.
//!
//! The follower polls; it does not subscribe. A poll with nothing new is one indexed query
//! (`dispatch.id` above the highest seen) in one read transaction, plus, per dispatch being
//! followed, one row of counts (steps started and ended, lines stored, targets ended,
//! notices, the stored state and writer). Only when those counts moved is the dispatch read
//! in full and compared with what was last delivered; only when its stored line count moved
//! are its new output lines read (by `output.id` above the last one delivered, at most
//! [`LINES_PER_POLL`]). The differences become the same [`Event`]s the engine emits, in
//! the order their times say, so a front end applies them exactly as it applies its own.
//!
//! What this process writes itself is never followed: a row's writer marker names its
//! process (boot id and start time, see `liveness`), and rows whose marker is this
//! process's are skipped, which holds even before the session has told its front end the
//! id of a dispatch it just began.
//!
//! Ids are not commit order on PostgreSQL (two processes' transactions may commit out of
//! sequence order), so new dispatches are looked for [`ID_WINDOW`] ids below the highest seen,
//! and output lines are read per dispatch: one dispatch has one writer thread, whose commits
//! are in id order.

use super::db::{Row, Tx, params};
use super::error::{Context, JournalError};
use super::{DispatchDetail, DispatchState, Journal, TargetDetail, liveness, read};
use crate::model::events::{Event, Millis, Step};
use crate::transport::TransferEvent;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Output lines read per followed dispatch per poll; more are left for the next poll
/// ([`FollowUpdate::more`]), so a flood of another process's output cannot make one poll
/// (or one message to the front end) unbounded.
pub const LINES_PER_POLL: i64 = 5_000;

/// How far below the highest dispatch id seen a poll looks for new ones: PostgreSQL hands
/// out ids when a row is inserted, so a dispatch begun by a slower transaction may become
/// visible after a higher id did.
pub const ID_WINDOW: i64 = 32;

/// How often (in polls) a followed dispatch that says `running` has its writer's liveness
/// checked (a `/proc` read, or a `pg_stat_activity` query for another machine's writer).
const LIVENESS_EVERY: u32 = 4;

/// `user@host` of this process, as dispatches record it (see `origin`).
pub fn this_origin() -> String {
    let o = super::origin::Origin::current();
    super::origin::display(o.user.as_deref(), o.host.as_deref())
}

/// A dispatch of another process, seen by the follower for the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignDispatch {
    pub id: i64,
    /// `user@host` it was started by and on (`-` for a part not recorded).
    pub by: String,
    /// It was already running when following started (a front end may have shown it from
    /// the history): its whole record so far follows as events, from its
    /// [`Event::DispatchStarted`] on, so what the front end shows of it has one source.
    pub already_running: bool,
}

/// What one poll found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FollowUpdate {
    /// Other processes' dispatches seen for the first time, before any of their events.
    pub started: Vec<ForeignDispatch>,
    /// Their events since the last poll, in the order they happened.
    pub events: Vec<Event>,
    /// Where a followed dispatch now stands, when that changed. `interrupted` (its writer
    /// died) has no event of its own; applied after `events`.
    pub states: Vec<(i64, DispatchState)>,
    /// A cap was hit: poll again without waiting.
    pub more: bool,
}

impl FollowUpdate {
    pub fn is_empty(&self) -> bool {
        self.started.is_empty() && self.events.is_empty() && self.states.is_empty()
    }
}

/// The follower's position in the journal; one per follower, kept between polls.
pub struct Follow {
    /// This process's liveness marker without its database session: its own rows.
    me: String,
    started: bool,
    /// The highest dispatch id seen.
    top: i64,
    /// Ids seen in `top - ID_WINDOW ..= top`.
    seen: BTreeSet<i64>,
    followed: BTreeMap<i64, Followed>,
    polls: u32,
}

struct Followed {
    /// The counts last seen (see [`Version`]).
    version: Option<Version>,
    /// The dispatch as last delivered (`None`: nothing delivered yet).
    detail: Option<DispatchDetail>,
    /// The last output line delivered.
    last_line: i64,
    /// The state last delivered.
    state: DispatchState,
    /// The last read of its lines hit [`LINES_PER_POLL`]: read on, whatever the counts say.
    capped: bool,
}

/// What changes when anything about a dispatch is committed (output lines included, through
/// the step rows' line counts).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    stored: DispatchState,
    finished_at: Option<Millis>,
    writer_pid: i64,
    writer: String,
    steps: i64,
    steps_ended: i64,
    lines: i64,
    targets_ended: i64,
    verified: i64,
    notices: i64,
}

impl Default for Follow {
    fn default() -> Self {
        Follow::new()
    }
}

impl Follow {
    pub fn new() -> Follow {
        Follow {
            me: String::new(),
            started: false,
            top: 0,
            seen: BTreeSet::new(),
            followed: BTreeMap::new(),
            polls: 0,
        }
    }

    /// How many dispatches are followed now.
    pub fn following(&self) -> usize {
        self.followed.len()
    }

    fn is_mine(&self, marker: &str) -> bool {
        !self.me.is_empty() && liveness::local_part(marker) == self.me
    }
}

impl Journal {
    /// One poll of `follow` (see the module doc). The first poll only takes position: what
    /// is in the journal then is history, except dispatches of other processes still
    /// running, which are followed from there on.
    pub fn follow(&self, follow: &mut Follow) -> Result<FollowUpdate, JournalError> {
        if follow.me.is_empty() {
            follow.me = liveness::local_part(&self.lock().writer().marker).to_owned();
        }
        self.read(|tx, path| poll(tx, path, follow))
    }
}

fn poll(tx: &Tx<'_>, path: &Path, f: &mut Follow) -> Result<FollowUpdate, JournalError> {
    let op = "following other dispatches";
    let mut out = FollowUpdate::default();
    f.polls = f.polls.wrapping_add(1);
    if !f.started {
        start(tx, path, f, &mut out)?;
        f.started = true;
        return Ok(out);
    }
    let rows = tx
        .query(
            "SELECT id, writer_marker, started_by, started_on FROM dispatch
             WHERE id > ?1 ORDER BY id",
            params![f.top - ID_WINDOW],
        )
        .ctx(path, op)?;
    for r in &rows {
        let id: i64 = r.get(0).ctx(path, op)?;
        if !f.seen.insert(id) {
            continue;
        }
        f.top = f.top.max(id);
        let marker: String = r.get(1).ctx(path, op)?;
        if f.is_mine(&marker) {
            continue;
        }
        out.started.push(ForeignDispatch {
            id,
            by: by(r).ctx(path, op)?,
            already_running: false,
        });
        f.followed.insert(
            id,
            Followed {
                version: None,
                detail: None,
                last_line: 0,
                state: DispatchState::Running,
                capped: false,
            },
        );
    }
    let floor = f.top - ID_WINDOW;
    f.seen.retain(|&id| id >= floor);
    let check_liveness = f.polls.is_multiple_of(LIVENESS_EVERY);
    let ids: Vec<i64> = f.followed.keys().copied().collect();
    let mut timeline: Vec<(Millis, u8, Event)> = Vec::new();
    for id in ids {
        let Some(v) = version(tx, id).ctx(path, op)? else {
            f.followed.remove(&id);
            continue;
        };
        if f.is_mine(&v.writer) {
            // This process took it over (`--resume`): its own events show it from now on.
            f.followed.remove(&id);
            continue;
        }
        let entry = f.followed.get_mut(&id).expect("listed above");
        let lines_moved = entry.version.as_ref().is_none_or(|o| o.lines != v.lines);
        let moved = entry.version.as_ref().is_none_or(|o| {
            Version {
                lines: v.lines,
                ..o.clone()
            } != v
        });
        if lines_moved || moved || entry.capped {
            entry.capped = lines(tx, path, id, entry, &mut timeline)?;
            out.more |= entry.capped;
        }
        if moved {
            let Some(cur) = read::dispatch(tx, path, id)? else {
                f.followed.remove(&id);
                continue;
            };
            diff(entry.detail.as_ref(), &cur, &mut timeline);
            if cur.state != entry.state {
                entry.state = cur.state;
                out.states.push((id, cur.state));
            }
            entry.detail = Some(cur);
        }
        if lines_moved || moved {
            entry.version = Some(v.clone());
        } else if check_liveness && v.stored == DispatchState::Running {
            let state = if liveness::alive(tx, v.writer_pid, &v.writer) {
                DispatchState::Running
            } else {
                DispatchState::Interrupted
            };
            if state != entry.state {
                entry.state = state;
                if let Some(d) = &mut entry.detail {
                    d.state = state;
                }
                out.states.push((id, state));
            }
        }
        if matches!(v.stored, DispatchState::Finished | DispatchState::Cancelled) && !entry.capped {
            f.followed.remove(&id);
        }
    }
    // Stable: a step's start stays ahead of its lines, its end after them.
    timeline.sort_by_key(|(at, rank, _)| (*at, *rank));
    out.events = timeline.into_iter().map(|(_, _, e)| e).collect();
    Ok(out)
}

/// The first poll: where the journal stands, and other processes' dispatches still running
/// (followed from their start: the next poll delivers what they did so far).
fn start(
    tx: &Tx<'_>,
    path: &Path,
    f: &mut Follow,
    out: &mut FollowUpdate,
) -> Result<(), JournalError> {
    let op = "following other dispatches";
    f.top = tx
        .query_row("SELECT coalesce(max(id), 0) FROM dispatch", &[], |r| {
            r.get::<i64>(0)
        })
        .ctx(path, op)?
        .unwrap_or(0);
    f.seen = (f.top - ID_WINDOW..=f.top).collect();
    let running = tx
        .query(
            "SELECT id, writer_marker, started_by, started_on, writer_pid FROM dispatch
             WHERE state = 'running' ORDER BY id",
            &[],
        )
        .ctx(path, op)?;
    for r in &running {
        let id: i64 = r.get(0).ctx(path, op)?;
        let marker: String = r.get(1).ctx(path, op)?;
        let pid: i64 = r.get(4).ctx(path, op)?;
        if f.is_mine(&marker) || !liveness::alive(tx, pid, &marker) {
            continue;
        }
        out.started.push(ForeignDispatch {
            id,
            by: by(r).ctx(path, op)?,
            already_running: true,
        });
        f.followed.insert(
            id,
            Followed {
                version: None,
                detail: None,
                last_line: 0,
                state: DispatchState::Running,
                capped: false,
            },
        );
    }
    Ok(())
}

fn by(r: &Row) -> super::db::DbResult<String> {
    let user: Option<String> = r.get(2)?;
    let host: Option<String> = r.get(3)?;
    Ok(super::origin::display(user.as_deref(), host.as_deref()))
}

fn version(tx: &Tx<'_>, id: i64) -> super::db::DbResult<Option<Version>> {
    tx.query_row(
        "SELECT d.state, d.finished_at, d.writer_pid, d.writer_marker,
                (SELECT count(*) FROM step s WHERE s.dispatch = d.id),
                (SELECT count(s.outcome) FROM step s WHERE s.dispatch = d.id),
                (SELECT CAST(coalesce(sum(s.lines), 0) AS BIGINT) FROM step s
                 WHERE s.dispatch = d.id),
                (SELECT count(t.result) FROM target t WHERE t.dispatch = d.id),
                (SELECT count(t.verified_size) FROM target t WHERE t.dispatch = d.id),
                (SELECT count(*) FROM notice n WHERE n.dispatch = d.id)
         FROM dispatch d WHERE d.id = ?1",
        params![id],
        |r| {
            Ok(Version {
                stored: r.get(0)?,
                finished_at: r.get(1)?,
                writer_pid: r.get(2)?,
                writer: r.get(3)?,
                steps: r.get(4)?,
                steps_ended: r.get(5)?,
                lines: r.get(6)?,
                targets_ended: r.get(7)?,
                verified: r.get(8)?,
                notices: r.get(9)?,
            })
        },
    )
}

/// New output lines of dispatch `id` onto `timeline`; whether the cap was hit.
fn lines(
    tx: &Tx<'_>,
    path: &Path,
    id: i64,
    entry: &mut Followed,
    timeline: &mut Vec<(Millis, u8, Event)>,
) -> Result<bool, JournalError> {
    let op = "reading other dispatches' output";
    let rows = tx
        .query(
            "SELECT o.id, s.host, s.step, o.at, o.stream, o.line
             FROM output o JOIN step s ON s.id = o.step
             WHERE s.dispatch = ?1 AND o.id > ?2 ORDER BY o.id LIMIT ?3",
            params![id, entry.last_line, LINES_PER_POLL],
        )
        .ctx(path, op)?;
    let line = |r: &Row| -> super::db::DbResult<(i64, Millis, Event)> {
        let at: Millis = r.get(3)?;
        let stream = super::codec::stream_from_code(r.get(4)?)
            .map_err(|detail| super::db::DbError::Decode { idx: 4, detail })?;
        let event = Event::Output {
            dispatch: id,
            at,
            host: r.get(1)?,
            step: r.get(2)?,
            stream,
            lines: r.get::<String>(5)?.into(),
        };
        Ok((r.get(0)?, at, event))
    };
    for r in &rows {
        let (line_id, at, event) = line(r).ctx(path, op)?;
        entry.last_line = entry.last_line.max(line_id);
        timeline.push((at, 2, event));
    }
    Ok(rows.len() as i64 >= LINES_PER_POLL)
}

/// The events that turn `prev` (what was delivered; `None`: nothing) into `cur`, each with
/// its time and a rank that orders events of one millisecond as the engine emits them.
fn diff(prev: Option<&DispatchDetail>, cur: &DispatchDetail, out: &mut Vec<(Millis, u8, Event)>) {
    let id = cur.id;
    if prev.is_none() {
        out.push((
            cur.record.started_at,
            0,
            Event::DispatchStarted {
                dispatch: id,
                at: cur.record.started_at,
                bundle: cur.record.bundle.clone(),
                rule: cur.record.rule.clone(),
                hosts: cur.record.hosts.clone(),
            },
        ));
    }
    for t in &cur.targets {
        let before = prev.and_then(|p| p.targets.iter().find(|x| x.host == t.host));
        target_diff(id, before, t, out);
    }
    let known = prev.map_or(0, |p| p.notices.len());
    for n in cur.notices.iter().skip(known) {
        out.push((
            n.at,
            2,
            Event::Notice {
                dispatch: id,
                at: n.at,
                host: n.host.clone(),
                level: n.level,
                message: n.message.clone(),
            },
        ));
    }
    let was_over =
        prev.is_some_and(|p| matches!(p.state, DispatchState::Finished | DispatchState::Cancelled));
    if !was_over
        && matches!(
            cur.state,
            DispatchState::Finished | DispatchState::Cancelled
        )
    {
        let at = cur.finished_at.unwrap_or_else(crate::model::events::now_ms);
        let count = |r| cur.targets.iter().filter(|t| t.result == Some(r)).count();
        use crate::model::events::TargetResult as R;
        out.push((
            at,
            6,
            Event::DispatchFinished {
                dispatch: id,
                at,
                succeeded: count(R::Succeeded),
                failed: count(R::Failed),
                skipped: count(R::Skipped),
                cancelled: count(R::Cancelled),
                duration_ms: at - cur.record.started_at,
            },
        ));
    }
}

fn target_diff(
    id: i64,
    before: Option<&TargetDetail>,
    t: &TargetDetail,
    out: &mut Vec<(Millis, u8, Event)>,
) {
    let old_steps = before.map_or(&[][..], |b| &b.steps[..]);
    for (i, s) in t.steps.iter().enumerate() {
        let old = old_steps.get(i);
        if old.is_none() {
            out.push((
                s.started_at,
                1,
                Event::StepStarted {
                    dispatch: id,
                    at: s.started_at,
                    host: t.host.clone(),
                    step: s.step,
                    command: s.command.clone(),
                },
            ));
        }
        if let Some(outcome) = s.outcome
            && old.is_none_or(|o| o.outcome.is_none())
        {
            let at = s.finished_at.unwrap_or(s.started_at);
            out.push((
                at,
                4,
                Event::StepFinished {
                    dispatch: id,
                    at,
                    host: t.host.clone(),
                    step: s.step,
                    outcome,
                    exit_code: s.exit_code,
                    error: s.error.clone(),
                    duration_ms: s.duration_ms.unwrap_or(at - s.started_at),
                },
            ));
        }
    }
    if let Some(v) = &t.verified
        && before.is_none_or(|b| b.verified.is_none())
    {
        // The journal keeps no time of the check: the upload step's end is when it was told.
        let at = t
            .steps
            .iter()
            .rev()
            .find(|s| s.step == Step::Upload)
            .and_then(|s| s.finished_at.or(Some(s.started_at)))
            .unwrap_or_else(crate::model::events::now_ms);
        out.push((
            at,
            3,
            Event::Transfer {
                dispatch: id,
                at,
                host: t.host.clone(),
                transfer: TransferEvent::Verified {
                    size: v.size,
                    sha256: v.sha256.clone(),
                    by: v.by,
                },
            },
        ));
    }
    if let Some(result) = t.result
        && before.is_none_or(|b| b.result.is_none())
    {
        let at = t.finished_at.unwrap_or_else(crate::model::events::now_ms);
        out.push((
            at,
            5,
            Event::TargetFinished {
                dispatch: id,
                at,
                host: t.host.clone(),
                result,
                failed_step: t.failed_step,
                error: t.error.clone(),
                duration_ms: t.duration_ms.unwrap_or(0),
            },
        ));
    }
}
