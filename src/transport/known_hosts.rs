//! Host key verification against `~/.ssh/known_hosts` and dropship's own known_hosts.
//!
//! `strict` refuses a host whose key is in neither file. `accept-new` records an unknown
//! key in dropship's file (never in the user's) and goes on. A key that differs from a
//! recorded one is refused under both policies: that is what an attack looks like.
//!
//! Host certificates: libssh2 negotiates `*-cert-v01@openssh.com` host keys and checks the
//! handshake signature with the key inside the certificate, but it neither reads
//! `@cert-authority`/`@revoked` lines (its parser fails on them) nor checks the CA's
//! signature. Both are done here, as OpenSSH does: a certificate signed by a CA trusted for
//! the host (principal, validity, signature) is accepted; otherwise the plain key inside it
//! is checked like any host key.
//!
//! Each file is parsed once per process (and again only when its text changes), and a
//! connection hands libssh2 only the lines that can match its host (`index`): with a
//! 1,000-line known_hosts and 1,000 hosts, reading every line for every connection was
//! quadratic work.

use super::TransportError;
use crate::config::HostKeyPolicy;
use base64::Engine;
use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, Session};
use std::io::Write;
use std::path::{Path, PathBuf};

mod index;

/// The files consulted, in order; the last is dropship's, where `accept-new` writes.
#[derive(Debug, Clone)]
pub struct KnownHostsFiles {
    pub user: Option<PathBuf>,
    pub dropship: PathBuf,
}

impl KnownHostsFiles {
    /// `~/.ssh/known_hosts` and `$XDG_STATE_HOME/dropship/known_hosts`.
    pub fn default_files() -> KnownHostsFiles {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        KnownHostsFiles {
            user: home.as_ref().map(|h| h.join(".ssh").join("known_hosts")),
            dropship: crate::config::state_dir().join("known_hosts"),
        }
    }
}

fn key_type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// The known_hosts name of a host: `host` on port 22, `[host]:port` elsewhere.
pub fn entry_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The known_hosts files as libssh2 reads them, in order, narrowed to the lines that can
/// match the host connected to: used both to choose the host key types to ask for and to
/// check the key presented.
pub struct Loaded {
    files: Vec<(PathBuf, Result<Selected, String>)>,
    /// The names the files were narrowed to, and the port.
    hosts: Vec<String>,
    port: u16,
}

/// One file: its parse (shared by every connection) and a libssh2 list of the lines that
/// can match the host.
struct Selected {
    kh: ssh2::KnownHosts,
    parsed: std::sync::Arc<index::Parsed>,
}

impl Loaded {
    /// `@cert-authority` and `@revoked` lines of the files that could be read.
    fn marked(&self) -> impl Iterator<Item = &Marked> {
        self.files
            .iter()
            .filter_map(|(_, f)| f.as_ref().ok())
            .flat_map(|f| f.parsed.marked.iter())
    }

    /// Whether `host` on `port` is one the files were narrowed to.
    fn covers(&self, host: &str, port: u16) -> bool {
        port == self.port && self.hosts.iter().any(|h| h == host)
    }
}

/// A known_hosts line with a marker.
#[derive(Debug, Clone)]
pub struct Marked {
    pub revoked: bool,
    /// Comma-separated host patterns, as written.
    pub patterns: String,
    pub key: ssh_key::PublicKey,
    /// `FILE:LINE`, for messages.
    pub at: String,
}

/// Reads the files of `files` that exist, for checking `hosts` (the names the host may be
/// looked up by) on `port`. Marked lines are kept aside; the rest go to libssh2.
pub fn load(session: &Session, files: &KnownHostsFiles, hosts: &[&str], port: u16) -> Loaded {
    load_with(session, files, &[], hosts, port)
}

/// Reads the files of `files` that exist, with `also` (more files from ssh_config's
/// `UserKnownHostsFile`/`GlobalKnownHostsFile`, read-only) between the user's and dropship's,
/// for checking `hosts` on `port`.
///
/// Each file is parsed once per process and version of its text (a bad line reported as
/// `cannot read known_hosts FILE:LINE: …`, as libssh2 found it); libssh2 then gets only the
/// lines that can match one of `hosts` (see the `index` module), so a connection costs the
/// same whether the file has ten lines or ten thousand.
pub fn load_with(
    session: &Session,
    files: &KnownHostsFiles,
    also: &[PathBuf],
    hosts: &[&str],
    port: u16,
) -> Loaded {
    let candidates = files
        .user
        .iter()
        .chain(also)
        .chain(std::iter::once(&files.dropship));
    let files = candidates
        .filter(|f| f.is_file())
        .map(|file| (file.clone(), select(session, file, hosts, port)))
        .collect();
    Loaded {
        files,
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        port,
    }
}

fn select(session: &Session, file: &Path, hosts: &[&str], port: u16) -> Result<Selected, String> {
    let parsed = index::parsed(session, file)?;
    let mut kh = session.known_hosts().map_err(|e| e.to_string())?;
    for (n, line) in parsed.select(hosts, port) {
        kh.read_str(line, KnownHostFileKind::OpenSSH).map_err(|e| {
            format!(
                "cannot read known_hosts {}:{n}: {e}\n  help: fix or move the file",
                file.display()
            )
        })?;
    }
    Ok(Selected { kh, parsed })
}

/// `@cert-authority PATTERNS TYPE BASE64 [COMMENT]` or `@revoked …`.
pub fn parse_marked(line: &str, at: String) -> Result<Marked, String> {
    let mut parts = line.split_whitespace();
    let marker = parts.next().unwrap_or_default();
    let revoked = match marker {
        "@cert-authority" => false,
        "@revoked" => true,
        other => return Err(format!("unknown marker `{other}`")),
    };
    let patterns = parts.next().ok_or("no host patterns")?.to_owned();
    let rest = parts.collect::<Vec<_>>().join(" ");
    let key = ssh_key::PublicKey::from_openssh(&rest)
        .map_err(|e| format!("cannot read the key of this `{marker}` line: {e}"))?;
    Ok(Marked {
        revoked,
        patterns,
        key,
        at,
    })
}

/// Whether the comma-separated known_hosts `patterns` cover `host` on `port`, as OpenSSH
/// matches them: against `host` on port 22, `[host]:port` elsewhere; `*` and `?` are
/// wildcards; a matching `!pattern` excludes the host. Hashed patterns (`|1|…`) never
/// match here.
pub fn patterns_match(patterns: &str, host: &str, port: u16) -> bool {
    let name = entry_name(host, port).to_ascii_lowercase();
    let mut matched = false;
    for p in patterns.split(',') {
        let (negated, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        if glob(p.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Host certificate algorithms, asked for first when a CA is trusted for the host.
const CERT_ALGORITHMS: &[&str] = &[
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
];

/// Plain host key algorithms for a host nothing is recorded for, the commonest first.
const DEFAULT_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
];

/// The host key algorithms to ask `host:port` for: certificate types first when a CA is
/// trusted for it, then the plain types on record (see [`recorded_algorithms`]), else all.
pub fn host_key_order(known: &Loaded, host: &str, port: u16) -> Vec<&'static str> {
    let mut order = Vec::new();
    if known
        .marked()
        .any(|m| !m.revoked && patterns_match(&m.patterns, host, port))
    {
        order.extend_from_slice(CERT_ALGORITHMS);
    }
    let recorded = recorded_algorithms(known, host, port);
    if recorded.is_empty() {
        order.extend_from_slice(DEFAULT_ALGORITHMS);
    } else {
        order.extend(recorded);
    }
    order
}

/// Whether the types asked for are narrowed to what is recorded for the host (so a host
/// that changed its key type fails the handshake rather than showing a new key).
pub fn narrowed(known: &Loaded, host: &str, port: u16) -> Option<Vec<&'static str>> {
    let recorded = recorded_algorithms(known, host, port);
    (!recorded.is_empty()).then_some(recorded)
}

/// The key type named at the start of an SSH public key blob.
fn blob_type(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

/// The host key algorithms to ask for, when the files already hold keys for `host:port`:
/// only those types, as OpenSSH does. Otherwise a host recorded by its ECDSA key, whose
/// server also has an ed25519 one, would negotiate ed25519 and look "changed". Hashed
/// entries are found by checking each recorded key against the host. Empty when nothing
/// is recorded (then any type may be negotiated and `host_key` decides).
///
/// Each file's types come in the order its keys first appear in the whole file (not only in
/// the lines kept for the host), as when every entry of the file was walked.
pub fn recorded_algorithms(known: &Loaded, host: &str, port: u16) -> Vec<&'static str> {
    let mut algs: Vec<&'static str> = Vec::new();
    if !known.covers(host, port) {
        return algs;
    }
    // A file that cannot be read is reported by `verify`, after the handshake.
    for f in known.files.iter().filter_map(|(_, f)| f.as_ref().ok()) {
        let mut found: Vec<(usize, &'static [&'static str])> = Vec::new();
        for entry in f.kh.hosts().unwrap_or_default() {
            let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(entry.key()) else {
                continue;
            };
            if !matches!(f.kh.check_port(host, port, &blob), CheckResult::Match) {
                continue;
            }
            let names: &'static [&'static str] = match blob_type(&blob).as_deref() {
                Some("ssh-ed25519") => &["ssh-ed25519"],
                Some("ecdsa-sha2-nistp256") => &["ecdsa-sha2-nistp256"],
                Some("ecdsa-sha2-nistp384") => &["ecdsa-sha2-nistp384"],
                Some("ecdsa-sha2-nistp521") => &["ecdsa-sha2-nistp521"],
                Some("ssh-rsa") => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
                _ => &[],
            };
            found.push((f.parsed.key_position(&blob), names));
        }
        found.sort_by_key(|(at, _)| *at);
        for n in found.into_iter().flat_map(|(_, names)| names) {
            if !algs.contains(n) {
                algs.push(n);
            }
        }
    }
    algs
}

/// Checks the key the server presented in `session` for `host:port`.
pub fn verify(
    session: &Session,
    known: &Loaded,
    host: &str,
    port: u16,
    policy: HostKeyPolicy,
    files: &KnownHostsFiles,
) -> Result<(), TransportError> {
    let setup = |detail: String| TransportError::Setup {
        host: host.to_owned(),
        detail,
    };
    let (key, kind) = session
        .host_key()
        .ok_or_else(|| setup("the server presented no host key".into()))?;
    if blob_type(key).is_some_and(|t| t.ends_with(CERT_SUFFIX)) {
        return verify_certificate(key, known, host, port, policy, files);
    }
    let key_type = key_type_name(kind).to_owned();
    let fingerprint = session
        .host_key_hash(HashType::Sha256)
        .map(|h| base64::engine::general_purpose::STANDARD_NO_PAD.encode(h))
        .unwrap_or_default();
    verify_plain(key, key_type, fingerprint, known, host, port, policy, files)
}

const CERT_SUFFIX: &str = "-cert-v01@openssh.com";

fn sha256_fingerprint(blob: &[u8]) -> String {
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(blob))
}

fn describe(key: &ssh_key::public::KeyData) -> String {
    format!(
        "{} {}",
        key.algorithm(),
        key.fingerprint(ssh_key::HashAlg::Sha256)
    )
}

/// A host certificate: accepted when a CA trusted for the host signed it for this host and
/// it is valid now; a certificate from a CA not trusted for the host counts as its plain key
/// (as OpenSSH does), which may still be recorded.
fn verify_certificate(
    blob: &[u8],
    known: &Loaded,
    host: &str,
    port: u16,
    policy: HostKeyPolicy,
    files: &KnownHostsFiles,
) -> Result<(), TransportError> {
    let refuse = |detail: String, help: &str| TransportError::Ssh {
        host: host.to_owned(),
        detail,
        help: help.to_owned(),
    };
    let cert = super::cert::Cert::parse(blob).map_err(|e| {
        refuse(
            format!("cannot read the host certificate the server presented: {e}"),
            "check the server's `HostCertificate`",
        )
    })?;
    let ca = &cert.ca;
    let plain = ssh_key::PublicKey::from_bytes(&cert.key)
        .map_err(|e| {
            refuse(
                format!("cannot read the key in the host certificate: {e}"),
                "check the server's `HostCertificate`",
            )
        })?
        .key_data()
        .clone();
    let plain = &plain;
    if let Some(m) = known
        .marked()
        .find(|m| m.revoked && (m.key.key_data() == ca || m.key.key_data() == plain))
    {
        return Err(refuse(
            format!(
                "the host's certificate or its CA is marked @revoked in {}: {}",
                m.at,
                describe(m.key.key_data())
            ),
            "the host must not be trusted with this key; ask its owner",
        ));
    }
    let trusted: Vec<&Marked> = known
        .marked()
        .filter(|m| !m.revoked && patterns_match(&m.patterns, host, port))
        .collect();
    if let Some(m) = trusted.iter().find(|m| m.key.key_data() == ca) {
        let why = if cert.cert_type != super::cert::HOST {
            Some("it is a user certificate, not a host certificate".to_owned())
        } else if !cert.principals.is_empty()
            && !cert.principals.iter().any(|p| p.eq_ignore_ascii_case(host))
        {
            Some(format!(
                "it names {} but not `{host}`",
                cert.principals.join(", ")
            ))
        } else {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            cert.invalid_at(now)
        };
        return match why {
            None => Ok(()),
            Some(why) => Err(refuse(
                format!(
                    "the host certificate (key id `{}`, CA {} trusted by {}) is not valid: {why}",
                    cert.key_id,
                    describe(ca),
                    m.at
                ),
                "ask the host's owner to renew or re-sign its `HostCertificate` for this name",
            )),
        };
    }
    // No CA trusted for this host signed it: judge the key inside, as OpenSSH does.
    let plain_blob = cert.key.clone();
    let key_type = plain.algorithm().to_string();
    let fingerprint = sha256_fingerprint(&plain_blob);
    let r = verify_plain(
        &plain_blob,
        key_type,
        fingerprint,
        known,
        host,
        port,
        policy,
        files,
    );
    match r {
        Err(TransportError::HostKeyUnknown { .. }) => Err(refuse(
            format!(
                "the host presents a certificate (key id `{}`) signed by a CA not trusted for `{}`: {}; its own key {} is not known either",
                cert.key_id,
                entry_name(host, port),
                describe(ca),
                describe(plain),
            ),
            &if trusted.is_empty() {
                format!(
                    "if you trust that CA for this host, add `@cert-authority {} {}` to ~/.ssh/known_hosts",
                    entry_name(host, port),
                    ssh_key::PublicKey::from(ca.clone())
                        .to_openssh()
                        .unwrap_or_default()
                )
            } else {
                format!(
                    "the CA trusted for this host ({}) did not sign it: check the server's `HostCertificate` with its owner",
                    trusted
                        .iter()
                        .map(|m| m.at.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        )),
        other => other,
    }
}

/// A plain host key against the files, then the policy.
#[allow(clippy::too_many_arguments)]
fn verify_plain(
    key: &[u8],
    key_type: String,
    fingerprint: String,
    known: &Loaded,
    host: &str,
    port: u16,
    policy: HostKeyPolicy,
    files: &KnownHostsFiles,
) -> Result<(), TransportError> {
    let setup = |detail: String| TransportError::Setup {
        host: host.to_owned(),
        detail,
    };
    if let Ok(presented) = ssh_key::PublicKey::from_bytes(key)
        && let Some(m) = known
            .marked()
            .find(|m| m.revoked && m.key.key_data() == presented.key_data())
    {
        return Err(TransportError::Ssh {
            host: host.to_owned(),
            detail: format!(
                "the host key {key_type} SHA256:{fingerprint} is marked @revoked in {}",
                m.at
            ),
            help: "the host must not be trusted with this key; ask its owner".to_owned(),
        });
    }
    if !known.covers(host, port) {
        // The files hold only the lines for the names they were loaded for: refuse rather
        // than take "not found" for an answer.
        return Err(setup(format!(
            "known_hosts were loaded for {}, not for {}",
            known.hosts.join(", "),
            entry_name(host, port)
        )));
    }
    for (file, f) in &known.files {
        let kh = &f.as_ref().map_err(|e| setup(e.clone()))?.kh;
        match kh.check_port(host, port, key) {
            CheckResult::Match => return Ok(()),
            CheckResult::Mismatch => {
                return Err(TransportError::HostKeyChanged {
                    host: host.to_owned(),
                    port,
                    key_type,
                    fingerprint,
                    known_hosts: file.display().to_string(),
                });
            }
            CheckResult::NotFound => {}
            CheckResult::Failure => {
                return Err(setup(format!(
                    "checking the host key against {} failed",
                    file.display()
                )));
            }
        }
    }
    match policy {
        HostKeyPolicy::Strict => Err(TransportError::HostKeyUnknown {
            host: host.to_owned(),
            port,
            key_type,
            fingerprint,
        }),
        HostKeyPolicy::AcceptNew => {
            let line = format!(
                "{} {key_type} {}\n",
                entry_name(host, port),
                base64::engine::general_purpose::STANDARD.encode(key)
            );
            append(&files.dropship, &line).map_err(|e| {
                setup(format!(
                    "cannot record the new host key in {}: {e}",
                    files.dropship.display()
                ))
            })?;
            super::warnings::raise(format!(
                "accepted new host key {key_type} SHA256:{fingerprint} for {} (host_key = accept-new); recorded in {}",
                entry_name(host, port),
                files.dropship.display()
            ));
            Ok(())
        }
    }
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_openssh_does() {
        assert!(patterns_match("*.example,127.0.0.1", "web.example", 22));
        assert!(patterns_match("*.example,127.0.0.1", "127.0.0.1", 22));
        // Another port is looked up as `[host]:port`.
        assert!(!patterns_match("*.example,127.0.0.1", "127.0.0.1", 2222));
        assert!(patterns_match("[127.0.0.1]:*", "127.0.0.1", 2222));
        assert!(patterns_match("*", "127.0.0.1", 2222));
        assert!(patterns_match("WEB?.Example", "web1.example", 22));
        assert!(!patterns_match("*.example,!db.example", "db.example", 22));
        assert!(!patterns_match("|1|abc=|def=", "web.example", 22));
    }

    #[test]
    fn marked_lines_parse_and_bad_ones_say_why() {
        let m = parse_marked(
            "@cert-authority *.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIV2iWYRLNGpmTNzNmMuPS8SC92HpTmNooA+jou9H76d ca",
            "kh:3".into(),
        )
        .unwrap();
        assert!(!m.revoked);
        assert_eq!(m.patterns, "*.example");
        assert!(parse_marked("@revoked * ssh-ed25519 AAAA", "kh:1".into()).is_err());
        assert_eq!(
            parse_marked("@trusted * ssh-ed25519 AAAA", "kh:1".into()).unwrap_err(),
            "unknown marker `@trusted`"
        );
    }
}
