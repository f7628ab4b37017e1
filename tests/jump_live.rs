//! Jump hosts end to end, through the real binary: targets that exist only behind a
//! bastion (an sshd in a network namespace of the test's own, see support::netns), reached
//! through ssh_config's `ProxyJump`, the rule's `jump` (two hops), and `ProxyCommand`.
//! Each case is checked against `ssh -G`, against the account and address the upgrade
//! really ran as, and against the bastion's log: one bastion login for all hosts behind it.

mod support;

use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;
use support::home::{Home, text};
use support::netns::{Bastioned, TARGET_PORT};
use support::{TEST_USER, test_keys, test_user};

/// A HOME with an ssh_config for the namespace: `bastion`, `hop2`, `app1..app3` behind the
/// bastion by `ProxyJump`, `deep` (no ProxyJump: the rule's `jump` says how), `pc1` through
/// a `ProxyCommand`. Every OpenSSH check reads the same known_hosts as dropship.
fn home_for(ns: &Bastioned) -> (Home, std::path::PathBuf) {
    let home = Home::new();
    home.ssh_dir();
    let ips: Vec<Ipv4Addr> = (11..=14)
        .chain([21])
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .collect();
    let kh = home.write(
        ".ssh/known_hosts",
        ns.bastion_known_hosts() + &ns.inside_known_hosts(&ips),
    );
    let cfg_path = home.path(".ssh/config");
    let cfg = format!(
        "Host bastion\n  HostName 127.0.0.1\n  Port {bport}\n\
         Host hop2\n  HostName 127.0.0.1\n  Port {hop2}\n\
         Host app1\n  HostName 127.0.0.11\nHost app2\n  HostName 127.0.0.12\nHost app3\n  HostName 127.0.0.13\n\
         Host app*\n  Port {tport}\n  ProxyJump bastion\n\
         Host deep\n  HostName 127.0.0.14\n  Port {tport}\n\
         Host pc1\n  HostName 127.0.0.21\n  Port {tport}\n  ProxyCommand ssh -F {cfg} -W %h:%p bastion\n\
         Host pwbastion\n  HostName 127.0.0.1\n  Port {bport}\n  PubkeyAuthentication no\n  PreferredAuthentications password\n\
         Host *\n  User {user}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {kh}\n",
        bport = ns.port,
        hop2 = support::netns::HOP2_PORT,
        tport = TARGET_PORT,
        cfg = cfg_path.display(),
        user = TEST_USER,
        key = test_keys().plain.display(),
        kh = kh.display(),
    );
    home.write(".ssh/config", cfg);
    (home, cfg_path)
}

fn ssh_g(cfg: &std::path::Path, host: &str) -> String {
    let o = std::process::Command::new("ssh")
        .args(["-G", "-F"])
        .arg(cfg)
        .arg(host)
        .output()
        .expect("ssh -G");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn hosts_only_a_bastion_reaches_are_shipped_to_through_it() {
    let Some(ns) = Bastioned::start_or_skip("jump_hosts_behind_bastion") else {
        return;
    };
    let (home, cfg_path) = home_for(&ns);
    // The targets exist only behind the bastion: nothing answers on this side.
    for ip in [11, 12, 13, 14, 21] {
        assert!(
            TcpStream::connect_timeout(
                &(Ipv4Addr::new(127, 0, 0, ip), TARGET_PORT).into(),
                Duration::from_millis(300)
            )
            .is_err(),
            "127.0.0.{ip}:{TARGET_PORT} must not be reachable directly"
        );
    }
    // OpenSSH is the reference.
    let g = ssh_g(&cfg_path, "app2");
    assert!(g.lines().any(|l| l == "proxyjump bastion"), "{g}");
    assert!(g.lines().any(|l| l == format!("user {TEST_USER}")), "{g}");
    assert!(g.lines().any(|l| l == "hostname 127.0.0.12"), "{g}");

    let dir = format!("jump-live-{}", std::process::id());
    let upgrade = "upgrade = echo \"who=$(id -un) conn=$SSH_CONNECTION\"; test -f {path}";
    let cfg = home.write(
        "dispatch.cfg",
        format!(
            "[DEFAULT]\ndest_dir = ~/{dir}/{{rule}}\nlock_path = {dir}/.lock-{{rule}}\ntimeout = 10s\n{upgrade}\n\
             [app-.*\\.tgz]\nhost = app1 app2 app3\nprotocol = sftp\n\
             [deep-.*\\.tgz]\nhost = deep\nprotocol = scp\njump = bastion,hop2\n\
             [pc-.*\\.tgz]\nhost = pc1\nprotocol = sftp\n"
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let user_home = test_user().home.clone();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(user_home.join(&dir));

    // --plan names the chain and where it came from.
    let o = home.run(&["--config", cfg, "--plan", "app-1.tgz"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(
        plan.contains(&format!("{TEST_USER}@127.0.0.12:{TARGET_PORT} via bastion")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("ProxyJump bastion ({}:15)", cfg_path.display())),
        "{plan}"
    );

    // Three hosts behind one bastion: one bastion login serves them all.
    let before = ns.logins("bastion");
    let bundle = home.write("app-1.tgz", vec![5u8; 3 << 20]);
    let o = home.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for (host, ip) in [("app1", 11), ("app2", 12), ("app3", 13)] {
        let want = format!("[{host}] who={TEST_USER} conn=127.0.0.1 ");
        let line = out
            .lines()
            .find(|l| l.starts_with(&want))
            .unwrap_or_else(|| panic!("no `{want}` in\n{out}"));
        assert!(
            line.ends_with(&format!(" 127.0.0.{ip} {TARGET_PORT}")),
            "{host} ran elsewhere: {line}"
        );
    }
    assert_eq!(
        std::fs::read(user_home.join(&dir).join("app-.*\\.tgz/app-1.tgz"))
            .map(|b| b.len())
            .ok(),
        Some(3 << 20)
    );
    assert_eq!(
        ns.logins("bastion") - before,
        1,
        "one bastion connection for three hosts\n{}",
        ns.log("bastion")
    );

    // The rule's `jump` wins over ssh_config (there is none for `deep`), two hops.
    let before_hop2 = ns.logins("hop2");
    let bundle = home.write("deep-1.tgz", vec![6u8; 100_000]);
    let o = home.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("[deep] who={TEST_USER} conn=127.0.0.1 ")),
        "{out}"
    );
    assert!(out.contains(&format!(" 127.0.0.14 {TARGET_PORT}")), "{out}");
    assert_eq!(ns.logins("hop2") - before_hop2, 1, "{}", ns.log("hop2"));

    // ProxyCommand.
    let bundle = home.write("pc-1.tgz", vec![7u8; 100_000]);
    let o = home.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!(" 127.0.0.21 {TARGET_PORT}")), "{out}");

    // --probe goes the same way.
    let o = home.run(&["--config", cfg, "--probe", "app"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn jump_failures_say_which_hop_and_why() {
    let Some(ns) = Bastioned::start_or_skip("jump_failures") else {
        return;
    };
    let (home, _cfg_path) = home_for(&ns);
    let cfg = home.write(
        "dispatch.cfg",
        "[DEFAULT]\ndest_dir = jump-fail\ntimeout = 5s\nretries = 0\n\
         [gone-.*]\nhost = 127.0.0.31:2299\nprotocol = sftp\njump = bastion\n\
         [stranger-.*]\nhost = app1\nprotocol = sftp\njump = no-such-user@bastion\n\
         [ftp-.*]\nhost = app1\nprotocol = ftp\njump = bastion\n",
    );
    let cfg = cfg.to_str().unwrap();
    // An FTP rule cannot go through a jump host: refused by --check, with the line.
    let o = home.run(&["--config", cfg, "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("dispatch.cfg:16") && err.contains("only SSH is carried through a jump host"),
        "{err}"
    );
    let cfg = home.write(
        "dispatch.cfg",
        "[DEFAULT]\ndest_dir = jump-fail\ntimeout = 5s\nretries = 0\n\
         [gone-.*]\nhost = 127.0.0.31:2299\nprotocol = sftp\njump = bastion\nhost_key = accept-new\n\
         [stranger-.*]\nhost = app1\nprotocol = sftp\njump = no-such-user@bastion\n",
    );
    let cfg = cfg.to_str().unwrap();
    // Nothing listens where the bastion is asked to go.
    let bundle = home.write("gone-1.tgz", b"x");
    let o = home.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("via bastion"), "{all}");
    assert!(all.contains("jump host bastion"), "{all}");
    assert!(
        all.contains("the last hop could not connect to 127.0.0.31:2299"),
        "{all}"
    );
    // The bastion refuses the login.
    let bundle = home.write("stranger-1.tgz", b"x");
    let o = home.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("jump host no-such-user@bastion"), "{all}");
    assert!(all.contains("Permission denied"), "{all}");
}

/// A bastion that takes only a password: the password comes from ~/.netrc (as for any
/// host), and reaches OpenSSH only through its askpass hook, answered by dropship itself.
#[test]
fn a_bastion_password_comes_from_netrc() {
    let Some(ns) = Bastioned::start_or_skip("jump_bastion_password") else {
        return;
    };
    let (home, _cfg_path) = home_for(&ns);
    let dir = format!("jump-pw-{}", std::process::id());
    let cfg = home.write(
        "dispatch.cfg",
        format!(
            "[app-.*\\.tgz]\nhost = app1\nprotocol = sftp\njump = pwbastion\ndest_dir = ~/{dir}\nlock_path = {dir}/.lock\ntimeout = 10s\nretries = 0\nupgrade = echo \"who=$(id -un) conn=$SSH_CONNECTION\"\n"
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let bundle = home.write("app-1.tgz", vec![9u8; 10_000]);
    let user_home = test_user().home.clone();
    let cleanup = || {
        let _ = std::fs::remove_dir_all(user_home.join(&dir));
    };
    // No password anywhere: the bastion refuses, and the error says which hop.
    let o = home.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("jump host pwbastion"), "{}", text(&o));
    let before = ns.log("bastion").matches("Accepted password for").count();
    let netrc = home.write(
        ".netrc",
        format!(
            "machine pwbastion login {TEST_USER} password \"{}\"\n",
            support::TEST_PASSWORD
        ),
    );
    std::fs::set_permissions(&netrc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let o = home.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    let landed = user_home.join(&dir).join("app-1.tgz").is_file();
    cleanup();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(" 127.0.0.11 {TARGET_PORT}")),
        "{}",
        text(&o)
    );
    assert!(landed);
    assert_eq!(
        ns.log("bastion").matches("Accepted password for").count() - before,
        1,
        "{}",
        ns.log("bastion")
    );
    // The password is on no command line and in no output.
    assert!(!text(&o).contains(support::TEST_PASSWORD));
}
