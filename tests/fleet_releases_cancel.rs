//! `layout = releases` (and the plain layout after `upgrade`) at its most delicate moment, through the engine against the real
//! sshd: a cancel right after `switch` (the host is never left with `current` on the new
//! release without `post` and `health` having run: a cancel request finishes them, a hard
//! cancel undoes the switch), and the console's rollback preview reading a host under
//! `host_key = accept-new` without recording its key.
//!
//! The cancel is set from the event callback, which the job thread calls synchronously: a
//! cancel "right after `StepFinished{switch}`" happens exactly there, with no timing.

mod support;

use dropship::config::{Config, Netrc, SshHosts};
use dropship::engine::events::{Event, Level, Step, TargetResult};
use dropship::engine::job::Cancel;
use dropship::plan::{Plan, Stamp};
use dropship::transport::known_hosts::KnownHostsFiles;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use support::engine::{EngineRig, OnEvent};
use support::{SshServer, TEST_PASSWORD, TEST_USER};

/// The shared engine rig, with this file's config.
struct Rig(EngineRig);

impl std::ops::Deref for Rig {
    type Target = EngineRig;
    fn deref(&self) -> &EngineRig {
        &self.0
    }
}

impl Rig {
    fn new(test: &str, server: &SshServer) -> Rig {
        Rig(EngineRig::new(test, server))
    }

    /// `post` and `health` leave a mark; `post` waits for `DEST/go` when `wait` is set
    /// (printing a line first, so the test knows it runs); `rollback` records `{release}`.
    fn config(&self, server: &SshServer, wait: bool, extra: &str) -> Config {
        self.config_with(server, wait, "releases", extra)
    }

    fn config_with(&self, server: &SshServer, wait: bool, layout: &str, extra: &str) -> Config {
        let post = if wait {
            "echo waiting; while [ ! -e {d}/go ]; do sleep 0.1; done; echo {release} > {d}/post-ran"
        } else {
            "echo {release} > {d}/post-ran"
        };
        let text = format!(
            "[app-(?P<version>[0-9.]+)\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ntimeout = 5s\ndest_dir = {d}/app\nlock_path = {d}/.lock\nlayout = {layout}\npost = {post}\nhealth = echo {{release}} > {d}/health-ran\nrollback = echo {{release}} > {d}/rolled-back\n{extra}\n",
            server.addr(),
            post = post.replace("{d}", self.dest.as_str()),
            d = self.dest.as_str()
        );
        // `{release}` is a releases placeholder; the plain layout marks the `version` capture.
        let text = if layout == "plain" {
            text.replace("{release}", "{version}")
        } else {
            text
        };
        Config::parse(&text, Path::new("cancel.cfg")).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// A real archive `app-VERSION.tgz`.
    fn bundle(&self, version: &str) -> PathBuf {
        let src = self.local.path().join(format!("src-{version}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("VERSION.txt"), version).unwrap();
        let out = self.local.path().join(format!("app-{version}.tgz"));
        let st = Command::new("tar")
            .arg("czf")
            .arg(&out)
            .arg("VERSION.txt")
            .current_dir(&src)
            .status()
            .unwrap();
        assert!(st.success());
        out
    }

    /// Dispatches `app-VERSION.tgz`, calling `on_event` on every event before it is logged.
    fn run(&self, config: &Config, version: &str, on_event: OnEvent) -> (TargetResult, Vec<Event>) {
        let bundle = self.bundle(version);
        let name = format!("app-{version}.tgz");
        let plan = Plan::build(
            config,
            &Netrc::empty(),
            &SshHosts::empty(),
            &name,
            Stamp::now(),
        )
        .unwrap();
        let (s, events) = self.dispatch(
            plan,
            &bundle,
            "test@cancel pid 1",
            Arc::new(Cancel::new()),
            on_event,
        );
        let events = events.into_iter().map(|(_, e)| e).collect();
        (s.targets[0].1.result, events)
    }

    fn current(&self) -> Option<String> {
        std::fs::read_link(self.dest.join("app/current"))
            .ok()
            .map(|p| p.to_str().unwrap().to_owned())
    }

    fn mark(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dest.join(name))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn clear_marks(&self) {
        for m in ["post-ran", "health-ran", "rolled-back", "go"] {
            let _ = std::fs::remove_file(self.dest.join(m));
        }
    }
}

fn started(events: &[Event], want: Step) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::StepStarted { step, .. } if *step == want))
}

fn switch_finished(e: &Event) -> bool {
    matches!(
        e,
        Event::StepFinished {
            step: Step::Switch,
            ..
        }
    )
}

fn nothing(_: &Event, _: &Cancel) {}

#[test]
fn a_cancel_request_right_after_the_switch_finishes_post_and_health() {
    let Some(server) = support::ssh_server_or_skip("cancel_after_switch") else {
        return;
    };
    let rig = Rig::new("cancel_after_switch", &server);
    let cfg = rig.config(&server, false, "");
    let (r, ev) = rig.run(&cfg, "1.0", Box::new(nothing));
    assert_eq!(r, TargetResult::Succeeded, "{ev:#?}");
    rig.clear_marks();

    // One Ctrl-C the moment `switch` has finished on 1.1.
    let (r, ev) = rig.run(
        &cfg,
        "1.1",
        Box::new(|e, c| {
            if switch_finished(e) {
                c.requested.store(true, Ordering::SeqCst);
            }
        }),
    );
    assert_eq!(r, TargetResult::Succeeded, "{ev:#?}");
    assert_eq!(rig.current().as_deref(), Some("releases/1.1"));
    assert_eq!(rig.mark("post-ran").as_deref(), Some("1.1"), "post ran");
    assert_eq!(rig.mark("health-ran").as_deref(), Some("1.1"), "health ran");
    assert_eq!(rig.mark("rolled-back"), None, "nothing to undo");
    assert!(!started(&ev, Step::Prune), "no new work after the cancel");
    assert!(
        ev.iter().any(
            |e| matches!(e, Event::Notice { level: Level::Warning, message, .. }
            if message.contains("finishing `post` and `health`"))
        ),
        "the operator is told why the host goes on: {ev:#?}"
    );
}

#[test]
fn a_hard_cancel_after_the_switch_switches_back_and_runs_rollback() {
    let Some(server) = support::ssh_server_or_skip("hard_cancel_after_switch") else {
        return;
    };
    let rig = Rig::new("hard_cancel_after_switch", &server);
    let cfg = rig.config(&server, true, "");
    std::fs::write(rig.dest.join("go"), "").unwrap();
    let (r, ev) = rig.run(&cfg, "1.0", Box::new(nothing));
    assert_eq!(r, TargetResult::Succeeded, "{ev:#?}");
    rig.clear_marks();

    // "Stop now" the moment `switch` has finished: `post` does not even start.
    let (r, ev) = rig.run(
        &cfg,
        "1.1",
        Box::new(|e, c| {
            if switch_finished(e) {
                c.requested.store(true, Ordering::SeqCst);
                c.hard.store(true, Ordering::SeqCst);
            }
        }),
    );
    assert_eq!(r, TargetResult::Cancelled, "{ev:#?}");
    assert_eq!(
        rig.current().as_deref(),
        Some("releases/1.0"),
        "switched back"
    );
    assert!(!started(&ev, Step::Post));
    assert_eq!(rig.mark("post-ran"), None);
    assert_eq!(rig.mark("health-ran"), None);
    assert!(rig.mark("rolled-back").is_some(), "rollback ran: {ev:#?}");
    rig.clear_marks();

    // A cancel request after the switch, then the grace period running out while `post`
    // still waits (it printed its first line): `post` is stopped, the switch undone.
    let (r, ev) = rig.run(
        &cfg,
        "1.2",
        Box::new(|e, c| {
            if switch_finished(e) {
                c.requested.store(true, Ordering::SeqCst);
            }
            if matches!(e, Event::Output { step: Step::Post, lines, .. } if lines.iter().any(|l| l == "waiting")) {
                c.hard.store(true, Ordering::SeqCst);
            }
        }),
    );
    assert_eq!(r, TargetResult::Cancelled, "{ev:#?}");
    assert!(started(&ev, Step::Post), "post started despite the request");
    assert_eq!(
        rig.current().as_deref(),
        Some("releases/1.0"),
        "switched back"
    );
    assert_eq!(rig.mark("post-ran"), None, "post was stopped");
    assert_eq!(rig.mark("health-ran"), None);
    assert!(rig.mark("rolled-back").is_some(), "rollback ran: {ev:#?}");
}

#[test]
fn the_rollback_preview_reads_a_host_without_recording_its_key() {
    let Some(server) = support::ssh_server_or_skip("peek_unrecorded") else {
        return;
    };
    let rig = Rig::new("peek_unrecorded", &server);
    std::fs::write(rig.dest.join("go"), "").unwrap();
    let cfg = rig.config(&server, false, "");
    for v in ["1.0", "1.1"] {
        let (r, ev) = rig.run(&cfg, v, Box::new(nothing));
        assert_eq!(r, TargetResult::Succeeded, "{ev:#?}");
    }
    // Now as a console would on a machine that never saw this host: no user known_hosts,
    // an empty dropship one, `host_key = accept-new`.
    let cfg = rig.config(&server, false, "host_key = accept-new");
    let plan = Plan::build(
        &cfg,
        &Netrc::empty(),
        &SshHosts::empty(),
        "app-1.1.tgz",
        Stamp::now(),
    )
    .unwrap();
    let dropship_file = rig.local.path().join("fresh_known_hosts");
    std::fs::write(&dropship_file, "").unwrap();
    let fresh = KnownHostsFiles {
        user: None,
        dropship: dropship_file.clone(),
    };
    let state = dropship::fleet::releases::peek(&plan.targets[0], &plan.rule, &fresh).unwrap();
    assert_eq!(state.current.as_deref(), Some("1.1"));
    assert_eq!(state.previous(), Some("1.0"));
    assert_eq!(
        std::fs::read_to_string(&dropship_file).unwrap(),
        "",
        "a look before the user confirmed records no host key"
    );
    // The same connect as a dispatch does record it: the test above is not vacuous.
    let conn = dropship::engine::connect::connect(&plan.targets[0], &plan.rule, &fresh);
    assert!(conn.is_ok());
    assert!(!std::fs::read_to_string(&dropship_file).unwrap().is_empty());
}

/// The plain layout has the same moment: once `upgrade` ran, the host is changed, and a
/// cancel request finishes `post` and `health` instead of leaving it un-restarted; a hard
/// cancel stops them and runs `rollback`.
#[test]
fn a_cancel_right_after_a_plain_upgrade_finishes_the_host_or_rolls_it_back() {
    let Some(server) = support::ssh_server_or_skip("cancel_after_upgrade") else {
        return;
    };
    let rig = Rig::new("cancel_after_upgrade", &server);
    let cfg = rig.config_with(&server, false, "plain", "upgrade = echo upgraded");
    let upgrade_finished = |e: &Event| {
        matches!(
            e,
            Event::StepFinished {
                step: Step::Upgrade,
                ..
            }
        )
    };
    let (r, ev) = rig.run(
        &cfg,
        "2.0",
        Box::new(move |e, c| {
            if upgrade_finished(e) {
                c.requested.store(true, Ordering::SeqCst);
            }
        }),
    );
    assert_eq!(r, TargetResult::Succeeded, "{ev:#?}");
    assert!(rig.mark("post-ran").is_some(), "post ran: {ev:#?}");
    assert!(rig.mark("health-ran").is_some(), "health ran");
    assert_eq!(rig.mark("rolled-back"), None, "nothing to undo");
    assert!(
        ev.iter().any(
            |e| matches!(e, Event::Notice { level: Level::Warning, message, .. }
            if message.contains("after `upgrade` ran"))
        ),
        "the operator is told why the host goes on: {ev:#?}"
    );
    rig.clear_marks();

    // "Stop now" right after the upgrade: `post` does not start, `rollback` runs.
    let (r, ev) = rig.run(
        &cfg,
        "2.1",
        Box::new(move |e, c| {
            if upgrade_finished(e) {
                c.requested.store(true, Ordering::SeqCst);
                c.hard.store(true, Ordering::SeqCst);
            }
        }),
    );
    assert_eq!(r, TargetResult::Cancelled, "{ev:#?}");
    assert!(!started(&ev, Step::Post));
    assert_eq!(rig.mark("post-ran"), None);
    assert!(rig.mark("rolled-back").is_some(), "rollback ran: {ev:#?}");
    rig.clear_marks();

    // A cancel before the upgrade started changes nothing: no upgrade, no rollback.
    let (r, ev) = rig.run(
        &cfg,
        "2.2",
        Box::new(|e, c| {
            if matches!(
                e,
                Event::StepFinished {
                    step: Step::Upload,
                    ..
                }
            ) {
                c.requested.store(true, Ordering::SeqCst);
            }
        }),
    );
    assert_eq!(r, TargetResult::Cancelled, "{ev:#?}");
    assert!(!started(&ev, Step::Upgrade) && !started(&ev, Step::Post));
    assert_eq!(rig.mark("rolled-back"), None, "nothing to undo: {ev:#?}");
}
