//! Upload throughput lab: how fast can ssh2 (libssh2) and suppaftp push one big file?
//!
//! Not part of the product. `bench/upload_lab.sh` starts throwaway sshd/vsftpd servers,
//! runs OpenSSH/curl baselines next to these variants and prints a table.
//!
//! ```text
//! upload_lab algs  --port P --key K
//! upload_lab sftp  --port P --key K --src F --dst PATH [--cipher C] [--mac M] [--buf N] [--streams N]
//! upload_lab scp   --port P --key K --src F --dst PATH [--cipher C] [--mac M] [--buf N]
//! upload_lab ftp   --port P --user U --pass PW --src F --dst NAME [--buf N] [--tls] [--copy]
//! ```
//! Prints one line: `RESULT <label> <bytes> <seconds> <MB/s> <negotiated>`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use ssh2::{MethodType, OpenFlags, OpenType, Session};

struct Opts {
    mode: String,
    host: String,
    port: u16,
    user: String,
    pass: String,
    key: String,
    src: String,
    dst: String,
    cipher: Option<String>,
    mac: Option<String>,
    buf: usize,
    streams: usize,
    tls: bool,
    copy: bool,
    sendfile: bool,
    tls12: bool,
    label: String,
}

fn parse() -> Opts {
    let mut a = std::env::args().skip(1);
    let mode = a.next().expect("mode");
    let mut o = Opts {
        mode,
        host: "127.0.0.1".into(),
        port: 22,
        user: "root".into(),
        pass: String::new(),
        key: String::new(),
        src: String::new(),
        dst: String::new(),
        cipher: None,
        mac: None,
        buf: 1 << 20,
        streams: 1,
        tls: false,
        copy: false,
        sendfile: false,
        tls12: false,
        label: String::new(),
    };
    while let Some(k) = a.next() {
        let mut v = || a.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--host" => o.host = v(),
            "--port" => o.port = v().parse().unwrap(),
            "--user" => o.user = v(),
            "--pass" => o.pass = v(),
            "--key" => o.key = v(),
            "--src" => o.src = v(),
            "--dst" => o.dst = v(),
            "--cipher" => o.cipher = Some(v()),
            "--mac" => o.mac = Some(v()),
            "--buf" => o.buf = parse_size(&v()),
            "--streams" => o.streams = v().parse().unwrap(),
            "--label" => o.label = v(),
            "--tls" => o.tls = true,
            "--copy" => o.copy = true,
            "--sendfile" => o.sendfile = true,
            "--tls12" => o.tls12 = true,
            _ => panic!("unknown option {k}"),
        }
    }
    o
}

fn parse_size(s: &str) -> usize {
    let (n, m) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    n.parse::<usize>().unwrap() * m
}

/// One authenticated session with our algorithm preferences. Preferences must be set
/// before `handshake()`; afterwards they are ignored.
fn session(o: &Opts) -> Session {
    let tcp = TcpStream::connect((o.host.as_str(), o.port)).expect("connect");
    tcp.set_nodelay(true).ok();
    let mut s = Session::new().unwrap();
    s.set_tcp_stream(tcp);
    s.set_compress(false);
    if let Some(c) = &o.cipher {
        s.method_pref(MethodType::CryptCs, c).unwrap();
        s.method_pref(MethodType::CryptSc, c).unwrap();
    }
    if let Some(m) = &o.mac {
        s.method_pref(MethodType::MacCs, m).unwrap();
        s.method_pref(MethodType::MacSc, m).unwrap();
    }
    // Blocking session; a timeout turns a dead peer into an error instead of a hang.
    s.set_timeout(60_000);
    s.handshake().expect("handshake");
    s.userauth_pubkey_file(&o.user, None, Path::new(&o.key), None)
        .expect("auth");
    s
}

fn negotiated(s: &Session) -> String {
    format!(
        "{}/{}",
        s.methods(MethodType::CryptCs).unwrap_or("?"),
        s.methods(MethodType::MacCs).unwrap_or("?")
    )
}

fn report(o: &Opts, bytes: u64, t: Duration, extra: &str) {
    let secs = t.as_secs_f64();
    let label = if o.label.is_empty() {
        o.mode.clone()
    } else {
        o.label.clone()
    };
    println!(
        "RESULT {label} {bytes} {secs:.3} {:.1} {extra}",
        bytes as f64 / secs / 1e6
    );
}

fn algs(o: &Opts) {
    let s = session(o);
    for (name, t) in [
        ("kex", MethodType::Kex),
        ("hostkey", MethodType::HostKey),
        ("crypt_cs", MethodType::CryptCs),
        ("mac_cs", MethodType::MacCs),
    ] {
        println!("supported {name}: {:?}", s.supported_algs(t).unwrap());
        println!("negotiated {name}: {:?}", s.methods(t));
    }
}

/// Upload `[off, off+len)` of the source into the already created remote file.
fn sftp_range(o: &Opts, off: u64, len: u64) -> String {
    let s = session(o);
    let sftp = s.sftp().expect("sftp");
    // WRITE without TRUNCATE: several streams share one remote file.
    let mut f = sftp
        .open_mode(Path::new(&o.dst), OpenFlags::WRITE, 0o644, OpenType::File)
        .expect("open remote");
    f.seek(SeekFrom::Start(off)).unwrap();
    let src = File::open(&o.src).unwrap();
    let mut buf = vec![0u8; o.buf];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], off + done).unwrap();
        // libssh2 splits one write into 30000-byte SFTP WRITE requests and pipelines them.
        f.write_all(&buf[..n]).expect("sftp write");
        done += n as u64;
    }
    f.close().ok();
    negotiated(&s)
}

fn sftp(o: &Opts) {
    let size = std::fs::metadata(&o.src).unwrap().len();
    let t0 = Instant::now();
    {
        // Create/truncate once, so every range writer opens without TRUNCATE.
        let s = session(o);
        let sftp = s.sftp().unwrap();
        sftp.open_mode(
            Path::new(&o.dst),
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            0o644,
            OpenType::File,
        )
        .expect("create remote");
    }
    let n = o.streams as u64;
    // Split on 1 MiB boundaries.
    let chunk = size.div_ceil(n).div_ceil(1 << 20) * (1 << 20);
    let mut neg = String::new();
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..n)
            .filter_map(|i| {
                let off = i * chunk;
                (off < size).then(|| {
                    let len = chunk.min(size - off);
                    sc.spawn(move || sftp_range(o, off, len))
                })
            })
            .collect();
        for h in hs {
            neg = h.join().unwrap();
        }
    });
    report(o, size, t0.elapsed(), &neg);
}

fn scp(o: &Opts) {
    let size = std::fs::metadata(&o.src).unwrap().len();
    let t0 = Instant::now();
    let s = session(o);
    let mut ch = s
        .scp_send(Path::new(&o.dst), 0o644, size, None)
        .expect("scp_send");
    let mut src = File::open(&o.src).unwrap();
    let mut buf = vec![0u8; o.buf];
    loop {
        let n = src.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        ch.write_all(&buf[..n]).expect("scp write");
    }
    ch.send_eof().unwrap();
    ch.wait_eof().unwrap();
    ch.close().unwrap();
    ch.wait_close().unwrap();
    report(o, size, t0.elapsed(), &negotiated(&s));
}

fn ftp(o: &Opts) {
    use suppaftp::types::FileType;
    let size = std::fs::metadata(&o.src).unwrap().len();
    let t0 = Instant::now();
    let addr = format!("{}:{}", o.host, o.port);
    let mut src = File::open(&o.src).unwrap();
    if o.tls {
        use suppaftp::native_tls::TlsConnector;
        use suppaftp::{NativeTlsConnector, NativeTlsFtpStream};
        let mut b = TlsConnector::builder();
        b.danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true);
        if o.tls12 {
            // vsftpd 3.0.3 cannot turn TLS 1.3 off; capping the client makes ssl_ciphers count.
            b.max_protocol_version(Some(suppaftp::native_tls::Protocol::Tlsv12));
        }
        let ctx = b.build().unwrap();
        let ftp = NativeTlsFtpStream::connect(&addr).unwrap();
        let mut ftp = ftp
            .into_secure(NativeTlsConnector::from(ctx), &o.host)
            .expect("AUTH TLS");
        ftp.login(&o.user, &o.pass).unwrap();
        ftp.transfer_type(FileType::Binary).unwrap();
        let mut up = ftp.put_with_stream(&o.dst).expect("STOR");
        let n = pump(o, &mut src, &mut up);
        up.finish().expect("226");
        ftp.quit().ok();
        report(
            o,
            n,
            t0.elapsed(),
            if o.tls12 {
                "native-tls,TLS1.2"
            } else {
                "native-tls,TLS1.3"
            },
        );
    } else {
        let mut ftp = suppaftp::FtpStream::connect(&addr).unwrap();
        ftp.login(&o.user, &o.pass).unwrap();
        ftp.transfer_type(FileType::Binary).unwrap();
        let mut up = ftp.put_with_stream(&o.dst).expect("STOR");
        let n = if o.sendfile {
            // Plain data connection: File -> TcpStream lets std use sendfile(2), no user copy.
            match up.get_mut() {
                suppaftp::DataStream::Tcp(tcp) => std::io::copy(&mut src, tcp).unwrap(),
                suppaftp::DataStream::Ssl(_) => unreachable!(),
            }
        } else {
            pump(o, &mut src, &mut up)
        };
        up.finish().expect("226");
        ftp.quit().ok();
        report(
            o,
            n,
            t0.elapsed(),
            if o.sendfile {
                "plain+sendfile"
            } else {
                "plain"
            },
        );
    }
    assert_eq!(std::fs::metadata(&o.src).unwrap().len(), size);
}

/// `--copy`: std::io::copy (8 KiB stack buffer) as suppaftp's put_file does;
/// otherwise a manual loop with a `--buf` heap buffer.
fn pump(o: &Opts, src: &mut File, dst: &mut impl Write) -> u64 {
    if o.copy {
        return std::io::copy(src, dst).unwrap();
    }
    let mut buf = vec![0u8; o.buf];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n]).unwrap();
        total += n as u64;
    }
    dst.flush().unwrap();
    total
}

fn main() {
    let o = parse();
    match o.mode.as_str() {
        "algs" => algs(&o),
        "sftp" => sftp(&o),
        "scp" => scp(&o),
        "ftp" => ftp(&o),
        m => panic!("unknown mode {m}"),
    }
}
