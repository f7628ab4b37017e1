//! Test users whose login shell is not bash: dash, zsh, fish, busybox ash, tcsh (and bash,
//! for comparison). Each gets the fixed test password ([`super::TEST_PASSWORD`]); the
//! harness's sshd and Dropbear authorize [`super::TestKeys`] for every user.
//!
//! Set-up runs under the same cross-process `flock` as the main test user's, is idempotent,
//! and fixes a user whose shell was changed since.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{FileLock, TEST_PASSWORD, run};

/// busybox decides what to be by `argv[0]`; sshd and Dropbear start a login shell as the
/// last part of its path, so a symlink named `ash` makes busybox the ash login shell.
pub const BUSYBOX_ASH: &str = "/usr/local/libexec/dropship-test/ash";

/// The login shells the matrix covers: (short name, path).
pub const SHELLS: &[(&str, &str)] = &[
    ("bash", "/bin/bash"),
    ("dash", "/usr/bin/dash"),
    ("zsh", "/usr/bin/zsh"),
    ("fish", "/usr/bin/fish"),
    ("ash", BUSYBOX_ASH),
    ("tcsh", "/usr/bin/tcsh"),
];

/// Binaries behind [`SHELLS`] (Debian packages zsh, fish, busybox, tcsh, dash).
pub const SHELL_BINARIES: &[&str] = &[
    "/bin/bash",
    "/usr/bin/dash",
    "/usr/bin/zsh",
    "/usr/bin/fish",
    "/bin/busybox",
    "/usr/bin/tcsh",
];

/// A user with a given login shell.
#[derive(Debug, Clone)]
pub struct ShellUser {
    pub name: String,
    pub shell: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl ShellUser {
    /// A fresh directory in the user's home, owned by the user (not removed: the home is
    /// the user's own and a post-mortem wants it).
    pub fn fresh_dir(&self, test: &str) -> PathBuf {
        let p = self.home.join(format!("{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        chown(&p, Some(self.uid), Some(self.gid)).expect("chown");
        p
    }

    /// Processes of this user still running (pid and command line), from `pgrep`.
    pub fn processes(&self) -> Vec<String> {
        let out = Command::new("pgrep")
            .args(["-a", "-u", &self.name])
            .output()
            .expect("run pgrep");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The user `dropship-sh-NAME` with `shell` as login shell, created on first use. Needs root.
pub fn shell_user(short: &str, shell: &str) -> ShellUser {
    let name = format!("dropship-sh-{short}");
    let _lock = FileLock::acquire("setup.lock");
    if shell == BUSYBOX_ASH
        && fs::read_link(BUSYBOX_ASH).ok().as_deref() != Some(Path::new("/bin/busybox"))
    {
        fs::create_dir_all(Path::new(BUSYBOX_ASH).parent().unwrap()).expect("mkdir for ash");
        let tmp = format!("{BUSYBOX_ASH}.{}", std::process::id());
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink("/bin/busybox", &tmp).expect("symlink busybox as ash");
        fs::rename(&tmp, BUSYBOX_ASH).expect("install ash symlink");
    }
    // Dropbear (password logins) and vsftpd's PAM want the shell listed.
    let shells = fs::read_to_string("/etc/shells").unwrap_or_default();
    if !shell.ends_with("nologin") && !shells.lines().any(|l| l.trim() == shell) {
        let mut text = shells;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(shell);
        text.push('\n');
        fs::write("/etc/shells", text).expect("add shell to /etc/shells");
    }
    match passwd(&name) {
        None => run(Command::new("useradd").args(["-m", "-s", shell, &name])),
        Some(f) if f[6] != shell => run(Command::new("usermod").args(["-s", shell, &name])),
        Some(_) => String::new(),
    };
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run chpasswd");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("chpasswd stdin");
        writeln!(stdin, "{name}:{TEST_PASSWORD}").expect("write to chpasswd");
    }
    assert!(child.wait().expect("chpasswd").success(), "chpasswd {name}");
    let f = passwd(&name).expect("user exists after useradd");
    let (uid, gid, home) = (
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        PathBuf::from(&f[5]),
    );
    if !home.is_dir() {
        fs::create_dir_all(&home).expect("create home");
        chown(&home, Some(uid), Some(gid)).expect("chown home");
    }
    ShellUser {
        name,
        shell: shell.to_owned(),
        uid,
        gid,
        home,
    }
}

fn passwd(name: &str) -> Option<Vec<String>> {
    fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[0] == name)
}
