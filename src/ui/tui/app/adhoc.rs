//! `:run TARGETS COMMAND` and `:action NAME TARGETS` in the console: planned here (the
//! same selection, placeholders and checks as `--run`/`--action`, see
//! [`crate::engine::run`]), started by the bridge, shown in Dispatches with live logs like
//! a dispatch (a run's `DispatchStarted` makes its row) and cancelled the same way.
//!
//! A destructive action (`action.NAME.confirm = yes`) asks first, Cancel the default.

use super::{App, Confirm, Effect, Focus, Overlay};
use crate::engine::run::{self as adhoc, RunPlan, Sources, What};
use crate::plan::Stamp;
use tui_input::Input;

/// One entry of the actions menu: digit `n` (1-based position) runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    pub name: String,
    /// The rule's section name.
    pub rule: String,
    pub command: String,
    pub confirm: bool,
}

impl App {
    /// `A` on Hosts or Packages: the actions of the selected host's rules (or the selected
    /// package's rule), each on a digit; a digit runs it on that host (package: its rule's
    /// hosts) as `:action` does, a destructive one asking first.
    pub(super) fn open_actions_menu(&mut self) {
        let (target, rules): (Option<String>, Vec<String>) = match self.focus {
            Focus::Hosts => match self.visible(0).get(self.selected[0]) {
                Some(&i) => (
                    Some(self.hosts[i].name.clone()),
                    self.hosts[i].rules.clone(),
                ),
                None => (None, Vec::new()),
            },
            _ => match self
                .visible(1)
                .get(self.selected[1])
                .and_then(|&i| self.packages[i].rule.clone())
            {
                Some(r) => (Some(r.clone()), vec![r]),
                None => (None, Vec::new()),
            },
        };
        let Some(target) = target else {
            self.error("nothing selected (a package no rule matches has no actions)");
            return;
        };
        let mut items: Vec<MenuItem> = Vec::new();
        for rule in self
            .env
            .config
            .rules
            .iter()
            .filter(|r| rules.contains(&r.name))
        {
            for a in &rule.actions {
                // A host in two rules with the same action name: the first rule's, as
                // `:action` picks it.
                if items.iter().any(|i| i.name == a.name) {
                    continue;
                }
                items.push(MenuItem {
                    name: a.name.clone(),
                    rule: rule.name.clone(),
                    command: a.command.source().to_owned(),
                    confirm: a.confirm,
                });
            }
        }
        items.truncate(9);
        if items.is_empty() {
            self.error(format!(
                "{target}: no rule of it defines an action (action.NAME = COMMAND)"
            ));
            return;
        }
        self.overlay = Some(Overlay::Actions { target, items });
    }

    pub(super) fn on_actions_key(
        &mut self,
        k: crossterm::event::KeyEvent,
        target: String,
        items: Vec<MenuItem>,
    ) -> Vec<Effect> {
        use crossterm::event::KeyCode;
        match k.code {
            KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('A') => Vec::new(),
            KeyCode::Char(c @ '1'..='9') => {
                let n = c as usize - '1' as usize;
                match items.get(n) {
                    Some(item) => {
                        let line = format!("{} {target}", item.name);
                        self.start_adhoc(&line, true)
                    }
                    None => {
                        self.overlay = Some(Overlay::Actions { target, items });
                        Vec::new()
                    }
                }
            }
            _ => {
                self.overlay = Some(Overlay::Actions { target, items });
                Vec::new()
            }
        }
    }

    /// The last distinct commands of ad-hoc runs, newest first (shown under the palette
    /// that `!` opens): one read of the journal's history.
    fn recent_commands(&self) -> Vec<String> {
        let Some(j) = &self.env.journal else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        for row in j.history_rows(200).unwrap_or_default() {
            if let (crate::journal::RunKind::Run, Some(c)) = (row.kind, row.command)
                && !out.contains(&c)
            {
                out.push(c);
            }
            if out.len() == 8 {
                break;
            }
        }
        out
    }

    /// `!` on Hosts or Packages: the palette, with `run TARGET ` typed for the selected
    /// host (or the selected package's rule), waiting for the command.
    pub(super) fn open_run_palette(&mut self) {
        let Some(target) = self.selected_run_target() else {
            self.error("nothing selected to run on (a package no rule matches has no hosts)");
            return;
        };
        self.overlay = Some(Overlay::Palette {
            input: Input::new(format!("run {target} ")),
            candidates: self.recent_commands(),
            error: None,
        });
    }

    /// What `!` and `:run COMMAND` without TARGETS run on: the selected host (Hosts pane)
    /// or the selected package's rule (Packages pane; the last of the two focused).
    fn selected_run_target(&self) -> Option<String> {
        match self.focus {
            Focus::Hosts => self
                .visible(0)
                .get(self.selected[0])
                .map(|&i| self.hosts[i].name.clone()),
            _ => self
                .visible(1)
                .get(self.selected[1])
                .and_then(|&i| self.packages[i].rule.clone()),
        }
    }

    /// `line` is `TARGETS COMMAND` (`action`: `NAME TARGETS`).
    pub(super) fn start_adhoc(&mut self, line: &str, action: bool) -> Vec<Effect> {
        match self.plan_adhoc(line, action) {
            Ok((plans, Some(name))) => {
                self.overlay = Some(Overlay::Confirm {
                    what: Confirm::Action { name, plans },
                    ok: false,
                });
                Vec::new()
            }
            Ok((plans, None)) => {
                let hosts: usize = plans.iter().map(|p| p.record.hosts.len()).sum();
                self.info(format!(
                    "{} on {hosts} host(s): see Dispatches",
                    if action { "action" } else { "run" }
                ));
                vec![Effect::Run { plans, action }]
            }
            Err(e) => {
                self.error(e);
                Vec::new()
            }
        }
    }

    /// The plans, and the action's name when it must be confirmed first.
    fn plan_adhoc(
        &self,
        line: &str,
        action: bool,
    ) -> Result<(Vec<RunPlan>, Option<String>), String> {
        let (first, rest) = line
            .trim()
            .split_once(char::is_whitespace)
            .map(|(a, b)| (a, b.trim()))
            .unwrap_or((line.trim(), ""));
        let (what, targets) = if action {
            if rest.is_empty() {
                return Err(":action needs a NAME and TARGETS (rules or hosts)".into());
            }
            (What::Action(first.to_owned()), rest.to_owned())
        } else {
            // `:run COMMAND`: when the first word names no rule or host, the whole line is
            // the command, run on what is selected in Hosts or Packages.
            let names_targets = !rest.is_empty()
                && adhoc::select(
                    &self.env.config,
                    &[first.to_owned()],
                    &What::Command(rest.to_owned()),
                )
                .is_ok();
            if names_targets {
                (What::Command(rest.to_owned()), first.to_owned())
            } else {
                match self.selected_run_target() {
                    Some(t) if matches!(self.focus, Focus::Hosts | Focus::Packages) => {
                        (What::Command(line.trim().to_owned()), t)
                    }
                    _ => {
                        return Err(format!(
                            ":run needs TARGETS (rules or hosts, comma-separated) and a COMMAND; `{first}` is neither a rule nor a host, and no host (Hosts) or package (Packages) is selected to run it on"
                        ));
                    }
                }
            }
        };
        let config = &self.env.config;
        let targets: Vec<String> = targets.split_whitespace().map(str::to_owned).collect();
        let selections = adhoc::select(config, &targets, &what).map_err(|e| e.to_string())?;
        let confirm = match (&what, adhoc::unconfirmed(&selections, &what, false)) {
            (What::Action(name), Err(_)) => Some(name.clone()),
            _ => None,
        };
        let src = Sources {
            config,
            netrc: &self.env.netrc,
            ssh: &self.env.ssh,
        };
        let stamp = self.env.stamp.clone().unwrap_or_else(Stamp::now);
        let plans = selections
            .iter()
            .map(|sel| {
                // One indexed row, no flush of buffered output: cheap enough for the UI thread.
                let last = match &self.env.journal {
                    Some(j) => j
                        .last_good(&sel.rule.name, &sel.hosts)
                        .map_err(|e| e.to_string())?,
                    None => None,
                };
                adhoc::plan(&src, sel, &what, last, stamp.clone(), false).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok((plans, confirm))
    }
}

/// The confirmation of a destructive action: what runs where, as rendered for the hosts.
pub fn action_lines(app: &App, name: &str, plans: &[RunPlan]) -> Vec<ratatui::text::Line<'static>> {
    use ratatui::text::Line;
    let mut lines = vec![Line::raw(format!(
        "Action `{name}` is marked destructive (confirm = yes)."
    ))];
    for p in plans {
        lines.push(Line::raw(""));
        lines.push(Line::raw(format!(
            "[{}] on {}: {}",
            p.plan.rule.name,
            p.record.hosts.join(", "),
            p.run.command
        )));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "Shown in Dispatches; journaled as an action.",
        app.theme.dim,
    ));
    lines
}
