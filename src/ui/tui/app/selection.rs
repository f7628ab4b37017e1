//! Keeping what the user selected where it is: a new dispatch, a reload, a filter typed or
//! cleared never moves the cursor off the item it was on (issue 15, items 4 and 6). Items
//! are remembered by what they are (host name, bundle name, dispatch id), not by row.

use super::{App, Focus, PackageItem};

/// What each list had selected, by identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anchor {
    keys: [Option<String>; 4],
}

impl Anchor {
    /// The selected item of list `l`, by identity.
    pub fn key(&self, l: usize) -> Option<&str> {
        self.keys[l].as_deref()
    }
}

impl App {
    /// The identity of row `i` (an index into the unfiltered list) of list `l`.
    pub(super) fn item_key(&self, l: usize, i: usize) -> Option<String> {
        match l {
            0 => self.hosts.get(i).map(|h| h.name.clone()),
            1 => match self.package_item(i)? {
                PackageItem::Watched(w) => Some(format!("w:{}", w.name)),
                PackageItem::Listed(p) => Some(format!("p:{}", p.name)),
            },
            2 => self.dispatches.get(i).map(|d| d.id.to_string()),
            _ => self
                .selected_dispatch()
                .and_then(|d| d.targets.get(i))
                .map(|t| t.host.clone()),
        }
    }

    /// The selected item of every list.
    pub fn anchor(&self) -> Anchor {
        let mut keys: [Option<String>; 4] = Default::default();
        for (l, k) in keys.iter_mut().enumerate() {
            *k = self
                .visible(l)
                .get(self.selected[l])
                .and_then(|&i| self.item_key(l, i));
        }
        Anchor { keys }
    }

    /// Puts every list's selection back on the item `a` names, where it is still shown.
    /// The log pane keeps its place when the dispatch and host it shows did not change.
    pub fn restore(&mut self, a: &Anchor) {
        for l in 0..4 {
            let Some(key) = &a.keys[l] else { continue };
            let rows = self.visible(l);
            if let Some(pos) = rows
                .iter()
                .position(|&i| self.item_key(l, i).as_deref() == Some(key))
            {
                self.selected[l] = pos;
            }
        }
        self.ensure_loaded();
    }

    /// Sets list `l`'s filter, keeping the cursor on the item it was on when that item
    /// still passes (else the first row).
    pub(super) fn set_filter(&mut self, l: usize, filter: String) {
        self.set_filter_at(l, filter, None);
    }

    /// [`App::set_filter`], keeping the cursor on `origin` (an item key) when given.
    pub(super) fn set_filter_at(&mut self, l: usize, filter: String, origin: Option<&str>) {
        let before = self.anchor();
        let was = origin.map(str::to_owned).or_else(|| before.keys[l].clone());
        self.filters[l] = filter;
        self.selected[l] = 0;
        self.offsets[l].set(0);
        if let Some(key) = was {
            let rows = self.visible(l);
            if let Some(pos) = rows
                .iter()
                .position(|&i| self.item_key(l, i).as_deref() == Some(&key))
            {
                self.selected[l] = pos;
            }
        }
        if l == 2 && self.anchor().keys[2] != before.keys[2] {
            self.selected[3] = 0;
            self.offsets[3].set(0);
            self.log = self.log.reset();
        }
        self.ensure_loaded();
    }

    /// `F`: follow the newest dispatch (a new one is selected as it starts) or keep the
    /// selection where the user put it (the default).
    pub(super) fn toggle_follow(&mut self) {
        self.follow = !self.follow;
        if self.follow {
            if self.filters[2].is_empty() && self.selected[2] != 0 {
                self.selected[2] = usize::MAX;
                self.select(2, 0);
            }
            self.info("following the newest dispatch (F stops)");
        } else {
            self.info("not following: the selection stays where you put it (F follows)");
        }
    }

    /// A new dispatch `id` is in the list. Following, or with nothing selected before, it
    /// is selected; otherwise the selection stays on the dispatch and host it was on, and the
    /// status bar says where the new one is.
    /// `ours`: started from this console (it then gets the focus when selected).
    pub(super) fn new_dispatch_shown(&mut self, id: i64, before: &Anchor, ours: bool) {
        let had = before.keys[2].is_some();
        if self.follow || !had {
            self.filters[2].clear();
            self.selected[2] = usize::MAX;
            let pos = self.dispatches.iter().position(|d| d.id == id).unwrap_or(0);
            self.select(2, pos);
            if ours {
                self.focus = Focus::Targets;
            }
        } else {
            self.restore(before);
            self.info(format!(
                "dispatch #{id} started: top of Dispatches (F follows the newest)"
            ));
        }
    }
}

/// The columns Hosts (0) and Targets (3) sort by, by header; other lists keep their order
/// (Dispatches newest first, Packages the folder's then history's).
pub fn sort_columns(l: usize) -> &'static [&'static str] {
    match l {
        0 => &["HOST", "REACH", "LAST", "WHEN"],
        3 => &["HOST", "STEP", "TIME", "ERROR"],
        _ => &[],
    }
}

impl App {
    /// `o`: sort by the next column (after the last one: the original order again).
    pub(super) fn cycle_sort(&mut self, l: usize) {
        let cols = sort_columns(l);
        if cols.is_empty() {
            return self.info("this list keeps its order (o sorts Hosts and Targets)");
        }
        let a = self.anchor();
        self.sort[l] = match self.sort[l] {
            None => Some((0, false)),
            Some((c, d)) if c + 1 < cols.len() => Some((c + 1, d)),
            Some(_) => None,
        };
        self.restore(&a);
        self.sort_said(l);
    }

    /// `O`: reverse the sort.
    pub(super) fn reverse_sort(&mut self, l: usize) {
        let a = self.anchor();
        self.sort[l] = match self.sort[l] {
            Some((c, d)) => Some((c, !d)),
            None if !sort_columns(l).is_empty() => Some((0, true)),
            None => None,
        };
        self.restore(&a);
        self.sort_said(l);
    }

    fn sort_said(&mut self, l: usize) {
        let msg = match self.sort[l] {
            Some((c, d)) => format!(
                "sorted by {} {} (o next column, O reverses)",
                sort_columns(l)[c],
                if d { "descending" } else { "ascending" }
            ),
            None => "original order (o sorts)".into(),
        };
        self.info(msg);
    }

    /// Sorts `rows` (indexes into list `l`) by the list's sort column; stable, so equal
    /// keys keep the original order.
    pub(super) fn sort_rows(&self, l: usize, rows: &mut [usize]) {
        use crate::ui::tui::model::ReachShown;
        let Some((col, desc)) = self.sort[l] else {
            return;
        };
        // Text keys compare as text, times as numbers (zero-padded so text order works).
        let key = |i: usize| -> String {
            match l {
                0 => {
                    let h = &self.hosts[i];
                    match col {
                        0 => h.name.clone(),
                        1 => match h.reach_shown() {
                            ReachShown::Down { .. } => "0".into(),
                            ReachShown::Probing => "1".into(),
                            ReachShown::Unknown => "2".into(),
                            ReachShown::Up { millis } => format!("3{:012}", millis.unwrap_or(0)),
                        },
                        2 => h
                            .last
                            .as_ref()
                            .map_or("~".into(), |x| x.result.as_str().to_owned()),
                        _ => format!(
                            "{:020}",
                            h.last.as_ref().and_then(|x| x.finished_at).unwrap_or(0)
                        ),
                    }
                }
                _ => {
                    let Some(t) = self.selected_dispatch().and_then(|d| d.targets.get(i)) else {
                        return String::new();
                    };
                    match col {
                        0 => t.host.clone(),
                        1 => t.status(),
                        2 => format!(
                            "{:020}",
                            t.finished_at.unwrap_or(self.now) - t.started_at.unwrap_or(self.now)
                        ),
                        _ => t.why(),
                    }
                }
            }
        };
        let mut keyed: Vec<(String, usize)> = rows.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| if desc { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
        for (slot, (_, i)) in rows.iter_mut().zip(keyed) {
            *slot = i;
        }
    }
}
