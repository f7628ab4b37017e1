//! `:run TARGETS COMMAND` and `:action NAME TARGETS` in the console: planned here (the
//! same selection, placeholders and checks as `--run`/`--action`, see
//! [`crate::engine::run`]), started by the bridge, shown in Dispatches with live logs like
//! a dispatch (a run's `DispatchStarted` makes its row) and cancelled the same way.
//!
//! A destructive action (`action.NAME.confirm = yes`) is not run from the palette: the
//! console has no confirmation for it yet, so it says to use `--action NAME TARGETS --yes`.

use super::{App, Effect, Focus, Overlay};
use crate::engine::run::{self as adhoc, RunPlan, Sources, What};
use crate::plan::Stamp;
use tui_input::Input;

impl App {
    /// `!` on Hosts or Packages: the palette, with `run TARGET ` typed for the selected
    /// host (or the selected package's rule), waiting for the command.
    pub(super) fn open_run_palette(&mut self) {
        let target = match self.focus {
            Focus::Hosts => self
                .visible(0)
                .get(self.selected[0])
                .map(|&i| self.hosts[i].name.clone()),
            _ => self
                .visible(1)
                .get(self.selected[1])
                .and_then(|&i| self.packages[i].rule.clone()),
        };
        let Some(target) = target else {
            self.error("nothing selected to run on (a package no rule matches has no hosts)");
            return;
        };
        self.overlay = Some(Overlay::Palette {
            input: Input::new(format!("run {target} ")),
            candidates: Vec::new(),
            error: None,
        });
    }

    /// `line` is `TARGETS COMMAND` (`action`: `NAME TARGETS`).
    pub(super) fn start_adhoc(&mut self, line: &str, action: bool) -> Vec<Effect> {
        match self.plan_adhoc(line, action) {
            Ok(plans) => {
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

    fn plan_adhoc(&self, line: &str, action: bool) -> Result<Vec<RunPlan>, String> {
        let (first, rest) = line
            .trim()
            .split_once(char::is_whitespace)
            .map(|(a, b)| (a, b.trim()))
            .unwrap_or((line.trim(), ""));
        let (what, targets) = if action {
            if rest.is_empty() {
                return Err(":action needs a NAME and TARGETS (rules or hosts)".into());
            }
            (What::Action(first.to_owned()), rest)
        } else {
            if rest.is_empty() {
                return Err(
                    ":run needs TARGETS (rules or hosts, comma-separated) and a COMMAND".into(),
                );
            }
            (What::Command(rest.to_owned()), first)
        };
        let config = &self.env.config;
        let targets: Vec<String> = targets.split_whitespace().map(str::to_owned).collect();
        let selections = adhoc::select(config, &targets, &what).map_err(|e| e.to_string())?;
        if adhoc::unconfirmed(&selections, &what, false).is_err() {
            return Err(format!(
                "this action is destructive (confirm = yes): run it headless with --yes: dropship --action {line} --yes"
            ));
        }
        let src = Sources {
            config,
            netrc: &self.env.netrc,
            ssh: &self.env.ssh,
        };
        let stamp = self.env.stamp.clone().unwrap_or_else(Stamp::now);
        selections
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
            .collect()
    }
}
