//! Installed versions (`version_cmd`) per host and rule, and drift: a host behind the version
//! last shipped to it by its rule, or the hosts of one rule on different versions.
//!
//! "Last shipped" comes from the journal: the last dispatch of the rule that succeeded on
//! the host. Its version is the bundle name's `version` capture when the rule's regex has
//! one (`app-(?P<version>…)\.tgz`), else the bundle's stem (`app-1.4.2`). A host whose
//! version cannot be read is shown as unreachable or unreadable, never dropped, and never
//! stops the others.

use super::pool::{PER_HOST, connect_ssh, for_each_bounded_per_key};
use super::target::{ProbeTarget, package_label};
use crate::config::{Protocol, Rule};
use crate::journal::RuleShipped;
use crate::transport::known_hosts::KnownHostsFiles;
use crate::transport::{Shell, Stream, TransportError, local};
use serde::Serialize;
use std::cmp::Ordering;
use std::time::Duration;

/// Longest version string kept (a `version_cmd` that prints a whole file is cut).
const MAX_VERSION: usize = 100;

/// Runs `version_cmd` and returns the first non-empty line it printed on stdout. Errors are
/// messages for a table cell (exit status and the first line of stderr).
pub fn read_version(shell: &mut dyn Shell, cmd: &str, timeout: Duration) -> Result<String, String> {
    let mut out: Option<String> = None;
    let mut err: Option<String> = None;
    let status = shell
        .exec(cmd, timeout, &|| false, &mut |stream, line| {
            let line = line.trim();
            if line.is_empty() {
                return;
            }
            let slot = if stream == Stream::Stdout {
                &mut out
            } else {
                &mut err
            };
            if slot.is_none() {
                *slot = Some(
                    line.chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_VERSION)
                        .collect(),
                );
            }
        })
        .map_err(|e| match e {
            // Bounded by the rule's `timeout` here, not by `step_timeout`.
            TransportError::CommandTimeout { secs, .. } => format!(
                "`version_cmd` was still running after {secs}s and was killed (raise `timeout` in the rule)"
            ),
            e => format!("`version_cmd` failed: {e}"),
        })?;
    match (status, out) {
        (0, Some(v)) => Ok(v),
        (0, None) => Err("`version_cmd` printed nothing".into()),
        (code, _) => Err(format!(
            "`version_cmd` exited with status {code}{}",
            err.map(|e| format!(": {e}")).unwrap_or_default()
        )),
    }
}

/// What a host reports for one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Installed {
    Version {
        version: String,
    },
    /// Reached, but the version could not be read (login refused, `version_cmd` failed).
    Unreadable {
        error: String,
    },
    /// No connection.
    Unreachable {
        error: String,
    },
}

impl Installed {
    pub fn version(&self) -> Option<&str> {
        match self {
            Installed::Version { version } => Some(version),
            _ => None,
        }
    }
}

/// What the journal says the host should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shipped {
    pub dispatch: i64,
    pub bundle: String,
    /// The bundle's `version` capture, else its stem.
    pub version: String,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Drift {
    /// Older than the version last shipped to it.
    Behind,
    /// Newer than the version last shipped (shipped by something else?).
    Ahead,
    /// Not the version last shipped, and the two do not compare as numbers.
    Differs,
    /// The rule's hosts do not all report the same version.
    Mixed,
}

impl Drift {
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Behind => "behind",
            Drift::Ahead => "ahead",
            Drift::Differs => "differs",
            Drift::Mixed => "mixed",
        }
    }
}

/// One host of one rule in the status matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub rule: String,
    /// Readable name of the rule's package (see [`package_label`]).
    pub package: String,
    /// `host` or `host:port` as the rule writes it.
    pub host: String,
    pub installed: Installed,
    pub shipped: Option<Shipped>,
    pub drift: Vec<Drift>,
}

/// The hosts x packages matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// Rule by rule, hosts in rule order.
    pub cells: Vec<Cell>,
    /// Rules left out because they have no `version_cmd`.
    pub without_version_cmd: Vec<String>,
}

impl StatusReport {
    /// The matrix's axes in first-seen order: packages as (rule, package label) across,
    /// hosts down.
    pub fn axes(&self) -> (Vec<(&str, &str)>, Vec<&str>) {
        let mut packages: Vec<(&str, &str)> = Vec::new();
        let mut hosts: Vec<&str> = Vec::new();
        for c in &self.cells {
            if !packages.iter().any(|(r, _)| *r == c.rule) {
                packages.push((&c.rule, &c.package));
            }
            if !hosts.contains(&c.host.as_str()) {
                hosts.push(&c.host);
            }
        }
        (packages, hosts)
    }

    /// Every host's version was read.
    pub fn all_read(&self) -> bool {
        self.cells.iter().all(|c| c.installed.version().is_some())
    }

    pub fn has_drift(&self) -> bool {
        self.cells.iter().any(|c| !c.drift.is_empty())
    }
}

/// The version a bundle carries for `rule`: its `version` capture, else its stem.
pub fn bundle_version(rule: &Rule, bundle: &str) -> String {
    rule.regex
        .captures(bundle)
        .and_then(|c| c.name("version").map(|m| m.as_str().to_owned()))
        .unwrap_or_else(|| crate::plan::stem(bundle).to_owned())
}

/// Compares dotted numeric versions (`1.10.2` > `1.9`), ignoring a leading `v`; `None` when
/// either is not one.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    let parts = |s: &str| -> Option<Vec<u64>> {
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        s.split('.').map(|p| p.parse::<u64>().ok()).collect()
    };
    let (mut x, mut y) = (parts(a)?, parts(b)?);
    let n = x.len().max(y.len());
    x.resize(n, 0);
    y.resize(n, 0);
    Some(x.cmp(&y))
}

/// Whether `installed` is what `shipped` (a capture or a stem) names: equal, or the stem
/// ends with `-VERSION`/`_VERSION` (`app-1.4.2` names `1.4.2`).
pub fn same(installed: &str, shipped: &str) -> bool {
    installed == shipped
        || shipped
            .strip_suffix(installed)
            .is_some_and(|head| head.ends_with(['-', '_']))
}

/// Marks each cell's drift against what was shipped and against the rule's other hosts.
pub fn mark_drift(cells: &mut [Cell]) {
    for c in cells.iter_mut() {
        c.drift.clear();
        let (Some(v), Some(s)) = (c.installed.version(), &c.shipped) else {
            continue;
        };
        if !same(v, &s.version) {
            let shipped_version = s.version.rsplit(['-', '_']).next().unwrap_or(&s.version);
            c.drift.push(match compare(v, shipped_version) {
                Some(Ordering::Less) => Drift::Behind,
                Some(Ordering::Greater) => Drift::Ahead,
                _ => Drift::Differs,
            });
        }
    }
    let rules: Vec<String> = {
        let mut r: Vec<String> = cells.iter().map(|c| c.rule.clone()).collect();
        r.dedup();
        r
    };
    for rule in rules {
        let mut versions: Vec<&str> = cells
            .iter()
            .filter(|c| c.rule == rule)
            .filter_map(|c| c.installed.version())
            .collect();
        versions.sort_unstable();
        versions.dedup();
        if versions.len() > 1 {
            for c in cells
                .iter_mut()
                .filter(|c| c.rule == rule && c.installed.version().is_some())
            {
                c.drift.push(Drift::Mixed);
            }
        }
    }
}

/// Connects to the target's shell (SSH for scp/sftp and the commands of ftp rules, this
/// machine for `local`) and reads its version. Modifies nothing (see
/// [`super::probe`] on host keys).
pub fn read_installed(t: &ProbeTarget, known_hosts: &KnownHostsFiles) -> Installed {
    let Some(cmd) = &t.version_cmd else {
        return Installed::Unreadable {
            error: "the rule has no `version_cmd`".into(),
        };
    };
    let timeout = t.rule.timeout;
    let result = if t.rule.protocol == Protocol::Local {
        read_version(&mut local::Local::new(&t.target.host.name), cmd, timeout)
    } else {
        match connect_ssh(t, t.ssh_port(), known_hosts).0 {
            Ok(mut s) => read_version(&mut s, cmd, timeout),
            // `Ssh` from a connect is the handshake itself failing (a reset, no banner).
            Err(
                e @ (TransportError::Connect { .. }
                | TransportError::Timeout { .. }
                | TransportError::Ssh { .. }),
            ) => {
                return Installed::Unreachable {
                    error: first_line(&e.to_string()),
                };
            }
            Err(e) => Err(first_line(&e.to_string())),
        }
    };
    match result {
        Ok(version) => Installed::Version { version },
        Err(error) => Installed::Unreadable { error },
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_owned()
}

/// Reads every target's version (those of rules with a `version_cmd`; the others are listed
/// in [`StatusReport::without_version_cmd`]), at most `parallel` at once and
/// [`PER_HOST`](super::pool::PER_HOST) per address, and marks drift
/// against `shipped` (from [`crate::journal::Journal::last_shipped_per_rule`]). `on_done`
/// hears of each cell as it is read, before drift is known. Blocking.
pub fn status(
    targets: &[ProbeTarget],
    shipped: &[RuleShipped],
    known_hosts: &KnownHostsFiles,
    parallel: usize,
    on_done: &(dyn Fn(usize, &Installed) + Sync),
) -> StatusReport {
    let mut without = Vec::new();
    for t in targets.iter().filter(|t| t.version_cmd.is_none()) {
        if !without.contains(&t.rule.name) {
            without.push(t.rule.name.clone());
        }
    }
    let with: Vec<&ProbeTarget> = targets.iter().filter(|t| t.version_cmd.is_some()).collect();
    let installed = for_each_bounded_per_key(
        &with,
        parallel,
        PER_HOST,
        |t| t.target.address.to_ascii_lowercase(),
        |t| read_installed(t, known_hosts),
        on_done,
    );
    let labels = package_labels(&with);
    let mut cells: Vec<Cell> = with
        .iter()
        .zip(installed)
        .map(|(t, installed)| {
            let shipped = shipped
                .iter()
                .find(|s| s.rule == t.rule.name && s.host == t.target.host.name)
                .map(|s| Shipped {
                    dispatch: s.dispatch,
                    bundle: s.bundle.clone(),
                    version: bundle_version(&t.rule, &s.bundle),
                    finished_at: s.finished_at,
                });
            Cell {
                rule: t.rule.name.clone(),
                package: labels
                    .iter()
                    .find(|(r, _)| *r == t.rule.name)
                    .map_or_else(|| t.rule.name.clone(), |(_, l)| l.clone()),
                host: t.label(),
                installed,
                shipped,
                drift: Vec::new(),
            }
        })
        .collect();
    mark_drift(&mut cells);
    StatusReport {
        cells,
        without_version_cmd: without,
    }
}

/// Each rule's package label; where two rules share one, both use their regex instead.
fn package_labels(targets: &[&ProbeTarget]) -> Vec<(String, String)> {
    let mut rules: Vec<&Rule> = Vec::new();
    for t in targets {
        if !rules.iter().any(|r| r.name == t.rule.name) {
            rules.push(&t.rule);
        }
    }
    let labels: Vec<String> = rules.iter().map(|r| package_label(r)).collect();
    rules
        .iter()
        .zip(&labels)
        .map(|(r, l)| {
            let unique = labels.iter().filter(|o| *o == l).count() == 1;
            (
                r.name.clone(),
                if unique { l.clone() } else { r.name.clone() },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(rule: &str, host: &str, v: Option<&str>, shipped: Option<&str>) -> Cell {
        Cell {
            rule: rule.into(),
            package: rule.into(),
            host: host.into(),
            installed: match v {
                Some(v) => Installed::Version { version: v.into() },
                None => Installed::Unreachable { error: "x".into() },
            },
            shipped: shipped.map(|s| Shipped {
                dispatch: 1,
                bundle: format!("{s}.tgz"),
                version: s.into(),
                finished_at: None,
            }),
            drift: Vec::new(),
        }
    }

    #[test]
    fn compares_dotted_numbers() {
        assert_eq!(compare("1.10.0", "1.9.9"), Some(Ordering::Greater));
        assert_eq!(compare("v2", "2.0.0"), Some(Ordering::Equal));
        assert_eq!(compare("1.2-rc1", "1.2"), None);
    }

    #[test]
    fn drift_behind_and_mixed() {
        let mut cells = vec![
            cell("a", "h1", Some("1.4.2"), Some("1.4.2")),
            cell("a", "h2", Some("1.4.1"), Some("1.4.2")),
            cell("a", "h3", None, Some("1.4.2")),
            cell("b", "h1", Some("2.0"), Some("app-2.0")),
            cell("b", "h2", Some("2.1"), Some("app-2.0")),
            cell("c", "h1", Some("x"), None),
        ];
        mark_drift(&mut cells);
        let d: Vec<Vec<Drift>> = cells.iter().map(|c| c.drift.clone()).collect();
        assert_eq!(
            d,
            [
                vec![Drift::Mixed],
                vec![Drift::Behind, Drift::Mixed],
                vec![],
                vec![Drift::Mixed],
                vec![Drift::Ahead, Drift::Mixed],
                vec![],
            ]
        );
    }
}
