//! Shared fixtures of the console tests: a config, an app with a pinned clock and stamp,
//! engine events of a running and a finished dispatch, and rendering to a `TestBackend`.

#![allow(dead_code)]

use dropship::config::Config;
use dropship::engine::events::{Event, Level, Step, StepOutcome, TargetResult};
use dropship::plan::Stamp;
use dropship::transport::{Stream, TransferEvent};
use dropship::ui::tui::app::{App, AppEnv};
use dropship::ui::tui::render;
use dropship::ui::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::path::{Path, PathBuf};

/// 2026-01-01 12:00:00 UTC.
pub const T0: i64 = 1_767_268_800_000;

pub const CONFIG: &str = r#"
[app-(?P<version>\d+\.\d+\.\d+)\.tgz]
host = web1, web2, web3
protocol = local
dest_dir = /tmp/dropship-tui-test/{host}/releases/{version}
upgrade = tar xzf {path} && echo unpacked {bundle} on {host}
rollback = echo rolling back
canary = 1

[db-(?P<version>[0-9.]+)\.tar\.gz]
host = db1.example.com:2222 db2.example.com web1
protocol = sftp
login = deploy
password = not-shown-anywhere
dest_dir = releases/{version}
pre = ~/bin/check-space
upgrade = ~/bin/upgrade {path}
health = curl -fsS http://localhost:8080/health
"#;

pub fn config() -> Config {
    Config::parse(CONFIG, Path::new("dispatch.cfg")).expect("fixture config parses")
}

pub fn env() -> AppEnv {
    let mut env = AppEnv::new(config());
    env.stamp = Stamp::parse("20260101_120000");
    env
}

pub fn app() -> App {
    app_with(env())
}

pub fn app_with(env: AppEnv) -> App {
    let mut app = App::new(env, Theme::builtin_default());
    app.now = T0 + 42_000;
    app
}

pub fn render(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    t.draw(|f| render::draw(f, app)).expect("draw");
    t.backend().to_string()
}

pub fn terminal(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    t.draw(|f| render::draw(f, app)).expect("draw");
    t
}

pub fn out(id: i64, host: &str, at: i64, stream: Stream, line: &str) -> Event {
    Event::Output {
        dispatch: id,
        at,
        host: host.into(),
        step: Step::Upgrade,
        stream,
        lines: line.into(),
    }
}

pub fn started(id: i64, bundle: &str, hosts: &[&str]) -> Event {
    Event::DispatchStarted {
        dispatch: id,
        at: T0,
        bundle: bundle.into(),
        rule: r"app-(?P<version>\d+\.\d+\.\d+)\.tgz".into(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
    }
}

pub fn step(id: i64, host: &str, at: i64, step: Step) -> Event {
    Event::StepStarted {
        dispatch: id,
        at,
        host: host.into(),
        step,
        command: None,
    }
}

pub fn target_done(
    id: i64,
    host: &str,
    at: i64,
    result: TargetResult,
    failed: Option<Step>,
) -> Event {
    Event::TargetFinished {
        dispatch: id,
        at,
        host: host.into(),
        result,
        failed_step: failed,
        error: failed.map(|s| format!("{s} exited with status 2")),
        duration_ms: at - T0,
    }
}

/// Dispatch 7 of app-1.4.2.tgz: web1 upgrading with output, web2 uploading at 40%, web3
/// waiting.
pub fn running(app: &mut App) {
    let id = 7;
    let evs = vec![
        started(id, "app-1.4.2.tgz", &["web1", "web2", "web3"]),
        step(id, "web1", T0 + 1_000, Step::Connect),
        step(id, "web1", T0 + 2_000, Step::Upload),
        Event::Transfer {
            dispatch: id,
            at: T0 + 3_000,
            host: "web1".into(),
            transfer: TransferEvent::Verified {
                size: 1_000_000,
                sha256: None,
                by: dropship::transport::VerifiedBy::SizeOnly,
            },
        },
        Event::StepStarted {
            dispatch: id,
            at: T0 + 4_000,
            host: "web1".into(),
            step: Step::Upgrade,
            command: Some("tar xzf releases/1.4.2/app-1.4.2.tgz && ./upgrade.sh".into()),
        },
        out(
            id,
            "web1",
            T0 + 5_000,
            Stream::Stdout,
            "stopping app.service",
        ),
        out(
            id,
            "web1",
            T0 + 5_100,
            Stream::Stdout,
            "unpacking app-1.4.2.tgz into releases/1.4.2",
        ),
        out(
            id,
            "web1",
            T0 + 5_200,
            Stream::Stderr,
            "warning: config key `pool` is deprecated",
        ),
        out(
            id,
            "web1",
            T0 + 5_300,
            Stream::Stdout,
            "migrating database: 3 migrations",
        ),
        out(
            id,
            "web1",
            T0 + 5_400,
            Stream::Stdout,
            "starting app.service",
        ),
        step(id, "web2", T0 + 6_000, Step::Upload),
        Event::Transfer {
            dispatch: id,
            at: T0 + 7_000,
            host: "web2".into(),
            transfer: TransferEvent::Progress {
                sent: 400_000,
                total: 1_000_000,
                rate: 2e6,
                eta_secs: Some(0.3),
            },
        },
    ];
    for e in &evs {
        app.on_event(e);
    }
}

/// Dispatch 6 of app-1.4.1.tgz, finished: web1 ok, web2 failed at upgrade (rolled back),
/// web3 skipped.
pub fn finished(app: &mut App) {
    let id = 6;
    let mut evs = vec![started(id, "app-1.4.1.tgz", &["web1", "web2", "web3"])];
    for (h, r, f) in [
        ("web1", TargetResult::Succeeded, None),
        ("web2", TargetResult::Failed, Some(Step::Upgrade)),
        ("web3", TargetResult::Skipped, None),
    ] {
        evs.push(step(id, h, T0 + 1_000, Step::Upgrade));
        evs.push(out(
            id,
            h,
            T0 + 2_000,
            Stream::Stdout,
            &format!("upgrading {h}"),
        ));
        if f.is_some() {
            evs.push(out(
                id,
                h,
                T0 + 2_500,
                Stream::Stderr,
                "tar: unexpected end of file",
            ));
            evs.push(Event::StepFinished {
                dispatch: id,
                at: T0 + 3_000,
                host: h.into(),
                step: Step::Upgrade,
                outcome: StepOutcome::Failed,
                exit_code: Some(2),
                error: Some("upgrade exited with status 2".into()),
                duration_ms: 2_000,
            });
        }
        evs.push(target_done(id, h, T0 + 9_000, r, f));
    }
    evs.push(Event::Notice {
        dispatch: id,
        at: T0 + 9_000,
        host: None,
        level: Level::Warning,
        message: "max_fail reached: web3 skipped".into(),
    });
    evs.push(Event::DispatchFinished {
        dispatch: id,
        at: T0 + 10_000,
        succeeded: 1,
        failed: 1,
        skipped: 1,
        cancelled: 0,
        duration_ms: 10_000,
    });
    for e in &evs {
        app.on_event(e);
    }
}

/// A bundle file named `name` in `dir`.
pub fn bundle(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, b"not really a tarball").expect("write bundle");
    p
}

/// A config with a `layout = releases` rule and `version_cmd`s, for the fleet views.
pub const FLEET_CONFIG: &str = r#"
[shop-(?P<version>[0-9.]+)\.tgz]
host = web1, web2
protocol = sftp
login = deploy
password = not-shown-anywhere
dest_dir = /srv/shop
layout = releases
rollback = systemctl restart shop
version_cmd = cat /srv/shop/current/.version

[db-(?P<version>[0-9.]+)\.tar\.gz]
host = db1, web1
protocol = scp
login = deploy
dest_dir = /srv/db
upgrade = ~/bin/upgrade {path}
version_cmd = cat /srv/db/.version
"#;

pub fn fleet_app() -> App {
    let mut env = AppEnv::new(
        Config::parse(FLEET_CONFIG, Path::new("dispatch.cfg")).expect("fleet config parses"),
    );
    env.stamp = Stamp::parse("20260101_120000");
    app_with(env)
}

pub fn check(
    kind: dropship::fleet::probe::CheckKind,
    status: dropship::fleet::probe::Status,
    detail: &str,
) -> dropship::fleet::probe::Check {
    dropship::fleet::probe::Check {
        kind,
        status,
        detail: detail.into(),
        hint: None,
        notes: Vec::new(),
    }
}

/// A probe of `host` in the shop rule: all fine but a held lock, or failing at login.
pub fn host_probe(host: &str, login_ok: bool) -> dropship::fleet::probe::HostProbe {
    use dropship::fleet::probe::{CheckKind as K, LockInfo, Status as S};
    let mut checks = vec![
        check(K::Reachable, S::Pass, "127.0.0.1:22 SSH-2.0-OpenSSH_9.2"),
        check(K::HostKey, S::Pass, "ssh-ed25519 key on record"),
    ];
    if login_ok {
        checks.extend([
            check(
                K::Login,
                S::Pass,
                "deploy (dispatch.cfg), password from dispatch.cfg",
            ),
            check(K::DestDir, S::Pass, "/srv/shop writable"),
            check(K::Programs, S::Pass, "systemctl"),
            check(
                K::Lock,
                S::Warn,
                "held by alice@build1 for 5m (shop-1.3.tgz)",
            ),
            check(K::Version, S::Pass, "1.2"),
        ]);
    } else {
        let mut c = check(
            K::Login,
            S::Fail,
            "ssh login refused for deploy (password from dispatch.cfg)",
        );
        c.hint = Some("check the password in dispatch.cfg or ~/.netrc".into());
        checks.push(c);
        for k in [K::DestDir, K::Programs, K::Lock, K::Version] {
            checks.push(check(k, S::Skip, "login failed"));
        }
    }
    dropship::fleet::probe::HostProbe {
        rule: r"shop-(?P<version>[0-9.]+)\.tgz".into(),
        package: "shop".into(),
        host: host.into(),
        address: host.into(),
        port: Some(22),
        protocol: dropship::config::Protocol::Sftp,
        login: "deploy (dispatch.cfg)".into(),
        version: login_ok.then(|| "1.2".to_owned()),
        lock: login_ok.then(|| LockInfo {
            path: "/srv/shop/.dropship.lock".into(),
            holder: "alice@build1".into(),
            bundle: "shop-1.3.tgz".into(),
            age_secs: 300,
            beat_secs: Some(20),
        }),
        missing: Vec::new(),
        duration_ms: 84,
        checks,
    }
}

/// A Versions matrix: web1 behind on shop, db1 unreachable.
pub fn status_report() -> dropship::fleet::version::StatusReport {
    use dropship::fleet::version::{Cell, Drift, Installed, Shipped, StatusReport};
    let shop = r"shop-(?P<version>[0-9.]+)\.tgz";
    let db = r"db-(?P<version>[0-9.]+)\.tar\.gz";
    let shipped = |v: &str| {
        Some(Shipped {
            dispatch: 4,
            bundle: format!("shop-{v}.tgz"),
            version: v.into(),
            finished_at: Some(T0),
        })
    };
    StatusReport {
        cells: vec![
            Cell {
                rule: shop.into(),
                package: "shop".into(),
                host: "web1".into(),
                installed: Installed::Version {
                    version: "1.2".into(),
                },
                shipped: shipped("1.3"),
                drift: vec![Drift::Behind, Drift::Mixed],
            },
            Cell {
                rule: shop.into(),
                package: "shop".into(),
                host: "web2".into(),
                installed: Installed::Version {
                    version: "1.3".into(),
                },
                shipped: shipped("1.3"),
                drift: vec![Drift::Mixed],
            },
            Cell {
                rule: db.into(),
                package: "db".into(),
                host: "db1".into(),
                installed: Installed::Unreachable {
                    error: "cannot connect to db1:22: connection refused".into(),
                },
                shipped: None,
                drift: Vec::new(),
            },
            Cell {
                rule: db.into(),
                package: "db".into(),
                host: "web1".into(),
                installed: Installed::Version {
                    version: "2.0.1".into(),
                },
                shipped: None,
                drift: Vec::new(),
            },
        ],
        without_version_cmd: Vec::new(),
    }
}

/// Reachability answers: web1 up, db1 down, web2 still being asked.
pub fn reach_some(app: &mut App) {
    use dropship::fleet::probe::{Reach, Reachability};
    app.start_reach();
    let shop = r"shop-(?P<version>[0-9.]+)\.tgz";
    let db = r"db-(?P<version>[0-9.]+)\.tar\.gz";
    for (host, rule, reach) in [
        (
            "web1",
            shop,
            Reach::Up {
                greeting: "SSH-2.0-OpenSSH_9.2".into(),
                millis: 3,
            },
        ),
        (
            "web1",
            db,
            Reach::Up {
                greeting: "SSH-2.0-OpenSSH_9.2".into(),
                millis: 4,
            },
        ),
        (
            "db1",
            db,
            Reach::Down {
                error: "cannot connect to db1:22: connection refused".into(),
            },
        ),
    ] {
        app.on_reach(
            host,
            &Reachability {
                rule: rule.into(),
                host: host.into(),
                address: host.into(),
                port: Some(22),
                reach,
            },
        );
    }
}

/// An app watching `/drop` (`--tui --watch /drop`) with nothing in it yet.
pub fn watch_app() -> App {
    let mut app = app();
    app.set_watch(dropship::ui::tui::watch_view::WatchView::new(
        PathBuf::from("/drop"),
        &[],
    ));
    app.on_watch(&dropship::watch::WatchEvent::WatchStarted {
        at: T0,
        dir: PathBuf::from("/drop"),
        settle_ms: 2_000,
        rescan_ms: 10_000,
        marker: Some("done".into()),
        max_dispatches: 4,
        queue_limit: 256,
        fs_events: true,
        recovered: 0,
    });
    app
}

/// The folder's bundles in every state, oldest first: one done (dispatch 3), one failed
/// (4), one unmatched, a duplicate, one dispatching (5, with its live dispatch), one
/// queued, one awaiting its marker, one still being written, one just seen.
pub fn watch_states(app: &mut App) {
    use dropship::journal::BundleState;
    use dropship::watch::WatchEvent as W;
    let queued = |at: i64, bundle: i64, name: &str, rule: Option<&str>| W::BundleQueued {
        at,
        bundle,
        name: name.into(),
        size: 4096,
        sha256: "ab".repeat(32),
        rule: rule.map(str::to_owned),
        hosts: if rule.is_some() {
            vec!["web1".into(), "web2".into(), "web3".into()]
        } else {
            Vec::new()
        },
    };
    let rule = Some(r"app-(?P<version>\d+\.\d+\.\d+)\.tgz");
    let finished = |at: i64,
                    bundle: i64,
                    name: &str,
                    state: BundleState,
                    dispatch: Option<i64>,
                    reason: Option<&str>| W::BundleFinished {
        at,
        bundle,
        name: name.into(),
        state,
        dispatch,
        moved_to: None,
        reason: reason.map(str::to_owned),
    };
    let dispatching = |at: i64, bundle: i64, name: &str, dispatch: i64| W::BundleDispatching {
        at,
        bundle,
        name: name.into(),
        dispatch,
        resumed: false,
    };
    let evs = vec![
        queued(T0 - 600_000, 1, "app-1.4.0.tgz", rule),
        dispatching(T0 - 599_000, 1, "app-1.4.0.tgz", 3),
        finished(
            T0 - 590_000,
            1,
            "app-1.4.0.tgz",
            BundleState::Done,
            Some(3),
            None,
        ),
        queued(T0 - 300_000, 2, "app-1.4.1.tgz", rule),
        dispatching(T0 - 299_000, 2, "app-1.4.1.tgz", 4),
        finished(
            T0 - 290_000,
            2,
            "app-1.4.1.tgz",
            BundleState::Failed,
            Some(4),
            Some("web2: upgrade exited with status 2\ncheck web2, then dropship --resume 4"),
        ),
        W::BundleSeen {
            at: T0 - 120_000,
            name: "notes.txt".into(),
            size: 12,
        },
        queued(T0 - 119_000, 3, "notes.txt", None),
        finished(
            T0 - 119_000,
            3,
            "notes.txt",
            BundleState::Unmatched,
            None,
            Some("no rule of dispatch.cfg matches notes.txt"),
        ),
        queued(T0 - 60_000, 4, "app-1.4.0.tgz", rule),
        finished(
            T0 - 60_000,
            4,
            "app-1.4.0.tgz",
            BundleState::Duplicate,
            None,
            Some("app-1.4.0.tgz with this very content was already shipped (dispatch #3)"),
        ),
        queued(T0 - 10_000, 5, "app-1.4.2.tgz", rule),
        dispatching(T0 - 9_000, 5, "app-1.4.2.tgz", 7),
        queued(T0 - 5_000, 6, "app-1.4.3.tgz", rule),
        W::BundleAwaitingMarker {
            at: T0 - 3_000,
            name: "app-1.4.4.tgz".into(),
            marker: "app-1.4.4.tgz.done".into(),
        },
        W::BundleSeen {
            at: T0 - 2_000,
            name: "app-1.5.0.tgz".into(),
            size: 1 << 20,
        },
        W::BundleWriting {
            at: T0,
            name: "app-1.5.0.tgz".into(),
            size: 3 << 20,
            since: T0 - 2_000,
        },
        W::BundleSeen {
            at: T0 + 1_000,
            name: "app-2.0.0.tgz".into(),
            size: 100,
        },
    ];
    for e in &evs {
        app.on_watch(e);
    }
    running(app);
}
