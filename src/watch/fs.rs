//! Finding files: `notify` events (close-after-write, moved-into, created, written, removed)
//! and full scans of the folder.
//!
//! Overflow policy: events go into the watcher's bounded channel with `try_send`; when it is
//! full the event is dropped and a flag is raised, and the watcher answers the flag with a
//! full rescan (as it answers the kernel's own queue-overflow event). A scan heals any lost
//! event, so losing events costs latency, never a bundle. Control messages (dispatch
//! finished, pause, stop) are sent blocking and never dropped.

use super::filter;
use super::inbox::Msg;
use super::settle::{FileStat, Hint};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

/// Starts the event backend on `dir` (not recursive: bundles are dropped at the top level).
pub fn start_backend(
    dir: &Path,
    tx: SyncSender<Msg>,
    lost: Arc<AtomicBool>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let msg = match res {
            Ok(ev) if ev.need_rescan() => {
                lost.store(true, Ordering::SeqCst);
                Msg::Wake
            }
            Ok(ev) => Msg::Fs(ev),
            Err(e) => {
                tracing::warn!("file system events: {e}");
                lost.store(true, Ordering::SeqCst);
                Msg::Wake
            }
        };
        match tx.try_send(msg) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                lost.store(true, Ordering::SeqCst);
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// What one event says about which files: (name, hint). Names of other folders, ignored
/// names and our own `.dropship` are left out by the caller's filter.
pub fn hints(dir: &Path, ev: &notify::Event) -> Vec<(String, Hint)> {
    let hint = match ev.kind {
        EventKind::Create(_) => Hint::Written,
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Hint::MovedIn,
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            // [from, to]: the source left (a stat will say so), the target moved in.
            let mut out = Vec::new();
            if let Some(n) = ev.paths.first().and_then(|p| name_in(dir, p)) {
                out.push((n, Hint::Seen));
            }
            if let Some(n) = ev.paths.get(1).and_then(|p| name_in(dir, p)) {
                out.push((n, Hint::MovedIn));
            }
            return out;
        }
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => Hint::Seen,
        EventKind::Modify(ModifyKind::Metadata(_)) => Hint::Seen,
        EventKind::Modify(_) => Hint::Written,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Hint::Closed,
        EventKind::Access(_) => return Vec::new(),
        EventKind::Any | EventKind::Other => Hint::Seen,
    };
    ev.paths
        .iter()
        .filter_map(|p| name_in(dir, p))
        .map(|n| (n, hint))
        .collect()
}

/// The file name of `path` if it lies directly in `dir` and is valid UTF-8.
fn name_in(dir: &Path, path: &Path) -> Option<String> {
    if path.parent()? != dir {
        return None;
    }
    path.file_name()?.to_str().map(str::to_owned)
}

/// A regular file's stat; `None` if it is gone, or not a regular file (directories,
/// symlinks, fifos are never bundles).
pub fn stat(path: &Path) -> Option<FileStat> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type().is_file().then(|| FileStat::of(&meta))
}

/// Every bundle candidate in `dir` (regular files with a UTF-8 name that is not ignored).
pub fn scan(dir: &Path, marker: Option<&str>) -> std::io::Result<Vec<(String, FileStat)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(
                "{}: skipping a file whose name is not UTF-8: {:?}",
                dir.display(),
                entry.file_name()
            );
            continue;
        };
        if !filter::candidate(&name, marker) {
            continue;
        }
        if let Some(s) = stat(&entry.path()) {
            out.push((name, s));
        }
    }
    Ok(out)
}

/// `path` with `.SUFFIX` appended (the marker of a staged or shelved bundle).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}
