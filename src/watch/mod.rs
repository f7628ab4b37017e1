//! The drop folder: `dropship --watch DIR` ships whatever lands in `DIR`, exactly once.
//!
//! ```text
//!  file in DIR --(notify events | periodic rescan)--> settle::Tracker: complete?
//!    -> journal: recorded (watch_bundle, state staging)           before anything else
//!    -> moved to DIR/.dropship/queue/ID-NAME, hashed               (state queued)
//!    -> schedule: arrival order per host, limit on dispatches at once
//!    -> journal: dispatch row + link, one transaction              (state dispatching)
//!    -> engine rollout (events recorded in the journal, then passed on)
//!    -> DIR/.dropship/done/YYYY-MM-DD/ | failed/ | unmatched/ (+ NAME.reason)
//! ```
//! A restart (also after `kill -9`) reads the open rows back and finishes each from where
//! it stood: a staged file is queued again, an interrupted dispatch resumes without
//! redoing verified uploads or finished steps, and a dispatch killed while a command ran
//! (unknown outcome) is never rerun automatically: its bundle goes to `failed/` with a
//! reason naming what to check and the `dropship --resume ID --force` to run.
//!
//! The watcher runs on its own thread (it owns the folder's state and does the small
//! blocking file work); dispatches run on the caller's tokio runtime. It never prints:
//! everything goes out as [`WatchEvent`]s and dispatch [`Event`]s.

mod archive;
mod events;
mod filter;
mod fs;
mod inbox;
mod recover;
mod schedule;
mod service;
mod settle;

pub use archive::{Layout, rename_noreplace};
pub use events::WatchEvent;
pub use filter::{STATE_DIR, candidate, ignored, is_marker};
pub use settle::{FileStat, Hint, Tracker, Verdict};

use crate::config::{Config, Netrc, SshHosts};
use crate::engine::events::Event;
use crate::engine::job::Cancel;
use crate::journal::{Journal, JournalError};
use crate::transport::known_hosts::KnownHostsFiles;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::Duration;

/// Sink for watcher events.
pub type WatchEmit = Arc<dyn Fn(WatchEvent) + Send + Sync>;

/// Sink for the dispatch events of the bundles shipped: the session's recording sink
/// (journal first, then the front end). The watcher reads each dispatch's outcome back from
/// the journal, so it never depends on the front end.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// How to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub dir: PathBuf,
    /// How long a file written in place must stay unchanged after its close.
    pub settle: Duration,
    /// `Some("done")`: `NAME` waits for `NAME.done`.
    pub marker: Option<String>,
    /// Dispatches at once (those sharing a host never run together anyway).
    pub max_dispatches: usize,
    /// Bundles recorded and not finished (queued or in flight). Past it, complete files
    /// wait in the folder.
    pub queue_limit: usize,
    /// Full rescans of the folder: they find what events missed.
    pub rescan: Duration,
    /// Use file system events; without them only the rescans find files.
    pub fs_events: bool,
    /// How often a file that is still being written is reported again.
    pub report_every: Duration,
    /// With a shared (PostgreSQL) journal: how long a bundle stays held by a watcher that
    /// stopped renewing it (it died) before another watcher takes it over. Renewed every
    /// third of it.
    pub lease: Duration,
}

impl WatchOptions {
    pub fn new(dir: PathBuf) -> WatchOptions {
        WatchOptions {
            dir,
            settle: Duration::from_secs(2),
            marker: None,
            max_dispatches: 4,
            queue_limit: 256,
            rescan: Duration::from_secs(10),
            fs_events: true,
            report_every: Duration::from_secs(30),
            lease: Duration::from_secs(30),
        }
    }
}

/// What dispatches need: the same inputs as `--dispatch`.
#[derive(Clone)]
pub struct Setup {
    pub config: Arc<Config>,
    pub netrc: Arc<Netrc>,
    pub ssh: Arc<SshHosts>,
    pub known_hosts: KnownHostsFiles,
    pub journal: Arc<Journal>,
    /// How its dispatches connect: [`crate::engine::connect::real`], or the fast tier's
    /// scripted hosts in tests.
    pub connector: crate::engine::connect::Connector,
    /// Told of every dispatch it finishes (the session's subscribers: the notifier).
    pub finished: Finished,
}

/// A subscriber of finished dispatches.
pub type Finished =
    Arc<dyn Fn(&crate::engine::rollout::Summary, &crate::engine::rollout::Emit) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("--watch {dir}: {detail}\n  help: give an existing directory you can write to")]
    Dir { dir: PathBuf, detail: String },
    #[error(
        "--watch {dir}: another dropship (pid {pid}) is watching this folder\n  help: stop it first; two watchers on one folder would race for its files"
    )]
    Busy { dir: PathBuf, pid: String },
    #[error(
        "--watch {dir}: cannot watch for file events: {detail}\n  help: raise fs.inotify.max_user_watches, or pass --rescan-only to find files by rescans alone"
    )]
    Events { dir: PathBuf, detail: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(
        "the journal {path} could not be written during a dispatch: the watcher stopped; open bundles resume at the next start\n  help: free space or fix the journal's permissions, then start dropship --watch again"
    )]
    JournalLost { path: PathBuf },
}

impl WatchError {
    /// A problem with the command line or the folder (exit 2), not a failed dispatch.
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            WatchError::Journal(_) | WatchError::JournalLost { .. }
        )
    }
}

/// Counts over one run of the watcher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchReport {
    pub done: usize,
    pub duplicates: usize,
    pub failed: usize,
    pub unmatched: usize,
    /// Bundles left queued or suspended: they go on at the next start.
    pub left_open: usize,
}

/// Pause, resume and stop a running watcher. Cheap to clone; any thread.
#[derive(Clone)]
pub struct WatchHandle {
    tx: SyncSender<service::Msg>,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl WatchHandle {
    /// No new dispatch starts; running ones go on, files are still recorded and queued.
    /// Never waits on the watcher (see [`inbox::Msg`]): the console calls it while the
    /// watcher may be waiting on the console.
    pub fn pause(&self) {
        if !self.paused.swap(true, Ordering::SeqCst) {
            self.wake();
        }
    }

    pub fn resume(&self) {
        if self.paused.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Offers a wake-up; a full channel already wakes the loop.
    fn wake(&self) {
        let _ = self.tx.try_send(service::Msg::Wake);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Stops taking files and starting dispatches; the watcher returns once the running
    /// dispatches ended. To cut those short too, set the [`Cancel`] given to [`start`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }
}

/// A running watcher: its control handle and its thread.
pub struct Running {
    pub handle: WatchHandle,
    pub thread: std::thread::JoinHandle<Result<WatchReport, WatchError>>,
}

/// Starts watching: checks the folder, takes its lock (one watcher per folder), starts
/// the event backend, then runs on a thread of its own. Dispatches are spawned on `rt`;
/// `cancel` is handed to them (set `requested` for a graceful stop, `hard` to cut).
pub fn start(
    options: WatchOptions,
    setup: Setup,
    rt: tokio::runtime::Handle,
    cancel: Arc<Cancel>,
    events: EventSink,
    journal_failed: Arc<std::sync::atomic::AtomicBool>,
    watch_events: WatchEmit,
) -> Result<Running, WatchError> {
    let svc = service::Service::new(
        options,
        setup,
        rt,
        cancel,
        events,
        journal_failed,
        watch_events,
    )?;
    let handle = svc.handle();
    let thread = std::thread::Builder::new()
        .name("dropship-watch".into())
        .spawn(move || svc.run())
        .map_err(|e| WatchError::Dir {
            dir: PathBuf::new(),
            detail: format!("cannot start the watcher thread: {e}"),
        })?;
    Ok(Running { handle, thread })
}

/// The canonical form of a watched folder, as the journal keys it.
pub fn canonical_dir(dir: &Path) -> Result<PathBuf, WatchError> {
    let fail = |detail: String| WatchError::Dir {
        dir: dir.to_path_buf(),
        detail,
    };
    let canon = std::fs::canonicalize(dir).map_err(|e| fail(e.to_string()))?;
    if !canon.is_dir() {
        return Err(fail("is not a directory".into()));
    }
    Ok(canon)
}

#[cfg(test)]
mod handle_tests {
    use super::*;

    /// The console calls pause/resume/stop while the watcher may be blocked handing its
    /// own events to the console; with the loop's channel full, the old handle waited in
    /// `send` here (a deadlock with a full console channel). Now every call returns at once.
    #[test]
    fn control_calls_never_wait_on_a_busy_watcher() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        tx.send(service::Msg::Wake).unwrap();
        let h = WatchHandle {
            tx,
            paused: Arc::default(),
            stop: Arc::default(),
        };
        let (done, got) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            h.pause();
            h.resume();
            h.pause();
            h.stop();
            let _ = done.send((h.is_paused(), h.stop.load(Ordering::SeqCst)));
        });
        let got = got
            .recv_timeout(Duration::from_secs(5))
            .expect("a control call waited on the watcher's loop");
        assert_eq!(got, (true, true));
    }
}
