//! HTTP health checks: a rule's `health` that is an `http://` or `https://` URL is polled
//! from the machine running dropship (not from the host) until it answers 2xx or
//! `health_timeout` has passed, one try every `health_interval`.
//!
//! Why poll instead of one request: a service restarted by `upgrade` takes a while to
//! listen, and a health endpoint often answers 503 while it warms up. Every try is
//! reported (attempt, status) so the console and the journal show how it went.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::plan::health_url::{is_url, redact};

/// The URL from a rendered `health` value (see [`crate::plan::health_url::url_from_rendered`]).
pub fn url_from_rendered(rendered: &str) -> Result<String, HealthError> {
    crate::plan::health_url::url_from_rendered(rendered).map_err(|detail| HealthError::BadUrl {
        url: redact(rendered),
        detail,
    })
}

/// How to poll.
#[derive(Debug, Clone)]
pub struct Check {
    pub url: String,
    /// Give up after this long.
    pub timeout: Duration,
    /// Pause between tries.
    pub interval: Duration,
    /// One request may take this long (the rule's network `timeout`).
    pub request_timeout: Duration,
    pub tls_verify: bool,
    pub tls_ca: Option<PathBuf>,
}

/// One try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub n: u32,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// `HTTP 503 Service Unavailable`, or why there was no answer.
    pub detail: String,
}

impl Attempt {
    pub fn healthy(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(
        "health check {url} failed: no 2xx answer in {waited_secs}s ({attempts} tries, last: {last})\n  help: check the service's logs on the host, or raise `health_timeout`"
    )]
    Unhealthy {
        url: String,
        attempts: u32,
        last: String,
        waited_secs: u64,
    },
    #[error("health check {url}: cancelled")]
    Cancelled { url: String },
    #[error("health URL {url}: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("health check {url}: {detail}\n  help: check `tls_ca` and `tls_verify`")]
    Client { url: String, detail: String },
}

fn client(check: &Check) -> Result<reqwest::blocking::Client, HealthError> {
    let fail = |detail: String| HealthError::Client {
        url: redact(&check.url),
        detail,
    };
    let mut b = reqwest::blocking::Client::builder()
        .timeout(check.request_timeout)
        .connect_timeout(check.request_timeout)
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("dropship/", env!("CARGO_PKG_VERSION"), " health"))
        .tls_danger_accept_invalid_certs(!check.tls_verify);
    if let Some(ca) = &check.tls_ca {
        b = b.add_root_certificate(load_ca(ca).map_err(fail)?);
    }
    b.build().map_err(|e| fail(e.to_string()))
}

fn load_ca(path: &Path) -> Result<reqwest::Certificate, String> {
    let pem = std::fs::read(path).map_err(|e| format!("tls_ca {}: {e}", path.display()))?;
    reqwest::Certificate::from_pem(&pem).map_err(|e| format!("tls_ca {}: {e}", path.display()))
}

/// Polls until a 2xx answer (returned), `check.timeout`, or `stop()`. `progress` hears
/// every try.
pub fn poll(
    check: &Check,
    stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(&Attempt),
) -> Result<Attempt, HealthError> {
    let shown = redact(&check.url);
    let parsed = reqwest::Url::parse(&check.url).map_err(|e| HealthError::BadUrl {
        url: shown.clone(),
        detail: e.to_string(),
    })?;
    let client = client(check)?;
    let start = Instant::now();
    let deadline = start + check.timeout;
    let mut n = 0;
    loop {
        if stop() {
            return Err(HealthError::Cancelled { url: shown });
        }
        n += 1;
        let attempt = match client.get(parsed.clone()).send() {
            Ok(r) => {
                let s = r.status();
                Attempt {
                    n,
                    status: Some(s.as_u16()),
                    detail: format!("HTTP {s}"),
                }
            }
            Err(e) => Attempt {
                n,
                status: None,
                detail: describe(&e),
            },
        };
        progress(&attempt);
        if attempt.healthy() {
            return Ok(attempt);
        }
        let next = Instant::now() + check.interval;
        if next >= deadline {
            return Err(HealthError::Unhealthy {
                url: shown,
                attempts: n,
                last: attempt.detail,
                waited_secs: start.elapsed().as_secs(),
            });
        }
        while Instant::now() < next {
            if stop() {
                return Err(HealthError::Cancelled { url: shown });
            }
            std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
        }
    }
}

/// The cause of a failed request, in a few words (reqwest's own text nests its causes).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut root: &dyn Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    format!("{kind}: {root}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_commands() {
        assert!(is_url("http://{host}:8080/health"));
        assert!(is_url("  HTTPS://x/"));
        assert!(!is_url("curl -f http://x/"));
    }

    #[test]
    fn rendered_urls_are_one_word() {
        assert_eq!(
            url_from_rendered("http://'a;b':8080/h").unwrap(),
            "http://a;b:8080/h"
        );
        assert!(url_from_rendered("http://x/ y").is_err());
    }

    #[test]
    fn redaction_drops_secrets() {
        assert_eq!(
            redact("https://u:pw@h.example/x?token=s3cret#f"),
            "https://h.example/x?…"
        );
        assert!(!redact("not a url?token=s3cret").contains("s3cret"));
    }
}
