//! `notify = URL` through the real binary and a real HTTP server on 127.0.0.1: the JSON
//! summary arrives with the documented fields, a webhook that fails first gets it on a
//! retry, and one that never answers neither blocks nor fails the dispatch.

mod support;

use std::path::PathBuf;
use std::process::Output;
use support::home::{Home, text};
use support::http::{Behaviour, HttpServer};

struct Env {
    home: Home,
}

impl Env {
    fn new() -> Env {
        Env { home: Home::new() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path(name)
    }

    /// Two `local` hosts (this machine): the flow is real, no server needed but the
    /// webhook's.
    fn config(&self, keys: &str) -> PathBuf {
        let text = format!(
            "[app-(?P<version>.*)\\.tgz]\nhost = web1, web2\nprotocol = local\ndest_dir = {}/{{host}}\ntimeout = 1s\npassword = hunter2-secret\n{keys}\n",
            self.path("dest").display()
        );
        self.home.write("dispatch.cfg", text)
    }

    fn dispatch(&self, keys: &str, json: bool) -> Output {
        let cfg = self.config(keys);
        let b = self.path("app-1.4.2.tgz");
        std::fs::write(&b, b"bundle").unwrap();
        let mut c = self.home.command(&[
            "--config",
            cfg.to_str().unwrap(),
            "--dispatch",
            b.to_str().unwrap(),
        ]);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    }
}

#[test]
fn summary_is_posted_as_json_when_the_dispatch_ends() {
    let http = HttpServer::start();
    http.route("/hook/T0/s3cr3t", Behaviour::Status(200));
    let env = Env::new();
    let o = env.dispatch(
        &format!(
            "notify = {}\nupgrade = sh -c 'test {{host}} != web2'",
            http.url("/hook/T0/s3cr3t")
        ),
        false,
    );
    // web2 fails its upgrade: the dispatch fails, and says so in the summary.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let posts = http.posts("/hook/T0/s3cr3t");
    assert_eq!(posts.len(), 1, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&posts[0]).unwrap();
    assert_eq!(v["event"], "dispatch");
    assert_eq!(v["bundle"], "app-1.4.2.tgz");
    assert_eq!(v["rule"], "app-(?P<version>.*)\\.tgz");
    assert_eq!(v["ok"], false);
    assert_eq!(v["succeeded"], 1);
    assert_eq!(v["failed"], 1);
    assert!(v["dispatch"].as_i64().unwrap() >= 1);
    assert!(v["duration_ms"].as_i64().is_some());
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[0]["host"], "web1");
    assert_eq!(hosts[0]["result"], "succeeded");
    assert_eq!(hosts[1]["result"], "failed");
    assert_eq!(hosts[1]["failed_step"], "upgrade");
    assert!(hosts[1]["duration_ms"].as_i64().is_some());
    let t = v["text"].as_str().unwrap();
    assert!(
        t.contains("app-1.4.2.tgz") && t.contains("web2 failed at upgrade"),
        "{t}"
    );
    assert!(!posts[0].contains("hunter2"), "no secret in the payload");
    // Shown, without the webhook's token.
    let out = text(&o);
    assert!(
        out.contains("summary delivered to http://127.0.0.1:"),
        "{out}"
    );
    assert!(!out.contains("s3cr3t"), "{out}");
}

#[test]
fn webhook_that_fails_first_gets_the_summary_on_a_retry() {
    let http = HttpServer::start();
    http.route("/flaky", Behaviour::Sequence(vec![500, 503, 200]));
    let env = Env::new();
    let o = env.dispatch(&format!("notify = {}", http.url("/flaky")), true);
    assert!(o.status.success(), "{}", text(&o));
    let posts = http.posts("/flaky");
    assert_eq!(posts.len(), 3, "{}", text(&o));
    assert_eq!(posts[0], posts[2], "the same summary each try");
    let v: serde_json::Value = serde_json::from_str(&posts[2]).unwrap();
    assert_eq!(v["ok"], true);
    // --json shows the retries and the delivery as notice events.
    let out = String::from_utf8_lossy(&o.stdout);
    let notices: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "notice")
        .collect();
    assert!(
        notices
            .iter()
            .any(|n| n["message"].as_str().unwrap().contains("HTTP 500")),
        "{notices:?}"
    );
    assert!(
        notices
            .iter()
            .any(|n| n["message"].as_str().unwrap().contains("delivered")
                && n["message"].as_str().unwrap().contains("try 3")),
        "{notices:?}"
    );
}

#[test]
fn webhook_that_never_answers_does_not_fail_the_dispatch() {
    let http = HttpServer::start();
    http.route("/void", Behaviour::Hang);
    let env = Env::new();
    let o = env.dispatch(&format!("notify = {}", http.url("/void")), false);
    assert!(o.status.success(), "exit code unaffected: {}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("summary NOT delivered"),
        "the failure is shown: {out}"
    );
    assert!(out.contains("the dispatch itself is unaffected"), "{out}");
    assert!(http.hits("/void") >= 2, "retried");
    // The closing table still says the hosts succeeded.
    assert!(out.contains("succeeded"), "{out}");
}

#[test]
fn webhook_that_refuses_for_good_is_not_retried() {
    let http = HttpServer::start();
    http.route("/gone", Behaviour::Status(404));
    let env = Env::new();
    let o = env.dispatch(&format!("notify = {}", http.url("/gone")), false);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(http.hits("/gone"), 1, "a 404 is not retried: {}", text(&o));
    assert!(text(&o).contains("HTTP 404"), "{}", text(&o));
}
