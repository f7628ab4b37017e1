//! Host key verification against `~/.ssh/known_hosts` and dropship's own known_hosts.
//!
//! `strict` refuses a host whose key is in neither file. `accept-new` records an unknown
//! key in dropship's file (never in the user's) and goes on. A key that differs from a
//! recorded one is refused under both policies: that is what an attack looks like.

use super::TransportError;
use crate::config::HostKeyPolicy;
use base64::Engine;
use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, Session};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The files consulted, in order; the last is dropship's, where `accept-new` writes.
#[derive(Debug, Clone)]
pub struct KnownHostsFiles {
    pub user: Option<PathBuf>,
    pub dropship: PathBuf,
}

impl KnownHostsFiles {
    /// `~/.ssh/known_hosts` and `$XDG_STATE_HOME/dropship/known_hosts`.
    pub fn default_files() -> KnownHostsFiles {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        KnownHostsFiles {
            user: home.as_ref().map(|h| h.join(".ssh").join("known_hosts")),
            dropship: crate::config::state_dir().join("known_hosts"),
        }
    }
}

fn key_type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// The known_hosts name of a host: `host` on port 22, `[host]:port` elsewhere.
pub fn entry_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks the key the server presented in `session` for `host:port`.
pub fn verify(
    session: &Session,
    host: &str,
    port: u16,
    policy: HostKeyPolicy,
    files: &KnownHostsFiles,
) -> Result<(), TransportError> {
    let setup = |detail: String| TransportError::Setup {
        host: host.to_owned(),
        detail,
    };
    let (key, kind) = session
        .host_key()
        .ok_or_else(|| setup("the server presented no host key".into()))?;
    let key_type = key_type_name(kind).to_owned();
    let fingerprint = session
        .host_key_hash(HashType::Sha256)
        .map(|h| base64::engine::general_purpose::STANDARD_NO_PAD.encode(h))
        .unwrap_or_default();

    let candidates = files.user.iter().chain(std::iter::once(&files.dropship));
    for file in candidates.filter(|f| f.is_file()) {
        let mut kh = session.known_hosts().map_err(|e| setup(e.to_string()))?;
        kh.read_file(file, KnownHostFileKind::OpenSSH)
            .map_err(|e| {
                setup(format!(
                    "cannot read known_hosts {}: {e}\n  help: fix or move the file",
                    file.display()
                ))
            })?;
        match kh.check_port(host, port, key) {
            CheckResult::Match => return Ok(()),
            CheckResult::Mismatch => {
                return Err(TransportError::HostKeyChanged {
                    host: host.to_owned(),
                    port,
                    key_type,
                    fingerprint,
                    known_hosts: file.display().to_string(),
                });
            }
            CheckResult::NotFound => {}
            CheckResult::Failure => {
                return Err(setup(format!(
                    "checking the host key against {} failed",
                    file.display()
                )));
            }
        }
    }
    match policy {
        HostKeyPolicy::Strict => Err(TransportError::HostKeyUnknown {
            host: host.to_owned(),
            port,
            key_type,
            fingerprint,
        }),
        HostKeyPolicy::AcceptNew => {
            let line = format!(
                "{} {key_type} {}\n",
                entry_name(host, port),
                base64::engine::general_purpose::STANDARD.encode(key)
            );
            append(&files.dropship, &line).map_err(|e| {
                setup(format!(
                    "cannot record the new host key in {}: {e}",
                    files.dropship.display()
                ))
            })?;
            tracing::warn!(host, port, key_type, fingerprint, "accepted new host key");
            Ok(())
        }
    }
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())
}
