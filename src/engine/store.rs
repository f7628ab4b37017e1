//! The local bundle store: every bundle a dispatch shipped to at least one host is kept,
//! content-addressed, under `$XDG_DATA_HOME/dropship/store/sha256/HASH`, so that
//! `--converge` can ship the last good version again long after the file it came from was
//! moved, rebuilt or deleted.
//!
//! Why content-addressed: the journal records each dispatch's SHA-256, so the store needs no
//! table of its own to find a bundle again, and one file serves every rule that shipped it.
//! The index (`index.json`: which rule kept which bundle when) is a file in the store, not a
//! journal table: it belongs to this machine's disk, not to a team's shared journal.
//!
//! Bounds: per rule the last `keep` bundles (the rule's `keep` key), and in all at most
//! `store_max` bytes, oldest entries evicted first (never the one just stored).
//! Hard-linked when the bundle is on the store's file system (no copy, no extra space until
//! the original is deleted), copied otherwise. Nothing is ever half-written in the store: a
//! copy goes to `tmp/`, is fsynced and renamed into place, and the directory is fsynced; the
//! index likewise. Because a hard link shares the original's contents, a bundle is hashed
//! again before it is shipped from the store ([`Store::find`]): an original rewritten in
//! place is caught, never shipped under the old hash.
//!
//! One process at a time changes the store: `lock` is `flock`ed for every change.

use crate::model::events::Millis;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `store_max` when a rule does not set it: 2 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "bundle store {path}: {op}: {source}\n  help: check the permissions and free space of the store (set XDG_DATA_HOME to move it)"
    )]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error(
        "bundle {bundle} (sha256 {sha256}) is not in the bundle store: looked for {path}\n  help: it was evicted (the rule's `keep`, `store_max`) or never stored; ship it again with --dispatch FILE"
    )]
    Missing {
        bundle: String,
        sha256: String,
        path: PathBuf,
    },
    #[error(
        "bundle {bundle} in the store ({path}) no longer has sha256 {sha256}: the file it was hard-linked from was changed in place\n  help: ship the right file again with --dispatch FILE"
    )]
    Changed {
        bundle: String,
        sha256: String,
        path: PathBuf,
    },
    #[error(
        "bundle store index {path} is unreadable: {detail}\n  help: remove it; the next dispatch writes a new one (stored bundles without an entry are removed then)"
    )]
    Index { path: PathBuf, detail: String },
}

/// One bundle kept for one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub rule: String,
    /// The bundle's file name.
    pub bundle: String,
    pub sha256: String,
    pub size: u64,
    /// When it was last stored (a later dispatch of the same bundle renews it).
    pub stored_at: Millis,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    entries: Vec<Entry>,
}

/// What [`Store::keep`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Where the bundle now is.
    pub path: PathBuf,
    /// Whether it was hard-linked (else copied, or already there).
    pub linked: bool,
    /// Entries removed to stay within `keep` and `store_max`.
    pub evicted: Vec<Entry>,
    /// Bytes the store holds now, and its bound: above it only when the bundle just kept is
    /// larger than the bound on its own.
    pub total: u64,
    pub max: u64,
}

/// What `--check` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub root: PathBuf,
    pub bundles: usize,
    pub bytes: u64,
    pub entries: Vec<Entry>,
}

/// The store at one root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// `$XDG_DATA_HOME/dropship/store`, else `~/.local/share/dropship/store`.
    pub fn default_root() -> PathBuf {
        std::env::var_os("XDG_DATA_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share"))
            })
            .unwrap_or_else(std::env::temp_dir)
            .join("dropship")
            .join("store")
    }

    pub fn new(root: PathBuf) -> Store {
        Store { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the bundle with this hash is (or would be) kept.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn io(&self, path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_owned();
        move |source| StoreError::Io { path, op, source }
    }

    /// Keeps `file` (named `bundle`, with `sha256` and `size`) for `rule`, then trims the
    /// rule's entries to the newest `keep` and the whole store to `max_bytes`.
    #[allow(clippy::too_many_arguments)]
    pub fn keep(
        &self,
        rule: &str,
        bundle: &str,
        file: &Path,
        sha256: &str,
        size: u64,
        keep: usize,
        max_bytes: u64,
        now: Millis,
    ) -> Result<Kept, StoreError> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Index {
                path: self.index_path(),
                detail: format!("`{sha256}` is not a sha256"),
            });
        }
        let blobs = self.root.join("sha256");
        let tmp = self.root.join("tmp");
        for d in [&blobs, &tmp] {
            fs::create_dir_all(d).map_err(self.io(d, "creating the directory"))?;
        }
        let _lock = self.lock()?;
        // Every write happens under the lock: what is in tmp/ now was left by a crash.
        if let Ok(left) = fs::read_dir(&tmp) {
            for e in left.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let path = self.blob_path(sha256);
        let mut linked = false;
        if fs::metadata(&path).ok().map(|m| m.len()) != Some(size) {
            let part = tmp.join(format!("{sha256}.{}", std::process::id()));
            let _ = fs::remove_file(&part);
            linked = fs::hard_link(file, &part).is_ok();
            if !linked {
                copy_synced(file, &part).map_err(self.io(&part, "copying the bundle in"))?;
            }
            fs::rename(&part, &path).map_err(self.io(&path, "moving the bundle into place"))?;
            sync_dir(&blobs).map_err(self.io(&blobs, "syncing the directory"))?;
        }
        let mut index = self.read_index()?;
        index
            .entries
            .retain(|e| !(e.rule == rule && e.sha256 == sha256));
        index.entries.push(Entry {
            rule: rule.to_owned(),
            bundle: bundle.to_owned(),
            sha256: sha256.to_owned(),
            size,
            stored_at: now,
        });
        let mut evicted = trim(&mut index.entries, rule, keep.max(1), max_bytes, sha256);
        // Oldest first in what is reported, as they went.
        evicted.sort_by_key(|e| e.stored_at);
        self.write_index(&index)?;
        self.remove_unreferenced(&index)?;
        Ok(Kept {
            path,
            linked,
            evicted,
            total: total_bytes(&index.entries),
            max: max_bytes,
        })
    }

    /// The stored bundle with `sha256`, hashed again to prove it is what the journal says
    /// was shipped. `bundle` names it in errors.
    pub fn find(&self, bundle: &str, sha256: &str) -> Result<PathBuf, StoreError> {
        let path = self.blob_path(sha256);
        if !path.is_file() {
            return Err(StoreError::Missing {
                bundle: bundle.to_owned(),
                sha256: sha256.to_owned(),
                path,
            });
        }
        let got = crate::transport::local_sha256(&path, None)
            .map_err(self.io(&path, "hashing the stored bundle"))?;
        if got != sha256 {
            return Err(StoreError::Changed {
                bundle: bundle.to_owned(),
                sha256: sha256.to_owned(),
                path,
            });
        }
        Ok(path)
    }

    /// What the store holds (an absent store is empty).
    pub fn usage(&self) -> Result<Usage, StoreError> {
        let index = self.read_index()?;
        let mut shas: Vec<&str> = index.entries.iter().map(|e| e.sha256.as_str()).collect();
        shas.sort_unstable();
        shas.dedup();
        Ok(Usage {
            root: self.root.clone(),
            bundles: shas.len(),
            bytes: total_bytes(&index.entries),
            entries: index.entries,
        })
    }

    fn lock(&self) -> Result<File, StoreError> {
        let p = self.root.join("lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(self.io(&p, "opening the lock"))?;
        f.lock().map_err(self.io(&p, "locking"))?;
        Ok(f)
    }

    fn read_index(&self) -> Result<Index, StoreError> {
        let p = self.index_path();
        match fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Index {
                path: p,
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(self.io(&p, "reading the index")(e)),
        }
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let p = self.index_path();
        let part = self
            .root
            .join("tmp")
            .join(format!("index.json.{}", std::process::id()));
        let text = serde_json::to_vec_pretty(index).unwrap_or_default();
        (|| {
            let mut f = File::create(&part)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&part, &p)?;
            sync_dir(&self.root)
        })()
        .map_err(self.io(&p, "writing the index"))
    }

    /// Removes stored bundles no entry names (evicted ones, and leftovers of a crash
    /// between a rename and the index write).
    fn remove_unreferenced(&self, index: &Index) -> Result<(), StoreError> {
        let dir = self.root.join("sha256");
        let entries = fs::read_dir(&dir).map_err(self.io(&dir, "listing"))?;
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !index.entries.iter().any(|x| x.sha256 == name) {
                fs::remove_file(e.path())
                    .map_err(self.io(&e.path(), "removing an evicted bundle"))?;
            }
        }
        Ok(())
    }
}

/// Bytes of the distinct bundles the entries name (one file per hash).
fn total_bytes(entries: &[Entry]) -> u64 {
    let mut seen: Vec<&str> = Vec::new();
    let mut total = 0;
    for e in entries {
        if !seen.contains(&e.sha256.as_str()) {
            seen.push(&e.sha256);
            total += e.size;
        }
    }
    total
}

/// Drops `rule`'s entries past the newest `keep`, then the oldest entries of any rule until
/// the distinct bundles fit `max_bytes`; the entry of `fresh` for `rule` always stays.
fn trim(
    entries: &mut Vec<Entry>,
    rule: &str,
    keep: usize,
    max_bytes: u64,
    fresh: &str,
) -> Vec<Entry> {
    let mut evicted = Vec::new();
    entries.sort_by_key(|e| std::cmp::Reverse(e.stored_at));
    let mut n = 0;
    entries.retain(|e| {
        if e.rule != rule {
            return true;
        }
        n += 1;
        if n > keep && e.sha256 != fresh {
            evicted.push(e.clone());
            false
        } else {
            true
        }
    });
    while total_bytes(entries) > max_bytes {
        let Some(i) = entries
            .iter()
            .rposition(|e| !(e.rule == rule && e.sha256 == fresh))
        else {
            break;
        };
        evicted.push(entries.remove(i));
    }
    evicted
}

fn copy_synced(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = File::open(from)?;
    let mut dst = File::create(to)?;
    io::copy(&mut src, &mut dst)?;
    dst.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Keeps the bundle of dispatch `d` in the store when it reached at least one host
/// (`summary`), for `--converge`: every front end calls this after its rollout (headless,
/// the console, the drop folder, which moves the file away only after). A store that cannot
/// take it is a warning of the dispatch, not a failure: the bundle did ship. The copy and
/// its fsync run on a blocking thread.
pub async fn keep_shipped(
    d: std::sync::Arc<super::rollout::Dispatch>,
    summary: &super::rollout::Summary,
    emit: super::rollout::Emit,
) {
    use crate::model::events::TargetResult;
    if summary.kind != super::rollout::Kind::Dispatch || summary.count(TargetResult::Succeeded) == 0
    {
        return;
    }
    let sha = summary.bundle_sha256.clone();
    let _ = tokio::task::spawn_blocking(move || keep_blocking(&d, sha, &emit)).await;
}

fn keep_blocking(d: &super::rollout::Dispatch, sha: Option<String>, emit: &super::rollout::Emit) {
    use crate::model::events::{Event, Level, now_ms};
    let rule = &d.plan.rule;
    let notice = |level, message: String| {
        emit(Event::Notice {
            dispatch: d.id,
            at: now_ms(),
            host: None,
            level,
            message,
        })
    };
    let store = Store::new(Store::default_root());
    let size = match fs::metadata(&d.bundle) {
        Ok(m) => m.len(),
        Err(e) => {
            notice(
                Level::Warning,
                format!(
                    "bundle not kept for --converge: {}: {e}",
                    d.bundle.display()
                ),
            );
            return;
        }
    };
    let Some(sha) = sha else {
        notice(
            Level::Warning,
            format!(
                "bundle not kept for --converge: its SHA-256 is unknown ({} could not be hashed)",
                d.bundle.display()
            ),
        );
        return;
    };
    match store.keep(
        &rule.name,
        &d.plan.bundle,
        &d.bundle,
        &sha,
        size,
        rule.keep,
        rule.store_max,
        now_ms(),
    ) {
        Ok(k) => {
            for e in &k.evicted {
                notice(
                    Level::Info,
                    format!(
                        "bundle store: evicted {} of [{}] (keep = {}, store_max = {} bytes)",
                        e.bundle, e.rule, rule.keep, k.max
                    ),
                );
            }
            if k.total > k.max {
                notice(
                    Level::Warning,
                    format!(
                        "bundle store: {} alone ({size} bytes) is over store_max ({} bytes); kept anyway, as the last good bundle",
                        d.plan.bundle, k.max
                    ),
                );
            }
        }
        Err(e) => notice(
            Level::Warning,
            format!("bundle not kept for --converge: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(data))
    }

    #[test]
    fn keeps_per_rule_and_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("store"));
        let put = |rule: &str, name: &str, data: &[u8], at: Millis, max: u64| {
            let f = dir.path().join(name);
            fs::write(&f, data).unwrap();
            store
                .keep(rule, name, &f, &sha(data), data.len() as u64, 2, max, at)
                .unwrap()
        };
        fs::create_dir_all(store.root().join("tmp")).unwrap();
        fs::write(store.root().join("tmp/crashed.123"), b"half").unwrap();
        let a1 = put("a", "a-1", &[1; 100], 1, 1000);
        assert!(!store.root().join("tmp/crashed.123").exists());
        assert!(a1.linked, "same file system: hard-linked");
        put("a", "a-2", &[2; 100], 2, 1000);
        let k = put("a", "a-3", &[3; 100], 3, 1000);
        assert_eq!(
            k.evicted
                .iter()
                .map(|e| e.bundle.as_str())
                .collect::<Vec<_>>(),
            ["a-1"]
        );
        assert!(!store.blob_path(&sha(&[1; 100])).exists());
        assert_eq!(store.find("a-3", &sha(&[3; 100])).unwrap(), k.path);
        // The bound: 300 bytes hold three; a fourth evicts the oldest of any rule.
        put("b", "b-1", &[4; 100], 4, 300);
        let k = put("b", "b-2", &[5; 100], 5, 300);
        assert_eq!(
            k.evicted
                .iter()
                .map(|e| e.bundle.as_str())
                .collect::<Vec<_>>(),
            ["a-2"]
        );
        assert_eq!((k.total, k.max), (300, 300));
        let u = store.usage().unwrap();
        assert_eq!((u.bundles, u.bytes), (3, 300));
        // One bundle over the bound on its own stays (it is what converge needs).
        let k = put("c", "c-1", &[6; 500], 6, 300);
        assert_eq!(k.total, 500);
        assert_eq!(store.usage().unwrap().bundles, 1);
        // Missing and changed are told apart.
        assert!(matches!(
            store.find("a-1", &sha(&[1; 100])),
            Err(StoreError::Missing { .. })
        ));
        fs::write(dir.path().join("c-1"), [7; 500]).unwrap(); // hard link: same inode
        assert!(matches!(
            store.find("c-1", &sha(&[6; 500])),
            Err(StoreError::Changed { .. })
        ));
        assert!(
            fs::read_dir(store.root().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    /// A bundle on another file system (tmpfs `/dev/shm` here) is copied, not linked: the
    /// store's file survives the original being rewritten.
    #[test]
    fn copies_across_file_systems() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir_in("/dev/shm")
            .expect("this test needs /dev/shm (tmpfs on Linux) as a second file system");
        let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).unwrap();
        assert_ne!(
            dev(other.path()),
            dev(dir.path()),
            "/dev/shm must be another file system than the temporary directory for this test"
        );
        let store = Store::new(dir.path().join("store"));
        let f = other.path().join("x-1");
        let data = [9u8; 4096];
        fs::write(&f, data).unwrap();
        let k = store
            .keep("x", "x-1", &f, &sha(&data), 4096, 5, 1 << 20, 1)
            .unwrap();
        assert!(!k.linked);
        fs::write(&f, [0u8; 4096]).unwrap();
        assert_eq!(store.find("x-1", &sha(&data)).unwrap(), k.path);
        assert_eq!(fs::read(&k.path).unwrap(), data);
    }
}
