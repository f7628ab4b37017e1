//! `health = proc:NAME[:MIN[-MAX]]` and `health = port:N` through the real binary, against
//! the real sshd, for users whose login shell is bash, dash, zsh, fish, busybox ash and tcsh:
//! the checks are dropship's own POSIX sh scripts, so they must pass and fail alike under
//! every login shell, with a message that says what was seen ("proc NAME: 0 running, want
//! 1-4", "port N: nothing listening").
//!
//! The "service" is on this machine (the sshd's host): processes of a name of the test's
//! own (a symlink to `sleep`) and a TCP listener the test holds open.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use support::home::{Home, text};
use support::shells;
use support::{Need, SshServer, TEST_PASSWORD};

fn server() -> &'static SshServer {
    static SERVER: OnceLock<SshServer> = OnceLock::new();
    SERVER.get_or_init(SshServer::start)
}

/// `count` processes whose command name is `name` (a symlink to sleep), killed on drop.
struct Procs(Vec<Child>, #[allow(dead_code)] tempfile::TempDir);

impl Procs {
    fn start(name: &str, count: usize) -> Procs {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join(name);
        std::os::unix::fs::symlink("/bin/sleep", &exe).unwrap();
        let kids = (0..count)
            .map(|_| Command::new(&exe).arg("300").spawn().unwrap())
            .collect();
        Procs(kids, dir)
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

fn bundle(home: &Home, name: &str) -> PathBuf {
    home.write(name, b"bundle")
}

fn dispatch(home: &Home, cfg: &Path, bundle: &Path) -> Output {
    home.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--dispatch",
        bundle.to_str().unwrap(),
    ])
}

fn checks(short: &str, shell: &str) {
    let test = format!("health_checks_{short}");
    if !support::live_test_or_skip(&test, &[Need::Sshd, Need::LoginShells]) {
        return;
    }
    let server = server();
    let user = shells::shell_user(short, shell);
    let dir = user.fresh_dir("health-checks");
    let d = dir.to_str().unwrap();
    let home = Home::trusting(server);
    // Names of this test's own, at most 15 bytes (what /proc/PID/comm holds).
    let name = format!("dshc{short}{}", std::process::id() % 10_000);
    let absent = format!("dsnone{short}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let common = format!(
        "protocol = sftp\nhost = {addr}\nlogin = {login}\npassword = {TEST_PASSWORD}\n\
         dest_dir = {d}/dest\nlock_path = {d}/.lock\ntimeout = 10s\n\
         health_timeout = 2s\nhealth_interval = 500ms\n",
        addr = server.addr(),
        login = user.name,
    );
    let cfg = home.write(
        "dispatch.cfg",
        format!(
            "[portup-.*\\.tgz]\n{common}health = port:{open}\n\
             [portdown-.*\\.tgz]\n{common}health = port:{closed}\n\
             [procok-.*\\.tgz]\n{common}health = proc:{name}:1-4\n\
             [procfew-.*\\.tgz]\n{common}health = proc:{name}:3-4\n\
             [procnone-.*\\.tgz]\n{common}health = proc:{absent}:1-4\n"
        ),
    );
    let _procs = Procs::start(&name, 2);
    let say = |o: &Output| format!("login shell {shell}:\n{}", text(o));

    let o = dispatch(&home, &cfg, &bundle(&home, "portup-1.tgz"));
    assert_eq!(o.status.code(), Some(0), "{}", say(&o));
    assert!(
        text(&o).contains(&format!("port {open}: listening")),
        "{}",
        say(&o)
    );

    let o = dispatch(&home, &cfg, &bundle(&home, "portdown-1.tgz"));
    assert_eq!(o.status.code(), Some(1), "{}", say(&o));
    assert!(
        text(&o).contains(&format!(
            "health check failed: port {closed}: nothing listening"
        )),
        "{}",
        say(&o)
    );
    // Polled for health_timeout, not given up on the first try.
    assert!(text(&o).contains("try 2:"), "{}", say(&o));

    let o = dispatch(&home, &cfg, &bundle(&home, "procok-1.tgz"));
    assert_eq!(o.status.code(), Some(0), "{}", say(&o));
    assert!(
        text(&o).contains(&format!("proc {name}: 2 running, want 1-4")),
        "{}",
        say(&o)
    );

    let o = dispatch(&home, &cfg, &bundle(&home, "procfew-1.tgz"));
    assert_eq!(o.status.code(), Some(1), "{}", say(&o));
    assert!(
        text(&o).contains(&format!(
            "health check failed: proc {name}: 2 running, want 3-4"
        )),
        "{}",
        say(&o)
    );

    let o = dispatch(&home, &cfg, &bundle(&home, "procnone-1.tgz"));
    assert_eq!(o.status.code(), Some(1), "{}", say(&o));
    assert!(
        text(&o).contains(&format!("proc {absent}: 0 running, want 1-4")),
        "{}",
        say(&o)
    );
    drop(listener);
}

#[test]
fn health_checks_bash() {
    checks("bash", "/bin/bash");
}

#[test]
fn health_checks_dash() {
    checks("dash", "/usr/bin/dash");
}

#[test]
fn health_checks_zsh() {
    checks("zsh", "/usr/bin/zsh");
}

#[test]
fn health_checks_fish() {
    checks("fish", "/usr/bin/fish");
}

#[test]
fn health_checks_busybox_ash() {
    checks("ash", shells::BUSYBOX_ASH);
}

#[test]
fn health_checks_tcsh() {
    checks("tcsh", "/usr/bin/tcsh");
}

/// A malformed check is a config error naming the line, before anything is shipped.
#[test]
fn bad_health_checks_are_config_errors() {
    let home = Home::new();
    let cfg = home.write(
        "dispatch.cfg",
        "[app-.*\\.tgz]\nhost = h\nhealth = proc:nginx:4-1\n[web-.*\\.tgz]\nhost = h\nhealth = port:99999\n",
    );
    let o = home.run(&["--config", cfg.to_str().unwrap(), "--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("dispatch.cfg:3") && err.contains("range 4-1 is empty"),
        "{err}"
    );
    assert!(
        err.contains("dispatch.cfg:6") && err.contains("port:99999"),
        "{err}"
    );
}

/// Polled, not tried once: a port that starts listening while the check runs passes on the
/// first try after it opened, and the earlier tries are in the output.
#[test]
fn a_port_that_opens_late_passes() {
    if !support::live_test_or_skip("a_port_that_opens_late_passes", &[Need::Sshd]) {
        return;
    }
    let server = server();
    let home = Home::trusting(server);
    let dest = support::scratch_dir("health_port_late");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = home.write(
        "dispatch.cfg",
        format!(
            "[late-.*\\.tgz]\nprotocol = sftp\nhost = {addr}\nlogin = {user}\npassword = {TEST_PASSWORD}\n\
             dest_dir = {d}\nlock_path = {d}/.lock\ntimeout = 10s\n\
             health = port:{port}\nhealth_timeout = 30s\nhealth_interval = 300ms\n",
            addr = server.addr(),
            user = support::TEST_USER,
            d = dest.as_str(),
        ),
    );
    let b = bundle(&home, "late-1.tgz");
    let opener = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(20));
        drop(l);
    });
    let o = dispatch(&home, &cfg, &b);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(&format!("port {port}: nothing listening")),
        "{t}"
    );
    assert!(t.contains(&format!("port {port}: listening")), "{t}");
    drop(opener);
}
