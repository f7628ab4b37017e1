//! Reaching a host that only a bastion can reach: jump hosts (`ProxyJump`, the rule's
//! `jump`) and `ProxyCommand`.
//!
//! The target's own SSH session stays dropship's (libssh2: its host key checked against
//! dropship's known_hosts, its login from the rule, netrc and ssh_config); only the bytes
//! travel differently. They go over one end of a socketpair whose other end is the
//! stdin/stdout of a process that carries them:
//! - `ProxyCommand`: the user's command, run as OpenSSH runs it (`$SHELL -c "exec …"`).
//! - Jump hosts: OpenSSH's own client, `ssh -W host:port LAST_HOP` (what `ProxyJump`
//!   itself is). The bastion is then reached exactly as `ssh` reaches it: its
//!   ssh_config block, keys, agent, certificates, known_hosts and its own `ProxyJump`.
//!
//! One connection to a bastion serves every host behind it: the first target starts an
//! OpenSSH control master for the hop chain (`ssh -M -N -o ControlPersist`), and every
//! target's `ssh -W` is a multiplexed client of it (a `direct-tcpip` channel of the one
//! bastion session, as clush's gateways and AWX's hop nodes share theirs). The master
//! leaves by itself [`LINGER`] after its last client; a client that finds no master (it
//! just left) connects along the same chain on its own, so a race costs a connection,
//! never the route. libssh2 is not used for the bastion because one libssh2 session cannot
//! carry many channels from many threads without a pump that obeys its "resend the same
//! packet after EAGAIN" rule, and OpenSSH already is that pump.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How the target's SSH connection is carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Route {
    /// A TCP connection to the host's address.
    #[default]
    Direct,
    /// Through jump hosts, with OpenSSH's client.
    Jump(Jump),
    /// Through a `ProxyCommand`, its tokens expanded.
    Command(String),
}

/// Jump hosts and how OpenSSH is run to reach them.
#[derive(Debug, Clone)]
pub struct Jump {
    /// In order, as `ProxyJump` writes them: `[user@]host[:port]`.
    pub hops: Vec<String>,
    /// The `ssh` to run.
    pub program: PathBuf,
    /// `-F`: the ssh configuration dropship reads, when it is not ssh's default.
    pub config: Option<PathBuf>,
    /// Passwords for hops (from ~/.netrc), handed to OpenSSH only through its askpass
    /// hook (see [`askpass_answer`]): never on a command line, never in the environment.
    pub passwords: Arc<Vec<HopPassword>>,
}

/// A hop's password, and the host it is for (as the hop names it).
#[derive(Debug, Clone)]
pub struct HopPassword {
    pub host: String,
    pub password: crate::config::Secret,
}

/// The chain is what identifies a control master; passwords are how to log in to it.
impl PartialEq for Jump {
    fn eq(&self, o: &Jump) -> bool {
        (&self.hops, &self.program, &self.config) == (&o.hops, &o.program, &o.config)
    }
}

impl Eq for Jump {}

impl std::hash::Hash for Jump {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (&self.hops, &self.program, &self.config).hash(h);
    }
}

/// The environment variable that makes dropship its own askpass program: the socket to ask.
pub const ASKPASS_SOCKET: &str = "DROPSHIP_ASKPASS";
/// ... and the one-time token that proves the asker is the `ssh` dropship started.
pub const ASKPASS_TOKEN: &str = "DROPSHIP_ASKPASS_TOKEN";

/// dropship run as `SSH_ASKPASS`: asks the dispatch that started `ssh` for the answer to
/// `prompt` over its private socket. `None`: no answer (the prompt is not a password
/// prompt, e.g. an unknown host key: that is refused as in batch mode).
pub fn askpass_answer(socket: &Path, token: &str, prompt: &str) -> Option<String> {
    use std::io::{BufRead, Write};
    let mut s = UnixStream::connect(socket).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    writeln!(s, "{token}\n{}", prompt.replace('\n', " ")).ok()?;
    let mut answer = String::new();
    std::io::BufReader::new(s).read_line(&mut answer).ok()?;
    let answer = answer.strip_suffix('\n')?;
    answer.strip_prefix('=').map(str::to_owned)
}

/// Serves the askpass questions of one master's `ssh` until `done`: a password prompt gets
/// the password of the hop it names (or the only one there is), anything else no answer.
fn serve_askpass(
    listener: std::os::unix::net::UnixListener,
    token: String,
    passwords: Arc<Vec<HopPassword>>,
    done: Arc<AtomicBool>,
) {
    use std::io::{BufRead, Write};
    let _ = listener.set_nonblocking(true);
    while !done.load(Ordering::Acquire) {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut r = std::io::BufReader::new(&stream);
        let (mut got_token, mut prompt) = (String::new(), String::new());
        if r.read_line(&mut got_token).is_err() || r.read_line(&mut prompt).is_err() {
            continue;
        }
        let mut w = &stream;
        if got_token.trim_end() != token {
            let _ = writeln!(w, "-");
            continue;
        }
        let p = prompt.to_ascii_lowercase();
        let answer = p.contains("password").then(|| {
            passwords
                .iter()
                .find(|h| p.contains(&h.host.to_ascii_lowercase()))
                .or_else(|| (passwords.len() == 1).then(|| &passwords[0]))
        });
        match answer.flatten() {
            Some(h) => {
                let _ = writeln!(w, "={}", h.password.expose());
            }
            None => {
                let _ = writeln!(w, "-");
            }
        }
    }
}

impl Route {
    /// `via bastion1,bastion2` / `via ProxyCommand …`, for plans and messages; empty when direct.
    pub fn describe(&self) -> String {
        match self {
            Route::Direct => String::new(),
            Route::Jump(j) => format!("via {}", j.hops.join(",")),
            Route::Command(c) => format!("via ProxyCommand `{c}`"),
        }
    }
}

/// How long a control master outlives its last client. Long enough that the steps of one
/// dispatch (upload, commands, the lock's heartbeat) reuse it; short enough that nothing of
/// dropship's is left running for long after it exits.
pub const LINGER: Duration = Duration::from_secs(15);

/// What the stderr of a carrier keeps: its last lines explain a failure.
const STDERR_KEEP: usize = 4096;

/// The process that carries one target's bytes. Dropping it ends the process.
#[derive(Debug)]
pub struct Link {
    child: Mutex<Child>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The carrier's stderr is closed and read to the end.
    stderr_done: Arc<AtomicBool>,
    route: String,
    /// `host:port` the carrier was asked to reach.
    target: String,
}

impl Link {
    /// Why the carrier failed, from what it printed (controls removed), once it has
    /// ended or after a short wait; `None` if it said nothing.
    pub fn failure(&self) -> Option<String> {
        // Until the carrier has ended and all it printed is read, or half a second.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let ended = !matches!(lock(&self.child).try_wait(), Ok(None));
            if ended && self.stderr_done.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let tail = said(&lock(&self.stderr), 3);
        if tail.is_empty() {
            return None;
        }
        // OpenSSH's words for "the bastion could not connect onwards" (`-W` through a
        // control master, and without one).
        if tail.contains("forwarding request failed") || tail.contains("open failed") {
            return Some(format!(
                "{}: the last hop could not connect to {} ({tail}); is the host up, and does the bastion reach it on that port?",
                self.route, self.target
            ));
        }
        Some(format!("{}: {tail}", self.route))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Opens `route` to `host:port`: the stream to hand to the SSH session, and the carrier
/// to keep alive as long as the session. `timeout` bounds reaching the bastion.
pub fn open(
    route: &Route,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(UnixStream, Link), String> {
    let (mut cmd, what) = match route {
        Route::Direct => return Err("a direct route has no carrier".into()),
        Route::Command(c) => {
            // As OpenSSH: the user's shell, `exec` so the command is the process we end.
            let shell = std::env::var_os("SHELL")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "/bin/sh".into());
            let mut cmd = Command::new(shell);
            cmd.arg("-c").arg(format!("exec {c}"));
            (cmd, format!("ProxyCommand `{c}`"))
        }
        Route::Jump(j) => {
            let socket = master(j, timeout)?;
            let mut cmd = base(j, timeout);
            cmd.arg("-S").arg(&socket).args(["-o", "ControlMaster=no"]);
            cmd.arg("-W").arg(forward_spec(host, port));
            cmd.arg("--").arg(j.hops.last().expect("a jump has hops"));
            (cmd, format!("jump host {}", j.hops.join(",")))
        }
    };
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let theirs_out = theirs.try_clone().map_err(|e| format!("socketpair: {e}"))?;
    cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_out)))
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let stderr_done = Arc::new(AtomicBool::new(false));
    if let Some(mut err) = child.stderr.take() {
        let keep = stderr.clone();
        let done = stderr_done.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut k = lock(&keep);
                k.extend_from_slice(&buf[..n]);
                if k.len() > STDERR_KEEP {
                    let cut = k.len() - STDERR_KEEP;
                    k.drain(..cut);
                }
            }
            done.store(true, Ordering::Release);
        });
    }
    Ok((
        ours,
        Link {
            child: Mutex::new(child),
            stderr,
            stderr_done,
            route: what,
            target: forward_spec(host, port),
        },
    ))
}

/// `host:port` for `-W`, with brackets around an IPv6 address.
fn forward_spec(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `ssh [-F config] -o BatchMode=yes -o ConnectTimeout=N [-J earlier hops]`: never a
/// prompt (dropship has no terminal to lend it), the chain's earlier hops as `-J`.
fn base(j: &Jump, timeout: Duration) -> Command {
    base_asking(j, timeout, false)
}

/// [`base`], but with `asking` OpenSSH may ask its askpass program for a password (batch
/// mode off: for `ssh -o`, the first value given wins, so it must not be set twice).
fn base_asking(j: &Jump, timeout: Duration, asking: bool) -> Command {
    let mut cmd = Command::new(&j.program);
    if let Some(c) = &j.config {
        cmd.arg("-F").arg(c);
    }
    let batch = if asking {
        "BatchMode=no"
    } else {
        "BatchMode=yes"
    };
    cmd.args(["-o", batch])
        .arg("-o")
        .arg(format!("ConnectTimeout={}", timeout.as_secs().max(1)));
    if j.hops.len() > 1 {
        cmd.arg("-J").arg(j.hops[..j.hops.len() - 1].join(","));
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Control masters of this process, one per hop chain (and config file).
struct Masters {
    dir: PathBuf,
    next: usize,
    by_chain: HashMap<Jump, Arc<Mutex<PathBuf>>>,
}

fn masters() -> &'static Mutex<Option<Masters>> {
    static M: OnceLock<Mutex<Option<Masters>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(None))
}

/// The control socket of a running master for `j`, starting one if none runs. Masters
/// for different chains start in parallel; targets behind the same chain wait for the
/// first to start it.
fn master(j: &Jump, timeout: Duration) -> Result<PathBuf, String> {
    let slot = {
        let mut m = lock(masters());
        if m.is_none() {
            *m = Some(Masters {
                dir: control_dir()?,
                next: 0,
                by_chain: HashMap::new(),
            });
        }
        let m = m.as_mut().expect("just set");
        if !m.by_chain.contains_key(j) {
            m.next += 1;
            // Unique across runs too: a master outlives its process by [`LINGER`].
            let socket = m.dir.join(format!(
                "m{}-{}-{}",
                std::process::id(),
                m.next,
                &hex_token()[..8]
            ));
            m.by_chain.insert(j.clone(), Arc::new(Mutex::new(socket)));
        }
        m.by_chain[j].clone()
    };
    let socket = lock(&slot);
    if alive(&socket) {
        return Ok(socket.clone());
    }
    let _ = std::fs::remove_file(&*socket);
    let mut cmd = base_asking(j, timeout, !j.passwords.is_empty());
    // A hop with a password (netrc): OpenSSH asks dropship itself, as its askpass program,
    // over a private socket; batch mode stays on for everything else (an unknown host key
    // is refused, not asked).
    let asking = Arc::new(AtomicBool::new(false));
    if !j.passwords.is_empty() {
        let ask = socket.with_extension("ask");
        let _ = std::fs::remove_file(&ask);
        let listener = std::os::unix::net::UnixListener::bind(&ask)
            .map_err(|e| format!("cannot listen on {}: {e}", ask.display()))?;
        let token = hex_token();
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find dropship itself: {e}"))?;
        cmd.args(["-o", "NumberOfPasswordPrompts=1"])
            .env("SSH_ASKPASS", exe)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env(ASKPASS_SOCKET, &ask)
            .env(ASKPASS_TOKEN, &token);
        let (passwords, done) = (j.passwords.clone(), asking.clone());
        std::thread::spawn(move || serve_askpass(listener, token, passwords, done));
    }
    let stop_asking = Defer(asking);
    cmd.args(["-M", "-N", "-S"])
        .arg(&*socket)
        .arg("-o")
        .arg(format!("ControlPersist={}", LINGER.as_secs()))
        .arg("--")
        .arg(j.hops.last().expect("a jump has hops"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let what = format!("jump host {}", j.hops.join(","));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{what}: cannot run {}: {e}", j.program.display()))?;
    // The master goes to the background once it is logged in; the process we started
    // exits then (0), or earlier with the reason it could not log in. Bounded: a bastion
    // that accepts TCP but never finishes the handshake must not hold the dispatch.
    let deadline = Instant::now() + timeout * 2 + Duration::from_secs(5);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what}: no session after {} s",
                    (timeout * 2 + Duration::from_secs(5)).as_secs()
                ));
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    };
    drop(stop_asking);
    let mut err = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut err);
    }
    if status.success() && socket.exists() {
        return Ok(socket.clone());
    }
    let err = said(&err, usize::MAX);
    Err(format!(
        "{what}: {}",
        if err.is_empty() {
            format!("ssh exited with {status}")
        } else {
            err
        }
    ))
}

/// Sets its flag when dropped: the askpass server stops however `master` returns.
struct Defer(Arc<AtomicBool>);

impl Drop for Defer {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// 128 random bits, hex.
fn hex_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Whether a master listens behind `socket`: a stale socket (its master was killed) refuses
/// the connection. Asked on every target's connect, so no `ssh -O check` process.
fn alive(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// The private directory for control sockets, one per user (0700: a control socket is a
/// logged-in session to the bastion), reused by later runs; one that is not a directory
/// of ours with no access for others is refused. Short, because a socket path is limited to
/// 108 bytes.
fn control_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir() && d.as_os_str().len() < 60)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let dir = base.join(format!("dropship-jump-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => return Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let m = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a private directory of yours (owner, mode 700): it holds logged-in sessions to bastions\n  help: remove it",
            dir.display()
        ));
    }
    Ok(dir)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What OpenSSH said on stderr, made safe to show: its last `keep` meaningful lines (no
/// debug output, no "Permanently added" chatter), joined with `; `.
fn said(stderr: &[u8], keep: usize) -> String {
    let text = printable(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("debug") && !l.starts_with("Warning: Permanently added")
        })
        .collect();
    lines[lines.len().saturating_sub(keep)..].join("; ")
}

/// Text from outside, made safe to show: control characters dropped, invalid UTF-8 replaced.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_spec_brackets_ipv6() {
        assert_eq!(forward_spec("10.0.0.5", 22), "10.0.0.5:22");
        assert_eq!(forward_spec("::1", 2222), "[::1]:2222");
    }

    #[test]
    fn a_proxy_command_carries_bytes_and_explains_its_failure() {
        // `exec` makes the command the process (as OpenSSH runs it): a compound command
        // needs its own shell.
        let cmd = r#"sh -c "printf 'SSH-2.0-x\r\n'; echo boom >&2; exit 3""#;
        let (mut s, link) =
            open(&Route::Command(cmd.into()), "h", 22, Duration::from_secs(1)).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, "SSH-2.0-x\r\n");
        assert_eq!(
            link.failure().as_deref(),
            Some(format!("ProxyCommand `{cmd}`: boom").as_str())
        );
    }

    #[test]
    fn route_describes_itself() {
        assert_eq!(Route::Direct.describe(), "");
        let j = Route::Jump(Jump {
            hops: vec!["a".into(), "alice@b:2200".into()],
            program: "ssh".into(),
            config: None,
            passwords: Arc::default(),
        });
        assert_eq!(j.describe(), "via a,alice@b:2200");
    }
}
