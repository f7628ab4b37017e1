//! The one protocol switch: a planned target and its rule become the parameters of a
//! transport (which never sees a plan), and a connection.

use crate::config::{Rule, Source};
use crate::plan::Target;
use crate::transport::ftp::{self, FtpParams};
use crate::transport::known_hosts::{self, KnownHostsFiles};
use crate::transport::ssh::{self, SshParams};
use crate::transport::{Connection, Shell, TransportError, local};
use std::sync::Arc;

/// How to reach a planned target over SSH; `port` is the SSH port to use (the target's
/// port for scp/sftp, [`Target::ssh_port`] for the commands of ftp rules).
pub fn ssh_params(
    target: &Target,
    port: u16,
    rule: &Rule,
    known_hosts: &KnownHostsFiles,
) -> SshParams {
    // An ftp rule's commands log in over SSH: ssh_config speaks for that login (its
    // `HostName`, `User` when neither the rule nor netrc names one, `IdentityFile`).
    let h = target.ssh_for_shell();
    let (address, login, keys) = if target.protocol.is_ftp() {
        (
            h.host_name
                .clone()
                .unwrap_or_else(|| target.host.name.clone()),
            match (&h.user, target.creds.login_source) {
                (Some(u), Source::Default) => u.clone(),
                _ => target.creds.login.clone(),
            },
            if rule.key.is_none() && !h.identity_files.is_empty() {
                h.identity_files.clone()
            } else {
                target.creds.keys.clone()
            },
        )
    } else {
        (
            target.address.clone(),
            target.creds.login.clone(),
            target.creds.keys.clone(),
        )
    };
    SshParams {
        host: target.host.name.clone(),
        address: address.clone(),
        port,
        login,
        password: target
            .creds
            .password
            .clone()
            .zip(target.creds.password_source),
        keys,
        key_passphrase: target.creds.key_passphrase.clone(),
        certificates: Vec::new(),
        identities_only: false,
        agent: None,
        timeout: rule.timeout,
        host_key: rule.host_key,
        known_hosts: known_hosts.clone(),
        known_hosts_also: Vec::new(),
        host_key_name: address,
        connect_timeout: rule.timeout,
        use_agent: true,
        address_family: Default::default(),
        refusal: target.ssh_refusal.clone(),
        route: target.route.clone(),
        keepalive: None,
    }
    .with_ssh_config(target.ssh_for_shell(), rule)
}

/// How to reach a planned target over FTP.
pub fn ftp_params(target: &Target, rule: &crate::config::Rule) -> FtpParams {
    FtpParams {
        host: target.host.name.clone(),
        address: target.address.clone(),
        port: target.port.unwrap_or(21),
        login: target.creds.login.clone(),
        password: target
            .creds
            .password
            .clone()
            .zip(target.creds.password_source),
        account: target.creds.account.clone(),
        tls: rule.protocol == crate::config::Protocol::Ftps,
        tls_verify: rule.tls_verify,
        tls_ca: rule.tls_ca.clone(),
        timeout: rule.timeout,
    }
}

/// Opens a connection to `target` as its rule's protocol says. FTP targets get an SSH
/// shell (on `ssh_port`) only when the rule has commands to run there.
pub fn connect(
    target: &Target,
    rule: &Rule,
    known_hosts: &known_hosts::KnownHostsFiles,
) -> Result<Connection, TransportError> {
    use crate::config::Protocol;
    if let Some(why) = &target.ssh_refusal {
        return Err(TransportError::Setup {
            host: target.host.name.clone(),
            detail: format!("refused by the ssh configuration: {why}"),
        });
    }
    match target.protocol {
        Protocol::Local => Ok(Connection {
            files: Box::new(local::Local::new(&target.host.name)),
            shell: Some(Box::new(local::Local::new(&target.host.name))),
        }),
        Protocol::Scp | Protocol::Sftp => {
            let params = ssh_params(target, target.port.unwrap_or(22), rule, known_hosts);
            ssh::SshSession::connect(&params)?.into_connection(target.protocol)
        }
        Protocol::Ftp | Protocol::Ftps => {
            let files = ftp::FtpFiles::connect(&ftp_params(target, rule))?;
            let shell: Option<Box<dyn Shell>> = if !rule.needs_shell() {
                None
            } else {
                let params = ssh_params(target, target.ssh_port(rule), rule, known_hosts);
                Some(Box::new(ssh::SshSession::connect(&params)?))
            };
            Ok(Connection {
                files: Box::new(files),
                shell,
            })
        }
    }
}

/// How a job opens its connections (the first, a fresh one for a retried upload, and one
/// to release a lock when the job's own connection died). It is a parameter of the
/// dispatch ([`crate::engine::rollout::Dispatch::connector`]) and not a direct call so that
/// the fast test tier can hand the engine scripted in-memory hosts and test every step's
/// failure, hang and cancel without servers or root; every production dispatch passes
/// [`real`].
pub type Connector = Arc<
    dyn Fn(&Target, &Rule, &KnownHostsFiles) -> Result<Connection, TransportError> + Send + Sync,
>;

/// The connector of every real dispatch: [`connect`].
pub fn real() -> Connector {
    Arc::new(connect)
}
