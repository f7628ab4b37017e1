//! The console's state machine: keys and engine events in, state changes and [`Effect`]s
//! out. It draws nothing and starts nothing itself, so tests drive it without a terminal
//! and without an engine: feed it keys and events, look at the state or render it to a
//! `TestBackend`.
//!
//! Submodules: `input` (keys and mouse on the panes), `actions` (dispatch, cancel, retry,
//! palette commands) and `overlay` (keys while a dialog or prompt is open).

mod actions;
pub mod adhoc;
pub use adhoc::action_lines;
mod clock;
mod converge;
mod fleet;
mod input;
mod overlay;
mod selection;
mod watch;

/// The panes and help topics are plain vocabulary ([`super::model`]): the key tables use
/// them without depending on the app.
pub use super::model::{Focus, Topic};
pub use converge::{ConvergeAsk, ConvergeRule};
pub use fleet::{Preview, ProbeRow, ProbeRun, RollbackAsk, Versions};
pub use selection::{Anchor, sort_columns};
pub use watch::PackageItem;

use super::keys;
use super::logview::LogView;
use super::model::{DispatchView, HostRow, PackageRow};
use super::ring::DEFAULT_CAPACITY;
use super::theme::Theme;
use super::watch_view::WatchView;
use crate::config::{Config, Netrc, SshHosts};
use crate::engine::events::{Event, Millis, TargetResult};
use crate::engine::rollout::ROLLBACK_BUNDLE;
use crate::fleet::target::ProbeTarget;
use crate::journal::{DispatchState, DispatchSummary, Journal, Shipped};
use crate::plan::{Plan, Stamp};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tui_input::Input;

/// Default of [`AppEnv::log_budget`]: 12 MiB of log text in memory, 120 KiB a host when
/// 100 hosts print at once (thousands of lines each); a single chatty host still gets its
/// full line limit. 12, not 16: with 100 hosts streaming, the console's peak RSS must stay
/// under 64 MiB with room to spare (bench/tui.sh measured 62–65 MiB at 16).
pub const DEFAULT_LOG_BUDGET: usize = 12 << 20;

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
    /// A second `c` on a dispatch being cancelled: kill its running commands now instead
    /// of after the grace period.
    StopNow {
        id: i64,
        bundle: String,
    },
    /// `ids`: the running dispatches quitting cancels (with the same grace as `c`).
    Quit {
        running: usize,
        ids: Vec<i64>,
    },
    /// Run a rule's rollback on some of its hosts.
    Rollback(RollbackAsk),
    /// Ship each rule's last good bundle again to its hosts that differ (`app::converge`).
    Converge(ConvergeAsk),
    /// Run a destructive action (`action.NAME.confirm = yes`), see `app::adhoc`.
    Action {
        name: String,
        plans: Vec<crate::engine::run::RunPlan>,
    },
}

/// A modal layer over the panes; keys go to it first.
pub enum Overlay {
    /// The keys of the focused pane (or of the view `topic` names), scrolled by `scroll`
    /// lines when the terminal is too short for all of them.
    Help { scroll: usize, topic: Option<Topic> },
    /// The results of the last probe run ([`App::probe_run`]).
    Probe { scroll: usize },
    /// The Versions matrix ([`App::versions`]).
    Versions { scroll: usize },
    Palette {
        input: Input,
        candidates: Vec<String>,
        error: Option<String>,
    },
    /// `A` on Hosts or Packages: the actions of the selected host's (package's) rules, each
    /// on a digit (see `app::adhoc`).
    Actions {
        target: String,
        items: Vec<adhoc::MenuItem>,
    },
    /// `d`: the bundle path entry.
    PathEntry {
        input: Input,
        candidates: Vec<String>,
        error: Option<String>,
    },
    /// The default button is Cancel: `ok` is false until the user moves to the action.
    Confirm { what: Confirm, ok: bool },
    History {
        rows: Vec<DispatchSummary>,
        selected: usize,
    },
    /// Editing the filter of a list. `origin`: the item selected when the prompt opened,
    /// which the cursor goes back to whenever it passes the filter being typed.
    Filter {
        input: Input,
        origin: Option<String>,
    },
    /// Editing the log search.
    Search { input: Input },
    /// Enter on Targets: the whole story of the selected host (why it failed, each step's
    /// exit code and duration), scrolled by `scroll` lines.
    Details { scroll: usize },
}

/// What the runner must do for the app: things with side effects outside the state.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Start ad-hoc runs or an action (`:run`, `:action`), one per rule; they show in
    /// Dispatches when their `DispatchStarted` arrives.
    Run {
        plans: Vec<crate::engine::run::RunPlan>,
        action: bool,
    },
    /// Start a dispatch; `token` comes back with its journal id ([`App::on_begun`]).
    Start {
        token: u64,
        plan: Arc<Plan>,
        file: PathBuf,
        only: Option<Vec<String>>,
    },
    Cancel(i64),
    /// Stop dispatch `id` now: running commands are killed without waiting for the grace.
    StopNow(i64),
    /// Stop every running dispatch now (a second `q` while quitting waits for them).
    StopAll,
    Mouse(bool),
    RememberTheme(String),
    SaveLog {
        path: PathBuf,
        text: String,
    },
    /// Check every target's reachability (no login); answers come back through
    /// [`App::on_reach`].
    Reach(Arc<Vec<ProbeTarget>>),
    /// Run the full preflight of `targets`; answers through [`App::on_probed`].
    Probe {
        token: u64,
        targets: Vec<ProbeTarget>,
    },
    /// Read every `version_cmd`; the matrix comes back through [`App::on_status`].
    Status(Vec<ProbeTarget>),
    /// Read `current` on `hosts` for the rollback dialog `token`
    /// ([`App::on_rollback_preview`]).
    RollbackPreview {
        token: u64,
        plan: Arc<Plan>,
        hosts: Vec<String>,
    },
    /// Start a rollback; like [`Effect::Start`], `token` comes back with its journal id.
    StartRollback {
        token: u64,
        plan: Arc<Plan>,
        only: Option<Vec<String>>,
    },
    /// Compute the converge plan of `targets` off the UI thread; it comes back through
    /// [`App::on_converge_plan`] with `token`.
    ConvergePlan {
        token: u64,
        targets: Vec<ProbeTarget>,
        named: bool,
    },
    /// Pause (`true`) or resume automatic dispatching of the watched folder.
    PauseWatch(bool),
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
    /// Sort of Hosts and Targets (`o` cycles the column, `O` reverses): the column's index
    /// in [`sort_columns`] and whether descending. `None`: the config's order.
    pub sort: [Option<(usize, bool)>; 4],
    pub log: LogView,
    /// Rows of the log pane and of the focused list at the last draw, for paging.
    pub log_height: Cell<usize>,
    pub list_height: Cell<usize>,
    /// Milliseconds until the soonest relative time of the last frame changes its text, and
    /// the shortest wait its finest unit allows (see `clock.rs`); `None` when none was drawn.
    pub ago_changes: Cell<Option<(i64, i64)>>,
    /// Where each pane was drawn last, for the mouse: a click focuses the pane under the
    /// pointer and selects the row clicked, the wheel scrolls the pane under it.
    pub areas: std::cell::RefCell<Vec<(Focus, ratatui::layout::Rect)>>,
    /// How far the confirmation dialog is scrolled (a plan taller than the screen).
    pub dialog_scroll: usize,
    /// How far the open dialog can scroll, as its last draw found (so keys stop there).
    pub dialog_scroll_max: Cell<usize>,
    pub status: Option<Status>,
    pub mouse: bool,
    /// `F`: a new dispatch takes the selection as it starts. Off by default: nothing moves
    /// what the user is reading.
    pub follow: bool,
    pub quit: bool,
    /// The dispatches quitting cancelled: the runner waits for them (the grace period) and
    /// names them for `--resume`.
    pub quit_cancelled: Vec<i64>,
    /// Output lines the UI could not keep up with (still in the journal).
    pub shed: u64,
    /// The clock as the app sees it; the runner advances it, tests pin it.
    pub now: Millis,
    pub theme_names: Vec<String>,
    /// Effects an engine event asked for (the drop folder's dispatches end without an
    /// `on_ended`); the runner takes them after each event ([`App::take_effects`]).
    pub queued_effects: Vec<Effect>,
    /// Bytes held by every target's log (see [`AppEnv::log_budget`]).
    pub log_bytes: usize,
    /// Every host of every rule as the probes see it (built once from the config).
    pub probe_targets: Arc<Vec<ProbeTarget>>,
    /// The last probe run (`p`, `:probe`), shown by [`Overlay::Probe`].
    pub probe_run: Option<ProbeRun>,
    /// The converge plan being computed: its token and what it is of (`every rule`).
    pub converging: Option<(u64, String)>,
    /// The Versions matrix (`v`, `:status`).
    pub versions: Versions,
    /// The watched drop folder (`--tui --watch DIR`), shown on top of the Packages pane.
    pub watch: Option<WatchView>,
    next_token: u64,
    /// Dispatches and rollbacks asked for, until the engine gives them a journal id: the
    /// plan, the bundle file (empty for a rollback) and the bundle shown.
    pending: HashMap<u64, (Arc<Plan>, PathBuf, String)>,
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
            sort: [None; 4],
            log: LogView::default(),
            log_height: Cell::new(10),
            list_height: Cell::new(10),
            areas: Default::default(),
            dialog_scroll: 0,
            dialog_scroll_max: Cell::new(0),
            ago_changes: Cell::new(None),
            status: None,
            mouse: false,
            follow: false,
            quit: false,
            quit_cancelled: Vec::new(),
            shed: 0,
            now: crate::engine::events::now_ms(),
            theme_names: Theme::names(),
            log_bytes: 0,
            queued_effects: Vec::new(),
            probe_targets: Arc::new(Vec::new()),
            probe_run: None,
            converging: None,
            versions: Versions::default(),
            watch: None,
            next_token: 1,
            pending: HashMap::new(),
        };
        app.probe_targets = Arc::new(crate::fleet::target::for_config(
            &app.env.config,
            &app.env.netrc,
            &app.env.ssh,
        ));
        app.reload();
        // Start where there is something to see: the history, else the fleet.
        if app.dispatches.is_empty() && !app.hosts.is_empty() {
            app.focus = Focus::Hosts;
        }
        // Headless modes print config warnings to stderr; here that would be drawn over, so
        // they go to the log file and the status bar points at --check.
        let warnings = &app.env.config.warnings;
        if !warnings.is_empty() {
            for w in warnings {
                tracing::warn!("{w}");
            }
            let msg = format!(
                "{} warning(s) in {}: run dropship --check",
                warnings.len(),
                app.env.config.path.display()
            );
            app.info(msg);
        }
        app
    }

    /// Re-reads hosts' last results, history and packages from the journal and disk.
    pub fn reload(&mut self) {
        let anchor = self.anchor();
        let (last, rows) = match &self.env.journal {
            Some(j) => match (j.last_results(), j.history_rows(100)) {
                (Ok(l), Ok(h)) => (l, h),
                (Err(e), _) | (_, Err(e)) => {
                    self.error(format!("journal: {e}"));
                    (Vec::new(), Vec::new())
                }
            },
            None => (Vec::new(), Vec::new()),
        };
        let history: Vec<DispatchSummary> = rows.iter().map(|r| r.summary.clone()).collect();
        // What the reachability check and the probes found stays: reading the journal again
        // knows nothing new about it (the hosts a dispatch touched are probed again).
        let mut hosts = HostRow::from_config(&self.env.config, &last);
        for h in &mut hosts {
            if let Some(old) = self.hosts.iter().find(|o| o.name == h.name) {
                h.reach = old.reach.clone();
                h.reaching = old.reaching;
                h.lock = old.lock.clone();
                h.installed = old.installed.clone();
                // Without a journal (tests, a journal that failed to read) what the
                // events said is all there is.
                if h.last.is_none() {
                    h.last = old.last.clone();
                }
            }
        }
        self.hosts = hosts;
        // The watcher owns the watched folder's files: listing them here would offer a
        // second way to ship them.
        let dir = self
            .env
            .packages_dir
            .as_deref()
            .filter(|d| !self.is_watched(d));
        self.packages = PackageRow::collect(dir, &history, &self.env.config);
        self.hide_watched_history();
        for r in &rows {
            let h = &r.summary;
            let by = (r.started_by.is_some() || r.started_on.is_some()).then(|| r.started_by_on());
            if !self.dispatches.iter().any(|d| d.id == h.id) {
                let mut d = DispatchView::from_summary(h);
                // Running and not started here (this console's own are in the list before
                // the journal is read again): another process's.
                d.foreign = d.is_running();
                d.by = by;
                self.dispatches.push(d);
            } else if let Some(d) = self.dispatches.iter_mut().find(|d| d.id == h.id) {
                if !d.is_running() {
                    d.state = h.state;
                }
                if d.by.is_none() {
                    d.by = by;
                }
            }
        }
        self.dispatches.sort_by_key(|d| std::cmp::Reverse(d.id));
        self.restore(&anchor);
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

    /// Dispatches this console runs (others' are in [`App::elsewhere`]).
    pub fn running(&self) -> usize {
        self.dispatches
            .iter()
            .filter(|d| d.is_running() && !d.foreign)
            .count()
    }

    /// Dispatches other processes run, followed through the journal.
    pub fn elsewhere(&self) -> usize {
        self.dispatches
            .iter()
            .filter(|d| d.is_running() && d.foreign)
            .count()
    }

    /// Anything running, here or elsewhere: elapsed times tick.
    pub fn any_running(&self) -> bool {
        self.dispatches.iter().any(|d| d.is_running())
    }

    // ----- lists -------------------------------------------------------------------------

    /// Indexes of the rows of list `l` that pass its filter.
    pub fn visible(&self, l: usize) -> Vec<usize> {
        let mut rows = self.filtered(l);
        if self.sort[l].is_some() {
            self.sort_rows(l, &mut rows);
        }
        rows
    }

    fn filtered(&self, l: usize) -> Vec<usize> {
        if self.filters[l].is_empty() {
            // The common case, on every frame and every engine event: no filter.
            let n = match l {
                0 => self.hosts.len(),
                1 => self.package_count(),
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
                    keep(&[
                        &h.name,
                        &h.rules.join(" "),
                        &h.labels.join(" "),
                        &h.protocols.join(" "),
                    ])
                })
                .collect(),
            1 => (0..self.package_count())
                .filter(|&i| match self.package_item(i) {
                    Some(PackageItem::Listed(p)) => {
                        keep(&[&p.name, p.rule.as_deref().unwrap_or("no rule")])
                    }
                    Some(PackageItem::Watched(w)) => {
                        keep(&[&w.name, w.rule.as_deref().unwrap_or(""), &w.text()])
                    }
                    None => false,
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
        if self.sort[2].is_some() {
            return self.visible(2).get(self.selected[2]).copied();
        }
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
        if self.filters[3].is_empty() && self.sort[3].is_none() {
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
            self.log = self.log.reset();
        }
        self.ensure_loaded();
    }

    fn move_by(&mut self, l: usize, delta: i64) {
        let cur = self.selected[l] as i64;
        self.select(l, (cur + delta).max(0) as usize);
    }

    /// Reads a past dispatch's targets and the selected target's output from the journal,
    /// the first time they are shown.
    pub(super) fn ensure_loaded(&mut self) {
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
        // The many-host views (all hosts, split, diff) read every host's output.
        let all: Vec<usize> = if self.log.mode == super::logview::LogMode::One {
            vec![ti]
        } else {
            (0..self.dispatches[di].targets.len()).collect()
        };
        for ti in all {
            self.load_log(&j, di, ti);
        }
    }

    /// Reads target `ti`'s output of dispatch `di` from the journal, once.
    fn load_log(&mut self, j: &Journal, di: usize, ti: usize) {
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
        // Markers first, so a step's marker stays ahead of output stamped the same
        // millisecond (the sort is stable).
        let mut all: Vec<(i64, Option<crate::transport::Stream>, String)> = t
            .journal_markers
            .iter()
            .map(|(at, m)| (*at, None, m.clone()))
            .collect();
        all.extend(lines.into_iter().map(|l| (l.at, Some(l.stream), l.line)));
        all.sort_by_key(|l| l.0);
        for (at, stream, text) in all {
            match stream {
                Some(s) => t.log.push(at, s, &text),
                None => t.log.push_marker(at, &text),
            }
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
        let Some((plan, file, bundle)) = self.pending.remove(&token) else {
            return;
        };
        let rollback = bundle == ROLLBACK_BUNDLE;
        let mut d = DispatchView::from_summary(&DispatchSummary {
            id,
            bundle,
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
        // A rollback is not retried by shipping a file: it has none.
        d.plan = (!rollback).then_some((plan, file));
        d.by = Some(crate::journal::follow::this_origin());
        d.detail_loaded = true;
        let before = self.anchor();
        self.dispatches.retain(|x| x.id != id);
        self.dispatches.insert(0, d);
        self.dispatches.sort_by_key(|d| std::cmp::Reverse(d.id));
        self.new_dispatch_shown(id, &before, true);
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
                d.by = Some(crate::journal::follow::this_origin());
                let before = self.anchor();
                self.dispatches.insert(0, d);
                self.dispatches.sort_by_key(|d| std::cmp::Reverse(d.id));
                self.new_dispatch_shown(id, &before, false);
                return true;
            }
            return false;
        };
        // Output and step markers grow the host's log: account for them in the budget.
        let logged = match e {
            Event::Output { host, .. }
            | Event::StepStarted { host, .. }
            | Event::StepFinished { host, .. } => Some(host.as_str()),
            _ => None,
        };
        let before = logged
            .and_then(|h| d.target_mut(h))
            .map_or(0, |t| t.log.bytes());
        if let Event::DispatchStarted { .. } = e {
            // This session's (the follower's go through `on_followed`): a row the journal
            // showed before its start reached here is ours after all.
            d.foreign = false;
        }
        d.apply(e, ring);
        let after = logged
            .and_then(|h| d.target_mut(h))
            .map_or(0, |t| t.log.bytes());
        if after != before {
            self.log_bytes = (self.log_bytes + after).saturating_sub(before);
            if self.log_bytes > self.env.log_budget {
                self.trim_logs();
            }
        }
        let Some(d) = self.dispatches.iter().find(|d| d.id == id) else {
            return false;
        };
        match e {
            Event::Output { host, .. } => {
                shown_target.is_some_and(|t| d.targets.get(t).is_some_and(|t| &t.host == host))
            }
            Event::Transfer { .. } => shown,
            Event::TargetFinished {
                host, result, at, ..
            } => {
                let (bundle, rule) = (d.bundle.clone(), d.rule.clone());
                if let Some(h) = self.hosts.iter_mut().find(|h| &h.name == host) {
                    // What a probe saw there (lock, installed version) stays until the
                    // probe the end of the dispatch starts answers (`on_ended`).
                    let prev = h.last.as_ref().and_then(|l| l.last_succeeded.clone());
                    h.last = Some(crate::journal::HostLast {
                        host: host.clone(),
                        dispatch: id,
                        bundle: bundle.clone(),
                        rule,
                        result: *result,
                        finished_at: Some(*at),
                        // A rollback ships nothing: "last shipped" stays what it was.
                        last_succeeded: if *result == TargetResult::Succeeded
                            && bundle != ROLLBACK_BUNDLE
                        {
                            Some(Shipped {
                                dispatch: id,
                                bundle,
                                finished_at: Some(*at),
                            })
                        } else {
                            prev
                        },
                        started_by: None,
                        started_on: None,
                    });
                }
                true
            }
            Event::DispatchFinished { .. } => {
                // The drop folder's dispatches never reach `on_ended`: refresh the facts of
                // the hosts they touched here.
                let touched: Vec<String> = if self.watch_owns(id) {
                    d.targets
                        .iter()
                        .filter(|t| t.started_at.is_some())
                        .map(|t| t.host.clone())
                        .collect()
                } else {
                    Vec::new()
                };
                let d = self
                    .dispatches
                    .iter()
                    .find(|x| x.id == id)
                    .expect("found above");
                let mut msg = format!("dispatch #{id} {}: {}", d.bundle, d.summary_line(self.now));
                let failed = d.failed_hosts();
                if failed.is_empty() {
                    self.info(msg);
                } else {
                    msg.push_str(&format!(" — failed: {failed} (Enter on Targets: why)"));
                    self.error(msg);
                }
                let fx = self.refresh_facts(&touched);
                self.queued_effects.extend(fx);
                true
            }
            // The notifier reports after the dispatch ended (delivered, retrying, given
            // up): the status bar says so wherever the user is.
            Event::Notice {
                host: None,
                level,
                message,
                ..
            } if d.finished_at.is_some() || !d.is_running() => {
                let msg = format!("#{id} {message}");
                if *level == crate::engine::events::Level::Warning {
                    self.error(msg);
                } else {
                    self.info(msg);
                }
                true
            }
            _ => true,
        }
    }

    /// What the follower read of other processes' dispatches ([`crate::session::follow`]):
    /// they are shown like this console's own, marked as another's. Returns whether the
    /// screen changed.
    pub fn on_followed(&mut self, u: crate::journal::FollowUpdate) -> bool {
        let ring = self.env.ring_capacity;
        for f in &u.started {
            if let Some(d) = self.dispatches.iter_mut().find(|d| d.id == f.id) {
                d.foreign = true;
                d.by = Some(f.by.clone());
                if f.already_running {
                    // Shown from the history so far: its whole record follows as events, so
                    // nothing read from the journal meanwhile is shown twice.
                    let bytes: usize = d.targets.iter().map(|t| t.log.bytes()).sum();
                    self.log_bytes = self.log_bytes.saturating_sub(bytes);
                    d.targets.clear();
                    d.notices.clear();
                    d.detail_loaded = true;
                }
            } else {
                // Its `DispatchStarted` (next in `events`) fills it in.
                let mut d = DispatchView::from_summary(&DispatchSummary {
                    id: f.id,
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
                d.foreign = true;
                d.by = Some(f.by.clone());
                d.detail_loaded = true;
                let before = self.anchor();
                self.dispatches.insert(0, d);
                self.dispatches.sort_by_key(|d| std::cmp::Reverse(d.id));
                self.new_dispatch_shown(f.id, &before, false);
            }
        }
        let mut changed = !u.started.is_empty();
        for e in &u.events {
            let ours = self
                .dispatches
                .iter()
                .any(|d| d.id == e.dispatch() && !d.foreign);
            if ours {
                continue; // never shown twice (the follower skips them; this is a guard)
            }
            if let Event::DispatchStarted { .. } = e
                && let Some(d) = self.dispatches.iter_mut().find(|d| d.id == e.dispatch())
            {
                d.apply(e, ring);
                changed = true;
                continue;
            }
            changed |= self.on_event(e);
        }
        for (id, state) in &u.states {
            if let Some(d) = self
                .dispatches
                .iter_mut()
                .find(|d| d.id == *id && d.foreign)
            {
                d.state = *state;
                changed = true;
            }
        }
        changed
    }

    /// The engine finished with a dispatch (after its last event). `cancelled` is what the
    /// journal now says.
    ///
    /// Returns a quiet probe of the hosts it touched: their lock, installed version and
    /// reachability changed, the other hosts' did not (their facts stay as they were).
    pub fn on_ended(&mut self, id: i64, cancelled: bool) -> Vec<Effect> {
        let mut touched: Vec<String> = Vec::new();
        if let Some(d) = self.dispatches.iter_mut().find(|d| d.id == id) {
            if cancelled {
                d.state = DispatchState::Cancelled;
            } else if d.state == DispatchState::Running {
                d.state = DispatchState::Finished;
            }
            touched = d
                .targets
                .iter()
                .filter(|t| t.started_at.is_some())
                .map(|t| t.host.clone())
                .collect();
        }
        self.reload();
        self.refresh_facts(&touched)
    }

    /// What engine events asked the runner to do since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.queued_effects)
    }

    /// Probes `hosts` again without opening the probe view: only their Hosts rows change.
    pub fn refresh_facts(&mut self, hosts: &[String]) -> Vec<Effect> {
        let targets: Vec<ProbeTarget> = self
            .probe_targets
            .iter()
            .filter(|t| hosts.contains(&t.target.host.name))
            .cloned()
            .collect();
        if targets.is_empty() {
            return Vec::new();
        }
        let token = self.next_token;
        self.next_token += 1;
        vec![Effect::Probe { token, targets }]
    }

    /// The help text of the focused pane.
    pub fn help(&self) -> Vec<(&'static str, keys::Keys)> {
        keys::for_focus(self.focus)
    }
}

pub(super) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}
