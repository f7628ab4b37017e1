//! Moving a bundle to a host, and running commands there.
//!
//! Every protocol provides [`Files`] (the few file operations an atomic, resumable upload
//! needs) and, where the host is reachable over SSH (or is this machine), a [`Shell`] that
//! runs commands and computes SHA-256 on the host. [`upload::deliver`] builds the safe
//! upload out of those: `.NAME.part`, resume, verify, rename, retry. The protocols are
//! blocking (libssh2, suppaftp's sync API); the engine runs each target on its own
//! blocking thread.

pub mod cert;
pub mod digest;
pub mod error;
pub mod ftp;
pub mod known_hosts;
pub mod lines;
pub mod local;
pub mod proxy;
pub mod ssh;
pub mod tls;
pub mod upload;
pub mod warnings;

pub use crate::model::transfer::{Stream, TransferEvent, VerifiedBy};
pub use digest::{BundleDigest, bundle_sha256};
pub use error::TransportError;

use std::path::Path;
use std::time::Duration;

/// The directory part of a remote path, for messages.
pub(crate) fn dir_of(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((dir, _)) => dir,
        None => ".",
    }
}

/// The file operations an atomic upload needs. Paths are remote paths as planned
/// (relative ones are relative to the login's home).
pub trait Files: Send {
    /// Creates `dir` and its parents; an existing directory is fine.
    fn mkdir_p(&mut self, dir: &str) -> Result<(), TransportError>;
    /// The size of `path`, or `None` when it does not exist.
    fn size(&mut self, path: &str) -> Result<Option<u64>, TransportError>;
    /// Whether [`Files::write`] can continue a file at an offset.
    fn resumable(&self) -> bool;
    /// Writes `local[offset..]` to `remote` from `offset` on (`offset == 0` creates or
    /// truncates). Calls `progress` with the total bytes now in `remote`; when it returns
    /// false the write stops with [`TransportError::Cancelled`].
    fn write(
        &mut self,
        local: &Path,
        remote: &str,
        offset: u64,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(), TransportError>;
    /// Renames `from` to `to`, atomically replacing `to` if it exists.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), TransportError>;
    /// Removes a file; a missing file is fine.
    fn remove(&mut self, path: &str) -> Result<(), TransportError>;
    /// Creates one directory; `false` when it already exists. Atomic on the server, so it
    /// serves as a lock where the host has no shell (FTP).
    fn create_dir(&mut self, path: &str) -> Result<bool, TransportError>;
    /// Removes an empty directory; a missing one is fine.
    fn remove_dir(&mut self, path: &str) -> Result<(), TransportError>;

    /// How much of a `.part` of `len` bytes, left by an interrupted upload of a `size`-byte
    /// bundle, was written without holes (a write over several streams may leave some).
    fn resumable_prefix(&self, len: u64, _size: u64) -> u64 {
        len
    }

    /// Whether [`Files::send_verified`] works here: the host hashes the upload as it
    /// arrives, so no second read of the file on the host and no extra round trips.
    fn verifies_in_stream(&self) -> bool {
        false
    }

    /// Creates `dir`, writes all of `local` (`size` bytes) to `part` and has the host hash
    /// the file as written; with `expected`, only if that hash is `expected` and every byte
    /// was written, renames `part` to `dest` — one remote process tree, one round trip
    /// beyond the data. Without (the bundle's digest is still being computed), the host
    /// answers with its hash and leaves `part` for the caller to check and rename. Progress
    /// and cancel as in [`Files::write`]. Only called where [`Files::verifies_in_stream`]
    /// says so.
    #[allow(clippy::too_many_arguments)]
    fn send_verified(
        &mut self,
        _local: &Path,
        _dir: &str,
        part: &str,
        _dest: &str,
        _expected: Option<&str>,
        _size: u64,
        _progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Streamed, TransportError> {
        Err(TransportError::Setup {
            host: String::new(),
            detail: format!(
                "internal: a streamed verification of `{part}` was asked of a protocol without one"
            ),
        })
    }

    /// Whether the next attempt after a stall must start a fresh `.part` (a new file, not
    /// an append): an FTP server may still hold the stalled session's lock on the old one
    /// (vsftpd's `lock_upload_files`), and would keep the next `APPE` waiting for it.
    fn fresh_after_stall(&self) -> bool {
        false
    }

    // Where the host has no shell (FTP), the lock's `info` and heartbeat and an upload's
    // sidecar are small files of their own. Protocols with a shell never need these.

    /// The contents of a small file (at most `max` bytes), or `None` when it does not exist.
    fn read_small(&mut self, path: &str, _max: usize) -> Result<Option<Vec<u8>>, TransportError> {
        Err(no_shell_only(path))
    }

    /// Creates or replaces a small file.
    fn write_small(&mut self, path: &str, _data: &[u8]) -> Result<(), TransportError> {
        Err(no_shell_only(path))
    }

    /// The modification time of `path` on the server's clock (seconds since the epoch), or
    /// `None` when it does not exist.
    fn modified(&mut self, path: &str) -> Result<Option<i64>, TransportError> {
        Err(no_shell_only(path))
    }

    /// A second connection like this one, for work beside it (the lock's heartbeat).
    fn twin(&self) -> Result<Box<dyn Files>, TransportError> {
        Err(no_shell_only(""))
    }
}

fn no_shell_only(path: &str) -> TransportError {
    TransportError::Setup {
        host: String::new(),
        detail: format!(
            "internal: a small-file operation on `{path}` was asked of a protocol that has a shell"
        ),
    }
}

/// Running commands on the host.
pub trait Shell: Send {
    /// Runs `command` with `sh -c` semantics, handing its output over a read at a time:
    /// each call to `on_lines` gets the lines of one stream that one read completed, joined
    /// by `\n` ([`lines::Batch`]; one line is a batch too), so a flood of lines costs per
    /// read, not per line. Returns the exit status. The command is killed at `timeout`
    /// ([`TransportError::CommandTimeout`]) or as soon as `stop` returns true
    /// ([`TransportError::Cancelled`]), on the host as well.
    fn exec_lines(
        &mut self,
        command: &str,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
        on_lines: &mut dyn FnMut(Stream, &str),
    ) -> Result<i32, TransportError>;

    /// [`Shell::exec_lines`], a line at a time.
    fn exec(
        &mut self,
        command: &str,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
        on_line: &mut dyn FnMut(Stream, &str),
    ) -> Result<i32, TransportError> {
        self.exec_lines(command, timeout, stop, &mut |s, text| {
            lines::each_line(text).for_each(|l| on_line(s, l))
        })
    }

    /// SHA-256 (hex) of the first `len` bytes of `path`, or of all of it.
    fn sha256(&mut self, path: &str, len: Option<u64>) -> Result<String, TransportError>;

    /// Starts `command` in the background for as long as this connection lives, or until
    /// [`Shell::stop_background`]: the remote lock's heartbeat. It must die with us — when
    /// the connection drops or dropship is killed — so a dead holder's lock goes stale.
    fn start_background(&mut self, command: &str) -> Result<(), TransportError>;

    /// Stops what [`Shell::start_background`] started.
    fn stop_background(&mut self);

    /// Runs one of dropship's own short scripts (locking, for one) and returns its stdout,
    /// allowing `extra` time beyond the connection timeout (hashing a large file).
    /// Unlike [`Shell::exec`] there is no process-group wrapper: these scripts are quick
    /// and bounded by the connection timeout, and on a hundred hosts the wrapper's extra
    /// processes cost more than the script.
    fn script(&mut self, script: &str, extra: Duration) -> Result<String, TransportError>;

    /// Runs `script` as the body of a shell function (so it ends with `return`, not `exit`);
    /// if it sets `go=1`, `background` then starts as [`Shell::start_background`] would.
    /// Returns what the script printed and, when it set `go`, how starting `background`
    /// went. Over SSH both run in one channel and one remote shell (the lock and its
    /// heartbeat: one login shell and `sh` fewer per host of every dispatch).
    fn script_then_background(
        &mut self,
        script: &str,
        background: &str,
    ) -> Result<(String, Option<Result<(), TransportError>>), TransportError> {
        let out = self.script(&function_script(script, "echo dropship-go"), Duration::ZERO)?;
        match out.strip_suffix("dropship-go\n") {
            Some(out) => {
                let out = out.to_owned();
                Ok((out, Some(self.start_background(background))))
            }
            None => Ok((out, None)),
        }
    }

    /// Stops what [`Shell::script_then_background`] started, waits until it has ended,
    /// and runs `script` (one line) in that same remote shell: no new channel for the
    /// unlock, and nothing of the background command runs beside `script`. `None` where
    /// there is no such shell (or `script` is not one line); then the caller stops and
    /// runs it the usual way.
    fn finish_background(&mut self, _script: &str) -> Option<Result<String, TransportError>> {
        None
    }

    /// Checks `part` against `expected` and renames it to `dest` only if it matches, in one
    /// round trip. `Ok(None)` when done; `Ok(Some(hash))` with the host's hash when not.
    fn verify_and_rename(
        &mut self,
        part: &str,
        dest: &str,
        expected: &str,
        size: u64,
    ) -> Result<Option<String>, TransportError> {
        let out = self.script(
            &verify_rename_command(part, dest, expected),
            hash_allowance(size),
        )?;
        Ok(verify_answer(&out))
    }
}

/// What the host made of a [`Files::send_verified`] upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Streamed {
    /// Its hash was the one expected: the `.part` is renamed into place.
    Renamed,
    /// Its hash was not, or not every byte was written: why (the `.part` is removed).
    Differs(String),
    /// No hash was expected: the host's hash of the `.part` as written, which stays for
    /// the caller to check and rename.
    Received(String),
}

/// An open connection to one target.
pub struct Connection {
    pub files: Box<dyn Files>,
    pub shell: Option<Box<dyn Shell>>,
}

fn local_error(local: &Path, e: std::io::Error) -> TransportError {
    TransportError::Local {
        path: local.to_owned(),
        detail: e.to_string(),
    }
}

/// Sends `local[offset..]` into `dst` in `chunk`-sized writes (big writes keep SFTP's
/// pipeline and the FTP data stream full), calling `progress` with the bytes now at the
/// destination and stopping (cancelled) when it returns false. `write_err` classifies a
/// failed write.
pub(crate) fn pump(
    host: &str,
    local: &Path,
    offset: u64,
    dst: &mut dyn std::io::Write,
    chunk: usize,
    progress: &mut dyn FnMut(u64) -> bool,
    write_err: &dyn Fn(std::io::Error) -> TransportError,
) -> Result<(), TransportError> {
    pump_range(
        host,
        local,
        offset,
        u64::MAX,
        dst,
        chunk,
        progress,
        write_err,
    )
}

/// [`pump`] of `local[offset..end]` only.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pump_range(
    host: &str,
    local: &Path,
    offset: u64,
    end: u64,
    dst: &mut dyn std::io::Write,
    chunk: usize,
    progress: &mut dyn FnMut(u64) -> bool,
    write_err: &dyn Fn(std::io::Error) -> TransportError,
) -> Result<(), TransportError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut src = std::fs::File::open(local).map_err(|e| local_error(local, e))?;
    let len = src.metadata().map_err(|e| local_error(local, e))?.len();
    src.seek(SeekFrom::Start(offset))
        .map_err(|e| local_error(local, e))?;
    let mut src = src.take(end.saturating_sub(offset));
    // Never bigger than what is left to send: a 100 KB bundle to 100 hosts at once must
    // not hold 100 MiB of buffers.
    let left = usize::try_from(end.min(len).saturating_sub(offset)).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; chunk.min(left).max(1)];
    let mut sent = offset;
    loop {
        let n = src.read(&mut buf).map_err(|e| local_error(local, e))?;
        if n == 0 {
            return Ok(());
        }
        dst.write_all(&buf[..n]).map_err(write_err)?;
        sent += n as u64;
        if !progress(sent) {
            return Err(TransportError::Cancelled {
                host: host.to_owned(),
            });
        }
    }
}

/// A writer over a TCP socket that reports a stall as [`std::io::ErrorKind::TimedOut`]
/// once the peer has acknowledged no byte for `timeout`.
///
/// A send timeout alone (`SO_SNDTIMEO = timeout`) finds a stall late: the peer's kernel
/// keeps acknowledging into its receive buffer for a while after the peer stopped, and a
/// blocked write that moved a few bytes returns a partial count after its timeout, so
/// `write_all` waited two or three timeouts (measured on loopback). Here the socket's own
/// send timeout is short ([`STALL_POLL`], set by the caller) and what the peer acknowledged
/// (`TCP_INFO`'s `tcpi_bytes_acked`, which zero-window probes do not move) is the clock.
pub(crate) struct StallGuard<'a> {
    inner: &'a mut dyn std::io::Write,
    fd: std::os::fd::RawFd,
    timeout: Duration,
    acked: Option<u64>,
    since: std::time::Instant,
}

impl<'a> StallGuard<'a> {
    pub(crate) fn new(
        inner: &'a mut dyn std::io::Write,
        fd: std::os::fd::RawFd,
        timeout: Duration,
    ) -> StallGuard<'a> {
        StallGuard {
            inner,
            fd,
            timeout,
            acked: tcp_bytes_acked(fd),
            since: std::time::Instant::now(),
        }
    }
}

/// The send timeout of a socket behind a [`StallGuard`]: how often it looks at the clock.
pub(crate) const STALL_POLL: Duration = Duration::from_millis(200);

impl std::io::Write for StallGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::io::ErrorKind::{TimedOut, WouldBlock};
        loop {
            let r = self.inner.write(buf);
            let acked = tcp_bytes_acked(self.fd);
            if acked != self.acked {
                self.acked = acked;
                self.since = std::time::Instant::now();
            }
            match r {
                // A send timeout of STALL_POLL: try again (the TLS layers keep what they
                // took, so the same buffer is what they expect) until the peer's silence
                // has lasted `timeout`. Without TCP_INFO there is no clock to keep: give up.
                Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => {
                    if self.acked.is_none() || self.since.elapsed() >= self.timeout {
                        return Err(std::io::Error::new(
                            TimedOut,
                            format!("the peer acknowledged nothing for {:?}", self.timeout),
                        ));
                    }
                }
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The bytes the peer of a TCP socket has acknowledged, where the kernel says.
fn tcp_bytes_acked(fd: std::os::fd::RawFd) -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: getsockopt writes at most `len` bytes into a zeroed tcp_info we own.
        unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let r = libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            );
            (r == 0 && len as usize >= std::mem::size_of::<libc::tcp_info>())
                .then_some(info.tcpi_bytes_acked)
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = fd;
        None
    }
}

/// SHA-256 (hex) of the first `len` bytes of a local file, or of all of it.
pub fn local_sha256(path: &Path, len: Option<u64>) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut reader: Box<dyn Read> = match len {
        Some(n) => Box::new(file.take(n)),
        None => Box::new(file),
    };
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Shell text that hashes its stdin: `openssl dgst` where the host has it (it uses the
/// CPU's SHA extensions, about 3.5x less CPU than coreutils' `sha256sum` here, and on a
/// hundred hosts sharing a machine that is the largest cost after sshd), else `sha256sum`.
/// Both print the hex digest first.
const HASH_STDIN: &str =
    "{ if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi; }";

use crate::config::shell::quote as shell_quote;

/// The shell command that prints the SHA-256 of (a prefix of) `path` on a POSIX host.
pub fn sha256_command(path: &str, len: Option<u64>) -> String {
    let q = shell_quote(path);
    match len {
        Some(n) => format!("head -c {n} -- {q} | {HASH_STDIN}"),
        None => format!("{HASH_STDIN} < {q}"),
    }
}

/// One round trip that checks `part` against `expected` and, only if it matches, renames
/// it to `dest` (rename(2): atomic, replacing). Prints `ok` or `bad HASH`; exits non-zero
/// when the hash or the rename failed. One line without `exit`, so it also runs inside
/// the lock's control shell (see `ssh::control_loop`).
pub fn verify_rename_command(part: &str, dest: &str, expected: &str) -> String {
    let (p, d) = (shell_quote(part), shell_quote(dest));
    let e = shell_quote(expected);
    format!(
        "if h=$({HASH_STDIN} < {p}); then h=${{h%% *}}; if [ \"$h\" = {e} ]; then mv -f -- {p} {d} && echo ok; else echo \"bad $h\"; fi; else false; fi"
    )
}

/// What [`verify_rename_command`] printed: `None` when `part` matched and was renamed,
/// else the host's hash (or what it said instead).
pub fn verify_answer(out: &str) -> Option<String> {
    let out = out.trim();
    match out.strip_prefix("bad ") {
        Some(h) => Some(h.to_owned()),
        None if out == "ok" => None,
        None => Some(format!("unreadable answer `{out}`")),
    }
}

/// `body` as a shell function that is called; when it set `go`, `then` runs after it.
/// See [`Shell::script_then_background`].
pub(crate) fn function_script(body: &str, then: &str) -> String {
    format!(
        "dropship_step() {{\n{body}\n}}\ngo=; dropship_step; s=$?; [ -n \"$go\" ] || exit $s\n{then}"
    )
}

/// What [`send_verify_script`] prints once `sh` has parsed all of it and waits for the
/// data: only then may the data follow the script on the same stdin (dash and ash read
/// their script in blocks, and would swallow data sent along with it).
pub const SEND_READY: &str = "dropship-send-ready";

/// The script (for `sh`, with the channel's stdin on fd 3, see `ssh::posix_script`) that
/// receives an upload and verifies it, as one command on the host: it creates `dir`, says
/// [`SEND_READY`], `cat` writes stdin to `part` (its status covers every write and the
/// close), then the hash of `part` as written is compared with `expected`, and only a
/// match is renamed to `dest`, so the final name only ever holds exactly the bytes that
/// left. Without `expected`, it prints `have HASH` and leaves `part` (see
/// [`Streamed::Received`]). Prints `ok`, `bad HASH` (the `.part` removed) or `unwritten` (the write failed;
/// why is on stderr; the rest of the stream is read and dropped, so the sender finishes
/// and hears that answer instead of a closed channel). The mode is the one `scp -t` gives a `0644` file.
///
/// The hash reads the file back (from the page cache) rather than from a `tee` in the
/// receiving pipeline: measured on 512 MiB (bench/upload.sh, BENCHMARKS.md), `tee`'s 8 KiB
/// pipe writes cost the host about 1 CPU second more than reading the file again, which
/// made the whole upload slower wherever the host's CPU is the limit.
pub fn send_verify_script(dir: &str, part: &str, dest: &str, expected: Option<&str>) -> String {
    let (d, p, f) = (shell_quote(dir), shell_quote(part), shell_quote(dest));
    let check = match expected {
        Some(e) => format!(
            "if [ \"$h\" = {} ]; then mv -f -- {p} {f} && echo ok; else rm -f -- {p}; echo \"bad $h\"; fi",
            shell_quote(e)
        ),
        None => "echo \"have $h\"".to_owned(),
    };
    format!(
        "[ -d {d} ] || mkdir -p -- {d} || exit 1\n\
         umask go-w\n\
         printf '%s\\n' {SEND_READY}\n\
         if ! cat <&3 > {p}; then cat <&3 > /dev/null; rm -f -- {p}; echo unwritten; exit 0; fi\n\
         h=$({HASH_STDIN} < {p}) || exit 1\n\
         h=${{h%% *}}\n\
         {check}"
    )
}

/// Time to allow for hashing `size` bytes on a host, beyond the connection timeout: a slow or
/// busy host hashes at 20 MB/s at least.
pub fn hash_allowance(size: u64) -> Duration {
    Duration::from_secs(size / 20_000_000)
}
