//! `dropship --watch` through the real binary: a thousand bundles against the real sshd (and
//! `local` hosts), `kill -9` and restart, events switched off, markers. Every upgrade
//! appends `NAME SHA256` to a log on the host side, so "shipped exactly once" is counted
//! where it happened, with the content that arrived.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::home::Home;
use support::{SshServer, TEST_PASSWORD, TEST_USER};

/// A private HOME, state dir, drop folder and host-side scratch dir for one test.
struct Env {
    home: Home,
    dest: PathBuf,
    _scratch: Option<support::ScratchDir>,
    _local: Option<tempfile::TempDir>,
}

impl Env {
    fn new(test: &str, server: Option<&SshServer>) -> Env {
        let home = Home::new();
        home.ssh_dir();
        std::fs::create_dir_all(home.path("drop")).unwrap();
        let (dest, scratch, local) = match server {
            Some(s) => {
                home.trust(s);
                let scratch = support::scratch_dir(test);
                (scratch.path().to_path_buf(), Some(scratch), None)
            }
            None => {
                let t = tempfile::tempdir().unwrap();
                (t.path().to_path_buf(), None, Some(t))
            }
        };
        Env {
            home,
            dest,
            _scratch: scratch,
            _local: local,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path(name)
    }

    fn drop_dir(&self) -> PathBuf {
        self.path("drop")
    }

    fn shelf(&self, name: &str) -> PathBuf {
        self.drop_dir().join(".dropship").join(name)
    }

    /// A rule whose upgrade logs `NAME SHA256` to `log-LABEL` on the host side.
    fn rule(&self, label: &str, regex: &str, host: &str, protocol: &str, extra: &str) -> String {
        let d = self.dest.display();
        let creds = if protocol == "local" {
            String::new()
        } else {
            format!("login = {TEST_USER}\npassword = {TEST_PASSWORD}\n")
        };
        format!(
            "[{regex}]\nhost = {host}\nprotocol = {protocol}\n{creds}dest_dir = {d}/dest-{label}\n\
             lock_path = {d}/lock-{label}\ntimeout = 20s\n\
             upgrade = echo \"{{bundle}} $(sha256sum {{path}} | cut -c1-64)\" >> {d}/log-{label}{extra}\n\n"
        )
    }

    fn write_config(&self, text: &str) -> PathBuf {
        self.home.write("dispatch.cfg", text)
    }

    fn cmd(&self, cfg: &Path, args: &[&str]) -> Command {
        let drop_dir = self.drop_dir();
        let mut c = self.home.command(&[
            "--config",
            cfg.to_str().unwrap(),
            "--watch",
            drop_dir.to_str().unwrap(),
        ]);
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// The watcher with its output going to files (a pipe nobody reads would fill up and
    /// stall it): `out.N` and `err.N` in the test's directory.
    fn spawn_logged(&self, cfg: &Path, args: &[&str], n: u32) -> Child {
        let out = std::fs::File::create(self.path(&format!("out.{n}"))).unwrap();
        let err = std::fs::File::create(self.path(&format!("err.{n}"))).unwrap();
        self.cmd(cfg, args).stdout(out).stderr(err).spawn().unwrap()
    }

    fn logged(&self, n: u32) -> (String, String) {
        let read = |name: String| std::fs::read_to_string(self.path(&name)).unwrap_or_default();
        (read(format!("out.{n}")), read(format!("err.{n}")))
    }

    /// `NAME SHA` lines of every host log, counted.
    fn shipped(&self) -> HashMap<(String, String), usize> {
        let mut out = HashMap::new();
        for entry in std::fs::read_dir(&self.dest).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("log-") {
                continue;
            }
            for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
                let (n, sha) = line.split_once(' ').unwrap();
                *out.entry((n.to_owned(), sha.to_owned())).or_default() += 1;
            }
        }
        out
    }

    /// Regular files under a shelf, `.reason` files apart.
    fn shelved(&self, shelf: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.shelf(shelf), &mut out);
        out.retain(|p| !p.to_string_lossy().ends_with(".reason"));
        out.sort();
        out
    }

    /// Candidates still in the drop folder or staged.
    fn pending(&self) -> usize {
        let in_folder = std::fs::read_dir(self.drop_dir())
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count();
        let staged = std::fs::read_dir(self.shelf("queue"))
            .map(|d| d.count())
            .unwrap_or(0);
        in_folder + staged
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Drops `content` as `name` the safe way: written under a hidden name, then renamed in.
fn rename_in(dir: &Path, name: &str, content: &[u8]) {
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Writes `name` in place in `chunks`, closing it between chunks, `gap` apart.
fn write_slowly(path: &Path, chunks: &[Vec<u8>], gap: Duration) {
    for c in chunks {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(c).unwrap();
        drop(f);
        std::thread::sleep(gap);
    }
}

/// Stops the watcher with SIGINT and returns its output.
fn stop(child: Child) -> (Option<i32>, String, String) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits (a hang guard, not a timing assertion) until `f` holds.
fn wait_for(what: &str, child: &mut Child, timeout: Duration, f: impl FnMut() -> bool) {
    if !support::wait_until(timeout, f) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what}: not reached within {timeout:?}");
    }
}

#[test]
fn a_thousand_bundles_each_shipped_exactly_once() {
    let Some(server) = SshServer::builder()
        .listen_also(Ipv4Addr::new(127, 0, 0, 2))
        .listen_also(Ipv4Addr::new(127, 0, 0, 3))
        .listen_also(Ipv4Addr::new(127, 0, 0, 4))
        .start_or_skip("watch_thousand")
    else {
        return;
    };
    let env = Env::new("watch_thousand", Some(&server));
    let port = server.port();
    let mut cfg = String::new();
    // Four real-server rules (two sftp, two scp), one address each; eight local hosts.
    let ssh_rules = 4;
    for i in 0..ssh_rules {
        let proto = if i % 2 == 0 { "sftp" } else { "scp" };
        let host = format!("127.0.0.{}:{port}", i + 1);
        cfg += &env.rule(
            &format!("s{i}"),
            &format!("s{i}-.*\\.tgz"),
            &host,
            proto,
            "",
        );
    }
    let local_rules = 8;
    for i in 0..local_rules {
        cfg += &env.rule(
            &format!("l{i}"),
            &format!("l{i}-.*\\.tgz"),
            &format!("lh{i}"),
            "local",
            "",
        );
    }
    let cfg = env.write_config(&cfg);
    let mut child = env.spawn_logged(
        &cfg,
        &[
            "--json",
            "--settle",
            "1s",
            "--max-dispatches",
            "12",
            "--queue-limit",
            "200",
        ],
        1,
    );
    let drop = env.drop_dir();
    // Give the watcher a moment to be up; a file dropped earlier is found by its first
    // scan anyway.
    std::thread::sleep(Duration::from_millis(300));

    let mut expect: HashMap<String, String> = HashMap::new(); // name -> sha shipped
    let content = |name: &str, round: u32| format!("{name} round {round}\n").repeat(40);
    // 100 over the real sshd, renamed in.
    for i in 0..100 {
        let name = format!("s{}-{i}.tgz", i % ssh_rules);
        let c = content(&name, 1);
        rename_in(&drop, &name, c.as_bytes());
        expect.insert(name, sha256(c.as_bytes()));
    }
    // 740 local, renamed in.
    for i in 0..740 {
        let name = format!("l{}-{i}.tgz", i % local_rules);
        let c = content(&name, 1);
        rename_in(&drop, &name, c.as_bytes());
        expect.insert(name, sha256(c.as_bytes()));
    }
    // 100 that no rule matches.
    for i in 0..100 {
        rename_in(&drop, &format!("nomatch-{i}.zip"), b"nobody wants me");
    }
    // 60 written in place, slowly: four chunks 400 ms apart, each closed (settle is 1 s).
    let slow: Vec<(PathBuf, Vec<Vec<u8>>)> = (0..60)
        .map(|i| {
            let name = format!("l{}-slow-{i}.tgz", i % local_rules);
            let chunks: Vec<Vec<u8>> = (0..4)
                .map(|c| format!("{name} chunk {c}\n").repeat(50).into_bytes())
                .collect();
            expect.insert(name.clone(), sha256(&chunks.concat()));
            (drop.join(name), chunks)
        })
        .collect();
    std::thread::scope(|s| {
        for group in slow.chunks(15) {
            s.spawn(move || {
                // Interleave the files of a group chunk by chunk.
                for c in 0..4 {
                    for (path, chunks) in group {
                        write_slowly(path, &chunks[c..=c], Duration::ZERO);
                    }
                    std::thread::sleep(Duration::from_millis(400));
                }
            });
        }
    });
    assert_eq!(expect.len() + 100, 1000);

    let first_round = expect.len();
    wait_for(
        "first 1,000 bundles done",
        &mut child,
        Duration::from_secs(240),
        || env.pending() == 0 && env.shelved("done").len() + env.shelved("unmatched").len() >= 1000,
    );

    // Round two: 30 dropped again unchanged (not shipped again), 30 with new content (new
    // bundles, shipped).
    let mut again = Vec::new();
    for i in 0..60 {
        let name = format!("l{}-{i}.tgz", i % local_rules);
        if i % 2 == 0 {
            rename_in(&drop, &name, content(&name, 1).as_bytes());
            again.push(name);
        } else {
            let c = content(&name, 2);
            rename_in(&drop, &name, c.as_bytes());
            expect.insert(format!("{name}#2"), sha256(c.as_bytes()));
        }
    }
    wait_for(
        "round two done",
        &mut child,
        Duration::from_secs(120),
        || env.pending() == 0 && env.shelved("done").len() >= first_round + 60,
    );
    let (code, _, _) = stop(child);
    let (stdout, stderr) = env.logged(1);
    assert_eq!(code, Some(0), "{stderr}");

    // Host side: each bundle (name + content) exactly once, with its complete content.
    let shipped = env.shipped();
    let mut wanted: HashMap<(String, String), usize> = HashMap::new();
    for (key, sha) in &expect {
        let name = key.split('#').next().unwrap().to_owned();
        *wanted.entry((name, sha.clone())).or_default() += 1;
    }
    let twice: Vec<_> = shipped.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "shipped more than once: {twice:?}");
    let missing: Vec<_> = wanted
        .keys()
        .filter(|k| !shipped.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "never shipped (or incomplete): {missing:?}"
    );
    assert_eq!(shipped.len(), wanted.len(), "something else was shipped");

    // Folder side: nothing lost, nothing left, every file on a shelf.
    assert_eq!(env.pending(), 0);
    assert_eq!(env.shelved("unmatched").len(), 100);
    assert!(
        env.shelved("failed").is_empty(),
        "{:?}",
        env.shelved("failed")
    );
    let done = env.shelved("done");
    assert_eq!(done.len(), first_round + 60);
    let reasons: Vec<PathBuf> = {
        let mut all = Vec::new();
        walk(&env.shelf("done"), &mut all);
        all.retain(|p| p.to_string_lossy().ends_with(".reason"));
        all
    };
    assert_eq!(reasons.len(), again.len(), "one reason per duplicate");
    for r in &reasons {
        assert!(
            std::fs::read_to_string(r)
                .unwrap()
                .contains("already shipped"),
            "{}",
            r.display()
        );
    }
    for i in 0..100 {
        let reason = env
            .shelf("unmatched")
            .join(format!("nomatch-{i}.zip.reason"));
        assert!(
            std::fs::read_to_string(&reason)
                .unwrap()
                .contains("no rule matches"),
            "{}",
            reason.display()
        );
    }

    // The events a console needs were all there.
    let events = json_lines(&stdout);
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    assert_eq!(count("watch_started"), 1);
    assert_eq!(count("bundle_finished"), 1060);
    assert_eq!(count("bundle_dispatching"), first_round + 30);
    assert!(
        count("bundle_writing") > 0,
        "slow writers were never reported"
    );
    assert!(count("queue_full") > 0, "the queue bound was never reached");
    assert_eq!(count("watch_stopped"), 1);
    assert!(!stdout.contains(TEST_PASSWORD));
}

#[test]
fn kill_9_and_restart_finish_the_rest_without_shipping_twice() {
    let Some(server) = support::ssh_server_or_skip("watch_kill9") else {
        return;
    };
    let env = Env::new("watch_kill9", Some(&server));
    let d = env.dest.display().to_string();
    let hang_marker = format!("{d}/hung-once");
    let mut cfg = env.rule("a", "a-.*\\.tgz", &server.addr().to_string(), "sftp", "");
    cfg += &env.rule(
        "h",
        "hang-.*\\.tgz",
        "hanghost",
        "local",
        &format!(
            "; if [ -e {hang_marker} ]; then echo second run; else touch {hang_marker}; echo hanging; sleep 30; fi"
        ),
    );
    let cfg = env.write_config(&cfg);
    let drop = env.drop_dir();
    let mut expect = HashMap::new();
    for i in 0..40 {
        let name = format!("a-{i}.tgz");
        let c = format!("{name}\n").repeat(100);
        rename_in(&drop, &name, c.as_bytes());
        expect.insert(name, sha256(c.as_bytes()));
    }
    rename_in(&drop, "hang-1.tgz", b"hang");

    let mut child = env
        .cmd(&cfg, &["--json", "--max-dispatches", "2"])
        .spawn()
        .unwrap();
    // Kill once the hanging command runs and a few a-* are done.
    let stdout = child.stdout.take().unwrap();
    let mut finished = 0;
    let mut hanging = false;
    let mut hang_dispatch = None;
    for line in BufReader::new(stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "bundle_finished" {
            finished += 1;
        }
        if v["event"] == "bundle_dispatching" && v["name"] == "hang-1.tgz" {
            hang_dispatch = v["dispatch"].as_i64();
        }
        if v["event"] == "output" && v["line"] == "hanging" {
            hanging = true;
        }
        if hanging && finished >= 5 {
            break;
        }
    }
    assert!(hanging && finished >= 5);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let hang_dispatch = hang_dispatch.expect("the hang bundle was dispatched");
    assert!(env.pending() > 0, "nothing was left for the restart");

    let mut child = env.spawn_logged(&cfg, &["--json"], 2);
    wait_for(
        "the restart finished the rest",
        &mut child,
        Duration::from_secs(120),
        || {
            env.pending() == 0
                && env.shelved("done").len() + env.shelved("failed").len() == expect.len() + 1
        },
    );
    let (code, _, _) = stop(child);
    let (stdout, stderr) = env.logged(2);
    assert_eq!(code, Some(0), "{stderr}");
    let events = json_lines(&stdout);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "watch_started" && e["recovered"].as_u64() > Some(0)),
        "{stdout}"
    );

    // Never twice; every a-* that is done was shipped once; one in failed/ (killed in its
    // upgrade) carries a reason with the command to finish it.
    let shipped = env.shipped();
    assert!(shipped.values().all(|n| *n == 1), "{shipped:?}");
    let failed = env.shelved("failed");
    let failed_names: Vec<String> = failed
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        failed_names.contains(&"hang-1.tgz".to_owned()),
        "{failed_names:?}"
    );
    for name in expect.keys() {
        let in_done = env
            .shelved("done")
            .iter()
            .any(|p| p.file_name().unwrap().to_string_lossy() == *name);
        let in_failed = failed_names.contains(name);
        assert!(
            in_done ^ in_failed,
            "{name}: done {in_done}, failed {in_failed}"
        );
        if in_done {
            assert_eq!(shipped.get(&(name.clone(), expect[name].clone())), Some(&1));
        }
    }
    let reason = std::fs::read_to_string(env.shelf("failed").join("hang-1.tgz.reason")).unwrap();
    let resume = format!("--resume {hang_dispatch} --force");
    assert!(reason.contains(&resume), "{reason}");
    assert!(reason.contains("hanghost: upgrade"), "{reason}");
    // The hung command ran once only; the logged line is from before the kill.
    assert_eq!(shipped.keys().filter(|(n, _)| n == "hang-1.tgz").count(), 1);

    // The reason's command works: the file is found in failed/.
    let o = env.home.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--resume",
        &hang_dispatch.to_string(),
        "--force",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("[hanghost] second run"), "{out}");
}

/// No server needed: `local` hosts only, so it runs everywhere.
#[test]
fn with_file_events_off_the_rescan_finds_everything() {
    let env = Env::new("watch_rescan_only", None);
    let mut cfg = String::new();
    for i in 0..2 {
        cfg += &env.rule(
            &format!("l{i}"),
            &format!("l{i}-.*\\.tgz"),
            &format!("lh{i}"),
            "local",
            "",
        );
    }
    let cfg = env.write_config(&cfg);
    let mut child = env.spawn_logged(
        &cfg,
        &[
            "--json",
            "--rescan-only",
            "--rescan",
            "200ms",
            "--settle",
            "500ms",
        ],
        1,
    );
    let drop = env.drop_dir();
    let mut expect = HashMap::new();
    for i in 0..30 {
        let name = format!("l{}-{i}.tgz", i % 2);
        let c = format!("{name}\n").repeat(20);
        rename_in(&drop, &name, c.as_bytes());
        expect.insert(name, sha256(c.as_bytes()));
    }
    // Written in place in chunks 150 ms apart: rescans see it change and wait.
    let chunks: Vec<Vec<u8>> = (0..8)
        .map(|c| format!("chunk {c}\n").into_bytes())
        .collect();
    write_slowly(
        &drop.join("l0-slow.tgz"),
        &chunks,
        Duration::from_millis(150),
    );
    expect.insert("l0-slow.tgz".into(), sha256(&chunks.concat()));
    // Ignored names are never taken.
    for n in [".hidden.tgz", "l0-x.tgz.part", "l0-y.tgz.tmp", "l0-z.tgz~"] {
        std::fs::write(drop.join(n), b"ignore me").unwrap();
    }
    wait_for(
        "all found by rescans",
        &mut child,
        Duration::from_secs(60),
        || env.shelved("done").len() == expect.len(),
    );
    let (code, _, _) = stop(child);
    let (stdout, stderr) = env.logged(1);
    assert_eq!(code, Some(0), "{stderr}");
    let events = json_lines(&stdout);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "watch_started" && e["fs_events"] == false)
    );
    let shipped = env.shipped();
    for (name, sha) in &expect {
        assert_eq!(
            shipped.get(&(name.clone(), sha.clone())),
            Some(&1),
            "{name}"
        );
    }
    assert_eq!(shipped.len(), expect.len());
    for n in [".hidden.tgz", "l0-x.tgz.part", "l0-y.tgz.tmp", "l0-z.tgz~"] {
        assert!(drop.join(n).exists(), "{n} was taken");
    }
}

#[test]
fn a_marker_holds_the_bundle_until_it_appears() {
    let env = Env::new("watch_marker", None);
    let cfg = env.write_config(&env.rule("l0", "l0-.*\\.tgz", "lh0", "local", ""));
    let mut child = env
        .cmd(&cfg, &["--json", "--marker", "done", "--settle", "200ms"])
        .spawn()
        .unwrap();
    let drop = env.drop_dir();
    rename_in(&drop, "l0-1.tgz", b"first");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // Announced as waiting for its marker, and not shipped.
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        assert_ne!(
            v["event"], "bundle_dispatching",
            "shipped without its marker"
        );
        if v["event"] == "bundle_awaiting_marker" {
            assert_eq!(v["marker"], "l0-1.tgz.done");
            break;
        }
    }
    assert!(env.shipped().is_empty());
    std::fs::write(drop.join("l0-1.tgz.done"), b"").unwrap();
    wait_for(
        "shipped after its marker",
        &mut child,
        Duration::from_secs(30),
        || env.shelved("done").len() == 2,
    );
    let (code, _, stderr) = stop(child);
    assert_eq!(code, Some(0), "{stderr}");
    let done = env.shelved("done");
    let names: Vec<String> = done
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["l0-1.tgz", "l0-1.tgz.done"],
        "the marker moves with it"
    );
    assert_eq!(env.shipped().len(), 1);
}

/// A file written in place and removed before it settled is never taken, and the watcher
/// says it left (the console would otherwise show it as "seen" for ever).
#[test]
fn a_file_that_leaves_before_it_is_complete_is_reported_gone() {
    let env = Env::new("watch_gone", None);
    let cfg = env.write_config(&env.rule("l0", "l0-.*\\.tgz", "lh0", "local", ""));
    let mut child = env
        .cmd(&cfg, &["--json", "--settle", "30s"])
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // A hang guard, not a timing assertion: an event that never comes ends the run.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (pid, d) = (child.id() as i32, done.clone());
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        if !d.load(std::sync::atomic::Ordering::SeqCst) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut next_event = || -> serde_json::Value {
        let line = lines.next().expect("the watcher ended early").unwrap();
        serde_json::from_str(&line).unwrap()
    };
    while next_event()["event"] != "watch_started" {}
    let file = env.drop_dir().join("l0-1.tgz");
    std::fs::write(&file, b"half a bundle").unwrap();
    loop {
        let v = next_event();
        assert_ne!(v["event"], "bundle_queued", "taken before it settled: {v}");
        if v["event"] == "bundle_seen" {
            assert_eq!(v["name"], "l0-1.tgz");
            break;
        }
    }
    std::fs::remove_file(&file).unwrap();
    loop {
        let v = next_event();
        assert_ne!(v["event"], "bundle_queued", "taken after it left: {v}");
        if v["event"] == "bundle_gone" {
            assert_eq!(v["name"], "l0-1.tgz");
            break;
        }
    }
    let (code, _, stderr) = stop(child);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(env.shipped().is_empty());
    assert_eq!(env.pending(), 0);
}

/// A real full disk under the journal (a 1 MiB tmpfs): the watcher cannot know what ran
/// without it, so it stops — exit non-zero, the bundle neither done nor failed but left open
/// — and once there is room again a restart settles it without running `upgrade` twice.
#[test]
fn a_journal_that_cannot_be_written_stops_the_watcher_and_ships_nothing_twice() {
    if !support::live_test_or_skip("watch_journal_full", &[support::Need::Root]) {
        return;
    }
    let env = Env::new("watch_journal_full", None);
    let small = env.path("small");
    std::fs::create_dir_all(&small).unwrap();
    let mount = |args: &[&str]| {
        let st = std::process::Command::new("mount")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "mount {args:?}");
    };
    mount(&[
        "-t",
        "tmpfs",
        "-o",
        "size=1m",
        "tmpfs",
        small.to_str().unwrap(),
    ]);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let journal = small.join("journal.sqlite");
    // `post` prints 2 MB that the journal keeps (10,000 lines of 200 bytes): more than fits.
    let line = "x".repeat(199);
    let cfg = env.write_config(&env.rule(
        "l0",
        "l0-.*\\.tgz",
        "lh0",
        "local",
        &format!("\npost = yes {line} | head -n 10000"),
    ));
    let args = ["--journal", journal.to_str().unwrap()];
    let child = env.cmd(&cfg, &args).spawn().unwrap();
    rename_in(&env.drop_dir(), "l0-1.tgz", b"full disk");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot be written: stopping"), "{stderr}");
    assert!(env.shelved("done").is_empty() && env.shelved("failed").is_empty());
    assert_eq!(env.pending(), 1, "the bundle is kept for the next start");

    // Room again: the next start settles it, and `upgrade` ran once in all.
    mount(&["-o", "remount,size=64m", small.to_str().unwrap()]);
    let mut child = env.cmd(&cfg, &args).spawn().unwrap();
    wait_for(
        "the bundle settled after the restart",
        &mut child,
        Duration::from_secs(60),
        || env.pending() == 0,
    );
    let (code, _, stderr) = stop(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        env.shelved("done").len() + env.shelved("failed").len(),
        1,
        "{stderr}"
    );
    assert_eq!(env.shipped().values().sum::<usize>(), 1, "upgrade ran once");
}
