//! Other FTP servers with their distribution defaults: ProFTPD and Pure-FTPd, as Debian
//! ships them, unpacked (not installed: both conflict with vsftpd as `ftp-server`) into
//! [`PEERS_DIR`] by scripts/test, run as root on a leased loopback port, killed on drop.
//!
//! Their configuration sets only what running on loopback beside other tests needs: the
//! address and port, a passive range, where pid/log files go, the TLS certificate for FTPS,
//! and how the test user logs in (Unix accounts: the packages' PAM files are not installed).
//! Everything else is the distribution's default, so ProFTPD refuses APPE/REST
//! (`AllowStoreRestart off`) and requires TLS session reuse on data connections, as on a
//! real host.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tempfile::TempDir;

use super::ports::{self, PortLease};
use super::process::{START_TIMEOUT, ServerProcess, wait_for_greeting};
use super::{read_log, run, test_user};

/// Where scripts/test unpacks the peers' Debian packages.
pub const PEERS_DIR: &str = "/opt/dropship-peers";
pub const PROFTPD: &str = "/opt/dropship-peers/usr/sbin/proftpd";
pub const PROFTPD_MODULES: &str = "/opt/dropship-peers/usr/lib/proftpd";
pub const PURE_FTPD: &str = "/opt/dropship-peers/usr/sbin/pure-ftpd";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Proftpd,
    PureFtpd,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Proftpd => "proftpd",
            Peer::PureFtpd => "pure-ftpd",
        }
    }

    /// Starts it (plain FTP, or explicit FTPS required for login and data), or `None` when
    /// the test is skipped (see [`super::live_test_or_skip`]).
    pub fn start_or_skip(self, test: &str, tls: bool) -> Option<PeerServer> {
        let need = match self {
            Peer::Proftpd => super::Need::Proftpd,
            Peer::PureFtpd => super::Need::PureFtpd,
        };
        super::live_test_or_skip(test, &[need]).then(|| PeerServer::start(self, tls))
    }
}

/// A running ProFTPD or Pure-FTPd.
pub struct PeerServer {
    process: ServerProcess,
    pub peer: Peer,
    port: u16,
    _control: PortLease,
    _pasv: PortLease,
    cert: Option<(PathBuf, PathBuf)>,
    stderr_path: PathBuf,
    dir: TempDir,
}

impl PeerServer {
    fn start(peer: Peer, tls: bool) -> PeerServer {
        let _ = test_user();
        let dir = super::server_temp_dir(peer.name());
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let cert = tls.then(|| generate_cert(dir.path()));
        let stderr_path = dir.path().join("server.log");
        let mut last = String::new();
        for _ in 0..5 {
            let control = ports::reserve(1, &[Ipv4Addr::LOCALHOST]);
            let pasv = ports::reserve(8, &[Ipv4Addr::LOCALHOST]);
            let cmd = match peer {
                Peer::Proftpd => {
                    let conf = dir.path().join("proftpd.conf");
                    let server_pem = cert.as_ref().map(|(_, s)| s.as_path());
                    let text = proftpd_conf(dir.path(), control.first(), &pasv.range(), server_pem);
                    fs::write(&conf, text).expect("write proftpd.conf");
                    let mut cmd = Command::new(PROFTPD);
                    // -n: foreground; -c: this file only.
                    cmd.arg("-n").arg("-c").arg(&conf);
                    cmd
                }
                Peer::PureFtpd => {
                    let mut cmd = Command::new(PURE_FTPD);
                    cmd.arg(format!("--bind=127.0.0.1,{}", control.first()))
                        .arg(format!(
                            "--passiveportrange={}:{}",
                            pasv.range().start(),
                            pasv.range().end()
                        ))
                        .arg("--forcepassiveip=127.0.0.1")
                        .arg("--login=unix")
                        .arg("--noanonymous")
                        .arg("--dontresolve");
                    if let Some((_, cert)) = &cert {
                        // 2: TLS required for logins and data.
                        cmd.arg("--tls=2")
                            .arg(format!("--certfile={}", cert.display()));
                    }
                    cmd
                }
            };
            let mut process = ServerProcess::spawn(peer.name(), cmd, &stderr_path, false);
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, control.first()));
            match wait_for_greeting(&mut process, addr, "220", Instant::now() + START_TIMEOUT) {
                Ok(()) => {
                    return PeerServer {
                        process,
                        peer,
                        port: control.first(),
                        _control: control,
                        _pasv: pasv,
                        cert,
                        stderr_path,
                        dir,
                    };
                }
                Err(e) => {
                    drop(process);
                    let log = read_log(&stderr_path);
                    last = format!("{e}\n--- {} log ---\n{log}", peer.name());
                    if !log.contains("in use") && !log.contains("bind") {
                        break;
                    }
                }
            }
        }
        panic!("{} did not start: {last}", peer.name());
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The certificate to trust (`tls_ca`); panics on plain FTP.
    pub fn ca_pem(&self) -> &Path {
        &self.cert.as_ref().expect("ca_pem() on a plain FTP peer").0
    }

    /// Everything the server wrote (its system log and stderr).
    pub fn log(&self) -> String {
        let mut s = read_log(&self.stderr_path);
        for extra in ["system.log", "tls.log", "xfer.log"] {
            let p = self.dir.path().join(extra);
            if p.exists() {
                let _ = write!(s, "\n--- {extra} ---\n{}", read_log(&p));
            }
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// The settings a private ProFTPD needs; the rest are its defaults (Debian's
/// proftpd.conf sets nothing about APPE/REST or TLS session reuse either).
fn proftpd_conf(dir: &Path, port: u16, pasv: &RangeInclusive<u16>, cert: Option<&Path>) -> String {
    let d = dir.display();
    let mut c = String::new();
    let _ = writeln!(c, "ServerType standalone");
    let _ = writeln!(c, "ServerName \"dropship test proftpd\"");
    let _ = writeln!(c, "DefaultServer on");
    let _ = writeln!(c, "UseIPv6 off");
    let _ = writeln!(c, "DefaultAddress 127.0.0.1");
    let _ = writeln!(c, "SocketBindTight on");
    let _ = writeln!(c, "Port {port}");
    let _ = writeln!(c, "PassivePorts {} {}", pasv.start(), pasv.end());
    let _ = writeln!(c, "User nobody");
    let _ = writeln!(c, "Group nogroup");
    // As Debian's proftpd.conf has them.
    let _ = writeln!(c, "Umask 022 022");
    let _ = writeln!(c, "AllowOverwrite on");
    let _ = writeln!(c, "PidFile {d}/proftpd.pid");
    let _ = writeln!(c, "ScoreboardFile {d}/proftpd.scoreboard");
    let _ = writeln!(c, "DelayTable {d}/proftpd.delay");
    let _ = writeln!(c, "SystemLog {d}/system.log");
    let _ = writeln!(c, "TransferLog {d}/xfer.log");
    let _ = writeln!(c, "WtmpLog off");
    let _ = writeln!(c, "AuthPAM off");
    let _ = writeln!(c, "AuthOrder mod_auth_unix.c");
    let _ = writeln!(c, "ModulePath {PROFTPD_MODULES}");
    if let Some(cert) = cert {
        let _ = writeln!(c, "LoadModule mod_tls.c");
        let _ = writeln!(c, "<IfModule mod_tls.c>");
        let _ = writeln!(c, "  TLSEngine on");
        let _ = writeln!(c, "  TLSLog {d}/tls.log");
        let _ = writeln!(c, "  TLSRequired on");
        let _ = writeln!(c, "  TLSRSACertificateFile {}", cert.display());
        let _ = writeln!(c, "  TLSRSACertificateKeyFile {}", cert.display());
        let _ = writeln!(c, "</IfModule>");
    }
    c
}

/// A self-signed certificate: `ca.pem` (the certificate, for `tls_ca`) and `server.pem`
/// (key and certificate in one file, what Pure-FTPd's `--certfile` wants; ProFTPD reads
/// both from it too).
fn generate_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ca = dir.join("ca.pem");
    let key = dir.join("key.pem");
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&ca));
    let server = dir.join("server.pem");
    let mut text = fs::read_to_string(&key).expect("key");
    text.push_str(&fs::read_to_string(&ca).expect("cert"));
    fs::write(&server, text).expect("write server.pem");
    fs::set_permissions(&server, fs::Permissions::from_mode(0o600)).expect("chmod");
    let _ = fs::remove_file(&key);
    (ca, server)
}
