//! `~/.ssh/config`, read the way `ssh` reads it.
//!
//! Release engineers already describe their fleet there; a rule that says `host = web1`
//! must reach the same machine, port and account as `ssh web1` does — not a near miss. So
//! when an OpenSSH client is installed dropship does not parse the file itself: it asks
//! `ssh -G` (the reference, with `Host`, `Match`, `Include`, first-value-wins and tokens)
//! and reads its answer; `-vvv` tells which blocks applied, so every value is traced back
//! to the `file:line` that set it. Without `ssh` a small built-in reader (`ssh2-config`)
//! is used, and it refuses what it cannot evaluate (`Match`, `%` tokens).
//!
//! Values the rule states explicitly win, as command-line options win over the file for
//! `ssh` (they are passed to `ssh -G` as `-p`/`-l`, so `Match user` and `%r` see them).
//! An option that changes where or as whom dropship connects and that it cannot honour
//! (`BindAddress`, or without `ssh` a `Match` block or `ProxyJump`) is refused, naming the
//! option and where it was set; it is never skipped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where an option was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// `AddressFamily`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AddressFamily {
    #[default]
    Any,
    Inet,
    Inet6,
}

/// What the ssh configuration says about one host. Every field is set only when a config
/// file set it (its place is in `origins`); otherwise dropship's own defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshHost {
    pub host_name: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// `IdentityFile`s, in order, `~` and `%` tokens expanded.
    pub identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly yes`: offer only the identity files, not the agent's other keys.
    pub identities_only: bool,
    /// `IdentityAgent none`: no agent at all.
    pub no_agent: bool,
    /// `IdentityAgent PATH`: the agent's socket (else `$SSH_AUTH_SOCK`).
    pub identity_agent: Option<PathBuf>,
    /// `CertificateFile`s, in order, expanded: offered with the key each certifies.
    pub certificate_files: Vec<PathBuf>,
    pub connect_timeout: Option<Duration>,
    pub user_known_hosts: Option<Vec<PathBuf>>,
    pub global_known_hosts: Option<Vec<PathBuf>>,
    pub host_key_alias: Option<String>,
    /// `StrictHostKeyChecking` as written (lowercase).
    pub strict_host_key_checking: Option<String>,
    pub address_family: AddressFamily,
    /// `ProxyJump` hops in order (`[user@]host[:port]`); empty when unset or `none`.
    pub proxy_jump: Vec<String>,
    /// `ProxyCommand` with its tokens (`%h %p %r %n %%`) expanded; `None` when unset or `none`.
    pub proxy_command: Option<String>,
    /// `ServerAliveInterval` (0 = off, OpenSSH's default).
    pub server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax` (OpenSSH's default 3).
    pub server_alive_count_max: Option<u32>,
    /// Lowercase option name -> where it was set, for what came from a config file.
    pub origins: BTreeMap<String, Location>,
    /// Options that change where or as whom dropship connects and that it cannot honour.
    pub refused: Vec<Refusal>,
}

/// An option dropship will not connect with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// As OpenSSH spells it: `ProxyJump`.
    pub option: &'static str,
    pub value: String,
    pub at: Option<Location>,
    pub why: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self
            .at
            .as_ref()
            .map_or_else(|| "ssh config".to_owned(), Location::to_string);
        write!(f, "{at}: `{} {}`: {}", self.option, self.value, self.why)
    }
}

impl SshHost {
    /// Where `option` (any case) was set, if a config file set it.
    pub fn origin(&self, option: &str) -> Option<&Location> {
        self.origins.get(&option.to_ascii_lowercase())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{path}: cannot read ssh config: {detail}\n  help: fix the file (run `ssh -G HOST` to see what ssh makes of it)"
)]
pub struct SshConfigError {
    pub path: PathBuf,
    pub detail: String,
}

/// One question to the configuration: `ssh -G [-p PORT] [-l LOGIN] ALIAS`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    pub alias: String,
    pub port: Option<u16>,
    pub login: Option<String>,
}

/// Runs `ssh -G` (a trait so plan building can be tested without a client).
pub trait SshG: Send + Sync + fmt::Debug {
    /// `ssh -G -vvv [-F config] [-p] [-l] -- alias`: (stdout, stderr), or why it failed.
    fn run(&self, config: Option<&Path>, q: &Query) -> Result<(String, String), String>;
}

/// The installed OpenSSH client.
#[derive(Debug)]
pub struct OpenSsh {
    pub program: PathBuf,
}

impl SshG for OpenSsh {
    fn run(&self, config: Option<&Path>, q: &Query) -> Result<(String, String), String> {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.arg("-G").arg("-vvv");
        if let Some(c) = config {
            cmd.arg("-F").arg(c);
        }
        if let Some(p) = q.port {
            cmd.arg("-p").arg(p.to_string());
        }
        if let Some(l) = &q.login {
            cmd.arg("-l").arg(l);
        }
        cmd.arg("--").arg(&q.alias);
        cmd.stdin(std::process::Stdio::null());
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            let msg: Vec<&str> = stderr
                .lines()
                .filter(|l| !l.starts_with("debug") && !l.starts_with("OpenSSH_"))
                .collect();
            return Err(format!("`ssh -G {}` failed: {}", q.alias, msg.join("; ")));
        }
        Ok((stdout, stderr))
    }
}

/// `ssh` on `PATH`, if any.
pub fn find_ssh() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ssh"))
        .find(|p| p.is_file())
}

#[derive(Debug)]
enum Reader {
    /// No config at all.
    None,
    /// OpenSSH's own answer; `config` is passed as `-F` when it is not ssh's default.
    OpenSsh {
        ssh: Box<dyn SshG>,
        config: Option<PathBuf>,
    },
    /// The built-in reader, for machines without `ssh`.
    Builtin(Box<Builtin>),
}

type Cache = HashMap<Query, Result<Arc<SshHost>, SshConfigError>>;

#[derive(Debug)]
struct Inner {
    reader: Reader,
    /// The file dropship reads (for messages).
    path: PathBuf,
    cache: Mutex<Cache>,
    /// `ssh` on PATH, looked for once (every target behind a jump host asks).
    program: std::sync::OnceLock<Option<PathBuf>>,
}

/// The ssh configuration, asked per host and cached for the process.
#[derive(Debug, Clone)]
pub struct SshHosts {
    inner: Arc<Inner>,
}

impl Default for SshHosts {
    fn default() -> SshHosts {
        SshHosts::empty()
    }
}

/// How many `ssh -G` run at once in [`SshHosts::prefetch`].
const PARALLEL_LOOKUPS: usize = 16;

impl SshHosts {
    fn with(reader: Reader, path: PathBuf) -> SshHosts {
        SshHosts {
            inner: Arc::new(Inner {
                reader,
                path,
                cache: Mutex::new(HashMap::new()),
                program: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn empty() -> SshHosts {
        SshHosts::with(Reader::None, PathBuf::new())
    }

    /// `~/.ssh/config` of `$HOME`. When that is the file `ssh` itself reads (your
    /// passwd home), `ssh -G` is asked without `-F`, so `/etc/ssh/ssh_config` counts too,
    /// exactly as for `ssh`.
    pub fn load_default() -> Result<SshHosts, SshConfigError> {
        let Some(home) = std::env::var_os("HOME") else {
            return Ok(SshHosts::empty());
        };
        let path = PathBuf::from(home).join(".ssh").join("config");
        let is_ssh_default = passwd_home().is_some_and(|h| h.join(".ssh").join("config") == path);
        match find_ssh() {
            Some(program) if is_ssh_default => Ok(SshHosts::with(
                Reader::OpenSsh {
                    ssh: Box::new(OpenSsh { program }),
                    config: None,
                },
                path,
            )),
            _ => SshHosts::load(&path),
        }
    }

    /// `path` as ssh's only config file (`ssh -F path`); a missing file means no entries.
    /// Uses `ssh -G` when `ssh` is on `PATH`, else the built-in reader.
    pub fn load(path: &Path) -> Result<SshHosts, SshConfigError> {
        match find_ssh() {
            Some(program) => SshHosts::load_with(path, Box::new(OpenSsh { program })),
            None => SshHosts::load_builtin(path),
        }
    }

    /// `path` read through `ssh` (any [`SshG`]).
    pub fn load_with(path: &Path, ssh: Box<dyn SshG>) -> Result<SshHosts, SshConfigError> {
        if !exists(path)? {
            return Ok(SshHosts::empty());
        }
        Ok(SshHosts::with(
            Reader::OpenSsh {
                ssh,
                config: Some(path.to_owned()),
            },
            path.to_owned(),
        ))
    }

    /// `path` read by the built-in reader (what is used when `ssh` is not installed).
    pub fn load_builtin(path: &Path) -> Result<SshHosts, SshConfigError> {
        if !exists(path)? {
            return Ok(SshHosts::empty());
        }
        let b = Builtin::load(path)?;
        Ok(SshHosts::with(
            Reader::Builtin(Box::new(b)),
            path.to_owned(),
        ))
    }

    /// The file dropship reads (empty when none).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How to run OpenSSH for jump hosts so it reads what dropship read: the `ssh`
    /// program and its `-F` file (`/dev/null` when dropship read no file although ssh
    /// would read one of its own); `None` without an OpenSSH client.
    pub fn openssh_for_jumps(&self) -> Option<(PathBuf, Option<PathBuf>)> {
        let program = self.inner.program.get_or_init(find_ssh).clone()?;
        match &self.inner.reader {
            Reader::OpenSsh { config, .. } => Some((program, config.clone())),
            Reader::None if self.inner.path.as_os_str().is_empty() => Some((program, None)),
            Reader::None => Some((program, Some(PathBuf::from("/dev/null")))),
            Reader::Builtin(_) => None,
        }
    }

    /// Whether any configuration is read at all.
    pub fn is_empty(&self) -> bool {
        matches!(self.inner.reader, Reader::None)
    }

    /// What the configuration says about `alias`, reached with the rule's `port` and
    /// `login` when it sets them.
    pub fn lookup(
        &self,
        alias: &str,
        port: Option<u16>,
        login: Option<&str>,
    ) -> Result<Arc<SshHost>, SshConfigError> {
        let q = Query {
            alias: alias.to_owned(),
            port,
            login: login.map(str::to_owned),
        };
        if let Some(hit) = self.inner.cache.lock().expect("ssh cache").get(&q) {
            return hit.clone();
        }
        let got = self.resolve(&q).map(Arc::new);
        self.inner
            .cache
            .lock()
            .expect("ssh cache")
            .insert(q, got.clone());
        got
    }

    /// Looks up every query not yet cached, [`PARALLEL_LOOKUPS`] at a time: a plan of a
    /// thousand hosts costs a thousand `ssh -G` runs spread over the cores, not in a row.
    pub fn prefetch(&self, queries: &[Query]) {
        let todo: Vec<&Query> = {
            let cache = self.inner.cache.lock().expect("ssh cache");
            let mut seen = HashSet::new();
            queries
                .iter()
                .filter(|q| !cache.contains_key(*q) && seen.insert(*q))
                .collect()
        };
        if todo.len() < 2 || !matches!(self.inner.reader, Reader::OpenSsh { .. }) {
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..PARALLEL_LOOKUPS.min(todo.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(q) = todo.get(i) else { break };
                        let _ = self.lookup(&q.alias, q.port, q.login.as_deref());
                    }
                });
            }
        });
    }

    fn resolve(&self, q: &Query) -> Result<SshHost, SshConfigError> {
        let err = |detail: String| SshConfigError {
            path: self.inner.path.clone(),
            detail,
        };
        match &self.inner.reader {
            Reader::None => Ok(SshHost::default()),
            Reader::OpenSsh { ssh, config } => {
                let (out, trace) = ssh.run(config.as_deref(), q).map_err(err)?;
                from_ssh_g(q, &parse_g(&out), &Trace::parse(&trace)).map_err(err)
            }
            Reader::Builtin(b) => b.lookup(q).map_err(err),
        }
    }
}

fn exists(path: &Path) -> Result<bool, SshConfigError> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SshConfigError {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// The passwd home of the current user: where `ssh` looks for `~/.ssh` (it ignores `$HOME`).
pub fn passwd_home() -> Option<PathBuf> {
    // SAFETY: getpwuid_r writes into the buffers we pass; pw_dir is read only on success.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(pwd.pw_dir)
            .to_str()
            .ok()
            .map(PathBuf::from)
    }
}

/// `ssh -G` output: lowercase keyword -> values, one per line it printed, in order.
pub fn parse_g(out: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        map.entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.to_owned());
    }
    map
}

/// What `ssh -G -vvv` said on stderr about the files it read and the blocks that applied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Top-level files, in reading order (`-F` or `~/.ssh/config`, then the system file).
    pub files: Vec<PathBuf>,
    /// `(file, line)` of an `Include` -> the files it read, in order.
    pub includes: HashMap<(PathBuf, usize), Vec<PathBuf>>,
    /// `(file, line)` of each `Host`/`Match` line that applied.
    pub applied: HashSet<(PathBuf, usize)>,
}

/// `FILE line N: REST` -> (FILE, N, REST).
fn file_line(s: &str) -> Option<(PathBuf, usize, &str)> {
    let (file, rest) = s.split_once(" line ")?;
    let (n, rest) = rest.split_once(": ")?;
    Some((PathBuf::from(file), n.parse().ok()?, rest))
}

impl Trace {
    pub fn parse(stderr: &str) -> Trace {
        let mut t = Trace::default();
        let mut included = HashSet::new();
        let mut pending: Option<(PathBuf, usize)> = None;
        for line in stderr.lines() {
            let Some((level, msg)) = line.split_once(": ") else {
                continue;
            };
            if !level.starts_with("debug") {
                continue;
            }
            if let Some(f) = msg.strip_prefix("Reading configuration data ") {
                let f = PathBuf::from(f);
                if !included.contains(&f) && !t.files.contains(&f) {
                    t.files.push(f);
                }
            } else if msg == "match found" {
                if let Some(p) = pending.take() {
                    t.applied.insert(p);
                }
            } else if msg == "match not found" {
                pending = None;
            } else if let Some((file, n, rest)) = file_line(msg) {
                if let Some(inc) = rest.strip_prefix("Including file ") {
                    let inc = PathBuf::from(inc.rsplit_once(" depth ").map_or(inc, |(f, _)| f));
                    included.insert(inc.clone());
                    t.includes.entry((file, n)).or_default().push(inc);
                } else if rest.starts_with("Applying options for ") {
                    t.applied.insert((file, n));
                } else if rest.starts_with("matched ") {
                    pending = Some((file, n));
                }
            }
        }
        t
    }

    /// Where `keyword` (lowercase) took effect: its first line, in reading order, inside a
    /// block that applied (or before any block). That is the value OpenSSH keeps.
    pub fn locate(&self, keyword: &str) -> Option<Location> {
        self.locate_all().remove(keyword)
    }

    /// [`Trace::locate`] for every keyword at once (one read of each file).
    pub fn locate_all(&self) -> HashMap<String, Location> {
        let mut found = HashMap::new();
        let mut seen = HashSet::new();
        for f in &self.files {
            self.walk(f, true, &mut found, &mut seen);
        }
        found
    }

    fn walk(
        &self,
        file: &Path,
        inherited: bool,
        found: &mut HashMap<String, Location>,
        seen: &mut HashSet<PathBuf>,
    ) {
        if !seen.insert(file.to_owned()) {
            return;
        }
        let Ok(text) = std::fs::read_to_string(file) else {
            return;
        };
        let mut active = inherited;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let Some(k) = keyword_of(line) else { continue };
            match k.as_str() {
                "host" | "match" => active = self.applied.contains(&(file.to_owned(), n)),
                "include" => {
                    for inc in self
                        .includes
                        .get(&(file.to_owned(), n))
                        .into_iter()
                        .flatten()
                    {
                        self.walk(inc, active, found, seen);
                    }
                }
                _ if active => {
                    found.entry(k).or_insert_with(|| Location {
                        file: file.to_owned(),
                        line: n,
                    });
                }
                _ => {}
            }
        }
    }
}

/// The lowercase keyword of a config line (`Key value` or `Key=value`), if it has one.
fn keyword_of(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let end = t
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(t.len());
    Some(t[..end].to_ascii_lowercase())
}

/// Expands `~` and the `%` tokens OpenSSH allows in `IdentityFile`, `CertificateFile` and
/// known-hosts files (`ssh -G` prints them unexpanded). A token dropship cannot know is an
/// error, not a guess.
pub fn expand_tokens(value: &str, v: &TokenValues) -> Result<String, String> {
    let mut s = value.to_owned();
    if s == "~" || s.starts_with("~/") {
        s = format!("{}{}", v.home, &s[1..]);
    } else if s.starts_with('~') {
        return Err(format!(
            "`{value}`: only `~/` (your own home) is understood"
        ));
    }
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek() == Some(&'{') {
            chars.next();
            let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
            let val = std::env::var(&name)
                .map_err(|_| format!("`{value}`: environment variable `{name}` is not set"))?;
            out.push_str(&val);
            continue;
        }
        if c != '%' {
            out.push(c);
            continue;
        }
        let t = chars
            .next()
            .ok_or_else(|| format!("`{value}`: `%` at the end"))?;
        match t {
            '%' => out.push('%'),
            'h' => out.push_str(&v.host_name),
            'p' => out.push_str(&v.port.to_string()),
            'r' => out.push_str(&v.user),
            'n' => out.push_str(&v.alias),
            'u' => out.push_str(&v.local_user),
            'd' => out.push_str(&v.home),
            'i' => out.push_str(&unsafe { libc::getuid() }.to_string()),
            'k' => out.push_str(v.host_key_alias.as_deref().unwrap_or(&v.host_name)),
            'l' | 'L' => {
                let h = hostname();
                out.push_str(if t == 'L' {
                    h.split('.').next().unwrap_or(&h)
                } else {
                    &h
                });
            }
            other => {
                return Err(format!(
                    "`{value}`: token `%{other}` is not supported by dropship"
                ));
            }
        }
    }
    Ok(out)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// What `%` tokens stand for, for one host.
#[derive(Debug, Clone)]
pub struct TokenValues {
    pub host_name: String,
    pub port: u16,
    pub user: String,
    pub alias: String,
    pub local_user: String,
    pub home: String,
    pub host_key_alias: Option<String>,
}

const JUMPS_NEED_SSH: &str = "jump hosts are reached through OpenSSH's own client, and no `ssh` is on PATH; dropship will not bypass the bastion by dialing the host directly\n  help: install the OpenSSH client (openssh-client)";

/// `ProxyCommand`'s tokens, as OpenSSH expands them there: `%h %p %r %n %%` only.
fn expand_proxy_command(value: &str, v: &TokenValues) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(&v.host_name),
            Some('p') => out.push_str(&v.port.to_string()),
            Some('r') => out.push_str(&v.user),
            Some('n') => out.push_str(&v.alias),
            Some(t) => {
                return Err(format!(
                    "`ProxyCommand {value}`: `%{t}` is not a ProxyCommand token (OpenSSH knows %h %p %r %n %%)"
                ));
            }
            None => return Err(format!("`ProxyCommand {value}`: `%` at the end")),
        }
    }
    Ok(out)
}

/// `ssh -G`'s answer (with its trace) as a typed [`SshHost`].
pub fn from_ssh_g(
    q: &Query,
    g: &BTreeMap<String, Vec<String>>,
    trace: &Trace,
) -> Result<SshHost, String> {
    let first = |k: &str| g.get(k).and_then(|v| v.first()).map(String::as_str);
    let mut h = SshHost::default();
    let found = trace.locate_all();
    let set = |k: &str, h: &mut SshHost| -> bool {
        match found.get(k).cloned() {
            Some(l) => {
                h.origins.insert(k.to_owned(), l);
                true
            }
            None => false,
        }
    };
    // Where and as whom: a value that differs from what ssh would use without any config
    // is honoured even if its line was not found, so nothing is silently dropped.
    let g_host = first("hostname").unwrap_or(&q.alias).to_owned();
    if set("hostname", &mut h) || !g_host.eq_ignore_ascii_case(&q.alias) {
        h.host_name = Some(g_host.clone());
    }
    if q.port.is_none() {
        let port = first("port").and_then(|p| p.parse::<u16>().ok());
        if set("port", &mut h) || port.is_some_and(|p| p != 22) {
            h.port = port;
        }
    }
    if q.login.is_none() {
        let user = first("user").map(str::to_owned);
        if set("user", &mut h)
            || user
                .as_deref()
                .is_some_and(|u| u != crate::config::current_user())
        {
            h.user = user;
        }
    }
    let values = TokenValues {
        host_name: g_host,
        port: q
            .port
            .or(first("port").and_then(|p| p.parse().ok()))
            .unwrap_or(22),
        user: q
            .login
            .clone()
            .or(first("user").map(str::to_owned))
            .unwrap_or_else(crate::config::current_user),
        alias: q.alias.clone(),
        local_user: crate::config::current_user(),
        home: passwd_home().map_or_else(String::new, |p| p.display().to_string()),
        host_key_alias: first("hostkeyalias").map(str::to_owned),
    };
    let expand = |v: &str, k: &str, h: &SshHost| {
        expand_tokens(v, &values).map_err(|e| match h.origin(k) {
            Some(l) => format!("{l}: {e}"),
            None => e,
        })
    };
    if set("identityfile", &mut h) {
        for f in g.get("identityfile").into_iter().flatten() {
            h.identity_files
                .push(PathBuf::from(expand(f, "identityfile", &h)?));
        }
    }
    if set("identitiesonly", &mut h) {
        h.identities_only = first("identitiesonly") == Some("yes");
    }
    if set("connecttimeout", &mut h)
        && let Some(secs) = first("connecttimeout").and_then(|s| s.parse::<u64>().ok())
    {
        h.connect_timeout = Some(Duration::from_secs(secs));
    }
    for (k, field) in [
        ("userknownhostsfile", 0usize),
        ("globalknownhostsfile", 1usize),
    ] {
        if set(k, &mut h) {
            let mut files = Vec::new();
            for f in first(k).unwrap_or("").split_whitespace() {
                if f != "none" {
                    files.push(PathBuf::from(expand(f, k, &h)?));
                }
            }
            if field == 0 {
                h.user_known_hosts = Some(files);
            } else {
                h.global_known_hosts = Some(files);
            }
        }
    }
    if set("hostkeyalias", &mut h) {
        h.host_key_alias = first("hostkeyalias").map(str::to_owned);
    }
    if set("stricthostkeychecking", &mut h) {
        h.strict_host_key_checking = first("stricthostkeychecking").map(str::to_ascii_lowercase);
    }
    if set("addressfamily", &mut h) {
        h.address_family = match first("addressfamily") {
            Some("inet") => AddressFamily::Inet,
            Some("inet6") => AddressFamily::Inet6,
            _ => AddressFamily::Any,
        };
    }
    // `IdentityAgent`: `none` turns the agent off; `SSH_AUTH_SOCK` is what dropship uses
    // anyway; another socket would need its own agent connection (refused below).
    let agent = first("identityagent").map(str::to_owned);
    if set("identityagent", &mut h) && agent.as_deref() == Some("none") {
        h.no_agent = true;
    }

    let refuse =
        |option: &'static str, key: &str, value: String, why: &'static str, h: &mut SshHost| {
            let at = found.get(key).cloned();
            if let Some(l) = &at {
                h.origins.insert(key.to_owned(), l.clone());
            }
            h.refused.push(Refusal {
                option,
                value,
                at,
                why,
            });
        };
    // `ssh -G` prints only the one that applies (the first set wins between the two).
    if let Some(j) = first("proxyjump").filter(|v| !v.eq_ignore_ascii_case("none")) {
        set("proxyjump", &mut h);
        h.proxy_jump = j.split(',').map(|s| s.trim().to_owned()).collect();
    }
    if let Some(c) = first("proxycommand").filter(|v| !v.eq_ignore_ascii_case("none")) {
        set("proxycommand", &mut h);
        h.proxy_command =
            Some(
                expand_proxy_command(c, &values).map_err(|e| match h.origin("proxycommand") {
                    Some(l) => format!("{l}: {e}"),
                    None => e,
                })?,
            );
    }
    if set("serveraliveinterval", &mut h) {
        h.server_alive_interval = first("serveraliveinterval")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs);
    }
    if set("serveralivecountmax", &mut h) {
        h.server_alive_count_max = first("serveralivecountmax").and_then(|s| s.parse().ok());
    }
    if set("certificatefile", &mut h) {
        for c in g.get("certificatefile").into_iter().flatten() {
            h.certificate_files
                .push(PathBuf::from(expand(c, "certificatefile", &h)?));
        }
    }
    if let Some(a) = agent.filter(|a| a != "none" && a != "SSH_AUTH_SOCK") {
        h.identity_agent = Some(PathBuf::from(expand(&a, "identityagent", &h)?));
    }
    for (option, key) in [
        ("BindAddress", "bindaddress"),
        ("BindInterface", "bindinterface"),
    ] {
        if let Some(v) = first(key) {
            refuse(
                option,
                key,
                v.to_owned(),
                "dropship cannot choose the local address or interface it connects from\n  help: remove it for this host, or dispatch from a machine whose route is right",
                &mut h,
            );
        }
    }
    Ok(h)
}

/// The reader used without `ssh`: `ssh2-config` for `Host` blocks, `Include`, first
/// value wins; what it cannot evaluate the way OpenSSH does is refused.
#[derive(Debug)]
pub struct Builtin {
    path: PathBuf,
    config: ssh2_config::SshConfig,
    /// Every `file:line` holding a `Match` (followed through `Include` only by the crate,
    /// so only the main file is scanned).
    matches: Vec<Location>,
    /// `(lowercase keyword, location)` of every line, main file only, for messages.
    lines: Vec<(String, Location, String)>,
}

impl Builtin {
    pub fn load(path: &Path) -> Result<Builtin, SshConfigError> {
        let err = |detail: String| SshConfigError {
            path: path.to_owned(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut matches = Vec::new();
        let mut lines = Vec::new();
        for (i, l) in text.lines().enumerate() {
            if let Some(k) = keyword_of(l) {
                let at = Location {
                    file: path.to_owned(),
                    line: i + 1,
                };
                if k == "match" {
                    matches.push(at.clone());
                }
                lines.push((k, at, l.trim().to_owned()));
            }
        }
        let rules = ssh2_config::ParseRule::ALLOW_UNKNOWN_FIELDS
            | ssh2_config::ParseRule::ALLOW_UNSUPPORTED_FIELDS;
        let config = ssh2_config::SshConfig::default()
            .parse(&mut std::io::BufReader::new(text.as_bytes()), rules)
            .map_err(|e| err(e.to_string()))?;
        Ok(Builtin {
            path: path.to_owned(),
            config,
            matches,
            lines,
        })
    }

    fn first_line(&self, keyword: &str) -> Option<Location> {
        self.lines
            .iter()
            .find(|(k, _, _)| k == keyword)
            .map(|(_, l, _)| l.clone())
    }

    fn lookup(&self, q: &Query) -> Result<SshHost, String> {
        if let Some(m) = self.matches.first() {
            return Err(format!(
                "{m}: `Match` blocks are evaluated only through OpenSSH's `ssh -G`, and no `ssh` is on PATH; dropship will not guess which account or host they select\n  help: install the OpenSSH client (openssh-client), or rewrite the block as `Host` patterns"
            ));
        }
        let p = self.config.query(&q.alias);
        let mut h = SshHost::default();
        let note = |k: &str, h: &mut SshHost| {
            if let Some(l) = self.first_line(k) {
                h.origins.insert(k.to_owned(), l);
            }
        };
        let check = |what: &str, v: &str| {
            if v.contains('%') {
                Err(format!(
                    "{}: `{what} {v}`: `%` tokens are expanded only through OpenSSH's `ssh -G`, and no `ssh` is on PATH\n  help: install the OpenSSH client, or write the value out",
                    self.path.display()
                ))
            } else {
                Ok(())
            }
        };
        if let Some(v) = p.host_name {
            check("HostName", &v)?;
            note("hostname", &mut h);
            h.host_name = Some(v);
        }
        if q.port.is_none() && p.port.is_some() {
            note("port", &mut h);
            h.port = p.port;
        }
        if q.login.is_none()
            && let Some(u) = p.user
        {
            check("User", &u)?;
            note("user", &mut h);
            h.user = Some(u);
        }
        if let Some(files) = p.identity_file {
            note("identityfile", &mut h);
            for f in files {
                check("IdentityFile", &f.display().to_string())?;
                h.identity_files.push(f);
            }
        }
        if let Some(t) = p.connect_timeout {
            note("connecttimeout", &mut h);
            h.connect_timeout = Some(t);
        }
        let unsupported = |k: &str| {
            p.unsupported_fields
                .get(k)
                .or(p.ignored_fields.get(k))
                .and_then(|v| v.first())
                .cloned()
        };
        let mut refuse = |option: &'static str, key: &str, value: String, why: &'static str| {
            h.refused.push(Refusal {
                option,
                value,
                at: self.first_line(key),
                why,
            });
        };
        if let Some(j) = p.proxy_jump.filter(|j| !j.is_empty() && j[0] != "none") {
            refuse("ProxyJump", "proxyjump", j.join(","), JUMPS_NEED_SSH);
        }
        if let Some(c) = unsupported("proxycommand").filter(|c| c != "none") {
            refuse("ProxyCommand", "proxycommand", c, JUMPS_NEED_SSH);
        }
        if let Some(t) = p.server_alive_interval {
            h.server_alive_interval = Some(t);
        }
        if let Some(v) = unsupported("serveralivecountmax") {
            let n = v.parse::<u32>().map_err(|_| {
                format!(
                    "{}: `ServerAliveCountMax {v}`: not a number",
                    self.path.display()
                )
            })?;
            h.server_alive_count_max = Some(n);
        }
        if let Some(c) = p.certificate_file {
            h.certificate_files.push(c);
        }
        if let Some(b) = p.bind_address {
            refuse(
                "BindAddress",
                "bindaddress",
                b,
                "dropship cannot choose the local address it connects from",
            );
        }
        // Options the built-in reader would drop although they change the connection.
        for (option, key) in [
            ("HostKeyAlias", "hostkeyalias"),
            ("UserKnownHostsFile", "userknownhostsfile"),
            ("StrictHostKeyChecking", "stricthostkeychecking"),
            ("IdentitiesOnly", "identitiesonly"),
            ("IdentityAgent", "identityagent"),
            ("AddressFamily", "addressfamily"),
        ] {
            if let Some(v) = unsupported(key) {
                refuse(
                    option,
                    key,
                    v,
                    "the built-in ssh_config reader (used because no `ssh` is on PATH) does not evaluate this option\n  help: install the OpenSSH client (openssh-client)",
                );
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G_OUT: &str = "host leak-check\nhostname 127.0.0.1\nport 2222\nuser alice\nidentityfile ~/.ssh/id_%r_%h\nidentityfile /k/%n-%p-%%\nuserknownhostsfile /root/.ssh/known_hosts /root/.ssh/known_hosts2\nproxyjump a,b\nconnecttimeout none\n";

    #[test]
    fn parses_g_output_keys_lowercase_in_order() {
        let g =
            parse_g("Host x\nidentityfile a\nidentityfile b\nuserknownhostsfile /a /b\nempty\n");
        assert_eq!(g["host"], ["x"]);
        assert_eq!(g["identityfile"], ["a", "b"]);
        assert_eq!(g["userknownhostsfile"], ["/a /b"]);
        assert_eq!(g["empty"], [""]);
    }

    #[test]
    fn trace_finds_applied_blocks_and_includes() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("cfg");
        let inc = dir.path().join("inc");
        std::fs::write(
            &main,
            "Include inc\nHost web\n  User a\nMatch originalhost web\n  User b\n  Port 1\n",
        )
        .unwrap();
        std::fs::write(&inc, "Host other\n  Port 9\nHost *\n  Port 7\n").unwrap();
        let (m, i) = (main.display(), inc.display());
        let stderr = format!(
            "debug1: Reading configuration data {m}\ndebug3: {m} line 1: Including file {i} depth 0\ndebug1: Reading configuration data {i}\ndebug1: {i} line 3: Applying options for *\ndebug2: checking match for 'originalhost web' host web originally web\ndebug3: {m} line 4: matched 'originalhost \"web\"' \ndebug2: match found\n"
        );
        let t = Trace::parse(&stderr);
        assert_eq!(t.files, [main]);
        assert_eq!(
            t.locate("port"),
            Some(Location {
                file: inc.clone(),
                line: 4
            })
        );
        // `Host web` did not apply (not in the trace): the Match block's User is found.
        assert_eq!(t.locate("user").unwrap().line, 5);
        assert_eq!(t.locate("hostname"), None);
    }

    fn values() -> TokenValues {
        TokenValues {
            host_name: "10.0.0.5".into(),
            port: 2222,
            user: "deploy".into(),
            alias: "web1".into(),
            local_user: "me".into(),
            home: "/home/me".into(),
            host_key_alias: None,
        }
    }

    #[test]
    fn tokens_expand_like_openssh() {
        let v = values();
        assert_eq!(
            expand_tokens("~/.ssh/%r@%h:%p-%n-%u-%%", &v).unwrap(),
            "/home/me/.ssh/deploy@10.0.0.5:2222-web1-me-%"
        );
        assert!(expand_tokens("/k/%C", &v).unwrap_err().contains("%C"));
        assert!(expand_tokens("~bob/k", &v).is_err());
    }

    #[test]
    fn proxy_command_expands_only_its_own_tokens() {
        let v = values();
        assert_eq!(
            expand_proxy_command("nc -X 5 -x gw %h %p # %r %n %% ~/x ${HOME}", &v).unwrap(),
            "nc -X 5 -x gw 10.0.0.5 2222 # deploy web1 % ~/x ${HOME}"
        );
        assert!(
            expand_proxy_command("ssh %d", &v)
                .unwrap_err()
                .contains("%d")
        );
        assert!(expand_proxy_command("x %", &v).is_err());
    }

    #[test]
    fn proxy_jump_hops_are_read_in_order() {
        let q = Query {
            alias: "leak-check".into(),
            port: None,
            login: None,
        };
        let h = from_ssh_g(&q, &parse_g(G_OUT), &Trace::default()).unwrap();
        assert_eq!(h.host_name.as_deref(), Some("127.0.0.1"));
        assert_eq!(h.port, Some(2222));
        assert!(h.refused.is_empty(), "{:?}", h.refused);
        assert_eq!(h.proxy_jump, ["a", "b"]);
        // Without a trace the identity files are not known to come from a file.
        assert!(h.identity_files.is_empty());
    }
}
