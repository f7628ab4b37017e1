//! The log pane's rendering of remote output (colours, tabs, `\r`), step result lines, the
//! many-host views (all hosts, split, diff) and the log search, on ratatui's `TestBackend`
//! at 60x15, 80x24 and 160x48. Review snapshot changes with `cargo insta review`.

mod tui_fixture;

use crossterm::event::KeyCode;
use dropship::engine::events::{Event, Step, StepOutcome};
use dropship::transport::Stream;
use dropship::ui::tui::app::App;
use ratatui::style::Color;
use tui_fixture::*;

const SIZES: [(u16, u16); 4] = [(60, 15), (80, 24), (160, 48), (300, 80)];

fn snap(name: &str, app: &App) {
    for (w, h) in SIZES {
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), render(app, w, h));
    }
}

fn step_done(id: i64, host: &str, at: i64, step: Step, code: Option<i32>, ms: i64) -> Event {
    Event::StepFinished {
        dispatch: id,
        at,
        host: host.into(),
        step,
        outcome: if code.is_none_or(|c| c == 0) {
            StepOutcome::Ok
        } else {
            StepOutcome::Failed
        },
        exit_code: code,
        error: code
            .filter(|c| *c != 0)
            .map(|c| format!("`{step}` exited with status {c}")),
        duration_ms: ms,
    }
}

/// Dispatch 11 on web1..web3: the same upgrade output, but web2's disk is full; web1
/// prints colours, a tab table and a `\r` progress line.
fn fleet(app: &mut App) {
    let id = 11;
    let mut evs = vec![started(id, "app-1.5.0.tgz", &["web1", "web2", "web3"])];
    for (k, h) in ["web1", "web2", "web3"].iter().enumerate() {
        let t = T0 + 1_000 + k as i64 * 10;
        evs.push(Event::StepStarted {
            dispatch: id,
            at: t,
            host: (*h).into(),
            step: Step::Upgrade,
            command: Some("./upgrade.sh".into()),
        });
        evs.push(out(id, h, t + 100, Stream::Stdout, "stopping app.service"));
        if *h == "web2" {
            evs.push(out(
                id,
                h,
                t + 200,
                Stream::Stderr,
                "\u{1b}[1;31merror:\u{1b}[0m no space left on device",
            ));
            evs.push(step_done(id, h, t + 300, Step::Upgrade, Some(3), 5_100));
        } else {
            evs.push(out(
                id,
                h,
                t + 200,
                Stream::Stdout,
                "copy 10%\rcopy 50%\rcopy 100% \u{1b}[32mOK\u{1b}[0m",
            ));
            evs.push(out(id, h, t + 250, Stream::Stdout, "name\tsize\tstate"));
            evs.push(out(id, h, t + 260, Stream::Stdout, "app\t12M\tactive"));
            evs.push(out(id, h, t + 270, Stream::Stdout, "starting app.service"));
            evs.push(step_done(id, h, t + 300, Step::Upgrade, Some(0), 400));
        }
    }
    for e in &evs {
        app.on_event(e);
    }
}

fn screen_has(app: &App, w: u16, h: u16, needle: &str) -> bool {
    render(app, w, h).contains(needle)
}

#[test]
fn remote_colours_tabs_and_carriage_returns_render_as_a_terminal_would() {
    let mut app = app();
    fleet(&mut app);
    app.key(KeyCode::Char('5'));
    snap("log_cooked", &app);
    let t = terminal(&app, 160, 48);
    let buf = t.backend().buffer();
    let text = render(&app, 160, 48);
    // `\r` overwrote the line: only the last state is left.
    assert!(text.contains("copy 100% OK"), "{text}");
    assert!(!text.contains("copy 10%"), "{text}");
    // Tabs went to the next multiple of 8.
    assert!(text.contains("name    size    state"), "{text}");
    assert!(text.contains("app     12M     active"), "{text}");
    // `OK` is green on screen, its escape gone.
    assert!(!text.contains("[32m"), "{text}");
    let (x, y) = find(&text, "OK").expect("OK on screen");
    assert_eq!(buf[(x, y)].fg, Color::Green, "OK drawn in green");
    assert_eq!(
        buf[(x - 2, y)].fg,
        app.theme.stdout.fg.unwrap_or(Color::Reset)
    );
}

/// Column and row of the first `needle` in a rendered screen (one char a cell).
fn find(screen: &str, needle: &str) -> Option<(u16, u16)> {
    for (y, line) in screen.lines().enumerate() {
        let line = line.trim_start_matches('"');
        if let Some(i) = line.find(needle) {
            let x = line[..i].chars().count();
            return Some((x as u16, y as u16));
        }
    }
    None
}

#[test]
fn every_step_ends_with_a_result_line() {
    let mut app = app();
    fleet(&mut app);
    app.key(KeyCode::Char('4'));
    app.key(KeyCode::Char('j'));
    let s = render(&app, 160, 48);
    assert!(s.contains("── upgrade: exit 3 after 5.1 s"), "{s}");
    app.key(KeyCode::Char('k'));
    let s = render(&app, 160, 48);
    assert!(s.contains("── upgrade: ok after 0.4 s"), "{s}");
}

#[test]
fn all_hosts_interleaves_tagged_lines_and_filters_by_host_and_text() {
    let mut app = app();
    fleet(&mut app);
    app.key(KeyCode::Char('5'));
    app.key(KeyCode::Char('A'));
    snap("log_all_hosts", &app);
    let s = render(&app, 160, 48);
    assert!(s.contains("Log all hosts #11"), "{s}");
    for h in ["web1 │ stopping", "web2 │ stopping", "web3 │ stopping"] {
        assert!(s.contains(h), "{h} missing: {s}");
    }
    // Arrival order: web1's first lines come before web2's error.
    let a = s.find("web1 │ stopping").unwrap();
    let b = s.find("web2 │ error: no space").unwrap();
    let c = s.find("web3 │ starting").unwrap();
    assert!(a < b && b < c, "{s}");
    // ] keeps web1 only.
    app.key(KeyCode::Char(']'));
    let s = render(&app, 160, 48);
    assert!(s.contains("host web1"), "{s}");
    assert!(!s.contains("web2 │"), "{s}");
    // Esc drops the host filter; / keeps the lines with a text.
    app.key(KeyCode::Esc);
    app.key(KeyCode::Char('/'));
    app.type_str("stopping");
    app.key(KeyCode::Enter);
    snap("log_all_hosts_filtered", &app);
    let s = render(&app, 160, 48);
    assert!(s.contains("3 lines with /stopping"), "{s}");
    assert!(!s.contains("starting"), "{s}");
    // Esc clears the filter, the next one leaves the view; focus stays on the log.
    app.key(KeyCode::Esc);
    assert!(app.log.search.is_none());
    app.key(KeyCode::Esc);
    assert!(screen_has(&app, 160, 48, "Log web1 #11"));
    assert_eq!(app.focus, dropship::ui::tui::app::Focus::Log);
}

#[test]
fn split_shows_hosts_side_by_side() {
    let mut app = app();
    fleet(&mut app);
    app.key(KeyCode::Char('5'));
    app.key(KeyCode::Char('S'));
    snap("log_split", &app);
    let s = render(&app, 160, 48);
    let row = s
        .lines()
        .find(|l| l.contains(" web1 ") && l.contains(" web2 ") && l.contains(" web3 "))
        .unwrap_or_else(|| panic!("no row with the three hosts' titles: {s}"));
    assert!(row.find("web1") < row.find("web3"), "{row}");
    assert!(
        s.lines()
            .any(|l| l.contains("no space left") && l.contains("copy 100% OK")),
        "web2's error beside web1's progress: {s}"
    );
    // - narrows to 2 columns.
    app.key(KeyCode::Char('-'));
    let s = render(&app, 160, 48);
    assert!(s.contains(" web2 ") && !s.contains(" web3 "), "{s}");
}

#[test]
fn diff_shows_where_a_host_differs_from_the_majority() {
    let mut app = app();
    fleet(&mut app);
    app.key(KeyCode::Char('4'));
    app.key(KeyCode::Char('j')); // web2, the odd one
    app.key(KeyCode::Char('5'));
    app.key(KeyCode::Char('D'));
    snap("log_diff", &app);
    let s = render(&app, 160, 48);
    assert!(
        s.contains("web2 differs from 2 of 3 hosts (web1, web3)"),
        "{s}"
    );
    assert!(s.contains("+ error: no space left on device"), "{s}");
    assert!(s.contains("- copy 100% OK"), "{s}");
    assert!(s.contains("  stopping app.service"), "{s}");
    // ] moves to web3, which printed what the majority printed.
    app.key(KeyCode::Char(']'));
    let s = render(&app, 160, 48);
    assert!(
        s.contains("web3 printed what 2 of 3 hosts printed; differing: web2"),
        "{s}"
    );
}

#[test]
fn search_counts_matches_esc_clears_it_and_an_empty_one_does_nothing() {
    let mut app = app();
    fleet(&mut app);
    app.key(KeyCode::Char('5'));
    app.key(KeyCode::Char('/'));
    app.type_str("app");
    app.key(KeyCode::Enter);
    snap("log_search_count", &app);
    let s = render(&app, 160, 48);
    assert!(s.contains("/app 1/3"), "{s}");
    app.key(KeyCode::Char('n'));
    assert!(screen_has(&app, 160, 48, "/app 2/3"));
    app.key(KeyCode::Char('N'));
    assert!(screen_has(&app, 160, 48, "/app 1/3"));
    // Esc clears the search and the focus stays on the log.
    app.key(KeyCode::Esc);
    assert!(app.log.search.is_none());
    assert_eq!(app.focus, dropship::ui::tui::app::Focus::Log);
    assert!(!screen_has(&app, 160, 48, "/app"));
    // An empty search: no "not found: ".
    app.key(KeyCode::Char('/'));
    app.key(KeyCode::Enter);
    assert!(app.status.is_none(), "{:?}", app.status);
    app.key(KeyCode::Char('n'));
    assert!(app.status.is_none(), "{:?}", app.status);
    // No match says so in the pane.
    app.key(KeyCode::Char('/'));
    app.type_str("zzz");
    app.key(KeyCode::Enter);
    assert!(screen_has(&app, 160, 48, "/zzz no match"));
}
