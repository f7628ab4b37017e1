//! The `dropship` binary: parses the command line, picks a mode, and maps errors to exit
//! codes (0 ok, 1 dispatch failed, 2 usage or config error, 3 no rule matched).

use clap::{ArgGroup, CommandFactory, Parser};
use dropship::config::{self, Config, ConfigError, Netrc, NetrcError};
use dropship::plan::{Plan, PlanError, Stamp, Target};
use dropship::session::commands::{self as run, RunError};
use dropship::transport::known_hosts::KnownHostsFiles;
use dropship::ui::headless::{self, Mode};
use dropship::ui::report;
use dropship::ui::term_text;
use std::ffi::{OsStr, OsString};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `eprintln!` for the user: what it says may quote a bundle name, a path, a config value
/// or a server's reply, so it is made inert for the terminal first.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("{}", term_text::text(&format!($($arg)*)))
    };
}

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NO_RULE: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "dropship",
    version,
    about = "Ship release bundles to servers: match, upload, upgrade, watch it live.",
    after_help = "Exit codes: 0 ok, 1 dispatch failed, 2 usage or config error, 3 no rule matched.\n\
                  Config: --config, else $DROPSHIP_CONFIG, else ./dispatch.cfg, else $XDG_CONFIG_HOME/dropship/dispatch.cfg.\n\
                  With no mode flag, dropship opens the interactive console (as --tui does).",
    group(ArgGroup::new("mode").args(["plan", "check", "dispatch", "resume", "history", "tui", "probe", "status", "rollback", "converge", "run", "action"]))
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

    /// Ship bundles (files or http(s) URLs), in the order given.
    #[arg(long, value_name = "BUNDLE", num_args = 1..)]
    dispatch: Vec<String>,

    /// With --dispatch or --converge: print the plans and touch nothing.
    #[arg(long)]
    dry_run: bool,

    /// Bring RULE's hosts (every rule's without RULE) back to the version last shipped
    /// successfully: read each host's version (`version_cmd`), and ship that bundle again,
    /// from the local bundle store, to exactly the hosts that differ, with the rule's
    /// rollout. With --dry-run: show who would get what. Exit 1 if a host failed or did not
    /// answer, 2 for a rule without `version_cmd` or never shipped, 3 if no rule is RULE.
    #[arg(long, value_name = "RULE", num_args = 0..=1, default_missing_value = "")]
    converge: Option<String>,

    /// Continue an interrupted dispatch (see --history).
    #[arg(long, value_name = "ID")]
    resume: Option<i64>,

    /// With --resume: also rerun a command whose outcome is unknown.
    #[arg(long, requires = "resume")]
    force: bool,

    /// Roll a rule's hosts back: `layout = releases` switches `current` to the release
    /// before it; then the rule's `rollback` command runs. RULE is the section name, or a
    /// bundle file name of that rule.
    #[arg(long, value_name = "RULE")]
    rollback: Option<String>,

    /// With --rollback, --dispatch or --converge: only this host of the rule (repeat for
    /// more).
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,

    /// List past dispatches, newest first.
    #[arg(long)]
    history: bool,

    /// Preflight every host of RULE (a section name, a package name, or a bundle name it
    /// matches), or of every rule: reachable, host key, login, dest dir writable, programs
    /// the commands call, lock holder, installed version. Exit 1 if a host fails, 3 if no
    /// rule is RULE. Modifies nothing but a probe file it removes again.
    #[arg(long, value_name = "RULE", num_args = 0..=1, default_missing_value = "")]
    probe: Option<String>,

    /// Installed versions (`version_cmd`) per host and rule, with drift against what the
    /// journal says was last shipped. Exit 1 if a host's version could not be read.
    #[arg(long)]
    status: bool,

    /// The journal to use: an SQLite file, or a team's PostgreSQL as
    /// postgres://USER@HOST[:PORT]/DB (password from ~/.pgpass or netrc). Else `journal =` of
    /// [DEFAULT] in the config, else $XDG_STATE_HOME/dropship/journal.sqlite.
    #[arg(long, global = true, value_name = "FILE|URL", env = "DROPSHIP_JOURNAL")]
    journal: Option<PathBuf>,

    /// Machine-readable output.
    #[arg(long)]
    json: bool,

    /// Pin {timestamp} (YYYYmmdd_HHMMSS) instead of the current local time.
    #[arg(long, value_name = "YYYYmmdd_HHMMSS")]
    timestamp: Option<String>,

    /// Open the interactive console (the default when no mode flag is given).
    #[arg(long)]
    tui: bool,

    /// Console theme: default, light, high-contrast, mono, or a file in
    /// $XDG_CONFIG_HOME/dropship/themes (else $DROPSHIP_THEME; NO_COLOR selects mono).
    #[arg(long, value_name = "NAME")]
    theme: Option<String>,

    /// Console: list the bundles of this directory in the Packages pane.
    #[arg(long, value_name = "DIR")]
    packages: Option<PathBuf>,

    /// Ship whatever lands in DIR, exactly once, until SIGINT/SIGTERM (see README "Drop
    /// folder"). Shipped bundles move to DIR/.dropship/done/DATE/, others to failed/ or
    /// unmatched/ with a NAME.reason file. With --tui, in the console (`a` pauses).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["plan", "check", "dispatch", "resume", "history"])]
    watch: Option<PathBuf>,

    /// With --watch: a file written in place is complete once closed and unchanged this long.
    #[arg(long, value_name = "DURATION", default_value = "2s", requires = "watch",
          value_parser = dropship::config::duration::parse_duration)]
    settle: std::time::Duration,

    /// With --watch: a bundle NAME waits for the file NAME.SUFFIX (e.g. `done`).
    #[arg(long, value_name = "SUFFIX", requires = "watch")]
    marker: Option<String>,

    /// With --watch: dispatches at once (those sharing a host always run one after another).
    #[arg(long, value_name = "N", default_value_t = 4, requires = "watch")]
    max_dispatches: usize,

    /// With --watch: bundles queued or in flight at most; more complete files wait in DIR.
    #[arg(long, value_name = "N", default_value_t = 256, requires = "watch")]
    queue_limit: usize,

    /// With --watch: full rescans of DIR this often (they find what file events missed).
    #[arg(long, value_name = "DURATION", default_value = "10s", requires = "watch",
          value_parser = dropship::config::duration::parse_duration)]
    rescan: std::time::Duration,

    /// With --watch: no file events, rescans only (network file systems where none arrive).
    #[arg(long, requires = "watch")]
    rescan_only: bool,

    /// With --watch and a shared (PostgreSQL) journal: how long a bundle stays held by a
    /// watcher that stopped renewing it (it died) before another watcher takes it over.
    #[arg(long, value_name = "DURATION", default_value = "30s", requires = "watch",
          value_parser = dropship::config::duration::parse_duration)]
    lease: std::time::Duration,

    /// Run a command on TARGETS: rules (section name, package name, or a bundle name they
    /// match) and hosts, comma-separated or as several values, the command after `--`:
    /// `--run app,web1 -- uname -r`. Live output per host, then hosts with identical output
    /// grouped, then a table. Exit 0 all succeeded, 1 a host failed, 3 nothing matched.
    #[arg(long, value_name = "TARGETS", num_args = 1..)]
    run: Vec<String>,

    /// Run a rule's named action (`action.NAME = COMMAND`) on TARGETS, as --run does:
    /// `--action restart app`. In the package directory, with the placeholders of the last
    /// good dispatch.
    #[arg(long, value_names = ["NAME", "TARGETS"], num_args = 2..)]
    action: Vec<String>,

    /// With --action: run an action marked `action.NAME.confirm = yes`.
    #[arg(long)]
    yes: bool,

    /// With --run or --action: hold the rule's remote lock around the command (by default a
    /// run takes no lock, so it never waits behind a dispatch).
    #[arg(long)]
    lock: bool,

    /// With --run: the command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,

    /// Console: output lines kept in memory per host (older lines stay in the journal).
    #[arg(long, value_name = "N", default_value_t = dropship::ui::tui::ring::DEFAULT_CAPACITY)]
    log_lines: usize,

    /// Console: MiB of log text all hosts together may keep in memory; past it the biggest
    /// logs lose their oldest lines first (all lines stay in the journal).
    #[arg(long, value_name = "MIB", default_value_t = dropship::ui::tui::app::DEFAULT_LOG_BUDGET >> 20)]
    log_memory: usize,
}

/// Flags whose value names a bundle, rule, file or directory: a name that may begin with `-`.
const NAME_VALUED: [&str; 10] = [
    "--plan",
    "--converge",
    "--dispatch",
    "--rollback",
    "--probe",
    "--config",
    "--netrc",
    "--journal",
    "--watch",
    "--packages",
];

/// `--plan -rf.tgz` as `--plan=-rf.tgz`: clap takes a word that begins with `-` for a flag,
/// and `allow_hyphen_values` would make `--dispatch a.tgz --dry-run` ship a bundle named
/// `--dry-run`. So the word after one of [`NAME_VALUED`] is joined to it unless it is one
/// of our flags; after `--dispatch`, so is each further `-word` (not `--word`, so a
/// mistyped flag still gets clap's "did you mean") until one of our flags.
fn join_hyphen_values(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut cmd = Cli::command();
    cmd.build();
    let is_flag = |a: &OsStr| -> bool {
        let Some(a) = a.to_str() else {
            return false;
        };
        if a == "-" || a == "--" {
            return true; // left to clap
        }
        if let Some(long) = a.strip_prefix("--") {
            let name = long.split_once('=').map_or(long, |(n, _)| n);
            return cmd.get_arguments().any(|x| x.get_long() == Some(name));
        }
        a.chars()
            .nth(1)
            .is_some_and(|c| cmd.get_arguments().any(|x| x.get_short() == Some(c)))
    };
    let joined = |flag: &str, value: &OsStr| {
        let mut s = OsString::from(flag);
        s.push("=");
        s.push(value);
        s
    };
    let hyphen = |a: &OsStr| a.as_encoded_bytes().starts_with(b"-");
    let mut out = Vec::new();
    let mut args = args.into_iter().peekable();
    while let Some(a) = args.next() {
        let Some(flag) = a
            .to_str()
            .and_then(|f| NAME_VALUED.iter().find(|n| **n == f).copied())
        else {
            out.push(a);
            continue;
        };
        let first = args.next_if(|v| hyphen(v) && !is_flag(v));
        if flag != "--dispatch" {
            out.push(first.map_or(a, |v| joined(flag, &v)));
            continue;
        }
        // `--dispatch=A --dispatch=B ...`: each value stands on its own, in order.
        let mut values: Vec<OsString> = first.into_iter().collect();
        while let Some(v) = args
            .next_if(|v| !hyphen(v) || (!is_flag(v) && !v.as_encoded_bytes().starts_with(b"--")))
        {
            values.push(v);
        }
        if values.is_empty() {
            out.push(a); // clap says a value is missing
        }
        out.extend(values.iter().map(|v| joined(flag, v)));
    }
    out
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

/// Writes to stdout, made inert for a terminal (reports quote names, paths and what hosts
/// said); a closed pipe (`dropship --plan x | head`) ends quietly instead of panicking the
/// way `print!` does.
fn out(text: &str) -> anyhow::Result<()> {
    write_out(&term_text::text(text))
}

/// [`out`] for JSON (one value, or one per line): its escapes stay valid JSON.
fn out_json(text: &str) -> anyhow::Result<()> {
    write_out(&term_text::json(text))
}

/// [`out`] or [`out_json`], as `--json` asks.
fn out_as(json: bool, text: &str) -> anyhow::Result<()> {
    if json { out_json(text) } else { out(text) }
}

fn write_out(text: &str) -> anyhow::Result<()> {
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
    let plan_error = err
        .downcast_ref::<PlanError>()
        .or(match err.downcast_ref::<RunError>() {
            Some(RunError::Plan(p)) => Some(p),
            _ => None,
        });
    match plan_error {
        Some(PlanError::NoRule { .. }) => EXIT_NO_RULE,
        Some(_) => EXIT_USAGE,
        None if err.is::<ConfigError>()
            || err.is::<NetrcError>()
            || err.is::<dropship::journal::JournalError>()
            || err.is::<config::ssh_config::SshConfigError>() =>
        {
            EXIT_USAGE
        }
        None => match err.downcast_ref::<RunError>() {
            Some(r) if r.is_usage() => EXIT_USAGE,
            _ => EXIT_FAILED,
        },
    }
}

fn main() -> ExitCode {
    // Started by OpenSSH as its askpass program for a jump host (see transport::proxy).
    if let Some(socket) = std::env::var_os(dropship::transport::proxy::ASKPASS_SOCKET) {
        let token = std::env::var(dropship::transport::proxy::ASKPASS_TOKEN).unwrap_or_default();
        let prompt = std::env::args().nth(1).unwrap_or_default();
        return match dropship::transport::proxy::askpass_answer(
            std::path::Path::new(&socket),
            &token,
            &prompt,
        ) {
            Some(answer) => {
                println!("{answer}");
                ExitCode::SUCCESS
            }
            None => ExitCode::FAILURE,
        };
    }
    limit_malloc_arenas();
    let cli = match Cli::try_parse_from(join_hyphen_values(std::env::args_os())) {
        Ok(cli) => cli,
        // --help, --version: our own text, with clap's colours.
        Err(e) if !e.use_stderr() => e.exit(),
        // A usage error quotes the arguments, which may be file names from a glob.
        Err(e) => {
            eprint!("{}", term_text::text(&e.render().to_string()));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if matches!(err.downcast_ref::<Exit>(), Some(Exit(0))) => ExitCode::SUCCESS,
        Err(err) => {
            let code = exit_code(&err);
            if !err.is::<Exit>() {
                say!("dropship: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    if !cli.hosts.is_empty()
        && cli.rollback.is_none()
        && cli.dispatch.is_empty()
        && cli.converge.is_none()
    {
        say!("dropship: --host goes with --dispatch, --rollback or --converge");
        return Err(Exit(EXIT_USAGE).into());
    }
    if cli.dry_run && cli.dispatch.is_empty() && cli.converge.is_none() {
        say!("dropship: --dry-run goes with --dispatch or --converge");
        return Err(Exit(EXIT_USAGE).into());
    }
    if let Some(rule) = &cli.converge {
        return converge(cli, rule);
    }
    if cli.check {
        return check(cli);
    }
    if let Some(bundle) = &cli.plan {
        return plan(cli, bundle);
    }
    if let Some(rule) = &cli.probe {
        return probe(cli, rule);
    }
    if cli.status {
        return status(cli);
    }
    if cli.history {
        let rows = run::history(&journal_path(cli), 50)?;
        let text = if cli.json {
            headless::json_lines(&rows)
        } else {
            headless::history_table(&rows)
        };
        return out_as(cli.json, &text);
    }
    if !cli.run.is_empty() || !cli.action.is_empty() {
        return adhoc_run(cli);
    }
    if cli.yes || cli.lock {
        say!("dropship: --yes and --lock go with --run or --action");
        return Err(Exit(EXIT_USAGE).into());
    }
    if !cli.command.is_empty() {
        say!(
            "dropship: a command after `--` needs --run TARGETS\n  help: dropship --run RULE_OR_HOST -- COMMAND"
        );
        return Err(Exit(EXIT_USAGE).into());
    }
    if let Some(id) = cli.resume {
        start_log("resume");
        let ctx = context(cli)?;
        let summaries = with_printer(cli, |front, _| run::resume(&ctx, id, cli.force, front))?;
        return finish(cli, &summaries);
    }
    if !cli.dispatch.is_empty() {
        return dispatch(cli);
    }
    if let Some(rule) = &cli.rollback {
        start_log("rollback");
        let ctx = context(cli)?;
        let stamp = stamp(cli)?;
        let summaries = with_printer(cli, |front, _| {
            run::rollback(&ctx, rule, &cli.hosts, stamp.as_ref(), front)
        })?;
        return finish(cli, &summaries);
    }
    if let Some(dir) = &cli.watch {
        return watch(cli, dir);
    }
    console(cli, None)
}

/// The log file for a headless front end (the console installs the same one itself):
/// warnings raised where no front end is in reach land there. Modes that only read
/// (`--plan`, `--check`, `--history`, `--dry-run`) write no file.
fn start_log(mode: &str) {
    if dropship::logfile::init().is_some() {
        tracing::info!(
            mode,
            version = env!("CARGO_PKG_VERSION"),
            "dropship started"
        );
    }
}

/// No mode flag (or `--tui`): the interactive console. Without a terminal there is nothing
/// to draw on, so that is a usage error rather than a hang.
/// `watch`: `--tui --watch DIR`, the folder the console watches and dispatches from.
fn console(cli: &Cli, watch: Option<dropship::watch::WatchOptions>) -> anyhow::Result<()> {
    let on_terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if !cli.tui && !on_terminal {
        say!(
            "dropship: no mode given and not on a terminal\n  help: pass --dispatch BUNDLE, --plan, --check, --history, or run in a terminal for the console (--tui)"
        );
        return Err(Exit(EXIT_USAGE).into());
    }
    let config = load_config(cli)?;
    let opts = dropship::ui::tui::Options {
        netrc: load_netrc(cli)?,
        ssh: config::SshHosts::load_default()?,
        config,
        journal_path: journal_path(cli),
        known_hosts: KnownHostsFiles::default_files(),
        theme: cli.theme.clone(),
        packages: cli.packages.clone(),
        stamp: stamp(cli)?,
        ring_capacity: cli.log_lines,
        log_budget: cli.log_memory.saturating_mul(1 << 20),
        watch,
    };
    match dropship::ui::tui::run(opts) {
        Ok(()) => Ok(()),
        Err(e) if e.is_usage() => {
            say!("dropship: {e}");
            Err(Exit(EXIT_USAGE).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `--watch DIR`: headless, or in the console with `--tui`.
fn watch(cli: &Cli, dir: &Path) -> anyhow::Result<()> {
    let bad = |what: &str| -> anyhow::Result<()> {
        say!("dropship: {what}");
        Err(Exit(EXIT_USAGE).into())
    };
    if cli.max_dispatches == 0 || cli.queue_limit == 0 {
        return bad("--max-dispatches and --queue-limit must be at least 1");
    }
    if cli.rescan.is_zero() {
        return bad("--rescan must be more than 0");
    }
    if cli.lease < std::time::Duration::from_secs(1) {
        return bad("--lease must be at least 1s (it is renewed every third of it)");
    }
    if let Some(m) = &cli.marker
        && (m.is_empty() || m.contains('/') || m.starts_with('.'))
    {
        return bad("--marker takes a suffix such as `done` (NAME waits for NAME.done)");
    }
    let mut opts = dropship::watch::WatchOptions::new(dir.to_path_buf());
    opts.settle = cli.settle;
    opts.marker = cli.marker.clone();
    opts.max_dispatches = cli.max_dispatches;
    opts.queue_limit = cli.queue_limit;
    opts.rescan = cli.rescan;
    opts.fs_events = !cli.rescan_only;
    opts.lease = cli.lease;
    if cli.tui {
        return console(cli, Some(opts));
    }
    start_log("watch");
    let ctx = context(cli)?;
    match with_printer(cli, |front, watch_front| {
        run::watch(&ctx, opts, front, watch_front)
    }) {
        Ok(_) => Ok(()),
        Err(RunError::Watch(e)) if e.is_usage() => {
            say!("dropship: {e}");
            Err(Exit(EXIT_USAGE).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `--journal` (or `$DROPSHIP_JOURNAL`), else `journal =` of the config's `[DEFAULT]`, else
/// the local SQLite file. A config that cannot be read here is reported by the command that
/// needs it; commands that need none (`--history`) then use the local file.
fn journal_path(cli: &Cli) -> PathBuf {
    if let Some(j) = &cli.journal {
        return j.clone();
    }
    Config::discover(cli.config.as_deref())
        .ok()
        .and_then(|path| Config::load(&path).ok())
        .and_then(|config| config.journal)
        .unwrap_or_else(dropship::journal::Journal::default_path)
}

fn context(cli: &Cli) -> anyhow::Result<run::Context> {
    let config = load_config(cli)?;
    print_warnings(&config);
    Ok(run::Context {
        netrc: load_netrc(cli)?,
        ssh: config::SshHosts::load_default()?,
        config,
        journal_path: journal_path(cli),
        known_hosts: KnownHostsFiles::default_files(),
    })
}

/// How the headless printer renders: JSON lines, progress bars on a terminal, else lines.
fn mode(cli: &Cli) -> Mode {
    if cli.json {
        Mode::Json
    } else if std::io::stderr().is_terminal() {
        Mode::Terminal
    } else {
        Mode::Plain
    }
}

/// Runs a headless command with the printer as its front end; the printer has rendered
/// everything when this returns. The drop folder gets plain lines on a terminal too:
/// progress bars are per host and per dispatch, and side by side they would fight.
fn with_printer<T>(
    cli: &Cli,
    run: impl FnOnce(dropship::engine::rollout::Emit, dropship::watch::WatchEmit) -> Result<T, RunError>,
) -> Result<T, RunError> {
    let mode = match mode(cli) {
        Mode::Terminal if cli.watch.is_some() => Mode::Plain,
        m => m,
    };
    let (front, watch_front, printer) = headless::spawn_printer(mode);
    let out = run(front, watch_front);
    let _ = printer.join();
    out
}

fn stamp(cli: &Cli) -> anyhow::Result<Option<Stamp>> {
    cli.timestamp
        .as_deref()
        .map(|t| {
            Stamp::parse(t).ok_or_else(|| {
                say!("dropship: --timestamp `{t}` is not YYYYmmdd_HHMMSS");
                Exit(EXIT_USAGE).into()
            })
        })
        .transpose()
}

fn dispatch(cli: &Cli) -> anyhow::Result<()> {
    if !cli.dry_run {
        start_log("dispatch");
    }
    let ctx = context(cli)?;
    let stamp = stamp(cli)?;
    let mut downloads = headless::Downloads::new(mode(cli));
    let mut prepared = run::prepare(&ctx, &cli.dispatch, stamp.as_ref(), |url, n, total| {
        downloads.progress(url, n, total)
    })?;
    drop(downloads);
    run::restrict(&mut prepared, &cli.hosts)?;
    let chain: Option<Vec<String>> =
        run::is_chain(&prepared).then(|| prepared.iter().map(|p| p.plan.bundle.clone()).collect());
    if cli.dry_run {
        for p in &prepared {
            if cli.json {
                out_json(&format!("{}\n", p.plan.to_json()))?;
            } else {
                out(&report::plan_table(&p.plan, &ctx.config))?;
                out(&format!("file      {}\n\n", p.file.display()))?;
            }
        }
        return Ok(());
    }
    let summaries = with_printer(cli, |front, _| run::dispatch(&ctx, prepared, front))?;
    if let Some(chain) = chain {
        let reached = run::chain_reached(&chain, &summaries);
        if cli.json {
            out_json(&format!("{}\n", serde_json::json!({ "chain": reached })))?;
        } else {
            out(&format!("\n{}", chain_table(&reached)))?;
        }
    }
    finish(cli, &summaries)
}

/// Which version of a chain each host reached.
fn chain_table(reached: &[run::Reached]) -> String {
    let mut t = String::from("chain: version reached per host\n");
    for r in reached {
        let mut line = format!(
            "  {}: {}",
            r.host,
            r.reached.as_deref().unwrap_or("none of the chain")
        );
        if let Some(f) = &r.failed {
            line.push_str(&format!(" ({f} failed)"));
        }
        if !r.not_tried.is_empty() {
            line.push_str(&format!("; not tried: {}", r.not_tried.join(", ")));
        }
        t.push_str(&line);
        t.push('\n');
    }
    t
}

/// `--run TARGETS -- COMMAND` and `--action NAME TARGETS`: live output, then the groups of
/// identical output and the closing table (with --json: the events, then one line with the
/// groups). Exit 0 all succeeded, 1 a host failed, 2 usage, 3 no rule or host matched.
fn adhoc_run(cli: &Cli) -> anyhow::Result<()> {
    use dropship::engine::run::What;
    use dropship::ui::run_report;
    let usage = |what: &str| -> anyhow::Result<()> {
        say!("dropship: {what}");
        Err(Exit(EXIT_USAGE).into())
    };
    let (what, targets) = if let Some((name, targets)) = cli.action.split_first() {
        if !cli.command.is_empty() {
            return usage(
                "--action takes no command after `--`: the rule's `action.NAME` is the command",
            );
        }
        (What::Action(name.clone()), targets.to_vec())
    } else {
        if cli.command.is_empty() {
            return usage(
                "--run needs a command after `--`\n  help: dropship --run RULE_OR_HOST -- uname -r",
            );
        }
        (What::Command(shell_words(&cli.command)), cli.run.clone())
    };
    if cli.yes && matches!(what, What::Command(_)) {
        return usage("--yes is for --action (a destructive action's confirmation)");
    }
    start_log("run");
    let ctx = context(cli)?;
    let stamp = stamp(cli)?;
    let req = run::RunRequest {
        targets,
        what,
        lock: cli.lock,
        yes: cli.yes,
    };
    let mut kept = None;
    let result = with_printer(cli, |front, _| {
        let (front, k) = run_report::collector(front);
        kept = Some(k);
        run::run(&ctx, &req, stamp.as_ref(), front)
    });
    let summaries = match result {
        Ok(s) => s,
        Err(RunError::Run(e)) => {
            say!("dropship: {e}");
            let code = if e.is_no_match() {
                EXIT_NO_RULE
            } else {
                EXIT_USAGE
            };
            return Err(Exit(code).into());
        }
        Err(e) => return Err(e.into()),
    };
    let kept = kept.expect("the printer ran");
    let groups = run_report::groups(&kept, &summaries);
    if cli.json {
        out_json(&format!("{}\n", serde_json::json!({ "groups": groups })))?;
    } else {
        out(&format!(
            "\n{}\n{}",
            run_report::grouped(&groups),
            run_report::closing_table(&kept, &summaries)
        ))?;
    }
    if summaries.iter().all(|s| s.all_succeeded()) && !summaries.is_empty() {
        Ok(())
    } else {
        Err(Exit(EXIT_FAILED).into())
    }
}

/// The words after `--` as one shell command: a single word is taken as written (`--
/// 'uname -r; uptime'`), several are joined with spaces as ssh and pssh do (`-- uname -r`).
fn shell_words(words: &[String]) -> String {
    words.join(" ")
}

/// Prints the closing table and turns the results into the exit code.
fn finish(cli: &Cli, summaries: &[dropship::engine::rollout::Summary]) -> anyhow::Result<()> {
    if !cli.json {
        out(&format!("\n{}", headless::summary_table(summaries)))?;
    }
    if summaries.iter().all(|s| s.all_succeeded()) && !summaries.is_empty() {
        Ok(())
    } else {
        Err(Exit(EXIT_FAILED).into())
    }
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
        say!("{w}");
    }
}

fn plan(cli: &Cli, bundle: &str) -> anyhow::Result<()> {
    let stamp = stamp(cli)?.unwrap_or_else(Stamp::now);
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
        out_json(&format!("{:#}\n", plan.to_json()))?;
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
            say!("{e}");
            failed = true;
        }
    }
    if let Err(e) = &netrc {
        say!("{e}");
        failed = true;
    }
    let ssh = config::SshHosts::load_default();
    if let Err(e) = &ssh {
        say!("{e}");
        failed = true;
    }
    if let (Ok(c), Ok(n), Ok(ssh)) = (&config, &netrc, &ssh) {
        failed |= check_files(c);
        let store = store_usage(c);
        if cli.json {
            let mut v = check_json(c, n, ssh);
            v["store"] = store.as_ref().map_or_else(
                |e| serde_json::json!({ "error": e.to_string() }),
                |(u, max)| serde_json::json!({ "root": u.root, "bundles": u.bundles, "bytes": u.bytes, "store_max": max, "entries": u.entries }),
            );
            out_json(&format!("{v:#}\n"))?;
        } else {
            out(&report::check_report(c, n, ssh))?;
            out(&store_text(&store))?;
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

/// The local bundle store and its bound: the smallest `store_max` of the rules (the one a
/// dispatch of that rule enforces on all of it).
fn store_usage(
    config: &Config,
) -> Result<(dropship::engine::store::Usage, u64), dropship::engine::store::StoreError> {
    use dropship::engine::store::{DEFAULT_MAX_BYTES, Store};
    let max = config
        .rules
        .iter()
        .map(|r| r.store_max)
        .min()
        .unwrap_or(DEFAULT_MAX_BYTES);
    Ok((Store::new(Store::default_root()).usage()?, max))
}

fn store_text(
    store: &Result<(dropship::engine::store::Usage, u64), dropship::engine::store::StoreError>,
) -> String {
    let mib = |b: u64| match b {
        b if b < 1 << 10 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b if b < 1 << 30 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b => format!("{:.1} GiB", b as f64 / (1 << 30) as f64),
    };
    match store {
        Err(e) => format!("\nbundle store: {e}\n"),
        Ok((u, max)) => {
            let mut t = format!(
                "\nbundle store {}: {} bundle(s), {} of store_max {}\n",
                u.root.display(),
                u.bundles,
                mib(u.bytes),
                mib(*max)
            );
            let mut entries = u.entries.clone();
            entries.sort_by(|a, b| a.rule.cmp(&b.rule).then(b.stored_at.cmp(&a.stored_at)));
            for e in &entries {
                t.push_str(&format!(
                    "  [{}] {} ({}, sha256 {})\n",
                    e.rule,
                    e.bundle,
                    mib(e.size),
                    &e.sha256[..e.sha256.len().min(12)]
                ));
            }
            t
        }
    }
}

/// Files a rule names must exist; checked here rather than at load so `--plan` works on
/// a machine that does not hold the keys.
fn check_files(config: &Config) -> bool {
    let mut failed = false;
    for rule in &config.rules {
        for (key, path) in [("key", &rule.key), ("tls_ca", &rule.tls_ca)] {
            if let Some(p) = path.as_deref().filter(|p| !Path::new(p).is_file()) {
                say!(
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

fn check_json(config: &Config, netrc: &Netrc, ssh: &config::SshHosts) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = config
        .rules
        .iter()
        .map(|r| {
            serde_json::json!({
                "rule": r.name,
                "line": r.line,
                "protocol": r.protocol,
                "actions": r.actions.iter().map(|a| serde_json::json!({
                    "name": a.name,
                    "command": a.command.source(),
                    "confirm": a.confirm,
                })).collect::<Vec<_>>(),
                "hosts": r.hosts.iter().map(|h| {
                    let t = Target::endpoint(r, h, netrc, ssh);
                    let creds = &t.creds;
                    serde_json::json!({
                        "host": h.name,
                        "port": t.port,
                        "address": t.address,
                        "login": creds.login,
                        "login_source": creds.login_source,
                        "password": creds.password_source,
                        "ssh_config": t.ssh_config_notes(),
                        "ssh_config_refused": t.ssh_refusal,
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

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core), and a
/// dispatch runs one blocking thread per host: with 100 hosts that is 16 arenas, each
/// holding on to freed memory. Two arenas cost nothing measurable in throughput and took
/// the console's peak RSS under 100 streaming hosts from 80 to 66 MiB (bench/tui.sh).
/// Must run before any thread starts; `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// The probe targets of `rule` (every rule when empty); exit 3 when no rule is `rule`.
fn fleet_targets(
    cli: &Cli,
    rule: &str,
) -> anyhow::Result<Vec<dropship::fleet::target::ProbeTarget>> {
    use dropship::fleet::target;
    let config = load_config(cli)?;
    print_warnings(&config);
    let netrc = load_netrc(cli)?;
    let ssh = config::SshHosts::load_default()?;
    if rule.is_empty() {
        return Ok(target::for_config(&config, &netrc, &ssh));
    }
    match target::find_rule(&config, rule) {
        Some(r) => Ok(target::for_rule(
            &std::sync::Arc::new(r.clone()),
            &netrc,
            &ssh,
        )),
        None => {
            let names: Vec<String> = config
                .rules
                .iter()
                .map(|r| format!("[{}] ({})", r.name, target::package_label(r)))
                .collect();
            say!(
                "dropship: no rule `{rule}` in {}\n  help: name a rule by its section name, its package name, or a bundle name it matches; rules: {}",
                config.path.display(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            );
            Err(Exit(EXIT_NO_RULE).into())
        }
    }
}

/// `--converge [RULE]`: the plan first (all of it with --dry-run), then the re-dispatches.
fn converge(cli: &Cli, rule: &str) -> anyhow::Result<()> {
    if !cli.dry_run {
        start_log("converge");
    }
    let targets = fleet_targets(cli, rule)?;
    let ctx = context(cli)?;
    let plans = run::converge_plan(&ctx, &targets, &cli.hosts, !rule.is_empty())?;
    if plans.is_empty() {
        say!(
            "dropship: nothing to converge: no rule has both a `version_cmd` and a dispatch that succeeded\n  help: add `version_cmd` to the rules, and ship a bundle with --dispatch FILE"
        );
        return Err(Exit(EXIT_USAGE).into());
    }
    if cli.json {
        for p in &plans {
            out_json(&format!("{}\n", serde_json::json!({ "converge": p })))?;
        }
    } else {
        out(&converge_table(&plans, cli.dry_run))?;
    }
    let unreachable: usize = plans.iter().map(|p| p.unreachable()).sum();
    if cli.dry_run {
        return Ok(());
    }
    let stamp = stamp(cli)?;
    let summaries = with_printer(cli, |front, _| {
        run::converge(&ctx, &plans, stamp.as_ref(), front)
    })?;
    if summaries.is_empty() {
        if !cli.json {
            out("\nevery host that answered runs the last good version: nothing shipped\n")?;
        }
        return if unreachable == 0 {
            Ok(())
        } else {
            Err(Exit(EXIT_FAILED).into())
        };
    }
    let result = finish(cli, &summaries);
    if unreachable > 0 {
        return Err(Exit(EXIT_FAILED).into());
    }
    result
}

/// The converge plan: per rule, the version to reach and each host's fate.
fn converge_table(plans: &[dropship::fleet::converge::RulePlan], dry_run: bool) -> String {
    use dropship::fleet::converge::Action;
    use dropship::fleet::version::Installed;
    let mut t = String::new();
    for p in plans {
        t.push_str(&format!(
            "[{}] ({}): last good {} (version {}, dispatch #{}){}\n",
            p.rule,
            p.package,
            p.goal.bundle,
            p.goal.version,
            p.goal.dispatch,
            if dry_run {
                ", dry run: nothing changes"
            } else {
                ""
            }
        ));
        let width = p
            .hosts
            .iter()
            .map(|h| h.label.len())
            .max()
            .unwrap_or(4)
            .max(4);
        t.push_str(&format!(
            "  {:width$}  {:<12}  ACTION\n",
            "HOST", "INSTALLED"
        ));
        for h in &p.hosts {
            let installed = match &h.installed {
                Installed::Version { version } => version.clone(),
                Installed::Unreadable { .. } => "unreadable".into(),
                Installed::Unreachable { .. } => "unreachable".into(),
            };
            let action = match h.action {
                Action::UpToDate => "up to date".to_owned(),
                Action::Ship if dry_run => format!("would get {}", p.goal.bundle),
                Action::Ship => format!("gets {}", p.goal.bundle),
                Action::Unreachable => "left out: did not answer".to_owned(),
            };
            let why = match &h.installed {
                Installed::Version { .. } => String::new(),
                Installed::Unreadable { error } | Installed::Unreachable { error } => {
                    format!(" ({error})")
                }
            };
            t.push_str(&format!(
                "  {:width$}  {installed:<12}  {action}{why}\n",
                h.label
            ));
        }
    }
    t
}

/// `--probe [RULE]`: exit 0 when every host passes, 1 when one fails.
fn probe(cli: &Cli, rule: &str) -> anyhow::Result<()> {
    let targets = fleet_targets(cli, rule)?;
    let probes = run::probe(&targets, &KnownHostsFiles::default_files());
    let passed = probes.iter().all(|p| p.passed());
    let text = if cli.json {
        headless::json_lines(&probes)
    } else {
        dropship::ui::fleet_report::probe_table(&probes)
    };
    out_as(cli.json, &text)?;
    if passed {
        Ok(())
    } else {
        Err(Exit(EXIT_FAILED).into())
    }
}

/// `--status`: exit 0 when every host's version was read, 1 when one could not be (drift
/// alone does not fail: it is shown), 2 when no rule has a `version_cmd`.
fn status(cli: &Cli) -> anyhow::Result<()> {
    let targets = fleet_targets(cli, "")?;
    if targets.iter().all(|t| t.version_cmd.is_none()) {
        say!(
            "dropship: no rule has a `version_cmd`, so there is no version to show\n  help: add e.g. `version_cmd = cat ~/app/.version` to the rules whose hosts you want to see"
        );
        return Err(Exit(EXIT_USAGE).into());
    }
    let report = run::status(
        &targets,
        &journal_path(cli),
        &KnownHostsFiles::default_files(),
    )?;
    let all_read = report.all_read();
    let text = if cli.json {
        headless::json_lines(&report.cells)
    } else {
        let last = run::last_results(&journal_path(cli))?;
        let (_, hosts) = report.axes();
        let mut text = dropship::ui::fleet_report::status_table(&report);
        text.push_str(&dropship::ui::fleet_report::last_dispatch_table(
            &hosts, &last,
        ));
        text
    };
    out_as(cli.json, &text)?;
    if all_read {
        Ok(())
    } else {
        Err(Exit(EXIT_FAILED).into())
    }
}
