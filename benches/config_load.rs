//! What loading a large configuration costs: `Config::parse` of 10,000 rules (the
//! shadowed-rule check included), and `Plan::build` of 1,000 hosts whose `~/.ssh/config` is
//! read through `ssh -G` (one lookup per host). Not a timed test: `cargo bench --bench
//! config_load` prints the numbers for BENCHMARKS.md; `DROPSHIP_RULES` and `DROPSHIP_HOSTS`
//! change the sizes.

use dropship::config::ssh_config::{SshHosts, find_ssh};
use dropship::config::{Config, Netrc};
use dropship::plan::{Plan, Stamp};
use std::path::Path;
use std::time::Instant;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Rules of every shape the shadowed-rule check treats differently: literal names, literal
/// prefixes, literal suffixes, literals an earlier rule matches, case-insensitive regexes.
fn many_rules(n: usize) -> String {
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

fn main() {
    let rules = size("DROPSHIP_RULES", 10_000);
    let text = many_rules(rules);
    let start = Instant::now();
    let config = Config::parse(&text, Path::new("bench.cfg")).expect("the bench config parses");
    println!(
        "Config::parse of {rules} rules: {:?} ({} warnings)",
        start.elapsed(),
        config.warnings.len()
    );

    if find_ssh().is_none() {
        println!("ssh -G lookups: skipped (no OpenSSH client installed)");
        return;
    }
    let hosts = size("DROPSHIP_HOSTS", 1_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let ssh_config = dir.path().join("config");
    std::fs::write(
        &ssh_config,
        "Host web*\n  User deploy\n  Port 2222\nMatch originalhost web1*\n  IdentityFile /k/%h\n",
    )
    .expect("write the ssh config");
    let names: Vec<String> = (0..hosts).map(|i| format!("web{i}")).collect();
    let cfg = format!(
        "[app-.*\\.tgz]\nhost = {}\nprotocol = sftp\ndest_dir = /srv\n",
        names.join(" ")
    );
    let config = Config::parse(&cfg, Path::new("bench.cfg")).expect("the bench config parses");
    let ssh = SshHosts::load(&ssh_config).expect("the ssh config loads");
    let start = Instant::now();
    let plan = Plan::build(
        &config,
        &Netrc::empty(),
        &ssh,
        "app-1.tgz",
        Stamp::parse("20261121_101500").expect("stamp"),
    )
    .expect("the plan builds");
    println!(
        "Plan::build of {} hosts through ssh -G (parallel lookups): {:?}",
        plan.targets.len(),
        start.elapsed()
    );
    let ssh = SshHosts::load(&ssh_config).expect("the ssh config loads");
    let start = Instant::now();
    for h in &names {
        ssh.lookup(h, None, None).expect("lookup");
    }
    println!("{hosts} serial ssh -G lookups: {:?}", start.elapsed());
}
