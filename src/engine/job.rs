//! One target's job: connect -> lock -> pre -> upload -> upgrade -> post -> health ->
//! unlock, with `rollback` when a step after the upload fails. Blocking: it runs on its own
//! thread and reports every transition and output line as an [`Event`].
//!
//! With `layout = releases` (see [`crate::engine::releases`]) the steps are: connect -> lock
//! -> pre -> upload -> unpack -> upgrade -> switch -> post -> health -> prune -> unlock.
//! `upgrade` runs before the switch, with `{release_dir}` (the new release) and `{current}`
//! (still the old one) to prepare with; `post` and `health` run on the switched release. A
//! failure before the switch runs `rollback` (nothing live changed); a failure at or after
//! it first switches `current` back to the release that was live before, then runs
//! `rollback`. A failed prune is a warning, not a failed host. `switch`, `post` and
//! `health` are one transaction: a cancel request after the switch lets this host finish
//! them (see `run_locked`), a hard cancel stops them and switches back.

use super::events::{Event, Level, Step, StepOutcome, TargetResult, now_ms};
use super::lock::{self, Identity, Lock, LockError, Wait};
use crate::config::Rule;
use crate::config::rules::Layout;
use crate::engine::health;
use crate::engine::releases::{self, ReleaseError, Tree};
use crate::plan::{Plan, Target};
use crate::transport::known_hosts::KnownHostsFiles;
use crate::transport::upload::{self, Job, RetryPolicy};
use crate::transport::{Connection, TransportError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Cancellation as the engine sees it: no new step starts once `requested`; a running
/// step is stopped when the grace period after the request has passed.
pub struct Cancel {
    pub requested: AtomicBool,
    /// Set when the grace period is over (or at once, on a second Ctrl-C).
    pub hard: AtomicBool,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel {
            requested: AtomicBool::new(false),
            hard: AtomicBool::new(false),
        }
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    pub fn is_hard(&self) -> bool {
        self.hard.load(Ordering::Relaxed)
    }
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel::new()
    }
}

/// What a resumed job may skip.
#[derive(Debug, Clone, Default)]
pub struct Skip {
    /// Steps that finished successfully before the interruption.
    pub done: Vec<Step>,
}

/// Everything a job needs, borrowed from the dispatch.
pub struct JobContext<'a> {
    pub dispatch: i64,
    pub plan: &'a Plan,
    pub target: &'a Target,
    pub bundle: &'a Path,
    pub bundle_digest: &'a crate::transport::BundleDigest,
    pub known_hosts: &'a KnownHostsFiles,
    /// Opens connections to the target (see [`crate::engine::connect::Connector`]).
    pub connector: &'a crate::engine::connect::Connector,
    pub cancel: &'a Cancel,
    pub emit: &'a (dyn Fn(Event) + Sync),
    pub holder: &'a str,
    pub skip: Skip,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: TargetResult,
    pub failed_step: Option<Step>,
    pub error: Option<String>,
}

/// The error of a step that a cancel kept from starting.
const NOT_STARTED: &str = "cancelled before it started";

/// The error of a step of the switch transaction that a hard cancel kept from starting:
/// unlike [`NOT_STARTED`], the host is half-switched and is put back.
const STOPPED: &str = "stopped before it started: `current` is switched back";

/// What a cancel *request* (one Ctrl-C, `c` in the console) does to a command that has not
/// started yet. A hard cancel (the grace period over, a second Ctrl-C) stops every command
/// but `rollback`, running or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Soft {
    /// It does not start: the usual case, nothing is half-done between two steps.
    Stops,
    /// It starts anyway: `rollback` (how a half-done host is put back), and with `layout =
    /// releases` `post` and `health` once `current` is switched (see [`run_locked`]).
    Ignored,
}

/// Why a step failed: its error text and whether it was a cancellation.
struct StepFailure {
    step: Step,
    error: String,
    cancelled: bool,
}

impl JobContext<'_> {
    fn host(&self) -> String {
        self.target.host.name.clone()
    }

    fn rule(&self) -> &Rule {
        &self.plan.rule
    }

    fn notice(&self, level: Level, message: String) {
        (self.emit)(Event::Notice {
            dispatch: self.dispatch,
            at: now_ms(),
            host: Some(self.host()),
            level,
            message,
        });
    }

    fn started(&self, step: Step, command: Option<&str>) -> Instant {
        (self.emit)(Event::StepStarted {
            dispatch: self.dispatch,
            at: now_ms(),
            host: self.host(),
            step,
            command: command.map(str::to_owned),
        });
        Instant::now()
    }

    fn finished(
        &self,
        step: Step,
        since: Instant,
        outcome: StepOutcome,
        exit_code: Option<i32>,
        error: Option<String>,
    ) {
        (self.emit)(Event::StepFinished {
            dispatch: self.dispatch,
            at: now_ms(),
            host: self.host(),
            step,
            outcome,
            exit_code,
            error,
            duration_ms: since.elapsed().as_millis() as i64,
        });
    }

    /// Runs `f` as `step`, reporting its start and end; an error becomes a failure.
    fn step<T>(
        &self,
        step: Step,
        f: impl FnOnce() -> Result<T, TransportError>,
    ) -> Result<T, StepFailure> {
        if self.cancel.is_requested() {
            return Err(StepFailure {
                step,
                error: NOT_STARTED.into(),
                cancelled: true,
            });
        }
        let t = self.started(step, None);
        match f() {
            Ok(v) => {
                self.finished(step, t, StepOutcome::Ok, None, None);
                Ok(v)
            }
            Err(e) => Err(self.fail(step, t, None, e)),
        }
    }

    fn fail(&self, step: Step, t: Instant, exit: Option<i32>, e: TransportError) -> StepFailure {
        let cancelled = matches!(e, TransportError::Cancelled { .. });
        let outcome = if cancelled {
            StepOutcome::Cancelled
        } else {
            StepOutcome::Failed
        };
        let error = e.to_string();
        self.finished(step, t, outcome, exit, Some(error.clone()));
        StepFailure {
            step,
            error,
            cancelled,
        }
    }

    /// Runs one of the rule's commands, streaming its output. A non-zero exit fails it. A
    /// cancel request keeps it from starting, except for `rollback` (see [`Soft`]).
    fn command(&self, conn: &mut Connection, step: Step) -> Result<(), StepFailure> {
        let soft = if step == Step::Rollback {
            Soft::Ignored
        } else {
            Soft::Stops
        };
        self.command_as(conn, step, None, soft)
    }

    /// [`JobContext::command`] with the command text given (`None`: the plan's) and the
    /// meaning of a cancel request chosen by the caller.
    fn command_as(
        &self,
        conn: &mut Connection,
        step: Step,
        text: Option<&str>,
        soft: Soft,
    ) -> Result<(), StepFailure> {
        let cmd = text.or(match step {
            Step::Pre => self.target.commands.pre.as_deref(),
            Step::Upgrade => self.target.commands.upgrade.as_deref(),
            Step::Post => self.target.commands.post.as_deref(),
            Step::Health => self.target.commands.health.as_deref(),
            Step::Rollback => self.target.commands.rollback.as_deref(),
            _ => None,
        });
        let Some(cmd) = cmd else { return Ok(()) };
        if self.skip.done.contains(&step) {
            self.notice(
                Level::Info,
                format!("{step} already done before the interruption"),
            );
            return Ok(());
        }
        if soft == Soft::Stops && self.cancel.is_requested() {
            return Err(StepFailure {
                step,
                error: NOT_STARTED.into(),
                cancelled: true,
            });
        }
        if soft == Soft::Ignored && step != Step::Rollback && self.cancel.is_hard() {
            // "Stop now" before a transaction's step began: do not start it only to kill
            // it; the caller puts the host back (this is not NOT_STARTED).
            return Err(StepFailure {
                step,
                error: STOPPED.into(),
                cancelled: true,
            });
        }
        let health_is_url = step == Step::Health
            && self
                .rule()
                .commands
                .health
                .as_ref()
                .is_some_and(|h| health::is_url(h.source()));
        if health_is_url {
            // A URL's query may hold a token: events, journal and screen get it without.
            let shown = health::url_from_rendered(cmd)
                .map_or_else(|_| String::new(), |u| health::redact(&u));
            let t = self.started(step, Some(&shown));
            return self.health_url(t, cmd);
        }
        if let Some(probe) = self.health_probe(step) {
            let t = self.started(step, Some(cmd));
            return self.health_by_probe(conn, t, &probe);
        }
        let t = self.started(step, Some(cmd));
        let Some(shell) = conn.shell.as_deref_mut() else {
            let e = TransportError::Setup {
                host: self.host(),
                detail: format!("`{step}` needs a shell on the host, and this target has none"),
            };
            return Err(self.fail(step, t, None, e));
        };
        let dispatch = self.dispatch;
        let host = self.host();
        let emit = self.emit;
        let cancel = self.cancel;
        let res = shell.exec_lines(
            cmd,
            self.rule().step_timeout,
            // A rollback is how a half-done host is put back: a cancel does not stop it,
            // only its own step timeout does.
            &|| step != Step::Rollback && cancel.is_hard(),
            // The lines of one read: one event.
            &mut |stream, lines| {
                emit(Event::Output {
                    dispatch,
                    at: now_ms(),
                    host: host.clone(),
                    step,
                    stream,
                    lines: lines.into(),
                })
            },
        );
        match res {
            Ok(0) => {
                self.finished(step, t, StepOutcome::Ok, Some(0), None);
                Ok(())
            }
            Ok(code) => {
                let error = format!("`{step}` exited with status {code}");
                self.finished(
                    step,
                    t,
                    StepOutcome::Failed,
                    Some(code),
                    Some(error.clone()),
                );
                Err(StepFailure {
                    step,
                    error,
                    cancelled: false,
                })
            }
            Err(e) => Err(self.fail(step, t, None, e)),
        }
    }

    /// Polls a health URL until it answers 2xx or `health_timeout` passes, reporting every
    /// try as an output line of the step.
    fn health_url(&self, t: Instant, rendered: &str) -> Result<(), StepFailure> {
        let rule = self.rule();
        let out = |line: String| {
            (self.emit)(Event::Output {
                dispatch: self.dispatch,
                at: now_ms(),
                host: self.host(),
                step: Step::Health,
                stream: crate::transport::Stream::Stdout,
                lines: line.into(),
            })
        };
        let res = health::url_from_rendered(rendered).and_then(|url| {
            out(format!(
                "GET {} until 2xx, every {:?}, for up to {:?}",
                health::redact(&url),
                rule.health_interval,
                rule.health_timeout
            ));
            let check = health::Check {
                url,
                timeout: rule.health_timeout,
                interval: rule.health_interval,
                request_timeout: rule.timeout,
                tls_verify: rule.tls_verify,
                tls_ca: rule.tls_ca.clone(),
            };
            health::poll(&check, &|| self.cancel.is_hard(), &mut |a| {
                let verdict = if a.healthy() { ": healthy" } else { "" };
                out(format!("try {}: {}{verdict}", a.n, a.detail));
            })
        });
        match res {
            Ok(_) => {
                self.finished(Step::Health, t, StepOutcome::Ok, None, None);
                Ok(())
            }
            Err(health::HealthError::Cancelled { .. }) => Err(self.fail(
                Step::Health,
                t,
                None,
                TransportError::Cancelled { host: self.host() },
            )),
            Err(e) => Err(self.failed_with(Step::Health, t, e.to_string())),
        }
    }

    /// The rule's `health` when it is a `proc:`/`port:` check (see [`health::Probe`]).
    fn health_probe(&self, step: Step) -> Option<health::Probe> {
        let source = self.rule().commands.health.as_ref()?.source();
        (step == Step::Health).then(|| health::Probe::parse(source)?.ok())?
    }

    /// Runs a `proc:`/`port:` check on the host until it passes or `health_timeout` passes;
    /// every try's verdict is an output line of the step.
    fn health_by_probe(
        &self,
        conn: &mut Connection,
        t: Instant,
        probe: &health::Probe,
    ) -> Result<(), StepFailure> {
        let Some(shell) = conn.shell.as_deref_mut() else {
            let e = TransportError::Setup {
                host: self.host(),
                detail: "`health` needs a shell on the host, and this target has none".into(),
            };
            return Err(self.fail(Step::Health, t, None, e));
        };
        let rule = self.rule();
        let res = health::poll_probe(
            shell,
            probe,
            rule.health_timeout,
            rule.health_interval,
            rule.step_timeout,
            &|| self.cancel.is_hard(),
            &mut |n, line| {
                (self.emit)(Event::Output {
                    dispatch: self.dispatch,
                    at: now_ms(),
                    host: self.host(),
                    step: Step::Health,
                    stream: crate::transport::Stream::Stdout,
                    lines: format!("try {n}: {line}").into(),
                })
            },
        );
        match res {
            Ok(_) => {
                self.finished(Step::Health, t, StepOutcome::Ok, None, None);
                Ok(())
            }
            Err(health::ProbeError::Cancelled) => Err(self.fail(
                Step::Health,
                t,
                None,
                TransportError::Cancelled { host: self.host() },
            )),
            Err(e) => Err(self.failed_with(Step::Health, t, e.to_string())),
        }
    }

    /// Reports `step` as failed with `error` (not a cancellation).
    fn failed_with(&self, step: Step, t: Instant, error: String) -> StepFailure {
        self.finished(step, t, StepOutcome::Failed, None, Some(error.clone()));
        StepFailure {
            step,
            error,
            cancelled: false,
        }
    }

    /// Reports a release operation's error as the end of `step`.
    fn release_failed(&self, step: Step, t: Instant, e: ReleaseError) -> StepFailure {
        match e {
            ReleaseError::Transport(te) => self.fail(step, t, None, te),
            other => self.failed_with(step, t, other.to_string()),
        }
    }

    fn tree(&self) -> Tree {
        Tree::new(&self.target.dest_dir)
    }

    /// The release this dispatch makes (checked when the plan was built).
    fn release_name(&self) -> Result<String, String> {
        let version = self.plan.captures.get("version").cloned().flatten();
        releases::release_name(version.as_deref(), &self.plan.stamp.timestamp)
    }

    fn line(&self, step: Step, stream: crate::transport::Stream, line: &str) {
        (self.emit)(Event::Output {
            dispatch: self.dispatch,
            at: now_ms(),
            host: self.host(),
            step,
            stream,
            lines: line.into(),
        })
    }

    /// One step of the release layout: `unpack`, `switch` (to this dispatch's release) or
    /// `prune`.
    /// The shell the release layout's steps run in; a target without one fails `step`.
    fn release_shell<'c>(
        &self,
        conn: &'c mut Connection,
        step: Step,
        t: Instant,
    ) -> Result<&'c mut dyn crate::transport::Shell, StepFailure> {
        match conn.shell.as_deref_mut() {
            Some(shell) => Ok(shell),
            None => {
                let e = TransportError::Setup {
                    host: self.host(),
                    detail:
                        "`layout = releases` needs a shell on the host, and this target has none"
                            .into(),
                };
                Err(self.fail(step, t, None, e))
            }
        }
    }

    fn release_step(&self, conn: &mut Connection, step: Step) -> Result<(), StepFailure> {
        if self.skip.done.contains(&step) {
            self.notice(
                Level::Info,
                format!("{step} already done before the interruption"),
            );
            return Ok(());
        }
        if self.cancel.is_requested() {
            return Err(StepFailure {
                step,
                error: NOT_STARTED.into(),
                cancelled: true,
            });
        }
        let tree = self.tree();
        let name = self.release_name();
        let what = match (&name, step) {
            (Ok(n), Step::Unpack) => {
                format!("unpack {} into {}", self.plan.bundle, tree.release_dir(n))
            }
            (Ok(n), Step::Switch) => format!("{} -> releases/{n}", tree.current()),
            _ => format!("keep the newest {} releases", self.rule().keep),
        };
        let t = self.started(step, Some(&what));
        let name = match name {
            Ok(n) => n,
            Err(why) => return Err(self.failed_with(step, t, why)),
        };
        let host = self.host();
        let shell = self.release_shell(conn, step, t)?;
        let cancel = self.cancel;
        let stop = || cancel.is_hard();
        let mut on_line = |stream, line: &str| self.line(step, stream, line);
        let timeout = self.rule().step_timeout;
        let res: Result<(), ReleaseError> = match step {
            Step::Unpack => releases::run_script(
                shell,
                &host,
                "unpacking",
                &releases::unpack_script(&tree, &name, &self.target.remote_path, &self.plan.bundle),
                timeout,
                &stop,
                &mut on_line,
            ),
            Step::Switch => releases::read_state(shell, &host, &tree).and_then(|state| {
                let was = state.current.as_deref().unwrap_or("nothing");
                on_line(
                    crate::transport::Stream::Stdout,
                    &format!("current: {was} -> {name}"),
                );
                let script =
                    releases::switch_script(&tree, Some(&name), &state.history_after_deploy(&name));
                releases::run_script(
                    shell,
                    &host,
                    "switching",
                    &script,
                    timeout,
                    &stop,
                    &mut on_line,
                )
            }),
            _ => releases::read_state(shell, &host, &tree).and_then(|state| {
                let (delete, history) = state.prune(self.rule().keep);
                let script = releases::prune_script(
                    &tree,
                    &delete,
                    &history,
                    Some(&self.target.remote_path),
                );
                releases::run_script(
                    shell,
                    &host,
                    "pruning",
                    &script,
                    timeout,
                    &stop,
                    &mut on_line,
                )
            }),
        };
        match res {
            Ok(()) => {
                self.finished(step, t, StepOutcome::Ok, Some(0), None);
                Ok(())
            }
            Err(e) => Err(self.release_failed(step, t, e)),
        }
    }

    /// Points `current` back at the release that was live before (a failure after the
    /// switch, or `--rollback`). `only_if_live`: do nothing unless `current` is this
    /// dispatch's release (a failed switch may or may not have happened). A first release
    /// with nothing before it is switched back to no `current` at all, as it was. Returns
    /// the release `current` now points at, when it was switched.
    fn switch_back(
        &self,
        conn: &mut Connection,
        only_if_live: bool,
    ) -> Result<Option<String>, StepFailure> {
        let step = Step::Switch;
        let tree = self.tree();
        let t = self.started(
            step,
            Some(&format!("{} -> previous release", tree.current())),
        );
        let host = self.host();
        let shell = self.release_shell(conn, step, t)?;
        let mut on_line = |stream, line: &str| self.line(step, stream, line);
        let res = releases::read_state(shell, &host, &tree).and_then(|state| {
            let ours = self.release_name().ok();
            if only_if_live && (state.current.is_none() || state.current != ours) {
                on_line(
                    crate::transport::Stream::Stdout,
                    "current was not switched: nothing to switch back",
                );
                return Ok(None);
            }
            let (target, history) = match state.rollback() {
                Some((t, h)) => (Some(t), h),
                None if only_if_live => (None, Vec::new()),
                None => {
                    return Err(ReleaseError::NothingToRollBack {
                        host: host.clone(),
                        current: state.current.clone(),
                        history: state.history.clone(),
                    });
                }
            };
            if let Some(t) = &target
                && !state.dirs.contains(t)
            {
                return Err(ReleaseError::PreviousGone {
                    host: host.clone(),
                    name: t.clone(),
                    history_file: format!("{}/.releases", tree.base),
                });
            }
            on_line(
                crate::transport::Stream::Stdout,
                &format!(
                    "current: {} -> {}",
                    state.current.as_deref().unwrap_or("nothing"),
                    target
                        .as_deref()
                        .unwrap_or("nothing (there was no release before)")
                ),
            );
            let script = releases::switch_script(&tree, target.as_deref(), &history);
            // Putting a host back is not stopped by a cancel, only by its timeout.
            releases::run_script(
                shell,
                &host,
                "switching back",
                &script,
                self.rule().step_timeout,
                &|| false,
                &mut on_line,
            )
            .map(|()| target)
        });
        match res {
            Ok(to) => {
                self.finished(step, t, StepOutcome::Ok, Some(0), None);
                Ok(to)
            }
            Err(e) => Err(self.release_failed(step, t, e)),
        }
    }
}

/// Connects, retrying what a retry can fix (a refused or dropped connection, a timeout)
/// with the rule's `retries` and backoff: a busy sshd dropping a login under `MaxStartups`
/// must not fail a host.
fn connect_with_retries(ctx: &JobContext) -> Result<Connection, TransportError> {
    let policy = RetryPolicy::new(ctx.rule().retries);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (connected, warnings) = crate::transport::warnings::collect(|| {
            (ctx.connector)(ctx.target, ctx.rule(), ctx.known_hosts)
        });
        // A host key accepted under `accept-new`: the user hears it, not only the log.
        for w in warnings {
            ctx.notice(Level::Warning, w);
        }
        match connected {
            Err(e)
                if e.is_transient() && attempt <= policy.retries && !ctx.cancel.is_requested() =>
            {
                let delay = policy.delay(attempt);
                ctx.notice(
                    Level::Warning,
                    format!("connect attempt {attempt} failed, retrying in {delay:.1?}: {e}"),
                );
                std::thread::sleep(delay);
            }
            other => return other,
        }
    }
}

/// The outcome of a job that stopped at a failed (or cancelled) step.
fn fail(f: StepFailure) -> Outcome {
    Outcome {
        result: if f.cancelled {
            TargetResult::Cancelled
        } else {
            TargetResult::Failed
        },
        failed_step: Some(f.step),
        error: Some(f.error),
    }
}

/// Runs the whole job for one target.
pub fn run(ctx: &JobContext) -> Outcome {
    let mut conn = match ctx.step(Step::Connect, || connect_with_retries(ctx)) {
        Ok(c) => c,
        Err(f) => return fail(f),
    };
    let lock = match take_lock(ctx, &mut conn, &ctx.plan.bundle) {
        Ok(l) => l,
        Err(f) => return fail(f),
    };
    let (conn, result) = run_locked(ctx, conn);
    unlock_and_finish(ctx, conn, &lock, result)
}

/// A rollback of one target (`--rollback`, the console's rollback action): connect ->
/// lock -> (`layout = releases`: switch `current` back to the previous release) -> the
/// rule's `rollback` command -> unlock.
pub fn rollback(ctx: &JobContext) -> Outcome {
    let mut conn = match ctx.step(Step::Connect, || connect_with_retries(ctx)) {
        Ok(c) => c,
        Err(f) => return fail(f),
    };
    let lock = match take_lock(ctx, &mut conn, crate::model::ROLLBACK_BUNDLE) {
        Ok(l) => l,
        Err(f) => return fail(f),
    };
    let result = match ctx.rule().layout {
        Layout::Plain => ctx.command(&mut conn, Step::Rollback),
        Layout::Releases => ctx
            .switch_back(&mut conn, false)
            .and_then(|to| rollback_after_switch(ctx, &mut conn, to.as_deref())),
    };
    unlock_and_finish(ctx, Some(conn), &lock, result)
}

/// `--rollback`'s `rollback` command for `layout = releases`, run once `current` points at
/// `to`: its `{release}` and `{release_dir}` name `to`, the release rolled back *to* and
/// live now (read on the host by the switch), not the plan's bundle. A rollback's plan comes
/// from the last bundle shipped, which after one rollback is neither, and for a rule without
/// a `version` capture names a release that never existed.
fn rollback_after_switch(
    ctx: &JobContext,
    conn: &mut Connection,
    to: Option<&str>,
) -> Result<(), StepFailure> {
    let Some(to) = to else {
        return ctx.command(conn, Step::Rollback);
    };
    match ctx.plan.rollback_for_release(ctx.target, to) {
        Ok(text) => ctx.command_as(conn, Step::Rollback, text.as_deref(), Soft::Ignored),
        Err(e) => {
            let t = ctx.started(Step::Rollback, None);
            Err(ctx.failed_with(
                Step::Rollback,
                t,
                format!("cannot render `rollback` for release {to}: {e}"),
            ))
        }
    }
}

/// Releases the lock and turns the steps' result into the outcome.
fn unlock_and_finish(
    ctx: &JobContext,
    mut conn: Option<Connection>,
    lock: &Lock,
    result: Result<(), StepFailure>,
) -> Outcome {
    let rule = ctx.rule();
    // Release over the session we have; if it is gone or dead (a step failed on a dropped
    // connection), over a fresh one: a lock left behind blocks every later dispatch.
    let released = conn
        .as_mut()
        .is_some_and(|c| lock::release(c, lock).is_ok());
    if !released {
        let again = (ctx.connector)(ctx.target, rule, ctx.known_hosts)
            .and_then(|mut c| lock::release(&mut c, lock));
        if let Err(e) = again {
            ctx.notice(
                Level::Warning,
                format!("could not release the lock {}: {e}", lock.path),
            );
        }
    }
    match result {
        Ok(()) => Outcome {
            result: TargetResult::Succeeded,
            failed_step: None,
            error: None,
        },
        Err(f) => fail(f),
    }
}

fn take_lock(ctx: &JobContext, conn: &mut Connection, bundle: &str) -> Result<Lock, StepFailure> {
    let t = ctx.started(Step::Lock, None);
    let rule = ctx.rule();
    let path = ctx.target.lock_path.clone();
    let id = Identity {
        host: &ctx.target.host.name,
        holder: ctx.holder,
        bundle,
    };
    let cancel = ctx.cancel;
    let res = lock::acquire(
        conn,
        &path,
        &id,
        &Wait {
            host: &ctx.target.host.name,
            wait: rule.lock_wait,
            stale: rule.lock_stale,
            cancelled: &|| cancel.is_requested(),
            notice: &|m| ctx.notice(Level::Warning, m),
        },
    );
    match res {
        Ok(l) => {
            ctx.finished(Step::Lock, t, StepOutcome::Ok, None, None);
            Ok(l)
        }
        Err(LockError::Transport(e)) => Err(ctx.fail(Step::Lock, t, None, e)),
        Err(LockError::Cancelled { host }) => {
            Err(ctx.fail(Step::Lock, t, None, TransportError::Cancelled { host }))
        }
        Err(e @ LockError::Busy { .. }) => {
            let error = e.to_string();
            ctx.finished(
                Step::Lock,
                t,
                StepOutcome::Failed,
                None,
                Some(error.clone()),
            );
            Err(StepFailure {
                step: Step::Lock,
                error,
                cancelled: false,
            })
        }
    }
}

/// The steps under the lock. Returns the connection it ended on (`None` if it was lost).
fn run_locked(ctx: &JobContext, conn: Connection) -> (Option<Connection>, Result<(), StepFailure>) {
    let mut conn = conn;
    if let Err(f) = ctx.command(&mut conn, Step::Pre) {
        return (Some(conn), Err(f));
    }
    let mut conn = if ctx.skip.done.contains(&Step::Upload) {
        ctx.notice(
            Level::Info,
            "upload already verified before the interruption".into(),
        );
        conn
    } else {
        match upload_step(ctx, conn) {
            Ok(c) => c,
            Err(f) => return (None, Err(f)),
        }
    };
    let layout = ctx.rule().layout;
    // After the upload a failure (or a step killed by a cancel) leaves the host half-done:
    // put it back if the rule knows how. Cancelled between steps, what ran succeeded and
    // nothing is half-done, so there is nothing to roll back (that would undo a good
    // upgrade).
    //
    // Except once the host has been changed: from `switch` on (`layout = releases`), or from
    // a finished `upgrade` (plain layout), the change, `post` (typically the restart) and
    // `health` are one transaction. Stopping between them would leave the host changed but
    // not restarted — with releases, `current`, `.version` and `--status` naming the new
    // release while the old code still runs — until someone runs `--resume`. So from there
    // on a cancel *request* no longer stops this host: it finishes `post` and `health` (a
    // cancel then means "finish or undo this host, start no new host"). Finishing, not
    // undoing, because it is what the operator asked for minus nothing, it moves the host
    // once instead of twice (an undo would have to run `rollback` on a host whose `post`
    // never ran), and `health` still guards it: if it fails, the host is put back as on any
    // failure. A hard cancel (the grace period over, a second Ctrl-C) still stops
    // `post`/`health`, and then the host *is* put back (switched back, `rollback` run).
    let put_back = |conn: &mut Connection, f: &StepFailure, switched: bool| {
        if f.error == NOT_STARTED {
            return;
        }
        if switched && let Err(sf) = ctx.switch_back(conn, true) {
            ctx.notice(
                Level::Warning,
                format!("switching `current` back failed too: {}", sf.error),
            );
        }
        if let Err(rf) = ctx.command(conn, Step::Rollback) {
            ctx.notice(Level::Warning, format!("rollback failed too: {}", rf.error));
        }
    };
    let steps: &[Step] = match layout {
        Layout::Plain => &[Step::Upgrade, Step::Post, Step::Health],
        Layout::Releases => &[
            Step::Unpack,
            Step::Upgrade,
            Step::Switch,
            Step::Post,
            Step::Health,
        ],
    };
    // The step after which the host counts as changed (see above).
    let commit = match layout {
        Layout::Plain => Step::Upgrade,
        Layout::Releases => Step::Switch,
    };
    let mut changed = false;
    for &step in steps {
        let to_finish = ctx.target.commands.post.is_some() || ctx.target.commands.health.is_some();
        if changed && step == Step::Post && to_finish && ctx.cancel.is_requested() {
            let (what, undo) = match layout {
                Layout::Plain => ("`upgrade` ran", "`rollback` runs"),
                Layout::Releases => ("`current` was switched", "`current` is switched back"),
            };
            ctx.notice(
                Level::Warning,
                format!("cancel requested after {what}: finishing `post` and `health` on this host so it is not left half-done; if they are stopped (the grace period runs out, or stop now), {undo}"),
            );
        }
        let res = match step {
            Step::Unpack | Step::Switch => ctx.release_step(&mut conn, step),
            Step::Post | Step::Health if changed => {
                ctx.command_as(&mut conn, step, None, Soft::Ignored)
            }
            _ => ctx.command(&mut conn, step),
        };
        // A plain `upgrade` that is not configured changed nothing.
        let ran = step != Step::Upgrade || ctx.target.commands.upgrade.is_some();
        changed |= step == commit && ran && res.is_ok();
        if let Err(f) = res {
            // From the switch on, `current` may point at the new release.
            let on_new = layout == Layout::Releases && step >= Step::Switch;
            put_back(&mut conn, &f, on_new);
            return (Some(conn), Err(f));
        }
    }
    if layout == Layout::Releases
        && let Err(f) = ctx.release_step(&mut conn, Step::Prune)
        && f.error != NOT_STARTED
    {
        ctx.notice(
            Level::Warning,
            format!(
                "pruning old releases failed (the release itself is live): {}",
                f.error
            ),
        );
    }
    (Some(conn), Ok(()))
}

fn upload_step(ctx: &JobContext, conn: Connection) -> Result<Connection, StepFailure> {
    if ctx.cancel.is_requested() {
        return Err(StepFailure {
            step: Step::Upload,
            error: NOT_STARTED.into(),
            cancelled: true,
        });
    }
    let t = ctx.started(Step::Upload, None);
    let rule = ctx.rule();
    let hard = || ctx.cancel.is_hard();
    let job = Job {
        host: &ctx.target.host.name,
        local: ctx.bundle,
        digest: ctx.bundle_digest,
        dest_dir: &ctx.target.dest_dir,
        remote_path: &ctx.target.remote_path,
        policy: RetryPolicy::new(rule.retries),
        cancel: &hard,
    };
    let mut first = Some(conn);
    let dispatch = ctx.dispatch;
    let host = ctx.host();
    let res = upload::deliver(
        &job,
        &mut || match first.take() {
            Some(c) => Ok(c),
            None => (ctx.connector)(ctx.target, rule, ctx.known_hosts),
        },
        &|transfer| {
            (ctx.emit)(Event::Transfer {
                dispatch,
                at: now_ms(),
                host: host.clone(),
                transfer,
            })
        },
    );
    match res {
        Ok((conn, _)) => {
            ctx.finished(Step::Upload, t, StepOutcome::Ok, None, None);
            Ok(conn)
        }
        Err(e) => Err(ctx.fail(Step::Upload, t, None, e)),
    }
}

/// One host of an ad-hoc run or a rule's named action (see [`super::run`]): connect ->
/// [lock] -> `run` -> [unlock]. Nothing is uploaded. The remote lock is taken only when
/// asked (`--lock`): a status query must not wait behind a dispatch, and a restart may be
/// what unblocks one. The command runs like the rule's own commands (the same shell
/// wrapper), so `step_timeout` and a hard cancel stop it *on the host*, process group and
/// all; a cancel request keeps it from starting.
pub fn run_command(ctx: &JobContext, command: &str, lock: Option<&str>) -> Outcome {
    let mut conn = match ctx.step(Step::Connect, || connect_with_retries(ctx)) {
        Ok(c) => c,
        Err(f) => return fail(f),
    };
    let Some(label) = lock else {
        return match ctx.command_as(&mut conn, Step::Run, Some(command), Soft::Stops) {
            Ok(()) => Outcome {
                result: TargetResult::Succeeded,
                failed_step: None,
                error: None,
            },
            Err(f) => fail(f),
        };
    };
    let lock = match take_lock(ctx, &mut conn, label) {
        Ok(l) => l,
        Err(f) => return fail(f),
    };
    let result = ctx.command_as(&mut conn, Step::Run, Some(command), Soft::Stops);
    unlock_and_finish(ctx, Some(conn), &lock, result)
}
