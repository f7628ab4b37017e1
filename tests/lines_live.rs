//! Output lines are capped in the transports: a command printing a 10 MiB line with no
//! newline, through real sshd and through the local shell, hands out 64 KiB and a marker
//! with the right count, then the next line, and the process never holds the 10 MiB.
//!
//! Memory is checked by counting the heap this test binary allocates (a counting global
//! allocator, peak over the run), not by sampling RSS: the buffers either grow with the
//! line or they do not. One test in this binary, so nothing else allocates meanwhile.

mod support;

use dropship::transport::lines::{MAX_LINE, cut_marker};
use dropship::transport::{self, Shell, Stream};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::upload::Rig;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

const TEN_MIB: usize = 10 << 20;
/// 10 MiB of `x` in one line (no newline until all of it is out), its newline, then a
/// short line: the stream goes on normally after a cut.
const COMMAND: &str = "head -c 10485760 /dev/zero | tr '\\0' x; echo; echo done";

/// Runs [`COMMAND`]; returns the lines (the long one kept whole, to check it) and how many
/// heap bytes above the start the run needed at its peak.
fn run(shell: &mut dyn Shell) -> (Vec<(Stream, String)>, usize) {
    let mut lines = Vec::with_capacity(16);
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let status = shell
        .exec(COMMAND, Duration::from_secs(60), &|| false, &mut |s, l| {
            lines.push((s, l.to_owned()))
        })
        .unwrap();
    assert_eq!(status, 0);
    let peak = PEAK.load(Ordering::SeqCst).saturating_sub(base);
    (lines, peak)
}

fn check(how: &str, lines: &[(Stream, String)], peak: usize) {
    let expected = format!(
        "{}{}",
        "x".repeat(MAX_LINE),
        cut_marker((TEN_MIB - MAX_LINE) as u64)
    );
    assert_eq!(
        lines.len(),
        2,
        "{how}: {:?}",
        lines
            .iter()
            .map(|(s, l)| (s, l.len(), &l[l.len().saturating_sub(60)..]))
            .collect::<Vec<_>>()
    );
    assert_eq!(lines[0].0, Stream::Stdout);
    assert!(
        lines[0].1 == expected,
        "{how}: the long line is {} bytes, ending {:?}",
        lines[0].1.len(),
        &lines[0].1[lines[0].1.len().saturating_sub(40)..]
    );
    assert_eq!(lines[1], (Stream::Stdout, "done".to_owned()), "{how}");
    // The line itself (64 KiB, kept by this test), the splitters, the read chunk and the
    // session's own bookkeeping: far below the 10 MiB a buffer-until-newline holds.
    assert!(
        peak < 2 << 20,
        "{how}: the heap grew by {peak} bytes while a {TEN_MIB}-byte line went by"
    );
    eprintln!("{how}: heap peak +{peak} bytes for a {TEN_MIB}-byte line");
}

#[test]
fn a_ten_mib_line_is_capped_and_never_held() {
    let mut local = transport::local::Local::new("localhost");
    let (lines, peak) = run(&mut local);
    check("local", &lines, peak);

    let Some(server) = support::ssh_server_or_skip("lines_live") else {
        return;
    };
    let rig = Rig::new("lines_live");
    rig.trust(&server);
    let config = rig.config("sftp", server.addr(), rig.dest.as_str(), "");
    let plan = rig.plan(&config, "app.tgz");
    let mut conn =
        dropship::engine::connect::connect(&plan.targets[0], &plan.rule, &rig.known).unwrap();
    let (lines, peak) = run(conn.shell.as_deref_mut().unwrap());
    check("ssh", &lines, peak);
}
