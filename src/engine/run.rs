//! Ad-hoc runs (`--run TARGETS -- COMMAND`) and a rule's named actions (`--action NAME
//! TARGETS`): one command on many hosts, on the dispatch machinery.
//!
//! A run is a rollout of [`Kind::Run`](super::rollout::Kind): the rule's `parallel`, its
//! `step_timeout` (the command is killed on the host, with its process group), cancel →
//! grace → hard stop, the same events, journal rows and live output as a dispatch. It
//! uploads nothing and takes the remote lock only when asked. No canary and no
//! `max_fail`: a question asked of every host gets every host's answer.
//!
//! TARGETS name rules (a section name, a package name, or a bundle name, as `--probe` takes
//! them) or hosts; a host is run through the first rule that lists it (its login, port and
//! jump hosts), for an action the first that lists it and defines the action.
//!
//! Placeholders: a command is rendered like the rule's own commands, with the plan of the
//! last dispatch of that rule that succeeded on those hosts (the journal's last good:
//! `{bundle}`, `{version}` and the other captures, `{timestamp}`, `{dir}`, `{path}`,
//! `{current}`, `{release}`); with none yet, only `{host}`, `{rule}` and what needs no bundle
//! (`{dir}` when `dest_dir` has no bundle placeholder, then `{current}` too) have values,
//! and using another is an error that says so. Values are shell-quoted. An ad-hoc command
//! runs where the rule's commands run (the login's home directory); an action runs in the
//! package's directory, `{current}` with `layout = releases`, else `{dir}`, so `action.restart
//! = ./control restart` works as written.

use crate::config::rules::Layout;
use crate::config::template::{RenderError, Template, Vars};
use crate::config::{Config, Netrc, Rule, SshHosts};
use crate::journal::{LastGood, NewDispatch, RunKind, RunRecord};
use crate::plan::{self, Plan, PlanError, Stamp, Target};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "`{target}` is neither a rule nor a host of one (rules: {}; hosts: {})\n  help: name a rule by its section name, its package name or a bundle name it matches, or a host as the config writes it",
        list(.rules), list(.hosts)
    )]
    NoMatch {
        target: String,
        rules: Vec<String>,
        hosts: Vec<String>,
    },
    #[error(
        "no targets given\n  help: name rules or hosts, e.g. `--run app -- uptime` or `--run web1,web2 -- uptime`"
    )]
    NoTargets,
    #[error(
        "no command given\n  help: put the command after `--`, e.g. `dropship --run app -- uname -r`"
    )]
    NoCommand,
    #[error(
        "rule [{rule}] has no action `{name}` (its actions: {})\n  help: add `action.{name} = COMMAND` to the rule, or pick one of its actions",
        list(.known)
    )]
    UnknownAction {
        name: String,
        rule: String,
        known: Vec<String>,
    },
    #[error(
        "host `{host}` is in no rule that defines action `{name}`\n  help: add `action.{name} = COMMAND` to a rule that lists `{host}`"
    )]
    NoActionForHost { name: String, host: String },
    #[error(
        "action `{name}` is marked destructive (`action.{name}.confirm = yes` in rule [{rule}]) and would run on {hosts} host(s)\n  help: pass --yes to run it"
    )]
    NotConfirmed {
        name: String,
        rule: String,
        hosts: usize,
    },
    #[error("rule [{rule}], host {host}: {why}")]
    Render {
        rule: String,
        host: String,
        why: String,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

impl RunError {
    /// Nothing matched: exit 3, as for a bundle no rule matches.
    pub fn is_no_match(&self) -> bool {
        matches!(self, RunError::NoMatch { .. })
    }
}

/// What runs: an ad-hoc command or an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// The command as typed, a template (`{host}` and friends).
    Command(String),
    /// An action's name.
    Action(String),
}

/// The hosts of one rule a run works on, in the rule's order.
#[derive(Debug, Clone)]
pub struct Selection<'c> {
    pub rule: &'c Rule,
    pub hosts: Vec<String>,
}

/// Splits the TARGETS arguments: each may hold several, comma-separated.
pub fn split_targets(args: &[String]) -> Vec<String> {
    args.iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `host` (`name` or `name:port`, as the config writes it) is one of `rule`'s.
fn has_host(rule: &Rule, host: &str) -> bool {
    rule.hosts
        .iter()
        .any(|h| h.name == host || h.to_string() == host)
}

/// The rules and hosts `targets` name (see the module doc), one selection per rule in
/// config order. For an action, only rules that define it.
pub fn select<'c>(
    config: &'c Config,
    targets: &[String],
    what: &What,
) -> Result<Vec<Selection<'c>>, RunError> {
    let targets = split_targets(targets);
    if targets.is_empty() {
        return Err(RunError::NoTargets);
    }
    let action = match what {
        What::Action(a) => Some(a.as_str()),
        What::Command(_) => None,
    };
    // Per rule index: the hosts picked (by name as written).
    let mut picked: Vec<Vec<String>> = vec![Vec::new(); config.rules.len()];
    let index_of = |r: &Rule| {
        config
            .rules
            .iter()
            .position(|x| std::ptr::eq(x, r))
            .expect("a rule of this config")
    };
    for t in &targets {
        if let Ok((rule, _)) = super::rollback::resolve_rule(config, t) {
            if let Some(a) = action
                && rule.action(a).is_none()
            {
                return Err(RunError::UnknownAction {
                    name: a.to_owned(),
                    rule: rule.name.clone(),
                    known: rule.actions.iter().map(|x| x.name.clone()).collect(),
                });
            }
            let i = index_of(rule);
            for h in &rule.hosts {
                picked[i].push(h.name.clone());
            }
            continue;
        }
        let listing: Vec<&Rule> = config.rules.iter().filter(|r| has_host(r, t)).collect();
        let rule = match action {
            None => listing.first().copied(),
            Some(a) => {
                if listing.is_empty() {
                    None
                } else {
                    Some(
                        listing
                            .iter()
                            .copied()
                            .find(|r| r.action(a).is_some())
                            .ok_or_else(|| RunError::NoActionForHost {
                                name: a.to_owned(),
                                host: t.clone(),
                            })?,
                    )
                }
            }
        };
        let Some(rule) = rule else {
            let mut hosts: Vec<String> = config
                .rules
                .iter()
                .flat_map(|r| r.hosts.iter().map(|h| h.to_string()))
                .collect();
            hosts.sort();
            hosts.dedup();
            return Err(RunError::NoMatch {
                target: t.clone(),
                rules: config
                    .rules
                    .iter()
                    .map(|r| format!("[{}]", r.name))
                    .collect(),
                hosts,
            });
        };
        let host = rule
            .hosts
            .iter()
            .find(|h| h.name == *t || h.to_string() == *t)
            .expect("the rule lists it");
        picked[index_of(rule)].push(host.name.clone());
    }
    Ok(config
        .rules
        .iter()
        .zip(picked)
        .filter(|(_, p)| !p.is_empty())
        .map(|(rule, p)| Selection {
            rule,
            hosts: rule
                .hosts
                .iter()
                .map(|h| h.name.clone())
                .filter(|h| p.contains(h))
                .fold(Vec::new(), |mut acc, h| {
                    if !acc.contains(&h) {
                        acc.push(h);
                    }
                    acc
                }),
        })
        .collect())
}

/// The destructive action among `selections` that `--yes` has not confirmed.
pub fn unconfirmed(selections: &[Selection], what: &What, yes: bool) -> Result<(), RunError> {
    let What::Action(name) = what else {
        return Ok(());
    };
    if yes {
        return Ok(());
    }
    let hosts: usize = selections.iter().map(|s| s.hosts.len()).sum();
    match selections
        .iter()
        .find(|s| s.rule.action(name).is_some_and(|a| a.confirm))
    {
        Some(s) => Err(RunError::NotConfirmed {
            name: name.clone(),
            rule: s.rule.name.clone(),
            hosts,
        }),
        None => Ok(()),
    }
}

/// A run of one rule ready for the rollout: the plan (its targets carry the rendered
/// command in [`Target::run`]), the hosts, and the journal record.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub plan: Plan,
    /// Hosts to run on: `None` for all of the rule's.
    pub only: Option<Vec<String>>,
    pub record: NewDispatch,
    pub run: RunRecord,
    /// The dispatch whose placeholders the command got, if any.
    pub from: Option<LastGood>,
}

/// Where plans come from: the config and what resolves its hosts.
pub struct Sources<'a> {
    pub config: &'a Config,
    pub netrc: &'a Netrc,
    pub ssh: &'a SshHosts,
}

/// Plans the run of `what` on `sel`. `last` is the journal's last good dispatch of the rule
/// on those hosts (see [`crate::journal::Journal::last_good`]).
pub fn plan(
    src: &Sources,
    sel: &Selection,
    what: &What,
    last: Option<LastGood>,
    stamp: Stamp,
    lock: bool,
) -> Result<RunPlan, RunError> {
    let Sources { config, netrc, ssh } = *src;
    let rule = sel.rule;
    let (source, action) = match what {
        What::Command(c) => (c.clone(), None),
        What::Action(name) => {
            let a = rule.action(name).ok_or_else(|| RunError::UnknownAction {
                name: name.clone(),
                rule: rule.name.clone(),
                known: rule.actions.iter().map(|x| x.name.clone()).collect(),
            })?;
            (a.command.source().to_owned(), Some(a.name.clone()))
        }
    };
    if source.trim().is_empty() {
        return Err(RunError::NoCommand);
    }
    let template = Template::parse(&source);
    // The last good dispatch's plan, if its bundle still matches this rule.
    let from_last = match &last {
        Some(good) => {
            let stamp = Stamp::parse(&good.stamp).unwrap_or_else(|| stamp.clone());
            Plan::build(config, netrc, ssh, &good.bundle, stamp)
                .ok()
                .filter(|p| p.rule.name == rule.name)
        }
        None => None,
    };
    let from = from_last.as_ref().and(last);
    let mut plan = match from_last {
        Some(p) => p,
        None => bundle_free_plan(rule, netrc, ssh, stamp),
    };
    let with_bundle = from.is_some();
    let mut targets = std::mem::take(&mut plan.targets);
    for target in &mut targets {
        if !sel.hosts.contains(&target.host.name) {
            continue;
        }
        let vars = if with_bundle {
            plan.command_vars(target)
        } else {
            bundle_free_vars(rule, target)
        };
        let fail = |why: String| RunError::Render {
            rule: rule.name.clone(),
            host: target.host.name.clone(),
            why,
        };
        let rendered = template.render_shell(&vars).map_err(|e| match e {
            RenderError::Missing(p) if !with_bundle => fail(format!(
                "placeholder `{{{p}}}` has no value: no dispatch of this rule has succeeded on these hosts yet, so only {} are known\n  help: ship a bundle of the rule first, or leave `{{{p}}}` out",
                known(&vars)
            )),
            RenderError::Missing(p) => fail(format!(
                "placeholder `{{{p}}}` has no value (known: {})\n  help: write `{{{{` for a literal brace",
                known(&vars)
            )),
            other => fail(other.to_string()),
        })?;
        if lock && target.lock_path.is_empty() {
            return Err(fail(
                "--lock: the lock's path needs a bundle (`lock_path` or `dest_dir` has a bundle placeholder) and no dispatch of this rule has succeeded on these hosts yet\n  help: run without --lock, or ship a bundle of the rule first".into(),
            ));
        }
        target.run = Some(match &action {
            None => rendered,
            Some(name) => {
                let dir = package_dir(rule, target).ok_or_else(|| {
                    fail(format!(
                        "action `{name}` runs in the package directory, which is not known: `dest_dir` needs a bundle and no dispatch of this rule has succeeded on these hosts yet\n  help: ship a bundle of the rule first"
                    ))
                })?;
                format!(
                    "cd -- {} || exit 1; {rendered}",
                    crate::config::shell::quote(&dir)
                )
            }
        });
    }
    plan.targets = targets;
    let all: Vec<String> = rule.hosts.iter().map(|h| h.name.clone()).collect();
    let only = (sel.hosts != all).then(|| sel.hosts.clone());
    let record = NewDispatch {
        bundle: match action {
            None => crate::model::RUN_BUNDLE.to_owned(),
            Some(_) => crate::model::ACTION_BUNDLE.to_owned(),
        },
        bundle_path: Default::default(),
        bundle_sha256: String::new(),
        bundle_size: 0,
        rule: rule.name.clone(),
        config_path: std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone()),
        timestamp: plan.stamp.timestamp.clone(),
        hosts: NewDispatch::hosts_of(&plan, only.as_deref()),
        started_at: crate::model::events::now_ms(),
    };
    let run = RunRecord {
        kind: if action.is_some() {
            RunKind::Action
        } else {
            RunKind::Run
        },
        command: source,
        action,
    };
    Ok(RunPlan {
        plan,
        only,
        record,
        run,
        from,
    })
}

fn known(vars: &Vars) -> String {
    vars.keys()
        .map(|k| format!("{{{k}}}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The directory an action runs in: `current` with `layout = releases`, else `dest_dir`.
fn package_dir(rule: &Rule, target: &Target) -> Option<String> {
    if target.dest_dir.is_empty() {
        return None;
    }
    Some(match rule.layout {
        Layout::Releases => crate::plan::layout::Tree::new(&target.dest_dir).current(),
        Layout::Plain => target.dest_dir.clone(),
    })
}

/// A plan of `rule` with no bundle: every host's endpoint, and its `dest_dir` when that
/// needs no bundle (else empty).
fn bundle_free_plan(rule: &Rule, netrc: &Netrc, ssh: &SshHosts, stamp: Stamp) -> Plan {
    let queries: Vec<_> = rule
        .hosts
        .iter()
        .filter_map(|h| plan::ssh_query(rule, h, netrc))
        .collect();
    ssh.prefetch(&queries);
    let targets = rule
        .hosts
        .iter()
        .map(|host| {
            let mut vars = Vars::new();
            vars.insert("host".into(), host.name.clone());
            vars.insert("rule".into(), rule.name.clone());
            let dest_dir = rule
                .dest_dir
                .render_plain(&vars)
                .ok()
                .and_then(|d| plan::normalize_dest(&d, rule.protocol).ok())
                .unwrap_or_default();
            let lock_path = match &rule.lock_path {
                Some(t) => t
                    .render_plain(&vars)
                    .ok()
                    .and_then(|p| plan::normalize_dest(&p, rule.protocol).ok())
                    .unwrap_or_default(),
                None if !dest_dir.is_empty() => {
                    plan::default_lock_path(rule, &host.name, &dest_dir)
                }
                None => String::new(),
            };
            Target {
                dest_dir,
                lock_path,
                ..Target::endpoint(rule, host, netrc, ssh)
            }
        })
        .collect();
    Plan {
        bundle: String::new(),
        rule: rule.clone(),
        captures: Default::default(),
        stamp,
        targets,
    }
}

/// What a command of `rule` has without a bundle: `{host}`, `{rule}`, and `{dir}` (with
/// `{current}` for `layout = releases`) when `dest_dir` needs no bundle.
fn bundle_free_vars(rule: &Rule, target: &Target) -> Vars {
    let mut vars = Vars::new();
    vars.insert("host".into(), target.host.name.clone());
    vars.insert("rule".into(), rule.name.clone());
    if !target.dest_dir.is_empty() {
        vars.insert("dir".into(), target.dest_dir.clone());
        if rule.layout == Layout::Releases {
            vars.insert(
                "current".into(),
                crate::plan::layout::Tree::new(&target.dest_dir).current(),
            );
        }
    }
    vars
}

/// The lines `--plan`/`--check` show for a rule's actions: `NAME = COMMAND [confirm]`.
pub fn describe_actions(rule: &Rule) -> Vec<String> {
    rule.actions
        .iter()
        .map(|a| {
            format!(
                "{} = {}{}",
                a.name,
                a.command.source(),
                if a.confirm {
                    "  (confirm: needs --yes)"
                } else {
                    ""
                }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    const CFG: &str = "[DEFAULT]\nprotocol = sftp\n\
        [app-(?P<version>[0-9.]+)\\.tgz]\nhost = web1, web2:2222, web3\ndest_dir = /srv/app\n\
        action.restart = ./control restart\naction.stop = ./control stop\naction.stop.confirm = yes\n\
        [db-.*\\.tgz]\nhost = web1, db1\ndest_dir = /srv/db/{bundle}\n";

    fn config(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, std::path::Path::new("/x/dispatch.cfg"))
    }

    fn picked(c: &Config, targets: &[&str], what: &What) -> Vec<(String, Vec<String>)> {
        let t: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
        select(c, &t, what)
            .unwrap()
            .into_iter()
            .map(|s| (s.rule.name.clone(), s.hosts))
            .collect()
    }

    fn cmd() -> What {
        What::Command("true".into())
    }

    #[test]
    fn targets_are_rules_packages_bundles_and_hosts() {
        let c = config(CFG).unwrap();
        let app = "app-(?P<version>[0-9.]+)\\.tgz".to_owned();
        let db = "db-.*\\.tgz".to_owned();
        let all_app = vec!["web1".to_owned(), "web2".into(), "web3".into()];
        assert_eq!(
            picked(&c, &["app"], &cmd()),
            [(app.clone(), all_app.clone())]
        );
        assert_eq!(
            picked(&c, &["app-1.0.tgz"], &cmd()),
            [(app.clone(), all_app)]
        );
        // A host goes through the first rule listing it; `name:port` as written works too;
        // order is the rule's, duplicates once.
        assert_eq!(
            picked(&c, &["web3,web2:2222", "web3"], &cmd()),
            [(app.clone(), vec!["web2".to_owned(), "web3".into()])]
        );
        assert_eq!(
            picked(&c, &["db1", "web1"], &cmd()),
            [
                (app.clone(), vec!["web1".to_owned()]),
                (db.clone(), vec!["db1".to_owned()])
            ]
        );
        // For an action, a host goes through the first rule that has the action.
        assert_eq!(
            picked(&c, &["web1"], &What::Action("restart".into())),
            [(app, vec!["web1".to_owned()])]
        );
        let err = select(&c, &["db1".into()], &What::Action("restart".into())).unwrap_err();
        assert!(matches!(err, RunError::NoActionForHost { .. }), "{err}");
        let err = select(&c, &["nope".into()], &cmd()).unwrap_err();
        assert!(err.is_no_match(), "{err}");
        assert!(err.to_string().contains("web2:2222"), "{err}");
        assert!(matches!(
            select(&c, &[" , ".into()], &cmd()).unwrap_err(),
            RunError::NoTargets
        ));
        let err = select(&c, &["db".into()], &What::Action("restart".into())).unwrap_err();
        assert!(
            err.to_string()
                .contains("has no action `restart` (its actions: none)"),
            "{err}"
        );
    }

    #[test]
    fn destructive_actions_need_yes() {
        let c = config(CFG).unwrap();
        let stop = What::Action("stop".into());
        let sel = select(&c, &["app".into()], &stop).unwrap();
        let err = unconfirmed(&sel, &stop, false).unwrap_err();
        assert!(err.to_string().contains("pass --yes"), "{err}");
        assert!(err.to_string().contains("on 3 host(s)"), "{err}");
        assert!(unconfirmed(&sel, &stop, true).is_ok());
        let restart = What::Action("restart".into());
        let sel = select(&c, &["app".into()], &restart).unwrap();
        assert!(unconfirmed(&sel, &restart, false).is_ok());
    }

    #[test]
    fn bad_action_keys_are_config_errors() {
        for (text, want) in [
            ("action.re/start = x\n", "unknown key `action.re/start`"),
            ("action.stop.confirm = yes\n", "but no `action.stop`"),
            (
                "action.stop = x\naction.stop.confirm = maybe\n",
                "bad `action.stop.confirm`",
            ),
            (
                "action.x = echo {nope}\n",
                "unknown placeholder `{nope}` in `action.x`",
            ),
        ] {
            let cfg = format!("[a\\.tgz]\nhost = h\n{text}");
            let err = config(&cfg).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn commands_render_with_what_is_known() {
        let c = config(CFG).unwrap();
        let src = Sources {
            config: &c,
            netrc: &Netrc::empty(),
            ssh: &SshHosts::default(),
        };
        let stamp = Stamp::parse("20260101_000000").unwrap();
        let what = What::Command("echo {host} {rule}".into());
        let sel = select(&c, &["web2:2222".into()], &what).unwrap();
        let p = plan(&src, &sel[0], &what, None, stamp.clone(), false).unwrap();
        assert_eq!(p.only.as_deref(), Some(&["web2".to_owned()][..]));
        let t = p
            .plan
            .targets
            .iter()
            .find(|t| t.host.name == "web2")
            .unwrap();
        assert_eq!(
            t.run.as_deref(),
            Some("echo web2 \"app-(?P<version>[0-9.]+)\\\\.tgz\"")
        );
        assert_eq!(p.record.bundle, crate::model::RUN_BUNDLE);
        assert_eq!(p.record.hosts, ["web2"]);
        // No dispatch yet: {version} has no value, and says why.
        let what = What::Command("echo {version}".into());
        let err = plan(&src, &sel[0], &what, None, stamp.clone(), false).unwrap_err();
        assert!(
            err.to_string()
                .contains("no dispatch of this rule has succeeded"),
            "{err}"
        );
        // With the last good dispatch: captures, {dir}; an action runs in the package dir.
        let good = LastGood {
            dispatch: 7,
            bundle: "app-1.4.tgz".into(),
            stamp: "20250101_000000".into(),
        };
        let restart = What::Action("restart".into());
        let sel = select(&c, &["app".into()], &restart).unwrap();
        let p = plan(
            &src,
            &sel[0],
            &restart,
            Some(good.clone()),
            stamp.clone(),
            false,
        )
        .unwrap();
        assert_eq!(
            p.plan.targets[0].run.as_deref(),
            Some("cd -- /srv/app || exit 1; ./control restart")
        );
        assert_eq!(p.run.kind, RunKind::Action);
        assert_eq!(p.run.action.as_deref(), Some("restart"));
        let what = What::Command("echo {version} {dir} {timestamp}".into());
        let p = plan(&src, &sel[0], &what, Some(good), stamp, false).unwrap();
        assert_eq!(
            p.plan.targets[0].run.as_deref(),
            Some("echo 1.4 /srv/app 20250101_000000")
        );
        assert!(p.only.is_none());
    }
}
