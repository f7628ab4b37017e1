//! The `dropship` binary: parses the command line, picks a mode, and maps errors to exit
//! codes (0 ok, 1 dispatch failed, 2 usage or config error, 3 no rule matched).

use anyhow::Context;
use clap::{ArgGroup, Parser};
use dropship::config::{self, Config, ConfigError, Netrc, NetrcError};
use dropship::plan::{Credentials, Plan, PlanError, Stamp};
use dropship::ui::report;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NO_RULE: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "dropship",
    version,
    about = "Ship release bundles to servers: match, upload, upgrade, watch it live.",
    after_help = "Exit codes: 0 ok, 1 dispatch failed, 2 usage or config error, 3 no rule matched.\n\
                  Config: --config, else $DROPSHIP_CONFIG, else ./dispatch.cfg, else $XDG_CONFIG_HOME/dropship/dispatch.cfg.",
    group(ArgGroup::new("mode").args(["plan", "check"]).required(true))
)]
struct Cli {
    /// dispatch.cfg to use.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// .netrc to use (else $NETRC, else ~/.netrc).
    #[arg(long, global = true, value_name = "FILE")]
    netrc: Option<PathBuf>,

    /// Show what a bundle would do: rule, hosts, credentials' sources, paths, commands.
    /// Needs no file and no network.
    #[arg(long, value_name = "BUNDLE")]
    plan: Option<String>,

    /// Validate dispatch.cfg and .netrc and list rules -> hosts -> protocol -> credentials.
    #[arg(long)]
    check: bool,

    /// Machine-readable output.
    #[arg(long)]
    json: bool,

    /// Pin {timestamp} (YYYYmmdd_HHMMSS) instead of the current local time.
    #[arg(long, value_name = "YYYYmmdd_HHMMSS")]
    timestamp: Option<String>,
}

/// An error already reported to the user, carrying the exit code to leave with.
#[derive(Debug)]
struct Exit(u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// Writes to stdout; a closed pipe (`dropship --plan x | head`) ends quietly instead of
/// panicking the way `print!` does.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Exit(0).into()),
        other => Ok(other?),
    }
}

fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(Exit(code)) = err.downcast_ref::<Exit>() {
        return *code;
    }
    match err.downcast_ref::<PlanError>() {
        Some(PlanError::NoRule { .. }) => EXIT_NO_RULE,
        Some(_) => EXIT_USAGE,
        None if err.is::<ConfigError>() || err.is::<NetrcError>() => EXIT_USAGE,
        None => EXIT_FAILED,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if matches!(err.downcast_ref::<Exit>(), Some(Exit(0))) => ExitCode::SUCCESS,
        Err(err) => {
            let code = exit_code(&err);
            if !err.is::<Exit>() {
                eprintln!("dropship: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    if cli.check {
        return check(cli);
    }
    if let Some(bundle) = &cli.plan {
        return plan(cli, bundle);
    }
    unreachable!("clap requires one mode")
}

fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    Config::load(&Config::discover(cli.config.as_deref())?)
}

fn load_netrc(cli: &Cli) -> Result<Netrc, NetrcError> {
    match config::netrc_path(cli.netrc.as_deref()) {
        Some(p) => Netrc::load(&p),
        None => Ok(Netrc::empty()),
    }
}

fn print_warnings(config: &Config) {
    for w in &config.warnings {
        eprintln!("{w}");
    }
}

fn plan(cli: &Cli, bundle: &str) -> anyhow::Result<()> {
    let stamp = match &cli.timestamp {
        Some(t) => Stamp::parse(t)
            .with_context(|| format!("--timestamp `{t}` is not YYYYmmdd_HHMMSS"))
            .map_err(|e| {
                eprintln!("dropship: {e:#}");
                Exit(EXIT_USAGE)
            })?,
        None => Stamp::now(),
    };
    let config = load_config(cli)?;
    print_warnings(&config);
    let netrc = load_netrc(cli)?;
    let plan = Plan::build(
        &config,
        &netrc,
        &config::SshHosts::load_default()?,
        bundle,
        stamp,
    )?;
    if cli.json {
        out(&format!("{:#}\n", plan.to_json()))?;
    } else {
        out(&report::plan_table(&plan, &config))?;
    }
    Ok(())
}

/// `--check`: every problem of the config and the netrc in one report.
fn check(cli: &Cli) -> anyhow::Result<()> {
    let path = Config::discover(cli.config.as_deref())?;
    let config = Config::load(&path);
    let netrc = load_netrc(cli);
    let mut failed = false;
    match &config {
        Ok(c) => print_warnings(c),
        Err(e) => {
            eprintln!("{e}");
            failed = true;
        }
    }
    if let Err(e) = &netrc {
        eprintln!("{e}");
        failed = true;
    }
    if let (Ok(c), Ok(n)) = (&config, &netrc) {
        failed |= check_files(c);
        if cli.json {
            out(&format!("{:#}\n", check_json(c, n)))?;
        } else {
            out(&report::check_report(c, n))?;
        }
    }
    if failed {
        return Err(Exit(EXIT_USAGE).into());
    }
    if !cli.json {
        out(&format!("\nOK: {} is valid\n", path.display()))?;
    }
    Ok(())
}

/// Files a rule names must exist; checked here rather than at load so `--plan` works on
/// a machine that does not hold the keys.
fn check_files(config: &Config) -> bool {
    let mut failed = false;
    for rule in &config.rules {
        for (key, path) in [("key", &rule.key), ("tls_ca", &rule.tls_ca)] {
            if let Some(p) = path.as_deref().filter(|p| !Path::new(p).is_file()) {
                eprintln!(
                    "{}:{}: error: `{key}` file {} of rule `[{}]` does not exist\n  help: fix the path (relative paths are relative to the config file)",
                    config.path.display(),
                    rule.line,
                    p.display(),
                    rule.name
                );
                failed = true;
            }
        }
    }
    failed
}

fn check_json(config: &Config, netrc: &Netrc) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = config
        .rules
        .iter()
        .map(|r| {
            serde_json::json!({
                "rule": r.name,
                "line": r.line,
                "protocol": r.protocol,
                "hosts": r.hosts.iter().map(|h| {
                    let creds = Credentials::resolve(r, h, netrc, &Default::default());
                    serde_json::json!({
                        "host": h.name,
                        "port": r.port_for(h),
                        "login": creds.login,
                        "login_source": creds.login_source,
                        "password": creds.password_source,
                    })
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "config": config.path,
        "rules": rules,
        "warnings": config.warnings,
    })
}
