//! Plain-text renderings of plans and configuration checks for the terminal.
//!
//! They return strings rather than printing so the binary decides where output goes and
//! tests can read it.

use super::term_text::field;
use crate::config::{Config, Netrc, SshHosts};
use crate::plan::{Plan, Source, Target};
use std::fmt::Write;

fn source(s: Source) -> &'static str {
    match s {
        Source::Config => "config",
        Source::Netrc => "netrc",
        Source::SshConfig => "ssh config",
        Source::Default => "default",
    }
}

/// Left-aligned columns, two spaces apart. Every cell is a [`field`]: what a name holds
/// is shown, not obeyed, and the columns stay aligned.
pub fn table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<std::borrow::Cow<'_, str>>> = rows
        .iter()
        .map(|r| r.iter().map(|c| field(c)).collect())
        .collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The human form of `--plan`.
pub fn plan_table(plan: &Plan, config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "bundle    {}", field(&plan.bundle));
    let _ = writeln!(
        out,
        "rule      [{}]  ({}:{})",
        field(&plan.rule.name),
        field(&config.path.display().to_string()),
        plan.rule.line
    );
    if !plan.captures.is_empty() {
        let caps: Vec<String> = plan
            .captures
            .iter()
            .map(|(k, v)| format!("{k}={}", field(v.as_deref().unwrap_or("(none)"))))
            .collect();
        let _ = writeln!(out, "captures  {}", caps.join("  "));
    }
    let _ = writeln!(out, "timestamp {}\n", plan.stamp.timestamp);
    let mut rows = vec![vec![
        "HOST".to_owned(),
        "PORT".into(),
        "PROTOCOL".into(),
        "LOGIN".into(),
        "PASSWORD".into(),
        "REMOTE PATH".into(),
    ]];
    for t in &plan.targets {
        rows.push(vec![
            t.host.name.clone(),
            t.port.map_or("-".into(), |p| p.to_string()),
            t.protocol.to_string(),
            format!("{} ({})", t.creds.login, source(t.creds.login_source)),
            t.creds.password_source.map_or("none", source).to_owned(),
            t.remote_path.clone(),
        ]);
    }
    out.push_str(&table(&rows));
    out.push_str(&ssh_config_section(&plan.targets));
    // Commands usually differ only by `{host}`; show each distinct set once.
    let mut shown: Vec<&crate::config::Commands<String>> = Vec::new();
    for t in &plan.targets {
        if t.commands.is_empty() || shown.contains(&&t.commands) {
            continue;
        }
        shown.push(&t.commands);
        let hosts: Vec<&str> = plan
            .targets
            .iter()
            .filter(|o| o.commands == t.commands)
            .map(|o| o.host.name.as_str())
            .collect();
        let _ = writeln!(out, "\ncommands on {}:", field(&hosts.join(", ")));
        for (step, cmd) in t.shown_commands().iter() {
            if let Some(cmd) = cmd {
                let _ = writeln!(out, "  {step:<9}{}", field(cmd));
            }
        }
    }
    out.push_str(&actions_section(&plan.rule));
    out
}

/// A rule's named actions (`--action NAME RULE`), as configured; empty when it has none.
fn actions_section(rule: &crate::config::Rule) -> String {
    let lines = crate::engine::run::describe_actions(rule);
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nactions (--action NAME):\n");
    for l in lines {
        let _ = writeln!(out, "  {}", field(&l));
    }
    out
}

/// The `--check` summary of a valid config: rules -> hosts -> protocol -> credentials.
pub fn check_report(config: &Config, netrc: &Netrc, ssh: &SshHosts) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "config  {} ({} rule{})",
        field(&config.path.display().to_string()),
        config.rules.len(),
        if config.rules.len() == 1 { "" } else { "s" }
    );
    let netrc_desc = if netrc.path.is_file() {
        format!(
            "{} ({} entries)",
            field(&netrc.path.display().to_string()),
            netrc.entries.len()
        )
    } else if netrc.path.as_os_str().is_empty() {
        "none".to_owned()
    } else {
        format!(
            "none ({} does not exist)",
            field(&netrc.path.display().to_string())
        )
    };
    let _ = writeln!(out, "netrc   {netrc_desc}");
    let queries: Vec<_> = config
        .rules
        .iter()
        .flat_map(|r| {
            r.hosts
                .iter()
                .filter_map(|h| crate::plan::ssh_query(r, h, netrc))
        })
        .collect();
    ssh.prefetch(&queries);
    for rule in &config.rules {
        let _ = writeln!(out, "\n[{}]  line {}", field(&rule.name), rule.line);
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for host in &rule.hosts {
            let t = Target::endpoint(rule, host, netrc, ssh);
            let creds = &t.creds;
            let password = match creds.password_source {
                Some(s) => format!("password: {}", source(s)),
                None if rule.key.is_some() => "key file".to_owned(),
                None => "no password".to_owned(),
            };
            rows.push(vec![
                format!("  {}", host.name),
                t.port.map_or("-".into(), |p| format!(":{p}")),
                rule.protocol.to_string(),
                format!("{} ({})", creds.login, source(creds.login_source)),
                password,
            ]);
            targets.push(t);
        }
        out.push_str(&table(&rows));
        out.push_str(&ssh_config_section(&targets));
        out.push_str(&actions_section(rule));
    }
    out
}

/// The hosts whose connection the ssh configuration shapes: the effective
/// `login@host:port`, and each value that came from it with its `file:line`; refusals too.
pub fn ssh_config_section(targets: &[Target]) -> String {
    let mut out = String::new();
    for t in targets {
        let notes = t.ssh_config_notes();
        if notes.is_empty() && t.ssh_refusal.is_none() {
            continue;
        }
        if out.is_empty() {
            out.push_str("\nfrom ~/.ssh/config (ssh -G):\n");
        }
        let _ = writeln!(
            out,
            "  {}  -> {}",
            field(&t.host.name),
            field(&t.effective())
        );
        for n in notes {
            let _ = writeln!(out, "      {}", field(&n));
        }
        if let Some(r) = &t.ssh_refusal {
            for line in r.lines() {
                let _ = writeln!(out, "      REFUSED {}", field(line));
            }
        }
    }
    out
}
