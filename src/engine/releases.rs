//! The versioned release layout (`layout = releases`), Capistrano-style:
//!
//! ```text
//! DEST_DIR/
//!   releases/1.4.1/        one directory per release, unpacked from its bundle
//!   releases/1.4.2/.version
//!   current -> releases/1.4.2   the live release: a relative symlink, swapped by rename(2)
//!   .releases              deploy order, oldest first, one release name a line
//!   .version               the name `current` points to (written after every switch)
//! ```
//!
//! Why a history file and not directory names: "previous" must mean the release that was
//! live before, and neither version strings (`1.10` vs `1.9`) nor timestamps (a re-shipped
//! old version) sort that way. `current` (the symlink) is the truth about what is live; the
//! history says what came before it. Every change writes the symlink first and the history
//! second, and every reader copes with a `current` the history does not list yet (the
//! process died between the two), so a crash never makes a rollback go to the wrong place.
//!
//! Everything here builds shell text and reads its answers; values are quoted with `shlex`.
//! The scripts need a POSIX shell and `mv -T` (GNU coreutils or BusyBox): `mv` without it
//! moves a new symlink *into* the directory `current` points to instead of replacing it.

pub use crate::plan::layout::{Tree, check_name, placeholders, release_name};
use crate::transport::{Shell, Stream, TransportError};
use std::time::Duration;

use crate::config::shell::quote as q;

/// Why a release operation failed. Every message names the host and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(
        "{host}: no previous release to roll back to (current: {}, history: {})\n  help: ship the release you want instead",
        .current.as_deref().unwrap_or("none"),
        if .history.is_empty() { "empty".to_owned() } else { .history.join(" ") }
    )]
    NothingToRollBack {
        host: String,
        current: Option<String>,
        history: Vec<String>,
    },
    #[error(
        "{host}: the previous release {name} is no longer in releases/ (deleted by hand?)\n  help: ship that version again, or fix the history file {history_file}"
    )]
    PreviousGone {
        host: String,
        name: String,
        history_file: String,
    },
    #[error(
        "{host}: {path} exists and is not a symlink: it is not a release layout\n  help: move it away (e.g. to releases/NAME) so dropship can manage `current`"
    )]
    CurrentNotALink { host: String, path: String },
    #[error(
        "{host}: `current` points to {target}, outside releases/\n  help: point it at a release (ln -sfn releases/NAME current) or remove it"
    )]
    CurrentElsewhere { host: String, target: String },
    #[error("{host}: {detail}")]
    Script { host: String, detail: String },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// What a host's release tree looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The release `current` points to (`None`: no `current`).
    pub current: Option<String>,
    /// Deploy order, oldest first (only valid names are kept).
    pub history: Vec<String>,
    /// Entries of `releases/` (valid release names and dropship's temporaries).
    pub dirs: Vec<String>,
}

impl State {
    /// The release live before `current`: the entry before it in the history; when the
    /// history does not list `current` (the process died between switching and recording),
    /// the newest entry that is not `current`.
    pub fn previous(&self) -> Option<&str> {
        match self.current.as_deref() {
            Some(cur) => match self.history.iter().rposition(|h| h == cur) {
                Some(i) => i.checked_sub(1).map(|j| self.history[j].as_str()),
                None => self.history.last().map(String::as_str),
            },
            None => self.history.last().map(String::as_str),
        }
    }

    /// The history with `current` on top, as it stands once a switch to `name` is done.
    pub fn history_after_deploy(&self, name: &str) -> Vec<String> {
        let mut h: Vec<String> = self
            .history
            .iter()
            .filter(|x| *x != name)
            .cloned()
            .collect();
        h.push(name.to_owned());
        h
    }

    /// Where a rollback goes and the history after it: the previous release, and the
    /// history up to and including it (`current` and anything after it are dropped).
    pub fn rollback(&self) -> Option<(String, Vec<String>)> {
        let target = self.previous()?.to_owned();
        let cut = match self.current.as_deref() {
            Some(cur) => self
                .history
                .iter()
                .rposition(|h| h == cur)
                .unwrap_or(self.history.len()),
            None => self.history.len(),
        };
        let mut h = self.history[..cut].to_vec();
        // `target` is the newest entry of what is left.
        while h.last().is_some_and(|x| *x != target) {
            h.pop();
        }
        Some((target, h))
    }

    /// What pruning removes and the history that stays: the newest `keep` entries of the
    /// history stay, and so do `current` and the release before it whatever `keep` says;
    /// every other release directory goes, and so do leftovers of interrupted unpacks.
    pub fn prune(&self, keep: usize) -> (Vec<String>, Vec<String>) {
        let mut kept: Vec<String> =
            self.history[self.history.len().saturating_sub(keep)..].to_vec();
        for must in [self.current.as_deref(), self.previous()]
            .into_iter()
            .flatten()
        {
            if !kept.iter().any(|k| k == must) {
                kept.push(must.to_owned());
            }
        }
        let history: Vec<String> = self
            .history
            .iter()
            .filter(|h| kept.contains(h))
            .cloned()
            .collect();
        let delete = self
            .dirs
            .iter()
            .filter(|d| !kept.contains(d))
            .filter(|d| is_release_or_temp(d))
            .cloned()
            .collect();
        (delete, history)
    }
}

/// Prefixes of dropship's temporaries under `releases/`.
const UNPACKING: &str = ".unpack-";
const REPLACED: &str = ".old-";

fn is_release_or_temp(name: &str) -> bool {
    let bare = name
        .strip_prefix(UNPACKING)
        .or_else(|| name.strip_prefix(REPLACED))
        .unwrap_or(name);
    check_name(bare).is_ok()
}

/// The script that prints the tree's state: `current=TARGET`, `notlink` when `current` is
/// not a symlink, then the history and the `releases/` entries after markers.
fn state_script(tree: &Tree) -> String {
    let b = q(&tree.base);
    format!(
        r#"b={b}; printf 'current=%s\n' "$(readlink -- "$b/current" 2>/dev/null)"
if [ -e "$b/current" ] && [ ! -L "$b/current" ]; then echo notlink; fi
echo '#history'; cat -- "$b/.releases" 2>/dev/null; echo
echo '#dirs'; ls -1A -- "$b/releases" 2>/dev/null; exit 0"#
    )
}

/// Parses what [`state_script`] printed.
pub fn parse_state(host: &str, tree: &Tree, out: &str) -> Result<State, ReleaseError> {
    let mut state = State::default();
    let mut section = "";
    for line in out.lines() {
        match line {
            "#history" | "#dirs" => section = line,
            "notlink" if section.is_empty() => {
                return Err(ReleaseError::CurrentNotALink {
                    host: host.to_owned(),
                    path: tree.current(),
                });
            }
            _ if section.is_empty() => {
                if let Some(t) = line.strip_prefix("current=").filter(|t| !t.is_empty()) {
                    let name = t.trim_end_matches('/').strip_prefix("releases/");
                    match name.filter(|n| check_name(n).is_ok()) {
                        Some(n) => state.current = Some(n.to_owned()),
                        None => {
                            return Err(ReleaseError::CurrentElsewhere {
                                host: host.to_owned(),
                                target: t.to_owned(),
                            });
                        }
                    }
                }
            }
            _ if section == "#history" => {
                let l = line.trim();
                if check_name(l).is_ok() {
                    state.history.push(l.to_owned());
                }
            }
            _ => {
                if !line.is_empty() {
                    state.dirs.push(line.to_owned());
                }
            }
        }
    }
    Ok(state)
}

/// Reads the release tree of a host.
pub fn read_state(shell: &mut dyn Shell, host: &str, tree: &Tree) -> Result<State, ReleaseError> {
    let out = shell.script(&state_script(tree), Duration::ZERO)?;
    parse_state(host, tree, &out)
}

/// Reads the release tree of `target` without changing anything on this machine either:
/// for a look before the user confirmed (the console's rollback preview). Over SSH (the
/// rule's `ssh_port` for FTP rules) with [`ssh::connect_unrecorded`], so under
/// `host_key = accept-new` an unknown key is not recorded by a dialog that may be
/// cancelled; no FTP session is opened.
///
/// [`ssh::connect_unrecorded`]: crate::transport::ssh::connect_unrecorded
pub fn peek(
    target: &crate::plan::Target,
    rule: &crate::config::Rule,
    known_hosts: &crate::transport::known_hosts::KnownHostsFiles,
) -> Result<State, ReleaseError> {
    use crate::config::Protocol;
    use crate::transport::{local, ssh};
    let host = &target.host.name;
    let tree = Tree::new(&target.dest_dir);
    let port = match target.protocol {
        Protocol::Local => return read_state(&mut local::Local::new(host), host, &tree),
        _ => target.ssh_port(rule),
    };
    let params = crate::engine::connect::ssh_params(target, port, rule, known_hosts);
    let mut session = ssh::connect_unrecorded(&params, params.host_key).0?;
    read_state(&mut session, host, &tree)
}

/// How `bundle` (by its file name) is unpacked: the command that extracts `$f` into `$t`.
pub fn extract_command(bundle: &str) -> &'static str {
    let lower = bundle.to_ascii_lowercase();
    let ends = |exts: &[&str]| exts.iter().any(|e| lower.ends_with(e));
    if ends(&[".tar.gz", ".tgz"]) {
        r#"tar -xzf "$f" -C "$t""#
    } else if ends(&[".tar.xz", ".txz"]) {
        r#"tar -xJf "$f" -C "$t""#
    } else if ends(&[".tar.bz2", ".tbz2", ".tbz"]) {
        r#"tar -xjf "$f" -C "$t""#
    } else if ends(&[".tar.zst", ".tzst"]) {
        r#"tar --zstd -xf "$f" -C "$t""#
    } else if ends(&[".tar"]) {
        r#"tar -xf "$f" -C "$t""#
    } else if ends(&[".zip"]) {
        r#"unzip -q "$f" -d "$t""#
    } else {
        // Not an archive (a .jar, a binary): the release holds the file itself.
        r#"cp -p -- "$f" "$t/""#
    }
}

/// Exit status of the unpack script when the release of that name is the live one.
pub const LIVE: i32 = 65;

/// The script that unpacks `bundle_path` into `releases/NAME`: into a temporary directory
/// first, so a failed or interrupted unpack never leaves a half release under the real
/// name; then renamed into place. An earlier release of the same name that is not live is
/// replaced (it is what a re-shipped bundle of that version brings); the live one is never
/// touched: the script exits with [`LIVE`].
pub fn unpack_script(tree: &Tree, name: &str, bundle_path: &str, bundle: &str) -> String {
    format!(
        r#"set -e
b={b}; v={v}; f={f}; r="$b/releases"
l=$(readlink -- "$b/current" 2>/dev/null || :); while [ "${{l%/}}" != "$l" ]; do l=${{l%/}}; done
if [ "$l" = "releases/$v" ] || [ "$b/current" -ef "$r/$v" ]; then
  echo "release $v is the live one (\`current\` points to it): not replaced; ship it under a new version, or roll back first" >&2; exit {LIVE}
fi
mkdir -p -- "$r"; t="$r/{UNPACKING}$v"; rm -rf -- "$t"; mkdir -- "$t"
trap 'rm -rf -- "$t"' EXIT
{extract}
printf '%s\n' "$v" > "$t/.version"
if [ -e "$r/$v" ] || [ -L "$r/$v" ]; then
  echo "replacing the earlier release $v (not live)"; rm -rf -- "$r/{REPLACED}$v"; mv -T -- "$r/$v" "$r/{REPLACED}$v"
fi
mv -T -- "$t" "$r/$v"; trap - EXIT; rm -rf -- "$r/{REPLACED}$v"
echo "unpacked into $r/$v""#,
        b = q(&tree.base),
        v = q(name),
        f = q(bundle_path),
        extract = extract_command(bundle),
    )
}

/// The script that points `current` at `target` (or removes it, for `None`) and records
/// `history`: a new symlink under a temporary name renamed over `current` (rename(2) is
/// atomic, so a reader sees the old release or the new one, never neither), then the
/// history and `.version`, each written to a temporary file and renamed.
pub fn switch_script(tree: &Tree, target: Option<&str>, history: &[String]) -> String {
    let b = q(&tree.base);
    let link = match target {
        Some(t) => format!(
            r#"[ -d "$b/releases/"{t} ] || {{ echo "releases/"{t}" is missing" >&2; exit 1; }}
ln -s -- "releases/"{t} "$b/.current.tmp.$$"; mv -T -- "$b/.current.tmp.$$" "$b/current"
printf '%s\n' {t} > "$b/.version.tmp.$$"; mv -f -- "$b/.version.tmp.$$" "$b/.version""#,
            t = q(t)
        ),
        None => r#"rm -f -- "$b/current" "$b/.version""#.to_owned(),
    };
    let hist = if history.is_empty() {
        r#": > "$b/.releases.tmp.$$""#.to_owned()
    } else {
        let lines: Vec<String> = history.iter().map(|h| q(h)).collect();
        format!(
            r#"printf '%s\n' {} > "$b/.releases.tmp.$$""#,
            lines.join(" ")
        )
    };
    format!(
        r#"set -e
b={b}
if [ -e "$b/current" ] && [ ! -L "$b/current" ]; then echo "$b/current exists and is not a symlink" >&2; exit 1; fi
{link}
{hist}; mv -f -- "$b/.releases.tmp.$$" "$b/.releases"
echo ok"#
    )
}

/// The script that removes `delete` (names under `releases/`), records `history`, and
/// removes the uploaded bundle when it is given.
pub fn prune_script(
    tree: &Tree,
    delete: &[String],
    history: &[String],
    bundle_path: Option<&str>,
) -> String {
    let mut s = format!("set -e\nb={}\n", q(&tree.base));
    for d in delete.iter().filter(|d| is_release_or_temp(d)) {
        s.push_str(&format!(
            "rm -rf -- \"$b/releases/\"{0}; echo \"removed releases/\"{0}\n",
            q(d)
        ));
    }
    if history.is_empty() {
        s.push_str(": > \"$b/.releases.tmp.$$\"");
    } else {
        let lines: Vec<String> = history.iter().map(|h| q(h)).collect();
        s.push_str(&format!(
            "printf '%s\\n' {} > \"$b/.releases.tmp.$$\"",
            lines.join(" ")
        ));
    }
    s.push_str("; mv -f -- \"$b/.releases.tmp.$$\" \"$b/.releases\"\n");
    if let Some(p) = bundle_path {
        s.push_str(&format!("rm -f -- {}\n", q(p)));
    }
    s
}

/// Runs one of this module's scripts with live output; a non-zero exit is an error that
/// carries the last line the script wrote to stderr.
pub fn run_script(
    shell: &mut dyn Shell,
    host: &str,
    what: &str,
    script: &str,
    timeout: Duration,
    stop: &dyn Fn() -> bool,
    on_line: &mut dyn FnMut(Stream, &str),
) -> Result<(), ReleaseError> {
    let mut last_err = String::new();
    let code = shell.exec(script, timeout, stop, &mut |stream, line| {
        if stream == Stream::Stderr && !line.trim().is_empty() {
            last_err = line.to_owned();
        }
        on_line(stream, line)
    })?;
    if code == 0 {
        return Ok(());
    }
    let why = if last_err.is_empty() {
        String::new()
    } else {
        format!(": {last_err}")
    };
    Err(ReleaseError::Script {
        host: host.to_owned(),
        detail: format!("{what} exited with status {code}{why}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(current: Option<&str>, history: &[&str], dirs: &[&str]) -> State {
        State {
            current: current.map(str::to_owned),
            history: history.iter().map(|s| s.to_string()).collect(),
            dirs: dirs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn names() {
        for ok in ["1.4.2", "2.0.0-rc1", "1.4.2+b5", "20261121_101500", "v1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".", "..", ".hidden", "a/b", "a b", "a\nb", "-x", "a'b", "$x",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            release_name(None, "20261121_101500").unwrap(),
            "20261121_101500"
        );
        assert_eq!(release_name(Some("1.2"), "20261121_101500").unwrap(), "1.2");
        assert!(release_name(Some("../x"), "t").is_err());
    }

    #[test]
    fn previous_follows_deploy_order_not_names() {
        let s = st(Some("1.9"), &["1.10", "1.9"], &[]);
        assert_eq!(s.previous(), Some("1.10"));
        // Died between switching and recording: current is not in the history yet.
        let s = st(Some("3"), &["1", "2"], &[]);
        assert_eq!(s.previous(), Some("2"));
        assert_eq!(st(Some("1"), &["1"], &[]).previous(), None);
        assert_eq!(st(None, &[], &[]).previous(), None);
    }

    #[test]
    fn rollback_goes_one_back_each_time() {
        let s = st(Some("3"), &["1", "2", "3"], &[]);
        let (t, h) = s.rollback().unwrap();
        assert_eq!(
            (t.as_str(), h.clone()),
            ("2", vec!["1".to_owned(), "2".into()])
        );
        let s = st(Some("2"), &["1", "2"], &[]);
        assert_eq!(
            s.rollback().unwrap(),
            ("1".to_owned(), vec!["1".to_owned()])
        );
        assert!(st(Some("1"), &["1"], &[]).rollback().is_none());
        // Died after switching back, before recording: history still lists the newer one.
        let s = st(Some("2"), &["1", "2", "3"], &[]);
        assert_eq!(
            s.rollback().unwrap(),
            ("1".to_owned(), vec!["1".to_owned()])
        );
    }

    #[test]
    fn deploy_moves_a_reshipped_release_to_the_top() {
        let s = st(Some("3"), &["1", "2", "3"], &[]);
        assert_eq!(s.history_after_deploy("2"), ["1", "3", "2"]);
        assert_eq!(s.history_after_deploy("4"), ["1", "2", "3", "4"]);
    }

    #[test]
    fn prune_keeps_newest_current_and_previous() {
        let s = st(
            Some("5"),
            &["1", "2", "3", "4", "5"],
            &[
                "1",
                "2",
                "3",
                "4",
                "5",
                "failed",
                ".unpack-6",
                "..",
                ".x",
                "a b",
            ],
        );
        let (del, hist) = s.prune(2);
        assert_eq!(del, ["1", "2", "3", "failed", ".unpack-6"]);
        assert_eq!(hist, ["4", "5"]);
        // keep = 1 still keeps the previous release.
        let (del, hist) = s.prune(1);
        assert!(!del.contains(&"4".to_owned()));
        assert_eq!(hist, ["4", "5"]);
        // After a rollback to 3, pruning keeps 3 and 2 even though they are not newest.
        let s = st(Some("3"), &["1", "2", "3"], &["1", "2", "3", "4", "5"]);
        let (del, hist) = s.prune(1);
        assert_eq!(del, ["1", "4", "5"]);
        assert_eq!(hist, ["2", "3"]);
    }

    #[test]
    fn state_parsing() {
        let tree = Tree::new("app");
        let out = "current=releases/2\n#history\n1\n2\n\n#dirs\n1\n2\n.unpack-3\n";
        let s = parse_state("h", &tree, out).unwrap();
        assert_eq!(s, st(Some("2"), &["1", "2"], &["1", "2", ".unpack-3"]));
        let s = parse_state("h", &tree, "current=\n#history\n\n#dirs\n").unwrap();
        assert_eq!(s, State::default());
        assert!(matches!(
            parse_state("h", &tree, "current=\nnotlink\n#history\n"),
            Err(ReleaseError::CurrentNotALink { .. })
        ));
        assert!(matches!(
            parse_state("h", &tree, "current=/srv/other\n#history\n"),
            Err(ReleaseError::CurrentElsewhere { .. })
        ));
    }

    #[test]
    fn scripts_quote_every_value() {
        let tree = Tree::new("/srv/my app");
        let s = unpack_script(&tree, "1.0", "/srv/my app/x;reboot.tgz", "x;reboot.tgz");
        assert!(s.contains("b='/srv/my app'"), "{s}");
        assert!(s.contains("f='/srv/my app/x;reboot.tgz'"), "{s}");
        assert!(s.contains("tar -xzf"));
        let s = switch_script(&tree, Some("1.0"), &["0.9".into(), "1.0".into()]);
        assert!(s.contains("mv -T --"), "{s}");
        assert!(s.contains("printf '%s\\n' 0.9 1.0"), "{s}");
        assert_eq!(extract_command("A.ZIP"), r#"unzip -q "$f" -d "$t""#);
        assert!(extract_command("app.jar").starts_with("cp"));
    }

    /// The unpack script's "is it live" check, run by the real `sh` on a real tree: any
    /// spelling of `current` that `parse_state` reads as release 1.2 protects 1.2.
    #[test]
    fn unpack_refuses_the_live_release_however_current_is_spelt() {
        let run = |link: &str, name: &str| {
            let dir = tempfile::tempdir().unwrap();
            let base = dir.path().join("app");
            for r in ["1.1", "1.2"] {
                std::fs::create_dir_all(base.join("releases").join(r)).unwrap();
                std::fs::write(base.join("releases").join(r).join("keep"), r).unwrap();
            }
            let link = link.replace("BASE", base.to_str().unwrap());
            std::os::unix::fs::symlink(&link, base.join("current")).unwrap();
            let tree = Tree::new(base.to_str().unwrap());
            let script = unpack_script(&tree, name, "/nonexistent/app.tgz", "app.tgz");
            let code = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap()
                .status
                .code();
            let kept = std::fs::read_to_string(base.join("releases").join(name).join("keep"));
            (code, kept.ok())
        };
        for link in [
            "releases/1.2",
            "releases/1.2/",
            "releases/1.2//",
            "./releases/1.2",
            "BASE/releases/1.2",
        ] {
            let (code, kept) = run(link, "1.2");
            assert_eq!(code, Some(LIVE), "current -> {link}");
            assert_eq!(kept.as_deref(), Some("1.2"), "current -> {link}");
        }
        // Not live: the script goes on (and fails here only for want of a bundle).
        let (code, kept) = run("releases/1.2/", "1.1");
        assert_ne!(code, Some(LIVE));
        assert_ne!(code, Some(0));
        assert_eq!(
            kept.as_deref(),
            Some("1.1"),
            "a failed unpack leaves 1.1 alone"
        );
    }
}
