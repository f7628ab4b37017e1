//! Rollback as an engine operation, for `dropship --rollback RULE [--host H]` and the
//! console's "roll back a rule on a host" action alike.
//!
//! A rollback is a rollout whose per-host job is [`super::job::rollback`]: connect, take the
//! remote lock (like a dispatch: a rollback never runs beside a dispatch on one host), then
//! for `layout = releases` switch `current` back to the release live before it (one step
//! back per rollback, by the deploy order recorded on the host), and run the rule's
//! `rollback` command if it has one. It emits the normal events (`DispatchStarted` with the
//! bundle `(rollback)`, steps `switch`/`rollback`, `TargetFinished`, `DispatchFinished`),
//! is journaled as a dispatch of the bundle `(rollback)`, and notifies like a dispatch.
//!
//! Commands are rendered from a plan, and a plan needs a bundle name for its placeholders:
//! the rollback uses the last dispatch of that rule that succeeded on a host rolled back
//! ([`Journal::last_good`]: failed dispatches and rollbacks left out), with that dispatch's
//! `{timestamp}`, so `{version}`, `{timestamp}` and friends mean what they meant when the
//! host got it. A bundle name given in place of the rule is used as it is. With `layout =
//! releases` the release placeholders are different: `{release}` and `{release_dir}` name
//! the release switched back *to*, read on the host (see `job::rollback`), and `{current}`
//! the symlink, which points at it by then.

use super::events::Millis;
use super::job::Cancel;
use super::rollout::{self, Dispatch, Emit, ROLLBACK_BUNDLE, Summary};
use crate::config::rules::Layout;
use crate::config::{Config, Netrc, Rule, SshHosts};
use crate::engine::notify::Kind;
use crate::journal::{Journal, JournalError, LastGood, NewDispatch};
use crate::plan::{Plan, PlanError, Stamp};
use crate::transport::known_hosts::KnownHostsFiles;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(
        "no rule is named `{arg}` and no rule matches it as a bundle name (rules: {})\n  help: give the rule's section name as written in the config, or a bundle file name of that rule",
        .rules.iter().map(|r| format!("[{r}]")).collect::<Vec<_>>().join(", ")
    )]
    UnknownRule { arg: String, rules: Vec<String> },
    #[error(
        "rule [{rule}] has no `rollback` command and no `layout = releases`: there is nothing to roll back with\n  help: add `rollback = COMMAND` to the rule"
    )]
    NothingToRun { rule: String },
    #[error(
        "the journal has no dispatch of rule [{rule}] that succeeded on the hosts asked for, so its commands' placeholders have no values\n  help: name a bundle of that rule instead: --rollback BUNDLE_FILE_NAME"
    )]
    NoBundle { rule: String },
    #[error(
        "host `{host}` is not a host of rule [{rule}] (its hosts: {})\n  help: pick one of those hosts",
        .hosts.join(", ")
    )]
    UnknownHost {
        host: String,
        rule: String,
        hosts: Vec<String>,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The rule `arg` names: a section name as written, or a package name (`app` for
/// `[app-(?P<version>.*)\.tgz]`, as `--probe` and the console show it) that names one rule,
/// else the rule a bundle file name `arg` matches (first match wins, as for a dispatch).
/// The bundle name is returned too.
pub fn resolve_rule<'c>(
    config: &'c Config,
    arg: &str,
) -> Result<(&'c Rule, Option<String>), RollbackError> {
    if let Some(r) = config.rules.iter().find(|r| r.name == arg) {
        return Ok((r, None));
    }
    let labelled: Vec<&Rule> = config
        .rules
        .iter()
        .filter(|r| crate::config::rules::package_label(r) == arg)
        .collect();
    if let [r] = labelled[..] {
        return Ok((r, None));
    }
    match config.match_rule(arg) {
        Some((r, _)) => Ok((r, Some(arg.to_owned()))),
        None => Err(RollbackError::UnknownRule {
            arg: arg.to_owned(),
            rules: config.rules.iter().map(|r| r.name.clone()).collect(),
        }),
    }
}

/// The dispatch a rollback of `rule` on `hosts` (all: empty) takes its placeholders from:
/// the newest one that succeeded on one of them. One indexed query, no flush.
pub fn last_good(
    journal: &Journal,
    rule: &str,
    hosts: &[String],
) -> Result<Option<LastGood>, JournalError> {
    journal.last_good(rule, hosts)
}

/// The plan a rollback of `arg` (a rule name or a bundle name) on `hosts` (all of the
/// rule's: empty) works from. `last(rule, hosts)` gives the dispatch its placeholders come
/// from when `arg` is a rule name (see [`last_good`]); then its `{timestamp}` is that
/// dispatch's, else `stamp`. Check `hosts` with [`only`] on the plan.
pub fn plan(
    config: &Config,
    netrc: &Netrc,
    ssh: &SshHosts,
    arg: &str,
    hosts: &[String],
    last: impl FnOnce(&str, &[String]) -> Result<Option<LastGood>, JournalError>,
    stamp: Stamp,
) -> Result<Plan, RollbackError> {
    let (rule, bundle) = resolve_rule(config, arg)?;
    if rule.layout != Layout::Releases && rule.commands.rollback.is_none() {
        return Err(RollbackError::NothingToRun {
            rule: rule.name.clone(),
        });
    }
    let known: Vec<String> = rule.hosts.iter().map(|h| h.name.clone()).collect();
    if let Some(h) = hosts.iter().find(|h| !known.contains(h)) {
        return Err(RollbackError::UnknownHost {
            host: h.clone(),
            rule: rule.name.clone(),
            hosts: known,
        });
    }
    let (bundle, stamp) = match bundle {
        Some(b) => (b, stamp),
        None => {
            let good = last(&rule.name, hosts)?.ok_or_else(|| RollbackError::NoBundle {
                rule: rule.name.clone(),
            })?;
            let stamp = Stamp::parse(&good.stamp).unwrap_or(stamp);
            (good.bundle, stamp)
        }
    };
    let plan = Plan::build(config, netrc, ssh, &bundle, stamp)?;
    if plan.rule.name != rule.name {
        // The config changed since that bundle was shipped.
        return Err(RollbackError::NoBundle {
            rule: rule.name.clone(),
        });
    }
    Ok(plan)
}

/// Checks `hosts` against the plan: `None` (all) when empty.
pub fn only(plan: &Plan, hosts: &[String]) -> Result<Option<Vec<String>>, RollbackError> {
    let known: Vec<String> = plan.targets.iter().map(|t| t.host.name.clone()).collect();
    if let Some(h) = hosts.iter().find(|h| !known.contains(h)) {
        return Err(RollbackError::UnknownHost {
            host: h.clone(),
            rule: plan.rule.name.clone(),
            hosts: known,
        });
    }
    Ok((!hosts.is_empty()).then(|| hosts.to_vec()))
}

/// The journal record of a rollback: a dispatch of the bundle `(rollback)` with no file
/// (empty path and hash, size 0), so `--history` and the console list it beside dispatches.
pub fn record(plan: &Plan, config_path: &Path, only: Option<&[String]>, at: Millis) -> NewDispatch {
    NewDispatch {
        bundle: ROLLBACK_BUNDLE.to_owned(),
        bundle_path: PathBuf::new(),
        bundle_sha256: String::new(),
        bundle_size: 0,
        rule: plan.rule.name.clone(),
        config_path: std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_owned()),
        timestamp: plan.stamp.timestamp.clone(),
        hosts: NewDispatch::hosts_of(plan, only),
        started_at: at,
    }
}

/// The rollout input of a rollback with journal id `id`.
pub fn dispatch(
    id: i64,
    plan: Arc<Plan>,
    known_hosts: KnownHostsFiles,
    holder: String,
    only: Option<Vec<String>>,
) -> Dispatch {
    Dispatch {
        id,
        plan,
        bundle: PathBuf::new(),
        bundle_sha256: None,
        known_hosts,
        holder,
        skip: HashMap::new(),
        only,
        connector: crate::engine::connect::real(),
    }
}

/// Runs the rollback to the end: every host at once up to the rule's `parallel` (no
/// canary, no `max_fail`: every host asked for is put back). A cancel stops hosts that
/// have not started; a switch or `rollback` command already running is not cut short.
pub async fn run(d: Arc<Dispatch>, cancel: Arc<Cancel>, emit: Emit) -> Summary {
    rollout::run_kind(d, cancel, emit, Kind::Rollback).await
}
