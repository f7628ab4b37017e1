//! Converge from the console (`c` on the Versions view, `:converge [RULE]`): the plan is
//! computed off the UI thread (it logs in to every host to read its version), shown in a
//! confirmation whose default is Cancel, and on yes each rule's last good bundle is shipped
//! from the store to exactly the hosts that differ, as ordinary dispatches of the session
//! (they show in Dispatches with live logs). Same judging code as `--converge`.

use super::{App, Confirm, Effect, Focus, Overlay, first_line};
use crate::fleet::converge::RulePlan;
use crate::fleet::target::{ProbeTarget, find_rule};
use crate::plan::{Plan, Stamp};
use crate::ui::tui::engine::ConvergeItem;
use std::path::PathBuf;
use std::sync::Arc;

/// One rule of a converge plan.
#[derive(Debug, Clone)]
pub struct ConvergeRule {
    pub plan: RulePlan,
    /// The goal bundle in the store.
    pub file: PathBuf,
    /// The dispatch plan of the goal bundle, when some host gets it.
    pub dispatch: Option<Arc<Plan>>,
}

/// A converge plan waiting for the user's yes.
#[derive(Debug, Clone)]
pub struct ConvergeAsk {
    /// `every rule`, `rule app`.
    pub what: String,
    pub rules: Vec<ConvergeRule>,
}

impl ConvergeAsk {
    /// Hosts that get a bundle, over all rules.
    pub fn shipping(&self) -> usize {
        self.rules.iter().map(|r| r.plan.to_ship().len()).sum()
    }
}

impl App {
    /// `c` on the Versions view (every rule), `:converge [RULE]`: asks the bridge for the
    /// plan; the dialog opens when it arrives ([`App::on_converge_plan`]).
    pub(super) fn start_converge(&mut self, rule: Option<&str>) -> Vec<Effect> {
        if let Some((_, what)) = &self.converging {
            self.info(format!("converge plan of {what} is being read already…"));
            return Vec::new();
        }
        let (what, targets, named): (String, Vec<ProbeTarget>, bool) = match rule {
            None => ("every rule".into(), self.probe_targets.to_vec(), false),
            Some(name) => match find_rule(&self.env.config, name) {
                Some(r) => (
                    format!("rule {name}"),
                    self.probe_targets
                        .iter()
                        .filter(|t| t.rule.name == r.name)
                        .cloned()
                        .collect(),
                    true,
                ),
                None => {
                    self.error(self.no_such_rule(name));
                    return Vec::new();
                }
            },
        };
        if !targets.iter().any(|t| t.version_cmd.is_some()) && !named {
            self.error(
                "converge: no rule has a `version_cmd`, so installed versions cannot be read (add e.g. `version_cmd = cat ~/app/.version`)",
            );
            return Vec::new();
        }
        let token = self.next_token;
        self.next_token += 1;
        self.info(format!(
            "converge: reading the versions of {what} (the plan opens when done)…"
        ));
        self.converging = Some((token, what));
        vec![Effect::ConvergePlan {
            token,
            targets,
            named,
        }]
    }

    /// The plan arrived: nothing to do is said in the status bar; an error (a bundle
    /// missing from the store) is shown and nothing starts; else the confirmation opens,
    /// Cancel focused.
    pub fn on_converge_plan(
        &mut self,
        token: u64,
        result: Result<Vec<ConvergeItem>, String>,
    ) -> bool {
        let Some((_, what)) = self.converging.take_if(|(t, _)| *t == token) else {
            return false;
        };
        let items = match result {
            Ok(items) => items,
            Err(e) => {
                self.error(format!("converge: {}", first_line(&e)));
                return true;
            }
        };
        let stamp = self.env.stamp.clone().unwrap_or_else(Stamp::now);
        let mut rules = Vec::new();
        for ConvergeItem { plan, file } in items {
            let dispatch = if plan.to_ship().is_empty() {
                None
            } else {
                let built = Plan::build(
                    &self.env.config,
                    &self.env.netrc,
                    &self.env.ssh,
                    &plan.goal.bundle,
                    stamp.clone(),
                );
                match built {
                    Ok(p) if p.rule.name == plan.rule => Some(Arc::new(p)),
                    Ok(p) => {
                        self.error(format!(
                            "converge: [{}]'s last good bundle {} now matches rule [{}]: the config changed; nothing started",
                            plan.rule, plan.goal.bundle, p.rule.name
                        ));
                        return true;
                    }
                    Err(e) => {
                        self.error(format!(
                            "converge: [{}]: {}; nothing started",
                            plan.rule,
                            first_line(&e.to_string())
                        ));
                        return true;
                    }
                }
            };
            rules.push(ConvergeRule {
                plan,
                file,
                dispatch,
            });
        }
        let ask = ConvergeAsk { what, rules };
        if ask.shipping() == 0 {
            let hosts: usize = ask.rules.iter().map(|r| r.plan.hosts.len()).sum();
            let down: usize = ask.rules.iter().map(|r| r.plan.unreachable()).sum();
            let mut msg = if ask.rules.is_empty() {
                format!(
                    "nothing to converge in {}: no rule with a `version_cmd` has a dispatch that succeeded",
                    ask.what
                )
            } else {
                let goals: Vec<String> = ask
                    .rules
                    .iter()
                    .map(|r| format!("[{}] {}", r.plan.package, r.plan.goal.version))
                    .collect();
                format!(
                    "nothing to converge: {} host(s) run their last good version ({})",
                    hosts - down,
                    goals.join(", ")
                )
            };
            if down > 0 {
                msg.push_str(&format!("; {down} host(s) did not answer"));
                self.error(msg);
            } else {
                self.info(msg);
            }
            return true;
        }
        if matches!(
            self.overlay,
            Some(Overlay::Confirm { .. } | Overlay::Palette { .. } | Overlay::PathEntry { .. })
        ) {
            // Never replace another question or what is being typed.
            self.error(format!(
                "converge plan of {} is ready, but another dialog is open: :converge again when done",
                ask.what
            ));
            return true;
        }
        self.info(format!(
            "converge plan of {}: {} host(s) would get a bundle (Cancel is the default)",
            ask.what,
            ask.shipping()
        ));
        self.dialog_scroll = 0;
        self.overlay = Some(Overlay::Confirm {
            what: Confirm::Converge(ask),
            ok: false,
        });
        true
    }

    /// Yes: one dispatch per rule with hosts to ship to, each to exactly those hosts.
    pub(super) fn converge_confirmed(&mut self, ask: ConvergeAsk) -> Vec<Effect> {
        let mut out = Vec::new();
        let mut said = Vec::new();
        for r in ask.rules {
            let Some(plan) = r.dispatch else { continue };
            let only = r.plan.to_ship();
            let token = self.next_token;
            self.next_token += 1;
            self.pending
                .insert(token, (plan.clone(), r.file.clone(), plan.bundle.clone()));
            said.push(format!("{} to {}", plan.bundle, only.join(", ")));
            out.push(Effect::Start {
                token,
                plan,
                file: r.file,
                only: Some(only),
            });
        }
        self.info(format!("converging: {} ...", said.join("; ")));
        self.focus = Focus::Targets;
        out
    }
}
