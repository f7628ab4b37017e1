//! `notify = URL`: a JSON summary POSTed when a dispatch (or a rollback) ends.
//!
//! A notification must never block or fail a dispatch: it is sent from its own thread
//! after the dispatch has finished, retried with backoff on what a retry can fix (no
//! answer, 5xx, 429), and given up after a bounded total time ([`Policy::budget`]). The
//! outcome is logged (tracing) and reported as a [`Event::Notice`], so the console and the
//! journal show a webhook that did not take it. The returned [`Pending`] lets a front end
//! that is about to exit wait for it, up to a bound, so the message is not lost.
//!
//! The payload holds no secrets: bundle, rule, per-host results and errors (which never
//! carry passwords), and a `text` line that chat webhooks (Slack, Mattermost, Rocket.Chat)
//! display. Webhook URLs often embed a token in their path, so a URL is only ever shown
//! as its scheme and host.

use crate::engine::events::{Event, Level, TargetResult, now_ms};
use crate::engine::job::Outcome;
use crate::model::events::Emit;
use serde::Serialize;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use crate::engine::rollout::Kind;
use crate::engine::rollout::Summary;

/// The subscriber of finished dispatches: sends `s` to its rule's `notify` URL (if any) in
/// the background. The [`Pending`] it returns is what a front end about to exit waits for (up
/// to [`EXIT_WAIT`]), so a notification is not lost.
pub fn finished(s: &Summary, emit: Emit) -> Option<Pending> {
    let url = s.notify.as_ref()?;
    let payload = Payload::new(s.kind, &s.bundle, &s.rule, s.id, &s.targets, s.duration_ms);
    Some(spawn(
        url.clone(),
        payload,
        Policy::for_timeout(s.timeout),
        emit,
    ))
}

/// One host in the payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostReport {
    pub host: String,
    pub result: TargetResult,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// The JSON body. Field names are the documented contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payload {
    /// `dispatch` or `rollback`.
    pub event: Kind,
    /// The journal's id (`dropship --history`).
    pub dispatch: i64,
    pub bundle: String,
    pub rule: String,
    /// Every host succeeded.
    pub ok: bool,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
    pub duration_ms: i64,
    /// Milliseconds since the Unix epoch.
    pub finished_at: i64,
    pub hosts: Vec<HostReport>,
    /// One line for chat webhooks.
    pub text: String,
}

fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl Payload {
    /// The report of dispatch `id` of `bundle` via `rule`: each host's outcome and time,
    /// and how long it all took.
    pub fn new(
        kind: Kind,
        bundle: &str,
        rule: &str,
        id: i64,
        targets: &[(String, Outcome, i64)],
        duration_ms: i64,
    ) -> Payload {
        let hosts: Vec<HostReport> = targets
            .iter()
            .map(|(h, o, ms)| HostReport {
                host: h.clone(),
                result: o.result,
                failed_step: o.failed_step.map(|st| st.as_str().to_owned()),
                error: o.error.clone(),
                duration_ms: *ms,
            })
            .collect();
        let count = |r: TargetResult| hosts.iter().filter(|h| h.result == r).count();
        let succeeded = count(TargetResult::Succeeded);
        let ok = !hosts.is_empty() && succeeded == hosts.len();
        let what = match kind {
            Kind::Dispatch => bundle.to_owned(),
            Kind::Rollback => "rollback".to_owned(),
            Kind::Run { action: false, .. } => "run".to_owned(),
            Kind::Run { action: true, .. } => "action".to_owned(),
        };
        let mut text = format!(
            "dropship #{}: {what} via [{rule}] {} on {}/{} host(s) in {}",
            id,
            if ok { "succeeded" } else { "FAILED" },
            succeeded,
            hosts.len(),
            secs(duration_ms)
        );
        let bad: Vec<String> = hosts
            .iter()
            .filter(|h| h.result != TargetResult::Succeeded)
            .map(|h| match &h.failed_step {
                Some(st) => format!("{} {} at {st}", h.host, h.result.as_str()),
                None => format!("{} {}", h.host, h.result.as_str()),
            })
            .collect();
        if !bad.is_empty() {
            let more = bad.len().saturating_sub(5);
            text.push_str(": ");
            text.push_str(&bad[..bad.len().min(5)].join(", "));
            if more > 0 {
                text.push_str(&format!(" and {more} more"));
            }
        }
        Payload {
            event: kind,
            dispatch: id,
            bundle: bundle.to_owned(),
            rule: rule.to_owned(),
            ok,
            succeeded: count(TargetResult::Succeeded),
            failed: count(TargetResult::Failed),
            skipped: count(TargetResult::Skipped),
            cancelled: count(TargetResult::Cancelled),
            duration_ms,
            finished_at: now_ms(),
            hosts,
            text,
        }
    }
}

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Tries in all.
    pub attempts: u32,
    /// One request may take this long.
    pub request_timeout: Duration,
    /// The first pause between tries; each next one doubles.
    pub backoff: Duration,
    /// Nothing is sent after this long since the first try.
    pub budget: Duration,
}

impl Policy {
    /// The policy for a rule whose network `timeout` is `timeout`: four tries, at most 10 s
    /// each, 1 s / 2 s / 4 s apart, all within 30 s.
    pub fn for_timeout(timeout: Duration) -> Policy {
        Policy {
            attempts: 4,
            request_timeout: timeout.min(Duration::from_secs(10)),
            backoff: Duration::from_secs(1),
            budget: Duration::from_secs(30),
        }
    }
}

/// How long a front end that is exiting waits for a notification still on its way. The
/// notifier gives up by itself within [`Policy::budget`]; this bounds the wait even so.
pub const EXIT_WAIT: Duration = Duration::from_secs(35);

/// A notification on its way. Cheap to clone.
#[derive(Clone, Default)]
pub struct Pending(Arc<(Mutex<bool>, Condvar)>);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("done", &self.is_done())
            .finish()
    }
}

impl Pending {
    pub fn is_done(&self) -> bool {
        *self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the notifier is done (delivered or given up), at most `bound`. Returns
    /// whether it is done.
    pub fn wait(&self, bound: Duration) -> bool {
        let (lock, cv) = &*self.0;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, bound, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    fn finish(&self) {
        let (lock, cv) = &*self.0;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

/// The URL as it may be shown: scheme, host and port only (webhook paths hold tokens).
pub fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}/…", u.scheme()),
            (Some(h), None) => format!("{}://{h}/…", u.scheme()),
            _ => "(webhook)".into(),
        },
        Err(_) => "(webhook)".into(),
    }
}

/// Why one try failed, and whether another may help.
struct TryError {
    detail: String,
    retry: bool,
}

fn send_once(
    client: &reqwest::blocking::Client,
    url: &str,
    body: &str,
    timeout: Duration,
) -> Result<u16, TryError> {
    let res = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send();
    match res {
        Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
        Ok(r) => {
            let s = r.status();
            Err(TryError {
                detail: format!("HTTP {s}"),
                retry: s.is_server_error() || s.as_u16() == 429 || s.as_u16() == 408,
            })
        }
        Err(e) => Err(TryError {
            detail: if e.is_timeout() {
                "no answer in time".into()
            } else if e.is_connect() {
                "cannot connect".into()
            } else {
                "request failed".into()
            },
            retry: true,
        }),
    }
}

/// Sends `payload` to `url` on its own thread and returns at once. Reports through `emit`
/// as notices of dispatch `payload.dispatch`.
pub fn spawn(url: String, payload: Payload, policy: Policy, emit: Emit) -> Pending {
    let pending = Pending::default();
    let done = pending.clone();
    let id = payload.dispatch;
    let spawned = std::thread::Builder::new()
        .name("dropship-notify".into())
        .spawn(move || {
            deliver(&url, &payload, policy, &*emit);
            done.finish();
        });
    if let Err(e) = spawned {
        tracing::error!(dispatch = id, "notify: cannot start a thread: {e}");
        pending.finish();
    }
    pending
}

/// The sending loop: runs on the notifier's thread.
fn deliver(url: &str, payload: &Payload, policy: Policy, emit: &(dyn Fn(Event) + Send + Sync)) {
    let id = payload.dispatch;
    let to = shown(url);
    let notice = |level: Level, message: String| {
        emit(Event::Notice {
            dispatch: id,
            at: now_ms(),
            host: None,
            level,
            message,
        })
    };
    let body = match serde_json::to_string(payload) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(dispatch = id, "notify: cannot encode the summary: {e}");
            return;
        }
    };
    // The TLS configuration of FTPS and health URLs, with its defaults (platform roots).
    let client = match crate::transport::tls::http_client_config(true, None).and_then(|tls| {
        reqwest::blocking::Client::builder()
            .connect_timeout(policy.request_timeout)
            .user_agent(concat!("dropship/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| e.to_string())
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(dispatch = id, "notify: cannot build an HTTP client: {e}");
            notice(
                Level::Warning,
                format!("notify: summary not sent to {to}: {e}"),
            );
            return;
        }
    };
    let start = Instant::now();
    let mut delay = policy.backoff;
    let mut last = String::new();
    let mut n = 0;
    while n < policy.attempts.max(1) {
        let left = policy.budget.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        n += 1;
        match send_once(&client, url, &body, policy.request_timeout.min(left)) {
            Ok(status) => {
                tracing::info!(
                    dispatch = id,
                    attempt = n,
                    status,
                    "notify: summary delivered to {to}"
                );
                notice(
                    Level::Info,
                    format!("notify: summary delivered to {to} (try {n})"),
                );
                return;
            }
            Err(e) => {
                tracing::warn!(dispatch = id, attempt = n, "notify: {to}: {}", e.detail);
                last = e.detail;
                if !e.retry {
                    break;
                }
                let left = policy.budget.saturating_sub(start.elapsed());
                if n >= policy.attempts || delay >= left {
                    break;
                }
                notice(
                    Level::Info,
                    format!("notify: try {n} to {to} failed ({last}); retrying in {delay:?}"),
                );
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
            }
        }
    }
    tracing::error!(
        dispatch = id,
        attempts = n,
        "notify: summary not delivered to {to}: {last}"
    );
    notice(
        Level::Warning,
        format!(
            "notify: summary NOT delivered to {to} after {n} tr{}: {last} (the dispatch itself is unaffected)",
            if n == 1 { "y" } else { "ies" }
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::Step;

    fn summary() -> crate::engine::rollout::Summary {
        crate::engine::rollout::Summary {
            id: 7,
            bundle_sha256: None,
            targets: vec![
                (
                    "web1".into(),
                    Outcome {
                        result: TargetResult::Succeeded,
                        failed_step: None,
                        error: None,
                    },
                    1200,
                ),
                (
                    "web2".into(),
                    Outcome {
                        result: TargetResult::Failed,
                        failed_step: Some(Step::Health),
                        error: Some("health check failed".into()),
                    },
                    3400,
                ),
            ],
            duration_ms: 3500,
            kind: Kind::Dispatch,
            bundle: "app-1.4.2.tgz".into(),
            rule: "app-.*".into(),
            notify: None,
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn payload_shape_and_text() {
        let s = summary();
        let p = Payload::new(
            Kind::Dispatch,
            "app-1.4.2.tgz",
            "app-.*",
            s.id,
            &s.targets,
            s.duration_ms,
        );
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["event"], "dispatch");
        assert_eq!(v["ok"], false);
        assert_eq!(v["failed"], 1);
        assert_eq!(v["hosts"][1]["failed_step"], "health");
        assert_eq!(v["hosts"][0]["result"], "succeeded");
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("app-1.4.2.tgz"), "{text}");
        assert!(text.contains("web2 failed at health"), "{text}");
        assert!(text.contains("1/2"), "{text}");
    }

    #[test]
    fn urls_are_shown_without_their_token() {
        assert_eq!(
            shown("https://hooks.example.com/services/T000/B000/XXXX"),
            "https://hooks.example.com/…"
        );
        assert_eq!(
            shown("http://127.0.0.1:8080/x?k=s"),
            "http://127.0.0.1:8080/…"
        );
    }

    #[test]
    fn pending_waits_and_reports() {
        let p = Pending::default();
        assert!(!p.wait(Duration::from_millis(10)));
        let q = p.clone();
        std::thread::spawn(move || q.finish());
        assert!(p.wait(Duration::from_secs(10)));
        assert!(p.is_done());
    }
}
