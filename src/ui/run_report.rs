//! The end of an ad-hoc run or action (`--run`, `--action`): hosts whose output was
//! identical grouped into one block (as `clush -b` does: the list of hosts, then what they
//! printed once), and a closing table of every host's result and exit code.
//!
//! The live output is the headless printer's; this only listens beside it ([`collector`]):
//! the `run` step's lines and exit code per host, kept up to [`MAX_LINES`] lines or
//! [`MAX_BYTES`] per host (a host past that is grouped by what was kept and says so: every
//! line is in the journal, up to its own bound).

use crate::engine::events::{Event, Step, TargetResult};
use crate::engine::rollout::{Emit, Summary};
use indexmap::IndexMap;
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// Lines per host kept for grouping.
pub const MAX_LINES: usize = 10_000;
/// Bytes per host kept for grouping.
pub const MAX_BYTES: usize = 1 << 20;

/// What one host printed and how its command ended.
#[derive(Debug, Default, Clone)]
struct HostOutput {
    lines: Vec<String>,
    bytes: usize,
    truncated: bool,
    exit_code: Option<i32>,
}

/// Output of the `run` step per (run id, host), in the order hosts first printed.
#[derive(Debug, Default)]
pub struct Collected {
    hosts: Mutex<IndexMap<(i64, String), HostOutput>>,
}

/// Wraps `front` so the `run` step's output and exit codes are also kept for [`grouped`]
/// and [`closing_table`]. Everything still reaches `front`, in order.
pub fn collector(front: Emit) -> (Emit, Arc<Collected>) {
    let kept = Arc::new(Collected::default());
    let k = kept.clone();
    let emit: Emit = Arc::new(move |event: Event| {
        match &event {
            Event::Output {
                dispatch,
                host,
                step: Step::Run,
                line,
                ..
            } => {
                let mut all = k.hosts.lock().unwrap_or_else(|e| e.into_inner());
                let h = all.entry((*dispatch, host.clone())).or_default();
                if h.lines.len() < MAX_LINES && h.bytes + line.len() <= MAX_BYTES {
                    h.bytes += line.len();
                    h.lines.push(line.clone());
                } else {
                    h.truncated = true;
                }
            }
            Event::StepFinished {
                dispatch,
                host,
                step: Step::Run,
                exit_code,
                ..
            } => {
                let mut all = k.hosts.lock().unwrap_or_else(|e| e.into_inner());
                all.entry((*dispatch, host.clone())).or_default().exit_code = *exit_code;
            }
            _ => {}
        }
        front(event)
    });
    (emit, kept)
}

/// Hosts that printed the same lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub hosts: Vec<String>,
    pub lines: Vec<String>,
    /// A host of the group printed more than was kept for grouping.
    pub truncated: bool,
}

/// How a host is named in groups and the table: its name, with the rule when one run
/// reached the same host name through two rules.
fn labels(summaries: &[Summary]) -> IndexMap<(i64, String), String> {
    let mut count: std::collections::HashMap<&str, usize> = Default::default();
    for s in summaries {
        for (h, _, _) in &s.targets {
            *count.entry(h.as_str()).or_default() += 1;
        }
    }
    let mut out = IndexMap::new();
    for s in summaries {
        for (h, _, _) in &s.targets {
            let label = if count[h.as_str()] > 1 {
                format!("{h} [{}]", s.rule)
            } else {
                h.clone()
            };
            out.insert((s.id, h.clone()), label);
        }
    }
    out
}

/// The groups of hosts whose command ran (and printed the same), largest first, then in
/// the order hosts first printed. Hosts whose command never ran (no connection, cancelled
/// before it started) are in no group: the closing table says why.
pub fn groups(kept: &Collected, summaries: &[Summary]) -> Vec<Group> {
    let labels = labels(summaries);
    let all = kept.hosts.lock().unwrap_or_else(|e| e.into_inner());
    let mut by_output: IndexMap<&[String], Group> = IndexMap::new();
    // Hosts in run order, those that printed nothing too (an empty block).
    for s in summaries {
        for (h, _, _) in &s.targets {
            let key = (s.id, h.clone());
            let Some(out) = all.get(&key) else { continue };
            let g = by_output
                .entry(out.lines.as_slice())
                .or_insert_with(|| Group {
                    hosts: Vec::new(),
                    lines: out.lines.clone(),
                    truncated: false,
                });
            g.hosts
                .push(labels.get(&key).cloned().unwrap_or_else(|| h.clone()));
            g.truncated |= out.truncated;
        }
    }
    let mut groups: Vec<Group> = by_output.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.hosts.len()));
    groups
}

/// The groups as text, `clush -b` style: a rule, the hosts and their count, a rule, the
/// lines.
pub fn grouped(groups: &[Group]) -> String {
    let mut out = String::new();
    for g in groups {
        out.push_str("---------------\n");
        out.push_str(&format!("{} ({})\n", g.hosts.join(","), g.hosts.len()));
        out.push_str("---------------\n");
        if g.lines.is_empty() {
            out.push_str("(no output)\n");
        }
        for l in &g.lines {
            out.push_str(l);
            out.push('\n');
        }
        if g.truncated {
            out.push_str(
                "(more output than is kept for grouping; all of it is in the journal: dropship --history)\n",
            );
        }
    }
    out
}

/// One row per host: run id, host, result, exit code, time, error.
pub fn closing_table(kept: &Collected, summaries: &[Summary]) -> String {
    let labels = labels(summaries);
    let all = kept.hosts.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows = vec![vec![
        "RUN".to_owned(),
        "HOST".into(),
        "RESULT".into(),
        "EXIT".into(),
        "TIME".into(),
        "ERROR".into(),
    ]];
    for s in summaries {
        for (h, o, ms) in &s.targets {
            let key = (s.id, h.clone());
            let exit = all
                .get(&key)
                .and_then(|x| x.exit_code)
                .map_or("-".to_owned(), |c| c.to_string());
            let error = match o.result {
                TargetResult::Succeeded => String::new(),
                _ => o
                    .error
                    .as_deref()
                    .and_then(|e| e.lines().next())
                    .unwrap_or("")
                    .to_owned(),
            };
            rows.push(vec![
                format!("#{}", s.id),
                labels.get(&key).cloned().unwrap_or_else(|| h.clone()),
                o.result.as_str().to_owned(),
                exit,
                format!("{:.1}s", *ms as f64 / 1000.0),
                error,
            ]);
        }
    }
    super::report::table(&rows)
}
