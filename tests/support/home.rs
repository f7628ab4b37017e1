//! A private HOME for runs of the real `dropship` binary: a temp directory that is HOME,
//! the working directory and (under `state/`) the state dir, with everything else of the
//! machine's own setup that dropship reads kept out of the run.
//!
//! Why one place: every test that runs the binary needs the same isolation, and a copy that
//! forgets a variable (a developer's `NETRC`, `XDG_CONFIG_HOME` or ssh-agent) makes a test
//! pass or fail by the machine it runs on.

use super::SshServer;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Variables the run must not inherit: config discovery (`XDG_CONFIG_HOME`,
/// `DROPSHIP_CONFIG`), credentials (`NETRC`) and the developer's ssh-agent
/// (`SSH_AUTH_SOCK`). A test that wants one sets it on the [`Home::command`] it gets back.
pub const CLEARED_ENV: [&str; 4] = [
    "XDG_CONFIG_HOME",
    "DROPSHIP_CONFIG",
    "NETRC",
    "SSH_AUTH_SOCK",
];

/// A throwaway HOME, removed on drop.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    /// An empty HOME (no `.ssh/`).
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp HOME"),
        }
    }

    /// A HOME whose `~/.ssh/known_hosts` trusts `server`.
    pub fn trusting(server: &SshServer) -> Home {
        let home = Home::new();
        home.trust(server);
        home
    }

    /// The HOME directory itself.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `name` under HOME.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `contents` to `name` under HOME (a config, a bundle) and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// `~/.ssh`, created if missing.
    pub fn ssh_dir(&self) -> PathBuf {
        let p = self.path(".ssh");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Writes `server`'s host keys to `~/.ssh/known_hosts` (replacing what was there).
    pub fn trust(&self, server: &SshServer) {
        server.write_known_hosts(&self.ssh_dir().join("known_hosts"));
    }

    /// `dropship ARGS` run in HOME, with HOME and `XDG_STATE_HOME` (`~/state`) set, the
    /// [`CLEARED_ENV`] variables removed and stdin closed.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dropship"));
        c.args(args)
            .current_dir(self.root())
            .env("HOME", self.root())
            .env("XDG_STATE_HOME", self.path("state"))
            // The bundle store (`--dispatch` fills it) stays in this HOME too.
            .env("XDG_DATA_HOME", self.path("data"))
            .stdin(Stdio::null());
        for var in CLEARED_ENV {
            c.env_remove(var);
        }
        c
    }

    /// [`Home::command`] run to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run dropship")
    }
}

/// A run's exit status, stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
