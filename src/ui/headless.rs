//! The headless front end of `--dispatch`: live progress and output for a terminal, plain
//! `[host] line` output for logs and pipes, or one JSON event per line for programs.

use super::term_text::field;
use crate::engine::events::{Event, Level, Lines, Step, StepOutcome, TargetResult};
use crate::engine::rollout::Summary;
use crate::journal::BundleState;
use crate::transport::{Stream, TransferEvent};
use crate::watch::WatchEvent;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Progress bars per host, log lines above them.
    Terminal,
    /// `[host] line`; remote stderr goes to our stderr.
    Plain,
    /// One JSON event per line on stdout.
    Json,
}

pub struct Printer {
    mode: Mode,
    bars: Option<MultiProgress>,
    bar: HashMap<String, ProgressBar>,
    width: usize,
    /// Buffered: a command printing a million lines must not cost a million writes. The
    /// caller flushes whenever it has no more events at hand.
    out: std::io::BufWriter<std::io::Stdout>,
    err: std::io::BufWriter<std::io::Stderr>,
    /// Remote colours reach stdout / stderr only when it is a terminal; a pipe or a file
    /// gets plain text (the journal and --json keep the raw line either way).
    colour_out: bool,
    colour_err: bool,
    /// The tagged lines of one output event, written to `out` or `err` at once.
    scratch: Vec<u8>,
}

/// An output line in `--json`: the shape of [`Event::Output`] with one `line` (the event
/// carries the lines of a read; a reader of `--json` gets one object per line).
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    event: &'static str,
    dispatch: i64,
    at: i64,
    host: &'a str,
    step: Step,
    stream: Stream,
    line: &'a str,
}

/// Whether `line` is printable ASCII only (most output): what [`super::ansi::plain`]
/// answers for it, byte by byte instead of char by char.
fn printable_ascii(line: &str) -> bool {
    line.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl Printer {
    pub fn new(mode: Mode) -> Printer {
        let bars = (mode == Mode::Terminal)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        Printer {
            mode,
            bars,
            bar: HashMap::new(),
            width: 0,
            out: std::io::BufWriter::with_capacity(64 << 10, std::io::stdout()),
            err: std::io::BufWriter::with_capacity(16 << 10, std::io::stderr()),
            colour_out: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            colour_err: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            scratch: Vec::new(),
        }
    }

    /// Whether remote colours may go where a line for `to_stderr` goes: the progress bars'
    /// terminal (stderr), or stdout / stderr when each is a terminal.
    fn colour(&self, to_stderr: bool) -> bool {
        match self.mode {
            Mode::Json => false,
            Mode::Terminal => self.colour_err,
            Mode::Plain if to_stderr => self.colour_err,
            Mode::Plain => self.colour_out,
        }
    }

    /// Writes a line of remote output, cooked by [`super::ansi::cook`]: its text holds
    /// no control character (tabs aside, in a pipe) and its only escapes are the SGR
    /// sequences we render ourselves, so it bypasses [`super::term_text::text`].
    ///
    /// A progress state (a CR-ended line, see [`crate::transport::lines`]) is not a line
    /// here: on a terminal it shows live in the host's progress bar, which the next state
    /// overwrites as a terminal would; in a pipe or a file it is dropped, so the log holds
    /// only the state the line ended in (`copy 100%`), not one line per redraw (a progress
    /// meter may redraw a million times). The transport guarantees a later line of the same
    /// stream follows it, so the final state is always printed. `--json` and the journal
    /// keep every state, raw.
    ///
    /// An event carries the lines of one read: the host's tag is made once for all of them,
    /// and a line of plain printable text (most output) is written as it is, uncooked and
    /// uncopied, into the buffer.
    fn output_lines(&mut self, to_stderr: bool, host: &str, lines: &Lines) {
        let tag = self.tag(host);
        let colour = self.colour(to_stderr);
        let tabs = if colour {
            super::ansi::Tabs::Expand
        } else {
            super::ansi::Tabs::Keep
        };
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        for line in lines.iter() {
            if crate::transport::lines::is_cr_ended(line) {
                if self.bars.is_some() {
                    let state = super::ansi::cook(line, super::ansi::Tabs::Expand).text;
                    let state: String = state.trim().chars().take(60).collect();
                    self.set_bar(host, state);
                }
                continue;
            }
            if let Some(mp) = &self.bars {
                let cooked = super::ansi::cook(line, tabs);
                let body = if colour { cooked.to_sgr() } else { cooked.text };
                let _ = mp.println(format!("{tag} {body}"));
                continue;
            }
            text.extend_from_slice(tag.as_bytes());
            text.push(b' ');
            if printable_ascii(line) || super::ansi::plain(line) {
                text.extend_from_slice(line.as_bytes());
            } else {
                let cooked = super::ansi::cook(line, tabs);
                if colour {
                    text.extend_from_slice(cooked.to_sgr().as_bytes());
                } else {
                    text.extend_from_slice(cooked.text.as_bytes());
                }
            }
            text.push(b'\n');
        }
        let out: &mut dyn Write = if to_stderr {
            &mut self.err
        } else {
            &mut self.out
        };
        let _ = out.write_all(&text);
        // Kept for the next event, unless one huge batch made it big.
        if text.capacity() <= 256 << 10 {
            self.scratch = text;
        }
    }

    /// Writes out what is buffered. An error means stdout is gone (a closed pipe).
    pub fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.err.flush();
        self.out.flush()
    }

    /// Writes a line for the user: above the bars on a terminal, else to stdout/stderr.
    /// Every line passes [`super::term_text::text`] here, whatever it quotes (names are
    /// made inert before, as fields, so they cannot forge a line either).
    fn line(&mut self, to_stderr: bool, text: &str) {
        let text = super::term_text::text(text);
        match &self.bars {
            Some(mp) => {
                let _ = mp.println(text);
            }
            None if to_stderr => {
                let _ = writeln!(self.err, "{text}");
            }
            None => {
                let _ = writeln!(self.out, "{text}");
            }
        }
    }

    fn tag(&self, host: &str) -> String {
        format!("[{:<w$}]", field(host), w = self.width)
    }

    fn set_bar(&mut self, host: &str, msg: String) {
        if let Some(b) = self.bar.get(host) {
            b.set_message(msg);
        }
    }

    /// One JSON object per line; see [`super::term_text::json`].
    fn json(&mut self, e: &impl serde::Serialize) -> std::io::Result<()> {
        let text = serde_json::to_string(e)?;
        self.out
            .write_all(super::term_text::json(&text).as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// Renders one event. Returns an error only when stdout is gone (a closed pipe).
    pub fn handle(&mut self, e: &Event) -> std::io::Result<()> {
        if self.mode == Mode::Json {
            if let Event::Output {
                dispatch,
                at,
                host,
                step,
                stream,
                lines,
            } = e
            {
                // One object per line, as ever: the batching is ours, not the reader's.
                for line in lines.iter() {
                    self.json(&JsonLine {
                        event: "output",
                        dispatch: *dispatch,
                        at: *at,
                        host,
                        step: *step,
                        stream: *stream,
                        line,
                    })?;
                }
                return Ok(());
            }
            return self.json(e);
        }
        match e {
            Event::DispatchStarted {
                dispatch,
                bundle,
                rule,
                hosts,
                ..
            } => {
                self.width = hosts
                    .iter()
                    .map(|h| field(h).chars().count())
                    .max()
                    .unwrap_or(0);
                self.line(
                    false,
                    &format!(
                        "dispatch #{dispatch}: {} via [{}] to {} host(s)",
                        field(bundle),
                        field(rule),
                        hosts.len()
                    ),
                );
                if let Some(mp) = &self.bars {
                    let style = ProgressStyle::with_template(
                        "{prefix} {bar:24} {bytes:>10}/{total_bytes:<10} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    for h in hosts {
                        let b = mp.add(ProgressBar::no_length());
                        b.set_style(style.clone());
                        b.set_prefix(self.tag(h));
                        b.set_message("queued");
                        self.bar.insert(h.clone(), b);
                    }
                }
            }
            Event::StepStarted {
                host,
                step,
                command,
                ..
            } => {
                self.set_bar(host, format!("{step}…"));
                if *step != Step::Connect && *step != Step::Unlock {
                    let cmd = command
                        .as_deref()
                        .map(|c| format!(": {}", field(c)))
                        .unwrap_or_default();
                    self.line(false, &format!("{} ==> {step}{cmd}", self.tag(host)));
                }
            }
            Event::Output {
                host,
                stream,
                lines,
                ..
            } => self.output_lines(*stream == Stream::Stderr, host, lines),
            Event::Transfer { host, transfer, .. } => self.transfer(host, transfer),
            Event::StepFinished {
                host,
                step,
                outcome,
                exit_code,
                error,
                duration_ms,
                ..
            } => {
                if *outcome != StepOutcome::Ok {
                    let why = error.as_deref().unwrap_or("");
                    self.line(
                        true,
                        &format!("{} !! {step} {outcome:?}: {why}", self.tag(host)),
                    );
                }
                // Every step ends with its result, as in the console's log.
                if *step != Step::Connect && *step != Step::Unlock {
                    let line = super::step_line::step_result(
                        *step,
                        *outcome,
                        *exit_code,
                        error.as_deref(),
                        *duration_ms,
                    );
                    let line = line.replacen("── ", "<== ", 1);
                    self.line(false, &format!("{} {line}", self.tag(host)));
                }
            }
            Event::TargetFinished {
                host,
                result,
                failed_step,
                duration_ms,
                ..
            } => {
                let text = match (result, failed_step) {
                    (TargetResult::Succeeded, _) => format!("succeeded in {}", secs(*duration_ms)),
                    (r, Some(s)) => format!("{} at {s}", r.as_str()),
                    (r, None) => r.as_str().to_owned(),
                };
                if let Some(b) = self.bar.get(host) {
                    b.finish_with_message(text.clone());
                }
                self.line(false, &format!("{} {text}", self.tag(host)));
            }
            Event::Notice {
                host,
                level,
                message,
                ..
            } => {
                let who = host.as_deref().map(|h| self.tag(h)).unwrap_or_default();
                let lvl = match level {
                    Level::Info => "note",
                    Level::Warning => "warning",
                };
                self.line(*level == Level::Warning, &format!("{who} {lvl}: {message}"));
            }
            // Only `--json` shows it: the text output names the digest where a host verified it.
            Event::BundleHashed { .. } => {}
            Event::DispatchFinished { .. } => {
                if let Some(mp) = &self.bars {
                    let _ = mp.clear();
                }
                self.bar.clear();
            }
        }
        Ok(())
    }

    /// Renders one event of `--watch` (one JSON object per line with `--json`, like
    /// dispatch events; their `event` names never clash).
    pub fn handle_watch(&mut self, e: &WatchEvent) -> std::io::Result<()> {
        if self.mode == Mode::Json {
            return self.json(e);
        }
        let (to_stderr, text) = match e {
            WatchEvent::WatchStarted {
                dir,
                settle_ms,
                marker,
                max_dispatches,
                queue_limit,
                fs_events,
                recovered,
                ..
            } => {
                let how = if *fs_events {
                    "file events + rescans"
                } else {
                    "rescans only"
                };
                let marker = marker
                    .as_deref()
                    .map(|m| format!(", marker .{m}"))
                    .unwrap_or_default();
                let recovered = if *recovered > 0 {
                    format!("; {recovered} bundle(s) picked up from the last run")
                } else {
                    String::new()
                };
                (
                    false,
                    format!(
                        "watching {} ({how}, settle {}{marker}, {max_dispatches} dispatch(es) at once, queue {queue_limit}){recovered}",
                        field(&dir.display().to_string()),
                        secs(*settle_ms as i64)
                    ),
                )
            }
            WatchEvent::BundleSeen { name, size, .. } => (
                false,
                format!("watch: {} seen ({})", field(name), human_bytes(*size)),
            ),
            WatchEvent::BundleGone { name, .. } => (
                false,
                format!(
                    "watch: {} left the folder before it was complete: not taken",
                    field(name)
                ),
            ),
            WatchEvent::BundleWriting { name, size, .. } => (
                false,
                format!(
                    "watch: {} still being written ({}): not shipped yet",
                    field(name),
                    human_bytes(*size)
                ),
            ),
            WatchEvent::BundleAwaitingMarker { name, marker, .. } => (
                false,
                format!("watch: {} waits for {}", field(name), field(marker)),
            ),
            WatchEvent::BundleQueued {
                bundle,
                name,
                rule,
                hosts,
                ..
            } => (
                false,
                match rule {
                    Some(r) => format!(
                        "watch: {} queued as bundle {bundle} for [{}] ({} host(s))",
                        field(name),
                        field(r),
                        hosts.len()
                    ),
                    None => format!("watch: {} recorded as bundle {bundle}", field(name)),
                },
            ),
            WatchEvent::BundleDispatching {
                name,
                dispatch,
                resumed,
                ..
            } => (
                false,
                format!(
                    "watch: {} {} dispatch #{dispatch}",
                    field(name),
                    if *resumed { "resumes" } else { "starts" }
                ),
            ),
            WatchEvent::BundleFinished {
                name,
                state,
                moved_to,
                reason,
                ..
            } => {
                let to = moved_to
                    .as_ref()
                    .map(|p| format!(" -> {}", field(&p.display().to_string())))
                    .unwrap_or_default();
                let why = reason
                    .as_deref()
                    .and_then(|r| r.lines().next())
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                let bad = matches!(state, BundleState::Failed | BundleState::Unmatched);
                (bad, format!("watch: {} {state}{to}{why}", field(name)))
            }
            WatchEvent::BundleSuspended { name, dispatch, .. } => (
                true,
                format!(
                    "watch: {}: dispatch #{dispatch} cancelled; it goes on at the next start",
                    field(name)
                ),
            ),
            WatchEvent::QueueFull {
                limit,
                waiting_in_folder,
                ..
            } => (
                true,
                format!(
                    "watch: queue full ({limit} bundles): {waiting_in_folder} file(s) wait in the folder"
                ),
            ),
            WatchEvent::Paused { .. } => (false, "watch: paused".to_owned()),
            WatchEvent::Resumed { .. } => (false, "watch: resumed".to_owned()),
            WatchEvent::WatchError { message, .. } => (true, format!("watch: error: {message}")),
            WatchEvent::WatchStopped {
                queued, in_flight, ..
            } => (
                false,
                format!(
                    "watch: stopped ({queued} queued, {in_flight} in flight, resumed at the next start)"
                ),
            ),
        };
        self.line(to_stderr, &text);
        Ok(())
    }

    fn transfer(&mut self, host: &str, t: &TransferEvent) {
        match t {
            TransferEvent::Started {
                attempt,
                size,
                resume_from,
                restart,
            } => {
                if let Some(b) = self.bar.get(host) {
                    b.set_length(*size);
                    b.set_position(*resume_from);
                    b.set_message("upload");
                }
                if let Some(why) = restart {
                    self.line(
                        false,
                        &format!("{} attempt {attempt}: {why}", self.tag(host)),
                    );
                }
                if *resume_from > 0 {
                    self.line(
                        false,
                        &format!(
                            "{} attempt {attempt}: resuming at {}",
                            self.tag(host),
                            human_bytes(*resume_from)
                        ),
                    );
                }
            }
            TransferEvent::Progress { sent, .. } => {
                if let Some(b) = self.bar.get(host) {
                    b.set_position(*sent);
                }
            }
            TransferEvent::Retrying {
                attempt,
                of,
                delay_ms,
                error,
            } => self.line(
                true,
                &format!(
                    "{} attempt {attempt}/{of} failed, retrying in {}: {error}",
                    self.tag(host),
                    secs(*delay_ms as i64)
                ),
            ),
            TransferEvent::Verified { size, sha256, by } => {
                let how = match sha256.as_deref() {
                    Some(s) => format!("{} {}", by.describe(), &s[..12.min(s.len())]),
                    None => by.describe().to_owned(),
                };
                self.line(
                    false,
                    &format!("{} uploaded {} ({how})", self.tag(host), human_bytes(*size)),
                );
            }
        }
    }
}

/// Download progress of URL bundles: a bar per URL on a terminal, nothing otherwise (the
/// dispatch's own output says which file was shipped).
pub struct Downloads {
    bar: Option<(String, ProgressBar)>,
    terminal: bool,
}

impl Downloads {
    pub fn new(mode: Mode) -> Downloads {
        Downloads {
            bar: None,
            terminal: mode == Mode::Terminal,
        }
    }

    pub fn progress(&mut self, url: &str, got: u64, total: Option<u64>) {
        if !self.terminal {
            return;
        }
        if self.bar.as_ref().is_none_or(|(u, _)| u != url) {
            let b = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(10));
            let style = ProgressStyle::with_template(
                "fetch {msg} {bar:24} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            b.set_style(style);
            b.set_message(field(url).into_owned());
            if let Some((_, old)) = self.bar.replace((url.to_owned(), b)) {
                old.finish();
            }
        }
        if let Some((_, b)) = &self.bar {
            b.set_position(got);
        }
    }
}

impl Drop for Downloads {
    fn drop(&mut self) {
        if let Some((_, b)) = self.bar.take() {
            b.finish();
        }
    }
}

/// The closing table: host, result, duration, failed step, error.
pub fn summary_table(summaries: &[Summary]) -> String {
    let mut rows = vec![vec![
        "DISPATCH".to_owned(),
        "HOST".into(),
        "RESULT".into(),
        "TIME".into(),
        "FAILED STEP".into(),
        "ERROR".into(),
    ]];
    for s in summaries {
        for (host, o, ms) in &s.targets {
            let error = o
                .error
                .as_deref()
                .and_then(|e| e.lines().next())
                .unwrap_or("");
            rows.push(vec![
                format!("#{}", s.id),
                host.clone(),
                o.result.as_str().to_owned(),
                secs(*ms),
                o.failed_step.map_or("-".into(), |s| s.to_string()),
                error.to_owned(),
            ]);
        }
    }
    super::report::table(&rows)
}

/// What the printer thread renders.
enum Out {
    Dispatch(Event),
    Watch(crate::watch::WatchEvent),
}

/// A [`Printer`] on its own thread, fed by the session: the intake for dispatch events,
/// the one for the drop folder's own events, and the thread (joined once the session has
/// ended and dropped both intakes). Headless output must not lose lines: the channel is
/// bounded and a full one makes the sender wait, so a slow terminal slows the commands'
/// output down instead of dropping it.
pub fn spawn_printer(
    mode: Mode,
) -> (
    crate::engine::rollout::Emit,
    crate::watch::WatchEmit,
    std::thread::JoinHandle<()>,
) {
    // An output event holds the lines of one read (32 KiB as a rule): 64 of them are about
    // 2 MiB while stdout (a pager, a slow pipe) does not read.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Out>(64);
    let thread = std::thread::spawn(move || {
        let mut p = Printer::new(mode);
        let mut closed = false;
        // Render everything at hand, then flush once: output stays live, and a flood of
        // lines costs one write per batch instead of one per line.
        while let Ok(first) = rx.recv() {
            for out in std::iter::once(first).chain(rx.try_iter()) {
                if closed {
                    continue; // stdout is gone; keep draining so the engine never blocks
                }
                let r = match &out {
                    Out::Dispatch(e) => p.handle(e),
                    Out::Watch(e) => p.handle_watch(e),
                };
                closed |= r.is_err();
            }
            if !closed && p.flush().is_err() {
                closed = true;
            }
        }
    });
    let dtx = tx.clone();
    let events: crate::engine::rollout::Emit = std::sync::Arc::new(move |e| {
        let _ = dtx.send(Out::Dispatch(e));
    });
    let watch: crate::watch::WatchEmit = std::sync::Arc::new(move |e| {
        let _ = tx.send(Out::Watch(e));
    });
    (events, watch, thread)
}

/// `--history` as a table: a run or action shows what it ran in the bundle column, and BY
/// says who started each row from which machine (`-` on rows from before schema V4).
pub fn history_table(rows: &[crate::journal::HistoryRow]) -> String {
    let mut table = vec![vec![
        "ID".to_owned(),
        "STARTED".into(),
        "BY".into(),
        "STATE".into(),
        "OK".into(),
        "FAILED".into(),
        "SKIPPED".into(),
        "BUNDLE".into(),
        "RULE".into(),
    ]];
    for row in rows {
        let r = &row.summary;
        let started = chrono::DateTime::from_timestamp_millis(r.started_at)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        table.push(vec![
            r.id.to_string(),
            started,
            row.started_by_on(),
            r.state.to_string(),
            r.succeeded.to_string(),
            r.failed.to_string(),
            r.skipped.to_string(),
            row.label(),
            format!("[{}]", r.rule),
        ]);
    }
    super::report::table(&table)
}

/// Rows as JSON lines (`--json`).
pub fn json_lines<T: serde::Serialize>(rows: &[T]) -> String {
    rows.iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_is_a_shortcut_of_plain_never_a_way_around_it() {
        for b in 0u8..=0x7f {
            let line = format!("ok {}", b as char);
            if printable_ascii(&line) {
                assert!(super::super::ansi::plain(&line), "{b:#x}");
            }
        }
        assert!(printable_ascii("[web1] 42 ok: done ~"));
        for raw in ["tab\there", "esc \u{1b}[31m", "del \u{7f}", "é", "cr\r"] {
            assert!(!printable_ascii(raw), "{raw:?}");
        }
    }
}
