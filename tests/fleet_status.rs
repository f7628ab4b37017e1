//! `dropship --status` through the real binary against the real sshd: two hosts of one rule
//! (127.0.0.1 and 127.0.0.2 on one sshd) shipped to by a real dispatch, one of them then
//! put back by hand, so the matrix shows it behind the version the journal says was shipped
//! and the rule's hosts on different versions; unreachable and unreadable hosts stay in the
//! table and set the exit code.

mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Output;
use support::home::{Home, text};
use support::{LOOPBACK_2, ScratchDir, SshServer, TEST_PASSWORD, TEST_USER};

struct Env {
    home: Home,
    dest: ScratchDir,
}

impl Env {
    fn new(test: &str, server: &SshServer) -> Env {
        Env {
            home: Home::trusting(server),
            dest: support::scratch_dir(test),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path(name)
    }

    fn config(&self, text: &str) {
        self.home.write("dispatch.cfg", text);
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", "dispatch.cfg"];
        all.extend(args);
        self.home.run(&all)
    }

    fn status_json(&self) -> (Option<i32>, Vec<Value>, Output) {
        let o = self.run(&["--status", "--json"]);
        let cells = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", text(&o))))
            .collect();
        (o.status.code(), cells, o)
    }
}

fn cell<'a>(cells: &'a [Value], package: &str, host: &str) -> &'a Value {
    cells
        .iter()
        .find(|c| c["package"] == package && c["host"] == host)
        .unwrap_or_else(|| panic!("no cell {package} x {host} in {cells:#?}"))
}

/// Two rules on one sshd: `app` on both loopback addresses (shipped with a real dispatch),
/// `db` on 127.0.0.1 only.
fn fleet_config(env: &Env, port: u16) -> String {
    let d = env.dest.as_str();
    format!(
        "[DEFAULT]\nprotocol = sftp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ntimeout = 10s\n\
         [app-(?P<version>[0-9.]+)\\.tgz]\nhost = 127.0.0.1:{port}, 127.0.0.2:{port}\n\
         dest_dir = {d}/app/{{host}}\nlock_path = {d}/app/{{host}}.lock\n\
         upgrade = echo {{version}} > {{dir}}/.version\n\
         version_cmd = cat {d}/app/{{host}}/.version\n\
         [db-(?P<version>[0-9.]+)\\.tgz]\nhost = 127.0.0.1:{port}\n\
         dest_dir = {d}/db\nlock_path = {d}/db.lock\n\
         version_cmd = cat {d}/db/VERSION\n"
    )
}

#[test]
fn status_shows_versions_and_drift() {
    let Some(server) = SshServer::builder()
        .listen_also(LOOPBACK_2)
        .start_or_skip("status_shows_versions_and_drift")
    else {
        return;
    };
    let env = Env::new("status_drift", &server);
    env.config(&fleet_config(&env, server.port()));
    let bundle = env.path("app-1.5.0.tgz");
    std::fs::write(&bundle, b"bundle").unwrap();
    let o = env.run(&["--dispatch", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // 127.0.0.2 is put back by hand (outside dropship): it now runs an older version.
    let h2 = env.dest.join("app/127.0.0.2/.version");
    assert_eq!(std::fs::read_to_string(&h2).unwrap(), "1.5.0\n");
    std::fs::write(&h2, "1.4.9\n").unwrap();
    std::fs::create_dir(env.dest.join("db")).unwrap();
    std::fs::write(env.dest.join("db/VERSION"), "12.1\n").unwrap();

    let (code, cells, o) = env.status_json();
    assert_eq!(code, Some(0), "{}", text(&o));
    assert_eq!(cells.len(), 3, "{cells:#?}");
    let h1_label = format!("127.0.0.1:{}", server.port());
    let h2_label = format!("127.0.0.2:{}", server.port());
    let a1 = cell(&cells, "app", &h1_label);
    assert_eq!(a1["installed"]["version"], "1.5.0");
    assert_eq!(a1["shipped"]["version"], "1.5.0");
    assert_eq!(a1["shipped"]["bundle"], "app-1.5.0.tgz");
    assert_eq!(a1["drift"], serde_json::json!(["mixed"]));
    let a2 = cell(&cells, "app", &h2_label);
    assert_eq!(a2["installed"]["version"], "1.4.9");
    assert_eq!(a2["drift"], serde_json::json!(["behind", "mixed"]));
    let db = cell(&cells, "db", &h1_label);
    assert_eq!(db["installed"]["version"], "12.1");
    // Never shipped by dropship: nothing to be behind of.
    assert_eq!(db["shipped"], Value::Null);
    assert_eq!(db["drift"], serde_json::json!([]));

    let o = env.run(&["--status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("HOST") && header.contains("app") && header.contains("db"),
        "{out}"
    );
    let row2 = out.lines().find(|l| l.starts_with(&h2_label)).unwrap();
    assert!(row2.contains("1.4.9 !behind !mixed"), "{out}");
    // 127.0.0.2 is not a host of `db`.
    assert!(row2.trim_end().ends_with('-'), "{out}");
    assert!(
        out.contains(&format!(
            "{h2_label} [app]: runs 1.4.9; last shipped there: 1.5.0"
        )),
        "{out}"
    );

    // Put right again: no drift left.
    std::fs::write(&h2, "1.5.0\n").unwrap();
    let (code, cells, _) = env.status_json();
    assert_eq!(code, Some(0));
    assert!(
        cells.iter().all(|c| c["drift"] == serde_json::json!([])),
        "{cells:#?}"
    );
}

#[test]
fn status_keeps_unreachable_and_unreadable_hosts() {
    let Some(server) = support::ssh_server_or_skip("status_unreachable") else {
        return;
    };
    let env = Env::new("status_unreachable", &server);
    // Nothing listens there (another address: one name may not appear on two ports).
    let lease = support::ports::reserve(1, &[LOOPBACK_2]);
    let d = env.dest.as_str();
    env.config(&format!(
        "[DEFAULT]\nprotocol = scp\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ntimeout = 5s\n\
         [web-.*\\.tgz]\nhost = 127.0.0.1:{port}, 127.0.0.2:{dead}\nversion_cmd = cat {d}/web.version\n\
         [api-.*\\.tgz]\nhost = 127.0.0.1:{port}\nversion_cmd = cat {d}/no-such-file\n\
         [docs-.*\\.tgz]\nhost = 127.0.0.1:{port}\n",
        port = server.port(),
        dead = lease.first()
    ));
    std::fs::write(env.dest.join("web.version"), "3.2.1\n").unwrap();
    let (code, cells, o) = env.status_json();
    assert_eq!(code, Some(1), "{}", text(&o));
    let up = format!("127.0.0.1:{}", server.port());
    let down = format!("127.0.0.2:{}", lease.first());
    assert_eq!(cell(&cells, "web", &up)["installed"]["version"], "3.2.1");
    assert_eq!(
        cell(&cells, "web", &down)["installed"]["state"],
        "unreachable"
    );
    let api = &cell(&cells, "api", &up)["installed"];
    assert_eq!(api["state"], "unreadable");
    assert!(
        api["error"]
            .as_str()
            .unwrap()
            .contains("exited with status 1"),
        "{api:#}"
    );
    assert!(
        api["error"].as_str().unwrap().contains("No such file"),
        "{api:#}"
    );

    let o = env.run(&["--status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let row = out.lines().find(|l| l.starts_with(&down)).unwrap();
    assert!(row.contains("unreachable"), "{out}");
    assert!(
        out.contains("not shown (no `version_cmd`): [docs-.*\\.tgz]"),
        "{out}"
    );
    assert!(!out.contains(TEST_PASSWORD));

    // No rule with a version_cmd: nothing to show, a config problem.
    env.config(&format!(
        "[docs\\.tgz]\nhost = 127.0.0.1:{}\n",
        server.port()
    ));
    let o = env.run(&["--status"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("version_cmd"));
}
