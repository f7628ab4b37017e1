//! HTTP health checks through the engine, against the real sshd and a real HTTP server on
//! 127.0.0.1: an endpoint that goes healthy late passes, one that never does fails the
//! host and runs `rollback`, a flapping one passes on its first 2xx, and every try is
//! reported as output of the `health` step.

mod support;

use dropship::config::{Config, Netrc, SshHosts};
use dropship::engine::events::{Event, Step, StepOutcome, TargetResult};
use dropship::engine::job::Cancel;
use dropship::engine::rollout::Summary;
use dropship::plan::{Plan, Stamp};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use support::engine::EngineRig;
use support::http::{Behaviour, HttpServer};
use support::{SshServer, TEST_PASSWORD, TEST_USER};

/// The shared engine rig, with this file's config.
struct Rig(EngineRig);

impl std::ops::Deref for Rig {
    type Target = EngineRig;
    fn deref(&self) -> &EngineRig {
        &self.0
    }
}

impl Rig {
    fn new(test: &str, server: &SshServer) -> Rig {
        Rig(EngineRig::new(test, server))
    }

    fn config(&self, server: &SshServer, keys: &str) -> Config {
        let text = format!(
            "[app-.*\\.tgz]\nhost = {}\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ntimeout = 5s\ndest_dir = {d}\nlock_path = {d}/.lock\nhealth_interval = 1s\nrollback = touch {d}/rolled-back\n{keys}\n",
            server.addr(),
            d = self.dest.as_str()
        );
        Config::parse(&text, Path::new("health.cfg")).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn bundle(&self) -> PathBuf {
        let p = self.local.path().join("app-1.0.tgz");
        std::fs::write(&p, b"not really a tarball").unwrap();
        p
    }

    fn run(&self, config: &Config) -> (Summary, Vec<Event>) {
        let bundle = self.bundle();
        let plan = Plan::build(
            config,
            &Netrc::empty(),
            &SshHosts::empty(),
            "app-1.0.tgz",
            Stamp::now(),
        )
        .unwrap();
        let (s, events) = self.dispatch(
            plan,
            &bundle,
            "test@health pid 1",
            Arc::new(Cancel::new()),
            Box::new(support::engine::ignore),
        );
        (s, events.into_iter().map(|(_, e)| e).collect())
    }
}

/// The output lines of the health step.
fn health_lines(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::Output {
                step: Step::Health,
                lines,
                ..
            } => lines.iter().map(str::to_owned).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn step_outcomes(events: &[Event], want: Step) -> Vec<StepOutcome> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StepFinished { step, outcome, .. } if *step == want => Some(*outcome),
            _ => None,
        })
        .collect()
}

#[test]
fn health_url_that_goes_healthy_late_passes() {
    let Some(server) = support::ssh_server_or_skip("health_late") else {
        return;
    };
    let http = HttpServer::start();
    http.route("/health", Behaviour::HealthyAfter(2));
    let rig = Rig::new("health_late", &server);
    // A placeholder in the URL: {host} is the rule's host, 127.0.0.1.
    let url = format!("http://{{host}}:{}/health", http.addr().port());
    let cfg = rig.config(&server, &format!("health = {url}\nhealth_timeout = 30s"));
    let (s, events) = rig.run(&cfg);
    assert!(s.all_succeeded(), "{s:?}\n{events:#?}");
    assert_eq!(http.hits("/health"), 3);
    let lines = health_lines(&events);
    assert!(
        lines.iter().any(|l| l.contains("try 1: HTTP 503")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("try 3: HTTP 200 OK: healthy")),
        "{lines:?}"
    );
    assert!(
        !rig.dest.join("rolled-back").exists(),
        "no rollback on success"
    );
    assert!(step_outcomes(&events, Step::Rollback).is_empty());
}

#[test]
fn health_url_never_healthy_fails_the_host_and_rolls_back() {
    let Some(server) = support::ssh_server_or_skip("health_never") else {
        return;
    };
    let http = HttpServer::start();
    http.route("/health", Behaviour::Status(503));
    let rig = Rig::new("health_never", &server);
    let cfg = rig.config(
        &server,
        &format!("health = {}\nhealth_timeout = 3s", http.url("/health")),
    );
    let (s, events) = rig.run(&cfg);
    let (_, outcome, _) = &s.targets[0];
    assert_eq!(outcome.result, TargetResult::Failed, "{s:?}");
    assert_eq!(outcome.failed_step, Some(Step::Health));
    let err = outcome.error.as_deref().unwrap();
    assert!(err.contains("no 2xx answer"), "{err}");
    assert!(err.contains("HTTP 503"), "{err}");
    assert!(
        err.contains("health_timeout"),
        "the error says what to do: {err}"
    );
    assert!(http.hits("/health") >= 2, "polled more than once");
    assert_eq!(step_outcomes(&events, Step::Rollback), [StepOutcome::Ok]);
    assert!(
        rig.dest.join("rolled-back").exists(),
        "rollback ran on the host"
    );
}

#[test]
fn health_url_that_flaps_passes_on_its_first_2xx() {
    let Some(server) = support::ssh_server_or_skip("health_flap") else {
        return;
    };
    let http = HttpServer::start();
    http.route("/flap", Behaviour::Sequence(vec![503, 200, 503, 200]));
    let rig = Rig::new("health_flap", &server);
    let cfg = rig.config(
        &server,
        &format!("health = {}\nhealth_timeout = 30s", http.url("/flap")),
    );
    let (s, events) = rig.run(&cfg);
    assert!(s.all_succeeded(), "{s:?}");
    assert_eq!(http.hits("/flap"), 2, "stops polling at the first 2xx");
    let lines = health_lines(&events);
    assert!(
        lines.iter().any(|l| l.contains("try 2: HTTP 200")),
        "{lines:?}"
    );
}

#[test]
fn health_url_nobody_listens_on_fails_with_the_cause() {
    let Some(server) = support::ssh_server_or_skip("health_refused") else {
        return;
    };
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rig = Rig::new("health_refused", &server);
    let cfg = rig.config(
        &server,
        &format!("health = http://127.0.0.1:{port}/h?token=s3cret\nhealth_timeout = 2s"),
    );
    let (s, events) = rig.run(&cfg);
    let (_, outcome, _) = &s.targets[0];
    assert_eq!(outcome.failed_step, Some(Step::Health), "{s:?}");
    let err = outcome.error.as_deref().unwrap();
    assert!(err.contains("cannot connect"), "{err}");
    let all = format!("{events:?}");
    assert!(
        !all.contains("s3cret"),
        "the URL's query is never shown: {all}"
    );
}
