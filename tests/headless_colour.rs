//! Remote output in headless `--dispatch`, from a real sshd: a command printing colours, a
//! tab, a `\r` progress line and escape sequences that would set the title and clear the
//! screen. A pipe gets plain text (no escape at all, the tab kept; a `\r` progress line
//! only in its final state, one line); a terminal (a pty from `script`) gets the colours as SGR and nothing else
//! from the remote side; `--json` and the journal keep the line exactly as it came.

mod support;

use dropship::engine::events::Step;
use support::home::{Home, text};
use support::{TEST_PASSWORD, TEST_USER};

/// What the upgrade prints (as printf sees it in dispatch.cfg).
const PRINTF: &str = r"printf '\033[32mOK\033[0m\tdone\n'; printf 'copy 10\rcopy 50\rcopy 99 finished\n'; printf 'x\033]0;PWNED\007\033[2Jy\n'";

/// The first line as it arrives, raw.
const RAW_OK: &str = "\u{1b}[32mOK\u{1b}[0m\tdone";

fn setup(home: &Home, server: &support::SshServer) -> (String, String) {
    let dest = support::scratch_dir("headless_colour");
    let cfg = home.write(
        "dispatch.cfg",
        format!(
            "[app-.*\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ndest_dir = {d}\nlock_path = {d}/.dropship.lock\ntimeout = 10s\nupgrade = {PRINTF}\n",
            server.addr(),
            d = dest.as_str()
        ),
    );
    let bundle = home.write("app-1.0.tgz", vec![7u8; 1_000]);
    (
        cfg.to_str().unwrap().to_owned(),
        bundle.to_str().unwrap().to_owned(),
    )
}

#[test]
fn a_pipe_gets_plain_text_a_terminal_gets_colours_only_json_and_journal_keep_it_raw() {
    let Some(server) = support::ssh_server_or_skip("headless_colour") else {
        return;
    };
    let home = Home::trusting(&server);
    let (cfg, bundle) = setup(&home, &server);

    // A pipe: no escape at all.
    let o = home.run(&["--config", &cfg, "--dispatch", &bundle]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.stdout.contains(&0x1b) && !o.stderr.contains(&0x1b),
        "an escape reached a pipe: {}",
        text(&o)
    );
    assert!(out.contains("] OK\tdone\n"), "{}", text(&o));
    // The progress line: its final state only, as one line.
    assert!(out.contains("] copy 99 finished\n"), "{}", text(&o));
    assert_eq!(out.matches("] copy ").count(), 1, "{}", text(&o));
    assert!(out.contains("] xy\n"), "{}", text(&o));
    // The command echoed by `==>` quotes PWNED as text; no output line carries it.
    assert!(
        out.lines()
            .all(|l| l.contains("==>") || !l.contains("PWNED")),
        "{}",
        text(&o)
    );
    assert!(out.contains("<== upgrade: ok after"), "{}", text(&o));

    // A terminal: `script` gives dropship a pty for stdout and stderr.
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let cmd = [
        env!("CARGO_BIN_EXE_dropship"),
        "--config",
        &cfg,
        "--dispatch",
        &bundle,
    ]
    .iter()
    .map(|a| quote(a))
    .collect::<Vec<_>>()
    .join(" ");
    let mut script = std::process::Command::new("script");
    script
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .current_dir(home.root())
        .env("HOME", home.root())
        .env("XDG_STATE_HOME", home.path("state"))
        .stdin(std::process::Stdio::null());
    for var in support::home::CLEARED_ENV {
        script.env_remove(var);
    }
    let o = script.output().expect("script(1) runs");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let tty = String::from_utf8_lossy(&o.stdout);
    // The colour, rendered by us; the tab expanded to the next stop.
    assert!(
        tty.contains("\u{1b}[32mOK\u{1b}[0m      done"),
        "no green OK on the terminal: {tty:?}"
    );
    assert!(tty.contains("copy 99 finished"), "{tty:?}");
    // Earlier states are not printed as lines (they may show in the host's bar).
    assert!(
        tty.lines()
            .all(|l| !l.trim_end().ends_with("] copy 10") && !l.trim_end().ends_with("] copy 50")),
        "{tty:?}"
    );
    // Nothing else of the remote's: no title, no clear screen.
    assert!(
        tty.lines()
            .all(|l| l.contains("==>") || !l.contains("PWNED")),
        "{tty:?}"
    );
    assert!(!tty.contains("\u{1b}]"), "{tty:?}");
    assert!(!tty.contains("\u{1b}[2J"), "{tty:?}");

    // --json keeps the raw line (as JSON escapes).
    let o = home.run(&["--config", &cfg, "--dispatch", &bundle, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let line = events
        .iter()
        .find(|e| e["event"] == "output" && e["line"].as_str().is_some_and(|l| l.contains("OK")))
        .unwrap_or_else(|| panic!("no output event: {}", text(&o)));
    assert_eq!(line["line"], RAW_OK);
    // Every progress state, raw: the CR-ended ones keep their `\r`.
    let states: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "output")
        .filter_map(|e| e["line"].as_str())
        .filter(|l| l.starts_with("copy"))
        .collect();
    assert_eq!(states, ["copy 10\r", "copy 50\r", "copy 99 finished"]);
    let host = line["host"].as_str().unwrap().to_owned();
    let id = line["dispatch"].as_i64().unwrap();

    // And so does the journal.
    let journal = dropship::journal::Journal::open(
        &home.path("state").join("dropship").join("journal.sqlite"),
    )
    .unwrap();
    let lines = journal.output(id, &host, Step::Upgrade).unwrap();
    assert!(
        lines.iter().any(|l| l.line == RAW_OK),
        "{:?}",
        lines.iter().map(|l| &l.line).collect::<Vec<_>>()
    );
    assert!(
        lines.iter().any(|l| l.line == "copy 50\r"),
        "{:?}",
        lines.iter().map(|l| &l.line).collect::<Vec<_>>()
    );
}
