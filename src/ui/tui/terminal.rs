//! Terminal setup and teardown, the panic hook, and the log file.
//!
//! The panic hook restores the terminal *before* the panic message is printed (as
//! `ratatui::init` does), or the message would land on the alternate screen in raw mode and
//! vanish. A panic on another thread (an engine job, which the rollout survives) must not
//! tear the console down: it is written to the log file instead of the screen.

use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use std::io::Stdout;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::thread::ThreadId;

pub type Term = Terminal<CrosstermBackend<Stdout>>;

static UI_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// Raw mode, alternate screen, panic hook.
pub fn enter() -> std::io::Result<Term> {
    install_panic_hook();
    enable_raw_mode()?;
    if let Err(e) = execute!(std::io::stdout(), EnterAlternateScreen) {
        leave();
        return Err(e);
    }
    let mut t = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    t.clear()?;
    Ok(t)
}

/// Puts the terminal back; safe to call more than once and from the panic hook.
pub fn leave() {
    let _ = disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

pub fn set_mouse(on: bool) -> std::io::Result<()> {
    if on {
        execute!(std::io::stdout(), EnableMouseCapture)
    } else {
        execute!(std::io::stdout(), DisableMouseCapture)
    }
}

fn install_panic_hook() {
    let _ = UI_THREAD.set(std::thread::current().id());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if Some(&std::thread::current().id()) == UI_THREAD.get() {
            leave();
            previous(info);
        } else {
            tracing::error!(
                "panic on thread {:?}: {info}",
                std::thread::current().name()
            );
        }
    }));
}

/// `dropship.log` in the state directory: everything traced while the console runs goes
/// there, never to the screen. The one log file of every front end: [`crate::logfile`].
pub fn init_logging() -> Option<PathBuf> {
    crate::logfile::init()
}
