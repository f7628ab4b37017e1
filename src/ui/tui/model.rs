//! What the console shows, as plain data: hosts from the rules, packages, and dispatches
//! built up from engine events (live) or from the journal (past). No rendering, no I/O.

use super::ring::LogRing;
use crate::config::Config;
use crate::engine::events::{Event, Level, Millis, Step, StepOutcome, TargetResult};
use crate::fleet::probe::{LockInfo, Reach};
use crate::journal::{DispatchDetail, DispatchState, DispatchSummary, HostLast};
use crate::plan::Plan;
use crate::transport::TransferEvent;
use std::path::PathBuf;
use std::sync::Arc;

/// One host named by the rules. A host in several rules is one row.
#[derive(Debug, Clone)]
pub struct HostRow {
    pub name: String,
    pub rules: Vec<String>,
    /// The rules' package labels (`app` for `app-(?P<version>…)\.tgz`), for the screen.
    pub labels: Vec<String>,
    pub protocols: Vec<String>,
    /// The last finished dispatch there, from the journal.
    pub last: Option<HostLast>,
    /// Reachability per rule naming the host, from the cheap check (`fleet::probe::reach`).
    pub reach: Vec<(String, Reach)>,
    /// The reachability check is running for this host.
    pub reaching: bool,
    /// The remote lock as the last probe saw it: `None` not probed (or stale since a
    /// dispatch there), `Some(None)` free, `Some(Some(..))` held.
    pub lock: Option<Option<LockInfo>>,
    /// Installed version per rule, from the last probe or Versions refresh.
    pub installed: Vec<(String, String)>,
}

/// The Hosts screen's reachability column, merged over the rules naming a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReachShown {
    Unknown,
    Probing,
    /// `millis`: how long the greeting took, when the cheap check measured it.
    Up {
        millis: Option<u64>,
    },
    Down {
        error: String,
    },
}

impl HostRow {
    /// Every host of every rule, in rule order, merged by name.
    pub fn from_config(config: &Config, last: &[HostLast]) -> Vec<HostRow> {
        let mut rows: Vec<HostRow> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for rule in &config.rules {
            for h in &rule.hosts {
                let i = *index.entry(h.name.clone()).or_insert_with(|| {
                    rows.push(HostRow {
                        name: h.name.clone(),
                        rules: Vec::new(),
                        labels: Vec::new(),
                        protocols: Vec::new(),
                        last: last.iter().find(|l| l.host == h.name).cloned(),
                        reach: Vec::new(),
                        reaching: false,
                        lock: None,
                        installed: Vec::new(),
                    });
                    rows.len() - 1
                });
                let row = &mut rows[i];
                if !row.rules.contains(&rule.name) {
                    row.rules.push(rule.name.clone());
                    row.labels.push(crate::fleet::target::package_label(rule));
                }
                let p = rule.protocol.to_string();
                if !row.protocols.contains(&p) {
                    row.protocols.push(p);
                }
            }
        }
        rows
    }

    /// Down if any rule's endpoint is down, probing while answers are missing, else up
    /// (the slowest answer).
    pub fn reach_shown(&self) -> ReachShown {
        if let Some(error) = self.reach.iter().find_map(|(_, r)| match r {
            Reach::Down { error } => Some(error.clone()),
            Reach::Up { .. } => None,
        }) {
            return ReachShown::Down { error };
        }
        if self.reaching && self.reach.len() < self.rules.len() {
            return ReachShown::Probing;
        }
        // A probe's "reachable" carries no greeting and no latency of its own.
        let ups: Vec<Option<u64>> = self
            .reach
            .iter()
            .filter_map(|(_, r)| match r {
                Reach::Up { millis, greeting } => Some((!greeting.is_empty()).then_some(*millis)),
                Reach::Down { .. } => None,
            })
            .collect();
        if ups.is_empty() {
            return if self.reaching {
                ReachShown::Probing
            } else {
                ReachShown::Unknown
            };
        }
        ReachShown::Up {
            millis: ups.into_iter().flatten().max(),
        }
    }

    /// Installed versions, one per rule, without repeats: `1.4.2` or `1.4.2, 2.0.1`.
    pub fn installed_text(&self) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for (_, v) in &self.installed {
            if !seen.contains(&v.as_str()) {
                seen.push(v);
            }
        }
        seen.join(", ")
    }

    pub fn set_installed(&mut self, rule: &str, version: Option<&str>) {
        self.installed.retain(|(r, _)| r != rule);
        if let Some(v) = version {
            self.installed.push((rule.to_owned(), v.to_owned()));
        }
    }
}

/// The lock column: `held 5m by alice@build1 (app-1.4.2.tgz)`, `free`, or empty (not probed).
pub fn lock_text(lock: &Option<Option<LockInfo>>) -> String {
    match lock {
        None => String::new(),
        Some(None) => "free".into(),
        // Age first: in a narrow column "held 5m" survives the cut.
        Some(Some(l)) => format!(
            "held {} by {} ({})",
            age(l.age_secs),
            l.holder,
            if l.bundle.is_empty() { "?" } else { &l.bundle }
        ),
    }
}

/// `42s`, `5m`, `3h`, `2d`.
pub fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// A bundle the user may ship.
#[derive(Debug, Clone)]
pub struct PackageRow {
    pub name: String,
    /// The file, when it came from the packages directory.
    pub path: Option<PathBuf>,
    /// The rule its name matches.
    pub rule: Option<String>,
    /// The last dispatch of it: state, ok/failed counts, when.
    pub last: Option<DispatchSummary>,
}

impl PackageRow {
    /// Files of `dir` (when given) and bundles from the journal's history, newest dispatch
    /// first for those, each with the rule it matches now.
    pub fn collect(
        dir: Option<&std::path::Path>,
        history: &[DispatchSummary],
        config: &Config,
    ) -> Vec<PackageRow> {
        let mut rows: Vec<PackageRow> = Vec::new();
        if let Some(Ok(rd)) = dir.map(std::fs::read_dir) {
            let mut files: Vec<(String, PathBuf)> = rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| Some((e.file_name().to_str()?.to_owned(), e.path())))
                .filter(|(n, _)| !n.starts_with('.'))
                .collect();
            files.sort();
            for (name, path) in files {
                rows.push(PackageRow {
                    rule: config.match_rule(&name).map(|(r, _)| r.name.clone()),
                    last: history.iter().find(|h| h.bundle == name).cloned(),
                    name,
                    path: Some(path),
                });
            }
        }
        // A rollback, run or action ships nothing: it is in Dispatches, not a package.
        for h in history.iter().filter(|h| crate::model::ships(&h.bundle)) {
            if !rows.iter().any(|r| r.name == h.bundle) {
                rows.push(PackageRow {
                    name: h.bundle.clone(),
                    path: None,
                    rule: config.match_rule(&h.bundle).map(|(r, _)| r.name.clone()),
                    last: Some(h.clone()),
                });
            }
        }
        rows
    }
}

/// Upload progress of one target.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    pub sent: u64,
    pub total: u64,
    pub rate: f64,
    pub verified: bool,
}

impl Progress {
    pub fn ratio(&self) -> f64 {
        if self.verified {
            1.0
        } else if self.total == 0 {
            0.0
        } else {
            (self.sent as f64 / self.total as f64).clamp(0.0, 1.0)
        }
    }
}

/// One host of one dispatch.
pub struct TargetView {
    pub host: String,
    pub step: Option<Step>,
    pub steps_done: Vec<Step>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub result: Option<TargetResult>,
    pub failed_step: Option<Step>,
    pub error: Option<String>,
    pub progress: Progress,
    pub log: LogRing,
    /// A past dispatch's output is read from the journal the first time it is shown.
    pub log_loaded: bool,
    /// Steps the journal recorded for a past dispatch, in order, without repeats: where
    /// its output is read from.
    pub journal_steps: Vec<Step>,
    /// Step markers of a past dispatch (when each command step started), merged into its
    /// output when that is read.
    pub journal_markers: Vec<(Millis, String)>,
    /// Every step that ended, in order: what the details popup and the ERROR column say
    /// (`upgrade: exit 3 after 5.1 s`).
    pub runs: Vec<StepRun>,
}

/// How one step of one host ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRun {
    pub step: Step,
    pub outcome: Option<StepOutcome>,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

impl StepRun {
    /// `upgrade: exit 3 after 5.1 s`, `upload: ok after 0.4 s`, `connect: failed after 3.0 s`.
    pub fn summary(&self) -> String {
        let how = match (self.exit_code, self.outcome) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(StepOutcome::Ok)) => "ok".into(),
            (None, Some(StepOutcome::Failed)) => "failed".into(),
            (None, Some(StepOutcome::Cancelled)) => "cancelled".into(),
            (None, Some(StepOutcome::Unknown)) => "outcome unknown".into(),
            (None, None) => "did not finish".into(),
        };
        match self.duration_ms {
            Some(ms) => format!("{}: {how} after {}", self.step, seconds(ms)),
            None => format!("{}: {how}", self.step),
        }
    }
}

/// `5.1 s`, `0.4 s`, `12 s` past ten seconds, `3m 04s` past a minute.
pub fn seconds(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 60_000 {
        format!("{} s", ms / 1000)
    } else {
        format!("{}m {:02}s", ms / 60_000, ms / 1000 % 60)
    }
}

impl TargetView {
    pub fn new(host: String, ring: usize) -> TargetView {
        TargetView {
            host,
            step: None,
            steps_done: Vec::new(),
            started_at: None,
            finished_at: None,
            result: None,
            failed_step: None,
            error: None,
            progress: Progress::default(),
            log: LogRing::new(ring),
            log_loaded: true,
            journal_steps: Vec::new(),
            journal_markers: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// The step that failed (else the last that ended) and how: the one line that says why.
    pub fn failed_run(&self) -> Option<&StepRun> {
        let failed = |r: &&StepRun| r.outcome.is_some_and(|o| o != StepOutcome::Ok);
        match self.failed_step {
            Some(s) => self.runs.iter().rev().find(|r| r.step == s),
            None => self.runs.iter().rev().find(failed),
        }
    }

    /// The ERROR column: `upgrade: exit 3 after 5.1 s — <first line of the error>`.
    pub fn why(&self) -> String {
        let first = self
            .error
            .as_deref()
            .and_then(|e| e.lines().find(|l| !l.trim().is_empty()))
            .unwrap_or("");
        match (self.failed_run(), self.result) {
            (Some(r), Some(TargetResult::Failed | TargetResult::Cancelled)) | (Some(r), None)
                if r.outcome.is_some_and(|o| o != StepOutcome::Ok) =>
            {
                if first.is_empty() {
                    r.summary()
                } else {
                    format!("{} — {first}", r.summary())
                }
            }
            _ => first.to_owned(),
        }
    }

    /// One word for the step column: the running step, or how it ended.
    pub fn status(&self) -> String {
        match (self.result, self.step) {
            (Some(r), _) => match self.failed_step {
                Some(s) if r == TargetResult::Failed => format!("failed at {s}"),
                _ => r.as_str().to_owned(),
            },
            (None, Some(s)) => s.as_str().to_owned(),
            (None, None) => "pending".into(),
        }
    }
}

/// A dispatch as the console knows it.
pub struct DispatchView {
    pub id: i64,
    pub bundle: String,
    pub rule: String,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub state: DispatchState,
    pub targets: Vec<TargetView>,
    pub notices: Vec<(Level, String)>,
    /// Set for dispatches started here: what a retry needs.
    pub plan: Option<(Arc<Plan>, PathBuf)>,
    /// The user asked to cancel it.
    pub cancelling: bool,
    /// Targets are filled from the journal the first time it is selected.
    pub detail_loaded: bool,
    /// (succeeded, failed, hosts) from the journal's summary, until targets are loaded.
    pub counts: (usize, usize, usize),
    /// Another process runs (or ran) it: shown live through the journal's follower, not
    /// cancelled from here.
    pub foreign: bool,
    /// `user@host` it was started by and on, when the journal recorded it.
    pub by: Option<String>,
}

impl DispatchView {
    pub fn from_summary(s: &DispatchSummary) -> DispatchView {
        DispatchView {
            id: s.id,
            bundle: s.bundle.clone(),
            rule: s.rule.clone(),
            started_at: s.started_at,
            finished_at: s.finished_at,
            state: s.state,
            targets: Vec::new(),
            notices: Vec::new(),
            plan: None,
            cancelling: false,
            detail_loaded: false,
            counts: (s.succeeded, s.failed, s.hosts),
            foreign: false,
            by: None,
        }
    }

    /// Fills targets from the journal's record of the dispatch.
    pub fn load_detail(&mut self, d: &DispatchDetail, ring: usize) {
        self.state = d.state;
        self.finished_at = d.finished_at;
        self.targets = d
            .targets
            .iter()
            .map(|t| {
                let mut v = TargetView::new(t.host.clone(), ring);
                v.result = t.result;
                v.failed_step = t.failed_step;
                v.error = t.error.clone();
                v.started_at = t.started_at;
                v.finished_at = t.finished_at;
                v.step = t.steps.last().map(|s| s.step);
                v.steps_done = t
                    .steps
                    .iter()
                    .filter(|s| s.outcome == Some(StepOutcome::Ok))
                    .map(|s| s.step)
                    .collect();
                v.progress.verified = t.verified.is_some();
                if let Some(u) = &t.verified {
                    v.progress.total = u.size;
                    v.progress.sent = u.size;
                }
                v.runs = t
                    .steps
                    .iter()
                    .filter(|s| s.finished_at.is_some() || s.outcome.is_some())
                    .map(|s| StepRun {
                        step: s.step,
                        outcome: s.outcome,
                        exit_code: s.exit_code,
                        duration_ms: s.duration_ms,
                        error: s.error.clone(),
                    })
                    .collect();
                for s in &t.steps {
                    if !v.journal_steps.contains(&s.step) {
                        v.journal_steps.push(s.step);
                    }
                    if let Some(c) = &s.command {
                        v.journal_markers
                            .push((s.started_at, step_marker(s.step, c)));
                    }
                    if let (Some(o), Some(at)) = (s.outcome, s.finished_at) {
                        let ms = s.duration_ms.unwrap_or(at - s.started_at);
                        let line = step_result(s.step, o, s.exit_code, s.error.as_deref(), ms);
                        v.journal_markers.push((at, line));
                    }
                }
                v.log_loaded = false;
                v
            })
            .collect();
        self.notices = d
            .notices
            .iter()
            .map(|n| (n.level, n.message.clone()))
            .collect();
        self.detail_loaded = true;
    }

    pub fn is_running(&self) -> bool {
        self.state == DispatchState::Running
    }

    pub fn target_mut(&mut self, host: &str) -> Option<&mut TargetView> {
        self.targets.iter_mut().find(|t| t.host == host)
    }

    /// `ok/hosts` plus failures, from targets when known, else from the journal summary.
    pub fn result_text(&self) -> String {
        let (ok, failed, n) = if self.targets.is_empty() {
            self.counts
        } else {
            (
                self.count(TargetResult::Succeeded),
                self.count(TargetResult::Failed),
                self.targets.len(),
            )
        };
        if failed > 0 {
            format!("{ok}/{n} ok, {failed} failed")
        } else {
            format!("{ok}/{n} ok")
        }
    }

    pub fn count(&self, r: TargetResult) -> usize {
        self.targets.iter().filter(|t| t.result == Some(r)).count()
    }

    /// The failed hosts for the status bar: `web2, web3`, at most five named (`… +12`).
    pub fn failed_hosts(&self) -> String {
        let failed: Vec<&str> = self
            .targets
            .iter()
            .filter(|t| t.result == Some(TargetResult::Failed))
            .map(|t| t.host.as_str())
            .collect();
        let mut s = failed
            .iter()
            .take(5)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if failed.len() > 5 {
            s.push_str(&format!(" … +{}", failed.len() - 5));
        }
        s
    }

    /// Hosts whose target failed or was cancelled: what `:retry` ships to again.
    pub fn retryable(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|t| {
                matches!(
                    t.result,
                    Some(TargetResult::Failed | TargetResult::Cancelled)
                )
            })
            .map(|t| t.host.clone())
            .collect()
    }

    /// `3 ok · 1 failed · 0 skipped · 2 running — 00:42`
    pub fn summary_line(&self, now: Millis) -> String {
        let done = self.targets.iter().filter(|t| t.result.is_some()).count();
        let running = self.targets.len() - done;
        let end = self.finished_at.unwrap_or(now);
        let mut parts = vec![
            format!("{} ok", self.count(TargetResult::Succeeded)),
            format!("{} failed", self.count(TargetResult::Failed)),
        ];
        for (n, what) in [
            (self.count(TargetResult::Skipped), "skipped"),
            (self.count(TargetResult::Cancelled), "cancelled"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if self.is_running() {
            parts.push(format!("{running} to go"));
        }
        format!(
            "{} — {} {}",
            parts.join(" · "),
            self.state,
            elapsed(end - self.started_at)
        )
    }

    /// Applies one engine event of this dispatch. Returns whether anything visible changed
    /// (output lines only matter to the log pane, which the caller knows about).
    pub fn apply(&mut self, e: &Event, ring: usize) {
        match e {
            Event::DispatchStarted {
                at,
                bundle,
                rule,
                hosts,
                ..
            } => {
                self.bundle = bundle.clone();
                self.rule = rule.clone();
                self.started_at = *at;
                self.state = DispatchState::Running;
                for h in hosts {
                    if self.target_mut(h).is_none() {
                        self.targets.push(TargetView::new(h.clone(), ring));
                    }
                }
                self.detail_loaded = true;
            }
            Event::StepStarted {
                at,
                host,
                step,
                command,
                ..
            } => {
                if let Some(t) = self.target_mut(host) {
                    t.step = Some(*step);
                    t.started_at.get_or_insert(*at);
                    if let Some(c) = command {
                        t.log.push_marker(*at, &step_marker(*step, c));
                    }
                }
            }
            Event::Output {
                at,
                host,
                stream,
                lines,
                ..
            } => {
                if let Some(t) = self.target_mut(host) {
                    for line in lines.iter() {
                        t.log.push(*at, *stream, line);
                    }
                }
            }
            Event::Transfer { host, transfer, .. } => {
                if let Some(t) = self.target_mut(host) {
                    match transfer {
                        TransferEvent::Started {
                            size, resume_from, ..
                        } => {
                            t.progress.total = *size;
                            t.progress.sent = *resume_from;
                        }
                        TransferEvent::Progress {
                            sent, total, rate, ..
                        } => {
                            t.progress.sent = *sent;
                            t.progress.total = *total;
                            t.progress.rate = *rate;
                        }
                        TransferEvent::Retrying { .. } => {}
                        TransferEvent::Verified { size, .. } => {
                            t.progress.total = *size;
                            t.progress.sent = *size;
                            t.progress.verified = true;
                        }
                    }
                }
            }
            Event::StepFinished {
                at,
                host,
                step,
                outcome,
                exit_code,
                error,
                duration_ms,
                ..
            } => {
                if let Some(t) = self.target_mut(host) {
                    let line =
                        step_result(*step, *outcome, *exit_code, error.as_deref(), *duration_ms);
                    t.log.push_marker(*at, &line);
                    t.runs.push(StepRun {
                        step: *step,
                        outcome: Some(*outcome),
                        exit_code: *exit_code,
                        duration_ms: Some(*duration_ms),
                        error: error.clone(),
                    });
                    if *outcome == StepOutcome::Ok {
                        t.steps_done.push(*step);
                    } else if let Some(err) = error {
                        t.error = Some(err.clone());
                    }
                }
            }
            Event::TargetFinished {
                at,
                host,
                result,
                failed_step,
                error,
                ..
            } => {
                if let Some(t) = self.target_mut(host) {
                    t.result = Some(*result);
                    t.failed_step = *failed_step;
                    if error.is_some() {
                        t.error = error.clone();
                    }
                    t.finished_at = Some(*at);
                }
            }
            Event::Notice {
                level,
                message,
                host,
                ..
            } => {
                let text = match host {
                    Some(h) => format!("[{h}] {message}"),
                    None => message.clone(),
                };
                self.notices.push((*level, text));
            }
            Event::BundleHashed { .. } => {}
            Event::DispatchFinished { at, .. } => {
                self.finished_at = Some(*at);
                if self.state == DispatchState::Running {
                    self.state = if self.cancelling {
                        DispatchState::Cancelled
                    } else {
                        DispatchState::Finished
                    };
                }
            }
        }
    }
}

/// The log pane's line for a command step starting: `── upgrade: tar xzf …`.
pub fn step_marker(step: Step, command: &str) -> String {
    format!("── {step}: {command}")
}

pub use crate::ui::step_line::step_result;

/// `mm:ss`, or `h:mm:ss` past an hour.
pub fn elapsed(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

/// How long ago `ms` was: `12s ago`, `5m ago`, `3h ago`, `2d ago`. Relative times read
/// faster in a column than dates, and do not depend on the time zone.
pub fn ago(now: Millis, ms: Millis) -> String {
    let s = (now - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// Local wall-clock time of a journal timestamp, `mm-dd HH:MM` (the year is noise in a
/// column of recent dispatches).
pub fn when(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// The panes, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Focus {
    Hosts,
    Packages,
    Dispatches,
    Targets,
    Log,
}

impl Focus {
    pub const ALL: [Focus; 5] = [
        Focus::Hosts,
        Focus::Packages,
        Focus::Dispatches,
        Focus::Targets,
        Focus::Log,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Focus::Hosts => "Hosts",
            Focus::Packages => "Packages",
            Focus::Dispatches => "Dispatches",
            Focus::Targets => "Targets",
            Focus::Log => "Log",
        }
    }

    /// The index of the pane's list selection (the log has none).
    pub fn list(self) -> Option<usize> {
        match self {
            Focus::Hosts => Some(0),
            Focus::Packages => Some(1),
            Focus::Dispatches => Some(2),
            Focus::Targets => Some(3),
            Focus::Log => None,
        }
    }
}

/// What a help overlay opened from a view lists (and goes back to when closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Probe,
    Versions,
}

/// Local time of an output line, `HH:MM:SS.mmm`.
pub fn timestamp(at: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_default()
}
