//! OpenSSH certificates (PROTOCOL.certkeys), read here rather than with `ssh_key::Certificate`:
//! ssh-key 0.6 refuses a `valid_before` above `i64::MAX`, and `u64::MAX` ("forever") is what
//! `ssh-keygen -s` writes unless told `-V`. The CA's signature is checked with ssh-key's
//! verifiers.

use signature::Verifier;
use ssh_key::public::KeyData;

/// The fields of a certificate dropship looks at.
#[derive(Debug, Clone)]
pub struct Cert {
    /// Blob of the certified (plain) key, e.g. `ssh-ed25519 …`.
    pub key: Vec<u8>,
    /// 1 user, 2 host.
    pub cert_type: u32,
    pub key_id: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    /// The CA's public key.
    pub ca: KeyData,
    /// The CA's public key blob.
    pub ca_blob: Vec<u8>,
    signed: Vec<u8>,
    signature: Vec<u8>,
}

pub const HOST: u32 = 2;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.bytes(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }
    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.string()?.to_vec()).ok()
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// The plain key type of a certificate type, and how many key fields follow the nonce.
fn plain_type(cert_type: &str) -> Option<(&'static str, usize)> {
    Some(match cert_type {
        "ssh-ed25519-cert-v01@openssh.com" => ("ssh-ed25519", 1),
        "ecdsa-sha2-nistp256-cert-v01@openssh.com" => ("ecdsa-sha2-nistp256", 2),
        "ecdsa-sha2-nistp384-cert-v01@openssh.com" => ("ecdsa-sha2-nistp384", 2),
        "ecdsa-sha2-nistp521-cert-v01@openssh.com" => ("ecdsa-sha2-nistp521", 2),
        "ssh-rsa-cert-v01@openssh.com" => ("ssh-rsa", 2),
        _ => return None,
    })
}

impl Cert {
    /// Parses a certificate blob.
    pub fn parse(blob: &[u8]) -> Result<Cert, String> {
        Cert::read(blob).ok_or_else(|| "not an OpenSSH certificate dropship can read".to_owned())
    }

    /// Parses `TYPE BASE64 [COMMENT]`, the text of a `-cert.pub` file.
    pub fn parse_openssh(text: &str) -> Result<Cert, String> {
        use base64::Engine;
        let b64 = text.split_whitespace().nth(1).ok_or("no key data")?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| e.to_string())?;
        Cert::parse(&blob)
    }

    fn read(blob: &[u8]) -> Option<Cert> {
        let mut r = Reader(blob);
        let kind = std::str::from_utf8(r.string()?).ok()?;
        let (plain, fields) = plain_type(kind)?;
        let _nonce = r.string()?;
        let mut key = Vec::new();
        put_string(&mut key, plain.as_bytes());
        // The key fields are those of the plain key, in its order (rsa: e, n).
        for _ in 0..fields {
            put_string(&mut key, r.string()?);
        }
        let _serial = r.u64()?;
        let cert_type = r.u32()?;
        let key_id = r.text()?;
        let mut principals = Vec::new();
        let mut pr = Reader(r.string()?);
        while !pr.0.is_empty() {
            principals.push(pr.text()?);
        }
        let valid_after = r.u64()?;
        let valid_before = r.u64()?;
        let _critical = r.string()?;
        let _extensions = r.string()?;
        let _reserved = r.string()?;
        let ca_blob = r.string()?.to_vec();
        let signed = blob[..blob.len() - r.0.len()].to_vec();
        let signature = r.string()?.to_vec();
        let ca = ssh_key::PublicKey::from_bytes(&ca_blob)
            .ok()?
            .key_data()
            .clone();
        Some(Cert {
            key,
            cert_type,
            key_id,
            principals,
            valid_after,
            valid_before,
            ca,
            ca_blob,
            signed,
            signature,
        })
    }

    /// Why the certificate is not valid at `now` (unix seconds) or its CA's signature does
    /// not verify; `None` when it is good.
    pub fn invalid_at(&self, now: u64) -> Option<String> {
        if now < self.valid_after {
            return Some("it is not valid yet".to_owned());
        }
        if now >= self.valid_before {
            return Some("it has expired".to_owned());
        }
        let sig = match ssh_key::Signature::try_from(self.signature.as_slice()) {
            Ok(s) => s,
            Err(e) => return Some(format!("its signature cannot be read: {e}")),
        };
        match self.ca.verify(&self.signed, &sig) {
            Ok(()) => None,
            Err(_) => Some("its CA signature does not verify".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ssh-keygen -s ca -I web -h -n web.example host.pub` (ed25519 CA, ed25519 key,
    /// validity "forever"), and the CA's public key.
    const HOST_CERT: &str = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIM2KsN2RH8hO9u6cFVe423IE4pKCTeHMikxJ4awTAwyrAAAAIFWKSYJB0h4JBV4wI98yF7koIt6kfjOcZLhFuJO9bIwRAAAAAAAAAAAAAAACAAAAA3dlYgAAAA8AAAALd2ViLmV4YW1wbGUAAAAAAAAAAP//////////AAAAAAAAAAAAAAAAAAAAMwAAAAtzc2gtZWQyNTUxOQAAACCFdolmESzRqZkzczZjLj0vEgvdh6U5jaKAPo6LvR++nQAAAFMAAAALc3NoLWVkMjU1MTkAAABA4abX4tuzbzVSaWn7i7zLDhxXtqetC2PTCiaHpLjauSczoW87u9pGQQ85uMCVdzmGrNamlfgEKP9A2VdSrAVFAw== host";
    const CA: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIV2iWYRLNGpmTNzNmMuPS8SC92HpTmNooA+jou9H76d ca";

    #[test]
    fn reads_a_forever_host_certificate_and_checks_its_signature() {
        let c = Cert::parse_openssh(HOST_CERT).unwrap();
        assert_eq!(c.cert_type, HOST);
        assert_eq!(c.key_id, "web");
        assert_eq!(c.principals, ["web.example"]);
        assert_eq!(c.valid_before, u64::MAX);
        let ca = ssh_key::PublicKey::from_openssh(CA).unwrap();
        assert_eq!(&c.ca, ca.key_data());
        assert!(ssh_key::PublicKey::from_bytes(&c.key).is_ok());
        assert_eq!(c.invalid_at(1_800_000_000), None);
    }

    #[test]
    fn a_tampered_certificate_does_not_verify() {
        use base64::Engine;
        let b64 = HOST_CERT.split_whitespace().nth(1).unwrap();
        let mut blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        // The last byte of the principal name.
        let at = blob.windows(11).position(|w| w == b"web.example").unwrap() + 10;
        blob[at] = b'f';
        let c = Cert::parse(&blob).unwrap();
        assert_eq!(c.principals, ["web.examplf"]);
        assert_eq!(
            c.invalid_at(1_800_000_000).as_deref(),
            Some("its CA signature does not verify")
        );
        assert!(Cert::parse(&blob[..40]).is_err());
    }
}
