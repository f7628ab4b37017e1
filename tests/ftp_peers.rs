//! FTP and FTPS against real servers with their distribution defaults: vsftpd
//! (`require_ssl_reuse=YES`), ProFTPD (session reuse required, APPE/REST refused) and
//! Pure-FTPd; resume refused by the server; a full disk.

mod support;

use dropship::plan::Plan;
use dropship::transport::upload;
use dropship::transport::{TransferEvent, TransportError};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use support::disk::SmallDisk;
use support::peers::Peer;
use support::upload::{Rig, bundle, retries, sha};
use support::{FtpServer, TEST_PASSWORD, TEST_USER};

fn restarts(events: &[TransferEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            TransferEvent::Started { restart, .. } => restart.clone(),
            _ => None,
        })
        .collect()
}

/// Bundles of several sizes into a nested dest_dir that does not exist yet, bytes checked.
fn roundtrip(
    what: &str,
    protocol: &str,
    addr: SocketAddr,
    rig: &Rig,
    extra: &str,
    log: &dyn Fn() -> String,
) {
    let dest = format!("{}/new/nested/{{stem}}", rig.dest.as_str());
    for (i, len) in [0usize, 1, 65537, 3 << 20].into_iter().enumerate() {
        let name = format!("app-{i}-1.0.tgz");
        let local = bundle(rig.local.path(), &name, len);
        let plan = rig.plan(&rig.config(protocol, addr, &dest, extra), &name);
        let (result, events) = rig.deliver(&plan, &local);
        let (_, delivered) = result.unwrap_or_else(|e| {
            panic!(
                "{what} {protocol} {len} bytes: {e}\n--- server ---\n{}",
                log()
            )
        });
        let remote = PathBuf::from(&plan.targets[0].remote_path);
        assert_eq!(
            sha(&remote),
            sha(&local),
            "{what} {protocol}: {len} bytes differ"
        );
        assert_eq!(delivered.size, len as u64);
        assert_eq!(retries(&events), 0, "{what} {protocol}: {events:?}");
        let part = upload::part_path(&plan.targets[0].remote_path);
        assert!(!Path::new(&part).exists(), "{what}: {part} left behind");
        assert!(!Path::new(&upload::sidecar_path(&part)).exists());
    }
}

#[test]
fn vsftpd_ftps_with_its_default_session_reuse() {
    let Some(server) = FtpServer::builder()
        .tls(true)
        .start_or_skip("vsftpd_ftps_with_its_default_session_reuse")
    else {
        return;
    };
    let conf = std::fs::read_to_string(server.config_path()).unwrap();
    assert!(!conf.contains("require_ssl_reuse"), "{conf}");
    let rig = Rig::new("vsftpd_ftps_reuse").with_timeout("10s");
    let ca = format!("tls_ca = {}", server.ca_pem().display());
    roundtrip("vsftpd", "ftps", server.addr(), &rig, &ca, &|| server.log());
    roundtrip(
        "vsftpd",
        "ftp",
        FtpServer::start().addr(),
        &Rig::new("vsftpd_ftp").with_timeout("10s"),
        "",
        &|| String::new(),
    );
}

/// The same resumption, TLS 1.2 and TLS 1.3 each, straight through suppaftp with the
/// configuration dropship builds: STOR and RETR on data connections vsftpd accepts only as
/// resumed sessions.
#[test]
fn vsftpd_session_reuse_on_tls12_and_tls13() {
    let Some(server) = support::ftps_server_or_skip("vsftpd_session_reuse_on_tls12_and_tls13")
    else {
        return;
    };
    let scratch = support::scratch_dir("vsftpd_tls_versions");
    for (label, version) in [
        ("TLS 1.2", &rustls::version::TLS12),
        ("TLS 1.3", &rustls::version::TLS13),
    ] {
        let config =
            dropship::transport::tls::client_config_for(true, Some(server.ca_pem()), &[version])
                .unwrap();
        let mut ftp = dropship::transport::ftp::RustlsFtpStream::connect(server.addr())
            .unwrap()
            .into_secure(dropship::transport::ftp::TlsConnect(config), "127.0.0.1")
            .unwrap_or_else(|e| panic!("{label}: AUTH TLS: {e}"));
        ftp.login(TEST_USER, TEST_PASSWORD).unwrap();
        ftp.transfer_type(suppaftp::types::FileType::Binary)
            .unwrap();
        ftp.cwd(scratch.as_str()).unwrap();
        for round in 0..3 {
            let data = vec![round as u8; 100_000];
            let mut up = ftp
                .put_with_stream("v.bin")
                .unwrap_or_else(|e| panic!("{label} STOR {round}: {e}\n{}", server.log()));
            up.write_all(&data).unwrap();
            up.finish()
                .unwrap_or_else(|e| panic!("{label} STOR {round}: {e}\n{}", server.log()));
            let back = ftp
                .retr("v.bin", |r| {
                    let mut v = Vec::new();
                    r.read_to_end(&mut v)
                        .map_err(suppaftp::FtpError::ConnectionError)?;
                    Ok(v)
                })
                .unwrap_or_else(|e| panic!("{label} RETR {round}: {e}\n{}", server.log()));
            assert_eq!(back, data, "{label}");
        }
        ftp.quit().unwrap();
    }
}

fn peer_roundtrips(peer: Peer, test: &str) {
    let Some(plain) = peer.start_or_skip(test, false) else {
        return;
    };
    roundtrip(
        peer.name(),
        "ftp",
        plain.addr(),
        &Rig::new(test).with_timeout("10s"),
        "",
        &|| plain.log(),
    );
    let tls = peer.start_or_skip(test, true).unwrap();
    let ca = format!("tls_ca = {}", tls.ca_pem().display());
    roundtrip(
        peer.name(),
        "ftps",
        tls.addr(),
        &Rig::new(test).with_timeout("10s"),
        &ca,
        &|| tls.log(),
    );
}

#[test]
fn proftpd_ftp_and_ftps_with_its_defaults() {
    peer_roundtrips(Peer::Proftpd, "proftpd_ftp_and_ftps_with_its_defaults");
}

#[test]
fn pure_ftpd_ftp_and_ftps_with_its_defaults() {
    peer_roundtrips(Peer::PureFtpd, "pure_ftpd_ftp_and_ftps_with_its_defaults");
}

/// Puts a `.part` of `len` bytes (the bundle's own first bytes, or more than the bundle)
/// with a sidecar naming this bundle, as an interrupted earlier run leaves them.
fn leftover_part(plan: &Plan, local: &Path, len: usize) {
    let remote = &plan.targets[0].remote_path;
    let part = upload::part_path(remote);
    let dir = Path::new(&part).parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let mut data = std::fs::read(local).unwrap();
    data.resize(len, 0xAB);
    std::fs::write(&part, &data).unwrap();
    let side = format!(
        "dropship-part sha256={} size={}\n",
        sha(local),
        std::fs::metadata(local).unwrap().len()
    );
    std::fs::write(upload::sidecar_path(&part), side).unwrap();
    for p in [
        dir.to_owned(),
        PathBuf::from(&part),
        PathBuf::from(upload::sidecar_path(&part)),
    ] {
        support::user::chown_to_user(&p);
    }
}

#[test]
fn proftpd_refuses_append_so_the_part_starts_over() {
    let Some(server) = Peer::Proftpd.start_or_skip("proftpd_refuses_append", false) else {
        return;
    };
    let rig = Rig::new("proftpd_refuses_append").with_timeout("10s");
    let local = bundle(rig.local.path(), "app-2.0.tgz", 1 << 20);
    let plan = rig.plan(
        &rig.config("ftp", server.addr(), rig.dest.as_str(), ""),
        "app-2.0.tgz",
    );
    leftover_part(&plan, &local, 300_000);
    let (result, events) = rig.deliver(&plan, &local);
    result.unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert_eq!(sha(Path::new(&plan.targets[0].remote_path)), sha(&local));
    let said = restarts(&events);
    assert_eq!(said.len(), 1, "{events:?}");
    assert!(said[0].contains("refuses to append"), "{said:?}");
    assert!(!said[0].contains("451 451"), "{said:?}");
    assert_eq!(retries(&events), 0, "{events:?}");
}

#[test]
fn part_longer_than_the_bundle_starts_over() {
    let Some(server) = support::ftp_server_or_skip("part_longer_than_the_bundle") else {
        return;
    };
    let rig = Rig::new("part_longer_than_the_bundle").with_timeout("10s");
    let local = bundle(rig.local.path(), "app-3.0.tgz", 100_000);
    let plan = rig.plan(
        &rig.config("ftp", server.addr(), rig.dest.as_str(), ""),
        "app-3.0.tgz",
    );
    leftover_part(&plan, &local, 150_000);
    let (result, events) = rig.deliver(&plan, &local);
    result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sha(Path::new(&plan.targets[0].remote_path)), sha(&local));
    let said = restarts(&events);
    assert!(
        said.iter().any(|s| s.contains("longer than the bundle")),
        "{said:?}"
    );
}

#[test]
fn full_disk_is_reported_not_retried_and_the_part_removed() {
    let Some(server) = support::ftp_server_or_skip("full_disk_is_reported") else {
        return;
    };
    let rig = Rig::new("full_disk_is_reported").with_timeout("10s");
    let disk = SmallDisk::mount(rig.dest.join("small"));
    let local = bundle(rig.local.path(), "app-4.0.tgz", 4 << 20);
    let dest = disk.0.display().to_string();
    let plan = rig.plan(&rig.config("ftp", server.addr(), &dest, ""), "app-4.0.tgz");
    let (result, events) = rig.deliver(&plan, &local);
    let err = result.err().expect("a full disk must fail the upload");
    let text = err.to_string();
    assert!(
        matches!(err, TransportError::Refused { .. }),
        "{text}\n{}",
        server.log()
    );
    assert!(
        text.contains(&format!("no space left on 127.0.0.1 in {dest}")),
        "{text}"
    );
    assert_eq!(retries(&events), 0, "{events:?}");
    let part = upload::part_path(&plan.targets[0].remote_path);
    assert!(!Path::new(&part).exists(), "{part} keeps the disk full");
    assert!(!Path::new(&upload::sidecar_path(&part)).exists());
    drop(disk);
}
