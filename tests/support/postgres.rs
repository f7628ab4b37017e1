//! A throwaway PostgreSQL server: `initdb` and `postgres` from Debian's `postgresql` package
//! (scripts/test installs it), run as the unprivileged `postgres` system user, listening on
//! 127.0.0.1 on a leased port (see [`super::ports`]) with its socket in its own directory,
//! killed and deleted on drop.
//!
//! Two roles: `dropship` (superuser, password [`PG_PASSWORD`] by scram-sha-256) and
//! `reader` (may connect and read, never write). Tests get a fresh database each
//! ([`PgServer::new_database`]), so one server serves a whole test binary.
//!
//! The [`shared`] server of the journal suite trusts loopback connections: the suite runs in
//! one process whose environment (`PGPASSFILE`) cannot be changed safely while threads run.
//! Passwords are tested on servers of their own ([`PgServer::start`]) by runs of the binary,
//! which get `PGPASSFILE` in their environment.

use super::ports::{PortLease, reserve};
use super::process::ServerProcess;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The newest installed server's binaries (`/usr/lib/postgresql/VERSION/bin`, Debian's
/// layout), or the path where Debian bookworm's would be.
pub fn pg_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map_or_else(
        || PathBuf::from("/usr/lib/postgresql/15/bin"),
        |(_, bin)| bin,
    )
}
pub const PG_USER: &str = "dropship";
/// `:`, `\` and a space on purpose: `.pgpass` escapes them.
pub const PG_PASSWORD: &str = "pg:pa\\ss word";
pub const PG_READER: &str = "reader";
pub const PG_READER_PASSWORD: &str = "read-only";

/// Whether the server binaries and the `postgres` user are there (and we are root).
pub fn available() -> Option<String> {
    if !pg_bin().join("postgres").exists() {
        return Some(
            "no PostgreSQL server in /usr/lib/postgresql (apt-get install postgresql)".into(),
        );
    }
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (the server runs as the postgres user)".into());
    }
    if ids("postgres").is_none() {
        return Some("no `postgres` system user".into());
    }
    None
}

/// A PostgreSQL server, or `None` (after a loud skip notice; a failure under CI).
pub fn server_or_skip(test: &str) -> Option<PgServer> {
    if skip_reason(test) {
        return None;
    }
    Some(PgServer::start())
}

fn skip_reason(test: &str) -> bool {
    let Some(reason) = available() else {
        return false;
    };
    assert!(
        !super::is_ci(),
        "LIVE TEST {test} cannot run under CI=true: {reason}"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n*** SKIPPED LIVE TEST {test}: {reason} ***"
    );
    true
}

/// One server shared by every test of this process (killed when the process exits; its
/// directory is removed by the next process that starts one).
pub fn shared() -> Option<&'static PgServer> {
    static SHARED: OnceLock<Option<PgServer>> = OnceLock::new();
    SHARED
        .get_or_init(|| (!skip_reason("shared PostgreSQL")).then(|| PgServer::start_with(true)))
        .as_ref()
}

fn ids(user: &str) -> Option<(u32, u32)> {
    let out = Command::new("id").arg("-u").arg(user).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").arg("-g").arg(user).output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

pub struct PgServer {
    process: Option<ServerProcess>,
    dir: PathBuf,
    port: u16,
    _lease: PortLease,
    /// A `.pgpass` (mode 0600) with both roles' passwords, for `PGPASSFILE`.
    pub pgpass: PathBuf,
    databases: AtomicUsize,
}

const DIR_PREFIX: &str = "/tmp/dropship-pg-";

impl PgServer {
    /// A server that asks every role for its password.
    pub fn start() -> PgServer {
        PgServer::start_with(false)
    }

    /// `trust_loopback`: TCP connections from 127.0.0.1 need no password.
    pub fn start_with(trust_loopback: bool) -> PgServer {
        remove_stale_dirs();
        let (uid, gid) = ids("postgres").expect("postgres user");
        let dir = PathBuf::from(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PG_PASSWORD).unwrap();
        for p in [&dir, &dir.join("sock"), &pwfile] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
        super::run(
            Command::new(pg_bin().join("initdb"))
                .args(["-D", "data", "-U", PG_USER, "--auth=scram-sha-256"])
                .arg(if trust_loopback {
                    "--auth-host=trust"
                } else {
                    "--auth-host=scram-sha-256"
                })
                .arg("--pwfile=pw")
                .args(["-E", "UTF8", "--no-sync", "--locale=C.UTF-8"])
                .current_dir(&dir)
                .uid(uid)
                .gid(gid),
        );
        let lease = reserve(1, &[Ipv4Addr::LOCALHOST]);
        let pgpass = dir.join("pgpass");
        let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        std::fs::write(
            &pgpass,
            format!(
                "127.0.0.1:*:*:{PG_USER}:{}\n127.0.0.1:*:*:{PG_READER}:{}\n",
                escape(PG_PASSWORD),
                escape(PG_READER_PASSWORD)
            ),
        )
        .unwrap();
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut server = PgServer {
            process: None,
            dir,
            port: lease.first(),
            _lease: lease,
            pgpass,
            databases: AtomicUsize::new(0),
        };
        server.run();
        server.psql(
            "postgres",
            &format!(
                "CREATE ROLE {PG_READER} LOGIN PASSWORD '{PG_READER_PASSWORD}'; \
                 REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
            ),
        );
        server
    }

    /// Starts the server on its data directory (again, after [`PgServer::stop`]).
    pub fn run(&mut self) {
        let (uid, gid) = ids("postgres").expect("postgres user");
        let mut cmd = Command::new(pg_bin().join("postgres"));
        cmd.args(["-D", "data", "-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.join("sock").display()
            ))
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .current_dir(&self.dir)
            .uid(uid)
            .gid(gid);
        let log = self.dir.join("server.log");
        self.process = Some(ServerProcess::spawn("postgres", cmd, &log, false));
        let ready = super::wait_until(Duration::from_secs(30), || {
            Command::new(pg_bin().join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(
            ready,
            "postgres did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Turns TLS on with a certificate for 127.0.0.1 signed by a test CA, refuses every
    /// connection that is not TLS (`hostnossl … reject` first in `pg_hba.conf`, so a login
    /// that works proves TLS was used), and restarts. Returns the CA certificate, for
    /// `sslrootcert`, and another CA's, which must not be trusted.
    pub fn require_tls(&mut self) -> (PathBuf, PathBuf) {
        let (uid, gid) = ids("postgres").expect("postgres user");
        let tls = self.dir.join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        let openssl = |args: &[&str]| {
            super::run(Command::new("openssl").args(args).current_dir(&tls));
        };
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                &format!("/CN=dropship test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ]);
        }
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            tls.join("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            "ext",
            "-out",
            "server.crt",
        ]);
        for f in ["server.crt", "server.key"] {
            std::os::unix::fs::chown(tls.join(f), Some(uid), Some(gid)).unwrap();
        }
        std::fs::set_permissions(
            tls.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let data = self.dir.join("data");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{0}/server.crt'\nssl_key_file = '{0}/server.key'\n",
            tls.display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        let hba = std::fs::read_to_string(data.join("pg_hba.conf")).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("hostnossl all all 0.0.0.0/0 reject\n{hba}"),
        )
        .unwrap();
        self.stop();
        self.run();
        (tls.join("ca.crt"), tls.join("other-ca.crt"))
    }

    /// Kills the server (SIGKILL of the whole tree: an outage, not a clean shutdown).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs SQL as `dropship` through the server's socket; returns psql's unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        super::run(&mut self.psql_command(db, sql))
    }

    /// [`PgServer::psql`], `None` if it fails (a table not created yet, the server down).
    pub fn try_psql(&self, db: &str, sql: &str) -> Option<String> {
        let out = self.psql_command(db, sql).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn psql_command(&self, db: &str, sql: &str) -> Command {
        let (uid, gid) = ids("postgres").expect("postgres user");
        let mut c = Command::new(pg_bin().join("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", &self.dir.join("sock").display().to_string()])
            .args(["-p", &self.port.to_string(), "-U", PG_USER, "-d", db])
            .args(["-c", sql])
            .env("PGPASSWORD", PG_PASSWORD)
            .uid(uid)
            .gid(gid);
        c
    }

    /// A new empty database (owned by `dropship`, readable by `reader`); returns its name.
    pub fn new_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("journal_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.psql(
            &name,
            &format!(
                "GRANT CONNECT ON DATABASE {name} TO {PG_READER}; \
                 ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {PG_READER};"
            ),
        );
        name
    }

    /// `postgres://USER@127.0.0.1:PORT/DB?sslmode=disable` (loopback: no TLS).
    pub fn url(&self, user: &str, db: &str) -> String {
        format!(
            "postgres://{user}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now())
}

/// Directories of servers whose test process is gone (a static server is never dropped).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("dropship-pg-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
