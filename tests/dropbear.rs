//! Dropbear with its defaults (24 KiB channel window, few unauthenticated connections at
//! once, SFTP through OpenSSH's sftp-server): 20 MiB over scp and sftp, with a key and
//! with a password; a command's output streamed line by line; `--probe` of several rules of
//! one host at once.

mod support;

use std::path::PathBuf;
use std::process::Output;
use support::dropbear::DropbearServer;
use support::home::{Home, text};
use support::{TEST_PASSWORD, test_keys};

struct Env {
    home: Home,
    server: DropbearServer,
    dir: PathBuf,
}

impl Env {
    fn new(test: &str) -> Option<Env> {
        let server = DropbearServer::start_or_skip(test, &[])?;
        let home = Home::new();
        std::fs::write(
            home.ssh_dir().join("known_hosts"),
            server.known_hosts_line() + "\n",
        )
        .unwrap();
        let dir = server.user.fresh_dir(test);
        Some(Env { home, server, dir })
    }

    /// A config with `rules` (each a `[regex]` section body without host/login) on this
    /// server.
    fn config(&self, rules: &[(&str, &str)]) -> PathBuf {
        let mut text = String::new();
        for (re, body) in rules {
            text.push_str(&format!(
                "[{re}]\nhost = {}\nlogin = {}\ndest_dir = {}\ntimeout = 10s\n{body}\n\n",
                self.server.addr(),
                self.server.user.name,
                self.dir.display()
            ));
        }
        self.home.write("dispatch.cfg", text)
    }

    fn bundle(&self, name: &str, len: usize) -> PathBuf {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        self.home.write(name, data)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", "dispatch.cfg"];
        all.extend(args);
        self.home.run(&all)
    }

    fn say(&self, o: &Output) -> String {
        format!("{}\n--- dropbear log\n{}", text(o), self.server.log())
    }
}

const SIZE: usize = 20 << 20;

#[test]
fn dropbear_20_mib_over_sftp_and_scp_with_key_and_password() {
    let Some(env) = Env::new("dropbear_uploads") else {
        return;
    };
    let key = format!("key = {}", test_keys().plain.display());
    let password = format!("password = {TEST_PASSWORD}");
    env.config(&[
        ("sk-.*", &format!("protocol = sftp\n{key}")),
        ("sp-.*", &format!("protocol = sftp\n{password}")),
        ("ck-.*", &format!("protocol = scp\n{key}")),
        ("cp-.*", &format!("protocol = scp\n{password}")),
    ]);
    for name in ["sk-1.bin", "sp-1.bin", "ck-1.bin", "cp-1.bin"] {
        let b = env.bundle(name, SIZE);
        let started = std::time::Instant::now();
        let o = env.run(&["--dispatch", b.to_str().unwrap()]);
        assert!(o.status.success(), "{name}: {}", env.say(&o));
        let got = std::fs::metadata(env.dir.join(name)).map(|m| m.len()).ok();
        assert_eq!(got, Some(SIZE as u64), "{name}");
        assert!(text(&o).contains("sha256"), "{name} verified: {}", text(&o));
        // In one go: no stall, no retry.
        assert!(!text(&o).contains("retrying"), "{name}: {}", env.say(&o));
        eprintln!("{name}: {:?}", started.elapsed());
    }
}

#[test]
fn dropbear_streams_command_output_line_by_line() {
    let Some(env) = Env::new("dropbear_commands") else {
        return;
    };
    env.config(&[(
        "app-.*",
        &format!(
            "protocol = scp\npassword = {TEST_PASSWORD}\nupgrade = for i in 1 2 3; do echo \"line $i\"; sleep 0.3; done; echo oops >&2; exit 0"
        ),
    )]);
    let b = env.bundle("app-1.bin", 1000);
    let o = env.run(&["--dispatch", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", env.say(&o));
    let out = text(&o);
    for l in ["line 1", "line 2", "line 3", "oops"] {
        assert!(out.contains(l), "{l}: {out}");
    }
}

#[test]
fn dropbear_probe_of_many_rules_on_one_host() {
    let Some(env) = Env::new("dropbear_probe") else {
        return;
    };
    let body = format!("protocol = sftp\npassword = {TEST_PASSWORD}\nparallel = 8");
    let rules: Vec<(String, String)> = (0..8).map(|i| (format!("r{i}-.*"), body.clone())).collect();
    let rules: Vec<(&str, &str)> = rules
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    env.config(&rules);
    for round in 0..3 {
        let o = env.run(&["--probe"]);
        assert_eq!(o.status.code(), Some(0), "round {round}: {}", env.say(&o));
        assert!(text(&o).contains("8 hosts probed: 8 ok"), "{}", env.say(&o));
    }
}

/// Dropbear with a large window (`-W`) sends a window adjustment only once half of it is
/// used. Six streamed (scp) uploads at once are each paced to a share of 2 MiB ahead, less
/// than that half: they must not wait for an adjustment that never comes, but write on, and
/// every file lands whole and verified.
#[test]
fn paced_streams_write_on_to_a_server_that_adjusts_only_at_half_its_window() {
    use dropship::transport::TransferEvent;
    use support::upload::{Rig, bundle, sha};
    let Some(server) = DropbearServer::start_or_skip("dropbear_paced", &["-W", "2097152"]) else {
        return;
    };
    let rig = Rig::new("dropbear_paced");
    std::fs::write(
        rig.known.user.as_ref().unwrap(),
        server.known_hosts_line() + "\n",
    )
    .unwrap();
    let dir = server.user.fresh_dir("dropbear_paced");
    let text = format!(
        "[.*]\nhost = {}\nlogin = {}\npassword = {TEST_PASSWORD}\nprotocol = scp\ndest_dir = {}\ntimeout = 10s\nretries = 0\n",
        server.addr(),
        server.user.name,
        dir.display()
    );
    let config = dropship::config::Config::parse(&text, std::path::Path::new("test.cfg")).unwrap();
    let waits = dropship::transport::ssh::stream_waits();
    std::thread::scope(|s| {
        for i in 0..6 {
            let (rig, config, server) = (&rig, &config, &server);
            s.spawn(move || {
                let name = format!("paced-{i}.bin");
                let local = bundle(rig.local.path(), &name, 8 << 20);
                let plan = rig.plan(config, &name);
                // A liveness guard, not a speed check: a stream waiting forever fails here.
                let started = std::time::Instant::now();
                let give_up = || started.elapsed() > std::time::Duration::from_secs(120);
                let (result, events) = rig.deliver_until(&plan, &local, &give_up);
                let (_, delivered) =
                    result.unwrap_or_else(|e| panic!("{name}: {e}\n{}", server.log()));
                assert_eq!(
                    sha(&PathBuf::from(&plan.targets[0].remote_path)),
                    sha(&local)
                );
                assert_eq!(delivered.sha256.as_deref(), Some(sha(&local).as_str()));
                assert!(
                    !events
                        .iter()
                        .any(|e| matches!(e, TransferEvent::Retrying { .. })),
                    "{name}: {events:?}"
                );
            });
        }
    });
    assert!(
        dropship::transport::ssh::stream_waits() > waits,
        "six streams at once never waited: the pacing did not engage"
    );
}
