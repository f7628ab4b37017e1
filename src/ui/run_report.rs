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
                lines,
                ..
            } => {
                let mut all = k.hosts.lock().unwrap_or_else(|e| e.into_inner());
                let h = all.entry((*dispatch, host.clone())).or_default();
                for line in lines.iter() {
                    if crate::transport::lines::is_cr_ended(line) {
                        // A progress state: the line that overwrites it follows, and hosts
                        // whose output differs only in how many states arrived group
                        // together.
                    } else if h.lines.len() < MAX_LINES && h.bytes + line.len() <= MAX_BYTES {
                        h.bytes += line.len();
                        h.lines.push(line.to_owned());
                    } else {
                        h.truncated = true;
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::StepOutcome;
    use crate::engine::job::Outcome;
    use crate::engine::rollout::Kind;
    use crate::transport::Stream;

    fn line(emit: &Emit, id: i64, host: &str, step: Step, text: &str) {
        emit(Event::Output {
            dispatch: id,
            at: 0,
            host: host.into(),
            step,
            stream: Stream::Stdout,
            lines: text.into(),
        });
    }

    fn done(emit: &Emit, id: i64, host: &str, code: i32) {
        emit(Event::StepFinished {
            dispatch: id,
            at: 0,
            host: host.into(),
            step: Step::Run,
            outcome: if code == 0 {
                StepOutcome::Ok
            } else {
                StepOutcome::Failed
            },
            exit_code: Some(code),
            error: None,
            duration_ms: 1,
        });
    }

    fn summary(id: i64, rule: &str, hosts: &[(&str, TargetResult)]) -> Summary {
        Summary {
            id,
            bundle_sha256: None,
            targets: hosts
                .iter()
                .map(|(h, r)| {
                    (
                        h.to_string(),
                        Outcome {
                            result: *r,
                            failed_step: None,
                            error: (*r != TargetResult::Succeeded).then(|| "boom\nmore".into()),
                        },
                        1500,
                    )
                })
                .collect(),
            duration_ms: 1,
            kind: Kind::Run {
                lock: false,
                action: false,
            },
            bundle: "(run)".into(),
            rule: rule.into(),
            notify: None,
            timeout: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn identical_output_is_one_block_largest_first() {
        let seen = Arc::new(Mutex::new(0usize));
        let s = seen.clone();
        let (emit, kept) = collector(Arc::new(move |_| *s.lock().unwrap() += 1));
        for h in ["a", "b", "c"] {
            line(&emit, 1, h, Step::Run, "6.1.0");
        }
        line(&emit, 1, "d", Step::Run, "5.10");
        // Not the command's output: not grouped.
        line(&emit, 1, "a", Step::Connect, "banner");
        for h in ["a", "b", "c", "d"] {
            done(&emit, 1, h, 0);
        }
        done(&emit, 1, "e", 3); // printed nothing
        // The same host name through a second rule is told apart.
        line(&emit, 2, "a", Step::Run, "6.1.0");
        done(&emit, 2, "a", 0);
        assert_eq!(
            *seen.lock().unwrap(),
            12,
            "every event still reaches the front end"
        );
        let use_ok = TargetResult::Succeeded;
        let summaries = [
            summary(
                1,
                "web",
                &[
                    ("a", use_ok),
                    ("b", use_ok),
                    ("c", use_ok),
                    ("d", use_ok),
                    ("e", TargetResult::Failed),
                    ("f", TargetResult::Failed),
                ],
            ),
            summary(2, "api", &[("a", use_ok)]),
        ];
        let g = groups(&kept, &summaries);
        assert_eq!(
            g.iter().map(|g| g.hosts.clone()).collect::<Vec<_>>(),
            [vec!["a [web]", "b", "c", "a [api]"], vec!["d"], vec!["e"]]
        );
        let text = grouped(&g);
        assert!(
            text.starts_with(
                "---------------\na [web],b,c,a [api] (4)\n---------------\n6.1.0\n---------------\nd (1)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("e (1)\n---------------\n(no output)\n"),
            "{text}"
        );
        let table = closing_table(&kept, &summaries);
        let row = |h: &str| {
            table
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(h))
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(row("e"), ["#1", "e", "failed", "3", "1.5s", "boom"]);
        // Never ran (no connection): no exit code, in no group.
        assert_eq!(row("f")[3], "-");
        assert_eq!(row("b")[2..4], ["succeeded", "0"]);
    }

    #[test]
    fn progress_states_do_not_split_a_group() {
        let (emit, kept) = collector(Arc::new(|_| {}));
        line(&emit, 1, "a", Step::Run, "copy 10%\r");
        line(&emit, 1, "a", Step::Run, "copy 50%\r");
        line(&emit, 1, "a", Step::Run, "copy 100%");
        line(&emit, 1, "b", Step::Run, "copy 100%");
        for h in ["a", "b"] {
            done(&emit, 1, h, 0);
        }
        let s = [summary(
            1,
            "web",
            &[
                ("a", TargetResult::Succeeded),
                ("b", TargetResult::Succeeded),
            ],
        )];
        let g = groups(&kept, &s);
        assert_eq!(g.len(), 1, "{g:?}");
        assert_eq!(g[0].lines, ["copy 100%"]);
    }

    #[test]
    fn a_host_past_the_bound_is_marked() {
        let (emit, kept) = collector(Arc::new(|_| {}));
        for i in 0..MAX_LINES + 5 {
            line(&emit, 1, "a", Step::Run, &format!("{i}"));
        }
        done(&emit, 1, "a", 0);
        let s = [summary(1, "web", &[("a", TargetResult::Succeeded)])];
        let g = groups(&kept, &s);
        assert_eq!(g[0].lines.len(), MAX_LINES);
        assert!(g[0].truncated);
        assert!(grouped(&g).contains("more output than is kept"));
    }
}
