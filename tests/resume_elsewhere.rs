//! A dispatch whose process died on one machine, resumed from another through a shared
//! PostgreSQL journal. Process A (its own HOME) dispatches to two hosts and is killed with
//! SIGKILL, with its whole process group, while h2's upgrade runs. Process B (another HOME,
//! another hostname in its own UTS namespace, and another boot id in its own mount namespace,
//! so this machine's `/proc` says nothing about A, as on a real second machine) sees the
//! dispatch `interrupted` once A's database session is gone, is refused a resume of the step
//! whose outcome is unknown without `--force` (the local rule), and with it finishes the
//! dispatch: h1's steps and both verified uploads are not done again.

mod support;

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::time::Duration;
use support::home::{Home, text};
use support::postgres::PG_USER;

fn config(home: &Home, url: &str, shared: &std::path::Path) {
    home.write(
        "dispatch.cfg",
        format!(
            "[DEFAULT]\njournal = {url}\n\n[app-.*\\.tgz]\nhost = h1, h2\nprotocol = local\n\
             dest_dir = {s}/dest/{{host}}\nlock_stale = 3s\nlock_wait = 60s\n\
             upgrade = echo upgraded {{host}} >> {s}/upgrades.log; \
             if [ -e {s}/hold-{{host}} ]; then sleep 120; fi\n",
            s = shared.display()
        ),
    );
}

/// Runs `c` as if on another machine: hostname `build-3`, and a boot id of its own (bind
/// mounted over `/proc/sys/kernel/random/boot_id` in a private mount namespace).
fn on_another_machine(c: &mut std::process::Command, boot_id_file: &std::path::Path) {
    let src = CString::new(boot_id_file.as_os_str().as_encoded_bytes()).unwrap();
    let target = CString::new("/proc/sys/kernel/random/boot_id").unwrap();
    let root = CString::new("/").unwrap();
    // SAFETY: only async-signal-safe libc calls between fork and exec, on data captured by
    // value and allocated before the fork.
    unsafe {
        c.pre_exec(move || {
            let check = support::user::os_check;
            let name = "build-3";
            check(libc::unshare(libc::CLONE_NEWUTS | libc::CLONE_NEWNS))?;
            check(libc::sethostname(name.as_ptr().cast(), name.len()))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))
        });
    }
}

#[test]
fn a_dispatch_killed_on_one_machine_is_resumed_from_another() {
    if !support::live_test_or_skip("resume_elsewhere", &[]) {
        return;
    }
    let Some(pg) = support::postgres::server_or_skip("resume_elsewhere") else {
        return;
    };
    let db = pg.new_database();
    let url = pg.url(PG_USER, &db);
    // Shared storage both machines see: the hosts' directories, the bundle, the marks.
    let shared = tempfile::tempdir().unwrap();
    let s = shared.path();
    std::fs::write(s.join("hold-h2"), "").unwrap();
    let bundle = s.join("app-3.0.tgz");
    std::fs::write(&bundle, vec![5u8; 100_000]).unwrap();

    let a = Home::new();
    config(&a, &url, s);
    let mut c = a.command(&[
        "--config",
        "dispatch.cfg",
        "--dispatch",
        bundle.to_str().unwrap(),
    ]);
    c.env("PGPASSFILE", &pg.pgpass)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut child = c.spawn().unwrap();
    let upgrading = support::wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(s.join("upgrades.log")).is_ok_and(|l| l.contains("upgraded h2"))
            && pg
                .try_psql(
                    &db,
                    "SELECT count(*) FROM target WHERE result = 'succeeded' AND host = 'h1'",
                )
                .is_some_and(|n| n.trim() == "1")
    });
    assert!(upgrading, "h1 never finished or h2's upgrade never started");
    // The machine is gone: A and everything it ran.
    // SAFETY: kill(2) on the process group the child leads.
    assert_eq!(
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) },
        0
    );
    child.wait().unwrap();
    std::fs::remove_file(s.join("hold-h2")).unwrap();

    let b = Home::new();
    config(&b, &url, s);
    let boot_id = b.write("boot_id", "0badc0de-0000-4000-8000-000000000003\n");
    let as_b = |args: &[&str]| {
        let mut c = b.command(args);
        c.env("PGPASSFILE", &pg.pgpass);
        on_another_machine(&mut c, &boot_id);
        c.output().unwrap()
    };
    // A's database session ends when the server sees its socket closed.
    let interrupted = support::wait_until(Duration::from_secs(20), || {
        let o = as_b(&["--config", "dispatch.cfg", "--history"]);
        String::from_utf8_lossy(&o.stdout).contains("interrupted")
    });
    assert!(interrupted, "B never saw A's dispatch interrupted");
    let id = pg.psql(&db, "SELECT max(id) FROM dispatch");
    let id = id.trim();

    // The same rule as a local resume: an upgrade that may have run is not rerun silently.
    let o = as_b(&["--config", "dispatch.cfg", "--resume", id]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("outcome unknown, not run again (use --force): h2 (upgrade)"),
        "{}",
        text(&o)
    );

    let o = as_b(&["--config", "dispatch.cfg", "--resume", id, "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let log = std::fs::read_to_string(s.join("upgrades.log")).unwrap();
    assert_eq!(
        log.lines().filter(|l| *l == "upgraded h1").count(),
        1,
        "h1 is not upgraded again:\n{log}"
    );
    assert_eq!(
        log.lines().filter(|l| *l == "upgraded h2").count(),
        2,
        "h2's unknown upgrade ran again, once:\n{log}"
    );
    let uploads = pg.psql(
        &db,
        "SELECT string_agg(host || ':' || n, ' ' ORDER BY host) FROM \
         (SELECT host, count(*) AS n FROM step WHERE step = 'upload' GROUP BY host) u",
    );
    assert_eq!(
        uploads.trim(),
        "h1:1 h2:1",
        "verified uploads are not redone"
    );
    let h1_steps = pg.psql(
        &db,
        "SELECT count(*) FROM step WHERE host = 'h1' AND step = 'upgrade'",
    );
    assert_eq!(h1_steps.trim(), "1");
    let state = pg.psql(
        &db,
        "SELECT d.state || ' ' || d.started_on || ' ' || count(*) FROM dispatch d \
         JOIN target t ON t.dispatch = d.id WHERE t.result = 'succeeded' \
         GROUP BY d.state, d.started_on",
    );
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        state.trim(),
        format!("finished {} 2", here.trim()),
        "finished, both hosts, still A's dispatch"
    );
    let writer: String = pg.psql(&db, "SELECT writer_marker FROM dispatch");
    assert!(
        writer.contains("0badc0de"),
        "B (its boot id) took it over: {writer}"
    );
}
