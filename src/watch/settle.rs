//! When a file in the drop folder is complete.
//!
//! - Renamed (moved) into the folder: complete at once. Writers that write elsewhere (or to
//!   a `.part` name) and rename are the reliable kind, and the rename is their signal.
//! - Written in place: complete once it was closed after its last write *and* its size,
//!   mtime and inode have not changed for the settle time. The close alone is not enough
//!   (`cp` then `touch`, or a writer that opens and appends once per chunk, closes often).
//! - Found by a scan only (events off, lost, or a network file system where none arrive):
//!   nothing is known about its writers, so two looks at least the settle time apart must
//!   agree. A writer that pauses longer than that mid-file defeats this; such writers should
//!   use a marker (`--marker`) or a rename.
//! - With a marker suffix, additionally, `NAME.SUFFIX` must exist.
//!
//! The [`Tracker`] holds no clock and does no I/O: the caller passes `now` and a function
//! that looks at a file again, so the rules are tested without sleeping.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What identifies one version of a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime_ns: i64,
    pub ino: u64,
}

impl FileStat {
    pub fn of(meta: &std::fs::Metadata) -> FileStat {
        use std::os::unix::fs::MetadataExt;
        FileStat {
            size: meta.len(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            ino: meta.ino(),
        }
    }
}

/// What a file system event (or scan) says about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Renamed or moved into the folder.
    MovedIn,
    /// Created or written: it is open for writing until a close is seen.
    Written,
    /// Closed after writing.
    Closed,
    /// Found by a scan, or its metadata changed: says nothing about writers.
    Seen,
}

/// What [`Tracker::poll`] found out about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Complete: admit it (then [`Tracker::take`] or [`Tracker::hold`] it).
    Ready(FileStat),
    /// Not complete after the settle time: it keeps changing, or is still open.
    StillWriting { size: u64, since: Instant },
    /// Complete, but its marker file is not there yet.
    AwaitingMarker,
}

#[derive(Debug, Clone)]
struct Entry {
    stat: FileStat,
    first_seen: Instant,
    /// When `stat` was last seen to change (or first seen).
    changed_at: Instant,
    /// A write was seen and no close after it.
    open: bool,
    moved_in: bool,
    /// Complete but waiting for its marker: no settle deadline until something changes.
    awaiting_marker: bool,
    /// Complete, but the queue is full: left in the folder until [`Tracker::release`].
    held: bool,
    reported_at: Option<Instant>,
}

/// The files of one folder that are not yet admitted.
#[derive(Debug)]
pub struct Tracker {
    settle: Duration,
    /// How often a file still being written (or awaiting its marker) is reported again.
    report_every: Duration,
    files: BTreeMap<String, Entry>,
}

impl Tracker {
    pub fn new(settle: Duration, report_every: Duration) -> Tracker {
        Tracker {
            settle,
            report_every,
            files: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// Records what an event or a scan saw: `None` means the file is gone.
    pub fn observe(&mut self, name: &str, stat: Option<FileStat>, hint: Hint, now: Instant) {
        let Some(stat) = stat else {
            self.files.remove(name);
            return;
        };
        let entry = self.files.entry(name.to_owned()).or_insert(Entry {
            stat,
            first_seen: now,
            changed_at: now,
            open: false,
            moved_in: false,
            awaiting_marker: false,
            held: false,
            reported_at: None,
        });
        if entry.stat != stat {
            entry.stat = stat;
            entry.changed_at = now;
            entry.moved_in = false;
            entry.awaiting_marker = false;
            entry.held = false;
        }
        match hint {
            Hint::MovedIn => {
                entry.moved_in = true;
                entry.open = false;
            }
            Hint::Written => {
                entry.open = true;
                entry.moved_in = false;
                entry.awaiting_marker = false;
            }
            Hint::Closed => entry.open = false,
            Hint::Seen => {}
        }
    }

    /// Events were lost (queue overflow): a close may have been among them, so no file waits
    /// for one any more; they are judged by the settle time alone.
    pub fn events_lost(&mut self) {
        for e in self.files.values_mut() {
            e.open = false;
        }
    }

    /// A marker file appeared or went away: look at its bundle again.
    pub fn marker_changed(&mut self, name: &str) {
        if let Some(e) = self.files.get_mut(name) {
            e.awaiting_marker = false;
        }
    }

    /// Forgets names not in `present` (a scan's listing): files removed while events were off.
    pub fn retain(&mut self, present: &std::collections::HashSet<String>) {
        self.files.retain(|name, _| present.contains(name));
    }

    /// Stops tracking `name` (it was admitted).
    pub fn take(&mut self, name: &str) {
        self.files.remove(name);
    }

    /// Leaves a complete file in the folder while the queue is full.
    pub fn hold(&mut self, name: &str) {
        if let Some(e) = self.files.get_mut(name) {
            e.held = true;
        }
    }

    /// The queue has room again: held files are looked at on the next poll.
    pub fn release(&mut self) {
        for e in self.files.values_mut() {
            e.held = false;
        }
    }

    /// Judges every file. `restat` looks at a file again (`None`: gone) before it is called
    /// complete; `has_marker` says whether its marker exists (always true without markers).
    /// Returns the complete files, and those to report as still being written or awaiting
    /// their marker (at most once per `report_every` each).
    pub fn poll(
        &mut self,
        now: Instant,
        mut restat: impl FnMut(&str) -> Option<FileStat>,
        has_marker: impl Fn(&str) -> bool,
    ) -> Vec<(String, Verdict)> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (name, e) in self.files.iter_mut() {
            if e.held {
                continue;
            }
            let settled = !e.open && now.duration_since(e.changed_at) >= self.settle;
            if e.moved_in || settled {
                match restat(name) {
                    None => {
                        gone.push(name.clone());
                        continue;
                    }
                    Some(s) if s != e.stat => {
                        e.stat = s;
                        e.changed_at = now;
                        e.moved_in = false;
                        e.awaiting_marker = false;
                    }
                    Some(s) if has_marker(name) => {
                        out.push((name.clone(), Verdict::Ready(s)));
                        continue;
                    }
                    Some(_) => {
                        e.awaiting_marker = true;
                        if due(e.reported_at, now, self.report_every) {
                            e.reported_at = Some(now);
                            out.push((name.clone(), Verdict::AwaitingMarker));
                        }
                        continue;
                    }
                }
            }
            if now.duration_since(e.first_seen) >= self.settle
                && due(e.reported_at, now, self.report_every)
            {
                e.reported_at = Some(now);
                out.push((
                    name.clone(),
                    Verdict::StillWriting {
                        size: e.stat.size,
                        since: e.first_seen,
                    },
                ));
            }
        }
        for name in gone {
            self.files.remove(&name);
        }
        out
    }

    /// When [`Tracker::poll`] may have something new to say without any new event: the
    /// caller sleeps until then (or the next event), never in a busy loop.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.files
            .values()
            .filter(|e| !e.held)
            .flat_map(|e| {
                let settle = (!e.open && !e.awaiting_marker).then(|| {
                    if e.moved_in {
                        e.changed_at
                    } else {
                        e.changed_at + self.settle
                    }
                });
                let report = match e.reported_at {
                    Some(at) => at + self.report_every,
                    None => e.first_seen + self.settle,
                };
                settle.into_iter().chain(Some(report))
            })
            .min()
    }
}

fn due(last: Option<Instant>, now: Instant, every: Duration) -> bool {
    last.is_none_or(|at| now.duration_since(at) >= every)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SETTLE: Duration = Duration::from_secs(2);

    fn stat(size: u64, mtime: i64) -> FileStat {
        FileStat {
            size,
            mtime_ns: mtime,
            ino: 1,
        }
    }

    /// A fake folder: what `restat` returns.
    struct Folder(HashMap<String, FileStat>);

    impl Folder {
        fn poll(&self, t: &mut Tracker, now: Instant) -> Vec<(String, Verdict)> {
            t.poll(now, |n| self.0.get(n).copied(), |_| true)
        }
    }

    fn ready(v: &[(String, Verdict)]) -> Vec<&str> {
        v.iter()
            .filter(|(_, v)| matches!(v, Verdict::Ready(_)))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    #[test]
    fn a_file_moved_in_is_complete_at_once() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE, Duration::from_secs(30));
        let f = Folder([("a.tgz".to_owned(), stat(5, 1))].into());
        t.observe("a.tgz", Some(stat(5, 1)), Hint::MovedIn, t0);
        assert_eq!(t.next_deadline(), Some(t0));
        assert_eq!(ready(&f.poll(&mut t, t0)), ["a.tgz"]);
    }

    #[test]
    fn a_file_written_in_place_waits_for_its_close_and_the_settle_time() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE, Duration::from_secs(30));
        let mut f = Folder([("a.tgz".to_owned(), stat(5, 1))].into());
        t.observe("a.tgz", Some(stat(5, 1)), Hint::Written, t0);
        // Open: never complete, however long it stays the same.
        assert!(ready(&f.poll(&mut t, t0 + 10 * SETTLE)).is_empty());
        // Another chunk, then the close.
        let t1 = t0 + 10 * SETTLE;
        f.0.insert("a.tgz".into(), stat(9, 2));
        t.observe("a.tgz", Some(stat(9, 2)), Hint::Written, t1);
        t.observe("a.tgz", Some(stat(9, 2)), Hint::Closed, t1);
        assert_eq!(t.next_deadline(), Some(t1 + SETTLE));
        assert!(ready(&f.poll(&mut t, t1 + SETTLE / 2)).is_empty());
        assert_eq!(ready(&f.poll(&mut t, t1 + SETTLE)), ["a.tgz"]);
    }

    #[test]
    fn a_change_seen_only_when_looking_again_restarts_the_settle_time() {
        // Events off: found by a scan, then changed before the second look.
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE, Duration::from_secs(30));
        let mut f = Folder([("a.tgz".to_owned(), stat(5, 1))].into());
        t.observe("a.tgz", Some(stat(5, 1)), Hint::Seen, t0);
        f.0.insert("a.tgz".into(), stat(7, 2));
        assert!(ready(&f.poll(&mut t, t0 + SETTLE)).is_empty());
        assert_eq!(t.next_deadline(), Some(t0 + 2 * SETTLE));
        assert_eq!(ready(&f.poll(&mut t, t0 + 2 * SETTLE)), ["a.tgz"]);
    }

    #[test]
    fn a_file_that_keeps_changing_is_reported_and_never_ready() {
        let t0 = Instant::now();
        let every = Duration::from_secs(5);
        let mut t = Tracker::new(SETTLE, every);
        let mut f = Folder(HashMap::new());
        let mut reports = 0;
        for i in 0..40u64 {
            // A chunk every second, each closed (append mode): never quiet for 2 s.
            let now = t0 + Duration::from_secs(i);
            f.0.insert("a.tgz".into(), stat(i + 1, i as i64));
            t.observe("a.tgz", Some(stat(i + 1, i as i64)), Hint::Written, now);
            t.observe("a.tgz", Some(stat(i + 1, i as i64)), Hint::Closed, now);
            let out = f.poll(&mut t, now + Duration::from_millis(900));
            assert!(ready(&out).is_empty(), "ready while changing at {i}s");
            reports += out
                .iter()
                .filter(|(_, v)| matches!(v, Verdict::StillWriting { .. }))
                .count();
        }
        // First after the settle time, then once per `every`: not once per poll.
        assert!((7..=9).contains(&reports), "{reports} reports");
    }

    #[test]
    fn lost_events_release_files_waiting_for_a_close() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE, Duration::from_secs(30));
        let f = Folder([("a.tgz".to_owned(), stat(5, 1))].into());
        t.observe("a.tgz", Some(stat(5, 1)), Hint::Written, t0);
        assert!(ready(&f.poll(&mut t, t0 + SETTLE)).is_empty());
        t.events_lost();
        assert_eq!(ready(&f.poll(&mut t, t0 + SETTLE)), ["a.tgz"]);
    }

    #[test]
    fn a_marker_is_waited_for_without_polling_in_a_loop() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE, Duration::from_secs(30));
        let f = Folder([("a.tgz".to_owned(), stat(5, 1))].into());
        t.observe("a.tgz", Some(stat(5, 1)), Hint::MovedIn, t0);
        let out = t.poll(t0, |n| f.0.get(n).copied(), |_| false);
        assert_eq!(out, [("a.tgz".to_owned(), Verdict::AwaitingMarker)]);
        // Only the next report is due: no deadline that would spin.
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(30)));
        t.marker_changed("a.tgz");
        let out = t.poll(t0, |n| f.0.get(n).copied(), |_| true);
        assert_eq!(ready(&out), ["a.tgz"]);
    }

    #[test]
    fn held_and_vanished_files() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE, Duration::from_secs(30));
        let mut f = Folder([("a.tgz".to_owned(), stat(5, 1))].into());
        t.observe("a.tgz", Some(stat(5, 1)), Hint::MovedIn, t0);
        t.hold("a.tgz");
        assert_eq!(t.next_deadline(), None);
        assert!(f.poll(&mut t, t0).is_empty());
        t.release();
        f.0.clear();
        assert!(f.poll(&mut t, t0).is_empty());
        assert!(t.is_empty(), "a file gone before admission is forgotten");
    }
}
