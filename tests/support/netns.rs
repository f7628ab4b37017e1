//! Hosts that exist only behind a bastion, on loopback addresses only.
//!
//! A network namespace of the test's own (`unshare --net`, its `lo` brought up) holds three
//! OpenSSH sshds: the bastion on 127.0.0.1:[`BASTION_PORT`], a second hop on
//! 127.0.0.1:[`HOP2_PORT`], and the targets on 0.0.0.0:[`TARGET_PORT`], which answers at
//! every 127.x address inside the namespace. Only the bastion is bridged out, through a
//! unix socket (`socat UNIX-LISTEN` inside, `socat TCP-LISTEN:…,bind=127.0.0.1` outside),
//! so from the test's side a target can be reached through the bastion and in no other
//! way: a dispatch that dialed it directly would find nothing there.
//! The file system is shared, so what lands on a target lands in the test user's home.

use super::ports::{self, PortLease};
use super::process::ServerProcess;
use super::sshd::{self, HostKey, HostKeyType};
use super::{Need, test_keys};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const BASTION_PORT: u16 = 2201;
pub const TARGET_PORT: u16 = 2202;
pub const HOP2_PORT: u16 = 2203;

/// The namespace with its sshds, and the bridge to its bastion.
pub struct Bastioned {
    // Fields drop in order: the bridge first, then the namespace's processes.
    _bridge: ServerProcess,
    _inside: ServerProcess,
    _lease: PortLease,
    /// The bastion as the test reaches it: 127.0.0.1:`port`.
    pub port: u16,
    bastion_key: HostKey,
    hop2_key: HostKey,
    target_key: HostKey,
    dir: tempfile::TempDir,
}

/// The sshd `name` of the namespace: its config, listening on `listen`.
fn sshd_config(dir: &Path, name: &str, listen: &str, key: &HostKey, authorized: &Path) -> String {
    format!(
        "Port {port}\nListenAddress {addr}\nHostKey {key}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n{base}",
        port = listen.rsplit(':').next().unwrap(),
        addr = listen.rsplit_once(':').unwrap().0,
        key = key.private_path.display(),
        pid = dir.join(format!("{name}.pid")).display(),
        ak = authorized.display(),
        base = sshd::base_config(false),
    )
}

impl Bastioned {
    /// Starts the namespace, or `None` when the test is skipped (see
    /// [`super::live_test_or_skip`]). Panics with the logs if it does not come up.
    pub fn start_or_skip(test: &str) -> Option<Bastioned> {
        if !super::live_test_or_skip(test, &[Need::Sshd, Need::Jump]) {
            return None;
        }
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let _user = super::test_user();
        let dir = super::server_temp_dir("netns");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let authorized = dir.path().join("authorized_keys");
        fs::write(&authorized, test_keys().authorized_keys()).expect("authorized_keys");
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut keys = Vec::new();
        for name in ["bastion", "hop2", "target"] {
            let d = dir.path().join(name);
            fs::create_dir(&d).expect("mkdir");
            keys.push(sshd::generate_host_key(&d, HostKeyType::Ed25519));
        }
        let [bastion_key, hop2_key, target_key]: [HostKey; 3] = keys.try_into().ok().unwrap();
        for (name, listen, key) in [
            ("bastion", format!("127.0.0.1:{BASTION_PORT}"), &bastion_key),
            ("hop2", format!("127.0.0.1:{HOP2_PORT}"), &hop2_key),
            ("target", format!("0.0.0.0:{TARGET_PORT}"), &target_key),
        ] {
            fs::write(
                dir.path().join(format!("{name}.conf")),
                sshd_config(dir.path(), name, &listen, key, &authorized),
            )
            .expect("write sshd config");
        }
        let sock = dir.path().join("bastion.sock");
        let ready = dir.path().join("ready");
        let d = dir.path().display();
        // Inside: lo up, three sshds, wait until each port accepts, then bridge the
        // bastion's port to the unix socket.
        let script = format!(
            "set -e\n\
             ip link set lo up\n\
             for n in bastion hop2 target; do {sshd} -D -f {d}/$n.conf -E {d}/$n.log & done\n\
             for p in {BASTION_PORT} {HOP2_PORT} {TARGET_PORT}; do\n\
               i=0; until (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; do i=$((i+1)); [ $i -lt 200 ] || exit 9; sleep 0.05; done\n\
             done\n\
             socat UNIX-LISTEN:{sock},fork,mode=600 TCP:127.0.0.1:{BASTION_PORT} &\n\
             until [ -S {sock} ]; do sleep 0.02; done\n\
             touch {ready}\n\
             wait\n",
            sshd = sshd::SSHD,
            sock = sock.display(),
            ready = ready.display(),
        );
        let mut cmd = Command::new("/usr/bin/unshare");
        cmd.args(["--net", "--", "/bin/bash", "-c", &script]);
        let mut inside = ServerProcess::spawn("netns", cmd, &dir.path().join("netns.log"), true);
        let up = super::wait_until(Duration::from_secs(15), || {
            ready.exists() || inside.exited().is_some()
        });
        if !up || !ready.exists() {
            panic!(
                "namespace did not come up\n--- netns.log ---\n{}\n--- bastion.log ---\n{}\n--- target.log ---\n{}",
                read(&dir.path().join("netns.log")),
                read(&dir.path().join("bastion.log")),
                read(&dir.path().join("target.log")),
            );
        }
        let lease = ports::reserve(1, &[Ipv4Addr::LOCALHOST]);
        let port = lease.first();
        let mut bridge = Command::new("socat");
        bridge
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!("UNIX-CONNECT:{}", sock.display()));
        let mut bridge =
            ServerProcess::spawn("bridge", bridge, &dir.path().join("bridge.log"), true);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        super::process::wait_for_greeting(
            &mut bridge,
            addr,
            "SSH-",
            std::time::Instant::now() + Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("bastion bridge: {e}"));
        Some(Bastioned {
            _bridge: bridge,
            _inside: inside,
            _lease: lease,
            port,
            bastion_key,
            hop2_key,
            target_key,
            dir,
        })
    }

    /// `known_hosts` lines for the bastion as the test reaches it.
    pub fn bastion_known_hosts(&self) -> String {
        self.bastion_key
            .known_hosts_line(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)))
            + "\n"
    }

    /// `known_hosts` lines for the second hop and for targets at `ips` (inside addresses).
    pub fn inside_known_hosts(&self, ips: &[Ipv4Addr]) -> String {
        let mut out = self
            .hop2_key
            .known_hosts_line(SocketAddr::from((Ipv4Addr::LOCALHOST, HOP2_PORT)));
        out.push('\n');
        for ip in ips {
            out.push_str(
                &self
                    .target_key
                    .known_hosts_line(SocketAddr::from((*ip, TARGET_PORT))),
            );
            out.push('\n');
        }
        out
    }

    /// The log of sshd `name` (`bastion`, `hop2`, `target`).
    pub fn log(&self, name: &str) -> String {
        read(&self.dir.path().join(format!("{name}.log")))
    }

    /// How many logins sshd `name` accepted.
    pub fn logins(&self, name: &str) -> usize {
        self.log(name).matches("Accepted publickey for").count()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}
