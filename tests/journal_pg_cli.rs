//! The real binary with a PostgreSQL journal (a throwaway server that asks for passwords):
//! a team config's `journal =` line, `$DROPSHIP_JOURNAL`, the password from `PGPASSFILE`,
//! and the bad conditions: server down at start, no password, a read-only role, a journal
//! written by a newer dropship.

mod support;

use support::home::{Home, text};
use support::postgres::{PG_READER, PG_USER, PgServer};

fn server(test: &str) -> Option<PgServer> {
    support::postgres::server_or_skip(test)
}

/// A HOME with a `protocol = local` rule whose config names `journal`, and a bundle.
fn team_home(journal: &str) -> Home {
    team_home_with(
        journal,
        "upgrade = echo installed {bundle} on {host}\n",
        "app-1.0.tgz",
    )
}

/// `dropship --config dispatch.cfg ARGS` in `home`, with the server's password file.
fn pg_command(home: &Home, pg: &PgServer, args: &[&str]) -> std::process::Command {
    let mut all = vec!["--config", "dispatch.cfg"];
    all.extend(args);
    let mut c = home.command(&all);
    c.env("PGPASSFILE", &pg.pgpass);
    c
}

/// [`team_home`] with the rule's command lines `commands` (placeholders as in a config) and
/// the bundle `bundle`.
fn team_home_with(journal: &str, commands: &str, bundle: &str) -> Home {
    let home = Home::new();
    let dest = home.path("dest");
    home.write(
        "dispatch.cfg",
        format!(
            "[DEFAULT]\njournal = {journal}\n\n[app-.*\\.tgz]\nhost = h1, h2\nprotocol = local\n\
             dest_dir = {}/{{host}}\n{commands}",
            dest.display()
        ),
    );
    home.write(bundle, "bundle bytes");
    home
}

#[test]
fn a_team_config_journal_line_records_dispatches_in_postgres() {
    let Some(pg) = server("a_team_config_journal_line_records_dispatches_in_postgres") else {
        return;
    };
    let db = pg.new_database();
    let url = pg.url(PG_USER, &db);
    let home = team_home(&url);
    let o = pg_command(&home, &pg, &["--dispatch", "app-1.0.tgz"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !home.path("state/dropship/journal.sqlite").exists(),
        "nothing goes to the local journal"
    );
    // The server has it: two targets succeeded, output lines stored.
    let rows = pg.psql(
        &db,
        "SELECT d.bundle || ' ' || count(*) FROM dispatch d JOIN target t ON t.dispatch = d.id \
         WHERE t.result = 'succeeded' GROUP BY d.bundle",
    );
    assert_eq!(rows.trim(), "app-1.0.tgz 2");
    let line = pg.psql(
        &db,
        "SELECT line FROM output o JOIN step s ON s.id = o.step WHERE s.host = 'h2'",
    );
    assert!(line.contains("installed app-1.0.tgz on h2"), "{line}");

    // Another machine's view: $DROPSHIP_JOURNAL, no config at all.
    let other = Home::new();
    let o = other
        .command(&["--history", "--json"])
        .env("DROPSHIP_JOURNAL", &url)
        .env("PGPASSFILE", &pg.pgpass)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\"bundle\":\"app-1.0.tgz\""), "{out}");
    assert!(out.contains("\"succeeded\":2"), "{out}");
}

#[test]
fn bad_conditions_are_clear_errors_with_exit_2() {
    let Some(mut pg) = server("bad_conditions_are_clear_errors_with_exit_2") else {
        return;
    };
    let db = pg.new_database();
    let url = pg.url(PG_USER, &db);
    let home = Home::new();
    let history = |url: &str, pgpass: Option<&std::path::Path>| {
        let mut c = home.command(&["--history", "--journal", url]);
        c.env(
            "PGPASSFILE",
            pgpass.unwrap_or(std::path::Path::new("/nonexistent")),
        );
        c.output().unwrap()
    };

    // No password anywhere: the server's refusal, and no secret in the message.
    let o = history(&url, None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot reach the journal"), "{err}");
    assert!(err.contains("password"), "{err}");

    // A password in the URL is refused without being echoed.
    let with_pw = url.replace("dropship@", "dropship:s3cr3t@");
    let o = history(&with_pw, Some(&pg.pgpass));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pgpass") && !err.contains("s3cr3t"), "{err}");

    // Works with the password file; creates the schema.
    let o = history(&url, Some(&pg.pgpass));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A read-only role reads the history, and cannot create a journal.
    let reader = pg.url(PG_READER, &db);
    let o = history(&reader, Some(&pg.pgpass));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let fresh = pg.new_database();
    let o = history(&pg.url(PG_READER, &fresh), Some(&pg.pgpass));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused a write"), "{err}");
    assert!(err.contains("may create tables"), "{err}");

    // A journal from a newer dropship.
    pg.psql(
        &db,
        "UPDATE dropship_journal SET version = 99, compatible = 99",
    );
    let o = history(&url, Some(&pg.pgpass));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("schema version 99"), "{err}");
    assert!(err.contains("upgrade dropship"), "{err}");
    pg.psql(&db, "UPDATE dropship_journal SET version = 2");

    // The server is down: a clear error within the connect timeout, exit 2.
    pg.stop();
    let started = std::time::Instant::now();
    let o = history(&url, Some(&pg.pgpass));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot reach the journal"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", pg.port())), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // The default sslmode verifies TLS: a server without TLS is refused, not used in clear.
    pg.run();
    let verified = url.trim_end_matches("?sslmode=disable");
    let o = history(verified, Some(&pg.pgpass));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// The server is killed while two hosts print output and comes back a second later: the
/// dispatch goes on, is told about both, and every line ends up in the journal.
#[test]
fn a_server_restart_mid_dispatch_loses_nothing() {
    let Some(mut pg) = server("a_server_restart_mid_dispatch_loses_nothing") else {
        return;
    };
    let db = pg.new_database();
    let url = pg.url(PG_USER, &db);
    let home = team_home_with(
        &url,
        "upgrade = for i in $(seq 1 40); do echo {host} line $i; sleep 0.1; done\n",
        "app-2.0.tgz",
    );
    let child = pg_command(&home, &pg, &["--dispatch", "app-2.0.tgz"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let upgrading = support::wait_until(std::time::Duration::from_secs(30), || {
        pg.try_psql(&db, "SELECT count(*) FROM step WHERE step = 'upgrade'")
            .is_some_and(|n| n.trim() == "2")
    });
    assert!(upgrading, "the upgrade steps never started");
    pg.stop();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    pg.run();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all = format!("{}{}", text(&o), "");
    assert!(all.contains("journal server lost"), "{all}");
    assert!(all.contains("journal server back"), "{all}");
    for host in ["h1", "h2"] {
        let lines = pg.psql(
            &db,
            &format!(
                "SELECT count(DISTINCT line) || '/' || max(s.lines) FROM output o \
                 JOIN step s ON s.id = o.step WHERE s.host = '{host}' AND s.step = 'upgrade'"
            ),
        );
        assert_eq!(lines.trim(), "40/40", "{host}: every line, once");
    }
    let state = pg.psql(
        &db,
        "SELECT d.state || ' ' || count(*) FROM dispatch d JOIN target t ON t.dispatch = d.id \
         WHERE t.result = 'succeeded' GROUP BY d.state",
    );
    assert_eq!(state.trim(), "finished 2");
    assert!(
        !home
            .path("state/dropship/journal-spool")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "the spool is removed once written"
    );
}

/// TLS as a team would run it: a server that refuses plain connections, a certificate from
/// the team's CA named in `sslrootcert` (verify-full is the default). Trusting another CA, or
/// only the platform's, is refused with exit 2 before anything is recorded.
#[test]
fn tls_to_the_server_is_verified_against_sslrootcert() {
    let Some(mut pg) = server("tls_to_the_server_is_verified_against_sslrootcert") else {
        return;
    };
    let (ca, other_ca) = pg.require_tls();
    let db = pg.new_database();
    let base = format!("postgres://{PG_USER}@127.0.0.1:{}/{db}", pg.port());

    let plain = team_home(&pg.url(PG_USER, &db));
    let o = pg_command(&plain, &pg, &["--dispatch", "app-1.0.tgz"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "the server refuses plain: {}",
        text(&o)
    );

    for (url, why) in [
        (
            base.clone(),
            "the platform's trust store does not know the test CA",
        ),
        (
            format!("{base}?sslrootcert={}", other_ca.display()),
            "another CA",
        ),
    ] {
        let home = team_home(&url);
        let o = pg_command(&home, &pg, &["--dispatch", "app-1.0.tgz"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{why}: {}", text(&o));
        assert!(
            text(&o).to_lowercase().contains("certificate"),
            "{why}: the error says what failed: {}",
            text(&o)
        );
    }
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'dispatch'"
        )
        .trim(),
        "0",
        "nothing was recorded over an unverified connection"
    );

    let home = team_home(&format!("{base}?sslrootcert={}", ca.display()));
    let o = pg_command(&home, &pg, &["--dispatch", "app-1.0.tgz"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows = pg.psql(
        &db,
        "SELECT count(*) FROM target WHERE result = 'succeeded'",
    );
    assert_eq!(rows.trim(), "2");
}

/// A dropship killed while the server is away leaves its spool; the next dropship that opens
/// the journal on this machine records it, so `--resume` sees the upgrade that finished during
/// the outage and does not run it again (without the spool it would count as unknown, and run
/// again under `--force`).
#[test]
fn a_spool_left_by_a_killed_process_is_recorded_before_a_resume() {
    let Some(mut pg) = server("a_spool_left_by_a_killed_process_is_recorded_before_a_resume")
    else {
        return;
    };
    let db = pg.new_database();
    let url = pg.url(PG_USER, &db);
    let marks = tempfile::tempdir().unwrap();
    let (ran, go, gate) = (
        marks.path().join("upgrades.log"),
        marks.path().join("go"),
        marks.path().join("gate"),
    );
    let home = team_home_with(
        &url,
        &format!(
            "pre = until [ -e {gate} ]; do sleep 0.1; done\n\
             upgrade = echo {{host}} >> {ran}; echo {{host}} upgraded\n\
             post = until [ -e {go} ]; do sleep 0.1; done; echo {{host}} post\n",
            ran = ran.display(),
            go = go.display(),
            gate = gate.display(),
        ),
        "app-3.0.tgz",
    );
    let mut child = pg_command(&home, &pg, &["--dispatch", "app-3.0.tgz"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Both hosts wait in `pre` until the server is gone; everything after happens while it is.
    let waiting = support::wait_until(std::time::Duration::from_secs(30), || {
        pg.try_psql(&db, "SELECT count(*) FROM step WHERE step = 'pre'")
            .is_some_and(|n| n.trim() == "2")
    });
    assert!(waiting, "the pre steps never started");
    pg.stop();
    std::fs::write(&gate, "").unwrap();
    let spool_dir = home.path("state/dropship/journal-spool");
    let spooled = support::wait_until(std::time::Duration::from_secs(30), || {
        std::fs::read_to_string(&ran).is_ok_and(|r| r.lines().count() == 2)
            && std::fs::read_dir(&spool_dir).is_ok_and(|d| {
                d.flatten().any(|f| {
                    std::fs::read_to_string(f.path())
                        .is_ok_and(|t| t.matches("\"post\"").count() >= 2)
                })
            })
    });
    assert!(
        spooled,
        "the upgrades and the post steps' starts were never spooled"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    pg.run();
    std::fs::write(&go, "").unwrap();

    let id = pg.psql(&db, "SELECT max(id) FROM dispatch");
    let o = home
        // `post` was started and never finished: its outcome is unknown, so it runs again only
        // with --force; the upgrade the spool says finished must not.
        .command(&["--config", "dispatch.cfg", "--resume", id.trim(), "--force"])
        .env("PGPASSFILE", &pg.pgpass)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("kept while the journal server was away"),
        "{}",
        text(&o)
    );
    let ran = std::fs::read_to_string(&ran).unwrap();
    assert_eq!(ran.lines().count(), 2, "each upgrade ran once: {ran}");
    for host in ["h1", "h2"] {
        let lines = pg.psql(
            &db,
            &format!(
                "SELECT string_agg(line, ',' ORDER BY o.id) FROM output o JOIN step s ON s.id = o.step \
                 WHERE s.host = '{host}' AND s.step IN ('upgrade', 'post')"
            ),
        );
        assert!(
            lines.contains(&format!("{host} upgraded")) && lines.contains(&format!("{host} post")),
            "{host}: the upgrade's output (from the spool) and the post's: {lines}"
        );
    }
    let state = pg.psql(
        &db,
        "SELECT d.state || ' ' || count(*) FROM dispatch d JOIN target t ON t.dispatch = d.id \
         WHERE t.result = 'succeeded' GROUP BY d.state",
    );
    assert_eq!(state.trim(), "finished 2");
    let left: Vec<_> = spool_dir.read_dir().unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "the spool was recorded and removed: {left:?}"
    );
}

/// One shared journal, two people on two machines: root on this machine and the test user on
/// "build-3" (its own UTS namespace), each with their own HOME. `--history` from either shows
/// both dispatches with who started them from where; `--json` has them as fields. The uid
/// decides the name, not `$USER`, which the second run sets to a lie.
#[test]
fn history_from_either_machine_says_who_dispatched_from_where() {
    let Some(pg) = server("history_from_either_machine_says_who_dispatched_from_where") else {
        return;
    };
    let db = pg.new_database();
    let url = pg.url(PG_USER, &db);
    let sh = |cmd: &str| {
        let o = std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let mine = format!("{}@{}", sh("id -un"), sh("uname -n"));
    let theirs = format!("{}@build-3", support::user::TEST_USER);

    let here = team_home(&url);
    let o = pg_command(&here, &pg, &["--dispatch", "app-1.0.tgz"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let there = team_home(&url);
    there.write("app-2.0.tgz", "bundle bytes, two");
    // The password file must be the user's own and private, as libpq wants it.
    let pgpass = there.write("pgpass", std::fs::read(&pg.pgpass).unwrap());
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    support::user::give_to_test_user(&there);
    let as_them = |args: &[&str]| {
        let mut c = there.command(args);
        c.env("PGPASSFILE", &pgpass).env("USER", "spoofed");
        support::user::as_test_user_on(&mut c, "build-3");
        c.output().unwrap()
    };
    let o = as_them(&["--config", "dispatch.cfg", "--dispatch", "app-2.0.tgz"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // The table, from each side: the newest (theirs) first, each with its BY cell.
    let from_here = pg_command(&here, &pg, &["--history"]).output().unwrap();
    let from_there = as_them(&["--config", "dispatch.cfg", "--history"]);
    for o in [&from_here, &from_there] {
        assert_eq!(o.status.code(), Some(0), "{}", text(o));
        let out = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].contains(" BY "), "{out}");
        assert!(
            lines[1].contains(&format!(" {theirs} ")) && lines[1].contains("app-2.0.tgz"),
            "{out}"
        );
        assert!(
            lines[2].contains(&format!(" {mine} ")) && lines[2].contains("app-1.0.tgz"),
            "{out}"
        );
        assert!(!out.contains("spoofed"), "{out}");
    }

    // `--json`: the fields.
    let o = as_them(&["--config", "dispatch.cfg", "--history", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by = |r: &serde_json::Value| {
        format!(
            "{}@{}",
            r["started_by"].as_str().unwrap(),
            r["started_on"].as_str().unwrap()
        )
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0]["bundle"].as_str(), by(&rows[0])),
        (Some("app-2.0.tgz"), theirs)
    );
    assert_eq!(
        (rows[1]["bundle"].as_str(), by(&rows[1])),
        (Some("app-1.0.tgz"), mine)
    );
}
