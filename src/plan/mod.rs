//! Bundle name -> [`Plan`]: which rule, which hosts, with which credentials, where, and
//! which commands. Pure: it reads nothing but the config and netrc already loaded.

use crate::config::limits;
use crate::config::rules::{Commands, Protocol, Rule};
use crate::config::ssh_config::Query;
use crate::config::template::{RenderError, Vars};
use crate::config::{Config, HostSpec, Netrc, Secret, SshHost, SshHosts};
use crate::transport::proxy::{Jump, Route};

pub mod health_url;
pub mod layout;
use indexmap::IndexMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::config::Source;

/// One `{timestamp}` per dispatch, the same for every host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// `YYYYmmdd_HHMMSS`, local time.
    pub timestamp: String,
    /// `YYYYmmdd`.
    pub date: String,
}

impl Stamp {
    pub fn now() -> Stamp {
        let now = chrono::Local::now();
        Stamp {
            timestamp: now.format("%Y%m%d_%H%M%S").to_string(),
            date: now.format("%Y%m%d").to_string(),
        }
    }

    /// A pinned timestamp (`--timestamp`), so a plan can be reproduced.
    pub fn parse(text: &str) -> Option<Stamp> {
        chrono::NaiveDateTime::parse_from_str(text, "%Y%m%d_%H%M%S")
            .ok()
            .map(|t| Stamp {
                timestamp: t.format("%Y%m%d_%H%M%S").to_string(),
                date: t.format("%Y%m%d").to_string(),
            })
    }
}

/// One host of a plan, fully resolved.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: HostSpec,
    /// Effective port: the host's, the rule's, or the protocol default (none for local).
    pub port: Option<u16>,
    pub protocol: Protocol,
    /// Where to connect: `HostName` from `~/.ssh/config`, else the host as written.
    pub address: String,
    pub creds: Credentials,
    /// Relative paths are relative to the login's home directory.
    pub dest_dir: String,
    pub remote_path: String,
    /// The remote lock directory (see [`lock_path`]).
    pub lock_path: String,
    /// Rendered, placeholders shell-quoted.
    pub commands: Commands<String>,
    /// The command of an ad-hoc run or a named action (`engine::run`), rendered for this
    /// host; `None` in a dispatch's plan.
    pub run: Option<String>,
    /// What the ssh configuration says about this host (scp/sftp only; empty otherwise).
    pub ssh: Arc<SshHost>,
    /// What it says about the SSH login that runs an ftp/ftps rule's commands
    /// (`ssh_port`); empty for other rules and for ftp rules with nothing to run.
    pub shell_ssh: Arc<SshHost>,
    /// Why this target must not be connected to as planned: the ssh configuration could
    /// not be read for it, or it sets an option dropship cannot honour (`BindAddress`, ...).
    pub ssh_refusal: Option<String>,
    /// How its SSH connection travels: directly, through jump hosts, or a `ProxyCommand`.
    pub route: Route,
    /// Where the route came from: `dispatch.cfg` (`jump`) or the ssh_config line.
    pub route_origin: Option<String>,
}

impl Target {
    /// `rule` on `host`: where to connect (the host's port, else the rule's, else
    /// `~/.ssh/config`'s, else the protocol's; `HostName` from `~/.ssh/config`) and as whom.
    /// Paths and commands are left empty for the caller, which knows the bundle (or not).
    /// What the ssh configuration refuses is kept in `ssh_refusal`.
    pub fn endpoint(rule: &Rule, host: &HostSpec, netrc: &Netrc, ssh: &SshHosts) -> Target {
        let looked_up = |q: Option<Query>| {
            let Some(q) = q else {
                return (Arc::new(SshHost::default()), None);
            };
            match ssh.lookup(&q.alias, q.port, q.login.as_deref()) {
                Ok(h) => {
                    let refusal = (!h.refused.is_empty()).then(|| {
                        h.refused
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                    (h, refusal)
                }
                Err(e) => (Arc::new(SshHost::default()), Some(e.to_string())),
            }
        };
        let (ssh_host, refusal) = looked_up(ssh_query(rule, host, netrc));
        let (shell_ssh, shell_refusal) = looked_up(shell_query(rule, host, netrc));
        let via = if rule.protocol.is_ftp() {
            &shell_ssh
        } else {
            &ssh_host
        };
        let (route, route_origin, route_refusal) = route_for(rule, via, ssh, netrc);
        let ssh_refusal = [refusal, shell_refusal, route_refusal]
            .into_iter()
            .flatten()
            .reduce(|a, b| format!("{a}\n{b}"));
        Target {
            host: host.clone(),
            port: host
                .port
                .or(rule.port)
                .or(ssh_host.port)
                .or(rule.protocol.default_port()),
            protocol: rule.protocol,
            address: ssh_host
                .host_name
                .clone()
                .unwrap_or_else(|| host.name.clone()),
            creds: Credentials::resolve(rule, host, netrc, &ssh_host),
            dest_dir: String::new(),
            remote_path: String::new(),
            lock_path: String::new(),
            commands: Commands::default(),
            run: None,
            ssh: ssh_host,
            shell_ssh,
            ssh_refusal,
            route,
            route_origin,
        }
    }

    /// The ssh configuration that shapes this target's SSH login: the host's for scp/sftp,
    /// the commands' login (`ssh_port`) for ftp/ftps.
    pub fn ssh_for_shell(&self) -> &SshHost {
        if self.protocol.is_ftp() {
            &self.shell_ssh
        } else {
            &self.ssh
        }
    }

    /// The SSH port of the login that runs commands: the target's for scp/sftp; for
    /// ftp/ftps the rule's `ssh_port` if set, else ~/.ssh/config's `Port`, else 22.
    pub fn ssh_port(&self, rule: &Rule) -> u16 {
        match self.protocol {
            Protocol::Ftp | Protocol::Ftps if !rule.ssh_port_explicit => {
                self.shell_ssh.port.unwrap_or(rule.ssh_port)
            }
            Protocol::Ftp | Protocol::Ftps => rule.ssh_port,
            _ => self.port.unwrap_or(22),
        }
    }

    /// `login@address:port` as it will be connected to, and the jump chain if any.
    pub fn effective(&self) -> String {
        let port = self.port.map_or(String::new(), |p| format!(":{p}"));
        let via = match self.route.describe() {
            d if d.is_empty() => d,
            d => format!(" {d}"),
        };
        format!("{}@{}{port}{via}", self.creds.login, self.address)
    }

    /// What came from the ssh configuration, for `--plan`/`--check`: `HostName 10.0.0.5
    /// (file:3), Port 2222 (file:4), ...`; empty when nothing did.
    pub fn ssh_config_notes(&self) -> Vec<String> {
        let h = self.ssh_for_shell();
        let at = |k: &str| h.origin(k).map_or_else(String::new, |l| format!(" ({l})"));
        let mut notes = Vec::new();
        // For ftp rules, what follows shapes only the SSH login that runs the commands.
        let shell = if self.protocol.is_ftp() {
            " for the commands' SSH login"
        } else {
            ""
        };
        if let Some(v) = &h.host_name {
            notes.push(format!("HostName {v}{shell}{}", at("hostname")));
        }
        if let Some(p) = h.port
            && (self.protocol.is_ftp() || (self.host.port.is_none() && self.port == Some(p)))
        {
            notes.push(format!("Port {p}{shell}{}", at("port")));
        }
        if self.creds.login_source == Source::SshConfig {
            notes.push(format!("User {}{}", self.creds.login, at("user")));
        } else if let Some(u) = h
            .user
            .as_ref()
            .filter(|_| self.protocol.is_ftp() && self.creds.login_source == Source::Default)
        {
            notes.push(format!("User {u}{shell}{}", at("user")));
        }
        if !h.identity_files.is_empty() && self.creds.keys == h.identity_files {
            let keys: Vec<String> = h
                .identity_files
                .iter()
                .map(|k| k.display().to_string())
                .collect();
            notes.push(format!(
                "IdentityFile {}{}",
                keys.join(" "),
                at("identityfile")
            ));
        }
        for (name, k, shown) in [
            (
                "IdentitiesOnly",
                "identitiesonly",
                h.identities_only.then_some("yes"),
            ),
            (
                "IdentityAgent",
                "identityagent",
                h.no_agent.then_some("none"),
            ),
            ("HostKeyAlias", "hostkeyalias", h.host_key_alias.as_deref()),
            (
                "StrictHostKeyChecking",
                "stricthostkeychecking",
                h.strict_host_key_checking.as_deref(),
            ),
        ] {
            if let Some(v) = shown {
                notes.push(format!("{name} {v}{}", at(k)));
            }
        }
        if let Some(t) = h.connect_timeout {
            notes.push(format!(
                "ConnectTimeout {}{}",
                t.as_secs(),
                at("connecttimeout")
            ));
        }
        for (name, k, files) in [
            (
                "UserKnownHostsFile",
                "userknownhostsfile",
                &h.user_known_hosts,
            ),
            (
                "GlobalKnownHostsFile",
                "globalknownhostsfile",
                &h.global_known_hosts,
            ),
        ] {
            if let Some(f) = files {
                let f: Vec<String> = f.iter().map(|p| p.display().to_string()).collect();
                notes.push(format!("{name} {}{}", f.join(" "), at(k)));
            }
        }
        if h.address_family != crate::config::ssh_config::AddressFamily::Any {
            notes.push(format!(
                "AddressFamily {:?}{}",
                h.address_family,
                at("addressfamily")
            ));
        }
        if let Some(t) = h.server_alive_interval {
            notes.push(format!(
                "ServerAliveInterval {}{}",
                t.as_secs(),
                at("serveraliveinterval")
            ));
        }
        let origin = self
            .route_origin
            .as_deref()
            .map_or_else(String::new, |o| format!(" ({o})"));
        match &self.route {
            Route::Direct => {}
            Route::Jump(j) => notes.push(format!("ProxyJump {}{origin}", j.hops.join(","))),
            Route::Command(c) => notes.push(format!("ProxyCommand {c}{origin}")),
        }
        notes
    }

    /// The commands as they may be shown (`--plan`, the console's confirmation): a health
    /// URL loses its user info and query, where tokens live.
    pub fn shown_commands(&self) -> Commands<String> {
        use crate::plan::health_url as health;
        let mut shown = self.commands.clone();
        if let Some(h) = &shown.health
            && let Ok(url) = health::url_from_rendered(h)
            && health::is_url(&url)
        {
            shown.health = Some(health::redact(&url));
        }
        shown
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub bundle: String,
    pub rule: Rule,
    /// Named captures in group order; `None` for a group that did not take part.
    pub captures: IndexMap<String, Option<String>>,
    pub stamp: Stamp,
    pub targets: Vec<Target>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no rule matches `{bundle}` (tried, in order: {})\n  help: add a rule whose regex matches the whole file name, or rename the bundle", tried.iter().map(|t| format!("[{t}]")).collect::<Vec<_>>().join(", "))]
    NoRule { bundle: String, tried: Vec<String> },
    #[error("`{name}` is not a usable bundle file name: {why}")]
    BadName { name: String, why: String },
    #[error(
        "rule `[{rule}]` ({file}:{line}), host {host}: refused by the ssh configuration:\n  {why}"
    )]
    SshConfig {
        file: PathBuf,
        line: usize,
        rule: String,
        host: String,
        why: String,
    },
    #[error("{file}:{line}: rule `[{rule}]`, host {host}: {why}")]
    Render {
        file: PathBuf,
        line: usize,
        rule: String,
        host: String,
        why: String,
    },
}

/// The archive extensions `{stem}` drops, longest first so `.tar.gz` beats `.gz`.
const ARCHIVE_EXTS: &[&str] = &[
    ".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tgz", ".tbz2", ".tbz", ".txz", ".tzst", ".tar",
    ".zip", ".gz", ".bz2", ".xz", ".zst", ".7z", ".jar", ".war", ".ear", ".rpm", ".deb", ".apk",
];

/// The bundle name without its archive extension: `app-1.4.2.tar.gz` -> `app-1.4.2`. A
/// name with no known archive extension is its own stem.
pub fn stem(bundle: &str) -> &str {
    let lower = bundle.to_ascii_lowercase();
    ARCHIVE_EXTS
        .iter()
        .find(|ext| lower.len() > ext.len() && lower.ends_with(*ext))
        .map_or(bundle, |ext| &bundle[..bundle.len() - ext.len()])
}

/// The file name part of a bundle argument (a path or a bare name). A name over
/// [`limits::MAX_BUNDLE_NAME_BYTES`] is refused here, before any rule is tried on it.
pub fn bundle_name(arg: &str) -> Result<String, PlanError> {
    let bad = |why: &str| PlanError::BadName {
        // An argument too long to be a name is not quoted whole.
        name: if arg.len() > limits::MAX_BUNDLE_NAME_BYTES {
            limits::preview(arg)
        } else {
            arg.to_owned()
        },
        why: why.to_owned(),
    };
    let name = Path::new(arg)
        .file_name()
        .ok_or_else(|| bad("it has no file name part"))?
        .to_str()
        .ok_or_else(|| bad("it is not valid UTF-8"))?;
    if name.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    if let Some(why) = limits::bundle_name(name) {
        return Err(bad(&why));
    }
    Ok(name.to_owned())
}

/// Turns a rendered `dest_dir` into the path the transport uses. `~/` (the login's home)
/// becomes a relative path for remote protocols and `$HOME/…` for local ones.
pub(crate) fn normalize_dest(rendered: &str, protocol: Protocol) -> Result<String, String> {
    if rendered.chars().any(char::is_control) {
        return Err(format!(
            "dest_dir `{}` contains a control character",
            rendered.escape_debug()
        ));
    }
    let rel = match rendered {
        "~" => Some(""),
        _ => rendered.strip_prefix("~/"),
    };
    if rendered.starts_with('~') && rel.is_none() {
        return Err(format!(
            "dest_dir `{rendered}`: only `~/` (the login's own home) is understood"
        ));
    }
    let path = rel.unwrap_or(rendered);
    if path.split('/').any(|seg| seg == "..") {
        return Err(format!(
            "dest_dir `{rendered}` has a `..` segment; dropship refuses to climb out of a directory"
        ));
    }
    let trimmed = path.trim_end_matches('/');
    let path = if trimmed.is_empty() && path.starts_with('/') {
        "/"
    } else {
        trimmed
    };
    if protocol == Protocol::Local && !path.starts_with('/') {
        let home = std::env::var("HOME").map_err(|_| "HOME is not set".to_owned())?;
        return Ok(if path.is_empty() {
            home
        } else {
            format!("{}/{path}", home.trim_end_matches('/'))
        });
    }
    Ok(if path.is_empty() {
        ".".to_owned()
    } else {
        path.to_owned()
    })
}

/// Where the remote lock lives when the rule does not say: in the login's home on remote
/// hosts (one dispatch at a time per account); beside the upload for FTP-only rules (no
/// shell, the FTP root may not be the home); per host label for `local` rules (their
/// "hosts" are all this machine).
pub(crate) fn default_lock_path(rule: &Rule, host: &str, dest_dir: &str) -> String {
    match rule.protocol {
        Protocol::Local => crate::config::state_dir()
            .join("locks")
            .join(format!("{host}.lock"))
            .display()
            .to_string(),
        p if p.is_ftp() && rule.commands.is_empty() => join(dest_dir, ".dropship.lock"),
        _ => ".dropship.lock".to_owned(),
    }
}

fn join(dir: &str, name: &str) -> String {
    match dir {
        "." => name.to_owned(),
        "/" => format!("/{name}"),
        d => format!("{d}/{name}"),
    }
}

/// The login passed to `ssh -G` as `-l`: the rule's, else netrc's for the host.
fn query_login(rule: &Rule, host: &HostSpec, netrc: &Netrc) -> Option<String> {
    rule.login
        .clone()
        .or_else(|| netrc.lookup(&host.name, None).and_then(|e| e.login.clone()))
}

/// The `ssh -G` question for `host` under `rule`: the port and login the rule (or netrc)
/// sets are passed as `-p`/`-l`, as they would be on ssh's command line, so `Match user`
/// and `%r` see them; `None` for protocols `~/.ssh/config` does not speak for.
pub fn ssh_query(rule: &Rule, host: &HostSpec, netrc: &Netrc) -> Option<Query> {
    match rule.protocol {
        Protocol::Scp | Protocol::Sftp => {
            let login = query_login(rule, host, netrc);
            Some(Query {
                alias: host.name.clone(),
                port: host.port.or(rule.port),
                login,
            })
        }
        _ => None,
    }
}

/// The `ssh -G` question for the SSH login that runs an ftp/ftps rule's commands: the
/// host on the rule's `ssh_port` (when set) as the FTP login; `None` when there is none.
pub fn shell_query(rule: &Rule, host: &HostSpec, netrc: &Netrc) -> Option<Query> {
    if !rule.protocol.is_ftp() || !(rule.needs_shell() || rule.version_cmd.is_some()) {
        return None;
    }
    let login = query_login(rule, host, netrc);
    Some(Query {
        alias: host.name.clone(),
        port: rule.ssh_port_explicit.then_some(rule.ssh_port),
        login,
    })
}

/// How the SSH connection travels: the rule's `jump` wins (as `ssh -J` over the file),
/// else `ProxyJump`, else `ProxyCommand` from ssh_config. Jump hosts are reached through
/// OpenSSH's client, so they need one: without it the target is refused (never dialed
/// directly, which would bypass the bastion).
fn route_for(
    rule: &Rule,
    h: &SshHost,
    ssh: &SshHosts,
    netrc: &Netrc,
) -> (Route, Option<String>, Option<String>) {
    let (hops, origin) = match &rule.jump {
        Some(hops) => (
            hops.clone(),
            Some(format!("`jump`, rule line {}", rule.line)),
        ),
        None if !h.proxy_jump.is_empty() => (
            h.proxy_jump.clone(),
            h.origin("proxyjump").map(ToString::to_string),
        ),
        None => {
            return match &h.proxy_command {
                Some(c) => (
                    Route::Command(c.clone()),
                    h.origin("proxycommand").map(ToString::to_string),
                    None,
                ),
                None => (Route::Direct, None, None),
            };
        }
    };
    if hops.is_empty() {
        return (Route::Direct, origin, None);
    }
    if let Some(bad) = hops
        .iter()
        .find(|hop| crate::config::rules::parse_jump(hop).is_err())
    {
        return (
            Route::Direct,
            origin,
            Some(format!("jump host `{bad}` is not `[user@]host[:port]`")),
        );
    }
    match ssh.openssh_for_jumps() {
        Some((program, config)) => (
            Route::Jump(Jump {
                passwords: Arc::new(hop_passwords(&hops, netrc)),
                hops,
                program,
                config,
            }),
            origin,
            None,
        ),
        None => (
            Route::Direct,
            origin,
            Some(format!(
                "jump hosts ({}) are reached through OpenSSH's client, and no `ssh` is on PATH; dropship will not bypass them by dialing the host directly\n  help: install the OpenSSH client (openssh-client)",
                hops.join(",")
            )),
        ),
    }
}

/// The netrc passwords of the hops (`[user@]host[:port]`, `ssh://…`), for OpenSSH's
/// askpass: a bastion logs in with a key, a certificate, the agent, or this.
fn hop_passwords(hops: &[String], netrc: &Netrc) -> Vec<crate::transport::proxy::HopPassword> {
    hops.iter()
        .filter_map(|hop| {
            let hop = hop.strip_prefix("ssh://").unwrap_or(hop);
            let (user, rest) = match hop.rsplit_once('@') {
                Some((u, r)) => (Some(u), r),
                None => (None, hop),
            };
            let host = crate::config::hosts::parse_host(rest).ok()?.name;
            let password = netrc.lookup(&host, user)?.password.clone()?;
            Some(crate::transport::proxy::HopPassword { host, password })
        })
        .collect()
}

/// Login, password and account for one host of a rule, with where each came from.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub login: String,
    pub login_source: Source,
    pub password: Option<Secret>,
    pub password_source: Option<Source>,
    /// FTP `ACCT`; like the password it may be sensitive (netrc keeps it beside one), so
    /// plans show where it came from, not its value.
    pub account: Option<Secret>,
    pub account_source: Option<Source>,
    /// Private keys to offer: the rule's `key`, else `IdentityFile`s of `~/.ssh/config`.
    pub keys: Vec<PathBuf>,
    /// Unlocks the keys (`key_passphrase = netrc`).
    pub key_passphrase: Option<Secret>,
}

impl Credentials {
    /// The rule's value, else the netrc entry's (first `machine HOST` whose login is the
    /// rule's login or absent, else `default`), else `anonymous` for FTP and the current OS
    /// user for the rest; no password when neither names one.
    pub fn resolve(rule: &Rule, host: &HostSpec, netrc: &Netrc, ssh: &SshHost) -> Credentials {
        let entry = netrc.lookup(&host.name, rule.login.as_deref());
        let netrc_login = entry.and_then(|e| e.login.clone());
        let (login, login_source) = match (&rule.login, netrc_login, &ssh.user) {
            (Some(l), _, _) => (l.clone(), Source::Config),
            (None, Some(l), _) => (l, Source::Netrc),
            (None, None, Some(u)) => (u.clone(), Source::SshConfig),
            (None, None, None) if rule.protocol.is_ftp() => {
                ("anonymous".to_owned(), Source::Default)
            }
            (None, None, None) => (crate::config::current_user(), Source::Default),
        };
        let netrc_password = entry.and_then(|e| e.password.clone());
        let (netrc_password, key_passphrase) = if rule.key_passphrase_from_netrc {
            (None, netrc_password)
        } else {
            (netrc_password, None)
        };
        let (password, password_source) = match (&rule.password, netrc_password) {
            (Some(p), _) => (Some(p.clone()), Some(Source::Config)),
            (None, Some(p)) => (Some(p), Some(Source::Netrc)),
            (None, None) => (None, None),
        };
        let keys = match &rule.key {
            Some(k) => vec![k.clone()],
            None => ssh.identity_files.clone(),
        };
        let (account, account_source) = match (&rule.account, entry.and_then(|e| e.account.clone()))
        {
            (Some(a), _) => (Some(Secret::new(a.clone())), Some(Source::Config)),
            (None, Some(a)) => (Some(a), Some(Source::Netrc)),
            (None, None) => (None, None),
        };
        Credentials {
            login,
            login_source,
            password,
            password_source,
            account,
            account_source,
            keys,
            key_passphrase,
        }
    }
}

/// The placeholders every target of a plan shares: the bundle's, the rule's, the stamp's
/// and the captures.
fn base_vars(
    bundle: &str,
    rule: &Rule,
    stamp: &Stamp,
    captures: &IndexMap<String, Option<String>>,
) -> Vars {
    let mut base = Vars::new();
    base.insert("bundle".into(), bundle.to_owned());
    base.insert("stem".into(), stem(bundle).to_owned());
    base.insert("rule".into(), rule.name.clone());
    base.insert("timestamp".into(), stamp.timestamp.clone());
    base.insert("date".into(), stamp.date.clone());
    for (k, v) in captures {
        // A group that did not take part has no value: using it is an error when rendered.
        if let Some(v) = v {
            base.insert(k.clone(), v.clone());
        }
    }
    base
}

/// A target's own placeholders, known once its `dest_dir` is.
fn target_vars(vars: &mut Vars, dest_dir: &str, remote_path: &str) {
    vars.insert("dir".into(), dest_dir.to_owned());
    vars.insert("path".into(), remote_path.to_owned());
}

impl Plan {
    /// The rule's `rollback` command for `target`, rendered as [`Plan::build`] does but with
    /// `{release}`, `{release_dir}` and `{current}` naming `release` (`layout = releases`):
    /// a rollback knows the release it goes back to only once it has read the host.
    pub fn rollback_for_release(
        &self,
        target: &Target,
        release: &str,
    ) -> Result<Option<String>, RenderError> {
        let Some(t) = &self.rule.commands.rollback else {
            return Ok(None);
        };
        let mut vars = base_vars(&self.bundle, &self.rule, &self.stamp, &self.captures);
        vars.insert("host".into(), target.host.name.clone());
        target_vars(&mut vars, &target.dest_dir, &target.remote_path);
        let tree = crate::plan::layout::Tree::new(&target.dest_dir);
        for (k, v) in crate::plan::layout::placeholders(&tree, release) {
            vars.insert(k.into(), v);
        }
        t.render_shell(&vars).map(Some)
    }

    /// The placeholders `target`'s commands were rendered with by [`Plan::build`]: what an
    /// ad-hoc run or a named action of the rule renders its own command with.
    pub fn command_vars(&self, target: &Target) -> Vars {
        let mut vars = base_vars(&self.bundle, &self.rule, &self.stamp, &self.captures);
        vars.insert("host".into(), target.host.name.clone());
        target_vars(&mut vars, &target.dest_dir, &target.remote_path);
        if self.rule.layout == crate::config::rules::Layout::Releases {
            let version = self.captures.get("version").cloned().flatten();
            if let Ok(name) =
                crate::plan::layout::release_name(version.as_deref(), &self.stamp.timestamp)
            {
                let tree = crate::plan::layout::Tree::new(&target.dest_dir);
                for (k, v) in crate::plan::layout::placeholders(&tree, &name) {
                    vars.insert(k.into(), v);
                }
            }
        }
        vars
    }

    /// Resolves `bundle_arg` (a path or file name) against `config` and `netrc`.
    pub fn build(
        config: &Config,
        netrc: &Netrc,
        ssh: &SshHosts,
        bundle_arg: &str,
        stamp: Stamp,
    ) -> Result<Plan, PlanError> {
        let bundle = bundle_name(bundle_arg)?;
        let (rule, caps) = config
            .match_rule(&bundle)
            .ok_or_else(|| PlanError::NoRule {
                bundle: bundle.clone(),
                tried: config.rules.iter().map(|r| r.name.clone()).collect(),
            })?;
        let captures: IndexMap<String, Option<String>> = rule
            .regex
            .capture_names()
            .flatten()
            .map(|n| (n.to_owned(), caps.name(n).map(|m| m.as_str().to_owned())))
            .collect();

        let base = base_vars(&bundle, rule, &stamp, &captures);
        let queries: Vec<Query> = rule
            .hosts
            .iter()
            .filter_map(|h| ssh_query(rule, h, netrc))
            .collect();
        ssh.prefetch(&queries);

        let mut targets = Vec::with_capacity(rule.hosts.len());
        for host in &rule.hosts {
            let fail = |why: String| PlanError::Render {
                file: config.path.clone(),
                line: rule.line,
                rule: rule.name.clone(),
                host: host.to_string(),
                why,
            };
            let render_err = |e: RenderError| match e {
                RenderError::Missing(name) => fail(format!(
                    "placeholder `{{{name}}}` is a capture group that did not match in `{bundle}`"
                )),
                other => fail(other.to_string()),
            };
            let mut vars = base.clone();
            vars.insert("host".into(), host.name.clone());
            let dest = rule.dest_dir.render_plain(&vars).map_err(render_err)?;
            let dest_dir = normalize_dest(&dest, rule.protocol).map_err(fail)?;
            let remote_path = join(&dest_dir, &bundle);
            let lock_path = match &rule.lock_path {
                Some(t) => {
                    let rendered = t.render_plain(&vars).map_err(render_err)?;
                    normalize_dest(&rendered, rule.protocol).map_err(fail)?
                }
                None => default_lock_path(rule, &host.name, &dest_dir),
            };
            target_vars(&mut vars, &dest_dir, &remote_path);
            if rule.layout == crate::config::rules::Layout::Releases {
                // `layout = releases`: where the release goes, checked here so `--plan`
                // shows a bad release name before anything is shipped.
                let version = captures.get("version").cloned().flatten();
                let name = crate::plan::layout::release_name(version.as_deref(), &stamp.timestamp)
                    .map_err(|why| fail(format!("{why}\n  help: `layout = releases` names the release after the rule's `version` capture, else {{timestamp}}")))?;
                let tree = crate::plan::layout::Tree::new(&dest_dir);
                for (k, v) in crate::plan::layout::placeholders(&tree, &name) {
                    vars.insert(k.into(), v);
                }
            }
            let commands = rule
                .commands
                .try_map(|t| t.render_shell(&vars))
                .map_err(render_err)?;

            let endpoint = Target::endpoint(rule, host, netrc, ssh);
            if let Some(why) = &endpoint.ssh_refusal {
                return Err(PlanError::SshConfig {
                    file: config.path.clone(),
                    line: rule.line,
                    rule: rule.name.clone(),
                    host: host.to_string(),
                    why: why.replace('\n', "\n  "),
                });
            }
            targets.push(Target {
                dest_dir,
                remote_path,
                lock_path,
                commands,
                ..endpoint
            });
        }
        Ok(Plan {
            bundle,
            rule: rule.clone(),
            captures,
            stamp,
            targets,
        })
    }

    /// The `--plan --json` document: exactly the documented shape, with the password's
    /// source in place of the password.
    pub fn to_json(&self) -> serde_json::Value {
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .map(|t| {
                serde_json::json!({
                    "host": t.host.name,
                    "port": t.port,
                    "protocol": t.protocol,
                    "login": t.creds.login,
                    "account": t.creds.account_source,
                    "password": t.creds.password_source,
                    "dest_dir": t.dest_dir,
                    "remote_path": t.remote_path,
                    "commands": t.shown_commands(),
                })
            })
            .collect();
        serde_json::json!({
            "bundle": self.bundle,
            "rule": self.rule.name,
            "captures": self.captures,
            "targets": targets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems() {
        assert_eq!(stem("app-1.4.2.tgz"), "app-1.4.2");
        assert_eq!(stem("app-1.4.2.tar.gz"), "app-1.4.2");
        assert_eq!(stem("APP.TAR.BZ2"), "APP");
        assert_eq!(stem("app.bin"), "app.bin");
        assert_eq!(stem(".tgz"), ".tgz");
    }

    #[test]
    fn dest_normalization() {
        let n = |s| normalize_dest(s, Protocol::Scp);
        assert_eq!(
            n("~/newcx/20261121_101500").unwrap(),
            "newcx/20261121_101500"
        );
        assert_eq!(n("~").unwrap(), ".");
        assert_eq!(n("~/").unwrap(), ".");
        assert_eq!(n("/srv/app/").unwrap(), "/srv/app");
        assert_eq!(n("/").unwrap(), "/");
        assert!(n("/srv/../etc").unwrap_err().contains(".."));
        assert!(n("~/a/..").unwrap_err().contains(".."));
        assert!(n("~other/x").is_err());
        assert!(n("/srv/a\nb").is_err());
        assert_eq!(n("/srv/..x/a..b").unwrap(), "/srv/..x/a..b");
    }

    #[test]
    fn stamps() {
        let s = Stamp::parse("20261121_101500").unwrap();
        assert_eq!(s.date, "20261121");
        assert!(Stamp::parse("2026-11-21").is_none());
        assert_eq!(Stamp::now().timestamp.len(), 15);
    }

    #[test]
    fn bundle_names() {
        assert_eq!(bundle_name("/tmp/x/app-1.tgz").unwrap(), "app-1.tgz");
        assert_eq!(bundle_name("a b;c.tgz").unwrap(), "a b;c.tgz");
        assert!(bundle_name("..").is_err());
        assert!(bundle_name("/").is_err());
    }
}
