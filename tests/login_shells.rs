//! Every login shell: dropship sends its scripts to `sh`, never to the login shell, so a
//! user whose shell is fish or tcsh (which do not speak POSIX sh), dash, zsh or busybox ash
//! gets the same dispatch as a bash user: upload over scp and sftp, the lock (taken, held
//! with a heartbeat, busy, released), a `layout = releases` dispatch, a rollback and
//! `--probe`. Afterwards, and after a dispatch killed mid-command (the connection cut), no
//! process of the user is left on the host.
//!
//! One sshd for the whole file (a user per shell); the shells run as parallel tests.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;
use support::home::{Home, text};
use support::shells::{self, ShellUser};
use support::{Need, SshServer, TEST_PASSWORD};

fn server() -> &'static SshServer {
    static SERVER: OnceLock<SshServer> = OnceLock::new();
    SERVER.get_or_init(SshServer::start)
}

struct Env {
    home: Home,
    user: ShellUser,
    dir: PathBuf,
    cfg: PathBuf,
}

impl Env {
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", self.cfg.to_str().unwrap()];
        all.extend(args);
        self.home.run(&all)
    }

    fn dispatch(&self, bundle: &Path) -> Output {
        self.run(&["--dispatch", bundle.to_str().unwrap()])
    }

    /// A real archive `NAME` holding `VERSION.txt`.
    fn bundle(&self, name: &str, version: &str) -> PathBuf {
        let src = self.home.path(&format!("src-{name}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("VERSION.txt"), format!("{version}\n")).unwrap();
        let out = self.home.path(name);
        let st = Command::new("tar")
            .arg("czf")
            .arg(&out)
            .arg("VERSION.txt")
            .current_dir(&src)
            .status()
            .unwrap();
        assert!(st.success());
        out
    }

    fn d(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// Waits (bounded) until no process of the user is left on the host.
    fn assert_no_processes(&self, after: &str) {
        let clean =
            support::wait_until(Duration::from_secs(10), || self.user.processes().is_empty());
        assert!(
            clean,
            "{}: processes of {} left on the host after {after}: {:?}",
            self.user.shell,
            self.user.name,
            self.user.processes()
        );
    }
}

fn setup(short: &str, shell: &str) -> Option<Env> {
    let test = format!("login_shell_{short}");
    if !support::live_test_or_skip(&test, &[Need::Sshd, Need::LoginShells]) {
        return None;
    }
    let server = server();
    let user = shells::shell_user(short, shell);
    let dir = user.fresh_dir("login-shells");
    let home = Home::trusting(server);
    let d = dir.to_str().unwrap();
    let common = format!(
        "host = {addr}\nlogin = {login}\npassword = {TEST_PASSWORD}\nlock_path = {d}/.lock\nlock_wait = 1s\ntimeout = 10s\n",
        addr = server.addr(),
        login = user.name,
    );
    // With lock_stale = 4s the heartbeat beats every second (lock_stale / 4): the upgrade
    // outlasts two beats and copies what it saw. The other rules beat every 30s, so a
    // heartbeat `sleep` left behind would outlive the bounded wait for a clean host. Its quotes, `$`, `;` and `|` would all mean something else to fish
    // or tcsh.
    let text = format!(
        "[plain-.*\\.tgz]\nprotocol = scp\ndest_dir = {d}/plain\nlock_stale = 4s\n{common}\
upgrade = sleep 2.5; cat '{d}/.lock/beat' > \"{d}/beat-seen\" && echo \"upgraded $(tar -tzf {{path}} | head -n 1) in '$HOME'\"\n\n\
[sftp-.*\\.tgz]\nprotocol = sftp\ndest_dir = {d}/sftp\nlock_stale = 2m\n{common}post = test -s {{path}} && echo posted\n\n\
[slow-.*\\.tgz]\nprotocol = sftp\ndest_dir = {d}/slow\nlock_stale = 2m\n{common}upgrade = touch {d}/slow-started; sleep 60\n\n\
[app-(?P<version>[0-9.]+)\\.tgz]\nprotocol = sftp\ndest_dir = {d}/app\nlock_stale = 2m\nlayout = releases\nkeep = 3\n{common}\
rollback = echo rolled back to $(cat {{current}}/VERSION.txt)\n"
    );
    let cfg = home.write("dispatch.cfg", text);
    Some(Env {
        home,
        user,
        dir,
        cfg,
    })
}

fn matrix(short: &str, shell: &str) {
    let Some(env) = setup(short, shell) else {
        return;
    };
    let d = env.d().to_owned();
    let shell = shell.to_owned();
    let say = |o: &Output| format!("login shell {shell}:\n{}", text(o));

    // scp upload, lock with heartbeat, a user command full of POSIX syntax.
    let o = env.dispatch(&env.bundle("plain-1.tgz", "1"));
    assert!(o.status.success(), "{}", say(&o));
    assert!(
        text(&o).contains(&format!(
            "upgraded VERSION.txt in '{}'",
            env.user.home.display()
        )),
        "{}",
        say(&o)
    );
    assert!(Path::new(&format!("{d}/plain/plain-1.tgz")).is_file());
    let beat = std::fs::read_to_string(format!("{d}/beat-seen")).unwrap_or_default();
    assert!(
        beat.trim().parse::<u64>().is_ok(),
        "the heartbeat never beat under {shell}: `{beat}`"
    );
    assert!(!Path::new(&format!("{d}/.lock")).exists(), "lock released");

    // sftp upload.
    let o = env.dispatch(&env.bundle("sftp-1.tgz", "1"));
    assert!(o.status.success(), "{}", say(&o));
    assert!(text(&o).contains("posted"), "{}", say(&o));
    assert!(Path::new(&format!("{d}/sftp/sftp-1.tgz")).is_file());
    env.assert_no_processes("scp and sftp dispatches");

    // A lock held by someone else: busy with its holder named, never "bundle unknown".
    let lock = format!("{d}/.lock");
    std::fs::create_dir(&lock).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(
        format!("{lock}/info"),
        format!("holder=someone@else pid 1\nsince={now}\nbundle=other-9.tgz\n"),
    )
    .unwrap();
    let o = env.dispatch(&env.bundle("plain-2.tgz", "2"));
    assert_eq!(o.status.code(), Some(1), "{}", say(&o));
    assert!(
        text(&o).contains("locked by someone@else pid 1") && text(&o).contains("other-9.tgz"),
        "{}",
        say(&o)
    );
    let o = env.run(&["--probe"]);
    assert!(
        text(&o).contains("locked by someone@else pid 1"),
        "--probe must see the lock: {}",
        say(&o)
    );
    std::fs::remove_dir_all(&lock).unwrap();

    // Releases layout, twice, then a rollback.
    for v in ["1.0", "2.0"] {
        let o = env.dispatch(&env.bundle(&format!("app-{v}.tgz"), v));
        assert!(o.status.success(), "{}", say(&o));
    }
    let current = std::fs::read_link(format!("{d}/app/current")).ok();
    assert_eq!(current, Some(PathBuf::from("releases/2.0")), "{shell}");
    let o = env.run(&["--rollback", "app"]);
    assert!(o.status.success(), "{}", say(&o));
    assert!(text(&o).contains("rolled back to 1.0"), "{}", say(&o));
    let current = std::fs::read_link(format!("{d}/app/current")).ok();
    assert_eq!(current, Some(PathBuf::from("releases/1.0")), "{shell}");

    // --probe: everything passes, the lock is free.
    let o = env.run(&["--probe"]);
    assert_eq!(o.status.code(), Some(0), "{}", say(&o));
    assert!(!text(&o).contains("FAIL"), "{}", say(&o));
    assert!(!text(&o).contains("locked"), "{}", say(&o));
    env.assert_no_processes("the dispatches, rollback and probe");

    // The connection cut mid-command (dropship killed): the command, the heartbeat and
    // their watchers all go.
    let bundle = env.bundle("slow-1.tgz", "1");
    let mut child = env
        .home
        .command(&[
            "--config",
            env.cfg.to_str().unwrap(),
            "--dispatch",
            bundle.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = support::wait_until(Duration::from_secs(20), || {
        Path::new(&format!("{d}/slow-started")).exists()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "{shell}: the slow upgrade never started");
    env.assert_no_processes("dropship was killed mid-command");
}

#[test]
fn login_shell_bash() {
    matrix("bash", shells::SHELLS[0].1);
}

#[test]
fn login_shell_dash() {
    matrix("dash", shells::SHELLS[1].1);
}

#[test]
fn login_shell_zsh() {
    matrix("zsh", shells::SHELLS[2].1);
}

#[test]
fn login_shell_fish() {
    matrix("fish", shells::SHELLS[3].1);
}

#[test]
fn login_shell_busybox_ash() {
    matrix("ash", shells::SHELLS[4].1);
}

#[test]
fn login_shell_tcsh() {
    matrix("tcsh", shells::SHELLS[5].1);
}

/// A login shell that runs nothing (nologin says so and exits 1; a broken one might exit
/// 0 without a word): the lock step fails saying so, never "locked by another dispatch",
/// and `--probe` fails too.
#[test]
fn a_login_shell_that_runs_nothing_is_an_error_not_a_busy_lock() {
    let Some(env) = setup("nologin", "/usr/sbin/nologin") else {
        return;
    };
    let o = env.dispatch(&env.bundle("plain-1.tgz", "1"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("the host's shell did not run dropship's script")
            && !out.contains("locked by"),
        "{out}"
    );
    assert!(
        out.contains("currently not available"),
        "what nologin said: {out}"
    );
    let o = env.run(&["--probe"]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
}
