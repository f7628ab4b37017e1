//! One target's job: connect -> lock -> pre -> upload -> upgrade -> post -> health ->
//! unlock, with `rollback` when a step after the upload fails. Blocking: it runs on its own
//! thread and reports every transition and output line as an [`Event`].

use super::events::{Event, Level, Step, StepOutcome, TargetResult, now_ms};
use super::lock::{self, Identity, Lock, LockError, Wait};
use crate::config::Rule;
use crate::plan::{Plan, Target};
use crate::transport::known_hosts::KnownHostsFiles;
use crate::transport::upload::{self, Job, RetryPolicy};
use crate::transport::{self, Connection, TransportError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    pub bundle_sha256: &'a str,
    pub known_hosts: &'a KnownHostsFiles,
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

    /// Runs one of the rule's commands, streaming its output. A non-zero exit fails it.
    fn command(&self, conn: &mut Connection, step: Step) -> Result<(), StepFailure> {
        let cmd = match step {
            Step::Pre => self.target.commands.pre.as_deref(),
            Step::Upgrade => self.target.commands.upgrade.as_deref(),
            Step::Post => self.target.commands.post.as_deref(),
            Step::Health => self.target.commands.health.as_deref(),
            Step::Rollback => self.target.commands.rollback.as_deref(),
            _ => None,
        };
        let Some(cmd) = cmd else { return Ok(()) };
        if self.skip.done.contains(&step) {
            self.notice(
                Level::Info,
                format!("{step} already done before the interruption"),
            );
            return Ok(());
        }
        // Rollback runs even after a cancel request: it is how a half-done host is put back.
        if step != Step::Rollback && self.cancel.is_requested() {
            return Err(StepFailure {
                step,
                error: NOT_STARTED.into(),
                cancelled: true,
            });
        }
        let t = self.started(step, Some(cmd));
        if step == Step::Health && (cmd.starts_with("'http://") || cmd.starts_with("'https://")) {
            // A URL health check is quoted like any value; undo that for the HTTP client.
            let url = shlex::split(cmd).and_then(|v| v.into_iter().next());
            return self.health_url(t, url.as_deref().unwrap_or(cmd));
        }
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
        let res = shell.exec(
            cmd,
            self.rule().step_timeout,
            // A rollback is how a half-done host is put back: a cancel does not stop it,
            // only its own step timeout does.
            &|| step != Step::Rollback && cancel.is_hard(),
            &mut |stream, line| {
                emit(Event::Output {
                    dispatch,
                    at: now_ms(),
                    host: host.clone(),
                    step,
                    stream,
                    line: line.to_owned(),
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

    /// Polls a health URL until it answers 2xx or `step_timeout` passes.
    fn health_url(&self, t: Instant, url: &str) -> Result<(), StepFailure> {
        let deadline = Instant::now() + self.rule().step_timeout;
        let client = reqwest::blocking::Client::builder()
            .timeout(self.rule().timeout)
            .build();
        let mut last = String::from("no answer");
        if let Ok(client) = client {
            while Instant::now() < deadline && !self.cancel.is_hard() {
                match client.get(url).send() {
                    Ok(r) if r.status().is_success() => {
                        self.finished(Step::Health, t, StepOutcome::Ok, None, None);
                        return Ok(());
                    }
                    Ok(r) => last = format!("HTTP {}", r.status()),
                    Err(e) => last = e.to_string(),
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        let e = TransportError::Setup {
            host: self.host(),
            detail: format!("health check {url} failed: {last}"),
        };
        Err(self.fail(Step::Health, t, None, e))
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
        match transport::connect(ctx.target, ctx.rule(), ctx.known_hosts) {
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

/// Runs the whole job for one target.
pub fn run(ctx: &JobContext) -> Outcome {
    let fail = |f: StepFailure| Outcome {
        result: if f.cancelled {
            TargetResult::Cancelled
        } else {
            TargetResult::Failed
        },
        failed_step: Some(f.step),
        error: Some(f.error),
    };
    let rule = ctx.rule();
    let mut conn = match ctx.step(Step::Connect, || connect_with_retries(ctx)) {
        Ok(c) => c,
        Err(f) => return fail(f),
    };
    let lock = match take_lock(ctx, &mut conn) {
        Ok(l) => l,
        Err(f) => return fail(f),
    };
    let (mut conn, result) = run_locked(ctx, conn);
    // Release over the session we have; if it is gone or dead (a step failed on a dropped
    // connection), over a fresh one: a lock left behind blocks every later dispatch.
    let released = conn
        .as_mut()
        .is_some_and(|c| lock::release(c, &lock).is_ok());
    if !released {
        let again = transport::connect(ctx.target, rule, ctx.known_hosts)
            .and_then(|mut c| lock::release(&mut c, &lock));
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

fn take_lock(ctx: &JobContext, conn: &mut Connection) -> Result<Lock, StepFailure> {
    let t = ctx.started(Step::Lock, None);
    let rule = ctx.rule();
    let path = ctx.target.lock_path.clone();
    let id = Identity {
        host: &ctx.target.host.name,
        holder: ctx.holder,
        bundle: &ctx.plan.bundle,
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
    for step in [Step::Upgrade, Step::Post, Step::Health] {
        if let Err(f) = ctx.command(&mut conn, step) {
            if f.error == NOT_STARTED {
                // Cancelled between steps: what ran succeeded, nothing is half-done, so
                // there is nothing to roll back (that would undo a good upgrade).
                return (Some(conn), Err(f));
            }
            // After the upload a failure (or a step killed by a cancel) leaves the host
            // half-done: put it back if the rule knows how.
            if let Err(rf) = ctx.command(&mut conn, Step::Rollback) {
                ctx.notice(Level::Warning, format!("rollback failed too: {}", rf.error));
            }
            return (Some(conn), Err(f));
        }
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
        local_sha256: Some(ctx.bundle_sha256),
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
            None => transport::connect(ctx.target, rule, ctx.known_hosts),
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
