//! FTP and FTPS against real servers with their distribution defaults: vsftpd
//! (`require_ssl_reuse=YES`), ProFTPD (session reuse required, APPE/REST refused) and
//! Pure-FTPd; resume refused by the server; a full disk.

mod support;

use dropship::config::Config;
use dropship::plan::{Plan, Stamp};
use dropship::transport::known_hosts::KnownHostsFiles;
use dropship::transport::upload::{self, Delivered, Job, RetryPolicy};
use dropship::transport::{self, Connection, TransferEvent, TransportError};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use support::peers::Peer;
use support::{FtpServer, ScratchDir, TEST_PASSWORD, TEST_USER};

fn bundle(dir: &Path, name: &str, len: usize) -> PathBuf {
    let path = dir.join(name);
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&path, data).unwrap();
    path
}

fn sha(path: &Path) -> String {
    transport::local_sha256(path, None).unwrap()
}

struct Rig {
    local: tempfile::TempDir,
    known: KnownHostsFiles,
    dest: ScratchDir,
}

impl Rig {
    fn new(test: &str) -> Rig {
        let local = tempfile::tempdir().unwrap();
        let known = KnownHostsFiles {
            user: Some(local.path().join("user_known_hosts")),
            dropship: local.path().join("state").join("known_hosts"),
        };
        Rig {
            local,
            known,
            dest: support::scratch_dir(test),
        }
    }

    fn plan(&self, protocol: &str, addr: SocketAddr, dest: &str, extra: &str, name: &str) -> Plan {
        let text = format!(
            "[DEFAULT]\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ntimeout = 10s\nretries = 3\n\n[.*]\nhost = {}:{}\nprotocol = {protocol}\ndest_dir = {dest}\n{extra}\n",
            addr.ip(),
            addr.port()
        );
        let config =
            Config::parse(&text, Path::new("test.cfg")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        Plan::build(
            &config,
            &dropship::config::Netrc::empty(),
            &dropship::config::SshHosts::empty(),
            name,
            Stamp::parse("20261121_101500").unwrap(),
        )
        .unwrap()
    }

    fn deliver(
        &self,
        plan: &Plan,
        local: &Path,
    ) -> (
        Result<(Connection, Delivered), TransportError>,
        Vec<TransferEvent>,
    ) {
        let target = &plan.targets[0];
        let events = Mutex::new(Vec::new());
        let mut policy = RetryPolicy::new(plan.rule.retries);
        policy.base_delay = std::time::Duration::from_millis(50);
        let job = Job {
            host: &target.host.name,
            local,
            local_sha256: None,
            dest_dir: &target.dest_dir,
            remote_path: &target.remote_path,
            policy,
            cancel: &|| false,
        };
        let result = upload::deliver(
            &job,
            &mut || transport::connect(target, &plan.rule, &self.known),
            &|e| events.lock().unwrap().push(e),
        );
        (result, events.into_inner().unwrap())
    }
}

fn retries(events: &[TransferEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, TransferEvent::Retrying { .. }))
        .count()
}

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
        let plan = rig.plan(protocol, addr, &dest, extra, &name);
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
    let rig = Rig::new("vsftpd_ftps_reuse");
    let ca = format!("tls_ca = {}", server.ca_pem().display());
    roundtrip("vsftpd", "ftps", server.addr(), &rig, &ca, &|| server.log());
    roundtrip(
        "vsftpd",
        "ftp",
        FtpServer::start().addr(),
        &Rig::new("vsftpd_ftp"),
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
        &Rig::new(test),
        "",
        &|| plain.log(),
    );
    let tls = peer.start_or_skip(test, true).unwrap();
    let ca = format!("tls_ca = {}", tls.ca_pem().display());
    roundtrip(
        peer.name(),
        "ftps",
        tls.addr(),
        &Rig::new(test),
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
    let rig = Rig::new("proftpd_refuses_append");
    let local = bundle(rig.local.path(), "app-2.0.tgz", 1 << 20);
    let plan = rig.plan("ftp", server.addr(), rig.dest.as_str(), "", "app-2.0.tgz");
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
    let rig = Rig::new("part_longer_than_the_bundle");
    let local = bundle(rig.local.path(), "app-3.0.tgz", 100_000);
    let plan = rig.plan("ftp", server.addr(), rig.dest.as_str(), "", "app-3.0.tgz");
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

/// A 1 MiB tmpfs mounted over a directory, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: PathBuf) -> SmallDisk {
        std::fs::create_dir_all(&dir).unwrap();
        let user = support::test_user();
        let opts = format!("size=1m,mode=0755,uid={},gid={}", user.uid, user.gid);
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "dropship-test"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_is_reported_not_retried_and_the_part_removed() {
    let Some(server) = support::ftp_server_or_skip("full_disk_is_reported") else {
        return;
    };
    let rig = Rig::new("full_disk_is_reported");
    let disk = SmallDisk::mount(rig.dest.join("small"));
    let local = bundle(rig.local.path(), "app-4.0.tgz", 4 << 20);
    let dest = disk.0.display().to_string();
    let plan = rig.plan("ftp", server.addr(), &dest, "", "app-4.0.tgz");
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
