//! SCP and SFTP uploads and remote commands over one SSH session per target (libssh2).
//!
//! libssh2 is blocking and serialises every channel of a session, so each target gets its
//! own session on its own thread; every wait is bounded by the session timeout or by our
//! own poll deadline.

use super::known_hosts::{self, KnownHostsFiles};
use super::lines::LineSplitter;
use super::proxy::{self, Route};
use super::{
    Connection, Files, Shell, Stream, TransportError, dir_of, pump, pump_range, sha256_command,
};
use crate::config::Source;
use crate::config::{HostKeyPolicy, Protocol};
use ssh2::{ErrorCode, OpenFlags, OpenType, Session};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

// libssh2 error codes we classify by.
const ERR_TIMEOUT: i32 = -9;
const ERR_AUTH_FAILED: i32 = -18;
const ERR_PUBKEY_UNVERIFIED: i32 = -19;
const ERR_FILE: i32 = -16;
const ERR_SOCKET_SEND: i32 = -7;
const ERR_SOCKET_DISCONNECT: i32 = -13;
const ERR_SOCKET_RECV: i32 = -43;
/// A channel request (a subsystem) refused, or the channel failed.
const ERR_CHANNEL_FAILURE: i32 = -21;
const ERR_CHANNEL_REQUEST_DENIED: i32 = -22;
/// The operation named when opening the SFTP subsystem, which `error` classifies.
const OP_START_SFTP: &str = "starting SFTP";
const FX_NO_SUCH_FILE: i32 = 2;
const FX_PERMISSION_DENIED: i32 = 3;
/// OpenSSH's sftp-server answers ENAMETOOLONG and EINVAL with this.
const FX_BAD_MESSAGE: i32 = 5;
const FX_NO_SPACE_ON_FILESYSTEM: i32 = 14;
const FX_QUOTA_EXCEEDED: i32 = 15;
/// How [`SshSession::refused`] words these two statuses, so that an upload can restate
/// them with its directory and size.
const NO_SPACE: &str = "no space left on the device";
const QUOTA: &str = "quota exceeded";

/// What the host's own error text (the remote `scp`'s, the shell's) says went wrong with
/// the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    NoSpace,
    Quota,
    Permission,
}

fn cause(text: &str) -> Option<Cause> {
    let t = text.to_ascii_lowercase();
    if t.contains("no space left on device") {
        Some(Cause::NoSpace)
    } else if t.contains("quota exceeded") {
        Some(Cause::Quota)
    } else if t.contains("permission denied") || t.contains("read-only file system") {
        Some(Cause::Permission)
    } else {
        None
    }
}

/// Bytes all streamed uploads of this process may have ahead of the commands reading them
/// on their hosts, shared out equally (but never below [`STREAM_AHEAD_MIN`] each).
///
/// Why: sshd grows a channel's buffer (what waits for the command's stdin pipe) one packet
/// at a time, each step a fresh allocation of the whole buffer, copied and the old one zeroed
/// (OpenSSH's `sshbuf` over `recallocarray`). A command that falls behind lets that buffer
/// grow toward the whole window (2 MiB): 20 hosts' `cat`s behind 20 streams made sshd spend
/// twice the CPU of the data itself on page faults and `memset` (bench/fanout.sh --profile).
/// One stream keeps the whole window, as before (its speed is what the window allows); many
/// streams share one link anyway, so a share of a window each loses them no speed and keeps
/// sshd's buffers small (20 hosts x 10 MiB over scp: sshd 2.2 -> 0.8 CPU s, the whole
/// command 2.15 -> 1.23 s, BENCHMARKS.md).
const STREAM_AHEAD_TOTAL: u32 = 2 << 20;
/// The least a stream may have ahead: sshd adjusts the window only once more than three of
/// its 32 KiB packets are outstanding.
const STREAM_AHEAD_MIN: u32 = 256 << 10;

/// How long a paced stream waits for a window adjustment before it writes anyway.
const PACE_PATIENCE: Duration = Duration::from_millis(200);

/// How many streamed uploads are under way in this process.
static STREAMING: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// How often a stream waited for its host's command to catch up (for tests).
static STREAM_WAITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How often a streamed upload of this process waited for its host's command to read what
/// it had sent ([`STREAM_AHEAD_TOTAL`]): a test's proof that its streams were paced.
#[doc(hidden)]
pub fn stream_waits() -> u64 {
    STREAM_WAITS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts one streamed upload for as long as it lives.
struct Streaming;

impl Streaming {
    fn start() -> Streaming {
        STREAMING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Streaming
    }

    /// This stream's share of [`STREAM_AHEAD_TOTAL`].
    fn share() -> u32 {
        let n = STREAMING.load(std::sync::atomic::Ordering::Relaxed).max(1);
        (STREAM_AHEAD_TOTAL / n).max(STREAM_AHEAD_MIN)
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        STREAMING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Writes to a command's stdin at most [`Streaming::share`] bytes ahead of what the command
/// has read (sshd's window adjustments say what it has), waiting for the window meanwhile.
/// What the command prints while it is waited for is kept in `early`.
struct Paced<'a> {
    ch: &'a mut ssh2::Channel,
    /// The server's window when the channel opened: what is not back of it is ahead.
    window: u32,
    sess: &'a Session,
    fd: RawFd,
    early: Vec<u8>,
    /// Set once an adjustment failed to come in [`PACE_PATIENCE`] and none ever came before
    /// half the window was out: this server adjusts late (Dropbear with a large `-W`), so
    /// this stream is no longer held back.
    unpaced: bool,
    /// Whether the server has adjusted the window before half of it was out (OpenSSH does
    /// after three packets): then a late adjustment means a slow command, not a late server.
    adjusts_early: bool,
    /// The window left after our last look, to see adjustments arrive.
    last_remaining: u32,
    _streaming: Streaming,
}

impl std::io::Write for Paced<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::io::Read;
        let since = Instant::now();
        loop {
            let remaining = self.ch.write_window().remaining;
            if remaining > self.last_remaining
                && self.window.saturating_sub(self.last_remaining) < self.window / 2
            {
                self.adjusts_early = true;
            }
            self.last_remaining = remaining;
            let ahead = self.window.saturating_sub(remaining);
            let limit = Streaming::share().min(self.window);
            let free = limit == self.window || self.unpaced;
            if free || ahead < limit {
                // A lone stream (or one no longer paced): libssh2 waits for the window.
                let room = if free {
                    buf.len()
                } else {
                    (limit - ahead) as usize
                };
                let n = self.ch.write(&buf[..buf.len().min(room)])?;
                self.last_remaining = self.ch.write_window().remaining;
                return Ok(n);
            }
            STREAM_WAITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Let libssh2 read what arrived (a window adjustment, output) without blocking.
            self.sess.set_blocking(false);
            let mut tmp = [0u8; 4096];
            let read = self.ch.read(&mut tmp);
            self.sess.set_blocking(true);
            match read {
                Ok(0) => return self.ch.write(buf),
                Ok(n) => self.early.extend_from_slice(&tmp[..n]),
                // That read may have taken in the adjustment: look again before sleeping.
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && self.ch.write_window().remaining > remaining => {}
                // No adjustment for a while: a server that adjusts only once half its window
                // is used (not OpenSSH, which does after three packets) would never send one
                // while we hold back. Write as far as the window allows (libssh2 then waits
                // for it, under the session's timeout, as for an unpaced stream); and unless
                // this server has adjusted early before, stop holding this stream back.
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && since.elapsed() >= PACE_PATIENCE =>
                {
                    self.unpaced = !self.adjusts_early;
                    let n = self.ch.write(buf)?;
                    self.last_remaining = self.ch.write_window().remaining;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let left = PACE_PATIENCE.saturating_sub(since.elapsed());
                    let mut pfd = libc::pollfd {
                        fd: self.fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, for the duration of the call.
                    unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Nothing to do: the channel's own `flush` would throw away received output.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads and writes of the bundle go through buffers this big: libssh2 splits a large
/// SFTP write into pipelined packets, so big writes keep the link full.
const CHUNK: usize = 1 << 20;
/// Receive window of a command's channel. libssh2 reads every packet the server may send
/// into its own queue before handing out the first, so the window is how much output one
/// host can hold in memory while the front end is busy: libssh2's default of 2 MiB let 100
/// hosts streaming into the console hold 27 MiB (heaptrack, bench/tui.sh); 64 KiB holds
/// 6 MiB and still lets one host stream as fast as before (bench/lines.sh).
const EXEC_WINDOW: u32 = 64 * 1024;
/// libssh2's default maximum packet size.
const EXEC_PACKET: u32 = 32 * 1024;

/// Ciphers for what we send, fastest first. With the vendored libssh2 patch (whole-packet
/// encryption, see vendor/README.md) AES-GCM runs at AES-NI speed and beats OpenSSH's
/// own default; the rest are fallbacks for servers that refuse it.
const UPLOAD_CIPHERS: &[&str] = &[
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
];
/// Ciphers for what we receive (command output): libssh2 still decrypts 16 bytes per
/// call, where its own chacha20 code is faster than AES-GCM.
const DOWNLOAD_CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
];

/// Sets a preference among the algorithms this libssh2 knows; libssh2 rejects names it
/// does not, so unknown ones are left out, and the default stays when none is known.
fn prefer(sess: &Session, kind: ssh2::MethodType, order: &[&str]) {
    if let Ok(known) = sess.supported_algs(kind) {
        let prefs: Vec<&str> = order
            .iter()
            .copied()
            .filter(|a| known.contains(a))
            .collect();
        if !prefs.is_empty() {
            let _ = sess.method_pref(kind, &prefs.join(","));
        }
    }
}

/// How to reach one target over SSH.
#[derive(Debug, Clone)]
pub struct SshParams {
    /// The host as the rule names it (labels, messages).
    pub host: String,
    /// Where to connect (`HostName` from ~/.ssh/config, else `host`).
    pub address: String,
    pub port: u16,
    pub login: String,
    pub password: Option<(crate::config::Secret, Source)>,
    pub keys: Vec<std::path::PathBuf>,
    pub key_passphrase: Option<crate::config::Secret>,
    /// OpenSSH user certificates (`CertificateFile`), each offered with the key whose public
    /// key it certifies. `KEY-cert.pub` beside a key is offered without being listed.
    pub certificates: Vec<std::path::PathBuf>,
    /// Offer only agent identities that belong to `keys` (`IdentitiesOnly yes`).
    pub identities_only: bool,
    /// The ssh-agent socket; `None`: `$SSH_AUTH_SOCK`.
    pub agent: Option<std::path::PathBuf>,
    pub timeout: Duration,
    pub host_key: HostKeyPolicy,
    pub known_hosts: KnownHostsFiles,
    /// More known_hosts files to read (ssh_config's, read-only).
    pub known_hosts_also: Vec<std::path::PathBuf>,
    /// The name looked up in known_hosts: `HostKeyAlias`, else `address`.
    pub host_key_name: String,
    /// TCP connect timeout: ssh_config's `ConnectTimeout` unless the rule sets `timeout`.
    pub connect_timeout: Duration,
    /// Offer the agent's keys (not with `IdentitiesOnly yes` or `IdentityAgent none`).
    pub use_agent: bool,
    pub address_family: crate::config::ssh_config::AddressFamily,
    /// Why the ssh configuration forbids this connection (`BindAddress`, ...): never dialed.
    pub refusal: Option<String>,
    /// Directly, through jump hosts, or through a `ProxyCommand`.
    pub route: Route,
    /// `ServerAliveInterval` (and `ServerAliveCountMax`): keepalives while the link idles.
    pub keepalive: Option<(Duration, u32)>,
}

impl SshParams {
    /// What `~/.ssh/config` adds (see [`crate::config::ssh_config`]); the rule's explicit
    /// `host_key` and `timeout` win.
    pub fn with_ssh_config(
        mut self,
        h: &crate::config::SshHost,
        rule: &crate::config::Rule,
    ) -> SshParams {
        if let Some(alias) = &h.host_key_alias {
            self.host_key_name = alias.clone();
        }
        if let Some(files) = &h.user_known_hosts {
            self.known_hosts.user = files.first().cloned();
            self.known_hosts_also = files.iter().skip(1).cloned().collect();
        }
        if let Some(files) = &h.global_known_hosts {
            self.known_hosts_also.extend(files.iter().cloned());
        }
        if !rule.host_key_explicit
            && let Some(s) = &h.strict_host_key_checking
        {
            // dropship never prompts and never accepts a changed key: `ask` is strict,
            // `no`/`off` accepts (and records) only new keys.
            self.host_key = match s.as_str() {
                "accept-new" | "no" | "off" => HostKeyPolicy::AcceptNew,
                _ => HostKeyPolicy::Strict,
            };
        }
        if !rule.timeout_explicit
            && let Some(t) = h.connect_timeout
        {
            self.connect_timeout = t;
        }
        // IdentitiesOnly: the agent may still sign, but only for the keys named (as ssh).
        self.identities_only = h.identities_only;
        self.use_agent = !h.no_agent;
        self.agent = h.identity_agent.clone();
        self.certificates = h.certificate_files.clone();
        self.address_family = h.address_family;
        self.keepalive = h
            .server_alive_interval
            .filter(|t| !t.is_zero())
            .map(|t| (t, h.server_alive_count_max.unwrap_or(3)));
        self
    }
}

/// The handshake failed while asking only for the host key types recorded for the host:
/// if the server presents another type (a reinstalled host, or `HostKeyAlgorithms` on
/// either side), says so, with the type, instead of "unable to exchange encryption keys".
/// `None` when a second, unrestricted handshake shows nothing of the kind.
fn host_key_type_mismatch(p: &SshParams, recorded: &[&str]) -> Option<TransportError> {
    let (stream, _link) = dial(p).ok()?;
    let mut sess = Session::new().ok()?;
    sess.set_tcp_stream(stream);
    sess.set_timeout(p.timeout.as_millis().min(u32::MAX as u128) as u32);
    sess.handshake().ok()?;
    let (_, kind) = sess.host_key()?;
    let presented = sess
        .methods(ssh2::MethodType::HostKey)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{kind:?}"));
    if recorded.contains(&presented.as_str()) {
        return None;
    }
    let keyscan_type = if presented.contains("ed25519") {
        "ed25519"
    } else if presented.starts_with("ecdsa") {
        "ecdsa"
    } else {
        "rsa"
    };
    Some(TransportError::Ssh {
        host: p.host.clone(),
        detail: format!(
            "host key type mismatch: known_hosts records only {} for {}, but the server offers {presented}",
            recorded.join(", "),
            known_hosts::entry_name(&p.address, p.port)
        ),
        help: format!(
            "ask the host's owner whether its host keys changed; if so, check the new key's fingerprint and record it (`ssh-keyscan -p {} -t {keyscan_type} {}`)",
            p.port, p.address
        ),
    })
}

/// An SSH connect that records nothing, for looking at a host without changing anything
/// (the probe, the console's rollback preview before the user said yes). Under `accept-new`
/// the session checks against a private copy of dropship's known_hosts, removed afterwards:
/// an unknown key is accepted for this look only and reported (`true`), never recorded, so
/// the first real dispatch still records it and says so. Under `strict` nothing is written
/// anyway and the files are used as they are.
pub fn connect_unrecorded(
    params: &SshParams,
    policy: HostKeyPolicy,
) -> (Result<SshSession, TransportError>, bool) {
    if policy != HostKeyPolicy::AcceptNew {
        return (SshSession::connect(params), false);
    }
    let copy = std::env::temp_dir().join(format!(
        "dropship-known_hosts-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let before = std::fs::read(&params.known_hosts.dropship).unwrap_or_default();
    // A fresh file (never one planted in the shared temp dir under that name).
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&copy)
        .and_then(|mut f| f.write_all(&before));
    if let Err(e) = written {
        return (
            Err(TransportError::Setup {
                host: params.host.clone(),
                detail: format!("cannot copy known_hosts to {}: {e}", copy.display()),
            }),
            false,
        );
    }
    let params_file = params.known_hosts.dropship.clone();
    let mut params = params.clone();
    params.known_hosts.dropship = copy.clone();
    let r = SshSession::connect(&params);
    let grew = std::fs::metadata(&copy).is_ok_and(|m| m.len() > before.len() as u64);
    let _ = std::fs::remove_file(&copy);
    // The copy is gone: an error names the file it stands for (where `ssh-keygen -R` helps).
    let (copy, real) = (
        copy.display().to_string(),
        params_file.display().to_string(),
    );
    let r = r.map_err(|e| match e {
        TransportError::HostKeyChanged {
            host,
            port,
            key_type,
            fingerprint,
            known_hosts,
        } => TransportError::HostKeyChanged {
            host,
            port,
            key_type,
            fingerprint,
            known_hosts: known_hosts.replace(&copy, &real),
        },
        TransportError::Setup { host, detail } => TransportError::Setup {
            host,
            detail: detail.replace(&copy, &real),
        },
        other => other,
    });
    (r, grew)
}

/// The byte stream of an SSH session: a TCP connection, or a socketpair to the process
/// that carries it through a bastion.
enum Wire {
    Tcp(TcpStream),
    Proxied(std::os::unix::net::UnixStream),
}

impl AsRawFd for Wire {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Wire::Tcp(s) => s.as_raw_fd(),
            Wire::Proxied(s) => s.as_raw_fd(),
        }
    }
}

/// Opens the byte stream to `p`'s host along its route.
fn dial(p: &SshParams) -> Result<(Wire, Option<proxy::Link>), TransportError> {
    let addr_text = format!("{}:{}", p.address, p.port);
    let connect_err = |detail: String| TransportError::Connect {
        host: p.host.clone(),
        addr: addr_text.clone(),
        detail,
    };
    if p.route != Route::Direct {
        let (s, link) =
            proxy::open(&p.route, &p.address, p.port, p.connect_timeout).map_err(|e| {
                TransportError::Connect {
                    host: p.host.clone(),
                    addr: format!("{addr_text} {}", p.route.describe()),
                    detail: e,
                }
            })?;
        return Ok((Wire::Proxied(s), Some(link)));
    }
    let addrs: Vec<_> = (p.address.as_str(), p.port)
        .to_socket_addrs()
        .map_err(|e| connect_err(format!("cannot resolve: {e}")))?
        .filter(|a| {
            use crate::config::ssh_config::AddressFamily;
            match p.address_family {
                AddressFamily::Any => true,
                AddressFamily::Inet => a.is_ipv4(),
                AddressFamily::Inet6 => a.is_ipv6(),
            }
        })
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, p.connect_timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok((Wire::Tcp(s), None));
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(connect_err(last))
}

/// What a private key file says about itself before libssh2 tries it.
#[derive(Debug, PartialEq)]
pub enum KeyFileInfo {
    /// OpenSSH format: algorithm and whether it is encrypted; its public key blob.
    OpenSsh {
        algorithm: String,
        encrypted: bool,
        public: Vec<u8>,
    },
    /// PEM (PKCS#1/PKCS#8/SEC1): whether its header says it is encrypted.
    Pem { encrypted: bool },
    /// Anything else: left to libssh2.
    Unknown,
}

/// Reads the header (and, for OpenSSH keys, the unencrypted public part) of `path`.
pub fn inspect_key_file(path: &Path) -> KeyFileInfo {
    let Ok(text) = std::fs::read_to_string(path) else {
        return KeyFileInfo::Unknown;
    };
    let text = text.trim_start();
    if text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return match ssh_key::PrivateKey::from_openssh(text) {
            Ok(k) => KeyFileInfo::OpenSsh {
                algorithm: k.algorithm().to_string(),
                encrypted: k.is_encrypted(),
                public: k.public_key().to_bytes().unwrap_or_default(),
            },
            Err(_) => KeyFileInfo::Unknown,
        };
    }
    if text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return KeyFileInfo::Pem { encrypted: true };
    }
    if text.starts_with("-----BEGIN ") {
        let header: String = text.lines().take(3).collect::<Vec<_>>().join("\n");
        return KeyFileInfo::Pem {
            encrypted: header.contains("Proc-Type: 4,ENCRYPTED"),
        };
    }
    KeyFileInfo::Unknown
}

/// Key algorithms libssh2 signs with from a key file: not FIDO (`sk-`) keys, which need a
/// security-key callback.
fn libssh2_can_use(algorithm: &str) -> bool {
    matches!(
        algorithm,
        "ssh-ed25519"
            | "ssh-rsa"
            | "ssh-dss"
            | "ecdsa-sha2-nistp256"
            | "ecdsa-sha2-nistp384"
            | "ecdsa-sha2-nistp521"
    )
}

/// `KEY-cert.pub`, where OpenSSH looks for a key's certificate.
pub fn certificate_beside(key: &Path) -> std::path::PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push("-cert.pub");
    s.into()
}

/// The public key blob inside an OpenSSH certificate file (`TYPE-cert-v01@openssh.com BASE64`).
fn certified_key(cert: &Path) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(cert).ok()?;
    super::cert::Cert::parse_openssh(&text).ok().map(|c| c.key)
}

/// The public key blob of a key file, from the key (OpenSSH format) or `KEY.pub`.
fn public_blob(key: &Path, info: &KeyFileInfo) -> Option<Vec<u8>> {
    if let KeyFileInfo::OpenSsh { public, .. } = info
        && !public.is_empty()
    {
        return Some(public.clone());
    }
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    let text = std::fs::read_to_string(std::path::PathBuf::from(s)).ok()?;
    ssh_key::PublicKey::from_openssh(text.trim())
        .ok()?
        .to_bytes()
        .ok()
}

/// The blob of the key an agent identity (a key or a certificate) signs with.
fn identity_key(blob: &[u8]) -> Vec<u8> {
    match super::cert::Cert::parse(blob) {
        Ok(c) => c.key,
        Err(_) => blob.to_vec(),
    }
}

/// An authenticated session to one host.
#[derive(Clone)]
pub struct SshSession {
    sess: Session,
    fd: RawFd,
    host: String,
    login: String,
    timeout: Duration,
    /// How this session was made, to open a second one for a large upload.
    params: std::sync::Arc<SshParams>,
    /// Channels of background commands (the lock's heartbeat), kept open until stopped:
    /// closing one makes its watcher kill the command on the host.
    background: std::sync::Arc<std::sync::Mutex<Vec<ssh2::Channel>>>,
    /// The process carrying the bytes through a bastion or `ProxyCommand`, if any; it
    /// lives as long as the session.
    link: Option<std::sync::Arc<proxy::Link>>,
}

impl SshSession {
    /// Connects, verifies the host key, and logs in.
    pub fn connect(p: &SshParams) -> Result<SshSession, TransportError> {
        if let Some(why) = &p.refusal {
            return Err(TransportError::Setup {
                host: p.host.clone(),
                detail: format!("refused by the ssh configuration: {why}"),
            });
        }
        let (stream, link) = dial(p)?;
        let fd = stream.as_raw_fd();
        let link = link.map(std::sync::Arc::new);
        let mut sess = Session::new().map_err(|e| TransportError::Connect {
            host: p.host.clone(),
            addr: format!("{}:{}", p.address, p.port),
            detail: e.to_string(),
        })?;
        sess.set_tcp_stream(stream);
        sess.set_timeout(p.timeout.as_millis().min(u32::MAX as u128) as u32);
        sess.set_compress(false);

        // Ask for the key types on record for this host (see recorded_algorithms); for a
        // new host, the type most hosts have.
        // Certificate types first when a CA is trusted for the host.
        // Narrowed to the lines for the names looked up below (the key's, the address's).
        let known = known_hosts::load_with(
            &sess,
            &p.known_hosts,
            &p.known_hosts_also,
            &[&p.host_key_name, &p.address],
            p.port,
        );
        let order = known_hosts::host_key_order(&known, &p.host_key_name, p.port);
        prefer(&sess, ssh2::MethodType::HostKey, &order);
        prefer(&sess, ssh2::MethodType::CryptCs, UPLOAD_CIPHERS);
        prefer(&sess, ssh2::MethodType::CryptSc, DOWNLOAD_CIPHERS);
        let me = SshSession {
            sess,
            fd,
            host: p.host.clone(),
            login: p.login.clone(),
            timeout: p.timeout,
            params: std::sync::Arc::new(p.clone()),
            background: Default::default(),
            link,
        };
        if let Err(e) = me.sess.clone().handshake() {
            // Through a bastion, what the carrier said is the reason (no route from the
            // bastion, the bastion refused us, ...).
            if let Some(why) = me.link.as_ref().and_then(|l| l.failure()) {
                return Err(TransportError::Connect {
                    host: p.host.clone(),
                    addr: format!("{}:{} {}", p.address, p.port, p.route.describe()),
                    detail: why,
                });
            }
            return Err(
                match known_hosts::narrowed(&known, &p.host_key_name, p.port) {
                    Some(recorded) if !matches!(e.code(), ErrorCode::Session(ERR_TIMEOUT)) => {
                        host_key_type_mismatch(p, &recorded)
                            .unwrap_or_else(|| me.error("SSH handshake", e))
                    }
                    _ => me.error("SSH handshake", e),
                },
            );
        }
        known_hosts::verify(
            &me.sess,
            &known,
            &p.host_key_name,
            p.port,
            p.host_key,
            &p.known_hosts,
        )?;
        me.authenticate(p)?;
        if let Some((every, _)) = p.keepalive {
            // libssh2 sends a keepalive only when asked (`keepalive_send`, in `run`); the
            // reply it asks for is what tells a quiet server from a gone one.
            me.sess
                .set_keepalive(true, every.as_secs().clamp(1, u32::MAX as u64) as u32);
        }
        Ok(me)
    }

    /// Tries, in order: each key file (its certificates first), the agent's identities,
    /// the password. A key that cannot be used (encrypted without `key_passphrase`, of a
    /// type libssh2 lacks) is skipped and named if nothing else logs in; a server that hangs
    /// up after too many failed keys is reported as such.
    fn authenticate(&self, p: &SshParams) -> Result<(), TransportError> {
        let mut tried = Vec::new();
        let mut last_err = None;
        // Why a key was not usable: reported when nothing logs in.
        let mut unusable: Vec<(String, String)> = Vec::new();
        let mut attempts = 0usize;
        let mut agent_offered = 0usize;
        let passphrase = p.key_passphrase.as_ref().map(|s| s.expose());
        let mut key_blobs = Vec::new();
        // sshd disconnects after `MaxAuthTries` failures; libssh2 reports the disconnect
        // message as an unverified key ("Waiting for USERAUTH response"), and the end of
        // the stream follows it by a moment, so the socket is asked then.
        let hung_up = |e: &ssh2::Error| match e.code() {
            ErrorCode::Session(c)
                if [ERR_SOCKET_DISCONNECT, ERR_SOCKET_RECV, ERR_SOCKET_SEND].contains(&c) =>
            {
                true
            }
            ErrorCode::Session(ERR_PUBKEY_UNVERIFIED) => self.peer_closed(300),
            _ => false,
        };
        macro_rules! attempt {
            ($what:expr, $call:expr) => {{
                tried.push($what);
                attempts += 1;
                match $call {
                    Ok(()) if self.sess.authenticated() => return Ok(()),
                    Ok(()) => None,
                    Err(e) => {
                        let out = hung_up(&e);
                        let code = e.code();
                        last_err = Some(e);
                        if out {
                            return Err(self.too_many_failures(p, attempts, agent_offered));
                        }
                        Some(code)
                    }
                }
            }};
        }
        for key in p.keys.iter().filter(|k| k.is_file()) {
            let info = inspect_key_file(key);
            let shown = key.display().to_string();
            // Known before any check: under IdentitiesOnly the agent may hold this key
            // unlocked even when its file cannot be used.
            let public = public_blob(key, &info);
            if let Some(b) = &public {
                key_blobs.push(b.clone());
            }
            if let KeyFileInfo::OpenSsh { algorithm, .. } = &info
                && !libssh2_can_use(algorithm)
            {
                unusable.push((
                    shown.clone(),
                    format!("the key {shown} is of type {algorithm}, which dropship's SSH library (libssh2) cannot sign with"),
                ));
                continue;
            }
            let encrypted = matches!(
                info,
                KeyFileInfo::OpenSsh {
                    encrypted: true,
                    ..
                } | KeyFileInfo::Pem { encrypted: true }
            );
            if encrypted && passphrase.is_none() {
                unusable.push((
                    shown.clone(),
                    format!("the key {shown} is encrypted: set `key_passphrase`"),
                ));
                continue;
            }
            let mut certs = Vec::new();
            let beside = certificate_beside(key);
            if beside.is_file() {
                certs.push(beside);
            }
            for c in &p.certificates {
                if !certs.contains(c)
                    && c.is_file()
                    && (public.is_none() || certified_key(c) == public)
                {
                    certs.push(c.clone());
                }
            }
            for cert in &certs {
                attempt!(
                    format!("certificate {}", cert.display()),
                    self.sess
                        .userauth_pubkey_file(&p.login, Some(cert), key, passphrase)
                );
            }
            let code = attempt!(
                format!("key {shown}"),
                self.sess
                    .userauth_pubkey_file(&p.login, None, key, passphrase)
            );
            if encrypted && code == Some(ErrorCode::Session(ERR_FILE)) {
                unusable.push((
                    shown.clone(),
                    format!("the key {shown} could not be decrypted with `key_passphrase` (wrong passphrase?)"),
                ));
            }
        }
        let agent_sock = p
            .agent
            .clone()
            .or_else(|| std::env::var_os("SSH_AUTH_SOCK").map(Into::into));
        if p.use_agent
            && let Some(sock) = agent_sock
            && let Ok(mut agent) = self.sess.agent()
        {
            let listed = agent
                .set_identity_path(&sock)
                .and_then(|()| agent.connect())
                .and_then(|()| agent.list_identities())
                .and_then(|()| agent.identities());
            match listed {
                Ok(ids) => {
                    tried.push(format!("ssh-agent ({} keys)", ids.len()));
                    for id in ids {
                        if p.identities_only && !key_blobs.contains(&identity_key(id.blob())) {
                            continue;
                        }
                        agent_offered += 1;
                        attempts += 1;
                        match agent.userauth(&p.login, &id) {
                            Ok(()) if self.sess.authenticated() => {
                                let _ = agent.disconnect();
                                return Ok(());
                            }
                            Ok(()) => {}
                            Err(e) => {
                                if hung_up(&e) {
                                    return Err(self.too_many_failures(p, attempts, agent_offered));
                                }
                                last_err = Some(e);
                            }
                        }
                    }
                    let _ = agent.disconnect();
                }
                Err(e) => tried.push(format!(
                    "ssh-agent at {} (unreachable: {e})",
                    sock.display()
                )),
            }
        }
        if let Some((password, source)) = &p.password {
            attempt!(
                format!("password from {}", source.as_str()),
                self.sess.userauth_password(&p.login, password.expose())
            );
        }
        // A dropped connection during login is a network problem, not a wrong password.
        if let Some(e) = &last_err
            && let ErrorCode::Session(code) = e.code()
            && ![ERR_AUTH_FAILED, ERR_PUBKEY_UNVERIFIED, ERR_FILE].contains(&code)
        {
            return Err(self.error("login", last_err.unwrap()));
        }
        if let Some((_, why)) = unusable.first() {
            return Err(TransportError::Ssh {
                host: self.host.clone(),
                detail: if unusable.len() == 1 {
                    format!("login as `{}` refused: {why}", p.login)
                } else {
                    format!(
                        "login as `{}` refused: {}",
                        p.login,
                        unusable
                            .iter()
                            .map(|(_, w)| w.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                },
                help: if why.contains("key_passphrase") {
                    "set `key_passphrase = netrc` in the rule and the passphrase as the password of the host's netrc entry, or use a key without passphrase (or ssh-agent)".to_owned()
                } else {
                    "use an ed25519, ecdsa or rsa key (`key =` in the rule), or ssh-agent"
                        .to_owned()
                },
            });
        }
        Err(TransportError::Auth {
            host: self.host.clone(),
            login: p.login.clone(),
            tried: if tried.is_empty() {
                "nothing: no password, no key file, no ssh-agent".to_owned()
            } else {
                tried.join(", ")
            },
            hint: "the rule (login/password/key), ~/.netrc, ~/.ssh/config or your ssh-agent"
                .to_owned(),
        })
    }

    /// Whether the server closes the connection within `ms` (end of stream on the socket).
    fn peer_closed(&self, ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the session's own socket.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            return false;
        }
        let mut b = [0u8; 1];
        // SAFETY: a one-byte peek into a local buffer on the session's own socket.
        let n = unsafe {
            libc::recv(
                self.fd,
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n == 0
    }

    /// The server hung up during login after `attempts` tries: what OpenSSH's sshd does after
    /// `MaxAuthTries` (6 by default) failures, typically an agent holding many keys.
    fn too_many_failures(&self, p: &SshParams, attempts: usize, agent: usize) -> TransportError {
        let detail = if agent > 0 {
            format!(
                "too many authentication failures: the server closed the connection after {attempts} attempts as `{}`; the agent offered {agent} keys",
                p.login
            )
        } else {
            format!(
                "too many authentication failures: the server closed the connection after {attempts} attempts as `{}`",
                p.login
            )
        };
        TransportError::Ssh {
            host: self.host.clone(),
            detail,
            help: "name the key to use (`key =` in the rule, or `IdentityFile` with `IdentitiesOnly yes` in ~/.ssh/config), or raise the server's `MaxAuthTries`".to_owned(),
        }
    }

    /// Maps a libssh2 error during `op` to a classified error.
    fn error(&self, op: &str, e: ssh2::Error) -> TransportError {
        match e.code() {
            ErrorCode::Session(ERR_TIMEOUT) => self.stalled(op),
            ErrorCode::Session(ERR_CHANNEL_FAILURE | ERR_CHANNEL_REQUEST_DENIED)
                if op == OP_START_SFTP =>
            {
                TransportError::Ssh {
                    host: self.host.clone(),
                    detail: format!("the server offers no SFTP ({e})"),
                    help: "use `protocol = scp`, or enable the server's `Subsystem sftp`"
                        .to_owned(),
                }
            }
            ErrorCode::SFTP(FX_PERMISSION_DENIED) => self.permission(op, "", e.to_string()),
            ErrorCode::SFTP(
                code @ (FX_BAD_MESSAGE | FX_NO_SPACE_ON_FILESYSTEM | FX_QUOTA_EXCEEDED),
            ) => self.refused(op, code, e.to_string()),
            _ => TransportError::Io {
                host: self.host.clone(),
                op: op.to_owned(),
                detail: e.to_string(),
            },
        }
    }

    /// The link stalled for a whole `timeout`: the session is given up at once. Shutting
    /// the socket down makes every later libssh2 call on it (closing the file, the SFTP
    /// channel, the session) fail immediately instead of waiting out its own timeout, so a
    /// stall is reported after `timeout`, not after a multiple of it.
    fn stalled(&self, during: &str) -> TransportError {
        // SAFETY: shutdown(2) on the session's own socket; it stays open until the
        // session drops it, so the descriptor cannot have been reused.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
        TransportError::Timeout {
            host: self.host.clone(),
            during: during.to_owned(),
            secs: self.timeout.as_secs(),
        }
    }

    /// An SFTP status no retry can change.
    fn refused(&self, op: &str, code: i32, detail: String) -> TransportError {
        let (detail, help) = match code {
            FX_NO_SPACE_ON_FILESYSTEM => (
                format!("{NO_SPACE} ({detail})"),
                "free space on the host or change `dest_dir`",
            ),
            FX_QUOTA_EXCEEDED => (
                format!("{QUOTA} ({detail})"),
                "raise the login's quota or change `dest_dir`",
            ),
            _ => (
                format!("the server cannot store this name ({detail}; name too long or invalid)"),
                "use a shorter bundle name or `dest_dir`",
            ),
        };
        TransportError::Refused {
            host: self.host.clone(),
            what: op.to_owned(),
            detail,
            help: help.to_owned(),
        }
    }

    fn permission(&self, op: &str, path: &str, detail: String) -> TransportError {
        TransportError::Permission {
            host: self.host.clone(),
            login: self.login.clone(),
            dir: match path {
                "" => "the host".to_owned(),
                _ => dir_of(path).to_owned(),
            },
            what: format!("{op} `{path}`"),
            detail,
        }
    }

    /// Waits until the socket is readable or `ms` pass; whether the server sent anything.
    fn wait_readable(&self, ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the session's own socket.
        unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
    }

    /// Runs `command`, streaming its output: each call of `on_lines` gets the lines one
    /// read completed, joined by `\n` ([`super::lines::Batch`]). At `deadline` the channel
    /// is closed (the remote wrapper of user commands then kills them). Without
    /// `keep_stdin`, stdin is closed at once.
    fn run(
        &self,
        command: &str,
        deadline: Instant,
        keep_stdin: bool,
        stop: &dyn Fn() -> bool,
        on_lines: &mut dyn FnMut(Stream, &str),
    ) -> Result<i32, TransportError> {
        let op = "running a command";
        let started = Instant::now();
        let mut ch = self.open_sh(op, command)?;
        if !keep_stdin {
            ch.send_eof().map_err(|e| self.error(op, e))?;
        }
        // Only what `sh` prints after the marker is the script's; what came before (a
        // chatty rc file of the login shell) and what the login shell said when it could
        // not start `sh` are kept for the error.
        let mut marked = false;
        let mut before: Vec<String> = Vec::new();
        let mut gate = |stream: Stream, text: &str| {
            if marked {
                return on_lines(stream, text);
            }
            let mut rest = Some(text);
            while let Some(t) = rest {
                let (line, after) = match t.split_once('\n') {
                    Some((line, after)) => (line, Some(after)),
                    None => (t, None),
                };
                rest = after;
                if stream == Stream::Stdout && line == SH_MARKER {
                    marked = true;
                    if let Some(after) = after {
                        on_lines(stream, after);
                    }
                    return;
                } else if before.len() < 4 && !line.trim().is_empty() {
                    before.push(line.chars().take(200).collect());
                }
            }
        };
        let on_line: &mut dyn FnMut(Stream, &str) = &mut gate;
        let mut err_stream = ch.stderr();
        // One splitter per stream: at most `lines::MAX_LINE` bytes each, whatever the
        // command prints (see `super::lines`).
        let mut bufs = [LineSplitter::new(), LineSplitter::new()];
        let mut done = [false, false];
        // libssh2 hands out at most one packet (32 KiB) per read: a bigger buffer is only
        // memory, times the number of hosts running commands at once.
        let mut chunk = vec![0u8; 32 * 1024];
        let mut failure = None;
        // `ServerAliveInterval`: while the command is quiet, a keepalive is sent every
        // interval (keeping NAT and firewall state), and a server that sends nothing at all
        // (not even the keepalive replies) for `CountMax` more intervals is gone.
        let mut heard = Instant::now();
        self.sess.set_blocking(false);
        let result = loop {
            let mut progressed = false;
            for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
                if done[i] {
                    continue;
                }
                let r = if i == 0 {
                    ch.read(&mut chunk)
                } else {
                    err_stream.read(&mut chunk)
                };
                match r {
                    Ok(0) => done[i] = true,
                    Ok(n) => {
                        progressed = true;
                        bufs[i].feed_lines(&chunk[..n], &mut |l| on_line(stream, l));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => failure = Some(self.io_err("reading output of", command, e)),
                }
            }
            if let Some(e) = failure.take() {
                break Err(e);
            }
            if done[0] && done[1] {
                break Ok(());
            }
            // Checked on every round, also while output pours in: a command that never
            // stops printing must still hit its timeout and obey a cancel.
            if stop() {
                let _ = ch.close();
                break Err(TransportError::Cancelled {
                    host: self.host.clone(),
                });
            }
            if Instant::now() >= deadline {
                let _ = ch.close();
                break Err(TransportError::CommandTimeout {
                    host: self.host.clone(),
                    command: command.to_owned(),
                    secs: (deadline - started).as_secs(),
                    knob: "timeout",
                });
            }
            if let Some((every, count)) = self.params.keepalive {
                let _ = self.sess.keepalive_send();
                if heard.elapsed() > every * (count + 1) {
                    break Err(TransportError::Timeout {
                        host: self.host.clone(),
                        during: format!(
                            "a command (no answer to {count} keepalives, ServerAliveInterval {}s)",
                            every.as_secs()
                        ),
                        secs: (every * (count + 1)).as_secs(),
                    });
                }
            }
            if progressed || self.wait_readable(100) {
                heard = Instant::now();
            }
        };
        self.sess.set_blocking(true);
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            bufs[i].finish_lines(&mut |l| on_line(stream, l));
        }
        result?;
        ch.wait_close().map_err(|e| self.error(op, e))?;
        let status = ch.exit_status().map_err(|e| self.error(op, e))?;
        if !marked {
            return Err(self.no_sh(status, &before));
        }
        Ok(status)
    }

    /// Opens a channel that runs [`REMOTE_SH`] and writes `script` (wrapped by
    /// [`posix_script`]) to its stdin. Every command of ours goes through here.
    fn open_sh(&self, op: &str, script: &str) -> Result<ssh2::Channel, TransportError> {
        use std::io::Write;
        let mut ch = self
            .sess
            .channel_open("session", EXEC_WINDOW, EXEC_PACKET, None)
            .map_err(|e| self.error(op, e))?;
        ch.exec(REMOTE_SH).map_err(|e| self.error(op, e))?;
        // No `flush()` after a write to a channel, here or anywhere: libssh2's "flush" of a
        // channel throws away the output already received (`libssh2_channel_flush_ex`), and
        // a command that answers fast (nologin's message, `sh`'s marker) lost its answer.
        // `write_all` has sent everything when it returns.
        ch.write_all(posix_script(script).as_bytes())
            .map_err(|e| self.io_err(op, "the script on stdin", e))?;
        Ok(ch)
    }

    /// The channel ended without `sh`'s marker: the login shell did not run `sh -s`.
    fn no_sh(&self, status: i32, said: &[String]) -> TransportError {
        TransportError::Setup {
            host: self.host.clone(),
            detail: format!(
                "the host's shell did not run dropship's script (exit status {status}{}); is the login shell of `{}` one that can start `sh` (not nologin, not a menu)?\n  help: dropship runs `{REMOTE_SH}` through the login shell and writes its scripts to it; check `ssh {}@HOST {REMOTE_SH:?} </dev/null` by hand",
                if said.is_empty() {
                    ", nothing printed".to_owned()
                } else {
                    format!(", it said: {}", said.join(" | "))
                },
                self.login,
                self.login,
            ),
        }
    }

    /// Runs a short internal command and returns (status, stdout, stderr).
    fn capture(
        &self,
        command: &str,
        extra: Duration,
    ) -> Result<(i32, String, String), TransportError> {
        let (mut out, mut err) = (String::new(), String::new());
        let status = self.run(
            command,
            Instant::now() + self.timeout + extra,
            false,
            &|| false,
            &mut |s, l| {
                let buf = if s == Stream::Stdout {
                    &mut out
                } else {
                    &mut err
                };
                buf.push_str(l);
                buf.push('\n');
            },
        )?;
        Ok((status, out, err))
    }

    /// Runs an internal command that must succeed.
    fn check(&self, op: &str, path: &str, command: &str) -> Result<String, TransportError> {
        self.check_for(op, path, command, Duration::ZERO)
    }

    /// [`SshSession::check`] with `extra` time beyond the connection timeout.
    fn check_for(
        &self,
        op: &str,
        path: &str,
        command: &str,
        extra: Duration,
    ) -> Result<String, TransportError> {
        let (status, out, err) = self.capture(command, extra)?;
        match status {
            0 => Ok(out),
            _ => Err(self.status_error(op, path, status, &err)),
        }
    }

    /// rename(2) on the host: atomic, and replaces an existing file (SFTP v3 RENAME refuses
    /// to).
    fn mv(&self, from: &str, to: &str) -> Result<(), TransportError> {
        self.check(
            "rename",
            to,
            &format!("mv -f -- {} {}", quote(from), quote(to)),
        )
        .map(drop)
    }

    /// The session as upload files and a shell, for `protocol`.
    pub fn into_connection(self, protocol: Protocol) -> Result<Connection, TransportError> {
        let files: Box<dyn Files> = match protocol {
            Protocol::Sftp => {
                let sftp = self.sess.sftp().map_err(|e| self.error(OP_START_SFTP, e))?;
                Box::new(SftpFiles {
                    ssh: self.clone(),
                    sftp,
                    desynced: false,
                })
            }
            _ => Box::new(ScpFiles { ssh: self.clone() }),
        };
        Ok(Connection {
            files,
            shell: Some(Box::new(self)),
        })
    }
}

use crate::config::shell::quote;

/// What every channel of ours runs, whatever the login shell is: the login shell (bash,
/// dash, zsh, ksh, ash, fish, csh, tcsh alike) only has to start `sh`, from a command line
/// with no quotes, no `$`, no `!` and no newline, which every one of them parses the same.
/// The script itself goes to `sh` on the channel's stdin ([`posix_script`]), so no login
/// shell ever parses it: quoting for fish or csh is not needed, and a script of any length
/// or content arrives as written.
const REMOTE_SH: &str = "exec sh -s";

/// The first line `sh` prints for [`posix_script`]: proof that `sh`, not the login shell,
/// runs the script. A channel that ends without it is an error ([`SshSession::no_sh`]),
/// never an empty answer.
const SH_MARKER: &str = "dropship-sh-ok";

/// The text written to [`REMOTE_SH`]'s stdin for `body`: the marker, then `body` as one
/// brace group, so `sh` has read and parsed all of it before running any of it. That
/// matters because `sh` reads its script from the same pipe the commands inherit: bash
/// reads it byte by byte, and a command reading stdin would eat the rest of the script.
/// Inside the group stdin is /dev/null and fd 3 is the channel's stdin (for the watchers
/// of [`killable`] and [`until_closed`], which wait for it to close).
fn posix_script(body: &str) -> String {
    format!("printf '%s\\n' {SH_MARKER}; {{ {body}\n}} 3<&0 </dev/null; exit $?\n")
}

/// Wraps a user command so it dies with the channel: it runs in its own session (process
/// group) and a watcher kills that group when our side closes stdin — at a timeout, on
/// cancel, or when the connection drops. A killed ssh client alone would leave it running.
/// One line (see [`posix_script`]).
fn killable(command: &str) -> String {
    // Notes for the shell text: fd 3 is the channel's stdin (posix_script); the watcher is a
    // `read` loop, not `cat`: one process less per command; dash's `kill` takes no `--`; the
    // command is not a process-group leader, so `setsid` does not fork and `$p` is both its
    // pid and its process group. A channel closed at once may find the group not made yet:
    // then the pid itself is killed (setsid has not run, or runs in that very process).
    // After TERM the watcher waits only while the group lives.
    format!(
        "setsid sh -c {} dropship </dev/null 3<&- & p=$!; \
         (while read -r _; do :; done <&3; kill -TERM -$p || kill -TERM $p; i=0; \
         while [ $i -lt 10 ] && {{ kill -0 -$p || kill -0 $p; }}; do sleep 0.5 || sleep 1; i=$((i+1)); done; \
         kill -KILL -$p || kill -KILL $p) >/dev/null 2>&1 & w=$!; \
         exec 3<&-; wait $p; r=$?; kill $w 2>/dev/null; exit $r",
        quote(command)
    )
}

/// Runs `command` in the background for as long as the channel is open: the shell itself
/// waits on the channel's stdin (which we never write to) and kills the command when it
/// closes — on `stop_background`, when the connection drops, when dropship dies. Leaner than
/// [`killable`] (three processes, not five): it starts on every host of every dispatch.
/// The command gets TERM and must take its own children with it (the heartbeat traps it).
fn until_closed(command: &str) -> String {
    format!(
        "sh -c {} dropship & p=$!; while read -r _; do :; done <&3; kill $p 2>/dev/null; exit 0",
        quote(command)
    )
}

/// The line [`control_loop`] prints after each script it ran, with that script's status.
/// A random part (one per process) makes it a line no output of a script can end with by
/// chance, so an answer always ends where the script did.
fn control_done() -> &'static str {
    static DONE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DONE.get_or_init(|| format!("dropship-done-{}", hex::encode(rand::random::<[u8; 8]>())))
}

/// The prefix of the last line [`control_loop`] takes: stop the background command, run
/// the rest of the line, exit (the unlock, see [`Shell::finish_background`]).
const CONTROL_FINISH: &str = "dropship-finish ";

/// What the lock's channel runs once the lock is held: `command` (the heartbeat) in the
/// background, as a subshell (a fork, no new program), and then a control shell that runs
/// dropship's one-line scripts as they come on the channel's stdin, one at a time, each
/// answered by its output (stderr folded in) and a [`control_done`] line with its status —
/// the verification and rename of the upload ([`SshSession::control`]) — until a
/// [`CONTROL_FINISH`] line, which stops `command`, waits for it (so it writes nothing
/// more) and runs the rest of its line: the unlock. A closed stdin (stop_background, a
/// dropped connection, a killed dropship) only stops `command`. One login shell and one
/// `sh` per host serve the lock, its heartbeat, the verification and the unlock.
/// The scripts run in a function: they must not `exit`.
fn control_loop(command: &str) -> String {
    format!(
        "( {command}\n) >/dev/null 2>&1 3<&- & p=$!\n\
         dropship_c() {{ eval \"$c\"\n}}\n\
         while IFS= read -r c <&3; do case $c in \
         '{CONTROL_FINISH}'*) kill $p 2>/dev/null; wait $p 2>/dev/null; c=${{c#'{CONTROL_FINISH}'}}; eval \"$c\"; exit 0 ;; \
         *) dropship_c 2>&1; printf '%s %s\\n' {done} $? ;; esac; done\n\
         kill $p 2>/dev/null; exit 0",
        done = control_done()
    )
}

/// The status in a [`control_loop`] answer, once the answer is complete: its last line is
/// `dropship-done-TOKEN N` (after output that may lack its own newline).
fn control_status(out: &[u8]) -> Option<(i32, String)> {
    let text = String::from_utf8_lossy(out);
    let body = text.strip_suffix('\n')?;
    let (before, last) = match body.rfind('\n') {
        Some(i) => (&body[..=i], &body[i + 1..]),
        None => ("", body),
    };
    let done = control_done();
    let at = last.rfind(&format!("{done} "))?;
    let status = last[at + done.len() + 1..].parse().ok()?;
    Some((status, format!("{before}{}", &last[..at])))
}

impl SshSession {
    /// Runs a one-line `script` in the lock's control shell ([`control_loop`]) and returns
    /// its status and output (stdout and stderr together); `None` when there is no such
    /// shell (no lock held through this session, or its channel failed before) or the
    /// script is not one line: then the caller opens a channel as usual. A failure here
    /// drops the control channel (what it would answer next is no longer known), which
    /// stops the heartbeat; the unlock then goes over a new channel.
    fn control(
        &self,
        script: &str,
        extra: Duration,
    ) -> Option<Result<(i32, String), TransportError>> {
        if script.contains('\n') {
            return None;
        }
        let op = "running a dropship script";
        let mut bg = self.background.lock().unwrap_or_else(|e| e.into_inner());
        if bg.len() != 1 {
            return None;
        }
        let ch = &mut bg[0];
        let ms = |d: Duration| d.as_millis().min(u32::MAX as u128) as u32;
        self.sess.set_timeout(ms(self.timeout + extra));
        let mut run = || {
            ch.write_all(format!("{script}\n").as_bytes())
                .map_err(|e| self.io_err(op, "the script on stdin", e))?;
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                if out.ends_with(b"\n")
                    && let Some(answer) = control_status(&out)
                {
                    return Ok(answer);
                }
                let n = ch
                    .read(&mut buf)
                    .map_err(|e| self.io_err(op, "a dropship script", e))?;
                if n == 0 {
                    return Err(TransportError::Io {
                        host: self.host.clone(),
                        op: format!("{op} `a dropship script`"),
                        detail: "the lock's shell on the host ended before it answered".into(),
                    });
                }
                out.extend_from_slice(&buf[..n]);
            }
        };
        let res = run();
        self.sess.set_timeout(ms(self.timeout));
        if res.is_err()
            && let Some(mut ch) = bg.pop()
        {
            let _ = ch.close();
        }
        Some(res)
    }

    /// The error for an internal command that exited with `status` and said `err`.
    fn status_error(&self, op: &str, path: &str, status: i32, err: &str) -> TransportError {
        if err.contains("Permission denied") || err.contains("Read-only file system") {
            return self.permission(op, path, err.trim().to_owned());
        }
        TransportError::Io {
            host: self.host.clone(),
            op: format!("{op} `{path}`"),
            detail: format!("exit {status}: {}", err.trim()),
        }
    }
}

impl Shell for SshSession {
    fn start_background(&mut self, command: &str) -> Result<(), TransportError> {
        let op = "starting a background command";
        let ch = self.open_sh(op, &until_closed(command))?;
        self.background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ch);
        Ok(())
    }

    fn stop_background(&mut self) {
        let channels =
            std::mem::take(&mut *self.background.lock().unwrap_or_else(|e| e.into_inner()));
        for mut ch in channels {
            let _ = ch.send_eof();
            let _ = ch.close();
        }
    }

    fn exec_lines(
        &mut self,
        command: &str,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
        on_lines: &mut dyn FnMut(Stream, &str),
    ) -> Result<i32, TransportError> {
        self.run(
            &killable(command),
            Instant::now() + timeout,
            true,
            stop,
            on_lines,
        )
        .map_err(|e| match e {
            // Our own deadline, not a stalled link: name the command, not the wrapper.
            TransportError::CommandTimeout { host, .. } => TransportError::CommandTimeout {
                host,
                command: command.to_owned(),
                secs: timeout.as_secs(),
                knob: "step_timeout",
            },
            other => other,
        })
    }

    fn script(&mut self, script: &str, extra: Duration) -> Result<String, TransportError> {
        self.check_for("running", "a dropship script", script, extra)
    }

    fn finish_background(&mut self, script: &str) -> Option<Result<String, TransportError>> {
        let op = "running a dropship script";
        if script.contains('\n') {
            return None;
        }
        let mut ch = {
            let mut bg = self.background.lock().unwrap_or_else(|e| e.into_inner());
            if bg.len() != 1 {
                return None;
            }
            bg.pop()?
        };
        let mut run = || {
            ch.write_all(format!("{CONTROL_FINISH}{script}\n").as_bytes())
                .map_err(|e| self.io_err(op, "the script on stdin", e))?;
            ch.send_eof().map_err(|e| self.error(op, e))?;
            let (mut out, mut err) = (String::new(), String::new());
            ch.read_to_string(&mut out)
                .and_then(|_| ch.stderr().read_to_string(&mut err))
                .map_err(|e| self.io_err(op, "a dropship script", e))?;
            ch.wait_close().map_err(|e| self.error(op, e))?;
            match ch.exit_status().map_err(|e| self.error(op, e))? {
                0 => Ok(out),
                status => Err(TransportError::Io {
                    host: self.host.clone(),
                    op: format!("{op} `a dropship script`"),
                    detail: format!("exit {status}: {}", err.trim()),
                }),
            }
        };
        Some(run())
    }

    fn script_then_background(
        &mut self,
        script: &str,
        background: &str,
    ) -> Result<(String, Option<Result<(), TransportError>>), TransportError> {
        let op = "running a dropship script";
        let go = "dropship-go";
        let text = super::function_script(
            script,
            &format!("printf '%s\\n' {go}\n{}", control_loop(background)),
        );
        let mut ch = self.open_sh(op, &text)?;
        // Its stdin stays open: closing it is what stops `background` (control_loop).
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let go_line = format!("{SH_MARKER}\n");
        loop {
            let text = String::from_utf8_lossy(&out);
            if let Some(at) = text.find(&go_line) {
                let mine = &text[at + go_line.len()..];
                if let Some(before) = mine.strip_suffix(&format!("{go}\n")) {
                    let before = before.to_owned();
                    self.background
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(ch);
                    return Ok((before, Some(Ok(()))));
                }
            }
            let n = ch
                .read(&mut buf)
                .map_err(|e| self.io_err(op, "a dropship script", e))?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        // The script ended without `go`: like `script`.
        let mut err = String::new();
        let _ = ch.stderr().read_to_string(&mut err);
        ch.wait_close().map_err(|e| self.error(op, e))?;
        let status = ch.exit_status().map_err(|e| self.error(op, e))?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let Some(at) = text.find(&go_line) else {
            let said: Vec<String> = text
                .lines()
                .chain(err.lines())
                .filter(|l| !l.trim().is_empty())
                .take(4)
                .map(|l| l.chars().take(200).collect())
                .collect();
            return Err(self.no_sh(status, &said));
        };
        if status != 0 {
            return Err(TransportError::Io {
                host: self.host.clone(),
                op: format!("{op} `a dropship script`"),
                detail: format!("exit {status}: {}", err.trim()),
            });
        }
        Ok((text[at + go_line.len()..].to_owned(), None))
    }

    /// In the lock's control shell when there is one (no channel, login shell and `sh`
    /// of its own: the usual case of a dispatch), else in a channel of its own.
    fn verify_and_rename(
        &mut self,
        part: &str,
        dest: &str,
        expected: &str,
        size: u64,
    ) -> Result<Option<String>, TransportError> {
        let script = super::verify_rename_command(part, dest, expected);
        let extra = super::hash_allowance(size);
        let out = match self.control(&script, extra) {
            Some(answer) => match answer? {
                (0, out) => out,
                (status, out) => return Err(self.status_error("verify", part, status, &out)),
            },
            None => self.script(&script, extra)?,
        };
        Ok(super::verify_answer(&out))
    }

    fn sha256(&mut self, path: &str, len: Option<u64>) -> Result<String, TransportError> {
        let allowance = super::hash_allowance(len.unwrap_or(0));
        let out = self.check_for("sha256sum", path, &sha256_command(path, len), allowance)?;
        let hex: String = out.chars().take(64).collect();
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(hex.to_ascii_lowercase())
        } else {
            Err(TransportError::Io {
                host: self.host.clone(),
                op: format!("sha256sum `{path}`"),
                detail: format!(
                    "unexpected output `{}` (is sha256sum installed?)",
                    out.trim()
                ),
            })
        }
    }
}

/// An SFTP file as `Write`, for any channel window the server offers. libssh2's SFTP write
/// returns 0 ("nothing acknowledged yet") when the window let it send only part of a
/// request: the first request of a write is up to 30,000 bytes, more than Dropbear's whole
/// 24 KiB window, so every write starts that way there. `write_all` takes a 0 for a dead
/// file ("failed to write whole buffer"); here it is called again, which sends the rest as
/// the server opens its window (libssh2 blocks for that). Only a whole `timeout` without
/// any acknowledged byte is a stall.
struct SftpWriter<'a> {
    file: &'a mut ssh2::File,
    timeout: Duration,
}

impl std::io::Write for SftpWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let since = Instant::now();
        loop {
            match self.file.write(buf) {
                Ok(0) if !buf.is_empty() => {
                    if since.elapsed() >= self.timeout {
                        return Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            "the server acknowledged nothing",
                        ));
                    }
                }
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Files over SFTP: offset writes make uploads resumable.
struct SftpFiles {
    ssh: SshSession,
    sftp: ssh2::Sftp,
    /// A write failed: libssh2 then drops the write requests it had not finished sending,
    /// also one it had sent part of (a server with a small window, such as Dropbear's 24
    /// KiB, leaves it half sent), so the server reads the next request out of step and
    /// never answers: after a full disk on Dropbear every later SFTP request timed out. The
    /// free space is then asked and the `.part` removed through the shell.
    desynced: bool,
}

impl SftpFiles {
    fn sftp_err(&self, op: &str, path: &str, e: ssh2::Error) -> TransportError {
        match e.code() {
            ErrorCode::SFTP(FX_PERMISSION_DENIED) => self.ssh.permission(op, path, e.to_string()),
            _ => self.ssh.error(&format!("{op} `{path}`"), e),
        }
    }
}

/// How long closing a file waits after a failed write (see [`SftpFiles::desynced`]), in ms.
const DESYNCED_CLOSE_MS: u32 = 200;
/// How long `statvfs@openssh.com` waits after a failed write, in ms.
const STATVFS_AFTER_FAILURE_MS: u32 = 2000;

/// From this size on, an SFTP upload goes over two sessions: libssh2 encrypts on one core
/// per session, and SFTP's request/acknowledge pipeline leaves a single stream short of
/// OpenSSH's `scp` (bench/upload.sh).
const TWO_STREAMS_FROM: u64 = 64 << 20;

/// The two sessions take turns by blocks of this size, on a grid fixed from the file's
/// start, and neither starts a block while the one two before it is unfinished. So at any
/// moment only the first two unfinished blocks can hold bytes: everything before
/// `(len / BLOCK - 2) * BLOCK` of a `.part` cut off at `len` is whole, and an interrupted
/// two-stream upload resumes from there instead of from zero.
const BLOCK: u64 = 8 << 20;

/// The part of a `.part` of `len` bytes that a write of a `size`-byte bundle can have left
/// without holes (see [`BLOCK`]).
fn contiguous_prefix(len: u64, size: u64) -> u64 {
    if size < TWO_STREAMS_FROM {
        len
    } else {
        (len / BLOCK).saturating_sub(2) * BLOCK
    }
}

/// Which blocks are finished: all before `frontier`, and `frontier + 1` when `ahead`.
#[derive(Default)]
struct Frontier {
    frontier: u64,
    ahead: bool,
    stop: bool,
}

struct Turns {
    state: std::sync::Mutex<Frontier>,
    changed: std::sync::Condvar,
}

impl Turns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Frontier> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until block `j` may start (block `j - 2` and all before it are done); false
    /// when the upload is stopping. `tick` runs every 100 ms meanwhile.
    fn wait_turn(&self, j: u64, tick: &mut dyn FnMut() -> bool) -> bool {
        loop {
            {
                let st = self.lock();
                if st.stop {
                    return false;
                }
                if st.frontier + 1 >= j {
                    return true;
                }
                let (st, _) = self
                    .changed
                    .wait_timeout(st, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner());
                if st.stop || st.frontier + 1 >= j {
                    continue;
                }
            }
            // Outside the lock: `tick` reads it too.
            if !tick() {
                self.stop();
            }
        }
    }

    fn done(&self, j: u64) {
        let mut st = self.lock();
        if j == st.frontier {
            st.frontier += if st.ahead { 2 } else { 1 };
            st.ahead = false;
        } else {
            st.ahead = true;
        }
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

impl SftpFiles {
    /// Writes `local[offset..size]` in [`BLOCK`]s that alternate between `dst` and a
    /// second session on another thread; reports their sum as progress.
    #[allow(clippy::too_many_arguments)]
    fn write_two_streams(
        &mut self,
        dst: &mut ssh2::File,
        local: &Path,
        remote: &str,
        offset: u64,
        size: u64,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(), TransportError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let opened = SshSession::connect(&self.ssh.params).and_then(|second| {
            let sftp = second
                .sess
                .sftp()
                .map_err(|e| second.error(OP_START_SFTP, e))?;
            Ok((second, sftp))
        });
        let (second, sftp2) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                // A login limit or a dropped extra login must not fail an upload that one
                // session can do.
                tracing::warn!(host = %self.ssh.host, "second SFTP session refused, one stream: {e}");
                let timeout = self.ssh.timeout;
                let mut dst = SftpWriter { file: dst, timeout };
                return pump(
                    &self.ssh.host,
                    local,
                    offset,
                    &mut dst,
                    CHUNK,
                    progress,
                    &|e| self.ssh.io_err("write", remote, e),
                );
            }
        };
        let first = offset / BLOCK;
        let last = size.div_ceil(BLOCK);
        let range = |j: u64| (offset.max(j * BLOCK), size.min((j + 1) * BLOCK));
        let turns = Turns {
            state: Default::default(),
            changed: Default::default(),
        };
        turns.lock().frontier = first;
        // Bytes each stream has had acknowledged (libssh2 counts an SFTP write as written
        // once the server acknowledged it).
        let sent = [AtomicU64::new(0), AtomicU64::new(0)];
        let total = || offset + sent[0].load(Ordering::Relaxed) + sent[1].load(Ordering::Relaxed);
        // One stream's share of the blocks, each one seeked to and pumped in turn.
        let stream = |s: usize,
                      ssh: &SshSession,
                      f: &mut ssh2::File,
                      tick: &mut dyn FnMut() -> bool|
         -> Result<(), TransportError> {
            let mut j = first + s as u64;
            while j < last {
                if !turns.wait_turn(j, tick) {
                    return Err(TransportError::Cancelled {
                        host: ssh.host.clone(),
                    });
                }
                let (from, to) = range(j);
                f.seek(SeekFrom::Start(from))
                    .map_err(|e| ssh.io_err("seek", remote, e))?;
                let before = sent[s].load(Ordering::Relaxed);
                pump_range(
                    &ssh.host,
                    local,
                    from,
                    to,
                    &mut SftpWriter {
                        file: f,
                        timeout: ssh.timeout,
                    },
                    CHUNK,
                    &mut |n| {
                        sent[s].store(before + (n - from), Ordering::Relaxed);
                        tick()
                    },
                    &|e| ssh.io_err("write", remote, e),
                )?;
                turns.done(j);
                j += 2;
            }
            Ok(())
        };
        std::thread::scope(|scope| {
            let tail = scope.spawn(|| {
                let r = sftp2
                    .open_mode(Path::new(remote), OpenFlags::WRITE, 0o644, OpenType::File)
                    .map_err(|e| second.error(&format!("open `{remote}`"), e))
                    .and_then(|mut f| {
                        stream(1, &second, &mut f, &mut || !turns.lock().stop)?;
                        f.close()
                            .map_err(|e| second.error(&format!("close `{remote}`"), e))
                    });
                // A failed stream stops the other at once instead of sending its rest.
                if r.is_err() {
                    turns.stop();
                }
                r
            });
            let mut tick = || {
                let go = progress(total()) && !turns.lock().stop;
                if !go {
                    turns.stop();
                }
                go
            };
            let head = stream(0, &self.ssh, dst, &mut tick);
            if head.is_err() {
                turns.stop();
            }
            // Keep reporting (and listening for a cancel) while the other stream finishes.
            while !tail.is_finished() {
                tick();
                std::thread::sleep(Duration::from_millis(100));
            }
            let tail = tail.join().unwrap_or_else(|_| {
                Err(TransportError::Io {
                    host: self.ssh.host.clone(),
                    op: format!("upload of `{remote}`"),
                    detail: "the second stream panicked".into(),
                })
            });
            match (head, tail) {
                (Ok(()), Ok(())) => Ok(()),
                (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
                // The stream that failed first stopped the other: report the real failure.
                (Err(TransportError::Cancelled { .. }), Err(e)) | (Err(e), Err(_)) => Err(e),
            }
        })
    }
}

impl Files for SftpFiles {
    fn mkdir_p(&mut self, dir: &str) -> Result<(), TransportError> {
        // The usual case, a destination that exists: one round trip, not one per part of
        // the path.
        if self.sftp.stat(Path::new(dir)).is_ok_and(|st| st.is_dir()) {
            return Ok(());
        }
        let mut cur = if dir.starts_with('/') {
            "/".to_owned()
        } else {
            String::new()
        };
        for seg in dir.split('/').filter(|s| !s.is_empty() && *s != ".") {
            if !cur.is_empty() && !cur.ends_with('/') {
                cur.push('/');
            }
            cur.push_str(seg);
            let p = Path::new(&cur);
            match self.sftp.stat(p) {
                Ok(st) if st.is_dir() => continue,
                Ok(_) => {
                    return Err(TransportError::Io {
                        host: self.ssh.host.clone(),
                        op: format!("mkdir `{dir}`"),
                        detail: format!("`{cur}` exists and is not a directory"),
                    });
                }
                Err(_) => {}
            }
            if let Err(e) = self.sftp.mkdir(p, 0o755) {
                // Another dispatch may have made it meanwhile.
                if !self.sftp.stat(p).is_ok_and(|st| st.is_dir()) {
                    return Err(self.sftp_err("mkdir", &cur, e));
                }
            }
        }
        Ok(())
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, TransportError> {
        match self.sftp.stat(Path::new(path)) {
            Ok(st) => Ok(st.size),
            Err(e) if e.code() == ErrorCode::SFTP(FX_NO_SUCH_FILE) => Ok(None),
            Err(e) => Err(self.sftp_err("stat", path, e)),
        }
    }

    fn resumable(&self) -> bool {
        true
    }

    fn write(
        &mut self,
        local: &Path,
        remote: &str,
        offset: u64,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(), TransportError> {
        let size = std::fs::metadata(local)
            .map_err(|e| TransportError::Local {
                path: local.to_owned(),
                detail: e.to_string(),
            })?
            .len();
        let mut flags = OpenFlags::WRITE | OpenFlags::CREATE;
        if offset == 0 {
            flags |= OpenFlags::TRUNCATE;
        }
        let mut dst = match self
            .sftp
            .open_mode(Path::new(remote), flags, 0o644, OpenType::File)
        {
            Ok(f) => f,
            Err(e) => {
                let e = self.sftp_err("create", remote, e);
                return Err(self.when_full(e, None, remote, size, size - offset.min(size)));
            }
        };
        let acked = std::cell::Cell::new(offset);
        let mut track = |n: u64| {
            acked.set(n);
            progress(n)
        };
        let sent = self.send(&mut dst, local, remote, offset, size, &mut track);
        if sent.is_err() {
            self.desynced = true;
        }
        let sent = sent.and_then(|()| dst.close().map_err(|e| self.sftp_err("close", remote, e)));
        let result = sent.map_err(|e| {
            let left = size - acked.get().min(size);
            self.when_full(e, Some(&mut dst), remote, size, left)
        });
        if self.desynced {
            // Closing the handle would wait a whole `timeout` for an answer that does not
            // come; libssh2 frees it all the same when the wait times out.
            self.ssh.sess.set_timeout(DESYNCED_CLOSE_MS);
            drop(dst);
            self.ssh
                .sess
                .set_timeout(self.ssh.timeout.as_millis().min(u32::MAX as u128) as u32);
        }
        result
    }

    fn resumable_prefix(&self, len: u64, size: u64) -> u64 {
        contiguous_prefix(len, size)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), TransportError> {
        self.ssh.mv(from, to)
    }

    fn remove(&mut self, path: &str) -> Result<(), TransportError> {
        if self.desynced {
            return self
                .ssh
                .check("remove", path, &format!("rm -f -- {}", quote(path)))
                .map(drop);
        }
        match self.sftp.unlink(Path::new(path)) {
            Err(e) if e.code() != ErrorCode::SFTP(FX_NO_SUCH_FILE) => {
                Err(self.sftp_err("remove", path, e))
            }
            _ => Ok(()),
        }
    }

    fn create_dir(&mut self, path: &str) -> Result<bool, TransportError> {
        match self.sftp.mkdir(Path::new(path), 0o755) {
            Ok(()) => Ok(true),
            Err(_) if self.sftp.stat(Path::new(path)).is_ok_and(|s| s.is_dir()) => Ok(false),
            Err(e) => Err(self.sftp_err("mkdir", path, e)),
        }
    }

    fn remove_dir(&mut self, path: &str) -> Result<(), TransportError> {
        match self.sftp.rmdir(Path::new(path)) {
            Err(e) if e.code() != ErrorCode::SFTP(FX_NO_SUCH_FILE) => {
                Err(self.sftp_err("rmdir", path, e))
            }
            _ => Ok(()),
        }
    }
}

impl SftpFiles {
    /// Writes `local[offset..size]` to the open `dst`, over one stream or two.
    fn send(
        &mut self,
        dst: &mut ssh2::File,
        local: &Path,
        remote: &str,
        offset: u64,
        size: u64,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(), TransportError> {
        dst.seek(SeekFrom::Start(offset))
            .map_err(|e| self.ssh.io_err("seek", remote, e))?;
        if size >= TWO_STREAMS_FROM && size - offset >= 2 * BLOCK {
            self.write_two_streams(dst, local, remote, offset, size, progress)
        } else {
            pump(
                &self.ssh.host,
                local,
                offset,
                &mut SftpWriter {
                    file: dst,
                    timeout: self.ssh.timeout,
                },
                CHUNK,
                progress,
                &|e| self.ssh.io_err("write", remote, e),
            )
        }
    }

    /// Restates a failed upload of `remote` as a full disk or quota, naming the directory
    /// and the `size` of the bundle, when that is what it was. A server that says so
    /// (SSH_FX_NO_SPACE_ON_FILESYSTEM, SSH_FX_QUOTA_EXCEEDED) is taken at its word; OpenSSH's
    /// sftp-server answers ENOSPC with the generic SSH_FX_FAILURE, so after any other
    /// failure the host is asked how much room is left there (`statvfs@openssh.com` on the
    /// open file, else `df`): less than the `left` bytes still to send is a full disk.
    fn when_full(
        &mut self,
        e: TransportError,
        file: Option<&mut ssh2::File>,
        remote: &str,
        size: u64,
        left: u64,
    ) -> TransportError {
        let host = self.ssh.host.clone();
        let dir = dir_of(remote);
        match e {
            TransportError::Refused { what, detail, .. } if detail.starts_with(NO_SPACE) => {
                TransportError::no_space(&host, dir, size, format!("{what}: {detail}"))
            }
            TransportError::Refused { what, detail, .. } if detail.starts_with(QUOTA) => {
                TransportError::quota_exceeded(&host, dir, format!("{what}: {detail}"))
            }
            TransportError::Io { op, detail, .. } if left > 0 => match self.free_space(file, dir) {
                Some(free) if free < left => TransportError::no_space(
                    &host,
                    dir,
                    size,
                    format!("{op}: {detail} ({free} bytes free, {left} still to send)"),
                ),
                _ => TransportError::Io { host, op, detail },
            },
            other => other,
        }
    }

    /// Bytes the login may still write in `dir`, if the host says: by `df` over the shell
    /// (a channel of its own, see [`SftpFiles::desynced`]), else by `statvfs@openssh.com`
    /// on the open `file` (a login without a shell).
    fn free_space(&mut self, file: Option<&mut ssh2::File>, dir: &str) -> Option<u64> {
        if let Some(free) = self.ssh.free_space(dir) {
            return Some(free);
        }
        let file = file?;
        // After a failed write the answer may never come: wait briefly for it.
        let timeout = self.ssh.timeout.as_millis().min(u32::MAX as u128) as u32;
        if self.desynced {
            self.ssh
                .sess
                .set_timeout(timeout.min(STATVFS_AFTER_FAILURE_MS));
        }
        let st = file.statvfs();
        self.ssh.sess.set_timeout(timeout);
        let st = st.ok()?;
        let unit = if st.f_frsize > 0 {
            st.f_frsize
        } else {
            st.f_bsize
        };
        Some(st.f_bavail.saturating_mul(unit))
    }
}

impl SshSession {
    /// Bytes the login may still write in `dir`, from `df -Pk` on the host.
    fn free_space(&self, dir: &str) -> Option<u64> {
        let (status, out, _) = self
            .capture(&format!("df -Pk -- {}", quote(dir)), Duration::ZERO)
            .ok()?;
        if status != 0 {
            return None;
        }
        let kib: u64 = out
            .lines()
            .nth(1)?
            .split_whitespace()
            .nth(3)?
            .parse()
            .ok()?;
        Some(kib.saturating_mul(1024))
    }

    /// The host's own words about the destination of `remote` (the remote `scp`'s, the
    /// shell's), as the error they stand for; `None` when they name none of these.
    fn said(&self, op: &str, remote: &str, size: u64, text: &str) -> Option<TransportError> {
        let dir = dir_of(remote);
        let detail = format!("{op} `{remote}`: {}", text.trim());
        Some(match cause(text)? {
            Cause::NoSpace => TransportError::no_space(&self.host, dir, size, detail),
            Cause::Quota => TransportError::quota_exceeded(&self.host, dir, detail),
            Cause::Permission => self.permission(op, remote, text.trim().to_owned()),
        })
    }

    fn io_err(&self, op: &str, path: &str, e: std::io::Error) -> TransportError {
        if e.kind() == ErrorKind::TimedOut {
            return self.stalled(&format!("{op} `{path}`"));
        }
        // ssh2 turns an SFTP status into an io::Error that keeps only its text.
        let text = e.to_string();
        let code = match text.as_str() {
            "no space on filesystem" => Some(FX_NO_SPACE_ON_FILESYSTEM),
            "quota exceeded" => Some(FX_QUOTA_EXCEEDED),
            "bad message" => Some(FX_BAD_MESSAGE),
            _ => None,
        };
        if let Some(code) = code {
            return self.refused(&format!("{op} `{path}`"), code, text);
        }
        if e.kind() == ErrorKind::PermissionDenied {
            return self.permission(op, path, e.to_string());
        }
        TransportError::Io {
            host: self.host.clone(),
            op: format!("{op} `{path}`"),
            detail: e.to_string(),
        }
    }
}

/// Files over SCP: one stream per file, so a retry starts over.
struct ScpFiles {
    ssh: SshSession,
}

/// The remote `scp -t`'s answer to the end of a file: `None` for its NUL (or when it
/// closed without one), else its error line.
fn scp_answer(ch: &mut ssh2::Channel) -> std::io::Result<Option<String>> {
    let mut byte = [0u8; 1];
    if ch.read(&mut byte)? == 0 || byte[0] == 0 {
        return Ok(None);
    }
    let mut line = Vec::new();
    while line.len() < 1024 && ch.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

impl ScpFiles {
    /// The remote `scp -t` refused the file. libssh2 keeps only "failed to send file" of
    /// what it said, so the shell creates the file the same way to hear why: a directory
    /// the login may not write, a full disk, a quota.
    fn refused_scp(&self, remote: &str, size: u64, e: ssh2::Error) -> TransportError {
        let first = self.ssh.error("scp", e);
        if !matches!(first, TransportError::Io { .. }) {
            return first;
        }
        match self
            .ssh
            .capture(&format!(": >> {}", quote(remote)), Duration::ZERO)
        {
            Ok((status, _, err)) if status != 0 => {
                self.ssh.said("create", remote, size, &err).unwrap_or(first)
            }
            _ => first,
        }
    }
}

impl ScpFiles {
    /// The receiving script ended before it was ready for data: `sh` did not start (no
    /// marker), or creating `dir` failed.
    fn ended_early(
        &self,
        mut ch: ssh2::Channel,
        out: &[u8],
        dir: &str,
        size: u64,
    ) -> TransportError {
        let mut err = String::new();
        let _ = ch.stderr().read_to_string(&mut err);
        let _ = ch.wait_close();
        let status = ch.exit_status().unwrap_or(-1);
        let out = String::from_utf8_lossy(out);
        if !out.lines().any(|l| l == SH_MARKER) {
            let said: Vec<String> = out
                .lines()
                .chain(err.lines())
                .filter(|l| !l.trim().is_empty())
                .take(4)
                .map(|l| l.chars().take(200).collect())
                .collect();
            return self.ssh.no_sh(status, &said);
        }
        if err.contains("Permission denied") || err.contains("Read-only file system") {
            return self.ssh.permission("mkdir", dir, err.trim().to_owned());
        }
        self.ssh
            .said("mkdir", dir, size, &err)
            .unwrap_or_else(|| TransportError::Io {
                host: self.ssh.host.clone(),
                op: format!("mkdir `{dir}`"),
                detail: format!("exit {status}: {}", err.trim()),
            })
    }
}

impl Files for ScpFiles {
    fn mkdir_p(&mut self, dir: &str) -> Result<(), TransportError> {
        self.ssh
            .check("mkdir", dir, &format!("mkdir -p -- {}", quote(dir)))
            .map(drop)
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, TransportError> {
        let q = quote(path);
        let out = self.ssh.check(
            "stat",
            path,
            &format!("if [ -e {q} ]; then wc -c < {q}; else echo missing; fi"),
        )?;
        match out.trim() {
            "missing" => Ok(None),
            n => n.parse().map(Some).map_err(|_| TransportError::Io {
                host: self.ssh.host.clone(),
                op: format!("stat `{path}`"),
                detail: format!("unexpected output `{n}`"),
            }),
        }
    }

    fn resumable(&self) -> bool {
        false
    }

    fn write(
        &mut self,
        local: &Path,
        remote: &str,
        _offset: u64,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(), TransportError> {
        let size = std::fs::metadata(local)
            .map_err(|e| TransportError::Local {
                path: local.to_owned(),
                detail: e.to_string(),
            })?
            .len();
        let mut ch = match self.ssh.sess.scp_send(Path::new(remote), 0o644, size, None) {
            Ok(ch) => ch,
            Err(e) => return Err(self.refused_scp(remote, size, e)),
        };
        pump(&self.ssh.host, local, 0, &mut ch, CHUNK, progress, &|e| {
            self.ssh.io_err("write", remote, e)
        })?;
        let op = format!("finishing scp of `{remote}`");
        // The end of the file as OpenSSH's scp sends it: a NUL, to which the remote `scp -t`
        // answers a NUL, or its error ("scp: PATH: No space left on device") after 1 or 2.
        // libssh2 leaves this exchange to the caller; without it that error is never said.
        ch.write_all(&[0])
            .map_err(|e| self.ssh.io_err(&op, remote, e))?;
        if let Some(said) = scp_answer(&mut ch).map_err(|e| self.ssh.io_err(&op, remote, e))? {
            // Closed as on success, waiting for the host to close it too: without that
            // wait, the next command's `exec` (removing the `.part`) went unanswered on
            // Dropbear in about one run in four (cause not pinned down).
            let _ = ch.send_eof();
            let _ = ch.close();
            let _ = ch.wait_close();
            return Err(self
                .ssh
                .said("write", remote, size, &said)
                .unwrap_or_else(|| TransportError::Io {
                    host: self.ssh.host.clone(),
                    op: format!("scp of `{remote}`"),
                    detail: said,
                }));
        }
        ch.send_eof().map_err(|e| self.ssh.error(&op, e))?;
        ch.wait_eof().map_err(|e| self.ssh.error(&op, e))?;
        ch.close().map_err(|e| self.ssh.error(&op, e))?;
        ch.wait_close().map_err(|e| self.ssh.error(&op, e))
    }

    fn verifies_in_stream(&self) -> bool {
        true
    }

    fn send_verified(
        &mut self,
        local: &Path,
        dir: &str,
        part: &str,
        dest: &str,
        expected: Option<&str>,
        size: u64,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<super::Streamed, TransportError> {
        let ssh = &self.ssh;
        let op = format!("sending `{part}`");
        let script = super::send_verify_script(dir, part, dest, expected);
        let mut ch = ssh.open_sh(&op, &script)?;
        // The server's whole window, as it was before the script took a little of it (far
        // too little for a window adjustment to have come back yet). libssh2's own
        // "initial window" is 0 for channels it opened.
        let window = ch
            .write_window()
            .remaining
            .saturating_add(posix_script(&script).len() as u32);
        let ready = format!("{SH_MARKER}\n{}\n", super::SEND_READY);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // Nothing of the bundle goes out before `sh` says it has parsed the whole script.
        while !out.windows(ready.len()).any(|w| w == ready.as_bytes()) {
            let n = ch.read(&mut buf).map_err(|e| ssh.io_err(&op, part, e))?;
            if n == 0 || out.len() > 64 * 1024 {
                return Err(self.ended_early(ch, &out, dir, size));
            }
            out.extend_from_slice(&buf[..n]);
        }
        let mut paced = Paced {
            ch: &mut ch,
            window,
            sess: &ssh.sess,
            fd: ssh.fd,
            early: Vec::new(),
            unpaced: false,
            adjusts_early: false,
            last_remaining: window,
            _streaming: Streaming::start(),
        };
        let sent = pump(&ssh.host, local, 0, &mut paced, CHUNK, progress, &|e| {
            ssh.io_err("write", part, e)
        });
        let early = std::mem::take(&mut paced.early);
        drop(paced);
        if let Err(e) = sent {
            // The host's hash of a cut stream can never match: the `.part` is not renamed.
            let _ = ch.close();
            return Err(e);
        }
        ch.send_eof().map_err(|e| ssh.error(&op, e))?;
        let (mut answer, mut err) = (String::from_utf8_lossy(&early).into_owned(), String::new());
        // The host now hashes the whole file before it answers: a big bundle on a slow
        // host needs more than the connection timeout (as `verify_and_rename` allows).
        let ms = |d: Duration| d.as_millis().min(u32::MAX as u128) as u32;
        ssh.sess
            .set_timeout(ms(ssh.timeout + super::hash_allowance(size)));
        let answered = ch
            .read_to_string(&mut answer)
            .and_then(|_| ch.stderr().read_to_string(&mut err))
            .map_err(|e| ssh.io_err(&op, part, e));
        ssh.sess.set_timeout(ms(ssh.timeout));
        answered?;
        ch.wait_close().map_err(|e| ssh.error(&op, e))?;
        let answer = answer.trim();
        match (expected, answer.split_once(' ')) {
            (Some(_), _) if answer == "ok" => Ok(super::Streamed::Renamed),
            (Some(e), Some(("bad", h))) => Ok(super::Streamed::Differs(format!(
                "SHA-256 on the host is {h}, expected {e}"
            ))),
            (None, Some(("have", h))) => Ok(super::Streamed::Received(h.to_owned())),
            _ => Err(ssh
                .said("write", part, size, &err)
                .unwrap_or_else(|| TransportError::Io {
                    host: ssh.host.clone(),
                    op: format!("write `{part}`"),
                    detail: format!("{} {}", answer, err.trim()).trim().to_owned(),
                })),
        }
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), TransportError> {
        self.ssh.mv(from, to)
    }

    fn remove(&mut self, path: &str) -> Result<(), TransportError> {
        self.ssh
            .check("remove", path, &format!("rm -f -- {}", quote(path)))
            .map(drop)
    }

    fn create_dir(&mut self, path: &str) -> Result<bool, TransportError> {
        let q = quote(path);
        let out = self.ssh.check(
            "mkdir",
            path,
            &format!("if mkdir -- {q} 2>/dev/null; then echo created; elif [ -d {q} ]; then echo exists; else mkdir -- {q}; fi"),
        )?;
        Ok(out.trim() == "created")
    }

    fn remove_dir(&mut self, path: &str) -> Result<(), TransportError> {
        let q = quote(path);
        self.ssh
            .check("rmdir", path, &format!("[ ! -e {q} ] || rmdir -- {q}"))
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Feeds `script` to `SH -s` on stdin as the channel would, returning (stdout, status).
    /// With `keep_open`, stdin stays open until `sh` exits (as for user commands).
    fn run_as_channel_with(sh: &str, script: &str, keep_open: bool) -> (String, i32) {
        let mut child = Command::new(sh)
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(posix_script(script).as_bytes()).unwrap();
        let stdin = if keep_open {
            Some(stdin)
        } else {
            drop(stdin);
            None
        };
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    }

    fn run_as_channel(sh: &str, script: &str) -> (String, i32) {
        run_as_channel_with(sh, script, false)
    }

    fn shells() -> Vec<&'static str> {
        ["/bin/sh", "/bin/bash", "/usr/bin/dash"]
            .into_iter()
            .filter(|s| Path::new(s).exists())
            .collect()
    }

    #[test]
    fn the_script_runs_whole_after_the_marker_and_keeps_its_exit_status() {
        for sh in shells() {
            // `cat` reads stdin: it must get /dev/null, not the rest of the script (bash
            // reads its script byte by byte from the same pipe).
            let (out, code) = run_as_channel(sh, "cat; echo 'one'\necho \"two $((1+1))\"\nexit 7");
            assert_eq!(out, format!("{SH_MARKER}\none\ntwo 2\n"), "{sh}");
            assert_eq!(code, 7, "{sh}");
            let (out, code) = run_as_channel(sh, "true");
            assert_eq!((out.as_str(), code), ("dropship-sh-ok\n", 0), "{sh}");
        }
    }

    /// Runs the receiving script as the channel would: script first, the data only after
    /// the ready line. Returns (stdout after the ready line, stderr).
    fn receive_as_channel(sh: &str, script: &str, data: &[u8]) -> (String, String) {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(sh)
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(posix_script(script).as_bytes()).unwrap();
        stdin.flush().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let mut seen = Vec::new();
        while line.trim_end() != super::super::SEND_READY {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            seen.push(line.clone());
        }
        assert_eq!(
            seen.first().map(|l| l.trim_end()),
            Some(SH_MARKER),
            "{sh}: {seen:?}"
        );
        let _ = stdin.write_all(data);
        drop(stdin);
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        child.wait().unwrap();
        (rest, err)
    }

    #[test]
    fn the_receiving_script_keeps_exactly_the_bytes_sent_and_renames_only_then() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        // Data that a shell reading past its script would run or choke on.
        let mut data = b"echo pwned > /dev/stderr\nexit 3\n".repeat(3000);
        data.extend((0..=255u8).cycle().take(300_000));
        let sha = hex::encode(sha2::Sha256::digest(&data));
        for (i, sh) in shells().into_iter().enumerate() {
            let d = dir.path().join(format!("new dir {i}/sub"));
            let (part, dest) = (d.join(".b.part"), d.join("b'x.tgz"));
            let (ds, ps, fs) = (
                d.to_str().unwrap(),
                part.to_str().unwrap(),
                dest.to_str().unwrap(),
            );
            let (out, err) = receive_as_channel(
                sh,
                &super::super::send_verify_script(ds, ps, fs, Some(&sha)),
                &data,
            );
            assert_eq!(out, "ok\n", "{sh}: {err}");
            assert_eq!(std::fs::read(&dest).unwrap(), data, "{sh}");
            assert!(!part.exists(), "{sh}");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o022, 0, "{sh}: mode {mode:o}");
            // One byte different: not renamed, the `.part` gone, the old file untouched.
            let mut other = data.clone();
            other[12345] ^= 1;
            let (out, _) = receive_as_channel(
                sh,
                &super::super::send_verify_script(ds, ps, fs, Some(&sha)),
                &other,
            );
            let theirs = hex::encode(sha2::Sha256::digest(&other));
            assert_eq!(out, format!("bad {theirs}\n"), "{sh}");
            assert!(!part.exists(), "{sh}");
            assert_eq!(std::fs::read(&dest).unwrap(), data, "{sh}");
            // A cut stream: the same.
            let (out, _) = receive_as_channel(
                sh,
                &super::super::send_verify_script(ds, ps, fs, Some(&sha)),
                &data[..1000],
            );
            assert!(out.starts_with("bad "), "{sh}: {out}");
            assert_eq!(std::fs::read(&dest).unwrap(), data, "{sh}");
        }
    }

    /// libssh2's `flush` of a channel discards the output already received: no channel may
    /// be flushed (see `open_sh`). Written data is sent by `write_all` itself.
    #[test]
    fn no_channel_is_ever_flushed() {
        let source = include_str!("ssh.rs");
        let needles = [concat!("ch", ".flush()"), concat!("channel", ".flush()")];
        let flushes: Vec<&str> = source
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .collect();
        assert!(flushes.is_empty(), "{flushes:#?}");
    }

    #[test]
    fn without_a_digest_the_receiving_script_answers_its_hash_and_keeps_the_part() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let data = (0..=255u8).cycle().take(200_000).collect::<Vec<_>>();
        let sha = hex::encode(sha2::Sha256::digest(&data));
        for (i, sh) in shells().into_iter().enumerate() {
            let d = dir.path().join(format!("d{i}"));
            let (part, dest) = (d.join(".b.part"), d.join("b.tgz"));
            let script = super::super::send_verify_script(
                d.to_str().unwrap(),
                part.to_str().unwrap(),
                dest.to_str().unwrap(),
                None,
            );
            let (out, err) = receive_as_channel(sh, &script, &data);
            assert_eq!(out, format!("have {sha}\n"), "{sh}: {err}");
            assert_eq!(std::fs::read(&part).unwrap(), data, "{sh}");
            assert!(!dest.exists(), "{sh}: renamed before the caller checked");
        }
    }

    #[test]
    fn the_receiving_script_reports_a_part_it_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let sha = "0".repeat(64);
        for sh in shells() {
            // The `.part` is a directory: it cannot be written; the data is still drained.
            let part = dir.path().join("part-is-a-dir");
            std::fs::create_dir_all(&part).unwrap();
            let dest = dir.path().join("b.tgz");
            let script = super::super::send_verify_script(
                dir.path().to_str().unwrap(),
                part.to_str().unwrap(),
                dest.to_str().unwrap(),
                Some(&sha),
            );
            let (out, err) = receive_as_channel(sh, &script, &[7u8; 500_000]);
            assert_eq!(out, "unwritten\n", "{sh}");
            assert!(err.contains("part-is-a-dir"), "{sh}: {err}");
            assert!(!dest.exists(), "{sh}");
            let _ = std::fs::remove_dir(&part);
        }
    }

    #[test]
    fn a_step_function_starts_what_follows_only_when_it_sets_go() {
        for sh in shells() {
            let go =
                super::super::function_script("echo one; go=1; return 0; echo never", "echo then");
            let (out, code) = run_as_channel(sh, &go);
            assert_eq!(
                (out.as_str(), code),
                ("dropship-sh-ok\none\nthen\n", 0),
                "{sh}"
            );
            let stay = super::super::function_script("echo busy; return 3", "echo then");
            let (out, code) = run_as_channel(sh, &stay);
            assert_eq!((out.as_str(), code), ("dropship-sh-ok\nbusy\n", 3), "{sh}");
        }
    }

    /// Starts [`control_loop`] with a background command that counts into `file` every
    /// 50 ms; returns the child, its stdin and its stdout as lines.
    fn control_shell(
        sh: &str,
        file: &Path,
    ) -> (
        std::process::Child,
        std::process::ChildStdin,
        std::io::BufReader<std::process::ChildStdout>,
    ) {
        use std::io::BufRead;
        let bg = format!(
            "n=0; s=; trap '[ -z \"$s\" ] || kill $s; exit 0' TERM; while :; do n=$((n+1)); echo $n > {f}; sleep 0.05 & s=$!; wait $s; done",
            f = quote(file.to_str().unwrap())
        );
        let mut child = Command::new(sh)
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(posix_script(&format!("echo ready\n{}", control_loop(&bg))).as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while line != "ready\n" {
            line.clear();
            assert_ne!(out.read_line(&mut line).unwrap(), 0, "{sh}");
        }
        (child, stdin, out)
    }

    /// Reads one [`control_loop`] answer.
    fn control_answer(out: &mut impl std::io::BufRead) -> (i32, String) {
        let mut got = Vec::new();
        loop {
            if let Some(a) = control_status(&got) {
                return a;
            }
            let n = out.read_until(b'\n', &mut got).unwrap();
            assert_ne!(n, 0, "ended early: {:?}", String::from_utf8_lossy(&got));
        }
    }

    /// Whether the counter in `file` moves within 5 s (the background command lives; on a
    /// busy machine it may take a while to start), or stays put for 500 ms when `false`
    /// is expected.
    fn counting(file: &Path) -> bool {
        let read = || std::fs::read_to_string(file).unwrap_or_default();
        let a = read();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
            if read() != a {
                return true;
            }
        }
        false
    }

    /// The counter in `file` does not move for 500 ms.
    fn stopped(file: &Path) -> bool {
        let a = std::fs::read_to_string(file).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(500));
        a == std::fs::read_to_string(file).unwrap_or_default()
    }

    #[test]
    fn the_control_shell_answers_each_script_then_stops_its_background_before_the_last() {
        let dir = tempfile::tempdir().unwrap();
        for sh in shells() {
            let file = dir.path().join("count");
            let (mut child, mut stdin, mut out) = control_shell(sh, &file);
            assert!(counting(&file), "{sh}: the background command runs");
            // Output and errors come back together, with the status; a script cannot
            // read the channel (its stdin is /dev/null).
            let mut ask = |script: &str| {
                writeln!(stdin, "{script}").unwrap();
                stdin.flush().unwrap();
                control_answer(&mut out)
            };
            assert_eq!(
                ask("echo \"it's $((6*7))\"; echo oops >&2; cat; return 3"),
                (3, "it's 42\noops\n".to_owned()),
                "{sh}"
            );
            // Output that looks like an answer's end does not end it.
            assert_eq!(
                ask("echo dropship-done 0; return 5"),
                (5, "dropship-done 0\n".to_owned()),
                "{sh}"
            );
            assert_eq!(
                ask("printf 'no newline'"),
                (0, "no newline".to_owned()),
                "{sh}"
            );
            assert!(counting(&file), "{sh}: still running between scripts");
            // The last script runs once the background command has ended.
            writeln!(
                stdin,
                "{CONTROL_FINISH}cat {}",
                quote(file.to_str().unwrap())
            )
            .unwrap();
            drop(stdin);
            let mut rest = String::new();
            out.read_to_string(&mut rest).unwrap();
            assert!(child.wait().unwrap().success(), "{sh}");
            let last: u64 = rest
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{sh}: {rest}"));
            assert!(stopped(&file), "{sh}: stopped");
            let now: u64 = std::fs::read_to_string(&file)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(
                now, last,
                "{sh}: nothing written after the last script read it"
            );
            // A closed channel without a last line only stops the background command.
            let (mut child, stdin, _out) = control_shell(sh, &file);
            assert!(counting(&file), "{sh}");
            drop(stdin);
            assert!(child.wait().unwrap().success(), "{sh}");
            assert!(stopped(&file), "{sh}: stopped when the channel closed");
        }
    }

    #[test]
    fn killable_and_until_closed_run_their_command_and_end() {
        // Closing stdin kills a killable command: that is the point of it.
        for sh in shells() {
            let (out, _) = run_as_channel(sh, &killable("sleep 5; echo survived"));
            assert_eq!(out, format!("{SH_MARKER}\n"), "{sh}");
        }
        for sh in shells() {
            let cmd = "echo \"it's $((6*7))\"; cat; exit 3";
            let (out, code) = run_as_channel_with(sh, &killable(cmd), true);
            assert_eq!(out, format!("{SH_MARKER}\nit's 42\n"), "{sh}");
            assert_eq!(code, 3, "{sh}");
            let (out, code) = run_as_channel(sh, &until_closed("echo bg"));
            assert_eq!(code, 0, "{sh}");
            assert!(out.starts_with(SH_MARKER), "{sh}: {out}");
        }
    }
}

#[cfg(test)]
mod key_file_tests {
    use super::*;

    #[test]
    fn key_files_say_whether_they_are_encrypted() {
        let dir = std::env::temp_dir().join(format!("dropship-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("pem");
        std::fs::write(
            &pem,
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        assert_eq!(inspect_key_file(&pem), KeyFileInfo::Pem { encrypted: true });
        std::fs::write(&pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n").unwrap();
        assert_eq!(inspect_key_file(&pem), KeyFileInfo::Pem { encrypted: true });
        std::fs::write(&pem, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n").unwrap();
        assert_eq!(
            inspect_key_file(&pem),
            KeyFileInfo::Pem { encrypted: false }
        );
        std::fs::write(&pem, "not a key").unwrap();
        assert_eq!(inspect_key_file(&pem), KeyFileInfo::Unknown);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            certificate_beside(Path::new("/k/id_ed25519")),
            Path::new("/k/id_ed25519-cert.pub")
        );
        assert!(libssh2_can_use("ssh-ed25519") && !libssh2_can_use("sk-ssh-ed25519@openssh.com"));
    }
}
