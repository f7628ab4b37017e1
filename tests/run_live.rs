//! `dropship --run` and `--action` through the real binary against a real OpenSSH sshd:
//! 20 hosts (10 loopback addresses of one sshd, each reached as two users through two
//! rules), identical and differing output grouped, a failing host, a command hung past
//! `step_timeout` killed on the host, a cancel, destructive actions needing `--yes`,
//! actions with the placeholders of the last good dispatch, and `--history` showing runs.

mod support;

use serde_json::Value;
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::home::{Home, text};
use support::{ScratchDir, SshServer, TEST_PASSWORD, TEST_USER, shells};

/// 10 addresses, 127.0.0.1 to 127.0.0.10.
const ADDRESSES: u8 = 10;

struct Env {
    home: Home,
    dest: ScratchDir,
    port: u16,
    other: shells::ShellUser,
    _server: SshServer,
}

impl Env {
    fn start(test: &str) -> Option<Env> {
        let mut b = SshServer::builder();
        for i in 2..=ADDRESSES {
            b = b.listen_also(Ipv4Addr::new(127, 0, 0, i));
        }
        let server = b.start_or_skip(test)?;
        Some(Env {
            home: Home::trusting(&server),
            dest: support::scratch_dir(test),
            port: server.port(),
            other: shells::shell_user("bash", "/bin/bash"),
            _server: server,
        })
    }

    fn hosts(&self) -> String {
        (1..=ADDRESSES)
            .map(|i| format!("127.0.0.{i}:{}", self.port))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `[web]` as the test user and `[api]` as another user, on the same 10 addresses; `extra`
    /// is added to `[web]`.
    fn config(&self, extra: &str) {
        let d = self.dest.as_str();
        let hosts = self.hosts();
        let other = &self.other.name;
        self.home.write(
            "dispatch.cfg",
            format!(
                "[DEFAULT]\nprotocol = sftp\npassword = {TEST_PASSWORD}\ntimeout = 10s\nparallel = 20\n\
                 [web-(?P<version>[0-9.]+)\\.tgz]\nlogin = {TEST_USER}\nhost = {hosts}\n\
                 dest_dir = {d}/web\nlock_path = {d}/web-{{host}}.lock\n{extra}\n\
                 [api-(?P<version>[0-9.]+)\\.tgz]\nlogin = {other}\nhost = {hosts}\n\
                 dest_dir = /tmp\nlock_path = /tmp/dropship-run-live-{{host}}.lock\n"
            ),
        );
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut all = vec!["--config", "dispatch.cfg"];
        all.extend(args);
        self.home.command(&all)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run dropship")
    }

    fn json(&self, args: &[&str]) -> (Option<i32>, Vec<Value>, Output) {
        let mut all = vec!["--json"];
        all.extend(args);
        let o = self.run(&all);
        let lines = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", text(&o))))
            .collect();
        (o.status.code(), lines, o)
    }

    fn label(&self, i: u8) -> String {
        format!("127.0.0.{i}")
    }
}

/// The `groups` line `--json` ends with.
fn groups(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .find_map(|l| l.get("groups"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| panic!("no groups line in {lines:#?}"))
}

/// Processes on this machine (the hosts are loopback addresses of it) whose command line
/// contains `marker`.
fn remote_processes(marker: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-a", "-f", marker])
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(str::to_owned)
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A number unique to this test process, so a marker matches only our own commands.
fn marker(base: u32) -> String {
    format!("{}", base * 100_000 + std::process::id() % 100_000)
}

#[test]
fn run_on_20_hosts_groups_identical_output() {
    let Some(env) = Env::start("run_on_20_hosts_groups") else {
        return;
    };
    env.config("");
    // The same kernel line everywhere, and who answered: two groups of ten.
    let (code, lines, o) = env.json(&["--run", "web,api", "--", "echo same-line; id -un"]);
    assert_eq!(code, Some(0), "{}", text(&o));
    let g = groups(&lines);
    assert_eq!(g.len(), 2, "{g:#?}");
    for group in &g {
        assert_eq!(group["hosts"].as_array().unwrap().len(), 10, "{g:#?}");
        assert_eq!(group["lines"][0], "same-line");
    }
    let users: Vec<&str> = g.iter().map(|x| x["lines"][1].as_str().unwrap()).collect();
    assert!(users.contains(&TEST_USER) && users.contains(&env.other.name.as_str()));
    // The events are there too: 20 hosts started the `run` step and finished it with 0.
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "step_finished" && l["step"] == "run")
        .collect();
    assert_eq!(finished.len(), 20, "{}", text(&o));
    assert!(finished.iter().all(|l| l["exit_code"] == 0));

    // `{host}` differs per host; one host also prints a second line: text form, clush -b style.
    let o = env.run(&[
        "--run",
        "web",
        "--",
        "echo up; [ {host} != 127.0.0.7 ] || echo odd-one",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(9)\n---------------\nup\n"), "{out}");
    assert!(
        out.contains(&format!(
            "{} (1)\n---------------\nup\nodd-one\n",
            env.label(7)
        )),
        "{out}"
    );
    // The closing table: every host, its result and exit code.
    let table: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(table.len(), 10, "{out}");
    assert!(table.iter().all(|l| l.contains("succeeded")), "{out}");

    // --history shows the runs with their commands; --json gives kind and command.
    let o = env.run(&["--history"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("(run) echo up; [ {host} != 127.0.0.7 ]"),
        "{out}"
    );
    let (_, rows, _) = env.json(&["--history"]);
    let runs: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "run").collect();
    assert_eq!(runs.len(), 3, "{rows:#?}"); // web and api, then web
    assert_eq!(runs[2]["command"], "echo same-line; id -un");
    assert_eq!(runs[0]["succeeded"], 10);
}

#[test]
fn run_failing_host_exit_codes_and_usage() {
    let Some(env) = Env::start("run_failing_host") else {
        return;
    };
    env.config("");
    let o = env.run(&["--run", "web", "--", "test {host} != 127.0.0.4 || exit 7"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let row = out
        .lines()
        .find(|l| l.starts_with('#') && l.contains("127.0.0.4"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("failed") && row.contains(" 7 "), "{row}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with('#') && l.contains("succeeded"))
            .count(),
        9,
        "{out}"
    );

    // One host by name, through the first rule that lists it.
    let one = format!("127.0.0.3:{}", env.port);
    let (code, lines, o) = env.json(&["--run", &one, "--", "id -un"]);
    assert_eq!(code, Some(0), "{}", text(&o));
    let g = groups(&lines);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0]["lines"][0], TEST_USER);

    // Nothing matched: exit 3, saying what is there.
    let o = env.run(&["--run", "nope", "--", "true"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("`nope` is neither a rule nor a host"),
        "{}",
        text(&o)
    );
    // Usage: no command; a command without --run; a placeholder with no value yet.
    assert_eq!(env.run(&["--run", "web"]).status.code(), Some(2));
    assert_eq!(env.run(&["--", "uptime"]).status.code(), Some(2));
    let o = env.run(&["--run", "web", "--", "echo {version}"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("no dispatch of this rule has succeeded"),
        "{}",
        text(&o)
    );
}

#[test]
fn run_hung_command_is_killed_on_the_host_at_step_timeout() {
    let Some(env) = Env::start("run_hung_command") else {
        return;
    };
    env.config("step_timeout = 2s");
    let m = marker(31);
    let started = Instant::now();
    // `wo''ke` prints `woke`, a word the command line itself does not hold.
    let cmd = format!("echo before; sleep {m}; echo wo''ke");
    let o = env.run(&["--run", &format!("127.0.0.2:{}", env.port), "--", &cmd]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let all = text(&o);
    assert!(
        all.contains("was still running after 2s and was killed on the host"),
        "{all}"
    );
    assert!(all.contains("raise `step_timeout`"), "{all}");
    assert!(!all.contains("woke"), "{all}");
    // The host's `sleep` is gone (TERM, then KILL after 5 s at the latest).
    wait_until("the remote sleep to die", Duration::from_secs(10), || {
        remote_processes(&format!("sleep {m}")).is_empty()
    });
}

#[test]
fn run_cancel_stops_the_commands_on_the_hosts() {
    let Some(env) = Env::start("run_cancel") else {
        return;
    };
    env.config("");
    let m = marker(32);
    let child = env
        .command(&["--run", "web", "--", &format!("sleep {m}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("10 remote sleeps", Duration::from_secs(30), || {
        remote_processes(&format!("sleep {m}")).len() >= 10
    });
    // Ctrl-C twice: the second one stops running commands at once.
    let pid = child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(pid, libc::SIGINT) };
    let start = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with('#') && l.contains("cancelled"))
            .count(),
        10,
        "{}",
        text(&o)
    );
    wait_until("the remote sleeps to die", Duration::from_secs(10), || {
        remote_processes(&format!("sleep {m}")).is_empty()
    });
    let (_, rows, _) = env.json(&["--history"]);
    assert_eq!(rows[0]["kind"], "run");
    assert_eq!(rows[0]["state"], "cancelled", "{rows:#?}");
}

#[test]
fn actions_confirm_and_last_good_placeholders() {
    let Some(env) = Env::start("actions_confirm") else {
        return;
    };
    env.config(
        "upgrade = echo {version} > {dir}/VERSION\n\
         action.status = echo in $(pwd) version {version}; cat VERSION\n\
         action.stop = touch stopped-{host}\n\
         action.stop.confirm = yes\n",
    );
    // --check and --plan list the actions.
    let o = env.run(&["--check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("actions (--action NAME):"), "{}", text(&o));
    assert!(
        out.contains("stop = touch stopped-{host}  (confirm: needs --yes)"),
        "{out}"
    );
    let o = env.run(&["--plan", "web-1.2.tgz"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("status = echo in"));

    // Before any dispatch `{version}` has no value, and the package dir may not exist.
    let o = env.run(&["--action", "status", "web"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no dispatch of this rule has succeeded"));

    std::fs::create_dir_all(env.dest.join("web")).unwrap();
    support::chown_to_user(&env.dest.join("web"));
    let bundle = env.home.write("web-1.2.tgz", b"bundle");
    let o = env.run(&["--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // The status action runs in {dir} with {version} of the last good dispatch.
    let (code, lines, o) = env.json(&["--action", "status", "web"]);
    assert_eq!(code, Some(0), "{}", text(&o));
    let g = groups(&lines);
    assert_eq!(g.len(), 1, "{g:#?}");
    let dir = std::fs::canonicalize(env.dest.join("web")).unwrap();
    assert_eq!(
        g[0]["lines"],
        serde_json::json!([format!("in {} version 1.2", dir.display()), "1.2"])
    );

    // A destructive action needs --yes headless; nothing runs without it.
    let one = format!("127.0.0.5:{}", env.port);
    let o = env.run(&["--action", "stop", &one]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("pass --yes"), "{}", text(&o));
    let stopped = env.dest.join("web/stopped-127.0.0.5");
    assert!(!stopped.exists());
    let o = env.run(&["--action", "stop", &one, "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stopped.exists());
    // Exactly that host.
    assert_eq!(
        std::fs::read_dir(env.dest.join("web"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("stopped-"))
            .count(),
        1
    );
    // An action the rule does not have.
    let o = env.run(&["--action", "restart", "web"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("has no action `restart`"), "{}", text(&o));

    // History: the actions are there, named; the run did not become the last good dispatch,
    // so a rollback or --status still means the bundle.
    let (_, rows, _) = env.json(&["--history"]);
    let actions: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "action").collect();
    assert_eq!(actions.len(), 2, "{rows:#?}");
    assert_eq!(actions[0]["action"], "stop");
    let o = env.run(&["--history"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("(action status)"));
    let (code, lines, o) = env.json(&["--action", "status", "web"]);
    assert_eq!(code, Some(0), "{}", text(&o));
    assert_eq!(groups(&lines)[0]["lines"][1], "1.2");
}

#[test]
fn run_takes_the_lock_only_with_lock() {
    let Some(env) = Env::start("run_lock") else {
        return;
    };
    env.config("lock_wait = 1s");
    let one = format!("127.0.0.6:{}", env.port);
    // Someone holds 127.0.0.6's lock (a dispatch in progress, say): the lock directory.
    let lock = env.dest.join("web-127.0.0.6.lock");
    std::fs::create_dir(&lock).unwrap();
    support::chown_to_user(&lock);
    std::fs::write(lock.join("info"), "holder someone\nbundle web-9.tgz\n").unwrap();
    support::chown_to_user(&lock.join("info"));
    // A plain run does not wait for it.
    let o = env.run(&["--run", &one, "--", "echo asked"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // --lock does, and gives up after lock_wait: the command never ran.
    let o = env.run(&["--run", &one, "--lock", "--", "echo ra''n-it"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!text(&o).contains("ran-it"), "{}", text(&o));
    assert!(
        text(&o).contains("locked by another dispatch"),
        "{}",
        text(&o)
    );
    // Free again: --lock takes it (it exists while the command runs) and releases it.
    std::fs::remove_dir_all(&lock).unwrap();
    let o = env.run(&["--run", &one, "--lock", "--", "test -d {dir}-{host}.lock"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!lock.exists(), "the lock was released");
    // --lock and --yes belong to a run.
    assert_eq!(env.run(&["--lock"]).status.code(), Some(2));
}
