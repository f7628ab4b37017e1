//! The journal against real SQLite files and a real PostgreSQL server: round trips, bounds,
//! concurrency between threads and processes, a writer killed with SIGKILL, resume
//! classification, and refusing journals it must not touch. Every test that is about what the
//! journal means runs on both backends (`sqlite::NAME`, `postgres::NAME`, generated at the
//! end of the file); the PostgreSQL server is a throwaway one (tests/support/postgres.rs).

mod support;

use support::backends::{Backend, temp_journal};

use dropship::engine::events::{Event, Level, Millis, Step, StepOutcome, TargetResult};
use dropship::journal::{
    DispatchState, Journal, JournalError, JournalOptions, NewDispatch, RunKind, RunRecord,
    TargetProgress,
};
use dropship::transport::{Stream, TransferEvent};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: Millis = 1_700_000_000_000;

/// Runs SQL on the journal behind `path` the way an administrator would, outside dropship;
/// returns the integer the query answers, if any.
fn admin_sql(b: Backend, path: &Path, sqlite: &str, postgres: &str) -> String {
    match b {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(path).unwrap();
            let mut stmt = conn.prepare(sqlite).unwrap();
            let mut rows = stmt.query([]).unwrap();
            let mut out = String::new();
            while let Some(r) = rows.next().unwrap() {
                let v: rusqlite::types::Value = r.get(0).unwrap();
                if let rusqlite::types::Value::Integer(n) = v {
                    out.push_str(&n.to_string());
                }
            }
            out
        }
        Backend::Postgres => {
            let url = path.to_str().unwrap();
            let db = url.rsplit('/').next().unwrap().split('?').next().unwrap();
            support::postgres::shared()
                .unwrap()
                .psql(db, postgres)
                .trim()
                .to_owned()
        }
    }
}

fn new_dispatch(bundle: &str, hosts: &[&str]) -> NewDispatch {
    NewDispatch {
        bundle: bundle.into(),
        bundle_path: PathBuf::from("/srv/drop").join(bundle),
        bundle_sha256: "ab".repeat(32),
        bundle_size: 10 * 1024 * 1024,
        rule: "app".into(),
        config_path: "/etc/dropship/dispatch.cfg".into(),
        timestamp: "20240102_030405".into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        started_at: T0,
    }
}

fn started(dispatch: i64, host: &str, step: Step, at: Millis) -> Event {
    Event::StepStarted {
        dispatch,
        at,
        host: host.into(),
        step,
        command: matches!(step, Step::Upgrade).then(|| "./upgrade.sh".to_string()),
    }
}

fn finished(dispatch: i64, host: &str, step: Step, outcome: StepOutcome, at: Millis) -> Event {
    Event::StepFinished {
        dispatch,
        at,
        host: host.into(),
        step,
        outcome,
        exit_code: Some(if outcome == StepOutcome::Ok { 0 } else { 2 }),
        error: (outcome == StepOutcome::Failed).then(|| "exit status 2".to_string()),
        duration_ms: 5,
    }
}

fn line(dispatch: i64, host: &str, step: Step, stream: Stream, text: &str, at: Millis) -> Event {
    Event::Output {
        dispatch,
        at,
        host: host.into(),
        step,
        stream,
        lines: text.into(),
    }
}

fn transfer(dispatch: i64, host: &str, transfer: TransferEvent) -> Event {
    Event::Transfer {
        dispatch,
        at: T0,
        host: host.into(),
        transfer,
    }
}

fn target_done(dispatch: i64, host: &str, result: TargetResult, at: Millis) -> Event {
    Event::TargetFinished {
        dispatch,
        at,
        host: host.into(),
        result,
        failed_step: (result == TargetResult::Failed).then_some(Step::Upgrade),
        error: (result == TargetResult::Failed).then(|| "upgrade failed".to_string()),
        duration_ms: 100,
    }
}

fn dispatch_done(dispatch: i64, at: Millis) -> Event {
    Event::DispatchFinished {
        dispatch,
        at,
        succeeded: 0,
        failed: 0,
        skipped: 0,
        cancelled: 0,
        duration_ms: at - T0,
    }
}

/// Records `steps` finishing with `outcome`, each one started then finished.
fn run_steps(j: &Journal, id: i64, host: &str, steps: &[Step], outcome: StepOutcome) {
    for &step in steps {
        j.record(&started(id, host, step, T0)).unwrap();
        j.record(&finished(id, host, step, outcome, T0 + 5))
            .unwrap();
    }
}

fn verified_upload(j: &Journal, id: i64, host: &str) {
    j.record(&started(id, host, Step::Upload, T0)).unwrap();
    let start = TransferEvent::Started {
        attempt: 1,
        size: 1024,
        resume_from: 0,
        restart: None,
    };
    j.record(&transfer(id, host, start)).unwrap();
    let done = TransferEvent::Verified {
        size: 1024,
        sha256: Some("cd".repeat(32)),
        by: dropship::transport::VerifiedBy::Sha256,
    };
    j.record(&transfer(id, host, done)).unwrap();
    j.record(&finished(id, host, Step::Upload, StepOutcome::Ok, T0 + 5))
        .unwrap();
}

fn a_whole_dispatch_round_trips(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let j = Journal::open(&path).unwrap();
    let mut rec = new_dispatch("app-1.4.2.tgz", &["web1", "web2"]);
    // Not UTF-8: a resume must still find this very file.
    rec.config_path = OsStr::from_bytes(b"/etc/dispatch-\xff.cfg").into();
    let id = j.begin_dispatch(&rec).unwrap();
    j.record(&Event::DispatchStarted {
        dispatch: id,
        at: T0,
        bundle: rec.bundle.clone(),
        rule: rec.rule.clone(),
        hosts: rec.hosts.clone(),
    })
    .unwrap();

    run_steps(
        &j,
        id,
        "web1",
        &[Step::Connect, Step::Lock],
        StepOutcome::Ok,
    );
    verified_upload(&j, id, "web1");
    let progress = TransferEvent::Progress {
        sent: 512,
        total: 1024,
        rate: 1.0,
        eta_secs: None,
    };
    j.record(&transfer(id, "web1", progress)).unwrap();
    j.record(&started(id, "web1", Step::Upgrade, T0 + 10))
        .unwrap();
    j.record(&line(
        id,
        "web1",
        Step::Upgrade,
        Stream::Stdout,
        "stopping",
        T0 + 11,
    ))
    .unwrap();
    j.record(&line(
        id,
        "web1",
        Step::Upgrade,
        Stream::Stderr,
        "warn: é ✓",
        T0 + 12,
    ))
    .unwrap();
    j.record(&line(
        id,
        "web1",
        Step::Upgrade,
        Stream::Stdout,
        "",
        T0 + 13,
    ))
    .unwrap();
    j.record(&finished(
        id,
        "web1",
        Step::Upgrade,
        StepOutcome::Ok,
        T0 + 20,
    ))
    .unwrap();
    j.record(&target_done(id, "web1", TargetResult::Succeeded, T0 + 30))
        .unwrap();

    run_steps(&j, id, "web2", &[Step::Connect], StepOutcome::Ok);
    run_steps(&j, id, "web2", &[Step::Upgrade], StepOutcome::Failed);
    run_steps(&j, id, "web2", &[Step::Rollback], StepOutcome::Ok);
    j.record(&Event::Notice {
        dispatch: id,
        at: T0 + 25,
        host: Some("web2".into()),
        level: Level::Warning,
        message: "broke a stale lock".into(),
    })
    .unwrap();
    j.record(&target_done(id, "web2", TargetResult::Failed, T0 + 31))
        .unwrap();
    j.record(&dispatch_done(id, T0 + 40)).unwrap();
    drop(j);

    // A fresh handle reads everything back.
    let j = Journal::open(&path).unwrap();
    let detail = j.dispatch(id).unwrap().expect("dispatch exists");
    assert_eq!(detail.record, rec);
    assert_eq!(detail.state, DispatchState::Finished);
    assert_eq!(detail.finished_at, Some(T0 + 40));
    assert_eq!(detail.writer_pid, i64::from(std::process::id()));

    let web1 = &detail.targets[0];
    assert_eq!(web1.host, "web1");
    assert_eq!(web1.result, Some(TargetResult::Succeeded));
    assert_eq!(web1.upload_attempts, 1);
    let verified = web1.verified.as_ref().expect("upload verified");
    assert_eq!(
        (verified.size, verified.sha256.clone()),
        (1024, Some("cd".repeat(32)))
    );
    let steps: Vec<_> = web1.steps.iter().map(|s| (s.step, s.outcome)).collect();
    assert_eq!(
        steps,
        [Step::Connect, Step::Lock, Step::Upload, Step::Upgrade]
            .map(|s| (s, Some(StepOutcome::Ok)))
    );
    let upgrade = &web1.steps[3];
    assert_eq!(upgrade.command.as_deref(), Some("./upgrade.sh"));
    assert_eq!(
        (upgrade.started_at, upgrade.finished_at),
        (T0 + 10, Some(T0 + 20))
    );
    assert_eq!(
        (upgrade.exit_code, upgrade.lines, upgrade.dropped_lines),
        (Some(0), 3, 0)
    );

    let web2 = &detail.targets[1];
    assert_eq!(web2.result, Some(TargetResult::Failed));
    assert_eq!(web2.failed_step, Some(Step::Upgrade));
    assert_eq!(web2.error.as_deref(), Some("upgrade failed"));
    assert!(web2.verified.is_none());
    assert_eq!(web2.steps[1].outcome, Some(StepOutcome::Failed));
    assert_eq!(web2.steps[1].error.as_deref(), Some("exit status 2"));

    assert_eq!(detail.notices.len(), 1);
    assert_eq!(detail.notices[0].level, Level::Warning);
    assert_eq!(detail.notices[0].host.as_deref(), Some("web2"));

    let out = j.output(id, "web1", Step::Upgrade).unwrap();
    let out: Vec<_> = out
        .iter()
        .map(|l| (l.at, l.stream, l.line.as_str()))
        .collect();
    assert_eq!(
        out,
        [
            (T0 + 11, Stream::Stdout, "stopping"),
            (T0 + 12, Stream::Stderr, "warn: é ✓"),
            (T0 + 13, Stream::Stdout, ""),
        ]
    );
    assert!(j.output(id, "web2", Step::Upgrade).unwrap().is_empty());

    let history = j.history(10).unwrap();
    assert_eq!(history.len(), 1);
    let h = &history[0];
    assert_eq!(
        (h.id, h.bundle.as_str(), h.rule.as_str()),
        (id, "app-1.4.2.tgz", "app")
    );
    assert_eq!(
        (h.hosts, h.succeeded, h.failed, h.skipped, h.cancelled),
        (2, 1, 1, 0, 0)
    );
    assert_eq!(h.duration_ms, Some(40));
}

fn history_is_newest_first_with_counts_and_states(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let j = Journal::open(&path).unwrap();
    let first = j
        .begin_dispatch(&new_dispatch("a-1.tgz", &["h1", "h2", "h3"]))
        .unwrap();
    j.record(&target_done(first, "h1", TargetResult::Succeeded, T0 + 1))
        .unwrap();
    j.record(&target_done(first, "h2", TargetResult::Failed, T0 + 2))
        .unwrap();
    j.record(&target_done(first, "h3", TargetResult::Skipped, T0 + 3))
        .unwrap();
    j.record(&dispatch_done(first, T0 + 1000)).unwrap();

    let second = j
        .begin_dispatch(&new_dispatch("a-2.tgz", &["h1", "h2"]))
        .unwrap();
    j.record(&target_done(second, "h1", TargetResult::Cancelled, T0 + 4))
        .unwrap();
    j.mark_cancelled(second).unwrap();
    // The engine's closing event does not turn a cancelled dispatch into a finished one.
    j.record(&dispatch_done(second, T0 + 5)).unwrap();

    let third = j.begin_dispatch(&new_dispatch("a-3.tgz", &["h1"])).unwrap();
    assert!(first < second && second < third);

    let all = j.history(10).unwrap();
    let ids: Vec<i64> = all.iter().map(|d| d.id).collect();
    assert_eq!(ids, [third, second, first]);
    let states: Vec<DispatchState> = all.iter().map(|d| d.state).collect();
    assert_eq!(
        states,
        [
            DispatchState::Running,
            DispatchState::Cancelled,
            DispatchState::Finished
        ]
    );
    let counts = |i: usize| {
        let d = &all[i];
        (d.hosts, d.succeeded, d.failed, d.skipped, d.cancelled)
    };
    assert_eq!(counts(0), (1, 0, 0, 0, 0));
    assert_eq!(counts(1), (2, 0, 0, 0, 1));
    assert_eq!(counts(2), (3, 1, 1, 1, 0));
    assert_eq!(all[2].duration_ms, Some(1000));
    assert_eq!(all[0].duration_ms, None);

    let newest_two = j.history(2).unwrap();
    assert_eq!(
        newest_two.iter().map(|d| d.id).collect::<Vec<_>>(),
        [third, second]
    );
}

fn output_is_bounded_per_step_and_the_rest_is_counted(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let options = JournalOptions {
        max_lines_per_step: 100,
        batch_lines: 7,
    };
    let j = Journal::open_with(&path, options).unwrap();
    let id = j.begin_dispatch(&new_dispatch("b.tgz", &["h"])).unwrap();
    j.record(&started(id, "h", Step::Upgrade, T0)).unwrap();
    for i in 0..250 {
        let text = format!("line {i}");
        j.record(&line(id, "h", Step::Upgrade, Stream::Stdout, &text, T0 + i))
            .unwrap();
    }
    j.flush().unwrap();
    // Visible to another process before the step ends.
    let other = Journal::open(&path).unwrap();
    let step = &other.dispatch(id).unwrap().unwrap().targets[0].steps[0];
    assert_eq!(
        (step.lines, step.dropped_lines, step.outcome),
        (100, 150, None)
    );

    j.record(&finished(id, "h", Step::Upgrade, StepOutcome::Ok, T0 + 300))
        .unwrap();
    j.record(&started(id, "h", Step::Post, T0 + 301)).unwrap();
    for i in 0..50 {
        j.record(&line(
            id,
            "h",
            Step::Post,
            Stream::Stderr,
            "post",
            T0 + 302 + i,
        ))
        .unwrap();
    }
    j.record(&finished(id, "h", Step::Post, StepOutcome::Ok, T0 + 400))
        .unwrap();

    let steps = &j.dispatch(id).unwrap().unwrap().targets[0].steps;
    let counts: Vec<_> = steps
        .iter()
        .map(|s| (s.step, s.lines, s.dropped_lines))
        .collect();
    assert_eq!(counts, [(Step::Upgrade, 100, 150), (Step::Post, 50, 0)]);
    let stored: Vec<String> = j
        .output(id, "h", Step::Upgrade)
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    let expected: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
    assert_eq!(stored, expected, "the first lines are kept, in order");
}

/// Output arrives as the lines of a read, one event for many lines: the bound splits such
/// an event (the first lines stored, in order, the rest counted), a progress state counts
/// as a stored line like any other (it is stored, raw), and past the bound an event is
/// only counted.
fn batched_output_is_bounded_line_by_line(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let options = JournalOptions {
        max_lines_per_step: 100,
        batch_lines: 30,
    };
    let j = Journal::open_with(&path, options).unwrap();
    let id = j.begin_dispatch(&new_dispatch("b.tgz", &["h"])).unwrap();
    j.record(&started(id, "h", Step::Upgrade, T0)).unwrap();
    // 7 batches of 40 lines (280); line 5 of each is a progress state.
    let text = |i: usize| {
        if i % 40 == 5 {
            format!("copy {i}%\r")
        } else {
            format!("line {i}")
        }
    };
    for batch in 0..7 {
        let lines: Vec<String> = (batch * 40..batch * 40 + 40).map(text).collect();
        j.record(&line(
            id,
            "h",
            Step::Upgrade,
            Stream::Stdout,
            &lines.join("\n"),
            T0 + batch as Millis,
        ))
        .unwrap();
    }
    j.record(&finished(id, "h", Step::Upgrade, StepOutcome::Ok, T0 + 10))
        .unwrap();
    let step = &j.dispatch(id).unwrap().unwrap().targets[0].steps[0];
    assert_eq!((step.lines, step.dropped_lines), (100, 180));
    let stored: Vec<(Millis, String)> = j
        .output(id, "h", Step::Upgrade)
        .unwrap()
        .into_iter()
        .map(|l| (l.at, l.line))
        .collect();
    let expected: Vec<(Millis, String)> = (0..100)
        .map(|i| (T0 + (i / 40) as Millis, text(i)))
        .collect();
    assert_eq!(
        stored, expected,
        "the first 100 lines, in order, with their batch's time"
    );
}

/// A line of any length is stored as at most 64 KiB and a marker counting the rest; a line
/// the transport already capped keeps its marker.
fn long_lines_are_stored_capped(b: Backend) {
    use dropship::transport::lines::{MAX_LINE, cut_marker};
    let (_dir, path) = temp_journal(b);
    let j = Journal::open(&path).unwrap();
    let id = j.begin_dispatch(&new_dispatch("b.tgz", &["h"])).unwrap();
    j.record(&started(id, "h", Step::Upgrade, T0)).unwrap();
    let huge = "y".repeat(3 << 20);
    let capped = format!("{}{}", "x".repeat(MAX_LINE), cut_marker(99));
    for (i, text) in [huge.as_str(), capped.as_str(), "short"]
        .into_iter()
        .enumerate()
    {
        j.record(&line(
            id,
            "h",
            Step::Upgrade,
            Stream::Stdout,
            text,
            T0 + i as i64,
        ))
        .unwrap();
    }
    j.record(&finished(id, "h", Step::Upgrade, StepOutcome::Ok, T0 + 9))
        .unwrap();
    let stored: Vec<String> = j
        .output(id, "h", Step::Upgrade)
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    let expected_huge = format!(
        "{}{}",
        "y".repeat(MAX_LINE),
        cut_marker(((3 << 20) - MAX_LINE) as u64)
    );
    assert_eq!(stored.len(), 3);
    assert!(
        stored[0] == expected_huge,
        "stored {} bytes",
        stored[0].len()
    );
    assert!(stored[1] == capped, "stored {} bytes", stored[1].len());
    assert_eq!(stored[2], "short");
}

/// The full job of one target, as a dispatch thread would report it.
fn host_job(j: &Journal, id: i64, host: &str, lines: usize) {
    run_steps(j, id, host, &[Step::Connect, Step::Lock], StepOutcome::Ok);
    verified_upload(j, id, host);
    j.record(&started(id, host, Step::Upgrade, T0)).unwrap();
    for i in 0..lines {
        let text = format!("{host} {i}");
        j.record(&line(id, host, Step::Upgrade, Stream::Stdout, &text, T0))
            .unwrap();
    }
    j.record(&finished(id, host, Step::Upgrade, StepOutcome::Ok, T0 + 1))
        .unwrap();
    j.record(&target_done(id, host, TargetResult::Succeeded, T0 + 2))
        .unwrap();
}

fn assert_every_host_complete(j: &Journal, id: i64, hosts: &[String], lines: usize) {
    let detail = j.dispatch(id).unwrap().unwrap();
    for (target, host) in detail.targets.iter().zip(hosts) {
        assert_eq!(&target.host, host);
        assert_eq!(target.result, Some(TargetResult::Succeeded));
        assert_eq!(target.steps.len(), 4);
        assert_eq!(target.steps[3].lines, lines as u64);
        let out = j.output(id, host, Step::Upgrade).unwrap();
        let expected: Vec<String> = (0..lines).map(|i| format!("{host} {i}")).collect();
        assert_eq!(
            out.into_iter().map(|l| l.line).collect::<Vec<_>>(),
            expected
        );
    }
}

fn eight_threads_write_one_dispatch_concurrently(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let options = JournalOptions {
        batch_lines: 50,
        ..JournalOptions::default()
    };
    let j = Arc::new(Journal::open_with(&path, options).unwrap());
    let hosts: Vec<String> = (1..=8).map(|i| format!("host{i}")).collect();
    let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let id = j
        .begin_dispatch(&new_dispatch("c.tgz", &host_refs))
        .unwrap();
    let threads: Vec<_> = hosts
        .iter()
        .map(|host| {
            let (j, host) = (Arc::clone(&j), host.clone());
            std::thread::spawn(move || host_job(&j, id, &host, 1_000))
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    j.record(&dispatch_done(id, T0 + 10)).unwrap();
    assert_every_host_complete(&j, id, &hosts, 1_000);
    assert_eq!(j.history(1).unwrap()[0].succeeded, 8);
}

fn two_handles_share_one_file(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let small_batches = JournalOptions {
        batch_lines: 10,
        ..JournalOptions::default()
    };
    let first = Journal::open_with(&path, small_batches).unwrap();
    let second = Journal::open_with(&path, small_batches).unwrap();
    let hosts = vec!["a".to_string(), "b".to_string()];
    let id = first
        .begin_dispatch(&new_dispatch("d.tgz", &["a", "b"]))
        .unwrap();
    // Each handle is its own connection, as two processes would have.
    std::thread::scope(|s| {
        s.spawn(|| host_job(&first, id, "a", 2_000));
        s.spawn(|| host_job(&second, id, "b", 2_000));
    });
    second.record(&dispatch_done(id, T0 + 10)).unwrap();
    assert_every_host_complete(&first, id, &hosts, 2_000);
    assert_every_host_complete(&second, id, &hosts, 2_000);
    assert_eq!(first.history(5).unwrap()[0].state, DispatchState::Finished);
}

const CHILD_ENV: &str = "DROPSHIP_JOURNAL_CHILD";

/// Child mode of `a_writer_killed_mid_step_leaves_an_interrupted_dispatch`: when run with
/// `DROPSHIP_JOURNAL_CHILD=PATH`, writes a dispatch up to a running `upgrade`, reports its id
/// and sleeps until killed. Run normally, it does nothing.
#[test]
fn child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let j = Journal::open(Path::new(&path)).unwrap();
    let id = j
        .begin_dispatch(&new_dispatch("e.tgz", &["web1", "web2"]))
        .unwrap();
    run_steps(
        &j,
        id,
        "web1",
        &[Step::Connect, Step::Lock],
        StepOutcome::Ok,
    );
    verified_upload(&j, id, "web1");
    j.record(&started(id, "web1", Step::Upgrade, T0 + 10))
        .unwrap();
    for i in 0..5 {
        let text = format!("before notice {i}");
        j.record(&line(
            id,
            "web1",
            Step::Upgrade,
            Stream::Stdout,
            &text,
            T0 + 11,
        ))
        .unwrap();
    }
    // A control event commits the lines buffered before it.
    j.record(&Event::Notice {
        dispatch: id,
        at: T0 + 12,
        host: None,
        level: Level::Info,
        message: "halfway".into(),
    })
    .unwrap();
    j.record(&line(
        id,
        "web1",
        Step::Upgrade,
        Stream::Stderr,
        "flushed",
        T0 + 13,
    ))
    .unwrap();
    j.flush().unwrap();
    println!("READY {id}");
    std::thread::sleep(Duration::from_secs(120));
}

/// Kills the child if the test fails before it does, so no sleeper outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn a_writer_killed_mid_step_leaves_an_interrupted_dispatch(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let id: i64 = stdout
        .lines()
        .map(|l| l.unwrap())
        // libtest prints `test child_writer ... ` before the child's own output.
        .find_map(|l| {
            l.split_once("READY ")
                .map(|(_, id)| id.trim().parse().unwrap())
        })
        .expect("the child reports its dispatch");

    let j = Journal::open(&path).unwrap();
    assert_eq!(j.history(1).unwrap()[0].state, DispatchState::Running);
    match j.begin_resume(id) {
        Err(JournalError::StillRunning { id: got, pid }) => {
            assert_eq!((got, pid), (id, i64::from(child.id())));
        }
        other => panic!("resuming a live dispatch must be refused, got {other:?}"),
    }

    child.kill().unwrap(); // SIGKILL: no destructor, no flush.
    child.wait().unwrap();

    assert_eq!(j.history(1).unwrap()[0].state, DispatchState::Interrupted);
    let detail = j.dispatch(id).unwrap().unwrap();
    assert_eq!(detail.state, DispatchState::Interrupted);
    let web1 = &detail.targets[0];
    assert_eq!(web1.result, None);
    let upgrade = web1.steps.last().unwrap();
    assert_eq!(
        (upgrade.step, upgrade.outcome, upgrade.finished_at),
        (Step::Upgrade, None, None)
    );
    assert_eq!(upgrade.lines, 6);
    assert_eq!(
        j.output(id, "web1", Step::Upgrade).unwrap()[5].line,
        "flushed"
    );

    let expected = TargetProgress::Incomplete {
        verified_upload: true,
        completed: vec![Step::Connect, Step::Lock, Step::Upload],
        failed: vec![],
        running: Some(Step::Upgrade),
    };
    let plan = j.resume_plan(id).unwrap();
    assert_eq!(plan.record.timestamp, "20240102_030405");
    assert_eq!(plan.targets[0], ("web1".to_string(), expected.clone()));
    let untouched = TargetProgress::Incomplete {
        verified_upload: false,
        completed: vec![],
        failed: vec![],
        running: None,
    };
    assert_eq!(plan.targets[1], ("web2".to_string(), untouched));

    j.mark_unknown(id, "web1", Step::Upgrade).unwrap();
    let upgrade = j.dispatch(id).unwrap().unwrap().targets[0].steps[3].clone();
    assert_eq!(upgrade.outcome, Some(StepOutcome::Unknown));
    assert!(upgrade.error.unwrap().contains("may or may not"));
    // Still the step resume must not repeat silently.
    assert_eq!(j.resume_plan(id).unwrap().targets[0].1, expected);

    // Taking it over makes this process the writer.
    let taken = j.begin_resume(id).unwrap();
    assert_eq!(taken.state, DispatchState::Running);
    assert_eq!(j.history(1).unwrap()[0].state, DispatchState::Running);
    run_steps(&j, id, "web1", &[Step::Upgrade], StepOutcome::Ok);
    j.record(&target_done(id, "web1", TargetResult::Succeeded, T0 + 50))
        .unwrap();
    j.record(&target_done(id, "web2", TargetResult::Succeeded, T0 + 51))
        .unwrap();
    j.record(&dispatch_done(id, T0 + 60)).unwrap();
    let done = &j.history(1).unwrap()[0];
    assert_eq!((done.state, done.succeeded), (DispatchState::Finished, 2));
    let runs = &j.dispatch(id).unwrap().unwrap().targets[0].steps;
    let upgrades: Vec<_> = runs
        .iter()
        .filter(|s| s.step == Step::Upgrade)
        .map(|s| s.outcome)
        .collect();
    assert_eq!(
        upgrades,
        [Some(StepOutcome::Unknown), Some(StepOutcome::Ok)]
    );
}

fn resume_classifies_every_target(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let j = Journal::open(&path).unwrap();
    let hosts = [
        "done",
        "failed",
        "skipped",
        "cancelled",
        "midway",
        "rollback",
        "rerun",
        "reupload",
        "pending",
    ];
    let id = j.begin_dispatch(&new_dispatch("f.tgz", &hosts)).unwrap();
    for (host, result) in [
        ("done", TargetResult::Succeeded),
        ("failed", TargetResult::Failed),
        ("skipped", TargetResult::Skipped),
        ("cancelled", TargetResult::Cancelled),
    ] {
        j.record(&target_done(id, host, result, T0 + 1)).unwrap();
    }
    // Died during `upgrade`, after a verified upload.
    run_steps(
        &j,
        id,
        "midway",
        &[Step::Connect, Step::Lock],
        StepOutcome::Ok,
    );
    verified_upload(&j, id, "midway");
    j.record(&started(id, "midway", Step::Upgrade, T0)).unwrap();
    // Died during the rollback of a failed upgrade.
    run_steps(&j, id, "rollback", &[Step::Connect], StepOutcome::Ok);
    run_steps(&j, id, "rollback", &[Step::Upgrade], StepOutcome::Failed);
    j.record(&started(id, "rollback", Step::Rollback, T0))
        .unwrap();
    // An unknown `upgrade` re-run to success: the latest run counts.
    j.record(&started(id, "rerun", Step::Upgrade, T0)).unwrap();
    j.mark_unknown(id, "rerun", Step::Upgrade).unwrap();
    run_steps(&j, id, "rerun", &[Step::Upgrade], StepOutcome::Ok);
    // A new upload attempt after a verified one: the old verification no longer holds.
    verified_upload(&j, id, "reupload");
    let again = TransferEvent::Started {
        attempt: 1,
        size: 1024,
        resume_from: 0,
        restart: None,
    };
    j.record(&transfer(id, "reupload", again)).unwrap();

    let incomplete =
        |verified: bool, completed: &[Step], failed: &[Step], running: Option<Step>| {
            TargetProgress::Incomplete {
                verified_upload: verified,
                completed: completed.to_vec(),
                failed: failed.to_vec(),
                running,
            }
        };
    let plan = j.resume_plan(id).unwrap();
    let expected = vec![
        TargetProgress::Done,
        TargetProgress::Failed,
        TargetProgress::Skipped,
        TargetProgress::Cancelled,
        incomplete(
            true,
            &[Step::Connect, Step::Lock, Step::Upload],
            &[],
            Some(Step::Upgrade),
        ),
        incomplete(
            false,
            &[Step::Connect],
            &[Step::Upgrade],
            Some(Step::Rollback),
        ),
        incomplete(false, &[Step::Upgrade], &[], None),
        incomplete(false, &[Step::Upload], &[], None),
        incomplete(false, &[], &[], None),
    ];
    let got: Vec<_> = plan.targets.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(got, expected);
    let names: Vec<_> = plan.targets.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(names, hosts);
    assert_eq!(
        j.dispatch(id).unwrap().unwrap().targets[7].upload_attempts,
        2
    );

    // A finished step cannot be marked unknown; a finished dispatch cannot be resumed.
    let err = j.mark_unknown(id, "done", Step::Upgrade).unwrap_err();
    assert!(matches!(err, JournalError::NoSuchStep { .. }), "{err}");
    j.record(&dispatch_done(id, T0 + 9)).unwrap();
    let err = j.begin_resume(id).unwrap_err();
    assert!(matches!(err, JournalError::AlreadyFinished { .. }), "{err}");
    assert!(matches!(
        j.resume_plan(id + 1),
        Err(JournalError::NoSuchDispatch { .. })
    ));
}

fn last_results_per_host(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let j = Journal::open(&path).unwrap();
    let one = j
        .begin_dispatch(&new_dispatch("app-1.0.tgz", &["a", "b"]))
        .unwrap();
    j.record(&target_done(one, "a", TargetResult::Succeeded, T0 + 1))
        .unwrap();
    j.record(&target_done(one, "b", TargetResult::Succeeded, T0 + 2))
        .unwrap();
    let two = j
        .begin_dispatch(&new_dispatch("app-1.1.tgz", &["a", "b", "c"]))
        .unwrap();
    j.record(&target_done(two, "a", TargetResult::Succeeded, T0 + 3))
        .unwrap();
    j.record(&target_done(two, "b", TargetResult::Failed, T0 + 4))
        .unwrap();
    // `c` never finished: it has no last result.

    let last = j.last_results().unwrap();
    let summary: Vec<_> = last
        .iter()
        .map(|l| {
            let shipped = l.last_succeeded.as_ref().map(|s| s.bundle.as_str());
            (
                l.host.as_str(),
                l.dispatch,
                l.bundle.as_str(),
                l.result,
                shipped,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "a",
                two,
                "app-1.1.tgz",
                TargetResult::Succeeded,
                Some("app-1.1.tgz")
            ),
            (
                "b",
                two,
                "app-1.1.tgz",
                TargetResult::Failed,
                Some("app-1.0.tgz")
            ),
        ]
    );
}

fn a_newer_schema_is_refused(b: Backend) {
    let (_dir, path) = temp_journal(b);
    drop(Journal::open(&path).unwrap());
    admin_sql(
        b,
        &path,
        "PRAGMA user_version = 99",
        "UPDATE dropship_journal SET version = 99",
    );
    // …whose migration this dropship may not write next to.
    admin_sql(
        b,
        &path,
        "UPDATE dropship_journal SET compatible = 99",
        "UPDATE dropship_journal SET compatible = 99",
    );
    let err = Journal::open(&path).unwrap_err();
    assert!(
        matches!(err, JournalError::SchemaTooNew { found: 99, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("schema version 99"), "{message}");
    assert!(message.contains("upgrade dropship"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

/// Two dropship versions on one journal, as when a team upgrades one machine at a time: a
/// newer schema whose migration only adds (its `compatible` is at most this version) stays
/// writable by this dropship, which never migrates it down; one that may not be written next
/// to is refused when opened, and by a handle already open when it begins a dispatch.
fn an_older_dropship_writes_next_to_a_newer_schema_only_if_compatible(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let running = Journal::open(&path).unwrap();
    let next = dropship::journal::SCHEMA_VERSION + 1;
    admin_sql(
        b,
        &path,
        &format!("PRAGMA user_version = {next}"),
        &format!("UPDATE dropship_journal SET version = {next}"),
    );
    admin_sql(
        b,
        &path,
        &format!("UPDATE dropship_journal SET compatible = {}", next - 1),
        &format!("UPDATE dropship_journal SET compatible = {}", next - 1),
    );

    let j = Journal::open(&path).expect("a compatible newer schema opens");
    let id = j
        .begin_dispatch(&new_dispatch("mixed.tgz", &["h1"]))
        .unwrap();
    j.record(&target_done(id, "h1", TargetResult::Succeeded, T0 + 1))
        .unwrap();
    j.record(&dispatch_done(id, T0 + 2)).unwrap();
    let history = j.history(10).unwrap();
    assert_eq!(
        (history[0].id, history[0].state),
        (id, DispatchState::Finished)
    );
    running
        .begin_dispatch(&new_dispatch("also.tgz", &["h1"]))
        .expect("a running handle goes on too");
    drop(j);
    assert_eq!(
        admin_sql(
            b,
            &path,
            "PRAGMA user_version",
            "SELECT version FROM dropship_journal"
        ),
        next.to_string(),
        "never migrated down"
    );

    admin_sql(
        b,
        &path,
        &format!("UPDATE dropship_journal SET compatible = {next}"),
        &format!("UPDATE dropship_journal SET compatible = {next}"),
    );
    let Err(err) = Journal::open(&path) else {
        panic!("refused at open");
    };
    assert!(
        matches!(err, JournalError::SchemaTooNew { found, needs, .. } if found == next && needs == next),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade dropship"), "{err}");
    let err = running
        .begin_dispatch(&new_dispatch("late.tgz", &["h1"]))
        .expect_err("a running handle is refused before its next dispatch");
    assert!(matches!(err, JournalError::SchemaTooNew { .. }), "{err:?}");
}

#[test]
fn a_file_that_is_not_a_journal_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("journal.sqlite");
    let content = "these are my notes, not a database\n".repeat(100);
    std::fs::write(&text, &content).unwrap();
    let err = Journal::open(&text).unwrap_err();
    assert!(matches!(err, JournalError::NotAJournal { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is not a dropship journal"),
        "{err}"
    );
    assert!(err.to_string().contains("move the file aside"), "{err}");
    assert_eq!(std::fs::read_to_string(&text).unwrap(), content);

    let foreign = dir.path().join("other.sqlite");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE mine (x); INSERT INTO mine VALUES (1);")
        .unwrap();
    drop(conn);
    let err = Journal::open(&foreign).unwrap_err();
    assert!(err.to_string().contains("another program"), "{err}");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "a foreign database is not switched to WAL");
}

fn events_for_unknown_dispatches_or_hosts_are_errors(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let j = Journal::open(&path).unwrap();
    let id = j.begin_dispatch(&new_dispatch("g.tgz", &["a"])).unwrap();
    let err = j.record(&started(id + 1, "a", Step::Pre, T0)).unwrap_err();
    assert!(matches!(err, JournalError::NoSuchDispatch { .. }), "{err}");
    let err = j.record(&started(id, "zz", Step::Pre, T0)).unwrap_err();
    assert!(matches!(err, JournalError::NoSuchTarget { .. }), "{err}");
    assert!(err.to_string().contains("no target `zz`"), "{err}");
    let err = j
        .record(&line(id, "zz", Step::Pre, Stream::Stdout, "x", T0))
        .unwrap_err();
    assert!(matches!(err, JournalError::NoSuchTarget { .. }), "{err}");
    assert!(j.dispatch(id + 1).unwrap().is_none());
    // The journal is still usable afterwards.
    run_steps(&j, id, "a", &[Step::Pre], StepOutcome::Ok);
}

#[test]
fn default_path_is_in_the_state_dir() {
    let path = Journal::default_path();
    assert!(
        path.ends_with("dropship/journal.sqlite"),
        "{}",
        path.display()
    );
}

/// Not a timed assertion: prints the rate so regressions are visible in the test output.
fn a_million_output_lines_are_stored_and_the_rate_is_printed(b: Backend) {
    // A million on SQLite; 200,000 on PostgreSQL, where a debug build on a loaded machine
    // needs minutes for a million (bench/journal.sh measures the million in a release build).
    let lines_for = |b: Backend| match b {
        Backend::Sqlite => 1_000_000u64,
        Backend::Postgres => 200_000,
    };
    let lines = lines_for(b);
    let (_dir, path) = temp_journal(b);
    let options = JournalOptions {
        max_lines_per_step: lines,
        ..JournalOptions::default()
    };
    let j = Journal::open_with(&path, options).unwrap();
    let id = j.begin_dispatch(&new_dispatch("h.tgz", &["web1"])).unwrap();
    j.record(&started(id, "web1", Step::Upgrade, T0)).unwrap();
    let start = Instant::now();
    for i in 0..lines {
        let event = Event::Output {
            dispatch: id,
            at: T0 + i as Millis,
            host: "web1".into(),
            step: Step::Upgrade,
            stream: Stream::Stdout,
            lines: format!("processing item {i} of {lines}: ok").into(),
        };
        j.record(&event).unwrap();
    }
    j.record(&finished(id, "web1", Step::Upgrade, StepOutcome::Ok, T0))
        .unwrap();
    let elapsed = start.elapsed();
    // Straight to stderr: libtest would capture `eprintln!` and hide the number.
    writeln!(
        std::io::stderr().lock(),
        "journal ({b:?}): {lines} output lines in {:.2}s = {:.0} lines/s ({} build)",
        elapsed.as_secs_f64(),
        lines as f64 / elapsed.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )
    .unwrap();
    let step = &j.dispatch(id).unwrap().unwrap().targets[0].steps[0];
    assert_eq!((step.lines, step.dropped_lines), (lines, 0));
    let rows = admin_sql(
        b,
        &path,
        "SELECT count(*) FROM output",
        "SELECT count(*) FROM output",
    );
    assert_eq!(rows, lines.to_string(), "no line lost");
}

fn begin_rule(j: &Journal, bundle: &str, rule: &str, hosts: &[&str]) -> i64 {
    let mut rec = new_dispatch(bundle, hosts);
    rec.rule = rule.into();
    rec.timestamp = format!("stamp-{bundle}");
    j.begin_dispatch(&rec).unwrap()
}

/// `last_good` (src/journal/last_good.rs) on both backends: failures, rollbacks, other rules
/// and other hosts are skipped; host names are bound values, not SQL.
fn last_good_skips_failures_rollbacks_other_rules_and_other_hosts(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let j = Journal::open(&path).unwrap();
    let done = |id, host: &str, result| {
        j.record(&target_done(id, host, result, T0)).unwrap();
    };
    assert_eq!(j.last_good("app", &[]).unwrap(), None);
    let one = begin_rule(&j, "app-1.tgz", "app", &["a", "b"]);
    done(one, "a", TargetResult::Succeeded);
    done(one, "b", TargetResult::Succeeded);
    let two = begin_rule(&j, "app-2.tgz", "app", &["a", "b"]);
    done(two, "a", TargetResult::Succeeded);
    done(two, "b", TargetResult::Failed);
    let three = begin_rule(&j, "app-3.tgz", "app", &["a", "b"]);
    done(three, "a", TargetResult::Failed);
    done(three, "b", TargetResult::Cancelled);
    let rb = begin_rule(&j, dropship::model::ROLLBACK_BUNDLE, "app", &["a"]);
    done(rb, "a", TargetResult::Succeeded);
    let other = begin_rule(&j, "web-9.tgz", "web", &["a"]);
    done(other, "a", TargetResult::Succeeded);

    let got = j.last_good("app", &[]).unwrap().unwrap();
    assert_eq!((got.dispatch, got.bundle.as_str()), (two, "app-2.tgz"));
    assert_eq!(got.stamp, "stamp-app-2.tgz");
    let only_b = j.last_good("app", &["b".into()]).unwrap().unwrap();
    assert_eq!(only_b.bundle, "app-1.tgz");
    let ab = j
        .last_good("app", &["b".into(), "a".into()])
        .unwrap()
        .unwrap();
    assert_eq!(ab.bundle, "app-2.tgz");
    assert_eq!(j.last_good("app", &["c".into()]).unwrap(), None);
    assert_eq!(j.last_good("nope", &[]).unwrap(), None);
    // A name with quotes or SQL syntax is a bound value, not part of the query.
    assert_eq!(j.last_good("app", &["a\"); --".into()]).unwrap(), None);
    assert_eq!(j.last_good("app", &["a'); --".into()]).unwrap(), None);
}

/// The drop folder's records (src/journal/watch.rs) on both backends: states, arrival order,
/// a reopen, "already shipped", the moved file found by `--resume`.
fn watch_records_walk_through_their_states_and_survive_a_reopen(b: Backend) {
    use dropship::journal::BundleState;
    let (_dir, path) = temp_journal(b);
    let dir = Path::new("/drop");
    let queue = Path::new("/drop/.dropship/queue");
    let j = Journal::open(&path).unwrap();
    let a = j.watch_admit(dir, "app-1.tgz", 3, 7, queue).unwrap();
    assert_eq!(a.state, BundleState::Staging);
    assert_eq!(a.staged_path, queue.join(format!("{}-app-1.tgz", a.id)));
    let second = j.watch_admit(dir, "app-2.tgz", 3, 7, queue).unwrap();
    assert!(second.id > a.id, "ids are the arrival order");
    j.watch_queued(a.id, "ab", 3, 8, Some("app")).unwrap();
    let mut rec = new_dispatch("app-1.tgz", &["h1"]);
    rec.bundle_path = a.staged_path.clone();
    let d = j.watch_begin_dispatch(a.id, &rec).unwrap();
    drop(j);

    let j = Journal::open(&path).unwrap();
    let open = j.watch_open(dir).unwrap();
    assert_eq!(
        open.iter().map(|r| (r.id, r.state)).collect::<Vec<_>>(),
        [
            (a.id, BundleState::Dispatching),
            (second.id, BundleState::Staging)
        ]
    );
    assert_eq!(open[0].dispatch, Some(d));
    assert!(
        j.watch_shipped(
            dropship::journal::ShippedFrom::Folder(dir),
            "app-1.tgz",
            "ab",
            -1
        )
        .unwrap()
        .is_none()
    );
    let done = Path::new("/drop/.dropship/done/2024-01-01/app-1.tgz");
    j.watch_finish(a.id, BundleState::Done, None, done).unwrap();
    assert_eq!(j.watch_open(dir).unwrap().len(), 2, "finished, not moved");
    j.watch_archived(a.id, done).unwrap();
    assert_eq!(j.watch_open(dir).unwrap().len(), 1);
    assert_eq!(j.dispatch(d).unwrap().unwrap().record.bundle_path, done);
    let shipped = j
        .watch_shipped(
            dropship::journal::ShippedFrom::Folder(dir),
            "app-1.tgz",
            "ab",
            -1,
        )
        .unwrap();
    assert_eq!(shipped.map(|r| r.id), Some(a.id));
    assert!(
        j.watch_shipped(
            dropship::journal::ShippedFrom::Folder(dir),
            "app-1.tgz",
            "ab",
            a.id
        )
        .unwrap()
        .is_none()
    );
    assert!(
        j.watch_shipped(
            dropship::journal::ShippedFrom::Folder(dir),
            "app-1.tgz",
            "cd",
            -1
        )
        .unwrap()
        .is_none()
    );
    assert!(
        j.watch_shipped(
            dropship::journal::ShippedFrom::Folder(Path::new("/other")),
            "app-1.tgz",
            "ab",
            -1
        )
        .unwrap()
        .is_none()
    );
    j.watch_vanished(second.id, "gone").unwrap();
    assert!(j.watch_open(dir).unwrap().is_empty());
    let all = j.watch_bundles(dir, 10).unwrap();
    assert_eq!(
        all.iter().map(|r| r.state).collect::<Vec<_>>(),
        [BundleState::Vanished, BundleState::Done]
    );
}

/// `last_shipped_per_rule` (src/journal/shipped.rs) on both backends.
fn last_shipped_per_rule_and_host(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let j = Journal::open(&path).unwrap();
    let one = begin_rule(&j, "app-1.tgz", "app", &["a", "b"]);
    j.record(&target_done(one, "a", TargetResult::Succeeded, T0 + 1))
        .unwrap();
    j.record(&target_done(one, "b", TargetResult::Succeeded, T0 + 2))
        .unwrap();
    let two = begin_rule(&j, "app-2.tgz", "app", &["a"]);
    j.record(&target_done(two, "a", TargetResult::Succeeded, T0 + 3))
        .unwrap();
    let web = begin_rule(&j, "web-1.tgz", "web", &["a"]);
    j.record(&target_done(web, "a", TargetResult::Failed, T0 + 4))
        .unwrap();
    let got: Vec<(String, String, String)> = j
        .last_shipped_per_rule()
        .unwrap()
        .into_iter()
        .map(|r| (r.rule, r.host, r.bundle))
        .collect();
    assert_eq!(
        got,
        [
            ("app".into(), "a".into(), "app-2.tgz".into()),
            ("app".into(), "b".into(), "app-1.tgz".into())
        ]
    );
}

/// The journal is opened, written and dropped from every place the session uses it: inside
/// an async task (the `postgres` client's own runtime would panic there if it ran on that
/// thread), under `block_in_place`, on `spawn_blocking`.
fn usable_from_async_tasks_blocking_threads_and_block_in_place(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let id = rt.block_on(async {
        let j = Arc::new(Journal::open(&path).unwrap());
        let id = j.begin_dispatch(&new_dispatch("rt.tgz", &["a"])).unwrap();
        j.record(&started(id, "a", Step::Pre, T0)).unwrap();
        let j2 = j.clone();
        tokio::task::spawn_blocking(move || {
            j2.record(&line(
                id,
                "a",
                Step::Pre,
                Stream::Stdout,
                "from spawn_blocking",
                T0,
            ))
            .unwrap();
            j2.flush().unwrap();
        })
        .await
        .unwrap();
        let j3 = j.clone();
        tokio::spawn(async move {
            tokio::task::block_in_place(|| {
                j3.record(&finished(id, "a", Step::Pre, StepOutcome::Ok, T0 + 1))
                    .unwrap();
            })
        })
        .await
        .unwrap();
        drop(j);
        id
    });
    let j = Journal::open(&path).unwrap();
    let out = j.output(id, "a", Step::Pre).unwrap();
    assert_eq!(out[0].line, "from spawn_blocking");
    let pre = &j.dispatch(id).unwrap().unwrap().targets[0].steps[0];
    assert_eq!(pre.outcome, Some(StepOutcome::Ok));
}

/// What a shell command prints, trimmed: the system's own answer to compare with.
fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(o.status.success(), "{cmd}: {o:?}");
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

fn who_and_where_are_recorded_and_read_back(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let j = Journal::open(&path).unwrap();
    let shipped = j.begin_dispatch(&new_dispatch("w-1.tgz", &["h1"])).unwrap();
    let ran = j
        .begin_run(
            &new_dispatch("w-run", &["h1"]),
            &RunRecord {
                kind: RunKind::Run,
                command: "uptime".into(),
                action: None,
            },
        )
        .unwrap();
    let (user, host) = (sh("id -un"), sh("uname -n"));
    let rows = j.history_rows(10).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.summary.id).collect::<Vec<_>>(),
        [ran, shipped]
    );
    for r in &rows {
        assert_eq!(r.started_by.as_deref(), Some(user.as_str()), "{r:?}");
        assert_eq!(r.started_on.as_deref(), Some(host.as_str()), "{r:?}");
        assert_eq!(r.started_by_on(), format!("{user}@{host}"));
    }
    // `--history --json` carries them as fields beside the summary's.
    let json = serde_json::to_value(&rows[1]).unwrap();
    assert_eq!(json["started_by"], user.as_str(), "{json}");
    assert_eq!(json["started_on"], host.as_str(), "{json}");
    assert_eq!(json["bundle"], "w-1.tgz", "{json}");
}

/// A journal written by a dropship of schema V3 (no who/where columns) is brought to V4 on
/// open: its rows stay, with no who/where (`-`), and new dispatches record theirs.
fn a_v3_journal_is_migrated_and_keeps_its_rows(b: Backend) {
    let (_dir, path) = temp_journal(b);
    let j = Journal::open(&path).unwrap();
    let old = j
        .begin_dispatch(&new_dispatch("v3.tgz", &["h1", "h2"]))
        .unwrap();
    j.record(&target_done(old, "h1", TargetResult::Succeeded, T0 + 1))
        .unwrap();
    j.record(&target_done(old, "h2", TargetResult::Failed, T0 + 2))
        .unwrap();
    j.record(&dispatch_done(old, T0 + 1000)).unwrap();
    drop(j);
    // Back to exactly what V3 left: the V4 (and V5) columns gone, the version 3.
    for (sqlite, postgres) in [
        (
            "DROP INDEX watch_bundle_lease",
            "DROP INDEX watch_bundle_lease",
        ),
        ("DROP INDEX watch_bundle_key", "DROP INDEX watch_bundle_key"),
        (
            "ALTER TABLE watch_bundle DROP COLUMN holder",
            "ALTER TABLE watch_bundle DROP COLUMN holder",
        ),
        (
            "ALTER TABLE watch_bundle DROP COLUMN lease_until",
            "ALTER TABLE watch_bundle DROP COLUMN lease_until",
        ),
        (
            "ALTER TABLE watch_bundle DROP COLUMN claims",
            "ALTER TABLE watch_bundle DROP COLUMN claims",
        ),
        (
            "ALTER TABLE dispatch DROP COLUMN started_by",
            "ALTER TABLE dispatch DROP COLUMN started_by",
        ),
        (
            "ALTER TABLE dispatch DROP COLUMN started_on",
            "ALTER TABLE dispatch DROP COLUMN started_on",
        ),
        (
            "PRAGMA user_version = 3",
            "UPDATE dropship_journal SET version = 3",
        ),
    ] {
        admin_sql(b, &path, sqlite, postgres);
    }
    let version = |sqlite, postgres| admin_sql(b, &path, sqlite, postgres);
    assert_eq!(
        version(
            "PRAGMA user_version",
            "SELECT version FROM dropship_journal"
        ),
        "3"
    );

    let j = Journal::open(&path).unwrap();
    assert_eq!(
        version(
            "PRAGMA user_version",
            "SELECT version FROM dropship_journal"
        ),
        dropship::journal::SCHEMA_VERSION.to_string()
    );
    let new = j.begin_dispatch(&new_dispatch("v4.tgz", &["h1"])).unwrap();
    let rows = j.history_rows(10).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.summary.id).collect::<Vec<_>>(),
        [new, old]
    );
    let before = &rows[1];
    assert_eq!(before.summary.bundle, "v3.tgz");
    assert_eq!(before.summary.state, DispatchState::Finished);
    assert_eq!(
        (
            before.summary.hosts,
            before.summary.succeeded,
            before.summary.failed
        ),
        (2, 1, 1)
    );
    assert_eq!((&before.started_by, &before.started_on), (&None, &None));
    assert_eq!(before.started_by_on(), "-");
    assert_eq!(
        rows[0].started_by_on(),
        format!("{}@{}", sh("id -un"), sh("uname -n"))
    );
}

support::backends::on_both_backends!(
    a_whole_dispatch_round_trips,
    history_is_newest_first_with_counts_and_states,
    output_is_bounded_per_step_and_the_rest_is_counted,
    batched_output_is_bounded_line_by_line,
    long_lines_are_stored_capped,
    eight_threads_write_one_dispatch_concurrently,
    two_handles_share_one_file,
    a_writer_killed_mid_step_leaves_an_interrupted_dispatch,
    resume_classifies_every_target,
    last_results_per_host,
    a_newer_schema_is_refused,
    an_older_dropship_writes_next_to_a_newer_schema_only_if_compatible,
    events_for_unknown_dispatches_or_hosts_are_errors,
    a_million_output_lines_are_stored_and_the_rate_is_printed,
    last_good_skips_failures_rollbacks_other_rules_and_other_hosts,
    watch_records_walk_through_their_states_and_survive_a_reopen,
    last_shipped_per_rule_and_host,
    usable_from_async_tasks_blocking_threads_and_block_in_place,
    who_and_where_are_recorded_and_read_back,
    a_v3_journal_is_migrated_and_keeps_its_rows,
);
