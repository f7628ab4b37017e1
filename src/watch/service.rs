//! The watcher's loop: one thread owns the folder's state (what is being written, what is
//! queued, what runs) and is the only writer of its queue in the journal. It sleeps until
//! the next message (file event, dispatch finished, pause, stop) or the next deadline
//! (a settle time ending, a rescan, an output flush), never in a busy loop.

use super::archive::{self, Layout, Shelf};
use super::events::WatchEvent;
pub use super::inbox::{Ctl, Msg};
use super::recover::{self, Verdict as Recovery};
use super::schedule::Scheduler;
use super::settle::{FileStat, Hint, Tracker, Verdict};
use super::{EventSink, Setup, WatchEmit, WatchError, WatchHandle, WatchOptions, WatchReport};
use super::{filter, fs};
use crate::engine::events::now_ms;
use crate::engine::job::{Cancel, Skip};
use crate::engine::rollout::{self, Dispatch, Emit};
use crate::journal::{
    BundleState, Claim, DispatchState, JournalError, Lease, NewDispatch, ShippedFrom, WatchRow,
};
use crate::plan::{Plan, PlanError, Stamp};
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

/// Capacity of the loop's channel. A burst bigger than this costs a rescan, not a file.
const CHANNEL: usize = 16 * 1024;
/// Buffered output lines are committed at least this often while dispatches run.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// With a shared queue: how often it is looked at for bundles other watchers queued (or
/// whose holder's lease lapsed), when nothing here prompts a look sooner.
const CLAIM_EVERY: Duration = Duration::from_secs(1);

/// Sends `Finished` when dropped, so a dispatch task that panics still frees its hosts.
struct FinishGuard {
    ctl: std::sync::mpsc::Sender<Ctl>,
    tx: SyncSender<Msg>,
    bundle: i64,
    dispatch: i64,
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        // Never waits: it runs at the end of a task on the runtime's workers.
        let _ = self.ctl.send(Ctl::Finished {
            bundle: self.bundle,
            dispatch: self.dispatch,
        });
        let _ = self.tx.try_send(Msg::Wake);
    }
}

/// A bundle recorded and not finished.
struct Open {
    row: WatchRow,
    plan: Arc<Plan>,
    /// Set for a dispatch a previous run left unfinished.
    resume: Option<(i64, HashMap<String, Skip>, Vec<String>)>,
}

pub struct Service {
    opts: WatchOptions,
    setup: Setup,
    layout: Layout,
    config_path: PathBuf,
    rt: tokio::runtime::Handle,
    cancel: Arc<Cancel>,
    emit: Emit,
    wemit: WatchEmit,
    tx: SyncSender<Msg>,
    rx: Receiver<Msg>,
    ctl: std::sync::mpsc::Sender<Ctl>,
    ctl_rx: Receiver<Ctl>,
    /// Set by [`WatchHandle::stop`].
    stop: Arc<AtomicBool>,
    /// The pause state last announced (`Paused`/`Resumed`), against the handle's flag.
    shown_paused: bool,
    lost: Arc<AtomicBool>,
    /// A dispatch event could not be journaled (see `new`).
    journal_failed: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    tracker: Tracker,
    sched: Scheduler,
    open: HashMap<i64, Open>,
    /// Names reported as seen (so each new file is announced once).
    seen: HashSet<String>,
    queue_full: bool,
    /// A file could not be recorded (the journal failed, e.g. a full disk): held files are
    /// tried again at the next rescan rather than only when they change.
    retry_held: bool,
    stopping: bool,
    next_rescan: Instant,
    next_flush: Instant,
    report: WatchReport,
    /// With a shared (PostgreSQL) journal: this watcher's lease; bundles are claimed from the
    /// one queue instead of queued here (see `journal/queue.rs`).
    shared: Option<Lease>,
    /// When the shared queue is looked at next, and whether something local (a bundle queued,
    /// a dispatch finished) asks for a look now.
    next_claim: Instant,
    claim_due: bool,
    next_renew: Instant,
    /// Bundles of the shared queue this watcher may not take (its file is not readable here,
    /// its content differs from its digest, or no rule of this config ships it), with why.
    refused: HashMap<i64, String>,
    _lock: std::fs::File,
    _backend: Option<notify::RecommendedWatcher>,
}

impl Service {
    pub fn new(
        mut opts: WatchOptions,
        setup: Setup,
        rt: tokio::runtime::Handle,
        cancel: Arc<Cancel>,
        emit: EventSink,
        journal_failed: Arc<AtomicBool>,
        wemit: WatchEmit,
    ) -> Result<Service, WatchError> {
        let dir = super::canonical_dir(&opts.dir)?;
        opts.dir = dir.clone();
        let layout = Layout::new(&dir);
        let io = |e: std::io::Error| WatchError::Dir {
            dir: dir.clone(),
            detail: e.to_string(),
        };
        layout.create().map_err(io)?;
        let shared = setup
            .journal
            .is_shared()
            .then(|| Lease::new(&crate::engine::lock::local_holder(), opts.lease));
        let lock = take_lock(&layout, shared.is_some())?;
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        let (ctl, ctl_rx) = std::sync::mpsc::channel();
        let lost = Arc::new(AtomicBool::new(false));
        let backend = if opts.fs_events {
            Some(
                fs::start_backend(&dir, tx.clone(), lost.clone()).map_err(|e| {
                    WatchError::Events {
                        dir: dir.clone(),
                        detail: e.to_string(),
                    }
                })?,
            )
        } else {
            None
        };
        // `emit` journals each dispatch event, then passes it on (the session's recording
        // sink). Without its journal the watcher cannot know what ran, so a failed write
        // stops it: `journal_failed` is set and `cancel` requested (no new step starts), and
        // the loop stops taking files; what is open is judged at the next start rather than
        // from a journal with holes.
        let config_path =
            std::fs::canonicalize(&setup.config.path).unwrap_or_else(|_| setup.config.path.clone());
        let now = Instant::now();
        Ok(Service {
            tracker: Tracker::new(opts.settle, opts.report_every),
            sched: Scheduler::new(opts.max_dispatches),
            opts,
            setup,
            layout,
            config_path,
            rt,
            cancel,
            emit,
            wemit,
            tx,
            rx,
            ctl,
            ctl_rx,
            stop: Arc::new(AtomicBool::new(false)),
            shown_paused: false,
            lost,
            paused: Arc::new(AtomicBool::new(false)),
            open: HashMap::new(),
            seen: HashSet::new(),
            queue_full: false,
            stopping: false,
            retry_held: false,
            journal_failed,
            next_rescan: now,
            next_flush: now + FLUSH_EVERY,
            report: WatchReport::default(),
            shared,
            next_claim: now,
            claim_due: true,
            next_renew: now,
            refused: HashMap::new(),
            _lock: lock,
            _backend: backend,
        })
    }

    pub fn handle(&self) -> WatchHandle {
        WatchHandle {
            tx: self.tx.clone(),
            paused: self.paused.clone(),
            stop: self.stop.clone(),
        }
    }

    fn dir(&self) -> &Path {
        &self.layout.dir
    }

    fn say(&self, e: WatchEvent) {
        (self.wemit)(e);
    }

    fn error(&self, message: String) {
        tracing::error!("{message}");
        self.say(WatchEvent::WatchError {
            at: now_ms(),
            message,
        });
    }

    /// Runs until stopped. A fatal error (the journal cannot be written, say) is also told as
    /// `WatchError` and `WatchStopped`, so a front end never shows a dead watcher as watching.
    pub fn run(mut self) -> Result<WatchReport, WatchError> {
        match self.run_loop() {
            Ok(r) => Ok(r),
            Err(e) => {
                self.error(format!("the watcher stopped: {e}"));
                self.say(WatchEvent::WatchStopped {
                    at: now_ms(),
                    queued: self.sched.waiting(),
                    in_flight: self.sched.running(),
                });
                Err(e)
            }
        }
    }

    fn run_loop(&mut self) -> Result<WatchReport, WatchError> {
        let recovered = self.recover()?;
        self.say(WatchEvent::WatchStarted {
            at: now_ms(),
            dir: self.dir().to_path_buf(),
            settle_ms: self.opts.settle.as_millis() as u64,
            rescan_ms: self.opts.rescan.as_millis() as u64,
            marker: self.opts.marker.clone(),
            max_dispatches: self.opts.max_dispatches,
            queue_limit: self.opts.queue_limit,
            fs_events: self.opts.fs_events,
            recovered,
        });
        loop {
            if !self.stopping {
                let now = Instant::now();
                if now >= self.next_rescan {
                    self.rescan();
                }
                self.poll();
                self.start_ready()?;
            }
            if self.stopping && self.sched.running() == 0 {
                break;
            }
            let timeout = self.deadline().map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
            match self.rx.recv_timeout(timeout) {
                Ok(msg) => {
                    self.handle_msg(msg)?;
                    while let Ok(msg) = self.rx.try_recv() {
                        self.handle_msg(msg)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.take_controls()?;
            if !self.stopping && self.journal_failed.load(Ordering::SeqCst) {
                self.error(format!(
                    "the journal {} cannot be written: stopping (no new step starts); what is open resumes at the next start\n  help: free space or fix the journal's permissions, then start dropship --watch again",
                    self.setup.journal.path().display()
                ));
                self.stopping = true;
            }
            if self.lost.swap(false, Ordering::SeqCst) {
                tracing::warn!("file events were lost: rescanning {}", self.dir().display());
                self.tracker.events_lost();
                self.next_rescan = Instant::now();
            }
            if Instant::now() >= self.next_flush {
                self.flush_journal();
                self.next_flush = Instant::now() + FLUSH_EVERY;
            }
            if self.shared.is_some() && Instant::now() >= self.next_renew {
                self.renew();
            }
        }
        self.flush_journal();
        self.release_waiting();
        self.report.left_open += self.open.len();
        if self.journal_failed.load(Ordering::SeqCst) {
            // `run` tells it (WatchError, WatchStopped).
            return Err(WatchError::JournalLost {
                path: self.setup.journal.path().to_path_buf(),
            });
        }
        self.say(WatchEvent::WatchStopped {
            at: now_ms(),
            queued: self.sched.waiting(),
            in_flight: self.sched.running(),
        });
        Ok(std::mem::take(&mut self.report))
    }

    /// Commits buffered output lines; a failure counts as a lost journal (see `new`).
    fn flush_journal(&mut self) {
        if let Err(e) = self.setup.journal.flush() {
            tracing::error!("journal flush failed: {e}");
            if !self.journal_failed.swap(true, Ordering::SeqCst) {
                self.cancel.requested.store(true, Ordering::SeqCst);
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let mut d: Vec<Instant> = Vec::new();
        if !self.stopping {
            d.push(self.next_rescan);
            d.extend(self.tracker.next_deadline());
        }
        if self.sched.running() > 0 || self.setup.journal.is_down() {
            // While the server is away, the flush is also what reconnects.
            d.push(self.next_flush);
        }
        if let Some(lease) = &self.shared {
            if !self.open.is_empty() {
                d.push(self.next_renew.min(Instant::now() + lease.length / 3));
            }
            // The same conditions as `start_ready`: a look that would not happen must not
            // wake the loop (it would spin).
            if !self.stopping
                && !self.paused.load(Ordering::SeqCst)
                && !self.cancel.is_requested()
                && !self.setup.journal.is_down()
            {
                d.push(if self.claim_due {
                    Instant::now()
                } else {
                    self.next_claim
                });
            }
        }
        d.into_iter().min()
    }

    /// What the flags and the control channel say (see [`Ctl`]): finished dispatches, a
    /// stop, a pause or resume to announce.
    fn take_controls(&mut self) -> Result<(), WatchError> {
        while let Ok(Ctl::Finished { bundle, dispatch }) = self.ctl_rx.try_recv() {
            let judged = self.finished(bundle, dispatch);
            self.unless_server_lost(bundle, judged)?;
        }
        if self.stop.load(Ordering::SeqCst) {
            self.stopping = true;
        }
        let paused = self.paused.load(Ordering::SeqCst);
        if paused != self.shown_paused {
            self.shown_paused = paused;
            self.say(if paused {
                WatchEvent::Paused { at: now_ms() }
            } else {
                WatchEvent::Resumed { at: now_ms() }
            });
        }
        Ok(())
    }

    fn handle_msg(&mut self, msg: Msg) -> Result<(), WatchError> {
        match msg {
            Msg::Fs(ev) => {
                let now = Instant::now();
                for (name, hint) in fs::hints(self.dir(), &ev) {
                    self.observe(&name, hint, now);
                }
            }
            Msg::Wake => {}
        }
        Ok(())
    }

    /// One file event: a marker wakes its bundle; a candidate is (re)looked at.
    fn observe(&mut self, name: &str, hint: Hint, now: Instant) {
        if let Some(m) = self.opts.marker.as_deref()
            && filter::is_marker(name, m)
        {
            let bundle = &name[..name.len() - m.len() - 1];
            self.tracker.marker_changed(bundle);
            return;
        }
        if !filter::candidate(name, self.opts.marker.as_deref()) {
            return;
        }
        let stat = fs::stat(&self.dir().join(name));
        self.note_seen(name, stat);
        self.tracker.observe(name, stat, hint, now);
    }

    fn note_seen(&mut self, name: &str, stat: Option<FileStat>) {
        match stat {
            Some(s) if !self.tracker.contains(name) && self.seen.insert(name.to_owned()) => {
                self.say(WatchEvent::BundleSeen {
                    at: now_ms(),
                    name: name.to_owned(),
                    size: s.size,
                });
            }
            None => self.gone(name),
            _ => {}
        }
    }

    /// `name`, announced as seen, left before it was taken.
    fn gone(&mut self, name: &str) {
        if self.seen.remove(name) {
            self.say(WatchEvent::BundleGone {
                at: now_ms(),
                name: name.to_owned(),
            });
        }
    }

    /// A full look at the folder: finds what events missed, forgets what left.
    fn rescan(&mut self) {
        self.next_rescan = Instant::now() + self.opts.rescan;
        if std::mem::take(&mut self.retry_held) {
            self.tracker.release();
        }
        let files = match fs::scan(self.dir(), self.opts.marker.as_deref()) {
            Ok(f) => f,
            Err(e) => {
                self.error(format!(
                    "cannot read the watched folder {}: {e}\n  help: check that it still exists and is readable",
                    self.dir().display()
                ));
                return;
            }
        };
        let now = Instant::now();
        let present: HashSet<String> = files.iter().map(|(n, _)| n.clone()).collect();
        self.tracker.retain(&present);
        let left: Vec<String> = self
            .seen
            .iter()
            .filter(|n| !present.contains(*n))
            .cloned()
            .collect();
        for name in left {
            self.gone(&name);
        }
        for (name, stat) in files {
            self.note_seen(&name, Some(stat));
            self.tracker.observe(&name, Some(stat), Hint::Seen, now);
        }
    }

    /// Judges the tracked files: admits the complete ones (room permitting), reports the rest.
    fn poll(&mut self) {
        let dir = self.dir().to_path_buf();
        let marker = self.opts.marker.clone();
        let verdicts = self.tracker.poll(
            Instant::now(),
            |n| fs::stat(&dir.join(n)),
            |n| {
                marker
                    .as_deref()
                    .is_none_or(|m| dir.join(filter::marker_name(n, m)).exists())
            },
        );
        for (name, verdict) in verdicts {
            match verdict {
                Verdict::Ready(stat) => self.admit(&name, stat),
                Verdict::StillWriting { size, since } => {
                    let ago = Instant::now().saturating_duration_since(since).as_millis() as i64;
                    self.say(WatchEvent::BundleWriting {
                        at: now_ms(),
                        name,
                        size,
                        since: now_ms() - ago,
                    });
                }
                Verdict::AwaitingMarker => {
                    let marker = filter::marker_name(&name, marker.as_deref().unwrap_or(""));
                    self.say(WatchEvent::BundleAwaitingMarker {
                        at: now_ms(),
                        name,
                        marker,
                    });
                }
            }
        }
    }

    /// Records a complete file, moves it out of the folder, hashes and plans it.
    fn admit(&mut self, name: &str, stat: FileStat) {
        if self.setup.journal.is_down() {
            // The journal's server is away (events are spooled): nothing new is claimed
            // until it is back; the file waits in the folder and is looked at again.
            self.tracker.hold(name);
            self.retry_held = true;
            return;
        }
        if self.open.len() >= self.opts.queue_limit {
            self.tracker.hold(name);
            if !self.queue_full {
                self.queue_full = true;
                self.say(WatchEvent::QueueFull {
                    at: now_ms(),
                    limit: self.opts.queue_limit,
                    waiting_in_folder: self.tracker.len(),
                });
            }
            return;
        }
        let admitted = match &self.shared {
            None => self
                .setup
                .journal
                .watch_admit(
                    self.dir(),
                    name,
                    stat.size,
                    stat.mtime_ns,
                    &self.layout.queue,
                )
                .map(Some),
            Some(lease) => self.setup.journal.watch_admit_held(
                self.dir(),
                name,
                stat.size,
                stat.mtime_ns,
                &self.layout.queue,
                lease,
            ),
        };
        let row = match admitted {
            Ok(Some(row)) => row,
            Ok(None) => {
                // Another watcher of this folder is taking it: left to it. If that watcher
                // dies first, the file is looked at again at the next rescan.
                self.tracker.hold(name);
                self.retry_held = true;
                return;
            }
            Err(e) => {
                self.setup.journal.note_lost(&e);
                // Not recorded, so not touched: it stays in the folder and is tried again at
                // the next rescan (the journal may have room again by then).
                self.error(format!("{name}: not taken: {e}"));
                self.tracker.hold(name);
                self.retry_held = true;
                return;
            }
        };
        self.tracker.take(name);
        self.seen.remove(name);
        let src = self.dir().join(name);
        self.stage(row, &src);
    }

    /// Moves the recorded file to its staged path, then queues it.
    fn stage(&mut self, row: WatchRow, src: &Path) {
        match archive::rename_noreplace(src, &row.staged_path) {
            Ok(()) => {}
            Err(e) => {
                let reason = if e.kind() == std::io::ErrorKind::NotFound {
                    format!("{} disappeared before it was taken", src.display())
                } else {
                    format!(
                        "cannot move {} to {}: {e}; it stays in the folder and is taken again once it changes or at the next start",
                        src.display(),
                        row.staged_path.display()
                    )
                };
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.error(format!("{}: {reason}", row.name));
                }
                if let Err(e) = self.setup.journal.watch_vanished(row.id, &reason) {
                    self.error(format!("{}: {e}", row.name));
                }
                if e.kind() != std::io::ErrorKind::NotFound {
                    // Still in the folder: held as it is, or every rescan would take it
                    // again (and fail again) for ever. A change to it lets it go.
                    self.tracker
                        .observe(&row.name, fs::stat(src), Hint::Seen, Instant::now());
                    self.tracker.hold(&row.name);
                }
                return;
            }
        }
        if let Some(m) = self.opts.marker.as_deref() {
            let _ = archive::rename_noreplace(
                &fs::with_suffix(src, m),
                &fs::with_suffix(&row.staged_path, m),
            );
        }
        self.queue(row);
    }

    /// Hashes the staged file (the hash of what will be shipped), plans it, and queues it or
    /// finishes it as unmatched.
    fn queue(&mut self, mut row: WatchRow) {
        let hashed = std::fs::metadata(&row.staged_path).and_then(|m| {
            let stat = FileStat::of(&m);
            crate::transport::local_sha256(&row.staged_path, None).map(|sha| (stat, sha))
        });
        let (stat, sha) = match hashed {
            Ok(x) => x,
            Err(e) => {
                self.error(format!(
                    "{}: cannot read the staged file {}: {e}\n  help: it stays there and is taken again at the next start",
                    row.name,
                    row.staged_path.display()
                ));
                return;
            }
        };
        let plan = Plan::build(
            &self.setup.config,
            &self.setup.netrc,
            &self.setup.ssh,
            &row.name,
            Stamp::now(),
        );
        let rule = plan.as_ref().ok().map(|p| p.rule.name.clone());
        if let Err(e) =
            self.setup
                .journal
                .watch_queued(row.id, &sha, stat.size, stat.mtime_ns, rule.as_deref())
        {
            self.error(format!("{}: {e}", row.name));
            return;
        }
        row.sha256 = Some(sha.clone());
        row.size = stat.size;
        row.mtime_ns = stat.mtime_ns;
        row.state = BundleState::Queued;
        let hosts = plan
            .as_ref()
            .map(|p| p.targets.iter().map(|t| t.host.name.clone()).collect())
            .unwrap_or_default();
        self.say(WatchEvent::BundleQueued {
            at: now_ms(),
            bundle: row.id,
            name: row.name.clone(),
            size: stat.size,
            sha256: sha,
            rule,
            hosts,
        });
        match plan {
            Ok(plan) => match &self.shared {
                None => self.enqueue(row, Arc::new(plan), None),
                Some(lease) => {
                    // Into the shared queue: any watcher that can read it may claim it.
                    if let Err(e) = self.setup.journal.watch_release(row.id, lease) {
                        self.setup.journal.note_lost(&e);
                        self.error(format!("{}: {e}", row.name));
                    }
                    self.open.remove(&row.id);
                    self.claim_due = true;
                }
            },
            Err(e @ PlanError::NoRule { .. }) => {
                let reason = format!(
                    "{e}\nNo rule of {} matches this name, so it was not shipped. Add or fix a rule \
                     (check with: dropship --plan NAME), then move this file back into {}.",
                    self.config_path.display(),
                    self.dir().display()
                );
                self.finish(row, BundleState::Unmatched, Some(reason));
            }
            Err(e) => {
                let reason = format!(
                    "{e}\nIt was not shipped. Fix the rule (check with: dropship --plan NAME), then \
                     move this file back into {}.",
                    self.dir().display()
                );
                self.finish(row, BundleState::Failed, Some(reason));
            }
        }
    }

    fn enqueue(
        &mut self,
        row: WatchRow,
        plan: Arc<Plan>,
        resume: Option<(i64, HashMap<String, Skip>, Vec<String>)>,
    ) {
        // Hosts are told apart by where they are reached, so two rules naming one machine
        // differently still take turns.
        let hosts = plan
            .targets
            .iter()
            .map(|t| format!("{}:{}", t.address, t.port.unwrap_or(0)))
            .collect();
        self.sched.push(row.id, hosts);
        self.open.insert(row.id, Open { row, plan, resume });
    }

    fn start_ready(&mut self) -> Result<(), WatchError> {
        if self.paused.load(Ordering::SeqCst)
            || self.cancel.is_requested()
            // No dispatch starts while the journal's server is away.
            || self.setup.journal.is_down()
        {
            return Ok(());
        }
        if self.shared.is_some() {
            self.claim()?;
        }
        for id in self.sched.start_ready() {
            let started = self.start(id);
            self.unless_server_lost(id, started)?;
        }
        Ok(())
    }

    /// A step of bundle `id` that failed only because the journal's server went away is
    /// not fatal: the watcher lets the bundle go (it stays in the shared queue as recorded,
    /// its lease lapses) and, once the server is back, it or another watcher claims it again
    /// and goes on from what the journal holds, as after a takeover. Any other error is.
    fn unless_server_lost(
        &mut self,
        id: i64,
        result: Result<(), WatchError>,
    ) -> Result<(), WatchError> {
        match result {
            Err(WatchError::Journal(e)) if e.is_connection_lost() && self.shared.is_some() => {
                self.setup.journal.note_lost(&e);
                self.sched.finish(id);
                let name = self
                    .open
                    .remove(&id)
                    .map(|o| o.row.name)
                    .unwrap_or_default();
                self.error(format!(
                    "{name}: the journal server went away ({e}); the bundle stays in the shared queue and is taken up again once it is back"
                ));
                Ok(())
            }
            other => other,
        }
    }

    /// Claims bundles from the shared queue while this watcher has room for them: queued
    /// ones, and those whose holder's lease lapsed (taken over from where they stood). Only
    /// bundles whose file this watcher can read, whose content matches their digest and
    /// which a rule of this config ships under the same rule.
    fn claim(&mut self) -> Result<(), WatchError> {
        let Some(lease) = self.shared.clone() else {
            return Ok(());
        };
        let now = Instant::now();
        if !self.claim_due && now < self.next_claim {
            return Ok(());
        }
        self.claim_due = false;
        self.next_claim = now + CLAIM_EVERY;
        let room = |s: &Self| {
            s.opts
                .max_dispatches
                .saturating_sub(s.sched.running() + s.sched.waiting())
        };
        if room(self) == 0 {
            return Ok(());
        }
        let limit = room(self) * 4 + self.refused.len() + self.open.len();
        let rows = match self.setup.journal.watch_claimable(limit) {
            Ok(rows) => rows,
            Err(e) => {
                self.setup.journal.note_lost(&e);
                self.error(format!("the shared queue cannot be read: {e}"));
                return Ok(());
            }
        };
        for row in rows {
            if room(self) == 0 || self.setup.journal.is_down() {
                break;
            }
            if self.open.contains_key(&row.id) || self.refused.contains_key(&row.id) {
                continue;
            }
            let plan = match self.claimable(&row) {
                Ok(plan) => plan,
                Err(why) => {
                    tracing::info!("{}: not claimed here: {why}", row.name);
                    self.refused.insert(row.id, why);
                    continue;
                }
            };
            let row = match self.setup.journal.watch_claim(row.id, &lease) {
                Ok(Claim::Taken(row)) => *row,
                Ok(Claim::Busy) => continue,
                Err(e) => {
                    self.setup.journal.note_lost(&e);
                    self.error(format!("{}: not claimed: {e}", row.name));
                    continue;
                }
            };
            tracing::info!("claimed bundle {} ({}, {})", row.id, row.name, row.state);
            match row.state {
                BundleState::Staging => self.recover_staging(row),
                BundleState::Queued => match plan {
                    Some(plan) => self.enqueue(row, Arc::new(plan), None),
                    None => self.recover_queued(row),
                },
                BundleState::Dispatching => self.recover_dispatch(row)?,
                state => self.recover_move(row, state),
            }
        }
        Ok(())
    }

    /// Whether this watcher may take `row` from the shared queue, and the plan it would
    /// ship it with (for a queued bundle).
    fn claimable(&self, row: &WatchRow) -> Result<Option<Plan>, String> {
        if row.state == BundleState::Staging {
            // Found by a watcher that died while moving it out of its folder: only a watcher
            // of that folder can finish the move.
            return if row.dir == self.dir() {
                Ok(None)
            } else {
                Err(format!("it is being taken from {}", row.dir.display()))
            };
        }
        if !row.state.is_open() {
            // Finished, not yet archived: the move is finished by whoever sees the file.
            return if row.staged_path.exists() || row.archived_path.is_some() {
                Ok(None)
            } else {
                Err(format!("{} is not visible here", row.staged_path.display()))
            };
        }
        let meta = std::fs::metadata(&row.staged_path)
            .map_err(|e| format!("{}: {e}", row.staged_path.display()))?;
        if meta.len() != row.size {
            return Err(format!(
                "{} has {} bytes, the queue says {}",
                row.staged_path.display(),
                meta.len(),
                row.size
            ));
        }
        let sha = crate::transport::bundle_sha256(&row.staged_path)
            .map_err(|e| format!("{}: {e}", row.staged_path.display()))?;
        if row.sha256.as_deref() != Some(sha.as_str()) {
            return Err(format!(
                "{} is not the content queued (sha256 {sha})",
                row.staged_path.display()
            ));
        }
        if row.state == BundleState::Dispatching {
            return Ok(None);
        }
        let plan = Plan::build(
            &self.setup.config,
            &self.setup.netrc,
            &self.setup.ssh,
            &row.name,
            Stamp::now(),
        )
        .map_err(|e| format!("no rule of this config ships it: {e}"))?;
        if row.rule.as_deref() != Some(plan.rule.name.as_str()) {
            return Err(format!(
                "it was queued for rule [{}], this config ships it with [{}]",
                row.rule.as_deref().unwrap_or("-"),
                plan.rule.name
            ));
        }
        Ok(Some(plan))
    }

    /// At a stop: bundles claimed from the shared queue and not started go back into it at
    /// once, rather than when their lease lapses.
    fn release_waiting(&mut self) {
        let Some(lease) = self.shared.clone() else {
            return;
        };
        let waiting: Vec<i64> = self
            .open
            .iter()
            .filter(|(_, o)| o.row.state == BundleState::Queued)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            if self.setup.journal.watch_release(id, &lease).is_ok() {
                self.open.remove(&id);
            }
        }
    }

    /// Renews the leases of the bundles this watcher holds. One it no longer holds was taken
    /// over by another watcher (this one stalled past its lease): said loudly. It is still
    /// never shipped twice: a bundle not started yet is refused its dispatch here
    /// (`watch_begin_dispatch_held`), and a running dispatch is not taken over while its
    /// writer (this process) lives (`begin_resume`).
    fn renew(&mut self) {
        let Some(lease) = self.shared.clone() else {
            return;
        };
        self.next_renew = Instant::now() + lease.length / 3;
        let ids: Vec<i64> = self.open.keys().copied().collect();
        match self.setup.journal.watch_renew(&lease, &ids) {
            Ok(held) => {
                for id in ids.iter().filter(|id| !held.contains(id)) {
                    let name = self.open.get(id).map(|o| o.row.name.clone());
                    self.error(format!(
                        "{}: this watcher's lease lapsed and another watcher took the bundle over
  help: a lease ({}s) must outlast any stall of the watcher; raise --lease",
                        name.unwrap_or_default(),
                        lease.length.as_secs()
                    ));
                }
            }
            Err(e) => {
                self.setup.journal.note_lost(&e);
                tracing::warn!("renewing leases failed: {e}");
            }
        }
    }

    fn start(&mut self, id: i64) -> Result<(), WatchError> {
        let Some(open) = self.open.get(&id) else {
            self.sched.finish(id);
            return Ok(());
        };
        let row = open.row.clone();
        let plan = open.plan.clone();
        let sha = row.sha256.clone().unwrap_or_default();
        let (dispatch, skip, only, resumed) = match open.resume.clone() {
            Some((d, skip, only)) => {
                if let Err(e) = self.setup.journal.begin_resume(d) {
                    self.sched.finish(id);
                    if self.shared.is_some() && matches!(e, JournalError::StillRunning { .. }) {
                        // Its writer lives (a watcher that stalled past its lease): not ours;
                        // the claim lapses and it is looked at again then.
                        self.open.remove(&id);
                        self.error(format!("{}: not taken over: {e}", row.name));
                        return Ok(());
                    }
                    let reason = format!(
                        "dispatch #{d} could not be resumed: {e}\nCheck it with dropship --history, \
                         then resume it by hand (dropship --resume {d}) or move this file back into {}.",
                        self.dir().display()
                    );
                    self.finish(row, BundleState::Failed, Some(reason));
                    return Ok(());
                }
                (d, skip, Some(only), true)
            }
            None => {
                let from = match &self.shared {
                    None => ShippedFrom::Folder(self.dir()),
                    Some(_) => ShippedFrom::Rule(&plan.rule.name),
                };
                let prev = self
                    .setup
                    .journal
                    .watch_shipped(from, &row.name, &sha, row.id)?;
                if let Some(prev) = prev {
                    self.sched.finish(id);
                    let reason = format!(
                        "{} with this very content (sha256 {sha}) was already shipped from {} \
                         (dispatch #{}): not shipped again. To ship it anyway, use \
                         dropship --dispatch on this file.",
                        row.name,
                        self.dir().display(),
                        prev.dispatch.unwrap_or_default()
                    );
                    self.finish(row, BundleState::Duplicate, Some(reason));
                    return Ok(());
                }
                let rec = NewDispatch {
                    bundle: plan.bundle.clone(),
                    bundle_path: row.staged_path.clone(),
                    bundle_sha256: sha.clone(),
                    bundle_size: row.size,
                    rule: plan.rule.name.clone(),
                    config_path: self.config_path.clone(),
                    timestamp: plan.stamp.timestamp.clone(),
                    hosts: plan.targets.iter().map(|t| t.host.name.clone()).collect(),
                    started_at: now_ms(),
                };
                let d = match &self.shared {
                    None => self.setup.journal.watch_begin_dispatch(row.id, &rec)?,
                    Some(lease) => {
                        match self
                            .setup
                            .journal
                            .watch_begin_dispatch_held(row.id, &rec, lease)?
                        {
                            Some(d) => d,
                            None => {
                                // Its lease lapsed and another watcher took it: not ours.
                                self.sched.finish(id);
                                self.open.remove(&id);
                                self.error(format!(
                                    "{}: this watcher's lease lapsed and another watcher took the bundle over: not dispatched here",
                                    row.name
                                ));
                                return Ok(());
                            }
                        }
                    }
                };
                (d, HashMap::new(), None, false)
            }
        };
        if let Some(o) = self.open.get_mut(&id) {
            o.row.state = BundleState::Dispatching;
            o.row.dispatch = Some(dispatch);
        }
        self.say(WatchEvent::BundleDispatching {
            at: now_ms(),
            bundle: id,
            name: row.name.clone(),
            dispatch,
            resumed,
        });
        let d = Arc::new(Dispatch {
            id: dispatch,
            plan,
            bundle: row.staged_path.clone(),
            bundle_sha256: Some(sha),
            known_hosts: self.setup.known_hosts.clone(),
            holder: crate::engine::lock::local_holder(),
            skip,
            only,
            connector: self.setup.connector.clone(),
        });
        let guard = FinishGuard {
            ctl: self.ctl.clone(),
            tx: self.tx.clone(),
            bundle: id,
            dispatch,
        };
        let (cancel, emit) = (self.cancel.clone(), self.emit.clone());
        let finished = self.setup.finished.clone();
        self.rt.spawn(async move {
            let _guard = guard;
            let s = rollout::run(d.clone(), cancel, emit.clone()).await;
            crate::engine::store::keep_shipped(d, &s, emit.clone()).await;
            finished(&s, &emit);
        });
        Ok(())
    }

    /// A dispatch returned: judge it by what the journal holds.
    fn finished(&mut self, bundle: i64, dispatch: i64) -> Result<(), WatchError> {
        self.sched.finish(bundle);
        self.claim_due = true;
        let Some(open) = self.open.get(&bundle) else {
            return Ok(());
        };
        let row = open.row.clone();
        let detail = self.setup.journal.dispatch(dispatch)?;
        let Some(detail) = detail else {
            self.open.remove(&bundle);
            return Ok(());
        };
        if recover::all_succeeded(&detail) {
            self.finish(row, BundleState::Done, None);
        } else if self.cancel.is_requested() {
            // Shutdown: left for the next start, which resumes it (or, if a command was cut
            // short, sends it to failed/ with what to check).
            self.setup.journal.mark_cancelled(dispatch)?;
            self.open.remove(&bundle);
            self.report.left_open += 1;
            self.say(WatchEvent::BundleSuspended {
                at: now_ms(),
                bundle,
                name: row.name,
                dispatch,
            });
        } else {
            let reason = recover::failure_reason(&detail, self.dir());
            self.finish(row, BundleState::Failed, Some(reason));
        }
        Ok(())
    }

    /// Records the final state and where the file goes, moves it there (never over another
    /// file), and confirms the move.
    fn finish(&mut self, row: WatchRow, state: BundleState, reason: Option<String>) {
        self.open.remove(&row.id);
        self.sched.finish(row.id);
        let shelf = match state {
            BundleState::Unmatched => Shelf::Unmatched,
            BundleState::Failed => Shelf::Failed,
            _ => Shelf::Done,
        };
        // Into the shelves of the folder it was dropped into (the same as this watcher's,
        // except for a bundle of the shared queue found by another watcher).
        let folder = Layout::new(&row.dir).shelf(shelf);
        let moved = self.shelve(&row, state, &folder, reason.as_deref());
        match state {
            BundleState::Done => self.report.done += 1,
            BundleState::Duplicate => self.report.duplicates += 1,
            BundleState::Failed => self.report.failed += 1,
            BundleState::Unmatched => self.report.unmatched += 1,
            _ => {}
        }
        self.say(WatchEvent::BundleFinished {
            at: now_ms(),
            bundle: row.id,
            name: row.name.clone(),
            state,
            dispatch: row.dispatch,
            moved_to: moved,
            reason,
        });
        if self.queue_full && self.open.len() < self.opts.queue_limit {
            self.queue_full = false;
            self.tracker.release();
        }
    }

    fn shelve(
        &self,
        row: &WatchRow,
        state: BundleState,
        folder: &Path,
        reason: Option<&str>,
    ) -> Option<PathBuf> {
        let fail = |e: String| {
            self.error(format!(
                "{}: cannot move {} into {}: {e}\n  help: it stays where it is; fix the folder's permissions or space, and the next start moves it",
                row.name,
                row.staged_path.display(),
                folder.display()
            ));
            None
        };
        let target = match archive::reserve(folder, &row.name, reason) {
            Ok(t) => t,
            Err(e) => return fail(e.to_string()),
        };
        if let Err(e) = self
            .setup
            .journal
            .watch_finish(row.id, state, reason, &target)
        {
            return fail(e.to_string());
        }
        let placed = match archive::rename_noreplace(&row.staged_path, &target) {
            Ok(()) => target,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match archive::shelve(&row.staged_path, folder, &row.name, reason) {
                    Ok(p) => p,
                    Err(e) => return fail(e.to_string()),
                }
            }
            Err(e) => return fail(e.to_string()),
        };
        if let Some(m) = self.opts.marker.as_deref() {
            let _ = archive::rename_noreplace(
                &fs::with_suffix(&row.staged_path, m),
                &fs::with_suffix(&placed, m),
            );
        }
        if let Err(e) = self.setup.journal.watch_archived(row.id, &placed) {
            self.error(format!("{}: {e}", row.name));
        }
        Some(placed)
    }

    /// Picks up what a previous run left open, in arrival order. Returns how many.
    fn recover(&mut self) -> Result<usize, WatchError> {
        if self.shared.is_some() {
            // The shared queue: what a previous run of this watcher (or any watcher) left
            // open is taken over through the claims, once its lease lapsed.
            return Ok(0);
        }
        let rows = self.setup.journal.watch_open(self.dir())?;
        let n = rows.len();
        for row in rows {
            match row.state {
                BundleState::Staging => self.recover_staging(row),
                BundleState::Queued => self.recover_queued(row),
                BundleState::Dispatching => self.recover_dispatch(row)?,
                state => self.recover_move(row, state),
            }
        }
        Ok(n)
    }

    fn recover_staging(&mut self, row: WatchRow) {
        if row.staged_path.exists() {
            return self.queue(row);
        }
        let src = self.dir().join(&row.name);
        // The process died between recording and moving: the file in the folder is this
        // bundle only if it is unchanged.
        match fs::stat(&src) {
            Some(s) if s.size == row.size && s.mtime_ns == row.mtime_ns => self.stage(row, &src),
            _ => {
                let why = "it left the folder or changed before it was taken; if it is there now, it is a new arrival";
                if let Err(e) = self.setup.journal.watch_vanished(row.id, why) {
                    self.error(format!("{}: {e}", row.name));
                }
            }
        }
    }

    fn recover_queued(&mut self, row: WatchRow) {
        if !row.staged_path.exists() {
            let why = format!("its staged file {} is gone", row.staged_path.display());
            self.error(format!("{}: {why}", row.name));
            if let Err(e) = self.setup.journal.watch_vanished(row.id, &why) {
                self.error(format!("{}: {e}", row.name));
            }
            return;
        }
        // Queued rows were hashed and planned; plan again (the config may have changed).
        self.queue(row);
    }

    fn recover_dispatch(&mut self, row: WatchRow) -> Result<(), WatchError> {
        let Some(d) = row.dispatch else {
            self.recover_queued(row);
            return Ok(());
        };
        let Some(detail) = self.setup.journal.dispatch(d)? else {
            self.recover_queued(row);
            return Ok(());
        };
        if detail.state == DispatchState::Running {
            if self.shared.is_some() {
                // Its watcher lives but let its lease lapse: not taken over; the claim lapses.
                self.error(format!(
                    "{}: dispatch #{d} is still written by process {}: not taken over",
                    row.name, detail.writer_pid
                ));
                return Ok(());
            }
            self.error(format!(
                "{}: dispatch #{d} is running in process {}; the bundle is picked up at the next start",
                row.name, detail.writer_pid
            ));
            return Ok(());
        }
        if detail.state == DispatchState::Finished {
            let (state, reason) = if recover::all_succeeded(&detail) {
                (BundleState::Done, None)
            } else {
                (
                    BundleState::Failed,
                    Some(recover::failure_reason(&detail, self.dir())),
                )
            };
            self.finish(row, state, reason);
            return Ok(());
        }
        match recover::judge(&detail) {
            Recovery::Ended { all_succeeded } => {
                let (state, reason) = if all_succeeded {
                    (BundleState::Done, None)
                } else {
                    (
                        BundleState::Failed,
                        Some(recover::failure_reason(&detail, self.dir())),
                    )
                };
                self.finish(row, state, reason);
            }
            Recovery::Unknown(unknown) => {
                for u in unknown.iter().filter(|u| u.mark) {
                    self.setup.journal.mark_unknown(d, &u.host, u.step)?;
                }
                // Cancelled: `--resume ID --force` takes it over later.
                self.setup.journal.mark_cancelled(d)?;
                let reason = recover::unknown_reason(
                    &detail,
                    &unknown,
                    self.setup.journal.path(),
                    &self.config_path,
                );
                self.finish(row, BundleState::Failed, Some(reason));
            }
            Recovery::Continue { skip, only } => {
                let rebuilt = Stamp::parse(&detail.record.timestamp)
                    .ok_or_else(|| format!("bad timestamp `{}`", detail.record.timestamp))
                    .and_then(|stamp| {
                        Plan::build(
                            &self.setup.config,
                            &self.setup.netrc,
                            &self.setup.ssh,
                            &row.name,
                            stamp,
                        )
                        .map_err(|e| e.to_string())
                    })
                    .and_then(|plan| {
                        if plan.rule.name == detail.record.rule {
                            Ok(plan)
                        } else {
                            Err(format!(
                                "the bundle now matches rule [{}], not [{}]: the config changed",
                                plan.rule.name, detail.record.rule
                            ))
                        }
                    });
                match rebuilt {
                    Ok(plan) => self.enqueue(row, Arc::new(plan), Some((d, skip, only))),
                    Err(why) => {
                        self.setup.journal.mark_cancelled(d)?;
                        let reason = format!(
                            "dispatch #{d} was interrupted and cannot go on: {why}\nFix the config, \
                             then run dropship --resume {d}, or move this file back into {}.",
                            self.dir().display()
                        );
                        self.finish(row, BundleState::Failed, Some(reason));
                    }
                }
            }
        }
        Ok(())
    }

    /// Final state recorded, move not confirmed: finish the move.
    fn recover_move(&mut self, row: WatchRow, state: BundleState) {
        if let Some(target) = row
            .archived_path
            .as_ref()
            .filter(|t| t.exists() && !row.staged_path.exists())
        {
            if let Err(e) = self.setup.journal.watch_archived(row.id, target) {
                self.error(format!("{}: {e}", row.name));
            }
            return;
        }
        if !row.staged_path.exists() {
            // Moved already and removed from the shelf since, or removed by hand: either way
            // the recorded state stays (a `done` bundle must stay done, or dropping it again
            // would ship it twice); only the move is closed.
            if let Err(e) = self.setup.journal.watch_closed(row.id) {
                self.error(format!("{}: {e}", row.name));
            }
            return;
        }
        // The reason file may already be beside the reserved name; writing it again next
        // to a fresh name is simplest and loses nothing.
        let shelf = match state {
            BundleState::Unmatched => Shelf::Unmatched,
            BundleState::Failed => Shelf::Failed,
            _ => Shelf::Done,
        };
        let folder = Layout::new(&row.dir).shelf(shelf);
        let reason = row.reason.clone();
        self.shelve(&row, state, &folder, reason.as_deref());
    }
}

/// One watcher per folder: an `flock` on `DIR/.dropship/lock`, released by the kernel when
/// the process dies however it dies.
/// With a shared queue the lock is shared: several watchers may watch one folder (they
/// coordinate through the journal), but not next to one that is not sharing.
fn take_lock(layout: &Layout, shared: bool) -> Result<std::fs::File, WatchError> {
    use std::io::{Read, Seek, Write};
    let path = layout.state.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| WatchError::Dir {
            dir: layout.dir.clone(),
            detail: format!("{}: {e}", path.display()),
        })?;
    // SAFETY: flock on a valid, open descriptor.
    let mode = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    let rc = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
    if rc != 0 {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        return Err(WatchError::Busy {
            dir: layout.dir.clone(),
            pid: pid.trim().to_owned(),
        });
    }
    if !shared {
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
    }
    Ok(file)
}
