//! Preflight: can a dispatch work on each host of a rule, before anything is shipped?
//!
//! Per host, in order: the port answers (TCP, the rule's `timeout`); the host key is known
//! (a changed key is refused; under `accept-new` an unknown key is reported as one the first
//! dispatch will record — the probe itself records nothing); the credentials log in; a probe
//! file can be created and removed in the dest dir over the rule's own protocol (FTP too);
//! the programs the commands call exist (`command -v`); the lock directory, if present,
//! names its holder; `version_cmd` prints the installed version. A check that cannot run
//! because an earlier one failed is `skip`, never `pass`.
//!
//! Nothing is modified on the host except the probe file, which is removed again (a failure
//! to remove it is a failure of the check, naming the file).
//!
//! [`reach`] is the cheap variant the console runs on start: a TCP connect and the service's
//! greeting (SSH banner, FTP `220`), no login. It costs the host one connection and no
//! authentication attempt, so probing a thousand hosts on start cannot lock an account or
//! flood auth logs; logins are checked on demand with [`probe_host`].

use super::pool::connect_ssh;
use super::target::ProbeTarget;
use crate::config::Protocol;
use crate::transport::known_hosts::KnownHostsFiles;
use crate::transport::proxy::{self, Route};
use crate::transport::ssh::SshSession;
use crate::transport::{Connection, Files, Shell, TransportError, ftp, local};
use serde::Serialize;
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// What a probe checks, in the order it checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The port of the rule's protocol accepts a TCP connection.
    Reachable,
    /// The SSH host key is on record (and unchanged).
    HostKey,
    /// The rule's credentials log in (FTP for ftp/ftps rules, SSH otherwise).
    Login,
    /// ftp/ftps rules with commands: the SSH login on `ssh_port` that runs them.
    SshLogin,
    /// A probe file can be created and removed in the dest dir.
    DestDir,
    /// The programs the commands call exist on the host.
    Programs,
    /// The remote lock: free, or who holds it.
    Lock,
    /// `version_cmd` prints the installed version.
    Version,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Reachable => "reachable",
            CheckKind::HostKey => "host key",
            CheckKind::Login => "login",
            CheckKind::SshLogin => "ssh login",
            CheckKind::DestDir => "dest dir",
            CheckKind::Programs => "programs",
            CheckKind::Lock => "lock",
            CheckKind::Version => "version",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Works, but look: a held lock, an unreadable version, a dest dir to be created.
    Warn,
    Fail,
    /// Not run: an earlier check failed, or it does not apply to this rule.
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub kind: CheckKind,
    pub status: Status,
    /// What was found; never a secret (errors name credential sources, not values).
    pub detail: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Things the check could not judge (e.g. a program name built by `$VAR`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Check {
    fn new(kind: CheckKind, status: Status, detail: impl Into<String>) -> Check {
        Check {
            kind,
            status,
            detail: detail.into(),
            hint: None,
            notes: Vec::new(),
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Check {
        self.hint = Some(hint.into());
        self
    }

    /// A failure from a transport error: its `help:` line becomes the hint.
    fn from_error(kind: CheckKind, status: Status, e: &TransportError) -> Check {
        let text = e.to_string();
        match text.split_once("\n  help: ") {
            Some((what, help)) => Check::new(kind, status, what).hint(help),
            None => Check::new(kind, status, text),
        }
    }
}

/// Who holds a host's lock, as the lock's `info` file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockInfo {
    pub path: String,
    /// `user@machine pid N`; empty if the info file is missing or unreadable.
    pub holder: String,
    pub bundle: String,
    /// How long it has been held, by the host's clock.
    pub age_secs: u64,
    /// Since the holder's last heartbeat (see `engine::lock`); `None` when the lock has
    /// none (an older dropship, or a hand-made lock). A live holder beats at least every
    /// minute.
    pub beat_secs: Option<u64>,
}

impl LockInfo {
    /// Whether its holder was heard from lately: a lock to wait for, never to remove.
    pub fn holder_alive(&self) -> bool {
        self.beat_secs.is_some_and(|b| b <= 120)
    }
}

/// Everything a probe found on one host of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostProbe {
    pub rule: String,
    /// The rule's readable package name (see [`super::target::package_label`]).
    pub package: String,
    /// `host` or `host:port` as the rule writes it.
    pub host: String,
    pub address: String,
    pub port: Option<u16>,
    pub protocol: Protocol,
    pub login: String,
    /// Every check, in the order of [`CheckKind`].
    pub checks: Vec<Check>,
    /// What `version_cmd` printed (first line).
    pub version: Option<String>,
    /// Set when the lock directory exists.
    pub lock: Option<LockInfo>,
    /// Programs `command -v` did not find.
    pub missing: Vec<String>,
    pub duration_ms: u64,
}

impl HostProbe {
    /// No check failed (warnings allowed).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    pub fn check(&self, kind: CheckKind) -> Option<&Check> {
        self.checks.iter().find(|c| c.kind == kind)
    }
}

/// The credentials a login used, by source: `as deploy (login from netrc; password from
/// dispatch.cfg)`. Never the secret.
fn credentials(t: &ProbeTarget) -> String {
    let c = &t.target.creds;
    let mut parts = vec![format!("login from {}", c.login_source.as_str())];
    match c.password_source {
        Some(s) => parts.push(format!("password from {}", s.as_str())),
        None => parts.push("no password".into()),
    }
    if !c.keys.is_empty() {
        let keys: Vec<String> = c.keys.iter().map(|k| k.display().to_string()).collect();
        parts.push(format!("key {}", keys.join(", ")));
    }
    format!("as `{}` ({})", c.login, parts.join("; "))
}

pub use super::pool::{PER_HOST, for_each_bounded, for_each_bounded_per_key};

/// Probes every target, at most `parallel` at once and [`PER_HOST`] per address; `on_done`
/// hears of each host as it finishes (the console turns that into a row update). Blocking:
/// run it off the UI thread.
pub fn probe_all(
    targets: &[ProbeTarget],
    known_hosts: &KnownHostsFiles,
    parallel: usize,
    on_done: &(dyn Fn(usize, &HostProbe) + Sync),
) -> Vec<HostProbe> {
    for_each_bounded_per_key(
        targets,
        parallel,
        PER_HOST,
        |t| t.target.address.to_ascii_lowercase(),
        |t| probe_host(t, known_hosts),
        on_done,
    )
}

/// The first line the service at the target's `port` says, along the target's route (an
/// SSH target behind a bastion is asked through it, never dialed directly), controls
/// removed; or why there is none.
fn greeting(t: &ProbeTarget, port: u16, timeout: Duration) -> Result<String, String> {
    let address = &t.target.address;
    let route = if t.rule.protocol.is_ftp() {
        &Route::Direct
    } else {
        &t.target.route
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let mut fill = |s: &mut dyn Read| -> Result<(), String> {
        while !buf.contains(&b'\n') && buf.len() < 1024 {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("no greeting from {address}:{port}: {e}")),
            }
        }
        Ok(())
    };
    if *route == Route::Direct {
        let mut s = tcp(address, port, timeout)
            .map_err(|e| format!("cannot connect to {address}:{port}: {e}"))?;
        let _ = s.set_read_timeout(Some(timeout));
        fill(&mut s)?;
    } else {
        let via = route.describe();
        let (mut s, link) = proxy::open(route, address, port, timeout)
            .map_err(|e| format!("cannot connect to {address}:{port} {via}: {e}"))?;
        let _ = s.set_read_timeout(Some(timeout));
        fill(&mut s)?;
        if buf.is_empty() {
            return Err(format!(
                "cannot connect to {address}:{port} {via}: {}",
                link.failure()
                    .unwrap_or_else(|| "the connection closed".into())
            ));
        }
    }
    let line = String::from_utf8_lossy(&buf);
    Ok(line
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect())
}

/// Connects a TCP socket to `address:port` within `timeout`.
fn tcp(address: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<_> = (address, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{address}`: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Host key and login checks from the outcome of an SSH connect.
fn ssh_checks(
    t: &ProbeTarget,
    login_kind: CheckKind,
    r: &Result<SshSession, TransportError>,
    new_key: bool,
    port: u16,
) -> Vec<Check> {
    use TransportError as E;
    let skip = |k| Check::new(k, Status::Skip, "not checked: the host key was refused");
    match r {
        Ok(_) => {
            let key = if new_key {
                Check::new(
                    CheckKind::HostKey,
                    Status::Warn,
                    format!("not on record for {}:{port}; `host_key = accept-new` records it at the first dispatch", t.target.address),
                )
                .hint("compare the fingerprint with the host's owner: `ssh-keyscan` and `ssh-keygen -lf`")
            } else {
                Check::new(CheckKind::HostKey, Status::Pass, "known")
            };
            vec![key, Check::new(login_kind, Status::Pass, credentials(t))]
        }
        Err(e @ (E::HostKeyUnknown { .. } | E::HostKeyChanged { .. })) => vec![
            Check::from_error(CheckKind::HostKey, Status::Fail, e),
            skip(login_kind),
        ],
        Err(e @ E::Auth { .. }) => vec![
            Check::new(CheckKind::HostKey, Status::Pass, "known"),
            Check::from_error(login_kind, Status::Fail, e),
        ],
        Err(e @ E::Setup { .. }) => vec![
            Check::from_error(CheckKind::HostKey, Status::Fail, e),
            skip(login_kind),
        ],
        Err(e) => vec![
            Check::new(
                CheckKind::HostKey,
                Status::Skip,
                "not checked: no SSH handshake",
            ),
            Check::from_error(login_kind, Status::Fail, e),
        ],
    }
}

/// Probes one host of one rule. Never panics on what the host answers; every failure is a
/// failed check.
pub fn probe_host(t: &ProbeTarget, known_hosts: &KnownHostsFiles) -> HostProbe {
    let started = Instant::now();
    let mut p = HostProbe {
        rule: t.rule.name.clone(),
        package: super::target::package_label(&t.rule),
        host: t.label(),
        address: t.target.address.clone(),
        port: t.target.port,
        protocol: t.rule.protocol,
        login: t.target.creds.login.clone(),
        checks: Vec::new(),
        version: None,
        lock: None,
        missing: Vec::new(),
        duration_ms: 0,
    };
    let conn = open(t, known_hosts, &mut p.checks);
    match conn {
        Some(mut conn) => on_host(t, &mut conn, &mut p),
        None => {
            for kind in [
                CheckKind::DestDir,
                CheckKind::Programs,
                CheckKind::Lock,
                CheckKind::Version,
            ] {
                p.checks
                    .push(Check::new(kind, Status::Skip, "not checked: no connection"));
            }
        }
    }
    p.duration_ms = started.elapsed().as_millis() as u64;
    p
}

/// Reachability and logins; the connection when they pass.
fn open(t: &ProbeTarget, kh: &KnownHostsFiles, checks: &mut Vec<Check>) -> Option<Connection> {
    let rule = &t.rule;
    let host = &t.target.host.name;
    if rule.protocol == Protocol::Local {
        checks.push(Check::new(
            CheckKind::Reachable,
            Status::Pass,
            "this machine",
        ));
        return Some(Connection {
            files: Box::new(local::Local::new(host)),
            shell: Some(Box::new(local::Local::new(host))),
        });
    }
    // Not even a TCP dial: a direct connection is what the ssh configuration rules out.
    if let Some(why) = &t.target.ssh_refusal {
        checks.push(Check::new(
            CheckKind::Reachable,
            Status::Fail,
            format!("refused by the ssh configuration: {why}"),
        ));
        for kind in [CheckKind::HostKey, CheckKind::Login] {
            checks.push(Check::new(kind, Status::Skip, "not checked: refused"));
        }
        return None;
    }
    let port = t.target.port.unwrap_or(22);
    let addr = format!("{}:{port}", t.target.address);
    let routed = !rule.protocol.is_ftp() && t.target.route != Route::Direct;
    let dialed = if routed {
        // Through the bastion: only its answer (the target's banner) shows the way works.
        let via = t.target.route.describe();
        greeting(t, port, rule.timeout).map(|_| format!("{addr} {via}"))
    } else {
        tcp(&t.target.address, port, rule.timeout).map(|_| addr.clone())
    };
    match dialed {
        Ok(shown) => checks.push(Check::new(CheckKind::Reachable, Status::Pass, shown)),
        Err(e) => {
            checks.push(
                Check::new(
                    CheckKind::Reachable,
                    Status::Fail,
                    format!("cannot connect to {addr}: {e}"),
                )
                .hint(format!(
                    "check that the host is up and that {} listens on port {port} (and no firewall is in between)",
                    if rule.protocol.is_ftp() { "the FTP server" } else { "sshd" }
                )),
            );
            for kind in [CheckKind::HostKey, CheckKind::Login] {
                checks.push(Check::new(kind, Status::Skip, "not checked: unreachable"));
            }
            return None;
        }
    }
    match rule.protocol {
        Protocol::Scp | Protocol::Sftp => {
            let (r, new_key) = connect_ssh(t, port, kh);
            checks.extend(ssh_checks(t, CheckKind::Login, &r, new_key, port));
            match r.ok()?.into_connection(rule.protocol) {
                Ok(c) => Some(c),
                Err(e) => {
                    checks.push(Check::from_error(CheckKind::DestDir, Status::Fail, &e));
                    None
                }
            }
        }
        Protocol::Ftp | Protocol::Ftps => {
            let files = match ftp::FtpFiles::connect(&crate::engine::connect::ftp_params(
                &t.target, rule,
            )) {
                Ok(f) => {
                    checks.push(Check::new(CheckKind::Login, Status::Pass, credentials(t)));
                    f
                }
                Err(e) => {
                    checks.push(Check::from_error(CheckKind::Login, Status::Fail, &e));
                    return None;
                }
            };
            let shell: Option<Box<dyn Shell>> = if t.needs_ssh() {
                let ssh_port = t.ssh_port();
                let (r, new_key) = connect_ssh(t, ssh_port, kh);
                checks.extend(ssh_checks(t, CheckKind::SshLogin, &r, new_key, ssh_port));
                r.ok().map(|s| Box::new(s) as Box<dyn Shell>)
            } else {
                checks.push(Check::new(
                    CheckKind::HostKey,
                    Status::Skip,
                    "FTP only: the rule runs no commands over SSH",
                ));
                None
            };
            Some(Connection {
                files: Box::new(files),
                shell,
            })
        }
        // Handled above.
        Protocol::Local => None,
    }
}

use crate::config::shell::quote;

/// The checks that need a connection.
fn on_host(t: &ProbeTarget, conn: &mut Connection, p: &mut HostProbe) {
    p.checks.push(dest_dir(t, conn));
    let no_shell = |kind| {
        Check::new(
            kind,
            Status::Skip,
            if t.needs_ssh() {
                "not checked: no SSH session"
            } else {
                "FTP only: no shell on the host"
            },
        )
    };
    let Some(shell) = conn.shell.as_deref_mut() else {
        for kind in [CheckKind::Programs, CheckKind::Lock, CheckKind::Version] {
            p.checks.push(no_shell(kind));
        }
        return;
    };
    let (programs, missing) = programs(t, shell);
    p.checks.push(programs);
    p.missing = missing;
    let (lock, info) = lock(t, shell);
    p.checks.push(lock);
    p.lock = info;
    let version = match &t.version_cmd {
        None => Check::new(
            CheckKind::Version,
            Status::Skip,
            "the rule has no `version_cmd`",
        ),
        Some(cmd) => match super::version::read_version(shell, cmd, t.rule.timeout) {
            Ok(v) => {
                p.version = Some(v.clone());
                Check::new(CheckKind::Version, Status::Pass, v)
            }
            Err(e) => Check::new(CheckKind::Version, Status::Warn, e).hint(
                "check `version_cmd`; on a host never shipped to, there may be no version yet",
            ),
        },
    };
    p.checks.push(version);
}

/// A probe file's name: hidden, and unmistakably ours.
fn probe_name() -> String {
    format!(
        ".dropship-probe-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    )
}

fn join(dir: &str, name: &str) -> String {
    match dir {
        "." | "" => name.to_owned(),
        "/" => format!("/{name}"),
        d => format!("{}/{name}", d.trim_end_matches('/')),
    }
}

/// Why a probe file failed: the error, and the remote file when it was created but could
/// not be removed.
struct ProbeFileError(Box<(TransportError, Option<String>)>);

/// Writes a probe file into `dir` and removes it. `Ok(())` when both worked.
fn write_probe(files: &mut dyn Files, dir: &str) -> Result<(), ProbeFileError> {
    let local = std::env::temp_dir().join(probe_name());
    std::fs::write(&local, b"dropship probe\n").map_err(|e| {
        ProbeFileError(Box::new((
            TransportError::Local {
                path: local.clone(),
                detail: e.to_string(),
            },
            None,
        )))
    })?;
    let remote = join(dir, &probe_name());
    let r = files.write(&local, &remote, 0, &mut |_| true);
    let _ = std::fs::remove_file(&local);
    r.map_err(|e| ProbeFileError(Box::new((e, None))))?;
    files
        .remove(&remote)
        .map_err(|e| ProbeFileError(Box::new((e, Some(remote)))))
}

/// The dest dir check: a probe file created and removed over the rule's protocol.
fn dest_dir(t: &ProbeTarget, conn: &mut Connection) -> Check {
    let d = match &t.dest {
        Ok(d) => d,
        Err(e) => {
            return Check::new(CheckKind::DestDir, Status::Fail, e.clone())
                .hint("fix `dest_dir` in the rule");
        }
    };
    let mut notes = Vec::new();
    if !d.complete {
        notes.push(format!(
            "dest_dir `{}` depends on the bundle: probed its fixed part `{}`",
            d.configured, d.probed
        ));
    }
    let login = &t.target.creds.login;
    let mut check = match write_probe(conn.files.as_mut(), &d.probed).map_err(|e| *e.0) {
        Ok(()) => Check::new(
            CheckKind::DestDir,
            Status::Pass,
            format!(
                "`{}` is writable (probe file created and removed)",
                d.probed
            ),
        ),
        Err((e, Some(left))) => Check::new(
            CheckKind::DestDir,
            Status::Fail,
            format!("the probe file `{left}` could not be removed: {e}"),
        )
        .hint(format!("remove `{left}` by hand")),
        Err((e, None)) => match conn.shell.as_deref_mut() {
            Some(shell) => diagnose_with_shell(shell, &d.probed, login, &e),
            None => diagnose_by_parents(conn.files.as_mut(), &d.probed, login, &e),
        },
    };
    check.notes = notes;
    check
}

/// Why a probe file could not be written, asked of the host's shell: a missing directory the
/// dispatch will create is fine, a read-only one is not.
fn diagnose_with_shell(shell: &mut dyn Shell, dir: &str, login: &str, e: &TransportError) -> Check {
    let script = format!(
        r#"d={}; if [ -d "$d" ]; then if [ -w "$d" ]; then echo writable; else echo readonly; fi; else p="$d"; while [ ! -d "$p" ]; do p=$(dirname -- "$p"); done; if [ -w "$p" ]; then echo "creatable $p"; else echo "blocked $p"; fi; fi"#,
        quote(dir)
    );
    let out = shell.script(&script, Duration::ZERO).unwrap_or_default();
    let out = out.trim();
    let fail = |detail: String| {
        Check::new(CheckKind::DestDir, Status::Fail, detail).hint(format!(
            "give `{login}` write access there, or change `dest_dir`"
        ))
    };
    if let Some(parent) = out.strip_prefix("creatable ") {
        return Check::new(
            CheckKind::DestDir,
            Status::Pass,
            format!("`{dir}` does not exist yet; the dispatch creates it (`{parent}` is writable)"),
        );
    }
    if let Some(parent) = out.strip_prefix("blocked ") {
        return fail(format!(
            "`{dir}` does not exist and `{login}` may not create it: `{parent}` is not writable"
        ));
    }
    if out == "readonly" {
        return fail(format!("`{dir}` is not writable by `{login}`"));
    }
    Check::from_error(CheckKind::DestDir, Status::Fail, e)
}

/// Without a shell (FTP only), a failed write cannot tell a missing directory from a
/// read-only one: a writable parent means the dispatch can create what is missing, so that
/// is a warning, not a failure.
fn diagnose_by_parents(files: &mut dyn Files, dir: &str, login: &str, e: &TransportError) -> Check {
    let mut cur = dir.trim_end_matches('/').to_owned();
    for _ in 0..32 {
        if cur == "/" {
            break;
        }
        let parent = match cur.rsplit_once('/') {
            Some(("", _)) => "/".to_owned(),
            Some((p, _)) => p.to_owned(),
            None if cur != "." && !cur.is_empty() => ".".to_owned(),
            None => break,
        };
        if parent == cur {
            break;
        }
        if write_probe(files, &parent).is_ok() {
            return Check::new(
                CheckKind::DestDir,
                Status::Warn,
                format!(
                    "cannot write into `{dir}` ({}); `{parent}` is writable, so the dispatch can create `{dir}` if it is missing",
                    e.to_string().lines().next().unwrap_or("")
                ),
            )
            .hint(format!(
                "if `{dir}` exists, give `{login}` write access to it (FTP cannot tell a missing directory from a read-only one)"
            ));
        }
        cur = parent;
    }
    Check::from_error(CheckKind::DestDir, Status::Fail, e)
}

/// `command -v` for each program, in one round trip.
fn programs(t: &ProbeTarget, shell: &mut dyn Shell) -> (Check, Vec<String>) {
    let found = &t.programs;
    let notes = found.unchecked.clone();
    if found.programs.is_empty() {
        let mut c = Check::new(
            CheckKind::Programs,
            if notes.is_empty() {
                Status::Skip
            } else {
                Status::Pass
            },
            "no program to look for",
        );
        c.notes = notes;
        return (c, Vec::new());
    }
    let mut script = String::new();
    for (i, prog) in found.programs.iter().enumerate() {
        let test = match prog {
            super::programs::Program::Name(n) => {
                format!("command -v {} >/dev/null 2>&1", quote(n))
            }
            super::programs::Program::Path(p) => match p.strip_prefix("~/") {
                Some(rest) => format!("[ -x \"$HOME\"/{} ]", quote(rest)),
                None => format!("[ -x {} ]", quote(p)),
            },
        };
        script.push_str(&format!(
            "if {test}; then echo ok {i}; else echo missing {i}; fi\n"
        ));
    }
    script.push_str("exit 0\n");
    let out = match shell.script(&script, Duration::ZERO) {
        Ok(o) => o,
        Err(e) => {
            return (
                Check::from_error(CheckKind::Programs, Status::Fail, &e),
                Vec::new(),
            );
        }
    };
    let mut missing = Vec::new();
    let mut answered = 0;
    for line in out.lines() {
        let (word, idx) = line.split_once(' ').unwrap_or((line, ""));
        let Some(prog) = idx
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|i| found.programs.get(i))
        else {
            continue;
        };
        answered += 1;
        if word == "missing" {
            missing.push(prog.as_str().to_owned());
        }
    }
    let names: Vec<&str> = found.programs.iter().map(|p| p.as_str()).collect();
    let mut c = if answered < found.programs.len() {
        Check::new(
            CheckKind::Programs,
            Status::Fail,
            format!(
                "the host did not answer for every program (asked about {})",
                names.join(", ")
            ),
        )
    } else if missing.is_empty() {
        Check::new(
            CheckKind::Programs,
            Status::Pass,
            format!("found {}", names.join(", ")),
        )
    } else {
        Check::new(
            CheckKind::Programs,
            Status::Fail,
            format!("not found on the host: {}", missing.join(", ")),
        )
        .hint(format!(
            "install them on the host, or fix the commands (they run in the non-interactive shell of `{}`, with its PATH)",
            t.target.creds.login
        ))
    };
    c.notes = notes;
    (c, missing)
}

/// The lock directory as `engine::lock` writes it: `info` holds `holder=`, `since=` (the
/// host's clock) and `bundle=`. Read only.
fn lock(t: &ProbeTarget, shell: &mut dyn Shell) -> (Check, Option<LockInfo>) {
    let Some(path) = &t.lock_path else {
        return (
            Check::new(
                CheckKind::Lock,
                Status::Skip,
                "`lock_path` depends on the bundle: not checked",
            ),
            None,
        );
    };
    let script = format!(
        r#"d={}; if [ -d "$d" ]; then now=$(date +%s); since=$(sed -n 's/^since=//p' "$d/info" 2>/dev/null); case "$since" in ''|*[!0-9]*) since=$now;; esac; echo "locked $((now - since))"; beat=$(cat "$d/beat" 2>/dev/null); case "$beat" in ''|*[!0-9]*) ;; *) echo "beat $((now - beat))";; esac; sed -n 's/^\(holder\|bundle\)=/&/p' "$d/info" 2>/dev/null; else echo free; fi; exit 0"#,
        quote(path)
    );
    let out = match shell.script(&script, Duration::ZERO) {
        Ok(o) => o,
        Err(e) => return (Check::from_error(CheckKind::Lock, Status::Warn, &e), None),
    };
    let lines: Vec<&str> = out.lines().collect();
    let Some(age) = lines.iter().find_map(|l| l.strip_prefix("locked ")) else {
        if !lines.contains(&"free") {
            return (
                Check::new(
                    CheckKind::Lock,
                    Status::Warn,
                    format!(
                        "the host gave no answer about the lock (`{}`): the host's shell did not run dropship's script",
                        out.trim().chars().take(100).collect::<String>()
                    ),
                ),
                None,
            );
        }
        return (
            Check::new(CheckKind::Lock, Status::Pass, format!("free (`{path}`)")),
            None,
        );
    };
    // Text from the host: no control characters reach a terminal.
    let field = |k: &str| -> String {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    };
    let info = LockInfo {
        path: path.clone(),
        holder: field("holder="),
        bundle: field("bundle="),
        age_secs: age.trim().parse().unwrap_or(0),
        beat_secs: field("beat ").trim().parse().ok(),
    };
    let who = if info.holder.is_empty() {
        "another dispatch (no info file)".to_owned()
    } else {
        info.holder.clone()
    };
    let check = Check::new(
        CheckKind::Lock,
        Status::Warn,
        format!(
            "locked by {who} for {}s (bundle {})",
            info.age_secs,
            if info.bundle.is_empty() { "unknown" } else { &info.bundle }
        ),
    )
    .hint(match info.beat_secs {
        Some(b) if info.holder_alive() => format!(
            "its holder is alive (heartbeat {b}s ago): a dispatch waits up to `lock_wait` for it; do not remove it"
        ),
        Some(b) => format!(
            "no heartbeat for {b}s: its holder is gone; it is broken once that passes `lock_stale`, or remove `{path}` on the host"
        ),
        None => format!(
            "a dispatch waits up to `lock_wait` for it; a lock older than `lock_stale` is broken; if no dispatch runs, remove `{path}` on the host"
        ),
    });
    (check, Some(info))
}

/// Who holds the target's lock, for the console's Hosts screen: `Ok(None)` when it is free,
/// `Err` when it cannot be told (no connection, no shell, a lock path that needs a bundle).
/// Logs in (locks live behind a login); read only. Blocking.
pub fn lock_holder(
    t: &ProbeTarget,
    known_hosts: &KnownHostsFiles,
) -> Result<Option<LockInfo>, String> {
    if t.lock_path.is_none() {
        return Err("`lock_path` depends on the bundle".into());
    }
    let mut shell: Box<dyn Shell> = match t.rule.protocol {
        Protocol::Local => Box::new(local::Local::new(&t.target.host.name)),
        _ if t.needs_ssh() => Box::new(
            connect_ssh(t, t.ssh_port(), known_hosts)
                .0
                .map_err(|e| e.to_string().lines().next().unwrap_or("").to_owned())?,
        ),
        _ => return Err("FTP only: no shell to read the lock with".into()),
    };
    let (check, info) = lock(t, shell.as_mut());
    match (check.status, info) {
        (_, Some(i)) => Ok(Some(i)),
        (Status::Pass, None) => Ok(None),
        _ => Err(check.detail),
    }
}

/// The cheap reachability of the console's Hosts screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Reach {
    /// The port answered with the service's greeting (the SSH banner, or the FTP `220`
    /// line), or the rule is `local`.
    Up { greeting: String, millis: u64 },
    /// No connection, or something that is not the expected service answered.
    Down { error: String },
}

/// One target's reachability, as [`reach_all`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reachability {
    pub rule: String,
    /// `host` or `host:port` as the rule writes it.
    pub host: String,
    pub address: String,
    pub port: Option<u16>,
    pub reach: Reach,
}

/// Connects to the target's port and reads the service greeting, within `timeout`. No
/// login: see the module doc.
pub fn reach(t: &ProbeTarget, timeout: Duration) -> Reach {
    if t.rule.protocol == Protocol::Local {
        return Reach::Up {
            greeting: "this machine".into(),
            millis: 0,
        };
    }
    let started = Instant::now();
    let port = t.target.port.unwrap_or(22);
    let down = |error: String| Reach::Down { error };
    let line = match greeting(t, port, timeout) {
        Ok(l) => l,
        Err(e) => return down(e),
    };
    let expected = if t.rule.protocol.is_ftp() {
        "220"
    } else {
        "SSH-"
    };
    if line.starts_with(expected) {
        Reach::Up {
            greeting: line,
            millis: started.elapsed().as_millis() as u64,
        }
    } else {
        down(format!(
            "{}:{port} answered `{line}`, not a{} greeting",
            t.target.address,
            if t.rule.protocol.is_ftp() {
                "n FTP"
            } else {
                "n SSH"
            }
        ))
    }
}

/// [`reach`] for every target, at most `parallel` at once, each address:port asked once
/// however many rules name it. `timeout` caps each rule's own `timeout` (the console's
/// start-up probe wants an answer in seconds). `on_done` hears of each target as soon as
/// its endpoint answered.
pub fn reach_all(
    targets: &[ProbeTarget],
    parallel: usize,
    timeout: Option<Duration>,
    on_done: &(dyn Fn(usize, &Reachability) + Sync),
) -> Vec<Reachability> {
    let key = |t: &ProbeTarget| {
        (
            t.rule.protocol == Protocol::Local,
            t.target.address.clone(),
            t.target.port,
        )
    };
    let mut endpoints: Vec<usize> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        if !endpoints.iter().any(|&j| key(&targets[j]) == key(t)) {
            endpoints.push(i);
        }
    }
    let results = std::sync::Mutex::new(Vec::<Option<Reachability>>::new());
    results
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .resize(targets.len(), None);
    let row = |i: usize, reach: Reach| {
        let t = &targets[i];
        Reachability {
            rule: t.rule.name.clone(),
            host: t.label(),
            address: t.target.address.clone(),
            port: t.target.port,
            reach,
        }
    };
    for_each_bounded(
        &endpoints,
        parallel,
        |&i| {
            let t = &targets[i];
            let cap = timeout.unwrap_or(t.rule.timeout).min(t.rule.timeout);
            reach(t, cap)
        },
        &|e, r: &Reach| {
            let first = endpoints[e];
            for (i, t) in targets.iter().enumerate() {
                if key(t) == key(&targets[first]) {
                    let rr = row(i, r.clone());
                    on_done(i, &rr);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(rr);
                }
            }
        },
    );
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| {
                row(
                    i,
                    Reach::Down {
                        error: "not probed".into(),
                    },
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn per_key_bound_holds_and_other_keys_go_ahead() {
        let items: Vec<(usize, &str)> = (0..12)
            .map(|i| (i, if i < 8 { "a" } else { "b" }))
            .collect();
        let running = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let most = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let out = for_each_bounded_per_key(
            &items,
            6,
            2,
            |t| t.1,
            |t| {
                let k = usize::from(t.1 == "b");
                let now = running[k].fetch_add(1, Ordering::SeqCst) + 1;
                most[k].fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                running[k].fetch_sub(1, Ordering::SeqCst);
                t.0 * 10
            },
            &|_, _| {},
        );
        assert_eq!(out, (0..12).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(most[0].load(Ordering::SeqCst), 2);
        assert_eq!(
            most[1].load(Ordering::SeqCst),
            2,
            "b ran beside a, two at once"
        );
    }
}
