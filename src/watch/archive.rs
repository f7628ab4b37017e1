//! Moving files without ever overwriting or deleting one.
//!
//! Layout under the watched folder:
//! ```text
//! DIR/.dropship/lock                  held (flock) by the one dropship watching DIR
//! DIR/.dropship/queue/ID-NAME         staged: out of the drop folder, waiting or in flight
//! DIR/.dropship/done/YYYY-MM-DD/NAME  shipped (and duplicates, with NAME.reason)
//! DIR/.dropship/failed/NAME           + NAME.reason
//! DIR/.dropship/unmatched/NAME        + NAME.reason
//! ```
//! Every move is a rename that refuses to replace (`renameat2(RENAME_NOREPLACE)`, else a
//! hard link then unlink), so a name taken in an archive folder gets a `.2`, `.3`... suffix
//! instead of replacing what is there.

use super::filter::STATE_DIR;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folders of one watched directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub queue: PathBuf,
}

/// Where a finished bundle goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shelf {
    Done,
    Failed,
    Unmatched,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        let state = dir.join(STATE_DIR);
        Layout {
            dir: dir.to_path_buf(),
            queue: state.join("queue"),
            state,
        }
    }

    pub fn create(&self) -> std::io::Result<()> {
        for d in [
            &self.queue,
            &self.shelf(Shelf::Failed),
            &self.shelf(Shelf::Unmatched),
        ] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }

    /// The folder of `shelf`; done/ has one subfolder per local date.
    pub fn shelf(&self, shelf: Shelf) -> PathBuf {
        match shelf {
            Shelf::Done => self
                .state
                .join("done")
                .join(chrono::Local::now().format("%Y-%m-%d").to_string()),
            Shelf::Failed => self.state.join("failed"),
            Shelf::Unmatched => self.state.join("unmatched"),
        }
    }
}

/// Renames `from` to `to` unless `to` exists. `Err(AlreadyExists)` when it does.
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: two valid NUL-terminated paths, relative to the current directory.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        // File systems without RENAME_NOREPLACE take the portable way below.
        if !matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
            return Err(err);
        }
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// `NAME`, then `NAME.2`, `NAME.3`...: the n-th candidate name in a shelf.
fn candidate(name: &str, n: u32) -> String {
    if n <= 1 {
        name.to_owned()
    } else {
        format!("{name}.{n}")
    }
}

/// A free name for `name` in `folder`, with its reason file (if any) already written there,
/// so the reason can never end up beside another bundle.
pub fn reserve(folder: &Path, name: &str, reason: Option<&str>) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(folder)?;
    for n in 1..10_000 {
        let target = folder.join(candidate(name, n));
        if target.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(reason) = reason {
            let reason_path = folder.join(format!("{}.reason", candidate(name, n)));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&reason_path)
            {
                Ok(mut f) => {
                    f.write_all(reason.as_bytes())?;
                    if !reason.ends_with('\n') {
                        f.write_all(b"\n")?;
                    }
                    f.sync_all()?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        return Ok(target);
    }
    Err(std::io::Error::other(format!(
        "{}: no free name for {name}",
        folder.display()
    )))
}

/// Moves `from` into `folder` under `name` (or the next free suffix), writing `reason` beside
/// it. Returns where it went.
pub fn shelve(
    from: &Path,
    folder: &Path,
    name: &str,
    reason: Option<&str>,
) -> std::io::Result<PathBuf> {
    loop {
        let target = reserve(folder, name, reason)?;
        match rename_noreplace(from, &target) {
            Ok(()) => return Ok(target),
            // Taken between the check and the move: the reason file is ours; try the next.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let reason_path = PathBuf::from(format!("{}.reason", target.display()));
                if reason.is_some() {
                    let _ = std::fs::remove_file(reason_path);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions_get_a_suffix_and_nothing_is_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let shelf = tmp.path().join("failed");
        let mut placed = Vec::new();
        for i in 0..3 {
            let src = tmp.path().join(format!("src{i}"));
            std::fs::write(&src, format!("content {i}")).unwrap();
            placed.push(shelve(&src, &shelf, "app.tgz", Some(&format!("why {i}"))).unwrap());
            assert!(!src.exists());
        }
        let names: Vec<String> = placed
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["app.tgz", "app.tgz.2", "app.tgz.3"]);
        for (i, p) in placed.iter().enumerate() {
            assert_eq!(std::fs::read_to_string(p).unwrap(), format!("content {i}"));
            let reason = std::fs::read_to_string(format!("{}.reason", p.display())).unwrap();
            assert_eq!(reason, format!("why {i}\n"));
        }
    }

    #[test]
    fn rename_noreplace_refuses_an_existing_target() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let e = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "b");
        assert!(a.exists());
    }
}
