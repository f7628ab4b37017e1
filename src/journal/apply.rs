//! The SQL behind each event: one function per kind of record, each run inside the
//! transaction [`super::write::Store`] opens. Updates that match no row are turned into
//! "no such dispatch/target" errors, so an engine bug names what it got wrong.

use super::codec::{path_to_sql, size_to_sql};
use super::db::{DbResult, Tx, params};
use super::error::{Context, JournalError};
use super::liveness::{self, Writer};
use super::origin::Origin;
use super::{DispatchState, NewDispatch};
use crate::model::events::{Event, Level, Millis, Step, StepOutcome};
use std::path::Path;

/// How a step run ended, as `StepFinished` says.
pub(crate) struct StepEnd<'a> {
    at: Millis,
    outcome: StepOutcome,
    exit_code: Option<i32>,
    error: Option<&'a str>,
    duration_ms: i64,
}

/// Applies a control event; returns the step row a `StepStarted` created.
pub(crate) fn control(
    tx: &Tx<'_>,
    path: &Path,
    event: &Event,
) -> Result<Option<i64>, JournalError> {
    match event {
        Event::DispatchStarted { dispatch, .. } => ensure_dispatch(tx, path, *dispatch)?,
        Event::BundleHashed {
            dispatch, sha256, ..
        } => {
            let changed = tx
                .execute(
                    "UPDATE dispatch SET bundle_sha256 = ?2 WHERE id = ?1",
                    params![dispatch, sha256],
                )
                .ctx(path, "recording the bundle's SHA-256")?;
            expect_dispatch(path, *dispatch, changed)?;
        }
        Event::StepStarted {
            dispatch,
            at,
            host,
            step,
            command,
        } => {
            let id = insert_step(tx, path, *dispatch, host, *step, command.as_deref(), *at)?;
            return Ok(Some(id));
        }
        Event::StepFinished {
            dispatch,
            at,
            host,
            step,
            outcome,
            exit_code,
            error,
            duration_ms,
        } => {
            let end = StepEnd {
                at: *at,
                outcome: *outcome,
                exit_code: *exit_code,
                error: error.as_deref(),
                duration_ms: *duration_ms,
            };
            finish_step(tx, path, *dispatch, host, *step, &end)?;
        }
        Event::TargetFinished {
            dispatch,
            at,
            host,
            result,
            failed_step,
            error,
            duration_ms,
        } => {
            let changed = tx
                .execute(
                    "UPDATE target SET result = ?3, failed_step = ?4, error = ?5, finished_at = ?6,
                            duration_ms = ?7, started_at = coalesce(started_at, CAST(?6 AS BIGINT) - CAST(?7 AS BIGINT))
                     WHERE dispatch = ?1 AND host = ?2",
                    params![dispatch, host, result, failed_step, error, at, duration_ms],
                )
                .ctx(path, "recording a finished target")?;
            expect_target(tx, path, *dispatch, host, changed)?;
        }
        Event::Notice {
            dispatch,
            at,
            host,
            level,
            message,
        } => insert_notice(tx, path, *dispatch, *at, host.as_deref(), *level, message)?,
        Event::DispatchFinished { dispatch, at, .. } => {
            let changed = tx
                .execute(
                    "UPDATE dispatch SET finished_at = ?2,
                            state = CASE state WHEN 'cancelled' THEN 'cancelled' ELSE 'finished' END
                     WHERE id = ?1",
                    params![dispatch, at],
                )
                .ctx(path, "recording a finished dispatch")?;
            expect_dispatch(path, *dispatch, changed)?;
        }
        Event::Output { .. } | Event::Transfer { .. } => {}
    }
    Ok(None)
}

pub(crate) fn insert_dispatch(
    tx: &Tx<'_>,
    path: &Path,
    rec: &NewDispatch,
    me: &Writer,
) -> Result<i64, JournalError> {
    insert_dispatch_rows(tx, rec, me).ctx(path, "recording a new dispatch")
}

fn insert_dispatch_rows(tx: &Tx<'_>, rec: &NewDispatch, me: &Writer) -> DbResult<i64> {
    let origin = Origin::current();
    let id = tx.query_row(
        "INSERT INTO dispatch (bundle, bundle_path, bundle_sha256, bundle_size, rule, config_path,
                               stamp, state, started_at, writer_pid, writer_marker,
                               started_by, started_on)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8, ?9, ?10, ?11, ?12) RETURNING id",
        params![
            rec.bundle,
            path_to_sql(&rec.bundle_path),
            rec.bundle_sha256,
            size_to_sql(rec.bundle_size),
            rec.rule,
            path_to_sql(&rec.config_path),
            rec.timestamp,
            rec.started_at,
            me.pid,
            me.marker,
            origin.user,
            origin.host,
        ],
        |r| r.get::<i64>(0),
    )?;
    let id = id.expect("INSERT … RETURNING returns the row");
    for (position, host) in rec.hosts.iter().enumerate() {
        tx.execute(
            "INSERT INTO target (dispatch, host, position) VALUES (?1, ?2, ?3)",
            params![id, host, position as i64],
        )?;
    }
    Ok(id)
}

/// Starts a new run of `step`; the target counts as started from its first step.
pub(crate) fn insert_step(
    tx: &Tx<'_>,
    path: &Path,
    dispatch: i64,
    host: &str,
    step: Step,
    command: Option<&str>,
    at: Millis,
) -> Result<i64, JournalError> {
    let op = "recording a step start";
    let changed = tx
        .execute(
            "UPDATE target SET started_at = coalesce(started_at, ?3) WHERE dispatch = ?1 AND host = ?2",
            params![dispatch, host, at],
        )
        .ctx(path, op)?;
    expect_target(tx, path, dispatch, host, changed)?;
    let id = tx
        .query_row(
            "INSERT INTO step (dispatch, host, step, command, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            params![dispatch, host, step, command, at],
            |r| r.get::<i64>(0),
        )
        .ctx(path, op)?;
    Ok(id.expect("INSERT … RETURNING returns the row"))
}

/// Ends the latest run of `step`; a finish with no recorded start gets a run of its own.
fn finish_step(
    tx: &Tx<'_>,
    path: &Path,
    dispatch: i64,
    host: &str,
    step: Step,
    end: &StepEnd<'_>,
) -> Result<(), JournalError> {
    let op = "recording a finished step";
    let latest: Option<i64> = tx
        .query_row(
            "SELECT id FROM step WHERE dispatch = ?1 AND host = ?2 AND step = ?3
             ORDER BY id DESC LIMIT 1",
            params![dispatch, host, step],
            |r| r.get(0),
        )
        .ctx(path, op)?;
    let id = match latest {
        Some(id) => id,
        None => insert_step(
            tx,
            path,
            dispatch,
            host,
            step,
            None,
            end.at - end.duration_ms,
        )?,
    };
    tx.execute(
        "UPDATE step SET outcome = ?2, exit_code = ?3, error = ?4, finished_at = ?5, duration_ms = ?6
         WHERE id = ?1",
        params![id, end.outcome, end.exit_code, end.error, end.at, end.duration_ms],
    )
    .ctx(path, op)?;
    Ok(())
}

fn insert_notice(
    tx: &Tx<'_>,
    path: &Path,
    dispatch: i64,
    at: Millis,
    host: Option<&str>,
    level: Level,
    message: &str,
) -> Result<(), JournalError> {
    ensure_dispatch(tx, path, dispatch)?;
    tx.execute(
        "INSERT INTO notice (dispatch, at, host, level, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![dispatch, at, host, level, message],
    )
    .ctx(path, "recording a notice")?;
    Ok(())
}

/// A new attempt replaces the file on the host, so an earlier verification no longer holds.
pub(crate) fn upload_started(
    tx: &Tx<'_>,
    path: &Path,
    dispatch: i64,
    host: &str,
) -> Result<(), JournalError> {
    let changed = tx
        .execute(
            "UPDATE target SET upload_attempts = upload_attempts + 1,
                    verified_size = NULL, verified_sha256 = NULL
             WHERE dispatch = ?1 AND host = ?2",
            params![dispatch, host],
        )
        .ctx(path, "recording an upload")?;
    expect_target(tx, path, dispatch, host, changed)
}

pub(crate) fn upload_verified(
    tx: &Tx<'_>,
    path: &Path,
    dispatch: i64,
    host: &str,
    size: u64,
    sha256: Option<&str>,
) -> Result<(), JournalError> {
    let changed = tx
        .execute(
            "UPDATE target SET verified_size = ?3, verified_sha256 = ?4
             WHERE dispatch = ?1 AND host = ?2",
            params![dispatch, host, size_to_sql(size), sha256],
        )
        .ctx(path, "recording a verified upload")?;
    expect_target(tx, path, dispatch, host, changed)
}

pub(crate) fn cancel_dispatch(tx: &Tx<'_>, path: &Path, id: i64) -> Result<(), JournalError> {
    let changed = tx
        .execute(
            "UPDATE dispatch SET state = 'cancelled', finished_at = coalesce(finished_at, ?2)
             WHERE id = ?1",
            params![id, crate::model::events::now_ms()],
        )
        .ctx(path, "cancelling a dispatch")?;
    expect_dispatch(path, id, changed)
}

/// Marks the latest run of `step` unknown, if it never finished (or already is unknown).
pub(crate) fn mark_unknown(
    tx: &Tx<'_>,
    path: &Path,
    id: i64,
    host: &str,
    step: Step,
) -> Result<(), JournalError> {
    let changed = tx
        .execute(
            "UPDATE step SET outcome = 'unknown',
                    error = coalesce(error, 'dropship stopped while this step ran: it may or may not have taken effect')
             WHERE id = (SELECT id FROM step WHERE dispatch = ?1 AND host = ?2 AND step = ?3
                         ORDER BY id DESC LIMIT 1)
               AND (outcome IS NULL OR outcome = 'unknown')",
            params![id, host, step],
        )
        .ctx(path, "marking a step unknown")?;
    if changed > 0 {
        return Ok(());
    }
    ensure_target(tx, path, id, host)?;
    Err(JournalError::NoSuchStep {
        path: path.to_path_buf(),
        id,
        host: host.to_owned(),
        step: step.to_string(),
    })
}

/// Makes this process the writer of dispatch `id`, unless it is finished or its writer lives.
pub(crate) fn take_over(
    tx: &Tx<'_>,
    path: &Path,
    id: i64,
    me: &Writer,
) -> Result<(), JournalError> {
    let op = "taking over a dispatch";
    let row: Option<(DispatchState, i64, String)> = tx
        .query_row(
            &format!(
                "SELECT state, writer_pid, writer_marker FROM dispatch WHERE id = ?1{}",
                tx.for_update()
            ),
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .ctx(path, op)?;
    let Some((state, pid, marker)) = row else {
        return Err(no_such_dispatch(path, id));
    };
    let mine = pid == me.pid && marker == me.marker;
    match state {
        DispatchState::Finished => return Err(JournalError::AlreadyFinished { id }),
        DispatchState::Running if !mine && liveness::alive(tx, pid, &marker) => {
            return Err(JournalError::StillRunning { id, pid });
        }
        _ => {}
    }
    tx.execute(
        "UPDATE dispatch SET state = 'running', finished_at = NULL, writer_pid = ?2, writer_marker = ?3
         WHERE id = ?1",
        params![id, me.pid, me.marker],
    )
    .ctx(path, op)?;
    Ok(())
}

fn ensure_dispatch(tx: &Tx<'_>, path: &Path, id: i64) -> Result<(), JournalError> {
    let exists = tx
        .query_row("SELECT 1 FROM dispatch WHERE id = ?1", params![id], |_| {
            Ok(())
        })
        .ctx(path, "looking up a dispatch")?;
    exists.ok_or_else(|| no_such_dispatch(path, id))
}

fn ensure_target(tx: &Tx<'_>, path: &Path, id: i64, host: &str) -> Result<(), JournalError> {
    let exists = tx
        .query_row(
            "SELECT 1 FROM target WHERE dispatch = ?1 AND host = ?2",
            params![id, host],
            |_| Ok(()),
        )
        .ctx(path, "looking up a target")?;
    if exists.is_some() {
        return Ok(());
    }
    ensure_dispatch(tx, path, id)?;
    Err(JournalError::NoSuchTarget {
        path: path.to_path_buf(),
        id,
        host: host.to_owned(),
    })
}

/// An UPDATE of a target that changed nothing means the event named an unknown target.
fn expect_target(
    tx: &Tx<'_>,
    path: &Path,
    id: i64,
    host: &str,
    changed: usize,
) -> Result<(), JournalError> {
    if changed == 0 {
        ensure_target(tx, path, id, host)?;
    }
    Ok(())
}

fn expect_dispatch(path: &Path, id: i64, changed: usize) -> Result<(), JournalError> {
    if changed == 0 {
        return Err(no_such_dispatch(path, id));
    }
    Ok(())
}

fn no_such_dispatch(path: &Path, id: i64) -> JournalError {
    JournalError::NoSuchDispatch {
        path: path.to_path_buf(),
        id,
    }
}
