//! Rollout over a rule's hosts: at most `parallel` at once, `canary` hosts first and
//! alone, no new host after `max_fail` failures, and cancellation. Each target's blocking
//! job runs on its own thread (`spawn_blocking`), so one hung host never stalls the others.

use super::events::{Event, Level, TargetResult, now_ms};
use super::job::{self, Cancel, JobContext, Outcome, Skip};
use crate::plan::Plan;
use crate::transport::BundleDigest;
use crate::transport::known_hosts::KnownHostsFiles;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;

pub use crate::model::events::Emit;

/// One dispatch of one bundle.
pub struct Dispatch {
    pub id: i64,
    pub plan: Arc<Plan>,
    pub bundle: PathBuf,
    /// Its SHA-256 when known at the start (remembered, or the drop folder's); else a
    /// dispatch computes it once for all hosts while they connect and upload
    /// ([`crate::transport::BundleDigest`]).
    pub bundle_sha256: Option<String>,
    pub known_hosts: KnownHostsFiles,
    /// Who the remote locks name as holder (`user@machine pid N`).
    pub holder: String,
    /// Per host: steps already done before an interruption (`--resume`).
    pub skip: HashMap<String, Skip>,
    /// Hosts to work on; `None` means all (a resume or retry names a subset).
    pub only: Option<Vec<String>>,
    /// How jobs connect to a target: [`crate::engine::connect::real`] everywhere but in
    /// the fast test tier, which injects scripted in-memory hosts here.
    pub connector: crate::engine::connect::Connector,
}

/// What a finished dispatch or rollback did: per-target results in target order, and what
/// a subscriber of finished dispatches needs (the notifier, [`crate::engine::notify`]).
#[derive(Debug, Clone)]
pub struct Summary {
    pub id: i64,
    pub targets: Vec<(String, Outcome, i64)>,
    pub duration_ms: i64,
    pub kind: Kind,
    /// The bundle's name (`(rollback)` for a rollback).
    pub bundle: String,
    /// The rule's name.
    pub rule: String,
    /// The rule's `notify` URL.
    pub notify: Option<String>,
    /// The rule's `timeout` (how long one notification request may take).
    pub timeout: std::time::Duration,
    /// The bundle's SHA-256 as the dispatch ended (a dispatch's only; `None` when it could
    /// not be computed).
    pub bundle_sha256: Option<String>,
}

/// What ended: a dispatch or a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Dispatch,
    Rollback,
    /// An ad-hoc run or a named action (see [`super::run`]): each target's `run` command,
    /// under the remote lock only with `lock`.
    Run {
        lock: bool,
        action: bool,
    },
}

impl Kind {
    /// The bundle name the rollout reports (and the journal keeps) for `plan`.
    fn bundle(self, plan: &Plan) -> String {
        match self {
            Kind::Dispatch => plan.bundle.clone(),
            Kind::Rollback => ROLLBACK_BUNDLE.to_owned(),
            Kind::Run { action: false, .. } => crate::model::RUN_BUNDLE.to_owned(),
            Kind::Run { action: true, .. } => crate::model::ACTION_BUNDLE.to_owned(),
        }
    }
}

impl Summary {
    pub fn all_succeeded(&self) -> bool {
        self.targets
            .iter()
            .all(|(_, o, _)| o.result == TargetResult::Succeeded)
    }

    pub fn count(&self, r: TargetResult) -> usize {
        self.targets
            .iter()
            .filter(|(_, o, _)| o.result == r)
            .count()
    }
}

fn not_started(result: TargetResult, why: &str) -> Outcome {
    Outcome {
        result,
        failed_step: None,
        error: Some(why.to_owned()),
    }
}

/// Runs the dispatch to the end and returns its summary.
pub async fn run(d: Arc<Dispatch>, cancel: Arc<Cancel>, emit: Emit) -> Summary {
    run_kind(d, cancel, emit, Kind::Dispatch).await
}

pub use crate::model::ROLLBACK_BUNDLE;

/// [`run`] for a dispatch or a rollback (see [`super::rollback`]): the same rollout,
/// events, summary and notification; only each host's job differs.
pub(crate) async fn run_kind(
    d: Arc<Dispatch>,
    cancel: Arc<Cancel>,
    emit: Emit,
    kind: Kind,
) -> Summary {
    let started = Instant::now();
    let rule = &d.plan.rule;
    let indexes: Vec<usize> = (0..d.plan.targets.len())
        .filter(|&i| {
            d.only
                .as_ref()
                .is_none_or(|o| o.contains(&d.plan.targets[i].host.name))
        })
        .collect();
    emit(Event::DispatchStarted {
        dispatch: d.id,
        at: now_ms(),
        bundle: kind.bundle(&d.plan),
        rule: rule.name.clone(),
        hosts: indexes
            .iter()
            .map(|&i| d.plan.targets[i].host.name.clone())
            .collect(),
    });
    // A rollback puts hosts back: holding most of them on a canary would keep them broken.
    // An ad-hoc run asks every host, as pssh does: no canary, no max_fail either.
    let canary = match kind {
        Kind::Dispatch => rule.canary.min(indexes.len()),
        Kind::Rollback | Kind::Run { .. } => 0,
    };
    let failures = Arc::new(AtomicUsize::new(0));
    let mut results: HashMap<usize, (Outcome, i64)> = HashMap::new();
    let digest = bundle_digest(&d, kind, &emit);

    let first = run_batch(
        &d,
        &digest,
        &indexes[..canary],
        &cancel,
        &emit,
        &failures,
        None,
        kind,
    )
    .await;
    let canary_failed = first
        .values()
        .any(|(o, _)| o.result != TargetResult::Succeeded);
    results.extend(first);
    let rest = &indexes[canary..];
    if canary_failed && cancel.is_requested() {
        for &i in rest {
            let o = not_started(TargetResult::Cancelled, "cancelled before it started");
            finish(&d, i, &o, 0, &emit);
            results.insert(i, (o, 0));
        }
    } else if canary_failed {
        emit(Event::Notice {
            dispatch: d.id,
            at: now_ms(),
            host: None,
            level: Level::Warning,
            message: format!(
                "canary failed: the other {} host(s) are skipped",
                rest.len()
            ),
        });
        for &i in rest {
            let o = not_started(TargetResult::Skipped, "skipped: the canary failed");
            finish(&d, i, &o, 0, &emit);
            results.insert(i, (o, 0));
        }
    } else {
        let max_fail = match kind {
            Kind::Dispatch => rule.max_fail,
            Kind::Rollback | Kind::Run { .. } => None,
        };
        results
            .extend(run_batch(&d, &digest, rest, &cancel, &emit, &failures, max_fail, kind).await);
    }

    let targets: Vec<(String, Outcome, i64)> = indexes
        .iter()
        .map(|i| {
            let (o, ms) = results.remove(i).expect("every target has a result");
            (d.plan.targets[*i].host.name.clone(), o, ms)
        })
        .collect();
    // Recorded before the dispatch ends, even where no host waited for it (an FTP-only
    // rule checks sizes), and what the bundle store keeps the bundle under. A cancelled
    // dispatch does not wait for it.
    let bundle_sha256 = match kind {
        Kind::Dispatch => {
            let cancel = cancel.clone();
            tokio::task::spawn_blocking(move || digest.wait(&|| cancel.is_requested()).ok())
                .await
                .ok()
                .flatten()
        }
        Kind::Rollback | Kind::Run { .. } => None,
    };
    let summary = Summary {
        id: d.id,
        targets,
        duration_ms: started.elapsed().as_millis() as i64,
        kind,
        bundle: kind.bundle(&d.plan),
        rule: rule.name.clone(),
        notify: rule.notify.clone(),
        timeout: rule.timeout,
        bundle_sha256,
    };
    emit(Event::DispatchFinished {
        dispatch: d.id,
        at: now_ms(),
        succeeded: summary.count(TargetResult::Succeeded),
        failed: summary.count(TargetResult::Failed),
        skipped: summary.count(TargetResult::Skipped),
        cancelled: summary.count(TargetResult::Cancelled),
        duration_ms: summary.duration_ms,
    });
    summary
}

/// The bundle's digest for the hosts: the one known at the start, else computed on a thread
/// of its own from now on, announced ([`Event::BundleHashed`], for the journal) before any
/// host can compare with it. A rollback or run uploads nothing and hashes nothing.
fn bundle_digest(d: &Dispatch, kind: Kind, emit: &Emit) -> BundleDigest {
    match (&d.bundle_sha256, kind) {
        (Some(sha), _) => BundleDigest::known(sha.clone()),
        (None, Kind::Dispatch) => {
            let (id, emit) = (d.id, emit.clone());
            BundleDigest::hash(d.bundle.clone(), move |sha| {
                emit(Event::BundleHashed {
                    dispatch: id,
                    at: now_ms(),
                    sha256: sha.to_owned(),
                })
            })
        }
        (None, Kind::Rollback | Kind::Run { .. }) => BundleDigest::known(String::new()),
    }
}

fn finish(d: &Dispatch, i: usize, o: &Outcome, ms: i64, emit: &Emit) {
    emit(Event::TargetFinished {
        dispatch: d.id,
        at: now_ms(),
        host: d.plan.targets[i].host.name.clone(),
        result: o.result,
        failed_step: o.failed_step,
        error: o.error.clone(),
        duration_ms: ms,
    });
}

/// Runs `indexes` with at most `parallel` at once; with `max_fail`, no target starts once
/// that many have failed.
#[allow(clippy::too_many_arguments)]
async fn run_batch(
    d: &Arc<Dispatch>,
    digest: &BundleDigest,
    indexes: &[usize],
    cancel: &Arc<Cancel>,
    emit: &Emit,
    failures: &Arc<AtomicUsize>,
    max_fail: Option<usize>,
    kind: Kind,
) -> HashMap<usize, (Outcome, i64)> {
    let sem = Arc::new(Semaphore::new(d.plan.rule.parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut out = HashMap::new();
    for &i in indexes {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let stop = if cancel.is_requested() {
            Some(not_started(
                TargetResult::Cancelled,
                "cancelled before it started",
            ))
        } else if max_fail.is_some_and(|m| failures.load(Ordering::SeqCst) >= m) {
            Some(not_started(
                TargetResult::Skipped,
                "skipped: max_fail reached",
            ))
        } else {
            None
        };
        if let Some(o) = stop {
            finish(d, i, &o, 0, emit);
            out.insert(i, (o, 0));
            continue;
        }
        let (d, digest, cancel, emit, failures) = (
            d.clone(),
            digest.clone(),
            cancel.clone(),
            emit.clone(),
            failures.clone(),
        );
        set.spawn_blocking(move || {
            let _permit = permit;
            let t = Instant::now();
            let target = &d.plan.targets[i];
            let ctx = JobContext {
                dispatch: d.id,
                plan: &d.plan,
                target,
                bundle: &d.bundle,
                bundle_digest: &digest,
                known_hosts: &d.known_hosts,
                connector: &d.connector,
                cancel: &cancel,
                emit: &*emit,
                holder: &d.holder,
                skip: d.skip.get(&target.host.name).cloned().unwrap_or_default(),
            };
            let o = match kind {
                Kind::Dispatch => job::run(&ctx),
                Kind::Rollback => job::rollback(&ctx),
                Kind::Run { lock, .. } => match target.run.as_deref() {
                    Some(command) => job::run_command(
                        &ctx,
                        command,
                        lock.then(|| kind.bundle(&d.plan)).as_deref(),
                    ),
                    None => not_started(TargetResult::Failed, "internal error: no command"),
                },
            };
            if o.result == TargetResult::Failed {
                failures.fetch_add(1, Ordering::SeqCst);
            }
            let ms = t.elapsed().as_millis() as i64;
            finish(&d, i, &o, ms, &emit);
            (i, o, ms)
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, o, ms)) => {
                out.insert(i, (o, ms));
            }
            Err(e) => {
                // A panicking job is a bug; it must not take the others down with it.
                tracing::error!("a job panicked: {e}");
            }
        }
    }
    // Any target whose job panicked still gets a result.
    for &i in indexes {
        out.entry(i).or_insert_with(|| {
            let o = not_started(TargetResult::Failed, "internal error: the job panicked");
            finish(d, i, &o, 0, emit);
            (o, 0)
        });
    }
    out
}
