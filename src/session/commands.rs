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
    #[error("cannot converge rule [{rule}]: {why}")]
    Converge { rule: String, why: String },
    #[error(transparent)]
    Store(#[from] crate::engine::store::StoreError),
    #[error(transparent)]
    Run(#[from] crate::engine::run::RunError),
}

impl RunError {
    /// Usage and input problems (exit 2) as opposed to a failed dispatch (exit 1).
    pub fn is_usage(&self) -> bool {
        match self {
            RunError::Runtime(_) => false,
            RunError::Watch(e) => e.is_usage(),
            RunError::Store(_) => false,
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
    /// Hosts of the plan to ship to (`--host`); `None`: all.
    pub only: Option<Vec<String>>,
}

/// `--dispatch ... --host H...`: ships each bundle to those hosts of its rule only. A host
/// that is not one of a bundle's rule's hosts is a usage error naming the rule's hosts.
pub fn restrict(prepared: &mut [Prepared], hosts: &[String]) -> Result<(), RunError> {
    for p in prepared.iter_mut() {
        p.only = rollback::only(&p.plan, hosts)?;
    }
    Ok(())
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
        out.push(Prepared {
            plan,
            file,
            only: None,
        });
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
    let chain = is_chain(&prepared);
    let mut records = Vec::new();
    for p in &prepared {
        records.push(
            NewDispatch::for_plan(&p.plan, &p.file, &ctx.config.path, p.only.as_deref()).map_err(
                |e| RunError::Bundle {
                    path: p.file.clone(),
                    detail: e.to_string(),
                },
            )?,
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
                bundle_sha256: rec.known_sha256(),
                known_hosts: ctx.known_hosts.clone(),
                holder: holder.clone(),
                skip: HashMap::new(),
                only: p.only,
                connector: crate::engine::connect::real(),
            });
            let s = rollout::run(d.clone(), cancel.clone(), emit.clone()).await;
            if cancel.is_requested() {
                journal.mark_cancelled(id)?;
            }
            crate::engine::store::keep_shipped(d, &s, emit.clone()).await;
            session.runs().finished(&s, &emit);
            let failed = !s.all_succeeded();
            summaries.push(s);
            if chain && failed {
                break;
            }
        }
        Ok::<_, RunError>(summaries)
    })?
}

/// Several bundles of one rule (`app-1.1.tgz app-1.2.tgz app-1.3.tgz`): a chain of versions
/// shipped in order, which stops at the first version that fails on a host (the next
/// versions are meant to build on it).
pub fn is_chain(prepared: &[Prepared]) -> bool {
    prepared.len() > 1
        && prepared
            .iter()
            .all(|p| p.plan.rule.name == prepared[0].plan.rule.name)
}

/// How far one host got along a chain: the last version it took, and the one it failed on
/// (`None`: it took them all, or the chain stopped before its next version).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reached {
    pub host: String,
    pub reached: Option<String>,
    pub failed: Option<String>,
    /// Versions of the chain this host never got to.
    pub not_tried: Vec<String>,
}

/// Per host of a chain's summaries (in order), how far it got; `bundles` is the chain as
/// given, so versions never started count as not tried.
pub fn chain_reached(bundles: &[String], summaries: &[Summary]) -> Vec<Reached> {
    use crate::engine::events::TargetResult;
    let mut out: Vec<Reached> = Vec::new();
    for (i, s) in summaries.iter().enumerate() {
        for (host, o, _) in &s.targets {
            let r = match out.iter_mut().position(|r| &r.host == host) {
                Some(k) => &mut out[k],
                None => {
                    out.push(Reached {
                        host: host.clone(),
                        reached: None,
                        failed: None,
                        not_tried: Vec::new(),
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            if r.failed.is_some() {
                continue;
            }
            match o.result {
                TargetResult::Succeeded => r.reached = Some(s.bundle.clone()),
                TargetResult::Failed => r.failed = Some(s.bundle.clone()),
                _ => r
                    .not_tried
                    .push(bundles.get(i).cloned().unwrap_or_default()),
            }
        }
    }
    for r in &mut out {
        let last = summaries.len();
        r.not_tried.extend(bundles.iter().skip(last).cloned());
    }
    out
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
    if let Some(kind) = journal.kind_of(id)?
        && kind != crate::journal::RunKind::Dispatch
    {
        return Err(RunError::Resume {
            id,
            why: format!(
                "it is an ad-hoc {}, which ships nothing to resume\n  help: run it again",
                kind.as_str()
            ),
        });
    }
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
    // Through the digest cache, as the dispatch hashed it: an unchanged file (same inode,
    // size, mtime and ctime) is not read again.
    let sha = crate::transport::bundle_sha256(&rec.bundle_path)
        .map_err(|e| fail(format!("bundle {}: {e}", rec.bundle_path.display())))?;
    // An empty digest: the dispatch was interrupted before its hash was done, so no host
    // verified an upload against it (see `BundleHashed`), and nothing is to compare.
    if !rec.bundle_sha256.is_empty() && sha != rec.bundle_sha256 {
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
            bundle_sha256: Some(sha),
            known_hosts: ctx.known_hosts.clone(),
            holder: crate::engine::lock::local_holder(),
            skip,
            only: Some(only),
            connector: crate::engine::connect::real(),
        });
        let was_cancelled = cancel.clone();
        let s = rollout::run(d.clone(), cancel, emit.clone()).await;
        crate::engine::store::keep_shipped(d, &s, emit.clone()).await;
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

/// `--converge [RULE] [--host H]...`, first half: per rule (those of `targets`), the bundle
/// of its last good dispatch, proved present in the store, and which hosts differ from it.
/// A rule named on its own (`named`) without `version_cmd` or without a good dispatch is an
/// error; when all rules are asked for, such rules are left out. Changes nothing.
pub fn converge_plan(
    ctx: &Context,
    targets: &[ProbeTarget],
    hosts: &[String],
    named: bool,
) -> Result<Vec<crate::fleet::converge::RulePlan>, RunError> {
    let journal = if ctx.journal_path.is_file() {
        Some(Journal::open(&ctx.journal_path)?)
    } else {
        None
    };
    converge_plan_in(
        journal.as_ref(),
        &ctx.journal_path,
        &ctx.known_hosts,
        targets,
        hosts,
        named,
    )
}

/// [`converge_plan`] with a journal already open (the console's session holds one), so
/// the console and the headless command judge hosts by the same code. Blocking: it logs in
/// to every host to read its version.
pub fn converge_plan_in(
    journal: Option<&Journal>,
    journal_path: &Path,
    known_hosts: &KnownHostsFiles,
    targets: &[ProbeTarget],
    hosts: &[String],
    named: bool,
) -> Result<Vec<crate::fleet::converge::RulePlan>, RunError> {
    use crate::engine::store::Store;
    use crate::fleet::converge;
    let store = Store::new(Store::default_root());
    let mut rules: Vec<&Arc<crate::config::Rule>> = Vec::new();
    for t in targets {
        if !rules.iter().any(|r| r.name == t.rule.name) {
            rules.push(&t.rule);
        }
    }
    let mut plans = Vec::new();
    for rule in rules {
        let fail = |why: String| RunError::Converge {
            rule: rule.name.clone(),
            why,
        };
        if rule.version_cmd.is_none() {
            if named {
                return Err(fail("it has no `version_cmd`, so the hosts' versions cannot be read\n  help: add e.g. `version_cmd = cat ~/app/.version` to the rule".into()));
            }
            continue;
        }
        let goal = match journal {
            Some(j) => converge::goal(j, rule)?,
            None => None,
        };
        let Some(goal) = goal else {
            if named {
                return Err(fail(format!(
                    "the journal ({}) has no dispatch of it that succeeded on a host, so there is no version to converge to\n  help: ship a bundle of the rule first with --dispatch FILE",
                    journal_path.display()
                )));
            }
            continue;
        };
        store.find(&goal.bundle, &goal.sha256)?;
        let mine: Vec<ProbeTarget> = targets
            .iter()
            .filter(|t| t.rule.name == rule.name)
            .filter(|t| hosts.is_empty() || hosts.contains(&t.target.host.name))
            .cloned()
            .collect();
        if let Some(h) = hosts
            .iter()
            .find(|h| named && !rule.hosts.iter().any(|x| &x.name == *h))
        {
            return Err(RunError::Rollback(RollbackError::UnknownHost {
                host: h.clone(),
                rule: rule.name.clone(),
                hosts: rule.hosts.iter().map(|x| x.name.clone()).collect(),
            }));
        }
        if mine.is_empty() {
            continue;
        }
        plans.push(converge::plan(&mine, goal, known_hosts));
    }
    Ok(plans)
}

/// `--converge`, second half: ships each plan's bundle, from the store, to exactly the
/// hosts that differ, with the rule's rollout (`canary`, `max_fail`, `parallel`). Rules
/// with no host to ship to start nothing.
pub fn converge(
    ctx: &Context,
    plans: &[crate::fleet::converge::RulePlan],
    stamp: Option<&Stamp>,
    front: Emit,
) -> Result<Vec<Summary>, RunError> {
    use crate::engine::store::Store;
    let store = Store::new(Store::default_root());
    let stamp = stamp.cloned().unwrap_or_else(Stamp::now);
    let mut prepared = Vec::new();
    for p in plans {
        let only = p.to_ship();
        if only.is_empty() {
            continue;
        }
        let plan = Plan::build(
            &ctx.config,
            &ctx.netrc,
            &ctx.ssh,
            &p.goal.bundle,
            stamp.clone(),
        )?;
        if plan.rule.name != p.rule {
            return Err(RunError::Converge {
                rule: p.rule.clone(),
                why: format!(
                    "its last good bundle {} now matches rule [{}]: the config changed",
                    p.goal.bundle, plan.rule.name
                ),
            });
        }
        prepared.push(Prepared {
            plan,
            file: store.find(&p.goal.bundle, &p.goal.sha256)?,
            only: Some(only),
        });
    }
    if prepared.is_empty() {
        return Ok(Vec::new());
    }
    // One rule per dispatch, never a chain: each stands on its own.
    let mut out = Vec::new();
    for p in prepared {
        out.extend(dispatch(ctx, vec![p], front.clone())?);
    }
    Ok(out)
}

/// `--history`: past dispatches, runs and actions, newest first.
pub fn history(
    journal_path: &Path,
    limit: usize,
) -> Result<Vec<crate::journal::HistoryRow>, RunError> {
    Ok(Journal::open(journal_path)?.history_rows(limit)?)
}

/// What `--run` and `--action` are asked to do.
pub struct RunRequest {
    /// Rules and hosts, each argument possibly comma-separated.
    pub targets: Vec<String>,
    pub what: crate::engine::run::What,
    /// Take the remote lock around the command (`--lock`).
    pub lock: bool,
    /// A destructive action is confirmed (`--yes`).
    pub yes: bool,
}

/// `--run TARGETS -- COMMAND` and `--action NAME TARGETS`: plans every rule's part first
/// (so a bad placeholder or an unconfirmed action stops all before anything runs), then
/// runs the parts side by side, each a rollout with its rule's `parallel`, each journaled
/// as a run (see [`crate::engine::run`]). Runs do not notify: the rule's `notify` URL
/// hears of shipments, not of every question asked of the hosts.
pub fn run(
    ctx: &Context,
    req: &RunRequest,
    stamp: Option<&Stamp>,
    front: Emit,
) -> Result<Vec<Summary>, RunError> {
    use crate::engine::run as adhoc;
    let selections = adhoc::select(&ctx.config, &req.targets, &req.what)?;
    adhoc::unconfirmed(&selections, &req.what, req.yes)?;
    let stamp = stamp.cloned().unwrap_or_else(Stamp::now);
    // Read-only until here: a journal that does not exist yet has no last good dispatch.
    let journal = Arc::new(Journal::open(&ctx.journal_path)?);
    let mut planned = Vec::new();
    for sel in &selections {
        let last = journal.last_good(&sel.rule.name, &sel.hosts)?;
        let src = adhoc::Sources {
            config: &ctx.config,
            netrc: &ctx.netrc,
            ssh: &ctx.ssh,
        };
        planned.push(adhoc::plan(
            &src,
            sel,
            &req.what,
            last,
            stamp.clone(),
            req.lock,
        )?);
    }
    let action = matches!(req.what, adhoc::What::Action(_));
    let holder = crate::engine::lock::local_holder();
    let mut dispatches = Vec::new();
    for p in planned {
        let id = journal.begin_run(&p.record, &p.run)?;
        dispatches.push(Arc::new(Dispatch {
            id,
            plan: Arc::new(p.plan),
            bundle: PathBuf::new(),
            bundle_sha256: None,
            known_hosts: ctx.known_hosts.clone(),
            holder: holder.clone(),
            skip: HashMap::new(),
            only: p.only,
            connector: crate::engine::connect::real(),
        }));
    }
    let kind = rollout::Kind::Run {
        lock: req.lock,
        action,
    };
    with_session(journal.clone(), front, async |_, emit, cancel| {
        let mut set = tokio::task::JoinSet::new();
        for (n, d) in dispatches.iter().enumerate() {
            let (d, cancel, emit) = (d.clone(), cancel.clone(), emit.clone());
            set.spawn(async move { (n, rollout::run_kind(d, cancel, emit, kind).await) });
        }
        let mut summaries: Vec<Option<Summary>> = vec![None; dispatches.len()];
        while let Some(done) = set.join_next().await {
            if let Ok((n, s)) = done {
                summaries[n] = Some(s);
            }
        }
        if cancel.is_requested() {
            for d in &dispatches {
                journal.mark_cancelled(d.id)?;
            }
        }
        Ok::<_, RunError>(summaries.into_iter().flatten().collect())
    })?
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

/// `--status`'s second part: each host's last finished dispatch, with who started it from
/// where. A journal that does not exist yet is not created: then there is none.
pub fn last_results(journal_path: &Path) -> Result<Vec<crate::journal::HostLast>, RunError> {
    if journal_path.is_file() || Journal::is_server(journal_path) {
        Ok(Journal::open(journal_path)?.last_results()?)
    } else {
        Ok(Vec::new())
    }
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
