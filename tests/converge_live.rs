//! `--converge`, the bundle store, `--dispatch --host` and version chains, through the real
//! binary against the real sshd. Three hosts of one rule: 127.0.0.1 and 127.0.0.2 on the
//! sshd, 127.0.0.3 through a TCP proxy that refuses connections while the host is "down".
//!
//! Converge: one host down during the last two dispatches (left on 1.0), one rolled back by
//! hand (1.1), one up to date (1.2): a dry run changes nothing; converge ships 1.2 from the
//! store (the original file is gone) to exactly the two that differ, and all end on 1.2.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::home::{Home, text};
use support::{Fault, FaultProxy, LOOPBACK_2, ScratchDir, SshServer, TEST_PASSWORD, TEST_USER};

use support::LOOPBACK_3;

struct Env {
    home: Home,
    dest: ScratchDir,
}

impl Env {
    fn new(test: &str, server: &SshServer) -> Env {
        Env {
            home: Home::trusting(server),
            dest: support::scratch_dir(test),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", "dispatch.cfg"];
        all.extend(args);
        self.home
            .command(&all)
            .env("XDG_DATA_HOME", self.data())
            .output()
            .expect("run dropship")
    }

    fn data(&self) -> PathBuf {
        self.home.path("data")
    }

    fn store(&self) -> PathBuf {
        self.data().join("dropship/store")
    }

    fn bundle(&self, name: &str) -> PathBuf {
        // Distinct contents per name: the store is content-addressed.
        self.home.write(name, format!("bundle {name}\n").repeat(40))
    }

    fn dispatch(&self, names: &[&str], extra: &[&str]) -> Output {
        let files: Vec<String> = names
            .iter()
            .map(|n| self.bundle(n).to_str().unwrap().to_owned())
            .collect();
        let mut args = vec!["--dispatch"];
        args.extend(files.iter().map(String::as_str));
        args.extend(extra);
        self.run(&args)
    }

    fn version(&self, host: &str) -> String {
        std::fs::read_to_string(self.dest.join(&format!("app/{host}/.version")))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    fn set_version(&self, host: &str, v: &str) {
        std::fs::write(
            self.dest.join(&format!("app/{host}/.version")),
            format!("{v}\n"),
        )
        .unwrap();
    }

    fn history(&self) -> Vec<Value> {
        let o = self.run(&["--history", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The rule `app` on `hosts`; its upgrade fails where a file `fail-VERSION-HOST` exists.
fn config(env: &Env, hosts: &str, extra: &str) {
    let d = env.dest.as_str();
    env.home.write(
        "dispatch.cfg",
        format!(
            "[app-(?P<version>[0-9.]+)\\.tgz]\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\n\
             timeout = 5s\nhost = {hosts}\n\
             dest_dir = {d}/app/{{host}}\nlock_path = {d}/app/{{host}}.lock\n\
             upgrade = if [ -e {d}/fail-{{version}}-{{host}} ]; then echo refusing {{version}}; exit 1; fi; echo {{version}} > {{dir}}/.version\n\
             version_cmd = cat {d}/app/{{host}}/.version\n{extra}"
        ),
    );
}

fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{}", text(o));
}

#[test]
fn converge_brings_every_host_to_the_last_good_version() {
    let Some(server) = SshServer::builder()
        .listen_also(LOOPBACK_2)
        .start_or_skip("converge_brings_every_host_to_the_last_good_version")
    else {
        return;
    };
    let env = Env::new("converge_three_versions", &server);
    // 127.0.0.3 is the sshd behind a proxy, which "takes the host down" by refusing.
    let proxy = FaultProxy::start_on(LOOPBACK_3, server.addr());
    let mut kh = std::fs::read_to_string(env.home.path(".ssh/known_hosts")).unwrap();
    kh.push_str(&server.host_keys()[0].known_hosts_line(proxy.addr()));
    kh.push('\n');
    std::fs::write(env.home.path(".ssh/known_hosts"), kh).unwrap();
    let port = server.port();
    config(
        &env,
        &format!("127.0.0.1:{port}, 127.0.0.2:{port}, {}", proxy.addr()),
        "canary = 1\n",
    );
    let (a, b, c) = ("127.0.0.1", "127.0.0.2", "127.0.0.3");

    ok(&env.dispatch(&["app-1.0.tgz"], &[]));
    assert_eq!([env.version(a), env.version(b), env.version(c)], ["1.0"; 3]);
    proxy.set_fault(Fault::Refuse);
    for v in ["1.1", "1.2"] {
        let o = env.dispatch(&[&format!("app-{v}.tgz")], &[]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    }
    proxy.set_fault(Fault::Pass);
    env.set_version(b, "1.1"); // rolled back by hand, outside dropship
    // The file shipped last is gone: converge must take it from the store.
    std::fs::remove_file(env.home.path("app-1.2.tgz")).unwrap();
    assert_eq!(
        [env.version(a), env.version(b), env.version(c)],
        ["1.2", "1.1", "1.0"]
    );
    let dispatches = env.history().len();

    // Dry run: who would get what; nothing changes, nothing is journaled.
    let o = env.run(&["--converge", "app", "--dry-run"]);
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("last good app-1.2.tgz (version 1.2"),
        "{}",
        text(&o)
    );
    let line = |h: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(h))
            .unwrap_or_else(|| panic!("no line for {h}: {out}"))
            .to_owned()
    };
    assert!(line(a).contains("up to date"), "{out}");
    assert!(
        line(b).contains("1.1") && line(b).contains("would get app-1.2.tgz"),
        "{out}"
    );
    assert!(
        line(c).contains("1.0") && line(c).contains("would get app-1.2.tgz"),
        "{out}"
    );
    assert_eq!(
        [env.version(a), env.version(b), env.version(c)],
        ["1.2", "1.1", "1.0"]
    );
    assert_eq!(env.history().len(), dispatches);

    // The real thing: exactly the two hosts that differ get 1.2.
    let o = env.run(&["--converge", "app"]);
    ok(&o);
    assert_eq!([env.version(a), env.version(b), env.version(c)], ["1.2"; 3]);
    let h = env.history();
    assert_eq!(h.len(), dispatches + 1);
    assert_eq!(h[0]["bundle"], "app-1.2.tgz");
    assert_eq!(
        (h[0]["hosts"].as_u64(), h[0]["succeeded"].as_u64()),
        (Some(2), Some(2))
    );

    // Converged: nothing left to do, and --status sees no drift.
    let o = env.run(&["--converge", "app"]);
    ok(&o);
    assert!(text(&o).contains("nothing shipped"), "{}", text(&o));
    assert_eq!(env.history().len(), dispatches + 1);
    let o = env.run(&["--status"]);
    ok(&o);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains('!'),
        "{}",
        text(&o)
    );

    // A host that does not answer is left out and fails the run; the others still converge.
    env.set_version(b, "1.0");
    proxy.set_fault(Fault::Refuse);
    let o = env.run(&["--converge", "app"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("left out: did not answer"),
        "{}",
        text(&o)
    );
    assert_eq!(env.version(b), "1.2");
    proxy.set_fault(Fault::Pass);

    // The bundle gone from the store: a clear error naming it and where it was looked for.
    let usage = env.run(&["--check", "--json"]);
    ok(&usage);
    let v: Value = serde_json::from_slice(&usage.stdout).unwrap();
    let sha = v["store"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["bundle"] == "app-1.2.tgz")
        .unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = env.store().join("sha256").join(&sha);
    std::fs::remove_file(&blob).unwrap();
    let o = env.run(&["--converge", "app", "--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bundle app-1.2.tgz") && err.contains(&blob.display().to_string()),
        "{err}"
    );
}

/// Converge ships with the rule's rollout: `canary = 1` sends the first differing host
/// alone, and when it fails the others are skipped. A host whose version cannot be read
/// (no version file) is one that differs.
#[test]
fn converge_keeps_the_rules_canary() {
    let Some(server) = SshServer::builder()
        .listen_also(LOOPBACK_2)
        .start_or_skip("converge_keeps_the_rules_canary")
    else {
        return;
    };
    let env = Env::new("converge_canary", &server);
    let port = server.port();
    config(
        &env,
        &format!("127.0.0.1:{port}, 127.0.0.2:{port}"),
        "canary = 1\n",
    );
    let (a, b) = ("127.0.0.1", "127.0.0.2");
    ok(&env.dispatch(&["app-1.0.tgz"], &[]));
    ok(&env.dispatch(&["app-1.1.tgz"], &[]));
    env.set_version(a, "1.0");
    std::fs::remove_file(env.dest.join(&format!("app/{b}/.version"))).unwrap();
    std::fs::write(env.dest.join(&format!("fail-1.1-{a}")), "").unwrap();
    let o = env.run(&["--converge", "app", "--dry-run"]);
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines().any(|l| l.contains(b)
            && l.contains("unreadable")
            && l.contains("would get app-1.1.tgz")),
        "{out}"
    );
    let o = env.run(&["--converge", "app"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("canary failed"), "{}", text(&o));
    assert_eq!(env.version(a), "1.0");
    assert_eq!(env.version(b), "");
    // The canary put right: both converge.
    std::fs::remove_file(env.dest.join(&format!("fail-1.1-{a}"))).unwrap();
    ok(&env.run(&["--converge", "app"]));
    assert_eq!([env.version(a), env.version(b)], ["1.1", "1.1"]);
}

#[test]
fn converge_refuses_what_it_cannot_do() {
    let Some(server) = SshServer::builder().start_or_skip("converge_refuses_what_it_cannot_do")
    else {
        return;
    };
    let env = Env::new("converge_refuses", &server);
    config(&env, &server.addr().to_string(), "");
    // Never shipped: nothing to converge to.
    let o = env.run(&["--converge", "app"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("no dispatch of it that succeeded"),
        "{}",
        text(&o)
    );
    let o = env.run(&["--converge", "nope"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = env.run(&["--converge", "app", "--host", "127.0.0.9"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn the_store_keeps_the_last_bundles_within_its_bound() {
    let Some(server) =
        SshServer::builder().start_or_skip("the_store_keeps_the_last_bundles_within_its_bound")
    else {
        return;
    };
    let env = Env::new("converge_store_bound", &server);
    // Each bundle is 760 bytes: `keep = 3` would hold three, the bound holds two.
    config(
        &env,
        &server.addr().to_string(),
        "keep = 3\nstore_max = 2K\n",
    );
    for v in ["1.0", "1.1"] {
        ok(&env.dispatch(&[&format!("app-{v}.tgz")], &[]));
    }
    let o = env.dispatch(&["app-1.2.tgz"], &[]);
    ok(&o);
    assert!(
        text(&o).contains("bundle store: evicted app-1.0.tgz"),
        "{}",
        text(&o)
    );
    let o = env.run(&["--check"]);
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("2 bundle(s)") && out.contains("1.5 KiB of store_max 2.0 KiB"),
        "{out}"
    );
    assert!(
        out.contains("app-1.2.tgz") && out.contains("app-1.1.tgz"),
        "{out}"
    );
    assert!(!out.contains("app-1.0.tgz"), "{out}");
    let blobs = std::fs::read_dir(env.store().join("sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 2);
    // Nothing half-written left behind, and the stored files are the bundles.
    assert_eq!(
        std::fs::read_dir(env.store().join("tmp")).unwrap().count(),
        0
    );
    let bytes: u64 = std::fs::read_dir(env.store().join("sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes <= 2048, "{bytes}");
}

#[test]
fn a_chain_stops_at_the_first_failure_and_says_where_each_host_got() {
    let Some(server) = SshServer::builder()
        .listen_also(LOOPBACK_2)
        .start_or_skip("a_chain_stops_at_the_first_failure")
    else {
        return;
    };
    let env = Env::new("converge_chain", &server);
    let port = server.port();
    config(&env, &format!("127.0.0.1:{port}, 127.0.0.2:{port}"), "");
    std::fs::write(env.dest.join("fail-1.2-127.0.0.2"), "").unwrap();
    let o = env.dispatch(&["app-1.1.tgz", "app-1.2.tgz", "app-1.3.tgz"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("127.0.0.1: app-1.2.tgz; not tried: app-1.3.tgz"),
        "{}",
        text(&o)
    );
    assert!(
        out.contains("127.0.0.2: app-1.1.tgz (app-1.2.tgz failed); not tried: app-1.3.tgz"),
        "{}",
        text(&o)
    );
    assert_eq!(env.version("127.0.0.1"), "1.2");
    assert_eq!(env.version("127.0.0.2"), "1.1");
    // 1.3 never started: two dispatches in the journal.
    assert_eq!(env.history().len(), 2);

    // Without the fault the whole chain lands, in order.
    std::fs::remove_file(env.dest.join("fail-1.2-127.0.0.2")).unwrap();
    let o = env.dispatch(&["app-1.2.tgz", "app-1.3.tgz"], &["--json"]);
    ok(&o);
    let last: Value = serde_json::from_str(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|l| l.starts_with("{\"chain\""))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["chain"][1]["reached"], "app-1.3.tgz", "{last}");
    assert_eq!(env.version("127.0.0.2"), "1.3");
}

#[test]
fn dispatch_to_a_subset_of_hosts() {
    let Some(server) = SshServer::builder()
        .listen_also(LOOPBACK_2)
        .start_or_skip("dispatch_to_a_subset_of_hosts")
    else {
        return;
    };
    let env = Env::new("converge_host_subset", &server);
    let port = server.port();
    config(&env, &format!("127.0.0.1:{port}, 127.0.0.2:{port}"), "");
    let o = env.dispatch(&["app-2.0.tgz"], &["--host", "127.0.0.2"]);
    ok(&o);
    assert_eq!(env.version("127.0.0.2"), "2.0");
    assert_eq!(env.version("127.0.0.1"), "");
    assert_eq!(env.history()[0]["hosts"].as_u64(), Some(1));
    let o = env.dispatch(&["app-2.1.tgz"], &["--host", "127.0.0.9"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("`127.0.0.9` is not a host of rule")
            && text(&o).contains("127.0.0.1, 127.0.0.2"),
        "{}",
        text(&o)
    );
    let o = env.run(&["--history", "--host", "127.0.0.1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // Path helpers used above.
    let _: &Path = env.store().as_path();
}

/// `layout = releases`: a host put back by `--rollback` (`current` -> the release before)
/// converges onto the last good release again, although its directory is still there.
#[test]
fn converge_after_a_rollback_with_releases() {
    let Some(server) =
        SshServer::builder().start_or_skip("converge_after_a_rollback_with_releases")
    else {
        return;
    };
    let env = Env::new("converge_releases", &server);
    let d = env.dest.as_str();
    env.home.write(
        "dispatch.cfg",
        format!(
            "[app-(?P<version>[0-9.]+)\\.tgz]\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\n\
             timeout = 5s\nhost = {addr}\nlayout = releases\n\
             dest_dir = {d}/app\nlock_path = {d}/app.lock\n\
             version_cmd = cat {d}/app/.version\n",
            addr = server.addr()
        ),
    );
    let tgz = |v: &str| {
        let src = env.home.path(&format!("src-{v}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("VERSION.txt"), v).unwrap();
        let out = env.home.path(&format!("app-{v}.tgz"));
        let st = std::process::Command::new("tar")
            .arg("czf")
            .arg(&out)
            .arg("VERSION.txt")
            .current_dir(&src)
            .status()
            .unwrap();
        assert!(st.success());
        out
    };
    for v in ["1.0", "1.1"] {
        ok(&env.run(&["--dispatch", tgz(v).to_str().unwrap()]));
    }
    ok(&env.run(&["--rollback", "app"]));
    let current = || std::fs::read_link(env.dest.join("app/current")).unwrap();
    assert_eq!(current(), Path::new("releases/1.0"));
    let o = env.run(&["--converge", "app"]);
    ok(&o);
    assert_eq!(current(), Path::new("releases/1.1"), "{}", text(&o));
}

/// The drop folder's dispatches fill the store too (the bundle is kept before the folder
/// moves it to `done/`), so a bundle that only ever came through the folder can be
/// converged to.
#[test]
fn the_drop_folder_fills_the_store() {
    let home = Home::new();
    let drop = home.path("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let dest = home.path("dest");
    let cfg = home.write(
        "dispatch.cfg",
        format!(
            "[app-(?P<version>[0-9.]+)\\.tgz]\nprotocol = local\nhost = localhost\ndest_dir = {}\n",
            dest.display()
        ),
    );
    let child = home
        .command(&[
            "--config",
            cfg.to_str().unwrap(),
            "--watch",
            drop.to_str().unwrap(),
            "--settle",
            "200ms",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tmp = home.path("app-3.0.tgz.tmp");
    std::fs::write(&tmp, b"through the drop folder").unwrap();
    std::fs::rename(&tmp, drop.join("app-3.0.tgz")).unwrap();
    let index = home.path("data/dropship/store/index.json");
    let kept = support::wait_until(std::time::Duration::from_secs(30), || {
        std::fs::read_to_string(&index).is_ok_and(|t| t.contains("app-3.0.tgz"))
    });
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert!(kept, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read(dest.join("app-3.0.tgz")).unwrap(),
        b"through the drop folder"
    );
}
