//! Property tests: the config parser never panics, whatever it is fed, no bundle name
//! can leave its shell word in a rendered command, and oversized input (the size attacks of
//! `config::limits`) is refused at its line, without quoting it back.

use dropship::config::limits::{
    MAX_BUNDLE_NAME_BYTES, MAX_LINE_BYTES, MAX_NETRC_TOKEN_BYTES, MAX_SECTION_NAME_BYTES,
    MAX_SECTIONS,
};
use dropship::config::{Config, ConfigError, Diagnostic, Netrc, NetrcError, SshHosts};
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

/// The errors of a config that must be refused.
fn refused(text: &str) -> Vec<Diagnostic> {
    match Config::parse(text, Path::new(FILE)) {
        Err(ConfigError::Invalid { diagnostics }) => diagnostics,
        Err(e) => panic!("expected Invalid, got {e}"),
        Ok(_) => panic!("an oversized config was accepted"),
    }
}

/// A valid config of `sections` small rules, as lines.
fn small_rules(sections: usize) -> Vec<String> {
    (0..sections)
        .flat_map(|i| [format!("[r{i}\\.tgz]"), "host = h".to_owned()])
        .collect()
}

/// At least `len` bytes (at most 3 more) of one character, multi-byte ones too, so that a
/// careless cut at the limit would fall inside one.
fn filler(len: usize, c: char) -> String {
    c.to_string().repeat(len.div_ceil(c.len_utf8()))
}

/// The size attacks: bounded (a few dozen cases of at most a few MiB) so that the fuzz tier
/// stays a matter of seconds in CI.
mod size_attacks {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn a_huge_section_name_is_refused_at_its_line(
            extra in 1usize..3_000_000,
            c in prop::sample::select(&['a', '(', '[', 'é', '\\', '*', '€'][..]),
            before in 0usize..20,
            closed in any::<bool>(),
        ) {
            let mut lines = small_rules(before);
            let name = filler(MAX_SECTION_NAME_BYTES + extra, c);
            let line = lines.len() + 1;
            lines.push(if closed { format!("[{name}]") } else { format!("[{name}") });
            lines.push("host = h".into());
            let diags = refused(&lines.join("\n"));
            prop_assert_eq!(diags.len(), 1, "{:?}", diags);
            prop_assert_eq!(diags[0].line, Some(line));
            prop_assert!(diags[0].message.contains("a section name"), "{}", diags[0]);
            prop_assert!(diags[0].to_string().len() < 1000);
        }

        #[test]
        fn many_rules_are_refused_at_the_first_one_too_many(
            extra in 1usize..2_000,
            with_keys in any::<bool>(),
            with_default in any::<bool>(),
        ) {
            let n = MAX_SECTIONS + extra;
            // [DEFAULT] is not a rule: it does not count.
            let mut text = String::from(if with_default { "[DEFAULT]\nhost = h\n" } else { "" });
            for i in 0..n {
                text.push_str(&if with_keys { format!("[s{i}]\nhost = h\n") } else { format!("[s{i}]\n") });
            }
            let diags = refused(&text);
            prop_assert_eq!(diags.len(), 1, "{:?}", diags);
            let per = if with_keys { 2 } else { 1 };
            let skip = if with_default { 2 } else { 0 };
            prop_assert_eq!(diags[0].line, Some(skip + MAX_SECTIONS * per + 1));
        }

        #[test]
        fn long_lines_are_refused_each_at_its_line(
            lens in prop::collection::vec(MAX_LINE_BYTES + 1..MAX_LINE_BYTES * 8, 1..4),
            c in prop::sample::select(&['x', '=', '#', ' ', 'é', '\r'][..]),
            at in 0usize..10,
        ) {
            let mut lines = small_rules(10);
            for (k, len) in lens.iter().enumerate() {
                let pos = (at + k * 3).min(lines.len());
                lines.insert(pos, format!("k{}", filler(*len, c)));
            }
            let want: Vec<Option<usize>> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.len() > MAX_LINE_BYTES)
                .map(|(i, _)| Some(i + 1))
                .collect();
            let diags = refused(&lines.join("\n"));
            let got: Vec<Option<usize>> = diags.iter().map(|d| d.line).collect();
            prop_assert_eq!(got, want);
            prop_assert!(diags.iter().all(|d| d.message.contains("64 KiB") && d.to_string().len() < 1000));
        }

        #[test]
        fn a_long_netrc_token_is_refused_at_its_line_and_never_shown(
            extra in 1usize..1_000_000,
            keyword in prop::sample::select(&["machine", "login", "password", "account", ""][..]),
            quoted in any::<bool>(),
            c in prop::sample::select(&['s', '#', '€', '\\'][..]),
            before in 0usize..5,
        ) {
            let token = filler(MAX_NETRC_TOKEN_BYTES + extra, c);
            // A leading `#` would start a comment: such a token must be quoted.
            let written = if quoted || c == '#' {
                format!("\"{}\"", token.replace('\\', "\\\\"))
            } else {
                token.clone()
            };
            let mut text = "machine m login u password p\n".repeat(before);
            text.push_str("machine a\n");
            text.push_str(&format!("{keyword} {written}\n"));
            let err = Netrc::parse(&text, Path::new("/home/u/.netrc")).expect_err("too long");
            let want_line = before + 2;
            prop_assert!(
                matches!(err, NetrcError::TokenTooLong { line, .. } if line == want_line),
                "{}", err
            );
            let msg = err.to_string();
            let start: String = token.chars().take(32).collect();
            prop_assert!(msg.len() < 300 && !msg.contains(&start), "{}", msg);
        }

        #[test]
        fn a_long_bundle_name_is_refused_before_matching(
            extra in 1usize..1_000_000,
            c in prop::sample::select(&['b', '€', ';', ' '][..]),
        ) {
            let config = Config::parse(CATCH_ALL, Path::new(FILE)).expect("catch-all config");
            let name = filler(MAX_BUNDLE_NAME_BYTES + extra, c);
            match build(&config, &format!("/tmp/{name}")) {
                Err(PlanError::BadName { why, .. }) => prop_assert!(why.contains("NAME_MAX"), "{}", why),
                other => prop_assert!(false, "{:?}", other.map(|p| p.bundle)),
            }
        }
    }
}
