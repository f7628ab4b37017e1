//! Everyone's dispatches, live: the real console (tmux) on a shared journal, and a second
//! process's headless `--dispatch` on the same journal showing up in it as it happens, with
//! who started it from where, its output lines and its end; the console cannot cancel it.
//! On PostgreSQL the second process is another user on "another machine" (its own UTS
//! namespace named build-3, as in journal_pg_cli); on SQLite it is a second process with
//! its own HOME sharing one journal file.

mod support;

use std::path::Path;
use support::home::{Home, text};
use support::tmux::{Tmux, sh_quote};
use support::{Need, postgres::PG_USER};

/// A `protocol = local` rule on two hosts whose upgrade prints a line every 0.4 s.
fn config(home: &Home, journal_line: &str) {
    let dest = home.path("dest");
    home.write(
        "dispatch.cfg",
        format!(
            "[DEFAULT]\n{journal_line}\n[app-.*\\.tgz]\nhost = h1, h2\nprotocol = local\n\
             dest_dir = {}/{{host}}\n\
             upgrade = for i in 1 2 3 4 5 6; do echo {{host}} live line $i; sleep 0.4; done\n",
            dest.display()
        ),
    );
    home.write("app-2.0.tgz", "bundle bytes, two");
}

/// The console of `home` in a 160x40 tmux terminal, with `env` set.
fn console(test: &str, home: &Home, env: &str) -> Tmux {
    let cmd = format!(
        "env -u DROPSHIP_CONFIG -u DROPSHIP_JOURNAL -u NETRC -u SSH_AUTH_SOCK -u DROPSHIP_THEME NO_COLOR=1 HOME={h} XDG_STATE_HOME={h}/state XDG_CONFIG_HOME={h}/.config XDG_DATA_HOME={h}/data {env} {bin} --config dispatch.cfg; echo EXITED $?; sleep 30",
        h = sh_quote(home.root()),
        bin = sh_quote(Path::new(env!("CARGO_BIN_EXE_dropship"))),
    );
    let cmd = format!("cd {} && {cmd}", sh_quote(home.root()));
    Tmux::start(test, &cmd, 160, 40)
}

/// What the console must show of the other process's dispatch `by`: the row with its BY
/// cell, the live lines of h1 while it runs, then its end; and `c` on it is refused.
fn watch_it_live(tmux: &Tmux, by: &str, mut other: std::process::Child) {
    let running = tmux.wait_for(&[by, "1 running elsewhere", "app-2.0.tgz"], 30);
    assert!(running.contains(" BY "), "the BY column:\n{running}");
    // The targets pane's title names it too (cut to the pane's width here).
    let title = running
        .lines()
        .find(|l| l.contains("Targets #"))
        .unwrap_or_default();
    assert!(title.contains("· by "), "the targets pane:\n{running}");
    // Its output while it runs (the dispatch is selected: the console had none before).
    let live = tmux.wait_for(&["h1 live line 2"], 20);
    assert!(
        !live.contains("h1 live line 6"),
        "seen live, not only at the end:\n{live}"
    );
    // Not ours to cancel.
    tmux.keys(&["3"]);
    tmux.keys(&["c"]);
    tmux.wait_for(&["runs in another process", by], 10);
    let end = tmux.wait_for(&["h1 live line 6", "finished"], 30);
    assert!(!end.contains("running elsewhere"), "{end}");
    let o = other.wait().unwrap();
    assert!(o.success(), "the other dispatch: {o:?}");
    // Every line once: h1's six lines, in order, in its log.
    let lines: Vec<&str> = end
        .lines()
        .filter(|l| l.contains("h1 live line") && !l.contains("echo"))
        .collect();
    assert_eq!(lines.len(), 6, "each line once:\n{end}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.contains(&format!("h1 live line {}", i + 1)), "{end}");
    }
    tmux.keys(&["q"]);
    tmux.wait_for(&["EXITED 0"], 15);
}

#[test]
fn another_machines_dispatch_shows_live_in_the_console_on_postgres() {
    if !support::live_test_or_skip("live_console", &[Need::Tmux]) {
        return;
    }
    let Some(pg) = support::postgres::server_or_skip("live_console") else {
        return;
    };
    let db = pg.new_database();
    let url = pg.url(PG_USER, &db);
    let here = Home::new();
    config(&here, &format!("journal = {url}"));
    let tmux = console("pg", &here, &format!("PGPASSFILE={}", sh_quote(&pg.pgpass)));
    tmux.wait_for(&["Hosts 2", "Dispatches 0"], 20);

    let there = Home::new();
    config(&there, &format!("journal = {url}"));
    let pgpass = there.write("pgpass", std::fs::read(&pg.pgpass).unwrap());
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    support::user::give_to_test_user(&there);
    let mut c = there.command(&["--config", "dispatch.cfg", "--dispatch", "app-2.0.tgz"]);
    c.env("PGPASSFILE", &pgpass)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    support::user::as_test_user_on(&mut c, "build-3");
    let other = c.spawn().unwrap();
    let by = format!("{}@build-3", support::user::TEST_USER);
    watch_it_live(&tmux, &by, other);

    // The dispatch is in the shared record, finished, once.
    let o = here
        .command(&["--config", "dispatch.cfg", "--history"])
        .env("PGPASSFILE", &pg.pgpass)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains(&by) && out.contains("finished"), "{out}");
}

#[test]
fn another_process_dispatch_shows_live_in_the_console_on_sqlite() {
    if !support::live_test_or_skip("live_console", &[Need::Tmux]) {
        return;
    }
    let shared = tempfile::tempdir().unwrap();
    let journal = shared.path().join("journal.sqlite");
    let line = format!("journal = {}", journal.display());
    let here = Home::new();
    config(&here, &line);
    let tmux = console("sqlite", &here, "");
    tmux.wait_for(&["Hosts 2", "Dispatches 0"], 20);

    let there = Home::new();
    config(&there, &line);
    let other = there
        .command(&["--config", "dispatch.cfg", "--dispatch", "app-2.0.tgz"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Same user, same machine: told apart by the process, not the name.
    let by = dropship::journal::follow::this_origin();
    watch_it_live(&tmux, &by, other);
}

/// A dispatch already running elsewhere when the console starts: shown from the history at
/// once, then followed; its lines still show once each.
#[test]
fn a_dispatch_running_before_the_console_starts_is_followed_without_repeats() {
    if !support::live_test_or_skip("live_console", &[Need::Tmux]) {
        return;
    }
    let shared = tempfile::tempdir().unwrap();
    let journal = shared.path().join("journal.sqlite");
    let line = format!("journal = {}", journal.display());
    let there = Home::new();
    config(&there, &line);
    let other = there
        .command(&["--config", "dispatch.cfg", "--dispatch", "app-2.0.tgz"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let here = Home::new();
    config(&here, &line);
    let printing = support::wait_until(std::time::Duration::from_secs(20), || {
        let o = here.run(&["--config", "dispatch.cfg", "--history"]);
        String::from_utf8_lossy(&o.stdout).contains("running")
            && std::fs::metadata(&journal).is_ok()
    });
    assert!(printing, "the other dispatch never started");
    std::thread::sleep(std::time::Duration::from_millis(900));
    let tmux = console("sqlite-before", &here, "");
    let by = dropship::journal::follow::this_origin();
    watch_it_live(&tmux, &by, other);
}
