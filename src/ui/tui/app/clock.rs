//! Relative times ("12s ago") that tick while they are on screen. The renderer notes each
//! one it draws; the runner then sleeps exactly until the soonest of them changes its text
//! (a second while one is under a minute old, else up to a minute or an hour), and not at
//! all while none is shown, so an idle console still costs nothing.

use super::App;
use crate::engine::events::Millis;
use crate::ui::tui::model;
use std::time::Duration;

impl App {
    /// `at` as the screen shows it (`12s ago`), noting when that text changes next.
    pub fn ago(&self, at: Millis) -> String {
        let age = (self.now - at).max(0);
        let period: i64 = match age / 1000 {
            0..60 => 1_000,
            60..3600 => 60_000,
            3600..86400 => 3_600_000,
            _ => 86_400_000,
        };
        let next = period - age % period;
        let soonest = self.ago_changes.get().map_or(next, |s| s.min(next));
        self.ago_changes.set(Some(soonest));
        model::ago(self.now, at)
    }

    /// Called before each draw: forget what the last frame showed.
    pub fn begin_frame(&self) {
        self.ago_changes.set(None);
    }

    /// How long until a relative time drawn in the last frame changes its text; `None`
    /// when the last frame showed none (then nothing needs a timer).
    pub fn next_tick(&self) -> Option<Duration> {
        self.ago_changes
            .get()
            .map(|ms| Duration::from_millis(ms.max(1) as u64))
    }
}
