//! Transports against the real OpenSSH sshd and vsftpd from tests/support: what arrives is
//! what left, partial files never appear at the final path, and failures are classified.

mod support;

use dropship::config::Config;
use dropship::transport::upload;
use dropship::transport::{self, TransferEvent, TransportError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use support::upload::{DigestWhen, Rig, all_sent, bundle, resumed_from, retries, sha};
use support::{FaultProxy, FtpProxies, FtpServer, SshServer};

/// Uploads files of awkward sizes and names into a nested directory; each must arrive
/// byte for byte, with no `.part` left behind.
fn roundtrip(protocol: &str, addr: SocketAddr, rig: &Rig, extra: &str) {
    let dest = format!("{}/nested/deeper/{{stem}}", rig.dest.as_str());
    let config = rig.config(protocol, addr, &dest, extra);
    let sizes = [0usize, 1, 65535, 65536, 65537, 10 << 20];
    for (i, len) in sizes.into_iter().enumerate() {
        let name = format!("app ü {i}-1.0.tgz");
        let local = bundle(rig.local.path(), &name, len);
        let plan = rig.plan(&config, &name);
        let (result, events) = rig.deliver(&plan, &local);
        let (_, delivered) = result.unwrap_or_else(|e| panic!("{protocol} {len} bytes: {e}"));
        let remote = PathBuf::from(&plan.targets[0].remote_path);
        assert_eq!(sha(&remote), sha(&local), "{protocol}: {len} bytes differ");
        assert_eq!(delivered.size, len as u64);
        assert_eq!(retries(&events), 0, "{protocol}: {events:?}");
        let part = PathBuf::from(upload::part_path(&plan.targets[0].remote_path));
        assert!(!part.exists(), "{protocol}: {} left behind", part.display());
        if protocol != "ftp" && protocol != "ftps" {
            assert_eq!(delivered.sha256.as_deref(), Some(sha(&local).as_str()));
        }
    }
}

#[test]
fn sftp_roundtrip() {
    let Some(server) = support::ssh_server_or_skip("sftp_roundtrip") else {
        return;
    };
    let rig = Rig::new("sftp_roundtrip");
    rig.trust(&server);
    roundtrip("sftp", server.addr(), &rig, "");
}

#[test]
fn scp_roundtrip() {
    let Some(server) = support::ssh_server_or_skip("scp_roundtrip") else {
        return;
    };
    let rig = Rig::new("scp_roundtrip");
    rig.trust(&server);
    roundtrip("scp", server.addr(), &rig, "");
}

#[test]
fn ftp_roundtrip() {
    let Some(server) = support::ftp_server_or_skip("ftp_roundtrip") else {
        return;
    };
    let rig = Rig::new("ftp_roundtrip");
    roundtrip("ftp", server.addr(), &rig, "");
}

#[test]
fn ftps_roundtrip_verifies_the_certificate() {
    let Some(server) = support::ftps_server_or_skip("ftps_roundtrip") else {
        return;
    };
    let rig = Rig::new("ftps_roundtrip");
    let ca = format!("tls_ca = {}", server.ca_pem().display());
    roundtrip("ftps", server.addr(), &rig, &ca);

    // Without the CA the self-signed certificate is refused, and not retried.
    let config = rig.config("ftps", server.addr(), rig.dest.as_str(), "");
    let local = bundle(rig.local.path(), "x.tgz", 10);
    let (result, events) = rig.deliver(&rig.plan(&config, "x.tgz"), &local);
    let err = result
        .err()
        .expect("an unverifiable certificate must be refused");
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("tls_ca"), "{err}");
    assert_eq!(retries(&events), 0);
}

#[test]
fn ftp_with_commands_verifies_sha256_over_ssh() {
    let Some(ftp) = support::ftp_server_or_skip("ftp_sha_over_ssh") else {
        return;
    };
    let Some(ssh) = support::ssh_server_or_skip("ftp_sha_over_ssh") else {
        return;
    };
    let rig = Rig::new("ftp_sha_over_ssh");
    rig.trust(&ssh);
    let extra = format!("ssh_port = {}\nupgrade = true", ssh.port());
    let config = rig.config("ftp", ftp.addr(), rig.dest.as_str(), &extra);
    let local = bundle(rig.local.path(), "app-2.tgz", 100_000);
    let (result, _) = rig.deliver(&rig.plan(&config, "app-2.tgz"), &local);
    let (_, delivered) = result.unwrap();
    assert_eq!(delivered.sha256, Some(sha(&local)));
}

#[test]
fn existing_file_is_replaced_atomically() {
    let Some(server) = support::ssh_server_or_skip("atomic_replace") else {
        return;
    };
    let rig = Rig::new("atomic_replace");
    rig.trust(&server);
    let config = rig.config("sftp", server.addr(), rig.dest.as_str(), "");
    let old = vec![b'o'; 4 << 20];
    let final_path = rig.dest.write_file("app-3.tgz", &old);
    let local = bundle(rig.local.path(), "app-3.tgz", 8 << 20);
    let new_sha = sha(&local);
    let old_sha = transport::local_sha256(&final_path, None).unwrap();

    // A reader polls the final path during the upload: it must only ever see the old or
    // the new file whole.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(h) = transport::local_sha256(&final_path, None) {
                    seen.insert(h);
                }
            }
            seen
        });
        let (result, _) = rig.deliver(&rig.plan(&config, "app-3.tgz"), &local);
        result.unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = reader.join().unwrap();
        assert!(
            seen.iter().all(|h| *h == old_sha || *h == new_sha),
            "a reader saw a partial file: {seen:?}"
        );
    });
    assert_eq!(sha(&final_path), new_sha);
}

/// Writes the server's host key under the name the client connects to (a proxy's).
fn trust_at(rig: &Rig, server: &SshServer, addr: SocketAddr) {
    std::fs::write(
        rig.known.user.as_ref().unwrap(),
        server.host_keys()[0].known_hosts_line(addr) + "\n",
    )
    .unwrap();
}

/// A wrong password fails at once with an authentication error naming the source, in one
/// connection (no retry), and the secret is in no message.
fn assert_wrong_password(protocol: &str, proxy: &FaultProxy, rig: &Rig) {
    let config = rig.config(
        protocol,
        proxy.addr(),
        rig.dest.as_str(),
        "password = wrong;#pw",
    );
    let local = bundle(rig.local.path(), "a.tgz", 10);
    let before = proxy.connections();
    let (result, events) = rig.deliver(&rig.plan(&config, "a.tgz"), &local);
    let err = result.err().expect("wrong password must fail");
    let msg = err.to_string();
    assert!(
        matches!(err, TransportError::Auth { .. }),
        "{protocol}: {msg}"
    );
    assert!(msg.contains("password from dispatch.cfg"), "{msg}");
    assert!(!msg.contains("wrong;#pw"), "secret leaked: {msg}");
    assert_eq!(retries(&events), 0, "auth errors are not retried");
    assert_eq!(
        proxy.connections() - before,
        1,
        "{protocol}: one connection only"
    );
}

#[test]
fn wrong_password_is_not_retried() {
    let Some(ssh) = support::ssh_server_or_skip("wrong_password") else {
        return;
    };
    let Some(ftp) = support::ftp_server_or_skip("wrong_password") else {
        return;
    };
    let rig = Rig::new("wrong_password");
    let proxy = FaultProxy::start(ssh.addr());
    trust_at(&rig, &ssh, proxy.addr());
    assert_wrong_password("sftp", &proxy, &rig);
    assert_wrong_password("scp", &proxy, &rig);
    assert_wrong_password("ftp", &FaultProxy::start(ftp.addr()), &rig);
}

#[test]
fn unwritable_dest_dir_is_a_clear_permission_error() {
    let Some(ssh) = support::ssh_server_or_skip("unwritable") else {
        return;
    };
    let Some(ftp) = support::ftp_server_or_skip("unwritable") else {
        return;
    };
    let rig = Rig::new("unwritable");
    rig.trust(&ssh);
    // Owned by root, mode 755: the test user cannot create anything inside.
    let locked = rig.dest.join("locked");
    std::fs::create_dir(&locked).unwrap();
    let dest = format!("{}/sub", locked.display());
    let local = bundle(rig.local.path(), "a.tgz", 10);
    for (protocol, addr) in [
        ("sftp", ssh.addr()),
        ("scp", ssh.addr()),
        ("ftp", ftp.addr()),
    ] {
        let config = rig.config(protocol, addr, &dest, "");
        let (result, events) = rig.deliver(&rig.plan(&config, "a.tgz"), &local);
        let err = result.err().expect("must fail");
        assert!(
            matches!(err, TransportError::Permission { .. }),
            "{protocol}: {err}"
        );
        assert!(err.to_string().contains("sub"), "{protocol}: {err}");
        assert_eq!(retries(&events), 0, "{protocol}");
    }
}

#[test]
fn host_keys_strict_and_accept_new() {
    let Some(server) = support::ssh_server_or_skip("host_keys") else {
        return;
    };
    let rig = Rig::new("host_keys");
    let local = bundle(rig.local.path(), "a.tgz", 10);
    let run = |policy: &str| {
        let config = rig.config(
            "sftp",
            server.addr(),
            rig.dest.as_str(),
            &format!("host_key = {policy}"),
        );
        rig.deliver(&rig.plan(&config, "a.tgz"), &local)
    };

    // Unknown under strict: refused with type and fingerprint, nothing recorded.
    let err = run("strict").0.err().expect("unknown host must be refused");
    let msg = err.to_string();
    assert!(
        matches!(err, TransportError::HostKeyUnknown { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("ssh-ed25519") && msg.contains("SHA256:"),
        "{msg}"
    );
    assert!(msg.contains("accept-new"), "{msg}");
    assert!(!rig.known.dropship.exists());

    // Unknown under accept-new: recorded in dropship's file, then known under strict.
    run("accept-new").0.unwrap();
    let recorded = std::fs::read_to_string(&rig.known.dropship).unwrap();
    assert!(
        recorded.contains(server.host_keys()[0].base64()),
        "{recorded}"
    );
    run("strict").0.unwrap();

    // Changed: a different key on record is refused under both policies.
    let other = SshServer::start();
    std::fs::write(
        &rig.known.dropship,
        other.host_keys()[0].known_hosts_line(server.addr()) + "\n",
    )
    .unwrap();
    for policy in ["strict", "accept-new"] {
        let err = run(policy).0.err().expect("changed key must be refused");
        assert!(
            matches!(err, TransportError::HostKeyChanged { .. }),
            "{policy}: {err}"
        );
        assert!(err.to_string().contains("ssh-keygen -R"), "{err}");
    }
}

#[test]
fn sftp_cut_connection_resumes_from_verified_prefix() {
    let Some(server) = support::ssh_server_or_skip("sftp_cut") else {
        return;
    };
    let rig = Rig::new("sftp_cut");
    let proxy = FaultProxy::start(server.addr());
    trust_at(&rig, &server, proxy.addr());
    proxy.cut_first_connection_after(6 << 20);
    let config = rig.config("sftp", proxy.addr(), rig.dest.as_str(), "");
    let local = bundle(rig.local.path(), "big-1.tgz", 20 << 20);
    let plan = rig.plan(&config, "big-1.tgz");
    let (result, events) = rig.deliver(&plan, &local);
    result.unwrap_or_else(|e| panic!("{e}\n{events:?}"));
    assert_eq!(proxy.cuts(), 1);
    assert!(retries(&events) >= 1, "{events:?}");
    let starts = resumed_from(&events);
    assert!(
        starts.len() >= 2 && starts[1] > 0,
        "second attempt must resume: {starts:?}"
    );
    assert_eq!(sha(Path::new(&plan.targets[0].remote_path)), sha(&local));
}

#[test]
fn scp_cut_connection_restarts_and_completes() {
    let Some(server) = support::ssh_server_or_skip("scp_cut") else {
        return;
    };
    let rig = Rig::new("scp_cut");
    let proxy = FaultProxy::start(server.addr());
    trust_at(&rig, &server, proxy.addr());
    proxy.cut_first_connection_after(3 << 20);
    let config = rig.config("scp", proxy.addr(), rig.dest.as_str(), "");
    let local = bundle(rig.local.path(), "big-2.tgz", 8 << 20);
    let plan = rig.plan(&config, "big-2.tgz");
    let final_path = PathBuf::from(&plan.targets[0].remote_path);
    let (result, events) = rig.deliver(&plan, &local);
    result.unwrap_or_else(|e| panic!("{e}\n{events:?}"));
    assert!(retries(&events) >= 1);
    assert_eq!(sha(&final_path), sha(&local));
}

#[test]
fn ftp_cut_data_connection_resumes_with_appe() {
    let Some(server) = FtpServer::builder()
        .pasv_address(support::LOOPBACK_2)
        .start_or_skip("ftp_cut")
    else {
        return;
    };
    let rig = Rig::new("ftp_cut");
    let proxies = FtpProxies::start(&server);
    // The first data connection carries the sidecar, the second the bundle.
    proxies
        .data
        .set_fault_scoped(support::Fault::CutAfter(5 << 20), support::Scope::First(2));
    let config = rig.config("ftp", proxies.control_addr(), rig.dest.as_str(), "");
    let local = bundle(rig.local.path(), "big-3.tgz", 16 << 20);
    let plan = rig.plan(&config, "big-3.tgz");
    let final_path = PathBuf::from(&plan.targets[0].remote_path);
    let (result, events) = rig.deliver(&plan, &local);
    result.unwrap_or_else(|e| panic!("{e}\n{events:?}"));
    assert_eq!(proxies.data.cuts(), 1);
    let starts = resumed_from(&events);
    assert!(starts.len() >= 2 && starts[1] > 0, "{starts:?}");
    assert_eq!(sha(&final_path), sha(&local));
}

#[test]
fn stalled_server_hits_the_io_timeout() {
    let Some(server) = support::ssh_server_or_skip("stall") else {
        return;
    };
    let rig = Rig::new("stall");
    let proxy = FaultProxy::start(server.addr());
    trust_at(&rig, &server, proxy.addr());
    proxy.set_fault(support::Fault::StallAfter(2 << 20));
    let config = rig.config(
        "sftp",
        proxy.addr(),
        rig.dest.as_str(),
        "timeout = 2s\nretries = 0",
    );
    let local = bundle(rig.local.path(), "big-4.tgz", 8 << 20);
    let plan = rig.plan(&config, "big-4.tgz");
    let (result, _) = rig.deliver(&plan, &local);
    let err = result.err().expect("a stalled upload must time out");
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    assert!(!Path::new(&plan.targets[0].remote_path).exists());
}

#[test]
fn corrupted_upload_fails_verification_and_is_retried() {
    let Some(ftp) = FtpServer::builder()
        .pasv_address(support::LOOPBACK_2)
        .start_or_skip("corrupt")
    else {
        return;
    };
    // The commands' SSH goes to the address of the FTP control proxy.
    let Some(ssh) = SshServer::builder()
        .listen_also(support::LOOPBACK_2)
        .start_or_skip("corrupt")
    else {
        return;
    };
    let rig = Rig::new("corrupt");
    rig.trust(&ssh);
    // Plain FTP has no integrity check: a flipped byte on the data connection arrives as
    // is, and only the SHA-256 over SSH can notice it.
    let proxies = FtpProxies::start(&ftp);
    proxies
        .data
        .set_fault_scoped(support::Fault::CorruptAt(12345), support::Scope::First(1));
    let extra = format!("ssh_port = {}\nupgrade = true", ssh.port());
    let config = rig.config("ftp", proxies.control_addr(), rig.dest.as_str(), &extra);
    let local = bundle(rig.local.path(), "app-c.tgz", 200_000);
    let plan = rig.plan(&config, "app-c.tgz");
    let (result, events) = rig.deliver(&plan, &local);
    let (_, delivered) = result.unwrap_or_else(|e| panic!("{e}\n{events:?}"));
    let retried: Vec<&TransferEvent> = events
        .iter()
        .filter(|e| matches!(e, TransferEvent::Retrying { .. }))
        .collect();
    assert_eq!(retried.len(), 1, "{events:?}");
    assert!(
        matches!(retried[0], TransferEvent::Retrying { error, .. } if error.contains("SHA-256 on the host")),
        "{retried:?}"
    );
    assert_eq!(delivered.attempts, 2);
    assert_eq!(sha(Path::new(&plan.targets[0].remote_path)), sha(&local));
}

#[test]
fn cancel_stops_an_upload_mid_way() {
    let Some(server) = support::ssh_server_or_skip("cancel_upload") else {
        return;
    };
    let rig = Rig::new("cancel_upload");
    rig.trust(&server);
    let config = rig.config("sftp", server.addr(), rig.dest.as_str(), "");
    let local = bundle(rig.local.path(), "big-c.tgz", 64 << 20);
    let plan = rig.plan(&config, "big-c.tgz");
    // Cancel once the first megabytes are on the host.
    let part = PathBuf::from(upload::part_path(&plan.targets[0].remote_path));
    let cancel = || std::fs::metadata(&part).is_ok_and(|m| m.len() >= 2 << 20);
    let (result, _) = rig.deliver_until(&plan, &local, &cancel);
    let err = result.err().expect("a cancelled upload must stop");
    assert!(matches!(err, TransportError::Cancelled { .. }), "{err}");
    let written = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(
        written < 64 << 20,
        "the upload ran to the end: {written} bytes"
    );
    assert!(!Path::new(&plan.targets[0].remote_path).exists());
}

#[test]
fn large_sftp_upload_goes_over_two_sessions() {
    let Some(server) = support::ssh_server_or_skip("sftp_two_streams") else {
        return;
    };
    let rig = Rig::new("sftp_two_streams");
    let proxy = FaultProxy::start(server.addr());
    trust_at(&rig, &server, proxy.addr());
    let config = rig.config("sftp", proxy.addr(), rig.dest.as_str(), "");
    let local = bundle(rig.local.path(), "big-2s.tgz", 96 << 20);
    let plan = rig.plan(&config, "big-2s.tgz");
    let (result, events) = rig.deliver(&plan, &local);
    let (_, delivered) = result.unwrap_or_else(|e| panic!("{e}\n{events:?}"));
    assert_eq!(delivered.attempts, 1);
    assert_eq!(proxy.connections(), 2, "one upload, two sessions");
    assert_eq!(sha(Path::new(&plan.targets[0].remote_path)), sha(&local));
    // Progress adds both halves up and ends at the size.
    let last = events.iter().rev().find_map(|e| match e {
        TransferEvent::Progress { sent, total, .. } => Some((*sent, *total)),
        _ => None,
    });
    assert_eq!(last, Some((96 << 20, 96 << 20)));

    // A cut in one stream: the retry resumes from the prefix the two streams left whole
    // (never from zero) and the file still arrives whole.
    proxy.cut_first_connection_after(40 << 20);
    let local = bundle(rig.local.path(), "big-2t.tgz", 96 << 20);
    let plan = rig.plan(&config, "big-2t.tgz");
    let before = proxy.bytes_up();
    let (result, events) = rig.deliver(&plan, &local);
    result.unwrap_or_else(|e| panic!("{e}\n{events:?}"));
    let starts = resumed_from(&events);
    assert!(
        starts.len() == 2 && starts[1] >= 32 << 20,
        "the retry must resume: {starts:?}"
    );
    let sent = proxy.bytes_up() - before;
    assert!(sent < (96u64 << 20) * 3 / 2, "{sent} bytes sent for 96 MiB");
    assert_eq!(sha(Path::new(&plan.targets[0].remote_path)), sha(&local));
}

#[test]
fn host_known_only_by_its_ecdsa_key_is_not_reported_changed() {
    let Some(server) = SshServer::builder()
        .host_key(support::HostKeyType::Ed25519)
        .host_key(support::HostKeyType::Ecdsa)
        .start_or_skip("ecdsa_known")
    else {
        return;
    };
    let rig = Rig::new("ecdsa_known");
    // Recorded by an older client that preferred ECDSA: no ed25519 line for this host.
    let ecdsa = server
        .host_keys()
        .iter()
        .find(|k| k.algorithm().starts_with("ecdsa"))
        .expect("the server has an ECDSA key");
    std::fs::write(
        rig.known.user.as_ref().unwrap(),
        ecdsa.known_hosts_line(server.addr()) + "\n",
    )
    .unwrap();
    let config = rig.config(
        "sftp",
        server.addr(),
        rig.dest.as_str(),
        "host_key = strict",
    );
    let local = bundle(rig.local.path(), "a.tgz", 10);
    let (result, _) = rig.deliver(&rig.plan(&config, "a.tgz"), &local);
    result.unwrap_or_else(|e| panic!("{e}"));
}

/// The lock's heartbeat runs as a background command: it must stop when asked and when the
/// connection goes away (dropship killed, network gone), or a dead holder's lock would look
/// alive forever.
#[test]
fn background_commands_stop_when_asked_and_when_the_connection_drops() {
    let Some(server) = support::ssh_server_or_skip("background_commands") else {
        return;
    };
    let rig = Rig::new("background_commands");
    rig.trust(&server);
    let config = rig.config("sftp", server.addr(), rig.dest.as_str(), "");
    let plan = rig.plan(&config, "app.tgz");
    let tick = rig.dest.join("tick");
    let script = format!(
        "while :; do date +%s%N > {}; sleep 0.2; done",
        shlex::try_quote(tick.to_str().unwrap()).unwrap()
    );
    let read = || std::fs::read_to_string(&tick).unwrap_or_default();
    for how in ["stop_background", "dropped connection"] {
        let mut conn =
            dropship::engine::connect::connect(&plan.targets[0], &plan.rule, &rig.known).unwrap();
        conn.shell
            .as_deref_mut()
            .unwrap()
            .start_background(&script)
            .unwrap();
        assert!(
            support::wait_until(Duration::from_secs(10), || {
                let a = read();
                std::thread::sleep(Duration::from_millis(500));
                !a.is_empty() && a != read()
            }),
            "{how}: the background command never ran"
        );
        if how == "stop_background" {
            conn.shell.as_deref_mut().unwrap().stop_background();
        } else {
            drop(conn);
        }
        assert!(
            support::wait_until(Duration::from_secs(15), || {
                let a = read();
                std::thread::sleep(Duration::from_secs(1));
                a == read()
            }),
            "{how}: the background command still runs"
        );
        let _ = std::fs::remove_file(&tick);
    }
}

/// The lock's channel is the host's control shell for the rest of the dispatch: the
/// verification and rename of the upload run in it, and the unlock after its heartbeat has
/// ended, with no channel (login shell, `sh`) of their own. Proven against an sshd that
/// allows one session per connection (`MaxSessions 1`): any second channel is refused.
#[test]
fn the_lock_channel_verifies_renames_and_unlocks_without_a_channel_more() {
    let Some(server) = SshServer::builder()
        .config_line("MaxSessions 1")
        .start_or_skip("control_shell")
    else {
        return;
    };
    let rig = Rig::new("control_shell");
    rig.trust(&server);
    let config = rig.config("scp", server.addr(), rig.dest.as_str(), "");
    let plan = rig.plan(&config, "app.tgz");
    let q = |p: &Path| shlex::try_quote(p.to_str().unwrap()).unwrap().into_owned();
    let tick = rig.dest.join("tick");
    let beat = format!(
        "s=; trap '[ -z \"$s\" ] || kill $s; exit 0' TERM; while :; do date +%s%N > {}; sleep 0.2 & s=$!; wait $s; done",
        q(&tick)
    );
    let read = || std::fs::read_to_string(&tick).unwrap_or_default();
    let mut conn =
        dropship::engine::connect::connect(&plan.targets[0], &plan.rule, &rig.known).unwrap();
    let shell = conn.shell.as_deref_mut().unwrap();
    let (said, started) = shell
        .script_then_background("echo took it; go=1; return 0", &beat)
        .unwrap();
    assert_eq!(said, "took it\n");
    assert!(matches!(started, Some(Ok(()))), "{started:?}");
    assert!(
        support::wait_until(Duration::from_secs(10), || {
            let a = read();
            std::thread::sleep(Duration::from_millis(500));
            !a.is_empty() && a != read()
        }),
        "the heartbeat never ran"
    );
    // A `.part` whose hash matches is renamed, one that does not is left alone; a name
    // with quotes and `$` is quoted.
    let data = b"the bundle".repeat(10_000);
    let part = rig.dest.join(".it's $x.part");
    let dest = rig.dest.join("it's $x.tgz");
    std::fs::write(&part, &data).unwrap();
    let sum = sha(&part);
    let ps = part.to_str().unwrap();
    let ds = dest.to_str().unwrap();
    assert_eq!(
        shell
            .verify_and_rename(ps, ds, &"0".repeat(64), 100_000)
            .unwrap(),
        Some(sum.clone()),
        "a wrong hash: not renamed"
    );
    assert!(part.exists() && !dest.exists());
    assert_eq!(
        shell.verify_and_rename(ps, ds, &sum, 100_000).unwrap(),
        None
    );
    assert!(!part.exists());
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    // The last script runs once the heartbeat has stopped.
    let gone = rig.dest.join("lock dir");
    std::fs::create_dir(&gone).unwrap();
    let out = shell
        .finish_background(&format!("rm -rf -- {}; echo released", q(&gone)))
        .expect("a control shell")
        .unwrap();
    assert_eq!(out, "released\n");
    assert!(!gone.exists());
    let last = read();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(last, read(), "the heartbeat ended before the last script");
    // Now that the lock's channel is closed, scripts get channels of their own again.
    assert!(shell.finish_background("true").is_none());
    assert_eq!(shell.script("echo own", Duration::ZERO).unwrap(), "own\n");
}

// ---- Nothing wrong ever lands (integrity under faults) ----

/// A bundle of `len` bytes whose content depends on `seed`: two seeds, two bundles.
fn bundle_seeded(dir: &Path, name: &str, len: usize, seed: u8) -> PathBuf {
    let path = dir.join(name);
    let data: Vec<u8> = (0..len).map(|i| (i * 13 + i / 509) as u8 ^ seed).collect();
    std::fs::write(&path, data).unwrap();
    path
}

fn verified_event(events: &[TransferEvent]) -> TransferEvent {
    events
        .iter()
        .find(|e| matches!(e, TransferEvent::Verified { .. }))
        .cloned()
        .unwrap_or_else(|| panic!("no Verified event: {events:?}"))
}

/// Bundle A is cut off mid-way on an FTP-only rule (no SSH shell to hash anything), leaving
/// its `.part`; then a different bundle B of the same name is shipped. B must start from
/// zero and land whole: A's bytes are never taken for B's. The result says "verified by
/// size only", and no event claims a verification with a null hash.
#[test]
fn ftp_only_part_of_another_bundle_is_never_resumed() {
    let Some(server) = FtpServer::builder()
        .pasv_address(support::LOOPBACK_2)
        .start_or_skip("ftp_foreign_part")
    else {
        return;
    };
    let rig = Rig::new("ftp_foreign_part");
    let proxies = FtpProxies::start(&server);
    let config = rig.config(
        "ftp",
        proxies.control_addr(),
        rig.dest.as_str(),
        "retries = 0",
    );
    let name = "app-1.0.tgz";
    let plan = rig.plan(&config, name);
    let final_path = PathBuf::from(&plan.targets[0].remote_path);
    let part = PathBuf::from(upload::part_path(&plan.targets[0].remote_path));
    let sidecar = PathBuf::from(upload::sidecar_path(part.to_str().unwrap()));

    // A: cut after 6 MiB of the bundle's data connection (the first one is the sidecar).
    let dir_a = rig.local.path().join("a");
    std::fs::create_dir(&dir_a).unwrap();
    let a = bundle_seeded(&dir_a, name, 16 << 20, 0x00);
    proxies
        .data
        .set_fault_scoped(support::Fault::CutAfter(6 << 20), support::Scope::First(2));
    let (result, _) = rig.deliver(&plan, &a);
    assert!(result.is_err(), "the cut must fail the upload");
    let left = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(
        left > 0,
        "A's .part must be left for this test to mean anything"
    );
    assert!(sidecar.exists(), "the sidecar names A's .part");

    // B, same name, other bytes: from zero, whole, verified by size only.
    proxies.data.set_fault(support::Fault::Pass);
    let dir_b = rig.local.path().join("b");
    std::fs::create_dir(&dir_b).unwrap();
    let b = bundle_seeded(&dir_b, name, 16 << 20, 0x5a);
    let (result, events) = rig.deliver(&plan, &b);
    let (_, delivered) = result.unwrap_or_else(|e| panic!("{e}\n{events:?}"));
    assert_eq!(
        resumed_from(&events),
        vec![0],
        "B must not resume A's .part"
    );
    assert_eq!(sha(&final_path), sha(&b));
    assert_eq!(delivered.by, transport::VerifiedBy::SizeOnly);
    assert_eq!(delivered.sha256, None);
    let json = serde_json::to_value(verified_event(&events)).unwrap();
    assert_eq!(json["by"], "size_only", "{json}");
    assert!(json.get("sha256").is_none(), "no null hash: {json}");
    assert!(!part.exists() && !sidecar.exists(), "nothing left behind");

    // A `.part` with no sidecar (an older dropship's, or anyone's) is not trusted either.
    std::fs::copy(&a, &part).unwrap();
    support::chown_to_user(&part);
    let (result, events) = rig.deliver(&plan, &b);
    result.unwrap_or_else(|e| panic!("{e}\n{events:?}"));
    assert_eq!(resumed_from(&events), vec![0], "a .part without sidecar");
    assert_eq!(sha(&final_path), sha(&b));

    // The same bundle after a cut does resume, from what its sidecar vouches for.
    proxies
        .data
        .set_fault_scoped(support::Fault::CutAfter(6 << 20), support::Scope::First(2));
    let (result, _) = rig.deliver(&plan, &a);
    assert!(result.is_err());
    proxies.data.set_fault(support::Fault::Pass);
    let (result, events) = rig.deliver(&plan, &a);
    result.unwrap_or_else(|e| panic!("{e}\n{events:?}"));
    let starts = resumed_from(&events);
    assert!(starts.len() == 1 && starts[0] > 0, "{starts:?}");
    assert_eq!(sha(&final_path), sha(&a));
}

/// Locks of FTP-only rules heal like SSH ones: a holder not heard from for `lock_stale` is
/// broken, a dead local holder's lock is taken over at once, and a live holder (its
/// heartbeat beating over a second connection) keeps its lock however long it holds it.
#[test]
fn ftp_only_locks_heal_and_live_ones_hold() {
    use dropship::engine::lock::{self, Identity, LockError, Wait};
    let Some(server) = support::ftp_server_or_skip("ftp_lock") else {
        return;
    };
    let rig = Rig::new("ftp_lock");
    let config = rig.config("ftp", server.addr(), rig.dest.as_str(), "");
    let plan = rig.plan(&config, "app-1.tgz");
    let connect =
        || dropship::engine::connect::connect(&plan.targets[0], &plan.rule, &rig.known).unwrap();
    let path = format!("{}/.dropship.lock", rig.dest.as_str());
    let notices = Mutex::new(Vec::<String>::new());
    let id = |holder: &'static str| Identity {
        host: "ftp",
        holder,
        bundle: "app-1.tgz",
    };
    let never = || false;
    let notice = |m: String| notices.lock().unwrap().push(m);
    let wait = |wait: u64, stale: u64| Wait {
        host: "ftp",
        wait: Duration::from_secs(wait),
        stale: Duration::from_secs(stale),
        cancelled: &never,
        notice: &notice,
    };
    let write_foreign = |holder: &str| {
        let mut c = connect();
        assert!(c.files.create_dir(&path).unwrap());
        let info = format!("holder={holder}\nbundle=old.tgz\ntoken=feedface\n");
        c.files
            .write_small(&format!("{path}/info"), info.as_bytes())
            .unwrap();
    };

    // 1. A holder on another machine that stopped beating: broken after lock_stale.
    write_foreign("alice@elsewhere pid 1");
    let mut conn = connect();
    let l = lock::acquire(&mut conn, &path, &id("me@here pid 2"), &wait(30, 2))
        .unwrap_or_else(|e| panic!("a stale FTP lock must be broken: {e}"));
    assert!(
        notices
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.contains("broke a stale lock held by alice@elsewhere pid 1")),
        "{notices:?}"
    );
    lock::release(&mut conn, &l).unwrap();
    assert!(!rig.dest.join(".dropship.lock").exists(), "released");

    // 2. A dropship of this machine that is gone: taken over at once, stale or not.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let me = lock::local_holder();
    let dead_holder = format!("{} pid {dead}", me.rsplit_once(" pid ").unwrap().0);
    write_foreign(&dead_holder);
    let l = lock::acquire(&mut conn, &path, &id("me@here pid 2"), &wait(5, 3600))
        .unwrap_or_else(|e| panic!("a dead local holder's lock must be taken over: {e}"));
    assert!(
        notices
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.contains("took over the lock")),
        "{notices:?}"
    );
    lock::release(&mut conn, &l).unwrap();

    // 3. A live holder beats (every second at lock_stale = 4s) and is never broken.
    let held = lock::acquire(&mut conn, &path, &id("bob@other pid 3"), &wait(5, 4)).unwrap();
    let mut other = connect();
    let Err(err) = lock::acquire(&mut other, &path, &id("me@here pid 2"), &wait(9, 4)) else {
        panic!("a live lock must hold past lock_stale");
    };
    assert!(
        matches!(&err, LockError::Busy { holder: Some(h), .. } if h.holder == "bob@other pid 3"),
        "{err}"
    );
    lock::release(&mut conn, &held).unwrap();
    let l = lock::acquire(&mut other, &path, &id("me@here pid 2"), &wait(5, 4)).unwrap();
    lock::release(&mut other, &l).unwrap();
}

/// Stalls (a black-holed route: the proxy stops forwarding, sockets left open) are found
/// within about one `timeout` on every protocol and channel, not several of them.
#[test]
fn stalls_are_found_within_the_timeout_on_every_protocol() {
    let Some(ssh) = support::ssh_server_or_skip("stall_all") else {
        return;
    };
    let Some(ftp) = FtpServer::builder()
        .pasv_address(support::LOOPBACK_2)
        .start_or_skip("stall_all")
    else {
        return;
    };
    let rig = Rig::new("stall_all");
    let timeout = Duration::from_secs(2);
    let extra = "timeout = 2s\nretries = 0";
    bundle(rig.local.path(), "stall-1.tgz", 24 << 20);
    let mut measured = Vec::new();
    // The control stall comes before any data: a small bundle, so that hashing it (before
    // connecting) does not count as detection time.
    bundle(rig.local.path(), "stall-s.tgz", 64 << 10);
    let mut run = |what: &str, config: Config| {
        let name = if what == "ftp control" {
            "stall-s.tgz"
        } else {
            "stall-1.tgz"
        };
        let local = rig.local.path().join(name);
        let plan = rig.plan(&config, name);
        let start = std::time::Instant::now();
        let (result, events) = rig.deliver_timed(&plan, &local, &|| false);
        let end = std::time::Instant::now();
        let err = result.err().unwrap_or_else(|| panic!("{what}: must stall"));
        assert!(
            matches!(err, TransportError::Timeout { .. }),
            "{what}: {err}\n{events:?}"
        );
        assert!(err.to_string().contains("timeout"), "{err}");
        // From the last sign of life (progress is reported at least every 100 ms while
        // bytes move; a stall before the upload starts counts from the start) to the error.
        let last = events.last().map_or(start, |(t, _)| *t);
        let took = end - last;
        measured.push(format!("{what} {:.2}s", took.as_secs_f64()));
        assert!(
            // ~1.2x, plus what the last progress report (after each written chunk) lags
            // behind the last byte the peer took.
            took <= timeout.mul_f64(1.2) + Duration::from_millis(350),
            "{what}: stall found {took:?} after the last progress, timeout {timeout:?}"
        );
    };
    for protocol in ["scp", "sftp"] {
        let proxy = FaultProxy::start(ssh.addr());
        trust_at(&rig, &ssh, proxy.addr());
        proxy.set_fault(support::Fault::StallAfter(4 << 20));
        run(
            protocol,
            rig.config(protocol, proxy.addr(), rig.dest.as_str(), extra),
        );
    }
    let proxies = FtpProxies::start(&ftp);
    proxies.data.set_fault(support::Fault::StallAfter(4 << 20));
    run(
        "ftp data",
        rig.config("ftp", proxies.control_addr(), rig.dest.as_str(), extra),
    );
    proxies.data.set_fault(support::Fault::Pass);
    // Past the login (USER, PASS, TYPE, PWD) and into the upload's commands.
    proxies.control.set_fault(support::Fault::StallAfter(60));
    run(
        "ftp control",
        rig.config("ftp", proxies.control_addr(), rig.dest.as_str(), extra),
    );
    eprintln!("stall detection at timeout = 2s: {}", measured.join(", "));
}

/// After a stalled FTP data connection, stock vsftpd still holds its upload lock on the
/// `.part` for the stalled session (`lock_upload_files`, default on): the retry must not
/// wait for it. It starts a fresh `.part` and completes.
#[test]
fn ftp_retry_after_a_data_stall_is_not_blocked_by_the_servers_lock() {
    let Some(ftp) = FtpServer::builder()
        .pasv_address(support::LOOPBACK_2)
        .start_or_skip("ftp_stall_retry")
    else {
        return;
    };
    let rig = Rig::new("ftp_stall_retry");
    let proxies = FtpProxies::start(&ftp);
    // Data connections 1 (sidecar) and 2 (bundle) get the fault; 2 stalls after 4 MiB.
    proxies.data.set_fault_scoped(
        support::Fault::StallAfter(4 << 20),
        support::Scope::First(2),
    );
    let config = rig.config(
        "ftp",
        proxies.control_addr(),
        rig.dest.as_str(),
        "timeout = 2s\nretries = 2",
    );
    let local = bundle(rig.local.path(), "stall-2.tgz", 16 << 20);
    let plan = rig.plan(&config, "stall-2.tgz");
    let start = std::time::Instant::now();
    let (result, events) = rig.deliver(&plan, &local);
    result.unwrap_or_else(|e| panic!("{e}\n{events:?}"));
    assert_eq!(retries(&events), 1, "{events:?}");
    assert_eq!(
        resumed_from(&events),
        vec![0, 0],
        "a fresh .part after a stall"
    );
    assert_eq!(sha(Path::new(&plan.targets[0].remote_path)), sha(&local));
    eprintln!(
        "upload with one data stall at timeout = 2s: {:?}",
        start.elapsed()
    );
}

/// A command killed at `step_timeout` says so and names `step_timeout`, not `timeout`.
#[test]
fn a_hung_command_names_step_timeout() {
    let Some(server) = support::ssh_server_or_skip("step_timeout") else {
        return;
    };
    let rig = Rig::new("step_timeout");
    rig.trust(&server);
    let config = rig.config("sftp", server.addr(), rig.dest.as_str(), "");
    let plan = rig.plan(&config, "app.tgz");
    let mut conn =
        dropship::engine::connect::connect(&plan.targets[0], &plan.rule, &rig.known).unwrap();
    let shell = conn.shell.as_deref_mut().unwrap();
    let err = shell
        .exec(
            "sleep 30",
            Duration::from_secs(1),
            &|| false,
            &mut |_, _| {},
        )
        .expect_err("must time out");
    let msg = err.to_string();
    assert!(
        matches!(err, TransportError::CommandTimeout { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("`sleep 30`") && msg.contains("`step_timeout`"),
        "{msg}"
    );
    assert!(!msg.contains("raise `timeout`"), "{msg}");
    assert!(!err.is_transient());
}

/// A 254-byte bundle name (the host can store it) uploads over every protocol: the
/// `.part` and its sidecar get names that fit. A name the server cannot store is refused
/// at once, not retried as if the network had failed.
#[test]
fn long_names_upload_and_unstorable_names_are_not_retried() {
    let Some(ssh) = support::ssh_server_or_skip("long_names") else {
        return;
    };
    let Some(ftp) = support::ftp_server_or_skip("long_names") else {
        return;
    };
    let rig = Rig::new("long_names");
    rig.trust(&ssh);
    let name = format!("{}-1.0.tgz", "a".repeat(254 - "-1.0.tgz".len()));
    assert_eq!(name.len(), 254);
    let local = bundle(rig.local.path(), &name, 100_000);
    for (protocol, addr) in [
        ("sftp", ssh.addr()),
        ("scp", ssh.addr()),
        ("ftp", ftp.addr()),
    ] {
        let config = rig.config(protocol, addr, rig.dest.as_str(), "");
        let plan = rig.plan(&config, &name);
        let (result, events) = rig.deliver(&plan, &local);
        result.unwrap_or_else(|e| panic!("{protocol}: {e}\n{events:?}"));
        assert_eq!(retries(&events), 0, "{protocol}");
        assert_eq!(sha(Path::new(&plan.targets[0].remote_path)), sha(&local));
    }
    let dest = format!("{}/{}", rig.dest.as_str(), "d".repeat(300));
    let config = rig.config("sftp", ssh.addr(), &dest, "");
    let (result, events) = rig.deliver(&rig.plan(&config, "a.tgz"), &local);
    let err = result
        .err()
        .expect("a 300-byte directory name cannot be made");
    assert!(!err.is_transient(), "{err}");
    assert_eq!(retries(&events), 0, "{events:?}");
}

// ---- The digest while it ships (#14: the first byte does not wait for the hash) ----

/// The bundle's digest is computed while the upload runs; here it is held back until every
/// byte is sent, on every protocol: the host's hash (scp: of the stream it wrote; sftp and
/// FTP with commands: of the `.part`) is compared with it only then, and the file lands
/// whole and verified. FTP-only checks the size, as before.
#[test]
fn the_digest_may_arrive_after_the_data_on_every_protocol() {
    let Some(ssh) = SshServer::builder()
        .listen_also(support::LOOPBACK_2)
        .start_or_skip("digest_late")
    else {
        return;
    };
    let Some(ftp) = FtpServer::builder()
        .pasv_address(support::LOOPBACK_2)
        .start_or_skip("digest_late")
    else {
        return;
    };
    let rig = Rig::new("digest_late").with_digest(DigestWhen::HeldUntil(all_sent));
    rig.trust(&ssh);
    let ftp_with_ssh = format!("ssh_port = {}\nupgrade = true", ssh.port());
    let cases = [
        ("scp", ssh.addr(), String::new()),
        ("sftp", ssh.addr(), String::new()),
        ("ftp", ftp.addr(), String::new()),
        ("ftp", ftp.addr(), ftp_with_ssh),
    ];
    for (i, (protocol, addr, extra)) in cases.iter().enumerate() {
        let config = rig.config(protocol, *addr, rig.dest.as_str(), extra);
        let name = format!("late-{i}.tgz");
        let local = bundle(rig.local.path(), &name, 3 << 20);
        let plan = rig.plan(&config, &name);
        let (result, events) = rig.deliver(&plan, &local);
        let (_, delivered) = result.unwrap_or_else(|e| panic!("{protocol} {extra}: {e}"));
        let remote = PathBuf::from(&plan.targets[0].remote_path);
        assert_eq!(sha(&remote), sha(&local), "{protocol} {extra}");
        let part = PathBuf::from(upload::part_path(&plan.targets[0].remote_path));
        assert!(!part.exists(), "{protocol} {extra}: .part left behind");
        assert_eq!(retries(&events), 0, "{protocol} {extra}: {events:?}");
        let by_hash = !(*protocol == "ftp" && extra.is_empty());
        assert_eq!(
            delivered.sha256.as_deref(),
            by_hash.then(|| sha(&local)).as_deref(),
            "{protocol} {extra}"
        );
    }
}

/// A bundle rewritten after it was hashed (its last byte) never lands as good: the host's
/// hash of what arrived differs from the digest, the `.part` is removed, the old file at the
/// final name stays, and every attempt says why.
#[test]
fn a_bundle_that_changes_while_it_ships_never_lands() {
    let Some(ssh) = support::ssh_server_or_skip("digest_changed") else {
        return;
    };
    let rig = Rig::new("digest_changed").with_digest(DigestWhen::ChangedAfterHashing);
    rig.trust(&ssh);
    for protocol in ["scp", "sftp"] {
        let config = rig.config(protocol, ssh.addr(), rig.dest.as_str(), "retries = 1");
        let name = format!("changing-{protocol}.tgz");
        let local = bundle(rig.local.path(), &name, 2 << 20);
        let plan = rig.plan(&config, &name);
        let remote = PathBuf::from(&plan.targets[0].remote_path);
        std::fs::write(&remote, b"the release before").unwrap();
        support::chown_to_user(&remote);
        let (result, events) = rig.deliver(&plan, &local);
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{protocol}: landed: {events:?}"));
        assert!(
            matches!(err, TransportError::Verify { .. }),
            "{protocol}: {err}"
        );
        assert!(
            err.to_string().contains("SHA-256 on the host"),
            "{protocol}: {err}"
        );
        assert_eq!(retries(&events), 1, "{protocol}: {events:?}");
        assert_eq!(std::fs::read(&remote).unwrap(), b"the release before");
        let part = PathBuf::from(upload::part_path(&plan.targets[0].remote_path));
        assert!(!part.exists(), "{protocol}: .part left behind");
    }
}

/// FTP-only: the first attempt writes its `.part` before the digest is known, so with no
/// sidecar; cut mid-way, the next attempt of the same upload vouches for it once the digest
/// is there and resumes it (a later dropship, which did not write it, would start over).
#[test]
fn ftp_only_resumes_a_part_written_before_the_digest_was_known() {
    let Some(server) = FtpServer::builder()
        .pasv_address(support::LOOPBACK_2)
        .start_or_skip("digest_late_ftp")
    else {
        return;
    };
    fn retrying(e: &TransferEvent) -> bool {
        matches!(e, TransferEvent::Retrying { .. })
    }
    let rig = Rig::new("digest_late_ftp").with_digest(DigestWhen::HeldUntil(retrying));
    let proxies = FtpProxies::start(&server);
    // No sidecar goes first: the first data connection is the bundle's.
    proxies
        .data
        .set_fault_scoped(support::Fault::CutAfter(5 << 20), support::Scope::First(1));
    let config = rig.config("ftp", proxies.control_addr(), rig.dest.as_str(), "");
    let local = bundle(rig.local.path(), "late-ftp.tgz", 16 << 20);
    let plan = rig.plan(&config, "late-ftp.tgz");
    let part = PathBuf::from(upload::part_path(&plan.targets[0].remote_path));
    let sidecar = PathBuf::from(upload::sidecar_path(part.to_str().unwrap()));
    let (result, events) = rig.deliver(&plan, &local);
    result.unwrap_or_else(|e| panic!("{e}\n{events:?}"));
    assert_eq!(proxies.data.cuts(), 1);
    let starts = resumed_from(&events);
    assert!(
        starts.len() == 2 && starts[0] == 0 && starts[1] > 0,
        "{starts:?}"
    );
    assert_eq!(sha(Path::new(&plan.targets[0].remote_path)), sha(&local));
    assert!(!part.exists() && !sidecar.exists(), "nothing left behind");
}

/// Several streamed (scp) uploads at once share how far they may run ahead of their hosts'
/// commands (sshd's buffers stay small): they wait for the commands to catch up, and every
/// byte still lands, verified.
#[test]
fn concurrent_scp_streams_are_paced_and_land_whole() {
    let Some(ssh) = support::ssh_server_or_skip("scp_paced") else {
        return;
    };
    let rig = Rig::new("scp_paced");
    rig.trust(&ssh);
    let config = rig.config("scp", ssh.addr(), rig.dest.as_str(), "");
    let waits = dropship::transport::ssh::stream_waits();
    std::thread::scope(|s| {
        for i in 0..6 {
            let (rig, config) = (&rig, &config);
            s.spawn(move || {
                let name = format!("paced-{i}.tgz");
                let local = bundle(rig.local.path(), &name, (12 << 20) + i * 4097);
                let plan = rig.plan(config, &name);
                let (result, events) = rig.deliver(&plan, &local);
                let (_, delivered) = result.unwrap_or_else(|e| panic!("{name}: {e}\n{events:?}"));
                let remote = PathBuf::from(&plan.targets[0].remote_path);
                assert_eq!(sha(&remote), sha(&local), "{name}");
                assert_eq!(delivered.sha256.as_deref(), Some(sha(&local).as_str()));
            });
        }
    });
    assert!(
        dropship::transport::ssh::stream_waits() > waits,
        "six streams at once never waited: the pacing did not engage"
    );
}
