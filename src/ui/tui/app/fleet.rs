//! The fleet actions of the console: reachability of the Hosts screen, the preflight probe
//! (`p`, `:probe`), the Versions view (`v`, `:status`) and rollback (`b`, `:rollback`).
//! All host I/O is an [`Effect`] the runner hands to the engine bridge; answers come back
//! through the `on_*` methods here.

use super::{App, Confirm, Effect, Focus, Overlay, Topic, first_line};
use crate::config::rules::Layout;
use crate::engine::events::Millis;
use crate::engine::rollback;
use crate::engine::rollout::ROLLBACK_BUNDLE;
use crate::fleet::probe::{CheckKind, HostProbe, Reachability, Status};
use crate::fleet::target::{ProbeTarget, find_rule, package_label};
use crate::fleet::version::StatusReport;
use crate::plan::{Plan, Stamp};
use crate::ui::tui::palette::Words;
use crossterm::event::{KeyCode, KeyEvent};
use std::path::PathBuf;
use std::sync::Arc;

/// One probe run: the hosts asked, in order, and their results as they come in.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    pub token: u64,
    /// What was probed: `web1`, `rule app`, `every host`.
    pub what: String,
    /// In target order.
    pub rows: Vec<ProbeRow>,
    pub done: bool,
}

/// One host of one rule in a probe run.
#[derive(Debug, Clone)]
pub struct ProbeRow {
    pub host: String,
    pub rule: String,
    /// The rule's package label, for the screen.
    pub package: String,
    pub result: Option<HostProbe>,
}

impl ProbeRun {
    pub fn finished(&self) -> usize {
        self.rows.iter().filter(|r| r.result.is_some()).count()
    }
}

/// The Versions view's data: the last matrix read, and whether a refresh runs.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    pub report: Option<StatusReport>,
    pub loading: bool,
    pub error: Option<String>,
    /// When the shown matrix was read.
    pub at: Option<Millis>,
}

/// Where `current` stands on one host, for the rollback dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// Being read from the host.
    Reading,
    /// `current` and the release before it (`None`: none).
    Known {
        current: Option<String>,
        previous: Option<String>,
    },
    /// Could not be read: why.
    Unknown(String),
}

/// A rollback waiting for the user's yes: everything the dialog says and the run needs.
#[derive(Debug, Clone)]
pub struct RollbackAsk {
    pub token: u64,
    /// Planned with the last dispatch of the rule that succeeded on these hosts, for its
    /// commands' placeholders (`{release}`: see [`crate::engine::rollback`]).
    pub plan: Arc<Plan>,
    /// `None`: every host of the rule.
    pub only: Option<Vec<String>>,
    pub hosts: Vec<String>,
    /// For `layout = releases`: per host, what `current` goes back from and to.
    pub preview: Vec<(String, Preview)>,
}

impl RollbackAsk {
    pub fn releases(&self) -> bool {
        self.plan.rule.layout == Layout::Releases
    }
}

impl App {
    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// What the palette completes `:probe`, `:rollback` and `:theme` from.
    pub fn words(&self) -> Words {
        Words {
            themes: self.theme_names.clone(),
            rules: self
                .env
                .config
                .rules
                .iter()
                .map(|r| {
                    (
                        self.rule_word(r),
                        r.hosts.iter().map(|h| h.name.clone()).collect(),
                    )
                })
                .collect(),
        }
    }

    /// The shortest name that finds `rule` again: its package label when no other rule has
    /// it, else its section name.
    pub fn rule_word(&self, rule: &crate::config::Rule) -> String {
        let label = package_label(rule);
        let shared = self
            .env
            .config
            .rules
            .iter()
            .filter(|r| package_label(r) == label)
            .count();
        if shared == 1 && !label.contains(char::is_whitespace) {
            label
        } else {
            rule.name.clone()
        }
    }

    // ----- reachability --------------------------------------------------------------------

    /// Checks every host's reachability (on start, `P`, `:reach`): rows show "probing…"
    /// until their answers come.
    pub fn start_reach(&mut self) -> Vec<Effect> {
        if self.probe_targets.is_empty() {
            return Vec::new();
        }
        for h in &mut self.hosts {
            h.reach.clear();
            h.reaching = true;
        }
        vec![Effect::Reach(self.probe_targets.clone())]
    }

    /// What the console does when it starts: the reachability check.
    pub fn startup(&mut self) -> Vec<Effect> {
        self.start_reach()
    }

    /// One target's reachability; `host` is the host name of the Hosts screen.
    pub fn on_reach(&mut self, host: &str, r: &Reachability) -> bool {
        let Some(row) = self.hosts.iter_mut().find(|h| h.name == host) else {
            return false;
        };
        row.reach.retain(|(rule, _)| *rule != r.rule);
        row.reach.push((r.rule.clone(), r.reach.clone()));
        true
    }

    pub fn on_reach_done(&mut self) -> bool {
        for h in &mut self.hosts {
            h.reaching = false;
        }
        true
    }

    // ----- probe ----------------------------------------------------------------------------

    fn start_probe(&mut self, what: String, targets: Vec<ProbeTarget>) -> Vec<Effect> {
        if targets.is_empty() {
            self.error(format!("{what}: no host to probe"));
            return Vec::new();
        }
        let token = self.token();
        self.probe_run = Some(ProbeRun {
            token,
            what,
            rows: targets
                .iter()
                .map(|t| ProbeRow {
                    host: t.target.host.name.clone(),
                    rule: t.rule.name.clone(),
                    package: package_label(&t.rule),
                    result: None,
                })
                .collect(),
            done: false,
        });
        self.overlay = Some(Overlay::Probe { scroll: 0 });
        vec![Effect::Probe { token, targets }]
    }

    /// `p` on the Hosts screen: the full preflight of the selected host, in every rule
    /// naming it.
    pub(super) fn probe_selected_host(&mut self) -> Vec<Effect> {
        let Some(&hi) = self.visible(0).get(self.selected[0]) else {
            self.error("no host selected");
            return Vec::new();
        };
        let host = self.hosts[hi].name.clone();
        let targets: Vec<ProbeTarget> = self
            .probe_targets
            .iter()
            .filter(|t| t.target.host.name == host)
            .cloned()
            .collect();
        self.start_probe(host, targets)
    }

    /// `:probe [RULE]`.
    pub(super) fn probe_rule(&mut self, rule: Option<&str>) -> Vec<Effect> {
        let (what, targets) = match rule {
            None => ("every host".to_owned(), self.probe_targets.to_vec()),
            Some(name) => match find_rule(&self.env.config, name) {
                Some(r) => (
                    format!("rule {name}"),
                    self.probe_targets
                        .iter()
                        .filter(|t| t.rule.name == r.name)
                        .cloned()
                        .collect(),
                ),
                None => {
                    self.error(self.no_such_rule(name));
                    return Vec::new();
                }
            },
        };
        self.start_probe(what, targets)
    }

    pub(super) fn no_such_rule(&self, name: &str) -> String {
        let words: Vec<String> = self
            .env
            .config
            .rules
            .iter()
            .map(|r| self.rule_word(r))
            .collect();
        format!(
            "no rule `{name}` (rules: {}; Tab completes)",
            words.join(", ")
        )
    }

    /// One host's preflight result: into the probe dialog (if it is still this run) and
    /// into the Hosts row (reachability, lock, installed version).
    pub fn on_probed(&mut self, token: u64, host: &str, p: HostProbe) -> bool {
        if let Some(row) = self.hosts.iter_mut().find(|h| h.name == host) {
            if let Some(c) = p.check(CheckKind::Reachable) {
                let reach = match c.status {
                    Status::Pass | Status::Warn => Some(crate::fleet::probe::Reach::Up {
                        greeting: String::new(),
                        millis: 0,
                    }),
                    Status::Fail => Some(crate::fleet::probe::Reach::Down {
                        error: c.detail.clone(),
                    }),
                    Status::Skip => None,
                };
                // Keep the latency of the cheap check when the host is still up.
                let keep = row.reach.iter().any(|(r, x)| {
                    *r == p.rule && matches!(x, crate::fleet::probe::Reach::Up { .. })
                });
                if let Some(reach) = reach
                    && !(keep && matches!(reach, crate::fleet::probe::Reach::Up { .. }))
                {
                    row.reach.retain(|(r, _)| *r != p.rule);
                    row.reach.push((p.rule.clone(), reach));
                }
            }
            if p.check(CheckKind::Lock)
                .is_some_and(|c| c.status != Status::Skip)
            {
                row.lock = Some(p.lock.clone());
            }
            row.set_installed(&p.rule, p.version.as_deref());
        }
        let Some(run) = self.probe_run.as_mut().filter(|r| r.token == token) else {
            return true;
        };
        if let Some(slot) = run
            .rows
            .iter_mut()
            .find(|r| r.host == host && r.rule == p.rule && r.result.is_none())
        {
            slot.result = Some(p);
        }
        true
    }

    pub fn on_probe_done(&mut self, token: u64) -> bool {
        let Some(run) = self.probe_run.as_mut().filter(|r| r.token == token) else {
            return false;
        };
        run.done = true;
        let failed = run
            .rows
            .iter()
            .filter(|r| r.result.as_ref().is_some_and(|p| !p.passed()))
            .count();
        let msg = format!(
            "probe of {}: {} host(s), {} ok, {failed} failed",
            run.what,
            run.rows.len(),
            run.rows.len() - failed
        );
        if failed > 0 {
            self.error(msg);
        } else {
            self.info(msg);
        }
        true
    }

    pub(super) fn on_probe_key(&mut self, k: KeyEvent, scroll: usize) -> Vec<Effect> {
        match k.code {
            KeyCode::Esc | KeyCode::Char('q') | KeyCode::Enter => {}
            KeyCode::Char('j') | KeyCode::Down => {
                self.overlay = Some(Overlay::Probe { scroll: scroll + 1 })
            }
            KeyCode::Char('k') | KeyCode::Up => {
                self.overlay = Some(Overlay::Probe {
                    scroll: scroll.saturating_sub(1),
                })
            }
            KeyCode::PageDown | KeyCode::Char(' ') => {
                self.overlay = Some(Overlay::Probe {
                    scroll: scroll + self.page() as usize,
                })
            }
            KeyCode::PageUp => {
                self.overlay = Some(Overlay::Probe {
                    scroll: scroll.saturating_sub(self.page() as usize),
                })
            }
            KeyCode::Char('g') | KeyCode::Home => self.overlay = Some(Overlay::Probe { scroll: 0 }),
            KeyCode::Char('?') => {
                self.overlay = Some(Overlay::Help {
                    scroll: 0,
                    topic: Some(Topic::Probe),
                })
            }
            KeyCode::Char('p') => {
                // Again, the same hosts.
                let Some(run) = self.probe_run.clone() else {
                    return Vec::new();
                };
                let targets: Vec<ProbeTarget> = self
                    .probe_targets
                    .iter()
                    .filter(|t| {
                        run.rows
                            .iter()
                            .any(|r| r.host == t.target.host.name && r.rule == t.rule.name)
                    })
                    .cloned()
                    .collect();
                return self.start_probe(run.what, targets);
            }
            _ => self.overlay = Some(Overlay::Probe { scroll }),
        }
        Vec::new()
    }

    // ----- versions -------------------------------------------------------------------------

    /// `v` / `:status`: opens the Versions view, reading the versions the first time.
    pub(super) fn open_versions(&mut self) -> Vec<Effect> {
        self.overlay = Some(Overlay::Versions { scroll: 0 });
        if self.versions.report.is_none() && !self.versions.loading {
            return self.refresh_versions();
        }
        Vec::new()
    }

    pub(super) fn refresh_versions(&mut self) -> Vec<Effect> {
        if self.versions.loading {
            return Vec::new();
        }
        if !self.probe_targets.iter().any(|t| t.version_cmd.is_some()) {
            self.versions.error = Some(
                "no rule has a `version_cmd`: add one (e.g. `version_cmd = cat ~/app/.version`) to see installed versions"
                    .into(),
            );
            return Vec::new();
        }
        self.versions.loading = true;
        self.versions.error = None;
        vec![Effect::Status(self.probe_targets.to_vec())]
    }

    /// The matrix arrived: show it, and fill the Hosts rows' installed versions.
    pub fn on_status(&mut self, result: Result<StatusReport, String>) -> bool {
        self.versions.loading = false;
        match result {
            Ok(report) => {
                for c in &report.cells {
                    let name = self
                        .probe_targets
                        .iter()
                        .find(|t| t.rule.name == c.rule && t.label() == c.host)
                        .map(|t| t.target.host.name.clone());
                    if let Some(row) =
                        name.and_then(|n| self.hosts.iter_mut().find(|h| h.name == n))
                    {
                        row.set_installed(&c.rule, c.installed.version());
                    }
                }
                let drift = report.cells.iter().filter(|c| !c.drift.is_empty()).count();
                if drift > 0 {
                    self.error(format!("versions: {drift} cell(s) drifted (v shows them)"));
                } else {
                    self.info("versions read: no drift");
                }
                self.versions.report = Some(report);
                self.versions.at = Some(self.now);
                self.versions.error = None;
            }
            Err(e) => self.versions.error = Some(e),
        }
        true
    }

    pub(super) fn on_versions_key(&mut self, k: KeyEvent, scroll: usize) -> Vec<Effect> {
        match k.code {
            KeyCode::Esc | KeyCode::Char('q' | 'v') => {}
            KeyCode::Char('r') => {
                self.overlay = Some(Overlay::Versions { scroll });
                return self.refresh_versions();
            }
            KeyCode::Char('c') => {
                // The view stays open while the plan is read; the dialog replaces it.
                self.overlay = Some(Overlay::Versions { scroll });
                return self.start_converge(None);
            }
            KeyCode::Char('j') | KeyCode::Down => {
                self.overlay = Some(Overlay::Versions { scroll: scroll + 1 })
            }
            KeyCode::Char('k') | KeyCode::Up => {
                self.overlay = Some(Overlay::Versions {
                    scroll: scroll.saturating_sub(1),
                })
            }
            KeyCode::PageDown | KeyCode::Char(' ') => {
                self.overlay = Some(Overlay::Versions {
                    scroll: scroll + self.page() as usize,
                })
            }
            KeyCode::PageUp => {
                self.overlay = Some(Overlay::Versions {
                    scroll: scroll.saturating_sub(self.page() as usize),
                })
            }
            KeyCode::Char('g') | KeyCode::Home => {
                self.overlay = Some(Overlay::Versions { scroll: 0 })
            }
            KeyCode::Char('?') => {
                self.overlay = Some(Overlay::Help {
                    scroll: 0,
                    topic: Some(Topic::Versions),
                })
            }
            _ => self.overlay = Some(Overlay::Versions { scroll }),
        }
        Vec::new()
    }

    // ----- rollback -------------------------------------------------------------------------

    /// `b`: on the Hosts screen, the selected host in the rule it was last dispatched with
    /// (or its only rule that can roll back); on Targets, the host in the dispatch's rule.
    pub(super) fn ask_rollback_selected(&mut self) -> Vec<Effect> {
        if self.focus == Focus::Targets {
            let Some(d) = self.selected_dispatch() else {
                self.error("no dispatch selected");
                return Vec::new();
            };
            let Some(t) = self.selected_target() else {
                self.error("no host selected");
                return Vec::new();
            };
            let (rule, host) = (d.rule.clone(), t.host.clone());
            return self.ask_rollback(&rule, Some(&host));
        }
        let Some(&hi) = self.visible(0).get(self.selected[0]) else {
            self.error("no host selected");
            return Vec::new();
        };
        let h = &self.hosts[hi];
        let host = h.name.clone();
        let able: Vec<&crate::config::Rule> = self
            .env
            .config
            .rules
            .iter()
            .filter(|r| h.rules.contains(&r.name))
            .filter(|r| r.layout == Layout::Releases || r.commands.rollback.is_some())
            .collect();
        let last = h.last.as_ref().map(|l| l.rule.clone());
        let rule = match (last, able.as_slice()) {
            (Some(l), _) if able.iter().any(|r| r.name == l) => l,
            (_, [one]) => one.name.clone(),
            (_, []) => {
                self.error(format!(
                    "{host}: none of its rules has a `rollback` command or `layout = releases`"
                ));
                return Vec::new();
            }
            (_, many) => {
                let names: Vec<String> = many.iter().map(|r| self.rule_word(r)).collect();
                self.error(format!(
                    "{host} is in several rules that can roll back ({}): :rollback RULE {host}",
                    names.join(", ")
                ));
                return Vec::new();
            }
        };
        self.ask_rollback(&rule, Some(&host))
    }

    /// `:rollback RULE [HOST]`: plans the rollback (commands rendered from the last bundle
    /// shipped with the rule) and opens its confirmation, default Cancel. For a releases
    /// rule it also asks the hosts where `current` stands, to say "from X to Y".
    pub(super) fn ask_rollback(&mut self, rule: &str, host: Option<&str>) -> Vec<Effect> {
        let Some(r) = find_rule(&self.env.config, rule) else {
            self.error(self.no_such_rule(rule));
            return Vec::new();
        };
        let name = r.name.clone();
        // A bundle name stays as given: its placeholders then come from that bundle.
        let arg = match rollback::resolve_rule(&self.env.config, rule) {
            Ok((found, Some(_))) if found.name == name => rule.to_owned(),
            _ => name.clone(),
        };
        let journal = self.env.journal.clone();
        let stamp = self.env.stamp.clone().unwrap_or_else(Stamp::now);
        let hosts: Vec<String> = host.map(|h| vec![h.to_owned()]).unwrap_or_default();
        // One indexed row, and no flush of buffered output: cheap enough for the UI thread.
        let planned = rollback::plan(
            &self.env.config,
            &self.env.netrc,
            &self.env.ssh,
            &arg,
            &hosts,
            |r, h| match &journal {
                Some(j) => rollback::last_good(j, r, h),
                None => Ok(None),
            },
            stamp,
        )
        .and_then(|plan| {
            let only = rollback::only(&plan, &hosts)?;
            Ok((plan, only))
        });
        let (plan, only) = match planned {
            Ok(x) => x,
            Err(rollback::RollbackError::NoBundle { .. }) => {
                self.error(format!(
                    "the journal has no dispatch of [{name}] that succeeded there, so its commands' placeholders have no values: :rollback BUNDLE_FILE_NAME{}",
                    host.map(|h| format!(" {h}")).unwrap_or_default()
                ));
                return Vec::new();
            }
            Err(e) => {
                self.error(first_line(&e.to_string()));
                return Vec::new();
            }
        };
        let plan = Arc::new(plan);
        let hosts: Vec<String> = plan
            .targets
            .iter()
            .map(|t| t.host.name.clone())
            .filter(|h| only.as_ref().is_none_or(|o| o.contains(h)))
            .collect();
        let token = self.token();
        let releases = plan.rule.layout == Layout::Releases;
        let ask = RollbackAsk {
            token,
            plan: plan.clone(),
            only,
            preview: if releases {
                hosts
                    .iter()
                    .map(|h| (h.clone(), Preview::Reading))
                    .collect()
            } else {
                Vec::new()
            },
            hosts: hosts.clone(),
        };
        self.overlay = Some(Overlay::Confirm {
            what: Confirm::Rollback(ask),
            ok: false,
        });
        if releases {
            vec![Effect::RollbackPreview { token, plan, hosts }]
        } else {
            Vec::new()
        }
    }

    /// Where `current` stands on a host, for the open rollback dialog `token`.
    pub fn on_rollback_preview(
        &mut self,
        token: u64,
        host: &str,
        result: Result<(Option<String>, Option<String>), String>,
    ) -> bool {
        let Some(Overlay::Confirm {
            what: Confirm::Rollback(ask),
            ..
        }) = self.overlay.as_mut()
        else {
            return false;
        };
        if ask.token != token {
            return false;
        }
        let Some(slot) = ask.preview.iter_mut().find(|(h, _)| h == host) else {
            return false;
        };
        slot.1 = match result {
            Ok((current, previous)) => Preview::Known { current, previous },
            Err(e) => Preview::Unknown(e),
        };
        true
    }

    pub(super) fn rollback_confirmed(&mut self, ask: RollbackAsk) -> Vec<Effect> {
        let token = ask.token;
        self.pending.insert(
            token,
            (ask.plan.clone(), PathBuf::new(), ROLLBACK_BUNDLE.to_owned()),
        );
        self.info(format!(
            "rolling back [{}] on {} ...",
            self.rule_word(&ask.plan.rule),
            ask.hosts.join(", ")
        ));
        self.focus = Focus::Targets;
        vec![Effect::StartRollback {
            token,
            plan: ask.plan,
            only: ask.only,
        }]
    }
}
