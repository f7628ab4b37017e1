//! The journal: every dispatch, target, step, exit code and output line, in SQLite, written
//! before the action it describes completes, so `--history` can show what happened and
//! `--resume` can continue a dispatch whose process was killed.
//!
//! # Durability
//! The file is in WAL mode. A transaction's pages reach the WAL file with `write(2)` at
//! commit, so *any* committed transaction survives the death of the process (`kill -9`,
//! panic, OOM) whatever `synchronous` says; `synchronous` decides what survives an OS crash or
//! power loss. Control records (step started/finished, target finished, verified upload,
//! notices, dispatch finished) are committed with `synchronous=FULL`, which fsyncs the WAL
//! before [`Journal::record`] returns: these are what `--resume` trusts, they are a dozen or
//! so per target, and one fsync each is cheap next to an SSH round trip. Output lines are
//! batched and committed with `synchronous=NORMAL` (no fsync): there can be millions, an fsync
//! per batch would make the journal the bottleneck, and losing the tail of a log to a power cut
//! is acceptable. Because the WAL is append-only, the next FULL commit's fsync also makes every
//! earlier batch durable, so output is at most one control event behind.
//!
//! # Concurrency
//! [`Journal`] is `Send + Sync`: one connection behind a mutex, shared by the dispatch threads.
//! Other processes (a second dropship, the console reading history) open the same file;
//! writes take the write lock up front (`BEGIN IMMEDIATE`) and wait up to [`BUSY_TIMEOUT`]
//! for it, reads never block writes.
//!
//! The journal stores only what events carry, and events carry no secrets.

mod apply;
mod codec;
pub(crate) mod db;
mod error;
pub mod follow;
mod last_good;
mod liveness;
pub mod location;
mod origin;
mod queue;
mod read;
pub mod resume;
mod runs;
mod schema;
mod shipped;
mod spool;
mod watch;
mod write;

pub use error::JournalError;
pub use follow::{Follow, FollowUpdate, ForeignDispatch};
pub use last_good::LastGood;
pub use queue::{Claim, Lease};
pub use runs::{HistoryRow, RunKind, RunRecord};
pub use schema::SCHEMA_VERSION;
pub use shipped::RuleShipped;
pub use watch::{BundleState, ShippedFrom, WatchRow};

use crate::model::events::{Event, Level, Millis, Step, StepOutcome, TargetResult};
use crate::transport::Stream;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long a write waits for another process holding the journal's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Tuning for one [`Journal`] handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOptions {
    /// Output lines stored per step run; later lines are only counted (`dropped_lines`), so a
    /// runaway command cannot fill the disk.
    pub max_lines_per_step: u64,
    /// Output lines buffered before they are committed. Control events and [`Journal::flush`]
    /// commit earlier.
    pub batch_lines: usize,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            max_lines_per_step: 10_000,
            batch_lines: 1_000,
        }
    }
}

/// What a dispatch was started with: enough to rebuild the identical plan on `--resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDispatch {
    pub bundle: String,
    pub bundle_path: PathBuf,
    /// Empty until known: a dispatch that starts before its bundle is hashed fills it in
    /// (`Event::BundleHashed`) before any host's upload is verified.
    pub bundle_sha256: String,
    pub bundle_size: u64,
    pub rule: String,
    pub config_path: PathBuf,
    /// The pinned `{timestamp}` (`YYYYmmdd_HHMMSS`), so paths built from it match on resume.
    pub timestamp: String,
    /// In plan order.
    pub hosts: Vec<String>,
    pub started_at: Millis,
}

impl NewDispatch {
    /// The bundle's digest if it was known as the dispatch began.
    pub fn known_sha256(&self) -> Option<String> {
        (!self.bundle_sha256.is_empty()).then(|| self.bundle_sha256.clone())
    }

    /// The hosts of `plan` a dispatch works on: all, or those in `only`.
    pub fn hosts_of(plan: &crate::plan::Plan, only: Option<&[String]>) -> Vec<String> {
        plan.targets
            .iter()
            .map(|t| t.host.name.clone())
            .filter(|h| only.is_none_or(|o| o.contains(h)))
            .collect()
    }

    /// The record of a dispatch of `plan` with the bundle `file`, to the hosts in `only`
    /// (all when `None`). The bundle's digest is the remembered one (see
    /// [`crate::transport::digest`]) or empty: then the dispatch hashes the bundle while it
    /// ships it, and records the digest as soon as it is known (`BundleHashed`).
    pub fn for_plan(
        plan: &crate::plan::Plan,
        file: &Path,
        config_path: &Path,
        only: Option<&[String]>,
    ) -> std::io::Result<NewDispatch> {
        Ok(NewDispatch {
            bundle: plan.bundle.clone(),
            bundle_path: std::fs::canonicalize(file)?,
            bundle_sha256: crate::transport::digest::remembered_sha256(file).unwrap_or_default(),
            bundle_size: std::fs::metadata(file)?.len(),
            rule: plan.rule.name.clone(),
            config_path: std::fs::canonicalize(config_path)
                .unwrap_or_else(|_| config_path.to_owned()),
            timestamp: plan.stamp.timestamp.clone(),
            hosts: NewDispatch::hosts_of(plan, only),
            started_at: crate::model::events::now_ms(),
        })
    }
}

/// How far `target` got, judged by its steps alone (as for a target that never finished):
/// what a resume of a cancelled target needs, whatever result the cancel recorded.
pub fn progress_by_steps(target: &TargetDetail) -> TargetProgress {
    read::incomplete(target)
}

/// Where a dispatch stands. `Interrupted` is derived, never stored: the row says `running` but
/// the process that wrote it is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DispatchState {
    Running,
    Finished,
    Interrupted,
    Cancelled,
}

impl DispatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchState::Running => "running",
            DispatchState::Finished => "finished",
            DispatchState::Interrupted => "interrupted",
            DispatchState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for DispatchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of `--history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchSummary {
    pub id: i64,
    pub bundle: String,
    pub rule: String,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub state: DispatchState,
    /// Targets in the dispatch; those not counted below never finished.
    pub hosts: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
    /// `finished_at - started_at`, once finished.
    pub duration_ms: Option<i64>,
}

/// Everything recorded about one dispatch except its output lines (see [`Journal::output`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchDetail {
    pub id: i64,
    pub record: NewDispatch,
    pub state: DispatchState,
    pub finished_at: Option<Millis>,
    /// The process that writes (or last wrote) this dispatch.
    pub writer_pid: i64,
    /// In plan order.
    pub targets: Vec<TargetDetail>,
    pub notices: Vec<NoticeRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetDetail {
    pub host: String,
    /// `None` until the target finished.
    pub result: Option<TargetResult>,
    pub failed_step: Option<Step>,
    pub error: Option<String>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub duration_ms: Option<i64>,
    /// Upload attempts started, over all runs of the dispatch.
    pub upload_attempts: u32,
    /// Set once the uploaded file was verified on the host.
    pub verified: Option<VerifiedUpload>,
    /// Every step run, in the order they started.
    pub steps: Vec<StepRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedUpload {
    pub size: u64,
    pub sha256: Option<String>,
    /// A verified upload with no hash was proven by its size alone (an FTP-only rule).
    pub by: crate::transport::VerifiedBy,
}

/// One run of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: Step,
    pub command: Option<String>,
    /// `None` while started and not finished: running, or outcome unknown if the writer died.
    pub outcome: Option<StepOutcome>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub duration_ms: Option<i64>,
    /// Output lines stored.
    pub lines: u64,
    /// Output lines beyond [`JournalOptions::max_lines_per_step`], counted but not stored.
    pub dropped_lines: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRecord {
    pub at: Millis,
    pub host: Option<String>,
    pub level: Level,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    pub at: Millis,
    pub stream: Stream,
    pub line: String,
}

/// What `--resume` needs: the original inputs and, per host, how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeState {
    pub id: i64,
    pub record: NewDispatch,
    pub state: DispatchState,
    /// In plan order.
    pub targets: Vec<(String, TargetProgress)>,
}

/// How far one target got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetProgress {
    /// Finished and succeeded: nothing to do.
    Done,
    Failed,
    Skipped,
    Cancelled,
    /// Never finished: the process died or the dispatch was cancelled first.
    Incomplete {
        /// The upload was verified on the host: do not upload again.
        verified_upload: bool,
        /// Steps whose latest run finished `Ok`, in the order they ran.
        completed: Vec<Step>,
        /// Steps whose latest run failed (e.g. `upgrade` before a `rollback` that never ended).
        failed: Vec<Step>,
        /// The step that started and never finished (or was marked unknown): it may or may
        /// not have taken effect, so it is re-run only when the user forces it.
        running: Option<Step>,
    },
}

/// The last finished dispatch to one host, for the console's Hosts pane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLast {
    pub host: String,
    pub dispatch: i64,
    pub bundle: String,
    pub rule: String,
    pub result: TargetResult,
    pub finished_at: Option<Millis>,
    /// The last bundle that succeeded there: the version the host should be running.
    pub last_succeeded: Option<Shipped>,
    /// Who started that dispatch, and on which machine (schema V4; `None` when not recorded).
    #[serde(default)]
    pub started_by: Option<String>,
    #[serde(default)]
    pub started_on: Option<String>,
}

impl HostLast {
    /// `user@host` of its dispatch, `-` when not recorded.
    pub fn started_by_on(&self) -> String {
        origin::display(self.started_by.as_deref(), self.started_on.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipped {
    pub dispatch: i64,
    pub bundle: String,
    pub finished_at: Option<Millis>,
}

/// A handle on the journal file. Cheap to share: wrap it in an `Arc`.
pub struct Journal {
    path: PathBuf,
    store: Mutex<write::Store>,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` with default options. `path` may
    /// also be a `postgres://USER@HOST[:PORT]/DB` URL: see [`location`].
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Journal::open_with(path, JournalOptions::default())
    }

    pub fn open_with(path: &Path, options: JournalOptions) -> Result<Journal, JournalError> {
        let (conn, shown, reconnect) = match location::parse(path)? {
            location::Location::File(file) => (schema::open(&file)?, file, None),
            location::Location::Postgres(target) => {
                let shown = PathBuf::from(target.display());
                let conn = schema::open_postgres(&target, &shown)?;
                let again = shown.clone();
                let reconnect: write::Reconnect =
                    Box::new(move || schema::open_postgres(&target, &again));
                (conn, shown, Some(reconnect))
            }
        };
        let server = reconnect.is_some();
        let mut store = write::Store::new(conn, shown.clone(), options, reconnect)?;
        if server {
            // Only a server journal spools (see `journal/spool.rs`).
            store.replay_orphans();
        }
        Ok(Journal {
            store: Mutex::new(store),
            path: shown,
        })
    }

    /// Whether `path` names a PostgreSQL journal rather than a file.
    pub fn is_server(path: &Path) -> bool {
        matches!(location::parse(path), Ok(location::Location::Postgres(_)))
    }

    /// `journal.sqlite` in dropship's state directory.
    pub fn default_path() -> PathBuf {
        crate::config::state_dir().join("journal.sqlite")
    }

    /// The journal's file, or its URL (never with a password) for PostgreSQL.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a new dispatch (state `running`, every host `pending`) and returns its id.
    pub fn begin_dispatch(&self, rec: &NewDispatch) -> Result<i64, JournalError> {
        self.lock().begin_dispatch(rec)
    }

    /// Applies one event. Control events are durable when this returns; output lines are
    /// buffered (see [`JournalOptions::batch_lines`]) and progress is not stored.
    pub fn record(&self, event: &Event) -> Result<(), JournalError> {
        self.lock().record(event)
    }

    /// Whether the journal's server is away and events are spooled locally (see
    /// `journal/spool.rs`). Nothing new should start meanwhile.
    pub fn is_down(&self) -> bool {
        self.lock().is_down()
    }

    /// What the user should hear about the server going away and coming back, once each.
    pub fn take_notices(&self) -> Vec<String> {
        self.lock().take_notices()
    }

    /// Commits buffered output lines now. Call it on a timer while commands run quietly, so a
    /// crash loses at most that interval of output.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.lock().flush()
    }

    /// Marks a dispatch cancelled (by the user, or an interrupted one given up). Targets keep
    /// what they recorded. A later `DispatchFinished` does not turn it back into `finished`.
    pub fn mark_cancelled(&self, id: i64) -> Result<(), JournalError> {
        self.lock().mark_cancelled(id)
    }

    /// Records that the latest run of `step` on `host`, which started and never finished
    /// because its process died, has an unknown outcome.
    pub fn mark_unknown(&self, id: i64, host: &str, step: Step) -> Result<(), JournalError> {
        self.lock().mark_unknown(id, host, step)
    }

    /// Takes over an interrupted or cancelled dispatch for `--resume`: this process becomes
    /// its writer and it is `running` again. Refused while its writer lives, and once it has
    /// finished.
    pub fn begin_resume(&self, id: i64) -> Result<ResumeState, JournalError> {
        self.lock().begin_resume(id)
    }

    /// Dispatches, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<DispatchSummary>, JournalError> {
        self.read(|conn, path| read::history(conn, path, limit))
    }

    pub fn dispatch(&self, id: i64) -> Result<Option<DispatchDetail>, JournalError> {
        self.read(|conn, path| read::dispatch(conn, path, id))
    }

    /// Stored output of every run of `step` on `host`, in the order it was printed.
    pub fn output(&self, id: i64, host: &str, step: Step) -> Result<Vec<OutputLine>, JournalError> {
        self.read(|conn, path| read::output(conn, path, id, host, step))
    }

    /// How far each target of dispatch `id` got, without taking the dispatch over.
    pub fn resume_plan(&self, id: i64) -> Result<ResumeState, JournalError> {
        self.read(|conn, path| read::resume_state(conn, path, id))
    }

    /// Per host, its latest finished target, sorted by host.
    pub fn last_results(&self) -> Result<Vec<HostLast>, JournalError> {
        self.read(read::last_results)
    }

    /// Runs a query in one read transaction, after committing this handle's buffered output
    /// so a handle always reads its own writes.
    fn read<T>(
        &self,
        query: impl FnOnce(&db::Tx<'_>, &Path) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mut store = self.lock();
        store.flush()?;
        let tx = store.read_tx()?;
        query(&tx, &self.path)
    }

    /// A panic in another thread while it held the lock leaves the store usable: an open
    /// transaction was rolled back when it unwound, and buffered lines are still valid.
    fn lock(&self) -> MutexGuard<'_, write::Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Journal {
    /// Commits buffered output; an error here has nowhere to go, and control events were
    /// already committed by `record`.
    fn drop(&mut self) {
        let _ = self.lock().flush();
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Journal>();
    }
}
