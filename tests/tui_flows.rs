//! Key-driven flows through the console's state machine, without a terminal or an engine:
//! keys in, effects and state out (and, where it matters, the rendered buffer).

mod tui_fixture;

use crossterm::event::{KeyCode, KeyModifiers};
use dropship::engine::events::{Event, Step, TargetResult};
use dropship::journal::{Journal, NewDispatch};
use dropship::transport::Stream;
use dropship::ui::tui::app::{App, Confirm, Effect, Focus, Overlay, PackageItem};
use ratatui::style::Modifier;
use tui_fixture::*;

fn confirm_open(app: &App) -> bool {
    matches!(app.overlay, Some(Overlay::Confirm { .. }))
}

/// `d`, the path, Enter: the plan dialog; Enter on the default button does nothing.
#[test]
fn dispatch_asks_with_the_plan_and_cancel_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), "app-1.4.2.tgz");
    let mut app = app();
    app.key(KeyCode::Char('d'));
    app.type_str(&b.display().to_string());
    app.key(KeyCode::Enter);
    match &app.overlay {
        Some(Overlay::Confirm {
            what: Confirm::Dispatch { plan, only, .. },
            ok,
        }) => {
            assert_eq!(plan.bundle, "app-1.4.2.tgz");
            assert_eq!(plan.targets.len(), 3);
            assert!(only.is_none());
            assert!(!ok, "the default button must be Cancel");
        }
        _ => panic!("no confirmation dialog"),
    }
    assert!(
        app.key(KeyCode::Enter).is_empty(),
        "Enter on Cancel starts nothing"
    );
    assert!(app.overlay.is_none());

    // Again, and this time move to Dispatch.
    app.key(KeyCode::Char(':'));
    app.type_str(&format!("dispatch {}", b.display()));
    app.key(KeyCode::Enter);
    assert!(confirm_open(&app));
    app.key(KeyCode::Right);
    let fx = app.key(KeyCode::Enter);
    let token = match fx.as_slice() {
        [
            Effect::Start {
                token,
                plan,
                only: None,
                ..
            },
        ] => {
            assert_eq!(plan.rule.hosts.len(), 3);
            *token
        }
        other => panic!("expected a start, got {other:?}"),
    };
    // The engine answers with the journal id and events; the new dispatch is selected.
    app.on_begun(token, 11);
    app.on_event(&started(11, "app-1.4.2.tgz", &["web1", "web2", "web3"]));
    app.on_event(&out(11, "web1", T0, Stream::Stdout, "hello from web1"));
    assert_eq!(app.selected_dispatch().map(|d| d.id), Some(11));
    assert_eq!(app.running(), 1);
    assert!(render(&app, 120, 40).contains("hello from web1"));
}

#[test]
fn a_bundle_no_rule_matches_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), "unknown-1.0.zip");
    let mut app = app();
    app.key(KeyCode::Char('d'));
    app.type_str(&b.display().to_string());
    app.key(KeyCode::Enter);
    match &app.overlay {
        Some(Overlay::PathEntry { error: Some(e), .. }) => assert!(e.contains("no rule"), "{e}"),
        _ => panic!("the path entry should stay open with the error"),
    }
    app.key(KeyCode::Esc);
    assert!(app.overlay.is_none());
}

#[test]
fn cancel_asks_first_and_defaults_to_keep_running() {
    let mut app = app();
    running(&mut app);
    app.key(KeyCode::Char('3'));
    app.key(KeyCode::Char('c'));
    assert!(confirm_open(&app));
    assert!(app.key(KeyCode::Enter).is_empty());
    app.key(KeyCode::Char('c'));
    app.key(KeyCode::Tab);
    let fx = app.key(KeyCode::Enter);
    assert!(matches!(fx.as_slice(), [Effect::Cancel(7)]), "{fx:?}");
    assert!(app.selected_dispatch().unwrap().cancelling);
    // A second cancel (`c` or `:cancel`) while it is being cancelled offers "stop now",
    // again with the harmless button first.
    app.key(KeyCode::Char(':'));
    app.type_str("cancel");
    app.key(KeyCode::Enter);
    assert!(matches!(
        app.overlay,
        Some(Overlay::Confirm {
            what: Confirm::StopNow { id: 7, .. },
            ok: false
        })
    ));
    assert!(
        app.key(KeyCode::Enter).is_empty(),
        "Keep waiting is the default"
    );
    app.key(KeyCode::Char('c'));
    assert!(render(&app, 120, 40).contains("Stop now"));
    app.key(KeyCode::Tab);
    let fx = app.key(KeyCode::Enter);
    assert!(matches!(fx.as_slice(), [Effect::StopNow(7)]), "{fx:?}");
}

#[test]
fn quit_asks_while_a_dispatch_runs() {
    let mut app = app();
    running(&mut app);
    assert!(app.key(KeyCode::Char('q')).is_empty());
    assert!(confirm_open(&app));
    assert!(app.key(KeyCode::Enter).is_empty(), "Stay is the default");
    assert!(!app.quit);
    app.key_mod(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert!(confirm_open(&app), "Ctrl-C asks too");
    let fx = app.key_mod(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert!(app.quit, "a second Ctrl-C means it");
    assert!(
        matches!(fx.as_slice(), [Effect::Cancel(7), Effect::Quit]),
        "{fx:?}"
    );

    let mut idle = tui_fixture::app();
    let fx = idle.key(KeyCode::Char('q'));
    assert!(idle.quit && matches!(fx.as_slice(), [Effect::Quit]));
}

#[test]
fn retry_ships_only_the_failed_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), "app-1.4.2.tgz");
    let mut app = app();
    app.key(KeyCode::Char(':'));
    app.type_str(&format!("dispatch {}", b.display()));
    app.key(KeyCode::Enter);
    app.key(KeyCode::Tab);
    let Some(Effect::Start { token, .. }) = app.key(KeyCode::Enter).pop() else {
        panic!("no start");
    };
    app.on_begun(token, 3);
    app.on_event(&started(3, "app-1.4.2.tgz", &["web1", "web2", "web3"]));
    app.on_event(&target_done(
        3,
        "web1",
        T0 + 1,
        TargetResult::Succeeded,
        None,
    ));
    app.on_event(&target_done(
        3,
        "web2",
        T0 + 2,
        TargetResult::Failed,
        Some(Step::Upgrade),
    ));
    app.on_event(&target_done(
        3,
        "web3",
        T0 + 3,
        TargetResult::Cancelled,
        None,
    ));
    app.on_ended(3, false);
    app.key(KeyCode::Char('3'));
    app.key(KeyCode::Char('r'));
    match &app.overlay {
        Some(Overlay::Confirm {
            what: Confirm::Dispatch { only: Some(o), .. },
            ..
        }) => assert_eq!(o, &vec!["web2".to_owned(), "web3".to_owned()]),
        _ => panic!("no retry dialog"),
    }
    assert!(render(&app, 120, 40).contains("only web2, web3"));
    app.key(KeyCode::Left);
    let fx = app.key(KeyCode::Enter);
    assert!(
        matches!(fx.as_slice(), [Effect::Start { only: Some(o), .. }] if o.len() == 2),
        "{fx:?}"
    );
}

#[test]
fn filter_narrows_a_list_and_esc_clears_it() {
    let mut app = app();
    app.key(KeyCode::Char('1'));
    assert_eq!(app.visible(0).len(), 5);
    app.key(KeyCode::Char('/'));
    app.type_str("DB");
    // db1, db2, and web1 (which is also a host of the db rule).
    assert_eq!(
        app.visible(0).len(),
        3,
        "case-insensitive, live while typing"
    );
    app.key(KeyCode::Enter);
    assert!(app.overlay.is_none());
    app.key(KeyCode::Char('G'));
    assert_eq!(app.selected[0], 2);
    app.key(KeyCode::Char('j'));
    assert_eq!(app.selected[0], 2, "stays on the last row");
    app.key(KeyCode::Esc);
    assert_eq!(app.visible(0).len(), 5);
}

#[test]
fn log_search_follow_and_wrap() {
    let mut app = app();
    running(&mut app);
    for i in 0..500 {
        app.on_event(&out(
            7,
            "web1",
            T0 + 6_000 + i,
            Stream::Stdout,
            &format!("progress {i}"),
        ));
    }
    app.key(KeyCode::Char('5'));
    render(&app, 120, 40);
    assert!(app.log.following());
    app.key(KeyCode::Char('/'));
    app.type_str("MIGRAT");
    app.key(KeyCode::Enter);
    assert_eq!(app.log.current_match, Some(4), "line 0 is the step marker");
    assert!(!app.log.following(), "a match leaves follow mode");
    assert!(render(&app, 120, 40).contains("migrating database"));
    app.key(KeyCode::Char('n'));
    assert_eq!(
        app.log.current_match,
        Some(4),
        "the only match, found again"
    );
    // New lines do not move a scrolled view.
    let before = render(&app, 120, 40);
    app.on_event(&out(
        7,
        "web1",
        T0 + 9_000,
        Stream::Stdout,
        "brand new line",
    ));
    assert_eq!(
        render(&app, 120, 40).lines().nth(10),
        before.lines().nth(10)
    );
    app.key(KeyCode::Char('G'));
    assert!(app.log.following());
    assert!(render(&app, 120, 40).contains("brand new line"));
    app.key(KeyCode::Char('k'));
    assert!(!app.log.following(), "scrolling up leaves follow");
    app.key(KeyCode::End);
    assert!(app.log.following());
    app.key(KeyCode::Char('w'));
    app.key(KeyCode::Char('t'));
    assert!(app.log.wrap && app.log.timestamps);
    let long = "x".repeat(300);
    app.on_event(&out(7, "web1", T0 + 9_500, Stream::Stderr, &long));
    let text = render(&app, 120, 40);
    assert!(text.contains(&"x".repeat(40)), "{text}");
}

#[test]
fn save_writes_the_selected_hosts_log() {
    let mut app = app();
    running(&mut app);
    app.key(KeyCode::Char('5'));
    let fx = app.key(KeyCode::Char('s'));
    match fx.as_slice() {
        [Effect::SaveLog { path, text }] => {
            assert!(
                path.ends_with("logs/dispatch-7-web1.log"),
                "{}",
                path.display()
            );
            assert!(text.contains("stopping app.service\n"));
            assert!(text.contains("[stderr] warning: config key"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn theme_switch_and_mono_marks_selection_without_colour() {
    let mut app = app();
    running(&mut app);
    app.key(KeyCode::Char(':'));
    app.type_str("theme mono");
    let fx = app.key(KeyCode::Enter);
    assert!(matches!(fx.as_slice(), [Effect::RememberTheme(n)] if n == "mono"));
    assert_eq!(app.theme.name, "mono");
    let t = terminal(&app, 120, 40);
    let buf = t.backend().buffer();
    let mut reversed = false;
    for cell in buf.content() {
        assert!(
            cell.fg == ratatui::style::Color::Reset && cell.bg == ratatui::style::Color::Reset,
            "mono drew a colour: {cell:?}"
        );
        reversed |= cell.modifier.contains(Modifier::REVERSED);
    }
    assert!(reversed, "selection is shown with reverse video");

    app.key(KeyCode::Char(':'));
    app.type_str("theme no-such-theme");
    assert!(app.key(KeyCode::Enter).is_empty());
    assert_eq!(app.theme.name, "mono", "a bad theme leaves the current one");
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.error && s.text.contains("no such theme"))
    );
}

#[test]
fn palette_completes_commands() {
    let mut app = app();
    app.key(KeyCode::Char(':'));
    app.type_str("hi");
    app.key(KeyCode::Tab);
    match &app.overlay {
        Some(Overlay::Palette { input, .. }) => assert_eq!(input.value(), "history "),
        _ => panic!("palette closed"),
    }
    app.key(KeyCode::Enter);
    assert!(matches!(app.overlay, Some(Overlay::History { .. })));
}

#[test]
fn focus_help_mouse_and_fullscreen() {
    let mut app = app();
    // No dispatch yet: the console starts on the fleet, not on an empty pane.
    assert_eq!(app.focus, Focus::Hosts);
    app.key(KeyCode::Char('3'));
    assert_eq!(app.focus, Focus::Dispatches);
    app.key(KeyCode::Tab);
    assert_eq!(app.focus, Focus::Targets);
    app.key(KeyCode::BackTab);
    app.key(KeyCode::BackTab);
    assert_eq!(app.focus, Focus::Packages);
    app.key(KeyCode::Char('?'));
    assert!(render(&app, 120, 40).contains("Help: Packages"));
    app.key(KeyCode::Esc);
    let fx = app.key(KeyCode::Char('m'));
    assert!(matches!(fx.as_slice(), [Effect::Mouse(true)]));
    app.key(KeyCode::Char('f'));
    assert!(app.log.fullscreen && app.focus == Focus::Log);
    app.key(KeyCode::Esc);
    assert!(!app.log.fullscreen);
}

#[test]
fn memory_per_host_is_bounded_and_shed_lines_are_shown() {
    let mut env = env();
    env.ring_capacity = 1_000;
    let mut app = app_with(env);
    running(&mut app);
    for i in 0..50_000 {
        app.on_event(&out(7, "web2", T0, Stream::Stdout, &format!("line {i}")));
    }
    let d = app.selected_dispatch().unwrap();
    let t = d.targets.iter().find(|t| t.host == "web2").unwrap();
    assert!(t.log.len() < 1_000 + dropship::ui::tui::ring::CHUNK);
    assert_eq!(t.log.end(), 50_000);
    app.shed = 1234;
    assert!(render(&app, 120, 40).contains("1234 lines shed"));
}

#[test]
fn all_logs_together_stay_within_the_memory_budget() {
    let mut env = env();
    env.log_budget = 1 << 20;
    let mut app = app_with(env);
    running(&mut app);
    let line = "y".repeat(100);
    for i in 0..30_000 {
        let host = ["web1", "web2", "web3"][i % 3];
        app.on_event(&out(7, host, T0, Stream::Stdout, &line));
        assert!(app.log_bytes <= 1 << 20, "over budget after {i} lines");
    }
    let d = app.selected_dispatch().unwrap();
    let held: usize = d.targets.iter().map(|t| t.log.bytes()).sum();
    assert_eq!(held, app.log_bytes);
    assert!(
        held > (1 << 20) / 2,
        "the budget is used, not wasted: {held}"
    );
    for t in &d.targets {
        assert!(t.log.len() > 1_000, "every host keeps its newest lines");
    }
}

/// History and the Packages pane come from the journal; a past dispatch's output is read
/// back from it when its host is selected.
#[test]
fn journal_history_packages_and_past_output() {
    let dir = tempfile::tempdir().unwrap();
    let journal = std::sync::Arc::new(Journal::open(&dir.path().join("journal.sqlite")).unwrap());
    let id = journal
        .begin_dispatch(&NewDispatch {
            bundle: "app-1.4.0.tgz".into(),
            bundle_path: dir.path().join("app-1.4.0.tgz"),
            bundle_sha256: "00".repeat(32),
            bundle_size: 10,
            rule: r"app-(?P<version>\d+\.\d+\.\d+)\.tgz".into(),
            config_path: "dispatch.cfg".into(),
            timestamp: "20260101_120000".into(),
            hosts: vec!["web1".into()],
            started_at: T0,
        })
        .unwrap();
    for e in [
        started(id, "app-1.4.0.tgz", &["web1"]),
        Event::StepStarted {
            dispatch: id,
            at: T0 + 1,
            host: "web1".into(),
            step: Step::Upgrade,
            command: Some("upgrade".into()),
        },
        out(
            id,
            "web1",
            T0 + 2,
            Stream::Stdout,
            "old output from the journal",
        ),
        target_done(id, "web1", T0 + 3, TargetResult::Succeeded, None),
    ] {
        journal.record(&e).unwrap();
    }
    journal.flush().unwrap();
    let mut env = env();
    env.journal = Some(journal);
    let mut app = app_with(env);
    assert_eq!(app.dispatches.len(), 1);
    assert_eq!(app.packages[0].name, "app-1.4.0.tgz");
    let web1 = app.hosts.iter().find(|h| h.name == "web1").unwrap();
    assert_eq!(
        web1.last
            .as_ref()
            .and_then(|l| l.last_succeeded.as_ref())
            .map(|s| s.bundle.as_str()),
        Some("app-1.4.0.tgz")
    );
    assert!(render(&app, 120, 40).contains("old output from the journal"));
    app.key(KeyCode::Char(':'));
    app.type_str("history");
    app.key(KeyCode::Enter);
    assert!(render(&app, 120, 40).contains("app-1.4.0.tgz"));
    app.key(KeyCode::Enter);
    assert_eq!(app.focus, Focus::Targets);
    assert_eq!(app.selected_dispatch().map(|d| d.id), Some(id));
}

/// `p` on a host: an effect for the engine, the dialog opens waiting, fills as results come,
/// and the Hosts row learns the lock holder and the installed version.
#[test]
fn probe_opens_the_dialog_and_fills_the_hosts_row() {
    let mut app = fleet_app();
    app.key(KeyCode::Char('1'));
    let fx = app.key(KeyCode::Char('p'));
    let token = match fx.as_slice() {
        [Effect::Probe { token, targets }] => {
            assert!(targets.iter().all(|t| t.target.host.name == "web1"));
            *token
        }
        other => panic!("{other:?}"),
    };
    assert!(matches!(app.overlay, Some(Overlay::Probe { .. })));
    assert!(render(&app, 120, 40).contains("probing…"));
    app.on_probed(token, "web1", host_probe("web1", true));
    app.on_probe_done(token);
    let text = render(&app, 120, 40);
    assert!(text.contains("held by alice@build1"), "{text}");
    let web1 = app.hosts.iter().find(|h| h.name == "web1").unwrap();
    assert_eq!(web1.installed_text(), "1.2");
    assert!(matches!(&web1.lock, Some(Some(l)) if l.holder == "alice@build1"));
    // A stale run's answers do not land in the dialog (but are news about the host: the
    // version is unknown again, the lock was not looked at).
    app.on_probed(token + 100, "web1", host_probe("web1", false));
    assert!(!render(&app, 120, 40).contains("FAILED"));
    let web1 = app.hosts.iter().find(|h| h.name == "web1").unwrap();
    assert_eq!(web1.installed_text(), "");
    assert!(matches!(&web1.lock, Some(Some(_))));
    app.key(KeyCode::Esc);
    assert!(app.overlay.is_none());
    // `:probe RULE` by package label, and an unknown rule says which exist.
    app.key(KeyCode::Char(':'));
    app.type_str("probe db");
    let fx = app.key(KeyCode::Enter);
    assert!(matches!(fx.as_slice(), [Effect::Probe { targets, .. }] if targets.len() == 2));
    app.key(KeyCode::Esc);
    app.key(KeyCode::Char(':'));
    app.type_str("probe nope");
    assert!(app.key(KeyCode::Enter).is_empty());
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.error && s.text.contains("shop, db"))
    );
    // Reachability on demand.
    let fx = app.key(KeyCode::Char('P'));
    assert!(matches!(fx.as_slice(), [Effect::Reach(t)] if t.len() == 4));
    assert!(render(&app, 120, 40).contains("probing…"));
}

/// A journal that shipped shop-1.3.tgz to web1 and web2.
fn shop_journal(dir: &std::path::Path) -> std::sync::Arc<Journal> {
    let journal = std::sync::Arc::new(Journal::open(&dir.join("journal.sqlite")).unwrap());
    let id = journal
        .begin_dispatch(&NewDispatch {
            bundle: "shop-1.3.tgz".into(),
            bundle_path: dir.join("shop-1.3.tgz"),
            bundle_sha256: "00".repeat(32),
            bundle_size: 10,
            rule: r"shop-(?P<version>[0-9.]+)\.tgz".into(),
            config_path: "dispatch.cfg".into(),
            timestamp: "20260101_120000".into(),
            hosts: vec!["web1".into(), "web2".into()],
            started_at: T0,
        })
        .unwrap();
    for h in ["web1", "web2"] {
        journal
            .record(&target_done(id, h, T0 + 3, TargetResult::Succeeded, None))
            .unwrap();
    }
    journal.flush().unwrap();
    journal
}

/// `b` on a host: the dialog defaults to Cancel (Enter does nothing), Tab then Enter
/// starts the rollback, which shows in Dispatches as `(rollback)`.
#[test]
fn rollback_asks_first_and_runs_with_tab_enter() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = dropship::ui::tui::app::AppEnv::new(
        dropship::config::Config::parse(FLEET_CONFIG, std::path::Path::new("dispatch.cfg"))
            .unwrap(),
    );
    env.journal = Some(shop_journal(dir.path()));
    env.stamp = dropship::plan::Stamp::parse("20260101_120000");
    let mut app = app_with(env);
    app.key(KeyCode::Char('1'));
    let fx = app.key(KeyCode::Char('b'));
    let token = match fx.as_slice() {
        [Effect::RollbackPreview { token, hosts, plan }] => {
            assert_eq!(hosts, &vec!["web1".to_owned()]);
            assert_eq!(
                plan.bundle, "shop-1.3.tgz",
                "placeholders of the last bundle"
            );
            *token
        }
        other => panic!("{other:?}"),
    };
    match &app.overlay {
        Some(Overlay::Confirm {
            what: Confirm::Rollback(ask),
            ok,
        }) => {
            assert!(!ok, "the default button must be Cancel");
            assert_eq!(ask.only, Some(vec!["web1".to_owned()]));
        }
        _ => panic!("no rollback dialog"),
    }
    app.on_rollback_preview(token, "web1", Ok((Some("1.3".into()), Some("1.2".into()))));
    assert!(render(&app, 120, 40).contains("current: 1.3 -> 1.2"));
    assert!(
        app.key(KeyCode::Enter).is_empty(),
        "Enter on Cancel does nothing"
    );
    assert!(app.overlay.is_none());

    app.key(KeyCode::Char('b'));
    app.key(KeyCode::Tab);
    let fx = app.key(KeyCode::Enter);
    let token = match fx.as_slice() {
        [Effect::StartRollback { token, only, plan }] => {
            assert_eq!(only, &Some(vec!["web1".to_owned()]));
            assert_eq!(plan.rule.name, r"shop-(?P<version>[0-9.]+)\.tgz");
            *token
        }
        other => panic!("{other:?}"),
    };
    app.on_begun(token, 2);
    // The new dispatch does not take the selection from what the user reads (F would);
    // the status bar says where it is.
    assert_eq!(app.selected_dispatch().unwrap().id, 1);
    assert!(app.status.as_ref().unwrap().text.contains("#2 started"));
    app.key(KeyCode::Char('3'));
    app.key(KeyCode::Char('g'));
    let d = app.selected_dispatch().unwrap();
    assert_eq!((d.id, d.bundle.as_str()), (2, "(rollback)"));
    // A rollback is not retried by shipping a file; it is not a package either.
    app.on_event(&Event::DispatchStarted {
        dispatch: 2,
        at: T0 + 10,
        bundle: "(rollback)".into(),
        rule: r"shop-(?P<version>[0-9.]+)\.tgz".into(),
        hosts: vec!["web1".into()],
    });
    app.on_event(&target_done(
        2,
        "web1",
        T0 + 20,
        TargetResult::Failed,
        Some(Step::Switch),
    ));
    app.on_ended(2, false);
    app.key(KeyCode::Char('3'));
    app.key(KeyCode::Char('r'));
    assert!(app.overlay.is_none());
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.text.contains("is a rollback"))
    );
    assert!(app.packages.iter().all(|p| p.name != "(rollback)"));
    let web1 = app.hosts.iter().find(|h| h.name == "web1").unwrap();
    assert_eq!(
        web1.last
            .as_ref()
            .and_then(|l| l.last_succeeded.as_ref())
            .map(|s| s.bundle.as_str()),
        Some("shop-1.3.tgz"),
        "a rollback ships nothing"
    );

    // `:rollback RULE` without a host: every host of the rule, said so.
    app.key(KeyCode::Char(':'));
    app.type_str("rollback shop");
    let fx = app.key(KeyCode::Enter);
    assert!(matches!(fx.as_slice(), [Effect::RollbackPreview { hosts, .. }] if hosts.len() == 2));
    assert!(render(&app, 120, 40).contains("every host of the rule"));
    app.key(KeyCode::Esc);
    // A rule with nothing to roll back with is refused with the reason.
    app.key(KeyCode::Char(':'));
    app.type_str("rollback db db1");
    assert!(app.key(KeyCode::Enter).is_empty());
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.error && s.text.contains("nothing to roll back"))
    );
}

/// The Versions view marks drift with bold and reverse video, so `mono` shows it without
/// colour; `r` reads again.
#[test]
fn versions_drift_reads_in_mono() {
    let mut app = fleet_app();
    app.theme = dropship::ui::tui::theme::Theme::load("mono").unwrap();
    app.key(KeyCode::Char(':'));
    app.type_str("status");
    assert!(matches!(
        app.key(KeyCode::Enter).as_slice(),
        [Effect::Status(_)]
    ));
    assert!(app.key(KeyCode::Char('r')).is_empty(), "already reading");
    app.on_status(Ok(status_report()));
    let t = terminal(&app, 120, 40);
    let buf = t.backend().buffer();
    let text = render(&app, 120, 40);
    let (row, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("1.2 !behind"))
        .expect("drift cell");
    let col = line.chars().position(|c| c == '!').unwrap() as u16;
    let cell = &buf[(col.saturating_sub(1), row as u16)];
    assert!(
        cell.modifier.contains(Modifier::BOLD | Modifier::REVERSED),
        "{cell:?}"
    );
    for cell in buf.content() {
        assert_eq!(cell.fg, ratatui::style::Color::Reset, "mono drew a colour");
    }
    assert!(matches!(
        app.key(KeyCode::Char('r')).as_slice(),
        [Effect::Status(_)]
    ));
    app.key(KeyCode::Esc);
    assert!(app.overlay.is_none());
    let web1 = app.hosts.iter().find(|h| h.name == "web1").unwrap();
    assert_eq!(web1.installed_text(), "1.2, 2.0.1");
}

/// The notifier's outcome arrives after the dispatch ended: the status bar shows it.
#[test]
fn notification_notices_after_the_end_are_shown() {
    let mut app = app();
    finished(&mut app);
    app.on_event(&Event::Notice {
        dispatch: 6,
        at: T0 + 11_000,
        host: None,
        level: dropship::engine::events::Level::Warning,
        message: "notify: summary NOT delivered to http://127.0.0.1:9/… (the dispatch itself is unaffected)".into(),
    });
    let s = app.status.clone().unwrap();
    assert!(
        s.error && s.text.starts_with("#6 notify: summary NOT delivered"),
        "{s:?}"
    );
    assert!(render(&app, 120, 40).contains("#6 notify"));
}

/// `--tui --watch`: `a` pauses and resumes automatic dispatching (the status bar says so),
/// `:pause`/`:resume` do the same, the watcher's own Paused/Resumed are shown, a watched
/// dispatch cannot be cancelled alone, Enter on a watched bundle shows its dispatch, and
/// the Packages selection stays on its row as new bundles arrive.
#[test]
fn watch_pause_and_resume_with_a_and_the_palette() {
    use dropship::watch::WatchEvent;
    let mut app = watch_app();
    watch_states(&mut app);
    let paused = |app: &App| app.watch.as_ref().unwrap().paused;
    let bar = |app: &App| {
        let text = render(app, 120, 40);
        text.lines().last().unwrap_or_default().to_owned()
    };
    assert!(bar(&app).contains("watch on · 1 queued"), "{}", bar(&app));

    let fx = app.key(KeyCode::Char('a'));
    assert!(
        matches!(fx.as_slice(), [Effect::PauseWatch(true)]),
        "{fx:?}"
    );
    assert!(paused(&app));
    assert!(
        bar(&app).contains("automatic dispatching paused"),
        "{}",
        bar(&app)
    );
    assert!(
        bar(&app).contains("1 running go on, new files wait queued"),
        "{}",
        bar(&app)
    );
    app.status = None;
    assert!(
        bar(&app).contains("watch PAUSED (a resumes)"),
        "{}",
        bar(&app)
    );
    // The watcher confirms; nothing changes.
    app.on_watch(&WatchEvent::Paused { at: T0 });
    assert!(paused(&app));

    // `:pause` while paused does nothing; `:resume` resumes.
    app.key(KeyCode::Char(':'));
    app.type_str("pause");
    assert!(app.key(KeyCode::Enter).is_empty());
    assert!(app.status.as_ref().unwrap().text.contains("paused already"));
    app.key(KeyCode::Char(':'));
    app.type_str("resume");
    let fx = app.key(KeyCode::Enter);
    assert!(
        matches!(fx.as_slice(), [Effect::PauseWatch(false)]),
        "{fx:?}"
    );
    assert!(!paused(&app));
    app.status = None;
    assert!(bar(&app).contains("watch on"), "{}", bar(&app));
    // `a` works from the log pane too (its own keys do not swallow it).
    app.key(KeyCode::Char('5'));
    let fx = app.key(KeyCode::Char('a'));
    assert!(
        matches!(fx.as_slice(), [Effect::PauseWatch(true)]),
        "{fx:?}"
    );
    let fx = app.key(KeyCode::Char('a'));
    assert!(
        matches!(fx.as_slice(), [Effect::PauseWatch(false)]),
        "{fx:?}"
    );

    // The watched dispatch #7 runs: `c` says why it cannot be cancelled alone.
    app.key(KeyCode::Char('3'));
    assert_eq!(app.selected_dispatch().map(|d| d.id), Some(7));
    assert!(app.key(KeyCode::Char('c')).is_empty());
    assert!(
        app.overlay.is_none(),
        "no cancel dialog for a watched dispatch"
    );
    let s = app.status.clone().unwrap();
    assert!(s.error && s.text.contains("watched folder"), "{s:?}");

    // Quitting asks, and says the watcher stops with a grace period.
    app.key(KeyCode::Char('q'));
    assert!(matches!(
        app.overlay,
        Some(Overlay::Confirm {
            what: Confirm::Quit { running: 1, .. },
            ..
        })
    ));
    assert!(render(&app, 120, 40).contains("The watcher of /drop stops"));
    app.key(KeyCode::Esc);
    assert!(!app.quit);

    // Packages: row 4 is app-1.4.2.tgz, dispatching #7; Enter shows that dispatch.
    app.key(KeyCode::Char('2'));
    for _ in 0..4 {
        app.key(KeyCode::Char('j'));
    }
    let name = |app: &App| match app.package_item(app.selected[1]) {
        Some(PackageItem::Watched(b)) => b.name.clone(),
        Some(PackageItem::Listed(p)) => p.name.clone(),
        None => String::new(),
    };
    assert_eq!(name(&app), "app-1.4.2.tgz");
    // A new bundle on top does not move the selection off its row.
    app.on_watch(&WatchEvent::BundleSeen {
        at: T0 + 2_000,
        name: "app-3.0.0.tgz".into(),
        size: 1,
    });
    assert_eq!(name(&app), "app-1.4.2.tgz");
    app.key(KeyCode::Enter);
    assert_eq!(app.focus, Focus::Targets);
    assert_eq!(app.selected_dispatch().map(|d| d.id), Some(7));
    assert!(app.status.as_ref().unwrap().text.contains("dispatching #7"));

    // A file in the watched folder is not offered for a manual dispatch.
    let drop = tempfile::tempdir().unwrap();
    let b = bundle(drop.path(), "app-9.0.0.tgz");
    let mut watching = tui_fixture::app();
    watching.set_watch(dropship::ui::tui::watch_view::WatchView::new(
        drop.path().canonicalize().unwrap(),
        &[],
    ));
    watching.key(KeyCode::Char(':'));
    watching.type_str(&format!("dispatch {}", b.display()));
    assert!(watching.key(KeyCode::Enter).is_empty());
    assert!(watching.overlay.is_none(), "no dispatch dialog");
    assert!(
        watching
            .status
            .as_ref()
            .unwrap()
            .text
            .contains("this folder is watched"),
        "{:?}",
        watching.status
    );

    // A console not watching anything says so.
    let mut plain = tui_fixture::app();
    assert!(plain.key(KeyCode::Char('a')).is_empty());
    assert!(
        plain
            .status
            .as_ref()
            .unwrap()
            .text
            .contains("--tui --watch DIR")
    );
}

/// Dispatches the watcher starts appear in Dispatches as their events come. The selection
/// stays on the dispatch and host being read (issue 15 item 4: #12's failure was replaced
/// by #13 four seconds later); `F` follows the newest, visibly.
#[test]
fn watched_dispatches_keep_the_selection_on_its_dispatch() {
    let mut app = watch_app();
    finished(&mut app); // #6
    app.key(KeyCode::Char('4'));
    app.key(KeyCode::Char('j')); // web2 of #6, the failed one
    assert_eq!(app.selected_target().unwrap().host, "web2");
    app.on_event(&started(8, "app-1.4.3.tgz", &["web1"]));
    assert_eq!(app.selected_dispatch().map(|d| d.id), Some(6), "stays put");
    assert_eq!(app.selected_target().unwrap().host, "web2");
    assert!(!render(&app, 160, 48).contains("following"));
    app.key(KeyCode::Char('F'));
    assert!(app.follow);
    assert!(render(&app, 160, 48).contains("following"));
    assert_eq!(
        app.selected_dispatch().map(|d| d.id),
        Some(8),
        "F: the newest"
    );
    app.on_event(&started(9, "app-1.4.4.tgz", &["web1"]));
    assert_eq!(app.selected_dispatch().map(|d| d.id), Some(9), "follows");
    app.key(KeyCode::Char('F'));
    app.on_event(&started(10, "app-1.4.5.tgz", &["web1"]));
    assert_eq!(app.selected_dispatch().map(|d| d.id), Some(9), "stays put");
}

/// Issue 15 item 1: a failed host says why wherever it is shown. The ERROR column names
/// the step, its exit code and duration before the error; Enter on Targets opens the whole
/// story (every line of the error, each step); the status bar names the failed hosts.
#[test]
fn a_failed_host_says_why_everywhere() {
    let mut app = app();
    finished(&mut app); // #6: web2 failed at upgrade, exit 2
    let s = app.status.clone().unwrap();
    assert!(s.error, "a dispatch with failures ends in an error message");
    assert!(s.text.contains("failed: web2"), "{}", s.text);
    app.key(KeyCode::Char('4'));
    let screen = render(&app, 200, 48);
    assert!(
        screen.contains("upgrade: exit 2 after 2.0 s — upgrade exited with status 2"),
        "{screen}"
    );
    // A multi-line error: the popup shows every line, wrapped, not just the first.
    let long = format!(
        "`upgrade` exited with status 3\nstderr: {}\nhint: check the disk",
        "x".repeat(150)
    );
    let d = &mut app.dispatches[0];
    let t = d.target_mut("web2").unwrap();
    t.error = Some(long);
    app.key(KeyCode::Char('4'));
    app.key(KeyCode::Char('j'));
    app.key(KeyCode::Enter);
    assert!(matches!(app.overlay, Some(Overlay::Details { .. })));
    let screen = render(&app, 120, 40);
    assert!(screen.contains("web2 — details"), "{screen}");
    assert!(
        screen.contains("why       upgrade: exit 2 after 2.0 s"),
        "{screen}"
    );
    assert!(screen.contains("hint: check the disk"), "{screen}");
    let xs: usize = screen
        .lines()
        .filter(|l| l.contains("xxxxxxxxxx"))
        .map(|l| l.matches('x').count())
        .sum();
    assert_eq!(
        xs, 150,
        "the whole stderr line is there, wrapped:\n{screen}"
    );
    // Enter again: the host's log.
    app.key(KeyCode::Enter);
    assert!(app.overlay.is_none());
    assert_eq!(app.focus, Focus::Log);
}

/// Issue 15 item 2: after a dispatch, REACH, LOCK and VERSION stay for every host; the
/// hosts it touched are probed again (quietly: no probe view opens).
#[test]
fn fleet_facts_survive_a_dispatch_and_refresh_where_it_shipped() {
    use dropship::fleet::probe::{Reach, Reachability};
    let mut app = app();
    for h in ["web1", "web2", "web3", "db1.example.com", "db2.example.com"] {
        app.on_reach(
            h,
            &Reachability {
                rule: app.hosts.iter().find(|x| x.name == h).unwrap().rules[0].clone(),
                host: h.into(),
                address: "127.0.0.1".into(),
                port: Some(22),
                reach: Reach::Up {
                    greeting: "SSH-2.0-OpenSSH".into(),
                    millis: 3,
                },
            },
        );
    }
    app.on_reach_done();
    for h in &mut app.hosts {
        h.lock = Some(None);
        h.set_installed(&h.rules[0].clone(), Some("1.4.0"));
    }
    finished(&mut app); // #6 on web1..3
    let fx = app.on_ended(6, false);
    for h in &app.hosts {
        assert!(
            h.reach.iter().any(|(_, r)| matches!(r, Reach::Up { .. })),
            "{}",
            h.name
        );
        assert_eq!(h.lock, Some(None), "{}", h.name);
        assert_eq!(h.installed_text(), "1.4.0", "{}", h.name);
    }
    let screen = render(&app, 300, 80);
    assert!(screen.contains("db2.example.com"));
    assert!(screen.contains("up 3ms"), "{screen}");
    match fx.as_slice() {
        [Effect::Probe { targets, .. }] => {
            let mut hosts: Vec<&str> = targets
                .iter()
                .map(|t| t.target.host.name.as_str())
                .collect();
            hosts.sort();
            hosts.dedup();
            assert_eq!(hosts, ["web1", "web2", "web3"], "only the hosts it touched");
        }
        other => panic!("expected a probe of the touched hosts, got {other:?}"),
    }
    assert!(app.overlay.is_none() && app.probe_run.is_none(), "quiet");
}

/// Issue 15 item 3: relative times tick while on screen: the renderer notes the soonest
/// change, the runner sleeps until then; with none on screen there is no timer at all.
#[test]
fn relative_times_ask_for_a_wakeup_only_while_shown() {
    let mut app = app();
    render(&app, 160, 48);
    assert_eq!(
        app.next_tick(),
        None,
        "nothing relative on screen: no timer"
    );
    finished(&mut app); // hosts' LAST/WHEN: finished at T0+9s, now T0+42s → 33s ago
    app.on_ended(6, false);
    let screen = render(&app, 160, 48);
    assert!(screen.contains("33s ago"), "{screen}");
    assert_eq!(
        app.next_tick(),
        Some(std::time::Duration::from_millis(1_000))
    );
    app.now += 1_000;
    assert!(render(&app, 160, 48).contains("34s ago"));
    // Ten minutes later the soonest change is at the next whole minute.
    app.now = T0 + 9_000 + 600_500;
    render(&app, 160, 48);
    assert_eq!(
        app.next_tick(),
        Some(std::time::Duration::from_millis(59_500))
    );
    // Hosts that finished at different milliseconds do not wake it more than once a
    // second (nor more than every 10 s for minutes): the finest unit sets a floor.
    app.hosts[1].last.as_mut().unwrap().finished_at = Some(app.now - 400);
    render(&app, 160, 48);
    assert_eq!(
        app.next_tick(),
        Some(std::time::Duration::from_millis(1_000))
    );
    app.hosts[1].last.as_mut().unwrap().finished_at = Some(app.now - 659_900);
    render(&app, 160, 48);
    assert_eq!(
        app.next_tick(),
        Some(std::time::Duration::from_millis(10_000))
    );
}

/// Issue 15 item 6: `/db2` Enter, Esc: the cursor stays on db2 (it went back to the first
/// host, so `p` probed web1); the title counts filtered/total; no match says so.
#[test]
fn filter_keeps_the_cursor_on_its_item_and_counts() {
    let mut app = app();
    app.key(KeyCode::Char('1'));
    app.key(KeyCode::Char('/'));
    app.type_str("db2");
    app.key(KeyCode::Enter);
    let name = |app: &App| app.hosts[app.visible(0)[app.selected[0]]].name.clone();
    assert_eq!(name(&app), "db2.example.com");
    assert!(render(&app, 160, 48).contains("Hosts 1/5"));
    app.key(KeyCode::Esc);
    assert_eq!(app.visible(0).len(), 5);
    assert_eq!(
        name(&app),
        "db2.example.com",
        "Esc keeps the cursor on its host"
    );
    assert!(render(&app, 160, 48).contains("Hosts 5 "));
    match app.key(KeyCode::Char('p')).as_slice() {
        [Effect::Probe { targets, .. }] => {
            assert!(
                targets
                    .iter()
                    .all(|t| t.target.host.name == "db2.example.com")
            )
        }
        other => panic!("{other:?}"),
    }
    app.overlay = None;
    app.key(KeyCode::Char('/'));
    app.type_str("nosuchhost");
    let screen = render(&app, 160, 48);
    assert!(screen.contains("nothing matches /nosuchhost"), "{screen}");
    assert!(!screen.contains("no hosts in dispatch.cfg"));
    app.key(KeyCode::Esc);
    assert_eq!(name(&app), "db2.example.com");
}

/// Issue 15 item 8: quitting cancels like `c` (grace period, not at once) and names the
/// dispatch to `--resume`.
#[test]
fn quit_cancels_with_the_grace_and_names_the_dispatch() {
    let mut app = app();
    running(&mut app); // #7
    app.key(KeyCode::Char('q'));
    let screen = render(&app, 120, 40);
    assert!(screen.contains("dropship --resume 7"), "{screen}");
    assert!(screen.contains("cancels #7 like c"), "{screen}");
    app.key(KeyCode::Tab);
    let fx = app.key(KeyCode::Enter);
    assert!(
        matches!(fx.as_slice(), [Effect::Cancel(7), Effect::Quit]),
        "{fx:?}"
    );
    assert_eq!(app.quit_cancelled, [7]);
    assert!(app.dispatches[0].cancelling);
}

/// Issue 15 item 12: at 60x15 the dispatch dialog scrolls, so every host and command is
/// read before saying yes; every pane is reachable full-screen.
#[test]
fn smallest_terminal_scrolls_the_plan_and_shows_every_pane() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), "db-2.0.1.tar.gz");
    let mut app = app();
    app.key(KeyCode::Char(':'));
    app.type_str(&format!("dispatch {}", b.display()));
    app.key(KeyCode::Enter);
    let mut seen = String::new();
    for _ in 0..40 {
        seen.push_str(&render(&app, 60, 15));
        app.key(KeyCode::Char('j'));
    }
    for needle in [
        "db1.example.com:2222",
        "db2.example.com",
        "~/bin/check-space",
        "~/bin/upgrade",
        "curl -fsS http://localhost:8080/health",
        "[ Dispatch ]",
        "end of the plan",
    ] {
        assert!(seen.contains(needle), "{needle} never shown:\n{seen}");
    }
    assert!(!seen.contains("not-shown-anywhere"));
    app.key(KeyCode::Esc);
    finished(&mut app);
    for (key, title) in [
        ('1', "1 Hosts 5"),
        ('2', "2 Packages"),
        ('3', "3 Dispatches 1"),
        ('4', "4 Targets #6"),
        ('5', "5 Log web1"),
    ] {
        app.key(KeyCode::Char(key));
        let screen = render(&app, 60, 15);
        assert!(screen.contains(title), "{title}:\n{screen}");
    }
    app.key(KeyCode::Char('4'));
    let screen = render(&app, 60, 15);
    assert!(screen.contains("web3"), "Targets shows its rows:\n{screen}");
}

/// Issue 15 item 12: with the mouse on (`m`; off by default), a click focuses the pane
/// under the pointer and selects the row clicked; the wheel scrolls the pane under the
/// pointer, not the focused one.
#[test]
fn mouse_click_selects_and_wheel_scrolls_the_pane_under_it() {
    use crossterm::event::{Event as TermEvent, MouseButton, MouseEvent, MouseEventKind};
    let mouse = |kind, column, row| {
        TermEvent::Mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        })
    };
    let mut app = app();
    finished(&mut app);
    app.key(KeyCode::Char('3'));
    assert!(!app.mouse, "off by default");
    render(&app, 160, 48);
    // Off: clicks do nothing.
    app.on_terminal(&mouse(MouseEventKind::Down(MouseButton::Left), 5, 3));
    assert_eq!(app.focus, Focus::Dispatches);
    app.key(KeyCode::Char('m'));
    assert!(app.mouse);
    let screen = render(&app, 160, 48);
    // Hosts is the top-left pane: border on row 1, header on row 2, web1 on row 3.
    let row = screen
        .lines()
        .position(|l| l.contains("│db1.example.com"))
        .unwrap() as u16;
    app.on_terminal(&mouse(MouseEventKind::Down(MouseButton::Left), 5, row));
    assert_eq!(app.focus, Focus::Hosts);
    assert_eq!(
        app.hosts[app.visible(0)[app.selected[0]]].name,
        "db1.example.com"
    );
    // The wheel over Targets moves Targets while Hosts keeps the focus.
    render(&app, 160, 48);
    let (_, targets) = *app
        .areas
        .borrow()
        .iter()
        .find(|(p, _)| *p == Focus::Targets)
        .unwrap();
    assert_eq!(app.selected[3], 0);
    app.on_terminal(&mouse(
        MouseEventKind::ScrollDown,
        targets.x + 3,
        targets.y + 3,
    ));
    assert_eq!(app.focus, Focus::Hosts);
    assert_eq!(
        app.selected[3], 2,
        "three rows down, clamped to the last host"
    );
    assert_eq!(
        app.hosts[app.visible(0)[app.selected[0]]].name,
        "db1.example.com"
    );
}

/// Issue 15 item 12: `:reload` reads dispatch.cfg (and the .netrc) again; a broken file is
/// reported with where and what, and the session goes on with what it had.
#[test]
fn reload_rereads_the_config_and_keeps_the_session_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dispatch.cfg");
    std::fs::write(&cfg, CONFIG).unwrap();
    let mut env = env();
    env.config = std::sync::Arc::new(dropship::config::Config::load(&cfg).unwrap());
    let mut app = app_with(env);
    finished(&mut app);
    assert_eq!(app.hosts.len(), 5);
    // A new host in the file: `:reload` shows it.
    std::fs::write(
        &cfg,
        CONFIG.replace("host = web1, web2, web3", "host = web1, web2, web3, web4"),
    )
    .unwrap();
    app.key(KeyCode::Char(':'));
    app.type_str("reload");
    app.key(KeyCode::Enter);
    let s = app.status.clone().unwrap();
    assert!(!s.error, "{}", s.text);
    assert!(s.text.contains("2 rules, 6 hosts"), "{}", s.text);
    assert!(app.hosts.iter().any(|h| h.name == "web4"));
    assert!(
        app.probe_targets
            .iter()
            .any(|t| t.target.host.name == "web4")
    );
    // A broken file: the error says where; nothing is lost.
    std::fs::write(&cfg, "[app-.*\\.tgz]\nprotocol = carrier-pigeon\n").unwrap();
    app.key(KeyCode::Char(':'));
    app.type_str("reload");
    app.key(KeyCode::Enter);
    let s = app.status.clone().unwrap();
    assert!(s.error, "{}", s.text);
    assert!(s.text.contains(&cfg.display().to_string()), "{}", s.text);
    assert!(
        s.text.contains("still using the config loaded before"),
        "{}",
        s.text
    );
    assert_eq!(app.hosts.len(), 6, "the config in use stays");
    assert_eq!(app.dispatches.len(), 1, "the session stays");
}

/// Issue 15 item 12: a long watch message is cut short of the status bar's right side
/// (the watch state and theme stay readable); the Targets footer keeps its summary whole
/// after a long notice (it was clipped from the left: `└e; if they are stopped…`).
#[test]
fn long_messages_stay_out_of_the_indicators_and_footers() {
    let mut watching = watch_app();
    watching.info(format!(
        "watch: {} failed: {}",
        "app-9.9.9.tgz",
        "y".repeat(200)
    ));
    let screen = render(&watching, 80, 24);
    let last = screen.lines().last().unwrap();
    assert!(last.contains("…  watch on · 0 queued  default "), "{last}");
    let mut app = app();
    running(&mut app);
    app.dispatches[0].notices.push((
        dropship::engine::events::Level::Warning,
        format!(
            "cancel asked: running steps get 10s; if they are stopped {}",
            "z".repeat(120)
        ),
    ));
    app.key(KeyCode::Char('4'));
    let screen = render(&app, 160, 48);
    let footer = screen
        .lines()
        .find(|l| l.contains("0 ok · 0 failed"))
        .unwrap();
    assert!(
        footer.contains("└ 0 ok · 0 failed · 3 to go — running 00:42"),
        "{footer}"
    );
    assert!(footer.contains("cancel asked: running steps"), "{footer}");
}

/// Issue 15 item 11: `o` sorts Hosts and Targets by the next column, `O` reverses, the
/// header marks it, and the cursor stays on its item.
#[test]
fn sorting_by_column_keeps_the_cursor_on_its_item() {
    let mut app = app();
    finished(&mut app); // web1 ok, web2 failed, web3 skipped
    app.key(KeyCode::Char('4'));
    app.key(KeyCode::Char('j')); // web2
    let host = |app: &App| app.selected_target().unwrap().host.clone();
    assert_eq!(host(&app), "web2");
    app.key(KeyCode::Char('o')); // HOST ascending: same order
    app.key(KeyCode::Char('O')); // HOST descending
    let order: Vec<String> = app
        .visible(3)
        .iter()
        .map(|&i| app.dispatches[0].targets[i].host.clone())
        .collect();
    assert_eq!(order, ["web3", "web2", "web1"]);
    assert_eq!(host(&app), "web2", "the cursor stays on web2");
    assert!(render(&app, 160, 48).contains("HOST▼"));
    app.key(KeyCode::Char('o')); // STEP descending: succeeded, skipped, failed at upgrade
    let order: Vec<String> = app
        .visible(3)
        .iter()
        .map(|&i| app.dispatches[0].targets[i].host.clone())
        .collect();
    assert_eq!(order, ["web1", "web3", "web2"]);
    assert_eq!(host(&app), "web2");
    app.key(KeyCode::Enter);
    assert!(render(&app, 160, 48).contains("web2 — details"));
    app.key(KeyCode::Esc);
    // Hosts by LAST: failed first ascending.
    app.key(KeyCode::Char('1'));
    for _ in 0..3 {
        app.key(KeyCode::Char('o'));
    }
    assert!(render(&app, 160, 48).contains("LAST▲"));
    assert_eq!(app.hosts[app.visible(0)[0]].name, "web2");
}

/// Issue 15 item 7: only the focused pane draws the selection bar; the others mark their
/// selected row without it, so where the keys go is plain (in mono too).
#[test]
fn only_the_focused_pane_has_the_selection_bar() {
    let mut app = app();
    finished(&mut app);
    app.key(KeyCode::Char('4'));
    let t = terminal(&app, 160, 48);
    let buf = t.backend().buffer();
    let bar = app.theme.selected.bg.unwrap();
    let rows_with_bar: Vec<u16> = (0..48)
        .filter(|&y| (0..160).any(|x| buf[(x, y)].bg == bar))
        .collect();
    assert_eq!(
        rows_with_bar.len(),
        1,
        "one bar on screen: {rows_with_bar:?}"
    );
    let y = rows_with_bar[0];
    let line: String = (0..160).map(|x| buf[(x, y)].symbol().to_owned()).collect();
    assert!(
        line.contains("web1           succeeded") || line.contains("web1  "),
        "{line}"
    );
    // Dispatches (unfocused) marks #6 in the bar's colour, bold, without a background.
    let y6 = (0..48)
        .find(|&y| {
            let l: String = (0..80).map(|x| buf[(x, y)].symbol().to_owned()).collect();
            l.contains("#6 ")
        })
        .unwrap();
    let cell = &buf[(2, y6)];
    assert_eq!(cell.fg, bar);
    assert!(cell.modifier.contains(Modifier::BOLD));
    assert_ne!(cell.bg, bar);
}

/// Issue 15 item 11: the REACH column cuts a DOWN reason; with the host selected on Hosts
/// the status bar shows it whole.
#[test]
fn the_whole_down_reason_shows_for_the_selected_host() {
    use dropship::fleet::probe::{Reach, Reachability};
    let mut app = app();
    let why = "connect 10.0.0.3:22: connection refused (is sshd running? firewall?)";
    app.on_reach(
        "web2",
        &Reachability {
            rule: app.hosts[1].rules[0].clone(),
            host: "web2".into(),
            address: "10.0.0.3".into(),
            port: Some(22),
            reach: Reach::Down { error: why.into() },
        },
    );
    app.key(KeyCode::Char('1'));
    app.key(KeyCode::Char('j'));
    let screen = render(&app, 160, 48);
    assert!(
        screen
            .lines()
            .last()
            .unwrap()
            .contains(&format!("web2 DOWN: {why}")),
        "{screen}"
    );
}

/// Issue 15 item 2 for the drop folder: its dispatches end without `on_ended`; their end
/// event asks for the quiet probe of the hosts they touched.
#[test]
fn a_watched_dispatch_refreshes_the_facts_of_its_hosts() {
    use dropship::watch::WatchEvent;
    let mut app = watch_app();
    app.on_watch(&WatchEvent::BundleDispatching {
        at: T0,
        bundle: 1,
        name: "app-1.4.1.tgz".into(),
        dispatch: 6,
        resumed: false,
    });
    finished(&mut app); // #6: web1, web2, web3 each ran upgrade
    match app.take_effects().as_slice() {
        [Effect::Probe { targets, .. }] => {
            let mut hosts: Vec<&str> = targets
                .iter()
                .map(|t| t.target.host.name.as_str())
                .collect();
            hosts.sort();
            hosts.dedup();
            assert_eq!(hosts, ["web1", "web2", "web3"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(app.take_effects().is_empty(), "taken once");
}
