//! HTTP health checks: a rule's `health` that is an `http://` or `https://` URL is polled
//! from the machine running dropship (not from the host) until it answers 2xx or
//! `health_timeout` has passed, one try every `health_interval`.
//!
//! Why poll instead of one request: a service restarted by `upgrade` takes a while to
//! listen, and a health endpoint often answers 503 while it warms up. Every try is
//! reported (attempt, status) so the console and the journal show how it went.

use std::path::PathBuf;
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
    // The verifier FTPS uses: `tls_ca` and `tls_verify` mean the same for both.
    let tls = crate::transport::tls::http_client_config(check.tls_verify, check.tls_ca.as_deref())
        .map_err(fail)?;
    reqwest::blocking::Client::builder()
        .timeout(check.request_timeout)
        .connect_timeout(check.request_timeout)
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("dropship/", env!("CARGO_PKG_VERSION"), " health"))
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| fail(e.to_string()))
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

pub use crate::config::health::{Probe, is_probe};

/// How a [`Probe`] (`proc:`/`port:`) went: what its last try said, or why it failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "health check failed: {last} (after {attempts} tries in {waited_secs}s)\n  help: check the service on the host, or raise `health_timeout`"
    )]
    Unhealthy {
        last: String,
        attempts: u32,
        waited_secs: u64,
    },
    #[error("health check `{probe}`: {detail}")]
    Cannot { probe: String, detail: String },
    #[error("health check: cancelled")]
    Cancelled,
}

/// Runs `probe`'s script on the host through `shell` until it passes (its last line
/// returned), `timeout` passes (one try every `interval`), or `stop()`. Each try's line goes
/// to `progress`. A host that cannot be looked at (no `/proc`, no `ps`) fails at once: trying
/// again would not help.
pub fn poll_probe(
    shell: &mut dyn crate::transport::Shell,
    probe: &Probe,
    timeout: Duration,
    interval: Duration,
    try_timeout: Duration,
    stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u32, &str),
) -> Result<String, ProbeError> {
    let script = probe.script();
    let start = Instant::now();
    let deadline = start + timeout;
    let mut n = 0;
    loop {
        if stop() {
            return Err(ProbeError::Cancelled);
        }
        n += 1;
        let mut last = String::new();
        let status = shell.exec(&script, try_timeout, stop, &mut |stream, line| {
            if stream == crate::transport::Stream::Stdout && !line.trim().is_empty() {
                last = line.trim().to_owned();
            }
        });
        let cannot = |detail: String| ProbeError::Cannot {
            probe: probe_source(probe),
            detail,
        };
        match status {
            Ok(0) => {
                progress(n, &last);
                return Ok(last);
            }
            Ok(1) => progress(n, &last),
            Ok(code) if last.is_empty() => {
                return Err(cannot(format!("the check exited with status {code}")));
            }
            Ok(_) => return Err(cannot(last)),
            Err(crate::transport::TransportError::Cancelled { .. }) => {
                return Err(ProbeError::Cancelled);
            }
            Err(e) => return Err(cannot(e.to_string())),
        }
        let next = Instant::now() + interval;
        if next >= deadline {
            return Err(ProbeError::Unhealthy {
                last,
                attempts: n,
                waited_secs: start.elapsed().as_secs(),
            });
        }
        while Instant::now() < next {
            if stop() {
                return Err(ProbeError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
        }
    }
}

/// `proc:NAME:1-4` / `port:N` as the user wrote it (near enough) for messages.
fn probe_source(p: &Probe) -> String {
    match p {
        Probe::Proc { name, min, max } => match max {
            Some(m) => format!("proc:{name}:{min}-{m}"),
            None => format!("proc:{name}:{min}"),
        },
        Probe::Port { port } => format!("port:{port}"),
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

    /// A self-signed certificate for 127.0.0.1 as `openssl req -x509` makes it (a CA
    /// certificate, what FTPS servers are set up with): `(cert.pem, key.pem)`.
    fn self_signed(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        let out = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (needed by the FTPS tests too)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (cert, key)
    }

    /// An HTTPS server on loopback answering every request `200 OK`, until the test ends.
    fn https_server(cert: &std::path::Path, key: &std::path::Path) -> std::net::SocketAddr {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use std::io::{Read, Write};
        let certs = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(crate::transport::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, sock);
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        addr
    }

    /// FTPS's way in: a rustls client with `tls::client_config`, one GET by hand.
    fn ftps_path(addr: std::net::SocketAddr, verify: bool, ca: Option<&std::path::Path>) -> bool {
        use std::io::{Read, Write};
        let config = crate::transport::tls::client_config(verify, ca).unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        if tls
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .and_then(|()| tls.flush())
            .is_err()
        {
            return false;
        }
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer);
        answer.starts_with(b"HTTP/1.1 200")
    }

    /// The health check's way in: its own reqwest client.
    fn https_path(addr: std::net::SocketAddr, verify: bool, ca: Option<&std::path::Path>) -> bool {
        let check = Check {
            url: format!("https://{addr}/health"),
            timeout: Duration::from_secs(10),
            interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            tls_verify: verify,
            tls_ca: ca.map(PathBuf::from),
        };
        client(&check)
            .unwrap()
            .get(&check.url)
            .send()
            .is_ok_and(|r| r.status().as_u16() == 200)
    }

    /// `tls_ca` and `tls_verify` mean one thing: the same server certificate is accepted or
    /// refused alike by FTPS's client and by the health check's HTTPS client.
    #[test]
    fn ftps_and_https_trust_the_same_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "server");
        let (other, _) = self_signed(dir.path(), "other");
        let addr = https_server(&cert, &key);
        for (verify, ca, trusted) in [
            (true, Some(cert.as_path()), true),
            (true, Some(other.as_path()), false),
            (true, None, false),
            (false, None, true),
            (false, Some(other.as_path()), true),
        ] {
            let case = format!("tls_verify = {verify}, tls_ca = {ca:?}");
            assert_eq!(ftps_path(addr, verify, ca), trusted, "FTPS, {case}");
            assert_eq!(https_path(addr, verify, ca), trusted, "HTTPS, {case}");
        }
    }
}
