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

pub mod app;
pub mod console;
pub mod dialogs;
pub mod engine;
pub mod fleet_dialogs;
pub mod keys;
pub mod log_pane;
pub mod logview;
pub mod model;
pub mod palette;
pub mod render;
pub mod ring;
pub mod terminal;
pub mod theme;

use crate::config::{Config, Netrc, SshHosts};
use crate::journal::{Journal, JournalError};
use crate::plan::Stamp;
use crate::transport::known_hosts::KnownHostsFiles;
use std::path::PathBuf;
use std::sync::Arc;
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
}

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(transparent)]
    Theme(#[from] theme::ThemeError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("terminal: {0}")]
    Terminal(std::io::Error),
}

impl TuiError {
    /// A usage problem (exit 2) rather than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(self, TuiError::Theme(_))
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
        opts.known_hosts,
        opts.config.path.clone(),
    )
    .map_err(TuiError::Terminal)?;
    let env = app::AppEnv {
        config: Arc::new(opts.config),
        netrc: Arc::new(opts.netrc),
        ssh: Arc::new(opts.ssh),
        journal: Some(journal),
        packages_dir: opts.packages,
        ring_capacity: opts.ring_capacity.max(1),
        log_budget: opts.log_budget,
        stamp: opts.stamp,
    };
    let mut app = app::App::new(env, theme);
    if let Some(p) = &log {
        tracing::info!("console started; log file {}", p.display());
    }
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
    let result = console::event_loop(&mut term, &mut app, &rx, &bridge);
    terminal::leave();
    let stopping = bridge.stop_all();
    if stopping > 0 {
        eprintln!("dropship: stopping {stopping} running dispatch(es)…");
        let deadline = Instant::now() + Duration::from_secs(10);
        while bridge.running() > 0 && Instant::now() < deadline {
            let _ = rx.recv_timeout(Duration::from_millis(100));
        }
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
