//! Keys and mouse on the panes: focus, list movement, the log pane's reading keys.

use super::super::all_hosts;
use super::super::logview::LogMode;
use super::{App, Confirm, Effect, Focus, Overlay};
use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use tui_input::Input;

impl App {
    /// Handles a terminal event. Returns the effects to carry out.
    pub fn on_terminal(&mut self, ev: &TermEvent) -> Vec<Effect> {
        match ev {
            TermEvent::Key(k) if k.kind != KeyEventKind::Release => self.on_key(*k, ev),
            TermEvent::Mouse(m) if self.mouse && self.overlay.is_none() => {
                self.on_mouse(m.kind, m.column, m.row);
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

    pub(super) fn on_key(&mut self, k: KeyEvent, ev: &TermEvent) -> Vec<Effect> {
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
            self.dialog_scroll = 0;
            return self.request_quit();
        }
        if self.overlay.is_some() {
            return self.on_overlay_key(k, ev);
        }
        self.status = None;
        let list = self.focus.list();
        match k.code {
            KeyCode::Char('q') => return self.request_quit(),
            KeyCode::Char('?') => {
                self.overlay = Some(Overlay::Help {
                    scroll: 0,
                    topic: None,
                })
            }
            KeyCode::Char('v') => return self.open_versions(),
            KeyCode::Char(':') => {
                self.overlay = Some(Overlay::Palette {
                    input: Input::default(),
                    candidates: Vec::new(),
                    error: None,
                })
            }
            KeyCode::Char('d') => self.open_path_entry(),
            KeyCode::Char('a') => return self.toggle_pause(),
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
            KeyCode::Char('F') => self.toggle_follow(),
            KeyCode::Esc => {
                // In the log: the search, then a host filter, then the many-host view go
                // first; focus stays.
                if self.focus == Focus::Log && self.log.clear_one() {
                } else if self.log.fullscreen {
                    self.log.fullscreen = false;
                } else if let Some(l) = list.filter(|&l| !self.filters[l].is_empty()) {
                    self.set_filter(l, String::new());
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
            KeyCode::Char('p') if self.focus == Focus::Hosts => return self.probe_selected_host(),
            KeyCode::Char('!') if matches!(self.focus, Focus::Hosts | Focus::Packages) => {
                self.open_run_palette()
            }
            KeyCode::Char('A') if matches!(self.focus, Focus::Hosts | Focus::Packages) => {
                self.open_actions_menu()
            }
            KeyCode::Char('P') if self.focus == Focus::Hosts => return self.start_reach(),
            KeyCode::Char('b') if matches!(self.focus, Focus::Hosts | Focus::Targets) => {
                return self.ask_rollback_selected();
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

    pub(super) fn cycle_focus(&mut self, delta: i64) {
        let i = Focus::ALL
            .iter()
            .position(|f| *f == self.focus)
            .unwrap_or(0) as i64;
        let n = Focus::ALL.len() as i64;
        self.focus = Focus::ALL[((i + delta).rem_euclid(n)) as usize];
    }

    pub(super) fn toggle_mouse(&mut self) -> Vec<Effect> {
        self.mouse = !self.mouse;
        self.info(if self.mouse {
            "mouse on: a click focuses a pane and selects a row, the wheel scrolls the pane under it; m again lets the terminal select text"
        } else {
            "mouse off: the terminal selects text"
        });
        vec![Effect::Mouse(self.mouse)]
    }

    pub(super) fn request_quit(&mut self) -> Vec<Effect> {
        let running = self.running();
        if running > 0 {
            let ids = self
                .dispatches
                .iter()
                .filter(|d| d.is_running() && !d.foreign && !self.watch_owns(d.id))
                .map(|d| d.id)
                .collect();
            self.overlay = Some(Overlay::Confirm {
                what: Confirm::Quit { running, ids },
                ok: false,
            });
            Vec::new()
        } else {
            self.quit = true;
            vec![Effect::Quit]
        }
    }

    pub(super) fn page(&self) -> i64 {
        self.list_height.get().max(2) as i64 - 1
    }

    pub(super) fn on_list_key(&mut self, l: usize, k: KeyEvent) {
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
                    origin: self.anchor().key(l).map(str::to_owned),
                })
            }
            KeyCode::Enter => self.activate(l),
            KeyCode::Char('o') => self.cycle_sort(l),
            KeyCode::Char('O') => self.reverse_sort(l),
            _ => {}
        }
    }

    /// Enter on a list row.
    pub(super) fn activate(&mut self, l: usize) {
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
                let p = match self.package_item(pi) {
                    Some(super::PackageItem::Listed(p)) => p.clone(),
                    Some(super::PackageItem::Watched(b)) => {
                        let b = b.clone();
                        return self.activate_watched(b);
                    }
                    None => return,
                };
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
            _ => {
                if self.selected_target().is_some() {
                    self.dialog_scroll_max.set(0);
                    self.overlay = Some(Overlay::Details { scroll: 0 });
                }
            }
        }
    }

    /// Selects the newest dispatch that shipped to `host`, and the host in it.
    pub(super) fn show_host(&mut self, host: &str) {
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

    /// A click focuses the pane under the pointer and selects the row clicked; the wheel
    /// scrolls the pane under the pointer (not the focused one).
    pub fn on_mouse(&mut self, kind: MouseEventKind, column: u16, row: u16) {
        let hit = self
            .areas
            .borrow()
            .iter()
            .rev()
            .find(|(_, r)| r.contains(ratatui::layout::Position::new(column, row)))
            .copied();
        let Some((pane, area)) = hit else { return };
        match kind {
            MouseEventKind::ScrollUp | MouseEventKind::ScrollDown => {
                let d = if kind == MouseEventKind::ScrollUp {
                    -3
                } else {
                    3
                };
                match pane.list() {
                    Some(l) => self.move_by(l, d),
                    None => self.scroll_log(d),
                }
            }
            MouseEventKind::Down(crossterm::event::MouseButton::Left) => {
                self.focus = pane;
                // Rows start under the border and the header line.
                if let Some(l) = pane.list()
                    && row >= area.y + 2
                    && row < area.y + area.height.saturating_sub(1)
                {
                    let i = self.offsets[l].get() + (row - area.y - 2) as usize;
                    if i < self.visible(l).len() {
                        self.select(l, i);
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn scroll_log(&mut self, delta: i64) {
        let h = self.log_height.get();
        match self.log.mode {
            LogMode::One => {}
            LogMode::Split => {
                // Lines back from the newest, the same in every column.
                let back = self.log.view_top.unwrap_or(0) as i64 - delta;
                self.log.view_top = (back > 0).then_some(back as u64);
                return;
            }
            LogMode::All | LogMode::Diff => {
                if let Some((first, end)) = all_hosts::rows_of(self) {
                    all_hosts::scroll(&mut self.log.view_top, first, end, h, delta);
                }
                return;
            }
        }
        let Some((di, ti)) = self
            .selected_dispatch_index()
            .zip(self.selected_target_index())
        else {
            return;
        };
        let ring = &self.dispatches[di].targets[ti].log;
        self.log.scroll(ring, h, delta);
    }

    pub(super) fn on_log_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let h = self.log_height.get().max(1) as i64;
        match k.code {
            KeyCode::Char('j') | KeyCode::Down => self.scroll_log(1),
            KeyCode::Char('k') | KeyCode::Up => self.scroll_log(-1),
            KeyCode::PageDown | KeyCode::Char(' ') => self.scroll_log(h - 1),
            KeyCode::PageUp => self.scroll_log(-(h - 1)),
            KeyCode::Char('g') | KeyCode::Home if self.log.mode != LogMode::One => {
                self.scroll_log(i64::MIN / 4)
            }
            KeyCode::Char('G') | KeyCode::End if self.log.mode != LogMode::One => {
                self.log.view_top = None
            }
            KeyCode::Char('A') => self.set_log_mode(LogMode::All),
            KeyCode::Char('S') => self.set_log_mode(LogMode::Split),
            KeyCode::Char('D') => self.set_log_mode(LogMode::Diff),
            KeyCode::Char(c @ ('[' | ']')) => self.step_host(if c == ']' { 1 } else { -1 }),
            KeyCode::Char(c @ ('+' | '-')) if self.log.mode == LogMode::Split => {
                let n = self.log.split_columns() as i64 + if c == '+' { 1 } else { -1 };
                self.log.columns = n.clamp(2, 4) as usize;
            }
            KeyCode::Char('n' | 'N') if self.log.mode == LogMode::All => {
                self.info("all hosts: / keeps the lines that contain a text; Esc clears it")
            }
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

    /// Switches the log pane to `mode` (or back to one host), reading every host's output
    /// of a past dispatch first when the view needs it.
    pub(super) fn set_log_mode(&mut self, mode: LogMode) {
        self.log.toggle_mode(mode);
        self.ensure_loaded();
        let what = match self.log.mode {
            LogMode::One => "log: one host",
            LogMode::All => "log: all hosts in arrival order; [ ] one host, / filter, Esc clears",
            LogMode::Split => "log: hosts side by side; [ ] move, + - columns",
            LogMode::Diff => "log: the host against the majority; [ ] another host",
        };
        self.info(what);
    }

    /// `[` / `]`: all hosts keeps only the previous / next host's lines (then all again);
    /// the other views move to the previous / next host of the Targets list.
    pub(super) fn step_host(&mut self, delta: i64) {
        if self.log.mode == LogMode::All {
            let Some(d) = self.selected_dispatch() else {
                return;
            };
            let n = d.targets.len() as i64;
            if n == 0 {
                return;
            }
            // Positions 0..n are hosts, n is "all".
            let cur = all_hosts::host_index(d, &self.log).map_or(n, |i| i as i64);
            let next = (cur + delta).rem_euclid(n + 1);
            self.log.host_filter = (next < n).then(|| d.targets[next as usize].host.clone());
            self.log.view_top = None;
            return;
        }
        self.move_by(3, delta);
    }

    pub(super) fn find(&mut self, forward: bool) {
        if self.log.mode == LogMode::All {
            // A filter there, not a search: the view shows the matching lines only.
            self.log.view_top = None;
            return;
        }
        if self.log.search.as_deref().is_none_or(str::is_empty) {
            // Nothing to look for: nothing to say either.
            self.log.search = None;
            self.log.current_match = None;
            return;
        }
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

    pub(super) fn save_log(&mut self) -> Vec<Effect> {
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
                text.push_str(&crate::ui::tui::model::timestamp(l.at));
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
}
