//! The fleet keys of dispatch.cfg: `health_timeout`, `health_interval`, `layout`, `keep`,
//! `notify`, and the release placeholders, with their defaults and errors.

use dropship::config::Config;
use dropship::config::rules::Layout;
use dropship::plan::{Plan, Stamp};
use std::path::Path;
use std::time::Duration;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("fleet.cfg")).map_err(|e| e.to_string())
}

#[test]
fn defaults() {
    let c = parse("[a]\nhost = h\n").unwrap();
    let r = &c.rules[0];
    assert_eq!(r.layout, Layout::Plain);
    assert_eq!(r.keep, 5);
    assert_eq!(r.health_timeout, Duration::from_secs(120));
    assert_eq!(r.health_interval, Duration::from_secs(2));
    assert_eq!(r.notify, None);
}

#[test]
fn values_and_errors() {
    let c = parse("[a]\nhost = h\nlayout = Releases\nkeep = 2\nhealth_timeout = 5m\nhealth_interval = 3\nnotify = http://127.0.0.1:9/x\n").unwrap();
    let r = &c.rules[0];
    assert_eq!(r.layout, Layout::Releases);
    assert_eq!(r.keep, 2);
    assert_eq!(r.health_timeout, Duration::from_secs(300));
    assert_eq!(r.health_interval, Duration::from_secs(3));
    assert!(r.needs_shell(), "releases unpack over a shell");
    let e = parse("[a]\nhost = h\nlayout = versions\n").unwrap_err();
    assert!(
        e.contains("fleet.cfg:3") && e.contains("`plain` or `releases`"),
        "{e}"
    );
    let e = parse("[a]\nhost = h\nkeep = 0\n").unwrap_err();
    assert!(e.contains("keep"), "{e}");
    let e = parse("[a]\nhost = h\nhealth_interval = soon\n").unwrap_err();
    assert!(e.contains("health_interval"), "{e}");
    let e = parse("[a]\nhost = h\nnotify = ftp://x/\n").unwrap_err();
    assert!(e.contains("not an http"), "{e}");
}

#[test]
fn release_placeholders_need_the_releases_layout() {
    let e = parse("[a]\nhost = h\nupgrade = ls {release_dir}\n").unwrap_err();
    assert!(e.contains("layout = releases"), "{e}");
    let e = parse("[a]\nhost = h\nlayout = releases\ndest_dir = ~/{current}\n").unwrap_err();
    assert!(e.contains("{current}"), "{e}");
    let c = parse(
        "[app-(?P<version>.*)\\.tgz]\nhost = h\nlayout = releases\ndest_dir = /srv/app\nupgrade = ls {release_dir} {current} {release}\n",
    )
    .unwrap();
    let plan = Plan::build(
        &c,
        &dropship::config::Netrc::empty(),
        &dropship::config::SshHosts::empty(),
        "app-1.4.2.tgz",
        Stamp::parse("20260101_120000").unwrap(),
    )
    .unwrap();
    assert_eq!(
        plan.targets[0].commands.upgrade.as_deref(),
        Some("ls /srv/app/releases/1.4.2 /srv/app/current 1.4.2")
    );
}

#[test]
fn bad_release_names_are_refused_when_planning() {
    let c =
        parse("[app-(?P<version>.*)\\.tgz]\nhost = h\nlayout = releases\ndest_dir = /srv/app\n")
            .unwrap();
    let err = Plan::build(
        &c,
        &dropship::config::Netrc::empty(),
        &dropship::config::SshHosts::empty(),
        "app-.hidden.tgz",
        Stamp::now(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("must start with a letter or digit"), "{err}");
    // No version capture: the release is named by the timestamp.
    let c = parse(
        "[app\\.tgz]\nhost = h\nlayout = releases\ndest_dir = /srv/app\nupgrade = echo {release}\n",
    )
    .unwrap();
    let plan = Plan::build(
        &c,
        &dropship::config::Netrc::empty(),
        &dropship::config::SshHosts::empty(),
        "app.tgz",
        Stamp::parse("20260101_120000").unwrap(),
    )
    .unwrap();
    assert_eq!(
        plan.targets[0].commands.upgrade.as_deref(),
        Some("echo 20260101_120000")
    );
}

#[test]
fn health_url_tokens_never_reach_the_plan_output() {
    let c =
        parse("[app\\.tgz]\nhost = h\nhealth = https://u:pw@127.0.0.1:8443/health?token=s3cr3t\n")
            .unwrap();
    let plan = Plan::build(
        &c,
        &dropship::config::Netrc::empty(),
        &dropship::config::SshHosts::empty(),
        "app.tgz",
        Stamp::now(),
    )
    .unwrap();
    let json = plan.to_json().to_string();
    let table = dropship::ui::report::plan_table(&plan, &c);
    for shown in [&json, &table] {
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("pw@"),
            "{shown}"
        );
        assert!(shown.contains("https://127.0.0.1:8443/health?…"), "{shown}");
    }
    // The job still polls the whole URL.
    assert!(
        plan.targets[0]
            .commands
            .health
            .as_deref()
            .unwrap()
            .contains("token=s3cr3t")
    );
}
