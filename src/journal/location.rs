//! Where the journal lives: a file (SQLite), or a PostgreSQL server a team shares, named
//! `postgres://USER@HOST[:PORT]/DB[?sslmode=…&sslrootcert=…]`.
//!
//! The URL never carries the password: it is shown in errors, history and `ps`, so a
//! password in it is refused. The password comes from `$PGPASSFILE` or `~/.pgpass` (as
//! `psql` reads them) or from the netrc entry of the host. TLS is verified by default
//! (`sslmode=verify-full`, the platform's trust store plus `sslrootcert`); `sslmode=disable`
//! is an explicit choice for a server on loopback or a trusted network. libpq's in-between
//! modes (`prefer`, `require`, `verify-ca`) encrypt without checking who answers, so they are
//! refused rather than quietly weakened or strengthened.

use super::error::JournalError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long connecting to the server may take before the journal reports it unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A journal location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Postgres(PgTarget),
}

/// A PostgreSQL journal, as named by its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub tls: bool,
    pub root_cert: Option<PathBuf>,
}

impl PgTarget {
    /// The URL as shown to the user (it never holds a password).
    pub fn display(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut url = format!(
            "postgres://{}@{host}:{}/{}",
            self.user, self.port, self.dbname
        );
        if !self.tls {
            url.push_str("?sslmode=disable");
        }
        url
    }
}

/// `--journal`'s value: a `postgres://` or `postgresql://` URL, else a file path.
pub fn parse(value: &Path) -> Result<Location, JournalError> {
    let Some(text) = value.to_str() else {
        return Ok(Location::File(value.to_path_buf()));
    };
    let rest = match text
        .strip_prefix("postgres://")
        .or_else(|| text.strip_prefix("postgresql://"))
    {
        Some(rest) => rest,
        None => return Ok(Location::File(value.to_path_buf())),
    };
    parse_url(rest)
}

fn bad(detail: impl Into<String>) -> JournalError {
    JournalError::BadUrl {
        detail: detail.into(),
    }
}

fn parse_url(rest: &str) -> Result<Location, JournalError> {
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, dbname) = main
        .split_once('/')
        .ok_or_else(|| bad("it names no database (postgres://USER@HOST[:PORT]/DB)"))?;
    let (userinfo, hostport) = authority
        .rsplit_once('@')
        .ok_or_else(|| bad("it names no user (postgres://USER@HOST[:PORT]/DB)"))?;
    if userinfo.contains(':') {
        // Not echoed: the part after the colon is a password.
        return Err(bad(
            "it holds a password; put the password in ~/.pgpass (or $PGPASSFILE) or the netrc entry of the host instead",
        ));
    }
    let user = decode(userinfo)?;
    let (host, port) = split_host_port(hostport)?;
    let dbname = decode(dbname)?;
    if user.is_empty() || host.is_empty() || dbname.is_empty() {
        return Err(bad(
            "user, host and database are all required (postgres://USER@HOST[:PORT]/DB)",
        ));
    }
    let mut target = PgTarget {
        user,
        host,
        port,
        dbname,
        tls: true,
        root_cert: None,
    };
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (key, value) {
            ("sslmode", "verify-full") => target.tls = true,
            ("sslmode", "disable") => target.tls = false,
            ("sslmode", other) => {
                return Err(bad(format!(
                    "sslmode={other} is not supported: use sslmode=verify-full (the default: encrypted, server verified) or sslmode=disable (no TLS)"
                )));
            }
            ("sslrootcert", path) => target.root_cert = Some(PathBuf::from(decode(path)?)),
            (other, _) => {
                return Err(bad(format!(
                    "unknown parameter `{other}` (known: sslmode, sslrootcert)"
                )));
            }
        }
    }
    Ok(Location::Postgres(target))
}

fn split_host_port(hostport: &str) -> Result<(String, u16), JournalError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address misses its closing `]`"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None => 5432,
        Some(p) => p
            .parse()
            .map_err(|_| bad(format!("port `{p}` is not a number from 1 to 65535")))?,
    };
    Ok((decode(host)?, port))
}

/// Percent-decoding of one URL part.
fn decode(part: &str) -> Result<String, JournalError> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("a `%` is not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("a percent-encoded part is not UTF-8"))
}

/// The password for `target`: `$PGPASSFILE` or `~/.pgpass` first (libpq's format and rules:
/// `host:port:db:user:password`, `*` matches anything, ignored unless private to the user),
/// then the netrc entry of the host.
pub fn password(target: &PgTarget) -> Result<Option<String>, JournalError> {
    let pgpass = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")));
    if let Some(path) = pgpass
        && let Some(pw) = from_pgpass(&path, target)?
    {
        return Ok(Some(pw));
    }
    if let Some(path) = crate::config::netrc_path(None) {
        let netrc =
            crate::config::netrc::Netrc::load(&path).map_err(|e| JournalError::Credentials {
                detail: e.to_string(),
            })?;
        if let Some(pw) = netrc
            .lookup(&target.host, Some(&target.user))
            .and_then(|e| e.password.as_ref())
        {
            return Ok(Some(pw.expose().to_owned()));
        }
    }
    Ok(None)
}

fn from_pgpass(path: &Path, target: &PgTarget) -> Result<Option<String>, JournalError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(None);
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(JournalError::Credentials {
            detail: format!(
                "{} can be read by other users\n  help: chmod 600 {}",
                path.display(),
                path.display()
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| JournalError::Credentials {
        detail: format!("cannot read {}: {e}", path.display()),
    })?;
    let port = target.port.to_string();
    let wanted = [
        target.host.as_str(),
        port.as_str(),
        target.dbname.as_str(),
        target.user.as_str(),
    ];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = pgpass_fields(line);
        if fields.len() != 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(wanted)
            .all(|(f, w)| f == "*" || f == w)
        {
            return Ok(Some(fields[4].clone()));
        }
    }
    Ok(None)
}

/// Splits a `.pgpass` line on `:`, honouring `\:` and `\\`.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("one field").push(n);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// Connects to `target`: TLS verified unless `sslmode=disable`.
pub fn connect(target: &PgTarget) -> Result<postgres::Client, JournalError> {
    let mut config = postgres::Config::new();
    config
        .user(&target.user)
        .host(&target.host)
        .port(target.port)
        .dbname(&target.dbname)
        .application_name("dropship")
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    if let Some(pw) = password(target)? {
        config.password(pw);
    }
    let url = target.display();
    let result = if target.tls {
        let tls = crate::transport::tls::client_config(true, target.root_cert.as_deref())
            .map_err(|detail| JournalError::Credentials { detail })?;
        config.ssl_mode(postgres::config::SslMode::Require);
        config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(
            std::sync::Arc::unwrap_or_clone(tls),
        ))
    } else {
        config.ssl_mode(postgres::config::SslMode::Disable);
        config.connect(postgres::NoTls)
    };
    result.map_err(|e| super::error::pg_connect_error(&url, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(url: &str) -> PgTarget {
        match parse(Path::new(url)).unwrap() {
            Location::Postgres(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_urls_and_keeps_files_files() {
        let t = pg("postgres://ops@db.example:6543/releases");
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port, t.dbname.as_str()),
            ("ops", "db.example", 6543, "releases")
        );
        assert!(t.tls, "TLS is verified by default");
        let t = pg("postgresql://ops@[::1]/r?sslmode=disable");
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 5432, false));
        assert_eq!(t.display(), "postgres://ops@[::1]:5432/r?sslmode=disable");
        assert_eq!(
            parse(Path::new("/var/lib/j.sqlite")).unwrap(),
            Location::File("/var/lib/j.sqlite".into())
        );
    }

    #[test]
    fn refuses_passwords_and_weak_sslmodes_without_echoing_secrets() {
        let err = parse(Path::new("postgres://ops:hunter2@db/r"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pgpass"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse(Path::new("postgres://ops@db/r?sslmode=require"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("verify-full"), "{err}");
        assert!(parse(Path::new("postgres://db/r")).is_err());
        assert!(parse(Path::new("postgres://ops@db")).is_err());
    }

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:nope\ndb:6543:*:ops:s\\:cr\\\\et\n*:*:*:*:fallback\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = pg("postgres://ops@db:6543/r");
        assert_eq!(from_pgpass(&file, &t).unwrap().as_deref(), Some("s:cr\\et"));
        let t = pg("postgres://x@elsewhere/r");
        assert_eq!(from_pgpass(&file, &t).unwrap().as_deref(), Some("fallback"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = from_pgpass(&file, &t).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("fallback"), "{err}");
    }
}
