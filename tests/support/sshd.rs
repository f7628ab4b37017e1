//! A real OpenSSH `sshd` on a leased loopback port, with its own host keys and
//! `authorized_keys`, killed on drop.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use tempfile::TempDir;

use super::ports::{self, PortLease};
use super::process::{START_TIMEOUT, ServerProcess, wait_for_greeting};
use super::{Need, read_log, run, test_keys, test_user};

pub const SSHD: &str = "/usr/sbin/sshd";
/// sshd refuses more than this many `ListenAddress` lines.
pub const MAX_LISTEN_ADDRESSES: usize = 16;

/// Host key algorithms a test server can be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKeyType {
    Ed25519,
    Rsa,
    Ecdsa,
}

impl HostKeyType {
    fn keygen_args(self) -> &'static [&'static str] {
        match self {
            HostKeyType::Ed25519 => &["-t", "ed25519"],
            HostKeyType::Rsa => &["-t", "rsa", "-b", "2048"],
            HostKeyType::Ecdsa => &["-t", "ecdsa", "-b", "256"],
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            HostKeyType::Ed25519 => "ssh_host_ed25519_key",
            HostKeyType::Rsa => "ssh_host_rsa_key",
            HostKeyType::Ecdsa => "ssh_host_ecdsa_key",
        }
    }
}

/// One host key of a running server.
#[derive(Clone, Debug)]
pub struct HostKey {
    pub kind: HostKeyType,
    pub private_path: PathBuf,
    /// `ALGORITHM BASE64` as in the `.pub` file, without comment (e.g. `ssh-ed25519 AAAA…`).
    pub public_line: String,
}

impl HostKey {
    /// Key algorithm name, e.g. `ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`.
    pub fn algorithm(&self) -> &str {
        self.public_line.split(' ').next().unwrap_or_default()
    }

    /// The base64 key blob.
    pub fn base64(&self) -> &str {
        self.public_line.split(' ').nth(1).unwrap_or_default()
    }

    /// `[IP]:PORT ALGORITHM BASE64`, the line OpenSSH writes to known_hosts.
    pub fn known_hosts_line(&self, addr: SocketAddr) -> String {
        format!("[{}]:{} {}", addr.ip(), addr.port(), self.public_line)
    }
}

/// Options for [`SshServer`]; [`SshServer::start`] uses the defaults.
#[derive(Clone, Debug, Default)]
pub struct SshServerBuilder {
    host_keys: Vec<HostKeyType>,
    extra_listen: Vec<Ipv4Addr>,
    config_lines: Vec<String>,
    authorized_keys: Vec<String>,
    no_sftp: bool,
}

impl SshServerBuilder {
    /// Adds a host key of this type. Without any call the server has one ed25519 key; the first
    /// one added is the one [`SshServer::known_hosts_line`] describes.
    pub fn host_key(mut self, kind: HostKeyType) -> Self {
        if !self.host_keys.contains(&kind) {
            self.host_keys.push(kind);
        }
        self
    }

    /// Also listens on `ip` (same port), e.g. 127.0.0.2. 127.0.0.0/8 only; at most 16
    /// addresses in all.
    pub fn listen_also(mut self, ip: Ipv4Addr) -> Self {
        super::assert_loopback(ip.into());
        if ip != Ipv4Addr::LOCALHOST && !self.extra_listen.contains(&ip) {
            self.extra_listen.push(ip);
        }
        assert!(
            self.extra_listen.len() < MAX_LISTEN_ADDRESSES,
            "sshd takes at most {MAX_LISTEN_ADDRESSES} ListenAddress lines"
        );
        self
    }

    /// A raw `sshd_config` line. These go first, and for most keywords sshd keeps the first
    /// value it reads, so they override the harness defaults (e.g. `PasswordAuthentication no`).
    /// `Match` blocks belong at the end and are not supported here.
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.config_lines.push(line.into());
        self
    }

    /// Leaves out `Subsystem sftp` (a server that refuses SFTP); a second `Subsystem sftp`
    /// line would make sshd refuse its config, so [`Self::config_line`] cannot do this.
    pub fn no_sftp(mut self) -> Self {
        self.no_sftp = true;
        self
    }

    /// An extra `authorized_keys` line, besides the two [`super::TestKeys`].
    pub fn authorized_key(mut self, line: impl Into<String>) -> Self {
        self.authorized_keys.push(line.into());
        self
    }

    /// Like [`Self::start`], but applies the skip policy first (see [`super::live_test_or_skip`]).
    pub fn start_or_skip(self, test: &str) -> Option<SshServer> {
        super::live_test_or_skip(test, &[Need::Sshd]).then(|| self.start())
    }

    /// Starts sshd and waits until every address answers with an SSH banner. Panics (with the
    /// server log) if it does not come up.
    pub fn start(mut self) -> SshServer {
        if self.host_keys.is_empty() {
            self.host_keys.push(HostKeyType::Ed25519);
        }
        let user = test_user();
        let keys = test_keys();
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd (privilege separation dir)");

        let dir = super::server_temp_dir("sshd");
        // sshd reads AuthorizedKeysFile as the user: the directory must be traversable.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");

        let host_keys: Vec<HostKey> = self
            .host_keys
            .iter()
            .map(|&kind| generate_host_key(dir.path(), kind))
            .collect();

        let authorized = dir.path().join("authorized_keys");
        let mut ak = keys.authorized_keys();
        for line in &self.authorized_keys {
            ak.push_str(line);
            ak.push('\n');
        }
        fs::write(&authorized, ak).expect("write authorized_keys");
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o644)).expect("chmod");

        let mut ips = vec![Ipv4Addr::LOCALHOST];
        ips.extend(&self.extra_listen);
        let log_path = dir.path().join("sshd.log");
        let config_path = dir.path().join("sshd_config");

        // The lease makes a port collision unlikely, not impossible (something outside the
        // harness may grab it): retry on a fresh port if sshd cannot bind.
        let mut last_failure = String::new();
        for _ in 0..5 {
            let lease = ports::reserve(1, &ips);
            let port = lease.first();
            let config = self.config_text(dir.path(), port, &ips, &host_keys, &authorized);
            fs::write(&config_path, config).expect("write sshd_config");
            let mut cmd = Command::new(SSHD);
            cmd.args(["-D", "-e", "-f"]).arg(&config_path);
            let mut process = ServerProcess::spawn("sshd", cmd, &log_path, true);
            match wait_ready(&mut process, &ips, port) {
                Ok(()) => {
                    return SshServer {
                        process,
                        _lease: lease,
                        port,
                        ips,
                        host_keys,
                        config_path,
                        log_path,
                        authorized_keys_path: authorized,
                        user_home: user.home.clone(),
                        dir,
                    };
                }
                Err(e) => {
                    drop(process);
                    let log = read_log(&log_path);
                    last_failure = format!("{e}\n--- sshd log ---\n{log}");
                    if !log.contains("Address already in use") {
                        break;
                    }
                    let _ = fs::remove_file(&log_path);
                }
            }
        }
        panic!("sshd did not start: {last_failure}");
    }

    fn config_text(
        &self,
        dir: &Path,
        port: u16,
        ips: &[Ipv4Addr],
        host_keys: &[HostKey],
        authorized: &Path,
    ) -> String {
        let mut c = String::new();
        for line in &self.config_lines {
            let _ = writeln!(c, "{line}");
        }
        let _ = writeln!(c, "Port {port}");
        for ip in ips {
            let _ = writeln!(c, "ListenAddress {ip}");
        }
        for k in host_keys {
            let _ = writeln!(c, "HostKey {}", k.private_path.display());
        }
        let _ = writeln!(c, "PidFile {}", dir.join("sshd.pid").display());
        let _ = writeln!(c, "AuthorizedKeysFile {}", authorized.display());
        c.push_str(&base_config(self.no_sftp));
        c
    }
}

/// What every test sshd runs with besides its port, addresses, host keys and paths (see
/// DESIGN.md "Testing with real peers").
pub fn base_config(no_sftp: bool) -> String {
    let mut c = String::new();
    c.push_str(
        "UsePAM no\n\
             StrictModes no\n\
             PermitRootLogin yes\n\
             PasswordAuthentication yes\n\
             PubkeyAuthentication yes\n\
             KbdInteractiveAuthentication no\n\
             MaxStartups 200:30:400\n\
             MaxSessions 100\n\
             LoginGraceTime 60\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n\
             LogLevel VERBOSE\n",
    );
    if !no_sftp {
        c.push_str("Subsystem sftp internal-sftp\n");
    }
    // 9.8+ throttles source addresses after failed logins, which parallel tests on
    // 127.0.0.1 trip over.
    if sshd_version() >= (9, 8) {
        c.push_str("PerSourcePenalties no\n");
    }
    c
}

/// A fresh host key of `kind` in `dir`.
pub fn generate_host_key(dir: &Path, kind: HostKeyType) -> HostKey {
    let path = dir.join(kind.file_name());
    run(Command::new("ssh-keygen")
        .arg("-q")
        .args(kind.keygen_args())
        .args(["-N", "", "-C", "dropship-test-host", "-f"])
        .arg(&path));
    let public = fs::read_to_string(dir.join(format!("{}.pub", kind.file_name())))
        .expect("read host public key");
    let public_line = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    HostKey {
        kind,
        private_path: path,
        public_line,
    }
}

/// (major, minor) of the installed OpenSSH, from `sshd -V`.
fn sshd_version() -> (u32, u32) {
    static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = Command::new(SSHD).arg("-V").output().ok();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        // "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.x"
        let v = text
            .split("OpenSSH_")
            .nth(1)
            .unwrap_or_default()
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .next()
            .unwrap_or_default();
        let mut it = v.split('.').map(|n| n.parse().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    })
}

fn wait_ready(process: &mut ServerProcess, ips: &[Ipv4Addr], port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    for ip in ips {
        wait_for_greeting(process, SocketAddr::from((*ip, port)), "SSH-2.0-", deadline)?;
    }
    Ok(())
}

/// A running sshd. Every address it listens on shares one port.
pub struct SshServer {
    // Field order matters for drop: the process dies before its files and port lease go.
    process: ServerProcess,
    _lease: PortLease,
    port: u16,
    ips: Vec<Ipv4Addr>,
    host_keys: Vec<HostKey>,
    config_path: PathBuf,
    log_path: PathBuf,
    authorized_keys_path: PathBuf,
    user_home: PathBuf,
    dir: TempDir,
}

impl SshServer {
    /// An sshd with the default options: one ed25519 host key, 127.0.0.1 only.
    pub fn start() -> SshServer {
        SshServerBuilder::default().start()
    }

    pub fn builder() -> SshServerBuilder {
        SshServerBuilder::default()
    }

    /// 127.0.0.1:port.
    /// Connection parameters for this server as the test user, with no credentials (the
    /// agent a socket that does not exist), strict host keys, the user's known_hosts
    /// `dir/known_hosts` and dropship's `dir/state_known_hosts`: what the in-process SSH
    /// tests start from and change.
    pub fn ssh_params(&self, dir: &Path) -> dropship::transport::ssh::SshParams {
        use std::time::Duration;
        dropship::transport::ssh::SshParams {
            host: "127.0.0.1".into(),
            address: "127.0.0.1".into(),
            port: self.port(),
            login: super::TEST_USER.into(),
            password: None,
            keys: Vec::new(),
            key_passphrase: None,
            certificates: Vec::new(),
            identities_only: false,
            agent: Some(dir.join("no-agent")),
            timeout: Duration::from_secs(10),
            host_key: dropship::config::HostKeyPolicy::Strict,
            known_hosts: dropship::transport::known_hosts::KnownHostsFiles {
                user: Some(dir.join("known_hosts")),
                dropship: dir.join("state_known_hosts"),
            },
            known_hosts_also: Vec::new(),
            host_key_name: "127.0.0.1".into(),
            connect_timeout: Duration::from_secs(10),
            use_agent: true,
            address_family: Default::default(),
            refusal: None,
            route: Default::default(),
            keepalive: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every listening address (127.0.0.1 first, then [`SshServerBuilder::listen_also`]).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.ips
            .iter()
            .map(|ip| SocketAddr::from((*ip, self.port)))
            .collect()
    }

    pub fn host_keys(&self) -> &[HostKey] {
        &self.host_keys
    }

    /// `ALGORITHM BASE64` of the main (first) host key.
    pub fn host_public_key(&self) -> &str {
        &self.host_keys[0].public_line
    }

    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA…` for the main host key.
    pub fn known_hosts_line(&self) -> String {
        self.host_keys[0].known_hosts_line(self.addr())
    }

    /// known_hosts text covering every host key on every listening address.
    pub fn known_hosts(&self) -> String {
        let mut out = String::new();
        for addr in self.addrs() {
            for key in &self.host_keys {
                out.push_str(&key.known_hosts_line(addr));
                out.push('\n');
            }
        }
        out
    }

    /// Writes [`Self::known_hosts`] to `path`.
    pub fn write_known_hosts(&self, path: &Path) {
        fs::write(path, self.known_hosts())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn authorized_keys_path(&self) -> &Path {
        &self.authorized_keys_path
    }

    /// sshd's stderr (`-e`, LogLevel VERBOSE).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// A scratch directory for the server's own files (host keys, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Home directory of the test user on this server (the same machine).
    pub fn user_home(&self) -> &Path {
        &self.user_home
    }
}
