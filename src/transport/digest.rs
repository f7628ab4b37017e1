//! The SHA-256 of a bundle, remembered per file identity so dispatching the same,
//! unchanged bundle again does not read and hash it again (#14: at 512 MiB that read is
//! 0.3–0.45 s of a whole dispatch).
//!
//! The key is what the kernel says about the file: device, inode, size, mtime and ctime,
//! both to the nanosecond. Writing the file changes mtime and ctime; resetting mtime
//! (`touch -d`) changes ctime, which no user call can set. A digest is only stored when the
//! file's identity was the same before and after hashing and its last change is older than
//! [`SETTLED`], so a file still being written (whose next write may land in the same
//! timestamp tick) is never remembered.
//!
//! A wrong entry could never make a wrong bundle pass: the host hashes what it received and
//! compares it with this digest, so a stale digest fails the verification loudly.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many files' digests are kept (newest win): a release engineer's recent bundles.
const KEEP: usize = 256;
/// A file changed more recently than this is hashed but not remembered.
const SETTLED: Duration = Duration::from_secs(2);
/// The first word of every line: the format's version.
const VERSION: &str = "v1";

/// The identity of a file's contents as far as the kernel tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    fn key(&self) -> String {
        format!(
            "{VERSION} {} {} {} {}.{:09} {}.{:09}",
            self.dev, self.ino, self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        )
    }

    /// Whether the last change is at least [`SETTLED`] old.
    fn settled(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let latest = self.mtime.max(self.ctime);
        let changed = Duration::new(
            latest.0.max(0) as u64,
            latest.1.clamp(0, 999_999_999) as u32,
        );
        now.saturating_sub(changed) >= SETTLED
    }
}

/// SHA-256 (hex) of all of `path`, from the digest cache in dropship's state directory when
/// the file is unchanged since it was hashed, else by reading it (and remembering it).
pub fn bundle_sha256(path: &Path) -> std::io::Result<String> {
    cached_sha256(path, &default_cache())
}

/// The digest the cache remembers for `path` as it is now, without reading the file: what a
/// dispatch knows before its first byte goes out. `None` when the file was never hashed, has
/// changed since, or cannot be looked at (the hash then reports why).
pub fn remembered_sha256(path: &Path) -> Option<String> {
    remembered_in(path, &default_cache())
}

fn default_cache() -> std::path::PathBuf {
    crate::config::state_dir().join("bundle-digests")
}

fn remembered_in(path: &Path, cache: &Path) -> Option<String> {
    let key = Identity::of(&std::fs::metadata(path).ok()?).key();
    let text = std::fs::read_to_string(cache).ok()?;
    lookup(&text, &key).map(str::to_owned)
}

/// [`bundle_sha256`] with the cache file `cache`. The cache is best effort: a cache that
/// cannot be read or written only means hashing the file.
pub fn cached_sha256(path: &Path, cache: &Path) -> std::io::Result<String> {
    let before = Identity::of(&std::fs::metadata(path)?);
    let key = before.key();
    let text = std::fs::read_to_string(cache).unwrap_or_default();
    if let Some(sha) = lookup(&text, &key) {
        return Ok(sha.to_owned());
    }
    let sha = super::local_sha256(path, None)?;
    let after = Identity::of(&std::fs::metadata(path)?);
    if after == before && after.settled() {
        let _ = store(cache, &text, &key, &sha);
    }
    Ok(sha)
}

/// The SHA-256 of a dispatch's bundle, shared by all its hosts: known at the start when the
/// cache remembers it, else computed on a thread of its own while the hosts connect and
/// upload (#14: hashing 512 MiB first held the first byte back by 0.3–0.45 s, a third of a
/// whole scp-speed upload).
///
/// Nothing is compared with it before it is known: a host's verification waits for it (see
/// [`BundleDigest::wait`]), so "what arrived is byte for byte what left" holds end to end
/// exactly as before; only the order of the work changed.
#[derive(Clone)]
pub struct BundleDigest(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    settled: Condvar,
}

enum State {
    Hashing,
    Known(String),
    Failed(String),
}

/// Why [`BundleDigest::wait`] returned without a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestWait {
    Cancelled,
    /// The bundle could not be read: what and why.
    Failed(String),
}

impl BundleDigest {
    /// A digest known from the start.
    pub fn known(sha: String) -> BundleDigest {
        BundleDigest::with(State::Known(sha))
    }

    fn with(state: State) -> BundleDigest {
        BundleDigest(Arc::new(Shared {
            state: Mutex::new(state),
            settled: Condvar::new(),
        }))
    }

    /// Starts hashing `path` (through the cache, which remembers the result for the next
    /// dispatch) on a thread of its own. `done` runs on that thread with the digest before
    /// any waiter sees it, so whoever records it (the journal, through an event) has it
    /// before any host's verification that used it.
    pub fn hash(path: PathBuf, done: impl FnOnce(&str) + Send + 'static) -> BundleDigest {
        let digest = BundleDigest::with(State::Hashing);
        let settle = Settle(digest.0.clone());
        let spawned = std::thread::Builder::new()
            .name("bundle-sha256".into())
            .spawn(move || {
                let state = match bundle_sha256(&path) {
                    Ok(sha) => {
                        done(&sha);
                        State::Known(sha)
                    }
                    Err(e) => State::Failed(format!("cannot hash {}: {e}", path.display())),
                };
                settle.to(state);
            });
        if let Err(e) = spawned {
            Settle(digest.0.clone()).to(State::Failed(format!(
                "cannot start hashing the bundle: {e}"
            )));
        }
        digest
    }

    /// The digest if it is known now.
    pub fn get(&self) -> Option<String> {
        match &*lock(&self.0.state) {
            State::Known(sha) => Some(sha.clone()),
            State::Hashing | State::Failed(_) => None,
        }
    }

    /// The digest, once it is known; polls `cancel` meanwhile (hashing a big bundle on a
    /// slow disk may take a while, and a cancel must not wait for it).
    pub fn wait(&self, cancel: &dyn Fn() -> bool) -> Result<String, DigestWait> {
        let mut state = lock(&self.0.state);
        loop {
            match &*state {
                State::Known(sha) => return Ok(sha.clone()),
                State::Failed(why) => return Err(DigestWait::Failed(why.clone())),
                State::Hashing if cancel() => return Err(DigestWait::Cancelled),
                State::Hashing => {
                    state = self
                        .0
                        .settled
                        .wait_timeout(state, Duration::from_millis(50))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Settles a [`BundleDigest`] and wakes its waiters; if the hashing thread ends without
/// settling it (a panic in `done`), the drop settles it as failed, so no host waits forever.
struct Settle(Arc<Shared>);

impl Settle {
    fn to(self, state: State) {
        *lock(&self.0.state) = state;
        self.0.settled.notify_all();
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        if matches!(*state, State::Hashing) {
            *state =
                State::Failed("internal error: hashing the bundle ended without a result".into());
            self.0.settled.notify_all();
        }
    }
}

fn lookup<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().rev().find_map(|l| {
        let (k, sha) = l.rsplit_once(' ')?;
        (k == key && sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sha)
    })
}

/// Appends `key sha` to what the cache held, keeping the newest [`KEEP`] lines, and
/// replaces the file atomically (a temporary file renamed over it), so a reader never sees
/// half a line. Two dropships storing at once may lose one entry: it is hashed again next
/// time.
fn store(cache: &Path, old: &str, key: &str, sha: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = cache.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let lines: Vec<&str> = old
        .lines()
        .filter(|l| l.starts_with(VERSION) && !l.starts_with(&format!("{key} ")))
        .collect();
    let skip = lines.len().saturating_sub(KEEP - 1);
    let mut tmp = tempfile_in(dir)?;
    for l in &lines[skip..] {
        writeln!(tmp.1, "{l}")?;
    }
    writeln!(tmp.1, "{key} {sha}")?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, cache).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp.0);
    })
}

/// A new file beside the cache, readable by its owner only.
fn tempfile_in(dir: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = dir.join(format!(
        ".bundle-digests.{}.{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)?;
    Ok((name, f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sha(data: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(data))
    }

    /// Sets both timestamps of `path` to `secs` ago (so the file counts as settled).
    fn age(path: &Path, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }

    #[test]
    fn an_unchanged_file_is_hashed_once_and_a_changed_one_again() {
        let dir = tempfile::tempdir().unwrap();
        let (file, cache) = (dir.path().join("b.tgz"), dir.path().join("state/digests"));
        std::fs::write(&file, b"first contents").unwrap();
        age(&file, 60);
        // ctime is now; wait until it is settled too.
        std::thread::sleep(SETTLED + Duration::from_millis(100));
        assert_eq!(
            cached_sha256(&file, &cache).unwrap(),
            sha(b"first contents")
        );
        let text = std::fs::read_to_string(&cache).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        // Served from the cache: prove it by planting a different digest for the same key.
        let planted = text.replace(&sha(b"first contents"), &"a".repeat(64));
        std::fs::write(&cache, planted).unwrap();
        assert_eq!(cached_sha256(&file, &cache).unwrap(), "a".repeat(64));
        // Same size, new contents, mtime put back: ctime moved, so it is hashed again.
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        let mut f = std::fs::File::options().write(true).open(&file).unwrap();
        f.write_all(b"other contents").unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(mtime))
            .unwrap();
        drop(f);
        assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);
        assert_eq!(
            cached_sha256(&file, &cache).unwrap(),
            sha(b"other contents")
        );
    }

    #[test]
    fn a_digest_being_computed_is_waited_for_and_announced_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.tgz");
        std::fs::write(&file, b"bundle bytes").unwrap();
        let (gate, open) = std::sync::mpsc::channel::<()>();
        let announced = Arc::new(Mutex::new(None));
        let seen = announced.clone();
        let digest = BundleDigest::hash(file.clone(), move |sha| {
            open.recv().unwrap();
            *seen.lock().unwrap() = Some(sha.to_owned());
        });
        // Held in `done`: not known, and a cancelled wait gives up.
        assert_eq!(digest.get(), None);
        assert_eq!(digest.wait(&|| true), Err(DigestWait::Cancelled));
        let waiter = {
            let digest = digest.clone();
            std::thread::spawn(move || digest.wait(&|| false))
        };
        gate.send(()).unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(sha(b"bundle bytes")));
        // `done` ran before any waiter saw the digest.
        assert_eq!(*announced.lock().unwrap(), Some(sha(b"bundle bytes")));
        assert_eq!(digest.get(), Some(sha(b"bundle bytes")));
        assert_eq!(
            BundleDigest::known("k".into()).wait(&|| true),
            Ok("k".to_owned())
        );
    }

    #[test]
    fn a_digest_that_cannot_be_computed_fails_its_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let missing = BundleDigest::hash(dir.path().join("gone.tgz"), |_| {});
        match missing.wait(&|| false) {
            Err(DigestWait::Failed(why)) => assert!(why.contains("gone.tgz"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A panic where the digest is announced must not leave anyone waiting forever.
        let file = dir.path().join("b.tgz");
        std::fs::write(&file, b"x").unwrap();
        let broken = BundleDigest::hash(file, |_| panic!("announcing failed"));
        assert!(matches!(broken.wait(&|| false), Err(DigestWait::Failed(_))));
    }

    #[test]
    fn a_remembered_digest_is_found_without_reading_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (file, cache) = (dir.path().join("b.tgz"), dir.path().join("digests"));
        std::fs::write(&file, b"settled").unwrap();
        assert_eq!(remembered_in(&file, &cache), None);
        let key = Identity::of(&std::fs::metadata(&file).unwrap()).key();
        store(&cache, "", &key, &"d".repeat(64)).unwrap();
        assert_eq!(remembered_in(&file, &cache), Some("d".repeat(64)));
        std::fs::write(&file, b"changed").unwrap();
        assert_eq!(remembered_in(&file, &cache), None);
    }

    #[test]
    fn a_file_changed_just_now_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let (file, cache) = (dir.path().join("b.tgz"), dir.path().join("digests"));
        std::fs::write(&file, b"fresh").unwrap();
        assert_eq!(cached_sha256(&file, &cache).unwrap(), sha(b"fresh"));
        assert!(!cache.exists());
    }

    #[test]
    fn the_cache_keeps_the_newest_entries_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("digests");
        let mut old = String::from("garbage line\nv1 1 2 3 4.000000000 5.000000000 short\n");
        for i in 0..KEEP + 10 {
            old.push_str(&format!(
                "v1 {i} 0 0 0.000000000 0.000000000 {}\n",
                "b".repeat(64)
            ));
        }
        store(
            &cache,
            &old,
            "v1 9 9 9 9.000000000 9.000000000",
            &"c".repeat(64),
        )
        .unwrap();
        let text = std::fs::read_to_string(&cache).unwrap();
        assert_eq!(text.lines().count(), KEEP);
        assert!(!text.contains("garbage"));
        assert_eq!(
            lookup(&text, "v1 9 9 9 9.000000000 9.000000000"),
            Some("c".repeat(64).as_str())
        );
        assert_eq!(lookup(&text, "v1 1 2 3 4.000000000 5.000000000"), None);
        assert_eq!(
            lookup(
                &text,
                &format!("v1 {} 0 0 0.000000000 0.000000000", KEEP + 9)
            ),
            Some("b".repeat(64).as_str())
        );
    }
}
