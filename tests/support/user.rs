//! The fixed system user the live tests log in as, its client keys, and per-test scratch dirs.
//!
//! Set-up (user, password, /etc/shells entry, keys) runs once per process and under a `flock`
//! shared by all test processes, so parallel test binaries never race `useradd` or see half
//! written keys. It is idempotent: an existing user is kept, its password reset only when the
//! shadow entry differs from the one recorded after the last reset.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{FileLock, run};

/// Login name of the test user.
pub const TEST_USER: &str = "dropship-test";
/// Its password: `;`, `#` and a space on purpose, to catch quoting bugs in configs and shells.
pub const TEST_PASSWORD: &str = "Dr0p;Sh#ip pass";
/// Passphrase of [`TestKeys::encrypted`].
pub const KEY_PASSPHRASE: &str = "k3y;pass #phrase";
/// Where the client keypairs live (shared by all test processes, generated once).
pub const KEYS_DIR: &str = "/tmp/dropship-test-keys";

const SETUP_LOCK: &str = "setup.lock";
const SHELL: &str = "/bin/bash";

/// The test user as found in /etc/passwd after set-up.
#[derive(Debug)]
pub struct TestUser {
    pub name: &'static str,
    pub password: &'static str,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Client ed25519 keypairs authorized for [`TEST_USER`] on every [`super::SshServer`].
#[derive(Debug)]
pub struct TestKeys {
    /// Private key without passphrase (OpenSSH format).
    pub plain: PathBuf,
    pub plain_pub: PathBuf,
    /// Private key protected by [`KEY_PASSPHRASE`].
    pub encrypted: PathBuf,
    pub encrypted_pub: PathBuf,
    pub passphrase: &'static str,
}

impl TestKeys {
    /// Both public keys, one `authorized_keys` line each.
    pub fn authorized_keys(&self) -> String {
        let mut out = String::new();
        for p in [&self.plain_pub, &self.encrypted_pub] {
            let line = fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

static USER: OnceLock<TestUser> = OnceLock::new();
static KEYS: OnceLock<TestKeys> = OnceLock::new();

/// The test user, created (with password and shell) on first use. Needs root.
pub fn test_user() -> &'static TestUser {
    USER.get_or_init(|| {
        let _lock = FileLock::acquire(SETUP_LOCK);
        ensure_shell_listed(SHELL);
        ensure_user();
        ensure_password();
        let (uid, gid, home) = passwd_entry(TEST_USER).expect("test user exists after set-up");
        TestUser {
            name: TEST_USER,
            password: TEST_PASSWORD,
            uid,
            gid,
            home,
        }
    })
}

/// The client keypairs, generated on first use.
pub fn test_keys() -> &'static TestKeys {
    KEYS.get_or_init(|| {
        let _lock = FileLock::acquire(SETUP_LOCK);
        let dir = Path::new(KEYS_DIR);
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {KEYS_DIR}: {e}"));
        let plain = dir.join("id_ed25519");
        let encrypted = dir.join("id_ed25519_passphrase");
        ensure_keypair(&plain, "", "dropship-test plain");
        ensure_keypair(&encrypted, KEY_PASSPHRASE, "dropship-test passphrase");
        TestKeys {
            plain_pub: pub_path(&plain),
            plain,
            encrypted_pub: pub_path(&encrypted),
            encrypted,
            passphrase: KEY_PASSPHRASE,
        }
    })
}

fn pub_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    s.into()
}

fn ensure_keypair(private: &Path, passphrase: &str, comment: &str) {
    if private.exists() && pub_path(private).exists() {
        return;
    }
    // Generated under a temporary name and renamed, so a reader never sees half a key.
    let tmp = private.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_file(pub_path(&tmp));
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f"])
        .arg(&tmp));
    fs::rename(pub_path(&tmp), pub_path(private)).expect("install public key");
    fs::rename(&tmp, private).expect("install private key");
}

fn ensure_shell_listed(shell: &str) {
    let shells = fs::read_to_string("/etc/shells").unwrap_or_default();
    if shells.lines().any(|l| l.trim() == shell) {
        return;
    }
    let mut text = shells;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(shell);
    text.push('\n');
    fs::write("/etc/shells", text).expect("add shell to /etc/shells (vsftpd's PAM wants it)");
}

fn ensure_user() {
    match passwd_line(TEST_USER) {
        None => {
            let mut cmd = Command::new("useradd");
            cmd.args(["-m", "-s", SHELL]);
            // A group left over from an earlier, partly removed user makes plain useradd fail.
            if group_exists(TEST_USER) {
                cmd.args(["-g", TEST_USER]);
            }
            run(cmd.arg(TEST_USER));
        }
        Some(line) if line.rsplit(':').next() != Some(SHELL) => {
            run(Command::new("usermod").args(["-s", SHELL, TEST_USER]));
        }
        Some(_) => {}
    }
    let (uid, gid, home) = passwd_entry(TEST_USER).expect("useradd created the user");
    if !home.is_dir() {
        fs::create_dir_all(&home).expect("create test user's home");
        chown(&home, Some(uid), Some(gid)).expect("chown home");
    }
}

/// Sets the password unless /etc/shadow still holds the hash recorded after the last set.
fn ensure_password() {
    let stamp = Path::new(super::LOCK_DIR).join("password.stamp");
    let current = shadow_field(TEST_USER);
    if current.is_some() && current == fs::read_to_string(&stamp).ok() {
        return;
    }
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chpasswd");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("chpasswd stdin");
        writeln!(stdin, "{TEST_USER}:{TEST_PASSWORD}").expect("write to chpasswd");
    }
    let out = child.wait_with_output().expect("wait for chpasswd");
    assert!(
        out.status.success(),
        "chpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = shadow_field(TEST_USER).expect("shadow entry after chpasswd");
    fs::write(&stamp, hash).expect("write password stamp");
}

fn passwd_line(name: &str) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_owned)
}

fn passwd_entry(name: &str) -> Option<(u32, u32, PathBuf)> {
    let line = passwd_line(name)?;
    let f: Vec<&str> = line.split(':').collect();
    Some((
        f.get(2)?.parse().ok()?,
        f.get(3)?.parse().ok()?,
        f.get(5)?.into(),
    ))
}

fn group_exists(name: &str) -> bool {
    fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').next() == Some(name))
}

fn shadow_field(name: &str) -> Option<String> {
    let shadow = fs::read_to_string("/etc/shadow").ok()?;
    let line = shadow.lines().find(|l| l.split(':').next() == Some(name))?;
    line.split(':').nth(1).map(str::to_owned)
}

/// A fresh directory in the test user's home, owned by that user, for one test to upload
/// into. Removed on drop unless the test is panicking (kept for a post-mortem).
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

static SCRATCH_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A new [`ScratchDir`] named after `test` (plus pid and a counter, so it is unique).
pub fn scratch_dir(test: &str) -> ScratchDir {
    let user = test_user();
    let root = user.home.join("scratch");
    if !root.is_dir() {
        fs::create_dir_all(&root).expect("create scratch root");
    }
    chown_to_user(&root);
    let clean: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let seq = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
    let path = root.join(format!("{clean}-{}-{seq}", std::process::id()));
    // A left-over from a previous process with the same pid.
    let _ = fs::remove_dir_all(&path);
    fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod scratch");
    chown_to_user(&path);
    ScratchDir { path }
}

/// Gives `path` to the test user (files written by the test process belong to root).
pub fn chown_to_user(path: &Path) {
    let user = test_user();
    chown(path, Some(user.uid), Some(user.gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

impl ScratchDir {
    /// Absolute path; also the path to use over FTP and SFTP (no chroot).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`Self::path`] as `&str`, for protocol APIs that take strings.
    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("scratch paths are ASCII")
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a file owned by the test user (e.g. something to download).
    pub fn write_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        chown_to_user(&p);
        p
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs `c` as the test user on a machine named `hostname`: its own UTS namespace (so
/// `gethostname` answers `hostname`, as on another machine of the team) and the test user's
/// uid, gid and groups, set in that order from the child before it execs.
pub fn as_test_user_on(c: &mut Command, hostname: &'static str) {
    use std::os::unix::process::CommandExt;
    let user = test_user();
    let (uid, gid) = (user.uid, user.gid);
    // SAFETY: only async-signal-safe libc calls between fork and exec, on data captured by
    // value.
    unsafe {
        c.pre_exec(move || {
            let check = os_check;
            check(libc::unshare(libc::CLONE_NEWUTS))?;
            check(libc::sethostname(hostname.as_ptr().cast(), hostname.len()))?;
            check(libc::setgroups(1, &gid))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))
        });
    }
}

/// Gives `home` and everything in it (config, bundle, password file) to the test user.
pub fn give_to_test_user(home: &super::home::Home) {
    chown_to_user(home.root());
    for entry in fs::read_dir(home.root()).unwrap() {
        chown_to_user(&entry.unwrap().path());
    }
}

/// A libc call's 0-or-error result as `io::Result`, for `pre_exec` closures (no allocation:
/// async-signal-safe).
pub fn os_check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
