//! A dispatch the previous run left unfinished: go on, or stop and tell the operator.
//!
//! The same judgement as `--resume` (`Step::is_repeatable`): connecting, locking, uploading,
//! the release layout's own steps and unlocking are safe to repeat (an upload verified on
//! the host is not even repeated); a command that was
//! running when the process died may or may not have taken effect. Unattended, the watcher
//! never reruns such a command: the bundle goes to `failed/` with a reason saying what to
//! check and the exact `dropship --resume ID --force` that would rerun it.

use crate::config::shell::quote;
use crate::engine::events::{Step, TargetResult};
use crate::engine::job::Skip;
use crate::journal::{DispatchDetail, TargetDetail, resume};
use std::collections::HashMap;
use std::path::Path;

/// A step whose outcome is unknown, on `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub host: String,
    pub step: Step,
    pub command: Option<String>,
    /// Not yet marked `unknown` in the journal (a cancel already recorded its outcome).
    pub mark: bool,
}

#[derive(Debug)]
pub enum Verdict {
    /// Nothing left to run: every target has its result.
    Ended { all_succeeded: bool },
    /// Some command's outcome is unknown: do not go on.
    Unknown(Vec<Unknown>),
    /// Go on with these hosts, skipping what they finished.
    Continue {
        skip: HashMap<String, Skip>,
        only: Vec<String>,
    },
}

/// What to do with an unfinished dispatch ([`crate::journal::resume::left_to_do`], the
/// judgement `--resume` uses too): unattended, any unknown outcome stops it.
pub fn judge(detail: &DispatchDetail) -> Verdict {
    let mut unknown = Vec::new();
    let mut skip = HashMap::new();
    let mut only = Vec::new();
    for left in resume::left_to_do(detail) {
        match left.unknown {
            Some(u) => unknown.push(Unknown {
                host: left.host,
                step: u.step,
                command: u.command,
                mark: u.mark,
            }),
            None => {
                skip.insert(left.host.clone(), Skip { done: left.done });
                only.push(left.host);
            }
        }
    }
    if !unknown.is_empty() {
        Verdict::Unknown(unknown)
    } else if only.is_empty() {
        Verdict::Ended {
            all_succeeded: resume::all_succeeded(detail),
        }
    } else {
        Verdict::Continue { skip, only }
    }
}

pub use resume::all_succeeded;

/// `NAME.reason` of a bundle whose dispatch failed.
pub fn failure_reason(detail: &DispatchDetail, dir: &Path) -> String {
    let failed: Vec<&TargetDetail> = detail
        .targets
        .iter()
        .filter(|t| t.result != Some(TargetResult::Succeeded))
        .collect();
    let mut text = format!(
        "dispatch #{} of {} via [{}] did not succeed on {} of {} host(s):\n",
        detail.id,
        detail.record.bundle,
        detail.record.rule,
        failed.len(),
        detail.targets.len()
    );
    for t in failed {
        let result = t.result.map_or("unfinished", |r| r.as_str());
        let step = t
            .failed_step
            .map(|s| format!(" at {s}"))
            .unwrap_or_default();
        let error = t
            .error
            .as_deref()
            .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
            .unwrap_or_default();
        text.push_str(&format!("  {}: {result}{step}{error}\n", t.host));
    }
    text.push_str(&format!(
        "Steps and output: dropship --history (dispatch #{}).\n\
         To ship it again, fix the cause and move this file back into {}: only a bundle that \
         was shipped (done) is refused as a duplicate.\n",
        detail.id,
        dir.display()
    ));
    text
}

/// `NAME.reason` of a bundle whose dispatch was stopped while a command ran.
pub fn unknown_reason(
    detail: &DispatchDetail,
    unknown: &[Unknown],
    journal: &Path,
    config: &Path,
) -> String {
    let id = detail.id;
    let mut text = format!(
        "dropship stopped (killed, or cancelled at shutdown) while a command of dispatch #{id} \
         ({} via [{}]) was running. Whether it took effect is unknown, so watch mode did not run \
         it again:\n",
        detail.record.bundle, detail.record.rule
    );
    for u in unknown {
        let cmd = u
            .command
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        text.push_str(&format!("  {}: {}{cmd}\n", u.host, u.step));
    }
    text.push_str(&format!(
        "Check on each host above whether that command completed (its output so far: \
         dropship --journal {j} --history, dispatch #{id}). Then either\n  \
         dropship --config {c} --journal {j} --resume {id} --force\n\
         to run it again and finish the dispatch (it finds this file here), or leave it if \
         it did take effect. This bundle is not shipped again automatically.\n",
        j = quote(&journal.to_string_lossy()),
        c = quote(&config.to_string_lossy()),
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{DispatchState, NewDispatch, StepRecord};
    use std::path::PathBuf;

    /// A dispatch killed while `step` ran on its only host.
    fn killed_during(step: Step) -> DispatchDetail {
        let rec = |step, done: bool| StepRecord {
            step,
            command: Some(format!("{step} command")),
            outcome: done.then_some(crate::engine::events::StepOutcome::Ok),
            exit_code: None,
            error: None,
            started_at: 1,
            finished_at: done.then_some(2),
            duration_ms: None,
            lines: 0,
            dropped_lines: 0,
        };
        DispatchDetail {
            id: 7,
            record: NewDispatch {
                bundle: "app-1.tgz".into(),
                bundle_path: PathBuf::from("/drop/app-1.tgz"),
                bundle_sha256: "x".into(),
                bundle_size: 1,
                rule: "app".into(),
                config_path: PathBuf::from("/d.cfg"),
                timestamp: "20260101_000000".into(),
                hosts: vec!["web1".into()],
                started_at: 1,
            },
            state: DispatchState::Running,
            finished_at: None,
            writer_pid: 1,
            targets: vec![TargetDetail {
                host: "web1".into(),
                result: None,
                failed_step: None,
                error: None,
                started_at: Some(1),
                finished_at: None,
                duration_ms: None,
                upload_attempts: 1,
                verified: None,
                steps: vec![
                    rec(Step::Connect, true),
                    rec(Step::Lock, true),
                    rec(step, false),
                ],
            }],
            notices: Vec::new(),
        }
    }

    #[test]
    fn the_watcher_repeats_what_resume_repeats_and_nothing_else() {
        // The release layout's own steps start over safely, as `--resume` knows.
        for step in [Step::Upload, Step::Unpack, Step::Switch, Step::Prune] {
            assert!(
                matches!(judge(&killed_during(step)), Verdict::Continue { .. }),
                "{step}"
            );
        }
        // A user's command may have taken effect: never rerun unattended.
        for step in [Step::Pre, Step::Upgrade, Step::Post, Step::Health] {
            match judge(&killed_during(step)) {
                Verdict::Unknown(u) => assert_eq!((u[0].host.as_str(), u[0].step), ("web1", step)),
                other => panic!("{step}: {other:?}"),
            }
        }
    }
}
