//! Server child processes that never outlive the test process.
//!
//! Each server gets `PR_SET_PDEATHSIG(SIGKILL)`, so a test binary that is killed (timeout,
//! Ctrl-C, abort) takes its servers with it. The kernel ties that signal to the *thread* that
//! forked the child, not the process, and libtest ends a thread per test; so every server is
//! forked from one long-lived spawner thread, and a server may be shared between tests or
//! handed to other threads freely.
//!
//! Drop kills the process tree below the server bottom-up, leaves first, letting each parent
//! reap its children, and the server last. sshd's per-connection children run in their own
//! sessions, so a process-group kill would miss them; and orphans would go to PID 1, which on
//! these VMs reaps only now and then, leaving zombies about. For the same reason sshd is made
//! a child subreaper: processes a remote command leaves behind are re-parented to sshd, which
//! reaps any child, and are killed with it. vsftpd must not be one: its SIGCHLD handler looks
//! every reaped pid up in its per-IP table and dies on one it did not fork.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

fn spawn_on_spawner_thread(cmd: Command) -> io::Result<Child> {
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("dropship-test-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply_tx))
        .expect("spawner thread is gone");
    reply_rx.recv().expect("spawner thread dropped the request")
}

/// A running server, killed with all its descendants on drop.
pub struct ServerProcess {
    child: Child,
    name: String,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `cmd` with stdin closed and stdout+stderr appended to `log`, in its own
    /// process group, killed if this test process dies. `subreaper`: see the module doc.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path, subreaper: bool) -> ServerProcess {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("create log {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        let parent = std::process::id() as libc::pid_t;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || (subreaper && libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) != 0)
                {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child =
            spawn_on_spawner_thread(cmd).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ServerProcess {
            child,
            name: name.to_owned(),
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the server has already stopped.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills the server's descendants leaves first, then the server, and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // Each round kills the current leaves and waits for their parents to reap them; a
        // parent that is itself killed later would otherwise orphan them. Bounded, in case
        // some parent never reaps.
        for _ in 0..8 {
            let tree = descendants(pid);
            let parents: HashSet<libc::pid_t> = tree.iter().map(|p| p.ppid).collect();
            let leaves: Vec<libc::pid_t> = tree
                .iter()
                .filter(|p| !parents.contains(&p.pid))
                .map(|p| p.pid)
                .collect();
            if leaves.is_empty() {
                break;
            }
            for &p in &leaves {
                // SAFETY: kill(2) on processes descending from a server we started.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            super::wait_until(Duration::from_secs(1), || {
                leaves
                    .iter()
                    .all(|p| !Path::new(&format!("/proc/{p}")).exists())
            });
        }
        // SAFETY: kill(2) on our own child and its process group.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

struct ProcInfo {
    pid: libc::pid_t,
    ppid: libc::pid_t,
}

/// Every process (zombies included) whose ancestry leads to `root`, from /proc.
fn descendants(root: libc::pid_t) -> Vec<ProcInfo> {
    let mut children: HashMap<libc::pid_t, Vec<libc::pid_t>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        let Some(after_comm) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = after_comm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(ppid) = stack.pop() {
        for &pid in children.get(&ppid).map(Vec::as_slice).unwrap_or_default() {
            out.push(ProcInfo { pid, ppid });
            stack.push(pid);
        }
    }
    out
}

/// How long a server may take to start answering.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Waits until `addr` greets with a line starting with `prefix` (`SSH-2.0-`, `220`) while
/// `process` still runs, or `deadline` passes.
pub fn wait_for_greeting(
    process: &mut ServerProcess,
    addr: std::net::SocketAddr,
    prefix: &str,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        if let Some(status) = process.exited() {
            return Err(format!("{} exited early ({status})", process.name()));
        }
        if first_line(addr).is_some_and(|l| l.starts_with(prefix)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no `{prefix}` greeting on {addr} after {START_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn first_line(addr: std::net::SocketAddr) -> Option<String> {
    use std::io::BufRead;
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut line = String::new();
    io::BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line)
}
