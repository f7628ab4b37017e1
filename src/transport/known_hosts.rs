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

/// The known_hosts files as libssh2 reads them, in order: read once per connection and used
/// both to choose the host key types to ask for and to check the key presented.
pub struct Loaded {
    files: Vec<(PathBuf, Result<ssh2::KnownHosts, String>)>,
}

/// Reads the files of `files` that exist.
pub fn load(session: &Session, files: &KnownHostsFiles) -> Loaded {
    load_with(session, files, &[])
}

/// Reads the files of `files` that exist, with `also` (more files from ssh_config's
/// `UserKnownHostsFile`/`GlobalKnownHostsFile`, read-only) between the user's and dropship's.
pub fn load_with(session: &Session, files: &KnownHostsFiles, also: &[PathBuf]) -> Loaded {
    let candidates = files
        .user
        .iter()
        .chain(also)
        .chain(std::iter::once(&files.dropship));
    let files = candidates
        .filter(|f| f.is_file())
        .map(|file| {
            let kh = session
                .known_hosts()
                .map_err(|e| e.to_string())
                .and_then(|mut kh| {
                    kh.read_file(file, KnownHostFileKind::OpenSSH)
                        .map(|_| kh)
                        .map_err(|e| {
                            format!(
                                "cannot read known_hosts {}: {e}\n  help: fix or move the file",
                                file.display()
                            )
                        })
                });
            (file.clone(), kh)
        })
        .collect();
    Loaded { files }
}

/// The key type named at the start of an SSH public key blob.
fn blob_type(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

/// The host key algorithms to ask for, when the files already hold keys for `host:port`:
/// only those types, as OpenSSH does. Otherwise a host recorded by its ECDSA key, whose
/// server also has an ed25519 one, would negotiate ed25519 and look "changed". Hashed
/// entries are found by checking each recorded key against the host. Empty when nothing
/// is recorded (then any type may be negotiated and `host_key` decides).
pub fn recorded_algorithms(known: &Loaded, host: &str, port: u16) -> Vec<&'static str> {
    let mut algs: Vec<&'static str> = Vec::new();
    // A file that cannot be read is reported by `verify`, after the handshake.
    for kh in known.files.iter().filter_map(|(_, kh)| kh.as_ref().ok()) {
        for entry in kh.hosts().unwrap_or_default() {
            let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(entry.key()) else {
                continue;
            };
            if !matches!(kh.check_port(host, port, &blob), CheckResult::Match) {
                continue;
            }
            let names: &[&'static str] = match blob_type(&blob).as_deref() {
                Some("ssh-ed25519") => &["ssh-ed25519"],
                Some("ecdsa-sha2-nistp256") => &["ecdsa-sha2-nistp256"],
                Some("ecdsa-sha2-nistp384") => &["ecdsa-sha2-nistp384"],
                Some("ecdsa-sha2-nistp521") => &["ecdsa-sha2-nistp521"],
                Some("ssh-rsa") => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
                _ => &[],
            };
            for n in names {
                if !algs.contains(n) {
                    algs.push(n);
                }
            }
        }
    }
    algs
}

/// Checks the key the server presented in `session` for `host:port`.
pub fn verify(
    session: &Session,
    known: &Loaded,
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

    for (file, kh) in &known.files {
        let kh = kh.as_ref().map_err(|e| setup(e.clone()))?;
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

/// An SSH connect that records nothing, for looking at a host without changing anything
/// (the probe, the console's rollback preview before the user said yes). Under `accept-new`
/// the session checks against a private copy of dropship's known_hosts, removed afterwards:
/// an unknown key is accepted for this look only and reported (`true`), never recorded, so
/// the first real dispatch still records it and says so. Under `strict` nothing is written
/// anyway and the files are used as they are.
pub fn connect_unrecorded(
    params: &super::ssh::SshParams,
    policy: HostKeyPolicy,
) -> (Result<super::ssh::SshSession, TransportError>, bool) {
    use super::ssh::SshSession;
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
