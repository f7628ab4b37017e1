//! The `dispatch.cfg` and `.netrc` contract of issue 2 (sections 2 and 3), one test per
//! point, through the library API only: `Config::parse`, `Netrc::parse`, `Plan::build`.

mod support;

use dropship::config::netrc::Entry;
use dropship::config::{
    Config, ConfigError, Diagnostic, HostKeyPolicy, HostSpec, Netrc, Protocol, Rule, SshHost,
    SshHosts,
};
use dropship::plan::{Credentials, Plan, PlanError, Source, Stamp};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FILE: &str = "/etc/dropship/dispatch.cfg";
const TS: &str = "20261121_101500";
const DATE: &str = "20261121";

// ---------------------------------------------------------------------------------------
// helpers

fn stamp() -> Stamp {
    Stamp::parse(TS).expect("the pinned timestamp parses")
}

fn parse(text: &str) -> Config {
    match Config::parse(text, Path::new(FILE)) {
        Ok(c) => c,
        Err(e) => panic!("config should parse:\n{text}\n---\n{e}"),
    }
}

/// Every diagnostic of a config that must be refused.
fn diagnostics(text: &str) -> Vec<Diagnostic> {
    match Config::parse(text, Path::new(FILE)) {
        Ok(c) => panic!(
            "config should be refused:\n{text}\n---\nrules: {:?}",
            c.rules
        ),
        Err(ConfigError::Invalid { diagnostics }) => diagnostics,
        Err(other) => panic!("expected Invalid, got {other}"),
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    diagnostics(text)
        .into_iter()
        .filter(Diagnostic::is_error)
        .collect()
}

fn sole_error(text: &str) -> Diagnostic {
    let errs = errors(text);
    assert_eq!(
        errs.len(),
        1,
        "expected exactly one error for\n{text}\ngot {errs:#?}"
    );
    errs.into_iter().next().unwrap()
}

/// The diagnostic names the config file and `line`, and reads `FILE:LINE: error: …`.
fn assert_at(d: &Diagnostic, line: usize) {
    assert_eq!(d.file, PathBuf::from(FILE), "{d}");
    assert_eq!(d.line, Some(line), "{d}");
    assert!(
        d.to_string()
            .starts_with(&format!("{FILE}:{line}: error: ")),
        "{d}"
    );
}

fn rule<'c>(config: &'c Config, name: &str) -> &'c Rule {
    config
        .rules
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rule `[{name}]` in {:?}", names(config)))
}

/// The source of a rule's command `step`, as written.
fn step<'r>(r: &'r Rule, step: &str) -> Option<&'r str> {
    r.commands
        .iter()
        .find(|(s, _)| *s == step)
        .and_then(|(_, t)| t)
        .map(|t| t.source())
}

/// The rule `[a]` of `text`.
fn rule_a(text: &str) -> Rule {
    rule(&parse(text), "a").clone()
}

fn names(config: &Config) -> Vec<&str> {
    config.rules.iter().map(|r| r.name.as_str()).collect()
}

/// `Plan::build` with no `~/.ssh/config`: this file is about dispatch.cfg and .netrc.
fn build(config: &Config, netrc: &Netrc, bundle: &str, stamp: Stamp) -> Result<Plan, PlanError> {
    Plan::build(config, netrc, &SshHosts::empty(), bundle, stamp)
}

/// `Credentials::resolve` with no `~/.ssh/config`.
fn resolve(rule: &Rule, host: &HostSpec, netrc: &Netrc) -> Credentials {
    Credentials::resolve(rule, host, netrc, &SshHost::default())
}

fn try_plan(text: &str, netrc: &Netrc, bundle: &str) -> Result<Plan, PlanError> {
    build(&parse(text), netrc, bundle, stamp())
}

fn plan(text: &str, bundle: &str) -> Plan {
    try_plan(text, &Netrc::empty(), bundle).unwrap_or_else(|e| panic!("plan {bundle:?}: {e}"))
}

fn plan_err(text: &str, bundle: &str) -> PlanError {
    match try_plan(text, &Netrc::empty(), bundle) {
        Ok(p) => panic!(
            "expected no plan for {bundle:?}, got rule `[{}]`",
            p.rule.name
        ),
        Err(e) => e,
    }
}

/// The host names of the targets the bundle goes to (the rule that won, by its hosts).
fn routed(text: &str, bundle: &str) -> Vec<String> {
    plan(text, bundle)
        .targets
        .iter()
        .map(|t| t.host.name.clone())
        .collect()
}

fn command<'p>(plan: &'p Plan, target: usize, step: &str) -> &'p str {
    plan.targets[target]
        .commands
        .iter()
        .find(|(s, _)| *s == step)
        .and_then(|(_, c)| c)
        .unwrap_or_else(|| panic!("no `{step}` command"))
}

fn words(cmd: &str) -> Vec<String> {
    shlex::split(cmd).unwrap_or_else(|| panic!("not valid shell words: {cmd:?}"))
}

fn netrc(text: &str) -> Netrc {
    Netrc::parse(text, Path::new("/home/u/.netrc")).unwrap_or_else(|e| panic!("netrc: {e}"))
}

fn password(entry: Option<&Entry>) -> Option<&str> {
    entry?.password.as_ref().map(|p| p.expose())
}

fn secret(s: &Option<dropship::config::Secret>) -> Option<&str> {
    s.as_ref().map(|p| p.expose())
}

/// Credentials for the first host of the only rule of `text`.
fn creds(text: &str, netrc: &Netrc) -> Credentials {
    let config = parse(text);
    let rule = &config.rules[0];
    resolve(rule, &rule.hosts[0], netrc)
}

// ---------------------------------------------------------------------------------------
// 2. dispatch.cfg: INI syntax

#[test]
fn comment_lines_start_with_hash_or_semicolon_even_indented() {
    let c = parse("# top\n; top\n[a]\n   # indented\n\t; indented\nhost = h1\n");
    assert_eq!(names(&c), ["a"]);
    assert_eq!(rule(&c, "a").hosts.len(), 1);
}

#[test]
fn no_inline_comments_hash_and_semicolon_belong_to_the_value() {
    let r =
        &rule_a("[a]\nhost = h1\npassword = a#b;c\nupgrade = echo 1 # not a comment ; nor this\n");
    assert_eq!(secret(&r.password), Some("a#b;c"));
    assert_eq!(
        step(r, "upgrade"),
        Some("echo 1 # not a comment ; nor this")
    );
}

#[test]
fn equals_and_colon_delimiters_first_one_splits() {
    let r = &rule_a("[a]\nhost: h1\nlogin = u:v\ndest_dir: /srv/a=b\n");
    assert_eq!(r.hosts[0].name, "h1");
    assert_eq!(r.login.as_deref(), Some("u:v"));
    assert_eq!(r.dest_dir.source(), "/srv/a=b");
}

#[test]
fn keys_are_case_insensitive() {
    let r = &rule_a("[a]\nHOST = h1\nLogin = u\nPassWord = p\nPROTOCOL = sftp\n");
    assert_eq!(r.hosts[0].name, "h1");
    assert_eq!(r.login.as_deref(), Some("u"));
    assert_eq!(secret(&r.password), Some("p"));
    assert_eq!(r.protocol, Protocol::Sftp);
}

#[test]
fn section_names_keep_their_case_exactly() {
    let text = "[app\\D+\\.tgz]\nhost = letters\n[app\\d+\\.tgz]\nhost = digits\n[APP\\.zip]\nhost = upper\n";
    assert_eq!(
        names(&parse(text)),
        ["app\\D+\\.tgz", "app\\d+\\.tgz", "APP\\.zip"]
    );
    assert_eq!(routed(text, "appxy.tgz"), ["letters"]);
    assert_eq!(routed(text, "app12.tgz"), ["digits"]);
    assert_eq!(routed(text, "APP.zip"), ["upper"]);
    assert!(matches!(
        plan_err(text, "app.zip"),
        PlanError::NoRule { .. }
    ));
}

#[test]
fn values_are_trimmed_and_one_pair_of_quotes_removed() {
    let r = &rule_a(concat!(
        "[a]\n",
        "host = h1   \n",
        "login = \"ibpsusr\"\n",
        "account = 'acct'\n",
        "password = \"\"twice\"\"\n",
        "upgrade = \"mismatched'\n",
    ));
    assert_eq!(r.hosts[0].name, "h1");
    assert_eq!(r.login.as_deref(), Some("ibpsusr"));
    assert_eq!(r.account.as_deref(), Some("acct"));
    assert_eq!(secret(&r.password), Some("\"twice\""));
    assert_eq!(step(r, "upgrade"), Some("\"mismatched'"));
}

#[test]
fn quotes_keep_the_whitespace_inside_them() {
    // Trim first, then remove the quotes: quoting is how a value keeps its own spaces.
    let r = &rule_a("[a]\nhost = h1\npassword = \"  pass phrase  \"\nlogin = ' x '\n");
    assert_eq!(secret(&r.password), Some("  pass phrase  "));
    assert_eq!(r.login.as_deref(), Some(" x "));
}

#[test]
fn empty_value_means_not_set_also_over_default() {
    let text = concat!(
        "[DEFAULT]\n",
        "login = deploy\n",
        "port = 2200\n",
        "dest_dir = /srv/default\n",
        "[a]\n",
        "host = h1\n",
        "login =\n",
        "port =   \n",
        "dest_dir =\n",
        "upgrade =\n",
    );
    let r = rule_a(text);
    assert_eq!(r.login, None);
    assert_eq!(r.port, None);
    assert_eq!(r.commands.upgrade, None);
    assert_eq!(r.dest_dir.source(), "~/newcx/{timestamp}");
    let t = &plan(text, "a").targets[0];
    assert_eq!(t.port, Some(22));
    assert_eq!(t.creds.login, dropship::config::current_user());
    assert_eq!(t.creds.login_source, Source::Default);
}

#[test]
fn no_multi_line_values() {
    // An indented line is not a continuation: it is a line of its own.
    let r = &rule_a("[a]\nhost = h1\nupgrade = echo one\n    post = echo two\n");
    assert_eq!(
        (step(r, "upgrade"), step(r, "post")),
        (Some("echo one"), Some("echo two"))
    );
    let d = sole_error("[a]\nhost = h1\nupgrade = echo one\n    echo two\n");
    assert_at(&d, 4);
}

#[test]
fn no_percent_interpolation() {
    let text = "[a]\nhost = h1\nlogin = %(user)s\nupgrade = echo 100% %(host)s %%\n";
    let p = plan(text, "a");
    assert_eq!(p.targets[0].creds.login, "%(user)s");
    assert_eq!(command(&p, 0, "upgrade"), "echo 100% %(host)s %%");
}

#[test]
fn default_applies_to_rules_that_do_not_set_the_key_and_is_no_rule() {
    let text = concat!(
        "[DEFAULT]\n",
        "host = shared\n",
        "protocol = sftp\n",
        "login = deploy\n",
        "[own\\.tgz]\n",
        "host = mine\n",
        "login = me\n",
        "[inherit\\.tgz]\n",
    );
    let c = parse(text);
    assert_eq!(names(&c), ["own\\.tgz", "inherit\\.tgz"]);
    let own = rule(&c, "own\\.tgz");
    assert_eq!(
        (own.hosts[0].name.as_str(), own.login.as_deref()),
        ("mine", Some("me"))
    );
    assert_eq!(own.protocol, Protocol::Sftp);
    let inherit = rule(&c, "inherit\\.tgz");
    assert_eq!(inherit.hosts[0].name, "shared");
    assert_eq!(inherit.login.as_deref(), Some("deploy"));
    match plan_err(text, "DEFAULT") {
        PlanError::NoRule { tried, .. } => assert_eq!(tried, ["own\\.tgz", "inherit\\.tgz"]),
        other => panic!("{other}"),
    }
}

// ---------------------------------------------------------------------------------------
// 2. rules: matching

#[test]
fn regex_must_match_the_whole_basename() {
    let text = "[app-\\d+\\.tgz]\nhost = app\n[a|b\\.zip]\nhost = alt\n";
    assert_eq!(routed(text, "app-1.tgz"), ["app"]);
    assert_eq!(routed(text, "/srv/drop/app-1.tgz"), ["app"]);
    assert_eq!(routed(text, "a"), ["alt"]);
    for miss in [
        "app-1.tgz.bak",
        "xapp-1.tgz",
        "app-1.tgz\n",
        "a.zip",
        "ab.zip",
        "app-1.tgz/x",
    ] {
        assert!(
            matches!(plan_err(text, miss), PlanError::NoRule { .. }),
            "{miss:?} must not match"
        );
    }
}

#[test]
fn any_rust_regex_is_a_section_name_verbose_mode_with_comments_too() {
    let text = "[(?x) app - (?P<v>\\d+) \\.tgz   # the app]\nhost = h1\n";
    let p = plan(text, "app-12.tgz");
    assert_eq!(p.captures["v"].as_deref(), Some("12"));
    assert!(matches!(
        plan_err(text, "app-12.tgzx"),
        PlanError::NoRule { .. }
    ));
}

#[test]
fn a_path_argument_is_matched_by_its_basename_only() {
    let text = "[.*drop.*]\nhost = dir\n[app\\.tgz]\nhost = base\n";
    let p = plan(text, "/srv/drop/app.tgz");
    assert_eq!(p.bundle, "app.tgz");
    assert_eq!(p.rule.name, "app\\.tgz");
}

#[test]
fn first_matching_rule_in_file_order_wins() {
    let generic_first = "[app-.*\\.tgz]\nhost = generic\n[app-1\\.2\\.tgz]\nhost = specific\n";
    let specific_first = "[app-1\\.2\\.tgz]\nhost = specific\n[app-.*\\.tgz]\nhost = generic\n";
    assert_eq!(routed(generic_first, "app-1.2.tgz"), ["generic"]);
    assert_eq!(routed(specific_first, "app-1.2.tgz"), ["specific"]);
    assert_eq!(routed(specific_first, "app-1.3.tgz"), ["generic"]);
}

// ---------------------------------------------------------------------------------------
// 2. keys

#[test]
fn every_key_parses_into_the_rule() {
    let c = parse(concat!(
        "[full]\n",
        "host = h1\n",
        "port = 2200\n",
        "protocol = ftps\n",
        "login = deploy\n",
        "password = pw\n",
        "account = acct\n",
        "dest_dir = /srv/app\n",
        "pre = echo pre\n",
        "upgrade = echo upgrade\n",
        "post = echo post\n",
        "health = https://h1/health\n",
        "rollback = echo rollback\n",
        "timeout = 5m\n",
        "retries = 0\n",
        "parallel = 4\n",
        "canary = 1\n",
        "max_fail = 2\n",
        "key = keys/id_ed25519\n",
        "host_key = accept-new\n",
        "notify = https://hooks.example.com/x\n",
        "ssh_port = 2022\n",
        "tls_verify = no\n",
        "tls_ca = /etc/ca.pem\n",
    ));
    let r = rule(&c, "full");
    assert_eq!(r.port, Some(2200));
    assert_eq!(r.protocol, Protocol::Ftps);
    assert_eq!(r.login.as_deref(), Some("deploy"));
    assert_eq!(secret(&r.password), Some("pw"));
    assert_eq!(r.account.as_deref(), Some("acct"));
    assert_eq!(r.dest_dir.source(), "/srv/app");
    let sources: Vec<(&str, Option<&str>)> = ["pre", "upgrade", "post", "health", "rollback"]
        .into_iter()
        .map(|s| (s, step(r, s)))
        .collect();
    assert_eq!(
        sources,
        [
            ("pre", Some("echo pre")),
            ("upgrade", Some("echo upgrade")),
            ("post", Some("echo post")),
            ("health", Some("https://h1/health")),
            ("rollback", Some("echo rollback")),
        ]
    );
    assert_eq!(r.timeout, Duration::from_secs(300));
    assert_eq!(
        (r.retries, r.parallel, r.canary, r.max_fail),
        (0, 4, 1, Some(2))
    );
    assert_eq!(r.key, Some(PathBuf::from("/etc/dropship/keys/id_ed25519")));
    assert_eq!(r.host_key, HostKeyPolicy::AcceptNew);
    assert_eq!(r.notify.as_deref(), Some("https://hooks.example.com/x"));
    assert_eq!(r.ssh_port, 2022);
    assert!(!r.tls_verify);
    assert_eq!(r.tls_ca, Some(PathBuf::from("/etc/ca.pem")));
}

#[test]
fn unset_keys_take_their_documented_defaults() {
    let c = parse("[min]\nhost = h1\n");
    let r = rule(&c, "min");
    assert_eq!(r.protocol, Protocol::Scp);
    assert_eq!(r.host_key, HostKeyPolicy::Strict);
    assert_eq!(r.dest_dir.source(), "~/newcx/{timestamp}");
    assert_eq!(r.timeout, Duration::from_secs(30));
    assert_eq!(
        (r.retries, r.parallel, r.canary, r.max_fail),
        (3, 32, 0, None)
    );
    assert_eq!((r.port, r.ssh_port, r.tls_verify), (None, 22, true));
    assert_eq!(
        (&r.login, &r.account, &r.key, &r.notify),
        (&None, &None, &None, &None)
    );
    assert!(r.password.is_none() && r.commands.is_empty());
}

#[test]
fn key_paths_resolve_home_and_config_directory() {
    let home = std::env::var("HOME").expect("HOME is set for the tests");
    let r = &rule_a("[a]\nhost = h1\nkey = ~/.ssh/id\ntls_ca = ca.pem\n");
    assert_eq!(r.key, Some(Path::new(&home).join(".ssh/id")));
    assert_eq!(r.tls_ca, Some(PathBuf::from("/etc/dropship/ca.pem")));
}

#[test]
fn durations_accept_seconds_minutes_hours() {
    for (text, secs) in [
        ("30", 30),
        ("90s", 90),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 172_800),
        ("720h", 2_592_000),
    ] {
        let r = rule_a(&format!("[a]\nhost = h1\ntimeout = {text}\n"));
        assert_eq!(r.timeout, Duration::from_secs(secs), "{text}");
    }
}

/// The grammar `--settle` uses: a sub-second timeout is kept to the millisecond.
#[test]
fn durations_accept_milliseconds() {
    let r = rule_a("[a]\nhost = h1\ntimeout = 500ms\nhealth_interval = 1500ms\n");
    assert_eq!(r.timeout, Duration::from_millis(500));
    assert_eq!(r.health_interval, Duration::from_millis(1500));
}

#[test]
fn bad_values_are_refused_with_file_and_line() {
    let cases = [
        ("host", "bad/name"),
        ("host", "a:0"),
        ("host", "::1"),
        ("host", "web web"),
        ("port", "0"),
        ("port", "65536"),
        ("port", "ssh"),
        ("protocol", "http"),
        ("timeout", "0"),
        ("timeout", "5w"),
        ("timeout", "31d"),
        ("timeout", "0ms"),
        ("timeout", "-1"),
        ("timeout", "721h"),
        ("health_timeout", "99999999999999999999"),
        ("health_interval", "18446744073709551615h"),
        ("lock_stale", "43201m"),
        ("retries", "101"),
        ("retries", "x"),
        ("parallel", "0"),
        ("canary", "-1"),
        ("max_fail", "0"),
        ("host_key", "loose"),
        ("notify", "ftp://x"),
        ("ssh_port", "70000"),
        ("tls_verify", "maybe"),
    ];
    for (key, value) in cases {
        let host = if key == "host" { "" } else { "host = h1\n" };
        let text = format!("[a]\n{host}{key} = {value}\n");
        let d = sole_error(&text);
        assert_at(&d, if key == "host" { 2 } else { 3 });
        let word = value.split_whitespace().next().unwrap();
        assert!(
            d.message.contains(key) && d.message.contains(word),
            "{key} = {value}: {d}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. hosts and ports

#[test]
fn host_list_forms_commas_whitespace_ports_and_v6() {
    let r = rule_a("[a]\nhost = a, b:2222 [::1]:2200,[fe80::1]\t c.example.com\n");
    let hosts: Vec<(&str, Option<u16>)> =
        r.hosts.iter().map(|h| (h.name.as_str(), h.port)).collect();
    assert_eq!(
        hosts,
        [
            ("a", None),
            ("b", Some(2222)),
            ("::1", Some(2200)),
            ("fe80::1", None),
            ("c.example.com", None)
        ]
    );
}

#[test]
fn port_precedence_host_then_rule_then_protocol() {
    let ports = |protocol: &str, port_line: &str| -> Vec<Option<u16>> {
        let text = format!("[a]\nhost = plain own:2121\nprotocol = {protocol}\n{port_line}\n");
        plan(&text, "a").targets.iter().map(|t| t.port).collect()
    };
    for (protocol, default) in [("ftp", 21), ("ftps", 21), ("scp", 22), ("sftp", 22)] {
        assert_eq!(
            ports(protocol, ""),
            [Some(default), Some(2121)],
            "{protocol}"
        );
        assert_eq!(
            ports(protocol, "port = 2100"),
            [Some(2100), Some(2121)],
            "{protocol}"
        );
    }
    assert_eq!(ports("local", ""), [None, Some(2121)]);
    assert_eq!(plan("[a]\nhost = h\n", "a").targets[0].port, Some(22));
}

// ---------------------------------------------------------------------------------------
// 2. dest_dir and placeholders

#[test]
fn dest_dir_defaults_to_newcx_timestamp_relative_to_login_home() {
    let p = plan("[a\\.tgz]\nhost = h1\n", "a.tgz");
    let t = &p.targets[0];
    assert_eq!(t.dest_dir, format!("newcx/{TS}"));
    assert_eq!(t.remote_path, format!("newcx/{TS}/a.tgz"));
}

#[test]
fn local_dest_dir_home_is_this_users_home() {
    let home = std::env::var("HOME").expect("HOME is set for the tests");
    let p = plan("[a\\.tgz]\nhost = h1\nprotocol = local\n", "a.tgz");
    assert_eq!(
        p.targets[0].dest_dir,
        format!("{}/newcx/{TS}", home.trim_end_matches('/'))
    );
}

#[test]
fn every_placeholder_is_filled_in() {
    let rule_name = "(?P<name>[a-z]+)-(?P<version>[0-9.]+)\\.tar\\.gz";
    let text = format!(
        "[{rule_name}]\nhost = web1 web2\n\
         dest_dir = /srv/{{name}}/{{version}}/{{host}}/{{date}}/{{timestamp}}/{{stem}}\n\
         upgrade = run {{bundle}} {{stem}} {{host}} {{rule}} {{timestamp}} {{date}} {{name}} {{version}} {{path}} {{dir}}\n"
    );
    let p = plan(&text, "shop-2.0.1.tar.gz");
    let captures: Vec<(&str, Option<&str>)> = p
        .captures
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    assert_eq!(
        captures,
        [("name", Some("shop")), ("version", Some("2.0.1"))]
    );
    for (i, host) in ["web1", "web2"].into_iter().enumerate() {
        let dir = format!("/srv/shop/2.0.1/{host}/{DATE}/{TS}/shop-2.0.1");
        let path = format!("{dir}/shop-2.0.1.tar.gz");
        assert_eq!(p.targets[i].dest_dir, dir);
        assert_eq!(p.targets[i].remote_path, path);
        assert_eq!(
            words(command(&p, i, "upgrade")),
            [
                "run",
                "shop-2.0.1.tar.gz",
                "shop-2.0.1",
                host,
                rule_name,
                TS,
                DATE,
                "shop",
                "2.0.1",
                path.as_str(),
                dir.as_str()
            ]
        );
    }
}

#[test]
fn capture_that_took_no_part_is_null_and_cannot_be_used() {
    let rule = "[app(-(?P<flavor>[a-z]+))?-(?P<v>\\d+)\\.tgz]\nhost = h1\n";
    let doc = plan(rule, "app-1.tgz").to_json();
    assert_eq!(
        doc["captures"],
        serde_json::json!({"flavor": null, "v": "1"})
    );
    let using = format!("{rule}upgrade = echo {{flavor}}\n");
    assert_eq!(
        command(&plan(&using, "app-pro-1.tgz"), 0, "upgrade"),
        "echo pro"
    );
    match plan_err(&using, "app-1.tgz") {
        e @ PlanError::Render { .. } => assert!(e.to_string().contains("{flavor}"), "{e}"),
        other => panic!("{other}"),
    }
}

#[test]
fn literal_braces_and_shell_variables_are_left_alone() {
    let p = plan(
        "[a]\nhost = h1\nupgrade = echo {{bundle}} ${HOME} {a,b}\n",
        "a",
    );
    assert_eq!(command(&p, 0, "upgrade"), "echo {bundle} ${HOME} {a,b}");
}

#[test]
fn path_and_dir_are_known_in_commands_only() {
    let d = sole_error("[a]\nhost = h1\ndest_dir = /srv/{dir}\n");
    assert_at(&d, 3);
    assert!(d.message.contains("{dir}"), "{d}");
    assert!(
        d.hint
            .as_deref()
            .unwrap_or("")
            .contains("only known in commands"),
        "{d}"
    );
}

#[test]
fn one_timestamp_for_every_host_of_a_dispatch() {
    let config = parse("[a]\nhost = h1 h2 h3\nupgrade = echo {timestamp} {date}\n");
    let now = Stamp::now();
    let p = build(&config, &Netrc::empty(), "a", now.clone()).unwrap();
    for t in &p.targets {
        assert_eq!(t.dest_dir, format!("newcx/{}", now.timestamp));
    }
    let cmds: Vec<&str> = (0..3).map(|i| command(&p, i, "upgrade")).collect();
    assert_eq!(
        cmds,
        vec![format!("echo {} {}", now.timestamp, now.date); 3]
    );
    assert_eq!(now.timestamp.len(), "YYYYmmdd_HHMMSS".len());
    assert!(now.timestamp.starts_with(&now.date));
}

#[test]
fn pinned_timestamp_format() {
    let s = stamp();
    assert_eq!((s.timestamp.as_str(), s.date.as_str()), (TS, DATE));
    for bad in [
        "2026-11-21",
        "20261121",
        "20261321_101500",
        "20261121_106000",
        "",
    ] {
        assert_eq!(Stamp::parse(bad), None, "{bad:?}");
    }
}

const EVIL_NAMES: &[&str] = &[
    "x;reboot.tgz",
    "$(reboot).tgz",
    "`id`.tgz",
    "it's \"quoted\".tgz",
    "with space.tgz",
    "new\nline.tgz",
    "a&&b||c|d>e<f.tgz",
    "*?[~#!%{x}.tgz",
];

#[test]
fn bundle_values_in_commands_stay_one_shell_word() {
    let text = "[(?s)(?P<n>.*)\\.tgz]\nhost = h1\ndest_dir = /srv/in\n\
                upgrade = tar xzf {path} && echo {bundle} {stem} {n}\n";
    for &bundle in EVIL_NAMES {
        let p = plan(text, bundle);
        let stem = bundle.strip_suffix(".tgz").unwrap();
        let path = format!("/srv/in/{bundle}");
        assert_eq!(
            words(command(&p, 0, "upgrade")),
            [
                "tar",
                "xzf",
                path.as_str(),
                "&&",
                "echo",
                bundle,
                stem,
                stem
            ],
            "{bundle:?}"
        );
    }
}

/// Runs `cmd` with `sh -c` and returns its stdout.
fn sh(cmd: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("run sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn placeholders_inside_shell_quotes_cannot_inject_either() {
    // The example config writes `echo "unpacked {bundle} on {host}"`: a placeholder inside
    // quotes must not let a bundle name out of them. Refusing such a template at load time
    // would also keep the promise; running the bundle name as code would not.
    let bundle = "x';echo INJECTED;'\"$(echo INJECTED)\".tgz";
    for (upgrade, expected) in [
        ("printf %s \"got {bundle}\"", format!("got {bundle}")),
        ("printf %s '{bundle}'", bundle.to_owned()),
    ] {
        let text = format!("[(?s).*\\.tgz]\nhost = h1\ndest_dir = /srv/in\nupgrade = {upgrade}\n");
        let Ok(config) = Config::parse(&text, Path::new(FILE)) else {
            continue;
        };
        let Ok(p) = build(&config, &Netrc::empty(), bundle, stamp()) else {
            continue;
        };
        let rendered = command(&p, 0, "upgrade");
        assert_eq!(sh(rendered), expected, "{upgrade} rendered as {rendered}");
    }
}

#[test]
fn dest_dir_with_a_dotdot_segment_is_refused() {
    let text = "[app-(?P<v>.*)\\.tgz]\nhost = h1\ndest_dir = /srv/{v}\n";
    match plan_err(text, "app-...tgz") {
        e @ PlanError::Render { .. } => {
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("{FILE}:1: ")), "{msg}");
            assert!(msg.contains("`..`"), "{msg}");
        }
        other => panic!("{other}"),
    }
    assert!(matches!(
        plan_err("[a]\nhost = h1\ndest_dir = ~/x/../../etc\n", "a"),
        PlanError::Render { .. }
    ));
    assert_eq!(plan(text, "app-1..2.tgz").targets[0].dest_dir, "/srv/1..2");
}

// ---------------------------------------------------------------------------------------
// 2. errors

#[test]
fn each_error_kind_names_file_line_and_what_to_do() {
    // (config, line of the error, part of the message, part of the help)
    #[rustfmt::skip]
    let cases: &[(&str, usize, &str, &str)] = &[
        ("[a]\nhost = h\n[a]\nhost = h\n", 3, "duplicate section `[a]`", "merge"),
        ("[a]\nhost = h\nHost = i\n", 3, "duplicate key `host`", "keep one"),
        ("[a]\nhost = h\nlogn = u\n", 3, "unknown key `logn`", "did you mean `login`?"),
        ("[app-(\\d+.tgz]\nhost = h\n", 1, "invalid regex", "escape"),
        ("[a]\nport = 22\n", 1, "has no `host`", "add `host"),
        ("[a]\nhost = h\nupgrade = echo {bundel}\n", 3, "unknown placeholder `{bundel}`", "`{bundle}`"),
        ("[a]\nhost = h\nprotocol = gopher\n", 3, "bad protocol `gopher`", "ftp, ftps, scp, sftp, local"),
        ("[a]\nhost = h:99999\n", 2, "99999", ""),
        ("[a]\nhost = h\nport = 99999\n", 3, "bad `port`", ""),
    ];
    for &(text, line, message, hint) in cases {
        let d = sole_error(text);
        assert_at(&d, line);
        assert!(d.message.contains(message), "{d}");
        assert!(d.to_string().contains(hint), "{d}");
    }
}

#[test]
fn bad_default_values_are_refused_even_where_every_rule_overrides_them() {
    let text =
        "[DEFAULT]\nprotocol = gopher\nport = 99999\n[a]\nhost = h\nprotocol = sftp\nport = 22\n";
    let lines: Vec<Option<usize>> = errors(text).iter().map(|d| d.line).collect();
    assert_eq!(lines, [Some(2), Some(3)]);
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = concat!(
        "[DEFAULT]\n",               // 1
        "timeout = 5m\n",            // 2
        "[dup]\n",                   // 3
        "host = h\n",                // 4
        "[dup]\n",                   // 5  duplicate section
        "host = h\n",                // 6
        "[keys]\n",                  // 7
        "host = h\n",                // 8
        "HOST = i\n",                // 9  duplicate key
        "logn = u\n",                // 10 unknown key
        "[app-(\\d+.tgz]\n",         // 11 invalid regex
        "host = h\n",                // 12
        "[nohost]\n",                // 13 missing host
        "port = 22\n",               // 14
        "[ph]\n",                    // 15
        "host = h\n",                // 16
        "upgrade = echo {bundel}\n", // 17 unknown placeholder
        "[proto]\n",                 // 18
        "host = h\n",                // 19
        "protocol = gopher\n",       // 20 bad protocol
        "[port]\n",                  // 21
        "host = h\n",                // 22
        "port = 99999\n",            // 23 bad port
    );
    let lines: Vec<Option<usize>> = errors(text).iter().map(|d| d.line).collect();
    let want: Vec<Option<usize>> = [5, 9, 10, 11, 13, 17, 20, 23].map(Some).to_vec();
    assert_eq!(lines, want);
    let rendered = Config::parse(text, Path::new(FILE))
        .unwrap_err()
        .to_string();
    assert!(
        rendered.ends_with("8 errors in the configuration"),
        "{rendered}"
    );
}

#[test]
fn shadowed_rules_are_warned_about() {
    let text = concat!(
        "[app\\.tgz]\nhost = h\n",    // 1
        "[^app\\.tgz$]\nhost = h\n",  // 3  identical modulo anchors
        "[db-.*\\.sql]\nhost = h\n",  // 5
        "[db-1\\.sql]\nhost = h\n",   // 7  a literal the earlier rule matches
        "[web-1\\.tgz]\nhost = h\n",  // 9
        "[web-.*\\.tgz]\nhost = h\n", // 11 more general than the earlier: fine
    );
    let c = parse(text);
    let warned: Vec<Option<usize>> = c.warnings.iter().map(|w| w.line).collect();
    assert_eq!(warned, [Some(3), Some(7)]);
    assert!(c.warnings.iter().all(|w| !w.is_error()));
    assert!(
        c.warnings[1].message.contains("[db-.*\\.sql]"),
        "{}",
        c.warnings[1]
    );

    let everything_first = parse("[.*]\nhost = h\n[x]\nhost = h\n[y.*]\nhost = h\n");
    let warned: Vec<Option<usize>> = everything_first.warnings.iter().map(|w| w.line).collect();
    assert_eq!(warned, [Some(3), Some(5)]);
}

#[test]
fn ftp_rules_checked_by_size_only_are_warned_about() {
    let c = parse(concat!(
        "[a\\.zip]\nhost = h\nprotocol = ftp\n", // 1  no command: size only
        "[b\\.zip]\nhost = h\nprotocol = ftps\npost = true\n", // 4  hashed over SSH
        "[c\\.zip]\nhost = h\nprotocol = sftp\n", // 8  always hashed
    ));
    let warned: Vec<Option<usize>> = c.warnings.iter().map(|w| w.line).collect();
    assert_eq!(warned, [Some(1)]);
    assert!(
        c.warnings[0].message.contains("verified by size only"),
        "{}",
        c.warnings[0]
    );
}

// ---------------------------------------------------------------------------------------
// 3. .netrc

#[test]
fn netrc_tokens_comments_quotes_and_macdef() {
    let n = netrc(concat!(
        "# comment line\n",
        "machine a login u # trailing comment\n",
        "  password \"p w \\\"q\\\" \\\\\"\n",
        "macdef init\n",
        "machine not-an-entry login x\n",
        "\n",
        "default login d account \"acc ount\"\n",
    ));
    assert_eq!(n.entries.len(), 2);
    let a = &n.entries[0];
    assert_eq!(
        (a.machine.as_deref(), a.login.as_deref()),
        (Some("a"), Some("u"))
    );
    assert_eq!(password(Some(a)), Some("p w \"q\" \\"));
    let d = &n.entries[1];
    assert_eq!(
        (d.machine.as_deref(), d.login.as_deref()),
        (None, Some("d"))
    );
    assert_eq!(secret(&d.account), Some("acc ount"));
}

#[test]
fn netrc_missing_file_has_no_entries() {
    let dir = tempfile::tempdir().unwrap();
    let n = Netrc::load(&dir.path().join("absent")).expect("a missing netrc is fine");
    assert!(n.entries.is_empty());
}

#[test]
fn netrc_with_a_password_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".netrc");
    let load = |text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        Netrc::load(&path)
    };
    let err = load("machine h login u password hunter2\n", 0o644)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("chmod 600 {}", path.display())),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(load("machine h login u password hunter2\n", 0o600).is_ok());
    assert!(load("machine h login u\n", 0o644).is_ok());
    assert!(load("machine h login anonymous password me@x\n", 0o644).is_ok());
}

#[test]
fn netrc_lookup_with_login_takes_first_machine_entry_with_that_login_or_none() {
    let n = netrc(concat!(
        "machine h login other password x\n",
        "machine h login L password y\n",
        "machine h password z\n",
        "default login L password d\n",
    ));
    assert_eq!(password(n.lookup("h", Some("L"))), Some("y"));
    assert_eq!(password(n.lookup("h", Some("M"))), Some("z"));
    assert_eq!(password(n.lookup("h", None)), Some("x"));
    let open_first = netrc("machine h password z\nmachine h login L password y\n");
    assert_eq!(password(open_first.lookup("h", Some("L"))), Some("z"));
}

#[test]
fn netrc_default_entry_only_when_no_machine_entry_fits_same_condition() {
    let n = netrc("machine h login other password x\ndefault login L password d\n");
    assert_eq!(password(n.lookup("h", Some("L"))), Some("d"));
    assert_eq!(password(n.lookup("elsewhere", None)), Some("d"));
    assert_eq!(n.lookup("h", Some("M")).map(|e| e.line), None);
}

#[test]
fn netrc_machine_is_the_host_as_written_without_port() {
    let n = netrc("machine h login nu password np\n");
    let c = creds("[a]\nhost = h:2222\n", &n);
    assert_eq!((c.login.as_str(), c.login_source), ("nu", Source::Netrc));
    let with_port = netrc("machine h:2222 login nu password np\n");
    assert_eq!(
        creds("[a]\nhost = h:2222\n", &with_port).login_source,
        Source::Default
    );
}

#[test]
fn rule_credentials_beat_netrc() {
    let n = netrc("machine h login nu password np account na\n");
    let c = creds(
        "[a]\nhost = h\nlogin = nu\npassword = rp\naccount = ra\n",
        &n,
    );
    assert_eq!((c.login.as_str(), c.login_source), ("nu", Source::Config));
    assert_eq!(
        (secret(&c.password), c.password_source),
        (Some("rp"), Some(Source::Config))
    );
    assert_eq!(c.account.as_ref().map(|a| a.expose()), Some("ra"));
}

#[test]
fn netrc_beats_defaults() {
    let n = netrc("machine h login nu password np account na\n");
    let c = creds("[a]\nhost = h\nprotocol = ftp\n", &n);
    assert_eq!((c.login.as_str(), c.login_source), ("nu", Source::Netrc));
    assert_eq!(
        (secret(&c.password), c.password_source),
        (Some("np"), Some(Source::Netrc))
    );
    assert_eq!(c.account.as_ref().map(|a| a.expose()), Some("na"));
    // A rule login with no password takes the password of the netrc entry for that login.
    let c = creds("[a]\nhost = h\nlogin = nu\n", &n);
    assert_eq!(
        (c.login_source, c.password_source),
        (Source::Config, Some(Source::Netrc))
    );
}

#[test]
fn without_rule_or_netrc_login_is_anonymous_for_ftp_and_current_user_otherwise() {
    let me = dropship::config::current_user();
    for (protocol, login) in [
        ("ftp", "anonymous"),
        ("ftps", "anonymous"),
        ("scp", me.as_str()),
        ("sftp", me.as_str()),
        ("local", me.as_str()),
    ] {
        let c = creds(
            &format!("[a]\nhost = h\nprotocol = {protocol}\n"),
            &Netrc::empty(),
        );
        assert_eq!(
            (c.login.as_str(), c.login_source),
            (login, Source::Default),
            "{protocol}"
        );
        assert_eq!(
            (c.password_source, c.account.as_ref().map(|a| a.expose())),
            (None, None),
            "{protocol}"
        );
    }
}

#[test]
fn plan_json_shows_the_password_source_never_the_secret() {
    let n = netrc("machine viaNetrc login nu password netrc-secret\n");
    let text = "[a]\nhost = viaConfig\npassword = config-secret\n[b]\nhost = viaNetrc none\n";
    let json = |bundle: &str| try_plan(text, &n, bundle).unwrap().to_json();
    let sources = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["password"].clone())
            .collect()
    };
    let (a, b) = (json("a"), json("b"));
    assert_eq!(sources(&a), [serde_json::json!("config")]);
    assert_eq!(
        sources(&b),
        [serde_json::json!("netrc"), serde_json::Value::Null]
    );
    for doc in [a, b] {
        let text = doc.to_string();
        assert!(!text.contains("secret"), "{text}");
    }
}

/// Needs root to hand the file to another uid; under CI a missing root fails, elsewhere the
/// skip is announced loudly (tests/support's policy).
#[test]
fn netrc_owned_by_someone_else_is_refused() {
    if !support::live_test_or_skip("netrc_owned_by_someone_else_is_refused", &[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("netrc");
    std::fs::write(&path, "machine h login u password p\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    let msg = Netrc::load(&path).expect_err("foreign owner").to_string();
    assert!(msg.contains("owned by uid 65534"), "{msg}");
    assert!(
        msg.contains(&format!("chown 0 {}", path.display())),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("chmod 600 {}", path.display())),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------
// 7. input limits: checked before parsing, each refusal says where, which limit, what to do

use dropship::config::NetrcError;
use dropship::config::limits::{
    MAX_BUNDLE_NAME_BYTES, MAX_CONFIG_BYTES, MAX_ERRORS, MAX_LINE_BYTES, MAX_NETRC_BYTES,
    MAX_NETRC_TOKEN_BYTES, MAX_SECTION_NAME_BYTES, MAX_SECTIONS,
};

/// The refusal names the limit and says what to do, without quoting the oversized text.
fn assert_limit_error(d: &Diagnostic, line: usize, limit: &str) {
    assert_at(d, line);
    let shown = d.to_string();
    assert!(shown.contains(limit), "{shown}");
    assert!(d.hint.is_some(), "{shown}");
    assert!(
        shown.len() < 1000,
        "the message quotes the input: {} bytes",
        shown.len()
    );
}

#[test]
fn a_section_name_over_4_kib_is_refused_before_its_regex_is_compiled() {
    let at_limit = format!("[{}]\nhost = h\n", "a".repeat(MAX_SECTION_NAME_BYTES));
    assert_eq!(parse(&at_limit).rules.len(), 1);

    // An invalid regex too: the limit is reported, not the regex error.
    let name = "(".repeat(10 * 1024 * 1024);
    let text = format!("[ok]\nhost = h\n[{name}]\nhost = h\n");
    let d = sole_error(&text);
    assert_limit_error(&d, 3, "4 KiB (4096 bytes)");
    assert!(d.message.contains("10485760 bytes"), "{d}");
}

#[test]
fn a_line_over_64_kib_is_refused_with_its_line() {
    let value = |n: usize| "x".repeat(n - "upgrade = ".len());
    let at_limit = format!("[a]\nhost = h\nupgrade = {}\n", value(MAX_LINE_BYTES));
    assert!(parse(&at_limit).rules[0].commands.upgrade.is_some());

    let over = format!("[a]\nhost = h\nupgrade = {}\n", value(MAX_LINE_BYTES + 1));
    let d = sole_error(&over);
    assert_limit_error(&d, 3, "64 KiB (65536 bytes)");
    assert!(d.message.contains("it starts `upgrade = xxx"), "{d}");
}

#[test]
fn more_than_10000_rules_are_refused_at_the_first_one_too_many() {
    // [DEFAULT] is not a rule and does not count.
    let mut text = String::from("[DEFAULT]\n");
    for i in 0..=MAX_SECTIONS {
        text.push_str(&format!("[r{i}]\n"));
    }
    let d = sole_error(&text);
    assert_limit_error(&d, MAX_SECTIONS + 2, "at most 10000");
    assert!(d.message.contains("this is rule 10001"), "{d}");
}

#[test]
fn a_config_file_over_16_mib_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dispatch.cfg");
    let file = std::fs::File::create(&path).unwrap();
    // Sparse: its size is what is checked, not its (never read) content.
    file.set_len(MAX_CONFIG_BYTES + 1).unwrap();
    let err = Config::load(&path).expect_err("too large");
    let ConfigError::Invalid { diagnostics } = &err else {
        panic!("{err}")
    };
    assert_eq!(diagnostics.len(), 1, "{err}");
    let d = &diagnostics[0];
    assert_eq!((d.file.as_path(), d.line), (path.as_path(), None));
    assert!(d.message.contains("16 MiB (16777216 bytes)"), "{d}");
    assert!(d.message.contains("16777217 bytes"), "{d}");

    file.set_len(0).unwrap();
    std::fs::write(&path, "[a]\nhost = h\n").unwrap();
    assert!(Config::load(&path).is_ok());
}

#[test]
fn a_config_with_thousands_of_errors_reports_the_first_100() {
    let text = format!("[a]\nhost = h\n{}", "junk\n".repeat(5000));
    let diags = diagnostics(&text);
    assert_eq!(diags.len(), MAX_ERRORS + 1, "{diags:#?}");
    let last = diags.last().unwrap();
    assert_limit_error(last, 3 + MAX_ERRORS, "more than 100 errors");

    // Unknown keys are found after the INI walk: capped all the same.
    let keys: String = (0..5000).map(|i| format!("key{i} = 1\n")).collect();
    let diags = diagnostics(&format!("[DEFAULT]\n{keys}[a]\nhost = h\n"));
    assert_eq!(diags.len(), MAX_ERRORS + 1);
    assert!(
        diags
            .last()
            .unwrap()
            .message
            .contains("more than 100 errors")
    );
}

#[test]
fn a_netrc_token_over_16_kib_is_refused_with_its_line_and_not_shown() {
    let long = "s".repeat(MAX_NETRC_TOKEN_BYTES + 1);
    for text in [
        format!("machine a\nlogin u\npassword {long}\n"),
        format!("machine a\nlogin u\npassword \"{long}\"\n"),
        format!("machine a\nlogin u\n{long}\n"),
    ] {
        let err = Netrc::parse(&text, Path::new("/home/u/.netrc")).expect_err("too long");
        assert!(
            matches!(err, NetrcError::TokenTooLong { line: 3, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.starts_with("/home/u/.netrc:3: "), "{msg}");
        assert!(
            msg.contains("16 KiB (16384 bytes)") && !msg.contains("sss"),
            "{msg}"
        );
    }
    let at_limit = "s".repeat(MAX_NETRC_TOKEN_BYTES);
    let n = netrc(&format!("machine a password {at_limit}\n"));
    assert_eq!(password(n.lookup("a", None)), Some(at_limit.as_str()));
}

#[test]
fn a_netrc_file_over_4_mib_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("netrc");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(MAX_NETRC_BYTES + 1).unwrap();
    let err = Netrc::load(&path).expect_err("too large");
    assert!(matches!(err, NetrcError::TooLarge { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("4 MiB (4194304 bytes)"), "{msg}");
}

#[test]
fn a_bundle_name_over_255_bytes_is_refused_before_any_rule_is_tried() {
    let text = "[(?s).*]\nhost = h\nprotocol = local\n";
    let at_limit = "b".repeat(MAX_BUNDLE_NAME_BYTES);
    assert_eq!(plan(text, &at_limit).bundle, at_limit);
    // The limit is on the file name, not on the path it is in.
    let in_dir = format!("/{}/{at_limit}", "d".repeat(300));
    assert_eq!(plan(text, &in_dir).bundle, at_limit);

    let over = "b".repeat(10 * 1024 * 1024);
    let err = plan_err(text, &over);
    assert!(matches!(err, PlanError::BadName { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("10485760 bytes long"), "{msg}");
    assert!(msg.contains("at most 255 bytes (NAME_MAX)"), "{msg}");
    assert!(
        msg.len() < 400,
        "the message quotes the name: {} bytes",
        msg.len()
    );
}
