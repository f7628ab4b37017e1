//! A real Dropbear (`dropbear-bin`, 2022.83 on Debian 12) on a leased loopback port, with
//! its distribution defaults: a 24 KiB channel window, a limit on unauthenticated
//! connections per address, SFTP through OpenSSH's `sftp-server` (Dropbear has none of its
//! own; Debian's execs `/usr/lib/sftp-server`). Killed on drop.
//!
//! Dropbear reads `~/.ssh/authorized_keys` of the user, and allows password logins only to
//! users whose shell is in /etc/shells, so it gets a user of its own ([`DROPBEAR_USER`]),
//! never the shared test user's home.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use tempfile::TempDir;

use super::ports::{self, PortLease};
use super::process::{START_TIMEOUT, ServerProcess, wait_for_greeting};
use super::shells::{ShellUser, shell_user};
use super::{FileLock, Need, read_log, run, test_keys};

pub const DROPBEAR: &str = "/usr/sbin/dropbear";

/// The login Dropbear tests use (password [`super::TEST_PASSWORD`], both test keys).
pub const DROPBEAR_USER: &str = "dropship-sh-dropbear";

/// A running Dropbear.
pub struct DropbearServer {
    process: ServerProcess,
    _lease: PortLease,
    port: u16,
    public_line: String,
    pub user: ShellUser,
    log_path: PathBuf,
    _dir: TempDir,
}

impl DropbearServer {
    /// Starts Dropbear (with `extra` arguments, e.g. `["-W", "65536"]`), or `None` when
    /// the test is skipped (see [`super::live_test_or_skip`]).
    pub fn start_or_skip(test: &str, extra: &[&str]) -> Option<DropbearServer> {
        super::live_test_or_skip(test, &[Need::Dropbear]).then(|| DropbearServer::start(extra))
    }

    pub fn start(extra: &[&str]) -> DropbearServer {
        let user = shell_user("dropbear", "/bin/bash");
        authorize_keys(&user);
        let dir = super::server_temp_dir("dropbear");
        let key = dir.path().join("hostkey_ed25519");
        run(Command::new("/usr/bin/dropbearkey")
            .args(["-t", "ed25519", "-f"])
            .arg(&key));
        let out = run(Command::new("/usr/bin/dropbearkey")
            .args(["-y", "-f"])
            .arg(&key));
        let public_line = out
            .lines()
            .find(|l| l.starts_with("ssh-ed25519 "))
            .expect("dropbearkey -y prints the public key")
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let log_path = dir.path().join("dropbear.log");
        let mut last = String::new();
        for _ in 0..5 {
            let lease = ports::reserve(1, &[Ipv4Addr::LOCALHOST]);
            let port = lease.first();
            let mut cmd = Command::new(DROPBEAR);
            cmd.args(["-F", "-E", "-p", &format!("127.0.0.1:{port}"), "-r"])
                .arg(&key)
                .arg("-P")
                .arg(dir.path().join("dropbear.pid"))
                .args(extra);
            let mut process = ServerProcess::spawn("dropbear", cmd, &log_path, true);
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match wait_for_greeting(
                &mut process,
                addr,
                "SSH-2.0-",
                Instant::now() + START_TIMEOUT,
            ) {
                Ok(()) => {
                    return DropbearServer {
                        process,
                        _lease: lease,
                        port,
                        public_line,
                        user,
                        log_path,
                        _dir: dir,
                    };
                }
                Err(e) => {
                    drop(process);
                    let log = read_log(&log_path);
                    last = format!("{e}\n--- dropbear log ---\n{log}");
                    if !log.contains("in use") {
                        break;
                    }
                }
            }
        }
        panic!("dropbear did not start: {last}");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The `known_hosts` line for this server.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.public_line)
    }

    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// Writes the test keys to the user's `~/.ssh/authorized_keys` (Dropbear has no
/// `AuthorizedKeysFile`), with the modes Dropbear insists on.
fn authorize_keys(user: &ShellUser) {
    // Before the lock: test_keys() takes it too (a second flock in one process blocks).
    let text = test_keys().authorized_keys();
    let _lock = FileLock::acquire("setup.lock");
    let ssh = user.home.join(".ssh");
    fs::create_dir_all(&ssh).expect("mkdir ~/.ssh");
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).expect("chmod ~/.ssh");
    chown(&ssh, Some(user.uid), Some(user.gid)).expect("chown ~/.ssh");
    let ak = ssh.join("authorized_keys");
    if fs::read_to_string(&ak).ok().as_deref() != Some(text.as_str()) {
        let tmp = ssh.join(format!(".ak.{}", std::process::id()));
        fs::write(&tmp, text).expect("write authorized_keys");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).expect("chmod");
        chown(&tmp, Some(user.uid), Some(user.gid)).expect("chown");
        fs::rename(&tmp, &ak).expect("install authorized_keys");
    }
}
