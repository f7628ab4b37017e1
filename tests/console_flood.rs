//! The console and the drop folder flooded at once: a bundle dropped into a watched folder
//! whose upgrade prints 300,000 lines, while the console's side (this test, holding the
//! receiving end of the console's channel) does not read for a while, then pauses, resumes
//! and stops the watcher and quits. Nothing may wait on anything in a circle: every control
//! call returns at once, the flood is shed from the screen (counted), the journal keeps every
//! line, and the watcher ends. `protocol = local`: no server, no root.

use dropship::config::{Config, Netrc, SshHosts};
use dropship::engine::job::Cancel;
use dropship::journal::Journal;
use dropship::transport::known_hosts::KnownHostsFiles;
use dropship::ui::tui::engine::{Bridge, CHANNEL, Msg};
use dropship::watch::{Setup, WatchOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LINES: u64 = 300_000;

#[test]
fn a_flooded_console_and_watcher_never_wait_on_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("drop");
    std::fs::create_dir(&dir).unwrap();
    let dest = tmp.path().join("dest");
    let cfg_path = tmp.path().join("dispatch.cfg");
    std::fs::write(
        &cfg_path,
        format!(
            "[app-.*\\.tgz]\nhost = localhost\nprotocol = local\ndest_dir = {}\nupgrade = seq 1 {LINES}\n",
            dest.display()
        ),
    )
    .unwrap();
    let config = Config::load(&cfg_path).unwrap();
    let journal = Arc::new(Journal::open(&tmp.path().join("journal.sqlite")).unwrap());
    let kh = KnownHostsFiles {
        user: None,
        dropship: tmp.path().join("known_hosts"),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
    let bridge = Bridge::new(tx, journal.clone(), kh.clone(), cfg_path.clone()).unwrap();
    let mut opts = WatchOptions::new(dir.clone());
    opts.settle = Duration::from_millis(200);
    opts.rescan = Duration::from_millis(500);
    let cancel = Arc::new(Cancel::new());
    let setup = Setup {
        config: Arc::new(config),
        netrc: Arc::new(Netrc::empty()),
        ssh: Arc::new(SshHosts::empty()),
        known_hosts: kh,
        journal: journal.clone(),
        connector: dropship::engine::connect::real(),
        finished: bridge.finished_subscriber(),
    };
    let running = bridge.start_watch(opts, setup, cancel.clone()).unwrap();
    std::fs::write(dir.join("app-1.tgz"), vec![1u8; 1000]).unwrap();

    // The console is busy: nothing is read while the dispatch floods the channel.
    let full = Instant::now() + Duration::from_secs(30);
    while bridge.shed() == 0 && Instant::now() < full {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        bridge.shed() > 0,
        "the flood never filled the console's channel"
    );

    // Still not reading: every control call returns at once.
    let h = running.handle.clone();
    let t = Instant::now();
    h.pause();
    h.resume();
    h.pause();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "pause/resume waited {:?} on a flooded watcher",
        t.elapsed()
    );

    // Now read, and quit: stop taking files, let the running dispatch finish.
    let mut ended = false;
    let mut lines_seen = 0u64;
    let quit = Instant::now() + Duration::from_secs(60);
    h.stop();
    while Instant::now() < quit {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Msg::Engine(dropship::engine::events::Event::Output { .. })) => lines_seen += 1,
            Ok(_) => {}
            Err(_) => {}
        }
        if running.thread.is_finished() && bridge.running() == 0 {
            ended = true;
            break;
        }
    }
    assert!(ended, "the watcher did not end after stop");
    let report = running.thread.join().unwrap().unwrap();
    assert_eq!(report.left_open, 0, "{report:?}");
    assert!(!cancel.is_hard());
    let shed = bridge.shed();
    bridge.shutdown(Duration::from_secs(2));
    // Every line is in the journal; what the screen lost is counted.
    let id = journal.history(1).unwrap()[0].id;
    let detail = journal.dispatch(id).unwrap().unwrap();
    let stored: u64 = detail.targets[0]
        .steps
        .iter()
        .map(|s| s.lines + s.dropped_lines)
        .sum();
    assert!(
        stored >= LINES,
        "journal holds {stored} of {LINES} lines (shed from the screen: {shed}, seen: {lines_seen})"
    );
}
