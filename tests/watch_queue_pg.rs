//! The shared drop-folder queue through the real binary: several `dropship --watch` processes
//! on one PostgreSQL journal (a throwaway server) and one shared folder take every bundle
//! exactly once, through a `kill -9` of one of them mid-dispatch; and no bundle is claimed
//! while the database is down. Every upgrade appends `NAME HOST SHA256` to a log on the host
//! side (`protocol = local`), so "shipped exactly once and whole" is counted where it
//! happened, with the content that arrived.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::home::Home;
use support::postgres::{PG_USER, PgServer};

const LEASE_MS: u64 = 4000;

struct Env {
    home: Home,
    dest: tempfile::TempDir,
    url: String,
    pgpass: PathBuf,
}

impl Env {
    fn new(pg: &PgServer) -> Env {
        let home = Home::new();
        std::fs::create_dir_all(home.path("drop")).unwrap();
        let db = pg.new_database();
        Env {
            home,
            dest: tempfile::tempdir().unwrap(),
            url: pg.url(PG_USER, &db),
            pgpass: pg.pgpass.clone(),
        }
    }

    fn d(&self) -> &Path {
        self.dest.path()
    }

    fn drop_dir(&self) -> PathBuf {
        self.home.path("drop")
    }

    /// `app-*` to one host; `slow-*` to two hosts one after the other, whose second host's
    /// lock the test holds (so a dispatch of it waits there, after its first host finished).
    fn write_config(&self) -> PathBuf {
        let d = self.d().display();
        let log = format!(
            "upgrade = echo \"{{bundle}} {{host}} $(sha256sum {{path}} | cut -c1-64)\" >> {d}/log\n"
        );
        self.home.write(
            "dispatch.cfg",
            format!(
                "[app-.*\\.tgz]\nhost = h1\nprotocol = local\ndest_dir = {d}/dest/{{host}}\n\
                 lock_path = {d}/locks/{{bundle}}\n{log}\n\
                 [slow-.*\\.tgz]\nhost = h1, h2\nparallel = 1\nprotocol = local\n\
                 dest_dir = {d}/dest/{{host}}\nlock_path = {d}/locks/slow-{{host}}\n\
                 lock_wait = 120s\n{log}\n\
                 [gated-.*\\.tgz]\nhost = h1\nprotocol = local\ndest_dir = {d}/dest/{{host}}\n\
                 lock_path = {d}/locks/{{bundle}}\n\
                 pre = until [ -e {d}/gate ]; do sleep 0.1; done\n{log}"
            ),
        )
    }

    fn spawn(&self, n: u32) -> Child {
        self.spawn_on(n, &self.drop_dir())
    }

    fn spawn_on(&self, n: u32, drop_dir: &Path) -> Child {
        let cfg = self.home.path("dispatch.cfg");
        let out = std::fs::File::create(self.home.path(&format!("out.{n}"))).unwrap();
        let err = std::fs::File::create(self.home.path(&format!("err.{n}"))).unwrap();
        let lease = format!("{}ms", LEASE_MS);
        self.home
            .command(&[
                "--config",
                cfg.to_str().unwrap(),
                "--journal",
                &self.url,
                "--watch",
                drop_dir.to_str().unwrap(),
                "--settle",
                "300ms",
                "--rescan",
                "1s",
                "--lease",
                &lease,
            ])
            .env("PGPASSFILE", &self.pgpass)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap()
    }

    fn logged(&self, n: u32) -> String {
        let read =
            |name: String| std::fs::read_to_string(self.home.path(&name)).unwrap_or_default();
        format!(
            "--- out.{n}\n{}--- err.{n}\n{}",
            read(format!("out.{n}")),
            read(format!("err.{n}"))
        )
    }

    /// `(NAME, HOST, SHA)` lines of the host-side log, counted.
    fn shipped(&self) -> HashMap<(String, String, String), usize> {
        let mut out = HashMap::new();
        let text = std::fs::read_to_string(self.d().join("log")).unwrap_or_default();
        for line in text.lines() {
            let mut f = line.split(' ');
            let key = (
                f.next().unwrap().to_owned(),
                f.next().unwrap().to_owned(),
                f.next().unwrap().to_owned(),
            );
            *out.entry(key).or_default() += 1;
        }
        out
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Drops `content` as `name` the safe way: written under a hidden name, then renamed in.
fn rename_in(dir: &Path, name: &str, content: &[u8]) {
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// User + system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn stop(mut child: Child) -> Option<i32> {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let ok = support::wait_until(Duration::from_secs(20), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !ok {
        let _ = child.kill();
    }
    child.wait().unwrap().code()
}

/// Kills every watcher left (a failed assertion must not leave them running).
struct Watchers(Vec<Option<Child>>);

impl Drop for Watchers {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn three_watchers_share_one_queue_exactly_once_through_kill_9() {
    let Some(pg) = support::postgres::server_or_skip("watch_queue_three_watchers") else {
        return;
    };
    let env = Env::new(&pg);
    env.write_config();
    // The slow bundle's second host is locked by "someone else": its dispatch finishes h1,
    // then waits there for the lock, which is when its watcher is killed.
    let lock = env.d().join("locks/slow-h2");
    std::fs::create_dir_all(&lock).unwrap();
    let since = now_ms() / 1000;
    std::fs::write(
        lock.join("info"),
        format!("holder=tester@elsewhere pid 1\nsince={since}\nbundle=other.tgz\ntoken=t\n"),
    )
    .unwrap();

    let mut watchers = Watchers((1..=3).map(|n| Some(env.spawn(n))).collect());
    let mut bundles: HashMap<String, Vec<u8>> = HashMap::new();
    let drop_dir = env.drop_dir();
    let slow = "slow-1.tgz".to_owned();
    let content = |name: &str| {
        let mut c = format!("bundle {name}\n").into_bytes();
        c.extend((0..4096u32).map(|i| (i.wrapping_mul(31) ^ name.len() as u32) as u8));
        c.extend(rand::random::<[u8; 32]>());
        c
    };
    let c = content(&slow);
    rename_in(&drop_dir, &slow, &c);
    bundles.insert(slow.clone(), c);
    for i in 0..199 {
        let name = format!("app-{i:03}.tgz");
        let c = content(&name);
        rename_in(&drop_dir, &name, &c);
        bundles.insert(name, c);
    }

    // The slow bundle's first host finished and it waits for h2's lock: kill -9 its holder.
    let q = |sql: &str| pg.try_psql(&env.url_db(), sql).unwrap_or_default();
    let mut holder = String::new();
    let found = support::wait_until(Duration::from_secs(40), || {
        holder = q(
            "SELECT w.holder FROM watch_bundle w JOIN target t ON t.dispatch = w.dispatch \
             WHERE w.name = 'slow-1.tgz' AND w.state = 'dispatching' AND t.host = 'h1' \
             AND t.result = 'succeeded' AND w.holder IS NOT NULL",
        )
        .trim()
        .to_owned();
        !holder.is_empty()
    });
    assert!(
        found,
        "the slow bundle never reached its second host\n{}\n{}\n{}",
        env.logged(1),
        env.logged(2),
        env.logged(3)
    );
    let pid: u32 = holder
        .split(" pid ")
        .nth(1)
        .and_then(|p| p.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("holder {holder:?} names no pid"));
    let victim = watchers
        .0
        .iter()
        .position(|c| c.as_ref().is_some_and(|c| c.id() == pid))
        .unwrap_or_else(|| panic!("holder {holder:?} is none of the watchers"));
    let mut killed = watchers.0[victim].take().unwrap();
    killed.kill().unwrap(); // SIGKILL
    killed.wait().unwrap();
    let killed_at = now_ms();
    // The "other" dispatch lets go of h2.
    std::fs::remove_dir_all(&lock).unwrap();

    let all_done = support::wait_until(Duration::from_secs(45), || {
        q("SELECT count(*) FROM watch_bundle WHERE state = 'done'").trim() == "200"
    });
    let logs: String = (1..=3).map(|n| env.logged(n)).collect();
    assert!(
        all_done,
        "not every bundle was shipped: {}\n{logs}",
        q("SELECT state || ' ' || count(*) FROM watch_bundle GROUP BY state")
    );

    // Shipped exactly once and whole: one log line per bundle (per host of the slow one),
    // with the content dropped; the file on the host is byte for byte the one dropped.
    let shipped = env.shipped();
    for (name, bytes) in &bundles {
        let sha = sha256(bytes);
        let hosts: &[&str] = if name == &slow {
            &["h1", "h2"]
        } else {
            &["h1"]
        };
        for host in hosts {
            let n = shipped
                .get(&(name.clone(), host.to_string(), sha.clone()))
                .copied()
                .unwrap_or(0);
            assert_eq!(n, 1, "{name} on {host}: shipped {n} times\n{logs}");
            let arrived = std::fs::read(env.d().join("dest").join(host).join(name)).unwrap();
            assert!(arrived == *bytes, "{name} on {host}: the bytes differ");
        }
    }
    assert_eq!(shipped.len(), 201, "nothing else was shipped");
    // One dispatch per bundle, none twice.
    assert_eq!(
        q("SELECT count(*) || ' ' || count(DISTINCT bundle) FROM dispatch").trim(),
        "200 200"
    );

    // The killed watcher's bundle: taken over by another after its lease, resumed without
    // redoing h1 (one upload attempt, one upgrade there), h2 done by the new holder.
    let row = q(
        "SELECT holder || '|' || claims || '|' || dispatch FROM watch_bundle WHERE name = 'slow-1.tgz'",
    );
    let f: Vec<&str> = row.trim().split('|').collect();
    assert_ne!(f[0], holder, "taken over by another watcher");
    assert_eq!(f[1], "2", "claimed twice: once, then taken over once");
    let d = f[2];
    assert_eq!(
        q(&format!(
            "SELECT upload_attempts FROM target WHERE dispatch = {d} AND host = 'h1'"
        ))
        .trim(),
        "1",
        "h1's verified upload was not redone"
    );
    assert_eq!(
        q(&format!(
            "SELECT count(*) FROM step WHERE dispatch = {d} AND host = 'h1' AND step IN ('upload', 'upgrade')"
        ))
        .trim(),
        "2",
        "h1's upload and upgrade ran once each"
    );
    let resumed_at: i64 = q(&format!(
        "SELECT min(started_at) FROM step WHERE dispatch = {d} AND host = 'h2' AND step = 'upload'"
    ))
    .trim()
    .parse()
    .unwrap();
    // The lease was renewed at most a third of it before the kill.
    assert!(
        resumed_at >= killed_at + (LEASE_MS as i64) * 2 / 3 - 50,
        "h2 resumed {}ms after the kill, before the lease could lapse",
        resumed_at - killed_at
    );
    assert_eq!(
        q(&format!("SELECT state FROM dispatch WHERE id = {d}")).trim(),
        "finished"
    );

    // Every file archived by its holder into the folder's done/, nothing left behind.
    let mut done = Vec::new();
    walk(&drop_dir.join(".dropship/done"), &mut done);
    done.retain(|p| !p.to_string_lossy().ends_with(".reason"));
    assert_eq!(done.len(), 200, "{done:?}");
    let mut queued = Vec::new();
    walk(&drop_dir.join(".dropship/queue"), &mut queued);
    assert!(queued.is_empty(), "{queued:?}");
    // The work was shared.
    let holders: usize = q("SELECT count(DISTINCT holder) FROM watch_bundle WHERE state = 'done'")
        .trim()
        .parse()
        .unwrap();
    assert!(holders >= 2, "one watcher did everything\n{logs}");

    for c in watchers.0.iter_mut() {
        if let Some(c) = c.take() {
            assert_eq!(stop(c), Some(0), "{logs}");
        }
    }
}

#[test]
fn no_bundle_is_claimed_while_the_database_is_down() {
    let Some(mut pg) = support::postgres::server_or_skip("watch_queue_database_down") else {
        return;
    };
    let env = Env::new(&pg);
    env.write_config();
    let drop_dir = env.drop_dir();
    let mut watchers = Watchers(vec![Some(env.spawn(1))]);
    let first = b"first bundle".to_vec();
    rename_in(&drop_dir, "app-1.tgz", &first);
    let log_has = |name: &str| env.shipped().keys().any(|(n, _, _)| n == name);
    let q = |sql: &str| pg.try_psql(&env.url_db(), sql).unwrap_or_default();
    assert!(
        support::wait_until(Duration::from_secs(20), || {
            q("SELECT count(*) FROM watch_bundle WHERE state = 'done' AND archived_at IS NOT NULL")
                .trim()
                == "1"
        }),
        "{}",
        env.logged(1)
    );
    assert!(log_has("app-1.tgz"));

    pg.stop();
    // Let the watcher find the server gone (its queue polls every second).
    std::thread::sleep(Duration::from_millis(1500));
    let second = b"second bundle".to_vec();
    rename_in(&drop_dir, "app-2.tgz", &second);
    // Several rescans and queue polls later, it is still where it was dropped: not claimed,
    // not moved, not shipped.
    let pid = watchers.0[0].as_ref().unwrap().id();
    let cpu_before = cpu_ticks(pid);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(drop_dir.join("app-2.tgz").exists(), "{}", env.logged(1));
        assert!(!log_has("app-2.tgz"), "shipped while the database was down");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Waiting is sleeping: a loop that spun while the server is away would burn seconds.
    let used = cpu_ticks(pid) - cpu_before;
    assert!(
        used < 30,
        "the watcher used {used} ticks of CPU in 4 s while waiting"
    );

    pg.run();
    assert!(
        support::wait_until(Duration::from_secs(20), || log_has("app-2.tgz")),
        "not shipped once the database was back\n{}",
        env.logged(1)
    );
    let arrived = std::fs::read(env.d().join("dest/h1/app-2.tgz")).unwrap();
    assert_eq!(arrived, second);
    let q = |sql: &str| pg.try_psql(&env.url_db(), sql).unwrap_or_default();
    assert!(support::wait_until(Duration::from_secs(10), || {
        q("SELECT count(*) FROM watch_bundle WHERE state = 'done'").trim() == "2"
    }));
    assert_eq!(
        q("SELECT name || ' ' || state FROM watch_bundle WHERE state != 'vanished' ORDER BY id")
            .trim(),
        "app-1.tgz done\napp-2.tgz done"
    );
    let c = watchers.0[0].take().unwrap();
    assert_eq!(stop(c), Some(0), "{}", env.logged(1));
}

/// The server goes away while a bundle's dispatch runs, and the dispatch ends meanwhile: the
/// watcher does not stop (it cannot judge the dispatch yet, so it lets the bundle go), and once
/// the server is back the bundle is claimed again, judged from the journal and archived, never
/// shipped twice.
#[test]
fn a_dispatch_that_ends_while_the_database_is_down_is_judged_when_it_is_back() {
    let Some(mut pg) = support::postgres::server_or_skip("watch_queue_ends_while_down") else {
        return;
    };
    let env = Env::new(&pg);
    env.write_config();
    let drop_dir = env.drop_dir();
    let mut watchers = Watchers(vec![Some(env.spawn(1))]);
    let content = b"gated bundle".to_vec();
    rename_in(&drop_dir, "gated-1.tgz", &content);
    let q = |sql: &str| pg.try_psql(&env.url_db(), sql).unwrap_or_default();
    assert!(
        support::wait_until(Duration::from_secs(20), || {
            q("SELECT count(*) FROM step WHERE step = 'pre'").trim() == "1"
        }),
        "{}",
        env.logged(1)
    );
    pg.stop();
    std::fs::write(env.d().join("gate"), "").unwrap();
    let log_has = |name: &str| env.shipped().keys().any(|(n, _, _)| n == name);
    assert!(
        support::wait_until(Duration::from_secs(20), || log_has("gated-1.tgz")),
        "{}",
        env.logged(1)
    );
    // The dispatch has ended (and found the server away) by now.
    std::thread::sleep(Duration::from_millis(1500));
    let watcher = watchers.0[0].as_mut().unwrap();
    assert!(
        watcher.try_wait().unwrap().is_none(),
        "the watcher stopped while the server was away\n{}",
        env.logged(1)
    );
    pg.run();
    let q = |sql: &str| pg.try_psql(&env.url_db(), sql).unwrap_or_default();
    assert!(
        support::wait_until(Duration::from_secs(30), || {
            q("SELECT state FROM watch_bundle WHERE name = 'gated-1.tgz' AND archived_at IS NOT NULL")
                .trim()
                == "done"
        }),
        "{}\n{}",
        q("SELECT name || ' ' || state FROM watch_bundle"),
        env.logged(1)
    );
    let key = ("gated-1.tgz".to_owned(), "h1".to_owned(), sha256(&content));
    assert_eq!(env.shipped().get(&key), Some(&1), "{}", env.logged(1));
    assert_eq!(
        q("SELECT count(*) FROM dispatch").trim(),
        "1",
        "judged, not dispatched again"
    );
    let c = watchers.0[0].take().unwrap();
    assert_eq!(stop(c), Some(0), "{}", env.logged(1));
}

impl Env {
    /// The database name of the journal URL (psql wants it alone).
    fn url_db(&self) -> String {
        let tail = self.url.rsplit('/').next().unwrap();
        tail.split('?').next().unwrap().to_owned()
    }
}

#[test]
fn the_same_bundle_dropped_into_two_watchers_folders_is_shipped_once() {
    let Some(pg) = support::postgres::server_or_skip("watch_queue_two_folders") else {
        return;
    };
    let env = Env::new(&pg);
    env.write_config();
    let (a, b) = (env.home.path("drop-a"), env.home.path("drop-b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut watchers = Watchers(vec![Some(env.spawn_on(1, &a)), Some(env.spawn_on(2, &b))]);
    // Ten bundles dropped into both folders at once, and one of each folder's own.
    let mut bundles = HashMap::new();
    for i in 0..10 {
        let name = format!("app-{i}.tgz");
        let content = format!("same content {i}").into_bytes();
        rename_in(&a, &name, &content);
        rename_in(&b, &name, &content);
        bundles.insert(name, content);
    }
    rename_in(&a, "app-a.tgz", b"only in a");
    rename_in(&b, "app-b.tgz", b"only in b");
    bundles.insert("app-a.tgz".into(), b"only in a".to_vec());
    bundles.insert("app-b.tgz".into(), b"only in b".to_vec());

    let q = |sql: &str| pg.try_psql(&env.url_db(), sql).unwrap_or_default();
    let settled = support::wait_until(Duration::from_secs(40), || {
        q(
            "SELECT count(*) FROM watch_bundle WHERE state IN ('done', 'duplicate') \
           AND archived_at IS NOT NULL",
        )
        .trim()
            == "22"
    });
    let logs = format!("{}{}", env.logged(1), env.logged(2));
    assert!(
        settled,
        "{}\n{logs}",
        q("SELECT name || ' ' || dir || ' ' || state FROM watch_bundle ORDER BY id")
    );
    let shipped = env.shipped();
    for (name, bytes) in &bundles {
        let key = (name.clone(), "h1".to_owned(), sha256(bytes));
        assert_eq!(shipped.get(&key), Some(&1), "{name}\n{logs}");
    }
    assert_eq!(shipped.len(), 12, "nothing else was shipped");
    assert_eq!(
        q("SELECT state || ' ' || count(*) FROM watch_bundle GROUP BY state ORDER BY state").trim(),
        "done 12\nduplicate 10"
    );
    assert_eq!(q("SELECT count(*) FROM dispatch").trim(), "12");
    // Each copy was put away in its own folder, the duplicate with a reason.
    for dir in [&a, &b] {
        let mut done = Vec::new();
        walk(&dir.join(".dropship/done"), &mut done);
        let files = done
            .iter()
            .filter(|p| !p.to_string_lossy().ends_with(".reason"))
            .count();
        assert_eq!(files, 11, "{done:?}");
    }
    for c in watchers.0.iter_mut() {
        if let Some(c) = c.take() {
            assert_eq!(stop(c), Some(0), "{logs}");
        }
    }
}

/// The queue's rules through the library, two watchers' journal handles on one real server:
/// a name being taken from a folder is left to its taker; a claimed bundle (or another of the
/// same rule, name and content) is not claimed twice; a row locked by another transaction is
/// skipped at once, not waited for; a lapsed lease is taken over, and the watcher that lost
/// it can no longer start a dispatch of it.
#[test]
fn claims_skip_locked_rows_and_lapsed_leases_are_taken_over() {
    use dropship::journal::{BundleState, Claim, Journal, Lease, NewDispatch};
    let Some(pg) = support::postgres::shared() else {
        return;
    };
    let db = pg.new_database();
    let url = pg.url(PG_USER, &db);
    let (j1, j2) = (
        Journal::open(Path::new(&url)).unwrap(),
        std::sync::Arc::new(Journal::open(Path::new(&url)).unwrap()),
    );
    assert!(j1.is_shared());
    let lease = Duration::from_millis(1500);
    let (w1, w2) = (Lease::new("w1", lease), Lease::new("w2", lease));
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let queue = |d: &Path| d.join(".dropship/queue");

    // Found by both watchers of folder a: the second leaves it to the first.
    let a = j1
        .watch_admit_held(&dir_a, "app-1.tgz", 3, 1, &queue(&dir_a), &w1)
        .unwrap()
        .expect("first finder holds it");
    assert_eq!(
        j2.watch_admit_held(&dir_a, "app-1.tgz", 3, 1, &queue(&dir_a), &w2)
            .unwrap(),
        None
    );
    // The same bundle dropped into folder b too.
    let b = j2
        .watch_admit_held(&dir_b, "app-1.tgz", 3, 1, &queue(&dir_b), &w2)
        .unwrap()
        .unwrap();
    for (j, w, row) in [(&j1, &w1, &a), (&j2, &w2, &b)] {
        j.watch_queued(row.id, "ab", 3, 1, Some("app")).unwrap();
        j.watch_release(row.id, w).unwrap();
    }
    let ids: Vec<i64> = j1
        .watch_claimable(10)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [a.id, b.id]);

    // A row another transaction holds locked is skipped, not waited for.
    let mut admin =
        postgres::Client::connect(&url.replace("?sslmode=disable", ""), postgres::NoTls).unwrap();
    let mut locker = admin.transaction().unwrap();
    locker
        .execute(
            "SELECT 1 FROM watch_bundle WHERE id = $1 FOR UPDATE",
            &[&a.id],
        )
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let claimer = std::thread::spawn({
        let (j2, w2, id) = (j2.clone(), w2.clone(), a.id);
        move || {
            let _ = tx.send(j2.watch_claim(id, &w2).unwrap());
        }
    });
    let got = rx.recv_timeout(Duration::from_secs(3));
    locker.rollback().unwrap();
    claimer.join().unwrap();
    assert_eq!(
        got.expect("the claim waited for the locked row"),
        Claim::Busy
    );

    // Claimed by w2; w1 can claim neither it nor the other copy of the same bundle.
    let Claim::Taken(row) = j2.watch_claim(a.id, &w2).unwrap() else {
        panic!("w2 claims a")
    };
    assert_eq!(row.state, BundleState::Queued);
    assert_eq!(j1.watch_claim(a.id, &w1).unwrap(), Claim::Busy);
    assert_eq!(j1.watch_claim(b.id, &w1).unwrap(), Claim::Busy);
    assert_eq!(j2.watch_renew(&w2, &[a.id]).unwrap(), [a.id]);
    assert!(j1.watch_renew(&w1, &[a.id]).unwrap().is_empty());
    assert!(!j1.watch_claimable(10).unwrap().iter().any(|r| r.id == a.id));

    // w2 stops renewing: once its lease lapsed, w1 takes the bundle over, and w2 cannot
    // start a dispatch of it any more.
    std::thread::sleep(lease + Duration::from_millis(200));
    let Claim::Taken(_) = j1.watch_claim(a.id, &w1).unwrap() else {
        panic!("w1 takes a over after the lease")
    };
    assert_eq!(j1.watch_holder(a.id).unwrap().unwrap().1, 2);
    let rec = NewDispatch {
        bundle: "app-1.tgz".into(),
        bundle_path: a.staged_path.clone(),
        bundle_sha256: "ab".into(),
        bundle_size: 3,
        rule: "app".into(),
        config_path: "/etc/dropship/dispatch.cfg".into(),
        timestamp: "20240102_030405".into(),
        hosts: vec!["h1".into()],
        started_at: now_ms(),
    };
    assert_eq!(j2.watch_begin_dispatch_held(a.id, &rec, &w2).unwrap(), None);
    let d = j1
        .watch_begin_dispatch_held(a.id, &rec, &w1)
        .unwrap()
        .expect("the holder starts it");
    assert_eq!(j1.watch_bundle(a.id).unwrap().unwrap().dispatch, Some(d));
    assert_eq!(j1.history(10).unwrap().len(), 1, "one dispatch, not two");
}
