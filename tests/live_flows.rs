//! The console's state machine fed what the journal's follower reads of other processes'
//! dispatches (`App::on_followed`), without a terminal: another's dispatch appears marked as
//! another's with who started it from where, its lines land in order in its host's log,
//! its end and an `interrupted` writer show, `c` does not cancel it, quitting does not wait
//! for it, and events of this console's own dispatches are never applied twice.

mod tui_fixture;

use crossterm::event::KeyCode;
use dropship::engine::events::{Event, Step, TargetResult};
use dropship::journal::{DispatchState, FollowUpdate, ForeignDispatch};
use dropship::transport::Stream;
use dropship::ui::tui::app::{App, Effect};
use tui_fixture::*;

const THEIRS: i64 = 12;
const BY: &str = "alice@build-3";

fn log_of(app: &App, id: i64, host: &str) -> Vec<String> {
    let d = app.dispatches.iter().find(|d| d.id == id).unwrap();
    let t = d.targets.iter().find(|t| t.host == host).unwrap();
    t.log
        .iter()
        .filter(|(_, l)| !l.marker)
        .map(|(_, l)| l.text.to_owned())
        .collect()
}

fn their_start() -> FollowUpdate {
    FollowUpdate {
        started: vec![ForeignDispatch {
            id: THEIRS,
            by: BY.into(),
            already_running: false,
        }],
        events: vec![
            started(THEIRS, "app-2.0.0.tgz", &["web1", "web2"]),
            step(THEIRS, "web1", T0 + 1_000, Step::Upgrade),
            out(THEIRS, "web1", T0 + 1_100, Stream::Stdout, "one"),
            out(THEIRS, "web1", T0 + 1_200, Stream::Stderr, "two"),
        ],
        states: Vec::new(),
        more: false,
    }
}

#[test]
fn another_process_dispatch_is_shown_as_theirs_with_its_lines() {
    let mut app = app();
    assert!(app.on_followed(their_start()));
    let d = app.dispatches.iter().find(|d| d.id == THEIRS).unwrap();
    assert!(d.foreign && d.is_running());
    assert_eq!(d.by.as_deref(), Some(BY));
    assert_eq!(d.bundle, "app-2.0.0.tgz");
    assert_eq!(d.targets.len(), 2);
    assert_eq!(app.running(), 0, "not this console's");
    assert_eq!(app.elsewhere(), 1);
    assert!(app.any_running(), "its elapsed time ticks");
    assert_eq!(log_of(&app, THEIRS, "web1"), ["one", "two"]);

    // More lines, in order, appended once.
    app.on_followed(FollowUpdate {
        events: (3..=5)
            .map(|i| {
                out(
                    THEIRS,
                    "web1",
                    T0 + 1_300 + i,
                    Stream::Stdout,
                    &format!("line {i}"),
                )
            })
            .collect(),
        ..FollowUpdate::default()
    });
    assert_eq!(
        log_of(&app, THEIRS, "web1"),
        ["one", "two", "line 3", "line 4", "line 5"]
    );

    // Shown with who and where: the BY column, the targets pane's title, the title bar.
    let screen = render(&app, 160, 40);
    assert!(screen.contains(" BY "), "{screen}");
    assert!(screen.contains(BY), "{screen}");
    assert!(screen.contains("1 running elsewhere"), "{screen}");
    let title = screen
        .lines()
        .find(|l| l.contains("Targets #12"))
        .unwrap_or_default();
    assert!(title.contains("· by alice@"), "{screen}");

    // Not cancelled from here, and quitting does not wait for it.
    app.key(KeyCode::Char('3'));
    let fx = app.key(KeyCode::Char('c'));
    assert!(fx.is_empty() && app.overlay.is_none(), "{fx:?}");
    let status = app.status.as_ref().unwrap();
    assert!(
        status.error && status.text.contains("another process"),
        "{}",
        status.text
    );
    let fx = app.key(KeyCode::Char('q'));
    assert!(matches!(fx.as_slice(), [Effect::Quit]), "{fx:?}");
}

#[test]
fn their_end_and_a_dead_writer_show() {
    let mut app = app();
    app.on_followed(their_start());
    app.on_followed(FollowUpdate {
        events: vec![
            target_done(THEIRS, "web1", T0 + 2_000, TargetResult::Succeeded, None),
            Event::DispatchFinished {
                dispatch: THEIRS,
                at: T0 + 3_000,
                succeeded: 1,
                failed: 0,
                skipped: 0,
                cancelled: 1,
                duration_ms: 3_000,
            },
        ],
        states: vec![(THEIRS, DispatchState::Cancelled)],
        ..FollowUpdate::default()
    });
    let d = app.dispatches.iter().find(|d| d.id == THEIRS).unwrap();
    assert_eq!(d.state, DispatchState::Cancelled, "as the journal says");
    assert_eq!(app.elsewhere(), 0);

    // Another one whose writer died: interrupted, with no event of its own.
    app.on_followed(FollowUpdate {
        started: vec![ForeignDispatch {
            id: THEIRS + 1,
            by: BY.into(),
            already_running: false,
        }],
        events: vec![started(THEIRS + 1, "app-2.0.1.tgz", &["web1"])],
        ..FollowUpdate::default()
    });
    app.on_followed(FollowUpdate {
        states: vec![(THEIRS + 1, DispatchState::Interrupted)],
        ..FollowUpdate::default()
    });
    let d = app.dispatches.iter().find(|d| d.id == THEIRS + 1).unwrap();
    assert_eq!(d.state, DispatchState::Interrupted);
    assert!(!app.any_running());
}

#[test]
fn events_of_this_consoles_own_dispatch_are_never_applied_twice() {
    let mut app = app();
    running(&mut app); // dispatch 7, this console's
    let before = log_of(&app, 7, "web1");
    assert!(!before.is_empty());
    let changed = app.on_followed(FollowUpdate {
        events: vec![out(7, "web1", T0 + 9_000, Stream::Stdout, "again")],
        states: vec![(7, DispatchState::Interrupted)],
        ..FollowUpdate::default()
    });
    assert!(!changed);
    assert_eq!(log_of(&app, 7, "web1"), before);
    let d = app.dispatches.iter().find(|d| d.id == 7).unwrap();
    assert!(!d.foreign && d.is_running(), "ours stays ours and running");
}

#[test]
fn a_dispatch_already_running_elsewhere_is_rebuilt_from_its_events_once() {
    // Shown before (as the history would show it), then followed from its start.
    let mut app = app();
    app.on_followed(their_start());
    assert_eq!(log_of(&app, THEIRS, "web1"), ["one", "two"]);
    let mut replay = their_start();
    replay.started[0].already_running = true;
    replay
        .events
        .push(out(THEIRS, "web1", T0 + 1_300, Stream::Stdout, "three"));
    app.on_followed(replay);
    assert_eq!(log_of(&app, THEIRS, "web1"), ["one", "two", "three"]);
    let d = app.dispatches.iter().find(|d| d.id == THEIRS).unwrap();
    assert_eq!(d.targets.len(), 2, "{:?}", d.targets.len());
    assert!(d.detail_loaded, "never read again from the journal on top");
}
