//! The live view's latency (not a timed test): run by bench/live.sh, which starts a
//! throwaway PostgreSQL on loopback and passes its URL.
//!
//! `cargo bench --bench live -- FILE URL [ROUNDS] [LINES]`: per round and backend
//! (interleaved), a follower process (the console's: `session::follow::Follower`, polling
//! every `session::follow::POLL`) and a writer process on the same journal. The writer
//! begins a dispatch and writes LINES output lines, one every 0–200 ms (pseudo-random, so
//! lines fall anywhere in the poll's period), in two ways:
//! - `commit`: each line recorded and committed at once (`Journal::flush`): latency from the
//!   commit returning in the writer to the line delivered as an event in the follower;
//! - `emit`: each line handed to a session (`Session::recording`, as the engine does: the
//!   journal writer thread buffers it, the 1 s flusher commits it): latency from the line
//!   being emitted to it being delivered, which is what a user watching sees.
//!
//! It also begins ten new dispatches between the two, and measures from `begin_dispatch`
//! returning to the follower reporting it. Prints every round's p50/p99 per backend and
//! mode, then the medians over rounds.

use dropship::journal::{Journal, NewDispatch};
use dropship::model::events::{Event, Step, now_ms};
use dropship::transport::Stream;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn record(bundle: &str) -> NewDispatch {
    NewDispatch {
        bundle: bundle.into(),
        bundle_path: "/srv/drop/app.tgz".into(),
        bundle_sha256: "ab".repeat(32),
        bundle_size: 1,
        rule: "app".into(),
        config_path: "/etc/dropship/dispatch.cfg".into(),
        timestamp: "20240101_000000".into(),
        hosts: vec!["web1".into()],
        started_at: now_ms(),
    }
}

fn line(id: i64, text: String) -> Event {
    Event::Output {
        dispatch: id,
        at: now_ms(),
        host: "web1".into(),
        step: Step::Upgrade,
        stream: Stream::Stdout,
        lines: text.into(),
    }
}

fn started(id: i64) -> Event {
    Event::StepStarted {
        dispatch: id,
        at: now_ms(),
        host: "web1".into(),
        step: Step::Upgrade,
        command: Some("./upgrade.sh".into()),
    }
}

/// 0–200 ms, pseudo-random (an LCG: no dependency, the same on every run).
fn pause(state: &mut u64) {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    std::thread::sleep(Duration::from_millis((*state >> 33) % 201));
}

fn writer(path: &Path, lines: usize) {
    let out = std::io::stdout();
    let say = |s: String| {
        let mut o = out.lock();
        writeln!(o, "{s}").unwrap();
        o.flush().unwrap();
    };
    let j = Arc::new(Journal::open(path).unwrap());
    let mut rng = 42u64;
    // 1. committed line by line.
    let id = j.begin_dispatch(&record("commit.tgz")).unwrap();
    j.record(&started(id)).unwrap();
    for i in 0..lines {
        pause(&mut rng);
        j.record(&line(id, format!("c{i}"))).unwrap();
        j.flush().unwrap();
        say(format!("W c{i} {}", now_us()));
    }
    // 2. new dispatches (the last one is written through a session below).
    let mut id = 0;
    for _ in 0..10 {
        pause(&mut rng);
        id = j.begin_dispatch(&record("emit.tgz")).unwrap();
        say(format!("W d{id} {}", now_us()));
    }
    // 3. through a session, as the engine emits.
    let session = dropship::session::Session::new(j.clone(), Some(1)).unwrap();
    let emit = session.recording(Arc::new(|_: Event| {}), None);
    emit(started(id));
    for i in 0..lines {
        pause(&mut rng);
        say(format!("W e{i} {}", now_us()));
        emit(line(id, format!("e{i}")));
    }
    std::thread::sleep(Duration::from_millis(1500));
    session.shutdown(Duration::from_secs(2));
}

fn follower(path: &Path) {
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let o = out.clone();
    let _f = dropship::session::follow::Follower::start(
        path,
        dropship::session::follow::POLL,
        move |u| {
            let t = now_us();
            let mut o = o.lock().unwrap();
            for s in &u.started {
                writeln!(o, "R d{} {t}", s.id).unwrap();
            }
            for e in &u.events {
                if let Event::Output { lines, .. } = e {
                    for line in lines.iter() {
                        writeln!(o, "R {line} {t}").unwrap();
                    }
                }
            }
            o.flush().unwrap();
            true
        },
    )
    .unwrap();
    // Until the bench kills it.
    std::thread::sleep(Duration::from_secs(3600));
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One round on one journal: latencies in ms by mode (`commit`, `emit`, `dispatch`).
fn round(path: &str, lines: usize) -> HashMap<&'static str, Vec<f64>> {
    let exe = std::env::current_exe().unwrap();
    let mut f = Command::new(&exe)
        .args(["follower", path])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let fout = f.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(fout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    // The follower's first poll takes position before anything is written.
    std::thread::sleep(Duration::from_secs(2));
    let w = Command::new(&exe)
        .args(["writer", path, &lines.to_string()])
        .output()
        .unwrap();
    assert!(w.status.success(), "writer failed");
    std::thread::sleep(Duration::from_secs(2));
    f.kill().unwrap();
    f.wait().unwrap();
    let got = reader.join().unwrap();
    let parse = |l: &str| {
        let mut p = l.split(' ');
        let (_, key, t) = (p.next()?, p.next()?, p.next()?);
        Some((key.to_owned(), t.parse::<i64>().ok()?))
    };
    let wrote: HashMap<String, i64> = String::from_utf8_lossy(&w.stdout)
        .lines()
        .filter(|l| l.starts_with("W "))
        .filter_map(parse)
        .collect();
    let mut out: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let mut seen = 0;
    for (key, t) in got
        .iter()
        .filter(|l| l.starts_with("R "))
        .filter_map(|l| parse(l))
    {
        let Some(w) = wrote.get(&key) else {
            continue; // the first dispatch: begun before its time was printed
        };
        seen += 1;
        let mode = match key.as_bytes()[0] {
            b'c' => "commit",
            b'e' => "emit",
            _ => "dispatch",
        };
        out.entry(mode).or_default().push((t - w) as f64 / 1000.0);
    }
    assert_eq!(seen, wrote.len(), "every line and dispatch delivered once");
    out
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("writer") => return writer(Path::new(&args[1]), args[2].parse().unwrap()),
        Some("follower") => return follower(Path::new(&args[1])),
        _ => {}
    }
    // Without arguments (as `cargo test --all-targets` runs it) this is a smoke run: one
    // round on a temporary SQLite journal with a few lines, so the bench stays compiled and
    // working; bench/live.sh passes FILE and the PostgreSQL URL for the real comparison.
    if args.is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let res = round(&tmp.path().join("latency.sqlite").display().to_string(), 10);
        for mode in ["commit", "dispatch", "emit"] {
            let n = res.get(mode).map_or(0, Vec::len);
            assert!(n > 0, "smoke run: no {mode} measurement came back");
            println!("smoke sqlite {mode:<8} n={n}");
        }
        println!("(smoke run: bench/live.sh runs the comparison)");
        return;
    }
    let [file, url, ..] = &args[..] else {
        eprintln!("usage: cargo bench --bench live -- FILE URL [ROUNDS] [LINES]");
        std::process::exit(2);
    };
    let rounds: usize = args.get(2).map_or(3, |r| r.parse().unwrap());
    let lines: usize = args.get(3).map_or(150, |r| r.parse().unwrap());
    println!(
        "live view latency: poll every {} ms, {lines} lines per mode, {rounds} rounds",
        dropship::session::follow::POLL.as_millis()
    );
    let mut all: HashMap<(&str, &str), Vec<(f64, f64)>> = HashMap::new();
    for r in 1..=rounds {
        for (backend, base) in [("sqlite", file.as_str()), ("postgres", url.as_str())] {
            let path = if backend == "sqlite" {
                format!("{base}.{r}")
            } else {
                base.to_owned()
            };
            let res = round(&path, lines);
            for mode in ["commit", "dispatch", "emit"] {
                let mut v = res.get(mode).cloned().unwrap_or_default();
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let (p50, p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
                println!(
                    "round {r} {backend:<8} {mode:<8} n={:<4} p50 {p50:7.1} ms  p99 {p99:7.1} ms  max {:7.1} ms",
                    v.len(),
                    v.last().copied().unwrap_or(f64::NAN)
                );
                all.entry((backend, mode)).or_default().push((p50, p99));
            }
        }
    }
    println!("\nmedians over {rounds} rounds:");
    for backend in ["sqlite", "postgres"] {
        for mode in ["commit", "dispatch", "emit"] {
            let v = &all[&(backend, mode)];
            let mut p50: Vec<f64> = v.iter().map(|x| x.0).collect();
            let mut p99: Vec<f64> = v.iter().map(|x| x.1).collect();
            p50.sort_by(|a, b| a.partial_cmp(b).unwrap());
            p99.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "{backend:<8} {mode:<8} p50 {:7.1} ms  p99 {:7.1} ms",
                percentile(&p50, 0.5),
                percentile(&p99, 0.5)
            );
        }
    }
}
