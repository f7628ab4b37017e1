//! Queries: history, one dispatch in detail, output, resume state, and last results per host.
//! Callers run them inside one read transaction, so a dispatch is read as of one moment even
//! while another process writes it.

use super::codec::{opt_size_from_sql, path_from_sql, size_from_sql, stream_from_code};
use super::db::{DbError, DbResult, Row, Tx, params};
use super::error::{Context, JournalError};
use super::{
    DispatchDetail, DispatchState, DispatchSummary, HostLast, NewDispatch, NoticeRecord,
    OutputLine, ResumeState, Shipped, StepRecord, TargetDetail, TargetProgress, VerifiedUpload,
    liveness,
};
use crate::model::ROLLBACK_BUNDLE;
use crate::model::events::{Step, StepOutcome, TargetResult};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What a reader sees: `running` whose writer is gone is `interrupted`.
fn effective_state(tx: &Tx<'_>, stored: DispatchState, pid: i64, marker: &str) -> DispatchState {
    if stored == DispatchState::Running && !liveness::alive(tx, pid, marker) {
        DispatchState::Interrupted
    } else {
        stored
    }
}

fn count(row: &Row, idx: usize) -> DbResult<usize> {
    let n: i64 = row.get(idx)?;
    usize::try_from(n).map_err(|_| DbError::Decode {
        idx,
        detail: format!("{n} is not a count"),
    })
}

pub(crate) fn history(
    conn: &Tx<'_>,
    path: &Path,
    limit: usize,
) -> Result<Vec<DispatchSummary>, JournalError> {
    let op = "reading the history";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn
        .query(
            "SELECT d.id, d.bundle, d.rule, d.started_at, d.finished_at, d.state,
                    d.writer_pid, d.writer_marker, count(t.host),
                    count(CASE WHEN t.result = 'succeeded' THEN 1 END),
                    count(CASE WHEN t.result = 'failed' THEN 1 END),
                    count(CASE WHEN t.result = 'skipped' THEN 1 END),
                    count(CASE WHEN t.result = 'cancelled' THEN 1 END)
             FROM dispatch d LEFT JOIN target t ON t.dispatch = d.id
             GROUP BY d.id ORDER BY d.id DESC LIMIT ?1",
            params![limit],
        )
        .ctx(path, op)?;
    rows.iter()
        .map(|r| summary_row(conn, r))
        .collect::<DbResult<_>>()
        .ctx(path, op)
}

fn summary_row(tx: &Tx<'_>, r: &Row) -> DbResult<DispatchSummary> {
    let started_at = r.get(3)?;
    let finished_at: Option<i64> = r.get(4)?;
    let marker: String = r.get(7)?;
    Ok(DispatchSummary {
        id: r.get(0)?,
        bundle: r.get(1)?,
        rule: r.get(2)?,
        started_at,
        finished_at,
        state: effective_state(tx, r.get(5)?, r.get(6)?, &marker),
        hosts: count(r, 8)?,
        succeeded: count(r, 9)?,
        failed: count(r, 10)?,
        skipped: count(r, 11)?,
        cancelled: count(r, 12)?,
        duration_ms: finished_at.map(|f| f - started_at),
    })
}

pub(crate) fn dispatch(
    conn: &Tx<'_>,
    path: &Path,
    id: i64,
) -> Result<Option<DispatchDetail>, JournalError> {
    let op = "reading a dispatch";
    let head = conn
        .query_row(
            "SELECT bundle, bundle_path, bundle_sha256, bundle_size, rule, config_path, stamp,
                    started_at, state, finished_at, writer_pid, writer_marker
             FROM dispatch WHERE id = ?1",
            params![id],
            |r| dispatch_row(conn, r),
        )
        .ctx(path, op)?;
    let Some(mut detail) = head.map(|mut d| {
        d.id = id;
        d
    }) else {
        return Ok(None);
    };
    detail.targets = targets(conn, id).ctx(path, op)?;
    attach_steps(conn, id, &mut detail.targets).ctx(path, op)?;
    detail.notices = notices(conn, id).ctx(path, op)?;
    detail.record.hosts = detail.targets.iter().map(|t| t.host.clone()).collect();
    Ok(Some(detail))
}

fn dispatch_row(tx: &Tx<'_>, r: &Row) -> DbResult<DispatchDetail> {
    let marker: String = r.get(11)?;
    let writer_pid = r.get(10)?;
    Ok(DispatchDetail {
        id: 0,
        record: NewDispatch {
            bundle: r.get(0)?,
            bundle_path: path_from_sql(r, 1)?,
            bundle_sha256: r.get(2)?,
            bundle_size: size_from_sql(r, 3)?,
            rule: r.get(4)?,
            config_path: path_from_sql(r, 5)?,
            timestamp: r.get(6)?,
            hosts: Vec::new(),
            started_at: r.get(7)?,
        },
        state: effective_state(tx, r.get(8)?, writer_pid, &marker),
        finished_at: r.get(9)?,
        writer_pid,
        targets: Vec::new(),
        notices: Vec::new(),
    })
}

fn targets(conn: &Tx<'_>, id: i64) -> DbResult<Vec<TargetDetail>> {
    let rows = conn.query(
        "SELECT host, result, failed_step, error, started_at, finished_at, duration_ms,
                upload_attempts, verified_size, verified_sha256
         FROM target WHERE dispatch = ?1 ORDER BY position",
        params![id],
    )?;
    let target = |r: &Row| {
        let verified = match opt_size_from_sql(r, 8)? {
            Some(size) => {
                let sha256: Option<String> = r.get(9)?;
                Some(VerifiedUpload {
                    size,
                    by: match sha256 {
                        Some(_) => crate::transport::VerifiedBy::Sha256,
                        None => crate::transport::VerifiedBy::SizeOnly,
                    },
                    sha256,
                })
            }
            None => None,
        };
        Ok(TargetDetail {
            host: r.get(0)?,
            result: r.get(1)?,
            failed_step: r.get(2)?,
            error: r.get(3)?,
            started_at: r.get(4)?,
            finished_at: r.get(5)?,
            duration_ms: r.get(6)?,
            upload_attempts: r.get(7)?,
            verified,
            steps: Vec::new(),
        })
    };
    rows.iter().map(target).collect()
}

/// Reads every step run of the dispatch at once and hands each to its target.
fn attach_steps(conn: &Tx<'_>, id: i64, targets: &mut [TargetDetail]) -> DbResult<()> {
    let index: HashMap<String, usize> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.host.clone(), i))
        .collect();
    let rows = conn.query(
        "SELECT host, step, command, outcome, exit_code, error, started_at, finished_at,
                duration_ms, lines, dropped_lines
         FROM step WHERE dispatch = ?1 ORDER BY id",
        params![id],
    )?;
    for r in &rows {
        let host: String = r.get(0)?;
        let record = StepRecord {
            step: r.get(1)?,
            command: r.get(2)?,
            outcome: r.get(3)?,
            exit_code: r.get(4)?,
            error: r.get(5)?,
            started_at: r.get(6)?,
            finished_at: r.get(7)?,
            duration_ms: r.get(8)?,
            lines: size_from_sql(r, 9)?,
            dropped_lines: size_from_sql(r, 10)?,
        };
        if let Some(&i) = index.get(&host) {
            targets[i].steps.push(record);
        }
    }
    Ok(())
}

fn notices(conn: &Tx<'_>, id: i64) -> DbResult<Vec<NoticeRecord>> {
    let rows = conn.query(
        "SELECT at, host, level, message FROM notice WHERE dispatch = ?1 ORDER BY id",
        params![id],
    )?;
    rows.iter()
        .map(|r| {
            Ok(NoticeRecord {
                at: r.get(0)?,
                host: r.get(1)?,
                level: r.get(2)?,
                message: r.get(3)?,
            })
        })
        .collect()
}

pub(crate) fn output(
    conn: &Tx<'_>,
    path: &Path,
    id: i64,
    host: &str,
    step: Step,
) -> Result<Vec<OutputLine>, JournalError> {
    let op = "reading output";
    let rows = conn
        .query(
            "SELECT o.at, o.stream, o.line FROM output o JOIN step s ON s.id = o.step
             WHERE s.dispatch = ?1 AND s.host = ?2 AND s.step = ?3 ORDER BY o.id",
            params![id, host, step],
        )
        .ctx(path, op)?;
    rows.iter()
        .map(|r| {
            Ok(OutputLine {
                at: r.get(0)?,
                stream: stream_from_code(r.get(1)?)
                    .map_err(|detail| DbError::Decode { idx: 1, detail })?,
                line: r.get(2)?,
            })
        })
        .collect::<DbResult<_>>()
        .ctx(path, op)
}

pub(crate) fn resume_state(
    conn: &Tx<'_>,
    path: &Path,
    id: i64,
) -> Result<ResumeState, JournalError> {
    let detail = dispatch(conn, path, id)?.ok_or_else(|| JournalError::NoSuchDispatch {
        path: path.to_path_buf(),
        id,
    })?;
    let targets = detail
        .targets
        .iter()
        .map(|t| (t.host.clone(), progress(t)))
        .collect();
    Ok(ResumeState {
        id,
        record: detail.record,
        state: detail.state,
        targets,
    })
}

fn progress(target: &TargetDetail) -> TargetProgress {
    match target.result {
        Some(TargetResult::Succeeded) => TargetProgress::Done,
        Some(TargetResult::Failed) => TargetProgress::Failed,
        Some(TargetResult::Skipped) => TargetProgress::Skipped,
        Some(TargetResult::Cancelled) => TargetProgress::Cancelled,
        None => incomplete(target),
    }
}

/// Judges each step by its latest run. A step that never finished, was marked unknown, or was
/// cancelled mid-run may have half-happened: that is the one `--resume` must not silently
/// repeat.
pub(super) fn incomplete(target: &TargetDetail) -> TargetProgress {
    let mut latest: Vec<&StepRecord> = Vec::new();
    for run in &target.steps {
        latest.retain(|r| r.step != run.step);
        latest.push(run);
    }
    let with = |wanted: fn(Option<StepOutcome>) -> bool| -> Vec<Step> {
        latest
            .iter()
            .filter(|r| wanted(r.outcome))
            .map(|r| r.step)
            .collect()
    };
    TargetProgress::Incomplete {
        verified_upload: target.verified.is_some(),
        completed: with(|o| o == Some(StepOutcome::Ok)),
        failed: with(|o| o == Some(StepOutcome::Failed)),
        running: with(|o| {
            matches!(
                o,
                None | Some(StepOutcome::Unknown) | Some(StepOutcome::Cancelled)
            )
        })
        .last()
        .copied(),
    }
}

pub(crate) fn last_results(conn: &Tx<'_>, path: &Path) -> Result<Vec<HostLast>, JournalError> {
    let op = "reading the last results per host";
    let mut succeeded: HashMap<String, Shipped> = latest_per_host(conn, true)
        .ctx(path, op)?
        .into_iter()
        .map(|(host, last)| {
            let shipped = Shipped {
                dispatch: last.dispatch,
                bundle: last.bundle,
                finished_at: last.finished_at,
            };
            (host, shipped)
        })
        .collect();
    let all = latest_per_host(conn, false).ctx(path, op)?;
    Ok(all
        .into_iter()
        .map(|(host, mut last)| {
            last.last_succeeded = succeeded.remove(&host);
            last
        })
        .collect())
}

/// Per host, its most recently finished target (only succeeded ones if asked).
fn latest_per_host(conn: &Tx<'_>, only_succeeded: bool) -> DbResult<BTreeMap<String, HostLast>> {
    let rows = conn.query(
        "SELECT host, dispatch, bundle, rule, result, finished_at, started_by, started_on FROM (
             SELECT t.host, t.dispatch, d.bundle, d.rule, t.result, t.finished_at,
                    d.started_by, d.started_on,
                    row_number() OVER (PARTITION BY t.host
                                       ORDER BY t.finished_at DESC NULLS LAST, t.dispatch DESC) AS n
             FROM target t JOIN dispatch d ON d.id = t.dispatch
             WHERE t.result IS NOT NULL
               AND d.kind = 'dispatch'
               AND (?1 = 0 OR (t.result = 'succeeded' AND d.bundle <> ?2))) AS latest
         WHERE n = 1",
        // A rollback succeeding ships nothing: "last shipped" stays the last real bundle.
        params![only_succeeded, ROLLBACK_BUNDLE],
    )?;
    rows.iter()
        .map(|r| {
            let last = HostLast {
                host: r.get(0)?,
                dispatch: r.get(1)?,
                bundle: r.get(2)?,
                rule: r.get(3)?,
                result: r.get(4)?,
                finished_at: r.get(5)?,
                last_succeeded: None,
                started_by: r.get(6)?,
                started_on: r.get(7)?,
            };
            Ok((last.host.clone(), last))
        })
        .collect()
}
