//! The journal's own cost, SQLite next to PostgreSQL (not a timed test): run by
//! bench/journal.sh, which starts a throwaway PostgreSQL on loopback and passes its URL.
//!
//! `cargo bench --bench journal -- URL [ROUNDS]` prints, per round and backend (interleaved):
//! - the wall time of recording one 10-host dispatch the way the engine does (begin, per host
//!   connect/lock/upload (verified)/pre/upgrade/post/unlock started+finished, 20 output lines,
//!   target finished; dispatch finished), as the mean over 50 dispatches;
//! - the wall time of recording 1,000,000 output lines of one step (the per-step bound raised
//!   so every line is stored), including the final commit.
//!
//! Then the medians, and the ratio PostgreSQL / SQLite.

use dropship::journal::{Journal, JournalOptions, NewDispatch};
use dropship::model::events::{Event, Step, StepOutcome, TargetResult, now_ms};
use dropship::transport::{Stream, TransferEvent};
use std::path::{Path, PathBuf};
use std::time::Instant;

const STEPS: [Step; 7] = [
    Step::Connect,
    Step::Lock,
    Step::Upload,
    Step::Pre,
    Step::Upgrade,
    Step::Post,
    Step::Unlock,
];

fn record(hosts: usize) -> NewDispatch {
    NewDispatch {
        bundle: "app-1.0.tgz".into(),
        bundle_path: "/srv/drop/app-1.0.tgz".into(),
        bundle_sha256: "ab".repeat(32),
        bundle_size: 1 << 20,
        rule: "app".into(),
        config_path: "/etc/dropship/dispatch.cfg".into(),
        timestamp: "20240101_000000".into(),
        hosts: (0..hosts).map(|h| format!("web{h}")).collect(),
        started_at: now_ms(),
    }
}

/// One dispatch of `hosts` hosts, event by event.
fn one_dispatch(j: &Journal, hosts: usize) {
    let id = j.begin_dispatch(&record(hosts)).unwrap();
    for h in 0..hosts {
        let host = format!("web{h}");
        for step in STEPS {
            let at = now_ms();
            j.record(&Event::StepStarted {
                dispatch: id,
                at,
                host: host.clone(),
                step,
                command: None,
            })
            .unwrap();
            if step == Step::Upload {
                j.record(&Event::Transfer {
                    dispatch: id,
                    at,
                    host: host.clone(),
                    transfer: TransferEvent::Verified {
                        size: 1 << 20,
                        sha256: Some("ab".repeat(32)),
                        by: dropship::transport::VerifiedBy::Sha256,
                    },
                })
                .unwrap();
            }
            if step == Step::Upgrade {
                for i in 0..20 {
                    j.record(&Event::Output {
                        dispatch: id,
                        at,
                        host: host.clone(),
                        step,
                        stream: Stream::Stdout,
                        lines: format!("upgrade line {i}").into(),
                    })
                    .unwrap();
                }
            }
            j.record(&Event::StepFinished {
                dispatch: id,
                at,
                host: host.clone(),
                step,
                outcome: StepOutcome::Ok,
                exit_code: Some(0),
                error: None,
                duration_ms: 1,
            })
            .unwrap();
        }
        j.record(&Event::TargetFinished {
            dispatch: id,
            at: now_ms(),
            host,
            result: TargetResult::Succeeded,
            failed_step: None,
            error: None,
            duration_ms: 1,
        })
        .unwrap();
    }
    j.record(&Event::DispatchFinished {
        dispatch: id,
        at: now_ms(),
        succeeded: hosts,
        failed: 0,
        skipped: 0,
        cancelled: 0,
        duration_ms: 1,
    })
    .unwrap();
}

fn million_lines(j: &Journal, lines: u64) {
    let id = j.begin_dispatch(&record(1)).unwrap();
    let host = "web0".to_string();
    j.record(&Event::StepStarted {
        dispatch: id,
        at: now_ms(),
        host: host.clone(),
        step: Step::Upgrade,
        command: None,
    })
    .unwrap();
    for i in 0..lines {
        j.record(&Event::Output {
            dispatch: id,
            at: 1_700_000_000_000 + i as i64,
            host: host.clone(),
            step: Step::Upgrade,
            stream: Stream::Stdout,
            lines: format!("processing item {i} of 1000000: ok").into(),
        })
        .unwrap();
    }
    j.flush().unwrap();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    // Without a URL (as `cargo test --all-targets` runs it) this is a smoke run: SQLite only,
    // one round, 10,000 lines, so the bench stays compiled and working; bench/journal.sh
    // passes the PostgreSQL URL for the real comparison.
    let url = args.first().cloned();
    let rounds: usize = match &url {
        Some(_) => args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3),
        None => 1,
    };
    let lines: u64 = if url.is_some() { 1_000_000 } else { 10_000 };
    let tmp = tempfile::tempdir().unwrap();
    let options = JournalOptions {
        max_lines_per_step: 1_000_000,
        ..JournalOptions::default()
    };
    let mut backends: Vec<(&str, PathBuf)> = vec![("sqlite", tmp.path().join("journal.sqlite"))];
    if let Some(url) = &url {
        backends.push(("postgres", PathBuf::from(url)));
    }
    let mut per_dispatch = [Vec::new(), Vec::new()];
    let mut per_million = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (b, (name, path)) in backends.iter().enumerate() {
            let j = Journal::open_with(Path::new(path), options).unwrap();
            let start = Instant::now();
            for _ in 0..50 {
                one_dispatch(&j, 10);
            }
            let d = start.elapsed().as_secs_f64() * 1000.0 / 50.0;
            let start = Instant::now();
            million_lines(&j, lines);
            let m = start.elapsed().as_secs_f64();
            println!(
                "round {round} {name:8} one 10-host dispatch {d:8.1} ms   {lines} lines {m:6.2} s"
            );
            per_dispatch[b].push(d);
            per_million[b].push(m);
        }
    }
    if url.is_none() {
        println!("(smoke run: no PostgreSQL URL given; bench/journal.sh runs the comparison)");
        return;
    }
    let (ds, dp) = (median(&mut per_dispatch[0]), median(&mut per_dispatch[1]));
    let (ms, mp) = (median(&mut per_million[0]), median(&mut per_million[1]));
    println!("median   sqlite   one 10-host dispatch {ds:8.1} ms   1,000,000 lines {ms:6.2} s");
    println!("median   postgres one 10-host dispatch {dp:8.1} ms   1,000,000 lines {mp:6.2} s");
    println!(
        "ratio postgres/sqlite: dispatch {:.2}x, lines {:.2}x",
        dp / ds,
        mp / ms
    );
}
