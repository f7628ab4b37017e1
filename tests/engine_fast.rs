//! The fast tier of the engine's tests: whole dispatches against scripted in-process hosts
//! (`support::fake`, injected through `Dispatch::connector`), no servers, no root, in
//! seconds. For every job step — connect, lock, pre, upload, upgrade, post, health (as a
//! command), unlock — a failure, a hang and a cancel (requested, then hard) end the target
//! as documented in `engine::job`: the right `failed_step` and result, no later step, the
//! rollback where the engine runs one, the lock released. Then the rollout's canary and
//! `max_fail`, and a resume that does not repeat finished steps. What only real servers can
//! show (protocols, timeouts on the wire, the lock's shell scripts) stays in the live tests.

mod support;

use dropship::config::{Config, Netrc, SshHosts};
use dropship::engine::events::{Event, Step, StepOutcome, TargetResult};
use dropship::engine::job::{Cancel, Outcome, Skip};
use dropship::engine::rollout::{self, Dispatch, Emit, Summary};
use dropship::journal::{Journal, NewDispatch};
use dropship::plan::{Plan, Stamp};
use dropship::transport::known_hosts::KnownHostsFiles;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use support::fake::{Answer, FakeHost, Fleet, LockState, Op};

/// Every command step configured, with short limits so hangs end in milliseconds.
fn config(hosts: &str, extra: &str) -> Config {
    let text = format!(
        "[DEFAULT]\nprotocol = sftp\nlogin = deploy\npassword = secret\ntimeout = 2s\nretries = 0\nstep_timeout = 200ms\nlock_wait = 300ms\n\n[(?s).*]\nhost = {hosts}\ndest_dir = /srv/app\nlock_path = /srv/.lock-{{host}}\npre = run-pre\nupgrade = run-upgrade\npost = run-post\nhealth = run-health\nrollback = run-rollback\n{extra}\n"
    );
    Config::parse(&text, Path::new("fast.cfg")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

type OnEvent = Box<dyn Fn(&Event, &Cancel) + Send + Sync>;

struct Run {
    summary: Summary,
    events: Vec<Event>,
}

impl Run {
    fn outcome(&self, host: &str) -> &Outcome {
        &self
            .summary
            .targets
            .iter()
            .find(|(h, _, _)| h == host)
            .unwrap_or_else(|| panic!("no target {host}"))
            .1
    }

    fn started(&self, host: &str, step: Step) -> bool {
        self.events.iter().any(
            |e| matches!(e, Event::StepStarted { host: h, step: s, .. } if h == host && *s == step),
        )
    }

    fn finished(&self, host: &str, step: Step) -> Option<StepOutcome> {
        self.events.iter().find_map(|e| match e {
            Event::StepFinished {
                host: h,
                step: s,
                outcome,
                ..
            } if h == host && *s == step => Some(*outcome),
            _ => None,
        })
    }

    fn notice(&self, part: &str) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::Notice { message, .. } if message.contains(part)))
    }

    fn results(&self) -> Vec<TargetResult> {
        self.summary
            .targets
            .iter()
            .map(|(_, o, _)| o.result)
            .collect()
    }
}

struct Rig {
    dir: tempfile::TempDir,
    bundle: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("app-1.tgz");
        std::fs::write(&bundle, b"the bundle's bytes").unwrap();
        Rig { dir, bundle }
    }

    fn plan(&self, cfg: &Config) -> Plan {
        Plan::build(
            cfg,
            &Netrc::empty(),
            &SshHosts::empty(),
            "app-1.tgz",
            Stamp::now(),
        )
        .unwrap()
    }

    /// Runs a dispatch of `plan` against `fleet`, calling `on_event` with every event as the
    /// job emits it (where a test requests a cancel at an exact step).
    fn run(
        &self,
        fleet: &Fleet,
        plan: Plan,
        id: i64,
        skip: HashMap<String, Skip>,
        cancel: Arc<Cancel>,
        on_event: OnEvent,
    ) -> Run {
        let log: Arc<Mutex<Vec<Event>>> = Arc::default();
        let (l, c) = (log.clone(), cancel.clone());
        let emit: Emit = Arc::new(move |e| {
            on_event(&e, &c);
            l.lock().unwrap().push(e)
        });
        let only = (!skip.is_empty()).then(|| skip.keys().cloned().collect());
        let d = Arc::new(Dispatch {
            id,
            plan: Arc::new(plan),
            bundle: self.bundle.clone(),
            bundle_sha256: None,
            known_hosts: KnownHostsFiles {
                user: None,
                dropship: self.dir.path().join("known_hosts"),
            },
            holder: "test@fast pid 1".into(),
            skip,
            only,
            connector: fleet.connector(),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let summary = rt.block_on(rollout::run(d, cancel, emit));
        let events = std::mem::take(&mut *log.lock().unwrap());
        Run { summary, events }
    }

    /// One host `web1` with every command step, and `extra` rule lines.
    fn one(&self, fleet: &Fleet, extra: &str, cancel: Arc<Cancel>, on_event: OnEvent) -> Run {
        let plan = self.plan(&config("web1", extra));
        self.run(fleet, plan, 1, HashMap::new(), cancel, on_event)
    }
}

fn quiet() -> OnEvent {
    Box::new(|_, _| {})
}

/// Requests a cancel when `step` starts on any host.
fn cancel_at(step: Step) -> OnEvent {
    Box::new(move |e, c| {
        if matches!(e, Event::StepStarted { step: s, .. } if *s == step) {
            c.requested.store(true, Ordering::SeqCst);
        }
    })
}

/// The steps of a plain-layout job in order, and the command each runs.
const COMMANDS: [(Step, &str); 4] = [
    (Step::Pre, "run-pre"),
    (Step::Upgrade, "run-upgrade"),
    (Step::Post, "run-post"),
    (Step::Health, "run-health"),
];
const ORDER: [Step; 7] = [
    Step::Connect,
    Step::Lock,
    Step::Pre,
    Step::Upload,
    Step::Upgrade,
    Step::Post,
    Step::Health,
];

fn later(step: Step) -> impl Iterator<Item = Step> {
    ORDER.into_iter().skip_while(move |s| *s != step).skip(1)
}

/// What every stopped job owes: stopped at `step`, no later step started, the rollback
/// run exactly when the engine runs one (a failure after the upload), the lock released.
fn assert_stopped_at(
    r: &Run,
    host: &FakeHost,
    step: Step,
    result: TargetResult,
    rollback: bool,
    case: &str,
) {
    let o = r.outcome("web1");
    assert_eq!(o.result, result, "{case}: {o:?}");
    assert_eq!(o.failed_step, Some(step), "{case}: {o:?}");
    for s in later(step) {
        assert!(!r.started("web1", s), "{case}: {s} started after {step}");
    }
    assert_eq!(
        host.count("exec run-rollback"),
        usize::from(rollback),
        "{case}: rollback runs: {:?}",
        host.log()
    );
    assert_eq!(r.started("web1", Step::Rollback), rollback, "{case}");
    assert_eq!(host.lock(), LockState::Free, "{case}: the lock is left");
    assert_eq!(host.background(), None, "{case}: the heartbeat still runs");
}

/// Whether the engine puts the host back after `step` fails: only once the upload is done.
fn rolls_back(step: Step) -> bool {
    step > Step::Upload
}

#[test]
fn a_clean_run_goes_through_every_step_and_leaves_the_bundle_in_place() {
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
    assert_eq!(r.results(), [TargetResult::Succeeded]);
    for s in ORDER {
        assert_eq!(r.finished("web1", s), Some(StepOutcome::Ok), "{s}");
    }
    assert!(!r.started("web1", Step::Rollback));
    assert_eq!(
        host.file("/srv/app/app-1.tgz").as_deref(),
        Some(&b"the bundle's bytes"[..])
    );
    assert_eq!(host.paths(), ["/srv/app/app-1.tgz"], "a .part is left");
    assert_eq!(host.lock(), LockState::Free);
    let order: Vec<String> = host
        .log()
        .into_iter()
        .filter(|l| l.starts_with("exec") || l == "lock" || l == "unlock")
        .collect();
    assert_eq!(
        order,
        [
            "lock",
            "exec run-pre",
            "exec run-upgrade",
            "exec run-post",
            "exec run-health",
            "unlock"
        ]
    );
}

#[test]
fn a_command_step_that_exits_non_zero_fails_there() {
    for (step, cmd) in COMMANDS {
        let rig = Rig::new();
        let fleet = Fleet::new(&["web1"]);
        let host = fleet.host("web1");
        host.always(Op::exec(cmd), Answer::Exit(3));
        let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
        let case = format!("{step} exits 3");
        assert_stopped_at(
            &r,
            &host,
            step,
            TargetResult::Failed,
            rolls_back(step),
            &case,
        );
        let err = r.outcome("web1").error.clone().unwrap_or_default();
        assert!(err.contains("exited with status 3"), "{case}: {err}");
    }
}

#[test]
fn a_command_step_whose_transport_fails_fails_there() {
    for (step, cmd) in COMMANDS {
        let rig = Rig::new();
        let fleet = Fleet::new(&["web1"]);
        let host = fleet.host("web1");
        // Only the step's own run: the rollback and the release use the shell again.
        host.times(1, Op::exec(cmd), Answer::Fail("channel closed".into()));
        let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
        let case = format!("{step} transport error");
        assert_stopped_at(
            &r,
            &host,
            step,
            TargetResult::Failed,
            rolls_back(step),
            &case,
        );
        assert!(
            r.outcome("web1")
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("channel closed"),
            "{case}"
        );
    }
}

#[test]
fn a_hanging_command_step_ends_at_step_timeout() {
    for (step, cmd) in COMMANDS {
        let rig = Rig::new();
        let fleet = Fleet::new(&["web1"]);
        let host = fleet.host("web1");
        host.always(Op::exec(cmd), Answer::Hang);
        let t = std::time::Instant::now();
        let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
        let case = format!("{step} hangs");
        assert_stopped_at(
            &r,
            &host,
            step,
            TargetResult::Failed,
            rolls_back(step),
            &case,
        );
        let err = r.outcome("web1").error.clone().unwrap_or_default();
        assert!(err.contains("step_timeout"), "{case}: {err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{case}");
    }
}

#[test]
fn a_cancel_during_a_command_step_stops_it_once_hard() {
    for (step, cmd) in COMMANDS {
        let rig = Rig::new();
        let fleet = Fleet::new(&["web1"]);
        let host = fleet.host("web1");
        let cancel = Arc::new(Cancel::new());
        // Requested when the step starts; hard once the command hangs (the grace is over).
        host.always(Op::exec(cmd), Answer::Hang);
        let c = cancel.clone();
        host.on_hang(move || c.hard.store(true, Ordering::SeqCst));
        let r = rig.one(&fleet, "", cancel, cancel_at(step));
        let case = format!("cancel during {step}");
        assert_stopped_at(
            &r,
            &host,
            step,
            TargetResult::Cancelled,
            rolls_back(step),
            &case,
        );
        assert_eq!(
            r.finished("web1", step),
            Some(StepOutcome::Cancelled),
            "{case}"
        );
    }
}

#[test]
fn a_cancel_request_alone_lets_the_running_command_finish_and_starts_no_new_step() {
    // Before the host is changed: the running step finishes, the next does not start.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), cancel_at(Step::Pre));
    assert_eq!(r.finished("web1", Step::Pre), Some(StepOutcome::Ok));
    assert_stopped_at(
        &r,
        &host,
        Step::Upload,
        TargetResult::Cancelled,
        false,
        "request during pre",
    );

    // After `upgrade` changed the host, `post` and `health` are finished (one transaction).
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    let r = rig.one(
        &fleet,
        "",
        Arc::new(Cancel::new()),
        cancel_at(Step::Upgrade),
    );
    assert_eq!(r.results(), [TargetResult::Succeeded]);
    assert_eq!(r.finished("web1", Step::Health), Some(StepOutcome::Ok));
    assert!(r.notice("finishing `post` and `health`"));
    assert_eq!(host.lock(), LockState::Free);
}

#[test]
fn connect_failure_hang_and_cancel() {
    // Refused: nothing else happens on the host.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.always(Op::Connect, Answer::Fail("connection refused".into()));
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
    assert_stopped_at(
        &r,
        &host,
        Step::Connect,
        TargetResult::Failed,
        false,
        "refused",
    );
    assert_eq!(host.count("lock"), 0);

    // No answer: ends at the connection timeout.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.always(Op::Connect, Answer::Hang);
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
    assert_stopped_at(
        &r,
        &host,
        Step::Connect,
        TargetResult::Failed,
        false,
        "hang",
    );
    assert!(
        r.outcome("web1")
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("no answer")
    );

    // A transient failure is retried with the rule's `retries`.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.times(1, Op::Connect, Answer::Fail("reset by peer".into()));
    let r = rig.one(&fleet, "retries = 1", Arc::new(Cancel::new()), quiet());
    assert_eq!(r.results(), [TargetResult::Succeeded]);
    assert!(r.notice("connect attempt 1 failed"));

    // Cancelled while connecting: the connection opens, no step starts on it, the lock the
    // job took is given back.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    let r = rig.one(
        &fleet,
        "",
        Arc::new(Cancel::new()),
        cancel_at(Step::Connect),
    );
    assert_eq!(r.results(), [TargetResult::Cancelled]);
    assert!(!r.started("web1", Step::Pre) && !r.started("web1", Step::Upload));
    assert_eq!(host.count("exec"), 0, "{:?}", host.log());
    assert_eq!(host.lock(), LockState::Free);
}

#[test]
fn lock_failure_hang_busy_and_cancel() {
    // The lock script fails: nothing runs under a lock we do not hold.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.always(Op::Lock, Answer::Fail("sh: permission denied".into()));
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
    assert_stopped_at(
        &r,
        &host,
        Step::Lock,
        TargetResult::Failed,
        false,
        "lock fails",
    );
    assert_eq!(host.count("exec"), 0);

    // The lock script hangs: it ends at the connection's timeout.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.always(Op::Lock, Answer::Hang);
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
    assert_stopped_at(
        &r,
        &host,
        Step::Lock,
        TargetResult::Failed,
        false,
        "lock hangs",
    );

    // Held by another dispatch past `lock_wait`: fails naming the holder, leaves its lock.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    let theirs = LockState::Held {
        holder: "ops@elsewhere pid 7".into(),
        bundle: "app-0.tgz".into(),
    };
    host.set_lock(theirs.clone());
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
    let o = r.outcome("web1");
    assert_eq!(
        (o.result, o.failed_step),
        (TargetResult::Failed, Some(Step::Lock))
    );
    let err = o.error.clone().unwrap_or_default();
    assert!(
        err.contains("locked by ops@elsewhere pid 7") && err.contains("app-0.tgz"),
        "{err}"
    );
    assert!(r.notice("waiting for the lock held by ops@elsewhere"));
    assert_eq!(host.lock(), theirs, "someone else's lock was touched");
    assert_eq!(host.count("exec"), 0);

    // Cancelled while waiting for it: stops waiting at once (a request is enough).
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.set_lock(theirs.clone());
    let r = rig.one(
        &fleet,
        "lock_wait = 1h",
        Arc::new(Cancel::new()),
        cancel_at(Step::Lock),
    );
    let o = r.outcome("web1");
    assert_eq!(
        (o.result, o.failed_step),
        (TargetResult::Cancelled, Some(Step::Lock))
    );
    assert_eq!(r.finished("web1", Step::Lock), Some(StepOutcome::Cancelled));
    assert_eq!(host.lock(), theirs);
    assert_eq!(host.count("exec"), 0);
}

#[test]
fn upload_failure_hang_and_cancel() {
    // Refused (a full disk): fails at the upload, nothing after it, no rollback (the host
    // was not changed), and the lock is released over a fresh connection.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.always(Op::Write, Answer::Fail("no space left on device".into()));
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
    assert_stopped_at(
        &r,
        &host,
        Step::Upload,
        TargetResult::Failed,
        false,
        "refused",
    );
    assert_eq!(host.count("connect"), 2, "{:?}", host.log());
    assert!(host.file("/srv/app/app-1.tgz").is_none());

    // A stalled write ends at the timeout.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.always(Op::Write, Answer::Hang);
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
    assert_stopped_at(
        &r,
        &host,
        Step::Upload,
        TargetResult::Failed,
        false,
        "stall",
    );

    // ... and is retried with `retries`, resuming the `.part`.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.times(1, Op::Write, Answer::Hang);
    let r = rig.one(&fleet, "retries = 1", Arc::new(Cancel::new()), quiet());
    assert_eq!(r.results(), [TargetResult::Succeeded]);
    assert_eq!(host.count("write"), 2);

    // A check on the host that fails: not renamed into place.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.always(Op::Verify, Answer::Fail("sha256sum: not found".into()));
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
    assert_stopped_at(
        &r,
        &host,
        Step::Upload,
        TargetResult::Failed,
        false,
        "verify",
    );
    assert!(host.file("/srv/app/app-1.tgz").is_none());

    // Cancelled during the upload: a request lets it finish, a hard cancel stops it.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    let cancel = Arc::new(Cancel::new());
    host.always(Op::Write, Answer::Hang);
    let c = cancel.clone();
    host.on_hang(move || c.hard.store(true, Ordering::SeqCst));
    let r = rig.one(&fleet, "", cancel, cancel_at(Step::Upload));
    assert_stopped_at(
        &r,
        &host,
        Step::Upload,
        TargetResult::Cancelled,
        false,
        "cancel",
    );
    assert_eq!(
        r.finished("web1", Step::Upload),
        Some(StepOutcome::Cancelled)
    );
    assert!(host.file("/srv/app/app-1.tgz").is_none());
}

#[test]
fn unlock_failure_and_hang() {
    // A failed release is tried again over a fresh connection: the host succeeded and
    // the lock is gone.
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.times(1, Op::Unlock, Answer::Fail("broken pipe".into()));
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
    assert_eq!(r.results(), [TargetResult::Succeeded]);
    assert_eq!(host.count("unlock"), 2);
    assert_eq!(host.count("connect"), 2);
    assert_eq!(host.lock(), LockState::Free);

    // A release that keeps failing (or hanging) is a warning, not a failed host; the lock
    // stays for `lock_stale` to heal.
    for (what, answer) in [
        ("fails", Answer::Fail("broken pipe".into())),
        ("hangs", Answer::Hang),
    ] {
        let rig = Rig::new();
        let fleet = Fleet::new(&["web1"]);
        let host = fleet.host("web1");
        host.always(Op::Unlock, answer);
        let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
        assert_eq!(r.results(), [TargetResult::Succeeded], "unlock {what}");
        assert!(
            r.notice("could not release the lock /srv/.lock-web1"),
            "unlock {what}"
        );
        assert!(
            matches!(host.lock(), LockState::Taken { .. }),
            "unlock {what}"
        );
    }
}

#[test]
fn a_failed_step_releases_the_lock_even_when_the_rollback_fails_too() {
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    host.always(Op::exec("run-post"), Answer::Exit(1));
    host.always(Op::exec("run-rollback"), Answer::Exit(2));
    let r = rig.one(&fleet, "", Arc::new(Cancel::new()), quiet());
    assert_stopped_at(
        &r,
        &host,
        Step::Post,
        TargetResult::Failed,
        true,
        "rollback fails",
    );
    assert!(r.notice("rollback failed too"));
    assert_eq!(
        r.finished("web1", Step::Rollback),
        Some(StepOutcome::Failed)
    );
}

fn five() -> (Fleet, Config) {
    let names = ["web1", "web2", "web3", "web4", "web5"];
    let fleet = Fleet::new(&names);
    fleet
        .host("web3")
        .always(Op::exec("run-upgrade"), Answer::Exit(1));
    (fleet, config(&names.join(", "), ""))
}

#[test]
fn a_failed_canary_skips_the_rest_and_a_good_one_lets_them_go() {
    use TargetResult::*;
    let rig = Rig::new();
    let (fleet, _) = five();
    let cfg = config("web1, web2, web3, web4, web5", "canary = 3");
    let r = rig.run(
        &fleet,
        rig.plan(&cfg),
        1,
        HashMap::new(),
        Arc::new(Cancel::new()),
        quiet(),
    );
    assert_eq!(
        r.results(),
        [Succeeded, Succeeded, Failed, Skipped, Skipped]
    );
    assert!(r.notice("canary failed: the other 2 host(s) are skipped"));
    for h in ["web4", "web5"] {
        assert_eq!(fleet.host(h).count("connect"), 0, "{h} was contacted");
    }

    let rig = Rig::new();
    let (fleet, _) = five();
    let cfg = config("web1, web2, web3, web4, web5", "canary = 1");
    let r = rig.run(
        &fleet,
        rig.plan(&cfg),
        1,
        HashMap::new(),
        Arc::new(Cancel::new()),
        quiet(),
    );
    assert_eq!(
        r.results(),
        [Succeeded, Succeeded, Failed, Succeeded, Succeeded]
    );
}

#[test]
fn max_fail_starts_no_new_host() {
    use TargetResult::*;
    let rig = Rig::new();
    let (fleet, _) = five();
    let cfg = config("web1, web2, web3, web4, web5", "parallel = 1\nmax_fail = 1");
    let r = rig.run(
        &fleet,
        rig.plan(&cfg),
        1,
        HashMap::new(),
        Arc::new(Cancel::new()),
        quiet(),
    );
    assert_eq!(
        r.results(),
        [Succeeded, Succeeded, Failed, Skipped, Skipped]
    );
    assert_eq!(fleet.host("web4").count("connect"), 0);
    let (_, o, _) = &r.summary.targets[3];
    assert_eq!(o.error.as_deref(), Some("skipped: max_fail reached"));
}

#[test]
fn a_cancel_starts_no_new_host() {
    use TargetResult::*;
    let rig = Rig::new();
    let (fleet, _) = five();
    let cfg = config("web1, web2, web3, web4, web5", "parallel = 1");
    // Requested while web2 runs its `pre`: web2 stops before its upload, the rest never start.
    let on: OnEvent = Box::new(|e, c| {
        if matches!(e, Event::StepStarted { host, step: Step::Pre, .. } if host == "web2") {
            c.requested.store(true, Ordering::SeqCst);
        }
    });
    let r = rig.run(
        &fleet,
        rig.plan(&cfg),
        1,
        HashMap::new(),
        Arc::new(Cancel::new()),
        on,
    );
    assert_eq!(
        r.results(),
        [Succeeded, Cancelled, Cancelled, Cancelled, Cancelled]
    );
    for h in ["web3", "web4", "web5"] {
        assert_eq!(fleet.host(h).count("connect"), 0, "{h} was contacted");
    }
    assert_eq!(fleet.host("web2").lock(), LockState::Free);
}

/// A dispatch cancelled after its upload, recorded in a journal, then resumed with what
/// `journal::resume::left_to_do` says is left: `pre` and the upload are not repeated.
#[test]
fn a_resume_does_not_repeat_finished_steps() {
    let rig = Rig::new();
    let fleet = Fleet::new(&["web1"]);
    let host = fleet.host("web1");
    let cfg = config("web1", "");
    let plan = rig.plan(&cfg);
    let journal = Arc::new(Journal::open(&rig.dir.path().join("journal.db")).unwrap());
    let id = journal
        .begin_dispatch(
            &NewDispatch::for_plan(&plan, &rig.bundle, Path::new("fast.cfg"), None).unwrap(),
        )
        .unwrap();
    let j = journal.clone();
    let on: OnEvent = Box::new(move |e, c| {
        j.record(e).unwrap();
        // A request during the upload: it finishes, `upgrade` does not start.
        if matches!(
            e,
            Event::StepStarted {
                step: Step::Upload,
                ..
            }
        ) {
            c.requested.store(true, Ordering::SeqCst);
        }
    });
    let first = rig.run(
        &fleet,
        plan,
        id,
        HashMap::new(),
        Arc::new(Cancel::new()),
        on,
    );
    assert_eq!(first.results(), [TargetResult::Cancelled]);
    assert_eq!(first.outcome("web1").failed_step, Some(Step::Upgrade));
    journal.mark_cancelled(id).unwrap();
    journal.flush().unwrap();
    let writes = host.count("write");
    assert_eq!((host.count("exec run-pre"), writes), (1, 1));

    let detail = journal.dispatch(id).unwrap().expect("recorded");
    let left = dropship::journal::resume::left_to_do(&detail);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].done.contains(&Step::Pre) && left[0].done.contains(&Step::Upload),
        "{left:?}"
    );
    let skip: HashMap<String, Skip> = left
        .into_iter()
        .map(|l| (l.host, Skip { done: l.done }))
        .collect();
    let second = rig.run(
        &fleet,
        rig.plan(&cfg),
        id,
        skip,
        Arc::new(Cancel::new()),
        quiet(),
    );
    assert_eq!(second.results(), [TargetResult::Succeeded]);
    assert!(!second.started("web1", Step::Pre), "pre ran again");
    assert!(
        !second.started("web1", Step::Upload),
        "the upload ran again"
    );
    assert!(second.notice("pre already done before the interruption"));
    assert_eq!(host.count("exec run-pre"), 1);
    assert_eq!(host.count("write"), writes);
    assert_eq!(host.count("exec run-upgrade"), 1);
    assert_eq!(host.count("exec run-health"), 1);
    assert_eq!(host.lock(), LockState::Free);
}
