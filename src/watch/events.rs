//! What the watcher reports, besides the dispatch [`crate::engine::events::Event`]s of the
//! bundles it ships. Plain serialisable data, like dispatch events: the headless printer
//! renders them, `--json` prints one per line (their `event` names never clash with a
//! dispatch event's), and the console keeps its Packages pane from them.

use crate::engine::events::Millis;
use crate::journal::BundleState;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    /// The folder is watched. `recovered`: bundles a previous run left open.
    WatchStarted {
        at: Millis,
        dir: PathBuf,
        settle_ms: u64,
        rescan_ms: u64,
        marker: Option<String>,
        max_dispatches: usize,
        queue_limit: usize,
        /// False when only the periodic rescan finds files (`--rescan-only`, or no backend).
        fs_events: bool,
        recovered: usize,
    },
    /// A new file in the folder, not yet complete.
    BundleSeen {
        at: Millis,
        name: String,
        size: u64,
    },
    /// A file announced by `BundleSeen` left the folder before it was complete (removed, or
    /// renamed away by whoever was writing it): nothing was taken.
    BundleGone {
        at: Millis,
        name: String,
    },
    /// It keeps changing (or stays open) past the settle time: not shipped. Repeated now and
    /// then while it lasts.
    BundleWriting {
        at: Millis,
        name: String,
        size: u64,
        /// When it was first seen.
        since: Millis,
    },
    /// Complete, waiting for its marker file.
    BundleAwaitingMarker {
        at: Millis,
        name: String,
        marker: String,
    },
    /// Recorded, staged, hashed: waiting for its hosts and a free slot. `hosts` is empty for a
    /// bundle no rule matches (it is finished as unmatched right after).
    BundleQueued {
        at: Millis,
        bundle: i64,
        name: String,
        size: u64,
        sha256: String,
        rule: Option<String>,
        hosts: Vec<String>,
    },
    /// Its dispatch started (`resumed`: a dispatch a killed run left unfinished goes on).
    BundleDispatching {
        at: Millis,
        bundle: i64,
        name: String,
        dispatch: i64,
        resumed: bool,
    },
    /// Final: moved to `moved_to`; `reason` is what `NAME.reason` beside it says.
    BundleFinished {
        at: Millis,
        bundle: i64,
        name: String,
        state: BundleState,
        dispatch: Option<i64>,
        moved_to: Option<PathBuf>,
        reason: Option<String>,
    },
    /// Its dispatch was cancelled by the shutdown: it stays queued and resumes on the next
    /// start.
    BundleSuspended {
        at: Millis,
        bundle: i64,
        name: String,
        dispatch: i64,
    },
    /// The queue is full: complete files wait in the folder until there is room.
    QueueFull {
        at: Millis,
        limit: usize,
        waiting_in_folder: usize,
    },
    Paused {
        at: Millis,
    },
    Resumed {
        at: Millis,
    },
    /// Something went wrong that the watcher survives (a file it cannot move, a journal
    /// write that failed): what, where, what to do.
    WatchError {
        at: Millis,
        message: String,
    },
    /// The watcher stopped. Bundles still open resume on the next start.
    WatchStopped {
        at: Millis,
        queued: usize,
        in_flight: usize,
    },
}

impl WatchEvent {
    pub fn at(&self) -> Millis {
        match self {
            WatchEvent::WatchStarted { at, .. }
            | WatchEvent::BundleSeen { at, .. }
            | WatchEvent::BundleGone { at, .. }
            | WatchEvent::BundleWriting { at, .. }
            | WatchEvent::BundleAwaitingMarker { at, .. }
            | WatchEvent::BundleQueued { at, .. }
            | WatchEvent::BundleDispatching { at, .. }
            | WatchEvent::BundleFinished { at, .. }
            | WatchEvent::BundleSuspended { at, .. }
            | WatchEvent::QueueFull { at, .. }
            | WatchEvent::Paused { at }
            | WatchEvent::Resumed { at }
            | WatchEvent::WatchError { at, .. }
            | WatchEvent::WatchStopped { at, .. } => *at,
        }
    }
}
