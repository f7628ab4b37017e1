//! The bridge between the console and the engine: a tokio runtime whose worker threads run
//! rollouts off the UI thread, and one bounded channel back to the UI.
//!
//! Overflow policy: control events (state changes) and the bridge's own messages block
//! until the UI takes them, so they are never lost; output lines and transfer progress are
//! offered with `try_send` and counted as shed when the channel is full. Every line is in the
//! journal before it is offered, so a shed line is only missing from the screen's ring.

use crate::config::rules::Layout;
use crate::engine::events::Event;
use crate::engine::job::Cancel;
use crate::engine::releases;
use crate::engine::rollback;
use crate::engine::rollout::{self, Dispatch, Emit};
use crate::fleet::probe::{self, HostProbe, Reachability};
use crate::fleet::target::ProbeTarget;
use crate::fleet::version::{self, StatusReport};
use crate::journal::{Journal, NewDispatch};
use crate::plan::Plan;
use crate::session::{JournalFailed, Session, off_the_workers};
use crate::transport::known_hosts::KnownHostsFiles;
use crossterm::event::Event as TermEvent;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Hosts asked at once by the reachability check and the probes: the work is waiting on
/// the network, not the CPU.
pub const PROBE_PARALLEL: usize = 32;

/// The start-up reachability check caps each rule's `timeout` at this: the Hosts screen
/// wants an answer in seconds.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(3);

/// How long quitting waits for notifications still on their way (`notify = URL`).
pub const NOTIFY_WAIT: Duration = Duration::from_secs(10);

/// Messages in the UI channel: capacity. Big enough to absorb a burst of output between two
/// frames; small enough that a flood cannot grow memory.
pub const CHANNEL: usize = 8192;

/// Everything the UI thread waits for, in one channel so it can block on a single `recv`.
pub enum Msg {
    Input(TermEvent),
    Engine(Event),
    /// The dispatch started with `token` is in the journal as `id`.
    Begun {
        token: u64,
        id: i64,
    },
    /// It could not start.
    Failed {
        token: u64,
        error: String,
    },
    /// Its rollout returned; `cancelled` if the user cancelled it.
    Ended {
        id: i64,
        cancelled: bool,
    },
    /// The cheap reachability of one target (`fleet::probe::reach`), keyed by the host name
    /// the Hosts screen shows (a host in several rules gets one message per rule).
    Reach {
        host: String,
        reach: Reachability,
    },
    /// The reachability check of every host is done.
    ReachDone,
    /// One host's preflight (`fleet::probe::probe_host`) of the probe run `token`.
    Probed {
        token: u64,
        host: String,
        probe: Box<HostProbe>,
    },
    /// Every host of the probe run `token` is done.
    ProbeDone {
        token: u64,
    },
    /// The Versions view's matrix (`fleet::version::status`), or why it could not be made.
    Status(Result<StatusReport, String>),
    /// Where `current` stands on `host` before a rollback (`token` names the dialog):
    /// `(current, previous)` release, or why it could not be read.
    RollbackPreview {
        token: u64,
        host: String,
        result: Result<(Option<String>, Option<String>), String>,
    },
    /// The converge plan `token` asked for ([`Bridge::converge_plan`]): per rule, its plan
    /// and the stored bundle to ship; or why there is none (a bundle missing from the
    /// store, no good dispatch of a rule named).
    ConvergePlan {
        token: u64,
        result: Result<Vec<ConvergeItem>, String>,
    },
    /// SIGTERM or SIGHUP: leave like `q` would, so the terminal is restored.
    Terminate,
    /// What the watcher of `--tui --watch DIR` reports: a control event, never shed.
    Watch(crate::watch::WatchEvent),
    /// Other processes' dispatches on the same journal, as the follower read them
    /// ([`crate::session::follow`]); one message per poll that found something.
    Followed(crate::journal::FollowUpdate),
}

/// One rule's converge plan, with the local file of its goal bundle (in the store, its
/// hash checked).
#[derive(Debug, Clone)]
pub struct ConvergeItem {
    pub plan: crate::fleet::converge::RulePlan,
    pub file: PathBuf,
}

pub struct Bridge {
    /// Runtime, journal recording and flushing, cancels, notifications: see
    /// [`crate::session`]. Shared with the rollouts it starts.
    session: Session,
    tx: SyncSender<Msg>,
    known_hosts: KnownHostsFiles,
    config_path: PathBuf,
    holder: String,
    shed: Arc<AtomicU64>,
    /// The cancel of every rollout started here, by journal id, for "stop now" on one of
    /// them (the session only stops them all at once).
    cancels: Arc<std::sync::Mutex<HashMap<i64, Arc<Cancel>>>>,
}

/// What a rollout started by the bridge is.
enum Kind {
    Dispatch { file: PathBuf },
    Rollback,
}

impl Bridge {
    pub fn new(
        tx: SyncSender<Msg>,
        journal: Arc<Journal>,
        known_hosts: KnownHostsFiles,
        config_path: PathBuf,
    ) -> std::io::Result<Bridge> {
        let session = Session::new(journal, Some(2))?;
        let term = tx.clone();
        session.handle().spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut t), Ok(mut h)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            tokio::select! {
                _ = t.recv() => {}
                _ = h.recv() => {}
            }
            tracing::info!("terminated by a signal");
            let _ = term.send(Msg::Terminate);
        });
        Ok(Bridge {
            session,
            tx,
            known_hosts,
            config_path,
            holder: crate::engine::lock::local_holder(),
            shed: Arc::default(),
            cancels: Arc::default(),
        })
    }

    /// Output lines not shown because the UI fell behind.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Starts a dispatch of `plan` (to `only` hosts when given). Hashing the bundle and
    /// writing the journal happen on the runtime, not on the UI thread.
    pub fn start(&self, token: u64, plan: Arc<Plan>, file: PathBuf, only: Option<Vec<String>>) {
        self.spawn_rollout(token, plan, only, Kind::Dispatch { file });
    }

    /// Starts a rollback of `plan`'s rule (see [`crate::engine::rollback`]) on `only` hosts
    /// (all when `None`): journaled and shown like a dispatch of the bundle `(rollback)`,
    /// with live output, and cancelled the same way.
    pub fn start_rollback(&self, token: u64, plan: Arc<Plan>, only: Option<Vec<String>>) {
        self.spawn_rollout(token, plan, only, Kind::Rollback);
    }

    /// Starts ad-hoc runs (`:run`) or an action (`:action`), one rollout per rule's plan,
    /// journaled as runs and cancelled like dispatches (see [`crate::engine::run`]).
    pub fn start_run(&self, plans: Vec<crate::engine::run::RunPlan>, action: bool) {
        let tx = self.tx.clone();
        let runs = self.session.runs().clone();
        let journal = self.session.journal().clone();
        let known_hosts = self.known_hosts.clone();
        let holder = self.holder.clone();
        let emit = self.session.recording(self.intake(), None);
        let kind = rollout::Kind::Run {
            lock: false,
            action,
        };
        for p in plans {
            let (tx, runs, journal, known_hosts, holder, emit) = (
                tx.clone(),
                runs.clone(),
                journal.clone(),
                known_hosts.clone(),
                holder.clone(),
                emit.clone(),
            );
            self.session.handle().spawn(async move {
                let (rec, run) = (p.record.clone(), p.run.clone());
                let j = journal.clone();
                let begun = tokio::task::spawn_blocking(move || j.begin_run(&rec, &run))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                let id = match begun {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::error!("journal: {e}");
                        return;
                    }
                };
                let cancel = Arc::new(Cancel::new());
                runs.track(id, cancel.clone());
                let d = Arc::new(Dispatch {
                    id,
                    plan: Arc::new(p.plan),
                    bundle: PathBuf::new(),
                    bundle_sha256: None,
                    known_hosts,
                    holder,
                    skip: HashMap::new(),
                    only: p.only,
                    connector: crate::engine::connect::real(),
                });
                rollout::run_kind(d, cancel.clone(), emit, kind).await;
                let cancelled = cancel.is_requested();
                off_the_workers(|| {
                    if cancelled && let Err(e) = journal.mark_cancelled(id) {
                        tracing::error!("journal: {e}");
                    }
                    let _ = journal.flush();
                });
                runs.untrack(id);
                off_the_workers(|| {
                    let _ = tx.send(Msg::Ended { id, cancelled });
                });
            });
        }
    }

    /// The console's intake: control events wait until the UI takes them; output lines and
    /// progress are shed (and counted) when the channel is full. Output comes a line per
    /// message, as the channel's bound (in messages) assumes: an event carrying the lines
    /// of a whole read is cut up here.
    fn intake(&self) -> Emit {
        let (t, shed) = (self.tx.clone(), self.shed.clone());
        Arc::new(move |e: Event| {
            if e.is_control() {
                let _ = t.send(Msg::Engine(e));
                return;
            }
            for one in e.line_by_line() {
                if let Err(TrySendError::Full(_)) = t.try_send(Msg::Engine(one)) {
                    shed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    }

    fn spawn_rollout(&self, token: u64, plan: Arc<Plan>, only: Option<Vec<String>>, kind: Kind) {
        let tx = self.tx.clone();
        let runs = self.session.runs().clone();
        let journal = self.session.journal().clone();
        let known_hosts = self.known_hosts.clone();
        let holder = self.holder.clone();
        let config_path = self.config_path.clone();
        let emit = self.session.recording(self.intake(), None);
        let cancels = self.cancels.clone();
        self.session.handle().spawn(async move {
            let begin = {
                let (plan, only, journal) = (plan.clone(), only.clone(), journal.clone());
                let file = match &kind {
                    Kind::Dispatch { file } => Some(file.clone()),
                    Kind::Rollback => None,
                };
                tokio::task::spawn_blocking(move || {
                    let rec = match &file {
                        Some(file) => {
                            NewDispatch::for_plan(&plan, file, &config_path, only.as_deref())
                                .map_err(|e| format!("bundle {}: {e}", file.display()))?
                        }
                        None => rollback::record(
                            &plan,
                            &config_path,
                            only.as_deref(),
                            crate::engine::events::now_ms(),
                        ),
                    };
                    let id = journal.begin_dispatch(&rec).map_err(|e| e.to_string())?;
                    Ok((id, rec.known_sha256()))
                })
                .await
                .unwrap_or_else(|e| Err(format!("internal error: {e}")))
            };
            let (id, bundle_sha256) = match begin {
                Ok(x) => x,
                Err(error) => {
                    off_the_workers(|| {
                        let _ = tx.send(Msg::Failed { token, error });
                    });
                    return;
                }
            };
            if !off_the_workers(|| tx.send(Msg::Begun { token, id }).is_ok()) {
                return;
            }
            let cancel = Arc::new(Cancel::new());
            runs.track(id, cancel.clone());
            lock_cancels(&cancels).insert(id, cancel.clone());
            let summary = match kind {
                Kind::Dispatch { file } => {
                    let d = Arc::new(Dispatch {
                        id,
                        plan,
                        bundle: file,
                        bundle_sha256,
                        known_hosts,
                        holder,
                        skip: HashMap::new(),
                        only,
                        connector: crate::engine::connect::real(),
                    });
                    tracing::info!(id, "dispatch started");
                    let s = rollout::run(d.clone(), cancel.clone(), emit.clone()).await;
                    crate::engine::store::keep_shipped(d, &s, emit.clone()).await;
                    s
                }
                Kind::Rollback => {
                    let d = Arc::new(rollback::dispatch(id, plan, known_hosts, holder, only));
                    tracing::info!(id, "rollback started");
                    rollback::run(d, cancel.clone(), emit.clone()).await
                }
            };
            runs.finished(&summary, &emit);
            let cancelled = cancel.is_requested();
            off_the_workers(|| {
                if cancelled && let Err(e) = journal.mark_cancelled(id) {
                    tracing::error!("journal: {e}");
                }
                let _ = journal.flush();
            });
            runs.untrack(id);
            lock_cancels(&cancels).remove(&id);
            tracing::info!(id, cancelled, "dispatch ended");
            off_the_workers(|| {
                let _ = tx.send(Msg::Ended { id, cancelled });
            });
        });
    }

    /// Notifications still on their way.
    pub fn notifications_pending(&self) -> usize {
        self.session.notifications_pending()
    }

    /// Waits for notifications still on their way, until `deadline` at the latest. Returns
    /// how many were still not done.
    pub fn wait_notifications(&self, deadline: Instant) -> usize {
        self.session.wait_notifications(deadline, &|| false)
    }

    /// The cheap reachability check of `targets` (TCP connect and the service greeting, no
    /// login), on a blocking thread; each answer comes back as a [`Msg::Reach`] as soon as
    /// it is known, then [`Msg::ReachDone`].
    pub fn reach(&self, targets: Arc<Vec<ProbeTarget>>) {
        let tx = self.tx.clone();
        self.session.handle().spawn_blocking(move || {
            probe::reach_all(&targets, PROBE_PARALLEL, Some(REACH_TIMEOUT), &|i, r| {
                let host = targets[i].target.host.name.clone();
                let _ = tx.send(Msg::Reach {
                    host,
                    reach: r.clone(),
                });
            });
            let _ = tx.send(Msg::ReachDone);
        });
    }

    /// The full preflight of `targets` (reachable, host key, login, dest dir, programs,
    /// lock, version), on a blocking thread; each host's result is a [`Msg::Probed`], then
    /// [`Msg::ProbeDone`]. Nothing is written on the hosts but a probe file, removed again.
    pub fn probe(&self, token: u64, targets: Vec<ProbeTarget>) {
        let tx = self.tx.clone();
        let known_hosts = self.known_hosts.clone();
        self.session.handle().spawn_blocking(move || {
            probe::probe_all(&targets, &known_hosts, PROBE_PARALLEL, &|i, p| {
                let _ = tx.send(Msg::Probed {
                    token,
                    host: targets[i].target.host.name.clone(),
                    probe: Box::new(p.clone()),
                });
            });
            let _ = tx.send(Msg::ProbeDone { token });
        });
    }

    /// The Versions matrix: every `version_cmd` run (over SSH) on a blocking thread, drift
    /// marked against the journal's last shipped bundle per rule and host.
    pub fn status(&self, targets: Vec<ProbeTarget>) {
        let tx = self.tx.clone();
        let known_hosts = self.known_hosts.clone();
        let journal = self.session.journal().clone();
        self.session.handle().spawn_blocking(move || {
            let result = journal
                .last_shipped_per_rule()
                .map_err(|e| format!("journal: {e}"))
                .map(|shipped| {
                    version::status(&targets, &shipped, &known_hosts, PROBE_PARALLEL, &|_, _| {})
                });
            let _ = tx.send(Msg::Status(result));
        });
    }

    /// The converge plan of `targets` (`named`: one rule asked for by name, whose missing
    /// `version_cmd` or good dispatch is then an error), on a blocking thread: logs in to
    /// every host to read its version, so never on the UI thread. Judged by the same code
    /// as `--converge --dry-run` ([`crate::session::commands::converge_plan_in`]).
    pub fn converge_plan(&self, token: u64, targets: Vec<ProbeTarget>, named: bool) {
        let tx = self.tx.clone();
        let known_hosts = self.known_hosts.clone();
        let journal = self.session.journal().clone();
        self.session.handle().spawn_blocking(move || {
            use crate::engine::store::Store;
            // Output of dispatches that just ended may still be buffered: the last good
            // dispatch must be in the rows read.
            let _ = journal.flush();
            let result = crate::session::commands::converge_plan_in(
                Some(&journal),
                std::path::Path::new("in use"),
                &known_hosts,
                &targets,
                &[],
                named,
            )
            .map(|plans| {
                let store = Store::new(Store::default_root());
                plans
                    .into_iter()
                    .map(|plan| ConvergeItem {
                        file: store.blob_path(&plan.goal.sha256),
                        plan,
                    })
                    .collect()
            })
            .map_err(|e| match e {
                // The status bar has one line: the bundle's name first, the hash left out.
                crate::session::commands::RunError::Store(
                    crate::engine::store::StoreError::Missing { bundle, path, .. },
                ) => format!(
                    "bundle {bundle} is not in the bundle store (evicted or never stored; looked for {}): ship it again with :dispatch FILE",
                    path.display()
                ),
                e => e.to_string(),
            });
            let _ = tx.send(Msg::ConvergePlan { token, result });
        });
    }

    /// Reads where `current` stands on each of `plan`'s `hosts` (a `layout = releases`
    /// rule), so the rollback dialog can say "from X to Y". Read only, here too: one SSH
    /// login and one `ls`/`readlink` script per host, and an unknown host key is not
    /// recorded before the user said yes (`releases::peek`).
    pub fn rollback_preview(&self, token: u64, plan: Arc<Plan>, hosts: Vec<String>) {
        if plan.rule.layout != Layout::Releases {
            return;
        }
        let tx = self.tx.clone();
        let known_hosts = self.known_hosts.clone();
        self.session.handle().spawn_blocking(move || {
            let targets: Vec<&crate::plan::Target> = plan
                .targets
                .iter()
                .filter(|t| hosts.contains(&t.host.name))
                .collect();
            let read = |t: &&crate::plan::Target| {
                releases::peek(t, &plan.rule, &known_hosts)
                    .map(|s| (s.current.clone(), s.previous().map(str::to_owned)))
                    .map_err(|e| first_line(&e.to_string()))
            };
            probe::for_each_bounded(&targets, PROBE_PARALLEL, read, &|i, result| {
                let _ = tx.send(Msg::RollbackPreview {
                    token,
                    host: targets[i].host.name.clone(),
                    result: result.clone(),
                });
            });
        });
    }

    /// Asks dispatch `id` to stop: no new step starts, and running steps are stopped after
    /// the same grace period as Ctrl-C in headless mode.
    pub fn cancel(&self, id: i64) {
        self.session.cancel(id);
    }

    /// Stops dispatch `id` now: no new step starts and running commands are killed without
    /// waiting for the grace period (a second `c`, confirmed).
    pub fn stop_now(&self, id: i64) {
        if let Some(c) = lock_cancels(&self.cancels).get(&id) {
            c.requested.store(true, Ordering::SeqCst);
            c.hard.store(true, Ordering::SeqCst);
        }
    }

    /// Stops every running dispatch at once (quitting).
    pub fn stop_all(&self) -> usize {
        self.session.stop_all()
    }

    pub fn running(&self) -> usize {
        self.session.running()
    }

    pub fn shutdown(self, wait: Duration) {
        self.session.shutdown(wait);
    }
}

/// The drop folder (`--tui --watch DIR`).
impl Bridge {
    /// Starts watching on this bridge's runtime: the watcher's own events and the dispatch
    /// events of what it ships come back through the UI channel with the same overflow
    /// policy as a dispatch started here. The watcher records every dispatch event in the
    /// journal itself, so this sink only passes them on (recording here too would store
    /// each step twice). `cancel` goes to all its dispatches: `requested` then `hard` after
    /// the grace period is the clean stop.
    pub fn start_watch(
        &self,
        options: crate::watch::WatchOptions,
        setup: crate::watch::Setup,
        cancel: Arc<Cancel>,
    ) -> Result<crate::watch::Running, crate::watch::WatchError> {
        let failed = JournalFailed {
            flag: Arc::default(),
            cancel: cancel.clone(),
        };
        let events = self.session.recording(self.intake(), Some(failed.clone()));
        let w = self.tx.clone();
        let watch_events: crate::watch::WatchEmit = Arc::new(move |e| {
            let _ = w.send(Msg::Watch(e));
        });
        crate::watch::start(
            options,
            setup,
            self.session.handle(),
            cancel,
            events,
            failed.flag,
            watch_events,
        )
    }

    /// The session's subscriber of finished dispatches, for the drop folder's.
    pub fn finished_subscriber(&self) -> crate::watch::Finished {
        self.session.runs().subscriber()
    }

    /// Sets `hard` on `cancel` after the grace period, like [`Bridge::cancel`].
    pub fn cut_after_grace(&self, cancel: Arc<Cancel>) {
        self.session.cancel_with_grace(cancel);
    }
}

fn lock_cancels(
    m: &std::sync::Mutex<HashMap<i64, Arc<Cancel>>>,
) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Cancel>>> {
    // A panic elsewhere while holding it leaves the map itself intact.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}
