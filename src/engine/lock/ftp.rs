//! The lock where the host has no shell (FTP-only rules): the same directory and `info` as
//! over SSH, made of file operations.
//!
//! The holder's heartbeat re-uploads an empty `beat` file over a second connection, so the
//! server stamps it with its own clock. A waiter learns the server's "now" the same way, from
//! a probe file it uploads and removes, and judges the lock's age as `now - max(mtime(info),
//! mtime(beat))`: clock skew between machines cannot make a live lock look stale or a dead
//! one look alive. A lock without `info` (made by an older dropship, or a holder killed
//! between `MKD` and the upload of `info`) is aged by how long this waiter has seen it.

use super::{Attempt, Holder, Identity, Wait, holder_is_gone};
use crate::transport::{Files, TransportError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Longest `info` a lock can have: holder, bundle and token lines.
const MAX_INFO: usize = 4096;

fn info_path(dir: &str) -> String {
    format!("{dir}/info")
}

fn beat_path(dir: &str) -> String {
    format!("{dir}/beat")
}

/// What a lock's `info` says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Info {
    holder: String,
    bundle: String,
    token: String,
}

fn info_text(id: &Identity, token: &str) -> String {
    let clean = |s: &str| s.replace(['\n', '\r'], " ");
    format!(
        "holder={}\nbundle={}\ntoken={token}\n",
        clean(id.holder),
        clean(id.bundle)
    )
}

fn parse(bytes: &[u8]) -> Info {
    let text = String::from_utf8_lossy(bytes);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .to_owned()
    };
    Info {
        holder: field("holder="),
        bundle: field("bundle="),
        token: field("token="),
    }
}

/// What the waiter remembers between tries: when it first saw a lock it cannot age.
#[derive(Default)]
pub(super) struct Seen {
    unaged_since: Option<Instant>,
}

/// The server's current time, from the modification time of a file uploaded just now.
fn server_now(files: &mut dyn Files, dir: &str, token: &str) -> Result<i64, TransportError> {
    let probe = format!("{dir}.now.{token}");
    files.write_small(&probe, b"")?;
    let now = files.modified(&probe);
    files.remove(&probe)?;
    now?.ok_or_else(|| TransportError::Io {
        host: String::new(),
        op: format!("MDTM `{probe}`"),
        detail: "the file just uploaded is not there".into(),
    })
}

/// Tries once to take the lock at `dir`; breaks it first when its holder was not heard from
/// for `lock_stale` or is a dropship process of this machine that no longer runs.
pub(super) fn try_once(
    files: &mut dyn Files,
    dir: &str,
    id: &Identity,
    token: &str,
    w: &Wait,
    seen: &mut Seen,
) -> Result<Attempt, TransportError> {
    if let Some((parent, _)) = dir.rsplit_once('/') {
        files.mkdir_p(parent)?;
    }
    if take(files, dir, id, token)? {
        return Ok(Attempt::Acquired);
    }
    let info = files
        .read_small(&info_path(dir), MAX_INFO)?
        .map(|b| parse(&b));
    let age = match &info {
        Some(_) => {
            let heard = [info_path(dir), beat_path(dir)]
                .iter()
                .filter_map(|p| files.modified(p).transpose())
                .collect::<Result<Vec<i64>, _>>()?
                .into_iter()
                .max();
            match heard {
                Some(t) => u64::try_from(server_now(files, dir, token)? - t).unwrap_or(0),
                // Released while we looked.
                None => 0,
            }
        }
        None => seen
            .unaged_since
            .get_or_insert_with(Instant::now)
            .elapsed()
            .as_secs(),
    };
    let gone = info.as_ref().is_some_and(|i| holder_is_gone(&i.holder));
    if (gone || age > w.stale.as_secs()) && break_lock(files, dir, info.as_ref(), token)? {
        let who = info
            .as_ref()
            .map_or("an unknown holder".to_owned(), |i| i.holder.clone());
        let bundle = info.as_ref().map_or("unknown", |i| i.bundle.as_str());
        (w.notice)(if gone {
            format!("took over the lock of {who} (bundle {bundle}): that process is gone")
        } else {
            format!("broke a stale lock held by {who} (bundle {bundle}), not heard from for {age}s")
        });
        seen.unaged_since = None;
        if take(files, dir, id, token)? {
            return Ok(Attempt::Acquired);
        }
    }
    Ok(Attempt::Busy(info.map(|i| Holder {
        holder: i.holder,
        bundle: i.bundle,
        age_secs: age,
    })))
}

/// `MKD` and, when it was ours to make, the `info` inside.
fn take(
    files: &mut dyn Files,
    dir: &str,
    id: &Identity,
    token: &str,
) -> Result<bool, TransportError> {
    if !files.create_dir(dir)? {
        return Ok(false);
    }
    if let Err(e) = files.write_small(&info_path(dir), info_text(id, token).as_bytes()) {
        let _ = files.remove_dir(dir);
        return Err(e);
    }
    Ok(true)
}

/// Moves the lock aside and removes it, if what was moved is still the lock that was judged
/// (a new holder may have taken it in between: then it is put back).
fn break_lock(
    files: &mut dyn Files,
    dir: &str,
    judged: Option<&Info>,
    token: &str,
) -> Result<bool, TransportError> {
    let aside = format!("{dir}.stale.{token}");
    if files.rename(dir, &aside).is_err() {
        // Another waiter broke it first, or it was released.
        return Ok(false);
    }
    let moved = files
        .read_small(&info_path(&aside), MAX_INFO)?
        .map(|b| parse(&b));
    if moved.as_ref().map(|i| &i.token) != judged.map(|i| &i.token) {
        let _ = files.rename(&aside, dir);
        return Ok(false);
    }
    remove_lock_dir(files, &aside)?;
    Ok(true)
}

fn remove_lock_dir(files: &mut dyn Files, dir: &str) -> Result<(), TransportError> {
    files.remove(&beat_path(dir))?;
    files.remove(&info_path(dir))?;
    files.remove_dir(dir)
}

/// Releases the lock at `dir` if it is still ours (its token).
pub(super) fn release(files: &mut dyn Files, dir: &str, token: &str) -> Result<(), TransportError> {
    match files.read_small(&info_path(dir), MAX_INFO)? {
        Some(b) if parse(&b).token == token => remove_lock_dir(files, dir),
        // Broken by another dispatch as stale, or already gone.
        _ => Ok(()),
    }
}

/// The holder's heartbeat: a thread with its own connection that re-uploads `beat` every
/// interval while the lock is still ours.
#[derive(Debug)]
pub(super) struct Heartbeat {
    stopped: Mutex<bool>,
    wake: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Heartbeat {
    pub(super) fn start(
        files: &dyn Files,
        dir: &str,
        token: &str,
        every: Duration,
    ) -> Result<Arc<Heartbeat>, TransportError> {
        let mut twin = files.twin()?;
        let me = Arc::new(Heartbeat {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        });
        let (dir, token) = (dir.to_owned(), token.to_owned());
        // The thread holds only a weak reference: a lock dropped without release still
        // stops its heartbeat (Drop below).
        let weak = Arc::downgrade(&me);
        let handle = std::thread::spawn(move || {
            loop {
                let Some(me) = weak.upgrade() else { return };
                if me.sleep(every) {
                    return;
                }
                drop(me);
                if weak.strong_count() == 0 {
                    return;
                }
                let ours = matches!(
                    twin.read_small(&info_path(&dir), MAX_INFO),
                    Ok(Some(b)) if parse(&b).token == token
                );
                if !ours || twin.write_small(&beat_path(&dir), b"").is_err() {
                    tracing::warn!(lock = %dir, "FTP lock heartbeat stopped (lock lost or connection failed)");
                    return;
                }
            }
        });
        *me.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(me)
    }

    /// Waits `every`; true when stopped meanwhile.
    fn sleep(&self, every: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, every, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    /// Stops the heartbeat and waits for a beat in flight to finish.
    pub(super) fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_round_trips_and_cannot_be_split_by_a_name() {
        let id = Identity {
            host: "h",
            holder: "me@box pid 7",
            bundle: "app\nholder=evil.tgz",
        };
        let info = parse(info_text(&id, "abc").as_bytes());
        assert_eq!(info.holder, "me@box pid 7");
        assert_eq!(info.bundle, "app holder=evil.tgz");
        assert_eq!(info.token, "abc");
    }
}
