//! Headless runs have a log file, and the warnings that matter reach the user too: a
//! `--dispatch` under `host_key = accept-new` to a host never seen says on stderr that it
//! accepted and recorded the key, writes the same to `$XDG_STATE_HOME/dropship/dropship.log`,
//! and the rule's password appears in neither the log nor the output, even at trace level.

mod support;

use support::home::{Home, text};
use support::{TEST_PASSWORD, TEST_USER};

#[test]
fn accept_new_warns_on_stderr_and_in_the_log_file_without_secrets() {
    let Some(server) = support::ssh_server_or_skip("headless_log") else {
        return;
    };
    let dest = support::scratch_dir("headless_log");
    // No ~/.ssh/known_hosts: the host is new.
    let home = Home::new();
    let cfg = home.write(
        "dispatch.cfg",
        format!(
            "[app-.*\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ndest_dir = {d}\nlock_path = {d}/.dropship.lock\ntimeout = 10s\nhost_key = accept-new\nupgrade = echo upgraded\n",
            server.addr(),
            d = dest.as_str()
        ),
    );
    let bundle = home.write("app-1.0.tgz", vec![7u8; 10_000]);
    let dispatch = || {
        home.command(&[
            "--config",
            cfg.to_str().unwrap(),
            "--dispatch",
            bundle.to_str().unwrap(),
        ])
        // Everything dropship traces, at its most verbose.
        .env("DROPSHIP_LOG", "trace")
        .output()
        .unwrap()
    };
    let log_path = home.path("state").join("dropship").join("dropship.log");
    let entry = format!("[{}]:{}", server.addr().ip(), server.port());

    let first = dispatch();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let stderr = String::from_utf8_lossy(&first.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.contains("accepted new host key"))
        .unwrap_or_else(|| panic!("no warning on stderr:\n{}", text(&first)));
    assert!(
        warning.contains("warning") && warning.contains(&entry) && warning.contains("SHA256:"),
        "{warning}"
    );
    let log = std::fs::read_to_string(&log_path)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", log_path.display(), text(&first)));
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("accepted new host key")
            && l.contains(&entry)),
        "the log file lacks the warning:\n{log}"
    );
    assert!(log.contains("dropship started"), "{log}");

    // Recorded now: a second dispatch trusts the key and says nothing about it.
    let second = dispatch();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert!(
        !String::from_utf8_lossy(&second.stderr).contains("accepted new host key"),
        "{}",
        text(&second)
    );

    let log = std::fs::read_to_string(&log_path).unwrap();
    for (what, bytes) in [
        ("the log file", log.as_bytes()),
        ("stdout", &first.stdout[..]),
        ("stderr", &first.stderr[..]),
    ] {
        assert!(
            !String::from_utf8_lossy(bytes).contains(TEST_PASSWORD),
            "the password is in {what}"
        );
    }
}
