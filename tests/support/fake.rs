//! Scripted in-process hosts for the fast test tier: an in-memory [`Files`] and a [`Shell`]
//! that answers from a script, handed to the engine through
//! [`dropship::engine::rollout::Dispatch::connector`]. No server, no root, no sleeping: a
//! job runs against them in milliseconds, so every step can be made to fail, hang or be
//! cancelled.
//!
//! What the fake does not do is interpret shell: commands answer by the script (success when
//! nothing is scripted), and dropship's own scripts are recognised by their content — the
//! lock's try (`echo acquired`), its release (`.released.$$`) and the takeover of a dead
//! holder's lock (`echo broken`) — and answered the way the real script would from the
//! fake's lock state. The upload's check-and-rename is answered by hashing the in-memory
//! `.part`, as the host would.

use dropship::config::Rule;
use dropship::engine::connect::Connector;
use dropship::plan::Target;
use dropship::transport::known_hosts::KnownHostsFiles;
use dropship::transport::{Connection, Files, Shell, Stream, TransportError};
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An operation a script entry answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Opening a connection (the connector).
    Connect,
    /// The lock's try script.
    Lock,
    /// The lock's release script.
    Unlock,
    /// A command run with [`Shell::exec`] whose text contains this.
    Exec(String),
    /// Writing the upload's `.part`.
    Write,
    /// The upload's check-and-rename on the host.
    Verify,
}

impl Op {
    pub fn exec(pattern: &str) -> Op {
        Op::Exec(pattern.to_owned())
    }
}

/// How a scripted operation answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A command's exit status (0 is success); for other operations, success.
    Exit(i32),
    /// The operation fails with a transport error carrying this text.
    Fail(String),
    /// The operation hangs: a command until its `stop` says so (cancelled) or its timeout
    /// passes; a write until its progress callback says stop or the fake's I/O timeout
    /// passes; anything else until the I/O timeout passes (a timeout error).
    Hang,
}

/// The fake's remote lock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LockState {
    #[default]
    Free,
    /// Held by the dispatch that wrote this token.
    Taken { token: String },
    /// Held by someone else (another dispatch).
    Held { holder: String, bundle: String },
}

struct Entry {
    op: Op,
    answer: Answer,
    /// How many more times it answers; `None`: always.
    left: Option<usize>,
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
    lock: LockState,
    script: Vec<Entry>,
    /// Every operation, in order (`connect`, `exec CMD`, `lock`, `unlock`, `write PATH`, ...).
    log: Vec<String>,
    background: Option<String>,
}

type Hook = Arc<dyn Fn() + Send + Sync>;

struct Inner {
    name: String,
    state: Mutex<State>,
    on_hang: Mutex<Option<Hook>>,
    io_timeout: Duration,
}

/// One scripted host. Clones share it: every connection to it sees the same files and lock.
#[derive(Clone)]
pub struct FakeHost(Arc<Inner>);

impl FakeHost {
    pub fn new(name: &str) -> FakeHost {
        FakeHost(Arc::new(Inner {
            name: name.to_owned(),
            state: Mutex::default(),
            on_hang: Mutex::default(),
            io_timeout: Duration::from_millis(300),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers `op` with `answer` every time.
    pub fn always(&self, op: Op, answer: Answer) -> &FakeHost {
        self.state().script.push(Entry {
            op,
            answer,
            left: None,
        });
        self
    }

    /// Answers `op` with `answer` the next `n` times (then as before).
    pub fn times(&self, n: usize, op: Op, answer: Answer) -> &FakeHost {
        self.state().script.push(Entry {
            op,
            answer,
            left: Some(n),
        });
        self
    }

    /// Called (once per hang) when an operation starts hanging: where a test sets the hard
    /// cancel, so "cancel during the hang" is ordered by the hang itself, not a sleep.
    pub fn on_hang(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.0.on_hang.lock().unwrap() = Some(Arc::new(f));
    }

    pub fn set_lock(&self, lock: LockState) {
        self.state().lock = lock;
    }

    pub fn lock(&self) -> LockState {
        self.state().lock.clone()
    }

    pub fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    /// How many log entries start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.state()
            .log
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.state().files.get(path).cloned()
    }

    pub fn paths(&self) -> Vec<String> {
        self.state().files.keys().cloned().collect()
    }

    /// The background command running (the lock's heartbeat), if any.
    pub fn background(&self) -> Option<String> {
        self.state().background.clone()
    }

    /// The scripted answer for `op` (consuming one of a limited entry), if any.
    fn answer(&self, op: &Op) -> Option<Answer> {
        let mut s = self.state();
        let i = s.script.iter().position(|e| {
            e.left != Some(0)
                && match (&e.op, op) {
                    (Op::Exec(pat), Op::Exec(cmd)) => cmd.contains(pat.as_str()),
                    (a, b) => a == b,
                }
        })?;
        let e = &mut s.script[i];
        if let Some(n) = &mut e.left {
            *n -= 1;
        }
        Some(e.answer.clone())
    }

    fn note(&self, what: String) {
        self.state().log.push(what);
    }

    fn hanging(&self) {
        let hook = self.0.on_hang.lock().unwrap().clone();
        if let Some(h) = hook {
            h();
        }
    }

    fn failure(&self, op: &str, detail: String) -> TransportError {
        TransportError::Io {
            host: self.0.name.clone(),
            op: op.to_owned(),
            detail,
        }
    }

    /// Hangs until the I/O timeout, then times out as a dead link would.
    fn hang_then_timeout(&self, during: &str) -> TransportError {
        self.hanging();
        std::thread::sleep(self.0.io_timeout);
        TransportError::Timeout {
            host: self.0.name.clone(),
            during: during.to_owned(),
            secs: self.0.io_timeout.as_secs(),
        }
    }

    /// A connection to this host, or the scripted failure.
    pub fn connect(&self) -> Result<Connection, TransportError> {
        self.note("connect".into());
        match self.answer(&Op::Connect) {
            Some(Answer::Fail(d)) => Err(TransportError::Connect {
                host: self.0.name.clone(),
                addr: format!("{}:22", self.0.name),
                detail: d,
            }),
            Some(Answer::Hang) => Err(self.hang_then_timeout("connecting")),
            _ => Ok(Connection {
                files: Box::new(FakeFiles(self.clone())),
                shell: Some(Box::new(FakeShell(self.clone()))),
            }),
        }
    }
}

/// Fake hosts by name, and the connector that reaches them.
#[derive(Clone, Default)]
pub struct Fleet(Arc<Mutex<BTreeMap<String, FakeHost>>>);

impl Fleet {
    /// A fleet of `names`, all answering success.
    pub fn new(names: &[&str]) -> Fleet {
        let f = Fleet::default();
        for n in names {
            f.0.lock()
                .unwrap()
                .insert((*n).to_owned(), FakeHost::new(n));
        }
        f
    }

    pub fn host(&self, name: &str) -> FakeHost {
        self.0.lock().unwrap()[name].clone()
    }

    /// What the engine connects with: a planned target reaches the fake of its name.
    pub fn connector(&self) -> Connector {
        let fleet = self.clone();
        Arc::new(
            move |t: &Target,
                  _: &Rule,
                  _: &KnownHostsFiles|
                  -> Result<Connection, TransportError> {
                let host = fleet.0.lock().unwrap().get(&t.host.name).cloned();
                match host {
                    Some(h) => h.connect(),
                    None => Err(TransportError::Connect {
                        host: t.host.name.clone(),
                        addr: t.address.clone(),
                        detail: "no such fake host".into(),
                    }),
                }
            },
        )
    }
}

fn parent(path: &str) -> Option<&str> {
    match path.rsplit_once('/') {
        Some(("", _)) => Some("/"),
        Some((d, _)) => Some(d),
        None => None,
    }
}

struct FakeFiles(FakeHost);

impl FakeFiles {
    fn dir_exists(&self, path: &str) -> bool {
        parent(path).is_none_or(|d| d == "/" || self.0.state().dirs.contains(d))
    }
}

impl Files for FakeFiles {
    fn mkdir_p(&mut self, dir: &str) -> Result<(), TransportError> {
        self.0.note(format!("mkdir_p {dir}"));
        let mut s = self.0.state();
        let mut d = dir.trim_end_matches('/');
        while !d.is_empty() {
            s.dirs.insert(d.to_owned());
            match d.rsplit_once('/') {
                Some((p, _)) => d = p,
                None => break,
            }
        }
        Ok(())
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, TransportError> {
        Ok(self.0.state().files.get(path).map(|f| f.len() as u64))
    }

    fn resumable(&self) -> bool {
        true
    }

    fn write(
        &mut self,
        local: &Path,
        remote: &str,
        offset: u64,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(), TransportError> {
        self.0.note(format!("write {remote} from {offset}"));
        let host = self.0.0.name.clone();
        match self.0.answer(&Op::Write) {
            Some(Answer::Fail(d)) => {
                return Err(TransportError::Refused {
                    host,
                    what: format!("upload `{remote}`"),
                    detail: d,
                    help: "free space on the host".into(),
                });
            }
            Some(Answer::Hang) => {
                // A stalled link: nothing moves; the engine's progress callback is still
                // asked, as a real transport asks it between chunks.
                self.0.hanging();
                let start = Instant::now();
                loop {
                    if !progress(offset) {
                        return Err(TransportError::Cancelled { host });
                    }
                    if start.elapsed() >= self.0.0.io_timeout {
                        return Err(TransportError::Timeout {
                            host,
                            during: format!("writing {remote}"),
                            secs: self.0.0.io_timeout.as_secs(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            _ => {}
        }
        if !self.dir_exists(remote) {
            return Err(self
                .0
                .failure("open", format!("no such directory for {remote}")));
        }
        let data = std::fs::read(local).map_err(|e| TransportError::Local {
            path: local.to_owned(),
            detail: e.to_string(),
        })?;
        let offset = offset as usize;
        {
            let mut s = self.0.state();
            let f = s.files.entry(remote.to_owned()).or_default();
            f.truncate(offset);
            f.resize(offset, 0);
            f.extend_from_slice(&data[offset.min(data.len())..]);
        }
        if !progress(data.len() as u64) {
            return Err(TransportError::Cancelled { host });
        }
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), TransportError> {
        self.0.note(format!("rename {from} {to}"));
        let mut s = self.0.state();
        match s.files.remove(from) {
            Some(f) => {
                s.files.insert(to.to_owned(), f);
                Ok(())
            }
            None => Err(self.0.failure("rename", format!("{from}: no such file"))),
        }
    }

    fn remove(&mut self, path: &str) -> Result<(), TransportError> {
        self.0.note(format!("remove {path}"));
        self.0.state().files.remove(path);
        Ok(())
    }

    fn create_dir(&mut self, path: &str) -> Result<bool, TransportError> {
        Ok(self.0.state().dirs.insert(path.to_owned()))
    }

    fn remove_dir(&mut self, path: &str) -> Result<(), TransportError> {
        self.0.state().dirs.remove(path);
        Ok(())
    }
}

struct FakeShell(FakeHost);

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// The token a lock's try script writes into `info` (`token=HEX\n`).
fn token_of(script: &str) -> Option<String> {
    let (_, rest) = script.split_once("token=")?;
    let t: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    (!t.is_empty()).then_some(t)
}

impl Shell for FakeShell {
    /// A line at a time: each line is a batch of its own.
    fn exec_lines(
        &mut self,
        command: &str,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
        on_line: &mut dyn FnMut(Stream, &str),
    ) -> Result<i32, TransportError> {
        self.0.note(format!("exec {command}"));
        let host = self.0.0.name.clone();
        match self.0.answer(&Op::Exec(command.to_owned())) {
            Some(Answer::Fail(d)) => Err(self.0.failure("exec", d)),
            Some(Answer::Hang) => {
                on_line(Stream::Stdout, "hanging");
                self.0.hanging();
                let start = Instant::now();
                loop {
                    if stop() {
                        return Err(TransportError::Cancelled { host });
                    }
                    if start.elapsed() >= timeout {
                        return Err(TransportError::CommandTimeout {
                            host,
                            command: command.to_owned(),
                            secs: timeout.as_secs(),
                            knob: "step_timeout",
                        });
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Some(Answer::Exit(code)) => {
                on_line(Stream::Stdout, &format!("ran {command}"));
                Ok(code)
            }
            None => {
                on_line(Stream::Stdout, &format!("ran {command}"));
                Ok(0)
            }
        }
    }

    fn sha256(&mut self, path: &str, len: Option<u64>) -> Result<String, TransportError> {
        let s = self.0.state();
        let f = s
            .files
            .get(path)
            .ok_or_else(|| self.0.failure("sha256", format!("{path}: no such file")))?;
        let n = len.map_or(f.len(), |n| (n as usize).min(f.len()));
        Ok(sha256_hex(&f[..n]))
    }

    fn start_background(&mut self, command: &str) -> Result<(), TransportError> {
        self.0.note("heartbeat".into());
        self.0.state().background = Some(command.to_owned());
        Ok(())
    }

    fn stop_background(&mut self) {
        self.0.state().background = None;
    }

    fn script(&mut self, script: &str, _extra: Duration) -> Result<String, TransportError> {
        let op = if script.contains("echo acquired") {
            Op::Lock
        } else if script.contains(".released.$$") {
            Op::Unlock
        } else if script.contains("echo broken") {
            // A takeover of a dead holder's lock: the fake's holders are never local
            // processes, so there is nothing to break.
            self.0.note("break".into());
            return Ok(String::new());
        } else {
            self.0.note("script ?".into());
            return Err(TransportError::Setup {
                host: self.0.0.name.clone(),
                detail: "the fake shell does not know this script".into(),
            });
        };
        let name = if op == Op::Lock { "lock" } else { "unlock" };
        self.0.note(name.into());
        match self.0.answer(&op) {
            Some(Answer::Fail(d)) => return Err(self.0.failure(name, d)),
            Some(Answer::Hang) => return Err(self.0.hang_then_timeout(name)),
            _ => {}
        }
        let mut s = self.0.state();
        if op == Op::Unlock {
            // Removed only if the token in `info` is the one the script names.
            if let LockState::Taken { token } = &s.lock
                && script.contains(token.as_str())
            {
                s.lock = LockState::Free;
            }
            return Ok(String::new());
        }
        match s.lock.clone() {
            LockState::Free => {
                let token = token_of(script).unwrap_or_default();
                s.lock = LockState::Taken { token };
                Ok("acquired\n".into())
            }
            LockState::Taken { .. } => Ok("busy 1\nholder=another dispatch\nbundle=?\n".into()),
            LockState::Held { holder, bundle } => {
                Ok(format!("busy 1\nholder={holder}\nbundle={bundle}\n"))
            }
        }
    }

    fn verify_and_rename(
        &mut self,
        part: &str,
        dest: &str,
        expected: &str,
        _size: u64,
    ) -> Result<Option<String>, TransportError> {
        self.0.note(format!("verify {part}"));
        match self.0.answer(&Op::Verify) {
            Some(Answer::Fail(d)) => return Err(self.0.failure("verify", d)),
            Some(Answer::Hang) => return Err(self.0.hang_then_timeout("verifying")),
            _ => {}
        }
        let mut s = self.0.state();
        let Some(data) = s.files.get(part) else {
            return Err(self.0.failure("verify", format!("{part}: no such file")));
        };
        let h = sha256_hex(data);
        if h != expected {
            return Ok(Some(h));
        }
        let data = s.files.remove(part).expect("present");
        s.files.insert(dest.to_owned(), data);
        Ok(None)
    }
}
