//! The console's event loop: one thread draws, and blocks on one channel fed by the input
//! thread and the engine. It redraws only when something changed, at most once per
//! [`FRAME`], and while nothing runs it sleeps in `recv` (no timer, no polling), so an idle
//! console costs no CPU.

use super::app::{App, Effect};
use super::engine::{Bridge, Msg};
use super::render;
use super::terminal::{self, Term};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// At most ~60 frames a second.
pub const FRAME: Duration = Duration::from_millis(16);

/// While a dispatch runs, elapsed times tick once a second even if it prints nothing.
const TICK: Duration = Duration::from_secs(1);

/// Messages handled before the screen gets a chance to redraw, so a flood of output lines
/// cannot starve keys or frames.
const BATCH: usize = 20_000;

pub fn event_loop(
    term: &mut Term,
    app: &mut App,
    rx: &Receiver<Msg>,
    bridge: &Bridge,
) -> std::io::Result<()> {
    let mut dirty = true;
    let mut last = Instant::now() - FRAME;
    loop {
        if dirty && last.elapsed() >= FRAME {
            app.now = crate::engine::events::now_ms();
            app.shed = bridge.shed();
            term.draw(|f| render::draw(f, app))?;
            if render::wants_cursor(app) {
                term.show_cursor()?;
            } else {
                term.hide_cursor()?;
            }
            last = Instant::now();
            dirty = false;
        }
        let wait = if dirty {
            Some(FRAME.saturating_sub(last.elapsed()))
        } else if app.running() > 0 {
            Some(TICK)
        } else {
            None
        };
        let first = match wait {
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return Ok(()),
            },
            Some(w) => match rx.recv_timeout(w) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    dirty |= app.running() > 0;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            },
        };
        let mut next = Some(first);
        let mut n = 0;
        while let Some(m) = next {
            dirty |= handle(app, m, bridge, term);
            n += 1;
            if app.quit || n >= BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if app.quit {
            return Ok(());
        }
    }
}

/// Applies one message; returns whether the screen changed.
fn handle(app: &mut App, m: Msg, bridge: &Bridge, term: &mut Term) -> bool {
    match m {
        Msg::Input(ev) => {
            if let crossterm::event::Event::Resize(..) = ev {
                let _ = term.autoresize();
                return true;
            }
            let effects = app.on_terminal(&ev);
            for e in effects {
                apply(app, e, bridge);
            }
            true
        }
        Msg::Engine(e) => app.on_event(&e),
        Msg::Begun { token, id } => {
            app.on_begun(token, id);
            true
        }
        Msg::Failed { token, error } => {
            app.on_failed(token, error);
            true
        }
        Msg::Ended { id, cancelled } => {
            app.on_ended(id, cancelled);
            true
        }
        Msg::Terminate => {
            app.quit = true;
            false
        }
    }
}

fn apply(app: &mut App, e: Effect, bridge: &Bridge) {
    match e {
        Effect::Start {
            token,
            plan,
            file,
            only,
        } => bridge.start(token, plan, file, only),
        Effect::Cancel(id) => bridge.cancel(id),
        Effect::Mouse(on) => {
            if let Err(e) = terminal::set_mouse(on) {
                app.error(format!("mouse: {e}"));
            }
        }
        Effect::RememberTheme(name) => {
            if let Err(e) = super::theme::remember(&name) {
                app.error(format!(
                    "theme {name} is on, but could not be remembered in {}: {e}",
                    super::theme::state_file().display()
                ));
            }
        }
        Effect::SaveLog { path, text } => {
            let r = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, text));
            match r {
                Ok(()) => app.info(format!("saved {}", path.display())),
                Err(e) => app.error(format!("cannot save {}: {e}", path.display())),
            }
        }
        Effect::Quit => app.quit = true,
    }
}
