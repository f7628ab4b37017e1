//! The safe upload against a test server: a bundle on local disk, a config naming the
//! server, and `upload::deliver` with its events collected. Shared by the transport tests
//! (tests/transport_live.rs, tests/ftp_peers.rs).

use super::{ScratchDir, SshServer, TEST_PASSWORD, TEST_USER};
use dropship::config::Config;
use dropship::plan::{Plan, Stamp};
use dropship::transport::known_hosts::KnownHostsFiles;
use dropship::transport::upload::{self, Delivered, Job, RetryPolicy};
use dropship::transport::{self, BundleDigest, Connection, TransferEvent, TransportError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A bundle on local disk with deterministic content.
pub fn bundle(dir: &Path, name: &str, len: usize) -> PathBuf {
    let path = dir.join(name);
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&path, data).unwrap();
    path
}

pub fn sha(path: &Path) -> String {
    transport::local_sha256(path, None).unwrap()
}

/// Everything one upload needs: a config naming the server, known_hosts files, a scratch
/// destination in the test user's home.
pub struct Rig {
    pub local: tempfile::TempDir,
    pub known: KnownHostsFiles,
    pub dest: ScratchDir,
    /// The `[DEFAULT]` timeout of [`Rig::config`].
    timeout: &'static str,
    /// When the bundle's digest is known to the upload.
    digest: DigestWhen,
}

/// When an upload learns its bundle's digest. A dispatch knows it at the start when it is
/// remembered, and otherwise hashes the bundle while the hosts connect and upload.
#[derive(Clone, Copy)]
pub enum DigestWhen {
    /// Known before the upload starts.
    Known,
    /// Computed at once, but held back until the first event for which this says true: the
    /// upload runs exactly as it does while a big bundle is still being hashed.
    HeldUntil(fn(&TransferEvent) -> bool),
    /// As `HeldUntil(all_sent)`, and the bundle's last byte changes after it was hashed and
    /// before the upload starts: a bundle rewritten while it ships.
    ChangedAfterHashing,
}

/// All bytes sent.
pub fn all_sent(e: &TransferEvent) -> bool {
    matches!(e, TransferEvent::Progress { sent, total, .. } if sent == total)
}

impl Rig {
    pub fn new(test: &str) -> Rig {
        let local = tempfile::tempdir().unwrap();
        let known = KnownHostsFiles {
            user: Some(local.path().join("user_known_hosts")),
            dropship: local.path().join("state").join("known_hosts"),
        };
        Rig {
            local,
            known,
            dest: super::scratch_dir(test),
            timeout: "5s",
            digest: DigestWhen::Known,
        }
    }

    /// The same rig with the digest known at another time.
    pub fn with_digest(mut self, when: DigestWhen) -> Rig {
        self.digest = when;
        self
    }

    /// The same rig with another `[DEFAULT]` timeout (a slower peer, TLS).
    pub fn with_timeout(mut self, timeout: &'static str) -> Rig {
        self.timeout = timeout;
        self
    }

    pub fn trust(&self, server: &SshServer) {
        server.write_known_hosts(self.known.user.as_ref().unwrap());
    }

    /// A config with one catch-all rule for `addr` over `protocol`; `extra` adds keys to
    /// the rule or overrides the [DEFAULT]s (the real password has `;`, `#` and a space).
    pub fn config(&self, protocol: &str, addr: SocketAddr, dest: &str, extra: &str) -> Config {
        let text = format!(
            "[DEFAULT]\nlogin = {TEST_USER}\npassword = {TEST_PASSWORD}\ntimeout = {}\nretries = 3\n\n[.*]\nhost = {}:{}\nprotocol = {protocol}\ndest_dir = {dest}\n{extra}\n",
            self.timeout,
            addr.ip(),
            addr.port()
        );
        Config::parse(&text, Path::new("test.cfg")).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    pub fn plan(&self, config: &Config, name: &str) -> Plan {
        Plan::build(
            config,
            &dropship::config::Netrc::empty(),
            &dropship::config::SshHosts::empty(),
            name,
            Stamp::parse("20261121_101500").unwrap(),
        )
        .unwrap()
    }
}

impl Rig {
    /// Runs the safe upload of `local` for the plan's first target, collecting events.
    pub fn deliver(
        &self,
        plan: &Plan,
        local: &Path,
    ) -> (
        Result<(Connection, Delivered), TransportError>,
        Vec<TransferEvent>,
    ) {
        self.deliver_until(plan, local, &|| false)
    }

    /// [`Rig::deliver`], stopped as soon as `cancel` says so.
    pub fn deliver_until(
        &self,
        plan: &Plan,
        local: &Path,
        cancel: &dyn Fn() -> bool,
    ) -> (
        Result<(Connection, Delivered), TransportError>,
        Vec<TransferEvent>,
    ) {
        let (result, events) = self.deliver_timed(plan, local, cancel);
        (result, events.into_iter().map(|(_, e)| e).collect())
    }

    /// [`Rig::deliver_until`], with the time each event arrived.
    pub fn deliver_timed(
        &self,
        plan: &Plan,
        local: &Path,
        cancel: &dyn Fn() -> bool,
    ) -> (Outcome, Vec<(std::time::Instant, TransferEvent)>) {
        let target = &plan.targets[0];
        let events = Mutex::new(Vec::new());
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (changed, change_done) = std::sync::mpsc::channel::<()>();
        let minute = std::time::Duration::from_secs(60);
        let (digest, held, change) = match self.digest {
            DigestWhen::Known => (BundleDigest::known(sha(local)), None, false),
            DigestWhen::HeldUntil(until) => {
                let digest = BundleDigest::hash(local.to_owned(), move |_| {
                    let _ = released.recv_timeout(minute);
                });
                (digest, Some(until), false)
            }
            DigestWhen::ChangedAfterHashing => {
                let path = local.to_owned();
                let digest = BundleDigest::hash(local.to_owned(), move |_| {
                    let mut data = std::fs::read(&path).unwrap();
                    *data.last_mut().expect("a bundle of one byte or more") ^= 0xff;
                    std::fs::write(&path, data).unwrap();
                    let _ = changed.send(());
                    let _ = released.recv_timeout(minute);
                });
                (digest, Some(all_sent as fn(&TransferEvent) -> bool), true)
            }
        };
        let first_start = std::sync::Once::new();
        let mut policy = RetryPolicy::new(plan.rule.retries);
        policy.base_delay = std::time::Duration::from_millis(50);
        let job = Job {
            host: &target.host.name,
            local,
            digest: &digest,
            dest_dir: &target.dest_dir,
            remote_path: &target.remote_path,
            policy,
            cancel,
        };
        let result = upload::deliver(
            &job,
            &mut || dropship::engine::connect::connect(target, &plan.rule, &self.known),
            &|e| {
                if change && matches!(e, TransferEvent::Started { .. }) {
                    first_start.call_once(|| {
                        let _ = change_done.recv_timeout(minute);
                    });
                }
                if held.is_some_and(|until| until(&e)) {
                    let _ = release.send(());
                }
                events.lock().unwrap().push((std::time::Instant::now(), e))
            },
        );
        (result, events.into_inner().unwrap())
    }
}

pub type Outcome = Result<(Connection, Delivered), TransportError>;

pub fn retries(events: &[TransferEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, TransferEvent::Retrying { .. }))
        .count()
}

pub fn resumed_from(events: &[TransferEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            TransferEvent::Started { resume_from, .. } => Some(*resume_from),
            _ => None,
        })
        .collect()
}
