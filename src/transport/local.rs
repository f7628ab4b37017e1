//! `protocol = local`: the "host" is this machine. Files are copied into a local
//! directory and commands run with `sh -c`, so the whole flow can be tried with no server
//! (the example config) and local staging areas need no sshd.

use super::lines::LineSplitter;
use super::{Files, Shell, Stream, TransportError, local_sha256, pump};
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// This machine, labelled with the rule's host name.
pub struct Local {
    host: String,
    /// Background commands (the lock's heartbeat): process groups killed when stopped or
    /// dropped, and which end by themselves when this process dies.
    background: Vec<std::process::Child>,
}

impl Drop for Local {
    fn drop(&mut self) {
        self.stop_background();
    }
}

impl Local {
    pub fn new(host: &str) -> Local {
        Local {
            host: host.to_owned(),
            background: Vec::new(),
        }
    }

    fn io(&self, op: &str, path: &str, e: std::io::Error) -> TransportError {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            TransportError::Permission {
                host: self.host.clone(),
                login: crate::config::current_user(),
                dir: super::dir_of(path).to_owned(),
                what: format!("{op} `{path}`"),
                detail: e.to_string(),
            }
        } else {
            TransportError::Io {
                host: self.host.clone(),
                op: format!("{op} `{path}`"),
                detail: e.to_string(),
            }
        }
    }
}

impl Files for Local {
    fn mkdir_p(&mut self, dir: &str) -> Result<(), TransportError> {
        fs::create_dir_all(dir).map_err(|e| self.io("mkdir", dir, e))
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, TransportError> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("stat", path, e)),
        }
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
        let mut dst = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(offset == 0)
            .open(remote)
            .map_err(|e| self.io("create", remote, e))?;
        dst.set_len(offset)
            .map_err(|e| self.io("truncate", remote, e))?;
        dst.seek(SeekFrom::Start(offset))
            .map_err(|e| self.io("seek", remote, e))?;
        pump(
            &self.host,
            local,
            offset,
            &mut dst,
            1 << 20,
            progress,
            &|e| self.io("write", remote, e),
        )?;
        dst.sync_all().map_err(|e| self.io("fsync", remote, e))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), TransportError> {
        fs::rename(from, to).map_err(|e| self.io("rename", to, e))
    }

    fn remove(&mut self, path: &str) -> Result<(), TransportError> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io("remove", path, e)),
            _ => Ok(()),
        }
    }

    fn create_dir(&mut self, path: &str) -> Result<bool, TransportError> {
        self.create_dir_impl(path)
    }

    fn remove_dir(&mut self, path: &str) -> Result<(), TransportError> {
        match fs::remove_dir(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io("rmdir", path, e)),
            _ => Ok(()),
        }
    }
}

impl Local {
    fn create_dir_impl(&self, path: &str) -> Result<bool, TransportError> {
        match fs::create_dir(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.io("mkdir", path, e)),
        }
    }
}

impl Shell for Local {
    fn start_background(&mut self, command: &str) -> Result<(), TransportError> {
        // A `kill -9` of dropship runs no destructor: the command also stops once its
        // parent is gone (checked every second).
        let script = format!(
            "sh -c \"$1\" & c=$!; while kill -0 {} 2>/dev/null && kill -0 $c 2>/dev/null; do sleep 1; done; kill $c 2>/dev/null",
            std::process::id()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("dropship")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| self.io("run", "sh", e))?;
        self.background.push(child);
        Ok(())
    }

    fn stop_background(&mut self) {
        for mut child in self.background.drain(..) {
            // SAFETY: kill(2) on our child's process group; no memory is involved.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    fn exec_lines(
        &mut self,
        command: &str,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
        on_lines: &mut dyn FnMut(Stream, &str),
    ) -> Result<i32, TransportError> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills everything the command started.
            .process_group(0)
            .spawn()
            .map_err(|e| self.io("run", "sh", e))?;
        // Bounded: a command printing faster than we forward must wait, not fill memory.
        // Each message is the lines of one 32 KiB read (a line capped at `lines::MAX_LINE`),
        // so this holds about 512 KiB.
        let (tx, rx) = mpsc::sync_channel::<(Stream, String)>(16);
        let mut readers = Vec::new();
        for (stream, pipe) in [
            (
                Stream::Stdout,
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
            ),
            (
                Stream::Stderr,
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
            ),
        ] {
            let Some(pipe) = pipe else { continue };
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || read_lines(pipe, stream, &tx)));
        }
        drop(tx);
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let mut stopped = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((stream, lines)) => on_lines(stream, &lines),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if !timed_out && !stopped && (Instant::now() >= deadline || stop()) {
                stopped = Instant::now() < deadline;
                timed_out = !stopped;
                // SAFETY: kill(2) on our child's process group; no memory is involved.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
            }
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().map_err(|e| self.io("wait for", "sh", e))?;
        if stopped {
            return Err(TransportError::Cancelled {
                host: self.host.clone(),
            });
        }
        if timed_out {
            return Err(TransportError::CommandTimeout {
                host: self.host.clone(),
                command: command.to_owned(),
                secs: timeout.as_secs(),
                knob: "step_timeout",
            });
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    fn sha256(&mut self, path: &str, len: Option<u64>) -> Result<String, TransportError> {
        local_sha256(Path::new(path), len).map_err(|e| self.io("hash", path, e))
    }

    fn script(&mut self, script: &str, _extra: Duration) -> Result<String, TransportError> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.io("run", "sh", e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(TransportError::Io {
                host: self.host.clone(),
                op: "running a dropship script".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

/// Reads one of a command's pipes into capped lines (see [`super::lines`]), the lines of
/// each read as one message, until it ends or nobody listens any more.
fn read_lines(
    mut pipe: Box<dyn Read + Send>,
    stream: Stream,
    tx: &mpsc::SyncSender<(Stream, String)>,
) {
    let mut lines = LineSplitter::new();
    let mut chunk = vec![0u8; 32 * 1024];
    let gone = std::cell::Cell::new(false);
    let mut send = |l: &str| {
        if !gone.get() && tx.send((stream, l.to_owned())).is_err() {
            gone.set(true);
        }
    };
    while !gone.get() {
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => lines.feed_lines(&chunk[..n], &mut send),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    lines.finish_lines(&mut send);
}
