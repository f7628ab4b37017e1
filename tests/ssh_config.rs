//! `~/.ssh/config` with OpenSSH's own semantics: every case is checked against the real
//! `ssh -G` of this machine (with a private `-F` file, never the real ~/.ssh/config), and
//! what dropship cannot honour is refused with the option and its file:line.

use dropship::config::ssh_config::{SshHosts, find_ssh};
use dropship::config::{Config, Netrc};
use dropship::plan::{Plan, PlanError, Source, Stamp, Target};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Cfg {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Cfg {
    fn new(text: &str) -> Cfg {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_config");
        std::fs::write(&path, text).unwrap();
        Cfg { dir, path }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn hosts(&self) -> SshHosts {
        SshHosts::load(&self.path).unwrap()
    }

    /// What the real `ssh -G -F FILE [-l LOGIN] HOST` says for `key`.
    fn ssh_g(&self, host: &str, login: Option<&str>, key: &str) -> Vec<String> {
        let mut cmd = Command::new("ssh");
        cmd.arg("-G").arg("-F").arg(&self.path);
        if let Some(l) = login {
            cmd.arg("-l").arg(l);
        }
        let out = cmd.arg(host).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.to_owned())
            .collect()
    }

    fn line_of(&self, file: &Path, needle: &str) -> String {
        let text = std::fs::read_to_string(file).unwrap();
        let n = text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        format!("{}:{n}", file.display())
    }
}

/// Skips (loudly) when no OpenSSH client is installed; fails in CI.
fn have_ssh(test: &str) -> bool {
    if find_ssh().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: ssh is not installed"
    );
    eprintln!("SKIPPED {test}: no `ssh` on PATH");
    false
}

fn plan(cfg_text: &str, ssh: &SshHosts) -> Result<Plan, PlanError> {
    let config = Config::parse(cfg_text, Path::new("/etc/dropship/dispatch.cfg")).unwrap();
    Plan::build(
        &config,
        &Netrc::empty(),
        ssh,
        "app-1.tgz",
        Stamp::parse("20261121_101500").unwrap(),
    )
}

fn one(cfg_text: &str, ssh: &SshHosts) -> Target {
    plan(cfg_text, ssh)
        .unwrap_or_else(|e| panic!("{e}"))
        .targets
        .remove(0)
}

fn rule(host: &str, extra: &str) -> String {
    format!("[app-.*\\.tgz]\nhost = {host}\nprotocol = sftp\ndest_dir = /srv\n{extra}\n")
}

const LEAK: &str = "Host leak-check\n  User alice\n  HostName 127.0.0.9\nMatch originalhost other-*\n  User bob\n  Port 2201\n";

#[test]
fn match_block_is_not_merged_into_the_host_before_it() {
    if !have_ssh("match_not_merged") {
        return;
    }
    let c = Cfg::new(LEAK);
    let ssh = c.hosts();
    let t = one(&rule("leak-check", ""), &ssh);
    assert_eq!(c.ssh_g("leak-check", None, "user"), ["alice"]);
    assert_eq!(t.creds.login, "alice");
    assert_eq!(t.creds.login_source, Source::SshConfig);
    assert_eq!(t.port, Some(22), "the Match block's Port must not apply");
    assert_eq!(t.address, "127.0.0.9");
    assert_eq!(
        t.ssh.origin("user").unwrap().to_string(),
        c.line_of(&c.path, "User alice")
    );
    // The Match host itself resolves, as `ssh -G` says.
    let o = one(&rule("other-1", ""), &ssh);
    assert_eq!(c.ssh_g("other-1", None, "user"), ["bob"]);
    assert_eq!((o.creds.login.as_str(), o.port), ("bob", Some(2201)));
    assert_eq!(o.address, "other-1");
    assert_eq!(o.effective(), "bob@other-1:2201");
}

#[test]
fn builtin_reader_refuses_match_naming_file_and_line() {
    let c = Cfg::new(LEAK);
    let ssh = SshHosts::load_builtin(&c.path).unwrap();
    let e = plan(&rule("leak-check", ""), &ssh).unwrap_err().to_string();
    assert!(e.contains(&c.line_of(&c.path, "Match")), "{e}");
    assert!(e.contains("Match"), "{e}");
    // Without Match, Host blocks still work.
    let c2 = Cfg::new("Host web1\n  HostName 127.0.0.5\n  Port 2222\n  User deploy\n");
    let t = one(
        &rule("web1", ""),
        &SshHosts::load_builtin(&c2.path).unwrap(),
    );
    assert_eq!(t.effective(), "deploy@127.0.0.5:2222");
}

#[test]
fn alias_hostname_port_user_key_like_ssh_g() {
    if !have_ssh("alias") {
        return;
    }
    let c = Cfg::new(
        "Host web1\n  HostName 127.0.0.5\n  Port 2222\n  User deploy\n  IdentityFile /k/one\n  IdentityFile /k/two\n  IdentitiesOnly yes\n",
    );
    let t = one(&rule("web1", ""), &c.hosts());
    assert_eq!(c.ssh_g("web1", None, "hostname"), ["127.0.0.5"]);
    assert_eq!(t.effective(), "deploy@127.0.0.5:2222");
    assert_eq!(
        t.creds.keys,
        [PathBuf::from("/k/one"), PathBuf::from("/k/two")]
    );
    assert!(t.ssh.identities_only);
    let notes = t.ssh_config_notes().join("\n");
    assert!(
        notes.contains(&format!("Port 2222 ({})", c.line_of(&c.path, "Port"))),
        "{notes}"
    );
    // The rule's own values win, as ssh's command line does.
    let t = one(&rule("web1:2022", "login = ops\nkey = /k/rule"), &c.hosts());
    assert_eq!(t.effective(), "ops@127.0.0.5:2022");
    assert_eq!(t.creds.keys, [PathBuf::from("/k/rule")]);
    // A host the file does not name is left alone.
    let t = one(&rule("db1", ""), &c.hosts());
    assert_eq!((t.address.as_str(), t.port), ("db1", Some(22)));
    assert_eq!(t.creds.login_source, Source::Default);
    assert!(t.ssh_config_notes().is_empty());
}

#[test]
fn include_and_first_value_wins() {
    if !have_ssh("include") {
        return;
    }
    let c = Cfg::new("");
    let inc = c.file("fleet.conf", "Host web*\n  Port 3333\n  User fromfleet\n");
    std::fs::write(
        &c.path,
        format!(
            "Host web1\n  User first\nInclude {}\nHost *\n  Port 4444\n  User last\n",
            c.dir.path().join("fleet*.conf").display()
        ),
    )
    .unwrap();
    let t = one(&rule("web1", ""), &c.hosts());
    assert_eq!(c.ssh_g("web1", None, "user"), ["first"]);
    assert_eq!(c.ssh_g("web1", None, "port"), ["3333"]);
    assert_eq!(t.effective(), "first@web1:3333");
    assert_eq!(
        t.ssh.origin("port").unwrap().to_string(),
        c.line_of(&inc, "Port 3333")
    );
    let t = one(&rule("db1", ""), &c.hosts());
    assert_eq!(t.effective(), "last@db1:4444");
}

#[test]
fn host_negation() {
    if !have_ssh("negation") {
        return;
    }
    let c = Cfg::new("Host *.prod !bastion.prod\n  User deployer\n");
    let t = one(&rule("web.prod", ""), &c.hosts());
    assert_eq!(t.creds.login, "deployer");
    let t = one(&rule("bastion.prod", ""), &c.hosts());
    assert_eq!(
        c.ssh_g("bastion.prod", None, "user"),
        [dropship::config::current_user()]
    );
    assert_eq!(t.creds.login_source, Source::Default);
}

#[test]
fn match_host_and_match_user() {
    if !have_ssh("match_host_user") {
        return;
    }
    let c = Cfg::new(
        "Host app1\n  HostName real-app1.internal\nMatch host real-*.internal\n  Port 2022\nMatch user deploy\n  IdentityFile /k/deploy_%r\n",
    );
    let t = one(&rule("app1", ""), &c.hosts());
    assert_eq!(c.ssh_g("app1", None, "port"), ["2022"]);
    assert_eq!(
        t.effective(),
        format!(
            "{}@real-app1.internal:2022",
            dropship::config::current_user()
        )
    );
    assert!(t.creds.keys.is_empty(), "{:?}", t.creds.keys);
    // The rule's login is ssh's `-l`: `Match user` sees it, `%r` expands to it.
    let t = one(&rule("app1", "login = deploy"), &c.hosts());
    assert_eq!(
        c.ssh_g("app1", Some("deploy"), "identityfile"),
        ["/k/deploy_%r"]
    );
    assert_eq!(t.creds.keys, [PathBuf::from("/k/deploy_deploy")]);
    assert_eq!(t.creds.login_source, Source::Config);
}

#[test]
fn tokens_in_identity_file() {
    if !have_ssh("tokens") {
        return;
    }
    let c = Cfg::new(
        "Host web1\n  HostName 127.0.0.7\n  User u1\n  Port 2200\n  IdentityFile /k/%r@%h:%p-%n-%u-%%\n  IdentityFile ~/.ssh/%n\n",
    );
    let t = one(&rule("web1", ""), &c.hosts());
    let home = dropship::config::ssh_config::passwd_home().unwrap();
    assert_eq!(
        t.creds.keys,
        [
            PathBuf::from(format!(
                "/k/u1@127.0.0.7:2200-web1-{}-%",
                dropship::config::current_user()
            )),
            home.join(".ssh/web1"),
        ]
    );
}

#[test]
fn proxy_jump_and_proxy_command_become_the_route_with_file_line() {
    use dropship::transport::proxy::Route;
    if !have_ssh("proxy") {
        return;
    }
    let c = Cfg::new(
        "Host inner\n  HostName 10.1.2.3\n  ProxyJump bastion1,alice@bastion2:2222\nHost legacy\n  ProxyCommand ssh -W %h:%p gw %r %n %%\nHost direct\n  ProxyJump none\n  HostName 127.0.0.3\nHost ftphost\n  HostName 10.9.9.9\n  Port 2022\n  User deploy\nHost *\n  ProxyJump nobody\n",
    );
    let ssh = c.hosts();
    // As ssh -G says.
    assert_eq!(
        c.ssh_g("inner", None, "proxyjump"),
        ["bastion1,alice@bastion2:2222"]
    );
    let t = one(&rule("inner", ""), &ssh);
    let Route::Jump(j) = &t.route else {
        panic!("{:?}", t.route)
    };
    assert_eq!(j.hops, ["bastion1", "alice@bastion2:2222"]);
    assert_eq!(j.config.as_deref(), Some(c.path.as_path()));
    assert_eq!(
        t.route_origin.as_deref(),
        Some(c.line_of(&c.path, "ProxyJump bastion1").as_str())
    );
    assert!(
        t.effective()
            .ends_with("@10.1.2.3:22 via bastion1,alice@bastion2:2222")
    );
    assert!(
        t.ssh_config_notes().iter().any(|n| n
            == &format!(
                "ProxyJump bastion1,alice@bastion2:2222 ({})",
                c.line_of(&c.path, "ProxyJump bastion1")
            )),
        "{:?}",
        t.ssh_config_notes()
    );
    // ProxyCommand: its tokens expanded as ssh expands them.
    let t = one(&rule("legacy", "login = bob"), &ssh);
    assert_eq!(
        t.route,
        Route::Command("ssh -W legacy:22 gw bob legacy %".into())
    );
    // `ProxyJump none` (first value wins over `Host *`) is a direct connection.
    let t = one(&rule("direct", ""), &ssh);
    assert_eq!(t.address, "127.0.0.3");
    assert_eq!(t.route, Route::Direct);
    // The rule's `jump` wins over the file, `none` included.
    let t = one(&rule("inner", "jump = gw1,gw2"), &ssh);
    let Route::Jump(j) = &t.route else {
        panic!("{:?}", t.route)
    };
    assert_eq!(j.hops, ["gw1", "gw2"]);
    assert_eq!(t.route_origin.as_deref(), Some("`jump`, rule line 1"));
    let t = one(&rule("inner", "jump = none"), &ssh);
    assert_eq!(t.route, Route::Direct);
    // FTP is not carried: the FTP connection goes to the host as written...
    let ftp = "[app-.*\\.tgz]\nhost = ftphost\nprotocol = ftp\ndest_dir = /srv\n";
    let t = one(ftp, &ssh);
    assert_eq!(t.address, "ftphost");
    assert_eq!(t.route, Route::Direct);
    // ...while the SSH login that runs its commands is shaped by ssh_config like `ssh`.
    let t = one(&format!("{ftp}post = true\n"), &ssh);
    assert_eq!(t.address, "ftphost");
    assert!(matches!(&t.route, Route::Jump(j) if j.hops == ["nobody"]));
    let rule_ftp = Config::parse(&format!("{ftp}post = true\n"), Path::new("/d.cfg")).unwrap();
    assert_eq!(t.ssh_port(&rule_ftp.rules[0]), 2022);
    let kh = dropship::transport::known_hosts::KnownHostsFiles::default_files();
    let p = dropship::engine::connect::ssh_params(
        &t,
        t.ssh_port(&rule_ftp.rules[0]),
        &rule_ftp.rules[0],
        &kh,
    );
    assert_eq!((p.address.as_str(), p.port), ("10.9.9.9", 2022));
    assert_eq!(p.login, "deploy");
    let rule_ftp = Config::parse(
        &format!("{ftp}post = true\nssh_port = 22\n"),
        Path::new("/d.cfg"),
    )
    .unwrap();
    assert_eq!(
        t.ssh_port(&rule_ftp.rules[0]),
        22,
        "an explicit ssh_port wins"
    );
}

#[test]
fn builtin_reader_refuses_jump_hosts_it_cannot_follow() {
    let c = Cfg::new("Host inner\n  HostName 10.1.2.3\n  ProxyJump bastion\n");
    let ssh = SshHosts::load_builtin(&c.path).unwrap();
    let e = plan(&rule("inner", ""), &ssh).unwrap_err().to_string();
    assert!(e.contains("ProxyJump bastion"), "{e}");
    assert!(e.contains(&c.line_of(&c.path, "ProxyJump")), "{e}");
    assert!(e.contains("no `ssh` is on PATH"), "{e}");
    // Refused targets are never dialed: the transport says why.
    let config = Config::parse(&rule("inner", ""), Path::new("/d.cfg")).unwrap();
    let targets = dropship::fleet::target::for_config(&config, &Netrc::empty(), &ssh);
    let err = dropship::engine::connect::connect(
        &targets[0].target,
        &config.rules[0],
        &dropship::transport::known_hosts::KnownHostsFiles::default_files(),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("ProxyJump"), "{err}");
}

#[test]
fn bind_address_is_refused_certificates_and_agents_are_honoured() {
    if !have_ssh("cert") {
        return;
    }
    let c = Cfg::new(
        "Host c1\n  CertificateFile /k/id-cert.pub\nHost b1\n  BindAddress 127.0.0.2\nHost a1\n  IdentityAgent /run/other.sock\n",
    );
    let ssh = c.hosts();
    let c1 = ssh.lookup("c1", None, None).unwrap();
    assert_eq!(c1.certificate_files, [PathBuf::from("/k/id-cert.pub")]);
    let a1 = ssh.lookup("a1", None, None).unwrap();
    assert_eq!(a1.identity_agent, Some(PathBuf::from("/run/other.sock")));
    let e = plan(&rule("b1", ""), &ssh).unwrap_err().to_string();
    assert!(e.contains("BindAddress"), "{e}");
    assert!(e.contains(&c.line_of(&c.path, "BindAddress")), "{e}");
}

#[test]
fn known_hosts_alias_timeout_and_strictness() {
    if !have_ssh("known_hosts") {
        return;
    }
    let c = Cfg::new(
        "Host k1\n  HostKeyAlias k1-key\n  UserKnownHostsFile /kh/a /kh/b\n  GlobalKnownHostsFile /kh/g\n  StrictHostKeyChecking accept-new\n  ConnectTimeout 7\n  AddressFamily inet\n  IdentityAgent none\n",
    );
    let t = one(&rule("k1", ""), &c.hosts());
    let h = &t.ssh;
    assert_eq!(h.host_key_alias.as_deref(), Some("k1-key"));
    assert_eq!(
        h.user_known_hosts.as_deref(),
        Some(&[PathBuf::from("/kh/a"), PathBuf::from("/kh/b")][..])
    );
    assert_eq!(
        h.global_known_hosts.as_deref(),
        Some(&[PathBuf::from("/kh/g")][..])
    );
    assert_eq!(h.strict_host_key_checking.as_deref(), Some("accept-new"));
    assert_eq!(h.connect_timeout, Some(std::time::Duration::from_secs(7)));
    assert!(h.no_agent);
    assert_eq!(
        h.address_family,
        dropship::config::ssh_config::AddressFamily::Inet
    );
}

#[test]
fn check_report_shows_the_port_and_the_jump_chain_from_ssh_config() {
    if !have_ssh("check_port") {
        return;
    }
    let c = Cfg::new("Host web1\n  Port 2299\n  User deploy\nHost jumpy\n  ProxyJump b\n");
    let config = Config::parse(
        &rule("web1 jumpy", ""),
        Path::new("/etc/dropship/dispatch.cfg"),
    )
    .unwrap();
    let out = dropship::ui::report::check_report(&config, &Netrc::empty(), &c.hosts());
    assert!(out.contains(":2299"), "{out}");
    assert!(!out.contains("web1  :22 "), "{out}");
    assert!(out.contains("deploy@web1:2299"), "{out}");
    assert!(out.contains(&c.line_of(&c.path, "Port 2299")), "{out}");
    assert!(out.contains("root@jumpy:22 via b"), "{out}");
    assert!(
        out.contains(&format!(
            "ProxyJump b ({})",
            c.line_of(&c.path, "ProxyJump b")
        )),
        "{out}"
    );
}
