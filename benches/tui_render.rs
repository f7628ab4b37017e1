//! Frame time of the console with 1,000 hosts and a 100,000-line log pane (goal: under
//! 2 ms a frame). Not a timed test: `cargo bench --bench tui_render` prints the numbers for
//! BENCHMARKS.md.
//!
//! Each frame is a full `Terminal::draw` on a `TestBackend` (layout, every visible widget,
//! the buffer diff), which is what the console does per frame minus writing the changed
//! cells to the tty.

use crossterm::event::KeyCode;
use dropship::config::Config;
use dropship::engine::events::{Event, Step};
use dropship::transport::Stream;
use dropship::ui::tui::app::{App, AppEnv, Focus};
use dropship::ui::tui::render;
use dropship::ui::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::path::Path;
use std::time::{Duration, Instant};

const HOSTS: usize = 1_000;
const LINES: usize = 100_000;
const FRAMES: usize = 2_000;

fn app() -> App {
    let hosts: Vec<String> = (0..HOSTS)
        .map(|i| format!("host{i:04}.example.com"))
        .collect();
    let cfg = format!(
        "[app-(?P<version>[0-9.]+)\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = deploy\nupgrade = ~/bin/upgrade {{path}}\n",
        hosts.join(", ")
    );
    let config = Config::parse(&cfg, Path::new("dispatch.cfg")).expect("bench config");
    let mut env = AppEnv::new(config);
    env.ring_capacity = LINES;
    let mut app = App::new(env, Theme::builtin_default());
    app.on_event(&Event::DispatchStarted {
        dispatch: 1,
        at: 0,
        bundle: "app-1.0.tgz".into(),
        rule: "app".into(),
        hosts: hosts.clone(),
    });
    for h in &hosts {
        app.on_event(&Event::StepStarted {
            dispatch: 1,
            at: 0,
            host: h.clone(),
            step: Step::Upgrade,
            command: None,
        });
    }
    for i in 0..LINES {
        app.on_event(&Event::Output {
            dispatch: 1,
            at: i as i64,
            host: hosts[0].clone(),
            step: Step::Upgrade,
            stream: if i % 10 == 0 {
                Stream::Stderr
            } else {
                Stream::Stdout
            },
            lines: format!(
                "{i:06} upgrade: unpacking lib/module-{}.so into releases/1.0 ({} bytes)",
                i % 977,
                i * 31
            )
            .into(),
        });
    }
    app
}

/// CPU time of this thread: unlike wall time, not inflated when other processes take the
/// cores (benchmarks here share a loaded 2-core machine).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; the clock id is valid.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn measure(name: &str, app: &mut App, w: u16, h: u16, mut between: impl FnMut(&mut App)) {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("backend");
    for _ in 0..50 {
        t.draw(|f| render::draw(f, app)).expect("draw");
    }
    let mut times = Vec::with_capacity(FRAMES);
    let mut cpu = Duration::ZERO;
    for _ in 0..FRAMES {
        between(app);
        let (s, c) = (Instant::now(), thread_cpu());
        t.draw(|f| render::draw(f, app)).expect("draw");
        times.push(s.elapsed());
        cpu += thread_cpu().saturating_sub(c);
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / FRAMES as u32;
    let p = |q: f64| times[((FRAMES as f64 * q) as usize).min(FRAMES - 1)];
    println!(
        "{name:<44} {w:>3}x{h:<3} cpu {:>6.3} ms  wall: mean {:>6.3} ms  p50 {:>6.3} ms  p99 {:>6.3} ms",
        (cpu / FRAMES as u32).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3
    );
}

/// How many output events a second the UI thread can take in (100 hosts, round robin):
/// what it can absorb before lines are shed, when it gets a whole core.
fn event_rate() {
    let hosts: Vec<String> = (0..100)
        .map(|i| format!("host{i:04}.example.com"))
        .collect();
    let cfg = format!(
        "[app-.*\\.tgz]\nhost = {}\nprotocol = sftp\n",
        hosts.join(", ")
    );
    let config = Config::parse(&cfg, Path::new("dispatch.cfg")).expect("bench config");
    let mut app = App::new(AppEnv::new(config), Theme::builtin_default());
    app.on_event(&Event::DispatchStarted {
        dispatch: 1,
        at: 0,
        bundle: "app-1.0.tgz".into(),
        rule: "app".into(),
        hosts: hosts.clone(),
    });
    let n = 2_000_000;
    let events: Vec<Event> = (0..n)
        .map(|i| Event::Output {
            dispatch: 1,
            at: i as i64,
            host: hosts[i % 100].clone(),
            step: Step::Upgrade,
            stream: Stream::Stdout,
            lines: format!("{i:08}").into(),
        })
        .collect();
    let (s, c) = (Instant::now(), thread_cpu());
    for e in &events {
        app.on_event(e);
    }
    let cpu = thread_cpu().saturating_sub(c);
    println!(
        "engine events into the app: {n} output lines over 100 hosts in {:.3} s CPU ({:.3} s wall): {:.2} M lines/s per core",
        cpu.as_secs_f64(),
        s.elapsed().as_secs_f64(),
        n as f64 / cpu.as_secs_f64() / 1e6
    );
}

/// 100 hosts with 2,000 lines each, arriving round robin, every fifth one coloured with a
/// tab (`\e[32mOK\e[0m\t...`): the many-host views (all hosts, split, diff) and the cost of
/// cooking remote colours on the way in.
fn many_hosts() -> App {
    let hosts: Vec<String> = (0..100)
        .map(|i| format!("host{i:04}.example.com"))
        .collect();
    let cfg = format!(
        "[app-.*\\.tgz]\nhost = {}\nprotocol = sftp\n",
        hosts.join(", ")
    );
    let config = Config::parse(&cfg, Path::new("dispatch.cfg")).expect("bench config");
    let mut app = App::new(AppEnv::new(config), Theme::builtin_default());
    app.on_event(&Event::DispatchStarted {
        dispatch: 1,
        at: 0,
        bundle: "app-1.0.tgz".into(),
        rule: "app".into(),
        hosts: hosts.clone(),
    });
    let n = 200_000;
    let events: Vec<Event> = (0..n)
        .map(|i| Event::Output {
            dispatch: 1,
            at: i as i64,
            host: hosts[i % 100].clone(),
            step: Step::Upgrade,
            stream: Stream::Stdout,
            lines: if i % 5 == 0 {
                format!("\u{1b}[32mOK\u{1b}[0m\tstep {} of 400", i / 100 % 400)
            } else {
                format!(
                    "step {} of 400: unpacking lib/module-{}.so",
                    i / 100 % 400,
                    i % 977
                )
            }
            .into(),
        })
        .collect();
    let (s, c) = (Instant::now(), thread_cpu());
    for e in &events {
        app.on_event(e);
    }
    let cpu = thread_cpu().saturating_sub(c);
    println!(
        "engine events into the app, 1 in 5 coloured: {n} lines over 100 hosts in {:.3} s CPU ({:.3} s wall): {:.2} M lines/s per core",
        cpu.as_secs_f64(),
        s.elapsed().as_secs_f64(),
        n as f64 / cpu.as_secs_f64() / 1e6
    );
    app
}

/// Frame times of the log pane's views over [`many_hosts`].
fn many_host_views() {
    let mut app = many_hosts();
    app.focus = Focus::Log;
    let (w, h) = (160, 48);
    println!("\n100 hosts x 2,000 lines (1 in 5 coloured), {FRAMES} frames each\n");
    measure("one host's log, following", &mut app, w, h, |_| {});
    app.key(KeyCode::Char('A'));
    measure("all hosts, following", &mut app, w, h, |_| {});
    let mut n = 0usize;
    measure("all hosts, a new line every frame", &mut app, w, h, |a| {
        n += 1;
        a.on_event(&Event::Output {
            dispatch: 1,
            at: 1_000_000 + n as i64,
            host: format!("host{:04}.example.com", n % 100),
            step: Step::Upgrade,
            stream: Stream::Stdout,
            lines: format!("\u{1b}[31mnew\u{1b}[0m line {n}").into(),
        });
    });
    app.key(KeyCode::Char('/'));
    app.type_str("module-12");
    app.key(KeyCode::Enter);
    measure("all hosts, text filter", &mut app, w, h, |_| {});
    app.key(KeyCode::Esc);
    app.key(KeyCode::Char('S'));
    app.key(KeyCode::Char('+'));
    measure("split, 4 hosts", &mut app, w, h, |_| {});
    app.key(KeyCode::Char('D'));
    let (s, c) = (Instant::now(), thread_cpu());
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("backend");
    t.draw(|f| render::draw(f, &app)).expect("draw");
    println!(
        "{:<44} {w:>3}x{h:<3} cpu {:>6.3} ms  wall {:>6.3} ms (first frame: the diff itself)",
        "diff against the majority",
        thread_cpu().saturating_sub(c).as_secs_f64() * 1e3,
        s.elapsed().as_secs_f64() * 1e3
    );
    measure("diff, drawn again (cached)", &mut app, w, h, |_| {});
}

fn main() {
    // `cargo test --all-targets` runs bench targets too (without `--bench`): there, render
    // each screen once as a smoke test instead of measuring.
    if !std::env::args().any(|a| a == "--bench") {
        let app = app();
        let mut t = Terminal::new(TestBackend::new(120, 40)).expect("backend");
        t.draw(|f| render::draw(f, &app)).expect("draw");
        return;
    }
    event_rate();
    many_host_views();
    println!();
    let mut app = app();
    println!("{HOSTS} hosts, {LINES}-line log on the selected host, {FRAMES} frames each\n");
    for (w, h) in [(120, 40), (200, 60)] {
        app.focus = Focus::Log;
        measure("log following", &mut app, w, h, |_| {});
        let mut n = 0u64;
        measure(
            "log following, a new line every frame",
            &mut app,
            w,
            h,
            |a| {
                n += 1;
                a.on_event(&Event::Output {
                    dispatch: 1,
                    at: 0,
                    host: "host0000.example.com".into(),
                    step: Step::Upgrade,
                    stream: Stream::Stdout,
                    lines: format!("new line {n}").into(),
                });
            },
        );
        app.key(KeyCode::Char('g'));
        for _ in 0..500 {
            app.key(KeyCode::PageDown);
        }
        app.key(KeyCode::Char('w'));
        app.key(KeyCode::Char('t'));
        app.key(KeyCode::Char('/'));
        app.type_str("module-12");
        app.key(KeyCode::Enter);
        measure(
            "log scrolled mid-way, wrap + time + search",
            &mut app,
            w,
            h,
            |_| {},
        );
        app.key(KeyCode::Char('w'));
        app.key(KeyCode::Char('t'));
        app.key(KeyCode::End);
        app.focus = Focus::Hosts;
        for _ in 0..500 {
            app.key(KeyCode::Char('j'));
        }
        measure("hosts list scrolled to host 500", &mut app, w, h, |_| {});
        app.focus = Focus::Targets;
        app.key(KeyCode::Char('G'));
        measure("targets list (1,000) at the end", &mut app, w, h, |a| {
            a.key(KeyCode::Char('k'));
            a.key(KeyCode::Char('j'));
        });
        app.key(KeyCode::Char('g'));
        println!();
    }
}
