//! Rules: the typed, validated sections of `dispatch.cfg`.
//!
//! Each section other than `[DEFAULT]` is a rule whose name is a regex that must match the
//! whole bundle file name. `[DEFAULT]` keys apply to every rule that does not set them.
//! Validation reports every problem with its file and line; a rule with problems is left
//! out, so one bad rule cannot hide the errors of another.

use super::diagnostic::Diagnostic;
use super::hosts::{HostSpec, parse_hosts, parse_port};
use super::ini::{RawEntry, RawSection};
use super::limits::{self, MAX_ERRORS, too_many_errors};
use super::secret::Secret;
use super::template::{Template, nearest};
use indexmap::IndexMap;
use regex::Regex;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every key a rule may set, with the one-line meaning shown by `--check` suggestions and
/// kept in step with the README's key reference.
pub const KEYS: &[(&str, &str)] = &[
    (
        "host",
        "hosts to ship to: `name`, `name:port`, `[v6addr]:port`, separated by commas or spaces (required)",
    ),
    (
        "port",
        "port for every host without its own `:port` (default 21 for ftp/ftps, 22 for scp/sftp)",
    ),
    ("protocol", "ftp, ftps, scp, sftp or local (default scp)"),
    (
        "login",
        "user name (else netrc, else `anonymous` for ftp/ftps, the current user otherwise)",
    ),
    ("password", "password (else netrc); never shown"),
    ("account", "FTP account for ACCT (else netrc)"),
    (
        "dest_dir",
        "remote directory (default `~/newcx/{timestamp}`; `~/` is the login's home)",
    ),
    ("pre", "command run on the host before the upload"),
    ("upgrade", "command run on the host after the upload"),
    ("post", "command run on the host after the upgrade"),
    (
        "health",
        "command, http(s) URL, `proc:NAME[:MIN[-MAX]]` (processes running on the host) or `port:N` (a port listening on the host) that must succeed after the upgrade",
    ),
    (
        "health_timeout",
        "how long an http(s) `health` URL (or a `proc:`/`port:` check) may take to pass (default 2m)",
    ),
    (
        "health_interval",
        "pause between two tries of an http(s) `health` URL or a `proc:`/`port:` check (default 2s)",
    ),
    (
        "layout",
        "`plain` (default: the bundle lands in dest_dir) or `releases` (unpacked into dest_dir/releases/VERSION, `current` switched atomically)",
    ),
    (
        "keep",
        "with `layout = releases`: releases kept on the host, newest first (default 5; `current` and the one before are never deleted); also the bundles of the rule kept in the local bundle store for `--converge`",
    ),
    (
        "store_max",
        "size bound of the local bundle store, all rules together, oldest bundles evicted first: bytes, or `500M`, `2G` (default 2G; set it in [DEFAULT])",
    ),
    (
        "rollback",
        "command run on the host when a step after the upload fails",
    ),
    (
        "timeout",
        "network timeout (connect, stalled I/O): seconds, or `90s`, `5m`, `1h` (default 30s)",
    ),
    (
        "step_timeout",
        "how long one command may run before it is killed on the host (default 10m)",
    ),
    (
        "lock_wait",
        "how long to wait for another dispatch's lock on a host (default 5m)",
    ),
    (
        "lock_stale",
        "a lock older than this is broken, with a warning (default 1h)",
    ),
    (
        "lock_path",
        "the lock directory on the host (default `~/.dropship.lock`; placeholders as in dest_dir)",
    ),
    (
        "retries",
        "upload attempts after the first on a transient error (default 3)",
    ),
    ("parallel", "hosts worked on at once (default 32)"),
    (
        "canary",
        "first N hosts go alone; the rest start only if they all succeed (default 0)",
    ),
    (
        "max_fail",
        "after this many failed hosts no new host starts (default: no limit)",
    ),
    (
        "key",
        "SSH private key file (`~/` is your home; relative to the config file)",
    ),
    (
        "key_passphrase",
        "`netrc`: the host's netrc password unlocks `key` (and is not sent as a login password)",
    ),
    (
        "host_key",
        "`strict` (default: unknown hosts refused) or `accept-new`",
    ),
    (
        "notify",
        "http(s) URL that receives a JSON summary when a dispatch or rollback ends",
    ),
    (
        "journal",
        "`[DEFAULT]` only: the journal the team shares, `postgres://USER@HOST[:PORT]/DB` (default: this machine's own SQLite file)",
    ),
    (
        "version_cmd",
        "command run on the host by `--probe` and `--status` that prints the installed version (e.g. `cat ~/app/.version`); placeholders `{host}` and `{rule}` only",
    ),
    (
        "ssh_port",
        "SSH port for the commands of ftp/ftps rules (default 22, else `Port` from ~/.ssh/config)",
    ),
    (
        "jump",
        "jump hosts for scp/sftp, `[user@]host[:port]` separated by commas, as ssh's ProxyJump (wins over ~/.ssh/config; `none`: connect directly)",
    ),
    (
        "tls_verify",
        "ftps and https health URLs: verify the server certificate (default yes)",
    ),
    (
        "tls_ca",
        "ftps and https health URLs: PEM file of a CA (or self-signed certificate) to trust",
    ),
];

/// Placeholders every rule has; a named capture may not reuse these names.
pub const BUILTIN_PLACEHOLDERS: &[&str] = &["bundle", "stem", "host", "rule", "timestamp", "date"];
/// Placeholders only commands have: they name where the upload landed.
pub const COMMAND_PLACEHOLDERS: &[&str] = &["path", "dir"];
/// Placeholders `version_cmd` may use: it runs without a bundle (`--probe`, `--status`), so
/// nothing that comes from a bundle name or a dispatch has a value there.
pub const PROBE_PLACEHOLDERS: &[&str] = &["host", "rule"];

/// Placeholders commands have with `layout = releases`: the release's name, its directory
/// and the `current` symlink (see `fleet::releases`).
pub const RELEASE_PLACEHOLDERS: &[&str] = &["release", "release_dir", "current"];

const DEFAULT_DEST_DIR: &str = "~/newcx/{timestamp}";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Ftp,
    Ftps,
    Scp,
    Sftp,
    Local,
}

impl Protocol {
    pub fn parse(text: &str) -> Option<Protocol> {
        Some(match text.to_ascii_lowercase().as_str() {
            "ftp" => Protocol::Ftp,
            "ftps" => Protocol::Ftps,
            "scp" => Protocol::Scp,
            "sftp" => Protocol::Sftp,
            "local" => Protocol::Local,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ftp => "ftp",
            Protocol::Ftps => "ftps",
            Protocol::Scp => "scp",
            Protocol::Sftp => "sftp",
            Protocol::Local => "local",
        }
    }

    /// The port used when neither the host nor the rule names one.
    pub fn default_port(self) -> Option<u16> {
        match self {
            Protocol::Ftp | Protocol::Ftps => Some(21),
            Protocol::Scp | Protocol::Sftp => Some(22),
            Protocol::Local => None,
        }
    }

    pub fn is_ftp(self) -> bool {
        matches!(self, Protocol::Ftp | Protocol::Ftps)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a bundle ends up on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The bundle is uploaded into `dest_dir` and the commands do the rest.
    Plain,
    /// The bundle is unpacked into `dest_dir/releases/VERSION` and `dest_dir/current` is
    /// switched to it; see `fleet::releases`.
    Releases,
}

impl Layout {
    pub fn parse(text: &str) -> Option<Layout> {
        match text.to_ascii_lowercase().as_str() {
            "plain" => Some(Layout::Plain),
            "releases" => Some(Layout::Releases),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    Strict,
    AcceptNew,
}

/// The commands a rule may run on a host, in the order a job runs them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Commands<T> {
    pub pre: Option<T>,
    pub upgrade: Option<T>,
    pub post: Option<T>,
    pub health: Option<T>,
    pub rollback: Option<T>,
}

impl<T> Commands<T> {
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Option<&T>)> {
        [
            ("pre", self.pre.as_ref()),
            ("upgrade", self.upgrade.as_ref()),
            ("post", self.post.as_ref()),
            ("health", self.health.as_ref()),
            ("rollback", self.rollback.as_ref()),
        ]
        .into_iter()
    }

    pub fn try_map<U, E>(&self, mut f: impl FnMut(&T) -> Result<U, E>) -> Result<Commands<U>, E> {
        let mut g = |o: &Option<T>| o.as_ref().map(&mut f).transpose();
        Ok(Commands {
            pre: g(&self.pre)?,
            upgrade: g(&self.upgrade)?,
            post: g(&self.post)?,
            health: g(&self.health)?,
            rollback: g(&self.rollback)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.iter().all(|(_, c)| c.is_none())
    }
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The section name: the regex, exactly as written.
    pub name: String,
    /// Line of the section header.
    pub line: usize,
    /// `name` anchored to match the whole bundle file name.
    pub regex: Regex,
    pub hosts: Vec<HostSpec>,
    pub port: Option<u16>,
    pub protocol: Protocol,
    pub login: Option<String>,
    pub password: Option<Secret>,
    pub account: Option<String>,
    pub dest_dir: Template,
    /// Where the remote lock lives; `None` means the protocol's default.
    pub lock_path: Option<Template>,
    pub commands: Commands<Template>,
    /// Prints the installed version on the host; run by `--probe` and `--status`.
    pub version_cmd: Option<Template>,
    pub timeout: Duration,
    pub step_timeout: Duration,
    pub lock_wait: Duration,
    pub lock_stale: Duration,
    pub retries: u32,
    pub parallel: usize,
    pub canary: usize,
    pub max_fail: Option<usize>,
    pub key: Option<PathBuf>,
    /// The netrc password unlocks `key` instead of being a login password.
    pub key_passphrase_from_netrc: bool,
    pub host_key: HostKeyPolicy,
    /// `host_key` is set in dispatch.cfg (then it wins over `StrictHostKeyChecking`).
    pub host_key_explicit: bool,
    /// `timeout` is set in dispatch.cfg (then it wins over `ConnectTimeout`).
    pub timeout_explicit: bool,
    pub notify: Option<String>,
    pub ssh_port: u16,
    /// `ssh_port` is set in dispatch.cfg (else `Port` from ~/.ssh/config, else 22).
    pub ssh_port_explicit: bool,
    /// `jump`: the hops (empty for `none`); `None` leaves it to ~/.ssh/config's `ProxyJump`.
    pub jump: Option<Vec<String>>,
    pub tls_verify: bool,
    pub tls_ca: Option<PathBuf>,
    /// How long an http(s) `health` URL is polled for a 2xx answer.
    pub health_timeout: Duration,
    /// The pause between two polls of a `health` URL.
    pub health_interval: Duration,
    pub layout: Layout,
    /// With `layout = releases`: how many releases stay on the host; also how many of the
    /// rule's bundles the local store keeps.
    pub keep: usize,
    /// The bound of the local bundle store in bytes (all rules together).
    pub store_max: u64,
    /// Named actions (`action.NAME = COMMAND`), in the order written: `--action NAME`.
    pub actions: Vec<Action>,
}

/// A named command of a rule (`action.restart = ./control restart`), run by `--action
/// NAME RULE` in the rule's package directory with the placeholders of the last dispatch
/// that succeeded (see `engine::run`).
#[derive(Debug, Clone)]
pub struct Action {
    pub name: String,
    pub command: Template,
    /// `action.NAME.confirm = yes`: destructive; the console asks first, headless needs `--yes`.
    pub confirm: bool,
    /// Line of `action.NAME` in the config.
    pub line: usize,
}

impl Rule {
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }
}

impl Rule {
    /// The port for `host`: its own `:port`, else the rule's `port`, else the protocol's.
    pub fn port_for(&self, host: &HostSpec) -> Option<u16> {
        host.port.or(self.port).or(self.protocol.default_port())
    }

    /// Whether a job needs a shell on the host: to run commands, or to unpack and switch
    /// releases. An FTP rule then also opens an SSH session.
    pub fn needs_shell(&self) -> bool {
        !self.commands.is_empty() || self.layout == Layout::Releases
    }

    /// Names of the regex's named capture groups, in order.
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.regex.capture_names().flatten()
    }
}

/// A readable name for the package a rule ships: the literal start of its regex
/// (`app-(?P<version>…)\.tgz` -> `app`), else the regex itself.
pub fn package_label(rule: &Rule) -> String {
    let src = rule.name.strip_prefix('^').unwrap_or(&rule.name);
    let mut out = String::new();
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&n) if matches!(n, '.' | '-' | '_' | '/' | '+') => {
                    out.push(n);
                    chars.next();
                }
                _ => break,
            },
            c if c.is_alphanumeric() || matches!(c, '-' | '_') => out.push(c),
            // `x?`, `x*`, `x{…}` make the letter before them optional.
            '?' | '*' | '{' => {
                out.pop();
                break;
            }
            _ => break,
        }
    }
    let label = out.trim_end_matches(['-', '_', '.']);
    if label.is_empty() {
        rule.name.clone()
    } else {
        label.to_owned()
    }
}

/// A raw value with the line it came from (the rule's own, or `[DEFAULT]`'s).
#[derive(Debug, Clone)]
struct Located<'a> {
    value: &'a str,
    line: usize,
}

pub use super::duration::{MAX_DURATION_SECS, parse_duration};

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(format!("bad value `{text}`: write `yes` or `no`")),
    }
}

/// `jump = host[,host…]` (as ssh's `ProxyJump`: `[user@]host[:port]` or an `ssh://` URI),
/// or `none`. Each hop becomes an argument of `ssh`, so nothing that could read as an
/// option or hold a space or shell character gets through.
pub fn parse_jump(text: &str) -> Result<Vec<String>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|hop| {
            let hop = hop.trim();
            let ok = !hop.is_empty()
                && !hop.starts_with('-')
                && hop.len() <= 255
                && hop
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@:[]/%".contains(c));
            if ok {
                Ok(hop.to_owned())
            } else {
                Err(format!(
                    "bad jump host `{hop}`: write `[user@]host[:port]`, several separated by commas, or `none`"
                ))
            }
        })
        .collect()
}

/// A size: bytes, or a number with `K`, `M`, `G`, `T` (powers of 1024; `KiB`, `MB` ... read
/// the same).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "`{text}`: write bytes, or a number with K, M, G or T (e.g. `2G`)"
            ));
        }
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("`{text}`: write bytes, or a number with K, M, G or T (e.g. `2G`)"))
}

fn parse_count(text: &str, min: usize, max: usize) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "bad number `{text}`: write a whole number from {min} to {max}"
        )),
    }
}

/// Resolves a file path from the config: `~/` is the user's home, a relative path is
/// relative to the config file's directory (so the config works from any directory).
pub fn resolve_path(value: &str, config_file: &Path) -> PathBuf {
    if let Some(rest) = value.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    let p = PathBuf::from(value);
    if p.is_absolute() {
        p
    } else {
        config_file.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Builds the rules from the raw sections. Errors and warnings go to `diags`.
pub fn build(sections: &[RawSection], file: &Path, diags: &mut Vec<Diagnostic>) -> Vec<Rule> {
    let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    let is_known = |key: &str| known.contains(&key) || action_key(key).is_some();
    let mut unknown = 0;
    for entry in sections.iter().flat_map(|s| &s.entries) {
        if !is_known(&entry.key) {
            unknown += 1;
            if unknown > MAX_ERRORS {
                diags.push(too_many_errors(file, Some(entry.line)));
                break;
            }
            let mut d = Diagnostic::error(
                file,
                Some(entry.line),
                format!("unknown key `{}`", entry.key),
            );
            d = match nearest(&entry.key, known.iter().copied()) {
                Some(k) => d.hint(format!("did you mean `{k}`?")),
                None => d.hint(format!("known keys: {}", known.join(", "))),
            };
            diags.push(d);
        }
    }
    for section in sections.iter().filter(|s| s.name != "DEFAULT") {
        for entry in section.entries.iter().filter(|e| e.key == "journal") {
            diags.push(
                Diagnostic::error(
                    file,
                    Some(entry.line),
                    format!(
                        "`journal` in rule [{}]: one journal serves every rule",
                        section.name
                    ),
                )
                .hint("move `journal =` to [DEFAULT]"),
            );
        }
    }
    let defaults: Vec<&RawEntry> = sections
        .iter()
        .filter(|s| s.name == "DEFAULT")
        .flat_map(|s| &s.entries)
        .collect();
    check_defaults(&defaults, file, diags);
    let mut rules = Vec::new();
    for section in sections.iter().filter(|s| s.name != "DEFAULT") {
        let mut merged: IndexMap<&str, Located> = IndexMap::new();
        // Unknown keys are reported above; leaving them out keeps this linear in the keys
        // a rule can have, however many lines `[DEFAULT]` has.
        for e in defaults
            .iter()
            .copied()
            .chain(&section.entries)
            .filter(|e| is_known(&e.key))
        {
            if let Some(value) = &e.value {
                merged.insert(
                    &e.key,
                    Located {
                        value,
                        line: e.line,
                    },
                );
            } else {
                // An empty value means "not set", also over a [DEFAULT] value.
                merged.shift_remove(e.key.as_str());
            }
        }
        let before = diags.len();
        let rule = build_rule(section, &merged, file, diags);
        if diags[before..].iter().all(|d| !d.is_error()) {
            rules.extend(rule);
        }
    }
    // A bad [DEFAULT] value is reported once, not once per rule.
    let mut seen = std::collections::HashSet::new();
    diags.retain(|d| seen.insert((d.line, d.message.clone())));
    diags.extend(shadow_warnings(&rules, file));
    diags.extend(size_only_warnings(&rules, file));
    rules
}

fn build_rule(
    section: &RawSection,
    merged: &IndexMap<&str, Located>,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<Rule> {
    let sect = &section.name;
    let mut err = error_sink(file, diags);

    // Anchor the parsed pattern, not the text: a `(?x)` comment in the name would
    // otherwise swallow the closing `)$`.
    let regex = match Regex::new(sect)
        .and_then(|_| regex_syntax::parse(sect).map_err(|e| regex::Error::Syntax(e.to_string())))
    {
        Ok(hir) => match Regex::new(&format!("^(?:{hir})$")) {
            Ok(r) => Some(r),
            Err(e) => {
                err(section.line, format!("invalid regex `[{sect}]`: {e}"), "");
                None
            }
        },
        Err(e) => {
            err(
                section.line,
                format!("invalid regex in section name `[{sect}]`:\n{e}"),
                "a section name is a Rust regex matched against the whole bundle file name; escape literal dots as `\\.`",
            );
            None
        }
    };
    if let Some(re) = &regex {
        for name in re.capture_names().flatten() {
            if BUILTIN_PLACEHOLDERS.contains(&name) || COMMAND_PLACEHOLDERS.contains(&name) {
                err(
                    section.line,
                    format!(
                        "capture group `{name}` in `[{sect}]` has the name of a built-in placeholder"
                    ),
                    &format!("rename the group, e.g. `(?P<{name}_>…)`"),
                );
            }
        }
    }

    let get = |k: &str| merged.get(k).cloned();

    let hosts = match get("host") {
        None => {
            err(
                section.line,
                format!("rule `[{sect}]` has no `host`"),
                "add `host = NAME` to the rule (or to [DEFAULT])",
            );
            None
        }
        Some(l) => match parse_hosts(l.value) {
            Ok(h) => Some(h),
            Err(errors) => {
                for e in errors {
                    err(l.line, format!("bad `host`: {e}"), "");
                }
                None
            }
        },
    };

    let values = parse_values(&get, &mut err);
    // Placeholders: built-ins and the rule's captures everywhere, {path}/{dir} in commands.
    let captures: Vec<String> = regex
        .iter()
        .flat_map(|r| r.capture_names().flatten().map(str::to_owned))
        .collect();
    let releases = get("layout").is_some_and(|l| Layout::parse(l.value) == Some(Layout::Releases));
    let mut template = |key: &str, in_command: bool| -> Option<Option<Template>> {
        // `version_cmd` runs without a bundle: only placeholders known without one.
        let probe = key == "version_cmd";
        let l = match get(key) {
            Some(l) => l,
            None if key == "dest_dir" => Located {
                value: DEFAULT_DEST_DIR,
                line: section.line,
            },
            None => return Some(None),
        };
        let t = Template::parse(l.value);
        let mut known: Vec<&str> = BUILTIN_PLACEHOLDERS.to_vec();
        known.extend(captures.iter().map(String::as_str));
        if in_command {
            known.extend(COMMAND_PLACEHOLDERS);
            if releases {
                known.extend(RELEASE_PLACEHOLDERS);
            }
        }
        if probe {
            known = PROBE_PLACEHOLDERS.to_vec();
        }
        let mut ok = true;
        for p in t.placeholders_in_backticks() {
            ok = false;
            err(
                l.line,
                format!("placeholder `{{{p}}}` inside backticks in `{key}`"),
                "write `$(…)` instead of `…`: inside backticks a value cannot be quoted safely",
            );
        }
        for p in t.placeholders() {
            if known.contains(&p) {
                continue;
            }
            ok = false;
            let hint = if probe
                && (BUILTIN_PLACEHOLDERS.contains(&p)
                    || COMMAND_PLACEHOLDERS.contains(&p)
                    || captures.iter().any(|c| c == p))
            {
                format!(
                    "`{{{p}}}` has no value in `version_cmd`: it runs without a bundle; only {{host}} and {{rule}} are known there"
                )
            } else if !in_command && COMMAND_PLACEHOLDERS.contains(&p) {
                format!("`{{{p}}}` is only known in commands, after the upload")
            } else if RELEASE_PLACEHOLDERS.contains(&p) && (!releases || !in_command) {
                format!("`{{{p}}}` is only known in commands of a rule with `layout = releases`")
            } else {
                match nearest(p, known.iter().copied()) {
                    Some(n) => {
                        format!("did you mean `{{{n}}}`? (write `{{{{` for a literal brace)")
                    }
                    None => format!(
                        "known placeholders here: {}",
                        known
                            .iter()
                            .map(|k| format!("{{{k}}}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                }
            };
            err(
                l.line,
                format!("unknown placeholder `{{{p}}}` in `{key}`"),
                &hint,
            );
        }
        ok.then_some(Some(t))
    };
    let dest_dir = template("dest_dir", false).flatten();
    let lock_path = template("lock_path", false);
    let pre = template("pre", true);
    let upgrade = template("upgrade", true);
    let post = template("post", true);
    let health = template("health", true);
    let rollback = template("rollback", true);
    let version_cmd = template("version_cmd", true);
    // Problems of `action.NAME.confirm` lines, reported once `template` is done with `err`.
    let mut problems: Vec<(usize, String, String)> = Vec::new();
    let mut actions = Vec::new();
    for (key, l) in merged.iter() {
        let Some((name, confirm)) = action_key(key) else {
            continue;
        };
        if confirm {
            if !merged.contains_key(format!("action.{name}").as_str()) {
                problems.push((
                    l.line,
                    format!("`{key}` but no `action.{name}` in rule `[{sect}]`"),
                    format!("add `action.{name} = COMMAND`, or remove this line"),
                ));
            }
            continue;
        }
        let confirm = match merged.get(format!("action.{name}.confirm").as_str()) {
            None => false,
            Some(c) => parse_bool(c.value).unwrap_or_else(|_| {
                problems.push((
                    c.line,
                    format!("bad `action.{name}.confirm` value `{}`", c.value),
                    "write `yes` (the action asks first; headless it needs --yes) or `no`".into(),
                ));
                false
            }),
        };
        if let Some(Some(command)) = template(key, true) {
            actions.push(Action {
                name: name.to_owned(),
                command,
                confirm,
                line: l.line,
            });
        }
    }
    for (line, message, hint) in problems {
        err(line, message, &hint);
    }
    // `proc:`/`port:` checks are dropship's own, not commands: their syntax is checked here.
    let health = match get("health").map(|l| (l.line, super::health::Probe::parse(l.value))) {
        Some((line, Some(Err(why)))) => {
            err(line, format!("bad `health`: {why}"), "");
            None
        }
        _ => health,
    };

    let path_key = |k: &str| get(k).map(|l| resolve_path(l.value, file));

    let v = values?;
    Some(Rule {
        name: sect.clone(),
        line: section.line,
        regex: regex?,
        hosts: hosts?,
        port: v.port,
        protocol: v.protocol,
        login: get("login").map(|l| l.value.to_owned()),
        password: get("password").map(|l| Secret::new(l.value)),
        account: get("account").map(|l| l.value.to_owned()),
        dest_dir: dest_dir?,
        lock_path: lock_path?,
        commands: Commands {
            pre: pre?,
            upgrade: upgrade?,
            post: post?,
            health: health?,
            rollback: rollback?,
        },
        version_cmd: version_cmd?,
        timeout: v.timeout,
        step_timeout: v.step_timeout,
        lock_wait: v.lock_wait,
        lock_stale: v.lock_stale,
        retries: v.retries,
        parallel: v.parallel,
        canary: v.canary,
        max_fail: v.max_fail,
        key: path_key("key"),
        key_passphrase_from_netrc: v.key_passphrase,
        host_key: v.host_key,
        host_key_explicit: get("host_key").is_some(),
        timeout_explicit: get("timeout").is_some(),
        notify: v.notify,
        ssh_port: v.ssh_port,
        ssh_port_explicit: get("ssh_port").is_some(),
        jump: v.jump,
        tls_verify: v.tls_verify,
        tls_ca: path_key("tls_ca"),
        health_timeout: v.health_timeout,
        health_interval: v.health_interval,
        layout: v.layout,
        keep: v.keep,
        store_max: v.store_max,
        actions,
    })
}

/// `action.NAME` -> (`NAME`, false), `action.NAME.confirm` -> (`NAME`, true); `None` for
/// any other key. NAME is lower-case letters, digits, `-` and `_` (it is typed on the
/// command line and shown as a menu entry).
pub fn action_key(key: &str) -> Option<(&str, bool)> {
    let rest = key.strip_prefix("action.")?;
    let (name, confirm) = match rest.strip_suffix(".confirm") {
        Some(n) => (n, true),
        None => (rest, false),
    };
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    ok.then_some((name, confirm))
}

/// `err(line, message, hint)` for the checks below; an empty hint is none.
fn error_sink<'d>(
    file: &'d Path,
    diags: &'d mut Vec<Diagnostic>,
) -> impl FnMut(usize, String, &str) + 'd {
    move |line, msg, hint| {
        let d = Diagnostic::error(file, Some(line), msg);
        diags.push(if hint.is_empty() { d } else { d.hint(hint) });
    }
}

/// Checks `[DEFAULT]`'s values on their own: a bad default is an error even where every
/// rule overrides it (or there is no rule yet).
fn check_defaults(defaults: &[&RawEntry], file: &Path, diags: &mut Vec<Diagnostic>) {
    let get = |k: &str| {
        defaults.iter().rev().find(|e| e.key == k).and_then(|e| {
            e.value.as_deref().map(|value| Located {
                value,
                line: e.line,
            })
        })
    };
    let mut err = error_sink(file, diags);
    parse_values(&get, &mut err);
    if let Some(l) = get("host") {
        for e in parse_hosts(l.value).err().unwrap_or_default() {
            err(l.line, format!("bad `host`: {e}"), "");
        }
    }
}

/// The rule's plain (non-template) values, parsed with their defaults. Shared by the
/// rules and by the check of `[DEFAULT]` on its own, so a bad default is reported even
/// where every rule overrides it, with the same message.
struct Values {
    protocol: Protocol,
    port: Option<u16>,
    ssh_port: u16,
    jump: Option<Vec<String>>,
    timeout: Duration,
    step_timeout: Duration,
    lock_wait: Duration,
    lock_stale: Duration,
    retries: u32,
    parallel: usize,
    canary: usize,
    max_fail: Option<usize>,
    tls_verify: bool,
    key_passphrase: bool,
    host_key: HostKeyPolicy,
    notify: Option<String>,
    health_timeout: Duration,
    health_interval: Duration,
    layout: Layout,
    keep: usize,
    store_max: u64,
}

fn parse_values<'a>(
    get: &dyn Fn(&str) -> Option<Located<'a>>,
    err: &mut dyn FnMut(usize, String, &str),
) -> Option<Values> {
    let protocol = match get("protocol") {
        None => Some(Protocol::Scp),
        Some(l) => Protocol::parse(l.value).or_else(|| {
            err(
                l.line,
                format!("bad protocol `{}`", l.value),
                "use one of ftp, ftps, scp, sftp, local",
            );
            None
        }),
    };
    macro_rules! typed {
        ($key:expr, $parse:expr, $default:expr) => {
            match get($key) {
                None => Some($default),
                Some(l) => match $parse(l.value) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        err(l.line, format!("bad `{}`: {}", $key, e), "");
                        None
                    }
                },
            }
        };
    }
    let port = typed!("port", |v| parse_port(v).map(Some), None);
    let ssh_port = typed!("ssh_port", parse_port, 22);
    let jump = typed!("jump", |v| parse_jump(v).map(Some), None);
    if let (Some(Some(_)), Some(l), Some(p)) = (&jump, get("jump"), &protocol)
        && !matches!(p, Protocol::Scp | Protocol::Sftp)
    {
        err(
            l.line,
            format!("`jump` with protocol {p}: only SSH is carried through a jump host"),
            "use protocol sftp or scp to reach a host behind a bastion, or remove `jump`",
        );
    }
    let timeout = typed!("timeout", parse_duration, Duration::from_secs(30));
    let step_timeout = typed!("step_timeout", parse_duration, Duration::from_secs(600));
    let lock_wait = typed!("lock_wait", parse_duration, Duration::from_secs(300));
    let lock_stale = typed!("lock_stale", parse_duration, Duration::from_secs(3600));
    let retries = typed!("retries", |v| parse_count(v, 0, 100).map(|n| n as u32), 3);
    let parallel = typed!("parallel", |v| parse_count(v, 1, 4096), 32);
    let canary = typed!("canary", |v| parse_count(v, 0, 4096), 0);
    let max_fail = typed!("max_fail", |v| parse_count(v, 1, 1 << 20).map(Some), None);
    let tls_verify = typed!("tls_verify", parse_bool, true);
    let key_passphrase = typed!(
        "key_passphrase",
        |v: &str| if v.eq_ignore_ascii_case("netrc") {
            Ok(true)
        } else {
            Err(format!("`{v}`: the only source is `netrc`"))
        },
        false
    );
    let host_key = typed!(
        "host_key",
        |v: &str| match v.to_ascii_lowercase().as_str() {
            "strict" => Ok(HostKeyPolicy::Strict),
            "accept-new" => Ok(HostKeyPolicy::AcceptNew),
            _ => Err(format!("`{v}`: use `strict` or `accept-new`")),
        },
        HostKeyPolicy::Strict
    );
    let notify = typed!(
        "notify",
        |v: &str| if v.starts_with("http://") || v.starts_with("https://") {
            Ok(Some(v.to_owned()))
        } else {
            Err(format!("`{v}` is not an http:// or https:// URL"))
        },
        None
    );

    let health_timeout = typed!("health_timeout", parse_duration, Duration::from_secs(120));
    let health_interval = typed!("health_interval", parse_duration, Duration::from_secs(2));
    let layout = typed!(
        "layout",
        |v: &str| Layout::parse(v).ok_or_else(|| format!("`{v}`: use `plain` or `releases`")),
        Layout::Plain
    );
    let keep = typed!("keep", |v| parse_count(v, 1, 1000), 5);
    let store_max = typed!("store_max", parse_size, 2 << 30);

    Some(Values {
        protocol: protocol?,
        port: port?,
        ssh_port: ssh_port?,
        jump: jump?,
        timeout: timeout?,
        step_timeout: step_timeout?,
        lock_wait: lock_wait?,
        lock_stale: lock_stale?,
        retries: retries?,
        parallel: parallel?,
        canary: canary?,
        max_fail: max_fail?,
        tls_verify: tls_verify?,
        key_passphrase: key_passphrase?,
        host_key: host_key?,
        notify: notify?,
        health_timeout: health_timeout?,
        health_interval: health_interval?,
        layout: layout?,
        keep: keep?,
        store_max: store_max?,
    })
}

/// Strips the anchors a user may write although rules always match the whole name.
fn unanchored(src: &str) -> &str {
    let s = src.strip_prefix('^').unwrap_or(src);
    match s.strip_suffix('$') {
        Some(t) if !t.ends_with('\\') => t,
        _ => s,
    }
}

/// The one name a regex matches, when it is a plain literal.
fn literal(src: &str) -> Option<String> {
    let hir = regex_syntax::parse(unanchored(src)).ok()?;
    match hir.kind() {
        regex_syntax::hir::HirKind::Literal(lit) => String::from_utf8(lit.0.to_vec()).ok(),
        _ => None,
    }
}

/// The names a regex is made of, `.*` and friends: a rule with one of them (up to anchors)
/// matches every name.
fn is_catch_all(unanchored: &str) -> bool {
    matches!(
        unanchored,
        ".*" | ".+" | "(.*)" | "(.+)" | "(?s).*" | "(?s).+"
    )
}

/// Whether every name `later` matches is matched by `earlier` — where that is decidable
/// cheaply: the same regex up to anchors, a literal the earlier rule matches, or an earlier
/// rule that matches anything. [`shadow_warnings`] decides the same without comparing every
/// pair; this is its specification.
#[cfg(test)]
fn shadows(earlier: &Rule, later: &Rule) -> bool {
    let (e, l) = (unanchored(&earlier.name), unanchored(&later.name));
    if e == l || is_catch_all(e) {
        return true;
    }
    literal(&later.name).is_some_and(|lit| earlier.regex.is_match(&lit))
}

/// Bytes of a required prefix or suffix used to find the rules that may match a literal.
const AFFIX_KEY_BYTES: usize = 64;

/// Bytes of literal names the shadowed-rule check may run regexes over: hundreds of
/// thousands of rule/name pairs, far more than any config whose rules all start or end
/// with a literal needs. Past it the check stops and says so.
const SHADOW_SCAN_BUDGET: usize = 64 << 20;

/// What the shadowed-rule check needs of one rule, worked out once.
struct ShadowKey<'r> {
    unanchored: &'r str,
    /// The one name the rule matches, when it is a plain literal.
    literal: Option<String>,
    /// Every name the rule matches starts with `prefix` and ends with `suffix` (either may
    /// be empty: nothing known).
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

impl<'r> ShadowKey<'r> {
    fn of(rule: &'r Rule) -> ShadowKey<'r> {
        use regex_syntax::hir::literal::{ExtractKind, Extractor};
        let (mut prefix, mut suffix) = (Vec::new(), Vec::new());
        // The rule's regex is this HIR anchored at both ends, so every name it matches is a
        // match of the HIR, which starts with one of its prefix literals and ends with one
        // of its suffix literals (look-arounds are taken as matching: only more names).
        if let Ok(hir) = regex_syntax::parse(&rule.name) {
            let extract = |kind| Extractor::new().kind(kind).extract(&hir);
            let seq = extract(ExtractKind::Prefix);
            prefix.extend_from_slice(seq.longest_common_prefix().unwrap_or_default());
            let seq = extract(ExtractKind::Suffix);
            suffix.extend_from_slice(seq.longest_common_suffix().unwrap_or_default());
        }
        ShadowKey {
            unanchored: unanchored(&rule.name),
            literal: literal(&rule.name),
            prefix,
            suffix,
        }
    }

    fn may_match(&self, name: &[u8]) -> bool {
        name.starts_with(&self.prefix) && name.ends_with(&self.suffix)
    }
}

/// A warning for every FTP rule with nothing to run over SSH: dropship then has no shell on
/// the host to hash the upload, and stock FTP servers offer no hash command, so what arrived
/// is proven by its size only.
fn size_only_warnings(rules: &[Rule], file: &Path) -> Vec<Diagnostic> {
    rules
        .iter()
        .filter(|r| matches!(r.protocol, Protocol::Ftp | Protocol::Ftps) && !r.needs_shell())
        .map(|r| {
            Diagnostic::warning(
                file,
                Some(r.line),
                format!(
                    "rule `[{}]`: uploads are verified by size only (FTP with no command to run over SSH)",
                    limits::preview(&r.name)
                ),
            )
            .hint("give the rule a command (e.g. `post = true`) so dropship can check the SHA-256 over SSH (`ssh_port`), or use sftp")
        })
        .collect()
}

/// A warning for every rule an earlier rule shadows (see [`shadows`]), naming the first such
/// earlier rule.
///
/// Near-linear: rules with the same regex are found by a map, catch-alls are remembered,
/// and a literal is only tried on the earlier rules that may match it: those whose
/// required prefix or suffix it has (found by a map keyed on its first or last bytes), and
/// those with neither. Only that last group costs one regex run per pair; should it add up
/// to [`SHADOW_SCAN_BUDGET`], the check stops with a warning saying so.
fn shadow_warnings(rules: &[Rule], file: &Path) -> Vec<Diagnostic> {
    use std::collections::HashMap;
    let keys: Vec<ShadowKey> = rules.iter().map(ShadowKey::of).collect();
    // Each map and list holds indices of earlier rules, in ascending order.
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut first_catch_all: Option<usize> = None;
    let mut by_literal: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_prefix: HashMap<&[u8], Vec<usize>> = HashMap::new();
    let mut by_suffix: HashMap<&[u8], Vec<usize>> = HashMap::new();
    let mut unkeyed: Vec<usize> = Vec::new();
    let mut budget = SHADOW_SCAN_BUDGET;
    let mut out = Vec::new();
    for (j, (later, key)) in rules.iter().zip(&keys).enumerate() {
        let mut first = by_name.get(key.unanchored).copied();
        first = first.into_iter().chain(first_catch_all).min();
        if let Some(lit) = &key.literal {
            let name = lit.as_bytes();
            let ends = 1..=name.len().min(AFFIX_KEY_BYTES);
            let buckets = by_literal
                .get(lit.as_str())
                .into_iter()
                .chain(ends.clone().filter_map(|n| by_prefix.get(&name[..n])))
                .chain(ends.filter_map(|n| by_suffix.get(&name[name.len() - n..])))
                .chain([&unkeyed]);
            for bucket in buckets {
                for &i in bucket {
                    if i >= first.unwrap_or(j) {
                        break;
                    }
                    if !keys[i].may_match(name) {
                        continue;
                    }
                    let cost = name.len() + 1;
                    if budget < cost {
                        out.push(
                            Diagnostic::warning(
                                file,
                                Some(later.line),
                                format!(
                                    "shadowed rules not checked from rule `[{}]` on: too many rules without a literal start or end to compare",
                                    limits::preview(&later.name)
                                ),
                            )
                            .hint("begin or end rule regexes with literal text (`app-.*\\.tgz`) so they can be checked"),
                        );
                        return out;
                    }
                    budget -= cost;
                    if rules[i].regex.is_match(lit) {
                        first = Some(i);
                        break;
                    }
                }
            }
        }
        if let Some(earlier) = first.map(|i| &rules[i]) {
            out.push(
                Diagnostic::warning(
                    file,
                    Some(later.line),
                    format!(
                        "rule `[{}]` never matches: rule `[{}]` (line {}) matches every name it does, and the first match wins",
                        later.name, earlier.name, earlier.line
                    ),
                )
                .hint("move the more specific rule first, or delete one"),
            );
        }
        by_name.entry(key.unanchored).or_insert(j);
        if is_catch_all(key.unanchored) {
            first_catch_all.get_or_insert(j);
        }
        let bucket = if let Some(lit) = &key.literal {
            by_literal.entry(lit).or_default()
        } else if !key.prefix.is_empty() {
            let n = key.prefix.len().min(AFFIX_KEY_BYTES);
            by_prefix.entry(&key.prefix[..n]).or_default()
        } else if !key.suffix.is_empty() {
            let n = key.suffix.len().min(AFFIX_KEY_BYTES);
            by_suffix
                .entry(&key.suffix[key.suffix.len() - n..])
                .or_default()
        } else {
            &mut unkeyed
        };
        bucket.push(j);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_hops_are_checked_before_they_reach_ssh() {
        assert_eq!(
            parse_jump("bastion, alice@gw:2222,[::1]:22").unwrap(),
            ["bastion", "alice@gw:2222", "[::1]:22"]
        );
        assert_eq!(parse_jump("none").unwrap(), Vec::<String>::new());
        for bad in ["-oProxyCommand=x", "a b", "a;b", "a,,b", "", "$(id)"] {
            assert!(parse_jump(bad).is_err(), "{bad}");
        }
    }
    use crate::config::ini;

    /// `n` rules of the shapes a large config has: literals, prefixes, suffixes, literals
    /// an earlier rule shadows, and a few case-insensitive rules with no literal at all.
    fn many_rules_text(n: usize) -> String {
        let mut text = String::from("[DEFAULT]\nhost = h\nprotocol = local\n");
        for i in 0..n {
            let name = match i % 5 {
                0 => format!("app{i}\\.tgz"),
                1 => format!("svc{i}-.*\\.tgz"),
                2 => format!(".*-{i}\\.zip"),
                3 => format!("svc{}-1\\.tgz", i - 2),
                _ if i % 100 == 4 => format!("(?i)WEB{i}-.*"),
                _ => format!("db-{i}-[0-9]+\\.sql"),
            };
            text.push_str(&format!("[{name}]\n"));
        }
        text
    }

    fn rules_of(text: &str) -> Vec<Rule> {
        let file = Path::new("t.cfg");
        let mut diags = Vec::new();
        let sections = ini::read(text, file, &mut diags);
        let rules = build(&sections, file, &mut diags);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        rules
    }

    /// The pairwise definition, as the check was before it was made near-linear.
    fn pairwise(rules: &[Rule]) -> Vec<(usize, usize)> {
        (0..rules.len())
            .filter_map(|j| {
                let i = (0..j).find(|&i| shadows(&rules[i], &rules[j]))?;
                Some((rules[j].line, rules[i].line))
            })
            .collect()
    }

    fn warned(rules: &[Rule]) -> Vec<(usize, usize)> {
        let lines: std::collections::HashMap<&str, usize> =
            rules.iter().map(|r| (r.name.as_str(), r.line)).collect();
        shadow_warnings(rules, Path::new("t.cfg"))
            .iter()
            .map(|w| {
                let earlier = w.message.split("rule `[").nth(2).unwrap();
                let earlier = &earlier[..earlier.find("]` (line").unwrap()];
                (w.line.unwrap(), lines[earlier])
            })
            .collect()
    }

    #[test]
    fn many_rules_are_warned_about_as_pairwise() {
        let rules = rules_of(&many_rules_text(600));
        let want = pairwise(&rules);
        assert_eq!(want.len(), 120, "the fixture shadows every fifth rule");
        assert_eq!(warned(&rules), want);
    }

    /// Regexes with and without literal prefixes and suffixes, anchors, case folding,
    /// alternations, look-arounds, catch-alls and literals some of them match.
    const POOL: &[&str] = &[
        "app\\.tgz",
        "^app\\.tgz$",
        "app-1\\.tgz",
        "app-.*\\.tgz",
        "app-[0-9]+\\.tgz",
        "(?i)APP-1\\.TGZ",
        "(?i)app.*",
        ".*\\.tgz",
        ".*-1\\.tgz",
        "(app|db)-1\\.tgz",
        "db-1\\.tgz",
        "[ad][pb]p?-1\\.tgz",
        ".*",
        "(?s).+",
        "\\bapp-1\\b.*",
        "a",
        "a|b",
        "[a-z]",
        "(?x) a p p - 1 \\. t g z",
        "app-1\\.tgz|zzz",
        "(?m)^app-1\\.tgz$",
        "é.*",
        "é-1",
    ];

    proptest::proptest! {
        #[test]
        fn shadow_warnings_agree_with_the_pairwise_definition(
            picks in proptest::collection::vec(proptest::sample::select(POOL), 1..12)
        ) {
            let mut seen = std::collections::HashSet::new();
            let mut text = String::from("[DEFAULT]\nhost = h\nprotocol = local\n");
            for p in picks.into_iter().filter(|p| seen.insert(*p)) {
                text.push_str(&format!("[{p}]\n"));
            }
            let rules = rules_of(&text);
            proptest::prop_assert_eq!(warned(&rules), pairwise(&rules));
        }
    }

    #[test]
    fn the_check_stops_and_says_so_past_its_budget() {
        // Rules with no literal start or end, then literal names 1 KiB long: every pair
        // needs a regex run.
        let mut text = String::from("[DEFAULT]\nhost = h\nprotocol = local\n");
        for i in 0..300 {
            text.push_str(&format!("[(?i)x{i}y.*z]\n"));
        }
        let long = "n".repeat(1024);
        for i in 0..300 {
            text.push_str(&format!("[{long}{i}]\n"));
        }
        let rules = rules_of(&text);
        let warnings = shadow_warnings(&rules, Path::new("t.cfg"));
        let last = warnings.last().expect("a warning");
        assert!(
            last.message
                .contains("shadowed rules not checked from rule"),
            "{last}"
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }
}
