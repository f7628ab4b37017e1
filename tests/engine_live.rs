//! The dispatch engine against the real sshd: live output, timeouts that kill on the host,
//! rollback, canary and max_fail, the remote lock, and injection-proof bundle names.

mod support;

use dropship::config::{Config, Netrc, SshHosts};
use dropship::engine::events::{Event, Step, StepOutcome, TargetResult};
use dropship::engine::job::Cancel;
use dropship::engine::rollout::{self, Dispatch, Emit, Summary};
use dropship::plan::{Plan, Stamp};
use dropship::transport::Stream;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::engine::EngineRig;
use support::{SshServer, TEST_PASSWORD, TEST_USER};

/// The shared engine rig, with this file's config.
struct Rig(EngineRig);

impl std::ops::Deref for Rig {
    type Target = EngineRig;
    fn deref(&self) -> &EngineRig {
        &self.0
    }
}

impl Rig {
    fn new(test: &str, server: &SshServer) -> Rig {
        Rig(EngineRig::new(test, server))
    }

    fn config(&self, hosts: &str, keys: &str) -> Config {
        let text = format!(
            "[DEFAULT]\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ntimeout = 10s\n\n[(?s).*]\nhost = {hosts}\ndest_dir = {d}/{{host}}\nlock_path = {d}/.lock-{{host}}\n{keys}\n",
            d = self.dest.as_str()
        );
        Config::parse(&text, Path::new("engine.cfg")).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn bundle(&self, name: &str, len: usize) -> PathBuf {
        self.bundle_file(name, len)
    }

    /// Runs a whole dispatch of `bundle` and returns its summary and events.
    fn run(&self, config: &Config, bundle: &Path) -> (Summary, Vec<(Instant, Event)>) {
        self.run_on(config, bundle, Box::new(support::engine::ignore))
    }

    /// [`Rig::run`], calling `on_event` with every event as the job emits it.
    fn run_on(
        &self,
        config: &Config,
        bundle: &Path,
        on_event: support::engine::OnEvent,
    ) -> (Summary, Vec<(Instant, Event)>) {
        let name = bundle.file_name().unwrap().to_str().unwrap();
        let plan = Plan::build(
            config,
            &Netrc::empty(),
            &SshHosts::empty(),
            name,
            Stamp::now(),
        )
        .unwrap();
        self.dispatch(
            plan,
            bundle,
            "test@engine pid 1",
            Arc::new(Cancel::new()),
            on_event,
        )
    }
}

/// Says on `ready` when a dispatch's `upgrade` starts: by then it holds the host's lock, so
/// a second dispatch started after that finds the lock taken (ordered by the event, not by
/// a sleep).
fn upgrade_started(ready: std::sync::mpsc::Sender<()>) -> support::engine::OnEvent {
    let ready = std::sync::Mutex::new(ready);
    Box::new(move |e, _| {
        if matches!(
            e,
            Event::StepStarted {
                step: Step::Upgrade,
                ..
            }
        ) {
            let _ = ready.lock().unwrap().send(());
        }
    })
}

fn output(events: &[(Instant, Event)], host: &str, want: Stream) -> Vec<(Instant, String)> {
    events
        .iter()
        .flat_map(|(t, e)| match e {
            Event::Output {
                host: h,
                stream,
                lines,
                ..
            } if h == host && *stream == want => {
                lines.iter().map(|l| (*t, l.to_owned())).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        })
        .collect()
}

fn result_of(s: &Summary, host: &str) -> TargetResult {
    s.targets
        .iter()
        .find(|(h, _, _)| h == host)
        .map(|(_, o, _)| o.result)
        .unwrap_or_else(|| panic!("no result for {host}"))
}

#[test]
fn output_streams_live_and_in_order_per_stream() {
    let Some(server) = support::ssh_server_or_skip("engine_live_output") else {
        return;
    };
    let rig = Rig::new("engine_live_output", &server);
    let cfg = rig.config(
        &server.addr().to_string(),
        "upgrade = for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; sleep 2; echo late",
    );
    let (s, events) = rig.run(&cfg, &rig.bundle("app-1.tgz", 1000));
    assert!(s.all_succeeded(), "{s:?}");
    let host = "127.0.0.1";
    let out = output(&events, host, Stream::Stdout);
    let err = output(&events, host, Stream::Stderr);
    let lines = |v: &[(Instant, String)]| v.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>();
    assert_eq!(
        lines(&out),
        ["out1", "out2", "out3", "out4", "out5", "late"]
    );
    assert_eq!(lines(&err), ["err1", "err2", "err3", "err4", "err5"]);
    // `out5` arrived while the command was still sleeping, not when it ended.
    let gap = out[5].0 - out[4].0;
    assert!(
        gap >= Duration::from_millis(1500),
        "lines were held back: {gap:?}"
    );
}

#[test]
fn a_million_lines_lose_none() {
    let Some(server) = support::ssh_server_or_skip("engine_million") else {
        return;
    };
    let rig = Rig::new("engine_million", &server);
    let cfg = rig.config(&server.addr().to_string(), "upgrade = seq 1 1000000");
    let (s, events) = rig.run(&cfg, &rig.bundle("app-2.tgz", 10));
    assert!(s.all_succeeded(), "{s:?}");
    let out = output(&events, "127.0.0.1", Stream::Stdout);
    assert_eq!(out.len(), 1_000_000);
    assert!(
        out.iter()
            .enumerate()
            .all(|(i, (_, l))| *l == (i + 1).to_string()),
        "lines out of order or changed"
    );
}

#[test]
fn failing_upgrade_runs_rollback() {
    let Some(server) = support::ssh_server_or_skip("engine_rollback") else {
        return;
    };
    let rig = Rig::new("engine_rollback", &server);
    let marker = rig.dest.join("rolled-back");
    let cfg = rig.config(
        &server.addr().to_string(),
        &format!(
            "upgrade = echo upgrading; exit 3\nrollback = touch {}",
            marker.display()
        ),
    );
    let (s, events) = rig.run(&cfg, &rig.bundle("app-3.tgz", 10));
    assert_eq!(result_of(&s, "127.0.0.1"), TargetResult::Failed);
    assert_eq!(s.targets[0].1.failed_step, Some(Step::Upgrade));
    assert!(marker.exists(), "rollback did not run");
    let upgrade_exit = events.iter().find_map(|(_, e)| match e {
        Event::StepFinished {
            step: Step::Upgrade,
            exit_code,
            outcome,
            ..
        } => Some((*exit_code, *outcome)),
        _ => None,
    });
    assert_eq!(upgrade_exit, Some((Some(3), StepOutcome::Failed)));
}

#[test]
fn hung_command_is_killed_on_the_host_at_its_timeout() {
    let Some(server) = support::ssh_server_or_skip("engine_hung") else {
        return;
    };
    let rig = Rig::new("engine_hung", &server);
    let pidfile = rig.dest.join("pid");
    let cfg = rig.config(
        &server.addr().to_string(),
        &format!(
            "step_timeout = 2s\nupgrade = echo $$ > {}; exec sleep 1000",
            pidfile.display()
        ),
    );
    let (s, _) = rig.run(&cfg, &rig.bundle("app-4.tgz", 10));
    assert_eq!(result_of(&s, "127.0.0.1"), TargetResult::Failed);
    let err = s.targets[0].1.error.clone().unwrap_or_default();
    assert!(
        err.contains("no answer for 2s") || err.contains("timeout"),
        "{err}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = support::wait_until(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(
        gone,
        "the remote command (pid {pid}) still runs after its timeout"
    );
}

/// Five hosts (five loopback addresses of one sshd); the third one's upgrade fails.
fn five_hosts(test: &str) -> Option<(SshServer, String)> {
    let mut b = SshServer::builder();
    for i in 2..=5 {
        b = b.listen_also(std::net::Ipv4Addr::new(127, 0, 0, i));
    }
    let server = b.start_or_skip(test)?;
    let hosts = server
        .addrs()
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Some((server, hosts))
}

const FAIL_ON_THIRD: &str =
    "upgrade = test \"$(echo $SSH_CONNECTION | cut -d' ' -f3)\" != 127.0.0.3";

#[test]
fn canary_failure_skips_the_rest() {
    let Some((server, hosts)) = five_hosts("engine_canary") else {
        return;
    };
    let rig = Rig::new("engine_canary", &server);
    let cfg = rig.config(&hosts, &format!("canary = 3\n{FAIL_ON_THIRD}"));
    let (s, _) = rig.run(&cfg, &rig.bundle("app-5.tgz", 10));
    let results: Vec<TargetResult> = s.targets.iter().map(|(_, o, _)| o.result).collect();
    use TargetResult::*;
    assert_eq!(results, [Succeeded, Succeeded, Failed, Skipped, Skipped]);

    // A canary that succeeds lets the rest go.
    let cfg = rig.config(&hosts, &format!("canary = 1\n{FAIL_ON_THIRD}"));
    let (s, _) = rig.run(&cfg, &rig.bundle("app-6.tgz", 10));
    let results: Vec<TargetResult> = s.targets.iter().map(|(_, o, _)| o.result).collect();
    assert_eq!(
        results,
        [Succeeded, Succeeded, Failed, Succeeded, Succeeded]
    );
}

#[test]
fn max_fail_stops_new_hosts() {
    let Some((server, hosts)) = five_hosts("engine_max_fail") else {
        return;
    };
    let rig = Rig::new("engine_max_fail", &server);
    let cfg = rig.config(
        &hosts,
        &format!("parallel = 1\nmax_fail = 1\n{FAIL_ON_THIRD}"),
    );
    let (s, _) = rig.run(&cfg, &rig.bundle("app-7.tgz", 10));
    let results: Vec<TargetResult> = s.targets.iter().map(|(_, o, _)| o.result).collect();
    use TargetResult::*;
    assert_eq!(results, [Succeeded, Succeeded, Failed, Skipped, Skipped]);
}

#[test]
fn concurrent_dispatches_serialise_on_the_lock() {
    let Some(server) = support::ssh_server_or_skip("engine_lock") else {
        return;
    };
    let rig = Rig::new("engine_lock", &server);
    let cfg = rig.config(
        &server.addr().to_string(),
        "upgrade = echo start; sleep 2; echo end",
    );
    let b1 = rig.bundle("app-8.tgz", 10);
    let b2 = rig.bundle("app-9.tgz", 10);
    let (ready, upgrading) = std::sync::mpsc::channel();
    let (r1, r2) = std::thread::scope(|s| {
        let a = s.spawn(|| rig.run_on(&cfg, &b1, upgrade_started(ready)));
        upgrading
            .recv_timeout(Duration::from_secs(60))
            .expect("the first dispatch reached its upgrade");
        let b = s.spawn(|| rig.run(&cfg, &b2));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(r1.0.all_succeeded() && r2.0.all_succeeded());
    let span = |ev: &[(Instant, Event)]| {
        let o = output(ev, "127.0.0.1", Stream::Stdout);
        (o[0].0, o[o.len() - 1].0)
    };
    let (s1, e1) = span(&r1.1);
    let (s2, e2) = span(&r2.1);
    assert!(e1 <= s2 || e2 <= s1, "the two upgrades overlapped");
    let waited = r2.1.iter().any(|(_, e)| {
        matches!(e, Event::Notice { message, .. } if message.contains("waiting for the lock held by test@engine"))
    });
    assert!(
        waited,
        "the second dispatch did not report waiting for the holder"
    );

    // A lock that outlives lock_wait fails naming the holder.
    let short = rig.config(
        &server.addr().to_string(),
        "lock_wait = 1s\nupgrade = sleep 3",
    );
    let (ready, upgrading) = std::sync::mpsc::channel();
    let (r1, r2) = std::thread::scope(|s| {
        let a = s.spawn(|| rig.run_on(&short, &b1, upgrade_started(ready)));
        upgrading
            .recv_timeout(Duration::from_secs(60))
            .expect("the first dispatch reached its upgrade");
        let b = s.spawn(|| rig.run(&short, &b2));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(r1.0.all_succeeded());
    let (_, o, _) = &r2.0.targets[0];
    assert_eq!(o.failed_step, Some(Step::Lock));
    let err = o.error.clone().unwrap_or_default();
    assert!(err.contains("locked by test@engine pid 1"), "{err}");
    assert!(err.contains("app-8.tgz"), "{err}");
}

#[test]
fn hostile_bundle_names_run_no_injected_command() {
    let Some(server) = support::ssh_server_or_skip("engine_injection") else {
        return;
    };
    let rig = Rig::new("engine_injection", &server);
    // Commands run in the login's home: an injected `touch PWNED` would land there.
    let pwned = support::test_user().home.join("PWNED");
    let _ = std::fs::remove_file(&pwned);
    let cfg = rig.config(
        &server.addr().to_string(),
        "upgrade = ls -l {path} && echo \"got {bundle}\" && echo 'again {bundle}'",
    );
    for name in [
        "a b.tgz",
        "q'uo\"te.tgz",
        "x;touch PWNED;.tgz",
        "$(touch PWNED).tgz",
        "`touch PWNED`.tgz",
        "new\nline.tgz",
    ] {
        let (s, events) = rig.run(&cfg, &rig.bundle(name, 10));
        assert!(s.all_succeeded(), "{name:?}: {s:?}");
        let out: Vec<String> = output(&events, "127.0.0.1", Stream::Stdout)
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        let first_line = name.lines().next().unwrap_or_default();
        assert!(
            out.iter().any(|l| *l == format!("got {first_line}")),
            "{name:?}: {out:?}"
        );
        assert!(!pwned.exists(), "{name:?} ran an injected command");
    }
}

#[test]
fn ftp_only_rule_uploads_and_locks_beside_the_upload() {
    let Some(ssh) = support::ssh_server_or_skip("engine_ftp_only") else {
        return;
    };
    let Some(ftp) = support::ftp_server_or_skip("engine_ftp_only") else {
        return;
    };
    let rig = Rig::new("engine_ftp_only", &ssh);
    // No commands: FTP alone, and the lock is a directory beside the upload. The rig's
    // lock_path is left out so the FTP default applies.
    let text = format!(
        "[(?s).*]\nhost = {}\nprotocol = ftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ndest_dir = {}/ftp/{{host}}\n",
        ftp.addr(),
        rig.dest.as_str()
    );
    let cfg = Config::parse(&text, Path::new("ftp.cfg")).unwrap();
    let (s, events) = rig.run(&cfg, &rig.bundle("app-10.tgz", 5000));
    assert!(s.all_succeeded(), "{s:?}");
    let dir = rig.dest.join("ftp/127.0.0.1");
    assert_eq!(std::fs::read(dir.join("app-10.tgz")).unwrap().len(), 5000);
    assert!(
        !dir.join(".dropship.lock").exists(),
        "FTP lock not released"
    );
    let locked = events.iter().any(|(_, e)| {
        matches!(
            e,
            Event::StepFinished {
                step: Step::Lock,
                outcome: StepOutcome::Ok,
                ..
            }
        )
    });
    assert!(locked);

    // With a command, the FTP upload is followed by the command over SSH (ssh_port).
    let text = format!(
        "{text}ssh_port = {}\nupgrade = sha256sum {{path}}\nlock_path = {}/.lock\n",
        ssh.port(),
        rig.dest.as_str()
    );
    let cfg = Config::parse(&text, Path::new("ftp.cfg")).unwrap();
    let (s, events) = rig.run(&cfg, &rig.bundle("app-11.tgz", 5000));
    assert!(s.all_succeeded(), "{s:?}");
    let out = output(&events, "127.0.0.1", Stream::Stdout);
    assert!(out.iter().any(|(_, l)| l.contains("app-11.tgz")), "{out:?}");
}

#[test]
fn endless_output_still_hits_the_step_timeout() {
    let Some(server) = support::ssh_server_or_skip("engine_endless") else {
        return;
    };
    let rig = Rig::new("engine_endless", &server);
    let cfg = rig.config(
        &server.addr().to_string(),
        "step_timeout = 2s\nupgrade = yes waiting",
    );
    let bundle = rig.bundle("app-12.tgz", 10);
    let plan = Plan::build(
        &cfg,
        &Netrc::empty(),
        &SshHosts::empty(),
        "app-12.tgz",
        Stamp::now(),
    )
    .unwrap();
    // Count the flood instead of keeping it.
    let lines = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = lines.clone();
    let emit: Emit = Arc::new(move |e| {
        if let Event::Output { lines, .. } = &e {
            counted.fetch_add(lines.count() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let d = Arc::new(Dispatch {
        id: 1,
        plan: Arc::new(plan),
        bundle: bundle.clone(),
        bundle_sha256: Some(dropship::transport::local_sha256(&bundle, None).unwrap()),
        known_hosts: rig.known.clone(),
        holder: "test@engine pid 1".into(),
        skip: HashMap::new(),
        only: None,
        connector: dropship::engine::connect::real(),
    });
    let started = Instant::now();
    let s = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rollout::run(d, Arc::new(Cancel::new()), emit));
    assert_eq!(s.targets[0].1.result, TargetResult::Failed);
    assert_eq!(s.targets[0].1.failed_step, Some(Step::Upgrade));
    assert!(lines.load(std::sync::atomic::Ordering::Relaxed) > 1000);
    // Generous bound: the point is that it ends at all (it used to run forever).
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A holder that runs longer than `lock_stale` keeps its lock (its heartbeat says it is
/// alive); a lock whose holder is gone is broken once it has not beaten for `lock_stale`.
#[test]
fn a_live_holder_keeps_its_lock_past_lock_stale_and_a_dead_one_loses_it() {
    let Some(server) = support::ssh_server_or_skip("engine_lock_heartbeat") else {
        return;
    };
    let rig = Rig::new("engine_lock_heartbeat", &server);
    let cfg = rig.config(
        &server.addr().to_string(),
        // A beat every second (lock_stale / 4, at least 1 s) against a 4 s stale limit:
        // three missed beats of slack on a loaded machine.
        "lock_stale = 4s\nlock_wait = 60s\nupgrade = echo start; sleep 9; echo end",
    );
    let b1 = rig.bundle("app-1.tgz", 10);
    let b2 = rig.bundle("app-2.tgz", 10);
    let (ready, upgrading) = std::sync::mpsc::channel();
    let (r1, r2) = std::thread::scope(|s| {
        let a = s.spawn(|| rig.run_on(&cfg, &b1, upgrade_started(ready)));
        upgrading
            .recv_timeout(Duration::from_secs(60))
            .expect("the first dispatch reached its upgrade");
        let b = s.spawn(|| rig.run(&cfg, &b2));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(r1.0.all_succeeded() && r2.0.all_succeeded());
    let broke = |ev: &[(Instant, Event)]| {
        ev.iter().any(|(_, e)| {
            matches!(e, Event::Notice { message, .. } if message.contains("broke a stale lock"))
        })
    };
    // Whichever got the lock first, the other waited for it to the end.
    assert!(
        !broke(&r1.1) && !broke(&r2.1),
        "a dispatch broke the lock of a holder that was still running"
    );
    let span = |ev: &[(Instant, Event)]| {
        let o = output(ev, "127.0.0.1", Stream::Stdout);
        (o[0].0, o[o.len() - 1].0)
    };
    let ((s1, e1), (s2, e2)) = (span(&r1.1), span(&r2.1));
    assert!(e1 <= s2 || e2 <= s1, "the two upgrades overlapped");
    let lock = rig.dest.join(".lock-127.0.0.1");
    assert!(!lock.exists(), "the lock was not released");

    // A holder on another machine that died: its lock beat last just now, so it is broken
    // after lock_stale (4 s), not at once and not never.
    std::fs::create_dir(&lock).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(
        lock.join("info"),
        format!(
            "holder=ops@elsewhere pid 4242\nsince={}\nbundle=app-0.tgz\ntoken=dead\n",
            now - 3600
        ),
    )
    .unwrap();
    std::fs::write(lock.join("beat"), format!("{now}\n")).unwrap();
    for p in [lock.clone(), lock.join("info"), lock.join("beat")] {
        support::user::chown_to_user(&p);
    }
    let (r3, ev3) = rig.run(&cfg, &b1);
    assert!(r3.all_succeeded());
    assert!(broke(&ev3), "the dead holder's lock was not broken");
    let waited = ev3.iter().any(|(_, e)| {
        matches!(e, Event::Notice { message, .. } if message.contains("waiting for the lock held by ops@elsewhere"))
    });
    assert!(
        waited,
        "a lock that beat 0 s ago was broken without waiting for lock_stale"
    );
    assert!(!lock.exists(), "the lock was not released");
}
