//! The watched drop folder (`--tui --watch DIR`) as the Packages pane shows it: each bundle
//! with where it stands (seen, still being written, awaiting its marker, queued,
//! dispatching, done/failed/unmatched and why), newest first, plus whether automatic
//! dispatching is paused. Kept from the watcher's [`WatchEvent`]s (and, at start, from the
//! journal's `watch_bundle` rows), never by reading the folder: the watcher owns it.

use crate::engine::events::Millis;
use crate::journal::{BundleState, WatchRow};
use crate::watch::WatchEvent;
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;

/// Finished bundles kept on screen; open ones are always kept. Older ones stay in the
/// journal and on the folder's shelves.
pub const KEEP: usize = 1000;

/// Where one bundle of the folder stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Found, not complete yet.
    Seen,
    /// Keeps changing past the settle time: never shipped while it does.
    Writing,
    /// Complete, waiting for `marker` (the marker file's name).
    AwaitingMarker {
        marker: String,
    },
    /// Recorded; being moved out of the folder and hashed.
    Staging,
    /// Waiting for its hosts and a free slot (or for resume, when paused).
    Queued,
    Dispatching {
        dispatch: i64,
    },
    /// Cancelled by a shutdown: goes on at the next start.
    Suspended {
        dispatch: i64,
    },
    Finished {
        state: BundleState,
        dispatch: Option<i64>,
        reason: Option<String>,
        moved_to: Option<PathBuf>,
    },
}

/// One bundle of the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedBundle {
    /// The journal's `watch_bundle` id, once recorded.
    pub bundle: Option<i64>,
    pub name: String,
    pub size: u64,
    pub rule: Option<String>,
    pub stage: Stage,
    /// When it reached this stage.
    pub at: Millis,
}

impl WatchedBundle {
    /// Not finished (suspended counts as open: it goes on at the next start).
    pub fn is_open(&self) -> bool {
        !matches!(self.stage, Stage::Finished { .. })
    }

    /// The dispatch that shipped (or ships) it.
    pub fn dispatch(&self) -> Option<i64> {
        match &self.stage {
            Stage::Dispatching { dispatch } | Stage::Suspended { dispatch } => Some(*dispatch),
            Stage::Finished { dispatch, .. } => *dispatch,
            _ => None,
        }
    }

    /// The state column: `queued`, `dispatching #12`, `failed #12: upgrade exited 2`.
    pub fn text(&self) -> String {
        match &self.stage {
            Stage::Seen => "seen".into(),
            Stage::Writing => "still being written".into(),
            Stage::AwaitingMarker { marker } => format!("awaiting {marker}"),
            Stage::Staging => "staging".into(),
            Stage::Queued => "queued".into(),
            Stage::Dispatching { dispatch } => format!("dispatching #{dispatch}"),
            Stage::Suspended { dispatch } => format!("suspended #{dispatch}"),
            Stage::Finished {
                state,
                dispatch,
                reason,
                ..
            } => {
                let mut s = state.as_str().to_owned();
                if let Some(d) = dispatch {
                    s.push_str(&format!(" #{d}"));
                }
                if let Some(r) = reason {
                    s.push_str(": ");
                    s.push_str(r.lines().next().unwrap_or_default());
                }
                s
            }
        }
    }

    fn from_row(r: &WatchRow) -> WatchedBundle {
        let stage = match r.state {
            BundleState::Staging => Stage::Staging,
            BundleState::Queued => Stage::Queued,
            // Read before the watcher started: it resumes (or shelves) these at once.
            BundleState::Dispatching => match r.dispatch {
                Some(dispatch) => Stage::Suspended { dispatch },
                None => Stage::Queued,
            },
            state => Stage::Finished {
                state,
                dispatch: r.dispatch,
                reason: r.reason.clone(),
                moved_to: r.archived_path.clone(),
            },
        };
        let at = r
            .finished_at
            .or(r.started_at)
            .or(r.queued_at)
            .unwrap_or(r.seen_at);
        WatchedBundle {
            bundle: Some(r.id),
            name: r.name.clone(),
            size: r.size,
            rule: r.rule.clone(),
            stage,
            at,
        }
    }
}

/// The folder as the console knows it.
#[derive(Debug, Clone)]
pub struct WatchView {
    /// Canonical, as the journal keys it.
    pub dir: PathBuf,
    /// Between `WatchStarted` and `WatchStopped`.
    pub active: bool,
    /// Automatic dispatching paused (`a`, `:pause`): files are still taken and queued.
    pub paused: bool,
    /// False with `--rescan-only`.
    pub fs_events: bool,
    /// Complete files left in the folder because the queue is full.
    pub held: usize,
    /// The last problem the watcher survived.
    pub error: Option<String>,
    /// Newest first.
    pub rows: VecDeque<WatchedBundle>,
    /// Dispatches the watcher started: only the watcher can stop them.
    pub dispatches: HashSet<i64>,
}

/// What an event did to the rows (the Packages selection follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// Something shown changed.
    Updated,
    /// A row was added at the top.
    Added,
}

impl WatchView {
    /// The folder `dir` with its history from the journal (newest first).
    pub fn new(dir: PathBuf, history: &[WatchRow]) -> WatchView {
        let rows: VecDeque<WatchedBundle> = history
            .iter()
            .take(KEEP)
            .map(WatchedBundle::from_row)
            .collect();
        let dispatches = rows.iter().filter_map(WatchedBundle::dispatch).collect();
        WatchView {
            dir,
            active: false,
            paused: false,
            fs_events: true,
            held: 0,
            error: None,
            rows,
            dispatches,
        }
    }

    /// Bundles waiting for their turn.
    pub fn queued(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r.stage, Stage::Queued | Stage::Staging))
            .count()
    }

    /// Bundles whose dispatch runs.
    pub fn in_flight(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r.stage, Stage::Dispatching { .. }))
            .count()
    }

    /// Dispatch `id` was started by the watcher.
    pub fn owns(&self, id: i64) -> bool {
        self.dispatches.contains(&id)
    }

    /// The row of journal bundle `id`.
    fn by_id(&mut self, id: i64) -> Option<&mut WatchedBundle> {
        self.rows.iter_mut().find(|r| r.bundle == Some(id))
    }

    /// The newest row named `name` not yet recorded (seen, being written, awaiting marker).
    fn unrecorded(&mut self, name: &str) -> Option<usize> {
        self.rows
            .iter()
            .position(|r| r.bundle.is_none() && r.name == name)
    }

    fn add(&mut self, row: WatchedBundle) {
        self.rows.push_front(row);
        if self.rows.len() > KEEP
            && let Some(i) = self.rows.iter().rposition(|r| !r.is_open())
        {
            self.rows.remove(i);
        }
    }

    /// A row for `name` before it is recorded: the existing one, or a new one on top.
    fn touch(&mut self, name: &str, size: u64, stage: Stage, at: Millis) -> Change {
        match self.unrecorded(name) {
            Some(i) => {
                let r = &mut self.rows[i];
                r.size = size.max(r.size);
                r.stage = stage;
                r.at = at;
                Change::Updated
            }
            None => {
                self.add(WatchedBundle {
                    bundle: None,
                    name: name.to_owned(),
                    size,
                    rule: None,
                    stage,
                    at,
                });
                Change::Added
            }
        }
    }

    /// Sets the stage of bundle `id` (named `name`), adding a row if it is not shown.
    fn set(&mut self, id: i64, name: &str, stage: Stage, at: Millis) -> Change {
        if let Some(r) = self.by_id(id) {
            r.stage = stage;
            r.at = at;
            return Change::Updated;
        }
        self.add(WatchedBundle {
            bundle: Some(id),
            name: name.to_owned(),
            size: 0,
            rule: None,
            stage,
            at,
        });
        Change::Added
    }

    pub fn apply(&mut self, e: &WatchEvent) -> Change {
        match e {
            WatchEvent::WatchStarted { fs_events, .. } => {
                self.active = true;
                self.fs_events = *fs_events;
                Change::Updated
            }
            WatchEvent::BundleSeen { at, name, size } => self.touch(name, *size, Stage::Seen, *at),
            WatchEvent::BundleGone { at, name } => match self.unrecorded(name) {
                Some(i) => {
                    let r = &mut self.rows[i];
                    r.stage = Stage::Finished {
                        state: BundleState::Vanished,
                        dispatch: None,
                        reason: Some("left the folder before it was complete".into()),
                        moved_to: None,
                    };
                    r.at = *at;
                    Change::Updated
                }
                None => Change::None,
            },
            WatchEvent::BundleWriting { at, name, size, .. } => {
                self.touch(name, *size, Stage::Writing, *at)
            }
            WatchEvent::BundleAwaitingMarker { at, name, marker } => self.touch(
                name,
                0,
                Stage::AwaitingMarker {
                    marker: marker.clone(),
                },
                *at,
            ),
            WatchEvent::BundleQueued {
                at,
                bundle,
                name,
                size,
                rule,
                ..
            } => {
                let change = if let Some(r) = self.by_id(*bundle) {
                    r.stage = Stage::Queued;
                    r.at = *at;
                    Change::Updated
                } else if let Some(i) = self.unrecorded(name) {
                    let r = &mut self.rows[i];
                    r.bundle = Some(*bundle);
                    r.stage = Stage::Queued;
                    r.at = *at;
                    Change::Updated
                } else {
                    self.add(WatchedBundle {
                        bundle: Some(*bundle),
                        name: name.clone(),
                        size: *size,
                        rule: None,
                        stage: Stage::Queued,
                        at: *at,
                    });
                    Change::Added
                };
                if let Some(r) = self.by_id(*bundle) {
                    r.size = *size;
                    r.rule = rule.clone();
                }
                change
            }
            WatchEvent::BundleDispatching {
                at,
                bundle,
                name,
                dispatch,
                ..
            } => {
                self.dispatches.insert(*dispatch);
                self.set(
                    *bundle,
                    name,
                    Stage::Dispatching {
                        dispatch: *dispatch,
                    },
                    *at,
                )
            }
            WatchEvent::BundleFinished {
                at,
                bundle,
                name,
                state,
                dispatch,
                moved_to,
                reason,
            } => self.set(
                *bundle,
                name,
                Stage::Finished {
                    state: *state,
                    dispatch: *dispatch,
                    reason: reason.clone(),
                    moved_to: moved_to.clone(),
                },
                *at,
            ),
            WatchEvent::BundleSuspended {
                at,
                bundle,
                name,
                dispatch,
            } => self.set(
                *bundle,
                name,
                Stage::Suspended {
                    dispatch: *dispatch,
                },
                *at,
            ),
            WatchEvent::QueueFull {
                waiting_in_folder, ..
            } => {
                self.held = *waiting_in_folder;
                Change::Updated
            }
            WatchEvent::Paused { .. } => {
                self.paused = true;
                Change::Updated
            }
            WatchEvent::Resumed { .. } => {
                self.paused = false;
                Change::Updated
            }
            WatchEvent::WatchError { message, .. } => {
                self.error = Some(message.clone());
                Change::Updated
            }
            WatchEvent::WatchStopped { .. } => {
                self.active = false;
                Change::Updated
            }
        }
    }

    /// The header of the Packages pane: `watch PAUSED · 3 queued · 1 dispatching · DIR`
    /// (the folder last: it is the longest part and the first a narrow title cuts).
    pub fn header(&self) -> String {
        let mut parts = vec![
            if self.paused {
                "watch PAUSED"
            } else if self.active {
                "watching"
            } else {
                "watch stopped"
            }
            .to_owned(),
        ];
        parts.push(format!("{} queued", self.queued()));
        let n = self.in_flight();
        if n > 0 {
            parts.push(format!("{n} dispatching"));
        }
        if self.held > 0 && self.queued() > 0 {
            parts.push(format!("{} wait in the folder (queue full)", self.held));
        }
        if !self.fs_events {
            parts.push("rescans only".into());
        }
        parts.push(self.dir.display().to_string());
        parts.join(" · ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev_seen(name: &str) -> WatchEvent {
        WatchEvent::BundleSeen {
            at: 1,
            name: name.into(),
            size: 10,
        }
    }

    #[test]
    fn a_file_that_leaves_before_it_is_complete_says_so() {
        let mut v = WatchView::new(PathBuf::from("/drop"), &[]);
        v.apply(&ev_seen("a.tgz"));
        assert_eq!(
            v.apply(&WatchEvent::BundleGone {
                at: 2,
                name: "a.tgz".into()
            }),
            Change::Updated
        );
        assert_eq!(
            v.rows[0].text(),
            "vanished: left the folder before it was complete"
        );
        // Dropped again: the same row is seen again.
        assert_eq!(v.apply(&ev_seen("a.tgz")), Change::Updated);
        assert_eq!((v.rows.len(), v.rows[0].text().as_str()), (1, "seen"));
    }

    #[test]
    fn a_bundle_goes_from_seen_to_done_in_one_row() {
        let mut v = WatchView::new(PathBuf::from("/drop"), &[]);
        assert_eq!(v.apply(&ev_seen("a.tgz")), Change::Added);
        assert_eq!(
            v.apply(&WatchEvent::BundleWriting {
                at: 2,
                name: "a.tgz".into(),
                size: 20,
                since: 1
            }),
            Change::Updated
        );
        assert_eq!(v.rows[0].text(), "still being written");
        v.apply(&WatchEvent::BundleQueued {
            at: 3,
            bundle: 5,
            name: "a.tgz".into(),
            size: 30,
            sha256: "x".into(),
            rule: Some("app".into()),
            hosts: vec!["web1".into()],
        });
        assert_eq!(v.queued(), 1);
        v.apply(&WatchEvent::BundleDispatching {
            at: 4,
            bundle: 5,
            name: "a.tgz".into(),
            dispatch: 9,
            resumed: false,
        });
        assert!(v.owns(9));
        assert_eq!((v.queued(), v.in_flight()), (0, 1));
        v.apply(&WatchEvent::BundleFinished {
            at: 5,
            bundle: 5,
            name: "a.tgz".into(),
            state: BundleState::Failed,
            dispatch: Some(9),
            moved_to: None,
            reason: Some("upgrade exited with status 2 on web1\nmore".into()),
        });
        assert_eq!(v.rows.len(), 1);
        assert_eq!(
            v.rows[0].text(),
            "failed #9: upgrade exited with status 2 on web1"
        );
        assert_eq!(v.rows[0].size, 30);
        // The same name again is a new bundle, on top.
        assert_eq!(v.apply(&ev_seen("a.tgz")), Change::Added);
        assert_eq!(v.rows.len(), 2);
    }

    #[test]
    fn finished_rows_past_the_limit_go_open_ones_stay() {
        let mut v = WatchView::new(PathBuf::from("/drop"), &[]);
        v.apply(&WatchEvent::BundleQueued {
            at: 0,
            bundle: 0,
            name: "open.tgz".into(),
            size: 1,
            sha256: String::new(),
            rule: None,
            hosts: Vec::new(),
        });
        for i in 1..=KEEP as i64 + 5 {
            v.apply(&WatchEvent::BundleFinished {
                at: i,
                bundle: i,
                name: format!("b{i}.tgz"),
                state: BundleState::Done,
                dispatch: Some(i),
                moved_to: None,
                reason: None,
            });
        }
        assert_eq!(v.rows.len(), KEEP);
        assert!(v.rows.iter().any(|r| r.name == "open.tgz"));
        assert_eq!(v.rows[0].name, format!("b{}.tgz", KEEP + 5));
    }
}
