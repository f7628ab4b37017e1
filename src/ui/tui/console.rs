//! The console's event loop: one thread draws, and blocks on one channel fed by the input
//! thread and the engine. It redraws only when something changed, at most once per
//! [`FRAME`], and while nothing runs it sleeps in `recv` (no timer, no polling), so an idle
//! console costs no CPU.

use super::app::{App, Effect};
use super::engine::{Bridge, Msg, NOTIFY_WAIT};
use super::render;
use super::terminal::{self, Term};
use crate::watch::WatchHandle;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// At most ~60 frames a second.
pub const FRAME: Duration = Duration::from_millis(16);

/// While a dispatch runs, elapsed times tick once a second even if it prints nothing.
const TICK: Duration = Duration::from_secs(1);

/// Messages handled before the screen gets a chance to redraw, so a flood of output lines
/// cannot starve keys or frames.
const BATCH: usize = 20_000;

/// `watch`: the control handle of the watched folder (`--tui --watch DIR`), if any.
pub fn event_loop(
    term: &mut Term,
    app: &mut App,
    rx: &Receiver<Msg>,
    bridge: &Bridge,
    watch: Option<&WatchHandle>,
) -> std::io::Result<()> {
    let mut dirty = true;
    let mut last = Instant::now() - FRAME;
    for e in app.startup() {
        apply(app, e, bridge, watch);
    }
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
        // A relative time on screen ("12s ago") is redrawn when its text changes; with
        // none shown and nothing running the loop sleeps in `recv` with no timer at all.
        let wait = if dirty {
            Some(FRAME.saturating_sub(last.elapsed()))
        } else if app.any_running() {
            Some(app.next_tick().map_or(TICK, |t| t.min(TICK)))
        } else {
            app.next_tick()
        };
        let first = match wait {
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return Ok(()),
            },
            Some(w) => match rx.recv_timeout(w) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    // Only a frame due, a running dispatch or a relative time waits with a
                    // timeout: each of them means "draw again".
                    dirty = true;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            },
        };
        let mut next = Some(first);
        let mut n = 0;
        while let Some(m) = next {
            dirty |= handle(app, m, bridge, term, watch);
            n += 1;
            if app.quit || n >= BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if app.quit {
            drain_dispatches(term, app, rx, bridge, watch)?;
            return drain_notifications(term, app, rx, bridge, watch);
        }
    }
}

/// How long quitting waits for cancelled dispatches past their grace period: a killed
/// command's rollback and the journal's last writes take a moment.
const STOP_DRAIN: Duration = Duration::from_secs(10);

/// Quitting while dispatches run cancels them like `c` does: the console stays up, saying
/// what it waits for and which `--resume` continues them, until they ended (their running
/// steps get [`crate::session::GRACE`]); `q` or Ctrl-C again stops them at once.
fn drain_dispatches(
    term: &mut Term,
    app: &mut App,
    rx: &Receiver<Msg>,
    bridge: &Bridge,
    watch: Option<&WatchHandle>,
) -> std::io::Result<()> {
    let start = Instant::now();
    let grace = crate::session::GRACE;
    let mut forced = false;
    loop {
        if bridge.running() == 0 || start.elapsed() >= grace + STOP_DRAIN {
            return Ok(());
        }
        let ids: Vec<String> = app.quit_cancelled.iter().map(|i| format!("#{i}")).collect();
        let resume = app
            .quit_cancelled
            .first()
            .map(|i| format!(" · dropship --resume {i} continues later"))
            .unwrap_or_default();
        let text = if forced {
            format!("quitting: stopping {} now…", ids.join(" "))
        } else {
            format!(
                "quitting: cancelling {}: running steps end within {}s (q again: now){resume}",
                ids.join(" "),
                grace.saturating_sub(start.elapsed()).as_secs() + 1
            )
        };
        app.info(text);
        app.now = crate::engine::events::now_ms();
        app.shed = bridge.shed();
        term.draw(|f| render::draw(f, app))?;
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(Msg::Input(crossterm::event::Event::Key(k)))
                if k.code == crossterm::event::KeyCode::Char('q')
                    || (k.code == crossterm::event::KeyCode::Char('c')
                        && k.modifiers
                            .contains(crossterm::event::KeyModifiers::CONTROL)) =>
            {
                forced = true;
                bridge.stop_all();
            }
            Ok(Msg::Input(_)) => {}
            Ok(Msg::Terminate) => {
                forced = true;
                bridge.stop_all();
            }
            Ok(m) => {
                handle(app, m, bridge, term, watch);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// Quitting with notifications still on their way (`notify = URL`): keep the console up,
/// saying so, until they are delivered or given up, at most [`NOTIFY_WAIT`]; `q` or
/// Ctrl-C again leaves at once. Their outcome notices show while it waits.
fn drain_notifications(
    term: &mut Term,
    app: &mut App,
    rx: &Receiver<Msg>,
    bridge: &Bridge,
    watch: Option<&WatchHandle>,
) -> std::io::Result<()> {
    let deadline = Instant::now() + NOTIFY_WAIT;
    loop {
        let left = bridge.notifications_pending();
        if left == 0 || Instant::now() >= deadline {
            return Ok(());
        }
        app.info(format!(
            "waiting up to {}s for {left} notification(s) to be delivered… (q again quits now)",
            deadline.saturating_duration_since(Instant::now()).as_secs() + 1
        ));
        app.now = crate::engine::events::now_ms();
        term.draw(|f| render::draw(f, app))?;
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Msg::Input(crossterm::event::Event::Key(k)))
                if k.code == crossterm::event::KeyCode::Char('q')
                    || (k.code == crossterm::event::KeyCode::Char('c')
                        && k.modifiers
                            .contains(crossterm::event::KeyModifiers::CONTROL)) =>
            {
                return Ok(());
            }
            Ok(Msg::Input(_)) => {}
            Ok(Msg::Terminate) => return Ok(()),
            Ok(m) => {
                handle(app, m, bridge, term, watch);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// Applies one message; returns whether the screen changed.
fn handle(
    app: &mut App,
    m: Msg,
    bridge: &Bridge,
    term: &mut Term,
    watch: Option<&WatchHandle>,
) -> bool {
    match m {
        Msg::Input(ev) => {
            if let crossterm::event::Event::Resize(..) = ev {
                let _ = term.autoresize();
                return true;
            }
            let effects = app.on_terminal(&ev);
            for e in effects {
                apply(app, e, bridge, watch);
            }
            true
        }
        Msg::Engine(e) => {
            let changed = app.on_event(&e);
            for fx in app.take_effects() {
                apply(app, fx, bridge, watch);
            }
            changed
        }
        Msg::Begun { token, id } => {
            app.on_begun(token, id);
            true
        }
        Msg::Failed { token, error } => {
            app.on_failed(token, error);
            true
        }
        Msg::Ended { id, cancelled } => {
            for e in app.on_ended(id, cancelled) {
                apply(app, e, bridge, watch);
            }
            true
        }
        Msg::Terminate => {
            for e in app.quit_cancelling() {
                apply(app, e, bridge, watch);
            }
            true
        }
        Msg::Reach { host, reach } => app.on_reach(&host, &reach),
        Msg::ReachDone => app.on_reach_done(),
        Msg::Probed { token, host, probe } => app.on_probed(token, &host, *probe),
        Msg::ProbeDone { token } => app.on_probe_done(token),
        Msg::Status(result) => app.on_status(result),
        Msg::RollbackPreview {
            token,
            host,
            result,
        } => app.on_rollback_preview(token, &host, result),
        Msg::Watch(e) => app.on_watch(&e),
        Msg::ConvergePlan { token, result } => app.on_converge_plan(token, result),
        Msg::Followed(u) => {
            let changed = app.on_followed(u);
            for fx in app.take_effects() {
                apply(app, fx, bridge, watch);
            }
            changed
        }
    }
}

fn apply(app: &mut App, e: Effect, bridge: &Bridge, watch: Option<&WatchHandle>) {
    match e {
        Effect::Start {
            token,
            plan,
            file,
            only,
        } => bridge.start(token, plan, file, only),
        Effect::Cancel(id) => bridge.cancel(id),
        Effect::Run { plans, action } => bridge.start_run(plans, action),
        Effect::StopNow(id) => bridge.stop_now(id),
        Effect::StopAll => {
            bridge.stop_all();
        }
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
        Effect::Reach(targets) => bridge.reach(targets),
        Effect::Probe { token, targets } => bridge.probe(token, targets),
        Effect::Status(targets) => bridge.status(targets),
        Effect::RollbackPreview { token, plan, hosts } => {
            bridge.rollback_preview(token, plan, hosts)
        }
        Effect::StartRollback { token, plan, only } => bridge.start_rollback(token, plan, only),
        Effect::ConvergePlan {
            token,
            targets,
            named,
        } => bridge.converge_plan(token, targets, named),
        Effect::PauseWatch(pause) => match watch {
            Some(h) if pause => h.pause(),
            Some(h) => h.resume(),
            None => {}
        },
        Effect::Quit => app.quit = true,
    }
}
