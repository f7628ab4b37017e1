//! Free ports that stay free until the server that needs them has bound them.
//!
//! Binding port 0 and handing the number to a child process races with every other test doing
//! the same, and vsftpd needs a contiguous passive range anyway. So ports are taken from a range
//! below the kernel's ephemeral range (where the kernel never hands them out by itself), and each
//! one is leased with a `flock` on `/tmp/dropship-test-locks/port-N.lock` for as long as the
//! server lives. Leases are shared by every test process on the machine and vanish with the
//! process that held them.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::ops::RangeInclusive;

use super::FileLock;

/// Lowest port handed out.
const PORT_LOW: u16 = 20000;
/// One past the highest port handed out, unless the ephemeral range starts lower.
const PORT_HIGH: u16 = 32000;

/// A block of consecutive ports reserved for this process until drop.
pub struct PortLease {
    first: u16,
    count: u16,
    _locks: Vec<FileLock>,
}

impl PortLease {
    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn range(&self) -> RangeInclusive<u16> {
        self.first..=self.first + self.count - 1
    }
}

/// Leases `count` consecutive ports that can be bound on every address in `ips` right now.
pub fn reserve(count: u16, ips: &[Ipv4Addr]) -> PortLease {
    assert!(count >= 1);
    for ip in ips {
        super::assert_loopback((*ip).into());
    }
    let (low, high) = usable_range();
    let span = high - low - count;
    let seed = RandomState::new().hash_one(std::process::id());
    for attempt in 0..2000u64 {
        let first =
            low + ((seed.wrapping_add(attempt.wrapping_mul(7919))) % u64::from(span)) as u16;
        if let Some(lease) = try_lease(first, count, ips) {
            return lease;
        }
    }
    panic!("no {count} consecutive free ports in {low}..{high} on {ips:?}");
}

fn try_lease(first: u16, count: u16, ips: &[Ipv4Addr]) -> Option<PortLease> {
    let mut locks = Vec::with_capacity(count.into());
    for port in first..first + count {
        locks.push(FileLock::try_acquire(&format!("port-{port}.lock"))?);
        for ip in ips {
            // Bound and dropped at once: only proves nobody else is listening there.
            TcpListener::bind(SocketAddrV4::new(*ip, port)).ok()?;
        }
    }
    Some(PortLease {
        first,
        count,
        _locks: locks,
    })
}

/// `[PORT_LOW, PORT_HIGH)` clipped below the kernel's ephemeral port range.
fn usable_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = if ephemeral_low > PORT_LOW + 1000 {
        PORT_HIGH.min(ephemeral_low)
    } else {
        // Odd kernel setting: accept the rare collision, start-up retries cover it.
        PORT_HIGH
    };
    (PORT_LOW, high)
}
