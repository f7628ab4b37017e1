//! The configuration contract: `dispatch.cfg` rules, `.netrc` credentials, placeholders.
//!
//! Loading reports every problem at once (file, line, what to do) so that `--check` can
//! list them all; nothing here touches the network.

pub mod diagnostic;
pub mod duration;
pub mod health;
pub mod hosts;
pub mod ini;
pub mod limits;
pub mod netrc;
pub mod rules;
pub mod secret;
pub mod shell;
pub mod ssh_config;
pub mod template;

pub use diagnostic::{Diagnostic, Severity};
pub use hosts::HostSpec;
pub use netrc::{Netrc, NetrcError};
pub use rules::{Commands, HostKeyPolicy, Protocol, Rule};
pub use secret::Secret;
pub use ssh_config::{SshHost, SshHosts};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no dispatch.cfg found (looked at: {looked})\n  help: pass --config FILE, set DROPSHIP_CONFIG, or start from dispatch.cfg.example"
    )]
    NotFound { looked: String },
    #[error("cannot read config {path}: {source}\n  help: check the path and its permissions")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(.diagnostics))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

fn render(diags: &[Diagnostic]) -> String {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let mut out: Vec<String> = diags.iter().map(ToString::to_string).collect();
    out.push(format!(
        "{errors} error{} in the configuration",
        if errors == 1 { "" } else { "s" }
    ));
    out.join("\n")
}

/// A loaded, valid `dispatch.cfg`.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// In file order: the first rule that matches wins.
    pub rules: Vec<Rule>,
    /// Problems that do not stop a dispatch (e.g. a rule shadowed by an earlier one).
    pub warnings: Vec<Diagnostic>,
    /// `journal =` of `[DEFAULT]`: the journal a team shares (`--journal` and
    /// `$DROPSHIP_JOURNAL` win over it).
    pub journal: Option<PathBuf>,
}

impl Config {
    /// Parses config text; `path` is used for messages and for relative file paths. A text
    /// over one of the [`limits`] is refused before it is parsed.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let too_large = limits::check_config(text, path);
        if !too_large.is_empty() {
            return Err(ConfigError::Invalid {
                diagnostics: too_large,
            });
        }
        let mut diags = Vec::new();
        let sections = ini::read(text, path, &mut diags);
        let rules = rules::build(&sections, path, &mut diags);
        if diags.iter().any(Diagnostic::is_error) {
            diags.sort_by_key(|d| d.line);
            // The INI walk and the key check stop at the cap on their own; the rules' own
            // checks (at most a few per rule) are cut here.
            if let Some((cut, d)) = diags
                .iter()
                .enumerate()
                .filter(|(_, d)| d.is_error())
                .nth(limits::MAX_ERRORS)
            {
                let note = limits::too_many_errors(path, d.line);
                diags.truncate(cut);
                diags.push(note);
            }
            return Err(ConfigError::Invalid { diagnostics: diags });
        }
        let journal = sections
            .iter()
            .filter(|s| s.name == "DEFAULT")
            .flat_map(|s| &s.entries)
            .filter(|e| e.key == "journal")
            .filter_map(|e| e.value.clone())
            .next_back()
            .map(PathBuf::from);
        Ok(Config {
            path: path.to_owned(),
            rules,
            warnings: diags,
            journal,
        })
    }

    /// Reads and parses `path`. A file over [`limits::MAX_CONFIG_BYTES`] is refused before
    /// it is read whole.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read;
        let read_error = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let too_large = |len| {
            limits::config_size(len, path).map(|d| ConfigError::Invalid {
                diagnostics: vec![d],
            })
        };
        if let Some(e) = too_large(file.metadata().map_err(read_error)?.len()) {
            return Err(e);
        }
        // The size on disk may change, or be unknown (a pipe): read one byte past the limit.
        let mut bytes = Vec::new();
        file.take(limits::MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if let Some(e) = too_large(bytes.len() as u64) {
            return Err(e);
        }
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
            diagnostics: vec![
                Diagnostic::error(
                    path,
                    None,
                    format!(
                        "not UTF-8 text (invalid byte at offset {})",
                        e.utf8_error().valid_up_to()
                    ),
                )
                .hint("save the file as UTF-8"),
            ],
        })?;
        Config::parse(&text, path)
    }

    /// Finds the config file: `--config`, then `$DROPSHIP_CONFIG`, then `./dispatch.cfg`,
    /// then `$XDG_CONFIG_HOME/dropship/dispatch.cfg` (`~/.config` when unset).
    pub fn discover(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
        if let Some(p) = explicit {
            return Ok(p.to_owned());
        }
        if let Some(p) = std::env::var_os("DROPSHIP_CONFIG").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let mut looked = vec![PathBuf::from("./dispatch.cfg")];
        let xdg = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(x) = xdg {
            looked.push(x.join("dropship").join("dispatch.cfg"));
        }
        if let Some(found) = looked.iter().find(|p| p.is_file()) {
            return Ok(found.clone());
        }
        Err(ConfigError::NotFound {
            looked: looked
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The first rule whose regex matches the whole of `bundle` (a file name).
    pub fn match_rule<'b>(&self, bundle: &'b str) -> Option<(&Rule, regex::Captures<'b>)> {
        self.rules
            .iter()
            .find_map(|r| r.regex.captures(bundle).map(|c| (r, c)))
    }
}

/// Which netrc file to read: `--netrc`, else `$NETRC`, else `~/.netrc`.
pub fn netrc_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("NETRC").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".netrc"))
}

/// The name of the user running dropship (the login for scp/sftp/local when nothing else
/// names one), from the password database like `ssh` does, not from `$USER`.
pub fn current_user() -> String {
    // SAFETY: getpwuid_r writes into the buffers we pass and we read `pw_name` only when it
    // reports success with a non-null result.
    unsafe {
        let uid = libc::geteuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == 0
            && !result.is_null()
            && !pwd.pw_name.is_null()
            && let Ok(name) = std::ffi::CStr::from_ptr(pwd.pw_name).to_str()
        {
            return name.to_owned();
        }
        std::env::var("USER").unwrap_or_else(|_| uid.to_string())
    }
}

/// dropship's state directory (`$XDG_STATE_HOME/dropship`, else `~/.local/state/dropship`):
/// the journal, its known_hosts, its log.
pub fn state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("dropship")
}

/// Where a credential came from. The plan shows this, never the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The rule (or `[DEFAULT]`) in dispatch.cfg.
    Config,
    /// The `.netrc` file.
    Netrc,
    /// `User` in `~/.ssh/config` (scp/sftp only).
    #[serde(rename = "ssh_config")]
    SshConfig,
    /// Neither: `anonymous` for FTP, the current OS user otherwise.
    Default,
}

impl Source {
    /// How messages name it: `password from netrc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "dispatch.cfg",
            Source::Netrc => "netrc",
            Source::SshConfig => "ssh config",
            Source::Default => "default",
        }
    }
}
