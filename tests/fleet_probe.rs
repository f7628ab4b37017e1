//! `dropship --probe` through the real binary against the real sshd and vsftpd: everything
//! fine, a wrong password, unknown and changed host keys, a dest dir that is not writable, a
//! missing program, a held lock, an unreachable port; and the console's cheap reachability
//! probe through the library.

mod support;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use support::home::{Home, text};
use support::{FtpServer, ScratchDir, SshServer, TEST_PASSWORD, TEST_USER};

/// A private HOME (with or without known_hosts), state dir and config for one test.
struct Env {
    home: Home,
    dest: ScratchDir,
}

impl Env {
    fn new(test: &str) -> Env {
        let home = Home::new();
        home.ssh_dir();
        Env {
            home,
            dest: support::scratch_dir(test),
        }
    }

    fn known(self, server: &SshServer) -> Env {
        self.home.trust(server);
        self
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path(name)
    }

    fn config(&self, text: &str) -> PathBuf {
        self.home.write("dispatch.cfg", text)
    }

    /// An sftp rule for `server`'s 127.0.0.1 address with `extra` lines.
    fn sftp_rule(&self, port: u16, extra: &str) -> String {
        format!(
            "[app-(?P<version>[0-9.]+)\\.tgz]\nhost = 127.0.0.1:{port}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ndest_dir = {d}/releases/{{version}}\nlock_path = {d}/.dropship.lock\ntimeout = 10s\n{extra}\n",
            d = self.dest.as_str()
        )
    }

    fn run(&self, args: &[&str]) -> Output {
        self.home.run(args)
    }

    /// `--probe --json` with the config: the exit code and one object per host.
    fn probe_json(&self, args: &[&str]) -> (Option<i32>, Vec<Value>, Output) {
        let mut all = vec!["--config", "dispatch.cfg", "--probe"];
        all.extend(args);
        all.push("--json");
        let o = self.run(&all);
        let hosts = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", text(&o))))
            .collect();
        (o.status.code(), hosts, o)
    }
}

/// The check `kind` of a host object.
fn check<'a>(host: &'a Value, kind: &str) -> &'a Value {
    host["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == kind)
        .unwrap_or_else(|| panic!("no check {kind} in {host:#}"))
}

fn status<'a>(host: &'a Value, kind: &str) -> &'a str {
    check(host, kind)["status"].as_str().unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn probe_everything_fine() {
    let Some(server) = support::ssh_server_or_skip("probe_everything_fine") else {
        return;
    };
    let env = Env::new("probe_fine").known(&server);
    env.dest.write_file(".version", b"1.4.2\n");
    std::fs::create_dir(env.dest.join("releases")).unwrap();
    support::user::chown_to_user(&env.dest.join("releases"));
    env.config(&env.sftp_rule(
        server.port(),
        &format!(
            "upgrade = cd {{dir}} && tar xzf {{path}} && LANG=C sha256sum -c x 2>&1 | tee log\nversion_cmd = cat {}/.version",
            env.dest.as_str()
        ),
    ));
    let before = listing(env.dest.path());
    let (code, hosts, o) = env.probe_json(&["app"]);
    assert_eq!(code, Some(0), "{}", text(&o));
    assert_eq!(hosts.len(), 1);
    let h = &hosts[0];
    for kind in [
        "reachable",
        "host_key",
        "login",
        "dest_dir",
        "programs",
        "lock",
    ] {
        assert_eq!(status(h, kind), "pass", "{kind}: {h:#}");
    }
    assert_eq!(h["version"], "1.4.2");
    assert_eq!(status(h, "version"), "pass");
    assert_eq!(
        check(h, "programs")["detail"],
        "found tar, sha256sum, tee, cat"
    );
    // The bundle-dependent part of dest_dir is named, and its fixed part was probed.
    let notes = check(h, "dest_dir")["notes"].to_string();
    assert!(notes.contains("releases"), "{notes}");
    // The login is described by its sources, never by the password.
    let login = check(h, "login")["detail"].as_str().unwrap();
    assert!(login.contains("password from dispatch.cfg"), "{login}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains(TEST_PASSWORD));
    // Nothing left behind: the probe file is gone, nothing else was created.
    assert_eq!(listing(env.dest.path()), before);
    assert!(listing(&env.dest.join("releases")).is_empty());
    assert!(!env.path("state/dropship/known_hosts").exists());

    // The table form says the same.
    let o = env.run(&["--config", "dispatch.cfg", "--probe"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("1 host probed: 1 ok, 0 failed"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("127.0.0.1:") && l.contains("1.4.2")),
        "{out}"
    );
}

#[test]
fn probe_wrong_password() {
    let Some(server) = support::ssh_server_or_skip("probe_wrong_password") else {
        return;
    };
    let env = Env::new("probe_wrong_password").known(&server);
    let rule = env
        .sftp_rule(server.port(), "")
        .replace(TEST_PASSWORD, "Wr0ng;pass#word");
    env.config(&rule);
    let (code, hosts, o) = env.probe_json(&[]);
    assert_eq!(code, Some(1), "{}", text(&o));
    let h = &hosts[0];
    assert_eq!(status(h, "reachable"), "pass");
    assert_eq!(status(h, "host_key"), "pass");
    assert_eq!(status(h, "login"), "fail");
    let detail = check(h, "login")["detail"].as_str().unwrap();
    assert!(detail.contains("password from dispatch.cfg"), "{detail}");
    assert!(
        check(h, "login")["hint"]
            .as_str()
            .unwrap()
            .contains("netrc")
    );
    assert_eq!(status(h, "dest_dir"), "skip");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("Wr0ng"));

    let o = env.run(&["--config", "dispatch.cfg", "--probe"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("FAIL login:") && out.contains("help:"),
        "{out}"
    );
    assert!(!out.contains("Wr0ng"), "{out}");
}

#[test]
fn probe_unknown_and_changed_host_key() {
    let Some(server) = support::ssh_server_or_skip("probe_host_keys") else {
        return;
    };
    // No known_hosts at all: strict refuses.
    let env = Env::new("probe_host_keys");
    env.config(&env.sftp_rule(server.port(), ""));
    let (code, hosts, o) = env.probe_json(&[]);
    assert_eq!(code, Some(1), "{}", text(&o));
    assert_eq!(status(&hosts[0], "host_key"), "fail");
    assert!(
        check(&hosts[0], "host_key")["detail"]
            .as_str()
            .unwrap()
            .contains("not known"),
        "{:#}",
        hosts[0]
    );
    assert_eq!(status(&hosts[0], "login"), "skip");

    // accept-new: reported as new, and nothing is recorded by the probe.
    env.config(&env.sftp_rule(server.port(), "host_key = accept-new"));
    let (code, hosts, o) = env.probe_json(&[]);
    assert_eq!(code, Some(0), "{}", text(&o));
    assert_eq!(status(&hosts[0], "host_key"), "warn");
    assert_eq!(status(&hosts[0], "login"), "pass");
    assert!(!env.path("state/dropship/known_hosts").exists());
    assert!(
        std::fs::read_to_string(env.path(".ssh/known_hosts"))
            .unwrap_or_default()
            .is_empty()
    );

    // A different key on record for this address: refused under both policies.
    let other = SshServer::builder().start();
    let line = other.host_keys()[0].known_hosts_line(server.addr());
    std::fs::write(env.path(".ssh/known_hosts"), format!("{line}\n")).unwrap();
    let (code, hosts, o) = env.probe_json(&[]);
    assert_eq!(code, Some(1), "{}", text(&o));
    assert_eq!(status(&hosts[0], "host_key"), "fail");
    let detail = check(&hosts[0], "host_key")["detail"].as_str().unwrap();
    assert!(detail.contains("HOST KEY CHANGED"), "{detail}");
    assert_eq!(
        std::fs::read_to_string(env.path(".ssh/known_hosts")).unwrap(),
        format!("{line}\n")
    );

    // The different key in dropship's own file (where accept-new records keys): the probe
    // checks against a temporary copy, but what it says names the real file and how to fix
    // it, not the copy it has removed.
    std::fs::write(env.path(".ssh/known_hosts"), "").unwrap();
    let ours = env.path("state/dropship/known_hosts");
    std::fs::create_dir_all(ours.parent().unwrap()).unwrap();
    std::fs::write(&ours, format!("{line}\n")).unwrap();
    let (code, hosts, o) = env.probe_json(&[]);
    assert_eq!(code, Some(1), "{}", text(&o));
    let key = check(&hosts[0], "host_key");
    assert_eq!(key["status"], "fail", "{key:#}");
    let detail = key["detail"].as_str().unwrap();
    let hint = key["hint"].as_str().unwrap_or_default();
    let ours = ours.display().to_string();
    assert!(
        detail.contains("HOST KEY CHANGED") && detail.contains(&ours),
        "{detail}"
    );
    assert!(
        hint.contains("ssh-keygen -R") && hint.contains(&format!("-f {ours}")),
        "{hint}"
    );
    assert!(!format!("{detail}{hint}").contains("dropship-known_hosts-"));
    assert_eq!(std::fs::read_to_string(&ours).unwrap(), format!("{line}\n"));
    let o = env.run(&["--config", "dispatch.cfg", "--probe"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("-f {ours}`")), "{}", text(&o));
}

#[test]
fn probe_dest_dir_not_writable_and_missing() {
    let Some(server) = support::ssh_server_or_skip("probe_dest_dir") else {
        return;
    };
    let env = Env::new("probe_dest_dir").known(&server);
    // Owned by root, mode 755: the test user may not write there.
    let ro = env.dest.join("readonly");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rule = |dest: &str| {
        format!(
            "[app\\.tgz]\nhost = 127.0.0.1:{}\nprotocol = scp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ndest_dir = {dest}\nlock_path = {}/.dropship.lock\ntimeout = 10s\n",
            server.port(),
            env.dest.as_str()
        )
    };
    env.config(&rule(&format!("{}/sub", ro.display())));
    let (code, hosts, o) = env.probe_json(&[]);
    assert_eq!(code, Some(1), "{}", text(&o));
    let c = check(&hosts[0], "dest_dir");
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(
        c["detail"].as_str().unwrap().contains("not writable"),
        "{c:#}"
    );

    env.config(&rule(ro.to_str().unwrap()));
    let (code, hosts, _) = env.probe_json(&[]);
    assert_eq!(code, Some(1));
    let c = check(&hosts[0], "dest_dir");
    assert!(
        c["detail"].as_str().unwrap().contains("is not writable by"),
        "{c:#}"
    );

    // Missing under a writable parent: the dispatch creates it, so that passes, and the
    // probe creates nothing.
    env.config(&rule(&format!("{}/new/deeper", env.dest.as_str())));
    let (code, hosts, o) = env.probe_json(&[]);
    assert_eq!(code, Some(0), "{}", text(&o));
    let c = check(&hosts[0], "dest_dir");
    assert!(
        c["detail"].as_str().unwrap().contains("does not exist yet"),
        "{c:#}"
    );
    assert!(!env.dest.join("new").exists());
}

#[test]
fn probe_missing_program() {
    let Some(server) = support::ssh_server_or_skip("probe_missing_program") else {
        return;
    };
    let env = Env::new("probe_missing_program").known(&server);
    env.config(&env.sftp_rule(
        server.port(),
        "pre = test -d /tmp && dropship-no-such-tool --stop\nupgrade = FOO=1 tar xzf {path} | /usr/bin/no-such-binary -q; $HELPER x\nhealth = http://127.0.0.1:1/health",
    ));
    let (code, hosts, o) = env.probe_json(&[]);
    assert_eq!(code, Some(1), "{}", text(&o));
    let h = &hosts[0];
    assert_eq!(status(h, "programs"), "fail");
    assert_eq!(
        h["missing"],
        serde_json::json!(["dropship-no-such-tool", "/usr/bin/no-such-binary"])
    );
    let notes = check(h, "programs")["notes"].to_string();
    assert!(notes.contains("$HELPER"), "{notes}");
    let o = env.run(&["--config", "dispatch.cfg", "--probe"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(
            "FAIL programs: not found on the host: dropship-no-such-tool, /usr/bin/no-such-binary"
        ),
        "{out}"
    );
}

#[test]
fn probe_shows_lock_holder() {
    let Some(server) = support::ssh_server_or_skip("probe_lock_holder") else {
        return;
    };
    let env = Env::new("probe_lock_holder").known(&server);
    env.config(&env.sftp_rule(server.port(), ""));
    // As engine/lock.rs writes it: a directory with an info file.
    let lock = env.dest.join(".dropship.lock");
    std::fs::create_dir(&lock).unwrap();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 120;
    std::fs::write(
        lock.join("info"),
        format!("holder=ops@buildbox pid 4242\nsince={since}\nbundle=app-1.4.1.tgz\ntoken=abc\n"),
    )
    .unwrap();
    let (code, hosts, o) = env.probe_json(&[]);
    // A held lock is a warning: the dispatch would wait for it.
    assert_eq!(code, Some(0), "{}", text(&o));
    let h = &hosts[0];
    assert_eq!(status(h, "lock"), "warn");
    assert_eq!(h["lock"]["holder"], "ops@buildbox pid 4242");
    assert_eq!(h["lock"]["bundle"], "app-1.4.1.tgz");
    let age = h["lock"]["age_secs"].as_u64().unwrap();
    assert!((120..3600).contains(&age), "{age}");
    assert!(
        lock.join("info").exists(),
        "the probe must not touch the lock"
    );
    let o = env.run(&["--config", "dispatch.cfg", "--probe"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("LOCKED"), "{out}");
    assert!(out.contains("locked by ops@buildbox pid 4242"), "{out}");
    assert!(h["lock"]["beat_secs"].is_null(), "{h}");

    // With a heartbeat 5 s ago its holder is alive: the hint says to wait, not to remove.
    std::fs::write(lock.join("beat"), format!("{}\n", since + 115)).unwrap();
    let (_, hosts, _) = env.probe_json(&[]);
    let beat = hosts[0]["lock"]["beat_secs"].as_u64().unwrap();
    assert!(beat < 120, "{beat}");
    let o = env.run(&["--config", "dispatch.cfg", "--probe"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("its holder is alive"), "{out}");
    std::fs::remove_file(lock.join("beat")).unwrap();

    // The console's query: the holder, then free once the lock is gone.
    use dropship::config::{Config, Netrc, SshHosts};
    use dropship::fleet::{probe, target};
    use dropship::transport::known_hosts::KnownHostsFiles;
    let config = Config::load(&env.path("dispatch.cfg")).unwrap();
    let targets = target::for_config(&config, &Netrc::empty(), &SshHosts::default());
    let kh = KnownHostsFiles {
        user: Some(env.path(".ssh/known_hosts")),
        dropship: env.path("state/dropship/known_hosts"),
    };
    let info = probe::lock_holder(&targets[0], &kh).unwrap().unwrap();
    assert_eq!(info.holder, "ops@buildbox pid 4242");
    assert_eq!(info.bundle, "app-1.4.1.tgz");
    std::fs::remove_dir_all(&lock).unwrap();
    assert_eq!(probe::lock_holder(&targets[0], &kh), Ok(None));
}

#[test]
fn probe_unreachable_port_and_no_such_rule() {
    if !support::live_test_or_skip("probe_unreachable", &[]) {
        return;
    }
    // Leased and free: nothing listens there.
    let lease = support::ports::reserve(1, &[std::net::Ipv4Addr::LOCALHOST]);
    let env = Env::new("probe_unreachable");
    env.config(&env.sftp_rule(lease.first(), ""));
    let (code, hosts, o) = env.probe_json(&[]);
    assert_eq!(code, Some(1), "{}", text(&o));
    let h = &hosts[0];
    assert_eq!(status(h, "reachable"), "fail");
    assert!(
        check(h, "reachable")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", lease.first())),
        "{h:#}"
    );
    for kind in [
        "host_key", "login", "dest_dir", "programs", "lock", "version",
    ] {
        assert_eq!(status(h, kind), "skip", "{kind}");
    }
    let o = env.run(&["--config", "dispatch.cfg", "--probe", "billing"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no rule `billing`"));
    let o = env.run(&["--config", "nope.cfg", "--probe"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn probe_ftp_dest_dir() {
    let Some(ftp) = support::ftp_server_or_skip("probe_ftp_dest_dir") else {
        return;
    };
    let env = Env::new("probe_ftp_dest_dir");
    let ro = env.dest.join("readonly");
    std::fs::create_dir(&ro).unwrap();
    let rule = |dest: &str, password: &str| {
        format!(
            "[legacy\\.zip]\nhost = 127.0.0.1:{}\nprotocol = ftp\nlogin = {TEST_USER}\npassword = {password}\ndest_dir = {dest}\ntimeout = 10s\n",
            ftp.port()
        )
    };
    env.config(&rule(env.dest.as_str(), TEST_PASSWORD));
    let before = listing(env.dest.path());
    let (code, hosts, o) = env.probe_json(&[]);
    assert_eq!(code, Some(0), "{}", text(&o));
    let h = &hosts[0];
    assert_eq!(status(h, "login"), "pass");
    assert_eq!(status(h, "dest_dir"), "pass");
    // FTP only: no shell, so those are not checked (and say why).
    assert_eq!(status(h, "programs"), "skip");
    assert_eq!(listing(env.dest.path()), before);

    // Read-only dir under a writable parent: FTP cannot tell it from a missing one.
    env.config(&rule(ro.to_str().unwrap(), TEST_PASSWORD));
    let (code, hosts, _) = env.probe_json(&[]);
    assert_eq!(code, Some(0));
    let c = check(&hosts[0], "dest_dir");
    assert_eq!(c["status"], "warn", "{c:#}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("is writable, so the dispatch can create"),
        "{c:#}"
    );
    assert_eq!(listing(env.dest.path()), before);

    // Nothing writable up the tree: a failure.
    env.config(&rule("/usr/share", TEST_PASSWORD));
    let (code, hosts, o) = env.probe_json(&[]);
    assert_eq!(code, Some(1), "{}", text(&o));
    assert_eq!(status(&hosts[0], "dest_dir"), "fail");

    env.config(&rule(env.dest.as_str(), "bad password"));
    let (code, hosts, _) = env.probe_json(&[]);
    assert_eq!(code, Some(1));
    assert_eq!(status(&hosts[0], "login"), "fail");
}

#[test]
fn reachability_for_the_console() {
    use dropship::config::{Config, Netrc, SshHosts};
    use dropship::fleet::probe::{Reach, reach_all};
    use dropship::fleet::target;
    let Some(ssh) = support::ssh_server_or_skip("reachability_for_the_console") else {
        return;
    };
    let ftp = FtpServer::start();
    // Nothing listens there (another address: one name may not appear on two ports).
    let lease = support::ports::reserve(1, &[support::LOOPBACK_2]);
    let text = format!(
        "[a\\.tgz]\nhost = 127.0.0.1:{}, 127.0.0.2:{}\n[b\\.zip]\nprotocol = ftp\nhost = 127.0.0.1:{}\n[c\\.tgz]\nhost = 127.0.0.1:{}\n",
        ssh.port(),
        lease.first(),
        ftp.port(),
        ssh.port()
    );
    let config = Config::parse(&text, Path::new("/x/dispatch.cfg")).unwrap();
    let targets = target::for_config(&config, &Netrc::empty(), &SshHosts::default());
    let seen = std::sync::Mutex::new(Vec::new());
    let results = reach_all(&targets, 4, Some(Duration::from_secs(5)), &|i, r| {
        seen.lock().unwrap().push((i, r.host.clone()));
    });
    assert_eq!(results.len(), 4);
    let up =
        |i: usize| matches!(&results[i].reach, Reach::Up { greeting, .. } if !greeting.is_empty());
    assert!(up(0), "{:?}", results[0]);
    assert!(
        matches!(&results[1].reach, Reach::Down { error } if error.contains("cannot connect")),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(&results[2].reach, Reach::Up { greeting, .. } if greeting.starts_with("220")),
        "{:?}",
        results[2]
    );
    // The same endpoint in another rule is asked once and reported for both.
    assert_eq!(results[3].reach.clone(), results[0].reach.clone());
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
}

#[test]
fn probe_ftp_rule_with_commands_over_ssh() {
    let Some(ftp) = support::ftp_server_or_skip("probe_ftp_with_commands") else {
        return;
    };
    let ssh = SshServer::start();
    let env = Env::new("probe_ftp_with_commands").known(&ssh);
    env.dest.write_file("VERSION", b"7.0\n");
    env.config(&format!(
        "[legacy\\.zip]\nhost = 127.0.0.1:{}\nprotocol = ftp\nssh_port = {}\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ndest_dir = {d}\nlock_path = {d}/.dropship.lock\nupgrade = unzip -o {{path}}\nversion_cmd = cat {d}/VERSION\ntimeout = 10s\n",
        ftp.port(),
        ssh.port(),
        d = env.dest.as_str()
    ));
    let (_, hosts, o) = env.probe_json(&[]);
    let h = &hosts[0];
    for kind in [
        "reachable",
        "login",
        "host_key",
        "ssh_login",
        "dest_dir",
        "lock",
    ] {
        assert_eq!(status(h, kind), "pass", "{kind}: {}", text(&o));
    }
    assert_eq!(h["version"], "7.0");
    // unzip may or may not be installed here: the answer must match the machine's.
    let unzip = ["/usr/bin/unzip", "/bin/unzip"]
        .iter()
        .any(|p| Path::new(p).exists());
    assert_eq!(status(h, "programs"), if unzip { "pass" } else { "fail" });
    assert_eq!(
        o.status.code(),
        Some(if unzip { 0 } else { 1 }),
        "{}",
        text(&o)
    );
}
