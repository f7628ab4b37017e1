//! Ad-hoc runs and named actions in the journal: dispatch rows of another `kind` (schema
//! V3), so their targets, steps and output lines are stored, read and shown exactly as a
//! dispatch's, and the queries that mean "what was shipped" (last good, last shipped, a
//! host's last dispatch) leave them out by `kind`.

use super::db::params;
use super::error::Context;
use super::write::Durability;
use super::{DispatchSummary, Journal, JournalError, NewDispatch, apply};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What a dispatch row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// A bundle shipped, or a rollback.
    Dispatch,
    /// `--run TARGETS -- COMMAND`.
    Run,
    /// `--action NAME TARGETS`.
    Action,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Dispatch => "dispatch",
            RunKind::Run => "run",
            RunKind::Action => "action",
        }
    }

    fn parse(text: &str) -> RunKind {
        match text {
            "run" => RunKind::Run,
            "action" => RunKind::Action,
            _ => RunKind::Dispatch,
        }
    }
}

/// What a run or an action ran, beside its [`NewDispatch`] record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub kind: RunKind,
    /// The command as typed (`--run`), or the action's as configured (placeholders not
    /// filled in: the rendered text per host is the `run` step's command).
    pub command: String,
    /// The action's name.
    pub action: Option<String>,
}

/// One line of `--history` with what a run ran: the summary flattened, so `--json` keeps
/// every field a dispatch line has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRow {
    #[serde(flatten)]
    pub summary: DispatchSummary,
    pub kind: RunKind,
    pub command: Option<String>,
    pub action: Option<String>,
    /// The OS user who started it (schema V4; `None` on older rows or when unknown).
    pub started_by: Option<String>,
    /// The hostname of the machine it was started on (schema V4; `None` likewise).
    pub started_on: Option<String>,
}

impl HistoryRow {
    /// The history table's "bundle" cell: the bundle, or what a run ran.
    pub fn label(&self) -> String {
        match (&self.kind, &self.action, &self.command) {
            (RunKind::Action, Some(a), _) => format!("(action {a})"),
            (RunKind::Run, _, Some(c)) => format!("(run) {c}"),
            _ => self.summary.bundle.clone(),
        }
    }

    /// The history table's "by" cell: `user@host`, `-` when not recorded.
    pub fn started_by_on(&self) -> String {
        super::origin::display(self.started_by.as_deref(), self.started_on.as_deref())
    }
}

/// What [`Journal::history_rows`] adds to a summary, read in one query.
struct RowExtra {
    kind: RunKind,
    command: Option<String>,
    action: Option<String>,
    started_by: Option<String>,
    started_on: Option<String>,
}

impl Journal {
    /// Records a new run or action (state `running`, every host pending) in one
    /// transaction and returns its id.
    pub fn begin_run(&self, rec: &NewDispatch, run: &RunRecord) -> Result<i64, JournalError> {
        let mut store = self.lock();
        let me = store.writer();
        store.write(Durability::Durable, "recording a new run", |tx, path| {
            let id = apply::insert_dispatch(tx, path, rec, &me)?;
            tx.execute(
                "UPDATE dispatch SET kind = ?1, command = ?2, action = ?3 WHERE id = ?4",
                params![run.kind.as_str(), run.command, run.action, id],
            )
            .ctx(path, "recording a new run")?;
            Ok(id)
        })
    }

    /// [`Journal::history`] with each row's kind and command.
    pub fn history_rows(&self, limit: usize) -> Result<Vec<HistoryRow>, JournalError> {
        let summaries = self.history(limit)?;
        let Some(oldest) = summaries.iter().map(|s| s.id).min() else {
            return Ok(Vec::new());
        };
        let mut kinds: HashMap<i64, RowExtra> = self.read(|conn, path| {
            let op = "reading the kinds of dispatches";
            let rows = conn
                .query(
                    "SELECT id, kind, command, action, started_by, started_on FROM dispatch
                     WHERE id >= ?1",
                    params![oldest],
                )
                .ctx(path, op)?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.get::<i64>(0)?,
                        RowExtra {
                            kind: RunKind::parse(&r.get::<String>(1)?),
                            command: r.get(2)?,
                            action: r.get(3)?,
                            started_by: r.get(4)?,
                            started_on: r.get(5)?,
                        },
                    ))
                })
                .collect::<Result<_, _>>()
                .ctx(path, op)
        })?;
        Ok(summaries
            .into_iter()
            .map(|summary| {
                // Only a row removed between the two reads has no entry.
                let extra = kinds.remove(&summary.id).unwrap_or(RowExtra {
                    kind: RunKind::Dispatch,
                    command: None,
                    action: None,
                    started_by: None,
                    started_on: None,
                });
                HistoryRow {
                    summary,
                    kind: extra.kind,
                    command: extra.command,
                    action: extra.action,
                    started_by: extra.started_by,
                    started_on: extra.started_on,
                }
            })
            .collect())
    }

    /// The kind of dispatch `id` (`None`: no such row).
    pub fn kind_of(&self, id: i64) -> Result<Option<RunKind>, JournalError> {
        self.read(|conn, path| {
            conn.query_row(
                "SELECT kind FROM dispatch WHERE id = ?1",
                params![id],
                |r| r.get::<String>(0),
            )
            .map(|k| k.map(|k| RunKind::parse(&k)))
            .ctx(path, "reading the kind of a dispatch")
        })
    }
}
