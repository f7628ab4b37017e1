//! End to end: the console's log views in a real terminal (tmux) against three hosts (three
//! loopback addresses of the real sshd of tests/support). The upgrade prints colours, a tab
//! table, a `\r` progress line (which must read as one line, its last state, as on a
//! terminal) and a title escape; the second host fails with exit 3. We
//! read the one-host log, the result lines, all hosts with tags and filters, split, diff,
//! and the log search, as the user would see them (`capture-pane`, with `-e` for colour).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Need, TEST_PASSWORD, TEST_USER};

use support::tmux::{Tmux, sh_quote};

/// The upgrade: colours, a tab table, a progress line redrawn with `\r`, a title escape;
/// 127.0.0.2 then fails with exit 3, the others end with "all good".
const UPGRADE: &str = r#"printf '\033[32mOK\033[0m\tdone\n'; printf 'name\tstate\n'; printf 'copy 1/3\rcopy 2/3\rcopy 3/3 done\n'; printf 'x\033]0;PWNED\007y\n'; if [ "$(echo $SSH_CONNECTION | cut -d' ' -f3)" = 127.0.0.2 ]; then echo disk full >&2; exit 3; fi; echo all good"#;

#[test]
fn log_views_of_three_hosts_in_a_real_terminal() {
    if !support::live_test_or_skip("tui_logs_e2e", &[Need::Sshd, Need::Tmux]) {
        return;
    }
    let Some(server) = support::SshServer::builder()
        .listen_also(std::net::Ipv4Addr::new(127, 0, 0, 2))
        .listen_also(std::net::Ipv4Addr::new(127, 0, 0, 3))
        .start_or_skip("tui_logs_e2e")
    else {
        return;
    };
    let addrs: Vec<String> = server.addrs().iter().map(|a| a.to_string()).collect();
    // The console names a host by its address without the port.
    let hosts: Vec<String> = server.addrs().iter().map(|a| a.ip().to_string()).collect();
    let home = tempfile::tempdir().unwrap();
    let dest = support::scratch_dir("tui_logs_e2e");
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    server.write_known_hosts(&home.path().join(".ssh/known_hosts"));
    let cfg: PathBuf = home.path().join("dispatch.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[app-.*\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\n\
             dest_dir = {d}/{{host}}\nlock_path = {d}/.lock-{{host}}\ntimeout = 10s\nupgrade = {UPGRADE}\n",
            addrs.join(", "),
            d = dest.as_str()
        ),
    )
    .unwrap();
    let bundle = home.path().join("app-1.0.tgz");
    std::fs::write(&bundle, vec![7u8; 10_000]).unwrap();
    let cmd = format!(
        "env -u DROPSHIP_CONFIG -u NETRC -u SSH_AUTH_SOCK -u NO_COLOR -u DROPSHIP_THEME HOME={h} XDG_STATE_HOME={h}/state XDG_CONFIG_HOME={h}/.config {bin} --config {cfg}; echo EXITED $?; sleep 30",
        h = sh_quote(home.path()),
        bin = sh_quote(Path::new(env!("CARGO_BIN_EXE_dropship"))),
        cfg = sh_quote(&cfg),
    );
    let tmux = Tmux::start("views", &cmd, 160, 48);
    tmux.wait_for(&["Dispatches 0"], 20);
    tmux.keys(&[":"]);
    tmux.text(&format!("dispatch {}", bundle.display()));
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["Dispatch?", "[ Dispatch ]"], 10);
    tmux.keys(&["Tab"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["2/3 ok, 1 failed"], 60);

    // The first host's log: colour shown (green, no `[32m`), tabs expanded, the title
    // escape gone, the step's result line.
    tmux.keys(&["5"]);
    let s = tmux.wait_for(&["OK      done", "── upgrade: ok after"], 10);
    assert!(s.contains("name    state"), "{s}");
    // The progress line as a terminal leaves it: one line, its last state.
    assert!(s.contains("copy 3/3 done"), "{s}");
    assert!(!s.contains("copy 1/3") && !s.contains("copy 2/3"), "{s}");
    assert_eq!(s.matches("copy ").count(), 1, "{s}");
    assert!(s.contains("xy"), "{s}");
    // (The step's marker quotes the command, `\033[32m` as text: not output.)
    assert!(
        s.lines()
            .filter(|l| !l.contains("── upgrade: printf"))
            .all(|l| !l.contains("[32m") && !l.contains("PWNED")),
        "{s}"
    );
    let sgr = tmux.screen_sgr();
    assert!(
        // tmux writes green as 32 or as palette colour 2.
        sgr.contains("\u{1b}[32mOK") || sgr.contains("\u{1b}[38;5;2mOK"),
        "OK is not green on the terminal:\n{sgr:?}"
    );

    // All hosts: every host's lines, tagged, in arrival order.
    tmux.keys(&["A"]);
    // (Waiting for every host's line too: a capture can catch the frame half drawn.)
    let oks: Vec<String> = hosts
        .iter()
        .map(|h| format!("{h} │ OK      done"))
        .collect();
    let mut want = vec!["Log all hosts #1"];
    want.extend(oks.iter().map(String::as_str));
    let s = tmux.wait_for(&want, 10);
    for h in &hosts {
        assert!(s.contains(&format!("{h} │ OK      done")), "{h}: {s}");
    }
    assert!(s.contains(&format!("{} │ disk full", hosts[1])), "{s}");
    for h in &hosts {
        assert_eq!(
            s.matches(&format!("{h} │ copy ")).count(),
            1,
            "{h}'s progress is not one line: {s}"
        );
        assert!(s.contains(&format!("{h} │ copy 3/3 done")), "{h}: {s}");
    }
    assert!(
        s.contains(&format!("{} │ ── upgrade: exit 3 after", hosts[1])),
        "{s}"
    );
    // `/` keeps the lines containing a text; Esc clears it.
    tmux.keys(&["/"]);
    // ("xy" is in the output only: step markers quote the command, "all good" included.)
    tmux.text("xy");
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for(&["3 lines with /xy"], 10);
    assert!(!s.contains("disk full") && !s.contains("── upgrade"), "{s}");
    tmux.keys(&["Escape"]);
    tmux.wait_for(&["disk full"], 10);
    // `]` keeps one host.
    tmux.keys(&["]"]);
    let s = tmux.wait_for(&[&format!("host {}", hosts[0])], 10);
    assert!(!s.contains(&format!("{} │", hosts[1])), "{s}");
    tmux.keys(&["Escape"]);
    tmux.wait_for(&[&format!("{} │", hosts[1])], 10);

    // Split: the three hosts side by side.
    tmux.keys(&["S"]);
    let s = tmux.wait_for(
        &[
            "Log split #1 · 3 hosts",
            "disk full",
            "all good",
            "copy 3/3 done",
        ],
        10,
    );
    assert!(
        s.lines()
            .any(|l| l.contains("disk full") && l.contains("all good")),
        "the failing host's error beside another host's result:\n{s}"
    );
    // Each column shows the progress line once, in its last state.
    assert!(
        s.lines().any(|l| l.matches("copy 3/3 done").count() == 3),
        "{s}"
    );
    assert!(!s.contains("copy 1/3") && !s.contains("copy 2/3"), "{s}");

    // Diff: the failing host against the majority.
    tmux.keys(&["]"]);
    tmux.keys(&["D"]);
    let s = tmux.wait_for(&[&format!("Log diff {} vs majority", hosts[1])], 10);
    assert!(s.contains("+ disk full"), "{s}");
    assert!(s.contains("- all good"), "{s}");
    assert!(
        s.contains(&format!(
            "differs from 2 of 3 hosts ({}, {})",
            hosts[0], hosts[2]
        )),
        "{s}"
    );

    // Back to one host; search: count, n, Esc clears without moving focus, empty does nothing.
    tmux.keys(&["D"]);
    tmux.wait_for(&[&format!("Log {} #1", hosts[1])], 10);
    tmux.keys(&["/"]);
    tmux.text("o");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["/o 1/"], 10);
    tmux.keys(&["n"]);
    tmux.wait_for(&["/o 2/"], 10);
    tmux.keys(&["Escape"]);
    let s = tmux.wait_gone(&["/o "], 10);
    let hint = s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(
        hint.trim_start().starts_with("Log"),
        "focus moved: {hint}\n{s}"
    );
    tmux.keys(&["/"]);
    tmux.keys(&["Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    let s = tmux.screen();
    assert!(!s.contains("not found"), "{s}");

    tmux.keys(&["q"]);
    let after = tmux.wait_for(&["EXITED"], 10);
    assert!(!after.contains("panicked"), "{after}");
}
