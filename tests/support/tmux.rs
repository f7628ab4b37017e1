//! The real binary in a real terminal: a tmux server of the test's own (`-L`), so nothing
//! touches the user's sessions, killed on drop. Keystrokes go in with `send-keys`; what the
//! user would see comes back with `capture-pane -p` (`-e` for colours as SGR).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `cmd` (a shell command line) in a `w`×`h` terminal; `test` names the socket.
    pub fn start(test: &str, cmd: &str, w: u16, h: u16) -> Tmux {
        let t = Tmux {
            socket: format!("dropship-e2e-{test}-{}", std::process::id()),
        };
        let (w, h) = (w.to_string(), h.to_string());
        let o = t.run(&["new-session", "-d", "-s", "e2e", "-x", &w, "-y", &h, cmd]);
        assert!(
            o.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        t
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux")
    }

    /// Keys by tmux name (`Enter`, `Escape`, `C-c`, or plain characters).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "e2e"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Text typed literally (`-l`: no key names).
    pub fn text(&self, text: &str) {
        self.run(&["send-keys", "-t", "e2e", "-l", text]);
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "e2e"]).stdout).into_owned()
    }

    /// The screen with its colours as SGR sequences.
    pub fn screen_sgr(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-e", "-t", "e2e"]).stdout)
            .into_owned()
    }

    /// Waits until the screen shows every one of `needles`; panics with the screen if not.
    /// Returns a settled screen: tmux can capture a frame the program is still drawing (a new
    /// title above the old rows), so once the needles show, the screen is captured again
    /// until two captures 50 ms apart agree (for at most 2 s: a screen that keeps changing,
    /// such as live output, is returned as last seen with the needles).
    pub fn wait_for(&self, needles: &[&str], secs: u64) -> String {
        let has_all = |s: &str| needles.iter().all(|n| s.contains(n));
        let mut last = String::new();
        let ok = super::wait_until(Duration::from_secs(secs), || {
            last = self.screen();
            has_all(&last)
        });
        assert!(ok, "screen never showed {needles:?}:\n{last}");
        let settle = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(50));
            let again = self.screen();
            if again == last {
                break;
            }
            if has_all(&again) {
                last = again;
            }
        }
        last
    }

    /// Waits until the screen shows none of `needles`.
    pub fn wait_gone(&self, needles: &[&str], secs: u64) -> String {
        let mut last = String::new();
        let ok = super::wait_until(Duration::from_secs(secs), || {
            last = self.screen();
            needles.iter().all(|n| !last.contains(n))
        });
        assert!(ok, "screen still shows one of {needles:?}:\n{last}");
        last
    }

    /// Whether the program (the session) is still running.
    pub fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "e2e"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// `p` single-quoted for the shell command tmux runs.
pub fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}
