//! A real `vsftpd` on a leased loopback port, plain FTP or explicit FTPS, killed on drop.
//!
//! Each instance leases its control port plus a small passive range of its own, so concurrent
//! servers never hand out the same data port.

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
use super::{LOOPBACK_2, Need, read_log, run, test_user};

pub const VSFTPD: &str = "/usr/sbin/vsftpd";
const DEFAULT_PASV_PORTS: u16 = 8;

/// Options for [`FtpServer`].
#[derive(Clone, Debug)]
pub struct FtpServerBuilder {
    tls: bool,
    pasv_address: Ipv4Addr,
    pasv_ports: u16,
    require_ssl_reuse: bool,
    config_lines: Vec<String>,
}

impl Default for FtpServerBuilder {
    fn default() -> Self {
        FtpServerBuilder {
            tls: false,
            pasv_address: Ipv4Addr::LOCALHOST,
            pasv_ports: DEFAULT_PASV_PORTS,
            require_ssl_reuse: true,
            config_lines: Vec::new(),
        }
    }
}

impl FtpServerBuilder {
    /// Explicit FTPS (`AUTH TLS`), required for logins and data, with a fresh self-signed
    /// certificate (see [`FtpServer::ca_pem`]).
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// The address vsftpd announces in its `227` PASV reply (default 127.0.0.1). vsftpd still
    /// listens for data on 127.0.0.1, so with anything else a data proxy must forward the
    /// passive range: see [`super::FtpProxies`].
    pub fn pasv_address(mut self, ip: Ipv4Addr) -> Self {
        super::assert_loopback(ip.into());
        self.pasv_address = ip;
        self
    }

    /// Size of the passive port range (default 8).
    pub fn pasv_ports(mut self, n: u16) -> Self {
        assert!((1..=64).contains(&n));
        self.pasv_ports = n;
        self
    }

    /// vsftpd's own default is on (data connections must resume the control connection's TLS
    /// session), and so it stays here: a fixture that turns a server default off hides what
    /// real fleets do. `false` writes `require_ssl_reuse=NO`, only for a test about that.
    pub fn require_ssl_reuse(mut self, on: bool) -> Self {
        self.require_ssl_reuse = on;
        self
    }

    /// A raw `vsftpd.conf` line (`key=value`, no spaces around `=`). vsftpd keeps the last value,
    /// and these go last, so they override the harness defaults.
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.config_lines.push(line.into());
        self
    }

    /// Like [`Self::start`], but applies the skip policy first (see [`super::live_test_or_skip`]).
    pub fn start_or_skip(self, test: &str) -> Option<FtpServer> {
        super::live_test_or_skip(test, &[Need::Vsftpd]).then(|| self.start())
    }

    /// Starts vsftpd and waits for its `220` banner. Panics (with the log) if it fails.
    pub fn start(self) -> FtpServer {
        let user = test_user();
        let dir = super::server_temp_dir("vsftpd");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).expect("secure_chroot_dir");
        fs::set_permissions(&empty, fs::Permissions::from_mode(0o555)).expect("chmod");
        let cert = self.tls.then(|| generate_cert(dir.path()));

        let log_path = dir.path().join("vsftpd.log");
        let stderr_path = dir.path().join("vsftpd.stderr");
        let config_path = dir.path().join("vsftpd.conf");
        // Data ports are also checked on 127.0.0.2, where a data proxy may mirror them.
        let ips = [Ipv4Addr::LOCALHOST, LOOPBACK_2];

        let mut last_failure = String::new();
        for _ in 0..5 {
            let control = ports::reserve(1, &[Ipv4Addr::LOCALHOST]);
            let pasv = ports::reserve(self.pasv_ports, &ips);
            let text = self.config_text(
                control.first(),
                &pasv.range(),
                &empty,
                &log_path,
                cert.as_ref(),
            );
            fs::write(&config_path, text).expect("write vsftpd.conf");
            fs::set_permissions(&config_path, fs::Permissions::from_mode(0o600)).expect("chmod");
            let mut cmd = Command::new(VSFTPD);
            cmd.arg(&config_path);
            let mut process = ServerProcess::spawn("vsftpd", cmd, &stderr_path, false);
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, control.first()));
            match wait_ready(&mut process, addr) {
                Ok(()) => {
                    return FtpServer {
                        process,
                        port: control.first(),
                        pasv_range: pasv.range(),
                        _control_lease: control,
                        _pasv_lease: pasv,
                        pasv_address: self.pasv_address,
                        tls: self.tls,
                        cert,
                        config_path,
                        log_path,
                        stderr_path,
                        user_home: user.home.clone(),
                        dir,
                    };
                }
                Err(e) => {
                    drop(process);
                    let err = read_log(&stderr_path);
                    last_failure = format!(
                        "{e}\n--- vsftpd stderr ---\n{err}\n--- vsftpd log ---\n{}",
                        read_log(&log_path)
                    );
                    if !err.contains("could not bind") {
                        break;
                    }
                    let _ = fs::remove_file(&stderr_path);
                }
            }
        }
        panic!("vsftpd did not start: {last_failure}");
    }

    fn config_text(
        &self,
        port: u16,
        pasv: &RangeInclusive<u16>,
        empty: &Path,
        log: &Path,
        cert: Option<&Cert>,
    ) -> String {
        let mut c = String::new();
        // No spaces around '=' and none at line ends: vsftpd parses both literally.
        let mut kv = |k: &str, v: &dyn std::fmt::Display| {
            let _ = writeln!(c, "{k}={v}");
        };
        kv("listen", &"YES");
        kv("listen_ipv6", &"NO");
        kv("listen_address", &"127.0.0.1");
        kv("listen_port", &port);
        kv("background", &"NO");
        kv("anonymous_enable", &"NO");
        kv("local_enable", &"YES");
        kv("write_enable", &"YES");
        kv("local_umask", &"022");
        kv("pam_service_name", &"vsftpd");
        kv("seccomp_sandbox", &"NO");
        kv("secure_chroot_dir", &empty.display());
        kv("connect_from_port_20", &"NO");
        kv("port_enable", &"NO");
        kv("pasv_enable", &"YES");
        kv("pasv_address", &self.pasv_address);
        kv("pasv_min_port", pasv.start());
        kv("pasv_max_port", pasv.end());
        kv("max_clients", &0);
        kv("max_per_ip", &0);
        kv("dirmessage_enable", &"NO");
        kv("use_localtime", &"NO");
        kv("ftpd_banner", &"dropship test vsftpd");
        kv("xferlog_enable", &"YES");
        kv("xferlog_std_format", &"NO");
        kv("log_ftp_protocol", &"YES");
        kv("vsftpd_log_file", &log.display());
        kv("delay_failed_login", &0);
        if let Some(cert) = cert {
            kv("ssl_enable", &"YES");
            kv("rsa_cert_file", &cert.cert.display());
            kv("rsa_private_key_file", &cert.key.display());
            kv("allow_anon_ssl", &"NO");
            kv("force_local_logins_ssl", &"YES");
            kv("force_local_data_ssl", &"YES");
            // Unset unless a test asks: vsftpd's default (YES) applies.
            if !self.require_ssl_reuse {
                kv("require_ssl_reuse", &"NO");
            }
            kv("ssl_request_cert", &"NO");
            kv("ssl_ciphers", &"HIGH");
        }
        for line in &self.config_lines {
            let _ = writeln!(c, "{line}");
        }
        c
    }
}

/// Self-signed certificate and key of an FTPS server.
#[derive(Clone, Debug)]
struct Cert {
    cert: PathBuf,
    key: PathBuf,
}

fn generate_cert(dir: &Path) -> Cert {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,IP:127.0.0.2,DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    Cert { cert, key }
}

fn wait_ready(process: &mut ServerProcess, addr: SocketAddr) -> Result<(), String> {
    wait_for_greeting(process, addr, "220", Instant::now() + START_TIMEOUT)
}

/// A running vsftpd.
pub struct FtpServer {
    // Field order matters for drop: the process dies before its files and ports go.
    process: ServerProcess,
    port: u16,
    pasv_range: RangeInclusive<u16>,
    _control_lease: PortLease,
    _pasv_lease: PortLease,
    pasv_address: Ipv4Addr,
    tls: bool,
    cert: Option<Cert>,
    config_path: PathBuf,
    log_path: PathBuf,
    stderr_path: PathBuf,
    user_home: PathBuf,
    dir: TempDir,
}

impl FtpServer {
    /// Plain FTP with the default options.
    pub fn start() -> FtpServer {
        FtpServerBuilder::default().start()
    }

    /// Explicit FTPS with the default options.
    pub fn start_tls() -> FtpServer {
        FtpServerBuilder::default().tls(true).start()
    }

    pub fn builder() -> FtpServerBuilder {
        FtpServerBuilder::default()
    }

    /// Control connection address, 127.0.0.1:port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The passive data ports (vsftpd listens on 127.0.0.1 for them).
    pub fn pasv_ports(&self) -> RangeInclusive<u16> {
        self.pasv_range.clone()
    }

    /// The address announced in PASV replies.
    pub fn pasv_address(&self) -> Ipv4Addr {
        self.pasv_address
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The server's self-signed certificate (PEM), to add as a trusted root. Panics on a
    /// plain-FTP server.
    pub fn ca_pem(&self) -> &Path {
        &self
            .cert
            .as_ref()
            .expect("ca_pem() on a plain FTP server; use FtpServer::start_tls()")
            .cert
    }

    /// A rustls client configuration that trusts this server's certificate (besides the
    /// system roots), as dropship builds it for `tls_ca`.
    pub fn tls_connector(&self) -> std::sync::Arc<rustls::ClientConfig> {
        dropship::transport::tls::client_config(true, Some(self.ca_pem()))
            .expect("build TLS client configuration")
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// vsftpd's own log (protocol and transfer log).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The protocol/transfer log plus anything vsftpd wrote to stderr (start-up errors).
    pub fn log(&self) -> String {
        format!(
            "{}{}",
            read_log(&self.log_path),
            read_log(&self.stderr_path)
        )
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Home directory of the test user, where an FTP login starts.
    pub fn user_home(&self) -> &Path {
        &self.user_home
    }
}
