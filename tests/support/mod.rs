//! Real-server fixtures for integration tests: OpenSSH `sshd`, `vsftpd` (plain and explicit
//! FTPS), a fixed test user with known credentials and keys, and a fault-injecting TCP proxy.
//!
//! Use it from a test file with `mod support;`. Everything here listens on loopback
//! (127.0.0.0/8) only, is safe to use from many tests at once and from several test binaries
//! running in parallel (cross-process state is guarded by `flock` on files under /tmp), and is
//! torn down on drop. Servers are also killed if the test process dies (see [`process`]).
//!
//! Skip policy: the live fixtures need root, `/usr/sbin/sshd` and `/usr/sbin/vsftpd`. When one is
//! missing, the `*_or_skip` helpers fail the test under `CI=true`, and elsewhere print a loud
//! `SKIPPED LIVE TEST` line on stderr (uncaptured, so it shows in `cargo test` output) and
//! return `None` so the test can return early:
//!
//! ```ignore
//! let Some(server) = support::ssh_server_or_skip("sftp_upload") else { return };
//! ```

// Every test binary compiles this module but uses only part of it, so dead-code and
// unused-re-export warnings here are noise, not signal.
#![allow(dead_code, unused_imports)]

pub mod backends;
pub mod disk;
pub mod dropbear;
pub mod engine;
pub mod fake;
pub mod home;
pub mod http;
pub mod netns;
pub mod peers;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod shells;
pub mod sshd;
pub mod tmux;
pub mod upload;
pub mod user;
pub mod vsftpd;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub use proxy::{Fault, FaultProxy, FtpProxies, Scope};
pub use sshd::{HostKey, HostKeyType, SshServer, SshServerBuilder};
pub use user::{
    KEY_PASSPHRASE, KEYS_DIR, ScratchDir, TEST_PASSWORD, TEST_USER, TestKeys, TestUser,
    chown_to_user, scratch_dir, test_keys, test_user,
};
pub use vsftpd::{FtpServer, FtpServerBuilder};

/// Where the fixtures keep cross-process lock files.
pub const LOCK_DIR: &str = "/tmp/dropship-test-locks";

/// Second loopback address used for proxies and multi-address servers.
pub const LOOPBACK_2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// A third loopback address (tests that need three hosts on one sshd).
pub const LOOPBACK_3: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// What a live test needs from the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Effective uid 0 (servers bind, switch users and read /etc/shadow).
    Root,
    /// `/usr/sbin/sshd` and `ssh-keygen`.
    Sshd,
    /// `/usr/sbin/vsftpd` and `openssl` (for the FTPS certificate).
    Vsftpd,
    /// `tmux`, for end-to-end TUI runs (`send-keys`, `capture-pane`).
    Tmux,
    /// ProFTPD (with mod_tls) unpacked into [`peers::PEERS_DIR`] by scripts/test.
    Proftpd,
    /// Pure-FTPd unpacked into [`peers::PEERS_DIR`] by scripts/test.
    PureFtpd,
    /// The login shells of [`shells::SHELLS`] (zsh, fish, busybox, tcsh, dash).
    LoginShells,
    /// Dropbear (`dropbear-bin`) and OpenSSH's `sftp-server` for it.
    Dropbear,
    /// `unshare`, `ip` and `socat`, for hosts behind a bastion in a namespace ([`netns`]),
    /// and the OpenSSH client that reaches jump hosts.
    Jump,
}

/// True when running under CI (`CI=true`), where a skipped live test is a failure.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Why `need` is not met on this machine, if it is not.
fn missing(need: Need) -> Option<String> {
    match need {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Need::Root if unsafe { libc::geteuid() } != 0 => Some("not running as root".into()),
        Need::Root => None,
        Need::Sshd => missing_binaries(&[sshd::SSHD, "/usr/bin/ssh-keygen"]),
        Need::Vsftpd => missing_binaries(&[vsftpd::VSFTPD, "/usr/bin/openssl"]),
        Need::Tmux => missing_binaries(&["/usr/bin/tmux"]),
        Need::Proftpd => missing_binaries(&[
            peers::PROFTPD,
            "/opt/dropship-peers/usr/lib/proftpd/mod_tls.so",
            "/usr/bin/openssl",
        ])
        .or_else(|| missing_libraries(peers::PROFTPD)),
        Need::PureFtpd => missing_binaries(&[peers::PURE_FTPD, "/usr/bin/openssl"])
            .or_else(|| missing_libraries(peers::PURE_FTPD)),
        Need::LoginShells => missing_binaries(shells::SHELL_BINARIES),
        Need::Jump => missing_binaries(&[
            "/usr/bin/unshare",
            "/bin/ip",
            "/usr/bin/socat",
            "/usr/bin/ssh",
        ]),
        Need::Dropbear => missing_binaries(&[
            "/usr/sbin/dropbear",
            "/usr/bin/dropbearkey",
            "/usr/lib/openssh/sftp-server",
        ]),
    }
}

fn missing_binaries(paths: &[&str]) -> Option<String> {
    let absent: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    (!absent.is_empty()).then(|| format!("{} not installed", absent.join(", ")))
}

/// The shared libraries `binary` needs that are not installed (`ldd` says "not found").
fn missing_libraries(binary: &str) -> Option<String> {
    let out = Command::new("ldd").arg(binary).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let absent: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not found"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    (!absent.is_empty()).then(|| format!("{binary} needs {}", absent.join(", ")))
}

/// Checks `needs` (plus root, always). Returns true when the live test can run. Otherwise
/// panics under CI, or prints a loud skip notice and returns false.
pub fn live_test_or_skip(test: &str, needs: &[Need]) -> bool {
    let reasons: Vec<String> = std::iter::once(Need::Root)
        .chain(needs.iter().copied())
        .filter_map(missing)
        .collect();
    if reasons.is_empty() {
        return true;
    }
    let reason = reasons.join("; ");
    if is_ci() {
        panic!(
            "LIVE TEST {test} cannot run under CI=true: {reason}. \
             scripts/test installs the peers (openssh-server, vsftpd, dropbear-bin, the login \
             shells) and unpacks ProFTPD and Pure-FTPd into /opt/dropship-peers when run as root."
        );
    }
    // io::stderr() directly, not eprintln!: libtest captures the macros, and a skip must be
    // visible in a normal `cargo test` run.
    let _ = writeln!(
        io::stderr().lock(),
        "\n*** SKIPPED LIVE TEST {test}: {reason} (run scripts/test as root to install) ***"
    );
    false
}

/// A default [`SshServer`] (ed25519 host key on 127.0.0.1), or `None` if the test is skipped.
pub fn ssh_server_or_skip(test: &str) -> Option<SshServer> {
    SshServer::builder().start_or_skip(test)
}

/// A plain-FTP [`FtpServer`], or `None` if the test is skipped.
pub fn ftp_server_or_skip(test: &str) -> Option<FtpServer> {
    FtpServer::builder().start_or_skip(test)
}

/// An explicit-FTPS [`FtpServer`] (TLS required for login and data), or `None` if skipped.
pub fn ftps_server_or_skip(test: &str) -> Option<FtpServer> {
    FtpServer::builder().tls(true).start_or_skip(test)
}

/// Panics unless `ip` is in 127.0.0.0/8: fixtures never touch any other address.
pub fn assert_loopback(ip: IpAddr) {
    let ok = match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(_) => false,
    };
    assert!(ok, "test fixtures only use 127.0.0.0/8, got {ip}");
}

pub(crate) fn assert_loopback_addr(addr: SocketAddr) {
    assert_loopback(addr.ip());
}

/// An exclusive `flock` held until drop (released by the kernel if the process dies).
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Blocks until the lock on `name` (a file in [`LOCK_DIR`]) is held.
    pub fn acquire(name: &str) -> FileLock {
        let file = open_lock_file(name);
        // SAFETY: flock on a valid, open descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {name}: {}", io::Error::last_os_error());
        FileLock { file }
    }

    /// Takes the lock on `name` if nobody holds it.
    pub fn try_acquire(name: &str) -> Option<FileLock> {
        let file = open_lock_file(name);
        // SAFETY: flock on a valid, open descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        (rc == 0).then_some(FileLock { file })
    }
}

fn open_lock_file(name: &str) -> File {
    std::fs::create_dir_all(LOCK_DIR).unwrap_or_else(|e| panic!("create {LOCK_DIR}: {e}"));
    let path = Path::new(LOCK_DIR).join(name);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open lock file {}: {e}", path.display()))
}

/// Runs a setup command to completion; panics with its output if it fails.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes. Returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temp dir for one server, named `dropship-KIND-PID-XXXXXX` so that [`sweep_stale_dirs`]
/// can tell when its owner is gone.
pub(crate) fn server_temp_dir(kind: &str) -> tempfile::TempDir {
    sweep_stale_dirs();
    tempfile::Builder::new()
        .prefix(&format!("dropship-{kind}-{}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("{kind} temp dir: {e}"))
}

/// Removes server temp dirs left by test processes that were killed (drop never ran), and
/// scratch dirs of dead processes older than a day (kept that long for post-mortems). Once
/// per process.
fn sweep_stale_dirs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dead = |pid: &str| !Path::new("/proc").join(pid).exists();
        for (dir, day_old_only) in [
            (Path::new("/tmp").to_owned(), false),
            (Path::new("/home").join(TEST_USER).join("scratch"), true),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid = if day_old_only {
                    // "<test>-<pid>-<seq>"
                    name.rsplit('-').nth(1)
                } else {
                    name.strip_prefix("dropship-sshd-")
                        .or_else(|| name.strip_prefix("dropship-vsftpd-"))
                        .or_else(|| name.strip_prefix("dropship-proftpd-"))
                        .or_else(|| name.strip_prefix("dropship-pure-ftpd-"))
                        .and_then(|rest| rest.split('-').next())
                };
                let Some(pid) = pid.filter(|p| p.parse::<u32>().is_ok()) else {
                    continue;
                };
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(24 * 3600));
                if dead(pid) && (old || !day_old_only) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    });
}

/// Reads a whole file as lossy UTF-8, or an explanation of why it could not.
pub(crate) fn read_log(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
