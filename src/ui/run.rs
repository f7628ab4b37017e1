//! The headless commands: `--dispatch`, `--resume`, `--history`. They build plans, open the
//! journal, run the engine on a tokio runtime and render its events with [`Printer`].

use super::headless::{Mode, Printer, summary_table};
use crate::config::{Config, Netrc, SshHosts};
use crate::engine::events::{Event, Step};
use crate::engine::fetch::{self, FetchError};
use crate::engine::job::{Cancel, Skip};
use crate::engine::rollback::{self, RollbackError};
use crate::engine::rollout::{self, Dispatch, Emit, Summary};
use crate::fleet::target::ProbeTarget;
use crate::journal::{Journal, JournalError, NewDispatch, TargetProgress};
use crate::plan::{Plan, PlanError, Stamp};
use crate::transport::known_hosts::KnownHostsFiles;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long running steps may go on after Ctrl-C before they are stopped.
pub const GRACE: Duration = Duration::from_secs(10);

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
    pub mode: Mode,
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

/// Runs the engine on a runtime with Ctrl-C handling and a printer thread; `work` gets the
/// event sink and the cancel flag.
fn with_engine<T>(
    ctx: &Context,
    journal: Arc<Journal>,
    work: impl AsyncFnOnce(Emit, Arc<Cancel>) -> T,
) -> Result<T, RunError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let cancel = Arc::new(Cancel::new());
    // Headless output must not lose lines: the channel is bounded and senders block, so a
    // slow terminal slows the command output down instead of dropping it.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Event>(4096);
    let mode = ctx.mode;
    let printer = std::thread::spawn(move || {
        let mut p = Printer::new(mode);
        let mut closed = false;
        // Render everything at hand, then flush once: output stays live, and a flood of
        // lines costs one write per batch instead of one per line.
        while let Ok(first) = rx.recv() {
            for e in std::iter::once(first).chain(rx.try_iter()) {
                if !closed && p.handle(&e).is_err() {
                    closed = true; // stdout is gone; keep draining so the engine never blocks
                }
            }
            if !closed && p.flush().is_err() {
                closed = true;
            }
        }
    });
    let j = journal.clone();
    let warned = std::sync::atomic::AtomicBool::new(false);
    let emit: Emit = Arc::new(move |e: Event| {
        if let Err(err) = j.record(&e) {
            tracing::error!("journal write failed: {err}");
            if !warned.swap(true, Ordering::SeqCst) {
                let _ = tx.send(err.notice(e.dispatch()));
            }
        }
        let _ = tx.send(e);
    });
    let out = rt.block_on(async {
        // Output lines are batched in the journal; a command that prints a little and then
        // works quietly must still have its lines on disk within a second.
        let j = journal.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let j = j.clone();
                let _ = tokio::task::spawn_blocking(move || j.flush()).await;
            }
        });
        let c = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                c.requested.store(true, Ordering::SeqCst);
                tokio::select! {
                    _ = tokio::time::sleep(GRACE) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                c.hard.store(true, Ordering::SeqCst);
            }
        });
        work(emit, cancel.clone()).await
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = printer.join();
    let _ = journal.flush();
    Ok(out)
}

/// `--dispatch`: ships each bundle in the order given (so a 1.1 -> 1.2 -> 1.3 chain to the
/// same hosts lands in order). Returns the summaries; stops early when cancelled.
pub fn dispatch(ctx: &Context, prepared: Vec<Prepared>) -> Result<Vec<Summary>, RunError> {
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
    with_engine(ctx, journal.clone(), async |emit, cancel| {
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
            });
            let s = rollout::run(d, cancel.clone(), emit.clone()).await;
            if cancel.is_requested() {
                journal.mark_cancelled(id)?;
            }
            summaries.push(s);
        }
        wait_for_notifications(&summaries, &cancel).await;
        Ok::<_, RunError>(summaries)
    })?
}

/// Waits (up to [`crate::fleet::notify::EXIT_WAIT`] in all) for the notifications still on
/// their way, so a headless run does not exit before its webhook got the summary. Their
/// outcome arrives as notices, which the printer shows. A second Ctrl-C ("stop now")
/// stops the wait.
async fn wait_for_notifications(summaries: &[Summary], cancel: &Arc<Cancel>) {
    let pending: Vec<_> = summaries.iter().filter_map(|s| s.notify.clone()).collect();
    if pending.is_empty() {
        return;
    }
    let cancel = cancel.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let end = std::time::Instant::now() + crate::fleet::notify::EXIT_WAIT;
        for p in pending {
            while !p.wait(Duration::from_millis(100)) {
                if cancel.is_hard() || std::time::Instant::now() >= end {
                    return;
                }
            }
        }
    })
    .await;
}

/// `--rollback RULE [--host H]...`: puts the rule's hosts (or the named ones) back, see
/// [`crate::engine::rollback`]. Journaled as a dispatch of the bundle `(rollback)`.
pub fn rollback(
    ctx: &Context,
    arg: &str,
    hosts: &[String],
    stamp: Option<&Stamp>,
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
    with_engine(ctx, journal.clone(), async |emit, cancel| {
        let s = rollback::run(d, cancel.clone(), emit).await;
        if cancel.is_requested() {
            journal.mark_cancelled(id)?;
        }
        let summaries = vec![s];
        wait_for_notifications(&summaries, &cancel).await;
        Ok::<_, RunError>(summaries)
    })?
}

/// `--resume ID`: continues an interrupted dispatch. Verified uploads are not redone and
/// finished steps not rerun; a command that was running when the process died has an
/// unknown outcome and is run again only with `force`.
pub fn resume(ctx: &Context, id: i64, force: bool) -> Result<Vec<Summary>, RunError> {
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
    // A cancelled dispatch's targets carry the result "cancelled" (or "skipped" after a
    // cancelled canary): resuming it means judging them by their steps, like targets that
    // never finished.
    let detail = journal.dispatch(id)?;
    let by_steps = |host: &str| {
        detail
            .as_ref()
            .and_then(|d| d.targets.iter().find(|t| t.host == host))
            .map(crate::journal::progress_by_steps)
    };
    let cancelled = state.state == crate::journal::DispatchState::Cancelled;
    let mut skip = HashMap::new();
    let mut only = Vec::new();
    let mut unknown = Vec::new();
    for (host, progress) in &state.targets {
        // A step killed by the cancel already has its outcome ("cancelled") recorded.
        let killed_by_cancel = !matches!(progress, TargetProgress::Incomplete { .. });
        let progress = match progress {
            TargetProgress::Cancelled => by_steps(host),
            TargetProgress::Skipped if cancelled => by_steps(host),
            other => Some(other.clone()),
        };
        let Some(TargetProgress::Incomplete {
            verified_upload,
            completed,
            running,
            ..
        }) = progress
        else {
            continue;
        };
        let unsafe_step = running.filter(|s| !s.is_repeatable());
        if let Some(step) = unsafe_step {
            if !killed_by_cancel {
                journal.mark_unknown(id, host, step)?;
            }
            if !force {
                unknown.push(format!("{host} ({step})"));
                continue;
            }
        }
        let mut done: Vec<Step> = completed;
        if verified_upload {
            done.push(Step::Upload);
        }
        skip.insert(host.clone(), Skip { done });
        only.push(host.clone());
    }
    if only.is_empty() && unknown.is_empty() {
        return Err(fail("nothing is left to do: every host finished".into()));
    }
    let bundle = rec.bundle_path.clone();
    let summary = with_engine(ctx, journal.clone(), async |emit, cancel| {
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
        });
        let was_cancelled = cancel.clone();
        let s = rollout::run(d, cancel, emit).await;
        wait_for_notifications(std::slice::from_ref(&s), &was_cancelled).await;
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

/// What the `--watch` printer thread renders.
enum Out {
    Dispatch(Event),
    Watch(crate::watch::WatchEvent),
}

/// `--watch DIR`: ships what lands in the folder until SIGINT or SIGTERM. The first signal
/// stops taking files and starting dispatches; running steps get [`GRACE`] (as with
/// `--dispatch`), then are stopped; a second signal stops them at once. What is left open
/// goes on at the next start.
pub fn watch(
    ctx: &Context,
    options: crate::watch::WatchOptions,
) -> Result<crate::watch::WatchReport, RunError> {
    use crate::watch::{self, Setup};
    let journal = Arc::new(Journal::open(&ctx.journal_path)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let cancel = Arc::new(Cancel::new());
    // Progress bars are per host and per dispatch; with dispatches side by side they would
    // fight, so a terminal gets the plain lines.
    let mode = match ctx.mode {
        Mode::Terminal => Mode::Plain,
        m => m,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Out>(4096);
    let printer = std::thread::spawn(move || {
        let mut p = Printer::new(mode);
        let mut closed = false;
        while let Ok(first) = rx.recv() {
            for out in std::iter::once(first).chain(rx.try_iter()) {
                let r = match &out {
                    Out::Dispatch(e) => p.handle(e),
                    Out::Watch(e) => p.handle_watch(e),
                };
                closed |= r.is_err();
            }
            if !closed && p.flush().is_err() {
                closed = true;
            }
        }
    });
    let dtx = tx.clone();
    let events: watch::EventSink = Arc::new(move |e| {
        let _ = dtx.send(Out::Dispatch(e));
    });
    let wtx = tx.clone();
    let watch_events: watch::WatchEmit = Arc::new(move |e| {
        let _ = wtx.send(Out::Watch(e));
    });
    drop(tx);
    let setup = Setup {
        config: Arc::new(ctx.config.clone()),
        netrc: Arc::new(ctx.netrc.clone()),
        ssh: Arc::new(ctx.ssh.clone()),
        known_hosts: ctx.known_hosts.clone(),
        journal: journal.clone(),
    };
    let running = watch::start(
        options,
        setup,
        rt.handle().clone(),
        cancel.clone(),
        events,
        watch_events,
    );
    let running = match running {
        Ok(r) => r,
        Err(e) => {
            drop(rt);
            let _ = printer.join();
            return Err(e.into());
        }
    };
    let handle = running.handle.clone();
    let c = cancel.clone();
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        handle.stop();
        c.requested.store(true, Ordering::SeqCst);
        tokio::select! {
            _ = tokio::time::sleep(GRACE) => {}
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        c.hard.store(true, Ordering::SeqCst);
    });
    let report = running
        .thread
        .join()
        .unwrap_or_else(|_| Ok(crate::watch::WatchReport::default()));
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = printer.join();
    let _ = journal.flush();
    Ok(report?)
}

/// `--history`: past dispatches, newest first.
pub fn history(journal_path: &Path, json: bool, limit: usize) -> Result<String, RunError> {
    let journal = Journal::open(journal_path)?;
    let rows = journal.history(limit)?;
    if json {
        return Ok(rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
            .collect());
    }
    let mut table = vec![vec![
        "ID".to_owned(),
        "STARTED".into(),
        "STATE".into(),
        "OK".into(),
        "FAILED".into(),
        "SKIPPED".into(),
        "BUNDLE".into(),
        "RULE".into(),
    ]];
    for r in rows {
        let started = chrono::DateTime::from_timestamp_millis(r.started_at)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        table.push(vec![
            r.id.to_string(),
            started,
            r.state.to_string(),
            r.succeeded.to_string(),
            r.failed.to_string(),
            r.skipped.to_string(),
            r.bundle,
            format!("[{}]", r.rule),
        ]);
    }
    Ok(super::report::table(&table))
}

/// The closing table for a terminal or log (not for `--json`).
pub fn closing(summaries: &[Summary]) -> String {
    summary_table(summaries)
}

/// Hosts probed or read at once: the largest `parallel` of the rules involved (one pool for
/// all of them).
fn parallel_of(targets: &[ProbeTarget]) -> usize {
    targets.iter().map(|t| t.rule.parallel).max().unwrap_or(1)
}

/// `--probe`: every target checked; the report (a table, or one JSON object per host) and
/// whether every host passed.
pub fn probe(targets: &[ProbeTarget], known_hosts: &KnownHostsFiles, json: bool) -> (String, bool) {
    let probes =
        crate::fleet::probe::probe_all(targets, known_hosts, parallel_of(targets), &|_, _| {});
    let passed = probes.iter().all(|p| p.passed());
    let text = if json {
        probes
            .iter()
            .map(|p| serde_json::to_string(p).unwrap_or_default() + "\n")
            .collect()
    } else {
        super::fleet_report::probe_table(&probes)
    };
    (text, passed)
}

/// `--status`: installed versions against what the journal says was shipped. Returns the
/// report and whether every host's version was read. A journal that does not exist yet is
/// not created: then nothing counts as shipped.
pub fn status(
    targets: &[ProbeTarget],
    journal_path: &Path,
    known_hosts: &KnownHostsFiles,
    json: bool,
) -> Result<(String, bool), RunError> {
    let shipped = if journal_path.is_file() {
        Journal::open(journal_path)?.last_shipped_per_rule()?
    } else {
        Vec::new()
    };
    let report = crate::fleet::version::status(
        targets,
        &shipped,
        known_hosts,
        parallel_of(targets),
        &|_, _| {},
    );
    let text = if json {
        report
            .cells
            .iter()
            .map(|c| serde_json::to_string(c).unwrap_or_default() + "\n")
            .collect()
    } else {
        super::fleet_report::status_table(&report)
    };
    Ok((text, report.all_read()))
}
