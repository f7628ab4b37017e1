//! The watched drop folder in the console: its events, the Packages rows it adds, and the
//! pause key. The watcher dispatches by itself; the console only shows what it does and
//! pauses or resumes it.

use super::{App, Effect, Focus};
use crate::ui::tui::model::PackageRow;
use crate::ui::tui::watch_view::{Change, WatchView, WatchedBundle};
use crate::watch::WatchEvent;
use std::path::Path;

/// One row of the Packages pane: a bundle of the watched folder (listed first, newest
/// first), or a bundle from `--packages` and the journal's history.
#[derive(Debug, Clone, Copy)]
pub enum PackageItem<'a> {
    Watched(&'a WatchedBundle),
    Listed(&'a PackageRow),
}

impl App {
    /// Starts showing the watched folder (its journal history already in `view`).
    pub fn set_watch(&mut self, view: WatchView) {
        self.watch = Some(view);
        self.reload();
    }

    /// Rows of the Packages pane.
    pub fn package_count(&self) -> usize {
        self.watch.as_ref().map_or(0, |w| w.rows.len()) + self.packages.len()
    }

    pub fn package_item(&self, i: usize) -> Option<PackageItem<'_>> {
        let n = self.watch.as_ref().map_or(0, |w| w.rows.len());
        match &self.watch {
            Some(w) if i < n => w.rows.get(i).map(PackageItem::Watched),
            _ => self.packages.get(i - n).map(PackageItem::Listed),
        }
    }

    /// `dir` is the watched folder.
    pub(super) fn is_watched(&self, dir: &Path) -> bool {
        self.watch
            .as_ref()
            .is_some_and(|w| std::fs::canonicalize(dir).is_ok_and(|d| d == w.dir) || dir == w.dir)
    }

    /// A history row whose bundle the folder's rows show already goes.
    pub(super) fn hide_watched_history(&mut self) {
        let Some(w) = &self.watch else {
            return;
        };
        let names: std::collections::HashSet<&str> =
            w.rows.iter().map(|r| r.name.as_str()).collect();
        self.packages
            .retain(|p| p.path.is_some() || !names.contains(p.name.as_str()));
    }

    /// Applies a watcher event. Returns whether the screen changed.
    pub fn on_watch(&mut self, e: &WatchEvent) -> bool {
        let Some(w) = &mut self.watch else {
            return false;
        };
        let change = w.apply(e);
        if change == Change::Added {
            // The selection stays on the row it was on (the top row follows the newest).
            if self.filters[1].is_empty() && self.selected[1] > 0 {
                self.selected[1] += 1;
            }
            if let Some(name) = w.rows.front().map(|r| r.name.clone()) {
                self.packages.retain(|p| p.path.is_some() || p.name != name);
            }
        }
        match e {
            WatchEvent::WatchError { message, .. } => self.error(format!("watch: {message}")),
            WatchEvent::BundleFinished {
                name,
                state,
                reason: Some(reason),
                ..
            } if matches!(
                state,
                crate::journal::BundleState::Failed | crate::journal::BundleState::Unmatched
            ) =>
            {
                let msg = format!("watch: {name} {state}: {}", super::first_line(reason));
                self.error(msg);
            }
            WatchEvent::QueueFull {
                limit,
                waiting_in_folder,
                ..
            } => self.info(format!(
                "watch: queue full ({limit}): {waiting_in_folder} complete file(s) wait in the folder"
            )),
            WatchEvent::WatchStopped {
                queued, in_flight, ..
            } => self.info(format!(
                "watch stopped: {queued} queued and {in_flight} in flight go on at the next start"
            )),
            _ => {}
        }
        change != Change::None
    }

    /// `a`: pause or resume automatic dispatching.
    pub(super) fn toggle_pause(&mut self) -> Vec<Effect> {
        match &self.watch {
            Some(w) => self.pause_watch(!w.paused),
            None => self.pause_watch(true),
        }
    }

    /// `:pause` / `:resume`. Pausing stops new dispatches from starting; running ones go
    /// on, and files are still taken and queued.
    pub(super) fn pause_watch(&mut self, pause: bool) -> Vec<Effect> {
        let Some(w) = &mut self.watch else {
            self.error("not watching a folder: start the console with --tui --watch DIR");
            return Vec::new();
        };
        if w.paused == pause {
            self.info(if pause {
                "automatic dispatching is paused already (a resumes)"
            } else {
                "automatic dispatching is not paused"
            });
            return Vec::new();
        }
        w.paused = pause;
        let running = w.in_flight();
        if pause {
            self.info(format!(
                "automatic dispatching paused: {running} running go on, new files wait queued · a resumes"
            ));
        } else {
            self.info("automatic dispatching resumed");
        }
        vec![Effect::PauseWatch(pause)]
    }

    /// The dispatch `id` belongs to the watcher (which alone can stop it).
    pub fn watch_owns(&self, id: i64) -> bool {
        self.watch.as_ref().is_some_and(|w| w.owns(id))
    }

    /// Enter on a row of the watched folder: its dispatch, or where it stands.
    pub(super) fn activate_watched(&mut self, b: WatchedBundle) {
        let text = format!("{}: {}", b.name, b.text());
        if let Some(id) = b.dispatch()
            && let Some(i) = self.dispatches.iter().position(|d| d.id == id)
        {
            self.filters[2].clear();
            self.selected[2] = usize::MAX;
            self.select(2, i);
            self.focus = Focus::Targets;
        }
        self.info(text);
    }
}
