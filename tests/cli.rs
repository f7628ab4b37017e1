//! The `dropship` binary: `--plan`, `--check`, config and netrc discovery, exit codes.
//!
//! Every run gets its own temporary HOME and working directory and a clean environment,
//! so nothing of the machine's own configuration leaks in.

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::home::Home;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dispatch.cfg.example");
const TS: &str = "20261121_101500";
const CONFIG_SECRET: &str = "cfg-S3cret#;x";
const NETRC_SECRET: &str = "netrc-S3cret";

/// A throwaway HOME that is also the working directory of the runs.
struct Sandbox {
    home: Home,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }

    fn assert_no_secrets(&self) -> &Run {
        for secret in [CONFIG_SECRET, NETRC_SECRET] {
            assert!(
                !self.stdout.contains(secret),
                "secret in stdout:\n{}",
                self.stdout
            );
            assert!(
                !self.stderr.contains(secret),
                "secret in stderr:\n{}",
                self.stderr
            );
        }
        self
    }
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox { home: Home::new() }
    }

    /// A sandbox whose `dispatch.cfg` (in the working directory) holds `text`.
    fn with_config(text: impl AsRef<[u8]>) -> (Sandbox, PathBuf) {
        let sb = Sandbox::new();
        let cfg = sb.write("dispatch.cfg", text);
        (sb, cfg)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.home.path(rel)
    }

    /// Writes `text` at `rel` (creating directories) with mode 0600.
    fn write(&self, rel: &str, text: impl AsRef<[u8]>) -> PathBuf {
        self.write_mode(rel, text, 0o600)
    }

    fn write_mode(&self, rel: &str, text: impl AsRef<[u8]>, mode: u32) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn command(&self) -> Command {
        self.home.command(&[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &Path)]) -> Run {
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run dropship");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    /// `--plan BUNDLE --json` with the pinned timestamp and `extra` arguments.
    fn plan_json(&self, bundle: &str, extra: &[&str], env: &[(&str, &Path)]) -> Value {
        let mut args = vec!["--plan", bundle, "--json", "--timestamp", TS];
        args.extend_from_slice(extra);
        self.run_with(&args, env)
            .assert_code(0)
            .assert_no_secrets()
            .json()
    }
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// `--config CFG` followed by `args`.
fn on<'a>(cfg: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--config", arg(cfg)];
    all.extend_from_slice(args);
    all
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn targets(doc: &Value) -> &Vec<Value> {
    doc["targets"].as_array().expect("targets array")
}

/// The value of `field` for each target, in order.
fn column<'v>(doc: &'v Value, field: &str) -> Vec<&'v Value> {
    targets(doc).iter().map(|t| &t[field]).collect()
}

/// A config whose one catch-all rule sends everything to `host` over `protocol`.
fn catch_all(host: &str, protocol: &str) -> String {
    format!("[.*]\nhost = {host}\nprotocol = {protocol}\n")
}

/// The lines of `text` that start with `prefix`, as whitespace-separated words.
fn rows<'t>(text: &'t str, prefix: &str) -> Vec<Vec<&'t str>> {
    text.lines()
        .filter(|l| l.trim_start().starts_with(prefix))
        .map(|l| l.split_whitespace().collect())
        .collect()
}

const SHOP: &str = "\
[DEFAULT]
protocol = sftp
login = deploy

[shop-(?P<version>[0-9.]+)\\.tgz]
host = zeta, alpha:2222 mid
password = cfg-S3cret#;x
dest_dir = ~/shop/{version}
upgrade = tar xzf {path} -C {dir}

[docs-.*\\.zip]
host = docs
protocol = ftp
login =
";

// ---------------------------------------------------------------------------------------
// --plan

#[test]
fn plan_json_has_exactly_the_documented_shape() {
    let (sb, cfg) = Sandbox::with_config(SHOP);
    let doc = sb.plan_json("/some/dir/shop-1.4.2.tgz", &on(&cfg, &[]), &[]);
    assert_eq!(keys(&doc), ["bundle", "rule", "captures", "targets"]);
    assert_eq!(doc["bundle"], "shop-1.4.2.tgz");
    assert_eq!(doc["rule"], "shop-(?P<version>[0-9.]+)\\.tgz");
    assert_eq!(doc["captures"], serde_json::json!({"version": "1.4.2"}));
    for t in targets(&doc) {
        assert_eq!(
            keys(t),
            [
                "host",
                "port",
                "protocol",
                "login",
                "account",
                "password",
                "dest_dir",
                "remote_path",
                "commands"
            ]
        );
        assert_eq!(
            keys(&t["commands"]),
            ["pre", "upgrade", "post", "health", "rollback"]
        );
    }
    assert_eq!(column(&doc, "host"), ["zeta", "alpha", "mid"]);
    assert_eq!(column(&doc, "port"), [22, 2222, 22]);
    let mid = &targets(&doc)[2];
    assert_eq!(mid["protocol"], "sftp");
    assert_eq!(mid["login"], "deploy");
    assert_eq!(mid["account"], Value::Null);
    assert_eq!(mid["password"], "config");
    assert_eq!(mid["dest_dir"], "shop/1.4.2");
    assert_eq!(mid["remote_path"], "shop/1.4.2/shop-1.4.2.tgz");
    assert_eq!(
        mid["commands"],
        serde_json::json!({
            "pre": null,
            "upgrade": "tar xzf shop/1.4.2/shop-1.4.2.tgz -C shop/1.4.2",
            "post": null,
            "health": null,
            "rollback": null
        })
    );
}

#[test]
fn plan_json_defaults_ftp_anonymous_and_newcx_timestamp() {
    let (sb, cfg) = Sandbox::with_config(SHOP);
    let doc = sb.plan_json("docs-2.zip", &on(&cfg, &[]), &[]);
    assert_eq!(doc["captures"], serde_json::json!({}));
    let t = &targets(&doc)[0];
    assert_eq!(t["port"], 21);
    assert_eq!(t["login"], "anonymous");
    assert_eq!(t["password"], Value::Null);
    assert_eq!(t["dest_dir"], format!("newcx/{TS}"));
    assert_eq!(t["remote_path"], format!("newcx/{TS}/docs-2.zip"));
}

#[test]
fn plan_human_table_shows_rule_hosts_and_sources() {
    let (sb, cfg) = Sandbox::with_config(SHOP);
    let run = sb.run(&on(&cfg, &["--plan", "shop-1.4.2.tgz", "--timestamp", TS]));
    run.assert_code(0).assert_no_secrets();
    let out = &run.stdout;
    assert_eq!(rows(out, "bundle"), [["bundle", "shop-1.4.2.tgz"]]);
    assert!(
        out.contains(&format!(
            "[shop-(?P<version>[0-9.]+)\\.tgz]  ({}:5)",
            cfg.display()
        )),
        "{out}"
    );
    assert_eq!(rows(out, "captures"), [["captures", "version=1.4.2"]]);
    assert_eq!(rows(out, "timestamp"), [["timestamp", TS]]);
    assert_eq!(
        rows(out, "alpha"),
        [[
            "alpha",
            "2222",
            "sftp",
            "deploy",
            "(config)",
            "config",
            "shop/1.4.2/shop-1.4.2.tgz"
        ]]
    );
    let hosts: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("HOST"))
        .skip(1)
        .take(3)
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(hosts, ["zeta", "alpha", "mid"]);
}

#[test]
fn plan_on_the_example_config_works_out_of_the_box() {
    let sb = Sandbox::new();
    let doc = sb.plan_json("app-1.4.2.tgz", &on(Path::new(EXAMPLE), &[]), &[]);
    assert_eq!(column(&doc, "host"), ["web1", "web2"]);
    assert_eq!(column(&doc, "protocol"), ["local", "local"]);
    assert_eq!(column(&doc, "port"), [&Value::Null, &Value::Null]);
    assert_eq!(
        column(&doc, "dest_dir"),
        [
            "/tmp/dropship-demo/web1/releases/1.4.2",
            "/tmp/dropship-demo/web2/releases/1.4.2"
        ]
    );
}

#[test]
fn secrets_never_reach_any_output() {
    let (sb, cfg) =
        Sandbox::with_config(format!("{SHOP}\n[netrc-only]\nhost = vault\nlogin = nu\n"));
    let netrc = sb.write(
        ".netrc",
        format!("machine vault login nu password {NETRC_SECRET}\n"),
    );
    let base = on(&cfg, &["--netrc", arg(&netrc)]);
    for extra in [
        &["--plan", "shop-1.tgz"][..],
        &["--plan", "shop-1.tgz", "--json"],
        &["--plan", "netrc-only"],
        &["--plan", "netrc-only", "--json"],
        &["--check"],
        &["--check", "--json"],
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        sb.run(&args).assert_code(0).assert_no_secrets();
    }
    let doc = sb.plan_json("netrc-only", &base, &[]);
    assert_eq!(column(&doc, "password"), ["netrc"]);
}

// ---------------------------------------------------------------------------------------
// --check

#[test]
fn check_on_the_example_lists_rules_and_says_ok() {
    let sb = Sandbox::new();
    let run = sb.run(&on(Path::new(EXAMPLE), &["--check"]));
    run.assert_code(0);
    assert_eq!(run.stderr, "", "no warnings expected");
    let out = &run.stdout;
    // Each rule of the example, with the line its section starts on in the file.
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let line_of = |name: &str| {
        let header = format!("[{name}]");
        1 + example.lines().position(|l| l == header).expect(name)
    };
    let want: Vec<String> = [
        "app-(?P<version>\\d+\\.\\d+\\.\\d+)\\.tgz",
        "billing-(?P<version>[0-9.]+)\\.tar\\.gz",
        "legacy-.*\\.zip",
    ]
    .iter()
    .map(|name| format!("[{name}]  line {}", line_of(name)))
    .collect();
    let headers: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(headers, want);
    assert_eq!(
        rows(out, "billing2.example.com"),
        [[
            "billing2.example.com",
            ":2222",
            "sftp",
            "deploy",
            "(config)",
            "no",
            "password"
        ]]
    );
    assert_eq!(
        out.lines().last(),
        Some(format!("OK: {EXAMPLE} is valid").as_str())
    );
}

#[test]
fn check_reports_every_error_with_file_and_line_and_exits_2() {
    let (sb, cfg) = Sandbox::with_config(
        "[ok]\nhost = h\n[ok]\nhost = h\n[typo]\nhots = h\n[bad]\nhost = h\nprotocol = gopher\nport = 0\n",
    );
    let run = sb.run(&on(&cfg, &["--check"]));
    run.assert_code(2);
    let located: Vec<String> = [3, 5, 6, 9, 10]
        .iter()
        .map(|line| format!("{}:{line}: error:", cfg.display()))
        .collect();
    for at in &located {
        assert!(
            run.stderr.contains(at.as_str()),
            "missing {at}:\n{}",
            run.stderr
        );
    }
    assert_eq!(
        run.stderr.matches(": error:").count(),
        located.len(),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("did you mean `host`?"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("OK:"), "{}", run.stdout);
}

#[test]
fn check_warns_about_shadowed_rules_but_passes() {
    let (sb, cfg) = Sandbox::with_config("[.*]\nhost = a\n[app\\.tgz]\nhost = b\n");
    let run = sb.run(&on(&cfg, &["--check"]));
    run.assert_code(0);
    assert!(
        run.stderr
            .starts_with(&format!("{}:3: warning:", cfg.display())),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------
// exit codes

#[test]
fn usage_errors_exit_2() {
    let (sb, cfg) = Sandbox::with_config(catch_all("h", "local"));
    for args in [
        &[][..],
        &on(&cfg, &[]),
        &["--bogus"],
        &["--plan"],
        &on(&cfg, &["--plan", "x", "--check"]),
    ] {
        let run = sb.run(args);
        run.assert_code(2);
        assert!(!run.stderr.is_empty(), "{args:?} should say why");
    }
    let run = sb.run(&on(&cfg, &["--plan", "x", "--timestamp", "2026-11-21"]));
    run.assert_code(2);
    assert!(
        run.stderr.contains("--timestamp `2026-11-21`"),
        "{}",
        run.stderr
    );
}

#[test]
fn config_error_exits_2_on_plan_too() {
    let (sb, cfg) = Sandbox::with_config("[a]\nport = 22\n");
    let run = sb.run(&on(&cfg, &["--plan", "a"]));
    run.assert_code(2);
    assert!(
        run.stderr.contains(&format!("{}:1: error:", cfg.display())),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_config_exits_2_and_lists_where_it_looked() {
    let sb = Sandbox::new();
    let xdg = sb.path("xdg");
    let run = sb.run_with(&["--plan", "x"], &[("XDG_CONFIG_HOME", &xdg)]);
    run.assert_code(2);
    let err = &run.stderr;
    assert!(err.contains("./dispatch.cfg"), "{err}");
    assert!(
        err.contains(arg(&xdg.join("dropship/dispatch.cfg"))),
        "{err}"
    );
    let explicit = sb.path("nope.cfg");
    let run = sb.run(&on(&explicit, &["--check"]));
    run.assert_code(2);
    assert!(run.stderr.contains(arg(&explicit)), "{}", run.stderr);
}

#[test]
fn insecure_netrc_with_a_password_exits_2_with_chmod_600() {
    let (sb, cfg) = Sandbox::with_config(catch_all("h", "sftp"));
    let netrc = sb.write_mode(
        ".netrc",
        format!("machine h login u password {NETRC_SECRET}\n"),
        0o644,
    );
    for mode in [&["--check"][..], &["--plan", "x.tgz"]] {
        let run = sb.run(&on(&cfg, mode));
        run.assert_code(2).assert_no_secrets();
        let want = format!("chmod 600 {}", netrc.display());
        assert!(run.stderr.contains(&want), "{mode:?}: {}", run.stderr);
    }
}

#[test]
fn broken_ssh_config_is_a_config_error_exit_2() {
    let (sb, cfg) = Sandbox::with_config(catch_all("h", "sftp"));
    let ssh_config = sb.write(".ssh/config", "Host *\n  Port notanumber\n");
    let run = sb.run(&on(&cfg, &["--plan", "x.tgz"]));
    run.assert_code(2);
    assert!(run.stderr.contains(arg(&ssh_config)), "{}", run.stderr);
}

#[test]
fn no_rule_exits_3_and_lists_the_rules_tried() {
    let (sb, cfg) = Sandbox::with_config("[app-\\d+\\.tgz]\nhost = a\n[db-.*\\.sql]\nhost = b\n");
    let run = sb.run(&on(&cfg, &["--plan", "other.zip"]));
    run.assert_code(3);
    assert!(run.stderr.contains("other.zip"), "{}", run.stderr);
    assert!(
        run.stderr.contains("[app-\\d+\\.tgz], [db-.*\\.sql]"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn non_utf8_config_is_a_clear_error() {
    let (sb, cfg) = Sandbox::with_config(b"[a]\nhost = h\nlogin = \xff\xfe\n");
    for mode in [&["--check"][..], &["--plan", "a"]] {
        let run = sb.run(&on(&cfg, mode));
        run.assert_code(2);
        assert!(run.stderr.contains(arg(&cfg)), "{}", run.stderr);
        assert!(run.stderr.contains("UTF-8"), "{}", run.stderr);
    }
}

// ---------------------------------------------------------------------------------------
// discovery

#[test]
fn config_discovery_order() {
    let sb = Sandbox::new();
    let write = |rel: &str, host: &str| sb.write(rel, catch_all(host, "local"));
    let flag = write("flag.cfg", "from-flag");
    let env = write("env.cfg", "from-env");
    let cwd = write("dispatch.cfg", "from-cwd");
    let xdg = sb.path("xdg");
    write("xdg/dropship/dispatch.cfg", "from-xdg");
    let host = |args: &[&str], env: &[(&str, &Path)]| -> String {
        let doc = sb.plan_json("x.tgz", args, env);
        doc["targets"][0]["host"].as_str().unwrap().to_owned()
    };
    let all = [
        ("DROPSHIP_CONFIG", env.as_path()),
        ("XDG_CONFIG_HOME", &xdg),
    ];
    assert_eq!(host(&on(&flag, &[]), &all), "from-flag");
    assert_eq!(host(&[], &all), "from-env");
    assert_eq!(host(&[], &all[1..]), "from-cwd");
    std::fs::remove_file(&cwd).unwrap();
    assert_eq!(host(&[], &all[1..]), "from-xdg");
}

#[test]
fn netrc_discovery_order() {
    let (sb, cfg) = Sandbox::with_config(catch_all("h", "sftp"));
    let netrc = |rel: &str, login: &str| sb.write(rel, format!("machine h login {login}\n"));
    let flag = netrc("flag.netrc", "from-flag");
    let env = netrc("env.netrc", "from-env");
    netrc(".netrc", "from-home");
    let login = |args: &[&str], env: &[(&str, &Path)]| -> String {
        let doc = sb.plan_json("x.tgz", args, env);
        doc["targets"][0]["login"].as_str().unwrap().to_owned()
    };
    let with_env = [("NETRC", env.as_path())];
    assert_eq!(
        login(&on(&cfg, &["--netrc", arg(&flag)]), &with_env),
        "from-flag"
    );
    assert_eq!(login(&on(&cfg, &[]), &with_env), "from-env");
    assert_eq!(login(&on(&cfg, &[]), &[]), "from-home");
}

// ---------------------------------------------------------------------------------------
// robustness

#[test]
fn closed_stdout_does_not_panic() {
    // Far more output than a pipe buffers, so the write must hit the closed pipe.
    let sb = Sandbox::new();
    let hosts: Vec<String> = (0..3000).map(|i| format!("host-{i}")).collect();
    let cfg = sb.write("dispatch.cfg", catch_all(&hosts.join(" "), "sftp"));
    for json in [false, true] {
        let mut cmd = sb.command();
        cmd.args(on(&cfg, &["--plan", "x.tgz"]));
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dropship");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        // The reader is dropped here: `dropship --plan x | head -1`.
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(status.code(), Some(0), "json={json}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// terminal safety

/// A bundle name that would set the terminal's title, clear the screen (C1 CSI), and more.
const EVIL: &str = "app-\u{1b}]0;PWNED\u{7}\u{9b}2J\u{7f}\u{202e}\u{85}\tx.tgz";

/// No byte a terminal would obey: C0 but `\n` and `\t`, DEL, C1, bidi overrides.
fn assert_inert(what: &str, run: &Run) {
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        let bad: Vec<char> = text
            .chars()
            .filter(|c| {
                (c.is_control() && !matches!(c, '\n' | '\t'))
                    || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            })
            .collect();
        assert!(bad.is_empty(), "{what}: {stream} holds {bad:?}:\n{text}");
    }
}

#[test]
fn control_characters_from_names_config_and_hosts_never_reach_the_terminal() {
    let sb = Sandbox::new();
    let dest = sb.path("dest");
    // Commands that print escapes on stdout and stderr; `post` fails, so error lines,
    // the rollback and the summary's error column are shown too. A raw ESC in a value.
    let cfg = sb.write(
        "dispatch.cfg",
        format!(
            "[app-.*\\.tgz]\nhost = h1\nprotocol = local\ndest_dir = {}/{{host}}\n\
             upgrade = printf '\\033]0;OUT\\007\\033[31mred\\033[0m\\n'; echo {{bundle}}; printf '\\033]0;ERR\\007\\n' >&2\n\
             post = printf '\\302\\233'2J; echo {{bundle}} >&2; exit 3\n\
             rollback = echo \"\u{1b}]0;CFG\u{7}\"\n\
             version_cmd = printf '1.0\\033]0;V\\007'\n",
            dest.display()
        ),
    );
    sb.write(EVIL, "bundle");
    let shown = "app-\\u{1b}]0;PWNED\\u{7}\\u{9b}2J\\u{7f}\\u{202e}\\u{85}\\tx.tgz";

    let run = sb.run(&on(&cfg, &["--dispatch", EVIL]));
    run.assert_code(1);
    assert_inert("--dispatch", &run);
    assert!(
        run.stdout
            .contains(&format!("dispatch #1: {shown} via [app-.*\\.tgz]")),
        "header:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("==> upgrade: printf '\\033]0;OUT"),
        "{}",
        run.stdout
    );
    // Output, cooked as a terminal shows it (src/ui/ansi.rs): sequences and the other
    // controls dropped, colours stripped in a pipe, a tab kept.
    assert!(run.stdout.contains("[h1] red\n"), "{}", run.stdout);
    assert!(run.stdout.contains("[h1] app-\tx.tgz"), "{}", run.stdout);
    assert!(run.stderr.contains("post Failed"), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("==> rollback: echo \"\\u{1b}]0;CFG\\u{7}\""),
        "{}",
        run.stdout
    );
    assert!(
        dest.join("h1").join(EVIL).is_file(),
        "the name itself is kept"
    );

    let run = sb.run(&on(&cfg, &["--dispatch", EVIL, "--json"]));
    assert_inert("--dispatch --json", &run);
    let first: Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["bundle"], EVIL, "JSON keeps the value");

    for args in [
        vec!["--plan", EVIL],
        vec!["--dispatch", EVIL, "--dry-run"],
        vec!["--check"],
        vec!["--history"],
        vec!["--status"],
        vec!["--probe"],
    ] {
        let run = sb.run(&on(&cfg, &args));
        assert_inert(&args.join(" "), &run);
    }
    let run = sb.run(&on(&cfg, &["--plan", EVIL]));
    run.assert_code(0);
    assert!(
        run.stdout.contains(&format!("bundle    {shown}\n")),
        "{}",
        run.stdout
    );
    let run = sb.run(&["--history"]);
    assert!(run.stdout.contains(shown), "{}", run.stdout);
    for json in [vec!["--plan", EVIL, "--json"], vec!["--history", "--json"]] {
        let run = sb.run(&on(&cfg, &json));
        run.assert_code(0);
        assert_inert(&json.join(" "), &run);
        assert!(
            run.stdout.contains("\\u001b]0;PWNED\\u0007\\u009b"),
            "{}",
            run.stdout
        );
    }

    // Errors that quote the name: no rule, no file, a usage error from clap.
    let other = format!("x{EVIL}");
    let run = sb.run(&on(&cfg, &["--plan", &other]));
    run.assert_code(3);
    assert_inert("no rule", &run);
    assert!(
        run.stderr.contains("`xapp-\\u{1b}]0;PWNED\\u{7}"),
        "{}",
        run.stderr
    );
    let missing = format!("app-{EVIL}");
    let run = sb.run(&on(&cfg, &["--dispatch", &missing]));
    run.assert_code(2);
    assert_inert("no file", &run);
    let run = sb.run(&on(&cfg, &["--plan", "a.tgz", EVIL]));
    run.assert_code(2);
    assert_inert("clap", &run);

    // A config value with a control where it is refused: the error quotes it, inert.
    let bad = sb.write("bad.cfg", "[x]\nhost = h\u{1b}]0;HOST\u{7}\n");
    let run = sb.run(&on(&bad, &["--check"]));
    run.assert_code(2);
    assert_inert("config error", &run);
    assert!(
        run.stderr.contains("h\\u{1b}]0;HOST\\u{7}"),
        "{}",
        run.stderr
    );
}

#[test]
fn bundle_names_may_begin_with_a_hyphen() {
    let (sb, cfg) = Sandbox::with_config(catch_all("h1", "local"));
    sb.write("-rf.tgz", "bundle");
    let run = sb.run(&on(&cfg, &["--plan", "-rf.tgz"]));
    run.assert_code(0);
    assert!(
        run.stdout.starts_with("bundle    -rf.tgz\n"),
        "{}",
        run.stdout
    );
    // Our own flags are still flags, before or after.
    let doc = sb
        .run(&on(&cfg, &["--plan", "-rf.tgz", "--json"]))
        .assert_code(0)
        .json();
    assert_eq!(doc["bundle"], "-rf.tgz");
    let run = sb.run(&on(
        &cfg,
        &["--dispatch", "-rf.tgz", "-x.tgz", "b.tgz", "--dry-run"],
    ));
    run.assert_code(2); // -x.tgz and b.tgz do not exist: taken as bundles all the same
    assert!(run.stderr.contains("bundle -x.tgz:"), "{}", run.stderr);
    sb.write("-x.tgz", "bundle");
    sb.write("b.tgz", "bundle");
    let run = sb.run(&on(
        &cfg,
        &["--dispatch", "-rf.tgz", "-x.tgz", "b.tgz", "--dry-run"],
    ));
    run.assert_code(0);
    let files: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("file      "))
        .collect();
    assert_eq!(files, ["-rf.tgz", "-x.tgz", "b.tgz"], "{}", run.stdout);
    let run = sb.run(&on(&cfg, &["--probe", "-rf.tgz", "--json"]));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // `--plan --json` still lacks its value, and a mistyped flag still gets clap's tip.
    let run = sb.run(&on(&cfg, &["--plan", "--json"]));
    run.assert_code(2);
    assert!(run.stderr.contains("a value is required"), "{}", run.stderr);
    let run = sb.run(&on(&cfg, &["--dispatch", "b.tgz", "--dryrun"]));
    run.assert_code(2);
    assert!(run.stderr.contains("--dry-run"), "{}", run.stderr);
}

/// `--settle` and `--rescan` read the same duration grammar as `dispatch.cfg`: hours and
/// milliseconds both reach the watcher (its first event echoes them), and a value outside
/// the grammar is a usage error that shows what to write.
#[test]
fn watch_intervals_use_the_config_duration_grammar() {
    let (sb, cfg) = Sandbox::with_config(catch_all("h", "local"));
    let drop = sb.path("drop");
    std::fs::create_dir_all(&drop).unwrap();
    for (settle, rescan, settle_ms, rescan_ms) in [
        ("1h", "2d", 3_600_000, 172_800_000),
        ("1500ms", "90s", 1_500, 90_000),
    ] {
        let mut child = sb
            .command()
            .args(on(&cfg, &["--watch", arg(&drop), "--json"]))
            .args(["--settle", settle, "--rescan", rescan])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dropship --watch");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        // How it ends is the watch tests' business (a SIGINT may beat the handler).
        let out = child.wait_with_output().unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "first line is not JSON ({e}): {line}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(v["event"], "watch_started", "{v}");
        assert_eq!(
            (&v["settle_ms"], &v["rescan_ms"]),
            (&settle_ms.into(), &rescan_ms.into())
        );
    }
    for bad in ["5w", "0", "31d", "1.5s"] {
        let run = sb.run(&on(&cfg, &["--watch", arg(&drop), "--settle", bad]));
        run.assert_code(2);
        assert!(
            run.stderr.contains(&format!("`{bad}`")) && run.stderr.contains("`500ms`")
                || run.stderr.contains("longer than 30 days"),
            "{bad}: {}",
            run.stderr
        );
    }
}
