//! `dropship --dispatch`, `--resume` and `--history` through the real binary against the
//! real sshd: exit codes, output modes, dry runs, Ctrl-C, `kill -9` and resume, URLs.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use support::home::{Home, text};
use support::{SshServer, TEST_PASSWORD, TEST_USER};

/// A private HOME, state dir and config for one test.
struct Env {
    home: Home,
    dest: support::ScratchDir,
}

impl Env {
    fn new(test: &str, server: &SshServer) -> Env {
        Env {
            home: Home::trusting(server),
            dest: support::scratch_dir(test),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path(name)
    }

    fn config(&self, server: &SshServer, keys: &str) -> PathBuf {
        let text = format!(
            "[app-.*\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ndest_dir = {d}\nlock_path = {d}/.dropship.lock\ntimeout = 10s\n{keys}\n",
            server.addr(),
            d = self.dest.as_str()
        );
        self.home.write("dispatch.cfg", text)
    }

    fn bundle(&self, name: &str) -> PathBuf {
        self.home.write(name, vec![7u8; 300_000])
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.home.command(args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.home.run(args)
    }
}

#[test]
fn dispatch_plain_output_and_exit_codes() {
    let Some(server) = support::ssh_server_or_skip("cli_dispatch") else {
        return;
    };
    let env = Env::new("cli_dispatch", &server);
    let cfg = env.config(&server, "upgrade = echo hello from {host}; echo warn >&2");
    let cfg = cfg.to_str().unwrap();
    let bundle = env.bundle("app-1.0.tgz");
    let o = env.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("[127.0.0.1] hello from 127.0.0.1"),
        "{}",
        text(&o)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("[127.0.0.1] warn"));
    assert!(out.contains("succeeded"), "{}", text(&o));
    assert!(
        !out.contains(TEST_PASSWORD) && !String::from_utf8_lossy(&o.stderr).contains(TEST_PASSWORD)
    );
    assert!(env.dest.join("app-1.0.tgz").is_file());

    // A failing upgrade: exit 1, rollback ran.
    let cfg2 = env.config(&server, "upgrade = exit 4\nrollback = echo rolling back");
    let o = env.run(&[
        "--config",
        cfg2.to_str().unwrap(),
        "--dispatch",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("rolling back"),
        "{}",
        text(&o)
    );

    // No rule: 3. Missing bundle file: 2.
    let none = env.bundle("other-1.zip");
    let o = env.run(&["--config", cfg, "--dispatch", none.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = env.run(&["--config", cfg, "--dispatch", "app-9.9.tgz"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("app-9.9.tgz"));

    // History lists both dispatches, newest first, as JSON too.
    let o = env.run(&["--history", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["failed"], 1);
    assert_eq!(rows[1]["succeeded"], 1);
}

#[test]
fn json_events_and_dry_run() {
    let Some(server) = support::ssh_server_or_skip("cli_json") else {
        return;
    };
    let env = Env::new("cli_json", &server);
    let cfg = env.config(&server, "upgrade = echo one; echo two");
    let cfg = cfg.to_str().unwrap();
    let bundle = env.bundle("app-2.0.tgz");

    let o = env.run(&[
        "--config",
        cfg,
        "--dispatch",
        bundle.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("app-2.0.tgz"));
    assert!(!env.dest.join("app-2.0.tgz").exists(), "a dry run shipped");
    assert!(
        !env.path("state/dropship/journal.sqlite").exists(),
        "a dry run wrote the journal"
    );

    let o = env.run(&[
        "--config",
        cfg,
        "--dispatch",
        bundle.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"dispatch_started"));
    assert_eq!(kinds.last(), Some(&"dispatch_finished"));
    let lines: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "output")
        .map(|e| e["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["one", "two"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains(TEST_PASSWORD));
    // A bundle never hashed before: it is hashed while it ships, and its digest is
    // announced (and journaled) before the host's verification that used it.
    let sha = dropship::transport::local_sha256(&bundle, None).unwrap();
    let at = |want: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .iter()
            .position(want)
            .unwrap_or_else(|| panic!("{events:?}"))
    };
    let hashed = at(&|e| e["event"] == "bundle_hashed");
    let verified = at(&|e| e["event"] == "transfer" && e["transfer"]["kind"] == "verified");
    assert!(hashed < verified, "{events:?}");
    assert_eq!(events[hashed]["sha256"], sha.as_str());
    assert_eq!(events[verified]["transfer"]["sha256"], sha.as_str());
    let journal =
        dropship::journal::Journal::open(&env.path("state/dropship/journal.sqlite")).unwrap();
    let id = events[0]["dispatch"].as_i64().unwrap();
    let detail = journal.dispatch(id).unwrap().unwrap();
    assert_eq!(detail.record.bundle_sha256, sha);
}

/// Reads the child's stdout until a line is exactly `needle` (not merely the echoed
/// command that contains it).
fn wait_for_line(child: &mut Child, needle: &str) -> Vec<String> {
    let out = child.stdout.as_mut().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        let found = line == needle;
        seen.push(line);
        if found {
            return seen;
        }
    }
    panic!("`{needle}` never printed: {seen:?}");
}

#[test]
fn kill_9_then_resume_finishes_without_reuploading() {
    let Some(server) = support::ssh_server_or_skip("cli_resume") else {
        return;
    };
    let env = Env::new("cli_resume", &server);
    // The first upgrade hangs (and is killed with us); a rerun finds the marker.
    let marker = env.dest.join("marker");
    let cfg = env.config(
        &server,
        &format!(
            "upgrade = if [ -e {m} ]; then echo second run; else touch {m}; echo first run; sleep 60; fi\npost = echo post ran",
            m = marker.display()
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let bundle = env.bundle("app-3.0.tgz");
    let mut child = env
        .cmd(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "[127.0.0.1] first run");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let uploaded = env.dest.join("app-3.0.tgz");
    let inode = std::fs::metadata(&uploaded).unwrap().ino();

    let o = env.run(&["--history", "--json"]);
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(row["state"], "interrupted", "{row}");
    let id = row["id"].to_string();

    // Without --force the upgrade's outcome is unknown: not rerun, exit 1.
    let o = env.run(&["--config", cfg, "--resume", &id]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("outcome unknown"), "{all}");
    assert!(!all.contains("[127.0.0.1] second run"), "{all}");

    // With --force it reruns the upgrade, then post; the verified upload is not redone.
    let o = env.run(&["--config", cfg, "--resume", &id, "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("[127.0.0.1] second run\n") && out.contains("[127.0.0.1] post ran\n"),
        "{}",
        text(&o)
    );
    assert!(
        !out.contains("==> upload"),
        "the upload was redone: {}",
        text(&o)
    );
    assert_eq!(
        std::fs::metadata(&uploaded).unwrap().ino(),
        inode,
        "file replaced"
    );
    let o = env.run(&["--history", "--json"]);
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(row["state"], "finished", "{row}");
}

#[test]
fn ctrl_c_cancels_cleanly() {
    let Some(server) = support::ssh_server_or_skip("cli_ctrl_c") else {
        return;
    };
    let env = Env::new("cli_ctrl_c", &server);
    let pidfile = env.dest.join("pid");
    let cfg = env.config(
        &server,
        &format!(
            "upgrade = if [ -e {p} ]; then echo resumed; else echo $$ > {p}; echo started; exec sleep 60; fi\npost = echo post ran",
            p = pidfile.display()
        ),
    );
    let bundle = env.bundle("app-4.0.tgz");
    let mut child = env
        .cmd(&[
            "--config",
            cfg.to_str().unwrap(),
            "--dispatch",
            bundle.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "[127.0.0.1] started");
    let sigint = |c: &Child| unsafe {
        libc::kill(c.id() as i32, libc::SIGINT);
    };
    // First Ctrl-C: no new steps, running ones get a grace period; second: stop now.
    sigint(&child);
    std::thread::sleep(Duration::from_millis(300));
    sigint(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        support::wait_until(Duration::from_secs(10), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the remote command survived the cancel"
    );
    assert!(
        !env.dest.join(".dropship.lock").exists(),
        "the lock was not released"
    );
    let o = env.run(&["--history", "--json"]);
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(row["state"], "cancelled", "{row}");

    // The cancelled dispatch resumes: the killed upgrade has an unknown outcome, so it
    // needs --force; then upgrade and post run and the dispatch is finished.
    let id = row["id"].to_string();
    let cfg = cfg.to_str().unwrap();
    let o = env.run(&["--config", cfg, "--resume", &id]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("outcome unknown"), "{}", text(&o));
    let o = env.run(&["--config", cfg, "--resume", &id, "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("[127.0.0.1] resumed\n") && out.contains("[127.0.0.1] post ran\n"),
        "{out}"
    );
    let o = env.run(&["--config", cfg, "--resume", &id]);
    assert_eq!(o.status.code(), Some(2), "nothing left: {}", text(&o));
}

#[test]
fn url_bundles_are_fetched_and_checked() {
    let Some(server) = support::ssh_server_or_skip("cli_url") else {
        return;
    };
    let env = Env::new("cli_url", &server);
    let cfg = env.config(&server, "upgrade = sha256sum {path}");
    let cfg = cfg.to_str().unwrap();
    let www = env.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("app-5.0.tgz"), b"bundle five").unwrap();
    let good = dropship::transport::local_sha256(&www.join("app-5.0.tgz"), None).unwrap();
    std::fs::write(
        www.join("app-5.0.tgz.sha256"),
        format!("{good}  app-5.0.tgz\n"),
    )
    .unwrap();
    std::fs::write(www.join("app-6.0.tgz"), b"bundle six").unwrap();
    std::fs::write(
        www.join("app-6.0.tgz.sha256"),
        format!("{good}  app-6.0.tgz\n"),
    )
    .unwrap();

    let port = support::ports::reserve(1, &[std::net::Ipv4Addr::LOCALHOST]).first();
    let mut http = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(support::wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let url = format!("http://127.0.0.1:{port}/app-5.0.tgz");
    let o = env.run(&["--config", cfg, "--dispatch", &url]);
    let bad = env.run(&[
        "--config",
        cfg,
        "--dispatch",
        &format!("http://127.0.0.1:{port}/app-6.0.tgz"),
    ]);
    let _ = http.kill();
    let _ = http.wait();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&good),
        "{}",
        text(&o)
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("SHA-256"),
        "{}",
        text(&bad)
    );
    assert!(!env.dest.join("app-6.0.tgz").exists());
}

/// The README's first command: the example config ships the demo bundle with no server.
#[test]
fn readme_demo_ships_without_a_server() {
    let home = Home::new();
    // Run from the checkout, where the README's relative paths point.
    let o = home
        .command(&[
            "--config",
            "dispatch.cfg.example",
            "--dispatch",
            "demo/app-1.4.2.tgz",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for host in ["web1", "web2"] {
        assert!(
            out.contains(&format!("[{host}] unpacked app-1.4.2.tgz on {host}")),
            "{out}"
        );
    }
    let current = Path::new("/tmp/dropship-demo/web1/current/app/VERSION");
    assert_eq!(std::fs::read_to_string(current).unwrap().trim(), "1.4.2");
}

/// Writes `text` to `path` with mode 0600 (netrc, ssh config).
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A rule for `host` with no credentials of its own: they come from elsewhere.
fn bare_config(env: &Env, host: &str, keys: &str) -> PathBuf {
    let p = env.path("bare.cfg");
    std::fs::write(
        &p,
        format!(
            "[app-.*\\.tgz]\nhost = {host}\nprotocol = sftp\ndest_dir = {d}\nlock_path = {d}/.lock\ntimeout = 10s\nupgrade = id -un\n{keys}\n",
            d = env.dest.as_str()
        ),
    )
    .unwrap();
    p
}

#[test]
fn ssh_config_supplies_address_port_user_and_key() {
    let Some(server) = support::ssh_server_or_skip("cli_ssh_config") else {
        return;
    };
    let env = Env::new("cli_ssh_config", &server);
    let keys = support::test_keys();
    write_private(
        &env.path(".ssh/config"),
        &format!(
            "Host webx\n  HostName 127.0.0.1\n  Port {}\n  User {TEST_USER}\n  IdentityFile {}\n",
            server.port(),
            keys.plain.display()
        ),
    );
    let cfg = bare_config(&env, "webx", "");
    let cfg = cfg.to_str().unwrap();
    let o = env.run(&["--config", cfg, "--plan", "app-1.tgz", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["targets"][0]["login"], TEST_USER);
    assert_eq!(plan["targets"][0]["port"], server.port());
    let bundle = env.bundle("app-1.tgz");
    let o = env.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("[webx] {TEST_USER}")));
}

#[test]
fn key_with_passphrase_from_netrc_and_ssh_agent() {
    let Some(server) = support::ssh_server_or_skip("cli_key_agent") else {
        return;
    };
    let env = Env::new("cli_key_agent", &server);
    let keys = support::test_keys();
    let host = server.addr().to_string();
    let bundle = env.bundle("app-2.tgz");

    // The encrypted key, unlocked by the netrc password of the host.
    write_private(
        &env.path(".netrc"),
        &format!(
            "machine 127.0.0.1 login {TEST_USER} password \"{}\"\n",
            keys.passphrase
        ),
    );
    let cfg = bare_config(
        &env,
        &host,
        &format!("key = {}\nkey_passphrase = netrc", keys.encrypted.display()),
    );
    let o = env.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--dispatch",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains(keys.passphrase), "passphrase leaked");
    std::fs::remove_file(env.path(".netrc")).unwrap();

    // No password, no key: refused at once, naming what was tried.
    let cfg = bare_config(&env, &host, &format!("login = {TEST_USER}"));
    let cfg = cfg.to_str().unwrap();
    let o = env.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no password, no key file, no ssh-agent"),
        "{}",
        text(&o)
    );

    // The same rule through an ssh-agent holding the key.
    let sock = env.path("agent.sock");
    let agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(agent);
    assert!(support::wait_until(Duration::from_secs(5), || sock.exists()));
    let added = Command::new("ssh-add")
        .arg(&keys.plain)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let o = env
        .cmd(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()])
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
