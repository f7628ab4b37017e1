//! Telling a live writer from a dead one.
//!
//! A dispatch row says `running` from its first write until `DispatchFinished`. If the
//! process is killed (`kill -9`, OOM, power loss) the row keeps saying `running`, so readers
//! check whether its writer still exists. A pid alone is not enough: pids are reused, and
//! after a reboot a low pid is almost certainly someone else. So the writer also stores a
//! marker of *its* process instance: the boot id plus the process start time (in clock ticks
//! since boot, field 22 of `/proc/PID/stat`). A pid whose current marker differs is another
//! process, hence the writer is gone.
//!
//! On a shared PostgreSQL journal the writer may run on another machine, where this one's
//! `/proc` says nothing. There the marker also names the writer's database session
//! (`|pg:BACKEND_PID:START_US`): the server ends a session when its client dies (the kernel
//! closes the socket of a killed process; TCP keepalive catches a machine that vanished), so a
//! writer is alive while its session is in `pg_stat_activity`.

use std::path::Path;

/// Who is writing: this process's pid and its instance marker (empty where `/proc` is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Writer {
    pub pid: i64,
    pub marker: String,
}

impl Writer {
    pub fn current() -> Writer {
        let pid = std::process::id();
        Writer {
            pid: i64::from(pid),
            marker: marker_of(pid).unwrap_or_default(),
        }
    }

    /// This process writing through the PostgreSQL session `session` (`PID:START_US`).
    pub fn with_session(mut self, session: &str) -> Writer {
        self.marker = format!("{}{SESSION_TAG}{session}", local_part(&self.marker));
        self
    }
}

const SESSION_TAG: &str = "|pg:";

pub(super) fn local_part(marker: &str) -> &str {
    marker.split(SESSION_TAG).next().unwrap_or(marker)
}

/// This connection's session, as [`Writer::with_session`] wants it.
pub(crate) fn pg_session(tx: &super::db::Tx<'_>) -> super::db::DbResult<String> {
    tx.query_row(
        "SELECT pg_backend_pid()::text || ':' ||
                (extract(epoch FROM backend_start) * 1000000)::int8::text
         FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        &[],
        |r| r.get::<String>(0),
    )
    .map(Option::unwrap_or_default)
}

/// Whether the writer `pid` + `marker` lives: by its database session when it wrote through
/// one and runs on another machine, else by this machine's `/proc`.
pub(crate) fn alive(tx: &super::db::Tx<'_>, pid: i64, marker: &str) -> bool {
    let local = local_part(marker);
    let Some(session) = marker.split(SESSION_TAG).nth(1) else {
        return is_alive(pid, marker);
    };
    let this_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    if !this_boot.trim().is_empty() && local.starts_with(this_boot.trim()) {
        return is_alive(pid, local);
    }
    // Another machine: a failed query says "alive", so nobody takes over a live dispatch.
    tx.query_row(
        "SELECT 1 FROM pg_stat_activity
         WHERE pid::text || ':' || (extract(epoch FROM backend_start) * 1000000)::int8::text = ?1",
        super::db::params![session],
        |_| Ok(()),
    )
    .map(|found| found.is_some())
    .unwrap_or(true)
}

/// Whether `writer`, a process of this machine, still runs (its database session aside).
pub(crate) fn is_alive_here(writer: &Writer) -> bool {
    is_alive(writer.pid, local_part(&writer.marker))
}

/// Whether the process that wrote `pid` + `marker` still runs.
pub(crate) fn is_alive(pid: i64, marker: &str) -> bool {
    let Ok(pid) = u32::try_from(pid) else {
        return false;
    };
    if !Path::new("/proc/self/stat").exists() {
        return signal_zero(pid);
    }
    match marker_of(pid) {
        // A writer that could not read its own marker can only be judged by its pid.
        Some(_) if marker.is_empty() => true,
        Some(current) => current == marker,
        None => false,
    }
}

/// `boot_id/starttime` of a live (not zombie) process, `None` if there is none.
fn marker_of(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, start) = parse_stat(&stat)?;
    // A zombie has exited; only its parent has not reaped it yet.
    if matches!(state, 'Z' | 'X' | 'x') {
        return None;
    }
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    Some(format!("{}/{start}", boot.trim()))
}

/// State and start time from a `/proc/PID/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from its closing parenthesis.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), starttime is field 22: 18 fields further.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Portable fallback: a process exists if it can be signalled (or exists but is not ours).
fn signal_zero(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 performs only the existence and permission checks.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
    }

    #[test]
    fn this_process_is_alive_and_a_changed_marker_is_not() {
        let me = Writer::current();
        assert!(is_alive(me.pid, &me.marker));
        if !me.marker.is_empty() {
            assert!(!is_alive(me.pid, "another-boot/1"));
        }
        assert!(!is_alive(-1, ""));
    }
}
