//! `layout = releases` and `--rollback` through the real binary against the real sshd (and
//! a real HTTP server on 127.0.0.1 for health): releases unpacked under `releases/`,
//! `current` switched, `keep` pruning, a failed health check that switches back, rollbacks
//! one step at a time by deploy order, and rollback with nothing to go back to.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::home::{Home, text};
use support::http::{Behaviour, HttpServer};
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

    /// `dest_dir` is `DEST/app`, the release tree.
    fn config(&self, server: &SshServer, keys: &str) -> PathBuf {
        let text = format!(
            "[app-(?P<version>[0-9.]+)\\.(tgz|zip|tar\\.xz)]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ndest_dir = {d}/app\nlock_path = {d}/.dropship.lock\ntimeout = 10s\nlayout = releases\n{keys}\n",
            server.addr(),
            d = self.dest.as_str()
        );
        self.home.write("dispatch.cfg", text)
    }

    /// A real archive `app-VERSION.EXT` holding `VERSION.txt`.
    fn bundle(&self, version: &str, ext: &str) -> PathBuf {
        let src = self.path(&format!("src-{version}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("VERSION.txt"), format!("{version}\n")).unwrap();
        let out = self.path(&format!("app-{version}.{ext}"));
        let mut c = match ext {
            "zip" => {
                let mut c = Command::new("zip");
                c.arg("-q").arg(&out).arg("VERSION.txt");
                c
            }
            "tar.xz" => {
                let mut c = Command::new("tar");
                c.arg("cJf").arg(&out).arg("VERSION.txt");
                c
            }
            _ => {
                let mut c = Command::new("tar");
                c.arg("czf").arg(&out).arg("VERSION.txt");
                c
            }
        };
        let st = c.current_dir(&src).status().unwrap();
        assert!(st.success(), "making {}", out.display());
        out
    }

    fn run(&self, args: &[&str]) -> Output {
        self.home.run(args)
    }

    fn dispatch(&self, cfg: &Path, bundle: &Path) -> Output {
        self.run(&[
            "--config",
            cfg.to_str().unwrap(),
            "--dispatch",
            bundle.to_str().unwrap(),
        ])
    }

    fn app(&self) -> PathBuf {
        self.dest.join("app")
    }

    /// The release `current` points to, read on the host's file system.
    fn current(&self) -> Option<String> {
        std::fs::read_link(self.app().join("current"))
            .ok()
            .map(|p| p.to_str().unwrap().to_owned())
    }

    fn live_version(&self) -> String {
        std::fs::read_to_string(self.app().join("current/VERSION.txt")).unwrap_or_default()
    }

    fn releases(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.app().join("releases"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn history(&self) -> Vec<String> {
        std::fs::read_to_string(self.app().join(".releases"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn releases_deploy_switch_and_prune() {
    let Some(server) = support::ssh_server_or_skip("releases_deploy") else {
        return;
    };
    let env = Env::new("releases_deploy", &server);
    let cfg = env.config(
        &server,
        "keep = 2\nupgrade = echo new={release_dir} live=$(readlink {current} || echo none)\npost = cat {current}/VERSION.txt",
    );
    let o = env.dispatch(&cfg, &env.bundle("1.0", "tgz"));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(env.current().as_deref(), Some("releases/1.0"));
    assert_eq!(env.live_version(), "1.0\n");
    let out = text(&o);
    // upgrade ran before the switch: it saw the new release and no live one.
    assert!(out.contains("/app/releases/1.0 live=none"), "{out}");
    assert!(out.contains("==> unpack"), "{out}");
    assert!(out.contains("==> switch"), "{out}");
    assert!(
        !env.app().join("app-1.0.tgz").exists(),
        "the bundle is removed once live"
    );

    for v in ["1.1", "1.2"] {
        let o = env.dispatch(&cfg, &env.bundle(v, "tgz"));
        assert!(o.status.success(), "{}", text(&o));
        if v == "1.1" {
            assert!(text(&o).contains("live=releases/1.0"), "{}", text(&o));
        }
    }
    assert_eq!(env.current().as_deref(), Some("releases/1.2"));
    assert_eq!(env.live_version(), "1.2\n");
    // keep = 2: 1.0 is gone.
    assert_eq!(env.releases(), ["1.1", "1.2"]);
    assert_eq!(env.history(), ["1.1", "1.2"]);
    assert_eq!(
        std::fs::read_to_string(env.app().join("current/.version")).unwrap(),
        "1.2\n"
    );
    assert_eq!(
        std::fs::read_to_string(env.app().join(".version")).unwrap(),
        "1.2\n"
    );
}

#[test]
fn releases_unpack_zip_and_xz_and_refuse_to_replace_the_live_release() {
    let Some(server) = support::ssh_server_or_skip("releases_formats") else {
        return;
    };
    let env = Env::new("releases_formats", &server);
    let cfg = env.config(&server, "");
    let have_zip = Command::new("zip").arg("-v").output().is_ok()
        && Command::new("unzip").arg("-v").output().is_ok();
    if have_zip {
        let o = env.dispatch(&cfg, &env.bundle("2.0", "zip"));
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(env.live_version(), "2.0\n");
    } else {
        eprintln!("SKIPPED PART: zip/unzip are not installed");
    }
    let o = env.dispatch(&cfg, &env.bundle("2.1", "tar.xz"));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(env.live_version(), "2.1\n");
    // Shipping the live version again is refused, and nothing changes.
    let o = env.dispatch(&cfg, &env.bundle("2.1", "tar.xz"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is the live one"), "{}", text(&o));
    assert_eq!(env.current().as_deref(), Some("releases/2.1"));
    assert_eq!(env.live_version(), "2.1\n");
}

#[test]
fn failed_health_check_switches_back_and_runs_rollback() {
    let Some(server) = support::ssh_server_or_skip("releases_health") else {
        return;
    };
    let http = HttpServer::start();
    http.route("/ok", Behaviour::Status(200));
    http.route("/never", Behaviour::Status(503));
    let env = Env::new("releases_health", &server);
    let keys = |path: &str| {
        format!(
            "health = {}\nhealth_timeout = 2s\nhealth_interval = 1s\nrollback = readlink {{current}} > {}/rolled-back-to",
            http.url(path),
            env.dest.as_str()
        )
    };
    let cfg = env.config(&server, &keys("/ok"));
    let o = env.dispatch(&cfg, &env.bundle("1.0", "tgz"));
    assert!(o.status.success(), "{}", text(&o));
    let cfg = env.config(&server, &keys("/never"));
    let o = env.dispatch(&cfg, &env.bundle("1.1", "tgz"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("no 2xx answer"), "{out}");
    assert!(out.contains("current: 1.1 -> 1.0"), "{out}");
    // Switched back before the rollback command ran: it saw the old release live.
    assert_eq!(env.current().as_deref(), Some("releases/1.0"));
    assert_eq!(env.live_version(), "1.0\n");
    assert_eq!(
        std::fs::read_to_string(env.dest.join("rolled-back-to")).unwrap(),
        "releases/1.0\n"
    );
    assert_eq!(env.history(), ["1.0"]);
    // The failed release stays on disk for a look, outside the history.
    assert!(env.releases().contains(&"1.1".to_owned()));

    // A first release whose health check fails leaves no `current`, as before it.
    let fresh = Env::new("releases_health_first", &server);
    let cfg = fresh.config(
        &server,
        &format!("health = {}\nhealth_timeout = 1s", http.url("/never")),
    );
    let o = fresh.dispatch(&cfg, &fresh.bundle("1.0", "tgz"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(fresh.current(), None, "{}", text(&o));
}

#[test]
fn rollback_goes_back_one_release_at_a_time_then_says_there_is_none() {
    let Some(server) = support::ssh_server_or_skip("releases_rollback") else {
        return;
    };
    let env = Env::new("releases_rollback", &server);
    let cfg = env.config(
        &server,
        "rollback = echo rolled back to $(cat {current}/VERSION.txt) release {release} in {release_dir}",
    );
    // Deploy order, not version order: 1.10 before 1.9.
    for v in ["1.10", "1.9", "2.0"] {
        let o = env.dispatch(&cfg, &env.bundle(v, "tgz"));
        assert!(o.status.success(), "{}", text(&o));
    }
    let c = cfg.to_str().unwrap();
    let o = env.run(&[
        "--config",
        c,
        "--rollback",
        "app-(?P<version>[0-9.]+)\\.(tgz|zip|tar\\.xz)",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // `{release}`/`{release_dir}` name the release gone back to, not the last shipped.
    let dir = format!("{}/releases/1.9", env.app().display());
    assert!(
        text(&o).contains(&format!("rolled back to 1.9 release 1.9 in {dir}")),
        "{}",
        text(&o)
    );
    assert_eq!(env.current().as_deref(), Some("releases/1.9"));
    assert_eq!(
        std::fs::read_to_string(env.app().join(".version")).unwrap(),
        "1.9\n"
    );
    // A second rollback goes one further back; the RULE may be given as a bundle name,
    // and --host picks the host.
    let host = "127.0.0.1";
    let o = env.run(&["--config", c, "--rollback", "app-9.tgz", "--host", host]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("rolled back to 1.10 release 1.10 in"),
        "{}",
        text(&o)
    );
    assert_eq!(env.current().as_deref(), Some("releases/1.10"));
    assert_eq!(env.live_version(), "1.10\n");
    // Nothing before 1.10: a clear error, exit 1, nothing changed. (RULE as the package
    // name `--probe` and the console show.)
    let o = env.run(&["--config", c, "--rollback", "app", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("no previous release to roll back to"),
        "{}",
        text(&o)
    );
    assert_eq!(env.current().as_deref(), Some("releases/1.10"));
    // The rollbacks are in the journal, as dispatches of "(rollback)".
    let o = env.run(&["--history"]);
    let h = String::from_utf8_lossy(&o.stdout);
    assert_eq!(h.matches("(rollback)").count(), 3, "{h}");
    // An unknown host or rule is a usage error.
    let o = env.run(&["--config", c, "--rollback", "app-9.tgz", "--host", "nope"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a host of rule"), "{}", text(&o));
    let o = env.run(&["--config", c, "--rollback", "other"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn rollback_of_a_plain_rule_runs_its_rollback_command() {
    let Some(server) = support::ssh_server_or_skip("plain_rollback") else {
        return;
    };
    let env = Env::new("plain_rollback", &server);
    let http = HttpServer::start();
    http.route("/hook", Behaviour::Status(204));
    let text_cfg = format!(
        "[web-(?P<version>.*)\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ndest_dir = {d}\nlock_path = {d}/.dropship.lock\npost = test {{version}} != 3.2\nrollback = echo undo {{version}} > {d}/undone\nnotify = {hook}\n\n[norollback\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\n",
        server.addr(),
        server.addr(),
        d = env.dest.as_str(),
        hook = http.url("/hook"),
    );
    let cfg = env.path("dispatch.cfg");
    std::fs::write(&cfg, text_cfg).unwrap();
    let c = cfg.to_str().unwrap();
    // No dispatch of the rule yet: its placeholders have no values.
    let o = env.run(&["--config", c, "--rollback", "web-(?P<version>.*)\\.tgz"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--rollback BUNDLE_FILE_NAME"),
        "{}",
        text(&o)
    );
    let b = env.path("web-3.1.tgz");
    std::fs::write(&b, b"x").unwrap();
    let o = env.dispatch(&cfg, &b);
    assert!(o.status.success(), "{}", text(&o));
    // 3.2 fails at `post` (and is put back by its own rollback): it is not what runs there.
    let b = env.path("web-3.2.tgz");
    std::fs::write(&b, b"x").unwrap();
    let o = env.dispatch(&cfg, &b);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // Now the rule name works: the last dispatch that succeeded gives {version}.
    let o = env.run(&["--config", c, "--rollback", "web-(?P<version>.*)\\.tgz"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(env.dest.join("undone")).unwrap(),
        "undo 3.1\n"
    );
    // The dispatches and the rollback were all notified.
    let posts = http.posts("/hook");
    assert_eq!(posts.len(), 3, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&posts[2]).unwrap();
    assert_eq!(v["event"], "rollback");
    assert_eq!(v["bundle"], "(rollback)");
    assert_eq!(v["ok"], true);
    assert_eq!(v["hosts"][0]["result"], "succeeded");
    // A rule with neither a rollback command nor releases: nothing to do.
    let o = env.run(&["--config", c, "--rollback", "norollback.tgz"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no `rollback` command"), "{}", text(&o));
}
