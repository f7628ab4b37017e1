//! The log pane's reading position and options, apart from the lines themselves (which live
//! in each target's [`LogRing`]). Positions are absolute line numbers, so dropping old lines
//! from a ring or appending new ones never moves what the user is reading.

use super::ring::LogRing;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogView {
    /// `None`: follow the newest line. `Some(n)`: line `n` is at the top of the pane.
    pub top: Option<u64>,
    pub wrap: bool,
    pub timestamps: bool,
    pub fullscreen: bool,
    /// The last `/` search, and the line of the current match.
    pub search: Option<String>,
    pub current_match: Option<u64>,
}

impl LogView {
    /// A new position (following the newest line) for another host's log, keeping what
    /// the user chose: wrap, timestamps, full screen, the last search.
    pub fn reset(&self) -> LogView {
        LogView {
            wrap: self.wrap,
            timestamps: self.timestamps,
            fullscreen: self.fullscreen,
            search: self.search.clone(),
            ..LogView::default()
        }
    }

    pub fn following(&self) -> bool {
        self.top.is_none()
    }

    pub fn follow(&mut self) {
        self.top = None;
    }

    /// The first line to draw in a pane `height` rows high (wrapping is accounted for by the
    /// renderer, which walks back from the end when following).
    pub fn top_line(&self, ring: &LogRing, height: usize) -> u64 {
        match self.top {
            Some(t) => t.clamp(ring.first(), ring.end().saturating_sub(1).max(ring.first())),
            None => ring.end().saturating_sub(height as u64).max(ring.first()),
        }
    }

    /// Scrolls by `delta` lines (negative: up). Scrolling up leaves follow mode; reaching the
    /// bottom again returns to it, as in `less +F`.
    pub fn scroll(&mut self, ring: &LogRing, height: usize, delta: i64) {
        let top = self.top_line(ring, height) as i64;
        let bottom = ring.end().saturating_sub(height as u64).max(ring.first()) as i64;
        let new = (top + delta).clamp(ring.first() as i64, bottom.max(ring.first() as i64));
        if delta > 0 && new >= bottom {
            self.top = None;
        } else {
            self.top = Some(new as u64);
        }
    }

    pub fn to_start(&mut self, ring: &LogRing) {
        self.top = Some(ring.first());
    }

    /// Jumps to the next (`forward`) or previous match of the search, starting after (or
    /// before) the current match, wrapping around. Returns false when nothing matches.
    pub fn find(&mut self, ring: &LogRing, height: usize, forward: bool) -> bool {
        let Some(needle) = self.search.clone().filter(|s| !s.is_empty()) else {
            return false;
        };
        let needle = needle.to_lowercase();
        let hit = |n: u64| ring.get(n).is_some_and(|l| contains_ci(l.text, &needle));
        let (first, end) = (ring.first(), ring.end());
        if first == end {
            return false;
        }
        let from = self.current_match.unwrap_or_else(|| {
            if forward {
                self.top_line(ring, height).saturating_sub(1)
            } else {
                end
            }
        });
        let total = end - first;
        for k in 1..=total {
            let n = if forward {
                first + (from.saturating_sub(first) + k) % total
            } else {
                first + (from.saturating_sub(first) + total * 2 - k) % total
            };
            if hit(n) {
                self.current_match = Some(n);
                // Put the match a third of the way down the pane.
                self.top = Some(n.saturating_sub(height as u64 / 3).max(first));
                return true;
            }
        }
        false
    }
}

/// Case-insensitive substring test; `needle` is already lowercase.
pub fn contains_ci(hay: &str, needle: &str) -> bool {
    if hay.is_ascii() && needle.is_ascii() {
        hay.as_bytes()
            .windows(needle.len().max(1))
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    } else {
        hay.to_lowercase().contains(needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Stream;

    fn ring(n: u32) -> LogRing {
        let mut r = LogRing::new(100_000);
        for i in 0..n {
            r.push(0, Stream::Stdout, &format!("line {i}"));
        }
        r
    }

    #[test]
    fn scrolling_up_leaves_follow_and_bottom_returns() {
        let r = ring(100);
        let mut v = LogView::default();
        assert_eq!(v.top_line(&r, 10), 90);
        v.scroll(&r, 10, -5);
        assert_eq!(v.top, Some(85));
        v.scroll(&r, 10, 3);
        assert_eq!(v.top, Some(88));
        v.scroll(&r, 10, 50);
        assert!(v.following());
    }

    #[test]
    fn search_wraps_both_ways() {
        let r = ring(100);
        let mut v = LogView {
            search: Some("LINE 5".into()),
            ..LogView::default()
        };
        assert!(v.find(&r, 10, true));
        assert_eq!(v.current_match, Some(5));
        assert!(v.find(&r, 10, true));
        assert_eq!(v.current_match, Some(50));
        assert!(v.find(&r, 10, false));
        assert_eq!(v.current_match, Some(5));
        assert!(v.find(&r, 10, false));
        assert_eq!(v.current_match, Some(59));
    }
}
