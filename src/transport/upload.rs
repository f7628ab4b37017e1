//! The safe upload: write `.NAME.part` beside the final name, verify it, rename it into
//! place; retry transient failures with backoff, resuming from the verified prefix.
//!
//! No reader on the host ever sees a partial file at the final path: the final name only
//! ever appears through a rename of a file that has been checked (size always, SHA-256
//! whenever the host has a shell).
//!
//! A `.part` left by an earlier attempt (or an earlier, killed dropship) is continued only
//! when it is proven to be a prefix of *this* bundle: where the host has a shell, by the
//! SHA-256 of that prefix computed there; where it has none (an FTP-only rule), by a sidecar
//! `.NAME.part.sha256` that names the bundle it was started for. The sidecar is written
//! after any older `.part` is removed and before the first byte, so it can never vouch for
//! bytes of another bundle; when the bundle's digest is still being computed then, it is
//! written only by a later attempt of the same upload that resumes the `.part` it wrote.
//!
//! The digest may arrive after the data (see [`BundleDigest`]): every comparison with it
//! waits for it, so nothing is renamed into place before it is known and matched.

use super::digest::{BundleDigest, DigestWait};
use super::{Connection, Streamed, TransferEvent, TransportError, VerifiedBy, local_sha256};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    pub fn new(retries: u32) -> RetryPolicy {
        RetryPolicy {
            retries,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }

    /// Exponential backoff with full jitter: a random delay up to `base * 2^(n-1)`,
    /// capped, so many hosts that failed together do not retry together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let jitter: f64 = rand::random::<f64>();
        exp.mul_f64(0.5 + jitter / 2.0)
    }
}

/// What arrived, as checked on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub size: u64,
    /// Set when the host computed it and it matched ours.
    pub sha256: Option<String>,
    pub by: VerifiedBy,
    pub attempts: u32,
}

/// The longest `.part` name (with its sidecar's suffix): below NAME_MAX (255), and short
/// enough for libssh2's SCP, which sends `C0644 SIZE NAME` in a 256-byte line.
const PART_NAME_MAX: usize = 200;
/// What the sidecar adds to the `.part` name.
const SIDECAR_SUFFIX: &str = ".sha256";

/// The `.NAME.part` path beside `remote_path`. A name too long for `.NAME.part.sha256` to
/// fit in [`PART_NAME_MAX`] is shortened and made unique again with a hash of the whole name, so
/// every bundle name the host can store can also be uploaded safely.
pub fn part_path(remote_path: &str) -> String {
    let (dir, name) = match remote_path.rsplit_once('/') {
        Some((dir, name)) => (Some(dir), name),
        None => (None, remote_path),
    };
    let room = PART_NAME_MAX - SIDECAR_SUFFIX.len();
    let part = if name.len() + ".part".len() < room {
        format!(".{name}.part")
    } else {
        use sha2::Digest;
        let tag = &hex::encode(sha2::Sha256::digest(name.as_bytes()))[..8];
        let mut keep = room - ".part".len() - 1 - 1 - tag.len();
        while !name.is_char_boundary(keep) {
            keep -= 1;
        }
        format!(".{}~{tag}.part", &name[..keep])
    };
    match dir {
        Some(dir) => format!("{dir}/{part}"),
        None => part,
    }
}

/// The sidecar that names the bundle a `.part` belongs to (hosts without a shell).
pub fn sidecar_path(part: &str) -> String {
    format!("{part}{SIDECAR_SUFFIX}")
}

/// The sidecar's contents for a bundle.
fn sidecar_text(sha: &str, size: u64) -> String {
    format!("dropship-part sha256={sha} size={size}\n")
}

/// Rate and ETA reporting, at most every 100 ms so a fast link does not flood the UI.
struct Meter<'a> {
    events: &'a dyn Fn(TransferEvent),
    total: u64,
    start: Instant,
    start_bytes: u64,
    last: Option<Instant>,
}

impl Meter<'_> {
    fn update(&mut self, sent: u64, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last
                .is_some_and(|l| now - l < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        let secs = (now - self.start).as_secs_f64();
        let rate = if secs > 0.0 {
            (sent - self.start_bytes.min(sent)) as f64 / secs
        } else {
            0.0
        };
        let eta_secs = (rate > 0.0).then(|| (self.total.saturating_sub(sent)) as f64 / rate);
        (self.events)(TransferEvent::Progress {
            sent,
            total: self.total,
            rate,
            eta_secs,
        });
    }
}

/// Everything `deliver` needs to know about the target.
pub struct Job<'a> {
    pub host: &'a str,
    pub local: &'a Path,
    /// SHA-256 of `local`, possibly still being computed (a dispatch hashes its bundle once,
    /// not once per host, and while the upload runs): whatever compares with it waits.
    pub digest: &'a BundleDigest,
    pub dest_dir: &'a str,
    pub remote_path: &'a str,
    pub policy: RetryPolicy,
    /// Polled between and during writes: true stops the upload.
    pub cancel: &'a dyn Fn() -> bool,
}

/// Uploads `job.local` to `job.remote_path`, connecting (and reconnecting after a
/// failure) with `connect`. Returns the connection it ended on, so the same session can
/// run the host's commands.
pub fn deliver(
    job: &Job,
    connect: &mut dyn FnMut() -> Result<Connection, TransportError>,
    events: &dyn Fn(TransferEvent),
) -> Result<(Connection, Delivered), TransportError> {
    let local_err = |e: std::io::Error| TransportError::Local {
        path: job.local.to_owned(),
        detail: e.to_string(),
    };
    let size = std::fs::metadata(job.local).map_err(local_err)?.len();
    let part = part_path(job.remote_path);
    let mut attempt = 0;
    let mut conn: Option<Connection> = None;
    let mut state = Attempts::default();
    loop {
        attempt += 1;
        if (job.cancel)() {
            return Err(TransportError::Cancelled {
                host: job.host.to_owned(),
            });
        }
        let result = match conn.take() {
            Some(c) => Ok(c),
            None => connect(),
        }
        .and_then(|mut c| {
            let r = attempt_once(job, &mut c, &part, size, attempt, &mut state, events);
            if matches!(r, Err(TransportError::Timeout { .. })) && c.files.fresh_after_stall() {
                state.fresh = true;
            }
            if matches!(r, Err(TransportError::Refused { .. })) {
                drop_part(&mut c, &part);
            }
            r.map(|d| (c, d))
        });
        match result {
            Ok((c, mut delivered)) => {
                delivered.attempts = attempt;
                return Ok((c, delivered));
            }
            Err(e) if e.is_transient() && attempt <= job.policy.retries => {
                let delay = job.policy.delay(attempt);
                events(TransferEvent::Retrying {
                    attempt,
                    of: job.policy.retries + 1,
                    delay_ms: delay.as_millis() as u64,
                    error: e.to_string(),
                });
                sleep_unless_cancelled(delay, job.cancel);
            }
            Err(e) => return Err(e),
        }
    }
}

/// What one attempt leaves the next one to know.
#[derive(Default)]
struct Attempts {
    /// The next attempt starts a fresh `.part` (see [`Files::fresh_after_stall`]).
    fresh: bool,
    /// A host without a shell got a `.part` from byte 0 of this bundle before its digest
    /// was known, so without a sidecar: written by this upload, under the host's lock, it
    /// is ours, and the next attempt may vouch for it once the digest is known.
    unvouched: bool,
}

/// The bundle's digest, waited for: what a verification compares with.
fn digest_of(job: &Job) -> Result<String, TransportError> {
    job.digest.wait(job.cancel).map_err(|e| match e {
        DigestWait::Cancelled => TransportError::Cancelled {
            host: job.host.to_owned(),
        },
        DigestWait::Failed(detail) => TransportError::Local {
            path: job.local.to_owned(),
            detail,
        },
    })
}

fn sleep_unless_cancelled(delay: Duration, cancel: &dyn Fn() -> bool) {
    let end = Instant::now() + delay;
    while Instant::now() < end && !cancel() {
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
}

/// How much of an existing `.part` can be kept: the longest prefix proven to be ours (by
/// its SHA-256 on the host, or by the sidecar where the host has no shell). When nothing
/// can be kept, the old `.part` is cleared for a fresh start, and the second value says why
/// when there was one to keep.
fn resume_offset(
    job: &Job,
    conn: &mut Connection,
    part: &str,
    size: u64,
    state: &mut Attempts,
) -> Result<(u64, Option<String>), TransportError> {
    let existing = match conn.files.resumable() && !state.fresh {
        true => conn.files.size(part)?,
        false => None,
    };
    let have = match existing {
        Some(n) if n <= size => conn.files.resumable_prefix(n, size),
        _ => 0,
    };
    let proven = match (have, conn.shell.as_mut()) {
        (0, _) => false,
        (_, Some(shell)) => {
            let theirs = shell.sha256(part, Some(have))?;
            let ours = local_sha256(job.local, Some(have)).map_err(|e| TransportError::Local {
                path: job.local.to_owned(),
                detail: e.to_string(),
            })?;
            theirs == ours
        }
        (_, None) if state.unvouched => {
            // Written from byte 0 by an attempt of this very upload (see
            // [`Attempts::unvouched`]): vouch for it now that the digest is known.
            let sha = digest_of(job)?;
            conn.files
                .write_small(&sidecar_path(part), sidecar_text(&sha, size).as_bytes())?;
            state.unvouched = false;
            true
        }
        (_, None) => {
            let sha = digest_of(job)?;
            let side = conn.files.read_small(&sidecar_path(part), 256)?;
            side.as_deref() == Some(sidecar_text(&sha, size).as_bytes())
        }
    };
    if proven {
        return Ok((have, None));
    }
    let why = match existing {
        Some(n) if n > size => Some(format!(
            "the `.part` on the host is longer than the bundle ({n} > {size} bytes): starting it over"
        )),
        Some(n) if n > 0 => Some(format!(
            "the `.part` on the host ({n} bytes) is not proven to be a prefix of this bundle: starting it over"
        )),
        _ => None,
    };
    let remove = state.fresh || existing.is_some();
    start_over(job, conn, part, size, remove, state)?;
    Ok((0, why))
}

/// Clears `part` for a write from byte 0. Without a shell the sidecar goes first, then the
/// `.part`, then the new sidecar: a kill at any point leaves either no sidecar or one that
/// names the bytes that follow it. When the digest is not known yet, there is no new
/// sidecar: the first byte does not wait for the hash, and the `.part` is vouched for only
/// if an attempt of this upload has to resume it ([`Attempts::unvouched`]); after a kill it
/// is started over. With a shell the `.part` is removed when `remove`.
fn start_over(
    job: &Job,
    conn: &mut Connection,
    part: &str,
    size: u64,
    remove: bool,
    state: &mut Attempts,
) -> Result<(), TransportError> {
    if conn.shell.is_none() {
        conn.files.remove(&sidecar_path(part))?;
        conn.files.remove(part)?;
        state.unvouched = match job.digest.get() {
            Some(sha) => {
                conn.files
                    .write_small(&sidecar_path(part), sidecar_text(&sha, size).as_bytes())?;
                false
            }
            None => true,
        };
    } else if remove {
        conn.files.remove(part)?;
    }
    Ok(())
}

/// After the host refused the upload for lack of space or quota, the `.part` only keeps
/// the disk full: remove it (best effort, the refusal is what gets reported), and its
/// sidecar, which vouches for nothing without it.
fn drop_part(conn: &mut Connection, part: &str) {
    let _ = conn.files.remove(part);
    if conn.shell.is_none() {
        let _ = conn.files.remove(&sidecar_path(part));
    }
}

fn attempt_once(
    job: &Job,
    conn: &mut Connection,
    part: &str,
    size: u64,
    attempt: u32,
    state: &mut Attempts,
    events: &dyn Fn(TransferEvent),
) -> Result<Delivered, TransportError> {
    let verify_fail = |detail: String| TransportError::Verify {
        host: job.host.to_owned(),
        path: part.to_owned(),
        detail,
    };
    if conn.files.verifies_in_stream() && conn.shell.is_some() {
        // Created, written, hashed as it arrives, checked and renamed by one command on the
        // host: no second read of the file there, no round trips for size and hash. A
        // stream starts over on every attempt, so there is no `.part` to resume.
        events(TransferEvent::Started {
            attempt,
            size,
            resume_from: 0,
            restart: None,
        });
        let mut meter = Meter {
            events,
            total: size,
            start: Instant::now(),
            start_bytes: 0,
            last: None,
        };
        let cancel = job.cancel;
        // Known by now (remembered, or hashed while connecting): the host compares and
        // renames in the same command. Not yet: the host says what it received, and the
        // rename waits for our digest.
        let known = job.digest.get();
        let streamed = conn.files.send_verified(
            job.local,
            job.dest_dir,
            part,
            job.remote_path,
            known.as_deref(),
            size,
            &mut |sent| {
                meter.update(sent, sent == size);
                !cancel()
            },
        )?;
        if size == 0 {
            meter.update(0, true);
        }
        let sha = match streamed {
            Streamed::Renamed => known.unwrap_or_default(),
            Streamed::Differs(why) => return Err(verify_fail(why)),
            Streamed::Received(theirs) => {
                let sha = digest_of(job)?;
                if theirs != sha {
                    let _ = conn.files.remove(part);
                    return Err(verify_fail(format!(
                        "SHA-256 on the host is {theirs}, expected {sha}"
                    )));
                }
                conn.files.rename(part, job.remote_path)?;
                sha
            }
        };
        events(TransferEvent::Verified {
            size,
            sha256: Some(sha.clone()),
            by: VerifiedBy::Sha256,
        });
        return Ok(Delivered {
            size,
            sha256: Some(sha),
            by: VerifiedBy::Sha256,
            attempts: attempt,
        });
    }
    conn.files.mkdir_p(job.dest_dir)?;
    let (offset, restart) = resume_offset(job, conn, part, size, state)?;
    events(TransferEvent::Started {
        attempt,
        size,
        resume_from: offset,
        restart,
    });
    let cancel = job.cancel;
    let send = |conn: &mut Connection, offset: u64| {
        let mut meter = Meter {
            events,
            total: size,
            start: Instant::now(),
            start_bytes: offset,
            last: None,
        };
        conn.files.write(job.local, part, offset, &mut |sent| {
            meter.update(sent, false);
            !cancel()
        })?;
        meter.update(size, true);
        Ok::<(), TransportError>(())
    };
    match send(conn, offset) {
        Err(TransportError::AppendRefused { detail, .. }) if offset > 0 => {
            // The server does not continue files (ProFTPD's default): start the `.part`
            // over, once; later attempts of this upload start over too.
            state.fresh = true;
            start_over(job, conn, part, size, true, state)?;
            events(TransferEvent::Started {
                attempt,
                size,
                resume_from: 0,
                restart: Some(format!(
                    "the server refuses to append to the `.part` ({detail}): starting it over"
                )),
            });
            send(conn, 0)?;
        }
        other => other?,
    }
    let got = conn.files.size(part)?;
    if got != Some(size) {
        return Err(verify_fail(format!(
            "size on the host is {}, expected {size}",
            got.map_or("missing".into(), |n| n.to_string())
        )));
    }
    let (remote_sha, by) = match conn.shell.as_mut() {
        Some(shell) => {
            let sha = digest_of(job)?;
            if let Some(theirs) = shell.verify_and_rename(part, job.remote_path, &sha, size)? {
                // Start the next attempt from scratch: the prefix is not ours.
                let _ = conn.files.remove(part);
                return Err(verify_fail(format!(
                    "SHA-256 on the host is {theirs}, expected {sha}"
                )));
            }
            (Some(sha), VerifiedBy::Sha256)
        }
        None => {
            conn.files.rename(part, job.remote_path)?;
            // Only a leftover: without its `.part` it vouches for nothing.
            let _ = conn.files.remove(&sidecar_path(part));
            (None, VerifiedBy::SizeOnly)
        }
    };
    events(TransferEvent::Verified {
        size,
        sha256: remote_sha.clone(),
        by,
    });
    Ok(Delivered {
        size,
        sha256: remote_sha,
        by,
        attempts: attempt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_paths() {
        assert_eq!(part_path("newcx/1/app.tgz"), "newcx/1/.app.tgz.part");
        assert_eq!(part_path("/srv/a b.tgz"), "/srv/.a b.tgz.part");
        assert_eq!(part_path("app.tgz"), ".app.tgz.part");
    }

    #[test]
    fn part_and_sidecar_names_fit_name_max_for_every_storable_name() {
        for len in [1usize, 180, 186, 187, 188, 200, 250, 254, 255] {
            for ch in ["a", "ü", "日"] {
                let mut name = ch.repeat(len / ch.len());
                name.push_str(&"x".repeat(len - name.len()));
                let part = part_path(&format!("/srv/{name}"));
                let file = part.rsplit_once('/').unwrap().1;
                assert!(file.starts_with('.') && file.ends_with(".part"), "{file}");
                let side = sidecar_path(&part);
                assert!(
                    side.rsplit_once('/').unwrap().1.len() <= PART_NAME_MAX,
                    "{len} x {ch}: {side}"
                );
            }
        }
        // Shortened names stay distinct.
        let a = part_path(&format!("{}a.tgz", "n".repeat(250)));
        let b = part_path(&format!("{}b.tgz", "n".repeat(250)));
        assert_ne!(a, b);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::new(10);
        for attempt in 1..12 {
            let d = p.delay(attempt);
            let cap = p
                .base_delay
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(p.max_delay);
            assert!(
                d <= cap && d >= cap / 2,
                "attempt {attempt}: {d:?} vs {cap:?}"
            );
        }
    }
}
