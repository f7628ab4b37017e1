//! End to end: the real `dropship` binary in a real terminal (tmux), against the real sshd
//! of tests/support. Keystrokes go in with `send-keys`; what the user would see comes back
//! with `capture-pane -p`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{Need, TEST_PASSWORD, TEST_USER};

use support::tmux::{Tmux, sh_quote};

#[test]
fn dispatch_from_the_console_and_watch_the_upgrade_live() {
    if !support::live_test_or_skip("tui_e2e", &[Need::Sshd, Need::Tmux]) {
        return;
    }
    let Some(server) = support::ssh_server_or_skip("tui_e2e") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let dest = support::scratch_dir("tui_e2e");
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    server.write_known_hosts(&home.path().join(".ssh/known_hosts"));
    let cfg: PathBuf = home.path().join("dispatch.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[app-.*\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\n\
             dest_dir = {d}\nlock_path = {d}/.dropship.lock\ntimeout = 10s\n\
             upgrade = echo hello from {{host}}; for i in 1 2 3; do echo upgrade line $i; sleep 0.2; done; echo careful >&2\n",
            server.addr(),
            d = dest.as_str()
        ),
    )
    .unwrap();
    let bundle = home.path().join("app-1.0.tgz");
    std::fs::write(&bundle, vec![7u8; 200_000]).unwrap();
    let state = home.path().join("state");
    let cmd = format!(
        "env -u DROPSHIP_CONFIG -u NETRC -u SSH_AUTH_SOCK -u NO_COLOR -u DROPSHIP_THEME HOME={h} XDG_STATE_HOME={s} XDG_CONFIG_HOME={h}/.config {bin} --config {cfg}; echo EXITED $?; sleep 30",
        h = sh_quote(home.path()),
        s = sh_quote(&state),
        bin = sh_quote(Path::new(env!("CARGO_BIN_EXE_dropship"))),
        cfg = sh_quote(&cfg),
    );
    let tmux = Tmux::start("dispatch", &cmd, 120, 40);
    tmux.wait_for(&["Dispatches 0", "no dispatches yet"], 20);

    // `:dispatch PATH`, Enter: the plan. The default button is Cancel: move, then press.
    tmux.keys(&[":"]);
    tmux.text(&format!("dispatch {}", bundle.display()));
    tmux.keys(&["Enter"]);
    let plan = tmux.wait_for(
        &["Dispatch?", "[ Cancel ]", "[ Dispatch ]", "app-1.0.tgz"],
        10,
    );
    assert!(
        plan.contains(&format!("{TEST_USER} (dispatch.cfg)")),
        "{plan}"
    );
    assert!(
        !plan.contains(TEST_PASSWORD),
        "the password reached the screen:\n{plan}"
    );
    tmux.keys(&["Tab"]);
    tmux.keys(&["Enter"]);

    // The upgrade's output streams into the log pane while it runs, then the summary.
    tmux.wait_for(&["hello from 127.0.0.1", "upgrade line 1"], 30);
    let done = tmux.wait_for(&["upgrade line 3", "careful", "1/1 ok", "finished"], 30);
    assert!(done.contains("Log 127.0.0.1 #1"), "{done}");
    assert!(
        dest.join("app-1.0.tgz").is_file(),
        "the bundle was not uploaded"
    );

    // Quit; the shell after dropship prints its exit status.
    tmux.keys(&["q"]);
    let after = tmux.wait_for(&["EXITED 0"], 10);
    assert!(!after.contains("panicked"), "{after}");
    assert!(tmux.alive());

    // The journal recorded the dispatch like a headless one.
    let o = Command::new(env!("CARGO_BIN_EXE_dropship"))
        .args(["--history", "--json"])
        .env("HOME", home.path())
        .env("XDG_STATE_HOME", &state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("\"succeeded\":1"), "{text}");
    let log = std::fs::read_to_string(state.join("dropship/dropship.log")).unwrap_or_default();
    assert!(log.contains("dispatch started"), "log file: {log}");
    assert!(!log.contains(TEST_PASSWORD));
}

/// A broken user theme stops the console before it takes the terminal, naming the file and
/// every bad key.
#[test]
fn a_broken_user_theme_is_reported_with_file_and_key() {
    let home = tempfile::tempdir().unwrap();
    let themes = home.path().join(".config/dropship/themes");
    std::fs::create_dir_all(&themes).unwrap();
    std::fs::write(
        themes.join("broken.yaml"),
        "ok: { fg: grene }\nokk: red\nfailed: { blink: true }\n",
    )
    .unwrap();
    std::fs::write(themes.join("fine.yaml"), "ok: magenta\n").unwrap();
    let cfg = home.path().join("dispatch.cfg");
    std::fs::write(&cfg, "[app-.*\\.tgz]\nhost = web1\nprotocol = local\n").unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dropship"))
            .args(args)
            .env("HOME", home.path())
            .env("XDG_STATE_HOME", home.path().join("state"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DROPSHIP_THEME")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let cfg = cfg.to_str().unwrap();
    let o = run(&["--config", cfg, "--tui", "--theme", "broken"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("broken.yaml"), "{err}");
    assert!(err.contains("`ok.fg`: bad colour `grene`"), "{err}");
    assert!(
        err.contains("`okk`: unknown key (did you mean `ok`?)"),
        "{err}"
    );
    assert!(err.contains("`failed.blink`: unknown attribute"), "{err}");
    let o = run(&["--config", cfg, "--tui", "--theme", "nonesuch"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such theme"));

    // The theme chosen last time (`:theme` writes it to the state dir) is used when neither
    // --theme nor $DROPSHIP_THEME says otherwise; $DROPSHIP_THEME beats it.
    let state = home.path().join("state/dropship");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("theme"), "broken\n").unwrap();
    let o = run(&["--config", cfg, "--tui"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("broken.yaml"));
    let o = Command::new(env!("CARGO_BIN_EXE_dropship"))
        .args(["--config", cfg, "--tui"])
        .env("HOME", home.path())
        .env("XDG_STATE_HOME", home.path().join("state"))
        .env("DROPSHIP_THEME", "nonesuch")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("theme nonesuch"));

    // With no mode and no terminal, dropship says what to do instead of hanging.
    let o = run(&["--config", cfg]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not on a terminal"));
}

/// `NO_COLOR` selects the mono theme: the screen carries no colour at all, and selection is
/// reverse video. Resizing the terminal to a narrow one gives the stacked layout.
#[test]
fn no_color_is_mono_and_resizing_restacks() {
    if !support::live_test_or_skip("tui_no_color", &[Need::Tmux]) {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("dispatch.cfg");
    std::fs::write(
        &cfg,
        "[app-.*\\.tgz]\nhost = web1, web2\nprotocol = local\n",
    )
    .unwrap();
    let cmd = format!(
        "env -u DROPSHIP_THEME NO_COLOR=1 HOME={h} XDG_STATE_HOME={h}/state XDG_CONFIG_HOME={h}/.config {bin} --config {cfg}; echo EXITED $?; sleep 30",
        h = sh_quote(home.path()),
        bin = sh_quote(Path::new(env!("CARGO_BIN_EXE_dropship"))),
        cfg = sh_quote(&cfg),
    );
    let tmux = Tmux::start("nocolor", &cmd, 120, 40);
    tmux.wait_for(&["Hosts 2", "mono"], 20);
    tmux.keys(&["1"]);
    tmux.wait_for(&["Hosts · Enter"], 5);
    let styled =
        String::from_utf8_lossy(&tmux.run(&["capture-pane", "-p", "-e", "-t", "e2e"]).stdout)
            .into_owned();
    let colour =
        regex::Regex::new(r"\x1b\[[0-9;]*(3[0-7]|38;[0-9;]+|4[0-7]|48;[0-9;]+|9[0-7]|10[0-7])m")
            .unwrap();
    assert!(
        !colour.is_match(&styled),
        "a colour under NO_COLOR:\n{styled:?}"
    );
    assert!(
        styled.contains("\x1b[7m"),
        "no reverse video for the selection:\n{styled:?}"
    );

    tmux.run(&["resize-window", "-t", "e2e", "-x", "70", "-y", "22"]);
    let narrow = tmux.wait_for(&["1 Hosts 2", "4 Targets", "5 Log"], 5);
    assert!(
        !narrow.contains("3 Dispatches"),
        "stacked: one list at a time\n{narrow}"
    );
    tmux.run(&["resize-window", "-t", "e2e", "-x", "130", "-y", "40"]);
    tmux.wait_for(&["1 Hosts 2", "2 Packages", "3 Dispatches"], 5);

    // SIGTERM leaves like `q`: the terminal comes back (the shell's echo is visible, the
    // console is gone from the screen).
    let shell = String::from_utf8_lossy(
        &tmux
            .run(&["list-panes", "-t", "e2e", "-F", "#{pane_pid}"])
            .stdout,
    )
    .trim()
    .to_owned();
    let out = Command::new("pgrep").args(["-P", &shell]).output().unwrap();
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !pid.is_empty(),
        "no dropship under the pane's shell {shell}"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let after = tmux.wait_for(&["EXITED 0"], 10);
    assert!(
        !after.contains("3 Dispatches"),
        "the console is still on screen:\n{after}"
    );
}

/// The fleet side of the console against the real sshd: the host shows reachable on start,
/// `p` probes it (login, dest dir, version), and after two dispatches of a
/// `layout = releases` rule, `b` rolls it back (Cancel is the default; Tab, Enter runs),
/// `current` moves back on the host, and quitting waits for the rollback's notification
/// (the webhook fails once, then takes it).
#[test]
fn probe_and_roll_back_from_the_console() {
    use support::http::{Behaviour, HttpServer};
    if !support::live_test_or_skip("tui_e2e_fleet", &[Need::Sshd, Need::Tmux]) {
        return;
    }
    let Some(server) = support::ssh_server_or_skip("tui_e2e_fleet") else {
        return;
    };
    let hook = HttpServer::start();
    hook.route("/hook", Behaviour::Sequence(vec![500, 200]));
    let home = tempfile::tempdir().unwrap();
    let dest = support::scratch_dir("tui_e2e_fleet");
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    server.write_known_hosts(&home.path().join(".ssh/known_hosts"));
    let cfg: PathBuf = home.path().join("dispatch.cfg");
    let config = |extra: &str| {
        format!(
            "[app-(?P<version>[0-9.]+)\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\n\
             dest_dir = {d}/app\nlock_path = {d}/.dropship.lock\ntimeout = 10s\nlayout = releases\n\
             version_cmd = cat {d}/app/current/VERSION.txt\n{extra}",
            server.addr(),
            d = dest.as_str()
        )
    };
    std::fs::write(&cfg, config("")).unwrap();
    let state = home.path().join("state");
    // Two releases shipped headless: 1.0, then 1.1 (current).
    for v in ["1.0", "1.1"] {
        let src = home.path().join(format!("src-{v}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("VERSION.txt"), format!("{v}\n")).unwrap();
        let bundle = home.path().join(format!("app-{v}.tgz"));
        assert!(
            Command::new("tar")
                .arg("czf")
                .arg(&bundle)
                .arg("VERSION.txt")
                .current_dir(&src)
                .status()
                .unwrap()
                .success()
        );
        let o = Command::new(env!("CARGO_BIN_EXE_dropship"))
            .args(["--config", cfg.to_str().unwrap(), "--dispatch"])
            .arg(&bundle)
            .env("HOME", home.path())
            .env("XDG_STATE_HOME", &state)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DROPSHIP_CONFIG")
            .env_remove("NETRC")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let current = || std::fs::read_link(dest.join("app/current")).ok();
    assert_eq!(current(), Some(PathBuf::from("releases/1.1")));
    std::fs::write(&cfg, config(&format!("notify = {}\n", hook.url("/hook")))).unwrap();

    let cmd = format!(
        "env -u DROPSHIP_CONFIG -u NETRC -u SSH_AUTH_SOCK -u NO_COLOR -u DROPSHIP_THEME HOME={h} XDG_STATE_HOME={s} XDG_CONFIG_HOME={h}/.config {bin} --config {cfg}; echo EXITED $?; sleep 30",
        h = sh_quote(home.path()),
        s = sh_quote(&state),
        bin = sh_quote(Path::new(env!("CARGO_BIN_EXE_dropship"))),
        cfg = sh_quote(&cfg),
    );
    let tmux = Tmux::start("fleet", &cmd, 120, 40);
    // Reachable on start, without a login.
    tmux.wait_for(&["Hosts 1", "REACH", " up "], 20);

    // `p`: the full preflight of the host, in a dialog.
    tmux.keys(&["1"]);
    tmux.keys(&["p"]);
    let probe = tmux.wait_for(&["Probe: 127.0.0.1 (1 host(s))", "version"], 30);
    for want in [
        "ok   reachable",
        "ok   login",
        "ok   dest dir",
        "ok   version    1.1",
    ] {
        assert!(probe.contains(want), "no `{want}` in:\n{probe}");
    }
    assert!(!probe.contains(TEST_PASSWORD), "{probe}");
    tmux.keys(&["Escape"]);
    // The dialog closes before the next key (an Escape read together with `b` is Alt-b).
    assert!(
        support::wait_until(Duration::from_secs(10), || !tmux
            .screen()
            .contains("Probe: 127.0.0.1")),
        "the probe dialog did not close"
    );
    // The probe filled the Hosts row: the lock is free, version 1.1 installed.
    tmux.wait_for(&["free", "1.1"], 5);

    // `b`: the dialog says what happens, read from the host; Enter on Cancel does nothing.
    tmux.keys(&["b"]);
    let ask = tmux.wait_for(&["Roll back?", "current: 1.1 -> 1.0", "[ Cancel ]"], 20);
    assert!(ask.contains("app-1.1.tgz"), "{ask}");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["Hosts · Enter"], 5);
    assert_eq!(current(), Some(PathBuf::from("releases/1.1")));
    tmux.keys(&["b"]);
    tmux.wait_for(&["current: 1.1 -> 1.0"], 20);
    tmux.keys(&["Tab"]);
    tmux.keys(&["Enter"]);
    // It does not take the selection (issue 15 item 4): select it, top of Dispatches.
    tmux.wait_for(&["#3    (rollback)"], 30);
    tmux.keys(&["3"]);
    tmux.keys(&["g"]);
    // Dispatch #3 is the rollback; its switch prints where `current` went. (Not the
    // summary line: a notice, such as the webhook's, may take its place a moment later.)
    let done = tmux.wait_for(&["Targets #3 (rollback)", "current: 1.1 -> 1.0"], 30);
    assert!(!done.contains("Roll back?"), "{done}");
    assert!(
        support::wait_until(Duration::from_secs(30), || current()
            == Some(PathBuf::from("releases/1.0"))),
        "current did not move back: {:?}",
        current()
    );

    // Versions: the host runs 1.0, behind what was last shipped (1.1).
    tmux.keys(&["v"]);
    tmux.wait_for(&["Versions (read", "1.0 !behind"], 30);
    tmux.keys(&["Escape"]);
    // Wait for the view to close before the next key: an Escape and a `q` read together
    // are one Alt-q to the terminal, and the quit would be lost.
    assert!(
        support::wait_until(Duration::from_secs(10), || !tmux
            .screen()
            .contains("Versions (read")),
        "the Versions view did not close"
    );

    // Quit right away: the console waits for the notification (500, retried, 200).
    tmux.keys(&["q"]);
    let after = tmux.wait_for(&["EXITED 0"], 30);
    assert!(!after.contains("panicked"), "{after}");
    let posts = hook.posts("/hook");
    assert_eq!(posts.len(), 2, "the retry was not waited for: {posts:?}");
    assert!(posts[1].contains("\"event\":\"rollback\""), "{}", posts[1]);
}

/// `--tui --watch DIR` against the real sshd: a bundle renamed into DIR ships by itself
/// with its upgrade output live on screen and ends in `DIR/.dropship/done/DATE/`; `a`
/// pauses, and a bundle dropped then stays queued (on screen and on disk) until `a`
/// resumes, then ships. The journal holds each output line once: the watcher writes it,
/// the console only shows it.
#[test]
fn watch_a_folder_from_the_console_pause_and_resume() {
    use dropship::engine::events::Step;
    use dropship::journal::Journal;
    if !support::live_test_or_skip("tui_e2e_watch", &[Need::Sshd, Need::Tmux]) {
        return;
    }
    let Some(server) = support::ssh_server_or_skip("tui_e2e_watch") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let dest = support::scratch_dir("tui_e2e_watch");
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    server.write_known_hosts(&home.path().join(".ssh/known_hosts"));
    let cfg: PathBuf = home.path().join("dispatch.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[app-.*\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\n\
             dest_dir = {d}\nlock_path = {d}/.dropship.lock\ntimeout = 10s\n\
             upgrade = echo hello {{bundle}} from {{host}}; for i in 1 2 3; do echo upgrade line $i; sleep 0.3; done\n\n\
             [slow-.*\\.tgz]\nhost = {0}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\n\
             dest_dir = {d}\nlock_path = {d}/.dropship.lock\ntimeout = 30s\n\
             upgrade = echo slow {{bundle}}; for i in 1 2 3 4 5; do echo slow line $i; sleep 1; done\n",
            server.addr(),
            d = dest.as_str()
        ),
    )
    .unwrap();
    let drop_dir = home.path().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let journal = home.path().join("journal.db");
    let state = home.path().join("state");
    let cmd = format!(
        "env -u DROPSHIP_CONFIG -u NETRC -u SSH_AUTH_SOCK -u NO_COLOR -u DROPSHIP_THEME HOME={h} XDG_STATE_HOME={s} XDG_CONFIG_HOME={h}/.config {bin} --config {cfg} --journal {j} --tui --watch {w}; echo EXITED $?; sleep 30",
        h = sh_quote(home.path()),
        s = sh_quote(&state),
        bin = sh_quote(Path::new(env!("CARGO_BIN_EXE_dropship"))),
        cfg = sh_quote(&cfg),
        j = sh_quote(&journal),
        w = sh_quote(&drop_dir),
    );
    let tmux = Tmux::start("watch", &cmd, 130, 40);
    tmux.wait_for(&["watching · 0 queued", "watch on"], 20);

    // Written beside the folder, renamed in: complete at once.
    let drop = |name: &str, byte: u8| {
        let tmp = home.path().join(name);
        std::fs::write(&tmp, vec![byte; 100_000]).unwrap();
        std::fs::rename(&tmp, drop_dir.join(name)).unwrap();
    };
    let shelved = |name: &str| -> bool {
        let done = drop_dir.join(".dropship/done");
        std::fs::read_dir(&done)
            .into_iter()
            .flatten()
            .flatten()
            .any(|day| day.path().join(name).is_file())
    };
    drop("app-1.0.tgz", 1);
    tmux.wait_for(&["hello app-1.0.tgz from 127.0.0.1", "upgrade line 1"], 30);
    let screen = tmux.wait_for(&["upgrade line 3", "done #1"], 30);
    assert!(screen.contains("Log 127.0.0.1 #1"), "{screen}");
    assert!(
        support::wait_until(Duration::from_secs(10), || shelved("app-1.0.tgz")),
        "app-1.0.tgz never reached done/"
    );
    assert!(dest.join("app-1.0.tgz").is_file(), "not uploaded");

    // Paused: a new bundle is taken and queued, and nothing starts.
    tmux.keys(&["a"]);
    tmux.wait_for(&["watch PAUSED"], 10);
    drop("app-2.0.tgz", 2);
    tmux.wait_for(&["watch PAUSED · 1 queued", "app-2.0.tgz"], 20);
    let queue = drop_dir.join(".dropship/queue");
    let in_queue = || {
        std::fs::read_dir(&queue)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("-app-2.0.tgz"))
    };
    // Looked at for a while (a bound on how long we look, not on how fast anything is):
    // it stays queued, on screen and on disk, and reaches no host.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        let s = tmux.screen();
        assert!(s.contains("watch PAUSED · 1 queued"), "{s}");
        assert!(
            !s.contains("dispatching #2") && !s.contains("Targets #2"),
            "{s}"
        );
        assert!(in_queue(), "app-2.0.tgz left the queue while paused");
        assert!(!shelved("app-2.0.tgz"));
        assert!(!dest.join("app-2.0.tgz").exists(), "shipped while paused");
    }

    // Resumed: it ships, and (following the newest, F) its output shows.
    tmux.keys(&["F"]);
    tmux.wait_for(&["following (F)"], 10);
    tmux.keys(&["a"]);
    tmux.wait_for(&["hello app-2.0.tgz from 127.0.0.1"], 30);
    tmux.wait_for(&["done #2", "watching · 0 queued"], 30);
    assert!(
        support::wait_until(Duration::from_secs(10), || shelved("app-2.0.tgz")),
        "app-2.0.tgz never reached done/"
    );
    assert!(dest.join("app-2.0.tgz").is_file());

    // Quitting while a watched dispatch runs asks first, then stops the watcher: the
    // running upgrade gets its grace period, and the bundle is never lost (shipped and in
    // done/, or still queued for the next start).
    drop("slow-3.0.tgz", 3);
    tmux.wait_for(&["slow slow-3.0.tgz", "slow line 1"], 30);
    tmux.keys(&["q"]);
    tmux.wait_for(
        &["Quit?", "1 dispatch(es) still running", "The watcher of"],
        10,
    );
    tmux.keys(&["Tab"]);
    tmux.keys(&["Enter"]);
    let after = tmux.wait_for(&["EXITED 0"], 40);
    assert!(!after.contains("panicked"), "{after}");
    let queued_again = std::fs::read_dir(&queue)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with("-slow-3.0.tgz"));
    assert!(
        shelved("slow-3.0.tgz") || queued_again,
        "slow-3.0.tgz is neither in done/ nor queued:\n{after}"
    );
    assert!(
        !drop_dir.join(".dropship/failed/slow-3.0.tgz").exists(),
        "a clean stop must not fail the bundle"
    );

    // Each dispatch once in the journal, each output line once.
    let j = Journal::open(&journal).unwrap();
    let history: Vec<_> = j
        .history(10)
        .unwrap()
        .into_iter()
        .filter(|h| h.bundle.starts_with("app-"))
        .collect();
    assert_eq!(history.len(), 2, "{history:?}");
    for h in &history {
        assert_eq!((h.succeeded, h.failed), (1, 0), "{h:?}");
        let detail = j.dispatch(h.id).unwrap().unwrap();
        let host = &detail.targets[0].host;
        let lines = j.output(h.id, host, Step::Upgrade).unwrap();
        let ones = lines.iter().filter(|l| l.line == "upgrade line 1").count();
        assert_eq!(ones, 1, "dispatch #{}: {lines:?}", h.id);
    }
}

/// Issue 15 at 3 a.m., against the real sshd: a failed host says why (ERROR column,
/// details on Enter, the status bar names it); the fleet's REACH survives the dispatch;
/// starting a new dispatch does not replace the one being read; a second `c` stops a
/// dispatch now; quitting cancels with the grace period and names the `--resume` ID.
#[test]
fn why_it_failed_keep_the_selection_stop_now_and_quit_like_cancel() {
    if !support::live_test_or_skip("tui_e2e", &[Need::Sshd, Need::Tmux]) {
        return;
    }
    let Some(server) = support::ssh_server_or_skip("tui_e2e") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let dest = support::scratch_dir("tui_e2e_3am");
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    server.write_known_hosts(&home.path().join(".ssh/known_hosts"));
    let cfg: PathBuf = home.path().join("dispatch.cfg");
    let common = format!(
        "host = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\n\
         dest_dir = {d}\nlock_path = {d}/.dropship.lock\ntimeout = 10s\n",
        server.addr(),
        d = dest.as_str()
    );
    std::fs::write(
        &cfg,
        format!(
            "[bad-.*\\.tgz]\n{common}upgrade = echo unpacking; echo 'disk full on /srv' >&2; exit 3\n\n\
             [slow-.*\\.tgz]\n{common}upgrade = echo slow upgrade started; sleep 60; echo never\n"
        ),
    )
    .unwrap();
    let bad = home.path().join("bad-1.0.tgz");
    let slow = home.path().join("slow-1.0.tgz");
    std::fs::write(&bad, vec![1u8; 10_000]).unwrap();
    std::fs::write(&slow, vec![2u8; 10_000]).unwrap();
    let state = home.path().join("state");
    let cmd = format!(
        "env -u DROPSHIP_CONFIG -u NETRC -u SSH_AUTH_SOCK -u NO_COLOR -u DROPSHIP_THEME HOME={h} XDG_STATE_HOME={s} XDG_CONFIG_HOME={h}/.config {bin} --config {cfg}; echo EXITED $?; sleep 30",
        h = sh_quote(home.path()),
        s = sh_quote(&state),
        bin = sh_quote(Path::new(env!("CARGO_BIN_EXE_dropship"))),
        cfg = sh_quote(&cfg),
    );
    let tmux = Tmux::start("3am", &cmd, 160, 48);
    // No dispatch yet: focus starts on Hosts; the reachability check fills REACH.
    tmux.wait_for(&["Hosts 1", "up "], 20);
    let dispatch = |file: &Path| {
        tmux.keys(&[":"]);
        tmux.text(&format!("dispatch {}", file.display()));
        tmux.keys(&["Enter"]);
        tmux.wait_for(&["Dispatch?", "[ Dispatch ]"], 10);
        tmux.keys(&["Tab"]);
        tmux.keys(&["Enter"]);
    };

    // 1. Why it failed: the step, exit code and duration in ERROR; the status bar names
    //    the host; Enter on Targets shows the whole error.
    dispatch(&bad);
    let s = tmux.wait_for(&["failed: 127.0.0.1", "upgrade: exit 3 after"], 30);
    assert!(s.contains("disk full on /srv"), "stderr in the log:\n{s}");
    // 2. REACH, LOCK and VERSION did not vanish: the host is still `up` (the quiet probe
    //    of the touched host answers a moment later).
    tmux.wait_for(&["up", "free"], 20);
    tmux.keys(&["4"]);
    tmux.keys(&["Enter"]);
    let d = tmux.wait_for(
        &["127.0.0.1 — details", "why       upgrade: exit 3 after"],
        10,
    );
    assert!(d.contains("`upgrade` exited with status 3"), "{d}");
    tmux.keys(&["Escape"]);
    // A key sent right after Escape would read as Alt+key: wait until the popup is gone.
    assert!(support::wait_until(Duration::from_secs(5), || !tmux
        .screen()
        .contains("— details")));

    // 4. Starting another dispatch does not replace what is being read.
    dispatch(&slow);
    let s = tmux.wait_for(&["dispatch #2 started", "(F follows the newest)"], 20);
    assert!(
        s.contains("Targets #1 bad-1.0.tgz"),
        "the view jumped:\n{s}"
    );

    // 8. Cancel, then a second `c`: stop now, long before the 10 s grace.
    tmux.keys(&["3"]);
    tmux.keys(&["g"]);
    tmux.wait_for(&["Targets #2 slow-1.0.tgz", "slow upgrade started"], 30);
    tmux.keys(&["c"]);
    tmux.wait_for(&["Cancel dispatch?"], 10);
    tmux.keys(&["Tab"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["cancelling"], 10);
    tmux.keys(&["c"]);
    tmux.wait_for(&["Stop now?", "[ Stop now ]"], 10);
    tmux.keys(&["Tab"]);
    let t = std::time::Instant::now();
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["#2    slow-1.0.tgz", "cancelled"], 20);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stop now took {:?}, as long as the grace period",
        t.elapsed()
    );

    // 8. Quit while a dispatch runs: it is cancelled with the grace period (the console
    //    stays up saying so), and the ID to resume is named.
    dispatch(&slow);
    tmux.wait_for(&["#3    slow-1.0.tgz"], 20);
    tmux.keys(&["3"]);
    tmux.keys(&["g"]);
    tmux.wait_for(&["Targets #3 slow-1.0.tgz", "slow upgrade started"], 30);
    tmux.keys(&["q"]);
    tmux.wait_for(&["Quit?", "dropship --resume 3", "cancels #3 like c"], 10);
    tmux.keys(&["Tab"]);
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for(&["quitting: cancelling #3"], 10);
    assert!(!s.contains("EXITED"), "{s}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !tmux.screen().contains("EXITED"),
        "quit killed the dispatch at once instead of giving it the grace period"
    );
    // q again: stop now and leave.
    tmux.keys(&["q"]);
    let after = tmux.wait_for(&["EXITED 0", "dropship --resume 3"], 20);
    assert!(!after.contains("panicked"), "{after}");
}

/// Issue 15 item 12 in a real 60x15 terminal against sshd: the dispatch dialog scrolls to
/// every host and command before the buttons; each pane is reachable; `:reload` picks up a
/// host added to dispatch.cfg and reports a broken file without losing the session; a
/// mouse click (SGR report, `m` turns the mouse on) focuses a pane and selects the row.
#[test]
fn smallest_terminal_reload_and_mouse() {
    if !support::live_test_or_skip("tui_e2e", &[Need::Sshd, Need::Tmux]) {
        return;
    }
    let Some(server) = support::ssh_server_or_skip("tui_e2e") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let dest = support::scratch_dir("tui_e2e_small");
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    server.write_known_hosts(&home.path().join(".ssh/known_hosts"));
    let cfg: PathBuf = home.path().join("dispatch.cfg");
    let rule = |hosts: &str| {
        format!(
            "[app-.*\\.tgz]\nhost = {hosts}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\n\
             dest_dir = {d}\nlock_path = {d}/.dropship.lock\ntimeout = 10s\n\
             pre = echo checking the free space in {d} before anything else happens\n\
             upgrade = echo upgrading; echo the-last-command-of-the-plan\n",
            d = dest.as_str()
        )
    };
    std::fs::write(&cfg, rule(&server.addr().to_string())).unwrap();
    let bundle = home.path().join("app-1.0.tgz");
    std::fs::write(&bundle, vec![3u8; 1000]).unwrap();
    let state = home.path().join("state");
    let cmd = format!(
        "env -u DROPSHIP_CONFIG -u NETRC -u SSH_AUTH_SOCK -u NO_COLOR -u DROPSHIP_THEME HOME={h} XDG_STATE_HOME={s} XDG_CONFIG_HOME={h}/.config {bin} --config {cfg}; echo EXITED $?; sleep 30",
        h = sh_quote(home.path()),
        s = sh_quote(&state),
        bin = sh_quote(Path::new(env!("CARGO_BIN_EXE_dropship"))),
        cfg = sh_quote(&cfg),
    );
    let tmux = Tmux::start("small", &cmd, 60, 15);
    tmux.wait_for(&["1 Hosts 2 Packages", "Hosts 1 "], 20);
    tmux.keys(&[":"]);
    tmux.text(&format!("dispatch {}", bundle.display()));
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["Dispatch?", "[ Dispatch ]", "more line(s)"], 10);
    let mut seen = String::new();
    for _ in 0..30 {
        seen.push_str(&tmux.screen());
        if seen.contains("end of the plan") {
            break;
        }
        tmux.keys(&["j"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    for needle in ["127.0.0.1", "free space in", "the-last-command-of-the-plan"] {
        assert!(seen.contains(needle), "{needle} never shown:\n{seen}");
    }
    assert!(!seen.contains(TEST_PASSWORD));
    tmux.keys(&["Tab"]);
    tmux.keys(&["Enter"]);
    tmux.keys(&["4"]);
    tmux.wait_for(&["Targets #1", "succeeded"], 30);
    tmux.keys(&["5"]);
    tmux.wait_for(&["Log 127.0.0.1 #1", "the-last-command-of-the-plan"], 10);

    // :reload with a second host in the file.
    std::fs::write(&cfg, rule(&format!("{}, 127.0.0.9", server.addr()))).unwrap();
    tmux.keys(&[":"]);
    tmux.text("reload");
    tmux.keys(&["Enter"]);
    tmux.keys(&["1"]);
    tmux.wait_for(&["Hosts 2 ", "127.0.0.9"], 10);
    // A broken file: reported, the session kept.
    std::fs::write(&cfg, "[app-.*\\.tgz]\nprotocol = carrier-pigeon\n").unwrap();
    tmux.keys(&[":"]);
    tmux.text("reload");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["reload: "], 10);
    tmux.keys(&["3"]);
    tmux.wait_for(&["Dispatches 1", "#1"], 10);

    // The mouse: on with m, then a left click on the second Hosts row (SGR report:
    // column and row 1-based).
    tmux.keys(&["1"]);
    tmux.keys(&["m"]);
    tmux.wait_for(&["mouse on"], 10);
    let s = tmux.screen();
    let row = s.lines().position(|l| l.contains("127.0.0.9")).unwrap() + 1;
    tmux.text(&format!("\x1b[<0;5;{row}M\x1b[<0;5;{row}m"));
    tmux.keys(&["p"]);
    tmux.wait_for(&["Probe: 127.0.0.9"], 20);
    tmux.keys(&["Escape"]);
    assert!(support::wait_until(Duration::from_secs(5), || !tmux
        .screen()
        .contains("Probe: 127.0.0.9")));
    tmux.keys(&["q"]);
    tmux.wait_for(&["EXITED 0"], 15);
}
