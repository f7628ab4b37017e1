//! Smoke tests of the real-server harness in tests/support: each proves one fixture does what
//! later transport and engine tests rely on, against real sshd/vsftpd processes.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use ssh2::{CheckResult, ErrorCode, KnownHostFileKind, MethodType, Session};
use suppaftp::types::FileType;
use suppaftp::{FtpStream, RustlsConnector, RustlsFtpStream};
use support::{
    Fault, FaultProxy, FtpProxies, FtpServer, HostKeyType, LOOPBACK_2, SshServer, TEST_PASSWORD,
    TEST_USER,
};

/// libssh2's LIBSSH2_ERROR_TIMEOUT.
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
const MIB: usize = 1024 * 1024;

fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect()
}

fn ssh_connect(addr: SocketAddr) -> Session {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("tcp connect");
    let mut sess = Session::new().expect("ssh2 session");
    sess.set_timeout(10_000);
    sess.set_tcp_stream(tcp);
    sess.handshake().expect("ssh handshake");
    sess
}

fn ssh_login(addr: SocketAddr) -> Session {
    let sess = ssh_connect(addr);
    sess.userauth_password(TEST_USER, TEST_PASSWORD)
        .expect("password login");
    sess
}

fn exec(sess: &Session, command: &str) -> (String, i32) {
    let mut ch = sess.channel_session().expect("open channel");
    ch.exec(command).expect("exec");
    let mut out = String::new();
    ch.read_to_string(&mut out).expect("read stdout");
    ch.wait_close().expect("close channel");
    (out, ch.exit_status().expect("exit status"))
}

/// Checks the session's host key against a known_hosts line, the way dropship will.
fn host_key_matches(sess: &Session, known_hosts_line: &str, addr: SocketAddr) -> bool {
    let mut kh = sess.known_hosts().expect("known hosts");
    kh.read_str(known_hosts_line, KnownHostFileKind::OpenSSH)
        .expect("parse known_hosts line");
    let (key, _) = sess.host_key().expect("host key");
    matches!(
        kh.check_port(&addr.ip().to_string(), addr.port(), key),
        CheckResult::Match
    )
}

#[test]
fn ssh_password_login_runs_as_test_user() {
    let Some(server) = support::ssh_server_or_skip("ssh_password_login_runs_as_test_user") else {
        return;
    };
    let sess = ssh_login(server.addr());
    assert!(sess.authenticated());
    assert!(
        host_key_matches(&sess, &server.known_hosts_line(), server.addr()),
        "host key does not match {}",
        server.known_hosts_line()
    );
    let (out, status) = exec(&sess, "id -un");
    assert_eq!((out.trim(), status), (TEST_USER, 0));

    // A wrong password must fail, and another server's key must not match.
    let other = ssh_connect(server.addr());
    assert!(other.userauth_password(TEST_USER, "wrong").is_err());
    let stranger = SshServer::start();
    assert!(!host_key_matches(
        &other,
        &stranger.host_keys()[0].known_hosts_line(server.addr()),
        server.addr()
    ));
}

#[test]
fn ssh_key_login_with_and_without_passphrase() {
    let Some(server) = support::ssh_server_or_skip("ssh_key_login_with_and_without_passphrase")
    else {
        return;
    };
    let keys = support::test_keys();

    let sess = ssh_connect(server.addr());
    sess.userauth_pubkey_file(TEST_USER, Some(&keys.plain_pub), &keys.plain, None)
        .expect("key login without passphrase");
    assert_eq!(exec(&sess, "id -un").0.trim(), TEST_USER);

    let sess = ssh_connect(server.addr());
    sess.userauth_pubkey_file(
        TEST_USER,
        Some(&keys.encrypted_pub),
        &keys.encrypted,
        Some(keys.passphrase),
    )
    .expect("key login with passphrase");
    assert_eq!(exec(&sess, "id -un").0.trim(), TEST_USER);

    let sess = ssh_connect(server.addr());
    let wrong = sess.userauth_pubkey_file(
        TEST_USER,
        Some(&keys.encrypted_pub),
        &keys.encrypted,
        Some("not the passphrase"),
    );
    assert!(wrong.is_err(), "wrong passphrase accepted");
}

#[test]
fn sftp_writes_and_reads_in_scratch_dir() {
    let Some(server) = support::ssh_server_or_skip("sftp_writes_and_reads_in_scratch_dir") else {
        return;
    };
    let scratch = support::scratch_dir("sftp_writes_and_reads_in_scratch_dir");
    let sess = ssh_login(server.addr());
    let sftp = sess.sftp().expect("sftp subsystem");
    let path = scratch.join("hello.bin");
    let data = payload(200_000);
    sftp.create(&path)
        .expect("sftp create")
        .write_all(&data)
        .expect("sftp write");
    let mut back = Vec::new();
    sftp.open(&path)
        .expect("sftp open")
        .read_to_end(&mut back)
        .expect("sftp read");
    assert_eq!(back, data);

    // Written by the test user, on this very machine.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&path).expect("file on disk");
    assert_eq!(meta.uid(), support::test_user().uid);
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn sshd_extra_address_and_host_key_types() {
    let Some(server) = SshServer::builder()
        .host_key(HostKeyType::Rsa)
        .host_key(HostKeyType::Ecdsa)
        .host_key(HostKeyType::Ed25519)
        .listen_also(LOOPBACK_2)
        .start_or_skip("sshd_extra_address_and_host_key_types")
    else {
        return;
    };
    let second = server.addrs()[1];
    assert_eq!(second.ip(), LOOPBACK_2);
    let sess = ssh_login(second);
    let (out, _) = exec(&sess, "echo $SSH_CONNECTION");
    // "client_ip client_port server_ip server_port"
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields[2..], ["127.0.0.2", &server.port().to_string()]);

    for (key, pref) in
        server
            .host_keys()
            .iter()
            .zip(["rsa-sha2-512", "ecdsa-sha2-nistp256", "ssh-ed25519"])
    {
        let tcp = TcpStream::connect(second).unwrap();
        let mut sess = Session::new().unwrap();
        sess.set_timeout(10_000);
        sess.method_pref(MethodType::HostKey, pref).unwrap();
        sess.set_tcp_stream(tcp);
        sess.handshake().expect("handshake");
        assert!(
            host_key_matches(&sess, &key.known_hosts_line(second), second),
            "{pref}: host key does not match {}",
            key.known_hosts_line(second)
        );
    }
    let text = server.known_hosts();
    assert_eq!(text.lines().count(), 6, "3 keys x 2 addresses:\n{text}");
}

fn ftp_login(addr: SocketAddr) -> FtpStream {
    let mut ftp = FtpStream::connect_timeout(addr, Duration::from_secs(5)).expect("ftp connect");
    ftp.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    ftp.login(TEST_USER, TEST_PASSWORD).expect("ftp login");
    ftp.transfer_type(FileType::Binary).expect("TYPE I");
    ftp
}

fn ftp_upload(ftp: &mut FtpStream, name: &str, data: &[u8]) -> suppaftp::FtpResult<()> {
    let mut stream = ftp.put_with_stream(name)?;
    stream
        .write_all(data)
        .map_err(suppaftp::FtpError::ConnectionError)?;
    stream.finish()
}

#[test]
fn ftp_plain_upload_and_list() {
    let Some(server) = support::ftp_server_or_skip("ftp_plain_upload_and_list") else {
        return;
    };
    let scratch = support::scratch_dir("ftp_plain_upload_and_list");
    let mut ftp = ftp_login(server.addr());
    ftp.cwd(scratch.as_str()).expect("cwd scratch");
    let data = payload(300_000);
    ftp_upload(&mut ftp, "up.bin", &data).expect("upload");
    let names = ftp.nlst(None).expect("nlst");
    assert_eq!(names, ["up.bin"]);
    let list = ftp.list(None).expect("list");
    // vsftpd shows numeric ids unless text_userdb_names=YES.
    let uid = support::test_user().uid.to_string();
    assert!(
        list[0].contains(&uid) && list[0].contains("300000") && list[0].ends_with("up.bin"),
        "LIST line: {list:?}"
    );
    assert_eq!(ftp.size("up.bin").expect("SIZE"), data.len());
    ftp.quit().unwrap();
    assert_eq!(std::fs::read(scratch.join("up.bin")).unwrap(), data);

    let mut bad = FtpStream::connect(server.addr()).unwrap();
    assert!(bad.login(TEST_USER, "wrong").is_err());
}

#[test]
fn ftps_explicit_tls_upload_trusting_generated_ca() {
    let Some(server) =
        support::ftps_server_or_skip("ftps_explicit_tls_upload_trusting_generated_ca")
    else {
        return;
    };
    let scratch = support::scratch_dir("ftps_explicit_tls_upload");

    // The server refuses a login in clear text.
    let mut clear = FtpStream::connect(server.addr()).unwrap();
    assert!(clear.login(TEST_USER, TEST_PASSWORD).is_err());

    // Not trusting the self-signed certificate must fail the TLS handshake.
    let untrusted = RustlsFtpStream::connect(server.addr())
        .unwrap()
        .into_secure(
            RustlsConnector::from(dropship::transport::tls::client_config(true, None).unwrap()),
            "127.0.0.1",
        );
    assert!(untrusted.is_err(), "untrusted certificate accepted");

    let connector = dropship::transport::tls::client_config(true, Some(server.ca_pem())).unwrap();
    let mut ftps = RustlsFtpStream::connect(server.addr())
        .unwrap()
        .into_secure(RustlsConnector::from(connector), "127.0.0.1")
        .expect("AUTH TLS");
    ftps.login(TEST_USER, TEST_PASSWORD).expect("ftps login");
    ftps.transfer_type(FileType::Binary).unwrap();
    ftps.cwd(scratch.as_str()).unwrap();
    let data = payload(MIB);
    let mut up = ftps.put_with_stream("secure.bin").expect("STOR");
    up.write_all(&data).unwrap();
    up.finish().expect("upload finished");
    assert_eq!(ftps.nlst(None).unwrap(), ["secure.bin"]);
    ftps.quit().unwrap();
    assert_eq!(std::fs::read(scratch.join("secure.bin")).unwrap(), data);
}

/// Waits until `path` stops growing and returns its size.
fn settled_size(path: &Path) -> u64 {
    let mut last = u64::MAX;
    for _ in 0..50 {
        let now = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if now == last {
            return now;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

#[test]
fn ftp_data_proxy_passes_then_cuts_upload_midway() {
    let Some(server) = FtpServer::builder()
        .pasv_address(LOOPBACK_2)
        .start_or_skip("ftp_data_proxy_passes_then_cuts_upload_midway")
    else {
        return;
    };
    let proxies = FtpProxies::start(&server);
    let scratch = support::scratch_dir("ftp_data_proxy_cut");
    let data = payload(MIB);

    // Pass: the whole upload crosses the data proxy.
    let mut ftp = ftp_login(proxies.control_addr());
    ftp.cwd(scratch.as_str()).unwrap();
    ftp_upload(&mut ftp, "whole.bin", &data).expect("upload through proxies");
    assert_eq!(std::fs::read(scratch.join("whole.bin")).unwrap(), data);
    assert_eq!(proxies.data.bytes_up(), MIB as u64);
    assert!(proxies.control.connections() == 1 && proxies.data.connections() == 1);

    // Cut the data connection after 256 KiB: the upload fails, the server keeps a part.
    const CUT: u64 = 256 * 1024;
    proxies.data.set_fault(Fault::CutAfter(CUT));
    let result = ftp_upload(&mut ftp, "part.bin", &data);
    assert!(result.is_err(), "upload survived a cut data connection");
    assert_eq!(proxies.data.cuts(), 1);
    let size = settled_size(&scratch.join("part.bin"));
    assert!(
        size > 0 && size <= CUT,
        "server should hold a partial file, has {size} bytes"
    );
    eprintln!("cut upload: server kept {size} of {CUT} forwarded bytes; client saw {result:?}");
}

#[test]
fn ftp_cut_first_data_connection_then_retry_succeeds() {
    let Some(server) = FtpServer::builder()
        .pasv_address(LOOPBACK_2)
        .start_or_skip("ftp_cut_first_data_connection_then_retry_succeeds")
    else {
        return;
    };
    let proxies = FtpProxies::start(&server);
    let scratch = support::scratch_dir("ftp_cut_first_then_retry");
    let data = payload(MIB);
    proxies.data.cut_first_connection_after(100_000);

    let mut ftp = ftp_login(proxies.control_addr());
    ftp.cwd(scratch.as_str()).unwrap();
    assert!(ftp_upload(&mut ftp, "f.bin", &data).is_err());
    drop(ftp);

    // A retry on a fresh session overwrites the partial file.
    let mut ftp = ftp_login(proxies.control_addr());
    ftp.cwd(scratch.as_str()).unwrap();
    ftp_upload(&mut ftp, "f.bin", &data).expect("retry upload");
    assert_eq!(std::fs::read(scratch.join("f.bin")).unwrap(), data);
    assert_eq!((proxies.data.connections(), proxies.data.cuts()), (2, 1));
}

#[test]
fn ftps_through_proxies_uses_data_proxy() {
    let Some(server) = FtpServer::builder()
        .tls(true)
        .pasv_address(LOOPBACK_2)
        .start_or_skip("ftps_through_proxies_uses_data_proxy")
    else {
        return;
    };
    let proxies = FtpProxies::start(&server);
    let scratch = support::scratch_dir("ftps_through_proxies");
    let mut ftps = RustlsFtpStream::connect(proxies.control_addr())
        .unwrap()
        .into_secure(RustlsConnector::from(server.tls_connector()), "127.0.0.1")
        .expect("AUTH TLS via proxy");
    ftps.login(TEST_USER, TEST_PASSWORD).unwrap();
    ftps.transfer_type(FileType::Binary).unwrap();
    ftps.cwd(scratch.as_str()).unwrap();
    let data = payload(MIB);
    let mut up = ftps.put_with_stream("s.bin").unwrap();
    up.write_all(&data).unwrap();
    up.finish().expect("FTPS upload via proxy");
    assert_eq!(std::fs::read(scratch.join("s.bin")).unwrap(), data);
    // TLS framing makes the wire a little bigger than the file.
    assert!(proxies.data.bytes_up() > MIB as u64);
}

#[test]
fn proxy_refuse_fails_ssh_handshake() {
    let Some(server) = support::ssh_server_or_skip("proxy_refuse_fails_ssh_handshake") else {
        return;
    };
    let proxy = FaultProxy::start(server.addr());
    proxy.set_fault(Fault::Refuse);
    let tcp = TcpStream::connect(proxy.addr()).unwrap();
    let mut sess = Session::new().unwrap();
    sess.set_timeout(5_000);
    sess.set_tcp_stream(tcp);
    assert!(
        sess.handshake().is_err(),
        "handshake through a refusing proxy"
    );
    assert_eq!(proxy.refused(), 1);

    proxy.set_fault(Fault::Pass);
    let sess = ssh_login(proxy.addr());
    assert_eq!(exec(&sess, "id -un").0.trim(), TEST_USER);
}

#[test]
fn proxy_stall_makes_ssh_time_out() {
    let Some(server) = support::ssh_server_or_skip("proxy_stall_makes_ssh_time_out") else {
        return;
    };
    let proxy = FaultProxy::start(server.addr());

    // Stall a live, authenticated session: the next request times out.
    let sess = ssh_login(proxy.addr());
    proxy.set_fault_live(Fault::StallAfter(0));
    sess.set_timeout(1_000);
    let start = Instant::now();
    let err = sess
        .channel_session()
        .map(|_| ())
        .expect_err("stalled channel open");
    let waited = start.elapsed();
    assert_eq!(
        err.code(),
        ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT),
        "{err}"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );

    // Stalled from the first byte: the handshake itself times out.
    let tcp = TcpStream::connect(proxy.addr()).unwrap();
    let mut fresh = Session::new().unwrap();
    fresh.set_timeout(1_000);
    fresh.set_tcp_stream(tcp);
    let err = fresh
        .handshake()
        .expect_err("handshake through a stalled proxy");
    assert_eq!(
        err.code(),
        ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT),
        "{err}"
    );
}

#[test]
fn proxy_cut_first_ssh_connection_then_reconnect() {
    let Some(server) = support::ssh_server_or_skip("proxy_cut_first_ssh_connection_then_reconnect")
    else {
        return;
    };
    let scratch = support::scratch_dir("proxy_cut_first_ssh_connection");
    let proxy = FaultProxy::start(server.addr());
    proxy.cut_first_connection_after(300_000);
    let data = payload(MIB);
    let path = scratch.join("big.bin");

    let upload = |addr| -> Result<(), String> {
        let sess = ssh_login(addr);
        let sftp = sess.sftp().map_err(|e| e.to_string())?;
        let mut f = sftp.create(&path).map_err(|e| e.to_string())?;
        f.write_all(&data).map_err(|e| e.to_string())?;
        f.fsync().map_err(|e| e.to_string())
    };
    assert!(upload(proxy.addr()).is_err(), "upload through a cut link");
    assert_eq!(proxy.cuts(), 1);
    assert_eq!(proxy.bytes_up(), 300_000);

    upload(proxy.addr()).expect("second connection passes");
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(proxy.connections(), 2);
}
