//! What an interrupted dispatch still has to do, judged once for `--resume` and for the drop
//! folder's recovery (`Step::is_repeatable`): connecting, locking, uploading, the release
//! layout's own steps and unlocking are safe to repeat (an upload verified on the host is
//! not even repeated); a command that was running when the process died may or may not have
//! taken effect, so its outcome is unknown.

use super::{DispatchDetail, DispatchState, TargetDetail, TargetProgress};
use crate::model::events::{Step, TargetResult};

/// One host of an interrupted dispatch that has something left to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub host: String,
    /// Steps it finished (a verified upload counts as `Upload`): not run again.
    pub done: Vec<Step>,
    /// A command step that was running and may or may not have taken effect.
    pub unknown: Option<Unknown>,
}

/// A step whose outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub step: Step,
    pub command: Option<String>,
    /// Not yet marked `unknown` in the journal (a cancel already recorded its outcome).
    pub mark: bool,
}

/// A target's progress, and whether its result is recorded. A cancelled dispatch's targets
/// carry "cancelled" (or "skipped" after a cancelled canary): they are judged by their steps,
/// like targets that never finished.
fn progress(t: &TargetDetail, cancelled: bool) -> (TargetProgress, bool) {
    let by_steps = super::progress_by_steps(t);
    match t.result {
        None => (by_steps, false),
        Some(TargetResult::Succeeded) => (TargetProgress::Done, true),
        Some(TargetResult::Failed) => (TargetProgress::Failed, true),
        Some(TargetResult::Cancelled) => (by_steps, true),
        Some(TargetResult::Skipped) if cancelled => (by_steps, true),
        Some(TargetResult::Skipped) => (TargetProgress::Skipped, true),
    }
}

/// The hosts of `detail` with something left to do, in the dispatch's order.
pub fn left_to_do(detail: &DispatchDetail) -> Vec<Left> {
    let cancelled = detail.state == DispatchState::Cancelled;
    let mut out = Vec::new();
    for t in &detail.targets {
        let (p, recorded) = progress(t, cancelled);
        let TargetProgress::Incomplete {
            verified_upload,
            completed,
            running,
            ..
        } = p
        else {
            continue;
        };
        let unknown = running.filter(|s| !s.is_repeatable()).map(|step| Unknown {
            step,
            command: t
                .steps
                .iter()
                .rev()
                .find(|r| r.step == step)
                .and_then(|r| r.command.clone()),
            mark: !recorded,
        });
        let mut done = completed;
        if verified_upload {
            done.push(Step::Upload);
        }
        out.push(Left {
            host: t.host.clone(),
            done,
            unknown,
        });
    }
    out
}

/// Whether every target of `detail` succeeded.
pub fn all_succeeded(detail: &DispatchDetail) -> bool {
    !detail.targets.is_empty()
        && detail
            .targets
            .iter()
            .all(|t| t.result == Some(TargetResult::Succeeded))
}
