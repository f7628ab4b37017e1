//! The log pane's reading position and options, apart from the lines themselves (which live
//! in each target's [`LogRing`]). Positions are absolute line numbers, so dropping old lines
//! from a ring or appending new ones never moves what the user is reading.

use super::merged::MergedCache;
use super::ring::LogRing;
use std::cell::Cell;

/// What the log pane shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogMode {
    /// The selected host's log.
    #[default]
    One,
    /// Every host of the dispatch, interleaved in arrival order, each line tagged.
    All,
    /// 2–4 hosts side by side, from the selected one on.
    Split,
    /// The selected host's output against the majority's.
    Diff,
}

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
    pub mode: LogMode,
    /// All hosts: only this host's lines.
    pub host_filter: Option<String>,
    /// Split: how many hosts side by side (2–4).
    pub columns: usize,
    /// All hosts and Diff: `None` follows the newest line, `Some(n)`: row `n` of the
    /// merged (or diff) list at the top. Split: lines scrolled up from the newest.
    pub view_top: Option<u64>,
    /// Matches of the search in the shown log, cached by what they depend on:
    /// (search hash, ring first, ring end, current match, host) -> (count, current's rank).
    pub count_cache: Cell<Option<(CountKey, Count)>>,
    /// All hosts: the interleaved index, extended while drawing.
    pub merged: MergedCache,
}

/// Matching lines, and the current match's rank among them (1-based).
pub type Count = (usize, Option<usize>);

/// What a cached match count depends on.
pub type CountKey = (u64, u64, u64, Option<u64>, usize);

impl LogView {
    /// A new position (following the newest line) for another host's log, keeping what
    /// the user chose: wrap, timestamps, full screen, the last search.
    pub fn reset(&self) -> LogView {
        LogView {
            wrap: self.wrap,
            timestamps: self.timestamps,
            fullscreen: self.fullscreen,
            search: self.search.clone(),
            mode: self.mode,
            host_filter: self.host_filter.clone(),
            columns: self.columns,
            ..LogView::default()
        }
    }

    /// Split's column count, 2–4 (3 until changed).
    pub fn split_columns(&self) -> usize {
        if self.columns == 0 {
            3
        } else {
            self.columns.clamp(2, 4)
        }
    }

    /// Switches to `mode`, or back to the one host's log when it is on already.
    pub fn toggle_mode(&mut self, mode: LogMode) {
        self.mode = if self.mode == mode {
            LogMode::One
        } else {
            mode
        };
        if self.mode != LogMode::All {
            // One host's lines only means something in the all-hosts view.
            self.host_filter = None;
        }
        self.view_top = None;
        self.current_match = None;
    }

    /// Esc in the log pane: the search first, then a host filter, then back to one host.
    /// Returns false when there was nothing to clear (Esc then does what it does elsewhere).
    pub fn clear_one(&mut self) -> bool {
        if self.search.is_some() {
            self.search = None;
            self.current_match = None;
            if self.mode == LogMode::All {
                self.view_top = None;
            }
        } else if self.host_filter.is_some() {
            self.host_filter = None;
            self.view_top = None;
        } else if self.mode != LogMode::One {
            self.mode = LogMode::One;
            self.view_top = None;
        } else {
            return false;
        }
        true
    }

    /// How many lines of `ring` match the search, and which of them (1-based) is the
    /// current match. Counted once per change of the log or the search, not per frame.
    pub fn match_count(&self, ring: &LogRing, host: usize) -> Option<Count> {
        let needle = self
            .search
            .as_ref()
            .filter(|s| !s.is_empty())?
            .to_lowercase();
        let key = (
            hash(&needle),
            ring.first(),
            ring.end(),
            self.current_match,
            host,
        );
        if let Some((k, v)) = self.count_cache.get() {
            if k == key {
                return Some(v);
            }
            // Only new lines since: count those (a live log with a search on costs the new
            // lines per frame, not the whole log).
            if (k.0, k.1, k.3, k.4) == (key.0, key.1, key.3, key.4) && k.2 <= key.2 {
                let (mut count, rank) = v;
                for n in k.2..key.2 {
                    if ring.get(n).is_some_and(|l| contains_ci(l.text, &needle)) {
                        count += 1;
                    }
                }
                self.count_cache.set(Some((key, (count, rank))));
                return Some((count, rank));
            }
        }
        let mut count = 0;
        let mut rank = None;
        for (n, l) in ring.iter() {
            if contains_ci(l.text, &needle) {
                count += 1;
                if Some(n) == self.current_match {
                    rank = Some(count);
                }
            }
        }
        self.count_cache.set(Some((key, (count, rank))));
        Some((count, rank))
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
        // From the current match on (excluded); the first time from the top line shown
        // (included: a match on the very first line counts) or, backwards, the last line.
        let (from, skip) = match self.current_match {
            Some(m) => (m, 1),
            None if forward => (self.top_line(ring, height), 0),
            None => (end, 1),
        };
        let total = end - first;
        for k in skip..total + skip {
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

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

pub use super::ring::contains_ci;

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
        // A match on the first line shown counts (the top line, not the one after it).
        let mut v = LogView {
            search: Some("line 0".into()),
            top: Some(0),
            ..LogView::default()
        };
        assert!(v.find(&r, 10, true));
        assert_eq!(v.current_match, Some(0));
    }

    #[test]
    fn match_count_follows_new_lines() {
        let mut r = ring(100);
        let v = LogView {
            search: Some("line 1".into()),
            ..LogView::default()
        };
        // line 1, line 10..19
        assert_eq!(v.match_count(&r, 0), Some((11, None)));
        r.push(0, Stream::Stdout, "line 1000");
        r.push(0, Stream::Stdout, "other");
        assert_eq!(v.match_count(&r, 0), Some((12, None)));
        let w = LogView {
            current_match: Some(10),
            ..v.clone()
        };
        assert_eq!(w.match_count(&r, 0), Some((12, Some(2))));
    }
}
