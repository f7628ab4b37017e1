//! Plain-text tables for `--probe` and `--status`. They return strings: the binary decides
//! where output goes, and tests read them.

use super::report::table;
use super::term_text::field;
use crate::fleet::probe::{CheckKind, HostProbe, Status};
use crate::fleet::version::{Installed, StatusReport};
use std::fmt::Write;

const COLUMNS: &[(CheckKind, &str)] = &[
    (CheckKind::Reachable, "REACH"),
    (CheckKind::HostKey, "HOSTKEY"),
    (CheckKind::Login, "LOGIN"),
    (CheckKind::SshLogin, "SSH"),
    (CheckKind::DestDir, "DEST"),
    (CheckKind::Programs, "PROGRAMS"),
    (CheckKind::Lock, "LOCK"),
    (CheckKind::Version, "VERSION"),
];

fn cell(p: &HostProbe, kind: CheckKind) -> String {
    match p.check(kind) {
        None => "-".into(),
        Some(c) if kind == CheckKind::Version && c.status == Status::Pass => {
            p.version.clone().unwrap_or_else(|| "ok".into())
        }
        Some(c) if kind == CheckKind::Lock && c.status == Status::Warn && p.lock.is_some() => {
            "LOCKED".into()
        }
        Some(c) if c.status == Status::Skip => "-".into(),
        Some(c) => c.status.as_str().into(),
    }
}

/// The `--probe` report: one row per host with each check's status, then what failed (or
/// wants attention) and why, with hints.
pub fn probe_table(probes: &[HostProbe]) -> String {
    // The SSH column only where an FTP rule runs commands.
    let columns: Vec<&(CheckKind, &str)> = COLUMNS
        .iter()
        .filter(|(k, _)| *k != CheckKind::SshLogin || probes.iter().any(|p| p.check(*k).is_some()))
        .collect();
    let mut rows = vec![
        ["HOST", "PACKAGE"]
            .iter()
            .map(|s| s.to_string())
            .chain(columns.iter().map(|(_, h)| h.to_string()))
            .collect::<Vec<_>>(),
    ];
    for p in probes {
        let mut row = vec![p.host.clone(), p.package.clone()];
        row.extend(columns.iter().map(|(k, _)| cell(p, *k)));
        rows.push(row);
    }
    let mut out = table(&rows);
    for p in probes {
        let shown: Vec<_> = p
            .checks
            .iter()
            .filter(|c| matches!(c.status, Status::Fail | Status::Warn) || !c.notes.is_empty())
            .collect();
        if shown.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{} [{}]:", field(&p.host), field(&p.rule));
        for c in shown {
            if matches!(c.status, Status::Fail | Status::Warn) {
                let _ = writeln!(
                    out,
                    "  {:<4} {}: {}",
                    c.status.as_str(),
                    c.kind.as_str(),
                    c.detail
                );
                if let Some(h) = &c.hint {
                    let _ = writeln!(out, "       help: {h}");
                }
            }
            for n in &c.notes {
                let _ = writeln!(out, "  note {}: {n}", c.kind.as_str());
            }
        }
    }
    let failed = probes.iter().filter(|p| !p.passed()).count();
    let _ = writeln!(
        out,
        "\n{} host{} probed: {} ok, {} failed",
        probes.len(),
        if probes.len() == 1 { "" } else { "s" },
        probes.len() - failed,
        failed
    );
    out
}

pub fn status_cell(c: &crate::fleet::version::Cell) -> String {
    let mut text = match &c.installed {
        Installed::Version { version } => version.clone(),
        Installed::Unreadable { .. } => "?".into(),
        Installed::Unreachable { .. } => "unreachable".into(),
    };
    for d in &c.drift {
        let _ = write!(text, " !{}", d.as_str());
    }
    text
}

/// The `--status` matrix: hosts down, packages across, the installed version in each cell
/// (`-` where the rule does not name the host), drift marked `!behind`, `!ahead`,
/// `!differs`, `!mixed`; then why cells could not be read and what drifted from what.
pub fn status_table(report: &StatusReport) -> String {
    let (packages, hosts) = report.axes();
    let mut rows = vec![
        std::iter::once("HOST".to_owned())
            .chain(packages.iter().map(|(_, l)| l.to_string()))
            .collect::<Vec<_>>(),
    ];
    for h in &hosts {
        let mut row = vec![h.to_string()];
        for (rule, _) in &packages {
            row.push(
                report
                    .cells
                    .iter()
                    .find(|c| c.rule == *rule && c.host == *h)
                    .map_or_else(|| "-".into(), status_cell),
            );
        }
        rows.push(row);
    }
    let mut out = table(&rows);
    let mut notes = Vec::new();
    for c in &report.cells {
        match &c.installed {
            Installed::Unreadable { error } | Installed::Unreachable { error } => {
                notes.push(format!(
                    "{} [{}]: {error}",
                    field(&c.host),
                    field(&c.package)
                ));
            }
            Installed::Version { version } => {
                let only_mixed = c.drift == [crate::fleet::version::Drift::Mixed];
                if let (false, false, Some(s)) = (c.drift.is_empty(), only_mixed, &c.shipped) {
                    let marks: Vec<&str> = c.drift.iter().map(|d| d.as_str()).collect();
                    notes.push(format!(
                        "{} [{}]: runs {}; last shipped there: {} (dispatch #{}) [{}]",
                        field(&c.host),
                        field(&c.package),
                        field(version),
                        field(&s.version),
                        s.dispatch,
                        marks.join(", ")
                    ));
                } else if !c.drift.is_empty() {
                    notes.push(format!(
                        "{} [{}]: runs {}; the rule's hosts run different versions [mixed]",
                        field(&c.host),
                        field(&c.package),
                        field(version)
                    ));
                }
            }
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            let _ = writeln!(out, "{n}");
        }
    }
    if packages.len() > 1 || packages.iter().any(|(r, l)| r != l) {
        out.push('\n');
        for (rule, label) in &packages {
            let _ = writeln!(out, "{:<12} rule [{}]", field(label), field(rule));
        }
    }
    if !report.without_version_cmd.is_empty() {
        let names: Vec<String> = report
            .without_version_cmd
            .iter()
            .map(|r| format!("[{}]", field(r)))
            .collect();
        let _ = writeln!(out, "\nnot shown (no `version_cmd`): {}", names.join(", "));
    }
    out
}

/// `--status`'s second table: each host's last finished dispatch, and who started it from
/// where (`user@machine`, recorded since schema V4): on a team's shared journal, the one to
/// ask about a host's state. Only the hosts of `hosts`, in that order; empty when the
/// journal knows none of them.
pub fn last_dispatch_table(hosts: &[&str], last: &[crate::journal::HostLast]) -> String {
    let mut rows = vec![
        ["HOST", "LAST", "RESULT", "FINISHED", "BY", "BUNDLE", "RULE"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    ];
    for h in hosts {
        let Some(l) = last.iter().find(|l| l.host == *h) else {
            continue;
        };
        let finished = l
            .finished_at
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            l.host.clone(),
            format!("#{}", l.dispatch),
            l.result.as_str().to_owned(),
            finished,
            l.started_by_on(),
            l.bundle.clone(),
            format!("[{}]", l.rule),
        ]);
    }
    if rows.len() == 1 {
        return String::new();
    }
    format!("\nlast dispatch per host:\n{}", table(&rows))
}

#[cfg(test)]
mod last_dispatch_tests {
    use super::*;
    use crate::journal::HostLast;
    use crate::model::events::TargetResult;

    fn last(host: &str, by: Option<&str>, on: Option<&str>) -> HostLast {
        HostLast {
            host: host.into(),
            dispatch: 7,
            bundle: "app-1.2.tgz".into(),
            rule: "app".into(),
            result: TargetResult::Succeeded,
            finished_at: None,
            last_succeeded: None,
            started_by: by.map(Into::into),
            started_on: on.map(Into::into),
        }
    }

    #[test]
    fn says_who_started_each_hosts_last_dispatch_and_from_where() {
        let text = last_dispatch_table(
            &["web2", "web1", "web3"],
            &[
                last("web1", Some("alice"), Some("build-3")),
                last("web2", None, None),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "last dispatch per host:", "{text}");
        assert!(lines[2].starts_with("HOST"), "{text}");
        assert!(
            lines[3].starts_with("web2") && lines[3].contains(" - "),
            "{text}"
        );
        assert!(lines[4].starts_with("web1"), "{text}");
        assert!(lines[4].contains("alice@build-3"), "{text}");
        assert!(
            lines[4].contains("#7") && lines[4].contains("succeeded"),
            "{text}"
        );
        assert!(!text.contains("web3"), "{text}");
    }

    #[test]
    fn nothing_when_the_journal_knows_none_of_the_hosts() {
        assert_eq!(last_dispatch_table(&["web1"], &[]), "");
    }
}
