//! `:run` and `:action` in the console: the real binary in tmux against the real sshd. A
//! run started from the palette shows in Dispatches with its output live in the log pane,
//! is journaled as a run (`--history` afterwards), and a destructive action asks first.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{Need, TEST_PASSWORD, TEST_USER};

use support::tmux::{Tmux, sh_quote};

#[test]
fn run_and_action_from_the_palette() {
    if !support::live_test_or_skip("run_console", &[Need::Sshd, Need::Tmux]) {
        return;
    }
    let Some(server) = support::SshServer::builder()
        .listen_also(support::LOOPBACK_2)
        .start_or_skip("run_console")
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let dest = support::scratch_dir("run_console");
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    server.write_known_hosts(&home.path().join(".ssh/known_hosts"));
    let cfg: PathBuf = home.path().join("dispatch.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[app-(?P<version>[0-9.]+)\\.tgz]\nhost = 127.0.0.1:{p}, 127.0.0.2:{p}\nprotocol = sftp\n\
             login = {TEST_USER}\npassword = {TEST_PASSWORD}\ndest_dir = {d}\ntimeout = 10s\n\
             action.where = echo action-in-$(pwd)\naction.stop = touch {d}/stopped\naction.stop.confirm = yes\n",
            p = server.port(),
            d = dest.as_str()
        ),
    )
    .unwrap();
    let state = home.path().join("state");
    let cmd = format!(
        "env -u DROPSHIP_CONFIG -u NETRC -u SSH_AUTH_SOCK -u NO_COLOR -u DROPSHIP_THEME HOME={h} XDG_STATE_HOME={s} XDG_CONFIG_HOME={h}/.config {bin} --config {cfg}; echo EXITED $?; sleep 30",
        h = sh_quote(home.path()),
        s = sh_quote(&state),
        bin = sh_quote(Path::new(env!("CARGO_BIN_EXE_dropship"))),
        cfg = sh_quote(&cfg),
    );
    let tmux = Tmux::start("run_console", &cmd, 140, 40);
    tmux.wait_for(&["Dispatches 0"], 20);
    // Follow the newest dispatch: each run below is read as it starts (without `F` the
    // console keeps the selection where it is, as a reader at 3 a.m. wants).
    tmux.keys(&["F"]);
    tmux.wait_for(&["following (F)"], 10);

    // `:run app echo ...`: in Dispatches as a run, its output live in the log pane.
    tmux.keys(&[":"]);
    tmux.text("run app echo hello-from-{host}; sleep 1; echo second-line");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["(run)", "hello-from-127.0.0.", "second-line"], 30);
    tmux.wait_for(&["2/2 ok"], 30);

    // `!` on the Hosts pane: the palette with `run HOST ` typed, waiting for the command.
    tmux.keys(&["1"]);
    tmux.keys(&["!"]);
    // Past commands are listed under it.
    tmux.wait_for(
        &[
            ":run 127.0.0.",
            "echo hello-from-{host}; sleep 1; echo second-line",
        ],
        10,
    );
    tmux.text("echo bang-from-{host}");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["bang-from-127.0.0."], 30);

    // `A` on the Hosts pane: the host's actions on digits; `1` runs the first (`where`).
    tmux.keys(&["A"]);
    let menu = tmux.wait_for(
        &["Actions on 127.0.0.", "where", "stop", "(asks first)"],
        10,
    );
    assert!(menu.contains(" 1  where"), "{menu}");
    tmux.keys(&["1"]);
    tmux.wait_for(&["Targets #3 (action)", "1 ok · 0 failed — finished"], 30);

    // `:action where 127.0.0.2:PORT`: one host, in the package directory.
    tmux.keys(&[":"]);
    tmux.text(&format!("action where 127.0.0.2:{}", server.port()));
    tmux.keys(&["Enter"]);
    // (The log pane is narrow here: the start of the path; run_live.rs checks all of it.)
    let dir = std::fs::canonicalize(dest.path()).unwrap();
    let shown: String = format!("action-in-{}", dir.display())
        .chars()
        .take(30)
        .collect();
    tmux.wait_for(&["(action)", &shown], 30);

    // A destructive action asks first, Cancel the default: Enter runs nothing.
    let ask = || {
        tmux.keys(&[":"]);
        tmux.text("action stop app");
        tmux.keys(&["Enter"]);
        tmux.wait_for(
            &["Run destructive action?", "[ Cancel ]", "[ Run ]", "touch "],
            10,
        );
    };
    ask();
    tmux.keys(&["Enter"]);
    assert!(
        support::wait_until(Duration::from_secs(10), || !tmux
            .screen()
            .contains("Run destructive action?")),
        "the dialog did not close"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(!dest.join("stopped").exists());
    // Tab to Run, Enter: it runs on the rule's hosts.
    ask();
    tmux.keys(&["Tab"]);
    tmux.keys(&["Enter"]);
    assert!(
        support::wait_until(Duration::from_secs(30), || dest.join("stopped").exists()),
        "the confirmed action did not run"
    );
    tmux.wait_for(&["Targets #5 (action)", "2 ok · 0 failed — finished"], 30);

    tmux.keys(&["q"]);
    let after = tmux.wait_for(&["EXITED 0"], 30);
    assert!(!after.contains("panicked"), "{after}");

    // Journaled as a run and an action.
    let o = Command::new(env!("CARGO_BIN_EXE_dropship"))
        .args(["--config", cfg.to_str().unwrap(), "--history"])
        .env("HOME", home.path())
        .env("XDG_STATE_HOME", &state)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(run) echo hello-from-{host}"), "{out}");
    assert!(out.contains("(action where)"), "{out}");
}
