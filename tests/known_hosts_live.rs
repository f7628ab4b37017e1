//! Host keys against a large known_hosts, as OpenSSH's client writes it (hashed:
//! `ssh-keygen -H`, Debian's `HashKnownHosts yes`), with a real OpenSSH sshd. dropship parses
//! each file once and hands libssh2 only the lines that can match the host
//! (src/transport/known_hosts/index.rs): the right key at the end of 1,000 lines still
//! connects, a wrong one is still refused, a host recorded only by its ECDSA key still
//! negotiates ECDSA, a bad line is still named, and a file rewritten between two connections
//! of one process (same size, same inode) is read again.

mod support;

use dropship::config::HostKeyPolicy;
use dropship::transport::TransportError;
use dropship::transport::ssh::{SshParams, SshSession};
use std::path::Path;
use std::process::Command;
use support::SshServer;

/// Connection parameters for `server` as the test user (its key), strict host keys, the
/// user's known_hosts `dir/known_hosts`.
fn params(server: &SshServer, dir: &Path) -> SshParams {
    SshParams {
        keys: vec![support::test_keys().plain.clone()],
        identities_only: true,
        use_agent: false,
        ..server.ssh_params(dir)
    }
}

/// `ALGORITHM BASE64` of a new ed25519 key: the key of some other host.
fn other_key(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen runs");
    assert!(out.status.success(), "{out:?}");
    let line = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    line.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

/// 999 other hosts' lines: other addresses, and this address on other ports (the names a
/// sloppy filter would confuse with `[127.0.0.1]:PORT`), then `last`.
fn thousand_lines(port: u16, key: &str, last: &str) -> String {
    let mut text = String::new();
    for i in 0..999u32 {
        let name = match i % 4 {
            0 => format!("[127.0.0.1]:{}", 10_000 + i),
            1 => format!("127.0.{}.{}", i / 250, i % 250 + 2),
            2 => format!("[127.0.0.1]:{port}{i}"),
            _ => format!("host{i}.example,10.9.{}.{}", i / 250, i % 250),
        };
        text += &format!("{name} {key}\n");
    }
    text + last + "\n"
}

/// Writes `text` to `file` hashed by `ssh-keygen -H`, as OpenSSH's client keeps it.
fn write_hashed(file: &Path, text: &str) {
    std::fs::write(file, text).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(file)
        .output()
        .expect("ssh-keygen runs");
    assert!(out.status.success(), "{out:?}");
    let _ = std::fs::remove_file(format!("{}.old", file.display()));
    let hashed = std::fs::read_to_string(file).unwrap();
    // One hashed line per name: the comma lists became two lines each.
    assert_eq!(hashed.lines().count(), 1249);
    assert!(
        hashed.lines().all(|l| l.starts_with("|1|")),
        "not all hashed"
    );
}

#[test]
fn hashed_thousand_lines_right_key_connects_wrong_key_is_refused() {
    let Some(server) = support::ssh_server_or_skip("kh_hashed_1000") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = other_key(dir.path(), "other");
    let file = dir.path().join("known_hosts");
    let p = params(&server, dir.path());

    write_hashed(
        &file,
        &thousand_lines(server.port(), &key, &server.known_hosts_line()),
    );
    if let Err(e) = SshSession::connect(&p) {
        panic!("{e}\n--- sshd log ---\n{}", server.log());
    }

    // The same file with another key for this host (same length, same inode: only the text
    // says it changed), under both policies; accept-new records nothing.
    let wrong = format!(
        "[127.0.0.1]:{} {}",
        server.port(),
        other_key(dir.path(), "wrong")
    );
    write_hashed(&file, &thousand_lines(server.port(), &key, &wrong));
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let mut p = p.clone();
        p.host_key = policy;
        match SshSession::connect(&p) {
            Err(TransportError::HostKeyChanged { known_hosts, .. }) => {
                assert_eq!(known_hosts, file.display().to_string());
            }
            Err(e) => panic!("{policy:?}: refused, but not as changed: {e}"),
            Ok(_) => panic!("{policy:?}: a changed host key was accepted"),
        }
    }
    assert!(!dir.path().join("state_known_hosts").exists());

    // Nothing for this host in 1,000 lines: unknown under strict.
    write_hashed(
        &file,
        &thousand_lines(server.port(), &key, &format!("unrelated.example {key}")),
    );
    let err = SshSession::connect(&p).err().expect("unknown host refused");
    assert!(
        matches!(err, TransportError::HostKeyUnknown { .. }),
        "{err}"
    );
}

#[test]
fn host_recorded_by_ecdsa_in_a_hashed_file_negotiates_ecdsa() {
    let Some(server) = SshServer::builder()
        .host_key(support::HostKeyType::Ed25519)
        .host_key(support::HostKeyType::Ecdsa)
        .start_or_skip("kh_hashed_ecdsa")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ecdsa = server
        .host_keys()
        .iter()
        .find(|k| k.algorithm().starts_with("ecdsa"))
        .expect("the server has an ECDSA key");
    let key = other_key(dir.path(), "other");
    write_hashed(
        &dir.path().join("known_hosts"),
        &thousand_lines(server.port(), &key, &ecdsa.known_hosts_line(server.addr())),
    );
    if let Err(e) = SshSession::connect(&params(&server, dir.path())) {
        panic!("{e}\n--- sshd log ---\n{}", server.log());
    }
}

#[test]
fn a_bad_line_is_named_and_the_mended_file_is_read_again() {
    let Some(server) = support::ssh_server_or_skip("kh_bad_line") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = other_key(dir.path(), "other");
    let file = dir.path().join("known_hosts");
    let good = thousand_lines(server.port(), &key, &server.known_hosts_line());
    let mut lines: Vec<&str> = good.lines().collect();
    lines[499] = "broken.example ssh-ed25519";
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let p = params(&server, dir.path());
    let err = SshSession::connect(&p)
        .err()
        .expect("a bad line is refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("cannot read known_hosts {}:500: ", file.display())),
        "{msg}"
    );
    std::fs::write(&file, &good).unwrap();
    if let Err(e) = SshSession::connect(&p) {
        panic!("{e}\n--- sshd log ---\n{}", server.log());
    }
}

#[test]
fn a_revoked_key_is_refused_though_recorded_among_a_thousand_lines() {
    let Some(server) = support::ssh_server_or_skip("kh_revoked") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = other_key(dir.path(), "other");
    let file = dir.path().join("known_hosts");
    let text = thousand_lines(server.port(), &key, &server.known_hosts_line());
    // `@revoked` is matched by key, whatever host it names.
    std::fs::write(
        &file,
        format!(
            "@revoked elsewhere.example {}\n{text}",
            server.host_public_key()
        ),
    )
    .unwrap();
    let err = SshSession::connect(&params(&server, dir.path()))
        .err()
        .expect("a revoked key is refused");
    assert!(
        err.to_string()
            .contains(&format!("is marked @revoked in {}:1", file.display())),
        "{err}"
    );
}

#[test]
fn accept_new_records_each_host_and_the_grown_file_is_read_again() {
    let Some(server) = SshServer::builder()
        .listen_also(support::LOOPBACK_2)
        .listen_also(support::LOOPBACK_3)
        .start_or_skip("kh_accept_new_grows")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state_known_hosts");
    let at = |ip: &str, policy: HostKeyPolicy| {
        let mut p = params(&server, dir.path());
        p.host = ip.into();
        p.address = ip.into();
        p.host_key_name = ip.into();
        p.host_key = policy;
        p
    };
    // Each new host appends a line to dropship's file; the next connection reads the grown
    // file (only the appended line is parsed) and finds every host recorded so far.
    for (n, ip) in ["127.0.0.1", "127.0.0.2"].iter().enumerate() {
        if let Err(e) = SshSession::connect(&at(ip, HostKeyPolicy::AcceptNew)) {
            panic!("{ip}: {e}\n--- sshd log ---\n{}", server.log());
        }
        let recorded = std::fs::read_to_string(&state).unwrap();
        assert_eq!(recorded.lines().count(), n + 1, "{recorded}");
    }
    for ip in ["127.0.0.1", "127.0.0.2"] {
        if let Err(e) = SshSession::connect(&at(ip, HostKeyPolicy::Strict)) {
            panic!("{ip} recorded, yet: {e}");
        }
    }
    let err = SshSession::connect(&at("127.0.0.3", HostKeyPolicy::Strict))
        .err()
        .expect("a host never recorded is refused under strict");
    assert!(
        matches!(err, TransportError::HostKeyUnknown { .. }),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap().lines().count(), 2);
}
