//! Keeping events while the journal's server is away.
//!
//! A file journal is local: if it fails, something is badly wrong and the caller hears it. A
//! PostgreSQL journal can go away for ordinary reasons (a restart, a failover, the network),
//! and a dispatch already running on hosts must not stop for that. So when a write finds the
//! connection lost, the event and every later one go to a spool: in memory, in order, and
//! appended to `STATE/journal-spool/PID-NANOS.jsonl` (one JSON entry a line, written before
//! `record` returns). Every write and every flush (the session flushes each second) tries to
//! reconnect, at most every [`RETRY`]; once connected, the spool is replayed in order through
//! the normal write path and the file removed. Nothing new starts meanwhile: beginning a
//! dispatch needs an id only the server gives, so it fails with the connection error (the drop
//! folder also asks [`super::Journal::is_down`] before claiming a bundle).
//!
//! # A process that dies while the server is away
//! Its file is all that is left of what its hosts did meanwhile, so the file is made to be
//! replayed by the next dropship that opens the journal on this machine
//! ([`super::write::Store::replay_orphans`]): its first line names the writer (pid and liveness
//! marker, as the dispatch rows do), the second holds the output lines that were buffered but
//! not yet committed when the server went (with the line counts of their steps), and the rest
//! are the events. A file is an orphan only once that writer is dead; it is replayed only
//! while its dispatches still name that writer (nobody resumed them meanwhile), all in one
//! transaction, so a dispatch later resumed sees the steps its hosts finished and does not
//! redo them. A file that cannot be applied is renamed `*.stale`, never deleted.
//!
//! The name carries the creation time as well as the pid: a later process that gets the same
//! pid must never append to (or remove) a dead one's file.

use super::liveness::Writer;
use crate::model::events::{Event, Millis};
use crate::model::transfer::Stream;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a reconnect is tried while the server is away.
pub const RETRY: Duration = Duration::from_secs(1);

/// One line of a spool file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Entry {
    /// The first line: the writer whose dispatch rows these events continue.
    Writer {
        pid: i64,
        marker: String,
    },
    /// Output lines buffered, not committed, when the server went away; `counts` are the
    /// (step row, stored, dropped) line counts including them.
    Buffered {
        lines: Vec<BufferedLine>,
        counts: Vec<(i64, u64, u64)>,
    },
    Event(Event),
}

/// An output line already assigned to its step row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BufferedLine {
    pub step: i64,
    pub at: Millis,
    pub stream: Stream,
    pub line: String,
}

/// Events waiting for the server, and the file that keeps a copy.
pub(crate) struct Spool {
    pub events: Vec<Event>,
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Why the file could not be written, told once.
    file_error: Option<String>,
    pub since: Instant,
    pub last_try: Instant,
}

impl Spool {
    /// Starts a spool for `writer`, whose buffered output is `buffered` (an
    /// [`Entry::Buffered`]): both go to the file at once, so a death from here on loses
    /// nothing.
    pub fn new(writer: &Writer, buffered: Entry) -> Spool {
        let now = Instant::now();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir().join(format!("{}-{nanos}.jsonl", std::process::id()));
        let mut spool = Spool {
            events: Vec::new(),
            path,
            file: None,
            file_error: None,
            since: now,
            last_try: now,
        };
        let header = Entry::Writer {
            pid: writer.pid,
            marker: writer.marker.clone(),
        };
        let opened = spool
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&spool.path)
            });
        match opened {
            Ok(f) => {
                spool.file = Some(f);
                spool.append(&header);
                spool.append(&buffered);
            }
            Err(e) => spool.fail(e),
        }
        spool
    }

    /// Where this spool's copy goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps `event`, in memory and in the file (a file that cannot be written leaves the
    /// copy in memory only; [`Spool::take_error`] says so once).
    pub fn push(&mut self, event: &Event) {
        self.events.push(event.clone());
        self.append(&Entry::Event(event.clone()));
    }

    fn append(&mut self, entry: &Entry) {
        let Some(f) = &mut self.file else {
            return;
        };
        let line = serde_json::to_string(entry).unwrap_or_default();
        if let Err(e) = writeln!(f, "{line}") {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        self.file = None;
        self.file_error = Some(format!(
            "cannot write the spool {}: {e}; events are kept in memory only",
            self.path.display()
        ));
    }

    /// Why the file could not be written, once.
    pub fn take_error(&mut self) -> Option<String> {
        self.file_error.take()
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
        if self.file.is_some() {
            drop(self.file);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where spool files live: this user's state directory, so only this machine's processes
/// (which can judge a writer's liveness by `/proc`) replay them.
pub(crate) fn dir() -> PathBuf {
    crate::config::state_dir().join("journal-spool")
}

/// A dead writer's spool, read back.
#[derive(Debug)]
pub(crate) struct Orphan {
    pub writer: Writer,
    pub buffered: Vec<BufferedLine>,
    pub counts: Vec<(i64, u64, u64)>,
    pub events: Vec<Event>,
}

impl Orphan {
    /// The dispatches its entries touch.
    pub fn dispatches(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.events.iter().map(Event::dispatch).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// The spool files in [`dir`] whose writer is dead, oldest first.
pub(crate) fn orphan_files() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .filter(|p| read_writer(p).is_some_and(|w| !super::liveness::is_alive_here(&w)))
        .collect();
    files.sort();
    files
}

fn read_writer(path: &Path) -> Option<Writer> {
    let mut first = String::new();
    std::io::BufReader::new(std::fs::File::open(path).ok()?)
        .read_line(&mut first)
        .ok()?;
    match serde_json::from_str(&first).ok()? {
        Entry::Writer { pid, marker } => Some(Writer { pid, marker }),
        _ => None,
    }
}

/// Reads a spool file. A last line cut short (the writer died mid-write) ends it: what it
/// held never reached the file whole. Any other unreadable line is an error.
pub(crate) fn read_orphan(path: &Path) -> Result<Orphan, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut lines = text.split_inclusive('\n').enumerate().peekable();
    let mut orphan = Orphan {
        writer: Writer {
            pid: 0,
            marker: String::new(),
        },
        buffered: Vec::new(),
        counts: Vec::new(),
        events: Vec::new(),
    };
    while let Some((n, line)) = lines.next() {
        let entry = match serde_json::from_str::<Entry>(line.trim_end()) {
            Ok(entry) => entry,
            Err(_) if lines.peek().is_none() && !line.ends_with('\n') => break,
            Err(e) => return Err(format!("line {}: {e}", n + 1)),
        };
        match (n, entry) {
            (0, Entry::Writer { pid, marker }) => orphan.writer = Writer { pid, marker },
            (0, _) => return Err("line 1: not the writer's line".into()),
            (_, Entry::Buffered { lines, counts }) => {
                orphan.buffered.extend(lines);
                orphan.counts.extend(counts);
            }
            (_, Entry::Event(event)) => orphan.events.push(event),
            (n, Entry::Writer { .. }) => return Err(format!("line {}: a second writer", n + 1)),
        }
    }
    Ok(orphan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::events::{Event, Level};

    fn notice(dispatch: i64, text: &str) -> Event {
        Event::Notice {
            dispatch,
            at: 1,
            host: None,
            level: Level::Info,
            message: text.into(),
        }
    }

    #[test]
    fn a_file_reads_back_and_a_torn_last_line_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-2.jsonl");
        let entries = [
            Entry::Writer {
                pid: 7,
                marker: "boot/9|pg:1:2".into(),
            },
            Entry::Buffered {
                lines: vec![BufferedLine {
                    step: 3,
                    at: 4,
                    stream: Stream::Stdout,
                    line: "out".into(),
                }],
                counts: vec![(3, 1, 0)],
            },
            Entry::Event(notice(5, "a")),
            Entry::Event(notice(6, "b")),
        ];
        let mut text: String = entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        std::fs::write(&path, &text).unwrap();
        let o = read_orphan(&path).unwrap();
        assert_eq!(
            (o.writer.pid, o.writer.marker.as_str()),
            (7, "boot/9|pg:1:2")
        );
        assert_eq!((o.buffered.len(), o.counts.clone()), (1, vec![(3, 1, 0)]));
        assert_eq!(o.dispatches(), vec![5, 6]);

        text.push_str("{\"event\":{\"Not");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_orphan(&path).unwrap().events.len(), 2, "torn tail");

        text.push_str("ice\n{}\n");
        std::fs::write(&path, &text).unwrap();
        let err = read_orphan(&path).unwrap_err();
        assert!(err.starts_with("line 5:"), "{err}");
    }
}
