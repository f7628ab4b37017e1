//! A fault-injecting TCP forwarder to put between a client and a test server.
//!
//! Plain std threads: one acceptor polling every listening socket, two pump threads per
//! connection. Pumps use 50 ms socket timeouts, so a fault set from the test (or a drop)
//! takes effect on live connections within that time without any cross-thread wake-ups.
//!
//! Faults count *client→server* bytes per connection, from the moment it was accepted:
//! `CutAfter(n)` forwards exactly `n` of them and then resets both sides (RST, like a dead
//! link or a killed middlebox), `StallAfter(n)` forwards `n` and then freezes both directions
//! with the sockets left open (like a black-holed route).
//!
//! A connection takes its fault when it is accepted: [`FaultProxy::set_fault`] only affects
//! connections accepted after the call, so a connection still winding down from the previous
//! step is never hit by accident. [`FaultProxy::set_fault_live`] also hits the open ones (a
//! connection that already carried more than `n` bytes is then cut or stalled at once).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{FtpServer, LOOPBACK_2, assert_loopback, assert_loopback_addr};

const TICK: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BUF: usize = 64 * 1024;

/// What the proxy does to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// After this many client→server bytes, reset both sides.
    CutAfter(u64),
    /// After this many client→server bytes, stop forwarding either way; keep sockets open.
    StallAfter(u64),
    /// Accept, then close at once without contacting the server.
    Refuse,
    /// Forward everything, but flip the client→server byte at this offset: what a bad
    /// NIC, disk or middlebox does to a protocol with no integrity check of its own (FTP).
    CorruptAt(u64),
}

/// Which of the connections accepted after the fault was set get it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Every,
    /// Only the next n connections; later ones pass (so a retry succeeds).
    First(usize),
}

#[derive(Clone, Copy, Debug)]
struct Policy {
    fault: Fault,
    scope: Scope,
    /// Accept index of the first connection the policy applies to.
    base: usize,
}

struct Shared {
    policy: Mutex<Policy>,
    live: Mutex<Vec<Weak<Conn>>>,
    stop: AtomicBool,
    connections: AtomicUsize,
    open: AtomicUsize,
    cuts: AtomicUsize,
    refused: AtomicUsize,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn fault_for(&self, index: usize) -> Fault {
        let p = *lock(&self.policy);
        match p.scope {
            _ if index < p.base => Fault::Pass,
            Scope::Every => p.fault,
            Scope::First(n) if index - p.base < n => p.fault,
            Scope::First(_) => Fault::Pass,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running proxy; stops (closing every connection) on drop.
pub struct FaultProxy {
    listen: Vec<SocketAddr>,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Forwards a free port on 127.0.0.1 to `target`, in [`Fault::Pass`] mode.
    pub fn start(target: SocketAddr) -> FaultProxy {
        Self::start_on(Ipv4Addr::LOCALHOST, target)
    }

    /// Forwards a free port on `listen_ip` (127.0.0.0/8) to `target`.
    pub fn start_on(listen_ip: Ipv4Addr, target: SocketAddr) -> FaultProxy {
        assert_loopback(listen_ip.into());
        assert_loopback_addr(target);
        let listener = TcpListener::bind((listen_ip, 0))
            .unwrap_or_else(|e| panic!("proxy bind {listen_ip}:0: {e}"));
        Self::spawn(vec![(listener, target)])
    }

    /// Forwards `listen_ip:P` to `target_ip:P` for every P in `ports`, as one proxy with shared
    /// fault settings and counters (e.g. an FTP server's passive range).
    pub fn start_range(
        listen_ip: Ipv4Addr,
        target_ip: Ipv4Addr,
        ports: RangeInclusive<u16>,
    ) -> FaultProxy {
        assert_loopback(listen_ip.into());
        assert_loopback(target_ip.into());
        assert_ne!(
            listen_ip, target_ip,
            "a range proxy cannot forward to itself"
        );
        let pairs = ports
            .map(|p| {
                let l = TcpListener::bind((listen_ip, p))
                    .unwrap_or_else(|e| panic!("proxy bind {listen_ip}:{p}: {e}"));
                (l, SocketAddr::from((target_ip, p)))
            })
            .collect();
        Self::spawn(pairs)
    }

    fn spawn(pairs: Vec<(TcpListener, SocketAddr)>) -> FaultProxy {
        let listen = pairs
            .iter()
            .map(|(l, _)| l.local_addr().expect("proxy local addr"))
            .collect();
        for (l, _) in &pairs {
            l.set_nonblocking(true).expect("nonblocking listener");
        }
        let shared = Arc::new(Shared {
            policy: Mutex::new(Policy {
                fault: Fault::Pass,
                scope: Scope::Every,
                base: 0,
            }),
            live: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            pumps: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(&pairs, &s))
            .expect("start proxy thread");
        FaultProxy {
            listen,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The (first) listening address.
    pub fn addr(&self) -> SocketAddr {
        self.listen[0]
    }

    /// Every listening address (one per port for a range proxy).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Applies `fault` to every connection accepted from now on (open ones keep theirs).
    pub fn set_fault(&self, fault: Fault) {
        self.set_fault_scoped(fault, Scope::Every);
    }

    /// Applies `fault` to the connections accepted from now on that `scope` selects.
    pub fn set_fault_scoped(&self, fault: Fault, scope: Scope) {
        let base = self.shared.connections.load(Ordering::SeqCst);
        *lock(&self.shared.policy) = Policy { fault, scope, base };
    }

    /// Applies `fault` to every open connection as well as to new ones. On an open
    /// connection, [`Fault::Refuse`] resets it at once.
    pub fn set_fault_live(&self, fault: Fault) {
        self.set_fault(fault);
        let live_fault = match fault {
            Fault::Refuse => Fault::CutAfter(0),
            f => f,
        };
        let mut live = lock(&self.shared.live);
        live.retain(|w| w.strong_count() > 0);
        for conn in live.iter().filter_map(Weak::upgrade) {
            *lock(&conn.fault) = live_fault;
        }
    }

    /// Cuts the next connection after `n` client→server bytes; later connections pass.
    pub fn cut_first_connection_after(&self, n: u64) {
        self.set_fault_scoped(Fault::CutAfter(n), Scope::First(1));
    }

    /// The fault and scope given to new connections.
    pub fn fault(&self) -> (Fault, Scope) {
        let p = *lock(&self.shared.policy);
        (p.fault, p.scope)
    }

    /// Connections accepted so far (including refused ones).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections currently being forwarded.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Connections reset by [`Fault::CutAfter`].
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Connections closed by [`Fault::Refuse`].
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Client→server bytes forwarded, all connections.
    pub fn bytes_up(&self) -> u64 {
        self.shared.bytes_up.load(Ordering::SeqCst)
    }

    /// Server→client bytes forwarded, all connections.
    pub fn bytes_down(&self) -> u64 {
        self.shared.bytes_down.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections were accepted.
    pub fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        super::wait_until(timeout, || self.connections() >= n)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let pumps = std::mem::take(&mut *lock(&self.shared.pumps));
        for p in pumps {
            let _ = p.join();
        }
    }
}

fn accept_loop(pairs: &[(TcpListener, SocketAddr)], shared: &Arc<Shared>) {
    let mut fds: Vec<libc::pollfd> = pairs
        .iter()
        .map(|(l, _)| libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !shared.stop.load(Ordering::SeqCst) {
        // SAFETY: fds points to fds.len() initialised pollfd structs for open sockets.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if n <= 0 {
            continue;
        }
        for (i, (listener, target)) in pairs.iter().enumerate() {
            if fds[i].revents == 0 {
                continue;
            }
            fds[i].revents = 0;
            while let Ok((client, _)) = listener.accept() {
                handle(client, *target, shared);
            }
        }
        lock(&shared.pumps).retain(|h| !h.is_finished());
        lock(&shared.live).retain(|w| w.strong_count() > 0);
    }
}

fn handle(client: TcpStream, target: SocketAddr, shared: &Arc<Shared>) {
    let index = shared.connections.fetch_add(1, Ordering::SeqCst);
    let fault = shared.fault_for(index);
    if fault == Fault::Refuse {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        drop(client);
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        return;
    };
    for s in [&client, &server] {
        let _ = s.set_nonblocking(false);
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(TICK));
        let _ = s.set_write_timeout(Some(TICK));
    }
    let conn = Arc::new(Conn {
        fault: Mutex::new(fault),
        client,
        server,
        up: AtomicU64::new(0),
        aborted: AtomicBool::new(false),
        pumps_done: AtomicUsize::new(0),
    });
    shared.open.fetch_add(1, Ordering::SeqCst);
    lock(&shared.live).push(Arc::downgrade(&conn));
    let mut pumps = lock(&shared.pumps);
    for up in [true, false] {
        let (c, s) = (Arc::clone(&conn), Arc::clone(shared));
        let h = std::thread::Builder::new()
            .name("fault-proxy-pump".into())
            .spawn(move || {
                pump(&c, &s, up);
                // The second pump to finish ends the connection.
                if c.pumps_done.fetch_add(1, Ordering::SeqCst) == 1 {
                    s.open.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .expect("start pump thread");
        pumps.push(h);
    }
}

struct Conn {
    fault: Mutex<Fault>,
    client: TcpStream,
    server: TcpStream,
    /// Client→server bytes forwarded on this connection.
    up: AtomicU64,
    aborted: AtomicBool,
    pumps_done: AtomicUsize,
}

impl Conn {
    /// Makes the final close send RST on both sides and tells both pumps to quit.
    fn abort(&self) -> bool {
        for s in [&self.client, &self.server] {
            set_linger_zero(s);
        }
        !self.aborted.swap(true, Ordering::SeqCst)
    }
}

fn set_linger_zero(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// What a pump may do right now under the connection's fault.
enum Gate {
    /// Forward at most this many bytes.
    Open(u64),
    Stall,
    Cut,
}

fn gate(conn: &Conn, up: bool) -> Gate {
    let sent = conn.up.load(Ordering::SeqCst);
    match *lock(&conn.fault) {
        Fault::CutAfter(n) if sent >= n => Gate::Cut,
        Fault::StallAfter(n) if sent >= n => Gate::Stall,
        Fault::CutAfter(n) | Fault::StallAfter(n) if up => Gate::Open(n - sent),
        _ => Gate::Open(u64::MAX),
    }
}

fn pump(conn: &Conn, shared: &Shared, up: bool) {
    let (mut src, mut dst) = if up {
        (&conn.client, &conn.server)
    } else {
        (&conn.server, &conn.client)
    };
    let mut buf = vec![0u8; BUF];
    loop {
        if shared.stop.load(Ordering::SeqCst) || conn.aborted.load(Ordering::SeqCst) {
            return;
        }
        let limit = match gate(conn, up) {
            Gate::Cut => return cut(conn, shared),
            Gate::Stall => {
                std::thread::sleep(TICK);
                continue;
            }
            Gate::Open(n) => usize::try_from(n).unwrap_or(usize::MAX).min(BUF),
        };
        let k = match src.read(&mut buf[..limit]) {
            Ok(0) => {
                // Half-close, as the peer did.
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Ok(k) => k,
            Err(e) if is_tick(&e) => continue,
            Err(_) => {
                // The peer reset: pass the reset on.
                conn.abort();
                return;
            }
        };
        if let (true, Fault::CorruptAt(at)) = (up, *lock(&conn.fault)) {
            let sent = conn.up.load(Ordering::SeqCst);
            if (sent..sent + k as u64).contains(&at) {
                buf[(at - sent) as usize] ^= 0xFF;
            }
        }
        // The fault may have changed while read() blocked: gate the chunk again.
        let mut pending = &buf[..k];
        while !pending.is_empty() {
            if shared.stop.load(Ordering::SeqCst) || conn.aborted.load(Ordering::SeqCst) {
                return;
            }
            let allowed = match gate(conn, up) {
                Gate::Cut => return cut(conn, shared),
                Gate::Stall => {
                    std::thread::sleep(TICK);
                    continue;
                }
                Gate::Open(n) => usize::try_from(n).unwrap_or(usize::MAX).min(pending.len()),
            };
            let (chunk, rest) = pending.split_at(allowed);
            if !write_all(&mut dst, chunk, conn, shared) {
                conn.abort();
                return;
            }
            let n = chunk.len() as u64;
            if up {
                conn.up.fetch_add(n, Ordering::SeqCst);
                shared.bytes_up.fetch_add(n, Ordering::SeqCst);
            } else {
                shared.bytes_down.fetch_add(n, Ordering::SeqCst);
            }
            pending = rest;
        }
    }
}

fn cut(conn: &Conn, shared: &Shared) {
    if conn.abort() {
        shared.cuts.fetch_add(1, Ordering::SeqCst);
    }
}

fn write_all(dst: &mut &TcpStream, mut data: &[u8], conn: &Conn, shared: &Shared) -> bool {
    while !data.is_empty() {
        if shared.stop.load(Ordering::SeqCst) || conn.aborted.load(Ordering::SeqCst) {
            return false;
        }
        match dst.write(data) {
            Ok(0) => return false,
            Ok(k) => data = &data[k..],
            Err(e) if is_tick(&e) => {}
            Err(_) => return false,
        }
    }
    true
}

fn is_tick(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Proxies in front of an FTP server started with `pasv_address(127.0.0.2)`:
///
/// * `control`: 127.0.0.2:(free port) → the server's control port on 127.0.0.1;
/// * `data`: 127.0.0.2:P → 127.0.0.1:P for every P in the server's passive range.
///
/// The server announces 127.0.0.2 in PASV replies, so every data connection goes through
/// `data`, where faults can cut it. vsftpd's `pasv_promiscuous=NO` check (data peer IP must
/// equal control peer IP) passes because both proxies connect from 127.0.0.1.
pub struct FtpProxies {
    pub control: FaultProxy,
    pub data: FaultProxy,
}

impl FtpProxies {
    pub fn start(ftp: &FtpServer) -> FtpProxies {
        assert_eq!(
            ftp.pasv_address(),
            LOOPBACK_2,
            "FtpProxies needs FtpServer::builder().pasv_address(LOOPBACK_2)"
        );
        FtpProxies {
            control: FaultProxy::start_on(LOOPBACK_2, ftp.addr()),
            data: FaultProxy::start_range(LOOPBACK_2, Ipv4Addr::LOCALHOST, ftp.pasv_ports()),
        }
    }

    /// Where the client connects for the control channel.
    pub fn control_addr(&self) -> SocketAddr {
        self.control.addr()
    }
}
