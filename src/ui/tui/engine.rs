//! The bridge between the console and the engine: a tokio runtime whose worker threads run
//! rollouts off the UI thread, and one bounded channel back to the UI.
//!
//! Overflow policy: control events (state changes) and the bridge's own messages block
//! until the UI takes them, so they are never lost; output lines and transfer progress are
//! offered with `try_send` and counted as shed when the channel is full. Every line is in the
//! journal before it is offered, so a shed line is only missing from the screen's ring.

use crate::engine::events::Event;
use crate::engine::job::Cancel;
use crate::engine::rollout::{self, Dispatch, Emit};
use crate::journal::{Journal, NewDispatch};
use crate::plan::Plan;
use crate::transport::known_hosts::KnownHostsFiles;
use crossterm::event::Event as TermEvent;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// SIGTERM or SIGHUP: leave like `q` would, so the terminal is restored.
    Terminate,
}

pub struct Bridge {
    rt: tokio::runtime::Runtime,
    tx: SyncSender<Msg>,
    journal: Arc<Journal>,
    known_hosts: KnownHostsFiles,
    config_path: PathBuf,
    holder: String,
    cancels: Arc<Mutex<HashMap<i64, Arc<Cancel>>>>,
    shed: Arc<AtomicU64>,
}

impl Bridge {
    pub fn new(
        tx: SyncSender<Msg>,
        journal: Arc<Journal>,
        known_hosts: KnownHostsFiles,
        config_path: PathBuf,
    ) -> std::io::Result<Bridge> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dropship-engine")
            .enable_all()
            .build()?;
        let term = tx.clone();
        rt.spawn(async move {
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
            rt,
            tx,
            journal,
            known_hosts,
            config_path,
            holder: crate::engine::lock::local_holder(),
            cancels: Arc::default(),
            shed: Arc::default(),
        })
    }

    /// Output lines not shown because the UI fell behind.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Starts a dispatch of `plan` (to `only` hosts when given). Hashing the bundle and
    /// writing the journal happen on the runtime, not on the UI thread.
    pub fn start(&self, token: u64, plan: Arc<Plan>, file: PathBuf, only: Option<Vec<String>>) {
        let tx = self.tx.clone();
        let journal = self.journal.clone();
        let cancels = self.cancels.clone();
        let shed = self.shed.clone();
        let known_hosts = self.known_hosts.clone();
        let holder = self.holder.clone();
        let config_path = self.config_path.clone();
        self.rt.spawn(async move {
            let begin = {
                let (plan, file, only, journal) =
                    (plan.clone(), file.clone(), only.clone(), journal.clone());
                tokio::task::spawn_blocking(move || {
                    let rec = NewDispatch::for_plan(&plan, &file, &config_path, only.as_deref())
                        .map_err(|e| format!("bundle {}: {e}", file.display()))?;
                    let id = journal.begin_dispatch(&rec).map_err(|e| e.to_string())?;
                    Ok((id, rec.bundle_sha256))
                })
                .await
                .unwrap_or_else(|e| Err(format!("internal error: {e}")))
            };
            let (id, bundle_sha256) = match begin {
                Ok(x) => x,
                Err(error) => {
                    let _ = tx.send(Msg::Failed { token, error });
                    return;
                }
            };
            if tx.send(Msg::Begun { token, id }).is_err() {
                return;
            }
            let cancel = Arc::new(Cancel::new());
            lock(&cancels).insert(id, cancel.clone());
            let done = Arc::new(AtomicBool::new(false));
            spawn_flusher(journal.clone(), done.clone());
            let (j, t) = (journal.clone(), tx.clone());
            let emit: Emit = Arc::new(move |e: Event| {
                if let Err(err) = j.record(&e) {
                    tracing::error!("journal write failed: {err}");
                }
                if e.is_control() {
                    let _ = t.send(Msg::Engine(e));
                } else if let Err(TrySendError::Full(_)) = t.try_send(Msg::Engine(e)) {
                    shed.fetch_add(1, Ordering::Relaxed);
                }
            });
            let d = Arc::new(Dispatch {
                id,
                plan,
                bundle: file,
                bundle_sha256,
                known_hosts,
                holder,
                skip: HashMap::new(),
                only,
            });
            tracing::info!(id, "dispatch started");
            rollout::run(d, cancel.clone(), emit).await;
            done.store(true, Ordering::Relaxed);
            let cancelled = cancel.is_requested();
            if cancelled && let Err(e) = journal.mark_cancelled(id) {
                tracing::error!("journal: {e}");
            }
            let _ = journal.flush();
            lock(&cancels).remove(&id);
            tracing::info!(id, cancelled, "dispatch ended");
            let _ = tx.send(Msg::Ended { id, cancelled });
        });
    }

    /// Asks dispatch `id` to stop: no new step starts, and running steps are stopped after
    /// the same grace period as Ctrl-C in headless mode.
    pub fn cancel(&self, id: i64) {
        let Some(c) = lock(&self.cancels).get(&id).cloned() else {
            return;
        };
        c.requested.store(true, Ordering::SeqCst);
        self.rt.spawn(async move {
            tokio::time::sleep(crate::ui::run::GRACE).await;
            c.hard.store(true, Ordering::SeqCst);
        });
    }

    /// Stops every running dispatch at once (quitting).
    pub fn stop_all(&self) -> usize {
        let all = lock(&self.cancels);
        for c in all.values() {
            c.requested.store(true, Ordering::SeqCst);
            c.hard.store(true, Ordering::SeqCst);
        }
        all.len()
    }

    pub fn running(&self) -> usize {
        lock(&self.cancels).len()
    }

    pub fn shutdown(self, wait: Duration) {
        self.rt.shutdown_timeout(wait);
        let _ = self.journal.flush();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Commits buffered output lines every second while a dispatch runs, so a crash loses at
/// most a second of output (see `Journal::flush`).
fn spawn_flusher(journal: Arc<Journal>, done: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while !done.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let j = journal.clone();
            let _ = tokio::task::spawn_blocking(move || j.flush()).await;
        }
    });
}
