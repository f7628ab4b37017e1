//! Property tests: the config parser never panics, whatever it is fed, and no bundle name
//! can leave its shell word in a rendered command.

use dropship::config::{Config, Netrc, SshHosts};
use dropship::plan::{Plan, PlanError, Stamp};
use proptest::prelude::*;
use std::path::Path;

const FILE: &str = "/etc/dropship/dispatch.cfg";

fn stamp() -> Stamp {
    Stamp::parse("20261121_101500").expect("pinned timestamp")
}

fn build(config: &Config, bundle: &str) -> Result<Plan, PlanError> {
    Plan::build(config, &Netrc::empty(), &SshHosts::empty(), bundle, stamp())
}

/// Pieces that make INI-ish lines: structure, quotes, braces, regex syntax, known keys and
/// typical values.
const FRAGMENTS: &[&str] = &[
    "[",
    "]",
    "=",
    ":",
    "#",
    ";",
    "\"",
    "'",
    "{",
    "}",
    "{{",
    "}}",
    "${",
    " ",
    "\t",
    "\r",
    "(",
    ")",
    "(?P<v>",
    "(?P<bundle>",
    "(?s)",
    "(?x)",
    ".*",
    "\\",
    "\\d",
    "\\D",
    "+",
    "*",
    "?",
    "|",
    "^",
    "$",
    "\\.",
    "..",
    "~/",
    "/",
    "%",
    "%(x)s",
    "DEFAULT",
    "host",
    "port",
    "protocol",
    "login",
    "password",
    "account",
    "dest_dir",
    "pre",
    "upgrade",
    "post",
    "health",
    "rollback",
    "timeout",
    "retries",
    "parallel",
    "canary",
    "max_fail",
    "key",
    "host_key",
    "notify",
    "ssh_port",
    "tls_verify",
    "tls_ca",
    "HOST",
    "{bundle}",
    "{stem}",
    "{host}",
    "{rule}",
    "{timestamp}",
    "{date}",
    "{path}",
    "{dir}",
    "{v}",
    "{nope}",
    "h1",
    "[::1]:22",
    "a:0",
    "22",
    "65536",
    "0",
    "ftp",
    "sftp",
    "local",
    "5m",
    "https://x",
    "é",
    "\u{feff}",
];

fn line() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..8).prop_map(|parts| parts.concat())
}

/// Raw lines mixed with well-formed rules, so that many texts get past the parser and
/// into the rules and the plan.
fn ini_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![1 => line(), 6 => section()];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.join("\n"))
}

const REGEXES: &[&str] = &[
    "app-(?P<v>[0-9.]+)\\.tgz",
    ".*",
    "(?s)(?P<any>.*)",
    "a|b",
    "(?P<x>.)(?P<y>.)?",
    "x",
    "DEFAULT",
    "^app-1\\.tgz$",
    "(?i)APP.*",
];

/// Mostly valid `key = value` lines, so rules survive validation and reach the plan.
const ENTRIES: &[&str] = &[
    "port = 22",
    "protocol = sftp",
    "protocol = local",
    "protocol = ftp",
    "login = u",
    "login = \"q w\"",
    "password = p#;w",
    "account = 'a'",
    "timeout = 5m",
    "retries = 3",
    "host_key = accept-new",
    "notify = https://x",
    "dest_dir = /srv/{v}",
    "dest_dir = ~/{stem}",
    "dest_dir = /srv/{any}/{x}/{y}",
    "dest_dir = ~/x/{rule}",
    "dest_dir =",
    "upgrade = echo {bundle} {path} {dir}",
    "pre = printf %s \"{rule}\"",
    "post = echo '{host}' {timestamp} {date}",
    "health = test -e {dir}",
    "rollback = echo {x}",
    "upgrade = echo {nope}",
    "port = 0",
    "dest_dir = ~/../x",
];

fn section() -> impl Strategy<Value = String> {
    let header =
        prop_oneof![3 => prop::sample::select(REGEXES).prop_map(str::to_owned), 1 => line()];
    let key = prop::sample::select(dropship::config::rules::KEYS).prop_map(|(k, _)| k);
    let entry = prop_oneof![
        6 => prop::sample::select(ENTRIES).prop_map(str::to_owned),
        1 => (key, line()).prop_map(|(k, v)| format!("{k} = {v}")),
    ];
    (header, prop::collection::vec(entry, 0..5))
        .prop_map(|(h, entries)| format!("[{h}]\nhost = h1 h2:2222\n{}", entries.join("\n")))
}

const BUNDLES: &[&str] = &[
    "app-1.2.tgz",
    "app-...tgz",
    "a",
    "b",
    "x",
    "xy",
    "APP-1.zip",
    ".tgz",
    "d/e",
];

fn bundle_arg() -> impl Strategy<Value = String> {
    prop_oneof![3 => prop::sample::select(BUNDLES).prop_map(str::to_owned), 1 => line()]
}

/// Names a shell cares about, mixed with anything at all.
fn bundle_name() -> impl Strategy<Value = String> {
    let special = prop::sample::select(
        &[
            ';', '$', '(', ')', '`', '\'', '"', '\\', ' ', '\n', '\t', '&', '|', '<', '>', '*',
            '?', '[', ']', '#', '~', '!', '{', '}', '=', '%', '^', ',', '-', '.', '/', '\0',
        ][..],
    );
    prop::collection::vec(prop_oneof![special, any::<char>()], 0..24)
        .prop_map(|chars| chars.into_iter().collect())
}

/// Every rule matches every name; each placeholder that carries the name is in a command.
const CATCH_ALL: &str = "[(?s)(?P<n>.*)]\nhost = h1 h2\nprotocol = sftp\n\
                         upgrade = tar xzf {path} -C {dir} && echo {bundle} {stem} {n}\n";

fn shell_words(cmd: &str) -> Vec<String> {
    shlex::split(cmd).unwrap_or_else(|| panic!("not valid shell words: {cmd:?}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_any_text(text in any::<String>()) {
        let _ = Config::parse(&text, Path::new(FILE));
    }

    #[test]
    fn parse_and_plan_never_panic_on_ini_like_text(text in ini_text(), bundle in bundle_arg()) {
        if let Ok(config) = Config::parse(&text, Path::new(FILE)) {
            let _ = build(&config, &bundle);
            for rule in &config.rules {
                let _ = build(&config, &rule.name);
            }
        }
    }

    #[test]
    fn bundle_name_stays_one_shell_word(arg in bundle_name()) {
        let config = Config::parse(CATCH_ALL, Path::new(FILE)).expect("catch-all config");
        match build(&config, &arg) {
            Err(e) => prop_assert!(
                matches!(e, PlanError::BadName { .. }),
                "only an unusable name may be refused, got {e}"
            ),
            Ok(plan) => {
                let bundle = plan.bundle.as_str();
                prop_assert!(!bundle.contains('/') && arg.contains(bundle));
                let stem = dropship::plan::stem(bundle);
                for t in &plan.targets {
                    let cmd = t.commands.upgrade.as_deref().expect("upgrade");
                    let want = [
                        "tar", "xzf", &t.remote_path, "-C", &t.dest_dir, "&&", "echo", bundle,
                        stem, bundle,
                    ];
                    prop_assert_eq!(shell_words(cmd), want, "{:?}", cmd);
                }
            }
        }
    }
}
