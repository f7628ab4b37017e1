//! Running the engine in-process against the real servers: a private known_hosts that
//! trusts the test sshd, a host-side scratch directory, and one call that runs a whole
//! dispatch and hands back its summary and every event with the moment it arrived.

use super::{ScratchDir, SshServer, scratch_dir};
use dropship::engine::events::Event;
use dropship::engine::job::Cancel;
use dropship::engine::rollout::{self, Dispatch, Emit, Summary};
use dropship::plan::Plan;
use dropship::transport::known_hosts::KnownHostsFiles;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a test does when an event arrives (e.g. set the cancel at an exact step).
pub type OnEvent = Box<dyn Fn(&Event, &Cancel) + Send + Sync>;

pub struct EngineRig {
    /// Bundles and known_hosts on this side.
    pub local: tempfile::TempDir,
    pub known: KnownHostsFiles,
    /// The host side (the test user's scratch directory).
    pub dest: ScratchDir,
}

impl EngineRig {
    pub fn new(test: &str, server: &SshServer) -> EngineRig {
        let local = tempfile::tempdir().unwrap();
        let known = KnownHostsFiles {
            user: Some(local.path().join("known_hosts")),
            dropship: local.path().join("dropship_known_hosts"),
        };
        server.write_known_hosts(known.user.as_ref().unwrap());
        EngineRig {
            local,
            known,
            dest: scratch_dir(test),
        }
    }

    /// A local file `name` of `len` bytes.
    pub fn bundle_file(&self, name: &str, len: usize) -> PathBuf {
        let p = self.local.path().join(name);
        std::fs::write(&p, vec![b'b'; len]).unwrap();
        p
    }

    /// Runs a whole dispatch of `plan` with the file `bundle` (as holder `holder`), calling
    /// `on_event` with every event as the job emits it.
    pub fn dispatch(
        &self,
        plan: Plan,
        bundle: &Path,
        holder: &str,
        cancel: Arc<Cancel>,
        on_event: OnEvent,
    ) -> (Summary, Vec<(Instant, Event)>) {
        let log: Arc<Mutex<Vec<(Instant, Event)>>> = Arc::default();
        let (l, c) = (log.clone(), cancel.clone());
        let emit: Emit = Arc::new(move |e| {
            on_event(&e, &c);
            l.lock().unwrap().push((Instant::now(), e))
        });
        let d = Arc::new(Dispatch {
            id: 1,
            plan: Arc::new(plan),
            bundle: bundle.to_owned(),
            // Hashed while the hosts connect and upload, as a first dispatch does.
            bundle_sha256: None,
            known_hosts: self.known.clone(),
            holder: holder.into(),
            skip: HashMap::new(),
            only: None,
            connector: dropship::engine::connect::real(),
        });
        let rt = tokio::runtime::Runtime::new().unwrap();
        let summary = rt.block_on(rollout::run(d, cancel, emit));
        let events = std::mem::take(&mut *log.lock().unwrap());
        (summary, events)
    }
}

/// For tests that only watch.
pub fn ignore(_: &Event, _: &Cancel) {}
