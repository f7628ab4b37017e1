//! FTP and FTPS (explicit `AUTH TLS`) uploads with suppaftp's blocking client.
//!
//! Passive mode (EPSV, falling back to PASV for servers that refuse it), binary type,
//! timeouts on the control and every data connection, `APPE` to resume a `.part`, and
//! `RNFR`/`RNTO` (rename(2) on the server) to put the verified file in place.
//!
//! FTPS runs on rustls ([`super::tls`]): every data connection is made with the control
//! connection's `Arc<ClientConfig>` and server name, so it resumes the control connection's
//! TLS session (TLS 1.2 session ID or ticket, TLS 1.3 ticket), which vsftpd's default
//! `require_ssl_reuse=YES`, ProFTPD and FileZilla Server demand. native-tls (OpenSSL) made a
//! fresh session on every data connection and exposes no way to resume one: vsftpd answered
//! `522 SSL connection failed: session reuse required`.

use super::{Files, STALL_POLL, StallGuard, TransportError, dir_of, pump};
use crate::config::Source;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use suppaftp::types::FileType;
use suppaftp::{FtpError, ImplFtpStream, Mode, Status};

/// suppaftp's client over [`TlsConnect`].
pub type RustlsFtpStream = ImplFtpStream<TlsData>;

/// suppaftp's TLS connector for rustls, with one difference: a connection reads what the
/// server sent before it is closed. TLS 1.3 tickets are single-use, the server sends a new
/// one on every resumed connection, and an upload never reads: without this, the tickets of
/// the control connection ran out after two data connections and vsftpd answered 522.
#[derive(Debug)]
pub struct TlsConnect(pub Arc<ClientConfig>);

impl suppaftp::TlsConnector for TlsConnect {
    type Stream = TlsData;

    fn connect(&self, domain: &str, stream: TcpStream) -> suppaftp::FtpResult<TlsData> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| FtpError::SecureError(e.to_string()))?;
        let conn = ClientConnection::new(Arc::clone(&self.0), name)
            .map_err(|e| FtpError::SecureError(e.to_string()))?;
        Ok(TlsData {
            stream: StreamOwned::new(conn, stream),
            close: true,
        })
    }
}

/// A TLS connection (control or data) made by [`TlsConnect`].
#[derive(Debug)]
pub struct TlsData {
    stream: StreamOwned<ClientConnection, TcpStream>,
    close: bool,
}

impl suppaftp::TlsStream for TlsData {
    type InnerStream = StreamOwned<ClientConnection, TcpStream>;

    fn tcp_stream(mut self) -> suppaftp::FtpResult<TcpStream> {
        self.close = false;
        self.stream
            .sock
            .try_clone()
            .map_err(FtpError::ConnectionError)
    }

    fn get_ref(&self) -> &TcpStream {
        &self.stream.sock
    }

    fn mut_ref(&mut self) -> &mut Self::InnerStream {
        &mut self.stream
    }
}

impl Drop for TlsData {
    fn drop(&mut self) {
        use std::io::Write;
        if !self.close {
            return;
        }
        let _ = self.stream.flush();
        self.stream.conn.send_close_notify();
        while self.stream.conn.wants_write() {
            if self.stream.conn.write_tls(&mut self.stream.sock).is_err() {
                return;
            }
        }
        // Half-close, then take in what the server sent (session tickets) until it closes
        // too; bounded, this is only for the next connection's resumption.
        let sock = &mut self.stream.sock;
        if sock.shutdown(std::net::Shutdown::Write).is_err()
            || sock.set_read_timeout(Some(Duration::from_secs(1))).is_err()
        {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            match self.stream.conn.read_tls(&mut self.stream.sock) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if self.stream.conn.process_new_packets().is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// Data is copied in pieces this big: the default small copy buffer halves throughput.
const CHUNK: usize = 4 << 20;

/// How to reach one FTP target.
#[derive(Debug, Clone)]
pub struct FtpParams {
    pub host: String,
    pub address: String,
    pub port: u16,
    pub login: String,
    pub password: Option<(crate::config::Secret, Source)>,
    pub account: Option<crate::config::Secret>,
    pub tls: bool,
    pub tls_verify: bool,
    pub tls_ca: Option<PathBuf>,
    pub timeout: Duration,
}

pub struct FtpFiles {
    ftp: RustlsFtpStream,
    /// How this connection was made, to open a [`Files::twin`].
    params: FtpParams,
    host: String,
    login: String,
    timeout: Duration,
    /// The login's home directory, where relative paths start.
    home: String,
}

/// The reply code, read from the reply line itself: suppaftp's `Status` knows only some
/// codes and says 0 for others (522, 534, ...).
fn reply(e: &FtpError) -> Option<u32> {
    match e {
        FtpError::UnexpectedResponse(r) => {
            let digits = r.body.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit));
            match digits {
                Some(d) => std::str::from_utf8(d).ok()?.parse().ok(),
                None => Some(r.status.code()),
            }
        }
        _ => None,
    }
}

/// The server's reply as it sent it (it starts with its code: adding the code again made
/// "451 451 ...").
fn reply_text(e: &FtpError) -> String {
    match e {
        FtpError::UnexpectedResponse(r) => {
            let body = String::from_utf8_lossy(&r.body);
            let body = body.trim();
            if body.starts_with(|c: char| c.is_ascii_digit()) {
                body.to_owned()
            } else {
                format!("{} {body}", r.status.code())
            }
        }
        other => other.to_string(),
    }
}

/// Whether a reply says the disk or the login's quota is full: 452 (RFC 959 "insufficient
/// storage") and 552 ("exceeded storage allocation"), and the texts servers use for it with
/// other codes (vsftpd: "451 Failure writing to local file"; "No space left on device",
/// "Disk full", "Quota exceeded").
fn no_space(code: u32, text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    matches!(code, 452 | 552)
        || ((400..600).contains(&code)
            && (t.contains("no space left")
                || t.contains("disk full")
                || t.contains("quota")
                || (code == 451 && t.contains("failure writing to local file"))))
}

/// Whether a refused `APPE` means "this server does not append/restart" (ProFTPD's default
/// `AllowStoreRestart off`: "451 ... Append/Restart not permitted"; others answer 502/504
/// or 550 with a similar text), as opposed to a path or space problem.
pub(crate) fn append_refused(code: Option<u32>, text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    matches!(code, Some(500..=504))
        || (matches!(code, Some(451 | 550 | 553))
            && (t.contains("append") || t.contains("restart") || t.contains("not permitted")))
}

impl FtpFiles {
    pub fn connect(p: &FtpParams) -> Result<FtpFiles, TransportError> {
        let addr_text = format!("{}:{}", p.address, p.port);
        let connect_err = |detail: String| TransportError::Connect {
            host: p.host.clone(),
            addr: addr_text.clone(),
            detail,
        };
        let addr = (p.address.as_str(), p.port)
            .to_socket_addrs()
            .map_err(|e| connect_err(format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| connect_err("no address".into()))?;
        let tcp =
            TcpStream::connect_timeout(&addr, p.timeout).map_err(|e| connect_err(e.to_string()))?;
        let _ = tcp.set_read_timeout(Some(p.timeout));
        let _ = tcp.set_write_timeout(Some(p.timeout));
        let _ = tcp.set_nodelay(true);
        let timeout = p.timeout;
        let mut ftp = RustlsFtpStream::connect_with_stream(tcp)
            .map_err(|e| connect_err(format!("no FTP greeting: {}", reply_text(&e))))?
            .passive_stream_builder(move |addr| {
                let s = TcpStream::connect_timeout(&addr, timeout)
                    .map_err(FtpError::ConnectionError)?;
                s.set_read_timeout(Some(timeout))
                    .map_err(FtpError::ConnectionError)?;
                s.set_write_timeout(Some(timeout))
                    .map_err(FtpError::ConnectionError)?;
                Ok(s)
            });
        ftp.set_mode(Mode::ExtendedPassive);
        let mut me_host = p.host.clone();
        if p.tls {
            let config =
                super::tls::client_config(p.tls_verify, p.tls_ca.as_deref()).map_err(|detail| {
                    TransportError::Tls {
                        host: p.host.clone(),
                        detail,
                    }
                })?;
            ftp = ftp
                .into_secure(TlsConnect(config), &p.address)
                .map_err(|e| TransportError::Tls {
                    host: p.host.clone(),
                    detail: format!(
                        "{}\n  help: for a self-signed server set `tls_ca = CERT.pem` (or, knowingly, `tls_verify = no`)",
                        reply_text(&e)
                    ),
                })?;
            me_host = p.host.clone();
        }
        let auth_err = |what: String| TransportError::Auth {
            host: p.host.clone(),
            login: p.login.clone(),
            tried: what,
            hint: "the rule (login/password/account) or ~/.netrc".to_owned(),
        };
        let tried = match &p.password {
            Some((_, s)) => format!("password from {}", s.as_str()),
            None => "no password".to_owned(),
        };
        let password = p.password.as_ref().map_or("", |(s, _)| s.expose());
        match ftp.login(p.login.as_str(), password) {
            Ok(()) => {}
            Err(e) if reply(&e) == Some(332) => {
                let acct = p.account.as_ref().map(|a| a.expose()).ok_or_else(|| {
                    auth_err(format!(
                        "{tried}; the server asks for an account (set `account`)"
                    ))
                })?;
                ftp.custom_command(
                    format!("ACCT {acct}"),
                    &[Status::LoggedIn, Status::CommandOk],
                )
                .map_err(|e| auth_err(format!("{tried}, account: {}", reply_text(&e))))?;
            }
            Err(e) if matches!(reply(&e), Some(530) | Some(331)) => {
                return Err(auth_err(format!("{tried} ({})", reply_text(&e))));
            }
            Err(e) => {
                return Err(TransportError::Io {
                    host: p.host.clone(),
                    op: "FTP login".into(),
                    detail: reply_text(&e),
                });
            }
        }
        let mut me = FtpFiles {
            ftp,
            params: p.clone(),
            host: me_host,
            login: p.login.clone(),
            timeout: p.timeout,
            home: String::new(),
        };
        me.ftp
            .transfer_type(FileType::Binary)
            .map_err(|e| me.err("TYPE I", "", e))?;
        me.home = me.ftp.pwd().map_err(|e| me.err("PWD", "", e))?;
        Ok(me)
    }

    fn err(&self, op: &str, path: &str, e: FtpError) -> TransportError {
        let text = reply_text(&e);
        match (&e, reply(&e)) {
            (FtpError::ConnectionError(io), _)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                self.give_up();
                TransportError::Timeout {
                    host: self.host.clone(),
                    during: format!("{op} `{path}`"),
                    secs: self.timeout.as_secs(),
                }
            }
            (_, Some(code)) if no_space(code, &text) => TransportError::Refused {
                host: self.host.clone(),
                what: format!("no space left on {} in {}", self.host, dir_of(path)),
                detail: format!("{op} `{path}`: {text}"),
                help: if code == 552 || text.to_ascii_lowercase().contains("quota") {
                    "raise the login's quota, free space, or change `dest_dir`".to_owned()
                } else {
                    "free space on the host or change `dest_dir`".to_owned()
                },
            },
            (_, Some(550 | 553 | 532)) => TransportError::Permission {
                host: self.host.clone(),
                login: self.login.clone(),
                dir: dir_of(path).to_owned(),
                what: format!("{op} `{path}`"),
                detail: text,
            },
            _ => TransportError::Io {
                host: self.host.clone(),
                op: format!("{op} `{path}`"),
                detail: text,
            },
        }
    }

    /// The connection stalled for a whole `timeout`: shut the control socket down so that
    /// what would still wait on it (the end of a transfer, `QUIT` when this is dropped)
    /// fails at once, and a stall costs one `timeout`, not several.
    fn give_up(&self) {
        let _ = self.ftp.get_ref().shutdown(std::net::Shutdown::Both);
    }

    /// Runs a data command, falling back from EPSV to PASV once if the server refuses it.
    fn with_pasv_fallback<R>(
        &mut self,
        f: impl Fn(&mut RustlsFtpStream) -> Result<R, FtpError>,
    ) -> Result<R, FtpError> {
        match f(&mut self.ftp) {
            Err(e) if matches!(reply(&e), Some(500..=502)) => {
                self.ftp.set_mode(Mode::Passive);
                f(&mut self.ftp)
            }
            other => other,
        }
    }

    fn is_dir(&mut self, path: &str) -> bool {
        let ok = self.ftp.cwd(path).is_ok();
        let _ = self.ftp.cwd(&self.home);
        ok
    }
}

impl Files for FtpFiles {
    fn mkdir_p(&mut self, dir: &str) -> Result<(), TransportError> {
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
            if let Err(e) = self.ftp.mkdir(&cur) {
                // 550 is also what "already exists" looks like; a connection error is not.
                if reply(&e).is_none() || !self.is_dir(&cur) {
                    return Err(self.err("mkdir", &cur, e));
                }
            }
        }
        Ok(())
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, TransportError> {
        match self.ftp.size(path) {
            Ok(n) => Ok(Some(n as u64)),
            Err(e) if reply(&e) == Some(550) => Ok(None),
            Err(e) => Err(self.err("SIZE", path, e)),
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
        let opened = self.with_pasv_fallback(|ftp| {
            if offset > 0 {
                ftp.append_with_stream(remote)
            } else {
                ftp.put_with_stream(remote)
            }
        });
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) if offset > 0 && append_refused(reply(&e), &reply_text(&e)) => {
                return Err(TransportError::AppendRefused {
                    host: self.host.clone(),
                    path: remote.to_owned(),
                    detail: reply_text(&e),
                });
            }
            Err(e) => {
                let op = if offset > 0 { "APPE" } else { "STOR" };
                return Err(self.err(op, remote, e));
            }
        };
        let data = stream.get_ref().get_ref();
        let fd = data.as_raw_fd();
        // The guard keeps the stall clock (see StallGuard); the socket only wakes it up.
        let _ = data.set_write_timeout(Some(STALL_POLL.min(self.timeout)));
        let sent = pump(
            &self.host,
            local,
            offset,
            &mut StallGuard::new(&mut stream, fd, self.timeout),
            CHUNK,
            progress,
            &|e| self.err("upload", remote, FtpError::ConnectionError(e)),
        );
        if let Err(e) = sent {
            if matches!(
                e,
                TransportError::Timeout { .. } | TransportError::Cancelled { .. }
            ) {
                // Dropping the stream reads the server's reply to the aborted transfer: after
                // a stall that would wait another `timeout` (err() has shut the socket down),
                // and after a cancel the reply does not matter.
                self.give_up();
                drop(stream);
                return Err(e);
            }
            // The server closed the data connection: its reply says why (452 no space, a
            // quota, ...), and decides whether a retry can help.
            return match stream.finish() {
                Err(fe) if reply(&fe).is_some_and(|c| c >= 400) => {
                    Err(self.err("upload", remote, fe))
                }
                _ => Err(e),
            };
        }
        stream.finish().map_err(|e| self.err("upload", remote, e))
    }

    fn fresh_after_stall(&self) -> bool {
        true
    }

    fn read_small(&mut self, path: &str, max: usize) -> Result<Option<Vec<u8>>, TransportError> {
        use std::io::Read;
        let got = self.with_pasv_fallback(|ftp| {
            ftp.retr(path, |r| {
                let mut buf = Vec::new();
                r.take(max as u64 + 1)
                    .read_to_end(&mut buf)
                    .map_err(FtpError::ConnectionError)?;
                Ok(buf)
            })
        });
        match got {
            Ok(buf) if buf.len() > max => Err(TransportError::Io {
                host: self.host.clone(),
                op: format!("RETR `{path}`"),
                detail: format!("longer than the {max} bytes dropship writes there"),
            }),
            Ok(buf) => Ok(Some(buf)),
            Err(e) if reply(&e) == Some(550) => Ok(None),
            Err(e) => Err(self.err("RETR", path, e)),
        }
    }

    fn write_small(&mut self, path: &str, data: &[u8]) -> Result<(), TransportError> {
        self.with_pasv_fallback(|ftp| ftp.put_file(path, &mut std::io::Cursor::new(data)))
            .map(drop)
            .map_err(|e| self.err("STOR", path, e))
    }

    fn modified(&mut self, path: &str) -> Result<Option<i64>, TransportError> {
        match self.ftp.mdtm(path) {
            // RFC 3659: MDTM answers in UTC.
            Ok(t) => Ok(Some(t.and_utc().timestamp())),
            Err(e) if reply(&e) == Some(550) => Ok(None),
            Err(e) => Err(self.err("MDTM", path, e)),
        }
    }

    fn twin(&self) -> Result<Box<dyn Files>, TransportError> {
        Ok(Box::new(FtpFiles::connect(&self.params)?))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), TransportError> {
        self.ftp
            .rename(from, to)
            .map_err(|e| self.err("rename", to, e))
    }

    fn remove(&mut self, path: &str) -> Result<(), TransportError> {
        match self.ftp.rm(path) {
            Err(e) if reply(&e) != Some(550) => Err(self.err("remove", path, e)),
            _ => Ok(()),
        }
    }

    fn create_dir(&mut self, path: &str) -> Result<bool, TransportError> {
        match self.ftp.mkdir(path) {
            Ok(()) => Ok(true),
            Err(e) if reply(&e).is_some() && self.is_dir(path) => Ok(false),
            Err(e) => Err(self.err("mkdir", path, e)),
        }
    }

    fn remove_dir(&mut self, path: &str) -> Result<(), TransportError> {
        match self.ftp.rmdir(path) {
            Err(e) if reply(&e) != Some(550) => Err(self.err("rmdir", path, e)),
            _ => Ok(()),
        }
    }
}

impl Drop for FtpFiles {
    fn drop(&mut self) {
        let _ = self.ftp.quit();
    }
}
