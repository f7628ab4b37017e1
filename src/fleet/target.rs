//! Targets without a bundle: each host of a rule as `--probe`, `--status` and the console
//! reach it, before anything is shipped.
//!
//! A plan needs a bundle name for `{bundle}`, the captures and `{timestamp}`. Without one,
//! only `{host}` and `{rule}` have values, so a `dest_dir` such as
//! `/srv/app/releases/{version}` is probed at its longest prefix free of other placeholders
//! (`/srv/app/releases`), and says so; a lock path that depends on the bundle is not
//! checked. Programs are read from the commands as written (see [`super::programs`]).

use super::programs::{self, Extracted};
use crate::config::template::{Template, Vars};
use crate::config::{Config, Netrc, Protocol, Rule, SshHosts};
use crate::plan::{self, Target};
use serde::Serialize;
use std::sync::Arc;

/// Where the dest dir check writes its probe file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestDir {
    /// `dest_dir` as configured.
    pub configured: String,
    /// The directory probed: all of `dest_dir` when it needs no bundle, else its longest
    /// leading part that does.
    pub probed: String,
    /// Whether `probed` is the whole of `dest_dir`.
    pub complete: bool,
}

/// One host of one rule, resolved without a bundle.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub rule: Arc<Rule>,
    /// As a plan's target would be, minus what needs a bundle: `dest_dir` is the probed
    /// directory, `remote_path` empty, no commands.
    pub target: Target,
    /// `Err` with the reason when even the prefix cannot be used (a `..`, a control
    /// character).
    pub dest: Result<DestDir, String>,
    /// The lock directory, when it can be known without a bundle.
    pub lock_path: Option<String>,
    /// `version_cmd`, rendered and shell-quoted.
    pub version_cmd: Option<String>,
    /// Programs the rule's commands (and `version_cmd`) call.
    pub programs: Extracted,
}

impl ProbeTarget {
    /// `host` or `host:port`, as the rule writes it.
    pub fn label(&self) -> String {
        self.target.host.to_string()
    }

    /// Whether the host is reached over SSH for commands: always for scp/sftp, for ftp/ftps
    /// when the rule has commands or a `version_cmd`.
    pub fn needs_ssh(&self) -> bool {
        match self.rule.protocol {
            Protocol::Scp | Protocol::Sftp => true,
            Protocol::Ftp | Protocol::Ftps => {
                !self.rule.commands.is_empty() || self.rule.version_cmd.is_some()
            }
            Protocol::Local => false,
        }
    }

    /// The SSH port used for commands.
    pub fn ssh_port(&self) -> u16 {
        match self.rule.protocol {
            Protocol::Ftp | Protocol::Ftps => self.target.ssh_port(&self.rule),
            _ => self.target.port.unwrap_or(22),
        }
    }
}

/// The only values a template has without a bundle.
fn probe_vars(rule: &Rule, host: &str) -> Vars {
    let mut vars = Vars::new();
    vars.insert("host".into(), host.to_owned());
    vars.insert("rule".into(), rule.name.clone());
    vars
}

fn bundle_free(t: &Template) -> bool {
    t.placeholders()
        .all(|p| crate::config::rules::PROBE_PLACEHOLDERS.contains(&p))
}

/// The longest leading path segments of `dest_dir` that need no bundle, rendered.
fn dest_prefix(rule: &Rule, vars: &Vars) -> Result<DestDir, String> {
    let source = rule.dest_dir.source();
    let mut kept = Vec::new();
    let mut complete = true;
    for seg in source.split('/') {
        if !bundle_free(&Template::parse(seg)) {
            complete = false;
            break;
        }
        kept.push(seg);
    }
    let mut prefix = kept.join("/");
    if prefix.is_empty() && source.starts_with('/') {
        prefix = "/".into();
    }
    let rendered = Template::parse(&prefix)
        .render_plain(vars)
        .map_err(|e| e.to_string())?;
    let probed = plan::normalize_dest(&rendered, rule.protocol)?;
    Ok(DestDir {
        configured: source.to_owned(),
        probed,
        complete,
    })
}

/// The probe targets of `rule`, one per host, in the rule's order.
pub fn for_rule(rule: &Arc<Rule>, netrc: &Netrc, ssh: &SshHosts) -> Vec<ProbeTarget> {
    let mut commands: Vec<(&str, &str)> = rule
        .commands
        .iter()
        .filter_map(|(k, t)| t.map(|t| (k, t.source())))
        .collect();
    if let Some(v) = &rule.version_cmd {
        commands.push(("version_cmd", v.source()));
    }
    let found = programs::extract(commands);
    rule.hosts
        .iter()
        .map(|host| {
            let vars = probe_vars(rule, &host.name);
            let dest = dest_prefix(rule, &vars);
            let lock_path = match &rule.lock_path {
                Some(t) if bundle_free(t) => t
                    .render_plain(&vars)
                    .ok()
                    .and_then(|p| plan::normalize_dest(&p, rule.protocol).ok()),
                Some(_) => None,
                None => match &dest {
                    // Beside the upload for FTP-only rules: known only with the whole dest_dir.
                    Ok(d) if d.complete || !rule.protocol.is_ftp() || !rule.commands.is_empty() => {
                        Some(plan::default_lock_path(rule, &host.name, &d.probed))
                    }
                    _ => None,
                },
            };
            let target = Target {
                dest_dir: dest.as_ref().map(|d| d.probed.clone()).unwrap_or_default(),
                lock_path: lock_path.clone().unwrap_or_default(),
                ..Target::endpoint(rule, host, netrc, ssh)
            };
            ProbeTarget {
                rule: rule.clone(),
                version_cmd: rule
                    .version_cmd
                    .as_ref()
                    .and_then(|t| t.render_shell(&vars).ok()),
                programs: found.clone(),
                target,
                dest,
                lock_path,
            }
        })
        .collect()
}

/// The probe targets of every rule of `config`, rule by rule.
pub fn for_config(config: &Config, netrc: &Netrc, ssh: &SshHosts) -> Vec<ProbeTarget> {
    let queries: Vec<_> = config
        .rules
        .iter()
        .flat_map(|r| r.hosts.iter().filter_map(|h| plan::ssh_query(r, h, netrc)))
        .collect();
    ssh.prefetch(&queries);
    config
        .rules
        .iter()
        .flat_map(|r| for_rule(&Arc::new(r.clone()), netrc, ssh))
        .collect()
}

/// Finds the rule `name` names: its section name exactly, else its package label (when only
/// one rule has it), else the first rule matching `name` as a bundle file name.
pub fn find_rule<'c>(config: &'c Config, name: &str) -> Option<&'c Rule> {
    if let Some(r) = config.rules.iter().find(|r| r.name == name) {
        return Some(r);
    }
    let labelled: Vec<&Rule> = config
        .rules
        .iter()
        .filter(|r| package_label(r) == name)
        .collect();
    if labelled.len() == 1 {
        return Some(labelled[0]);
    }
    config.match_rule(name).map(|(r, _)| r)
}

pub use crate::config::rules::package_label;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("/x/dispatch.cfg")).unwrap()
    }

    #[test]
    fn dest_dir_prefix_without_bundle() {
        let c = config(
            "[app-(?P<version>[0-9.]+)\\.tgz]\nhost = h1, h2:2222\ndest_dir = /srv/{host}/releases/{version}/x\nversion_cmd = cat /srv/{host}/.version\nupgrade = tar xzf {path} && systemctl restart app\n",
        );
        let t = for_config(&c, &Netrc::empty(), &SshHosts::default());
        assert_eq!(t.len(), 2);
        let d = t[1].dest.as_ref().unwrap();
        assert_eq!(d.probed, "/srv/h2/releases");
        assert!(!d.complete);
        assert_eq!(t[1].label(), "h2:2222");
        assert_eq!(t[1].target.port, Some(2222));
        assert_eq!(t[0].version_cmd.as_deref(), Some("cat /srv/h1/.version"));
        assert_eq!(t[0].lock_path.as_deref(), Some(".dropship.lock"));
        let names: Vec<&str> = t[0].programs.programs.iter().map(|p| p.as_str()).collect();
        assert_eq!(names, ["tar", "systemctl", "cat"]);
    }

    #[test]
    fn default_dest_dir_probes_the_home() {
        let c = config("[a\\.tgz]\nhost = h\n");
        let t = for_config(&c, &Netrc::empty(), &SshHosts::default());
        let d = t[0].dest.as_ref().unwrap();
        assert_eq!((d.probed.as_str(), d.complete), ("newcx", false));
        let c = config("[a\\.tgz]\nhost = h\ndest_dir = /{stem}\n");
        let t = for_config(&c, &Netrc::empty(), &SshHosts::default());
        assert_eq!(t[0].dest.as_ref().unwrap().probed, "/");
    }

    #[test]
    fn bundle_dependent_lock_path_is_unknown() {
        let c = config("[a\\.tgz]\nhost = h\nprotocol = ftp\ndest_dir = in/{timestamp}\n");
        let t = for_config(&c, &Netrc::empty(), &SshHosts::default());
        assert_eq!(t[0].lock_path, None);
        assert!(!t[0].needs_ssh());
        let c = config("[a\\.tgz]\nhost = h\nprotocol = ftp\ndest_dir = in\n");
        let t = for_config(&c, &Netrc::empty(), &SshHosts::default());
        assert_eq!(t[0].lock_path.as_deref(), Some("in/.dropship.lock"));
    }

    #[test]
    fn labels_and_lookup() {
        let c = config(
            "[app-(?P<version>[0-9.]+)\\.tgz]\nhost = h\n[billing_.*\\.tar\\.gz]\nhost = h\n[.*]\nhost = h\n",
        );
        let labels: Vec<String> = c.rules.iter().map(package_label).collect();
        assert_eq!(labels, ["app", "billing", ".*"]);
        assert_eq!(
            find_rule(&c, "billing").unwrap().name,
            "billing_.*\\.tar\\.gz"
        );
        assert_eq!(find_rule(&c, "app-1.2.tgz").unwrap().name, c.rules[0].name);
        assert_eq!(find_rule(&c, ".*").unwrap().name, ".*");
        let none = config("[app\\.tgz]\nhost = h\n");
        assert!(find_rule(&none, "zzz").is_none());
    }

    #[test]
    fn version_cmd_refuses_bundle_placeholders() {
        let e = Config::parse(
            "[app-(?P<version>.*)\\.tgz]\nhost = h\nversion_cmd = cat {version}\n",
            Path::new("/x/d.cfg"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("runs without a bundle"), "{e}");
    }
}
