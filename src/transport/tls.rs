//! The one TLS stack: rustls, with the crypto provider reqwest uses (aws-lc-rs, or whatever
//! provider the process installed as its default), and one meaning of the rule keys:
//!
//! - `tls_verify = yes` (default): the platform's trust store (rustls-platform-verifier, as
//!   reqwest does) plus the PEM certificate(s) of `tls_ca`, hostname checked.
//! - `tls_ca = CERT.pem` may also name the server's own self-signed certificate: webpki
//!   refuses a CA certificate as a server certificate (what `openssl req -x509` makes by
//!   default), so a server certificate byte-for-byte equal to one in `tls_ca` is trusted as
//!   a pinned certificate (its handshake signature is still checked).
//! - `tls_verify = no`: any certificate is accepted (the handshake signatures are still
//!   checked, so the peer holds the key of the certificate it shows).
//!
//! HTTPS (health URLs with the rule's keys, webhooks with the defaults) gets the same
//! configuration through [`http_client_config`].
//!
//! FTPS uses this for the control and every data connection with the same
//! `Arc<ClientConfig>`: its session store (rustls' `Resumption`, in memory) is what lets a
//! data connection resume the control connection's session, which vsftpd
//! (`require_ssl_reuse=YES`), ProFTPD and FileZilla Server require by default.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// The process-wide default provider if one was installed, else aws-lc-rs (reqwest's).
pub fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The certificates of a PEM file (one or more `CERTIFICATE` blocks).
pub fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read tls_ca {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_ca {} is not a PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_ca {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A client configuration for `tls_verify` and `tls_ca`. Build it once per target and
/// share it: its session cache is what makes resumption possible.
pub fn client_config(tls_verify: bool, tls_ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    client_config_for(tls_verify, tls_ca, rustls::DEFAULT_VERSIONS)
}

/// The configuration reqwest is given (`tls_backend_preconfigured`) for `https://` health
/// URLs and webhooks: the very verifier FTPS uses, so `tls_ca` and `tls_verify` cannot mean
/// one thing for FTPS and another for HTTPS. Owned, because reqwest takes it by value.
pub fn http_client_config(tls_verify: bool, tls_ca: Option<&Path>) -> Result<ClientConfig, String> {
    client_config(tls_verify, tls_ca).map(Arc::unwrap_or_clone)
}

/// [`client_config`] limited to some TLS versions (tests pin TLS 1.2 or 1.3 with it).
pub fn client_config_for(
    tls_verify: bool,
    tls_ca: Option<&Path>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let extra = match tls_ca {
        Some(path) => read_ca(path)?,
        None => Vec::new(),
    };
    let verifier: Arc<dyn ServerCertVerifier> = if tls_verify {
        let platform = if extra.is_empty() {
            rustls_platform_verifier::Verifier::new(provider.clone())
        } else {
            rustls_platform_verifier::Verifier::new_with_extra_roots(
                extra.iter().cloned(),
                provider.clone(),
            )
        }
        .map_err(|e| format!("cannot load the trusted certificates: {e}"))?;
        Arc::new(Verifier {
            inner: Some(Arc::new(platform)),
            pinned: extra,
            provider: provider.clone(),
        })
    } else {
        Arc::new(Verifier {
            inner: None,
            pinned: Vec::new(),
            provider: provider.clone(),
        })
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The platform verifier, plus pinned `tls_ca` certificates; or, with no inner verifier
/// (`tls_verify = no`), any certificate.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<dyn ServerCertVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_ca_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a pem\n").unwrap();
        let e = client_config(true, Some(&p)).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = client_config(true, Some(&dir.path().join("missing.pem"))).unwrap_err();
        assert!(e.contains("cannot read tls_ca"), "{e}");
        assert!(client_config(false, None).is_ok());
    }
}
