//! Health checks that need no script: `health = proc:NAME[:MIN[-MAX]]` (how many processes
//! named NAME run on the host) and `health = port:N` (something listens on TCP port N of
//! the host). These are what the package agents dropship replaces watched; writing them as a
//! shell one-liner in every rule is where portability goes wrong (`pgrep` and `ss` are not on
//! every host, busybox's differ, fish is not sh), so dropship writes the check itself.
//!
//! The check runs on the host as a POSIX `sh` script (the engine hands every command to
//! `sh`, whatever the login shell is), reading `/proc` where it exists (Linux: any libc, any
//! userland) and falling back to `ps -A -o comm=` for processes and `netstat -an` for ports
//! elsewhere. Its last line says what it saw, e.g. `proc nginx: 0 running, want 1-4`.

use std::fmt;

/// The longest process name `/proc/PID/comm` holds (the kernel's `TASK_COMM_LEN` - 1):
/// a longer NAME is compared on its first 15 bytes, as `pgrep -x` does.
pub const COMM_LEN: usize = 15;

/// A health check dropship runs on the host without a script of the user's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Probe {
    /// Between `min` and `max` (inclusive; `None`: no upper bound) processes named `name`.
    Proc {
        name: String,
        min: u32,
        max: Option<u32>,
    },
    /// A TCP socket listening on `port` (IPv4 or IPv6, any address).
    Port { port: u16 },
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Proc { name, .. } => write!(f, "proc {name}: want {}", self.want()),
            Probe::Port { port } => write!(f, "port {port}: want a listener"),
        }
    }
}

/// Whether a `health` value (as written) is one of these checks rather than a command or a
/// URL: it starts with `proc:` or `port:`.
pub fn is_probe(source: &str) -> bool {
    let s = source.trim_start();
    s.starts_with("proc:") || s.starts_with("port:")
}

impl Probe {
    /// Parses `proc:NAME[:MIN[-MAX]]` or `port:N`. `None` when `source` is neither kind
    /// (see [`is_probe`]); `Some(Err(why))` for one that is malformed.
    pub fn parse(source: &str) -> Option<Result<Probe, String>> {
        let s = source.trim();
        if let Some(rest) = s.strip_prefix("proc:") {
            return Some(parse_proc(rest));
        }
        if let Some(rest) = s.strip_prefix("port:") {
            return Some(
                rest.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .map(|port| Probe::Port { port })
                    .ok_or_else(|| {
                        format!("`port:{rest}`: write a TCP port from 1 to 65535, e.g. `port:8080`")
                    }),
            );
        }
        None
    }

    /// What the check accepts, as messages say it: `1-4`, `at least 1`, `exactly 0`.
    pub fn want(&self) -> String {
        match self {
            Probe::Proc { min, max, .. } => match max {
                Some(m) if m == min => format!("exactly {min}"),
                Some(m) => format!("{min}-{m}"),
                None => format!("at least {min}"),
            },
            Probe::Port { .. } => "a listener".into(),
        }
    }

    /// The POSIX sh script that checks it on the host: exit 0 when healthy, 1 when not, its
    /// last line saying what it saw (`proc nginx: 0 running, want 1-4`,
    /// `port 8080: nothing listening`); 2 when the host offers no way to look.
    pub fn script(&self) -> String {
        match self {
            Probe::Proc { name, min, max } => proc_script(name, *min, *max),
            Probe::Port { port } => port_script(*port),
        }
    }
}

fn parse_proc(rest: &str) -> Result<Probe, String> {
    let usage = "write `proc:NAME`, `proc:NAME:MIN` or `proc:NAME:MIN-MAX`, e.g. `proc:nginx:1-4`";
    let (name, range) = match rest.split_once(':') {
        Some((n, r)) => (n, Some(r)),
        None => (rest, None),
    };
    // A name is one word of what `ps` shows; no quoting games, no placeholders.
    if name.is_empty()
        || name.contains(['/', '{', '}'])
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`proc:{rest}`: `{name}` is not a process name (one word, no `/`, no placeholders); {usage}"
        ));
    }
    let count = |t: &str| {
        t.parse::<u32>()
            .map_err(|_| format!("`proc:{rest}`: `{t}` is not a count; {usage}"))
    };
    let (min, max) = match range {
        None => (1, None),
        Some(r) => match r.split_once('-') {
            Some((a, b)) => (count(a)?, Some(count(b)?)),
            None => (count(r)?, None),
        },
    };
    if let Some(m) = max
        && m < min
    {
        return Err(format!(
            "`proc:{rest}`: the range {min}-{m} is empty (MIN must not be over MAX)"
        ));
    }
    Ok(Probe::Proc {
        name: name.to_owned(),
        min,
        max,
    })
}

/// Counts processes whose command name is NAME: `/proc/*/comm` where there is a `/proc`
/// (read by the shell's own `read`: no process per process on a host running thousands),
/// else `ps -A -o comm=`. The script's own shell never counts (its name is `sh`, and a
/// NAME of `sh` still leaves out `$$`).
fn proc_script(name: &str, min: u32, max: Option<u32>) -> String {
    let comm: String = {
        let mut end = name.len().min(COMM_LEN);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name[..end].to_owned()
    };
    let want = Probe::Proc {
        name: name.to_owned(),
        min,
        max,
    }
    .want();
    let too_many = match max {
        Some(m) => format!(" || [ \"$n\" -gt {m} ]"),
        None => String::new(),
    };
    let q = crate::config::shell::quote;
    format!(
        "name={name}; comm={comm}; n=0
if [ -r /proc/self/comm ]; then
  for f in /proc/[0-9]*/comm; do
    {{ read -r c < \"$f\"; }} 2>/dev/null || continue
    [ \"$c\" = \"$comm\" ] || continue
    [ \"$f\" = \"/proc/$$/comm\" ] && continue
    n=$((n+1))
  done
elif command -v ps >/dev/null 2>&1; then
  n=$(ps -A -o comm= 2>/dev/null | awk -v c=\"$comm\" '{{ sub(/.*\\//, \"\") }} substr($0, 1, {COMM_LEN}) == c {{ k++ }} END {{ print k+0 }}')
else
  echo \"proc $name: cannot count processes here (no /proc and no ps)\"; exit 2
fi
if [ \"$n\" -lt {min} ]{too_many}; then
  echo \"proc $name: $n running, want {want}\"; exit 1
fi
echo \"proc $name: $n running, want {want}\"",
        name = q(name),
        comm = q(&comm),
    )
}

/// Looks for a TCP socket in state LISTEN (`0A`) on the port in `/proc/net/tcp` and
/// `/proc/net/tcp6`, else in `netstat -an`.
fn port_script(port: u16) -> String {
    format!(
        "if [ -r /proc/net/tcp ]; then
  if cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -Eq '^ *[0-9]+: [0-9A-Fa-f]+:{hex} [0-9A-Fa-f]+:[0-9A-Fa-f]+ 0A '; then
    echo 'port {port}: listening'; exit 0
  fi
elif command -v netstat >/dev/null 2>&1; then
  if netstat -an 2>/dev/null | grep -Ei 'listen' | grep -Eq '[.:]{port}[[:space:]]'; then
    echo 'port {port}: listening'; exit 0
  fi
else
  echo 'port {port}: cannot list sockets here (no /proc/net/tcp and no netstat)'; exit 2
fi
echo 'port {port}: nothing listening'; exit 1",
        hex = format_args!("{port:04X}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        let p = |s| Probe::parse(s).unwrap();
        assert_eq!(
            p("proc:nginx"),
            Ok(Probe::Proc {
                name: "nginx".into(),
                min: 1,
                max: None
            })
        );
        assert_eq!(
            p("proc:nginx:1-4"),
            Ok(Probe::Proc {
                name: "nginx".into(),
                min: 1,
                max: Some(4)
            })
        );
        assert_eq!(
            p("proc:worker:0"),
            Ok(Probe::Proc {
                name: "worker".into(),
                min: 0,
                max: None
            })
        );
        assert_eq!(p("port:8080"), Ok(Probe::Port { port: 8080 }));
        assert!(p("port:0").unwrap_err().contains("1 to 65535"));
        assert!(p("port:http").is_err());
        assert!(p("proc:nginx:4-1").unwrap_err().contains("empty"));
        assert!(p("proc:").is_err());
        assert!(p("proc:a b").is_err());
        assert!(p("proc:{bundle}").is_err());
        assert!(p("proc:x:y").unwrap_err().contains("not a count"));
        assert_eq!(Probe::parse("./check.sh"), None);
        assert!(is_probe("proc:x") && is_probe(" port:1") && !is_probe("curl port:1"));
    }

    #[test]
    fn messages_say_the_range() {
        let p = |s| Probe::parse(s).unwrap().unwrap();
        assert_eq!(p("proc:a:1-4").want(), "1-4");
        assert_eq!(p("proc:a:2-2").want(), "exactly 2");
        assert_eq!(p("proc:a").want(), "at least 1");
        assert_eq!(p("port:80").to_string(), "port 80: want a listener");
    }

    /// The scripts, run by the local `sh` (dash on Debian): a port this test listens on,
    /// one nobody does, and process counts of a process this test started.
    #[test]
    fn scripts_judge_this_machine() {
        let run = |script: String| {
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            (o.status.code(), out.lines().last().unwrap_or("").to_owned())
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(
            run(Probe::Port { port }.script()),
            (Some(0), format!("port {port}: listening"))
        );
        drop(l);
        assert_eq!(
            run(Probe::Port { port }.script()),
            (Some(1), format!("port {port}: nothing listening"))
        );
        // A process with a name of our own: `sleep` renamed by a symlink.
        let dir = tempfile::tempdir().unwrap();
        let name = format!("dsprobe{}", std::process::id() % 100_000);
        let exe = dir.path().join(&name);
        std::os::unix::fs::symlink("/bin/sleep", &exe).unwrap();
        let mut kids: Vec<_> = (0..2)
            .map(|_| std::process::Command::new(&exe).arg("30").spawn().unwrap())
            .collect();
        let check = |s: &str| Probe::parse(&format!("proc:{name}{s}")).unwrap().unwrap();
        assert_eq!(
            run(check(":1-4").script()),
            (Some(0), format!("proc {name}: 2 running, want 1-4"))
        );
        assert_eq!(
            run(check(":3").script()),
            (Some(1), format!("proc {name}: 2 running, want at least 3"))
        );
        assert_eq!(
            run(check(":0-1").script()),
            (Some(1), format!("proc {name}: 2 running, want 0-1"))
        );
        for k in &mut kids {
            k.kill().unwrap();
            k.wait().unwrap();
        }
        assert_eq!(
            run(check("").script()),
            (Some(1), format!("proc {name}: 0 running, want at least 1"))
        );
    }
}
