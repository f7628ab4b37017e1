//! How inspection fans out: at most so many hosts at once, at most [`PER_HOST`] per
//! address, each on its own thread (the transports block), and the SSH connect that records
//! nothing. Shared by the probe and the version reads.

use super::target::ProbeTarget;
use crate::transport::TransportError;
use crate::transport::known_hosts::KnownHostsFiles;
use crate::transport::ssh::SshSession;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `f` on every item with at most `parallel` at once (each on its own thread, as the
/// transports block), calling `on_done(index, &result)` as each finishes. Results come back
/// in item order.
pub fn for_each_bounded<T: Sync, R: Send>(
    items: &[T],
    parallel: usize,
    f: impl Fn(&T) -> R + Sync,
    on_done: &(dyn Fn(usize, &R) + Sync),
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let workers = parallel.clamp(1, items.len().max(1));
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let results = std::sync::Mutex::new(&mut out);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    on_done(i, &r);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    out.into_iter()
        .map(|r| r.expect("every item has a result"))
        .collect()
}

/// At most this many probes (or version reads) of one address at once. Several rules often
/// name the same host, and small SSH servers refuse what they take for a flood: Dropbear
/// drops unauthenticated connections beyond a few per source address, which reads as
/// "Failed getting banner" on a random rule of the host.
pub const PER_HOST: usize = 2;

/// [`for_each_bounded`] with at most `per_key` items of one key (a host) running at once. A
/// worker takes the first waiting item whose key has room, so one host with many rules does
/// not keep the workers from the other hosts.
pub fn for_each_bounded_per_key<T: Sync, R: Send, K: Eq + std::hash::Hash>(
    items: &[T],
    parallel: usize,
    per_key: usize,
    key: impl Fn(&T) -> K,
    f: impl Fn(&T) -> R + Sync,
    on_done: &(dyn Fn(usize, &R) + Sync),
) -> Vec<R> {
    struct Queue {
        taken: Vec<bool>,
        /// Every item before this one is taken.
        first_free: usize,
        running: Vec<usize>,
    }
    let mut ids = std::collections::HashMap::new();
    let key_of: Vec<usize> = items
        .iter()
        .map(|t| {
            let next = ids.len();
            *ids.entry(key(t)).or_insert(next)
        })
        .collect();
    let queue = std::sync::Mutex::new(Queue {
        taken: vec![false; items.len()],
        first_free: 0,
        running: vec![0; ids.len()],
    });
    let changed = std::sync::Condvar::new();
    let per_key = per_key.max(1);
    let workers = parallel.clamp(1, items.len().max(1));
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let results = std::sync::Mutex::new(&mut out);
    let lock = || queue.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut q = lock();
                loop {
                    while q.first_free < items.len() && q.taken[q.first_free] {
                        q.first_free += 1;
                    }
                    if q.first_free == items.len() {
                        break;
                    }
                    let pick = (q.first_free..items.len())
                        .find(|&i| !q.taken[i] && q.running[key_of[i]] < per_key);
                    let Some(i) = pick else {
                        q = changed.wait(q).unwrap_or_else(|e| e.into_inner());
                        continue;
                    };
                    q.taken[i] = true;
                    q.running[key_of[i]] += 1;
                    drop(q);
                    let r = f(&items[i]);
                    on_done(i, &r);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                    q = lock();
                    q.running[key_of[i]] -= 1;
                    changed.notify_all();
                }
            });
        }
    });
    out.into_iter()
        .map(|r| r.expect("every item has a result"))
        .collect()
}

/// An SSH session for `t` on `port`. Under `accept-new` the session checks against a copy
/// of dropship's known_hosts, so a new key is noticed (`true`) but not recorded: probing
/// modifies nothing (see [`crate::transport::ssh::connect_unrecorded`]).
pub(crate) fn connect_ssh(
    t: &ProbeTarget,
    port: u16,
    known_hosts: &KnownHostsFiles,
) -> (Result<SshSession, TransportError>, bool) {
    let params = crate::engine::connect::ssh_params(&t.target, port, &t.rule, known_hosts);
    crate::transport::ssh::connect_unrecorded(&params, params.host_key)
}
