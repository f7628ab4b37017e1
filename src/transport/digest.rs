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
use std::path::Path;
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
    cached_sha256(path, &crate::config::state_dir().join("bundle-digests"))
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
