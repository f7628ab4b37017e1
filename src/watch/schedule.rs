//! Which queued bundles may start now.
//!
//! Bundles to the same host land in arrival order (a 1.1 -> 1.2 -> 1.3 chain must not
//! overtake itself), so a bundle waits while any earlier one that shares a host is running
//! *or still waiting*. Bundles with disjoint host sets run side by side, up to a limit on
//! dispatches at once.

use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Default)]
pub struct Scheduler {
    max_running: usize,
    /// Bundle id (arrival order) -> its hosts.
    waiting: BTreeMap<i64, Vec<String>>,
    running: BTreeMap<i64, Vec<String>>,
}

impl Scheduler {
    pub fn new(max_running: usize) -> Scheduler {
        Scheduler {
            max_running: max_running.max(1),
            ..Scheduler::default()
        }
    }

    pub fn push(&mut self, id: i64, hosts: Vec<String>) {
        self.waiting.insert(id, hosts);
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// The bundles that may start now, in arrival order; they count as running from here.
    pub fn start_ready(&mut self) -> Vec<i64> {
        let mut busy: HashSet<&str> = self
            .running
            .values()
            .flatten()
            .map(String::as_str)
            .collect();
        let mut start = Vec::new();
        let mut slots = self.max_running.saturating_sub(self.running.len());
        for (id, hosts) in &self.waiting {
            if slots == 0 {
                break;
            }
            let free = hosts.iter().all(|h| !busy.contains(h.as_str()));
            if free {
                start.push(*id);
                slots -= 1;
            }
            // Started or not, later bundles to these hosts come after this one.
            busy.extend(hosts.iter().map(String::as_str));
        }
        for id in &start {
            if let Some(hosts) = self.waiting.remove(id) {
                self.running.insert(*id, hosts);
            }
        }
        start
    }

    pub fn finish(&mut self, id: i64) {
        self.running.remove(&id);
        self.waiting.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shared_hosts_go_in_arrival_order_and_disjoint_ones_in_parallel() {
        let mut s = Scheduler::new(4);
        s.push(1, hosts(&["a", "b"]));
        s.push(2, hosts(&["b"]));
        s.push(3, hosts(&["c"]));
        s.push(4, hosts(&["c", "d"]));
        s.push(5, hosts(&["e"]));
        assert_eq!(s.start_ready(), [1, 3, 5]);
        assert_eq!(s.start_ready(), Vec::<i64>::new());
        s.finish(3);
        assert_eq!(s.start_ready(), [4]);
        s.finish(1);
        assert_eq!(s.start_ready(), [2]);
    }

    #[test]
    fn a_later_bundle_never_overtakes_a_waiting_one_on_the_same_host() {
        let mut s = Scheduler::new(4);
        s.push(1, hosts(&["a"]));
        assert_eq!(s.start_ready(), [1]);
        s.push(2, hosts(&["a", "b"]));
        s.push(3, hosts(&["b"]));
        // 3 could run on b right now, but 2 (earlier, also on b) waits for a.
        assert_eq!(s.start_ready(), Vec::<i64>::new());
        s.finish(1);
        assert_eq!(s.start_ready(), [2]);
        s.finish(2);
        assert_eq!(s.start_ready(), [3]);
    }

    #[test]
    fn the_limit_on_dispatches_at_once_holds() {
        let mut s = Scheduler::new(2);
        for i in 0..5 {
            s.push(i, hosts(&[&format!("h{i}")]));
        }
        assert_eq!(s.start_ready(), [0, 1]);
        s.finish(0);
        assert_eq!(s.start_ready(), [2]);
        assert_eq!((s.running(), s.waiting()), (2, 2));
    }
}
