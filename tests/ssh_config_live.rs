//! The wrong-account case of "Real fleets", end to end: a `Host` block (user A) followed by
//! a `Match originalhost` block (user B). `ssh -G` says A for the Host alias and B for the
//! Match host; the real binary must deliver and run as exactly those accounts on a real
//! sshd (the upgrade prints `id -un` and `$HOME`; the bundle must be in that home).

mod support;

use support::home::{Home, text};
use support::{TEST_USER, test_keys, test_user};

#[test]
fn ssh_config_account_is_the_one_ssh_g_names() {
    let Some(server) = support::ssh_server_or_skip("sshcfg_live_leak") else {
        return;
    };
    if dropship::config::ssh_config::find_ssh().is_none() {
        assert!(std::env::var_os("CI").is_none(), "ssh client missing");
        eprintln!("SKIPPED sshcfg_live_leak: no `ssh` on PATH");
        return;
    }
    let home = Home::trusting(&server);
    let keys = test_keys();
    let ssh_config = format!(
        "Host leak-check\n  HostName 127.0.0.1\n  Port {port}\n  User {TEST_USER}\n  IdentityFile {key}\n  IdentitiesOnly yes\nMatch originalhost other-*\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {key}\n",
        port = server.port(),
        key = keys.plain.display()
    );
    let cfg_path = home.write(".ssh/config", &ssh_config);
    // ssh itself is the reference: A for the alias, B for the Match host.
    for (host, want) in [("leak-check", TEST_USER), ("other-x", "root")] {
        let g = std::process::Command::new("ssh")
            .args(["-G", "-F"])
            .arg(&cfg_path)
            .arg(host)
            .output()
            .unwrap();
        let g = String::from_utf8_lossy(&g.stdout);
        assert!(g.lines().any(|l| l == format!("user {want}")), "{g}");
    }
    let dir = format!("sshcfg-live-{}", std::process::id());
    let cfg = home.write(
        "dispatch.cfg",
        format!(
            "[app-.*\\.tgz]\nhost = leak-check other-x\nprotocol = sftp\ndest_dir = ~/{dir}\nlock_path = {dir}/.lock\ntimeout = 10s\nupgrade = echo \"who=$(id -un) home=$HOME\"\n"
        ),
    );
    let bundle = home.write("app-1.tgz", vec![7u8; 1000]);
    let cfg = cfg.to_str().unwrap();

    let o = home.run(&["--config", cfg, "--plan", "app-1.tgz"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(
        plan.contains(&format!("{TEST_USER}@127.0.0.1:{}", server.port())),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("root@127.0.0.1:{}", server.port())),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("{}:3", cfg_path.display())),
        "{plan}"
    );

    let o = home.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    let user_home = test_user().home.clone();
    let root_home = std::path::PathBuf::from("/root");
    let cleanup = || {
        let _ = std::fs::remove_dir_all(user_home.join(&dir));
        let _ = std::fs::remove_dir_all(root_home.join(&dir));
    };
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let landed_a = user_home.join(&dir).join("app-1.tgz").is_file();
    let landed_b = root_home.join(&dir).join("app-1.tgz").is_file();
    cleanup();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        out.contains(&format!(
            "[leak-check] who={TEST_USER} home={}",
            user_home.display()
        )),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("[other-x") && l.ends_with("] who=root home=/root")),
        "{out}"
    );
    assert!(
        landed_a,
        "the bundle for leak-check is not in {TEST_USER}'s home"
    );
    assert!(landed_b, "the bundle for other-x is not in root's home");
}

#[test]
fn a_bastion_that_cannot_be_reached_is_never_bypassed() {
    let Some(server) = support::ssh_server_or_skip("sshcfg_live_jump") else {
        return;
    };
    if dropship::config::ssh_config::find_ssh().is_none() {
        eprintln!("SKIPPED sshcfg_live_jump: no `ssh` on PATH");
        return;
    }
    let home = Home::trusting(&server);
    // The host is reachable directly: a silent bypass of the bastion would succeed.
    let ssh_config = format!(
        "Host behind\n  HostName 127.0.0.1\n  Port {}\n  User {TEST_USER}\n  IdentityFile {}\n  ProxyJump bastion.invalid\n",
        server.port(),
        test_keys().plain.display()
    );
    let cfg_path = home.write(".ssh/config", &ssh_config);
    let dest = support::scratch_dir("sshcfg_live_jump");
    let cfg = home.write(
        "dispatch.cfg",
        format!(
            "[app-.*\\.tgz]\nhost = behind\nprotocol = scp\ndest_dir = {d}\nlock_path = {d}/.lock\ntimeout = 10s\nupgrade = id -un\n",
            d = dest.as_str()
        ),
    );
    let bundle = home.write("app-2.tgz", vec![1u8; 100]);
    let o = home.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--dispatch",
        bundle.to_str().unwrap(),
    ]);
    // The host answers directly, but ssh_config says it is reached through the bastion:
    // the dispatch fails at the bastion, naming it, and nothing is shipped around it.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("jump host bastion.invalid"), "{all}");
    assert!(all.contains("bastion.invalid"), "{all}");
    let o = home.run(&["--config", cfg.to_str().unwrap(), "--plan", "app-2.tgz"]);
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(
        plan.contains(&format!(
            "ProxyJump bastion.invalid ({}:6)",
            cfg_path.display()
        )),
        "{plan}"
    );
    assert!(
        !dest.join("app-2.tgz").exists(),
        "shipped around the bastion"
    );
}

/// An ftp rule's commands log in over SSH the way `ssh HOST` would: with no `ssh_port` in
/// dispatch.cfg, the port (and key) come from ~/.ssh/config; the upload itself is FTP to the
/// host as written.
#[test]
fn ftp_rule_commands_log_in_as_ssh_config_says() {
    let Some(server) = support::ssh_server_or_skip("sshcfg_live_ftp") else {
        return;
    };
    let Some(ftp) = support::ftp_server_or_skip("sshcfg_live_ftp") else {
        return;
    };
    if dropship::config::ssh_config::find_ssh().is_none() {
        assert!(std::env::var_os("CI").is_none(), "ssh client missing");
        eprintln!("SKIPPED sshcfg_live_ftp: no `ssh` on PATH");
        return;
    }
    let home = Home::trusting(&server);
    let cfg_path = home.write(
        ".ssh/config",
        format!(
            "Host 127.0.0.1\n  Port {}\n  IdentityFile {}\n  IdentitiesOnly yes\n",
            server.port(),
            test_keys().plain.display()
        ),
    );
    let dest = support::scratch_dir("sshcfg_live_ftp");
    let cfg = home.write(
        "dispatch.cfg",
        format!(
            "[app-.*\\.tgz]\nhost = {ftp}\nprotocol = ftp\nlogin = {TEST_USER}\npassword = {pw}\ndest_dir = {d}\nlock_path = {d}/.lock\ntimeout = 10s\nupgrade = echo \"who=$(id -un) sshd=${{SSH_CONNECTION##* }}\"; sha256sum {{path}}\n",
            ftp = ftp.addr(),
            pw = support::TEST_PASSWORD,
            d = dest.as_str()
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let o = home.run(&["--config", cfg, "--plan", "app-3.tgz"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(
        plan.contains(&format!(
            "Port {} for the commands' SSH login ({}:2)",
            server.port(),
            cfg_path.display()
        )),
        "{plan}"
    );
    let bundle = home.write("app-3.tgz", vec![3u8; 5000]);
    let o = home.run(&["--config", cfg, "--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("who={TEST_USER} sshd={}", server.port())),
        "{out}"
    );
    assert!(dest.join("app-3.tgz").is_file());
}

#[test]
fn host_key_alias_and_user_known_hosts_file_are_what_is_checked() {
    let Some(server) = support::ssh_server_or_skip("sshcfg_live_alias") else {
        return;
    };
    if dropship::config::ssh_config::find_ssh().is_none() {
        eprintln!("SKIPPED sshcfg_live_alias: no `ssh` on PATH");
        return;
    }
    // HOME's own known_hosts is empty: only the ssh_config file can vouch for the host.
    let home = Home::new();
    std::fs::create_dir_all(home.path(".ssh")).unwrap();
    let lines: String = server
        .host_keys()
        .iter()
        .map(|k| format!("[fleet-key]:{} {}\n", server.port(), k.public_line))
        .collect();
    let kh = home.write("fleet_known_hosts", lines);
    let dest = support::scratch_dir("sshcfg_live_alias");
    let cfg = home.write(
        "dispatch.cfg",
        format!(
            "[app-.*\\.tgz]\nhost = aliased\nprotocol = sftp\ndest_dir = {d}\nlock_path = {d}/.lock\ntimeout = 10s\nupgrade = id -un\n",
            d = dest.as_str()
        ),
    );
    let bundle = home.write("app-3.tgz", vec![3u8; 100]);
    let run = |alias: &str| {
        home.write(
            ".ssh/config",
            format!(
                "Host aliased\n  HostName 127.0.0.1\n  Port {}\n  User {TEST_USER}\n  IdentityFile {}\n  HostKeyAlias {alias}\n  UserKnownHostsFile {}\n",
                server.port(),
                test_keys().plain.display(),
                kh.display()
            ),
        );
        home.run(&[
            "--config",
            cfg.to_str().unwrap(),
            "--dispatch",
            bundle.to_str().unwrap(),
        ])
    };
    // host_key = strict (the default): it passes only through the alias in that file.
    let o = run("fleet-key");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(dest.join("app-3.tgz").is_file());
    let o = run("other-key");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("other-key"), "{}", text(&o));
}
