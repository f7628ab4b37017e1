//! dropship's log file, one for every front end: `dropship.log` in the state directory
//! ([`crate::config::state_dir`]: `$XDG_STATE_HOME/dropship`, else
//! `~/.local/state/dropship`).
//!
//! Warnings raised where no front end is in reach (a journal write that failed, a host key
//! accepted under `accept-new`) are traced; without a subscriber, headless runs lost them.
//! Every front end now installs this one, and nothing traced ever goes to the terminal (the
//! console draws there); what the user must see also arrives as an event
//! ([`crate::transport::warnings`]).
//!
//! Bounded: when the file would pass [`MAX_BYTES`] it is renamed to `dropship.log.1`
//! (replacing the one before) and a new file begins, so the two hold at most about twice
//! that. Rotation rather than truncation keeps the last 10 MiB before the cut for a bug
//! report. Several processes may log at once (the console and a `--watch` service): each
//! appends whole events, and one that finds the file already rotated by another follows it
//! instead of rotating again.
//!
//! No secrets: dropship's own messages carry none (events carry none, errors name hosts,
//! logins and paths, never passwords), and other crates never log below `info` here
//! whatever `DROPSHIP_LOG` says: suppaftp traces `PASS <password>` at debug, and an HTTP
//! client's debug output could show a webhook URL, whose path is its secret.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Size at which the log file is rotated.
pub const MAX_BYTES: u64 = 10 << 20;

/// The log file's path: `dropship.log` in the state directory.
pub fn path() -> PathBuf {
    crate::config::state_dir().join("dropship.log")
}

/// Installs the log file as the process's tracing subscriber (once; later calls return the
/// same answer) and returns its path, or `None` when it cannot be opened (logging is then
/// off: never a reason to refuse work). `DROPSHIP_LOG=trace|debug|info|warn|error` sets the
/// level of dropship's own messages (default `info`).
pub fn init() -> Option<PathBuf> {
    static INSTALLED: OnceLock<Option<PathBuf>> = OnceLock::new();
    INSTALLED.get_or_init(install).clone()
}

fn install() -> Option<PathBuf> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let path = path();
    let file = Rotating::open(path.clone(), MAX_BYTES).ok()?;
    let level = match std::env::var("DROPSHIP_LOG").as_deref() {
        Ok("trace") => LevelFilter::TRACE,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("warn") => LevelFilter::WARN,
        Ok("error") => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    };
    let filter = Targets::new()
        .with_default(level.min(LevelFilter::INFO))
        .with_target("dropship", level);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false),
        )
        .with(filter)
        .try_init()
        .ok()?;
    Some(path)
}

/// An append-only file that rotates at a size; see the module doc.
pub struct Rotating {
    path: PathBuf,
    file: File,
    max: u64,
}

impl Rotating {
    /// Opens (creating it and its directory) the file at `path`.
    pub fn open(path: PathBuf, max: u64) -> std::io::Result<Rotating> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = append(&path)?;
        Ok(Rotating { path, file, max })
    }

    /// Where the previous file goes: `NAME.1`.
    pub fn rotated(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    fn rotate(&mut self) {
        let ours = self.file.metadata().map(|m| (m.dev(), m.ino())).ok();
        let there = std::fs::metadata(&self.path)
            .map(|m| (m.dev(), m.ino()))
            .ok();
        // Another process rotated already (or removed the file): only follow it.
        if ours.is_some() && ours == there {
            let _ = std::fs::rename(&self.path, Self::rotated(&self.path));
        }
        if let Ok(f) = append(&self.path) {
            self.file = f;
        }
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for Rotating {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 && len + buf.len() as u64 > self.max {
            self.rotate();
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_bound_and_keeps_one_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("dropship.log");
        let mut log = Rotating::open(path.clone(), 1000).unwrap();
        let line = [b'a'; 99];
        for i in 0..35 {
            log.write_all(&line).unwrap();
            log.write_all(b"\n").unwrap();
            let now = std::fs::metadata(&path).unwrap().len();
            assert!(now <= 1000, "after line {i}: {now} bytes");
        }
        // 3500 bytes written: three rotations to `.1`, each replacing the one before.
        let old = std::fs::metadata(Rotating::rotated(&path)).unwrap().len();
        let now = std::fs::metadata(&path).unwrap().len();
        assert_eq!((old, now), (1000, 500));
    }

    #[test]
    fn a_second_writer_follows_a_rotation_instead_of_repeating_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropship.log");
        let mut a = Rotating::open(path.clone(), 100).unwrap();
        let mut b = Rotating::open(path.clone(), 100).unwrap();
        a.write_all(&[b'a'; 90]).unwrap();
        a.write_all(&[b'A'; 20]).unwrap(); // rotates: .1 holds the 90 a
        b.write_all(&[b'b'; 20]).unwrap(); // its file (now .1) is full: follows to the new one
        assert_eq!(std::fs::read(Rotating::rotated(&path)).unwrap(), [b'a'; 90]);
        let now = std::fs::read(&path).unwrap();
        assert_eq!(now, [[b'A'; 20], [b'b'; 20]].concat());
    }
}
