//! Relative times ("12s ago") that tick while they are on screen. The renderer notes each
//! one it draws; the runner then sleeps until the soonest of them changes its text, but
//! never less than a floor set by the finest unit shown (1 s while one counts seconds, 10 s
//! for minutes, 10 min for hours): twenty hosts that finished at different milliseconds
//! would otherwise wake it twenty times a second. With none shown there is no timer at
//! all, so an idle console still costs nothing.

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
        let floor = match period {
            1_000 => 1_000,
            60_000 => 10_000,
            3_600_000 => 600_000,
            _ => 3_600_000,
        };
        let (soonest, finest) = self
            .ago_changes
            .get()
            .map_or((next, floor), |(s, f)| (s.min(next), f.min(floor)));
        self.ago_changes.set(Some((soonest, finest)));
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
            .map(|(soonest, floor)| Duration::from_millis(soonest.max(floor) as u64))
    }
}
