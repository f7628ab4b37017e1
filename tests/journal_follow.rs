//! The journal's follower (`Journal::follow`) against real SQLite files and a real PostgreSQL
//! server: another process writes dispatches step by step (this test binary again, in child
//! mode, driven over a pipe), and the follower in this process must see each of them once,
//! with its events in order, its output lines in order and none twice, its end, and a
//! writer killed with SIGKILL as `interrupted`; and it must never report this process's own
//! dispatches. Every test runs on both backends (`sqlite::NAME`, `postgres::NAME`).

mod support;

use support::backends::{Backend, temp_journal};

use dropship::engine::events::{Event, Millis, Step, StepOutcome, TargetResult};
use dropship::journal::{DispatchState, Follow, FollowUpdate, Journal, NewDispatch};
use dropship::transport::Stream;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const T0: Millis = 1_700_000_000_000;
const CHILD_ENV: &str = "DROPSHIP_FOLLOW_CHILD";

fn new_dispatch(bundle: &str, hosts: &[&str]) -> NewDispatch {
    NewDispatch {
        bundle: bundle.into(),
        bundle_path: PathBuf::from("/srv/drop").join(bundle),
        bundle_sha256: "ab".repeat(32),
        bundle_size: 1024,
        rule: "app".into(),
        config_path: "/etc/dropship/dispatch.cfg".into(),
        timestamp: "20240102_030405".into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        started_at: T0,
    }
}

/// Child mode: when run with `DROPSHIP_FOLLOW_CHILD=PATH`, takes commands on stdin, one a
/// line, and answers each with `DONE [id]` once it is committed:
/// `begin BUNDLE HOST...` begins a dispatch; `event JSON` records an event; `flush`.
/// Run normally, it does nothing.
#[test]
fn child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let j = Journal::open(Path::new(&path)).unwrap();
    for cmd in std::io::stdin().lock().lines() {
        let cmd = cmd.unwrap();
        let (verb, rest) = cmd.split_once(' ').unwrap_or((&cmd, ""));
        match verb {
            "begin" => {
                let words: Vec<&str> = rest.split(' ').collect();
                let id = j
                    .begin_dispatch(&new_dispatch(words[0], &words[1..]))
                    .unwrap();
                println!("DONE {id}");
            }
            "event" => {
                j.record(&serde_json::from_str::<Event>(rest).unwrap())
                    .unwrap();
                println!("DONE");
            }
            "flush" => {
                j.flush().unwrap();
                println!("DONE");
            }
            _ => return,
        }
        std::io::stdout().flush().unwrap();
    }
}

/// Another process writing the journal, one command at a time.
struct Other {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Other {
    fn start(path: &Path) -> Other {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Other {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command and waits for its `DONE`; what followed it.
    fn run(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "child ended");
            // libtest prints `test child_writer ... ` ahead of the child's first answer.
            if let Some((_, rest)) = line.split_once("DONE") {
                return rest.trim().to_owned();
            }
        }
    }

    fn begin(&mut self, bundle: &str, hosts: &[&str]) -> i64 {
        self.run(&format!("begin {bundle} {}", hosts.join(" ")))
            .parse()
            .unwrap()
    }

    fn event(&mut self, e: &Event) {
        self.run(&format!("event {}", serde_json::to_string(e).unwrap()));
    }
}

impl Drop for Other {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn step_started(dispatch: i64, host: &str, step: Step, at: Millis) -> Event {
    Event::StepStarted {
        dispatch,
        at,
        host: host.into(),
        step,
        command: (step == Step::Upgrade).then(|| "./upgrade.sh".to_string()),
    }
}

fn step_finished(dispatch: i64, host: &str, step: Step, at: Millis) -> Event {
    Event::StepFinished {
        dispatch,
        at,
        host: host.into(),
        step,
        outcome: StepOutcome::Ok,
        exit_code: Some(0),
        error: None,
        duration_ms: 1,
    }
}

fn output(dispatch: i64, host: &str, text: &str, at: Millis) -> Event {
    Event::Output {
        dispatch,
        at,
        host: host.into(),
        step: Step::Upgrade,
        stream: Stream::Stdout,
        lines: text.into(),
    }
}

fn target_done(dispatch: i64, host: &str, at: Millis) -> Event {
    Event::TargetFinished {
        dispatch,
        at,
        host: host.into(),
        result: TargetResult::Succeeded,
        failed_step: None,
        error: None,
        duration_ms: 10,
    }
}

fn dispatch_done(dispatch: i64, at: Millis) -> Event {
    Event::DispatchFinished {
        dispatch,
        at,
        succeeded: 1,
        failed: 0,
        skipped: 0,
        cancelled: 0,
        duration_ms: at - T0,
    }
}

/// Polls until an update says something (or `more` was set), at most 10 s.
fn next(j: &Journal, f: &mut Follow) -> FollowUpdate {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = j.follow(f).unwrap();
        if !u.is_empty() || Instant::now() > deadline {
            return u;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines_of(u: &FollowUpdate) -> Vec<String> {
    u.events
        .iter()
        .flat_map(|e| match e {
            Event::Output { lines, .. } => lines.iter().map(str::to_owned).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn me() -> String {
    dropship::journal::follow::this_origin()
}

fn another_process_dispatch_is_followed_once_in_order(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let mine = Journal::open(&path).unwrap();
    let reader = Journal::open(&path).unwrap();
    let mut f = Follow::new();
    assert!(reader.follow(&mut f).unwrap().is_empty(), "nothing yet");

    // This process's own dispatch, written through another handle: never reported.
    let own = mine
        .begin_dispatch(&new_dispatch("own.tgz", &["web9"]))
        .unwrap();
    mine.record(&step_started(own, "web9", Step::Upgrade, T0 + 1))
        .unwrap();
    mine.record(&output(own, "web9", "own line", T0 + 2))
        .unwrap();
    mine.flush().unwrap();

    let mut other = Other::start(&path);
    let id = other.begin("app-2.0.tgz", &["web1", "web2"]);
    assert_ne!(id, own);
    other.event(&step_started(id, "web1", Step::Connect, T0 + 5));
    other.event(&step_finished(id, "web1", Step::Connect, T0 + 6));
    other.event(&step_started(id, "web1", Step::Upgrade, T0 + 7));
    // More lines than one poll takes, so the cap and `more` are exercised.
    let total = dropship::journal::follow::LINES_PER_POLL as usize + 1500;
    for i in 0..total {
        other.event(&output(id, "web1", &format!("line {i:05}"), T0 + 8));
    }
    other.run("flush");

    let first = next(&reader, &mut f);
    assert_eq!(first.started.len(), 1, "{:?}", first.started);
    assert_eq!(first.started[0].id, id);
    assert!(!first.started[0].already_running);
    assert_eq!(
        first.started[0].by,
        me(),
        "the child runs as this user here"
    );
    assert!(first.more, "the cap was hit");
    match &first.events[0] {
        Event::DispatchStarted {
            dispatch,
            bundle,
            hosts,
            ..
        } => {
            assert_eq!((*dispatch, bundle.as_str()), (id, "app-2.0.tgz"));
            assert_eq!(hosts, &["web1".to_string(), "web2".to_string()]);
        }
        other => panic!("DispatchStarted first, got {other:?}"),
    }
    let kinds: Vec<String> = first.events[1..4]
        .iter()
        .map(|e| match e {
            Event::StepStarted { step, .. } => format!("start {step:?}"),
            Event::StepFinished { step, .. } => format!("end {step:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["start Connect", "end Connect", "start Upgrade"]);
    assert!(
        first.events.iter().all(|e| e.dispatch() == id),
        "own never shown"
    );
    let mut lines = lines_of(&first);
    assert_eq!(
        lines.len(),
        dropship::journal::follow::LINES_PER_POLL as usize
    );
    let second = reader.follow(&mut f).unwrap();
    assert!(!second.more);
    assert!(second.started.is_empty());
    lines.extend(lines_of(&second));
    let want: Vec<String> = (0..total).map(|i| format!("line {i:05}")).collect();
    assert_eq!(lines.len(), want.len(), "every line once");
    assert!(lines == want, "every line in order");
    assert!(reader.follow(&mut f).unwrap().is_empty(), "nothing new");

    // The end of the dispatch, and the state it leaves.
    other.event(&step_finished(id, "web1", Step::Upgrade, T0 + 9));
    other.event(&target_done(id, "web1", T0 + 10));
    other.event(&dispatch_done(id, T0 + 11));
    let end = next(&reader, &mut f);
    let names: Vec<&str> = end
        .events
        .iter()
        .map(|e| match e {
            Event::StepFinished { .. } => "step finished",
            Event::TargetFinished { .. } => "target finished",
            Event::DispatchFinished { .. } => "dispatch finished",
            _ => "other",
        })
        .collect();
    assert_eq!(
        names,
        ["step finished", "target finished", "dispatch finished"]
    );
    assert_eq!(end.states, [(id, DispatchState::Finished)]);
    assert_eq!(
        f.following(),
        0,
        "a finished dispatch is no longer followed"
    );

    // Own output after all that: still nothing.
    mine.record(&output(own, "web9", "own again", T0 + 12))
        .unwrap();
    mine.flush().unwrap();
    assert!(reader.follow(&mut f).unwrap().is_empty());
}

fn a_running_dispatch_is_followed_from_where_it_is_and_a_kill_shows(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let mut other = Other::start(&path);
    let id = other.begin("app-3.0.tgz", &["web1"]);
    other.event(&step_started(id, "web1", Step::Upgrade, T0 + 1));
    other.event(&output(id, "web1", "before", T0 + 2));
    other.run("flush");

    let reader = Journal::open(&path).unwrap();
    let mut f = Follow::new();
    let first = reader.follow(&mut f).unwrap();
    assert_eq!(first.started.len(), 1);
    assert!(first.started[0].already_running);
    assert!(
        first.events.is_empty(),
        "the first poll only takes position"
    );

    // The next poll has its record so far, then what it does from now on, each once.
    other.event(&output(id, "web1", "after", T0 + 3));
    other.run("flush");
    let u = next(&reader, &mut f);
    assert!(u.started.is_empty());
    assert!(
        matches!(u.events[0], Event::DispatchStarted { dispatch, .. } if dispatch == id),
        "{:?}",
        u.events
    );
    assert!(matches!(u.events[1], Event::StepStarted { .. }));
    assert_eq!(lines_of(&u), ["before", "after"]);
    other.event(&output(id, "web1", "later", T0 + 4));
    other.run("flush");
    let u = next(&reader, &mut f);
    assert_eq!(lines_of(&u), ["later"]);

    other.child.kill().unwrap(); // SIGKILL: its dispatch row still says running
    other.child.wait().unwrap();
    let u = next(&reader, &mut f);
    assert_eq!(u.states, [(id, DispatchState::Interrupted)]);
    assert!(u.events.is_empty());
}

support::backends::on_both_backends!(
    another_process_dispatch_is_followed_once_in_order,
    a_running_dispatch_is_followed_from_where_it_is_and_a_kill_shows,
);

/// The console's follower thread (`session::follow::Follower`) through a PostgreSQL restart:
/// its polls fail while the server is away, it opens the journal again when it is back, and
/// a dispatch begun after that still reaches it, once; what it had delivered is not repeated.
#[test]
fn the_follower_goes_on_after_the_server_restarts() {
    if let Some(reason) = support::postgres::available() {
        assert!(!support::is_ci(), "cannot run under CI=true: {reason}");
        eprintln!(
            "*** SKIPPED LIVE TEST the_follower_goes_on_after_the_server_restarts: {reason} ***"
        );
        return;
    }
    let mut pg = support::postgres::PgServer::start_with(true);
    let path = PathBuf::from(pg.url(support::postgres::PG_USER, &pg.new_database()));
    // Creates the schema before the follower opens it.
    drop(Journal::open(&path).unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<FollowUpdate>();
    let _follower =
        dropship::session::follow::Follower::start(&path, Duration::from_millis(50), move |u| {
            tx.send(u).is_ok()
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let seen = |rx: &std::sync::mpsc::Receiver<FollowUpdate>, want: &str| -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut lines = Vec::new();
        while Instant::now() < deadline {
            if let Ok(u) = rx.recv_timeout(Duration::from_millis(100)) {
                lines.extend(lines_of(&u));
                if lines.iter().any(|l| l == want) {
                    break;
                }
            }
        }
        lines
    };
    let mut other = Other::start(&path);
    let id = other.begin("app-4.0.tgz", &["web1"]);
    other.event(&step_started(id, "web1", Step::Upgrade, T0 + 1));
    other.event(&output(id, "web1", "before the restart", T0 + 2));
    other.run("flush");
    assert_eq!(seen(&rx, "before the restart"), ["before the restart"]);
    drop(other);

    pg.stop();
    std::thread::sleep(Duration::from_millis(800));
    pg.run();
    let mut other = Other::start(&path);
    let id = other.begin("app-4.0.1.tgz", &["web1"]);
    other.event(&step_started(id, "web1", Step::Upgrade, T0 + 3));
    other.event(&output(id, "web1", "after the restart", T0 + 4));
    other.run("flush");
    assert_eq!(seen(&rx, "after the restart"), ["after the restart"]);
}
