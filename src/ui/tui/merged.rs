//! The all-hosts log's index: every shown line of a dispatch's hosts in arrival order. It is
//! built once and then extended with the lines that arrived since the last frame, so
//! following a live dispatch costs the new lines only.

use super::model::DispatchView;
use super::ring::contains_ci;
use std::cell::RefCell;
use std::collections::VecDeque;

/// What the merged index was built for: rebuilt from scratch when any of it changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Key {
    dispatch: i64,
    hosts: usize,
    host: Option<usize>,
    needle: Option<String>,
}

/// Every shown line of a dispatch's hosts, in arrival order: `(target, line number)`.
/// Entries whose line a ring has since dropped are skipped when drawn and trimmed from the
/// front; row numbers (`base` + position) never change while a row is held.
#[derive(Debug, Default)]
pub struct Merged {
    key: Key,
    /// Per target: the first line not looked at yet.
    seen: Vec<u64>,
    rows: VecDeque<(u32, u64)>,
    base: u64,
}

impl Merged {
    /// Takes in the lines that arrived since the last call (all of them after a change of
    /// dispatch or filter): new lines of all hosts are ordered by their time, then host.
    pub fn update(&mut self, d: &DispatchView, host: Option<usize>, needle: Option<&str>) {
        let key = Key {
            dispatch: d.id,
            hosts: d.targets.len(),
            host,
            needle: needle.filter(|n| !n.is_empty()).map(str::to_lowercase),
        };
        if key != self.key {
            *self = Merged {
                seen: vec![0; d.targets.len()],
                key,
                ..Merged::default()
            };
        }
        let mut new: Vec<(i64, u32, u64)> = Vec::new();
        for (ti, t) in d.targets.iter().enumerate() {
            if self.key.host.is_some_and(|h| h != ti) {
                continue;
            }
            let from = self.seen[ti].max(t.log.first());
            for n in from..t.log.end() {
                let Some(l) = t.log.get(n) else { continue };
                if let Some(nd) = &self.key.needle
                    && !contains_ci(l.text, nd)
                {
                    continue;
                }
                new.push((l.at, ti as u32, n));
            }
            self.seen[ti] = t.log.end();
        }
        new.sort_unstable();
        self.rows.extend(new.into_iter().map(|(_, t, n)| (t, n)));
        // Lines the rings dropped (memory budget) leave the front.
        while let Some(&(t, n)) = self.rows.front() {
            if d.targets
                .get(t as usize)
                .is_some_and(|x| n >= x.log.first())
            {
                break;
            }
            self.rows.pop_front();
            self.base += 1;
        }
    }

    /// Row numbers held: `first()..end()`.
    pub fn first(&self) -> u64 {
        self.base
    }

    pub fn end(&self) -> u64 {
        self.base + self.rows.len() as u64
    }

    pub fn get(&self, row: u64) -> Option<(u32, u64)> {
        let i = row.checked_sub(self.base)?;
        self.rows.get(usize::try_from(i).ok()?).copied()
    }
}

/// [`Merged`] behind a `RefCell`: the renderer extends it while drawing from `&App`. Two
/// views compare equal whatever their caches hold.
#[derive(Debug, Default)]
pub struct MergedCache(pub RefCell<Merged>);

impl Clone for MergedCache {
    fn clone(&self) -> MergedCache {
        MergedCache::default()
    }
}

impl PartialEq for MergedCache {
    fn eq(&self, _: &MergedCache) -> bool {
        true
    }
}

impl Eq for MergedCache {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::events::Event;
    use crate::transport::Stream;

    fn out(host: &str, at: i64, line: &str) -> Event {
        Event::Output {
            dispatch: 1,
            at,
            host: host.into(),
            step: crate::engine::events::Step::Upgrade,
            stream: Stream::Stdout,
            lines: line.into(),
        }
    }

    pub fn dispatch(lines: &[(&str, i64, &str)]) -> DispatchView {
        let mut d = DispatchView::from_summary(&crate::journal::DispatchSummary {
            id: 1,
            bundle: "b".into(),
            rule: "r".into(),
            started_at: 0,
            finished_at: None,
            state: crate::journal::DispatchState::Running,
            hosts: 3,
            succeeded: 0,
            failed: 0,
            skipped: 0,
            cancelled: 0,
            duration_ms: None,
        });
        d.apply(
            &Event::DispatchStarted {
                dispatch: 1,
                at: 0,
                bundle: "b".into(),
                rule: "r".into(),
                hosts: vec!["a".into(), "b".into(), "c".into()],
            },
            100,
        );
        for (h, at, l) in lines {
            d.apply(&out(h, *at, l), 100);
        }
        d
    }

    #[test]
    fn merged_is_in_arrival_order_and_grows_by_the_new_lines() {
        let mut d = dispatch(&[("b", 2, "b1"), ("a", 1, "a1"), ("c", 3, "c1")]);
        let mut m = Merged::default();
        m.update(&d, None, None);
        let rows: Vec<_> = (m.first()..m.end()).filter_map(|r| m.get(r)).collect();
        assert_eq!(rows, [(0, 0), (1, 0), (2, 0)]);
        d.apply(&out("a", 4, "a2"), 100);
        m.update(&d, None, None);
        assert_eq!(m.get(3), Some((0, 1)));
        assert_eq!(m.end(), 4);
        // Filters rebuild it.
        m.update(&d, Some(0), None);
        assert_eq!(m.end() - m.first(), 2);
        m.update(&d, None, Some("C1"));
        assert_eq!(m.get(m.first()), Some((2, 0)));
        assert_eq!(m.end() - m.first(), 1);
    }
}
