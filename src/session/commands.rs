//! The headless commands: `--dispatch`, `--resume`, `--rollback`, `--watch`, and the
//! read-only `--history`, `--probe`, `--status`. They build plans, open the journal and run
//! the engine in a [`Session`]; what they emit goes to the front end's intake, which
//! renders it (`ui::headless`).

use super::{JournalFailed, Session};
use crate::config::{Config, Netrc, SshHosts};
use crate::engine::events::Event;
use crate::engine::fetch::{self, FetchError};
use crate::engine::job::{Cancel, Skip};
use crate::engine::rollback::{self, RollbackError};
use crate::engine::rollout::{self, Dispatch, Emit, Summary};
use crate::fleet::target::ProbeTarget;
use crate::journal::{Journal, JournalError, NewDispatch};
use crate::plan::{Plan, PlanError, Stamp};
use crate::transport::known_hosts::KnownHostsFiles;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("bundle {path}: {detail}\n  help: check the path; --plan NAME works without the file")]
    Bundle { path: PathBuf, detail: String },
    #[error("dispatch #{id} cannot be resumed: {why}")]
    Resume { id: i64, why: String },
    #[error(transparent)]
    Rollback(#[from] RollbackError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
}

impl RunError {
    /// Usage and input problems (exit 2) as opposed to a failed dispatch (exit 1).
    pub fn is_usage(&self) -> bool {
        match self {
            RunError::Runtime(_) => false,
            RunError::Watch(e) => e.is_usage(),
            _ => true,
        }
    }
}

/// What every headless command needs.
pub struct Context {
    pub config: Config,
    pub netrc: Netrc,
    pub ssh: SshHosts,
    pub journal_path: PathBuf,
    pub known_hosts: KnownHostsFiles,
}

/// A bundle ready to ship: its plan and the local file.
pub struct Prepared {
    pub plan: Plan,
    pub file: PathBuf,
}

/// Plans every bundle (so a bundle no rule matches stops everything before anything is
/// shipped), then fetches the URLs.
pub fn prepare(
    ctx: &Context,
    bundles: &[String],
    stamp: Option<&Stamp>,
    mut progress: impl FnMut(&str, u64, Option<u64>),
) -> Result<Vec<Prepared>, RunError> {
    let stamp = stamp.cloned().unwrap_or_else(Stamp::now);
    let mut planned = Vec::new();
    for arg in bundles {
        let name = if fetch::is_url(arg) {
            fetch::url_file_name(arg)
                .ok_or_else(|| FetchError::Http {
                    url: arg.clone(),
                    detail: "the URL names no file".into(),
                })?
                .to_owned()
        } else {
            arg.clone()
        };
        planned.push((
            arg,
            Plan::build(&ctx.config, &ctx.netrc, &ctx.ssh, &name, stamp.clone())?,
        ));
    }
    let downloads = crate::config::state_dir()
        .join("downloads")
        .join(&stamp.timestamp);
    let mut out = Vec::new();
    for (arg, plan) in planned {
        let file = if fetch::is_url(arg) {
            fetch::fetch(arg, &downloads, &mut |n, t| progress(arg, n, t))?
        } else {
            let path = PathBuf::from(arg);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => path,
                Ok(_) => {
                    return Err(RunError::Bundle {
                        path,
                        detail: "is not a regular file".into(),
                    });
                }
                Err(e) => {
                    return Err(RunError::Bundle {
                        path,
                        detail: e.to_string(),
                    });
                }
            }
        };
        out.push(Prepared { plan, file });
    }
    Ok(out)
}

/// Runs `work` in a new [`Session`]: events recorded, then handed to `front`; SIGINT or
/// SIGTERM cancels with [`GRACE`]; notifications still on their way are waited for (up to
/// [`crate::engine::notify::EXIT_WAIT`], a second signal stops the wait).
fn with_session<T>(
    journal: Arc<Journal>,
    front: Emit,
    work: impl AsyncFnOnce(&Session, Emit, Arc<Cancel>) -> T,
) -> Result<T, RunError> {
    let session = Session::new(journal, None).map_err(RunError::Runtime)?;
    let cancel = Arc::new(Cancel::new());
    session.stop_on_signals(cancel.clone(), || {});
    let emit = session.recording(front, None);
    let out = session.block_on(work(&session, emit, cancel.clone()));
    session.wait_notifications(
        std::time::Instant::now() + crate::engine::notify::EXIT_WAIT,
        &|| cancel.is_hard(),
    );
    session.shutdown(Duration::from_secs(1));
    Ok(out)
}

/// `--dispatch`: ships each bundle in the order given (so a 1.1 -> 1.2 -> 1.3 chain to the
/// same hosts lands in order). Returns the summaries; stops early when cancelled.
pub fn dispatch(
    ctx: &Context,
    prepared: Vec<Prepared>,
    front: Emit,
) -> Result<Vec<Summary>, RunError> {
    let journal = Arc::new(Journal::open(&ctx.journal_path)?);
    let mut records = Vec::new();
    for p in &prepared {
        records.push(
            NewDispatch::for_plan(&p.plan, &p.file, &ctx.config.path, None).map_err(|e| {
                RunError::Bundle {
                    path: p.file.clone(),
                    detail: e.to_string(),
                }
            })?,
        );
    }
    let holder = crate::engine::lock::local_holder();
    with_session(journal.clone(), front, async |session, emit, cancel| {
        let mut summaries = Vec::new();
        for (p, rec) in prepared.into_iter().zip(records) {
            if cancel.is_requested() {
                break;
            }
            let id = journal.begin_dispatch(&rec)?;
            let d = Arc::new(Dispatch {
                id,
                plan: Arc::new(p.plan),
                bundle: p.file,
                bundle_sha256: rec.bundle_sha256.clone(),
                known_hosts: ctx.known_hosts.clone(),
                holder: holder.clone(),
                skip: HashMap::new(),
                only: None,
                connector: crate::engine::connect::real(),
            });
            let s = rollout::run(d, cancel.clone(), emit.clone()).await;
            if cancel.is_requested() {
                journal.mark_cancelled(id)?;
            }
            session.runs().finished(&s, &emit);
            summaries.push(s);
        }
        Ok::<_, RunError>(summaries)
    })?
}

/// `--rollback RULE [--host H]...`: puts the rule's hosts (or the named ones) back, see
/// [`crate::engine::rollback`]. Journaled as a dispatch of the bundle `(rollback)`.
pub fn rollback(
    ctx: &Context,
    arg: &str,
    hosts: &[String],
    stamp: Option<&Stamp>,
    front: Emit,
) -> Result<Vec<Summary>, RunError> {
    let journal = Arc::new(Journal::open(&ctx.journal_path)?);
    let stamp = stamp.cloned().unwrap_or_else(Stamp::now);
    let plan = rollback::plan(
        &ctx.config,
        &ctx.netrc,
        &ctx.ssh,
        arg,
        hosts,
        |rule, hosts| rollback::last_good(&journal, rule, hosts),
        stamp,
    )?;
    let only = rollback::only(&plan, hosts)?;
    let rec = rollback::record(
        &plan,
        &ctx.config.path,
        only.as_deref(),
        crate::engine::events::now_ms(),
    );
    let id = journal.begin_dispatch(&rec)?;
    let d = Arc::new(rollback::dispatch(
        id,
        Arc::new(plan),
        ctx.known_hosts.clone(),
        crate::engine::lock::local_holder(),
        only,
    ));
    with_session(journal.clone(), front, async |session, emit, cancel| {
        let s = rollback::run(d, cancel.clone(), emit.clone()).await;
        if cancel.is_requested() {
            journal.mark_cancelled(id)?;
        }
        session.runs().finished(&s, &emit);
        Ok::<_, RunError>(vec![s])
    })?
}

/// `--resume ID`: continues an interrupted dispatch. Verified uploads are not redone and
/// finished steps not rerun; a command that was running when the process died has an
/// unknown outcome and is run again only with `force`.
pub fn resume(ctx: &Context, id: i64, force: bool, front: Emit) -> Result<Vec<Summary>, RunError> {
    let journal = Arc::new(Journal::open(&ctx.journal_path)?);
    if let Some(d) = journal.dispatch(id)?
        && d.record.bundle == rollout::ROLLBACK_BUNDLE
    {
        return Err(RunError::Resume {
            id,
            why: format!(
                "it is a rollback, which ships nothing to resume\n  help: run `dropship --rollback '{}'` again",
                d.record.rule
            ),
        });
    }
    let state = journal.begin_resume(id)?;
    let rec = &state.record;
    let fail = |why: String| RunError::Resume { id, why };
    let sha = crate::transport::local_sha256(&rec.bundle_path, None)
        .map_err(|e| fail(format!("bundle {}: {e}", rec.bundle_path.display())))?;
    if sha != rec.bundle_sha256 {
        return Err(fail(format!(
            "bundle {} changed since the dispatch began",
            rec.bundle_path.display()
        )));
    }
    let stamp = Stamp::parse(&rec.timestamp)
        .ok_or_else(|| fail(format!("bad timestamp `{}` in the journal", rec.timestamp)))?;
    let plan = Plan::build(&ctx.config, &ctx.netrc, &ctx.ssh, &rec.bundle, stamp)?;
    if plan.rule.name != rec.rule {
        return Err(fail(format!(
            "the bundle now matches rule [{}], not [{}]: the config changed",
            plan.rule.name, rec.rule
        )));
    }
    // What is left, judged as the drop folder judges it (journal::resume), on the dispatch
    // as it was before this takeover made it `running` again.
    let Some(mut detail) = journal.dispatch(id)? else {
        return Err(fail("it is not in the journal".into()));
    };
    detail.state = state.state;
    let mut skip = HashMap::new();
    let mut only = Vec::new();
    let mut unknown = Vec::new();
    for left in crate::journal::resume::left_to_do(&detail) {
        if let Some(u) = &left.unknown {
            if u.mark {
                journal.mark_unknown(id, &left.host, u.step)?;
            }
            if !force {
                unknown.push(format!("{} ({})", left.host, u.step));
                continue;
            }
        }
        skip.insert(left.host.clone(), Skip { done: left.done });
        only.push(left.host);
    }
    if only.is_empty() && unknown.is_empty() {
        return Err(fail("nothing is left to do: every host finished".into()));
    }
    let bundle = rec.bundle_path.clone();
    let summary = with_session(journal.clone(), front, async |session, emit, cancel| {
        if !unknown.is_empty() {
            emit(Event::Notice {
                dispatch: id,
                at: crate::engine::events::now_ms(),
                host: None,
                level: crate::engine::events::Level::Warning,
                message: format!(
                    "outcome unknown, not run again (use --force): {}",
                    unknown.join(", ")
                ),
            });
        }
        let d = Arc::new(Dispatch {
            id,
            plan: Arc::new(plan),
            bundle,
            bundle_sha256: sha,
            known_hosts: ctx.known_hosts.clone(),
            holder: crate::engine::lock::local_holder(),
            skip,
            only: Some(only),
            connector: crate::engine::connect::real(),
        });
        let was_cancelled = cancel.clone();
        let s = rollout::run(d, cancel, emit.clone()).await;
        session.runs().finished(&s, &emit);
        (s, was_cancelled.is_requested())
    })?;
    let (mut summary, cancelled_again) = summary;
    if cancelled_again {
        journal.mark_cancelled(id)?;
    }
    if !unknown.is_empty() && !cancelled_again {
        // Not finished: leave it resumable with --force.
        journal.mark_cancelled(id)?;
    }
    // Targets left out (unknown outcome) count as failed for the exit code.
    for u in &unknown {
        summary.targets.push((
            u.clone(),
            crate::engine::job::Outcome {
                result: crate::engine::events::TargetResult::Failed,
                failed_step: None,
                error: Some("outcome unknown: rerun with --resume ID --force".into()),
            },
            0,
        ));
    }
    Ok(vec![summary])
}

/// `--watch DIR`: ships what lands in the folder until SIGINT or SIGTERM. The first signal
/// stops taking files and starting dispatches; running steps get [`GRACE`] (as with
/// `--dispatch`), then are stopped; a second signal stops them at once. What is left open
/// goes on at the next start. `front` gets the dispatch events, `watch_front` the watcher's.
pub fn watch(
    ctx: &Context,
    options: crate::watch::WatchOptions,
    front: Emit,
    watch_front: crate::watch::WatchEmit,
) -> Result<crate::watch::WatchReport, RunError> {
    use crate::watch::{self, Setup};
    let journal = Arc::new(Journal::open(&ctx.journal_path)?);
    let session = Session::new(journal.clone(), None).map_err(RunError::Runtime)?;
    let cancel = Arc::new(Cancel::new());
    let failed = JournalFailed {
        flag: Arc::default(),
        cancel: cancel.clone(),
    };
    let emit = session.recording(front, Some(failed.clone()));
    let setup = Setup {
        config: Arc::new(ctx.config.clone()),
        netrc: Arc::new(ctx.netrc.clone()),
        ssh: Arc::new(ctx.ssh.clone()),
        known_hosts: ctx.known_hosts.clone(),
        journal,
        connector: crate::engine::connect::real(),
        finished: session.runs().subscriber(),
    };
    let running = watch::start(
        options,
        setup,
        session.handle(),
        cancel.clone(),
        emit,
        failed.flag,
        watch_front,
    );
    let running = match running {
        Ok(r) => r,
        Err(e) => {
            session.shutdown(Duration::from_secs(1));
            return Err(e.into());
        }
    };
    let handle = running.handle.clone();
    session.stop_on_signals(cancel.clone(), move || handle.stop());
    let report = running
        .thread
        .join()
        .unwrap_or_else(|_| Ok(crate::watch::WatchReport::default()));
    // Its dispatches' notifications, as for `--dispatch` (a second signal stops the wait).
    session.wait_notifications(
        std::time::Instant::now() + crate::engine::notify::EXIT_WAIT,
        &|| cancel.is_hard(),
    );
    session.shutdown(Duration::from_secs(1));
    Ok(report?)
}

/// `--history`: past dispatches, newest first.
pub fn history(
    journal_path: &Path,
    limit: usize,
) -> Result<Vec<crate::journal::DispatchSummary>, RunError> {
    Ok(Journal::open(journal_path)?.history(limit)?)
}

/// Hosts probed or read at once: the largest `parallel` of the rules involved (one pool for
/// all of them).
fn parallel_of(targets: &[ProbeTarget]) -> usize {
    targets.iter().map(|t| t.rule.parallel).max().unwrap_or(1)
}

/// `--probe`: every target checked.
pub fn probe(
    targets: &[ProbeTarget],
    known_hosts: &KnownHostsFiles,
) -> Vec<crate::fleet::probe::HostProbe> {
    crate::fleet::probe::probe_all(targets, known_hosts, parallel_of(targets), &|_, _| {})
}

/// `--status`: installed versions against what the journal says was shipped. A journal
/// that does not exist yet is not created: then nothing counts as shipped.
pub fn status(
    targets: &[ProbeTarget],
    journal_path: &Path,
    known_hosts: &KnownHostsFiles,
) -> Result<crate::fleet::version::StatusReport, RunError> {
    let shipped = if journal_path.is_file() || Journal::is_server(journal_path) {
        Journal::open(journal_path)?.last_shipped_per_rule()?
    } else {
        Vec::new()
    };
    Ok(crate::fleet::version::status(
        targets,
        &shipped,
        known_hosts,
        parallel_of(targets),
        &|_, _| {},
    ))
}
