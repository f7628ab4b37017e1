//! The line that closes a step in a log, the console's and the headless one alike.

use crate::engine::events::{Step, StepOutcome};

/// The log's line for a step ending, so every step reads as a result:
/// `── upgrade: exit 3 after 5.1 s`, `── upload: ok after 0.4 s`,
/// `── connect: failed after 2.0 s: connection refused`.
pub fn step_result(
    step: Step,
    outcome: StepOutcome,
    exit_code: Option<i32>,
    error: Option<&str>,
    duration_ms: i64,
) -> String {
    let took = format!("{:.1} s", duration_ms.max(0) as f64 / 1000.0);
    let why = error
        .and_then(|e| e.lines().next())
        .filter(|e| !e.is_empty())
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    match (outcome, exit_code) {
        (StepOutcome::Ok, _) => format!("── {step}: ok after {took}"),
        (StepOutcome::Failed, Some(c)) if c != 0 => format!("── {step}: exit {c} after {took}"),
        (StepOutcome::Failed, _) => format!("── {step}: failed after {took}{why}"),
        (StepOutcome::Cancelled, _) => format!("── {step}: cancelled after {took}"),
        (StepOutcome::Unknown, _) => {
            format!("── {step}: interrupted after {took} (it may or may not have run)")
        }
    }
}
