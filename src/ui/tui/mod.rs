//! The interactive console (`dropship` with no mode flag): hosts, packages, dispatches and
//! live logs in ratatui.
//!
//! - [`app`]: the state machine (keys and engine events in, effects out); no drawing, no I/O
//!   beyond reading the journal, so tests drive it directly.
//! - [`render`], [`log_pane`], [`dialogs`], [`fleet_dialogs`]: drawing from the state; only
//!   visible rows are built.
//! - [`engine`]: the bridge to the engine (tokio runtime off the UI thread, one bounded
//!   channel, never dropping control events).
//! - [`console`]: the event loop; [`terminal`]: setup, teardown, panic hook, log file.
//! - [`model`], [`ring`], [`logview`]: what is shown, per-host bounded logs, log scrolling.
//! - [`theme`], [`palette`], [`keys`]: themes, the `:` palette, the key tables of `?`.

pub mod all_hosts;
pub mod app;
pub mod console;
pub mod contrast;
pub mod details;
pub mod dialogs;
pub mod engine;
pub mod fleet_dialogs;
pub mod keys;
pub mod log_pane;
pub mod log_text;
pub mod logview;
pub mod merged;
pub mod model;
pub mod palette;
pub mod render;
pub mod ring;
pub mod run_dialog;
pub mod terminal;
pub mod theme;
pub mod watch_view;
pub mod widgets;

use crate::config::{Config, Netrc, SshHosts};
use crate::engine::job::Cancel;
use crate::journal::{Journal, JournalError};
use crate::plan::Stamp;
use crate::transport::known_hosts::KnownHostsFiles;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What `dropship` (console mode) starts with.
pub struct Options {
    pub config: Config,
    pub netrc: Netrc,
    pub ssh: SshHosts,
    pub journal_path: PathBuf,
    pub known_hosts: KnownHostsFiles,
    /// `--theme`; `None` falls back to `$DROPSHIP_THEME`, `NO_COLOR`, the remembered one.
    pub theme: Option<String>,
    pub packages: Option<PathBuf>,
    pub stamp: Option<Stamp>,
    pub ring_capacity: usize,
    /// Bytes all logs may hold together (see [`app::AppEnv::log_budget`]).
    pub log_budget: usize,
    /// `--tui --watch DIR`: the folder to watch and dispatch from, shown in Packages.
    pub watch: Option<crate::watch::WatchOptions>,
}

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(transparent)]
    Theme(#[from] theme::ThemeError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("terminal: {0}")]
    Terminal(std::io::Error),
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
}

impl TuiError {
    /// A usage problem (exit 2) rather than a failure.
    pub fn is_usage(&self) -> bool {
        match self {
            TuiError::Theme(_) => true,
            TuiError::Watch(e) => e.is_usage(),
            _ => false,
        }
    }
}

/// Runs the console until the user quits. Dispatches still running then are stopped.
pub fn run(opts: Options) -> Result<(), TuiError> {
    let log = terminal::init_logging();
    let theme = theme::Theme::load(&theme::startup_choice(opts.theme.as_deref()))?;
    let journal = Arc::new(Journal::open(&opts.journal_path)?);
    let (tx, rx) = std::sync::mpsc::sync_channel(engine::CHANNEL);
    let bridge = engine::Bridge::new(
        tx.clone(),
        journal.clone(),
        opts.known_hosts.clone(),
        opts.config.path.clone(),
    )
    .map_err(TuiError::Terminal)?;
    let env = app::AppEnv {
        config: Arc::new(opts.config),
        netrc: Arc::new(opts.netrc),
        ssh: Arc::new(opts.ssh),
        journal: Some(journal.clone()),
        packages_dir: opts.packages,
        ring_capacity: opts.ring_capacity.max(1),
        log_budget: opts.log_budget,
        stamp: opts.stamp,
    };
    let mut app = app::App::new(env, theme);
    if let Some(p) = &log {
        tracing::info!("console started; log file {}", p.display());
    }
    // Before the terminal is taken, so a folder that cannot be watched is reported plainly.
    let watcher = match opts.watch {
        Some(options) => {
            let dir = crate::watch::canonical_dir(&options.dir)?;
            let history = journal.watch_bundles(&dir, watch_view::KEEP)?;
            app.set_watch(watch_view::WatchView::new(dir, &history));
            let setup = crate::watch::Setup {
                config: app.env.config.clone(),
                netrc: app.env.netrc.clone(),
                ssh: app.env.ssh.clone(),
                known_hosts: opts.known_hosts,
                journal: journal.clone(),
                connector: crate::engine::connect::real(),
                finished: bridge.finished_subscriber(),
            };
            let cancel = Arc::new(Cancel::new());
            let running = bridge.start_watch(options, setup, cancel.clone())?;
            Some((running, cancel))
        }
        None => None,
    };
    // Everyone's dispatches on this journal, live: only while the console is up.
    let follower = {
        let tx = tx.clone();
        crate::session::follow::Follower::start(
            &opts.journal_path,
            crate::session::follow::POLL,
            move |u| tx.send(engine::Msg::Followed(u)).is_ok(),
        )
        .map_err(TuiError::Terminal)?
    };
    let mut term = terminal::enter().map_err(TuiError::Terminal)?;
    std::thread::Builder::new()
        .name("dropship-input".into())
        .spawn(move || {
            // Blocks in read(): no polling. Ends when the UI drops the receiver.
            while let Ok(ev) = crossterm::event::read() {
                if tx.send(engine::Msg::Input(ev)).is_err() {
                    break;
                }
            }
        })
        .map_err(TuiError::Terminal)?;
    let handle = watcher.as_ref().map(|(r, _)| r.handle.clone());
    let result = console::event_loop(&mut term, &mut app, &rx, &bridge, handle.as_ref());
    terminal::leave();
    drop(follower);
    // The watcher first, so no new dispatch starts while the others stop.
    if let Some((running, _)) = &watcher {
        running.handle.stop();
    }
    if let Some((_, cancel)) = &watcher {
        cancel.requested.store(true, Ordering::SeqCst);
        bridge.cut_after_grace(cancel.clone());
    }
    if !app.quit_cancelled.is_empty() {
        let ids: Vec<String> = app.quit_cancelled.iter().map(|i| i.to_string()).collect();
        eprintln!(
            "dropship: cancelled dispatch(es) {}; `dropship --resume ID` continues one ({})",
            ids.join(", "),
            ids.iter()
                .map(|i| format!("dropship --resume {i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let stopping = bridge.stop_all();
    if stopping > 0 {
        eprintln!("dropship: stopping {stopping} running dispatch(es)…");
        let deadline = Instant::now() + Duration::from_secs(10);
        while bridge.running() > 0 && Instant::now() < deadline {
            let _ = rx.recv_timeout(Duration::from_millis(100));
        }
    }
    if let Some((running, _)) = watcher {
        stop_watcher(&app, running, &rx);
    }
    // The stopped dispatches notify too (`notify = URL`): give that a bounded chance.
    let left = bridge.notifications_pending();
    if left > 0 {
        eprintln!(
            "dropship: waiting up to {}s for {left} notification(s)…",
            engine::NOTIFY_WAIT.as_secs()
        );
        let missed = bridge.wait_notifications(Instant::now() + engine::NOTIFY_WAIT);
        if missed > 0 {
            eprintln!(
                "dropship: {missed} notification(s) not delivered in time (see the log file)"
            );
        }
    }
    drop(rx);
    bridge.shutdown(Duration::from_secs(2));
    result.map_err(TuiError::Terminal)
}

/// How long quitting waits for the watcher past the grace period its running dispatches
/// get: cutting a command short, recording it and shelving its bundle take a moment.
const WATCH_DRAIN: Duration = Duration::from_secs(10);

/// Waits for the watcher to stop (its dispatches were asked to stop and are cut after the
/// grace period), taking the UI channel's messages meanwhile so the watcher never blocks
/// on a full channel. Says what is left for the next start.
fn stop_watcher(
    app: &app::App,
    running: crate::watch::Running,
    rx: &std::sync::mpsc::Receiver<engine::Msg>,
) {
    let dir = app
        .watch
        .as_ref()
        .map(|w| w.dir.display().to_string())
        .unwrap_or_default();
    let in_flight = app.watch.as_ref().map_or(0, |w| w.in_flight());
    if in_flight > 0 {
        eprintln!(
            "dropship: stopping the watcher of {dir}: {in_flight} dispatch(es) get up to {}s to finish…",
            crate::session::GRACE.as_secs()
        );
    }
    let deadline = Instant::now() + crate::session::GRACE + WATCH_DRAIN;
    while !running.thread.is_finished() && Instant::now() < deadline {
        let _ = rx.recv_timeout(Duration::from_millis(100));
    }
    if !running.thread.is_finished() {
        tracing::error!("the watcher of {dir} did not stop in time");
        eprintln!(
            "dropship: the watcher of {dir} did not stop in time; what it had open goes on at its next start"
        );
        return;
    }
    match running.thread.join() {
        Ok(Ok(r)) => {
            tracing::info!(?r, "watcher stopped");
            if r.left_open > 0 {
                eprintln!(
                    "dropship: watcher of {dir} stopped; {} bundle(s) go on at its next start",
                    r.left_open
                );
            }
        }
        Ok(Err(e)) => eprintln!("dropship: watcher of {dir}: {e}"),
        Err(_) => eprintln!("dropship: the watcher of {dir} panicked (see the log file)"),
    }
}
