//! The drop folder in the fast tier: the real watcher (its folder, its journal, its rules)
//! shipping to scripted in-process hosts (`support::fake`, through `Setup::connector`), so
//! what it does with a host that fails, hangs or is cancelled is seen in seconds, without
//! servers or root. The live tests (tests/watch_live.rs) keep the real servers.

mod support;

use dropship::config::{Config, Netrc, SshHosts};
use dropship::engine::job::Cancel;
use dropship::journal::Journal;
use dropship::transport::known_hosts::KnownHostsFiles;
use dropship::watch::{Setup, WatchEmit, WatchEvent, WatchOptions, WatchReport};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::fake::{Answer, Fleet, Op};

struct Folder {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    journal: Arc<Journal>,
    config: Config,
}

fn folder(extra: &str) -> Folder {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("drop");
    std::fs::create_dir(&dir).unwrap();
    let text = format!(
        "[app-.*\\.tgz]\nhost = web1\nprotocol = sftp\nlogin = deploy\npassword = secret\ntimeout = 2s\nretries = 0\nstep_timeout = 300ms\nlock_wait = 300ms\ndest_dir = /srv/app\nupgrade = run-upgrade\n{extra}\n"
    );
    let config = Config::parse(&text, Path::new("fast.cfg")).unwrap();
    let journal = Arc::new(Journal::open(&tmp.path().join("journal.sqlite")).unwrap());
    Folder {
        dir,
        journal,
        config,
        _tmp: tmp,
    }
}

/// Watches `f` with `fleet`'s hosts, drops `name`, and waits until the watcher has
/// finished with it (done, failed, or suspended by a cancel); then stops. The watcher's events, and its report.
fn ship(
    f: &Folder,
    fleet: &Fleet,
    name: &str,
    cancel: Arc<Cancel>,
) -> (Vec<WatchEvent>, WatchReport) {
    ship_to(f, fleet, name, cancel, Arc::new(|_, _| {}))
}

/// [`ship`], telling `finished` of each dispatch the watcher finishes.
fn ship_to(
    f: &Folder,
    fleet: &Fleet,
    name: &str,
    cancel: Arc<Cancel>,
    finished: dropship::watch::Finished,
) -> (Vec<WatchEvent>, WatchReport) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen: Arc<Mutex<Vec<WatchEvent>>> = Arc::default();
    let s = seen.clone();
    let wemit: WatchEmit = Arc::new(move |e| s.lock().unwrap().push(e));
    let journal = f.journal.clone();
    let events: dropship::watch::EventSink = Arc::new(move |e| {
        let _ = journal.record(&e);
    });
    let mut opts = WatchOptions::new(f.dir.clone());
    opts.settle = Duration::from_millis(50);
    opts.rescan = Duration::from_millis(100);
    opts.fs_events = false;
    let setup = Setup {
        config: Arc::new(f.config.clone()),
        netrc: Arc::new(Netrc::empty()),
        ssh: Arc::new(SshHosts::empty()),
        known_hosts: KnownHostsFiles {
            user: None,
            dropship: f.dir.join("kh"),
        },
        journal: f.journal.clone(),
        connector: fleet.connector(),
        finished,
    };
    let running = dropship::watch::start(
        opts,
        setup,
        rt.handle().clone(),
        cancel,
        events,
        Arc::default(),
        wemit,
    )
    .unwrap();
    std::fs::write(f.dir.join(name), vec![7u8; 4096]).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let finished = |e: &WatchEvent| {
        matches!(
            e,
            WatchEvent::BundleFinished { .. } | WatchEvent::BundleSuspended { .. }
        )
    };
    while Instant::now() < end && !seen.lock().unwrap().iter().any(finished) {
        std::thread::sleep(Duration::from_millis(20));
    }
    running.handle.stop();
    let report = running.thread.join().unwrap().unwrap();
    rt.shutdown_timeout(Duration::from_secs(1));
    let events = seen.lock().unwrap().clone();
    (events, report)
}

#[test]
fn a_bundle_shipped_cleanly_is_done_and_its_subscribers_hear_of_it() {
    let f = folder("");
    let fleet = Fleet::new(&["web1"]);
    let heard: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let h = heard.clone();
    let finished: dropship::watch::Finished = Arc::new(move |s, _| {
        h.lock()
            .unwrap()
            .push((s.bundle.clone(), s.all_succeeded()));
    });
    let (events, report) = ship_to(&f, &fleet, "app-1.tgz", Arc::new(Cancel::new()), finished);
    assert_eq!((report.done, report.failed), (1, 0), "{events:?}");
    assert!(fleet.host("web1").file("/srv/app/app-1.tgz").is_some());
    assert_eq!(*heard.lock().unwrap(), [("app-1.tgz".to_owned(), true)]);
}

#[test]
fn a_failing_upgrade_fails_the_bundle_with_the_step_named() {
    let f = folder("");
    let fleet = Fleet::new(&["web1"]);
    fleet
        .host("web1")
        .always(Op::exec("run-upgrade"), Answer::Exit(3));
    let (events, report) = ship(&f, &fleet, "app-1.tgz", Arc::new(Cancel::new()));
    assert_eq!((report.done, report.failed), (0, 1), "{events:?}");
    let reason = events
        .iter()
        .find_map(|e| match e {
            WatchEvent::BundleFinished { reason, .. } => reason.clone(),
            _ => None,
        })
        .unwrap_or_default();
    assert!(reason.contains("upgrade"), "{reason}\n{events:?}");
}

#[test]
fn a_hanging_upgrade_ends_at_step_timeout_and_fails_the_bundle() {
    let f = folder("");
    let fleet = Fleet::new(&["web1"]);
    fleet
        .host("web1")
        .always(Op::exec("run-upgrade"), Answer::Hang);
    let started = Instant::now();
    let (events, report) = ship(&f, &fleet, "app-1.tgz", Arc::new(Cancel::new()));
    assert_eq!((report.done, report.failed), (0, 1), "{events:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_host_that_cannot_be_reached_fails_the_bundle() {
    let f = folder("");
    let fleet = Fleet::new(&["web1"]);
    fleet
        .host("web1")
        .always(Op::Connect, Answer::Fail("connection refused".into()));
    let (events, report) = ship(&f, &fleet, "app-1.tgz", Arc::new(Cancel::new()));
    assert_eq!((report.done, report.failed), (0, 1), "{events:?}");
}

#[test]
fn a_cancel_during_a_hanging_upgrade_leaves_the_bundle_for_the_next_start() {
    let f = folder("");
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.always(Op::exec("run-upgrade"), Answer::Hang);
    let cancel = Arc::new(Cancel::new());
    let c = cancel.clone();
    host.on_hang(move || {
        c.requested.store(true, std::sync::atomic::Ordering::SeqCst);
        c.hard.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let (events, report) = ship(&f, &fleet, "app-1.tgz", cancel);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, WatchEvent::BundleSuspended { .. })),
        "{events:?}"
    );
    assert_eq!((report.done, report.failed), (0, 0), "{report:?}");
}
