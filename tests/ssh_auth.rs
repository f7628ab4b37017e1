//! SSH login and host trust against real OpenSSH sshd: user certificates (beside the key,
//! `CertificateFile`, ssh-agent) for ed25519, ecdsa and rsa; host certificates under
//! `@cert-authority`; and the errors a user can act on (encrypted key, unusable key type,
//! host key type mismatch, no SFTP, too many authentication failures).

mod support;

use dropship::config::{Protocol, Secret};
use dropship::transport::TransportError;
use dropship::transport::ssh::{SshParams, SshSession};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use support::{SshServer, TEST_USER};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ssh-keygen -t TYPE` into `dir/name` without passphrase.
fn keygen(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-C", name, "-t", kind]);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run(cmd.arg("-f").arg(&path));
    path
}

fn pub_of(key: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", key.display()))
}

/// Signs `key.pub` with `ca` into `key-cert.pub` for `principal`; `host` makes a host cert.
fn sign(ca: &Path, key: &Path, principal: &str, host: bool) -> PathBuf {
    let mut cmd = Command::new("ssh-keygen");
    cmd.arg("-q")
        .arg("-s")
        .arg(ca)
        .args(["-I", "dropship-test"]);
    if host {
        cmd.arg("-h");
    }
    run(cmd.args(["-n", principal]).arg(pub_of(key)));
    PathBuf::from(format!("{}-cert.pub", key.display()))
}

fn read_line(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

/// Connection parameters for `server` as the test user, trusting its host key, with no
/// credentials.
fn params(server: &SshServer, dir: &Path) -> SshParams {
    if !dir.join("known_hosts").exists() {
        server.write_known_hosts(&dir.join("known_hosts"));
    }
    server.ssh_params(dir)
}

fn connect_err(p: &SshParams) -> String {
    match SshSession::connect(p) {
        Ok(_) => panic!("login should have been refused"),
        Err(e) => e.to_string(),
    }
}

fn logs_in(p: &SshParams, server: &SshServer) {
    if let Err(e) = SshSession::connect(p) {
        panic!("{e}\n--- sshd log ---\n{}", server.log());
    }
}

/// An `ssh-agent -D` on its own socket, killed on drop.
struct Agent {
    child: Child,
    sock: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let sock = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ssh-agent");
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent { child, sock }
    }

    /// `ssh-add KEY` (which adds `KEY-cert.pub` too when it exists).
    fn add(&self, key: &Path) {
        run(Command::new("ssh-add")
            .env("SSH_AUTH_SOCK", &self.sock)
            .arg("-q")
            .arg(key));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server trusting `ca.pub` for user certificates, without password logins.
fn cert_server(test: &str, ca: &Path) -> Option<SshServer> {
    SshServer::builder()
        .config_line(format!("TrustedUserCAKeys {}", pub_of(ca).display()))
        .config_line("PasswordAuthentication no")
        .start_or_skip(test)
}

#[test]
fn user_certificates_beside_the_key_log_in_for_every_key_type() {
    let dir = tempfile::tempdir().unwrap();
    let ca = keygen(dir.path(), "user_ca", "ed25519");
    let Some(server) = cert_server("user_certificates_beside_the_key", &ca) else {
        return;
    };
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let key = keygen(dir.path(), &format!("id_{kind}"), kind);
        let mut p = params(&server, dir.path());
        p.keys = vec![key.clone()];
        // Control: the key alone is not authorized.
        let refused = connect_err(&p);
        assert!(refused.contains("refused"), "{kind}: {refused}");
        sign(&ca, &key, TEST_USER, false);
        logs_in(&p, &server);
    }
    let log = server.log();
    for kind in ["ED25519-CERT", "ECDSA-CERT", "RSA-CERT"] {
        assert!(
            log.contains(&format!("Accepted publickey for {TEST_USER}")) && log.contains(kind),
            "no {kind} login in:\n{log}"
        );
    }
}

#[test]
fn certificate_file_names_a_certificate_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let ca = keygen(dir.path(), "user_ca", "ed25519");
    let Some(server) = cert_server("certificate_file", &ca) else {
        return;
    };
    let key = keygen(dir.path(), "id_ed25519", "ed25519");
    let cert = sign(&ca, &key, TEST_USER, false);
    let elsewhere = dir.path().join("issued.cert");
    std::fs::rename(&cert, &elsewhere).unwrap();
    // An unrelated certificate listed first is not offered with this key.
    let other = keygen(dir.path(), "other", "ed25519");
    let other_cert = sign(&ca, &other, TEST_USER, false);
    let mut p = params(&server, dir.path());
    p.keys = vec![key];
    p.certificates = vec![other_cert, elsewhere];
    logs_in(&p, &server);
}

#[test]
fn certificates_held_by_ssh_agent_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let ca = keygen(dir.path(), "user_ca", "ed25519");
    let Some(server) = cert_server("agent_certificates", &ca) else {
        return;
    };
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let key = keygen(dir.path(), &format!("agent_{kind}"), kind);
        sign(&ca, &key, TEST_USER, false);
        let agent = Agent::start(&dir.path().join(kind).tap_mkdir());
        agent.add(&key);
        let mut p = params(&server, dir.path());
        p.agent = Some(agent.sock.clone());
        logs_in(&p, &server);
    }
    let log = server.log();
    assert!(log.contains("RSA-CERT"), "{log}");
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// A server presenting `hostkey` with its certificate (the first ed25519 host key in the
/// config wins over the harness's).
fn host_cert_server(test: &str, hostkey: &Path, cert: &Path) -> Option<SshServer> {
    SshServer::builder()
        .config_line(format!("HostKey {}", hostkey.display()))
        .config_line(format!("HostCertificate {}", cert.display()))
        .start_or_skip(test)
}

#[test]
fn host_certificate_from_a_trusted_ca_is_accepted_under_strict() {
    let dir = tempfile::tempdir().unwrap();
    let host_ca = keygen(dir.path(), "host_ca", "ed25519");
    let hostkey = keygen(dir.path(), "host_key", "ed25519");
    let cert = sign(&host_ca, &hostkey, "127.0.0.1", true);
    let Some(server) = host_cert_server("host_certificate_trusted", &hostkey, &cert) else {
        return;
    };
    let keys = support::test_keys();
    // known_hosts holds nothing but the CA (besides an unrelated host's key).
    std::fs::write(
        dir.path().join("known_hosts"),
        format!(
            "# CA for the test host\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGAFqT2vZgM7dI1l7l0tYp8JZcS8Vc4YQ7Kv2tnS8hq9\n@cert-authority [127.0.0.1]:*,*.example {}\n",
            read_line(&pub_of(&host_ca))
        ),
    )
    .unwrap();
    let mut p = params(&server, dir.path());
    p.keys = vec![keys.plain.clone()];
    logs_in(&p, &server);
    assert!(
        !p.known_hosts.dropship.exists(),
        "nothing is recorded under strict"
    );
}

#[test]
fn host_certificate_from_an_untrusted_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host_ca = keygen(dir.path(), "host_ca", "ed25519");
    let other_ca = keygen(dir.path(), "other_ca", "ed25519");
    let hostkey = keygen(dir.path(), "host_key", "ed25519");
    let cert = sign(&host_ca, &hostkey, "127.0.0.1", true);
    let Some(server) = host_cert_server("host_certificate_untrusted", &hostkey, &cert) else {
        return;
    };
    std::fs::write(
        dir.path().join("known_hosts"),
        format!(
            "@cert-authority [127.0.0.1]:* {}\n",
            read_line(&pub_of(&other_ca))
        ),
    )
    .unwrap();
    let mut p = params(&server, dir.path());
    p.keys = vec![support::test_keys().plain.clone()];
    let err = connect_err(&p);
    assert!(
        err.contains("signed by a CA not trusted for `[127.0.0.1]:")
            && err.contains("the CA trusted for this host")
            && err.contains("help:"),
        "{err}"
    );

    // A certificate for another name, from the trusted CA.
    let dir2 = tempfile::tempdir().unwrap();
    let hostkey2 = keygen(dir2.path(), "host_key", "ed25519");
    let cert2 = sign(&host_ca, &hostkey2, "db.example", true);
    let Some(server2) = host_cert_server("host_certificate_wrong_name", &hostkey2, &cert2) else {
        return;
    };
    std::fs::write(
        dir2.path().join("known_hosts"),
        format!("@cert-authority * {}\n", read_line(&pub_of(&host_ca))),
    )
    .unwrap();
    let mut p = params(&server2, dir2.path());
    p.keys = vec![support::test_keys().plain.clone()];
    let err = connect_err(&p);
    assert!(
        err.contains("is not valid: it names db.example but not `127.0.0.1`"),
        "{err}"
    );
}

#[test]
fn encrypted_key_without_passphrase_says_so() {
    let Some(server) = SshServer::builder()
        .config_line("PasswordAuthentication no")
        .start_or_skip("encrypted_key_without_passphrase")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keys = support::test_keys();
    let mut p = params(&server, dir.path());
    p.keys = vec![keys.encrypted.clone()];
    let err = connect_err(&p);
    assert!(
        err.contains(&format!(
            "the key {} is encrypted: set `key_passphrase`",
            keys.encrypted.display()
        )),
        "{err}"
    );
    // With the passphrase it logs in; with a wrong one it says which.
    p.key_passphrase = Some(Secret::new(keys.passphrase.to_owned()));
    logs_in(&p, &server);
    p.key_passphrase = Some(Secret::new("wrong".to_owned()));
    let err = connect_err(&p);
    assert!(
        err.contains("could not be decrypted with `key_passphrase`"),
        "{err}"
    );
}

#[test]
fn key_type_libssh2_cannot_use_is_named() {
    let Some(server) = SshServer::builder()
        .config_line("PasswordAuthentication no")
        .start_or_skip("unsupported_key_type")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A FIDO (sk-ssh-ed25519) key file: made by hand, no security key needed to write one.
    use ssh_key::private::{KeypairData, SkEd25519};
    let public =
        ssh_key::public::SkEd25519::new(ssh_key::public::Ed25519PublicKey([7u8; 32]), "ssh:");
    let sk = SkEd25519::new(public, 1, vec![1u8; 32]).unwrap();
    let key = ssh_key::PrivateKey::new(KeypairData::SkEd25519(sk), "fido").unwrap();
    let path = dir.path().join("id_ed25519_sk");
    key.write_openssh_file(&path, ssh_key::LineEnding::LF)
        .unwrap();
    let mut p = params(&server, dir.path());
    p.keys = vec![path.clone()];
    let err = connect_err(&p);
    assert!(
        err.contains(&format!(
            "the key {} is of type sk-ssh-ed25519@openssh.com, which dropship's SSH library (libssh2) cannot sign with",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn host_key_type_mismatch_is_named() {
    let Some(server) = SshServer::builder()
        .host_key(support::HostKeyType::Rsa)
        .start_or_skip("host_key_type_mismatch")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // known_hosts records an ed25519 key for this host; the server has only rsa.
    let old = keygen(dir.path(), "old_host_key", "ed25519");
    std::fs::write(
        dir.path().join("known_hosts"),
        format!(
            "[127.0.0.1]:{} {}\n",
            server.port(),
            read_line(&pub_of(&old))
        ),
    )
    .unwrap();
    let mut p = params(&server, dir.path());
    p.keys = vec![support::test_keys().plain.clone()];
    let err = connect_err(&p);
    assert!(
        err.contains("host key type mismatch: known_hosts records only ssh-ed25519")
            && err.contains("the server offers rsa-sha2-"),
        "{err}"
    );
}

#[test]
fn server_without_sftp_says_use_scp() {
    let Some(server) = SshServer::builder()
        .no_sftp()
        .start_or_skip("server_without_sftp")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut p = params(&server, dir.path());
    p.keys = vec![support::test_keys().plain.clone()];
    let session = SshSession::connect(&p).unwrap();
    let err = match session.into_connection(Protocol::Sftp) {
        Ok(_) => panic!("SFTP should be refused"),
        Err(e) => e,
    };
    assert!(matches!(err, TransportError::Ssh { .. }), "{err:?}");
    let err = err.to_string();
    assert!(
        err.contains("the server offers no SFTP") && err.contains("use `protocol = scp`"),
        "{err}"
    );
    // SCP still works on the same server.
    let session = SshSession::connect(&p).unwrap();
    assert!(session.into_connection(Protocol::Scp).is_ok());
}

#[test]
fn agent_with_many_keys_reports_too_many_authentication_failures() {
    let Some(server) = SshServer::builder()
        .config_line("PasswordAuthentication no")
        .start_or_skip("too_many_authentication_failures")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    for i in 0..8 {
        agent.add(&keygen(dir.path(), &format!("junk{i}"), "ed25519"));
    }
    let mut p = params(&server, dir.path());
    p.agent = Some(agent.sock.clone());
    let err = connect_err(&p);
    assert!(
        err.contains("too many authentication failures")
            && err.contains("the agent offered")
            && err.contains("IdentitiesOnly"),
        "{err}\n--- sshd log ---\n{}",
        server.log()
    );

    // IdentitiesOnly: the rule names an encrypted key (no passphrase given) that the agent
    // holds unlocked, last of nine: only that identity is offered, and it logs in.
    let keys = support::test_keys();
    let askpass = dir.path().join("askpass");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{}'\n", keys.passphrase)).unwrap();
    std::fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    run(Command::new("ssh-add")
        .env("SSH_AUTH_SOCK", &agent.sock)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .arg("-q")
        .arg(&keys.encrypted));
    p.keys = vec![keys.encrypted.clone()];
    p.identities_only = true;
    logs_in(&p, &server);
    // Without IdentitiesOnly the junk keys come first and the server hangs up.
    p.identities_only = false;
    let err = connect_err(&p);
    assert!(err.contains("too many authentication failures"), "{err}");
}

/// `ServerAliveInterval`/`CountMax`: a quiet command is kept alive by keepalives and ends
/// normally; a link that goes silent (a stalling proxy between us and the real sshd) fails
/// the step after about interval × (CountMax + 1), not after the command's own timeout.
#[test]
fn server_alive_keeps_quiet_commands_and_finds_a_dead_link() {
    use dropship::transport::Shell;
    let Some(server) = support::ssh_server_or_skip("server_alive") else {
        return;
    };
    let dir = support::scratch_dir("server_alive");
    let proxy = support::FaultProxy::start(server.addr());
    // The server's key, recorded for the proxy's address.
    std::fs::write(
        dir.path().join("known_hosts"),
        server.host_keys()[0].known_hosts_line(proxy.addr()) + "\n",
    )
    .unwrap();
    let mut p = params(&server, dir.path());
    p.port = proxy.addr().port();
    p.keys = vec![support::test_keys().plain.clone()];
    p.keepalive = Some((Duration::from_secs(1), 2));
    let mut s = SshSession::connect(&p).expect("login");
    let mut lines = Vec::new();
    let status = s
        .exec(
            "sleep 3; echo done",
            Duration::from_secs(30),
            &|| false,
            &mut |_, l| lines.push(l.to_owned()),
        )
        .expect("a quiet command is not a dead link");
    assert_eq!((status, lines.as_slice()), (0, &["done".to_owned()][..]));

    let started = std::time::Instant::now();
    let mut stalled = false;
    let r = s.exec(
        "echo started; sleep 30",
        Duration::from_secs(60),
        &|| false,
        &mut |_, l| {
            if l == "started" && !stalled {
                stalled = true;
                proxy.set_fault_live(support::Fault::StallAfter(0));
            }
        },
    );
    let took = started.elapsed();
    let err = r.expect_err("a silent link must fail").to_string();
    assert!(err.contains("no answer to 2 keepalives"), "{err}");
    assert!(
        took < Duration::from_secs(8),
        "found after {took:?}, expected ~3 s (interval 1 s x (2 + 1))"
    );
}
