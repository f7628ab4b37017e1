//! The remote lock: one dispatch at a time per host.
//!
//! `mkdir` is atomic on every filesystem and every server, so the lock is a directory on
//! the host. Where the host has a shell, an `info` file inside names the holder, the time
//! (the host's clock, so skew between machines does not matter) and the bundle; a lock
//! whose holder has not been heard from for `lock_stale` is broken with a warning. The
//! holder is heard from through a heartbeat: while it holds the lock, a background command
//! on the host writes the time into `beat` every `lock_stale / 4` (at most every minute), and
//! it dies with the holder's connection. So a dispatch that runs longer than `lock_stale`
//! keeps its lock, and one that was killed loses it `lock_stale` after its last beat.
//! Where the host has no shell (an FTP-only rule), the lock is the same directory made with
//! `MKD`, with the same `info` inside (uploaded), and a heartbeat that re-uploads an empty
//! `beat` over a second FTP connection: its modification time, on the server's clock, says
//! when the holder was last heard from. The server's "now" comes from the modification time
//! of a probe file a waiter uploads, so FTP locks heal after `lock_stale` like SSH ones,
//! whatever the skew between machines (see [`ftp`]).

mod ftp;

use crate::config::shell::quote;
use crate::transport::{Connection, Shell, TransportError};
use std::time::{Duration, Instant};

/// Who holds a lock, as written in its `info` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub holder: String,
    pub bundle: String,
    pub age_secs: u64,
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// `user@machine pid N`: how this process names itself as a lock holder.
pub fn local_holder() -> String {
    format!(
        "{}@{} pid {}",
        crate::config::current_user(),
        local_hostname(),
        std::process::id()
    )
}

/// Whether `holder` names a dropship process on this machine that no longer exists (it
/// was killed, or the machine rebooted): its lock can be taken over at once instead of
/// waiting for `lock_stale`.
fn holder_is_gone(holder: &str) -> bool {
    let Some((who, pid)) = holder.rsplit_once(" pid ") else {
        return false;
    };
    let Some((_, machine)) = who.rsplit_once('@') else {
        return false;
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return false;
    };
    machine == local_hostname()
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the lock at `path` if `holder` still holds it.
fn break_script(path: &str, holder: &str) -> String {
    let d = quote(path);
    format!(
        r#"d={d}; if [ "$(sed -n 's/^holder=//p' "$d/info" 2>/dev/null)" = {h} ] && mv -- "$d" "$d.stale.$$" 2>/dev/null; then rm -rf -- "$d.stale.$$"; echo broken; fi; exit 0"#,
        h = quote(holder)
    )
}

/// What one try found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Acquired,
    Busy(Option<Holder>),
}

/// A lock this dispatch holds on one host.
#[derive(Debug, Clone)]
pub struct Lock {
    pub path: String,
    token: String,
    /// Held through the shell, or through file operations (FTP).
    shell: bool,
    /// The FTP heartbeat, stopped on release (the shell's dies with its channel).
    beat: Option<std::sync::Arc<ftp::Heartbeat>>,
}

/// What the lock says about us.
pub struct Identity<'a> {
    /// The target, for messages.
    pub host: &'a str,
    pub holder: &'a str,
    pub bundle: &'a str,
}

/// The script that tries once: prints `acquired` (and sets `go`, which starts the
/// heartbeat in the same remote shell: [`Shell::script_then_background`]), or `busy AGE`
/// and the holder's lines. The body of a shell function: it `return`s.
/// The lock's parent directory is only made when the lock cannot be (two processes fewer
/// per host in the usual case, where it exists).
fn try_script(path: &str, id: &Identity, token: &str, stale: Duration) -> String {
    let d = quote(path);
    let info = format!(
        "holder={}\\nsince=%s\\nbundle={}\\ntoken={}\\n",
        id.holder.replace(['\n', '%', '\\'], " "),
        id.bundle.replace(['\n', '%', '\\'], " "),
        token
    );
    format!(
        r#"d={d}; now=$(date +%s)
if mkdir -- "$d" 2>/dev/null || {{ [ ! -d "$d" ] && mkdir -p -- "$(dirname -- "$d")" 2>/dev/null && mkdir -- "$d" 2>/dev/null; }}; then printf {info} "$now" > "$d/info"; echo acquired; go=1; return 0; fi
if [ ! -d "$d" ]; then echo "error $(mkdir -- "$d" 2>&1)"; return 0; fi
since=$(sed -n 's/^since=//p' "$d/info" 2>/dev/null); beat=$(cat "$d/beat" 2>/dev/null)
case $beat in ''|*[!0-9]*) ;; *) [ "$beat" -gt "${{since:-0}}" ] && since=$beat ;; esac
age=$((now - ${{since:-$now}}))
if [ "$age" -gt {stale} ] && mv -- "$d" "$d.stale.$$" 2>/dev/null; then
  sed -n 's/^\(holder\|bundle\)=/broken \1=/p' "$d.stale.$$/info" 2>/dev/null; rm -rf -- "$d.stale.$$"
  if mkdir -- "$d" 2>/dev/null; then printf {info} "$now" > "$d/info"; echo acquired; go=1; return 0; fi
fi
echo "busy $age"; sed -n 's/^\(holder\|bundle\)=/&/p' "$d/info" 2>/dev/null; return 0"#,
        info = quote(&info),
        stale = stale.as_secs(),
    )
}

fn parse_field<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| l.strip_prefix(prefix))
}

/// The heartbeat of a held lock: the host's time into `beat` every `every`, for as long as
/// the lock is still ours (its token) — written aside and renamed, so a reader never sees
/// half a number. The first beat is due only after `every`: `since` says the same until
/// then, and a dispatch that ends sooner (most do) costs the host nothing but a `sleep`.
/// Stopped with TERM (see `control_loop` in the SSH transport, which also waits for it to
/// end before the unlock), it kills its `sleep` too: the `sleep` runs in the background and
/// the loop `wait`s for it, because a shell runs a trap during `wait` at once, but after a
/// foreground `sleep` only once that ends, and a killed loop would leave its `sleep`
/// running on the host.
fn heartbeat_script(path: &str, token: &str, every: Duration) -> String {
    let d = quote(path);
    format!(
        r#"d={d}; s=; trap '[ -z "$s" ] || kill $s 2>/dev/null; exit 0' TERM HUP INT; while sleep {s} & s=$!; wait $s && [ "$(sed -n 's/^token=//p' "$d/info" 2>/dev/null)" = {t} ]; do date +%s > "$d/.beat.$$" 2>/dev/null && mv -f "$d/.beat.$$" "$d/beat" 2>/dev/null; done"#,
        t = quote(token),
        s = every.as_secs().max(1),
    )
}

/// How often a held lock beats: often enough that a live holder is never taken for dead.
fn beat_interval(stale: Duration) -> Duration {
    (stale / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Tries once through the shell. Returns what it found and, when a stale lock was broken,
/// its former holder.
/// How starting the heartbeat went: `None` when the try did not acquire the lock.
type Beat = Option<Result<(), TransportError>>;

fn try_shell(
    shell: &mut dyn Shell,
    path: &str,
    id: &Identity,
    token: &str,
    stale: Duration,
) -> Result<(Attempt, Option<Holder>, Beat), TransportError> {
    let (out, beat) = shell.script_then_background(
        &try_script(path, id, token, stale),
        &heartbeat_script(path, token, beat_interval(stale)),
    )?;
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    let broken = parse_field(&lines, "broken holder=").map(|h| Holder {
        holder: h.to_owned(),
        bundle: parse_field(&lines, "broken bundle=")
            .unwrap_or("")
            .to_owned(),
        age_secs: 0,
    });
    if lines.iter().any(|l| l == "acquired") {
        return Ok((Attempt::Acquired, broken, beat));
    }
    if let Some(e) = lines.iter().find_map(|l| l.strip_prefix("error ")) {
        return Err(TransportError::Setup {
            host: id.host.to_owned(),
            detail: format!(
                "cannot create the lock {path}: {e}\n  help: fix `lock_path` or the permissions of its directory"
            ),
        });
    }
    // Busy only when the script says so: an answer without `busy` (a shell that did not
    // run the script) is an error, not someone else's lock.
    let Some(age) = lines.iter().find_map(|l| l.strip_prefix("busy ")) else {
        return Err(TransportError::Setup {
            host: id.host.to_owned(),
            detail: format!(
                "the lock script on the host gave no answer (`{}`): the host's shell did not run dropship's script",
                out.trim().chars().take(200).collect::<String>()
            ),
        });
    };
    let age = age.trim().parse().unwrap_or(0);
    let holder = parse_field(&lines, "holder=").map(|h| Holder {
        holder: h.to_owned(),
        bundle: parse_field(&lines, "bundle=").unwrap_or("").to_owned(),
        age_secs: age,
    });
    Ok((Attempt::Busy(holder), broken, beat))
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{host}: locked by {} for {}s (bundle {}); waited {waited}s\n  help: wait for that dispatch, or raise `lock_wait`; a lock older than `lock_stale` is broken automatically",
        .holder.as_ref().map_or("another dispatch", |h| h.holder.as_str()),
        .holder.as_ref().map_or(0, |h| h.age_secs),
        .holder.as_ref().map_or("unknown", |h| h.bundle.as_str()))]
    Busy {
        host: String,
        holder: Option<Holder>,
        waited: u64,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{host}: cancelled while waiting for the lock")]
    Cancelled { host: String },
}

/// Parameters of [`acquire`].
pub struct Wait<'a> {
    pub host: &'a str,
    pub wait: Duration,
    pub stale: Duration,
    pub cancelled: &'a dyn Fn() -> bool,
    /// Told when the lock is busy (once) and when a stale lock is broken.
    pub notice: &'a dyn Fn(String),
}

/// Takes the lock at `path`, waiting up to `w.wait` for another holder.
pub fn acquire(
    conn: &mut Connection,
    path: &str,
    id: &Identity,
    w: &Wait,
) -> Result<Lock, LockError> {
    let token = hex::encode(rand::random::<[u8; 8]>());
    let start = Instant::now();
    let mut told = false;
    let mut tried_takeover = false;
    let mut seen = ftp::Seen::default();
    loop {
        let (attempt, shell_beat) = match conn.shell.as_deref_mut() {
            Some(shell) => {
                let (a, broken, beat) = try_shell(shell, path, id, &token, w.stale)?;
                if let Some(b) = broken {
                    (w.notice)(format!(
                        "broke a stale lock held by {} (bundle {})",
                        b.holder, b.bundle
                    ));
                }
                (a, beat)
            }
            None => (
                ftp::try_once(conn.files.as_mut(), path, id, &token, w, &mut seen)?,
                None,
            ),
        };
        match attempt {
            Attempt::Acquired => {
                // The shell's heartbeat started with the try itself, in its channel.
                let missing = match shell_beat {
                    Some(Err(e)) => Some(e.to_string()),
                    None if conn.shell.is_some() => Some("it did not start".to_owned()),
                    _ => None,
                };
                if let Some(e) = missing {
                    (w.notice)(format!(
                        "the lock has no heartbeat ({e}): another dispatch may break it after lock_stale"
                    ));
                }
                let beat = match conn.shell {
                    Some(_) => None,
                    None => ftp::Heartbeat::start(
                        conn.files.as_ref(),
                        path,
                        &token,
                        beat_interval(w.stale),
                    )
                    .map_err(|e| {
                        (w.notice)(format!(
                            "the lock has no heartbeat ({e}): another dispatch may break it after lock_stale"
                        ))
                    })
                    .ok(),
                };
                return Ok(Lock {
                    path: path.to_owned(),
                    token,
                    shell: conn.shell.is_some(),
                    beat,
                });
            }
            Attempt::Busy(Some(h))
                if conn.shell.is_some() && holder_is_gone(&h.holder) && !tried_takeover =>
            {
                // Once only: if the takeover fails (say the lock sits in a sticky shared
                // directory of another user), wait like for any other holder.
                tried_takeover = true;
                let broke = match conn.shell.as_deref_mut() {
                    Some(shell) => shell
                        .script(&break_script(path, &h.holder), Duration::ZERO)?
                        .contains("broken"),
                    None => false,
                };
                if broke {
                    (w.notice)(format!(
                        "took over the lock of {} (bundle {}): that process is gone",
                        h.holder, h.bundle
                    ));
                }
            }
            Attempt::Busy(holder) => {
                let waited = start.elapsed();
                if waited >= w.wait {
                    return Err(LockError::Busy {
                        host: w.host.to_owned(),
                        holder,
                        waited: waited.as_secs(),
                    });
                }
                if !told {
                    told = true;
                    (w.notice)(format!(
                        "waiting for the lock held by {}",
                        holder
                            .as_ref()
                            .map_or("another dispatch", |h| h.holder.as_str())
                    ));
                }
                let pause = Duration::from_millis(500).min(w.wait - waited);
                let until = Instant::now() + pause;
                while Instant::now() < until {
                    if (w.cancelled)() {
                        return Err(LockError::Cancelled {
                            host: w.host.to_owned(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// The script that removes the lock at `lock.path` if it is still ours (its token). The
/// token is read with the shell's own `read` (no `sed` process: this runs on every host of
/// every dispatch). With `aside`, the directory is renamed before it is removed, for when
/// a heartbeat may still write into it; without, one `rm` (the heartbeat has ended).
fn release_script(lock: &Lock, aside: bool) -> String {
    let d = quote(&lock.path);
    let remove = if aside {
        format!("mv -- {d} {d}.released.$$ && rm -rf -- {d}.released.$$")
    } else {
        format!("rm -rf -- {d}")
    };
    format!(
        "t=; while IFS= read -r l; do case $l in token=*) t=${{l#token=}};; esac; done 2>/dev/null < {d}/info; [ \"$t\" = {} ] && {remove}; exit 0",
        quote(&lock.token)
    )
}

/// Releases `lock` if it is still ours.
pub fn release(conn: &mut Connection, lock: &Lock) -> Result<(), TransportError> {
    match (lock.shell, conn.shell.as_deref_mut()) {
        (true, Some(shell)) => {
            // In the lock's own channel, once its heartbeat has ended (one channel fewer
            // per host): nothing else writes into the lock, so it is removed at once.
            if let Some(Ok(_)) = shell.finish_background(&release_script(lock, false)) {
                return Ok(());
            }
            // That channel is gone: in a new one, where a heartbeat may still be ending,
            // so the lock is renamed away first (a last beat then finds no directory).
            shell.stop_background();
            shell.script(&release_script(lock, true), Duration::ZERO)?;
            Ok(())
        }
        _ => {
            if let Some(beat) = &lock.beat {
                beat.stop();
            }
            ftp::release(conn.files.as_mut(), &lock.path, &lock.token)
        }
    }
}
