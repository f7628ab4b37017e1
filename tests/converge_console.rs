//! Converge from the console: the real binary in tmux against the real sshd. Three hosts of
//! one rule (127.0.0.1 and 127.0.0.2 on the sshd, 127.0.0.3 through a TCP proxy to it), the
//! last good dispatch shipped 1.2 everywhere, then one host was rolled back by hand to 1.1
//! and one to 1.0. `c` on the Versions view shows the plan (the two that differ get 1.2, the
//! third is left out), Cancel (the default) changes nothing, and `:converge app` confirmed
//! ships 1.2 from the store (the original file is gone) to exactly those two, as a dispatch
//! in Dispatches. Then `:run COMMAND` without TARGETS runs on the host selected in Hosts,
//! and with the goal bundle gone from the store `:converge` shows the error, starting nothing.

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::home::{CLEARED_ENV, Home, text};
use support::{FaultProxy, LOOPBACK_2, Need, ScratchDir, SshServer, TEST_PASSWORD, TEST_USER};

use support::LOOPBACK_3;

use support::tmux::{Tmux, sh_quote};

fn version(dest: &ScratchDir, host: &str) -> String {
    std::fs::read_to_string(dest.join(&format!("app/{host}/.version")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn set_version(dest: &ScratchDir, host: &str, v: &str) {
    std::fs::write(dest.join(&format!("app/{host}/.version")), format!("{v}\n")).unwrap();
}

fn history(home: &Home) -> Vec<Value> {
    let o = home.run(&["--config", "dispatch.cfg", "--history", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The screen line that names `host` in the converge dialog.
fn line_of(screen: &str, host: &str) -> String {
    screen
        .lines()
        .find(|l| l.contains(host) && (l.contains("gets it") || l.contains("left out")))
        .unwrap_or_else(|| panic!("no plan line for {host}:\n{screen}"))
        .to_owned()
}

#[test]
fn converge_from_the_versions_view() {
    if !support::live_test_or_skip("converge_console", &[Need::Sshd, Need::Tmux]) {
        return;
    }
    let Some(server) = SshServer::builder()
        .listen_also(LOOPBACK_2)
        .start_or_skip("converge_console")
    else {
        return;
    };
    let home = Home::trusting(&server);
    let dest = support::scratch_dir("converge_console");
    let proxy = FaultProxy::start_on(LOOPBACK_3, server.addr());
    let mut kh = std::fs::read_to_string(home.path(".ssh/known_hosts")).unwrap();
    kh.push_str(&server.host_keys()[0].known_hosts_line(proxy.addr()));
    kh.push('\n');
    std::fs::write(home.path(".ssh/known_hosts"), kh).unwrap();
    let port = server.port();
    let d = dest.as_str();
    home.write(
        "dispatch.cfg",
        format!(
            "[app-(?P<version>[0-9.]+)\\.tgz]\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\n\
             timeout = 10s\nhost = 127.0.0.1:{port}, 127.0.0.2:{port}, {proxy}\n\
             dest_dir = {d}/app/{{host}}\nlock_path = {d}/app/{{host}}.lock\n\
             upgrade = echo upgrading-to-{{version}}-on-{{host}}; echo {{version}} > {{dir}}/.version\n\
             version_cmd = cat {d}/app/{{host}}/.version\n",
            proxy = proxy.addr()
        ),
    );
    let (a, b, c) = ("127.0.0.1", "127.0.0.2", "127.0.0.3");
    for v in ["1.0", "1.2"] {
        let name = format!("app-{v}.tgz");
        let file = home.write(&name, format!("bundle {name}\n").repeat(40));
        let o = home.run(&[
            "--config",
            "dispatch.cfg",
            "--dispatch",
            file.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    assert_eq!(
        [version(&dest, a), version(&dest, b), version(&dest, c)],
        ["1.2"; 3]
    );
    // Rolled back by hand, outside dropship; the file shipped last is gone (the store has it).
    set_version(&dest, b, "1.1");
    set_version(&dest, c, "1.0");
    std::fs::remove_file(home.path("app-1.2.tgz")).unwrap();
    let before = history(&home).len();

    let mut cmd = String::from("env");
    for v in CLEARED_ENV.iter().chain(&["NO_COLOR", "DROPSHIP_THEME"]) {
        cmd.push_str(&format!(" -u {v}"));
    }
    cmd.push_str(&format!(
        " HOME={h} XDG_STATE_HOME={s} XDG_DATA_HOME={data} XDG_CONFIG_HOME={h}/.config {bin} --config {cfg}; echo EXITED $?; sleep 30",
        h = sh_quote(home.root()),
        s = sh_quote(&home.path("state")),
        data = sh_quote(&home.path("data")),
        bin = sh_quote(Path::new(env!("CARGO_BIN_EXE_dropship"))),
        cfg = sh_quote(&home.path("dispatch.cfg")),
    ));
    let tmux = Tmux::start("converge_console", &cmd, 140, 40);
    tmux.wait_for(&["Dispatches"], 20);
    tmux.keys(&["F"]);
    tmux.wait_for(&["following (F)"], 10);

    // The Versions view, then `c`: the plan, read from the hosts off the UI thread.
    tmux.keys(&["v"]);
    tmux.wait_for(&["c converge", "!behind"], 30);
    tmux.keys(&["c"]);
    let screen = tmux.wait_for(&["Converge?", "reach 1.2", "[ Cancel ]"], 30);
    assert!(line_of(&screen, a).contains("left out"), "{screen}");
    assert!(line_of(&screen, a).contains("runs it already"), "{screen}");
    let lb = line_of(&screen, b);
    assert!(
        lb.contains("gets it") && lb.contains("runs 1.1"),
        "{screen}"
    );
    let lc = line_of(&screen, c);
    assert!(
        lc.contains("gets it") && lc.contains("runs 1.0"),
        "{screen}"
    );
    assert!(screen.contains("2 host(s) get a bundle"), "{screen}");

    // Enter presses the default, Cancel: nothing changes on the hosts or in the journal.
    tmux.keys(&["Enter"]);
    tmux.wait_gone(&["Converge?"], 10);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        [version(&dest, a), version(&dest, b), version(&dest, c)],
        ["1.2", "1.1", "1.0"]
    );
    assert_eq!(history(&home).len(), before);

    // `:converge app`, confirmed: 1.2 to exactly the two hosts that differ, live in
    // Dispatches and the log pane.
    tmux.keys(&["Escape"]);
    tmux.keys(&[":"]);
    tmux.text("converge app");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["Converge?", "[ Converge ]"], 30);
    tmux.keys(&["Right"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["app-1.2.tgz", "2/2 ok", "upgrading-to-1.2-on-127.0.0."],
        60,
    );
    assert_eq!(
        [version(&dest, a), version(&dest, b), version(&dest, c)],
        ["1.2"; 3]
    );

    // Converged: a second converge says so and starts nothing.
    tmux.keys(&[":"]);
    tmux.text("converge");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["nothing to converge"], 30);

    // `:run COMMAND` without TARGETS: on the host selected in Hosts (the first, 127.0.0.1).
    tmux.keys(&["1"]);
    tmux.keys(&[":"]);
    tmux.text("run echo selected-is-{host}");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for(&["(run)", "selected-is-127.0.0.1", "1/1 ok"], 30);
    assert!(!screen.contains("selected-is-127.0.0.2"), "{screen}");

    // The goal bundle gone from the store: the error, and nothing starts.
    std::fs::remove_dir_all(home.path("data/dropship/store")).unwrap();
    set_version(&dest, b, "1.1");
    tmux.keys(&[":"]);
    tmux.text("converge app");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for(&["not in the bundle store"], 30);
    assert!(!screen.contains("Converge?"), "{screen}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(version(&dest, b), "1.1");

    tmux.keys(&["q"]);
    tmux.wait_for(&["EXITED 0"], 20);
    let h = history(&home);
    assert_eq!(h.len(), before + 2, "{h:?}");
    assert_eq!(h[0]["hosts"].as_u64(), Some(1), "the run: {h:?}");
    assert_eq!(h[1]["bundle"], "app-1.2.tgz");
    assert_eq!(
        (h[1]["hosts"].as_u64(), h[1]["succeeded"].as_u64()),
        (Some(2), Some(2)),
        "{h:?}"
    );
}
