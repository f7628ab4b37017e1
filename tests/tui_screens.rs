//! Snapshots of every console screen and dialog at 60x15 (the smallest usable), 80x24 (the
//! stacked layout), 160x48 and 300x80, rendered to ratatui's `TestBackend`. Review changes with `cargo insta review`.

mod tui_fixture;

use crossterm::event::KeyCode;
use dropship::ui::tui::app::{App, Focus};
use tui_fixture::*;

const SIZES: [(u16, u16); 4] = [(60, 15), (80, 24), (160, 48), (300, 80)];

fn snap(name: &str, app: &App) {
    for (w, h) in SIZES {
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), render(app, w, h));
    }
}

#[test]
fn empty_console() {
    snap("empty", &app());
}

#[test]
fn running_dispatch_with_live_log() {
    let mut app = app();
    finished(&mut app);
    app.key(KeyCode::Char('F')); // follow the newest: #7 is shown as it starts
    running(&mut app);
    snap("running", &app);
}

#[test]
fn finished_dispatch_with_a_failure() {
    let mut app = app();
    finished(&mut app);
    app.key(KeyCode::Char('4'));
    app.key(KeyCode::Char('j'));
    snap("finished_failed_host", &app);
}

#[test]
fn hosts_focused_with_filter() {
    let mut app = app();
    app.key(KeyCode::Char('1'));
    app.key(KeyCode::Char('/'));
    app.type_str("db");
    snap("hosts_filter_prompt", &app);
    app.key(KeyCode::Enter);
    snap("hosts_filtered", &app);
}

#[test]
fn log_full_screen_with_search_and_timestamps_off() {
    let mut app = app();
    running(&mut app);
    app.key(KeyCode::Char('f'));
    app.key(KeyCode::Char('/'));
    app.type_str("app");
    app.key(KeyCode::Enter);
    snap("log_fullscreen_search", &app);
}

#[test]
fn help_overlay_per_pane() {
    let mut app = app();
    app.key(KeyCode::Char('?'));
    snap("help_dispatches", &app);
    app.key(KeyCode::Esc);
    app.key(KeyCode::Char('5'));
    app.key(KeyCode::Char('?'));
    snap("help_log", &app);
}

#[test]
fn command_palette_with_candidates() {
    let mut app = app();
    app.key(KeyCode::Char(':'));
    app.key(KeyCode::Tab);
    snap("palette_all", &app);
    app.type_str("th");
    app.key(KeyCode::Tab);
    app.key(KeyCode::Tab);
    snap("palette_theme", &app);
    let mut app2 = tui_fixture::app();
    app2.key(KeyCode::Char(':'));
    app2.type_str("frobnicate");
    app2.key(KeyCode::Enter);
    snap("palette_error", &app2);
}

#[test]
fn path_entry_with_completion() {
    let mut app = app();
    app.key(KeyCode::Char('d'));
    app.type_str("themes/");
    app.key(KeyCode::Tab);
    snap("path_entry_candidates", &app);
    app.type_str("nope");
    app.key(KeyCode::Enter);
    snap("path_entry_error", &app);
}

#[test]
fn confirm_dispatch_shows_the_plan_and_defaults_to_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), "db-2.0.1.tar.gz");
    let mut app = app();
    app.key(KeyCode::Char(':'));
    app.type_str(&format!("dispatch {}", b.display()));
    app.key(KeyCode::Enter);
    snap("confirm_dispatch", &app);
    let text = render(&app, 120, 40);
    assert!(
        !text.contains("not-shown-anywhere"),
        "a secret reached the screen"
    );
}

#[test]
fn confirm_cancel_and_quit() {
    let mut app = app();
    running(&mut app);
    app.key(KeyCode::Char('3'));
    app.key(KeyCode::Char('c'));
    snap("confirm_cancel", &app);
    app.key(KeyCode::Esc);
    app.key(KeyCode::Char('q'));
    snap("confirm_quit", &app);
}

#[test]
fn history_overlay_without_journal() {
    let mut app = app();
    app.key(KeyCode::Char(':'));
    app.type_str("history");
    app.key(KeyCode::Enter);
    snap("history_empty", &app);
}

#[test]
fn packages_pane_lists_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["app-1.4.2.tgz", "db-2.0.1.tar.gz", "notes.txt"] {
        bundle(dir.path(), n);
    }
    let mut env = env();
    env.packages_dir = Some(dir.path().to_owned());
    let mut app = app_with(env);
    app.focus = Focus::Packages;
    snap("packages", &app);
}

/// `--tui --watch /drop`: the folder's bundles in every state, newest first, the header
/// saying it is watched and how much is queued; then paused, in the header and the status
/// bar.
#[test]
fn packages_pane_shows_the_watched_folder() {
    let mut app = watch_app();
    watch_states(&mut app);
    app.focus = Focus::Packages;
    snap("packages_watch", &app);
    app.key(KeyCode::Char('a'));
    app.status = None;
    snap("packages_watch_paused", &app);
}

#[test]
fn tiny_terminal_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), "db-2.0.1.tar.gz");
    let mut app = app();
    finished(&mut app);
    running(&mut app);
    let overlays: Vec<Vec<KeyCode>> = vec![
        vec![],
        vec![KeyCode::Char('?')],
        vec![KeyCode::Char(':'), KeyCode::Tab],
        vec![KeyCode::Char('d'), KeyCode::Char('t'), KeyCode::Tab],
        vec![KeyCode::Char('3'), KeyCode::Char('c')],
        vec![KeyCode::Char('q')],
        vec![KeyCode::Char('1'), KeyCode::Char('/'), KeyCode::Char('w')],
        vec![KeyCode::Char('5'), KeyCode::Char('/'), KeyCode::Char('x')],
        vec![KeyCode::Char('f'), KeyCode::Char('w'), KeyCode::Char('t')],
    ];
    for keys in &overlays {
        for (w, h) in [
            (1, 1),
            (2, 2),
            (10, 3),
            (20, 5),
            (40, 10),
            (99, 30),
            (100, 30),
            (300, 100),
        ] {
            for k in keys {
                app.key(*k);
            }
            render(&app, w, h);
            app.key(KeyCode::Esc);
            app.key(KeyCode::Esc);
        }
    }
    app.key(KeyCode::Char(':'));
    app.type_str(&format!("dispatch {}", b.display()));
    app.key(KeyCode::Enter);
    for (w, h) in [
        (1, 1),
        (2, 2),
        (10, 3),
        (20, 5),
        (40, 10),
        (80, 12),
        (300, 100),
    ] {
        render(&app, w, h);
    }
}

/// The Hosts list with reachability (up, down, still probing), a lock holder and the
/// installed version a probe found; focused (wide) and in the stacked layout.
#[test]
fn hosts_with_reachability_lock_and_version() {
    let mut app = fleet_app();
    reach_some(&mut app);
    app.on_probed(99, "web1", host_probe("web1", true));
    app.key(KeyCode::Char('1'));
    snap("hosts_fleet", &app);
    let text = render(&app, 120, 40);
    assert!(text.contains("up 4ms"), "{text}");
    assert!(text.contains("DOWN cann"), "{text}");
    assert!(text.contains("probing…"), "{text}");
    assert!(text.contains("held 5m by"), "{text}");
    app.on_reach_done();
    assert!(!render(&app, 120, 40).contains("probing…"));
}

/// `p` on a host: the probe dialog, first waiting, then with each check.
#[test]
fn probe_dialog() {
    let mut app = fleet_app();
    app.key(KeyCode::Char('1'));
    let token = match app.key(KeyCode::Char('p')).as_slice() {
        [dropship::ui::tui::app::Effect::Probe { token, targets }] => {
            assert_eq!(targets.len(), 2, "web1 is in two rules");
            *token
        }
        other => panic!("{other:?}"),
    };
    snap("probe_waiting", &app);
    app.on_probed(token, "web1", host_probe("web1", false));
    let mut db = host_probe("web1", true);
    db.rule = r"db-(?P<version>[0-9.]+)\.tar\.gz".into();
    db.package = "db".into();
    app.on_probed(token, "web1", db);
    app.on_probe_done(token);
    snap("probe_done", &app);
}

#[test]
fn versions_view() {
    let mut app = fleet_app();
    let fx = app.key(KeyCode::Char('v'));
    assert!(matches!(
        fx.as_slice(),
        [dropship::ui::tui::app::Effect::Status(_)]
    ));
    snap("versions_reading", &app);
    app.on_status(Ok(status_report()));
    snap("versions", &app);
}

/// `:rollback BUNDLE HOST` on a releases rule: what `current` does, read from the host.
#[test]
fn rollback_confirmation() {
    let mut app = fleet_app();
    app.key(KeyCode::Char(':'));
    app.type_str("rollback shop-1.3.tgz web1");
    let fx = app.key(KeyCode::Enter);
    let Some(dropship::ui::tui::app::Effect::RollbackPreview { token, .. }) = fx.first() else {
        panic!("{fx:?}");
    };
    snap("rollback_reading", &app);
    app.on_rollback_preview(*token, "web1", Ok((Some("1.3".into()), Some("1.2".into()))));
    snap("rollback_confirm", &app);
    assert!(!render(&app, 120, 40).contains("not-shown-anywhere"));
}

#[test]
fn help_lists_the_fleet_keys_and_scrolls_when_short() {
    let mut app = fleet_app();
    app.key(KeyCode::Char('1'));
    app.key(KeyCode::Char('?'));
    snap("help_hosts", &app);
    for _ in 0..30 {
        app.key(KeyCode::Char('j'));
    }
    let bottom = render(&app, 80, 24);
    assert!(bottom.contains("quit (asks first"), "{bottom}");
}

#[test]
fn tiny_terminal_with_fleet_views_does_not_panic() {
    let mut app = fleet_app();
    reach_some(&mut app);
    app.key(KeyCode::Char('1'));
    let token = match app.key(KeyCode::Char('p')).as_slice() {
        [dropship::ui::tui::app::Effect::Probe { token, .. }] => *token,
        other => panic!("{other:?}"),
    };
    app.on_probed(token, "web1", host_probe("web1", false));
    let sizes = [
        (1, 1),
        (2, 2),
        (10, 3),
        (20, 5),
        (40, 10),
        (99, 30),
        (300, 100),
    ];
    type View = Box<dyn Fn(&mut App)>;
    let views: Vec<View> = vec![
        Box::new(|_| {}),
        Box::new(|a| {
            a.key(KeyCode::Esc);
            a.key(KeyCode::Char('v'));
            a.on_status(Ok(status_report()));
        }),
        Box::new(|a| {
            for _ in 0..50 {
                a.key(KeyCode::Char('j'));
            }
        }),
        Box::new(|a| {
            a.key(KeyCode::Char('?'));
            a.key(KeyCode::PageDown);
        }),
        Box::new(|a| {
            a.key(KeyCode::Esc);
            a.key(KeyCode::Esc);
            a.key(KeyCode::Char(':'));
            a.type_str("rollback shop-1.3.tgz");
            a.key(KeyCode::Enter);
        }),
    ];
    for v in &views {
        v(&mut app);
        for (w, h) in sizes {
            render(&app, w, h);
        }
    }
}

#[test]
fn names_and_output_with_control_characters_render_inert() {
    use dropship::engine::events::{Event, Step};
    use dropship::transport::Stream;
    let mut app = app();
    let evil = "app-\u{1b}]0;PWNED\u{7}\u{9b}2J-1.0.0.tgz";
    for e in [
        started(9, evil, &["web1"]),
        Event::StepStarted {
            dispatch: 9,
            at: T0 + 1_000,
            host: "web1".into(),
            step: Step::Upgrade,
            command: Some(format!("echo '{evil}'")),
        },
        out(
            9,
            "web1",
            T0 + 2_000,
            Stream::Stdout,
            "\u{1b}[31mred\u{1b}[0m done",
        ),
        out(
            9,
            "web1",
            T0 + 2_100,
            Stream::Stderr,
            "\u{1b}]0;TITLE\u{7}\u{9b}2Jafter",
        ),
    ] {
        app.on_event(&e);
    }
    app.key(KeyCode::Char('5'));
    for (w, h) in SIZES {
        let t = terminal(&app, w, h);
        let buf = t.backend().buffer();
        let symbols: String = buf.content().iter().map(|c| c.symbol()).collect();
        assert!(
            !symbols.chars().any(|c| c.is_control()),
            "a control character in a cell: {symbols:?}"
        );
        let screen = render(&app, w, h);
        assert!(screen.contains("red done"), "{screen}");
        assert!(!screen.contains("[31m"), "{screen}");
        assert!(screen.contains("after"), "{screen}");
    }
}

/// Enter on a failed host: why it failed, whole, with each step's exit code and time.
#[test]
fn details_of_a_failed_host() {
    let mut app = app();
    finished(&mut app);
    app.key(KeyCode::Char('4'));
    app.key(KeyCode::Char('j'));
    app.key(KeyCode::Enter);
    snap("details_failed_host", &app);
}

/// A second `c` on a dispatch being cancelled offers to stop it now.
#[test]
fn confirm_stop_now() {
    let mut app = app();
    running(&mut app);
    app.key(KeyCode::Char('3'));
    app.key(KeyCode::Char('c'));
    app.key(KeyCode::Tab);
    app.key(KeyCode::Enter);
    app.key(KeyCode::Char('c'));
    snap("confirm_stop_now", &app);
}

/// `c` on the Versions view: the plan is read off the UI thread (an effect), then shown per
/// rule (the version to reach, who gets it and why, who is left out and why), Cancel first.
#[test]
fn converge_plan_dialog() {
    use dropship::fleet::converge::{Action, Goal, HostState, RulePlan};
    use dropship::fleet::version::Installed;
    use dropship::ui::tui::app::Effect;
    use dropship::ui::tui::engine::ConvergeItem;
    let mut app = fleet_app();
    app.key(KeyCode::Char('v'));
    app.on_status(Ok(status_report()));
    // `?` on the view lists the key.
    app.key(KeyCode::Char('?'));
    let help = render(&app, 160, 48);
    assert!(
        help.contains("converge: ship the last good bundle"),
        "{help}"
    );
    app.key(KeyCode::Esc);
    assert!(render(&app, 80, 24).contains("c converge"));
    let fx = app.key(KeyCode::Char('c'));
    let [Effect::ConvergePlan { token, named, .. }] = fx.as_slice() else {
        panic!("{fx:?}");
    };
    assert!(!named);
    let host = |name: &str, installed: Installed, action: Action| HostState {
        host: name.into(),
        label: name.into(),
        installed,
        action,
    };
    let item = ConvergeItem {
        plan: RulePlan {
            rule: r"shop-(?P<version>[0-9.]+)\.tgz".into(),
            package: "shop".into(),
            goal: Goal {
                dispatch: 7,
                bundle: "shop-1.3.tgz".into(),
                sha256: "ab".repeat(32),
                version: "1.3".into(),
            },
            hosts: vec![
                host(
                    "web1",
                    Installed::Version {
                        version: "1.2".into(),
                    },
                    Action::Ship,
                ),
                host(
                    "web2",
                    Installed::Version {
                        version: "1.3".into(),
                    },
                    Action::UpToDate,
                ),
                host(
                    "web3",
                    Installed::Unreadable {
                        error: "cat: /srv/shop/current/.version: No such file".into(),
                    },
                    Action::Ship,
                ),
                host(
                    "web4",
                    Installed::Unreachable {
                        error: "connection refused".into(),
                    },
                    Action::Unreachable,
                ),
            ],
        },
        file: "/store/sha256/abab".into(),
    };
    assert!(app.on_converge_plan(*token, Ok(vec![item.clone()])));
    for (w, h) in [(80, 24), (60, 15)] {
        insta::assert_snapshot!(format!("converge_confirm_{w}x{h}"), render(&app, w, h));
    }
    // Cancel is the default: Enter starts nothing.
    assert!(app.key(KeyCode::Enter).is_empty());
    assert!(app.overlay.is_none());

    // Nothing to ship: a status message, no dialog.
    let fx = app.key(KeyCode::Char(':'));
    assert!(fx.is_empty());
    app.type_str("converge shop");
    let fx = app.key(KeyCode::Enter);
    let [Effect::ConvergePlan { token, named, .. }] = fx.as_slice() else {
        panic!("{fx:?}");
    };
    assert!(*named);
    let mut same = item.clone();
    for h in &mut same.plan.hosts {
        if h.action == Action::Ship {
            h.action = Action::UpToDate;
        }
    }
    app.on_converge_plan(*token, Ok(vec![same]));
    assert!(app.overlay.is_none());
    let bar = render(&app, 160, 48);
    assert!(bar.contains("nothing to converge"), "{bar}");

    // A bundle missing from the store: the error, nothing started.
    app.key(KeyCode::Char('v'));
    let fx = app.key(KeyCode::Char('c'));
    let [Effect::ConvergePlan { token, .. }] = fx.as_slice() else {
        panic!("{fx:?}");
    };
    app.on_converge_plan(
        *token,
        Err("bundle shop-1.3.tgz is not in the store (/x/sha256/abab)".into()),
    );
    let bar = render(&app, 160, 48);
    assert!(bar.contains("not in the store"), "{bar}");

    // Yes: one dispatch, to exactly the hosts that differ. (The Versions view stayed open
    // under the error.)
    assert!(render(&app, 80, 24).contains("Versions"));
    let fx = app.key(KeyCode::Char('c'));
    let [Effect::ConvergePlan { token, .. }] = fx.as_slice() else {
        panic!("{fx:?}");
    };
    app.on_converge_plan(*token, Ok(vec![item]));
    app.key(KeyCode::Right);
    let fx = app.key(KeyCode::Enter);
    let [Effect::Start { only, file, .. }] = fx.as_slice() else {
        panic!("{fx:?}");
    };
    assert_eq!(
        only.as_deref(),
        Some(&["web1".to_owned(), "web3".to_owned()][..])
    );
    assert_eq!(file, &std::path::PathBuf::from("/store/sha256/abab"));
}

/// `:run COMMAND` without TARGETS: the first word names no rule or host, so the whole line
/// runs on the selected host (Hosts) or the selected package's rule (Packages).
#[test]
fn run_without_targets_takes_the_selection() {
    use dropship::ui::tui::app::Effect;
    let run = |app: &mut App, line: &str| {
        app.key(KeyCode::Char(':'));
        app.type_str(line);
        app.key(KeyCode::Enter)
    };
    let mut app = fleet_app();
    app.key(KeyCode::Char('1'));
    let fx = run(&mut app, "run uptime -p");
    let [Effect::Run { plans, action }] = fx.as_slice() else {
        panic!("{fx:?}");
    };
    assert!(!action);
    let hosts: Vec<&str> = plans
        .iter()
        .flat_map(|p| p.record.hosts.iter().map(String::as_str))
        .collect();
    assert_eq!(hosts, ["web1"]);
    assert!(plans.iter().all(|p| p.run.command == "uptime -p"));
    // A first word that names a host still picks the targets.
    let fx = run(&mut app, "run db1 uptime");
    let [Effect::Run { plans, .. }] = fx.as_slice() else {
        panic!("{fx:?}");
    };
    assert_eq!(plans[0].record.hosts, ["db1"]);
    assert_eq!(plans[0].run.command, "uptime");
    // Nothing to take it from on Dispatches: the error says what to do.
    app.key(KeyCode::Char('3'));
    assert!(run(&mut app, "run uptime").is_empty());
    let bar = render(&app, 300, 80);
    assert!(bar.contains("is neither a rule nor a host"), "{bar}");
}
