//! What `--converge` would do: per rule, the version the journal says was last shipped
//! successfully (the newest dispatch of the rule that succeeded on a host, rollbacks left
//! out), and per host whether it runs that version (`version_cmd`) or must get that bundle
//! again. Reading only; the re-dispatch itself is an ordinary dispatch of the bundle kept in
//! the local store ([`crate::engine::store`]), started by the session.
//!
//! A host whose version cannot be read but that answered (no version file yet, a failing
//! `version_cmd`) is shipped to: that is what a host that missed the release looks like. A
//! host that does not answer is left out and reported: shipping to it would only fail.

use super::pool::{PER_HOST, connect_ssh, for_each_bounded_per_key};
use super::target::{ProbeTarget, package_label};
use super::version::{Installed, bundle_version, read_installed, read_version, same};
use crate::journal::{Journal, JournalError};
use crate::transport::known_hosts::KnownHostsFiles;
use serde::Serialize;

/// The version a rule's hosts should run: the bundle of its last good dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Goal {
    /// The journal id of that dispatch.
    pub dispatch: i64,
    pub bundle: String,
    pub sha256: String,
    /// The bundle's `version` capture, else its stem.
    pub version: String,
}

/// What converge does with one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Runs the goal's version: nothing to do.
    UpToDate,
    /// Runs another version, or none that could be read: gets the goal's bundle.
    Ship,
    /// Did not answer: left out.
    Unreachable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostState {
    /// The host's name as dispatches name it.
    pub host: String,
    /// `host` or `host:port` as the rule writes it.
    pub label: String,
    pub installed: Installed,
    pub action: Action,
}

/// One rule's converge plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulePlan {
    pub rule: String,
    pub package: String,
    pub goal: Goal,
    pub hosts: Vec<HostState>,
}

impl RulePlan {
    /// The hosts that get the goal's bundle, in the rule's order.
    pub fn to_ship(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| h.action == Action::Ship)
            .map(|h| h.host.clone())
            .collect()
    }

    pub fn unreachable(&self) -> usize {
        self.hosts
            .iter()
            .filter(|h| h.action == Action::Unreachable)
            .count()
    }
}

/// The goal of `rule`: `None` when no dispatch of it succeeded on any host yet.
pub fn goal(journal: &Journal, rule: &crate::config::Rule) -> Result<Option<Goal>, JournalError> {
    let Some(good) = journal.last_good(&rule.name, &[])? else {
        return Ok(None);
    };
    let Some(detail) = journal.dispatch(good.dispatch)? else {
        return Ok(None);
    };
    Ok(Some(Goal {
        dispatch: good.dispatch,
        version: bundle_version(rule, &good.bundle),
        bundle: good.bundle,
        sha256: detail.record.bundle_sha256,
    }))
}

/// What a host running `installed` needs to reach `goal`.
pub fn action(installed: &Installed, goal: &Goal) -> Action {
    match installed {
        Installed::Version { version } if same(version, &goal.version) => Action::UpToDate,
        Installed::Version { .. } | Installed::Unreadable { .. } => Action::Ship,
        Installed::Unreachable { .. } => Action::Unreachable,
    }
}

/// Reads the version of every one of `targets` (one rule's, with a `version_cmd`), at most
/// `parallel` at once, and judges each against `goal`. Blocking.
pub fn plan(targets: &[ProbeTarget], goal: Goal, known_hosts: &KnownHostsFiles) -> RulePlan {
    let parallel = targets.first().map_or(1, |t| t.rule.parallel);
    let installed = for_each_bounded_per_key(
        targets,
        parallel,
        PER_HOST,
        |t| t.target.address.to_ascii_lowercase(),
        |t| read_for_converge(t, known_hosts),
        &|_, _| {},
    );
    let hosts = targets
        .iter()
        .zip(installed)
        .map(|(t, installed)| HostState {
            host: t.target.host.name.clone(),
            label: t.label(),
            action: action(&installed, &goal),
            installed,
        })
        .collect();
    RulePlan {
        rule: targets
            .first()
            .map(|t| t.rule.name.clone())
            .unwrap_or_default(),
        package: targets
            .first()
            .map(|t| package_label(&t.rule))
            .unwrap_or_default(),
        goal,
        hosts,
    }
}

/// [`read_installed`], except that any failure to get a session (refused, timed out, a
/// handshake or login that fails) counts as unreachable: only a host that let us in and
/// then could not say its version is one that missed a release and gets the bundle.
fn read_for_converge(t: &ProbeTarget, known_hosts: &KnownHostsFiles) -> Installed {
    let Some(cmd) = &t.version_cmd else {
        return read_installed(t, known_hosts);
    };
    if t.rule.protocol == crate::config::Protocol::Local {
        return read_installed(t, known_hosts);
    }
    match connect_ssh(t, t.ssh_port(), known_hosts).0 {
        Ok(mut s) => match read_version(&mut s, cmd, t.rule.timeout) {
            Ok(version) => Installed::Version { version },
            Err(error) => Installed::Unreadable { error },
        },
        Err(e) => Installed::Unreachable {
            error: e.to_string().lines().next().unwrap_or("").to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_each_host_against_the_goal() {
        let goal = Goal {
            dispatch: 3,
            bundle: "app-1.2.tgz".into(),
            sha256: "00".into(),
            version: "1.2".into(),
        };
        let v = |s: &str| Installed::Version { version: s.into() };
        assert_eq!(action(&v("1.2"), &goal), Action::UpToDate);
        assert_eq!(action(&v("1.1"), &goal), Action::Ship);
        assert_eq!(action(&v("1.3"), &goal), Action::Ship);
        assert_eq!(
            action(
                &Installed::Unreadable {
                    error: "no file".into()
                },
                &goal
            ),
            Action::Ship
        );
        assert_eq!(
            action(
                &Installed::Unreachable {
                    error: "refused".into()
                },
                &goal
            ),
            Action::Unreachable
        );
        let stem = Goal {
            version: "app-1.2".into(),
            ..goal
        };
        assert_eq!(action(&v("1.2"), &stem), Action::UpToDate);
    }
}
