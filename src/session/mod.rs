//! The one composition root: where the engine, the journal and a front end meet.
//!
//! Every way of starting work (`--dispatch`, `--resume`, `--rollback`, `--watch` and the
//! console) gets the same machinery from here, written once: the tokio runtime, the
//! recording of every event in the journal before a front end sees it, the flush of buffered
//! output lines every second, cancel → [`GRACE`] → hard stop (from a key, Ctrl-C or
//! SIGTERM), and the wait for webhook notifications still on their way. Front ends only
//! hand in their intake (an [`Emit`]) and render what arrives there; the engine never knows
//! which one listens.

pub mod commands;
pub mod follow;

use crate::engine::events::Event;
use crate::engine::job::Cancel;
use crate::engine::notify::Pending;
use crate::engine::rollout::{Emit, Summary};
use crate::journal::Journal;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long running steps may go on after a cancel (Ctrl-C, `c`, SIGTERM) before they are
/// stopped.
pub const GRACE: Duration = Duration::from_secs(10);

/// How often buffered output lines are committed to the journal: a crash loses at most this
/// much of a quiet command's output.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The runtime and what every run shares.
pub struct Session {
    rt: tokio::runtime::Runtime,
    journal: Arc<Journal>,
    runs: Runs,
    /// Set when the session ends, to stop the flusher.
    ended: Arc<AtomicBool>,
    /// The journal writer's queue (see [`Writer`]); dropped when the session ends.
    writer: Option<std::sync::mpsc::SyncSender<Record>>,
    /// Told when the writer thread has drained its queue and ended.
    writer_done: std::sync::mpsc::Receiver<()>,
}

/// Events waiting for the journal writer. Bounded: when the journal (a slow disk) or a front
/// end falls behind, output lines wait in their job's thread instead of piling up here. An
/// output event holds the lines of one read (32 KiB as a rule), so this is about 2 MiB at
/// most; more would only be memory, the writer takes an event in microseconds.
const WRITER_QUEUE: usize = 64;

/// One event for the writer thread: recorded, then handed to the sink's front end; a control
/// event's sender waits for `ack`, so when a rollout returns, everything it emitted is in
/// the journal and with the front end (what the drop folder and `--resume` read back).
struct Record {
    event: Event,
    sink: Arc<Sink>,
    ack: Option<std::sync::mpsc::SyncSender<()>>,
}

/// A front end's intake and what to do when the journal fails.
struct Sink {
    front: Emit,
    on_failure: Option<JournalFailed>,
    /// The first failure is also told to the user, as a warning notice.
    warned: AtomicBool,
}

/// The one journal-writer thread: every event of the session is recorded here, in the order
/// it was emitted, before its front end sees it; no SQLite write happens on the runtime.
fn writer(journal: Arc<Journal>, queue: std::sync::mpsc::Receiver<Record>) {
    for r in queue {
        if let Err(err) = journal.record(&r.event) {
            tracing::error!("journal write failed: {err}");
            if let Some(f) = &r.sink.on_failure {
                f.trip();
            }
            if !r.sink.warned.swap(true, Ordering::SeqCst) {
                (r.sink.front)(err.notice(r.event.dispatch()));
            }
        }
        // The journal's server went away or came back (events are spooled meanwhile).
        for message in journal.take_notices() {
            (r.sink.front)(Event::Notice {
                dispatch: r.event.dispatch(),
                at: crate::model::events::now_ms(),
                host: None,
                level: crate::model::events::Level::Warning,
                message,
            });
        }
        (r.sink.front)(r.event);
        if let Some(ack) = r.ack {
            let _ = ack.send(());
        }
    }
}

/// The dispatches running in a session and the notifications still on their way: what a
/// rollout task registers itself with (a cheap clone; the runtime stays with the
/// [`Session`], so no task can end up dropping it).
#[derive(Clone, Default)]
pub struct Runs {
    /// Cancels of the dispatches running now, by journal id.
    cancels: Arc<Mutex<HashMap<i64, Arc<Cancel>>>>,
    /// Notifications of ended dispatches still on their way.
    notifications: Arc<Mutex<Vec<Pending>>>,
}

impl Runs {
    /// Registers the cancel of running dispatch `id` (see [`Session::cancel`]).
    pub fn track(&self, id: i64, cancel: Arc<Cancel>) {
        lock(&self.cancels).insert(id, cancel);
    }

    /// Dispatch `id` ended.
    pub fn untrack(&self, id: i64) {
        lock(&self.cancels).remove(&id);
    }

    /// A notification on its way: waited for before the session ends.
    pub fn notifying(&self, p: Pending) {
        let mut all = lock(&self.notifications);
        all.retain(|p| !p.is_done());
        all.push(p);
    }

    /// A dispatch or rollback ended: its subscribers hear of it (the notifier, which sends
    /// the summary to the rule's `notify` URL; the session then waits for it at exit).
    pub fn finished(&self, s: &Summary, emit: &Emit) {
        if let Some(p) = crate::engine::notify::finished(s, emit.clone()) {
            self.notifying(p);
        }
    }

    /// [`Runs::finished`] as a plain callback, for the drop folder's dispatches.
    pub fn subscriber(&self) -> crate::watch::Finished {
        let runs = self.clone();
        Arc::new(move |s: &Summary, emit: &Emit| runs.finished(s, emit))
    }
}

impl Session {
    /// A runtime (`workers` threads, else one per core) with the journal flusher running.
    pub fn new(journal: Arc<Journal>, workers: Option<usize>) -> std::io::Result<Session> {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = workers {
            b.worker_threads(n);
        }
        let rt = b.thread_name("dropship-engine").enable_all().build()?;
        let ended = Arc::new(AtomicBool::new(false));
        let (j, done) = (journal.clone(), ended.clone());
        rt.spawn(async move {
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(FLUSH_EVERY).await;
                let j = j.clone();
                // SQLite off the async workers.
                let _ = tokio::task::spawn_blocking(move || j.flush()).await;
            }
        });
        let (writer_tx, queue) = std::sync::mpsc::sync_channel(WRITER_QUEUE);
        let (done_tx, writer_done) = std::sync::mpsc::channel();
        let j = journal.clone();
        std::thread::Builder::new()
            .name("dropship-journal".into())
            .spawn(move || {
                writer(j, queue);
                let _ = done_tx.send(());
            })?;
        Ok(Session {
            rt,
            journal,
            runs: Runs::default(),
            ended,
            writer: Some(writer_tx),
            writer_done,
        })
    }

    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }

    /// Runs `f` to its end on the runtime (the headless commands).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The one event sink: every event is recorded in the journal (by the session's writer
    /// thread), then handed to `front`. A journal write that fails is logged, told to the
    /// user once as a warning, and, when `on_failure` is given, reported to it (the drop
    /// folder stops taking files: without its journal it cannot know what ran).
    ///
    /// Control events (a step started or ended, a notice) wait until they are recorded and
    /// with the front end; output lines and progress only wait for room in the writer's
    /// queue. On a runtime worker either wait happens under [`off_the_workers`], so the
    /// worker's other tasks (timers, the grace period, other dispatches) move on.
    pub fn recording(&self, front: Emit, on_failure: Option<JournalFailed>) -> Emit {
        let sink = Arc::new(Sink {
            front,
            on_failure,
            warned: AtomicBool::new(false),
        });
        let tx = self
            .writer
            .clone()
            .expect("the writer lives as long as the session");
        Arc::new(move |event: Event| {
            let control = event.is_control();
            let (ack, acked) = if control {
                let (a, b) = std::sync::mpsc::sync_channel(1);
                (Some(a), Some(b))
            } else {
                (None, None)
            };
            off_the_workers(|| {
                let sent = tx.send(Record {
                    event,
                    sink: sink.clone(),
                    ack,
                });
                if let (Ok(()), Some(acked)) = (sent, acked) {
                    let _ = acked.recv();
                }
            })
        })
    }

    /// What rollout tasks register with.
    pub fn runs(&self) -> &Runs {
        &self.runs
    }

    /// How many dispatches run.
    pub fn running(&self) -> usize {
        lock(&self.runs.cancels).len()
    }

    /// Asks dispatch `id` to stop: no new step starts, running steps are stopped after
    /// [`GRACE`].
    pub fn cancel(&self, id: i64) {
        if let Some(c) = lock(&self.runs.cancels).get(&id).cloned() {
            self.cancel_with_grace(c);
        }
    }

    /// `requested` now, `hard` after [`GRACE`]: the one clean stop.
    pub fn cancel_with_grace(&self, cancel: Arc<Cancel>) {
        cancel.requested.store(true, Ordering::SeqCst);
        self.rt.spawn(async move {
            tokio::time::sleep(GRACE).await;
            cancel.hard.store(true, Ordering::SeqCst);
        });
    }

    /// Stops every running dispatch at once; how many there were.
    pub fn stop_all(&self) -> usize {
        let all = lock(&self.runs.cancels);
        for c in all.values() {
            c.requested.store(true, Ordering::SeqCst);
            c.hard.store(true, Ordering::SeqCst);
        }
        all.len()
    }

    /// SIGINT or SIGTERM asks `cancel` to stop (and runs `first`), the grace period or a
    /// second signal stops it hard. For the headless commands, which have no keys.
    pub fn stop_on_signals(&self, cancel: Arc<Cancel>, first: impl FnOnce() + Send + 'static) {
        self.rt.spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            first();
            cancel.requested.store(true, Ordering::SeqCst);
            tokio::select! {
                _ = tokio::time::sleep(GRACE) => {}
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            cancel.hard.store(true, Ordering::SeqCst);
        });
    }

    /// Notifications still on their way.
    pub fn notifications_pending(&self) -> usize {
        lock(&self.runs.notifications)
            .iter()
            .filter(|p| !p.is_done())
            .count()
    }

    /// Waits for notifications still on their way until `deadline`, or until `stop` says
    /// so (a second Ctrl-C); how many were still not done. Blocking: call it off the
    /// async workers.
    pub fn wait_notifications(&self, deadline: Instant, stop: &dyn Fn() -> bool) -> usize {
        let all: Vec<Pending> = lock(&self.runs.notifications).clone();
        'all: for p in &all {
            while !p.wait(Duration::from_millis(100)) {
                if stop() || Instant::now() >= deadline {
                    break 'all;
                }
            }
        }
        all.iter().filter(|p| !p.is_done()).count()
    }

    /// Ends the runtime (tasks still running get `wait`), lets the writer record what is
    /// queued (bounded by `wait` too: an intake nobody reads any more must not hold the exit),
    /// and commits the journal.
    pub fn shutdown(mut self, wait: Duration) {
        self.ended.store(true, Ordering::Relaxed);
        self.rt.shutdown_timeout(wait);
        self.writer = None;
        let _ = self.writer_done.recv_timeout(wait);
        let _ = self.journal.flush();
    }
}

/// Told once when a journal write fails: the flag a loop reads, and the cancel that stops
/// new steps.
#[derive(Clone)]
pub struct JournalFailed {
    pub flag: Arc<AtomicBool>,
    pub cancel: Arc<Cancel>,
}

impl JournalFailed {
    fn trip(&self) {
        if !self.flag.swap(true, Ordering::SeqCst) {
            self.cancel.requested.store(true, Ordering::SeqCst);
        }
    }
}

/// Runs blocking work `f` where the runtime allows it: on a worker of a multi-threaded
/// runtime through `block_in_place` (its queued tasks are handed to another thread first),
/// elsewhere (a blocking thread, a plain thread, `block_on`) as is.
pub fn off_the_workers<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
