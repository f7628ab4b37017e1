//! Actions on dispatches: plan and confirm a bundle, cancel, retry, palette commands.

use super::{App, Confirm, Effect, Overlay, first_line};
use crate::plan::{Plan, Stamp};
use crate::ui::tui::palette::{self, Command};
use crate::ui::tui::theme::Theme;
use std::path::PathBuf;
use std::sync::Arc;
use tui_input::Input;

impl App {
    pub(super) fn open_path_entry(&mut self) {
        let start = self
            .env
            .packages_dir
            .as_ref()
            .map(|d| format!("{}/", d.display().to_string().trim_end_matches('/')))
            .unwrap_or_default();
        self.overlay = Some(Overlay::PathEntry {
            input: Input::new(start),
            candidates: Vec::new(),
            error: None,
        });
    }

    /// Builds the plan for a bundle path and opens the confirmation dialog, or says why not.
    pub(super) fn ask_dispatch(&mut self, path: &str, only: Option<Vec<String>>) {
        // A file in the watched folder is the watcher's to ship: shipping it from here too
        // could ship it twice.
        let file = PathBuf::from(palette::expand_home(path.trim()));
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty())
            && self.is_watched(parent)
        {
            return self.error(format!(
                "{}: this folder is watched, the watcher ships it by itself (a pauses it)",
                file.display()
            ));
        }
        match self.plan_for(path) {
            Ok((plan, file)) => {
                self.overlay = Some(Overlay::Confirm {
                    what: Confirm::Dispatch { plan, file, only },
                    ok: false,
                })
            }
            Err(e) => self.error(e),
        }
    }

    pub fn plan_for(&self, path: &str) -> Result<(Arc<Plan>, PathBuf), String> {
        let expanded = palette::expand_home(path.trim());
        let file = PathBuf::from(&expanded);
        match std::fs::metadata(&file) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(format!("{expanded}: not a regular file")),
            Err(e) => return Err(format!("{expanded}: {e}")),
        }
        let name = crate::plan::bundle_name(&expanded).map_err(|e| e.to_string())?;
        let stamp = self.env.stamp.clone().unwrap_or_else(Stamp::now);
        let plan = Plan::build(
            &self.env.config,
            &self.env.netrc,
            &self.env.ssh,
            &name,
            stamp,
        )
        .map_err(|e| first_line(&e.to_string()))?;
        Ok((Arc::new(plan), file))
    }

    pub(super) fn ask_cancel(&mut self) {
        match self.selected_dispatch() {
            Some(d) if d.is_running() && d.foreign => {
                let msg = format!(
                    "#{} runs in another process ({}): cancel it there (Ctrl-C or c in its console)",
                    d.id,
                    d.by.as_deref().unwrap_or("-")
                );
                self.error(msg)
            }
            Some(d) if d.is_running() && self.watch_owns(d.id) => {
                let msg = format!(
                    "#{} belongs to the watched folder and cannot be cancelled alone: a pauses new dispatches; quitting suspends it (it resumes at the next start)",
                    d.id
                );
                self.error(msg)
            }
            Some(d) if d.is_running() && !d.cancelling => {
                self.overlay = Some(Overlay::Confirm {
                    what: Confirm::Cancel {
                        id: d.id,
                        bundle: d.bundle.clone(),
                    },
                    ok: false,
                })
            }
            Some(d) if d.is_running() => {
                self.overlay = Some(Overlay::Confirm {
                    what: Confirm::StopNow {
                        id: d.id,
                        bundle: d.bundle.clone(),
                    },
                    ok: false,
                })
            }
            Some(d) => {
                let msg = format!("dispatch #{} is not running", d.id);
                self.error(msg)
            }
            None => self.error("no dispatch selected"),
        }
    }

    pub(super) fn ask_retry(&mut self) {
        let Some(d) = self.selected_dispatch() else {
            return self.error("no dispatch selected");
        };
        if d.is_running() {
            return self.error(format!("dispatch #{} is still running", d.id));
        }
        if d.bundle == crate::engine::rollout::ROLLBACK_BUNDLE {
            return self.error(format!(
                "#{} is a rollback, which ships no file to retry: roll back again with b on the host",
                d.id
            ));
        }
        let hosts = d.retryable();
        if hosts.is_empty() {
            return self.error(format!("dispatch #{} has no failed host", d.id));
        }
        let path = match (&d.plan, &self.env.journal) {
            (Some((_, file)), _) => Some(file.clone()),
            (None, Some(j)) => j
                .dispatch(d.id)
                .ok()
                .flatten()
                .map(|x| x.record.bundle_path),
            _ => None,
        };
        match path {
            Some(p) => self.ask_dispatch(&p.display().to_string(), Some(hosts)),
            None => self.error("the bundle file of this dispatch is unknown"),
        }
    }

    pub(super) fn confirmed(&mut self, what: Confirm) -> Vec<Effect> {
        match what {
            Confirm::Dispatch { plan, file, only } => {
                let token = self.next_token;
                self.next_token += 1;
                self.pending
                    .insert(token, (plan.clone(), file.clone(), plan.bundle.clone()));
                self.info(format!("starting {} ...", plan.bundle));
                vec![Effect::Start {
                    token,
                    plan,
                    file,
                    only,
                }]
            }
            Confirm::Cancel { id, .. } => {
                if let Some(d) = self.dispatches.iter_mut().find(|d| d.id == id) {
                    d.cancelling = true;
                }
                self.info(format!(
                    "cancelling #{id}: no new step starts; running steps stop after {}s",
                    crate::session::GRACE.as_secs()
                ));
                vec![Effect::Cancel(id)]
            }
            Confirm::StopNow { id, .. } => {
                self.info(format!(
                    "stopping #{id} now: running commands are killed; the journal records them as cancelled"
                ));
                vec![Effect::StopNow(id)]
            }
            Confirm::Rollback(ask) => self.rollback_confirmed(ask),
            Confirm::Converge(ask) => self.converge_confirmed(ask),
            Confirm::Action { plans, .. } => vec![Effect::Run {
                plans,
                action: true,
            }],
            Confirm::Quit { .. } => self.quit_cancelling(),
        }
    }

    /// Quits: every running dispatch started here is cancelled like `c` does (no new step
    /// starts, running steps get the grace period); the runner keeps the console up until
    /// they ended (`q` again: at once). SIGTERM and SIGHUP quit the same way.
    pub fn quit_cancelling(&mut self) -> Vec<Effect> {
        self.quit = true;
        let ids: Vec<i64> = self
            .dispatches
            .iter()
            .filter(|d| d.is_running() && !d.foreign && !self.watch_owns(d.id))
            .map(|d| d.id)
            .collect();
        for d in self.dispatches.iter_mut().filter(|d| ids.contains(&d.id)) {
            d.cancelling = true;
        }
        let mut out: Vec<Effect> = ids.iter().map(|id| Effect::Cancel(*id)).collect();
        self.quit_cancelled = ids;
        out.push(Effect::Quit);
        out
    }

    /// `:reload`: reads dispatch.cfg and the .netrc again, then the journal and packages.
    /// A file that does not load is reported (what, where) and the one in use is kept: the
    /// session, its running dispatches and what the screen shows go on either way.
    pub(super) fn reload_files(&mut self) {
        let mut problems = Vec::new();
        let path = self.env.config.path.clone();
        match crate::config::Config::load(&path) {
            Ok(c) => self.env.config = Arc::new(c),
            Err(e) => problems.push(format!(
                "{}: {} (still using the config loaded before)",
                path.display(),
                first_line(&e.to_string())
            )),
        }
        let netrc = self.env.netrc.path.clone();
        if !netrc.as_os_str().is_empty() {
            match crate::config::Netrc::load(&netrc) {
                Ok(n) => self.env.netrc = Arc::new(n),
                Err(e) => problems.push(format!(
                    "{} (still using the one loaded before)",
                    first_line(&e.to_string())
                )),
            }
        }
        self.probe_targets = Arc::new(crate::fleet::target::for_config(
            &self.env.config,
            &self.env.netrc,
            &self.env.ssh,
        ));
        self.reload();
        if !problems.is_empty() {
            return self.error(format!("reload: {}", problems.join("; ")));
        }
        let warnings = self.env.config.warnings.len();
        let mut msg = format!(
            "reloaded {} ({} rules, {} hosts{}): {} dispatches, {} packages",
            path.display(),
            self.env.config.rules.len(),
            self.hosts.len(),
            if warnings > 0 {
                format!(", {warnings} warning(s): dropship --check")
            } else {
                String::new()
            },
            self.dispatches.len(),
            self.package_count()
        );
        if self.watch.is_some() {
            msg.push_str(" · the watcher keeps the config it started with");
        }
        self.info(msg);
    }

    pub(super) fn run_command(&mut self, c: Command) -> Vec<Effect> {
        match c {
            Command::Dispatch(path) => self.ask_dispatch(&path, None),
            Command::Cancel => self.ask_cancel(),
            Command::Retry => self.ask_retry(),
            Command::History => {
                let rows = match &self.env.journal {
                    Some(j) => j.history(200).unwrap_or_else(|e| {
                        self.error(format!("journal: {e}"));
                        Vec::new()
                    }),
                    None => Vec::new(),
                };
                self.overlay = Some(Overlay::History { rows, selected: 0 });
            }
            Command::Theme(name) => match Theme::load(&name) {
                Ok(t) => {
                    self.theme = t;
                    self.info(format!("theme {name}"));
                    return vec![Effect::RememberTheme(name)];
                }
                Err(e) => self.error(e.to_string()),
            },
            Command::Reload => self.reload_files(),
            Command::Mouse => return self.toggle_mouse(),
            Command::Help => {
                self.overlay = Some(Overlay::Help {
                    scroll: 0,
                    topic: None,
                })
            }
            Command::Probe(rule) => return self.probe_rule(rule.as_deref()),
            Command::Status => return self.open_versions(),
            Command::Converge(rule) => return self.start_converge(rule.as_deref()),
            Command::Reach => return self.start_reach(),
            Command::Rollback { rule, host } => return self.ask_rollback(&rule, host.as_deref()),
            Command::Run(line) => return self.start_adhoc(&line, false),
            Command::Action(line) => return self.start_adhoc(&line, true),
            Command::Pause => return self.pause_watch(true),
            Command::Resume => return self.pause_watch(false),
            Command::Quit => return self.request_quit(),
        }
        Vec::new()
    }
}
