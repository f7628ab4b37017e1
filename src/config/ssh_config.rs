//! `~/.ssh/config`, read the way `ssh` reads it (through `ssh2-config`), for the hosts it
//! names: `HostName`, `Port`, `User`, `IdentityFile`.
//!
//! Release engineers already describe their fleet there; a rule that says `host = web1`
//! should reach the same machine, port and account as `ssh web1` does. Values the rule
//! states explicitly win, as command-line options win over the file for `ssh`.

use ssh2_config::{ParseRule, SshConfig};
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// What `~/.ssh/config` says about one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshHost {
    pub host_name: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_files: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{path}: cannot read ssh config: {detail}\n  help: fix the file (run `ssh -G HOST` to see what ssh makes of it)"
)]
pub struct SshConfigError {
    pub path: PathBuf,
    pub detail: String,
}

/// The parsed file, or nothing when there is none.
#[derive(Debug, Clone, Default)]
pub struct SshHosts {
    config: Option<SshConfig>,
}

impl SshHosts {
    pub fn empty() -> SshHosts {
        SshHosts::default()
    }

    /// `~/.ssh/config` of `$HOME`; a missing file means no entries.
    pub fn load_default() -> Result<SshHosts, SshConfigError> {
        match std::env::var_os("HOME") {
            Some(home) => SshHosts::load(&PathBuf::from(home).join(".ssh").join("config")),
            None => Ok(SshHosts::empty()),
        }
    }

    pub fn load(path: &Path) -> Result<SshHosts, SshConfigError> {
        let err = |detail: String| SshConfigError {
            path: path.to_owned(),
            detail,
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SshHosts::empty()),
            Err(e) => return Err(err(e.to_string())),
        };
        let rules = ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS;
        let config = SshConfig::default()
            .parse(&mut BufReader::new(file), rules)
            .map_err(|e| err(e.to_string()))?;
        Ok(SshHosts {
            config: Some(config),
        })
    }

    pub fn lookup(&self, host: &str) -> SshHost {
        let Some(cfg) = &self.config else {
            return SshHost::default();
        };
        let p = cfg.query(host);
        SshHost {
            host_name: p.host_name,
            port: p.port,
            user: p.user,
            identity_files: p.identity_file.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_host_blocks_like_ssh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "Host web1\n  HostName 127.0.0.5\n  Port 2222\n  User deploy\n  IdentityFile /k/id\n\nHost *\n  User fallback\n  Port 2200\n",
        )
        .unwrap();
        let hosts = SshHosts::load(&path).unwrap();
        let w = hosts.lookup("web1");
        assert_eq!(w.host_name.as_deref(), Some("127.0.0.5"));
        assert_eq!(w.port, Some(2222));
        assert_eq!(w.user.as_deref(), Some("deploy"));
        assert_eq!(w.identity_files, [PathBuf::from("/k/id")]);
        let other = hosts.lookup("db1");
        assert_eq!(other.user.as_deref(), Some("fallback"));
        assert_eq!(other.host_name, None);
        assert!(
            SshHosts::load(&dir.path().join("missing"))
                .unwrap()
                .lookup("x")
                .user
                .is_none()
        );
    }
}
