//! Keeping events while the journal's server is away.
//!
//! A file journal is local: if it fails, something is badly wrong and the caller hears it. A
//! PostgreSQL journal can go away for ordinary reasons (a restart, a failover, the network),
//! and a dispatch already running on hosts must not stop for that. So when a write finds the
//! connection lost, the event and every later one go to a spool: in memory, in order, and
//! appended to `STATE/journal-spool/PID.jsonl` (one JSON event a line, written before
//! `record` returns, so they survive the death of this process for a person to inspect).
//! Every write and every flush (the session flushes each second) tries to reconnect, at most
//! every [`RETRY`]; once connected, the spool is replayed in order through the normal write
//! path and the file removed. Nothing new starts meanwhile: beginning a dispatch needs an id
//! only the server gives, so it fails with the connection error (the drop folder also asks
//! [`super::Journal::is_down`] before claiming a bundle).

use crate::model::events::Event;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often a reconnect is tried while the server is away.
pub const RETRY: Duration = Duration::from_secs(1);

/// Events waiting for the server, and the file that keeps a copy.
pub(crate) struct Spool {
    pub events: Vec<Event>,
    file: Option<(PathBuf, std::fs::File)>,
    pub since: Instant,
    pub last_try: Instant,
}

impl Spool {
    pub fn new() -> Spool {
        let now = Instant::now();
        Spool {
            events: Vec::new(),
            file: None,
            since: now,
            last_try: now,
        }
    }

    /// Where the copy of this process's spool goes.
    pub fn path() -> PathBuf {
        crate::config::state_dir()
            .join("journal-spool")
            .join(format!("{}.jsonl", std::process::id()))
    }

    /// Keeps `event`, in memory and in the file (a file that cannot be written leaves the
    /// copy in memory only; the returned error says so once).
    pub fn push(&mut self, event: &Event) -> Result<(), String> {
        self.events.push(event.clone());
        if self.file.is_none() {
            let path = Spool::path();
            let opened = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                });
            match opened {
                Ok(f) => self.file = Some((path, f)),
                Err(e) => return Err(format!("cannot write the spool {}: {e}", path.display())),
            }
        }
        if let Some((path, f)) = &mut self.file {
            let line = serde_json::to_string(event).unwrap_or_default();
            writeln!(f, "{line}")
                .map_err(|e| format!("cannot write the spool {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Whether a reconnect is due.
    pub fn due(&mut self) -> bool {
        if self.last_try.elapsed() >= RETRY {
            self.last_try = Instant::now();
            true
        } else {
            false
        }
    }

    /// All events were written to the server: the file goes.
    pub fn finish(self) {
        if let Some((path, file)) = self.file {
            drop(file);
            let _ = std::fs::remove_file(path);
        }
    }
}
