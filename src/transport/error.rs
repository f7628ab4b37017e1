//! Transport errors, classified so the retry loop knows what a retry can fix.
//!
//! A dropped connection, a stall or a checksum mismatch may go away on the next attempt;
//! a wrong password, an unknown host key or a read-only directory will not, and retrying
//! them only delays the answer (and can lock an account).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{host}: cannot connect to {addr}: {detail}")]
    Connect {
        host: String,
        addr: String,
        detail: String,
    },
    #[error(
        "{host}: no answer for {} while {during} (timeout; raise `timeout` in the rule if the link is slow)",
        whole_secs(*.secs)
    )]
    Timeout {
        host: String,
        during: String,
        secs: u64,
    },
    #[error(
        "{host}: host key is not known: {key_type} SHA256:{fingerprint}\n  help: check the fingerprint with the host's owner, then either add it with `ssh-keyscan -p {port} {host} >> ~/.ssh/known_hosts` or set `host_key = accept-new` in the rule"
    )]
    HostKeyUnknown {
        host: String,
        port: u16,
        key_type: String,
        fingerprint: String,
    },
    #[error(
        "{host}: HOST KEY CHANGED: the server now presents {key_type} SHA256:{fingerprint}, which does not match {known_hosts}\n  help: this may be an attack; if the host was really reinstalled, remove the old key with `ssh-keygen -R '{}' -f {known_hosts}`",
        super::known_hosts::entry_name(host, *port)
    )]
    HostKeyChanged {
        host: String,
        port: u16,
        key_type: String,
        fingerprint: String,
        known_hosts: String,
    },
    #[error(
        "{host}: login as `{login}` refused (tried {tried})\n  help: check the credentials in {hint}"
    )]
    Auth {
        host: String,
        login: String,
        /// Which credential sources were tried, e.g. "password from netrc, key /k"; never a secret.
        tried: String,
        hint: String,
    },
    #[error(
        "{host}: permission denied on {dir}: {what}: {detail}\n  help: check that `{login}` may write there, or change `dest_dir`"
    )]
    Permission {
        host: String,
        login: String,
        /// The directory the login may not write (or search), e.g. `/srv` for "mkdir
        /// `/srv/app`".
        dir: String,
        /// The operation and its path, e.g. "mkdir `/srv/app`".
        what: String,
        detail: String,
    },
    #[error(
        "{host}: `{command}` was still running after {} and was killed on the host\n  help: raise `{knob}` in the rule if it needs longer",
        whole_secs(*.secs)
    )]
    CommandTimeout {
        host: String,
        command: String,
        secs: u64,
        /// The rule key that set the limit (`step_timeout` for a dispatch's commands).
        knob: &'static str,
    },
    /// The host refused for a reason a retry cannot fix: no space, a quota, a name it
    /// cannot store.
    #[error("{host}: {what}: {detail}\n  help: {help}")]
    Refused {
        host: String,
        /// The operation and its path, e.g. "upload `/srv/app.tgz`".
        what: String,
        detail: String,
        help: String,
    },
    /// The server does not continue a file (`APPE`/`REST STOR` refused, e.g. ProFTPD's
    /// default `AllowStoreRestart off`): the upload starts its `.part` over instead.
    #[error("{host}: the server refuses to append to `{path}`: {detail}")]
    AppendRefused {
        host: String,
        path: String,
        detail: String,
    },
    #[error("{host}: upload of `{path}` did not verify: {detail}")]
    Verify {
        host: String,
        path: String,
        detail: String,
    },
    #[error("{host}: {op} failed: {detail}")]
    Io {
        host: String,
        op: String,
        detail: String,
    },
    #[error("{host}: TLS: {detail}")]
    Tls { host: String, detail: String },
    #[error("cannot read the bundle {path}: {detail}")]
    Local { path: PathBuf, detail: String },
    #[error("{host}: cancelled")]
    Cancelled { host: String },
    #[error("{host}: {detail}")]
    Setup { host: String, detail: String },
    /// An SSH problem a retry cannot fix, with what to do: a key that cannot be used, a
    /// host certificate or host key type that cannot be trusted, a missing subsystem, a
    /// server that hung up after too many failed keys.
    #[error("{host}: {detail}\n  help: {help}")]
    Ssh {
        host: String,
        detail: String,
        help: String,
    },
}

impl TransportError {
    /// The host has no room for the upload into `dir`; `needed` is the bytes still to
    /// send (the whole bundle once its `.part` is removed).
    pub fn no_space(host: &str, dir: &str, needed: u64, detail: String) -> TransportError {
        TransportError::Refused {
            host: host.to_owned(),
            what: format!(
                "no space left on {host} in {dir} ({} MiB needed)",
                needed.div_ceil(1 << 20)
            ),
            detail,
            help: "free space on the host or change `dest_dir`".to_owned(),
        }
    }

    /// The login's quota on the host has no room for the upload into `dir`.
    pub fn quota_exceeded(host: &str, dir: &str, detail: String) -> TransportError {
        TransportError::Refused {
            host: host.to_owned(),
            what: format!("quota exceeded on {host} in {dir}"),
            detail,
            help: "raise the login's quota, free space, or change `dest_dir`".to_owned(),
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TransportError::Connect { .. }
                | TransportError::Timeout { .. }
                | TransportError::Verify { .. }
                | TransportError::Io { .. }
        )
    }
}

/// `secs` as a message shows it: a sub-second `timeout` (`500ms`) truncates to 0 whole
/// seconds, which would read as "no answer for 0s".
fn whole_secs(secs: u64) -> String {
    if secs == 0 {
        "under 1s".to_string()
    } else {
        format!("{secs}s")
    }
}
