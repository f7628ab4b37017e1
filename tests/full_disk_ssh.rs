//! A full disk and a directory the login may not write, over SFTP and SCP against a real
//! OpenSSH sshd with its distribution defaults (`internal-sftp`, which answers ENOSPC with
//! the generic SSH_FX_FAILURE, and the remote `scp -t`): reported as what they are, not
//! retried, and no `.part` left behind.

mod support;

use dropship::plan::Plan;
use dropship::transport::TransportError;
use dropship::transport::upload;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::SshServer;
use support::disk::SmallDisk;
use support::dropbear::DropbearServer;
use support::upload::{Rig, bundle, retries};

fn no_part_left(plan: &Plan) {
    let part = upload::part_path(&plan.targets[0].remote_path);
    assert!(!Path::new(&part).exists(), "{part} keeps the disk full");
    assert!(!Path::new(&upload::sidecar_path(&part)).exists());
}

/// A 3 MiB bundle into `disk` (1 MiB) at `addr` over `protocol`; `extra` adds keys to the
/// rule.
fn full_disk(rig: &Rig, protocol: &str, addr: SocketAddr, disk: &SmallDisk, extra: &str) {
    let local = bundle(rig.local.path(), "app-4.0.tgz", 3 << 20);
    let dest = disk.0.display().to_string();
    let plan = rig.plan(&rig.config(protocol, addr, &dest, extra), "app-4.0.tgz");
    let (result, events) = rig.deliver(&plan, &local);
    let err = result.err().expect("a full disk must fail the upload");
    let text = err.to_string();
    assert!(
        matches!(err, TransportError::Refused { .. }),
        "{protocol}: {text}"
    );
    assert!(
        text.contains(&format!(
            "no space left on 127.0.0.1 in {dest} (3 MiB needed)"
        )),
        "{protocol}: {text}"
    );
    assert_eq!(retries(&events), 0, "{protocol}: {events:?}");
    no_part_left(&plan);
}

/// The same against OpenSSH's sshd, in the test user's scratch dir.
fn sshd_full_disk(test: &str, protocol: &str) {
    let Some(server) = support::ssh_server_or_skip(test) else {
        return;
    };
    let rig = Rig::new(test).with_timeout("10s");
    rig.trust(&server);
    let disk = SmallDisk::mount(rig.dest.join("small"));
    full_disk(&rig, protocol, server.addr(), &disk, "");
    drop(disk);
}

#[test]
fn sftp_full_disk_is_reported_not_retried_and_the_part_removed() {
    sshd_full_disk("sftp_full_disk", "sftp");
}

#[test]
fn scp_full_disk_is_reported_not_retried_and_the_part_removed() {
    sshd_full_disk("scp_full_disk", "scp");
}

/// Dropbear runs OpenSSH's `sftp-server` (which says SSH_FX_FAILURE for ENOSPC as well)
/// and the system's `scp -t`.
#[test]
fn dropbear_full_disk_over_sftp_and_scp_is_reported_not_retried() {
    let test = "dropbear_full_disk";
    let Some(server) = DropbearServer::start_or_skip(test, &[]) else {
        return;
    };
    for protocol in ["sftp", "scp"] {
        let rig = Rig::new(test).with_timeout("10s");
        std::fs::write(
            rig.known.user.as_ref().unwrap(),
            server.known_hosts_line() + "\n",
        )
        .unwrap();
        let home = server.user.fresh_dir(&format!("{test}_{protocol}"));
        let disk = SmallDisk::mount_for(home.join("small"), server.user.uid, server.user.gid);
        let login = format!("login = {}", server.user.name);
        full_disk(&rig, protocol, server.addr(), &disk, &login);
        drop(disk);
        let _ = std::fs::remove_dir_all(&home);
    }
}

/// A directory owned by root, mode 555: the login may enter it but not create in it.
fn denied_dir(test: &str, protocol: &str, server: &SshServer) {
    let rig = Rig::new(test).with_timeout("10s");
    rig.trust(server);
    let dir = rig.dest.join("ro");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let dest = dir.display().to_string();
    let local = bundle(rig.local.path(), "app-5.0.tgz", 100_000);
    let plan = rig.plan(
        &rig.config(protocol, server.addr(), &dest, ""),
        "app-5.0.tgz",
    );
    let (result, events) = rig.deliver(&plan, &local);
    let err = result.err().expect("a read-only dir must fail the upload");
    let text = err.to_string();
    assert!(
        matches!(err, TransportError::Permission { .. }),
        "{protocol}: {text}\n--- sshd ---\n{}",
        server.log()
    );
    assert!(
        text.contains(&format!("permission denied on {dest}")),
        "{protocol}: {text}"
    );
    assert_eq!(retries(&events), 0, "{protocol}: {events:?}");
    no_part_left(&plan);
}

#[test]
fn sftp_permission_denied_names_the_dir_and_is_not_retried() {
    let Some(server) = support::ssh_server_or_skip("sftp_permission_denied") else {
        return;
    };
    denied_dir("sftp_permission_denied", "sftp", &server);
}

#[test]
fn scp_permission_denied_names_the_dir_and_is_not_retried() {
    let Some(server) = support::ssh_server_or_skip("scp_permission_denied") else {
        return;
    };
    denied_dir("scp_permission_denied", "scp", &server);
}
