//! The console's state machine: keys and engine events in, state changes and [`Effect`]s
//! out. It draws nothing and starts nothing itself, so tests drive it without a terminal
//! and without an engine: feed it keys and events, look at the state or render it to a
//! `TestBackend`.
//!
//! Submodules: `actions` (dispatch, cancel, retry, palette commands) and `overlay` (keys
//! while a dialog or prompt is open).

mod actions;
mod overlay;

use super::keys;
use super::logview::LogView;
use super::model::{DispatchView, HostRow, PackageRow};
use super::ring::DEFAULT_CAPACITY;
use super::theme::Theme;
use crate::config::{Config, Netrc, SshHosts};
use crate::engine::events::{Event, Millis, TargetResult};
use crate::journal::{DispatchState, DispatchSummary, Journal, Shipped};
use crate::plan::{Plan, Stamp};
use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tui_input::Input;

/// Default of [`AppEnv::log_budget`]: 24 MiB of log text in memory.
pub const DEFAULT_LOG_BUDGET: usize = 24 << 20;

/// What the console needs from outside, fixed for its lifetime.
pub struct AppEnv {
    pub config: Arc<Config>,
    pub netrc: Arc<Netrc>,
    pub ssh: Arc<SshHosts>,
    /// `None` in tests that need no history.
    pub journal: Option<Arc<Journal>>,
    /// Directory listed in the Packages pane (`--packages`).
    pub packages_dir: Option<PathBuf>,
    /// Lines kept in memory per host.
    pub ring_capacity: usize,
    /// Bytes all hosts' logs may hold together; past it the biggest logs lose their oldest
    /// lines first (they stay in the journal). Per-host line limits alone would let 1,000
    /// chatty hosts take gigabytes.
    pub log_budget: usize,
    /// A pinned `{timestamp}` (`--timestamp`); else each plan takes the current time.
    pub stamp: Option<Stamp>,
}

impl AppEnv {
    pub fn new(config: Config) -> AppEnv {
        AppEnv {
            config: Arc::new(config),
            netrc: Arc::new(Netrc::empty()),
            ssh: Arc::new(SshHosts::default()),
            journal: None,
            packages_dir: None,
            ring_capacity: DEFAULT_CAPACITY,
            log_budget: DEFAULT_LOG_BUDGET,
            stamp: None,
        }
    }
}

/// The panes, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Focus {
    Hosts,
    Packages,
    Dispatches,
    Targets,
    Log,
}

impl Focus {
    pub const ALL: [Focus; 5] = [
        Focus::Hosts,
        Focus::Packages,
        Focus::Dispatches,
        Focus::Targets,
        Focus::Log,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Focus::Hosts => "Hosts",
            Focus::Packages => "Packages",
            Focus::Dispatches => "Dispatches",
            Focus::Targets => "Targets",
            Focus::Log => "Log",
        }
    }

    /// The index of the pane's list selection (the log has none).
    pub fn list(self) -> Option<usize> {
        match self {
            Focus::Hosts => Some(0),
            Focus::Packages => Some(1),
            Focus::Dispatches => Some(2),
            Focus::Targets => Some(3),
            Focus::Log => None,
        }
    }
}

/// What a confirmation dialog confirms.
#[derive(Clone)]
pub enum Confirm {
    Dispatch {
        plan: Arc<Plan>,
        file: PathBuf,
        /// A retry names the hosts to ship to again.
        only: Option<Vec<String>>,
    },
    Cancel {
        id: i64,
        bundle: String,
    },
    Quit {
        running: usize,
    },
}

/// A modal layer over the panes; keys go to it first.
pub enum Overlay {
    Help,
    Palette {
        input: Input,
        candidates: Vec<String>,
        error: Option<String>,
    },
    /// `d`: the bundle path entry.
    PathEntry {
        input: Input,
        candidates: Vec<String>,
        error: Option<String>,
    },
    /// The default button is Cancel: `ok` is false until the user moves to the action.
    Confirm {
        what: Confirm,
        ok: bool,
    },
    History {
        rows: Vec<DispatchSummary>,
        selected: usize,
    },
    /// Editing the filter of a list.
    Filter {
        input: Input,
    },
    /// Editing the log search.
    Search {
        input: Input,
    },
}

/// What the runner must do for the app: things with side effects outside the state.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Start a dispatch; `token` comes back with its journal id ([`App::on_begun`]).
    Start {
        token: u64,
        plan: Arc<Plan>,
        file: PathBuf,
        only: Option<Vec<String>>,
    },
    Cancel(i64),
    Mouse(bool),
    RememberTheme(String),
    SaveLog {
        path: PathBuf,
        text: String,
    },
    Quit,
}

/// A status-bar message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
}

pub struct App {
    pub env: AppEnv,
    pub theme: Theme,
    pub focus: Focus,
    pub overlay: Option<Overlay>,
    pub hosts: Vec<HostRow>,
    pub packages: Vec<PackageRow>,
    /// Newest first.
    pub dispatches: Vec<DispatchView>,
    /// Selection in the filtered view of Hosts, Packages, Dispatches, Targets.
    pub selected: [usize; 4],
    /// First visible row of each list; the renderer keeps the selection in view.
    pub offsets: [Cell<usize>; 4],
    /// Filters of Hosts, Packages, Dispatches, Targets.
    pub filters: [String; 4],
    pub log: LogView,
    /// Rows of the log pane and of the focused list at the last draw, for paging.
    pub log_height: Cell<usize>,
    pub list_height: Cell<usize>,
    pub status: Option<Status>,
    pub mouse: bool,
    pub quit: bool,
    /// Output lines the UI could not keep up with (still in the journal).
    pub shed: u64,
    /// The clock as the app sees it; the runner advances it, tests pin it.
    pub now: Millis,
    pub theme_names: Vec<String>,
    /// Bytes held by every target's log (see [`AppEnv::log_budget`]).
    pub log_bytes: usize,
    next_token: u64,
    pending: HashMap<u64, (Arc<Plan>, PathBuf)>,
}

impl App {
    pub fn new(env: AppEnv, theme: Theme) -> App {
        let mut app = App {
            env,
            theme,
            focus: Focus::Dispatches,
            overlay: None,
            hosts: Vec::new(),
            packages: Vec::new(),
            dispatches: Vec::new(),
            selected: [0; 4],
            offsets: Default::default(),
            filters: Default::default(),
            log: LogView::default(),
            log_height: Cell::new(10),
            list_height: Cell::new(10),
            status: None,
            mouse: false,
            quit: false,
            shed: 0,
            now: crate::engine::events::now_ms(),
            theme_names: Theme::names(),
            log_bytes: 0,
            next_token: 1,
            pending: HashMap::new(),
        };
        app.reload();
        app
    }

    /// Re-reads hosts' last results, history and packages from the journal and disk.
    pub fn reload(&mut self) {
        let (last, history) = match &self.env.journal {
            Some(j) => match (j.last_results(), j.history(100)) {
                (Ok(l), Ok(h)) => (l, h),
                (Err(e), _) | (_, Err(e)) => {
                    self.error(format!("journal: {e}"));
                    (Vec::new(), Vec::new())
                }
            },
            None => (Vec::new(), Vec::new()),
        };
        self.hosts = HostRow::from_config(&self.env.config, &last);
        self.packages =
            PackageRow::collect(self.env.packages_dir.as_deref(), &history, &self.env.config);
        for h in &history {
            if !self.dispatches.iter().any(|d| d.id == h.id) {
                self.dispatches.push(DispatchView::from_summary(h));
            } else if let Some(d) = self.dispatches.iter_mut().find(|d| d.id == h.id)
                && !d.is_running()
            {
                d.state = h.state;
            }
        }
        self.dispatches.sort_by_key(|d| std::cmp::Reverse(d.id));
        self.ensure_loaded();
    }

    pub fn info(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            error: false,
        });
    }

    pub fn error(&mut self, text: impl Into<String>) {
        let text = text.into();
        tracing::warn!("{text}");
        self.status = Some(Status { text, error: true });
    }

    pub fn running(&self) -> usize {
        self.dispatches.iter().filter(|d| d.is_running()).count()
    }

    // ----- lists -------------------------------------------------------------------------

    /// Indexes of the rows of list `l` that pass its filter.
    pub fn visible(&self, l: usize) -> Vec<usize> {
        if self.filters[l].is_empty() {
            // The common case, on every frame and every engine event: no filter.
            let n = match l {
                0 => self.hosts.len(),
                1 => self.packages.len(),
                2 => self.dispatches.len(),
                _ => self.selected_dispatch().map_or(0, |d| d.targets.len()),
            };
            return (0..n).collect();
        }
        let f = self.filters[l].to_lowercase();
        let keep =
            |fields: &[&str]| f.is_empty() || fields.iter().any(|x| x.to_lowercase().contains(&f));
        match l {
            0 => (0..self.hosts.len())
                .filter(|&i| {
                    let h = &self.hosts[i];
                    keep(&[&h.name, &h.rules.join(" "), &h.protocols.join(" ")])
                })
                .collect(),
            1 => (0..self.packages.len())
                .filter(|&i| {
                    let p = &self.packages[i];
                    keep(&[&p.name, p.rule.as_deref().unwrap_or("no rule")])
                })
                .collect(),
            2 => (0..self.dispatches.len())
                .filter(|&i| {
                    let d = &self.dispatches[i];
                    keep(&[&d.bundle, &d.rule, &d.id.to_string(), d.state.as_str()])
                })
                .collect(),
            _ => match self.selected_dispatch() {
                Some(d) => (0..d.targets.len())
                    .filter(|&i| keep(&[&d.targets[i].host, &d.targets[i].status()]))
                    .collect(),
                None => Vec::new(),
            },
        }
    }

    pub fn selected_dispatch_index(&self) -> Option<usize> {
        if self.filters[2].is_empty() {
            return (self.selected[2] < self.dispatches.len()).then_some(self.selected[2]);
        }
        let f = self.filters[2].to_lowercase();
        let mut n = 0;
        for (i, d) in self.dispatches.iter().enumerate() {
            let pass = f.is_empty()
                || [
                    d.bundle.as_str(),
                    &d.rule,
                    &d.id.to_string(),
                    d.state.as_str(),
                ]
                .iter()
                .any(|x| x.to_lowercase().contains(&f));
            if pass {
                if n == self.selected[2] {
                    return Some(i);
                }
                n += 1;
            }
        }
        None
    }

    pub fn selected_dispatch(&self) -> Option<&DispatchView> {
        self.selected_dispatch_index().map(|i| &self.dispatches[i])
    }

    pub fn selected_target_index(&self) -> Option<usize> {
        if self.filters[3].is_empty() {
            let n = self.selected_dispatch().map_or(0, |d| d.targets.len());
            return (self.selected[3] < n).then_some(self.selected[3]);
        }
        self.visible(3).get(self.selected[3]).copied()
    }

    /// The target whose log the log pane shows.
    pub fn selected_target(&self) -> Option<&super::model::TargetView> {
        let d = self.selected_dispatch()?;
        d.targets.get(self.selected_target_index()?)
    }

    fn select(&mut self, l: usize, to: usize) {
        let n = self.visible(l).len();
        let to = if n == 0 { 0 } else { to.min(n - 1) };
        if self.selected[l] == to {
            return;
        }
        self.selected[l] = to;
        if l == 2 {
            self.selected[3] = 0;
            self.offsets[3].set(0);
        }
        if l >= 2 {
            self.log = LogView {
                wrap: self.log.wrap,
                timestamps: self.log.timestamps,
                fullscreen: self.log.fullscreen,
                search: self.log.search.clone(),
                ..LogView::default()
            };
        }
        self.ensure_loaded();
    }

    fn move_by(&mut self, l: usize, delta: i64) {
        let cur = self.selected[l] as i64;
        self.select(l, (cur + delta).max(0) as usize);
    }

    /// Reads a past dispatch's targets and the selected target's output from the journal,
    /// the first time they are shown.
    fn ensure_loaded(&mut self) {
        let Some(j) = self.env.journal.clone() else {
            return;
        };
        let ring = self.env.ring_capacity;
        let Some(di) = self.selected_dispatch_index() else {
            return;
        };
        if !self.dispatches[di].detail_loaded {
            let id = self.dispatches[di].id;
            match j.dispatch(id) {
                Ok(Some(detail)) => self.dispatches[di].load_detail(&detail, ring),
                Ok(None) => self.dispatches[di].detail_loaded = true,
                Err(e) => {
                    self.dispatches[di].detail_loaded = true;
                    self.error(format!("journal: {e}"));
                }
            }
        }
        let Some(ti) = self.selected_target_index() else {
            return;
        };
        let d = &mut self.dispatches[di];
        let id = d.id;
        let t = &mut d.targets[ti];
        if t.log_loaded {
            return;
        }
        t.log_loaded = true;
        let mut lines = Vec::new();
        for step in t.journal_steps.clone() {
            match j.output(id, &t.host, step) {
                Ok(l) => lines.extend(l),
                Err(e) => {
                    let msg = format!("journal: {e}");
                    self.error(msg);
                    return;
                }
            }
        }
        lines.sort_by_key(|l| l.at);
        for l in lines {
            t.log.push(l.at, l.stream, &l.line);
        }
        self.log_bytes += t.log.bytes();
        if self.log_bytes > self.env.log_budget {
            self.trim_logs();
        }
    }

    /// Brings all logs back under 90% of the budget by dropping the oldest chunk of the
    /// biggest log, again and again. The 10% slack keeps this scan off the per-line path.
    fn trim_logs(&mut self) {
        let goal = self.env.log_budget / 10 * 9;
        while self.log_bytes > goal {
            let biggest = self
                .dispatches
                .iter_mut()
                .flat_map(|d| d.targets.iter_mut())
                .max_by_key(|t| t.log.bytes());
            let freed = biggest.map_or(0, |t| t.log.trim_front());
            if freed == 0 {
                return; // every log is down to its newest chunk
            }
            self.log_bytes -= freed.min(self.log_bytes);
        }
    }

    // ----- engine --------------------------------------------------------------------------

    /// The engine gave a dispatch started with `token` its journal id.
    pub fn on_begun(&mut self, token: u64, id: i64) {
        let Some((plan, file)) = self.pending.remove(&token) else {
            return;
        };
        let mut d = DispatchView::from_summary(&DispatchSummary {
            id,
            bundle: plan.bundle.clone(),
            rule: plan.rule.name.clone(),
            started_at: self.now,
            finished_at: None,
            state: DispatchState::Running,
            hosts: plan.targets.len(),
            succeeded: 0,
            failed: 0,
            skipped: 0,
            cancelled: 0,
            duration_ms: None,
        });
        d.plan = Some((plan, file));
        d.detail_loaded = true;
        self.dispatches.retain(|x| x.id != id);
        self.dispatches.insert(0, d);
        self.filters[2].clear();
        self.selected[2] = 1; // force select() to reset the targets and log
        self.select(2, 0);
    }

    /// A dispatch could not start (journal, bundle file).
    pub fn on_failed(&mut self, token: u64, error: String) {
        self.pending.remove(&token);
        self.error(error);
    }

    /// Applies an engine event. Returns whether the screen changed.
    pub fn on_event(&mut self, e: &Event) -> bool {
        let id = e.dispatch();
        let ring = self.env.ring_capacity;
        let shown = self.selected_dispatch().map(|d| d.id) == Some(id);
        let shown_target = if shown {
            self.selected_target_index()
        } else {
            None
        };
        let Some(d) = self.dispatches.iter_mut().find(|d| d.id == id) else {
            if let Event::DispatchStarted { .. } = e {
                let mut d = DispatchView::from_summary(&DispatchSummary {
                    id,
                    bundle: String::new(),
                    rule: String::new(),
                    started_at: self.now,
                    finished_at: None,
                    state: DispatchState::Running,
                    hosts: 0,
                    succeeded: 0,
                    failed: 0,
                    skipped: 0,
                    cancelled: 0,
                    duration_ms: None,
                });
                d.apply(e, ring);
                self.dispatches.insert(0, d);
                self.dispatches.sort_by_key(|d| std::cmp::Reverse(d.id));
                return true;
            }
            return false;
        };
        let before = match e {
            Event::Output { host, .. } => d.target_mut(host).map_or(0, |t| t.log.bytes()),
            _ => 0,
        };
        d.apply(e, ring);
        match e {
            Event::Output { host, .. } => {
                let after = d.target_mut(host).map_or(0, |t| t.log.bytes());
                let shown =
                    shown_target.is_some_and(|t| d.targets.get(t).is_some_and(|t| &t.host == host));
                self.log_bytes = (self.log_bytes + after).saturating_sub(before);
                if self.log_bytes > self.env.log_budget {
                    self.trim_logs();
                }
                shown
            }
            Event::Transfer { .. } => shown,
            Event::TargetFinished {
                host, result, at, ..
            } => {
                let (bundle, rule) = (d.bundle.clone(), d.rule.clone());
                if let Some(h) = self.hosts.iter_mut().find(|h| &h.name == host) {
                    let prev = h.last.as_ref().and_then(|l| l.last_succeeded.clone());
                    h.last = Some(crate::journal::HostLast {
                        host: host.clone(),
                        dispatch: id,
                        bundle: bundle.clone(),
                        rule,
                        result: *result,
                        finished_at: Some(*at),
                        last_succeeded: if *result == TargetResult::Succeeded {
                            Some(Shipped {
                                dispatch: id,
                                bundle,
                                finished_at: Some(*at),
                            })
                        } else {
                            prev
                        },
                    });
                }
                true
            }
            Event::DispatchFinished { .. } => {
                let msg = format!("dispatch #{id} {}: {}", d.bundle, d.summary_line(self.now));
                self.info(msg);
                true
            }
            _ => true,
        }
    }

    /// The engine finished with a dispatch (after its last event). `cancelled` is what the
    /// journal now says.
    pub fn on_ended(&mut self, id: i64, cancelled: bool) {
        if let Some(d) = self.dispatches.iter_mut().find(|d| d.id == id) {
            if cancelled {
                d.state = DispatchState::Cancelled;
            } else if d.state == DispatchState::Running {
                d.state = DispatchState::Finished;
            }
        }
        self.reload();
    }

    // ----- input ---------------------------------------------------------------------------

    /// Handles a terminal event. Returns the effects to carry out.
    pub fn on_terminal(&mut self, ev: &TermEvent) -> Vec<Effect> {
        match ev {
            TermEvent::Key(k) if k.kind != KeyEventKind::Release => self.on_key(*k, ev),
            TermEvent::Mouse(m) if self.mouse && self.overlay.is_none() => {
                match m.kind {
                    MouseEventKind::ScrollUp => self.scroll_focused(-3),
                    MouseEventKind::ScrollDown => self.scroll_focused(3),
                    _ => {}
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// A key, e.g. from tests: `app.key(KeyCode::Char('j'))`.
    pub fn key(&mut self, code: KeyCode) -> Vec<Effect> {
        self.key_mod(code, KeyModifiers::NONE)
    }

    pub fn key_mod(&mut self, code: KeyCode, mods: KeyModifiers) -> Vec<Effect> {
        let k = KeyEvent::new(code, mods);
        self.on_key(k, &TermEvent::Key(k))
    }

    /// Types `text` key by key.
    pub fn type_str(&mut self, text: &str) -> Vec<Effect> {
        text.chars()
            .flat_map(|c| self.key(KeyCode::Char(c)))
            .collect()
    }

    fn on_key(&mut self, k: KeyEvent, ev: &TermEvent) -> Vec<Effect> {
        let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl_c
            && !matches!(
                self.overlay,
                Some(Overlay::Confirm {
                    what: Confirm::Quit { .. },
                    ..
                })
            )
        {
            self.overlay = None;
            return self.request_quit();
        }
        if self.overlay.is_some() {
            return self.on_overlay_key(k, ev);
        }
        self.status = None;
        let list = self.focus.list();
        match k.code {
            KeyCode::Char('q') => return self.request_quit(),
            KeyCode::Char('?') => self.overlay = Some(Overlay::Help),
            KeyCode::Char(':') => {
                self.overlay = Some(Overlay::Palette {
                    input: Input::default(),
                    candidates: Vec::new(),
                    error: None,
                })
            }
            KeyCode::Char('d') => self.open_path_entry(),
            KeyCode::Tab => self.cycle_focus(1),
            KeyCode::BackTab => self.cycle_focus(-1),
            KeyCode::Char(c @ '1'..='5') => {
                self.focus = Focus::ALL[(c as u8 - b'1') as usize];
            }
            KeyCode::Char('f') => {
                self.log.fullscreen = !self.log.fullscreen;
                if self.log.fullscreen {
                    self.focus = Focus::Log;
                }
            }
            KeyCode::Char('m') => return self.toggle_mouse(),
            KeyCode::Esc => {
                if self.log.fullscreen {
                    self.log.fullscreen = false;
                } else if let Some(l) = list.filter(|&l| !self.filters[l].is_empty()) {
                    self.filters[l].clear();
                    self.selected[l] = 0;
                } else if self.focus == Focus::Log {
                    self.focus = Focus::Targets;
                } else if self.focus == Focus::Targets {
                    self.focus = Focus::Dispatches;
                }
            }
            KeyCode::Char('c') if matches!(self.focus, Focus::Dispatches | Focus::Targets) => {
                self.ask_cancel()
            }
            KeyCode::Char('r') if matches!(self.focus, Focus::Dispatches | Focus::Targets) => {
                self.ask_retry()
            }
            _ if self.focus == Focus::Log => return self.on_log_key(k),
            _ => {
                if let Some(l) = list {
                    self.on_list_key(l, k);
                }
            }
        }
        Vec::new()
    }

    fn cycle_focus(&mut self, delta: i64) {
        let i = Focus::ALL
            .iter()
            .position(|f| *f == self.focus)
            .unwrap_or(0) as i64;
        let n = Focus::ALL.len() as i64;
        self.focus = Focus::ALL[((i + delta).rem_euclid(n)) as usize];
    }

    fn toggle_mouse(&mut self) -> Vec<Effect> {
        self.mouse = !self.mouse;
        self.info(if self.mouse {
            "mouse on: wheel scrolls; press m to select text again"
        } else {
            "mouse off: the terminal selects text"
        });
        vec![Effect::Mouse(self.mouse)]
    }

    fn request_quit(&mut self) -> Vec<Effect> {
        let running = self.running();
        if running > 0 {
            self.overlay = Some(Overlay::Confirm {
                what: Confirm::Quit { running },
                ok: false,
            });
            Vec::new()
        } else {
            self.quit = true;
            vec![Effect::Quit]
        }
    }

    fn page(&self) -> i64 {
        self.list_height.get().max(2) as i64 - 1
    }

    fn on_list_key(&mut self, l: usize, k: KeyEvent) {
        match k.code {
            KeyCode::Char('j') | KeyCode::Down => self.move_by(l, 1),
            KeyCode::Char('k') | KeyCode::Up => self.move_by(l, -1),
            KeyCode::Char('g') | KeyCode::Home => self.select(l, 0),
            KeyCode::Char('G') | KeyCode::End => self.select(l, usize::MAX),
            KeyCode::PageDown => self.move_by(l, self.page()),
            KeyCode::PageUp => self.move_by(l, -self.page()),
            KeyCode::Char('/') => {
                self.overlay = Some(Overlay::Filter {
                    input: Input::new(self.filters[l].clone()),
                })
            }
            KeyCode::Enter => self.activate(l),
            _ => {}
        }
    }

    /// Enter on a list row.
    fn activate(&mut self, l: usize) {
        match l {
            0 => {
                let Some(&hi) = self.visible(0).get(self.selected[0]) else {
                    return;
                };
                let host = self.hosts[hi].name.clone();
                self.show_host(&host);
            }
            1 => {
                let Some(&pi) = self.visible(1).get(self.selected[1]) else {
                    return;
                };
                let p = self.packages[pi].clone();
                let path = match (&p.path, &p.last, &self.env.journal) {
                    (Some(path), _, _) => Some(path.clone()),
                    (None, Some(last), Some(j)) => j
                        .dispatch(last.id)
                        .ok()
                        .flatten()
                        .map(|d| d.record.bundle_path),
                    _ => None,
                };
                match path {
                    Some(path) => self.ask_dispatch(&path.display().to_string(), None),
                    None => self.error(format!("{}: no file known for this bundle", p.name)),
                }
            }
            2 => self.focus = Focus::Targets,
            _ => self.focus = Focus::Log,
        }
    }

    /// Selects the newest dispatch that shipped to `host`, and the host in it.
    fn show_host(&mut self, host: &str) {
        self.filters[2].clear();
        for i in 0..self.dispatches.len() {
            self.selected[2] = usize::MAX;
            self.select(2, i);
            if let Some(d) = self.selected_dispatch()
                && let Some(ti) = d.targets.iter().position(|t| t.host == host)
            {
                self.filters[3].clear();
                self.selected[3] = usize::MAX;
                self.select(3, ti);
                self.focus = Focus::Targets;
                return;
            }
        }
        self.select(2, 0);
        self.info(format!("{host}: no dispatch yet"));
    }

    fn scroll_focused(&mut self, delta: i64) {
        match self.focus.list() {
            Some(l) => self.move_by(l, delta),
            None => self.scroll_log(delta),
        }
    }

    fn scroll_log(&mut self, delta: i64) {
        let h = self.log_height.get();
        let Some((di, ti)) = self
            .selected_dispatch_index()
            .zip(self.selected_target_index())
        else {
            return;
        };
        let ring = &self.dispatches[di].targets[ti].log;
        self.log.scroll(ring, h, delta);
    }

    fn on_log_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let h = self.log_height.get().max(1) as i64;
        match k.code {
            KeyCode::Char('j') | KeyCode::Down => self.scroll_log(1),
            KeyCode::Char('k') | KeyCode::Up => self.scroll_log(-1),
            KeyCode::PageDown | KeyCode::Char(' ') => self.scroll_log(h - 1),
            KeyCode::PageUp => self.scroll_log(-(h - 1)),
            KeyCode::Char('g') | KeyCode::Home => {
                if let Some(t) = self.selected_target() {
                    let first = t.log.first();
                    self.log.top = Some(first);
                }
            }
            KeyCode::Char('G') | KeyCode::End => self.log.follow(),
            KeyCode::Char('w') => self.log.wrap = !self.log.wrap,
            KeyCode::Char('t') => self.log.timestamps = !self.log.timestamps,
            KeyCode::Char('/') => {
                self.overlay = Some(Overlay::Search {
                    input: Input::new(self.log.search.clone().unwrap_or_default()),
                })
            }
            KeyCode::Char('n') => self.find(true),
            KeyCode::Char('N') => self.find(false),
            KeyCode::Char('s') => return self.save_log(),
            _ => {}
        }
        Vec::new()
    }

    fn find(&mut self, forward: bool) {
        let h = self.log_height.get();
        let Some((di, ti)) = self
            .selected_dispatch_index()
            .zip(self.selected_target_index())
        else {
            return;
        };
        let ring = &self.dispatches[di].targets[ti].log;
        if !self.log.find(ring, h, forward) {
            let s = self.log.search.clone().unwrap_or_default();
            self.error(format!("not found: {s}"));
        }
    }

    fn save_log(&mut self) -> Vec<Effect> {
        let Some(d) = self.selected_dispatch() else {
            self.error("no dispatch selected");
            return Vec::new();
        };
        let Some(t) = self.selected_target() else {
            self.error("no host selected");
            return Vec::new();
        };
        let mut text = String::new();
        for (_, l) in t.log.iter() {
            if self.log.timestamps {
                text.push_str(&super::render::timestamp(l.at));
                text.push(' ');
            }
            if l.stream == crate::transport::Stream::Stderr {
                text.push_str("[stderr] ");
            }
            text.push_str(l.text);
            text.push('\n');
        }
        let safe: String = t
            .host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = crate::config::state_dir()
            .join("logs")
            .join(format!("dispatch-{}-{safe}.log", d.id));
        vec![Effect::SaveLog { path, text }]
    }

    /// The help text of the focused pane.
    pub fn help(&self) -> Vec<(&'static str, keys::Keys)> {
        keys::for_focus(self.focus)
    }
}

pub(super) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}
