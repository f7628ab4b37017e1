//! Which names in a drop folder are bundles. Writers conventionally write to a hidden or
//! suffixed name and rename when done, so those names are never candidates; the folder's own
//! bookkeeping lives in `DIR/.dropship/`, a dotfile too.

/// The folder dropship keeps its queue and archive in, inside the watched folder.
pub const STATE_DIR: &str = ".dropship";

/// Dotfiles (including [`STATE_DIR`]), `*.part`, `*.tmp` and `*~`: files still being written
/// by convention, editor backups, and our own state.
pub fn ignored(name: &str) -> bool {
    name.is_empty()
        || name.starts_with('.')
        || name.ends_with(".part")
        || name.ends_with(".tmp")
        || name.ends_with('~')
}

/// With `--marker SUFFIX`, `NAME.SUFFIX` is the marker of `NAME`.
pub fn marker_name(name: &str, suffix: &str) -> String {
    format!("{name}.{suffix}")
}

/// Whether `name` is a marker file (and so never a bundle itself).
pub fn is_marker(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name[..name.len() - suffix.len()].ends_with('.')
}

/// Whether `name` is a bundle candidate of a folder watched with `marker`.
pub fn candidate(name: &str, marker: Option<&str>) -> bool {
    !ignored(name) && marker.is_none_or(|m| !is_marker(name, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_hidden_and_backup_names_are_ignored() {
        for name in [
            ".app-1.tgz",
            ".dropship",
            "app-1.tgz.part",
            "app-1.tgz.tmp",
            "app-1.tgz~",
            "",
        ] {
            assert!(ignored(name), "{name}");
        }
        for name in ["app-1.tgz", "app.partial", "tmp", "app-1.tgz.done", "a~b"] {
            assert!(!ignored(name), "{name}");
        }
    }

    #[test]
    fn markers_are_not_bundles() {
        assert!(is_marker("app-1.tgz.done", "done"));
        assert!(!is_marker("app-1.tgz", "done"));
        assert!(!is_marker(".done", "done"));
        assert!(!is_marker("appdone", "done"));
        assert!(candidate("app-1.tgz", Some("done")));
        assert!(!candidate("app-1.tgz.done", Some("done")));
        assert!(candidate("app-1.tgz.done", None));
        assert_eq!(marker_name("app-1.tgz", "done"), "app-1.tgz.done");
    }
}
